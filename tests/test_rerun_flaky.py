"""``--rerun-flaky=N``: a failure of a test the signed history knows to be flaky is
retried; any other failure is reported at once; nothing unsigned makes cachekit retry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cachekit.ci.signing import ENV_SIGNING_KEY
from plugin_support import signed_flaky_history

KEY = "k" * 32
#: ``test_flaky`` fails when told to, or only on its first attempt ("once"); every test
#: counts its attempts in a file beside it.
SUITE = """
import os
from pathlib import Path

def attempt(name):
    counter = Path(__file__).with_name(name + ".attempts")
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    return count

def test_flaky():
    count = attempt("flaky")
    told = os.environ.get("CK_FLAKY")
    assert told != "fail", "flaked"
    assert told != "once" or count > 1, "flaked once"

def test_broken():
    attempt("broken")
    assert False, "broken for good"

def test_fine():
    attempt("fine")
"""


@pytest.fixture
def url(remote_url: str) -> str:
    """A directory, and S3 on the loopback moto server (through the sync agent)."""
    return f"--cache-url={remote_url}"


@pytest.fixture
def history(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """`signed_flaky_history`; then ``test_flaky`` flakes once per run, and the
    attempts are counted from 0."""
    pytester.makepyfile(test_suite=SUITE)
    signed_flaky_history(pytester, monkeypatch, url, KEY)
    monkeypatch.setenv("CK_FLAKY", "once")
    for counter in pytester.path.glob("*.attempts"):
        counter.unlink()


def attempts(pytester: pytest.Pytester) -> dict[str, int]:
    return {
        counter.name.removesuffix(".attempts"): int(counter.read_text())
        for counter in pytester.path.glob("*.attempts")
    }


@pytest.mark.usefixtures("history")
def test_a_known_flaky_failure_is_rerun_and_nothing_else_is(
    pytester: pytest.Pytester, url: str, remote_url: str
) -> None:
    result = pytester.runpytest(url, "--rerun-flaky=2", "-p", "no:randomly")
    assert result.parseoutcomes() == {"passed": 2, "failed": 1, "rerun": 1}
    assert attempts(pytester) == {"flaky": 2, "broken": 1, "fine": 1}
    result.stdout.fnmatch_lines(["test_suite.py R.F. *"])  # R: the failed attempt
    # The stored run says test_flaky passed after one rerun: evidence of its own.
    completed = subprocess.run(
        [sys.executable, "-m", "cachekit", "stats", "flaky", "--url", remote_url, "--json"],
        capture_output=True,
        text=True,
        cwd=pytester.path,
        check=True,
    )
    (flaky,) = json.loads(completed.stdout)
    assert flaky["passes"][0]["run_id"] == "3"
    assert flaky["passes"][0]["reruns"] == 1


@pytest.mark.usefixtures("history")
def test_reruns_end_after_n_attempts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("CK_FLAKY", "fail")
    monkeypatch.setenv("CACHEKIT_RERUN_FLAKY", "3")
    result = pytester.runpytest(url, "-p", "no:randomly")
    assert result.parseoutcomes() == {"passed": 1, "failed": 2, "rerun": 3}
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert attempts(pytester)["flaky"] == 4


@pytest.mark.usefixtures("history")
def test_reruns_under_xdist(pytester: pytest.Pytester, url: str) -> None:
    result = pytester.runpytest_subprocess("-n", "2", url, "--rerun-flaky=1", "-p", "no:randomly")
    assert result.parseoutcomes() == {"passed": 2, "failed": 1, "rerun": 1}
    assert attempts(pytester) == {"flaky": 2, "broken": 1, "fine": 1}


@pytest.mark.usefixtures("history")
def test_without_the_signing_key_nothing_is_rerun(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.delenv(ENV_SIGNING_KEY)
    result = pytester.runpytest(url, "--rerun-flaky=2", "-p", "no:randomly")
    assert result.parseoutcomes()["failed"] == 2
    assert "rerun" not in result.parseoutcomes()
    result.stdout.fnmatch_lines(
        [
            "*RerunWarning: cachekit: --rerun-flaky reruns nothing in this run: "
            "it needs CACHEKIT_SIGNING_KEY*"
        ]
    )


@pytest.mark.usefixtures("history")
def test_history_signed_with_another_key_reruns_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Whoever holds another key (or none) cannot make a test be retried."""
    monkeypatch.setenv(ENV_SIGNING_KEY, "z" * 32)
    result = pytester.runpytest(url, "--rerun-flaky=2", "-p", "no:randomly")
    assert result.parseoutcomes() == {"passed": 1, "failed": 2}
    assert attempts(pytester)["flaky"] == 1


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (("--rerun-flaky=-1",), "*--rerun-flaky: expected a whole number >= 0, got '-1'*"),
        (("-o", "rerun_flaky=lots"), "*rerun_flaky / CACHEKIT_RERUN_FLAKY: expected a whole*"),
    ],
)
def test_a_bad_count_is_a_usage_error(
    pytester: pytest.Pytester, tmp_path: Path, given: tuple[str, ...], message: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(f"--cache-url={tmp_path / 'store'}", *given)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
