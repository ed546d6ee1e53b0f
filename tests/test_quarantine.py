"""``--quarantine-flaky``: failures of tests the signed history knows to be flaky do not
fail the run; nothing a store writer without the signing key plants can quarantine one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from cachekit.ci.layout import STATS_RUNS_KEY
from cachekit.ci.namespace import detect_namespace
from cachekit.ci.signing import ENV_SIGNING_KEY
from cachekit.stats.signatures import RunSigner
from cachekit.values.merge import MappingUnion
from plugin_support import shared, signed_flaky_history

KEY = "k" * 32
SUITE = """
import os

def test_flaky():
    assert os.environ.get("CK_FLAKY") != "fail"

def test_broken():
    assert False, "broken for good"

def test_fine():
    pass
"""


@pytest.fixture
def url(remote_url: str) -> str:
    """A directory, and S3 on the loopback moto server (through the sync agent)."""
    return f"--cache-url={remote_url}"


@pytest.fixture
def history(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Two runs on one commit, signed: ``test_flaky`` passed in one and failed in the
    other (flaky); ``test_broken`` failed in both (broken, not flaky)."""
    pytester.makepyfile(test_suite=SUITE)
    signed_flaky_history(pytester, monkeypatch, url, KEY)


@pytest.mark.usefixtures("history")
def test_a_known_flaky_failure_does_not_fail_the_run(pytester: pytest.Pytester, url: str) -> None:
    pytester.makepyfile(test_suite=SUITE.replace("assert False", "assert True"))
    result = pytester.runpytest(url, "--quarantine-flaky")
    result.assert_outcomes(passed=2, failed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*= cachekit: quarantined flaky tests =*",
            "QUARANTINED test_suite.py::test_flaky: flaky in the signed history (1 pass(es), "
            "1 failure(s) on the same code; last seen *",
            "1 failure(s) quarantined: they do not fail the run",
        ]
    )
    # Without the option the same failure fails the run.
    assert pytester.runpytest(url).ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.usefixtures("history")
def test_quarantine_under_xdist(pytester: pytest.Pytester, url: str) -> None:
    pytester.makepyfile(test_suite=SUITE.replace("assert False", "assert True"))
    result = pytester.runpytest_subprocess("-n", "2", url, "--quarantine-flaky")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["QUARANTINED test_suite.py::test_flaky: *"])


@pytest.mark.usefixtures("history")
def test_any_other_failure_still_fails_the_run(pytester: pytest.Pytester, url: str) -> None:
    result = pytester.runpytest(url, "--quarantine-flaky")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["QUARANTINED test_suite.py::test_flaky*", "*1 other failure(s) do"]
    )
    assert "QUARANTINED test_suite.py::test_broken" not in result.stdout.str()


@pytest.mark.usefixtures("history")
def test_planted_runs_cannot_quarantine_a_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, remote_url: str, url: str
) -> None:
    """A store writer without the key copies a signed run and flips ``test_broken`` to
    passed (the signature no longer matches), and writes one of its own signed with
    another key: neither makes ``test_broken`` flaky."""
    cache = shared(remote_url)
    runs = cache.read_merged(STATS_RUNS_KEY, MappingUnion()).value
    report_id, stored = next(
        (report_id, run) for report_id, run in runs.items() if run["outcome"].count("f") == 2
    )
    names = stored["name"].split("\n")
    flipped = dict(
        stored,
        outcome="".join(
            "p" if name == "test_broken" else code
            for name, code in zip(names, stored["outcome"], strict=True)
        ),
    )
    cache.write_part(STATS_RUNS_KEY, "planted-1", {report_id + "x": flipped})
    monkeypatch.setenv(ENV_SIGNING_KEY, "z" * 32)
    monkeypatch.setenv("CACHEKIT_RUN_ID", "forged")
    monkeypatch.setenv("CK_FLAKY", "pass")
    pytester.makepyfile(test_suite=SUITE.replace("assert False", "assert True"))
    pytester.runpytest(url).assert_outcomes(passed=3)  # signed with the wrong key
    monkeypatch.setenv(ENV_SIGNING_KEY, KEY)
    monkeypatch.setenv("CACHEKIT_RUN_ID", "3")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(url, "--quarantine-flaky")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "QUARANTINED" not in result.stdout.str()


@pytest.mark.usefixtures("history")
def test_without_the_signing_key_nothing_is_quarantined(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.delenv(ENV_SIGNING_KEY)
    monkeypatch.setenv("CACHEKIT_QUARANTINE_FLAKY", "yes")
    pytester.makepyfile(test_suite=SUITE.replace("assert False", "assert True"))
    result = pytester.runpytest(url)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*QuarantineWarning: cachekit: --quarantine-flaky quarantines nothing in this run: "
            "it needs CACHEKIT_SIGNING_KEY*"
        ]
    )


def test_runs_are_signed_by_whoever_holds_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cachekit stats ingest`` signs as the plugin does; an edited run, a run moved to
    another report id or job, or one signed with another key does not verify."""
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuite name="s"><testcase classname="t" name="test_a" time="0.1"/>'
        '<testcase classname="t" name="test_b" time="0.2"><failure message="no"/></testcase>'
        "</testsuite>",
        encoding="utf-8",
    )
    store = str(tmp_path / "store")
    ingest = [sys.executable, "-m", "cachekit", "stats", "ingest", "--url", store, str(report)]
    monkeypatch.setenv(ENV_SIGNING_KEY, KEY)
    subprocess.run(ingest, check=True, cwd=tmp_path, capture_output=True)
    monkeypatch.delenv(ENV_SIGNING_KEY)
    report.write_text(report.read_text(encoding="utf-8").replace("test_a", "test_c"))
    subprocess.run(ingest, check=True, cwd=tmp_path, capture_output=True)
    runs = shared(store).read_merged(STATS_RUNS_KEY, MappingUnion()).value
    namespace = detect_namespace()
    signer = RunSigner.derive(KEY.encode(), namespace)
    signed = [report_id for report_id, run in runs.items() if signer.verified(report_id, run)]
    assert len(runs) == 2
    assert len(signed) == 1
    run = runs[signed[0]]
    assert not signer.verified(signed[0], dict(run, outcome="pp"))
    assert not signer.verified(signed[0] + "0", run)
    other_job = RunSigner.derive(KEY.encode(), attrs.evolve(namespace, job="other"))
    assert not other_job.verified(signed[0], run)
    assert not RunSigner.derive(b"z" * 32, namespace).verified(signed[0], run)
    assert KEY not in repr(signer)
