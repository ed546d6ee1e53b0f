"""Test statistics: runs stored as Cache parts, summaries, durations for sharding."""

from __future__ import annotations

import gc
import json
import random
import threading
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit import Cache, CorruptValueWarning, LocalStore, MemoryStore
from cachekit.ci.layout import DURATIONS_KEY, STATS_RUNS, STATS_RUNS_KEY
from cachekit.errors import CorruptData
from cachekit.stats.cases import Cases
from cachekit.stats.history import MemoryRuns, StoredRuns, cases_of, choose_run
from cachekit.stats.history import latest_per_test as latest_per_test_of
from cachekit.stats.junit import TestCase, parse_junit_file
from cachekit.stats.report import build_report
from cachekit.stats.runs import (
    Run,
    Totals,
    durations,
    durations_from_value,
    latest_attempts,
    latest_per_test,
    latest_run,
    load_durations,
    load_runs,
    make_run,
    record_runs,
    runs_of,
    summarize,
    summary_to_json,
)
from cachekit.values import codec
from cachekit.values.cache import join_balanced
from cachekit.values.codec import JSON
from cachekit.values.durations import DURATIONS, durations_part
from cachekit.values.merge import join_all

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
        tests=7, failures=2, errors=1, skipped=2, successes=2, time=1.962
    )
    assert summary.files == {
        "tests/test_io.py": Totals(4, 1, 1, 2, 0, 0.087),
        "tests/test_math.py": Totals(3, 1, 0, 0, 2, 1.875),
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


# -- reading at scale: a run at a time ------------------------------------------------------


def history_of_runs(seed: int, runs: int = 12) -> list[Run]:
    """CI runs of two shards over ten tests, some shards retried (part of a retry
    stopping early), some reports without a run id; outcomes and durations at random."""
    rng = random.Random(seed)
    outcomes = ["passed", "passed", "passed", "failed", "error", "skipped"]
    history = []
    for number in range(runs):
        run_id = "" if number % 5 == 4 else f"ci-{number // 2}"
        for shard, names in (("1/2", "abcde"), ("2/2", "fghij")):
            attempts = 2 if rng.random() < 0.3 else 1
            for attempt in range(attempts):
                kept = names if attempt == 0 else names[: rng.randint(0, len(names))]
                cases = tuple(
                    case(
                        name,
                        rng.choice(outcomes),
                        duration=rng.randint(0, 4000) / 1000,
                        reruns=rng.choice([0, 0, 1]),
                        message=rng.choice(["", "boom", "bang"]),
                    )
                    for name in kept
                )
                history.append(
                    Run(
                        f"r{number}-{shard}-{attempt}",
                        1000.0 + number * 10 + attempt * 5 + rng.random(),
                        run_id,
                        "pytest",
                        "",
                        cases,
                        shard=shard,
                    )
                )
    return history


@pytest.mark.parametrize("seed", range(6))
def test_streamed_reads_answer_as_reading_everything_at_once(seed: int) -> None:
    """Read a run at a time (nothing held between passes) or all in memory: the same
    runs, summaries and report."""
    runs = history_of_runs(seed)
    cache = Cache(MemoryStore())
    for run in runs:
        record_runs(cache, [run])
    in_memory = MemoryRuns(runs)
    streamed = StoredRuns(cache, hold=0, batch=3)
    assert streamed.infos() == in_memory.infos()
    assert load_runs(cache) == runs_of(in_memory) == runs_of(StoredRuns(cache, hold=0))
    assert latest_per_test_of(streamed) == latest_per_test(runs)
    for run_id in (None, "ci-1", "ci-3"):
        chosen = choose_run(streamed.infos(), run_id)
        assert cases_of(streamed, chosen) == latest_run(load_runs(cache), run_id)
    for max_runs in (2, 30):
        assert build_report(streamed, max_runs=max_runs, now=0) == build_report(
            runs, max_runs=max_runs, now=0
        )


def test_a_read_holds_one_run_at_a_time() -> None:
    """Whatever the number of runs, a streamed read holds about one run's cases: counted
    as the `Cases` objects alive each time it fetches the next run."""
    cache = Cache(MemoryStore())
    for number in range(20):
        cases = tuple(case(f"t{index}", duration=index / 10) for index in range(50))
        record_runs(cache, [Run(f"r{number}", float(number), f"ci-{number}", "", "", cases)])
    alive: list[int] = []

    def count(_what: str, _done: int, _total: int) -> None:
        gc.collect()
        alive.append(sum(1 for thing in gc.get_objects() if isinstance(thing, Cases)))

    source = StoredRuns(cache, hold=0, batch=1, progress=count)
    report = build_report(source, max_runs=20)
    assert report.tests == 50
    assert len(report.runs) == 20
    assert len(cases_of(source, choose_run(source.infos()))) == 50
    assert len(alive) >= 3 * 20  # the plan, the report's pass and the summary's, a run each
    assert max(alive) <= 1


def test_a_run_stored_in_the_old_format_is_skipped_with_one_warning() -> None:
    """0.1.0's runs stored an object per case: read as unreadable, said once."""
    cache = Cache(MemoryStore())
    old: dict[str, JSON] = {"id": "old", "at": 5.0, "source": "", "label": "", "cases": []}
    cache.write_part(STATS_RUNS_KEY, "old", {"old": old})
    good = Run("good", 1.0, "", "", "", (case("x"),))
    record_runs(cache, [good])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = StoredRuns(cache, hold=0)
        assert runs_of(source) == [good]
        assert build_report(source).tests == 1
    (warning,) = [w.message for w in caught if isinstance(w.message, CorruptValueWarning)]
    assert "'old'" in str(warning)
    assert "format 1" in str(warning)


def test_a_stored_run_costs_a_few_bytes_per_test() -> None:
    """By column, a run of 20,000 tests is under 4 bytes a test once compressed (about
    2 MB for 500,000: ``benchmarks/bench_stats.py``)."""
    store = MemoryStore()
    cases = tuple(
        TestCase(
            file=f"test/test_module_{index // 100:04d}.py",
            classname=f"test.test_module_{index // 100:04d}.TestOps",
            name=f"test_op_{index % 100}_float32",
            outcome="passed",
            duration=random.Random(index).randint(1, 10**6) / 1e6,
        )
        for index in range(20_000)
    )
    record_runs(Cache(store), [Run("big", 1.0, "ci", "pytest", "", cases)])
    (key,) = store.list(f"{STATS_RUNS_KEY}/")
    entry = store.get(key)
    assert entry is not None
    assert len(entry.data) < 4 * len(cases)


# -- stats/durations: a join of per-test latest durations ------------------------------------

TIMES = st.sampled_from([1.0, 2.0, 3.0])
observations = st.lists(
    st.tuples(st.sampled_from("abcde"), TIMES, st.sampled_from([0.0, 0.5, 1.0, 2.0])),
    max_size=8,
)


def stored_durations(observed: list[tuple[str, float, float]]) -> dict[str, dict[str, float]]:
    """A value as runs write them: one part per observation, joined."""
    value: dict[str, dict[str, float]] = {}
    for test_id, at, seconds in observed:
        part: JSON = durations_part(at, {test_id: seconds})  # type: ignore[assignment]
        value = DURATIONS.join(value, DURATIONS.check(part))
    return value


@settings(max_examples=200, deadline=None)
@given(observations, observations, observations)
def test_durations_merge_is_a_join_with_the_latest_duration_per_test(
    a: list[tuple[str, float, float]],
    b: list[tuple[str, float, float]],
    c: list[tuple[str, float, float]],
) -> None:
    x, y, z = stored_durations(a), stored_durations(b), stored_durations(c)
    join = DURATIONS.join
    assert join(x, join(y, z)) == join(join(x, y), z)
    assert join(x, y) == join(y, x)
    assert join(x, x) == x
    assert join(x, DURATIONS.empty()) == x == join(DURATIONS.empty(), x)
    assert DURATIONS.check(json.loads(json.dumps(x))) == x  # stored and read back
    # Per test, the latest observation; at one time, the longest.
    expected: dict[str, tuple[float, float]] = {}
    for test_id, at, seconds in a + b + c:
        expected[test_id] = max(expected.get(test_id, (at, seconds)), (at, seconds))
    merged = durations_from_value(join(join(x, y), z))
    assert merged == {test_id: seconds for test_id, (_at, seconds) in expected.items()}


@settings(max_examples=200, deadline=None)
@given(st.lists(observations, max_size=6), st.randoms())
def test_durations_joined_at_once_are_joined_one_by_one(
    runs: list[list[tuple[str, float, float]]], rng: random.Random
) -> None:
    """Merges, compactions and reads join many values at once (`join_balanced`, one pass:
    `Durations.join_many`): the value of joining them one by one, stored alike."""
    values = [stored_durations(observed) for observed in runs]
    expected = join_all(DURATIONS, values)
    rng.shuffle(values)
    joined = join_balanced(DURATIONS, values)
    assert codec.encode(joined) == codec.encode(expected)
    assert list(joined) == list(expected)  # groups in time order


def test_durations_are_stored_by_time_and_checked() -> None:
    part = durations_part(5, {"a": 1.5, "b": 0.0, "c": -1.0, "d": 40 * 86400.0})
    assert part == {"5.0": {"a": 1.5, "b": 0.0}}  # no negative or 40-day durations
    assert DURATIONS.check({"5": {"a": 1}}) == {"5.0": {"a": 1.0}}
    # A test in two groups (not what cachekit writes) keeps the later one.
    assert DURATIONS.check({"5": {"a": 1.0}, "6": {"a": 2.0}}) == {"6.0": {"a": 2.0}}
    assert DURATIONS.check({"5": {"a": 3.0}, "5.0": {"a": 1.0, "b": 1.0}}) == {
        "5.0": {"a": 3.0, "b": 1.0}
    }
    bad_values: list[JSON] = [
        {"a.py::t": {"at": 5, "value": 1.5}},  # 0.1.0's form
        {"5": {"a": "slow"}},
        {"5": {"a": True}},
        {"5": {"a": -1.0}},
        {"5": {"a": 10**400}},
        {"5": [1.0]},
        {str(time.time() + 86400): {"a": 1.0}},  # from the future
        [],
    ]
    for bad in bad_values:
        with pytest.raises(CorruptData):
            DURATIONS.check(bad)
