"""The documentation's code examples run as tests: one test per page of ``docs/**/*.md``.

The conventions (the "Code examples run as tests" section the docs engineers share):

1. Every ```` ```python ```` block runs. A page's blocks run in order in one shared
   namespace (one Python process per page), in a fresh temporary working directory, with
   the fake cloud environment of ``servers.py`` and no ``CACHEKIT_*`` variables.
2. A block whose first line is ``# file: RELATIVE/PATH`` (any language) is written to
   that path in the page's directory instead (the marker line is left out).
3. A ```` ```console ```` block right after ``<!-- docs-test: run -->`` runs: each
   ``$ `` line is a command for bash, started in the page's directory with this
   environment's ``bin`` first on PATH, and must exit 0. ``run, exit=N``: the block's
   last command must exit N instead. ``run, expect``: each shown output line (stripped;
   ``...`` alone is skipped, ``...`` inside a line matches anything) must appear in the
   command's actual output, in order. Other console blocks are not run.
4. ``<!-- docs-test: s3 -->`` (alone or with ``run``): the page gets a fresh bucket on the
   loopback S3 server, and ``s3://example-bucket/PATH`` in that block is rewritten to it,
   with the endpoint in the URL's query.
5. ``<!-- docs-test: skip (reason) -->`` before a python or ``# file:`` block: left out.

Examples run as on a developer's machine: the variables that tell cachekit it runs in CI
are removed too, so a page's output is the same locally and in CI. A failure names the
page and the line of the block's opening fence, and shows what the block printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urlsplit

import attrs
import pytest

from servers import new_s3_bucket, use_fake_cloud_credentials

REPOSITORY = Path(__file__).resolve().parent.parent
DOCS = REPOSITORY / "docs"
#: Most seconds one console command or one python block may take.
STEP_TIMEOUT = 120.0
#: The bucket name docs use in S3 examples; rewritten to a real one on loopback.
PLACEHOLDER_BUCKET = "example-bucket"
#: Variables by which cachekit (or a tool an example runs) would think it runs in CI.
CI_VARIABLE_PREFIXES = (
    "GITHUB_",
    "GITLAB_",
    "CI_",
    "BUILDKITE",
    "CIRCLE",
    "JENKINS_",
    "TF_BUILD",
    "SYSTEM_",
    "BUILD_",
)
PYTHON_LANGUAGES = frozenset({"python", "py", "python3"})

_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_FILE_LINE = re.compile(r"^#\s*file:\s*(?P<path>.*?)\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>.*)\)$")
_EXIT = re.compile(r"^exit\s*=\s*(?P<code>\d+)$")
_PLACEHOLDER_URL = re.compile(
    rf"s3://{PLACEHOLDER_BUCKET}(?P<path>/[^\s'\"`<>()\[\],;?#\\]*)?"
    r"(?:\?(?P<query>[^\s'\"`<>()\[\],;#\\]*))?"
)


class DocsSyntaxError(ValueError):
    """A page's markers or fences do not follow the conventions."""


class ExampleFailed(AssertionError):
    """A block of a page did not do what the page says."""


# -- parsing ---------------------------------------------------------------------------


@attrs.frozen
class Marker:
    """What a ``<!-- docs-test: ... -->`` comment asks for."""

    run: bool = False
    expect: bool = False
    #: The exit code the block's last command must return.
    exit_code: int = 0
    s3: bool = False
    #: Why the block is left out; None when it is not.
    skip_reason: str | None = None


@attrs.frozen
class Block:
    """One fenced code block of a page."""

    #: Line (1-based) of the opening fence.
    line: int
    language: str
    #: The lines between the fences, without the fence's indentation.
    text: str
    marker: Marker = Marker()

    @property
    def file_path(self) -> str | None:
        """The path of a ``# file:`` block, else None."""
        first, _, _ = self.text.partition("\n")
        match = _FILE_LINE.match(first)
        return match["path"] if match else None

    @property
    def body(self) -> str:
        """The text to run or write: without the ``# file:`` line of a file block."""
        if self.file_path is None:
            return self.text
        return self.text.partition("\n")[2]

    @property
    def is_python(self) -> bool:
        return self.language in PYTHON_LANGUAGES and self.file_path is None

    @property
    def is_command(self) -> bool:
        return self.language == "console" and self.marker.run

    @property
    def does_something(self) -> bool:
        """Whether the block runs or is written when no marker leaves it out."""
        return self.is_python or self.is_command or self.file_path is not None


@attrs.frozen
class Command:
    """One ``$ `` command of a console block and the output the page shows for it."""

    line: int
    text: str
    shown: tuple[str, ...]


def parse_marker(body: str) -> Marker:
    """The marker of a ``docs-test:`` comment body such as ``run, exit=1``."""
    run = expect = s3 = False
    exit_code = 0
    skip_reason: str | None = None
    for word in (part.strip() for part in body.split(",")):
        exit_match = _EXIT.match(word)
        skip_match = _SKIP.match(word)
        if word == "run":
            run = True
        elif word == "expect":
            expect = True
        elif word == "s3":
            s3 = True
        elif exit_match:
            exit_code = int(exit_match["code"])
        elif skip_match and skip_match["reason"].strip():
            skip_reason = skip_match["reason"].strip()
        else:
            raise DocsSyntaxError(
                f"unknown docs-test marker {word!r} (use run, exit=N, expect, s3, skip (reason))"
            )
    if (expect or exit_code) and not run:
        raise DocsSyntaxError("'expect' and 'exit=N' need 'run'")
    if skip_reason is not None and (run or s3):
        raise DocsSyntaxError("'skip' leaves a block out: it goes with neither 'run' nor 's3'")
    return Marker(run=run, expect=expect, exit_code=exit_code, s3=s3, skip_reason=skip_reason)


def parse_blocks(markdown: str) -> list[Block]:
    """Every fenced block of a page, with the marker on the line just before it.

    Raises `DocsSyntaxError` (naming the line) for a marker that is not right before a
    fence, a marker on a block it cannot apply to, and a fence that is never closed.
    """
    lines = markdown.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, Marker] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        marker_match = _MARKER.match(line)
        fence_match = _FENCE.match(line)
        if pending is not None and fence_match is None:
            raise DocsSyntaxError(
                f"line {pending[0]}: a docs-test marker must be on the line just before a fence"
            )
        if marker_match:
            try:
                pending = (number, parse_marker(marker_match["body"]))
            except DocsSyntaxError as error:
                raise DocsSyntaxError(f"line {number}: {error}") from None
        elif fence_match:
            block, index = _read_block(lines, index, fence_match)
            if pending is not None:
                block = attrs.evolve(block, marker=pending[1])
            _check_block(block)
            blocks.append(block)
            pending = None
        index += 1
    if pending is not None:
        raise DocsSyntaxError(f"line {pending[0]}: a docs-test marker ends the page")
    return blocks


def _read_block(lines: Sequence[str], start: int, opening: re.Match[str]) -> tuple[Block, int]:
    """The block opening at ``lines[start]`` and the index of its closing fence."""
    indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
    if fence.startswith("`") and "`" in info:
        raise DocsSyntaxError(f"line {start + 1}: a backtick fence's info must not hold '`'")
    words = info.split()
    language = words[0].strip("{}.").lower() if words else ""
    closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    body: list[str] = []
    for index in range(start + 1, len(lines)):
        if closing.match(lines[index]):
            text = "\n".join(body) + "\n" if body else ""
            return Block(line=start + 1, language=language, text=text), index
        line = lines[index]
        body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
    raise DocsSyntaxError(f"line {start + 1}: the fence opened here is never closed")


def _check_block(block: Block) -> None:
    """A ``# file:`` path stays inside the page's directory; a marker applies."""
    marker = block.marker
    where = f"line {block.line - 1}"
    if marker.run and block.language != "console":
        raise DocsSyntaxError(f"{where}: 'run' applies to console blocks, not {block.language!r}")
    if marker.run and not parse_commands(block):
        raise DocsSyntaxError(f"{where}: a 'run' block needs at least one '$ ' command")
    if (marker.skip_reason is not None or marker.s3) and not block.does_something:
        raise DocsSyntaxError(
            f"{where}: nothing to skip or rewrite: the block is neither python, a '# file:' "
            "block nor a console block marked 'run'"
        )
    path = block.file_path
    if path is not None:
        target = PurePosixPath(path)
        if not path or target.is_absolute() or ".." in target.parts or "\\" in path:
            raise DocsSyntaxError(f"line {block.line + 1}: '# file:' needs a relative path")


def parse_commands(block: Block) -> list[Command]:
    """The ``$ `` commands of a console block; a line ending in ``\\`` continues one."""
    commands: list[Command] = []
    current: list[str] | None = None
    for offset, line in enumerate(block.text.splitlines()):
        if current is not None and current[-1].endswith("\\"):
            current.append(line)
            continue
        if line.startswith("$ "):
            if current is not None:
                commands[-1] = attrs.evolve(commands[-1], text="\n".join(current))
            current = [line[2:]]
            commands.append(Command(line=block.line + 1 + offset, text="", shown=()))
        elif commands:
            last = commands[-1]
            commands[-1] = attrs.evolve(last, shown=(*last.shown, line))
    if current is not None:
        commands[-1] = attrs.evolve(commands[-1], text="\n".join(current))
    return commands


# -- S3 placeholders ----------------------------------------------------------------------


@attrs.frozen
class Bucket:
    """A bucket on the loopback S3 server, as the query a URL needs to reach it."""

    name: str
    #: ``endpoint_url=...``, URL-encoded (no character the shell treats specially but ?).
    query: str

    @classmethod
    def from_url(cls, url: str) -> Bucket:
        parts = urlsplit(url)
        return cls(name=parts.netloc, query=parts.query)


def rewrite_s3(text: str, bucket: Bucket) -> str:
    """``text`` with each ``s3://example-bucket/PATH`` pointed at ``bucket``."""

    def rewrite(match: re.Match[str]) -> str:
        query = "&".join(part for part in (match["query"], bucket.query) if part)
        return f"s3://{bucket.name}{match['path'] or ''}?{query}"

    return _PLACEHOLDER_URL.sub(rewrite, text)


def unrewrite_s3(text: str, bucket: Bucket) -> str:
    """Output as the page shows it: the bucket's URLs back to ``s3://example-bucket``."""
    endpoint = re.escape(bucket.query.partition("=")[2])
    plain = r"http://127\.0\.0\.1:\d+"
    text = re.sub(rf"[?&]endpoint_url=(?:{endpoint}|{plain})/?", "", text)
    return text.replace(f"s3://{bucket.name}", f"s3://{PLACEHOLDER_BUCKET}")


# -- expected output ----------------------------------------------------------------------


def missing_output(shown: Sequence[str], actual: str) -> str | None:
    """The first shown line not found, in order, in ``actual``; None when all are.

    Each shown line, stripped, must occur within an actual line after the one the
    previous shown line matched; ``...`` inside a line matches any text, and a line that
    is just ``...`` is not checked.
    """
    actual_lines = actual.splitlines()
    position = 0
    for line in shown:
        wanted = line.strip()
        if not wanted or wanted == "...":
            continue
        pattern = re.compile(".*?".join(re.escape(piece) for piece in wanted.split("...")))
        for index in range(position, len(actual_lines)):
            if pattern.search(actual_lines[index]):
                position = index + 1
                break
        else:
            return wanted
    return None


# -- running --------------------------------------------------------------------------


def example_environment() -> dict[str, str]:
    """A developer's shell: fake cloud credentials, no CACHEKIT_*, PYTEST_* or CI
    variables, and this environment's ``bin`` (pytest, python, cachekit) first on PATH."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CACHEKIT_", "PYTEST_", *CI_VARIABLE_PREFIXES)) and name != "CI"
    }
    use_fake_cloud_credentials(environment)
    bin_directory = str(Path(sys.executable).parent)
    environment["PATH"] = os.pathsep.join([bin_directory, environment.get("PATH", os.defpath)])
    environment["COLUMNS"] = "80"  # pytest's banners as on an 80-column terminal
    return environment


@attrs.frozen
class Outcome:
    """How a step ended: its exit code (None when it timed out) and what it printed."""

    code: int | None
    output: str


def run_command(command: str, cwd: Path, env: dict[str, str], timeout: float) -> Outcome:
    """Run one console command with bash; the whole process group dies on timeout."""
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        output, _ = process.communicate()
        return Outcome(None, output.decode(errors="replace"))
    finally:
        _kill_group(process)  # what the command left running in the background
    return Outcome(process.returncode, output.decode(errors="replace"))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


#: Runs in the page's Python process: executes the blocks it reads from the pipe named by
#: its first argument in one namespace, each with stdout and stderr in its own file, and
#: answers with each block's exit code on the pipe named by its second argument.
_PYTHON_DRIVER = r"""
import json, os, sys, traceback
namespace = {"__name__": "__main__"}
requests, answers = os.fdopen(int(sys.argv[1]), "r"), os.fdopen(int(sys.argv[2]), "w")
del sys.argv[1:]
for request in requests:
    job = json.loads(request)
    with open(job["output"], "w") as output:
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        code = 0
        try:
            source = "\n" * (job["line"] - 1) + job["source"]
            exec(compile(source, job["page"], "exec"), namespace)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except BaseException:
            kind, error, trace = sys.exc_info()
            traceback.print_exception(kind, error, trace.tb_next)
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    answers.write(json.dumps({"code": code}) + "\n")
    answers.flush()
"""


class PythonSession:
    """One Python process for a page: its blocks share one namespace, as in a REPL."""

    def __init__(self, cwd: Path, env: dict[str, str], outputs: Path, timeout: float) -> None:
        self.outputs = outputs
        self.timeout = timeout
        requests_read, self._requests = os.pipe()
        self._answers, answers_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PYTHON_DRIVER, str(requests_read), str(answers_write)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(requests_read, answers_write),
            start_new_session=True,
        )
        os.close(requests_read)
        os.close(answers_write)
        self._answer_file: IO[str] = os.fdopen(self._answers)

    def run(self, source: str, page: Path, line: int) -> Outcome:
        """Execute ``source`` (lines starting at ``line`` of ``page``) in the namespace."""
        output = self.outputs / f"python-{line}.txt"
        request = {"source": source, "page": str(page), "line": line, "output": str(output)}
        try:
            os.write(self._requests, (json.dumps(request) + "\n").encode())
        except BrokenPipeError:
            return Outcome(None, "the page's Python process has exited")
        ready, _, _ = select.select([self._answer_file], [], [], self.timeout)
        answer = self._answer_file.readline() if ready else ""
        printed = output.read_text(errors="replace") if output.exists() else ""
        if not answer:
            _kill_group(self.process)
            return Outcome(None, printed)
        return Outcome(int(json.loads(answer)["code"]), printed)

    def close(self) -> None:
        os.close(self._requests)
        self._answer_file.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        _kill_group(self.process)
        self.process.wait()


@attrs.define
class PageRun:
    """The state one page's examples share: a directory, an environment, a Python
    process (started at the first python block) and a bucket (at the first s3 block)."""

    #: The page as failures name it, such as ``docs/tutorial.md``.
    name: str
    #: The page file: Python tracebacks show its lines.
    page: Path
    workdir: Path
    #: Where each python block's output goes (outside ``workdir``: examples list it).
    outputs: Path
    #: Called once, at the first block marked s3.
    new_bucket: Callable[[], Bucket]
    timeout: float = STEP_TIMEOUT
    env: dict[str, str] = attrs.field(factory=example_environment)
    bucket: Bucket | None = None
    session: PythonSession | None = None

    def run(self, blocks: Sequence[Block]) -> list[Block]:
        """Run, write or leave out each block in order; the blocks run or written.
        Raises `ExampleFailed` at the first block that fails."""
        done: list[Block] = []
        try:
            for block in blocks:
                if block.marker.skip_reason is None and block.does_something:
                    self._run_block(block)
                    done.append(block)
        finally:
            if self.session is not None:
                self.session.close()
        return done

    def _run_block(self, block: Block) -> None:
        body = block.body
        if block.marker.s3:
            self.bucket = self.bucket or self.new_bucket()
            body = rewrite_s3(body, self.bucket)
        if block.file_path is not None:
            target = self.workdir / block.file_path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        elif block.is_python:
            self._run_python(block, body)
        else:
            self._run_console(block, body)

    def _run_python(self, block: Block, body: str) -> None:
        if self.session is None:
            self.session = PythonSession(self.workdir, self.env, self.outputs, self.timeout)
        outcome = self.session.run(body, self.page.absolute(), block.line + 1)
        if outcome.code is None:
            problem = f"python block timed out ({self.timeout:g}s) or its process died"
            raise ExampleFailed(self._failure(block, body, problem, outcome.output))
        if outcome.code != 0:
            problem = f"python block failed (exit code {outcome.code})"
            raise ExampleFailed(self._failure(block, body, problem, outcome.output))

    def _run_console(self, block: Block, body: str) -> None:
        # Run the commands as rewritten; compare output with the lines the page shows.
        commands = parse_commands(attrs.evolve(block, text=body))
        shown = [command.shown for command in parse_commands(block)]
        for position, command in enumerate(commands):
            wanted = block.marker.exit_code if position == len(commands) - 1 else 0
            outcome = run_command(command.text, self.workdir, self.env, self.timeout)
            what = f"`{command.text}` (line {command.line})"
            if outcome.code is None:
                problem = f"{what} timed out ({self.timeout:g}s)"
                raise ExampleFailed(self._failure(block, body, problem, outcome.output))
            if outcome.code != wanted:
                problem = f"{what} exited {outcome.code}, expected {wanted}"
                raise ExampleFailed(self._failure(block, body, problem, outcome.output))
            if block.marker.expect:
                actual = outcome.output
                if self.bucket is not None:
                    actual = unrewrite_s3(actual, self.bucket)
                missing = missing_output(shown[position], actual)
                if missing is not None:
                    problem = f"{what}: the shown line {missing!r} is not in its output, in order"
                    raise ExampleFailed(self._failure(block, body, problem, outcome.output))

    def _failure(self, block: Block, body: str, problem: str, output: str) -> str:
        return (
            f"{self.name}:{block.line}: {problem}\n"
            f"--- the block (as run) ---\n{body.rstrip()}\n"
            f"--- its output ---\n{output.rstrip() or '(nothing)'}"
        )


def run_page(
    page: Path,
    workdir: Path,
    outputs: Path,
    new_bucket: Callable[[], Bucket],
    *,
    timeout: float = STEP_TIMEOUT,
) -> list[Block]:
    """Run a page's examples in ``workdir``; the blocks it ran or wrote.

    Raises `ExampleFailed` at the first block that fails and `DocsSyntaxError` when the
    page does not follow the conventions, both naming the page.
    """
    name = _display_name(page)
    try:
        blocks = parse_blocks(page.read_text())
    except DocsSyntaxError as error:
        raise DocsSyntaxError(f"{name}: {error}") from None
    return PageRun(name, page, workdir, outputs, new_bucket, timeout).run(blocks)


def _display_name(page: Path) -> str:
    try:
        return page.absolute().relative_to(REPOSITORY).as_posix()
    except ValueError:
        return str(page)


# -- the tests ------------------------------------------------------------------------


def documentation_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


@pytest.mark.parametrize(
    "page", documentation_pages(), ids=lambda page: page.relative_to(REPOSITORY).as_posix()
)
def test_page_examples_run(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every example of the page does what the page says, in the order it says it."""

    def new_bucket() -> Bucket:
        endpoint: str = request.getfixturevalue("s3_endpoint")
        return Bucket.from_url(new_s3_bucket(endpoint))

    workdir = tmp_path / "work"
    outputs = tmp_path / "outputs"
    workdir.mkdir()
    outputs.mkdir()
    problem = ""
    try:
        run_page(page, workdir, outputs, new_bucket)
    except (ExampleFailed, DocsSyntaxError) as error:
        problem = str(error)
    if problem:
        pytest.fail(problem, pytrace=False)
