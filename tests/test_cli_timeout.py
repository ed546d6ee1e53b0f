"""The ``cachekit`` command's time bound (``--timeout``) and ``--fail-open``, run as real
subprocesses against a server that accepts connections and never answers, and against a
port where nothing listens."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from servers import CLOSED_PORT, LOOPBACK
from test_cli import clean_env, write_lastfailed

#: Starting Python and importing the S3 client, on a loaded machine. Before the time
#: bound, one command against a hanging server took about 48 s (botocore's read timeout
#: and retries).
SLACK = 12.0
NS = ["--repository", "acme/app", "--ref", "main", "--job", "test"]


def s3_url_at(endpoint: str) -> str:
    return f"s3://ck-bucket/cache?{urlencode({'endpoint_url': endpoint})}"


def timed(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cachekit", *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, time.monotonic() - started


def assert_one_error_line(result: subprocess.CompletedProcess[str], *wanted: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in wanted:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["show"],
        ["stats", "summary", *NS],
        ["pull", *NS],
        ["shard", "1/2", *NS],
    ],
    ids=lambda command: command[0] if command[0] != "stats" else "stats-summary",
)
def test_a_hanging_store_ends_at_the_timeout(
    tmp_path: Path, hanging_endpoint: str, command: list[str]
) -> None:
    url = s3_url_at(hanging_endpoint)
    result, elapsed = timed(*command, "--url", url, "--timeout", "2", cwd=tmp_path)
    assert result.returncode == 1, result
    assert elapsed < 2 + SLACK, elapsed
    assert result.stdout == ""
    line = assert_one_error_line(result, "cachekit: error: ", "no answer", "--timeout 2 s")
    assert line.count("\n") == 0
    assert not (tmp_path / ".pytest_cache").exists()  # pull wrote nothing


def test_the_timeout_comes_from_the_environment(tmp_path: Path, hanging_endpoint: str) -> None:
    env = clean_env(CACHEKIT_TIMEOUT="1.5", CACHEKIT_URL=s3_url_at(hanging_endpoint))
    result, elapsed = timed("show", cwd=tmp_path, env=env)
    assert result.returncode == 1, result
    assert elapsed < 1.5 + SLACK, elapsed
    assert_one_error_line(result, "--timeout 1.5 s")
    # The option wins over the variable.
    env["CACHEKIT_TIMEOUT"] = "3600"
    result, elapsed = timed("show", "--timeout", "1", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert elapsed < 1 + SLACK, elapsed


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["show", "--url", "x", "--timeout", "0"], {}),
        (["show", "--url", "x", "--timeout", "soon"], {}),
        (["show", "--url", "x", "--timeout", "nan"], {}),
        (["show", "--url", "x"], {"CACHEKIT_TIMEOUT": "-1"}),
    ],
)
def test_a_bad_timeout_is_a_usage_error(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    result, _ = timed(*args, cwd=tmp_path, env=clean_env(**env))
    assert result.returncode == 2, result
    assert "not a timeout" in result.stderr
    assert "CACHEKIT_TIMEOUT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "hanging"),
    [
        (["pull", *NS], True),
        (["pull", *NS], False),
        (["push", *NS], True),
        (["push", *NS], False),
        (["merge", "--from", "v2", "--into", "v2/all"], True),
        (["compact"], False),
        (["gc", "--older-than", "30d"], True),
    ],
    ids=["pull-hanging", "pull-down", "push-hanging", "push-down", "merge", "compact", "gc"],
)
def test_fail_open_warns_and_exits_0_when_the_store_is_unreachable(
    tmp_path: Path, hanging_endpoint: str, command: list[str], hanging: bool
) -> None:
    endpoint = hanging_endpoint if hanging else f"http://{LOOPBACK}:{CLOSED_PORT}"
    url = s3_url_at(endpoint)
    write_lastfailed(tmp_path / ".pytest_cache", ["t.py::a"], ["t.py::a", "t.py::b"])
    before = sorted(path.name for path in (tmp_path / ".pytest_cache").rglob("*"))
    args = [*command, "--url", url, "--timeout", "2"]

    failed, elapsed = timed(*args, cwd=tmp_path)
    assert failed.returncode == 1, failed
    assert elapsed < 2 + SLACK, elapsed
    assert_one_error_line(failed, "cachekit: error: ")

    result, elapsed = timed(*args, "--fail-open", cwd=tmp_path)
    assert result.returncode == 0, result
    assert elapsed < 2 + SLACK, elapsed
    assert result.stdout == ""
    assert_one_error_line(result, "cachekit: warning: ", "--fail-open", "ck-bucket")
    # pull replaced nothing in the working copy
    assert sorted(path.name for path in (tmp_path / ".pytest_cache").rglob("*")) == before


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["pull", "--fail-open"], 2),  # no store given
        (["gc", "--fail-open", "--url", "x", "--older-than", "soon"], 2),
        (["push", "--fail-open", "--url", "x", "--timeout", "0"], 2),
        (["show", "--fail-open", "--url", "x"], 2),  # not a step around the tests
        (["pull", "--fail-open", "--url", "nosuchscheme://bucket/x"], 1),  # configuration
    ],
)
def test_fail_open_never_hides_a_usage_or_configuration_error(
    tmp_path: Path, args: list[str], code: int
) -> None:
    result, _ = timed(*args, *NS, cwd=tmp_path) if args[0] != "show" else timed(*args, cwd=tmp_path)
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    assert "warning" not in result.stderr


def test_a_store_that_answers_is_unaffected_by_fail_open(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    write_lastfailed(tmp_path / "one" / ".pytest_cache", ["t.py::a"], ["t.py::a"])
    pushed, _ = timed("push", "--url", url, *NS, "--fail-open", cwd=tmp_path / "one")
    assert pushed.returncode == 0, pushed
    (tmp_path / "two").mkdir()
    pulled, _ = timed(
        "pull", "--url", url, *NS, "--fail-open", "--timeout", "30", cwd=tmp_path / "two"
    )
    assert pulled.returncode == 0, pulled
    assert "pulled 1 failing test(s)" in pulled.stdout
    assert pulled.stderr == ""
