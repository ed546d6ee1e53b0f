"""A pytest run's statistics are stored exactly as an ingested JUnit report of the same
run would be (`cachekit.stats.runs.run_parts`): the stats commands, the flaky-test
detection and the shard split read both alike."""

from __future__ import annotations

from typing import Any

from cachekit.ci.layout import DURATIONS_KEY, STATS_RUNS_KEY
from cachekit.stats.junit import TestCase
from cachekit.stats.runs import Run, run_parts, runs_from_value
from cachekit.values.durations import scoped_setup_key
from cachekit_pytest.sync.records import RunRecord

AT = 1_700_000_000.25

#: node id -> (file, classname, name, outcome, microseconds, reruns, message), as a
#: JUnit report of the same run names each case.
CASES: dict[str, tuple[str, str, str, str, int, int, str]] = {
    "tests/test_a.py::test_plain": (
        "tests/test_a.py", "tests.test_a", "test_plain", "passed", 1500, 0, ""
    ),
    "tests/test_a.py::TestGroup::test_in_class": (
        "tests/test_a.py", "tests.test_a.TestGroup", "test_in_class", "failed", 250_000, 0,
        "assert 1 == 2",
    ),
    "tests/test_a.py::TestGroup::Inner::test_nested[x::y.z-1]": (
        "tests/test_a.py", "tests.test_a.TestGroup.Inner", "test_nested[x::y.z-1]", "passed",
        7, 2, "",
    ),
    "tests/sub/test_b.py::test_skipped": (
        "tests/sub/test_b.py", "tests.sub.test_b", "test_skipped", "skipped", 30, 0,
        "not on this platform",
    ),
    "tests/sub/test_b.py::test_error": (
        "tests/sub/test_b.py", "tests.sub.test_b", "test_error", "error", 12, 0,
        "fixture 'db' not found",
    ),
    "docs/guide.rst::guide.rst": ("docs/guide.rst", "", "guide.rst", "passed", 900, 0, ""),
}  # fmt: skip


def record() -> RunRecord:
    return RunRecord(
        at=AT,
        run_id="ci-7",
        label="local: run ci-7",
        shard="2/4",
        commit="0123abc",
        microseconds={nodeid: case[4] for nodeid, case in CASES.items()},
        unusual={
            nodeid: [case[3], case[5], case[6]]
            for nodeid, case in CASES.items()
            if case[3:4] + case[5:] != ("passed", 0, "")
        },
        scoped_microseconds={"tests/test_a.py": 400_000},
        codes={"tests/test_a.py": "k1", "tests/elsewhere.py": "k2"},
    )


def ingested() -> Run:
    return Run(
        id="part-1",
        at=AT,
        run_id="ci-7",
        source="pytest",
        label="local: run ci-7",
        cases=tuple(
            TestCase(file, classname, name, outcome, us / 1e6, reruns, message)  # type: ignore[arg-type]
            for file, classname, name, outcome, us, reruns, message in CASES.values()
        ),
        shard="2/4",
        commit="0123abc",
        codes={"tests/test_a.py": "k1", "tests/elsewhere.py": "k2"},
    )


def test_a_pytest_run_is_stored_as_its_junit_report_would_be() -> None:
    parts: Any = record().parts("part-1")
    expected: Any = run_parts(ingested())
    assert parts[STATS_RUNS_KEY] == expected[STATS_RUNS_KEY]
    # Beside the tests' durations, the module's scoped fixtures, in the run's group.
    [(group, durations)] = parts[DURATIONS_KEY].items()
    [(expected_group, expected_durations)] = expected[DURATIONS_KEY].items()
    assert group == expected_group
    assert durations == {**expected_durations, scoped_setup_key("tests/test_a.py"): 0.4}


def test_the_stored_run_reads_back_with_node_ids_outcomes_and_durations() -> None:
    parts: Any = record().parts("part-1")
    [run] = runs_from_value(parts[STATS_RUNS_KEY])
    assert {case.test_id: case.outcome for case in run.cases} == {
        nodeid: case[3] for nodeid, case in CASES.items()
    }
    assert run.codes == {"tests/test_a.py": "k1"}
    flaky = {case.test_id for case in run.cases if case.flaky}
    assert flaky == {"tests/test_a.py::TestGroup::Inner::test_nested[x::y.z-1]"}
    [timed] = parts[DURATIONS_KEY].values()
    # Skips and errors say little about how long a test takes: not timed.
    assert "tests/sub/test_b.py::test_skipped" not in timed
    assert "tests/sub/test_b.py::test_error" not in timed
    assert timed["tests/test_a.py::TestGroup::test_in_class"] == 0.25
