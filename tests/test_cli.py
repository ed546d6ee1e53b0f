"""The ``cachekit`` command, run as a subprocess, on a local directory and on S3."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cachekit import Cache, PrefixedStore, open_store
from cachekit.ci.layout import (
    DURATIONS_KEY,
    LASTFAILED_KEY,
    NODEIDS_KEY,
    STATS_RUNS,
    STATS_RUNS_KEY,
    STRATEGIES,
    namespace_prefix,
    ref_prefix,
)
from cachekit.ci.namespace import Namespace
from cachekit.cli.app import main
from cachekit.values.durations import durations_part, scoped_setup_key
from cachekit.values.merge import LASTFAILED, join_all, observe_outcomes, still_failing, stored_form

DATA = Path(__file__).parent / "data" / "junit"
NS = ["--repository", "acme/app", "--job", "test"]
_CI_VARIABLES = (
    "GITHUB_",
    "GITLAB_",
    "CI_",
    "BUILDKITE",
    "CIRCLE",
    "JENKINS_",
    "TF_BUILD",
    "SYSTEM_",
    "BUILD_",
    "CACHEKIT_",
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything a CI system or the user set for us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CI_VARIABLES) and k != "CI"}
    env.update(extra)
    return env


def cachekit(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachekit", *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`cachekit.cli.app.main` in this process (what the console script calls), with the same
    environment, working directory and standard streams a subprocess would have; much
    faster than a subprocess for the store tests."""
    saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
    out, err = io.StringIO(), io.StringIO()
    run_env = env if env is not None else clean_env()
    try:
        os.environ.clear()
        os.environ.update(run_env)
        os.chdir(cwd)
        sys.stdin = io.StringIO(stdin or "")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["cachekit", *args], code, out.getvalue(), err.getvalue())


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


@pytest.fixture(params=["local", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_url"))


def store_keys(url: str) -> list[str]:
    return open_store(url).list()


def write_lastfailed(cache_dir: Path, failing: list[str], nodeids: list[str]) -> None:
    (cache_dir / "v" / "cache").mkdir(parents=True, exist_ok=True)
    (cache_dir / "v" / "cache" / "lastfailed").write_text(json.dumps(dict.fromkeys(failing, True)))
    (cache_dir / "v" / "cache" / "nodeids").write_text(json.dumps(nodeids))


def read_lastfailed(cache_dir: Path) -> dict[str, bool]:
    data: dict[str, bool] = json.loads((cache_dir / "v" / "cache" / "lastfailed").read_text())
    return data


# -- help, usage and errors -------------------------------------------------------------


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = ok(cachekit("--help", cwd=tmp_path))
    for command in ("show", "merge", "compact", "gc", "pull", "push", "shard", "stats"):
        assert command in result.stdout
    assert "exit codes" in result.stdout
    for command in (
        ["show"],
        ["merge"],
        ["compact"],
        ["gc"],
        ["pull"],
        ["push"],
        ["shard"],
        ["stats"],
        ["stats", "ingest"],
        ["stats", "summary"],
    ):
        assert ok(cli(*command, "--help", cwd=tmp_path)).stdout.startswith("usage:")


def test_version(tmp_path: Path) -> None:
    assert ok(cachekit("--version", cwd=tmp_path)).stdout.startswith("cachekit ")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["stats"],
        ["gc", "--url", "x", "--older-than", "soon"],
        ["gc", "--url", "x", "--older-than", "0d"],
        ["merge", "--url", "x", "--into", "y"],
        ["show"],  # no --url and no CACHEKIT_URL
        ["shard", "--url", "x", "5/4"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = cachekit(*args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_url_from_environment(tmp_path: Path) -> None:
    env = clean_env(CACHEKIT_URL=str(tmp_path / "store"))
    assert "no keys" in ok(cachekit("show", cwd=tmp_path, env=env)).stdout


@pytest.mark.parametrize(
    "url",
    [
        "nope://user:hunter2@example.invalid/x",
        "memory://",
        "s3://user:hunter2@bucket/x?secret_key=hunter2&endpoint_url=http://127.0.0.1:9",
    ],
)
def test_errors_are_one_redacted_line(tmp_path: Path, url: str) -> None:
    result = cachekit("show", "--url", url, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cachekit: error: ")
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_extra_is_explained(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from cachekit.cli.app import main\n"
        "raise SystemExit(main(['show', '--url', 's3://bucket/x']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "s3" in result.stderr
    assert "pytest-cachekit[s3]" in result.stderr


def test_console_script(tmp_path: Path) -> None:
    script = shutil.which("cachekit", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the cachekit console script is not installed (reinstall the project)")
    assert ok(subprocess.run([script, "--help"], capture_output=True, text=True, check=False))


# -- stats ----------------------------------------------------------------------------


def test_stats_ingest_and_summary(tmp_path: Path, url: str) -> None:
    ingest = as_json(
        cli(
            "stats",
            "ingest",
            "--url",
            url,
            *NS,
            "--ref",
            "main",
            "--run-id",
            "41",
            str(DATA / "pytest_xunit2.xml"),
            str(DATA / "pytorch_style.xml"),
            "--json",
            cwd=tmp_path,
        )
    )
    assert ingest["ingested"] == 2
    assert ingest["tests"] == 11
    summary = as_json(
        cli("stats", "summary", "--url", url, *NS, "--ref", "main", "--json", cwd=tmp_path)
    )
    assert summary["scope"] == "run 41"
    assert summary["totals"]["tests"] == 11
    assert summary["totals"]["failures"] == 3
    assert summary["totals"]["errors"] == 1
    assert summary["files"]["tests/test_math.py"]["successes"] == 2
    assert [case["name"] for case in summary["flaky"]] == ["test_flaky_cuda"]
    assert summary["slowest"][0]["name"] == "test_matmul"
    text = ok(cli("stats", "summary", "--url", url, *NS, "--ref", "main", cwd=tmp_path))
    assert "tests/test_math.py::TestDivide::test_by_zero" in text.stdout
    assert "FILE" in text.stdout
    assert "total" in text.stdout
    # Other refs have their own statistics.
    other = as_json(
        cli("stats", "summary", "--url", url, *NS, "--ref", "dev", "--json", cwd=tmp_path)
    )
    assert other["totals"]["tests"] == 0


def test_compact_keeps_runs_as_parts_and_merge_copies_them(tmp_path: Path, url: str) -> None:
    """A run of 500,000 tests is 2 MB: a hundred folded into one value would be more than
    a value may hold, so ``stats/runs`` stays one part per run; a merge copies them."""
    for shard in ("1/2", "2/2"):
        ok(
            cli(
                *("stats", "ingest", "--url", url, *NS, "--ref", "main", "--run-id", "7"),
                *("--shard", shard, str(DATA / "pytest_xunit2.xml")),
                cwd=tmp_path,
            )
        )
    summary = as_json(
        cli("stats", "summary", "--url", url, *NS, "--ref", "main", "--json", cwd=tmp_path)
    )
    compacted = as_json(cli("compact", "--url", url, "--json", cwd=tmp_path))
    [kept] = compacted["kept_as_parts"]
    assert kept.endswith("/stats/runs")
    assert not any(key.endswith("/stats/runs") for key in compacted["compacted"])
    into = namespace_prefix("acme/app", "main", "all")
    source = namespace_prefix("acme/app", "main", NS[NS.index("--job") + 1])
    store = open_store(url)
    store.put(f"{source}/{STATS_RUNS_KEY}/@parts/planted", b"not a cachekit value")
    first = cli("merge", "--url", url, "--from", source, "--into", into, "--json", cwd=tmp_path)
    # A part copied once is not fetched again: spoiling it at the source afterwards
    # changes nothing. The corrupt part, left behind, is read (and warned about) again.
    copied = Cache(PrefixedStore(store, source)).parts(STATS_RUNS_KEY)[0]
    store.put(copied, b"spoiled")
    second = cli("merge", "--url", url, "--from", source, "--into", into, "--json", cwd=tmp_path)
    merges = [first, second]
    assert ["planted" in merged.stderr for merged in merges] == [True, True]
    assert copied not in second.stderr
    assert [as_json(merged)["copied"] for merged in merges] == [{STATS_RUNS_KEY: 2}, {}]
    merged = as_json(merges[0])
    assert STATS_RUNS_KEY not in merged["written"]
    # The two small runs are one part of the destination, which holds nothing else.
    runs = Cache(PrefixedStore(store, into))
    [part] = runs.parts(STATS_RUNS_KEY)
    assert "planted" not in part
    reports = [
        report for _, value in runs.read_each(STATS_RUNS_KEY, STATS_RUNS) for report in value
    ]
    assert len(reports) == 2
    merged_summary = as_json(
        cli("stats", "summary", "--url", url, "--namespace-prefix", into, "--json", cwd=tmp_path)
    )
    assert merged_summary["totals"] == summary["totals"]


def test_ingesting_a_report_twice_changes_no_summary(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    args = ["--url", url, *NS, "--ref", "main", "--run-id", "41", "--shard", "2/4"]
    reports = [str(DATA / "pytest_xunit2.xml"), str(DATA / "pytorch_style.xml")]
    summaries = []
    for _ in range(2):
        ok(cli("stats", "ingest", *args, *reports, cwd=tmp_path))
        summaries.append(as_json(cli("stats", "summary", *args, "--json", cwd=tmp_path)))
    assert summaries[0]["totals"]["tests"] == 11
    assert summaries[1] == summaries[0]


def test_malformed_report_writes_nothing(tmp_path: Path, url: str) -> None:
    result = cli(
        "stats",
        "ingest",
        "--url",
        url,
        *NS,
        str(DATA / "pytest_xunit2.xml"),
        str(DATA / "malformed_billion_laughs.xml"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "malformed_billion_laughs.xml:2:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert store_keys(url) == []


# -- pull and push --------------------------------------------------------------------


def test_shards_push_and_the_next_run_pulls_everything(tmp_path: Path, url: str) -> None:
    for shard, failing in (("1/2", ["t.py::a"]), ("2/2", ["t.py::b"])):
        workdir = tmp_path / shard.replace("/", "of")
        write_lastfailed(workdir / ".pytest_cache", failing, ["t.py::a", "t.py::b", "t.py::c"])
        ok(cachekit("push", "--url", url, *NS, "--ref", "main", "--shard", shard, cwd=workdir))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    pulled = as_json(cachekit("pull", "--url", url, *NS, "--ref", "main", "--json", cwd=fresh))
    assert pulled["failing"] == 2
    cache_dir = fresh / ".pytest_cache"
    assert read_lastfailed(cache_dir) == {"t.py::a": True, "t.py::b": True}
    assert json.loads((cache_dir / "v" / "cache" / "nodeids").read_text()) == [
        "t.py::a",
        "t.py::b",
        "t.py::c",
    ]
    # pytest's supporting files, as pytest itself would create them.
    assert (cache_dir / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d1")
    assert (cache_dir / ".gitignore").read_text().endswith("*\n")

    # This run fixes a; b was not run here and stays failing locally (pytest keeps it).
    write_lastfailed(cache_dir, ["t.py::b"], ["t.py::a", "t.py::b", "t.py::c"])
    ok(cachekit("push", "--url", url, *NS, "--ref", "main", cwd=fresh))
    again = tmp_path / "again"
    again.mkdir()
    ok(cachekit("pull", "--url", url, *NS, "--ref", "main", cwd=again))
    assert read_lastfailed(again / ".pytest_cache") == {"t.py::b": True}


def test_carried_over_failures_do_not_hide_another_shards_fix(tmp_path: Path, url: str) -> None:
    seed = tmp_path / "seed"
    write_lastfailed(seed / ".pytest_cache", ["t.py::a"], ["t.py::a"])
    ok(cli("push", "--url", url, *NS, "--ref", "main", cwd=seed))
    one, two = tmp_path / "one", tmp_path / "two"
    for workdir in (one, two):
        workdir.mkdir()
        ok(cli("pull", "--url", url, *NS, "--ref", "main", cwd=workdir))
    # Shard two runs a and it passes; shard one does not run it and pushes later.
    write_lastfailed(two / ".pytest_cache", [], ["t.py::a"])
    ok(cli("push", "--url", url, *NS, "--ref", "main", cwd=two))
    ok(cli("push", "--url", url, *NS, "--ref", "main", cwd=one))
    check = tmp_path / "check"
    check.mkdir()
    ok(cli("pull", "--url", url, *NS, "--ref", "main", cwd=check))
    assert read_lastfailed(check / ".pytest_cache") == {}


def test_pull_follows_the_read_chain(tmp_path: Path, url: str) -> None:
    write_lastfailed(tmp_path / "main" / ".pytest_cache", ["t.py::on_main"], [])
    ok(cli("push", "--url", url, *NS, "--ref", "main", cwd=tmp_path / "main"))
    pr = tmp_path / "pr"
    pr.mkdir()
    ok(cli("pull", "--url", url, *NS, "--ref", "feature/x", "--base-ref", "main", cwd=pr))
    assert read_lastfailed(pr / ".pytest_cache") == {"t.py::on_main": True}
    # Pushing from the pull request writes under its own ref only.
    write_lastfailed(pr / ".pytest_cache", ["t.py::on_main", "t.py::new"], [])
    ok(cli("push", "--url", url, *NS, "--ref", "feature/x", "--base-ref", "main", cwd=pr))
    main_prefix = namespace_prefix("acme/app", "main", "test")
    pr_prefix = namespace_prefix("acme/app", "feature/x", "test")
    keys = store_keys(url)
    assert len([k for k in keys if k.startswith(main_prefix + "/")]) == 1
    assert len([k for k in keys if k.startswith(pr_prefix + "/")]) == 1
    check = tmp_path / "check"
    check.mkdir()
    ok(cli("pull", "--url", url, *NS, "--ref", "main", cwd=check))
    assert read_lastfailed(check / ".pytest_cache") == {"t.py::on_main": True}


def fork_env(tmp_path: Path) -> dict[str, str]:
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps(
            {
                "repository": {"full_name": "acme/app", "default_branch": "main"},
                "pull_request": {
                    "head": {"repo": {"full_name": "mallory/app"}},
                    "base": {"repo": {"full_name": "acme/app"}},
                },
            }
        )
    )
    return clean_env(
        GITHUB_ACTIONS="true",
        GITHUB_REPOSITORY="acme/app",
        GITHUB_EVENT_NAME="pull_request",
        GITHUB_EVENT_PATH=str(event),
        GITHUB_HEAD_REF="main",
        GITHUB_BASE_REF="main",
        GITHUB_JOB="test",
        GITHUB_RUN_ID="5",
    )


def test_forks_read_but_never_write(tmp_path: Path, url: str) -> None:
    seed = tmp_path / "seed"
    write_lastfailed(seed / ".pytest_cache", ["t.py::a"], ["t.py::a"])
    ok(cli("push", "--url", url, "--repository", "acme/app", "--job", "test", cwd=seed))
    ok(cli("push", "--url", url, *NS, "--ref", "main", cwd=seed))
    before = {key: open_store(url).get(key) for key in store_keys(url)}
    fork = tmp_path / "fork"
    fork.mkdir()
    env = fork_env(tmp_path)
    pulled = as_json(cli("pull", "--url", url, "--json", cwd=fork, env=env))
    assert "read-only" in pulled["namespace"]
    assert read_lastfailed(fork / ".pytest_cache") == {"t.py::a": True}
    write_lastfailed(fork / ".pytest_cache", ["t.py::evil"], ["t.py::evil"])
    pushed = ok(cli("push", "--url", url, cwd=fork, env=env))
    assert "read-only" in pushed.stderr
    assert "mallory/app" in pushed.stderr
    ingested = ok(
        cli("stats", "ingest", "--url", url, str(DATA / "pytest_xunit1.xml"), cwd=fork, env=env)
    )
    assert "nothing ingested" in ingested.stderr
    # Configuration cannot raise trust.
    ok(cli("push", "--url", url, cwd=fork, env=env | {"CACHEKIT_READONLY": "0"}))
    assert {key: open_store(url).get(key) for key in store_keys(url)} == before


def test_readonly_option(tmp_path: Path, url: str) -> None:
    write_lastfailed(tmp_path / ".pytest_cache", ["t.py::a"], ["t.py::a"])
    result = ok(cli("push", "--url", url, *NS, "--readonly", cwd=tmp_path))
    assert "nothing pushed" in result.stderr
    assert store_keys(url) == []
    env = clean_env(CACHEKIT_READONLY="1")
    ok(cli("push", "--url", url, *NS, cwd=tmp_path, env=env))
    assert store_keys(url) == []


# -- show, compact, merge, gc ---------------------------------------------------------


def test_show_compact_show(tmp_path: Path, url: str) -> None:
    for shard in ("1/3", "2/3", "3/3"):
        workdir = tmp_path / shard.replace("/", "of")
        write_lastfailed(workdir / ".pytest_cache", [f"t.py::{shard[0]}"], ["t.py::x"])
        ok(cli("push", "--url", url, *NS, "--ref", "main", "--shard", shard, cwd=workdir))
    shown = as_json(cli("show", "--url", url, "--json", cwd=tmp_path))
    rows = {row["key"].rpartition("/default/")[2]: row for row in shown["keys"]}
    assert set(rows) == {LASTFAILED_KEY, NODEIDS_KEY}
    assert len(rows[LASTFAILED_KEY]["parts"]) == 3
    assert all("shard-" in part for part in rows[LASTFAILED_KEY]["parts"])
    assert not rows[LASTFAILED_KEY]["base"]
    assert sorted(still_failing(rows[LASTFAILED_KEY]["value"])) == ["t.py::1", "t.py::2", "t.py::3"]
    assert rows[NODEIDS_KEY]["value"] == {"count": 1, "names": ["t.py::x"]}
    text = ok(cli("show", "--url", url, cwd=tmp_path)).stdout
    assert "3 failing of 3 observed" in text

    compacted = ok(cli("compact", "--url", url, "--json", cwd=tmp_path))
    assert compacted.stderr == ""  # no progress output when stderr is not a terminal
    assert sorted(json.loads(compacted.stdout)["compacted"].values()) == [3, 3]
    shown_after = as_json(cli("show", "--url", url, "--json", cwd=tmp_path))
    for row in shown_after["keys"]:
        assert row["base"]
        assert row["parts"] == []
        before = next(r["value"] for r in shown["keys"] if r["key"] == row["key"])
        if row["key"].endswith(NODEIDS_KEY):  # compacted into digests, which have no names
            before = {"count": before["count"], "names": []}
        assert row["value"] == before


def test_show_counts_the_tests_with_a_duration(tmp_path: Path, url: str) -> None:
    """Each test once however many runs recorded it, and a scope's fixture setup (kept
    beside the tests for the shard split) is no test."""
    cache = Cache(PrefixedStore(open_store(url), namespace_prefix("acme/app", "main", "test")))
    cache.write_part(DURATIONS_KEY, "p1", {"1.0": {"t.py::a": 1.0, scoped_setup_key("t.py"): 2.0}})
    cache.write_part(DURATIONS_KEY, "p2", {"2.0": {"t.py::a": 1.5, "t.py::b": 0.1}})
    assert "  2 durations" in ok(cli("show", "--url", url, cwd=tmp_path)).stdout


def test_compact_and_merge_leave_signed_records_alone(tmp_path: Path, url: str) -> None:
    """``skip/passed`` holds signed records: folded without the key, a record planted
    before the fold could hide a signed one, so only runs holding the key compact it."""
    prefix = namespace_prefix("acme/app", "main", "test")
    cache = Cache(PrefixedStore(open_store(url), prefix))
    for number in range(3):
        cache.write_part("skip/passed", f"p{number}", {f"{number:032x}": {"at": 1, "value": {}}})
        cache.write_part(LASTFAILED_KEY, f"p{number}", {"t.py::a": {"at": 1, "failed": False}})
    compacted = as_json(cli("compact", "--url", url, "--json", cwd=tmp_path))
    assert list(compacted["compacted"]) == [f"{prefix}/{LASTFAILED_KEY}"]
    assert compacted["skipped_signed"] == [f"{prefix}/skip/passed"]
    assert len(cache.parts("skip/passed")) == 3
    text = ok(cli("compact", "--url", url, cwd=tmp_path)).stdout
    assert "skip/passed: skipped (signed records" in text
    into = namespace_prefix("acme/app", "main", "test", "all")
    merged = as_json(
        cli("merge", "--url", url, "--from", prefix, "--into", into, "--json", cwd=tmp_path)
    )
    assert set(merged["written"]) == {LASTFAILED_KEY}


def test_show_flags_foreign_and_unreadable_objects(tmp_path: Path, url: str) -> None:
    store = open_store(url)
    store.put("notes/readme", b"hello")
    store.put("x/cache/lastfailed/@parts/broken", b"not a cachekit value")
    shown = as_json(cli("show", "--url", url, "--json", cwd=tmp_path))
    assert shown["raw"] == [{"key": "notes/readme", "size": 5}]
    assert shown["keys"][0]["unreadable"] == ["x/cache/lastfailed/@parts/broken"]
    text = ok(cli("show", "--url", url, cwd=tmp_path)).stdout
    assert "(not written by cachekit) notes/readme" in text
    assert "(unreadable)" in text


def test_merge_folds_configs_into_one_namespace(tmp_path: Path, url: str) -> None:
    for config, failing in (("py310", "t.py::old_python"), ("py312", "t.py::new_python")):
        workdir = tmp_path / config
        write_lastfailed(workdir / ".pytest_cache", [failing], [failing])
        ok(cli("push", "--url", url, *NS, "--ref", "pr-7", "--config", config, cwd=workdir))
    source = "/".join(namespace_prefix("acme/app", "pr-7").split("/")[:3])
    into = namespace_prefix("acme/app", "main", "test", "all")
    merged = as_json(
        cli("merge", "--url", url, "--from", source, "--into", into, "--json", cwd=tmp_path)
    )
    assert len(merged["sources"]) == 2
    assert set(merged["written"]) == {LASTFAILED_KEY, NODEIDS_KEY}
    view = tmp_path / "view"
    view.mkdir()
    ok(cli("pull", "--url", url, *NS, "--namespace-prefix", into, cwd=view))
    assert read_lastfailed(view / ".pytest_cache") == {
        "t.py::new_python": True,
        "t.py::old_python": True,
    }
    # Merging again is harmless (joins are idempotent), and --compact folds the result.
    again = as_json(
        cli(
            "merge",
            "--url",
            url,
            "--from",
            source,
            "--into",
            into,
            "--compact",
            "--json",
            cwd=tmp_path,
        )
    )
    assert set(again["compacted"].values()) == {2}
    missing = cli("merge", "--url", url, "--from", "v2/nothing", "--into", into, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no cachekit namespace" in missing.stderr


def test_merge_of_many_namespaces_equals_joining_every_part_in_turn(
    tmp_path: Path, url: str
) -> None:
    """Namespaces with several overlapping parts (and a base), read in one batch and joined
    pairwise: the values of joining every part one after another, as before."""
    store = open_store(url)
    rng = random.Random(4)
    keys = (LASTFAILED_KEY, NODEIDS_KEY, DURATIONS_KEY)
    every_value: dict[str, list[Any]] = {key: [] for key in keys}
    for job in range(5):
        cache = Cache(PrefixedStore(store, namespace_prefix("acme/app", "pr-9", f"job{job}")))
        for shard in range(7):
            at = 1000.0 + rng.randrange(4)  # ties across shards and jobs
            ids = sorted({f"t{rng.randrange(40)}.py::test" for _ in range(12)})
            failed = [test_id for test_id in ids if rng.random() < 0.3]
            values: dict[str, Any] = {
                LASTFAILED_KEY: observe_outcomes(
                    failed=failed, passed=set(ids).difference(failed), at=at
                ),
                NODEIDS_KEY: ids,
                DURATIONS_KEY: durations_part(at, {i: rng.randrange(9) / 4 for i in ids}),
            }
            for key, value in values.items():
                if shard == 0 and job == 2:
                    cache.set(key, value)  # a compacted namespace has a base
                else:
                    cache.write_part(key, f"{shard:04d}-shard", value)
                every_value[key].append(STRATEGIES[key].check(value))
    into = namespace_prefix("acme/app", "main", "test", "all")
    source = ref_prefix("acme/app", "pr-9")
    merged = as_json(
        cli(
            *("merge", "--url", url, "--from", f"{source}/", "--into", into, "--json"),
            *("--from", namespace_prefix("acme/app", "pr-9", "job3")),  # found twice: read once
            cwd=tmp_path,
        )
    )
    assert len(merged["sources"]) == 5
    assert set(merged["written"]) == set(keys)
    read = Cache(store).read_merged_many({f"{into}/{key}": STRATEGIES[key] for key in keys})
    for key in keys:
        strategy = STRATEGIES[key]
        expected = stored_form(strategy, join_all(strategy, every_value[key]))
        assert read[f"{into}/{key}"].value == strategy.check(expected), key
        assert len(read[f"{into}/{key}"].parts) == 1


def test_gc_deletes_only_old_values(tmp_path: Path, url: str) -> None:
    store = open_store(url)
    old = Cache(store, clock=lambda: 1000.0)
    old.set("a/cache/lastfailed", {})
    old.write_part("a/cache/nodeids", "00000000001000000000-old", ["t"])
    fresh = Cache(store)
    fresh.write_part("a/cache/nodeids", Namespace().new_part_id(), ["u"])
    fresh.set("b/cache/lastfailed", {})
    store.put("foreign/object", b"keep me")
    dry = as_json(
        cli("gc", "--url", url, "--older-than", "30d", "--dry-run", "--json", cwd=tmp_path)
    )
    assert dry["deleted"] == [
        "a/cache/lastfailed/@base",
        "a/cache/nodeids/@parts/00000000001000000000-old",
    ]
    assert len(store_keys(url)) == 5
    ok(cli("gc", "--url", url, "--older-than", "1w2d", cwd=tmp_path))
    keys = store_keys(url)
    assert len(keys) == 3
    assert "foreign/object" in keys
    assert "b/cache/lastfailed/@base" in keys


# -- shard ----------------------------------------------------------------------------


def test_shard_command_splits_by_recorded_durations(tmp_path: Path, url: str) -> None:
    ok(
        cli(
            "stats",
            "ingest",
            "--url",
            url,
            *NS,
            "--ref",
            "main",
            str(DATA / "pytorch_style.xml"),
            cwd=tmp_path,
        )
    )
    ids = [
        "test_torch.py::TestTorch::test_matmul",
        "test_torch.py::TestTorch::test_flaky_cuda",
        "test_torch.py::TestTorch::test_always_fails",
        "test_nn.py::TestConv::test_conv2d",
        "test_new.py::test_unknown",
    ]

    def shard(which: str, *options: str) -> Any:
        stdin = "\n".join(ids) + "\n"
        args = ["shard", "--url", url, *NS, "--ref", "main", *options, "--json", which]
        return json.loads(ok(cli(*args, cwd=tmp_path, stdin=stdin)).stdout)

    # The first shard of CI run 5 reads the report's durations (not yet compacted) and
    # stores them as the run's split plan; the second splits by that plan.
    first, second = (shard(which, "--run-id", "5") for which in ("1/2", "2/2"))
    assert first["split_by"] == "split plan of CI run 5, written by this shard"
    assert second["split_by"] == "split plan of CI run 5, from the store"
    assert sorted(first["tests"] + second["tests"]) == sorted(ids)
    # The 1234.5 s test is alone on its shard.
    assert first["tests"] == ["test_torch.py::TestTorch::test_matmul"]
    # Without a CI run id nothing fixes what shards read: durations as of the last
    # compaction only (none yet), so the split is by count.
    unplanned = shard("1/2")
    assert unplanned["split_by"].startswith("durations as of the last compaction (no CI run id")
    assert len(unplanned["tests"]) == 3


def test_merged_lastfailed_read_in_process_matches_cli(tmp_path: Path, url: str) -> None:
    """The CLI and the library agree on the layout (what the pytest plugin will use)."""
    ns = Namespace(repository="acme/app", ref="main", job="test")
    cache = Cache(open_store(url))
    cache.write_part(
        f"{ns.prefix}/{LASTFAILED_KEY}",
        ns.new_part_id(),
        observe_outcomes(failed=["t.py::lib"], passed=[], at=1.0),
    )
    ok(cli("pull", "--url", url, *NS, "--ref", "main", cwd=tmp_path))
    assert read_lastfailed(tmp_path / ".pytest_cache") == {"t.py::lib": True}
    merged = cache.read_merged(f"{ns.prefix}/{LASTFAILED_KEY}", LASTFAILED)
    assert still_failing(merged.value) == {"t.py::lib": True}


def test_namespace_command(tmp_path: Path) -> None:
    data = as_json(
        cli("namespace", *NS, "--ref", "feature/x", "--base-ref", "main", "--json", cwd=tmp_path)
    )
    assert data["prefix"] == namespace_prefix("acme/app", "feature/x", "test")
    assert data["read_prefixes"] == [
        namespace_prefix("acme/app", "feature/x", "test"),
        namespace_prefix("acme/app", "main", "test"),
    ]
    assert data["trusted"] is True
    ref_prefix = ok(cli("namespace", *NS, "--ref", "main", "--get", "ref_prefix", cwd=tmp_path))
    assert ref_prefix.stdout == namespace_prefix("acme/app", "main").rsplit("/", 2)[0] + "\n"
    forked = ok(cli("namespace", "--get", "trusted", cwd=tmp_path, env=fork_env(tmp_path)))
    assert forked.stdout == "false\n"


def test_fork_push_needs_no_credentials(tmp_path: Path) -> None:
    """Forks get no storage credentials: push and ingest must not even open the store."""
    write_lastfailed(tmp_path / ".pytest_cache", ["t.py::a"], ["t.py::a"])
    env = fork_env(tmp_path)
    assert "nothing pushed" in ok(cli("push", "--url", "nope://x", cwd=tmp_path, env=env)).stderr
    result = ok(
        cli(
            "stats",
            "ingest",
            "--url",
            "nope://x",
            str(DATA / "pytest_xunit1.xml"),
            cwd=tmp_path,
            env=env,
        )
    )
    assert "nothing ingested" in result.stderr
