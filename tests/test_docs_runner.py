"""The runner of the documentation's examples (``test_docs_examples.py``): its parser of
fences and markers, and what it does with real pages, real bash and a real S3 server."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from cachekit import open_store
from servers import new_s3_bucket
from test_docs_examples import (
    Block,
    Bucket,
    DocsSyntaxError,
    ExampleFailed,
    Marker,
    missing_output,
    parse_blocks,
    parse_commands,
    parse_marker,
    rewrite_s3,
    run_page,
    unrewrite_s3,
)

FENCE = "```"


def page(*parts: str) -> str:
    return "\n".join(parts) + "\n"


def no_bucket() -> Bucket:
    raise AssertionError("a page without s3 markers asked for a bucket")


@pytest.fixture
def run(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


class Runner:
    """Writes a page to a file and runs it as the docs tests do."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.workdir = tmp_path / "work"
        self.workdir.mkdir()
        (tmp_path / "outputs").mkdir()
        self.page = tmp_path / "page.md"

    def __call__(
        self, markdown: str, *, bucket: Bucket | None = None, timeout: float = 60.0
    ) -> list[Block]:
        self.page.write_text(markdown)

        def new_bucket() -> Bucket:
            return bucket if bucket is not None else no_bucket()

        return run_page(
            self.page, self.workdir, self.tmp_path / "outputs", new_bucket, timeout=timeout
        )

    def failure(self, markdown: str, *, timeout: float = 60.0) -> str:
        with pytest.raises(ExampleFailed) as failed:
            self(markdown, timeout=timeout)
        return str(failed.value)


# -- markers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "marker"),
    [
        (" run ", Marker(run=True)),
        ("run, exit=1", Marker(run=True, exit_code=1)),
        ("run,expect", Marker(run=True, expect=True)),
        ("run, s3, expect, exit=3", Marker(run=True, s3=True, expect=True, exit_code=3)),
        ("s3", Marker(s3=True)),
        ("skip (needs a real GCP account)", Marker(skip_reason="needs a real GCP account")),
    ],
)
def test_marker_words(body: str, marker: Marker) -> None:
    assert parse_marker(body) == marker


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("runn", "unknown docs-test marker 'runn'"),
        ("run, exit=one", "unknown docs-test marker 'exit=one'"),
        ("expect", "need 'run'"),
        ("exit=1", "need 'run'"),
        ("skip", "unknown docs-test marker 'skip'"),
        ("skip ()", "unknown docs-test marker"),
        ("run, skip (why)", "goes with neither"),
    ],
)
def test_marker_mistakes_are_refused(body: str, problem: str) -> None:
    with pytest.raises(DocsSyntaxError, match=problem.replace("(", r"\(")):
        parse_marker(body)


# -- fences ---------------------------------------------------------------------------------


def test_blocks_with_their_language_line_and_marker() -> None:
    markdown = page(
        "# Title",
        "",
        f"{FENCE}python",
        "x = 1",
        FENCE,
        "<!-- docs-test: run, exit=1 -->",
        f"{FENCE}console",
        "$ pytest",
        "1 failed",
        FENCE,
        "~~~~ yaml title='ci.yml'",
        "```not a fence end",
        "~~~~",
    )
    blocks = parse_blocks(markdown)
    assert [(b.line, b.language, b.marker) for b in blocks] == [
        (3, "python", Marker()),
        (7, "console", Marker(run=True, exit_code=1)),
        (11, "yaml", Marker()),
    ]
    assert blocks[0].text == "x = 1\n"
    assert blocks[2].text == "```not a fence end\n"


def test_an_indented_fence_in_a_list_item_loses_its_indentation() -> None:
    markdown = page(
        "- step one:",
        "",
        "  <!-- docs-test: run -->",
        f"  {FENCE}console",
        "  $ echo hello",
        "  hello",
        f"  {FENCE}",
    )
    [block] = parse_blocks(markdown)
    assert block.marker == Marker(run=True)
    assert block.text == "$ echo hello\nhello\n"


def test_a_marker_inside_a_fence_is_text() -> None:
    markdown = page(
        f"{FENCE}markdown",
        "<!-- docs-test: run -->",
        f"{FENCE[:2]}",
        FENCE,
    )
    [block] = parse_blocks(markdown)
    assert block.marker == Marker()
    assert "docs-test" in block.text


@pytest.mark.parametrize(
    ("markdown", "problem"),
    [
        (
            page("<!-- docs-test: run -->", "", f"{FENCE}console", "$ true", FENCE),
            "line 1: .*just before",
        ),
        (page("text", "<!-- docs-test: s3 -->"), "line 2: .*ends the page"),
        (
            page("<!-- docs-test: run -->", f"{FENCE}python", "x = 1", FENCE),
            "'run' applies to console",
        ),
        (page("<!-- docs-test: run -->", f"{FENCE}console", "no command", FENCE), "at least one"),
        (page("<!-- docs-test: skip (why) -->", f"{FENCE}yaml", "a: 1", FENCE), "nothing to skip"),
        (page("<!-- docs-test: s3 -->", f"{FENCE}console", "$ true", FENCE), "nothing to skip"),
        (page("", f"{FENCE}python", "x = 1"), "line 2: the fence opened here is never closed"),
        (page(f"{FENCE}ini", "# file: /etc/pytest.ini", FENCE), "line 2: .*relative path"),
        (page(f"{FENCE}ini", "# file: ../pytest.ini", FENCE), "relative path"),
        (page("<!-- docs-test: typo -->", f"{FENCE}python", FENCE), "line 1: unknown"),
    ],
)
def test_page_mistakes_name_the_line(markdown: str, problem: str) -> None:
    with pytest.raises(DocsSyntaxError, match=problem):
        parse_blocks(markdown)


def test_file_blocks_name_their_path_and_drop_the_marker_line() -> None:
    markdown = page(
        f"{FENCE}toml",
        "# file: config/pyproject.toml",
        "[tool.pytest.ini_options]",
        FENCE,
        f"{FENCE}python",
        "# file:tests/test_a.py",
        "def test_a(): pass",
        FENCE,
        f"{FENCE}python",
        "# a comment, not a file",
        FENCE,
    )
    toml, test_file, python = parse_blocks(markdown)
    assert (toml.file_path, toml.body) == ("config/pyproject.toml", "[tool.pytest.ini_options]\n")
    assert (test_file.file_path, test_file.is_python) == ("tests/test_a.py", False)
    assert (python.file_path, python.is_python) == (None, True)


def test_console_commands_with_continuations_and_shown_output() -> None:
    [block] = parse_blocks(
        page(
            "<!-- docs-test: run -->",
            f"{FENCE}console",
            "$ pytest \\",
            "    -q",
            "2 passed",
            "",
            "$ cachekit show",
            "...",
            FENCE,
        )
    )
    first, second = parse_commands(block)
    assert (first.line, first.text, first.shown) == (3, "pytest \\\n    -q", ("2 passed", ""))
    assert (second.line, second.text, second.shown) == (7, "cachekit show", ("...",))


# -- expected output and S3 URLs ------------------------------------------------------------


def test_shown_lines_must_appear_in_order() -> None:
    actual = "collected 2 items\n\n==== 1 failed, 1 passed in 0.12s ====\n"
    assert (
        missing_output(["collected 2 items", "...", "1 failed, 1 passed in ...s"], actual) is None
    )
    assert missing_output(["  1 failed  "], actual) is None
    assert missing_output(["1 failed", "collected 2 items"], actual) == "collected 2 items"
    assert missing_output(["3 passed"], actual) == "3 passed"


def test_s3_placeholders_point_at_the_bucket() -> None:
    bucket = Bucket.from_url("s3://ck-1234/cache?endpoint_url=http%3A%2F%2F127.0.0.1%3A5000")
    text = (
        "cachekit show --url s3://example-bucket/ci\n"
        'open_store("s3://example-bucket/ci/x?anon=false")\n'
        "cache_url = s3://example-bucket\n"
        "s3://other-bucket/ci stays\n"
    )
    assert rewrite_s3(text, bucket) == (
        "cachekit show --url s3://ck-1234/ci?endpoint_url=http%3A%2F%2F127.0.0.1%3A5000\n"
        'open_store("s3://ck-1234/ci/x?anon=false&endpoint_url=http%3A%2F%2F127.0.0.1%3A5000")\n'
        "cache_url = s3://ck-1234?endpoint_url=http%3A%2F%2F127.0.0.1%3A5000\n"
        "s3://other-bucket/ci stays\n"
    )
    printed = "cachekit: s3://ck-1234/ci?endpoint_url=http://127.0.0.1:5000 (local)\n"
    assert unrewrite_s3(printed, bucket) == "cachekit: s3://example-bucket/ci (local)\n"


# -- running pages --------------------------------------------------------------------------


def test_blocks_share_a_namespace_a_directory_and_files(run: Runner) -> None:
    markdown = page(
        f"{FENCE}python",
        "# file: mymodule.py",
        "ANSWER = 42",
        FENCE,
        f"{FENCE}python",
        "import mymodule",
        "total = mymodule.ANSWER",
        FENCE,
        "Some prose.",
        f"{FENCE}python",
        "from pathlib import Path",
        "Path('result.txt').write_text(str(total + 1))",
        FENCE,
        "<!-- docs-test: run, expect -->",
        f"{FENCE}console",
        "$ cat result.txt",
        "43",
        FENCE,
        f"{FENCE}console",
        "$ false  # not marked: never run",
        FENCE,
    )
    done = run(markdown)
    assert [block.line for block in done] == [1, 5, 10, 15]
    assert (run.workdir / "result.txt").read_text() == "43"


def test_steps_see_this_environment_without_cachekit_ci_or_cloud_settings(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEKIT_URL", "s3://somewhere/real")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("AWS_PROFILE", "production")
    bin_directory = Path(sys.executable).parent
    markdown = page(
        "<!-- docs-test: run, expect -->",
        f"{FENCE}console",
        "$ command -v pytest cachekit",
        f"{bin_directory}/pytest",
        f"{bin_directory}/cachekit",
        '$ echo "$AWS_ACCESS_KEY_ID [$CACHEKIT_URL] [$GITHUB_ACTIONS] [$AWS_PROFILE]"',
        "testing [] [] []",
        FENCE,
        f"{FENCE}python",
        "import os",
        'assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"',
        'assert not {"CACHEKIT_URL", "GITHUB_ACTIONS", "AWS_PROFILE"} & set(os.environ)',
        FENCE,
    )
    run(markdown)


def test_exit_code_of_the_last_command(run: Runner) -> None:
    allowed = page(
        "<!-- docs-test: run, exit=1 -->",
        f"{FENCE}console",
        "$ echo first",
        "$ echo failing; exit 1",
        FENCE,
    )
    run(allowed)
    failure = run.failure(allowed.replace("exit 1", "exit 0"))
    assert failure.startswith(f"{run.page}:2: `echo failing; exit 0` (line 4) exited 0, expected 1")
    assert "--- its output ---\nfailing" in failure
    earlier = run.failure(allowed.replace("echo first", "echo first; exit 1"))
    assert "`echo first; exit 1` (line 3) exited 1, expected 0" in earlier


def test_expect_compares_shown_lines(run: Runner) -> None:
    run.workdir.joinpath("test_demo.py").write_text(
        "def test_ok():\n    pass\n\ndef test_broken():\n    assert 1 == 2\n"
    )
    markdown = page(
        "<!-- docs-test: run, expect, exit=1 -->",
        f"{FENCE}console",
        "$ pytest -q -p no:cacheprovider test_demo.py",
        "...",
        "FAILED test_demo.py::test_broken - assert 1 == 2",
        "1 failed, 1 passed in ...",
        FENCE,
    )
    run(markdown)
    mismatch = page(
        "<!-- docs-test: run, expect -->",
        f"{FENCE}console",
        "$ printf '1 failed, 1 passed in 0.1s\\n'",
        "2 passed in ...",
        FENCE,
    )
    failure = run.failure(mismatch)
    assert "the shown line '2 passed in ...' is not in its output, in order" in failure
    assert failure.endswith("--- its output ---\n1 failed, 1 passed in 0.1s")


def test_a_failing_python_block_names_its_page_and_line(run: Runner) -> None:
    markdown = page(
        "Intro.",
        "",
        f"{FENCE}python",
        "print('before')",
        "value = {}['missing']",
        FENCE,
        f"{FENCE}python",
        "raise AssertionError('a later block must not run')",
        FENCE,
    )
    failure = run.failure(markdown)
    assert failure.startswith(f"{run.page}:3: python block failed (exit code 1)")
    assert "before" in failure
    assert f'File "{run.page}", line 5' in failure
    assert "KeyError: 'missing'" in failure
    assert "a later block" not in failure.partition("--- its output ---")[2]


def test_a_skipped_block_does_not_run(run: Runner) -> None:
    done = run(
        page(
            "<!-- docs-test: skip (needs a real bucket) -->",
            f"{FENCE}python",
            "raise SystemExit(3)",
            FENCE,
            f"{FENCE}python",
            "import sys; sys.exit(0)",
            FENCE,
        )
    )
    assert [block.line for block in done] == [5]


def test_a_hanging_step_fails_after_its_timeout(run: Runner) -> None:
    started = time.monotonic()
    failure = run.failure(
        page("<!-- docs-test: run -->", f"{FENCE}console", "$ sleep 60 & sleep 30", FENCE),
        timeout=1.0,
    )
    assert "`sleep 60 & sleep 30` (line 3) timed out (1s)" in failure
    failure = run.failure(
        page(f"{FENCE}python", "print('spinning', flush=True)", "while True: pass", FENCE),
        timeout=1.0,
    )
    assert "python block timed out (1s)" in failure
    assert "spinning" in failure
    assert time.monotonic() - started < 20


def test_s3_blocks_use_a_fresh_bucket_on_loopback(run: Runner, s3_endpoint: str) -> None:
    url = new_s3_bucket(s3_endpoint)
    bucket = Bucket.from_url(url)
    markdown = page(
        "<!-- docs-test: s3 -->",
        f"{FENCE}python",
        "import cachekit",
        'store = cachekit.open_store("s3://example-bucket/docs")',
        'store.put("greeting", b"hello")',
        FENCE,
        "<!-- docs-test: s3 -->",
        f"{FENCE}ini",
        "# file: pytest.ini",
        "[pytest]",
        "cache_url = s3://example-bucket/docs",
        FENCE,
        "<!-- docs-test: run, s3, expect -->",
        f"{FENCE}console",
        '$ python -c "import sys; print(sys.argv[1])" s3://example-bucket/docs',
        "s3://example-bucket/docs",
        FENCE,
    )
    run(markdown, bucket=bucket)
    stored = open_store(f"s3://{bucket.name}/docs?{bucket.query}").get("greeting")
    assert stored is not None
    assert stored.data == b"hello"
    ini = (run.workdir / "pytest.ini").read_text()
    assert ini == f"[pytest]\ncache_url = s3://{bucket.name}/docs?{bucket.query}\n"
