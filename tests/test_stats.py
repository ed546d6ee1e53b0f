"""Test statistics: runs stored as Cache parts, summaries, durations for sharding."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cachekit import Cache, CorruptValueWarning, LocalStore, MemoryStore
from cachekit.ci.layout import DURATIONS_KEY, STATS_RUNS, STATS_RUNS_KEY
from cachekit.stats.junit import TestCase, parse_junit_file
from cachekit.stats.report import build_report
from cachekit.stats.runs import (
    Run,
    Totals,
    durations,
    latest_attempts,
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
    part_id = written[0].rpartition("/")[2]
    assert "-run-77-" in part_id
    assert written == [
        f"{STATS_RUNS_KEY}/@parts/{part_id}",
        f"{DURATIONS_KEY}/@parts/{part_id}",
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


# -- attempts: a test counts once per CI run and shard ----------------------------------


def test_ingesting_the_same_report_twice_changes_nothing(tmp_path: Path) -> None:
    cache = Cache(LocalStore(tmp_path / "store"))
    report = parse_junit_file(DATA / "pytest_xunit2.xml")
    record_runs(cache, [make_run(report, run_id="41", shard="1/2", at=1000.0)])
    once = load_runs(cache)
    summary = summary_to_json(summarize(latest_run(once)))
    # Again, later, from a copy of the file.
    copy = tmp_path / "copy.xml"
    copy.write_bytes((DATA / "pytest_xunit2.xml").read_bytes())
    record_runs(cache, [make_run(parse_junit_file(copy), run_id="41", shard="1/2", at=2000.0)])
    twice = load_runs(cache)
    assert len(cache.parts(STATS_RUNS_KEY)) == 2  # two parts, one report
    assert [run.id for run in twice] == [run.id for run in once]
    assert summary_to_json(summarize(latest_run(twice))) == summary
    assert build_report(twice).reports == build_report(once).reports == 1
    # Compaction keeps one report too.
    cache.compact(STATS_RUNS_KEY, STATS_RUNS)
    assert [run.id for run in load_runs(cache)] == [run.id for run in once]


def test_a_retried_shard_counts_once_and_the_later_attempt_wins() -> None:
    cache = Cache(MemoryStore())
    first = (case("a", "failed", message="boom"), case("b"))
    retry = (case("a"), case("b", duration=2.0))
    other = (case("c"),)
    record_runs(cache, [Run("r1", 10.0, "7", "pytest", "", first, shard="1/2")])
    record_runs(cache, [Run("r2", 11.0, "7", "pytest", "", other, shard="2/2")])
    record_runs(cache, [Run("r3", 20.0, "7", "pytest", "", retry, shard="1/2")])
    runs = load_runs(cache)
    assert [run.id for run in runs] == ["r2", "r3"]
    summary = summarize(latest_run(runs))
    assert summary.totals == Totals(tests=3, successes=3, time=4.0)
    report = build_report(runs)
    assert [(o.passed, o.failed) for o in report.outcomes] == [(3, 0)]
    assert [(s.shard, s.tests, s.seconds) for s in report.shards[0].shards] == [
        ("1/2", 2, 3.0),
        ("2/2", 1, 1.0),
    ]
    assert report.unstable == ()


def test_a_report_from_the_future_is_ignored_and_cannot_replace_the_real_one() -> None:
    """A later attempt replaces an earlier one: a planted report dated in the future
    would pin a shard's results. It reads as unreadable instead (one warning)."""
    cache = Cache(MemoryStore())
    real = (case("a", "failed", message="boom"),)
    record_runs(cache, [Run("real", time.time(), "7", "pytest", "", real, shard="1/2")])
    planted = Run("planted", time.time() + 86400, "7", "pytest", "", (case("a"),), shard="1/2")
    record_runs(cache, [planted])
    with pytest.warns(CorruptValueWarning, match="future"):
        runs = load_runs(cache)
    assert [run.id for run in runs] == ["real"]


def test_a_later_attempt_replaces_only_the_tests_it_recorded() -> None:
    """A retry that stopped early: what it did not record keeps the first attempt's."""
    runs = [
        Run("r1", 10.0, "7", "pytest", "", (case("a", "failed"), case("b")), shard="1/2"),
        Run("r2", 20.0, "7", "pytest", "", (case("a"),), shard="1/2"),
        Run("r3", 15.0, "8", "pytest", "", (case("a", "failed"),), shard="1/2"),  # another run
        Run("r4", 16.0, "", "x.xml", "", (case("a", "failed"),)),  # no run id: stands alone
    ]
    kept = latest_attempts(sorted(runs, key=lambda run: run.at))
    assert [(run.id, [c.name for c in run.cases]) for run in kept] == [
        ("r1", ["b"]),
        ("r3", ["a"]),
        ("r4", ["a"]),
        ("r2", ["a"]),
    ]


def test_the_reports_of_one_attempt_all_count() -> None:
    """One ingest of several files (one time): a matrix's reports of the same tests."""
    runs = [
        Run("py311", 10.0, "7", "py311.xml", "", (case("a"), case("b"))),
        Run("py312", 10.0, "7", "py312.xml", "", (case("a"), case("b"))),
    ]
    assert latest_attempts(runs) == runs
    assert summarize(latest_run(runs)).totals.tests == 4
