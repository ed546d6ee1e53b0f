"""Every pytest run with a backend records each test's outcome, duration and reruns as
its own part, read back by ``cachekit stats`` and by duration-balanced sharding."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cachekit.ci import layout
from cachekit.stats.junit import TestCase
from cachekit.stats.runs import latest_run, load_durations, load_runs, runs_from_value
from cachekit.values.durations import scoped_setup_key
from cachekit_pytest.recording import TestStats
from plugin_support import shared

SUITE = """
import time, pytest
from pathlib import Path

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_pass():
    pass

def test_slow():
    time.sleep(0.3)

def test_fail():
    assert 1 == 2, "one is not two"

def test_error(broken):
    pass

def test_skip():
    pytest.skip("not today")

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

def test_flaky(tmp_path_factory):
    marker = Path(__file__).with_name("flaky-ran-once")
    if not marker.exists():
        marker.write_text("")
        assert False, "first attempt fails"

class TestGroup:
    @pytest.mark.parametrize("n", [1, 2])
    def test_param(self, n):
        pass
"""


def recorded(url: str) -> dict[str, TestCase]:
    return {case.test_id: case for case in latest_run(load_runs(shared(url)))}


def test_each_test_is_recorded_with_outcome_duration_and_reruns(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(f"--cache-url={remote_url}", "--reruns=1", "-p", "no:randomly")
    assert result.parseoutcomes() == {
        "passed": 5,
        "failed": 1,
        "errors": 1,
        "skipped": 1,
        "xfailed": 1,
        "rerun": 3,
    }
    cases = recorded(remote_url)
    outcomes = {test_id.split("::", 1)[1]: case.outcome for test_id, case in cases.items()}
    assert outcomes == {
        "test_pass": "passed",
        "test_slow": "passed",
        "test_fail": "failed",
        "test_error": "error",
        "test_skip": "skipped",
        "test_xfail": "skipped",
        "test_flaky": "passed",
        "TestGroup::test_param[1]": "passed",
        "TestGroup::test_param[2]": "passed",
    }
    assert set(cases) == {f"test_suite.py::{name}" for name in outcomes}  # pytest's node ids
    assert cases["test_suite.py::test_flaky"].reruns == 1
    assert cases["test_suite.py::test_flaky"].flaky
    assert cases["test_suite.py::test_fail"].reruns == 1  # failed on both attempts
    assert cases["test_suite.py::test_error"].reruns == 1
    assert cases["test_suite.py::test_pass"].reruns == 0
    assert "one is not two" in cases["test_suite.py::test_fail"].message
    assert "fixture broke" in cases["test_suite.py::test_error"].message
    assert cases["test_suite.py::test_skip"].message == "not today"
    assert cases["test_suite.py::test_slow"].duration >= 0.3
    assert cases["test_suite.py::test_pass"].duration < 0.3
    durations = load_durations(shared(remote_url))
    assert durations["test_suite.py::test_slow"] >= 0.3
    assert "test_suite.py::test_skip" not in durations  # a skip says little about time


def test_the_stats_command_summarizes_what_runs_recorded(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest(f"--cache-url={remote_url}", "--reruns=1", "-p", "no:randomly")
    summary = subprocess.run(
        [sys.executable, "-m", "cachekit", "stats", "summary", "--url", remote_url, "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=pytester.path,
    )
    found = json.loads(summary.stdout)
    assert found["totals"]["tests"] == 9
    assert found["totals"]["failures"] == 1
    assert found["totals"]["errors"] == 1
    assert found["totals"]["skipped"] == 2
    assert [case["test_id"] for case in found["flaky"]] == ["test_suite.py::test_flaky"]
    assert found["slowest"][0]["test_id"] == "test_suite.py::test_slow"


def test_each_run_is_its_own_part(pytester: pytest.Pytester, remote_url: str) -> None:
    pytester.makepyfile(test_one="def test_a(): pass")
    for shard in ("1", "2"):
        pytester.runpytest(f"--cache-url={remote_url}", f"--cache-shard={shard}")
    runs = load_runs(shared(remote_url))
    assert len(runs) == 2
    assert len({run.id for run in runs}) == 2
    assert all(run.source == "pytest" for run in runs)
    parts = [key for key in shared(remote_url).store.list() if "/stats/runs/@parts/" in f"/{key}"]
    assert len(parts) == 2


def test_the_record_keeps_the_shard_that_wrote_it() -> None:
    record = TestStats().record(at=1.0, run_id="81", label="shard 2/4 run 81", shard="2/4")
    stored = record.parts("part-1")[layout.STATS_RUNS_KEY]
    assert isinstance(stored, dict)
    (run,) = runs_from_value(stored)
    assert (run.id, run.run_id, run.shard) == ("part-1", "81", "2/4")


@pytest.mark.parametrize(
    "how",
    [("--cache-stats=no",), ("-o", "cache_stats=no")],
    ids=["option", "ini"],
)
def test_statistics_can_be_turned_off(
    pytester: pytest.Pytester, remote_url: str, how: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_one="def test_a(): pass")
    result = pytester.runpytest(f"--cache-url={remote_url}", *how)
    result.assert_outcomes(passed=1)
    keys = shared(remote_url).store.list()
    assert keys  # lastfailed and nodeids are still shared
    assert not [key for key in keys if key.startswith(("stats/",))]
    assert load_runs(shared(remote_url)) == []


def test_untrusted_runs_record_nothing(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_one="def test_a(): pass")
    monkeypatch.setenv("CACHEKIT_READONLY", "1")
    pytester.runpytest(f"--cache-url={remote_url}").assert_outcomes(passed=1)
    assert shared(remote_url).store.list() == []


def test_under_xdist_the_controller_records_every_test_once(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("n", range(20))
        def test_n(n):
            assert n != 7
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", f"--cache-url={remote_url}")
    result.assert_outcomes(passed=19, failed=1)
    runs = load_runs(shared(remote_url))
    assert len(runs) == 1
    cases = {case.test_id: case.outcome for case in runs[0].cases}
    assert len(cases) == 20
    assert cases["test_many.py::test_n[7]"] == "failed"
    assert layout.DURATIONS_KEY  # durations recorded alongside
    assert len(load_durations(shared(remote_url))) == 20


CLASS_FIXTURE = """
import time, pytest

class TestAccounts:
    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def ledger(cls):
        time.sleep(0.3)
        yield
        time.sleep(0.4)

    def test_open(self):
        pass

    def test_close(self):
        pass

def test_alone():
    pass
"""


def test_scoped_fixture_setup_and_teardown_are_recorded_apart_from_the_tests(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    """The class's first test triggers the setup and its last the teardown; neither is
    recorded as theirs (nor in the run's cases), but once, under the class."""
    pytester.makepyfile(test_accounts=CLASS_FIXTURE)
    pytester.runpytest(f"--cache-url={remote_url}").assert_outcomes(passed=3)
    durations = load_durations(shared(remote_url))
    assert 0.7 <= durations[scoped_setup_key("test_accounts.py::TestAccounts")] < 2
    tests = {t: seconds for t, seconds in durations.items() if "::" in t and "\x00" not in t}
    assert set(tests) == {
        "test_accounts.py::TestAccounts::test_open",
        "test_accounts.py::TestAccounts::test_close",
        "test_accounts.py::test_alone",
    }
    assert max(tests.values()) < 0.2
    cases = recorded(remote_url)
    assert max(case.duration for case in cases.values()) < 0.2
