"""Test statistics: runs stored as Cache parts, summaries, durations for sharding."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cachekit import Cache, CorruptValueWarning, MemoryStore
from cachekit.ci.layout import DURATIONS_KEY, STATS_RUNS, STATS_RUNS_KEY
from cachekit.stats.junit import TestCase, parse_junit_file
from cachekit.stats.runs import (
    Run,
    Totals,
    durations,
    latest_per_test,
    latest_run,
    load_durations,
    load_runs,
    make_run,
    record_runs,
    summarize,
    summary_to_json,
)

DATA = Path(__file__).parent / "data" / "junit"


def case(name: str, outcome: str = "passed", duration: float = 1.0, **kw: object) -> TestCase:
    fields: dict[str, object] = {
        "file": "tests/test_a.py",
        "classname": "tests.test_a.TestA",
        "name": name,
        "outcome": outcome,
        "duration": duration,
    }
    fields.update(kw)
    return TestCase(**fields)  # type: ignore[arg-type]


def test_summary_of_the_pytest_report() -> None:
    report = parse_junit_file(DATA / "pytest_xunit2.xml")
    summary = summarize(report.cases, slowest=3)
    assert summary.totals == Totals(
        tests=7, failures=2, errors=1, skipped=2, successes=2, time=pytest.approx(1.962)
    )
    assert summary.files == {
        "tests/test_io.py": Totals(4, 1, 1, 2, 0, pytest.approx(0.087)),
        "tests/test_math.py": Totals(3, 1, 0, 0, 2, pytest.approx(1.875)),
    }
    assert list(summary.classes) == [
        "tests/test_io.py",
        "tests/test_io.py::TestOuter::TestInner",
        "tests/test_math.py",
        "tests/test_math.py::TestDivide",
    ]
    assert summary.classes["tests/test_math.py::TestDivide"] == Totals(2, 1, 0, 0, 1, 1.75)
    assert [c.test_id for c in summary.failed] == [
        "tests/test_io.py::TestOuter::TestInner::test_nested",
        "tests/test_io.py::test_read",
        "tests/test_math.py::TestDivide::test_by_zero",
    ]
    assert [c.name for c in summary.slowest] == ["test_exact[4-2]", "test_by_zero", "test_add"]
    assert summary.flaky == ()


def test_flaky_tests_listed() -> None:
    report = parse_junit_file(DATA / "pytorch_style.xml")
    summary = summarize(report.cases)
    assert [c.name for c in summary.flaky] == ["test_flaky_cuda"]
    assert [c.name for c in summary.failed] == ["test_always_fails"]


def test_slowest_ties_broken_by_id() -> None:
    summary = summarize([case("b", duration=2), case("a", duration=2), case("c", duration=3)])
    assert [c.name for c in summary.slowest] == ["c", "a", "b"]


def test_empty_summary() -> None:
    summary = summarize([])
    assert summary.totals == Totals()
    assert summary.files == {}
    assert summary.failed == ()


def test_runs_round_trip_through_parts() -> None:
    cache = Cache(MemoryStore())
    report = parse_junit_file(DATA / "pytest_xunit2.xml")
    run = make_run(report, run_id="77", label="local", at=1000.0)
    written = record_runs(cache, [run])
    assert written == [
        f"{STATS_RUNS_KEY}/@parts/{run.id}",
        f"{DURATIONS_KEY}/@parts/{run.id}",
    ]
    assert load_runs(cache) == [run]
    assert load_durations(cache) == {
        "tests/test_io.py::TestOuter::TestInner::test_nested": 0.075,
        "tests/test_math.py::TestDivide::test_by_zero": 0.5,
        "tests/test_math.py::TestDivide::test_exact[4-2]": 1.25,
        "tests/test_math.py::test_add": 0.125,
    }


def test_the_shard_is_stored_and_records_without_one_still_load() -> None:
    cache = Cache(MemoryStore())
    report = parse_junit_file(DATA / "pytest_xunit2.xml")
    sharded = make_run(report, run_id="77", label="local", shard="2/4", at=1000.0)
    unsharded = make_run(report, run_id="77", label="local", at=1001.0)
    record_runs(cache, [sharded, unsharded])
    assert [run.shard for run in load_runs(cache)] == ["2/4", ""]
    # An unsharded run stores no shard at all: what it stored before the field existed.
    stored = cache.read_merged(STATS_RUNS_KEY, STATS_RUNS).value
    assert stored[sharded.id]["shard"] == "2/4"
    assert "shard" not in stored[unsharded.id]


def test_one_part_per_report_and_concurrent_ingest_loses_nothing() -> None:
    cache = Cache(MemoryStore())
    runs = [
        Run(f"r{i}", float(i), "run-1", f"shard{i}.xml", "", (case(f"t{i}"),)) for i in range(16)
    ]
    threads = [threading.Thread(target=record_runs, args=(cache, [run])) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache.parts(STATS_RUNS_KEY)) == 16
    assert load_runs(cache) == runs
    assert cache.compact(STATS_RUNS_KEY, STATS_RUNS) == 16
    assert load_runs(cache) == runs


def test_latest_run_covers_all_shards_of_the_latest_run() -> None:
    runs = [
        Run("1", 1.0, "A", "s1.xml", "", (case("x", "failed"),)),
        Run("2", 2.0, "B", "s1.xml", "", (case("x"),)),
        Run("3", 3.0, "B", "s2.xml", "", (case("y"),)),
    ]
    assert [c.name for c in latest_run(runs)] == ["x", "y"]
    assert [c.outcome for c in latest_run(runs, "A")] == ["failed"]
    assert latest_run(runs, "nope") == []
    assert latest_run([]) == []
    lone = [*runs, Run("4", 4.0, "", "x.xml", "", (case("z"),))]
    assert [c.name for c in latest_run(lone)] == ["z"]


def test_latest_per_test() -> None:
    runs = [
        Run("1", 1.0, "A", "", "", (case("x", "failed"), case("y", "failed"))),
        Run("2", 2.0, "B", "", "", (case("x", "passed"),)),
    ]
    latest = latest_per_test(runs)
    assert [(c.name, c.outcome) for c in latest] == [("x", "passed"), ("y", "failed")]


def test_durations_latest_per_test_ignoring_skips_and_errors() -> None:
    runs = [
        Run("1", 1.0, "", "", "", (case("x", duration=5.0), case("y", duration=3.0))),
        Run(
            "2",
            2.0,
            "",
            "",
            "",
            (
                case("x", duration=7.0),
                case("y", "skipped", duration=0.0),
                case("z", "error", duration=0.1),
            ),
        ),
    ]
    assert durations(reversed(runs)) == {
        "tests/test_a.py::TestA::x": 7.0,
        "tests/test_a.py::TestA::y": 3.0,
    }


def test_durations_in_store_latest_wins_across_parts() -> None:
    cache = Cache(MemoryStore())
    record_runs(cache, [Run("new", 20.0, "", "", "", (case("x", duration=9.0),))])
    record_runs(cache, [Run("old", 10.0, "", "", "", (case("x", duration=1.0),))])
    assert load_durations(cache) == {"tests/test_a.py::TestA::x": 9.0}


def test_unreadable_runs_are_skipped_with_a_warning() -> None:
    cache = Cache(MemoryStore())
    cache.write_part(STATS_RUNS_KEY, "bad", {"bad": {"id": "bad", "cases": "nope"}})
    good = Run("good", 1.0, "", "", "", (case("x"),))
    record_runs(cache, [good])
    with pytest.warns(CorruptValueWarning, match="bad"):
        assert load_runs(cache) == [good]


def test_summary_json() -> None:
    summary = summarize([case("x", "failed", message="boom"), case("y")])
    data = summary_to_json(summary)
    assert data["totals"] == {
        "tests": 2,
        "failures": 1,
        "errors": 0,
        "skipped": 0,
        "successes": 1,
        "time": 2.0,
    }
    assert data["failed"][0]["test_id"] == "tests/test_a.py::TestA::x"
    assert data["failed"][0]["message"] == "boom"
    assert set(data["files"]) == {"tests/test_a.py"}
