"""Duration-balanced sharding (LPT) against a brute-force optimum and the ideal split."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit.stats.sharding import (
    DEFAULT_DURATION,
    estimate,
    loads,
    makespan,
    parse_shard,
    scopes_of,
    select,
    split,
    units,
)
from cachekit.values.durations import scoped_setup_key

durations_st = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=3),
    st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False),
    max_size=8,
)


def optimum(durations: dict[str, float], count: int) -> float:
    """The best possible makespan, by trying every assignment."""
    ids = sorted(durations)
    best = math_inf = float("inf")
    for assignment in itertools.product(range(count), repeat=len(ids)):
        loads = [0.0] * count
        for test_id, shard in zip(ids, assignment, strict=True):
            loads[shard] += durations[test_id]
        best = min(best, max(loads))
    return 0.0 if best == math_inf else best


@settings(max_examples=150, deadline=None)
@given(durations=durations_st, count=st.integers(min_value=1, max_value=3))
def test_lpt_within_four_thirds_of_the_optimum(durations: dict[str, float], count: int) -> None:
    shards = split(durations, durations, count)
    best = optimum(durations, count)
    bound = (4 / 3 - 1 / (3 * count)) * best
    assert makespan(shards, durations) <= bound + 1e-9


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.text(min_size=1, max_size=5), max_size=40),
    known=st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0, 50), max_size=20),
    count=st.integers(min_value=1, max_value=7),
)
def test_every_test_in_exactly_one_shard(
    ids: list[str], known: dict[str, float], count: int
) -> None:
    shards = split(ids, known, count)
    assert len(shards) == count
    flat = [test_id for shard in shards for test_id in shard]
    assert sorted(flat) == sorted(set(ids))
    # Each shard computing its own selection agrees with the split, whatever the input order.
    shuffled = list(ids)
    random.Random(0).shuffle(shuffled)
    for index in range(1, count + 1):
        assert (
            select(shuffled, dict(reversed(list(known.items()))), index, count)
            == (shards[index - 1])
        )


def test_known_lpt_worst_case_is_four_thirds() -> None:
    # Graham's tight example for two machines: LPT gives 7, the optimum is 6.
    durations = {"a": 3.0, "b": 3.0, "c": 2.0, "d": 2.0, "e": 2.0}
    shards = split(durations, durations, 2)
    assert makespan(shards, durations) == 7.0
    assert optimum(durations, 2) == 6.0


def test_lognormal_suite_within_five_percent_of_ideal() -> None:
    rng = random.Random(20260301)
    durations = {
        f"tests/test_{i // 50}.py::test_{i}": rng.lognormvariate(-1.0, 1.2) for i in range(10_000)
    }
    for count in (4, 16, 64):
        shards = split(durations, durations, count)
        ideal = sum(durations.values()) / count
        assert makespan(shards, durations) <= 1.05 * ideal, count
        assert sorted(t for shard in shards for t in shard) == sorted(durations)


def test_naive_round_robin_would_be_worse() -> None:
    """The balanced split is meaningfully better than splitting by count alone."""
    rng = random.Random(7)
    durations = {f"t{i:05d}": rng.lognormvariate(0, 2) for i in range(2000)}
    ids = sorted(durations)
    naive = [ids[index::8] for index in range(8)]
    assert makespan(split(ids, durations, 8), durations) < makespan(naive, durations)


def test_unknown_tests_count_at_the_average_of_known_ones() -> None:
    assert estimate(["a", "b", "c"], {"a": 2.0, "b": 4.0}) == {"a": 2.0, "b": 4.0, "c": 3.0}
    assert estimate(["a", "b"], {}) == {"a": DEFAULT_DURATION, "b": DEFAULT_DURATION}
    # Only the tests being split count; bad records count as unknown.
    assert estimate(["a", "b", "c"], {"a": 1.0, "b": float("nan"), "c": -5, "z": 1000}) == {
        "a": 1.0,
        "b": 1.0,
        "c": 1.0,
    }


def test_unknown_tests_spread_evenly() -> None:
    shards = split([f"t{i}" for i in range(10)], {}, 3)
    assert sorted(len(shard) for shard in shards) == [3, 3, 4]


def test_ties_are_broken_by_id_deterministically() -> None:
    durations = dict.fromkeys("dcba", 1.0)
    assert split(durations, durations, 2) == [["a", "c"], ["b", "d"]]


def test_more_shards_than_tests() -> None:
    assert split(["a"], {}, 3) == [["a"], [], []]


@pytest.mark.parametrize("count", [0, -1])
def test_bad_counts(count: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split(["a"], {}, count)


def test_select_bounds() -> None:
    with pytest.raises(ValueError, match="1 to 2"):
        select(["a"], {}, 3, 2)


@pytest.mark.parametrize(
    ("text", "expected"), [("2/4", (2, 4)), ("1of1", (1, 1)), (" 3 / 3 ", (3, 3))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["", "2", "0/4", "5/4", "a/b", "2-4"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


# -- scoped setups: a module (class, package) kept on one shard -----------------------


def fixture_suite(
    fixtures: int = 4, plain: int = 8, setup: float = 1.0
) -> tuple[list[str], dict[str, float]]:
    """The benchmark's suite: modules with a ``setup``-second module-scoped fixture and 20
    tiny tests each, and modules of 10 tests of 50 ms; test ids, durations."""
    durations: dict[str, float] = {}
    for module in range(fixtures):
        durations[scoped_setup_key(f"tests/test_fix{module}.py")] = setup
        durations.update({f"tests/test_fix{module}.py::test_{n}": 0.001 for n in range(20)})
    for module in range(plain):
        durations.update({f"tests/test_plain{module}.py::test_{n}": 0.05 for n in range(10)})
    return [test_id for test_id in durations if "::" in test_id], durations


def modules_of(shard: list[str]) -> set[str]:
    return {test_id.split("::")[0] for test_id in shard}


def test_a_module_with_a_scoped_setup_stays_on_one_shard() -> None:
    ids, durations = fixture_suite()
    shards = split(ids, durations, 4)
    assert sorted(t for shard in shards for t in shard) == sorted(ids)
    for module in (f"tests/test_fix{n}.py" for n in range(4)):
        assert sum(module in modules_of(shard) for shard in shards) == 1, module
    # Each shard pays one setup; the plan is the ideal: (tests + each setup once) / 4.
    ideal = (sum(durations[t] for t in ids) + 4 * 1.0) / 4
    assert max(loads(shards, durations)) == pytest.approx(ideal)
    # Per test, as before, the four modules' tests would spread over every shard.
    per_test = split(ids, {t: durations[t] for t in ids}, 4)
    assert max(loads(per_test, durations)) > 2 * ideal


def test_the_split_counts_each_setup_once_per_shard() -> None:
    durations = {scoped_setup_key("a.py"): 5.0, "a.py::x": 1.0, "a.py::y": 1.0, "b.py::z": 1.0}
    assert loads([["a.py::x", "a.py::y"], ["b.py::z"]], durations) == [7.0, 1.0]
    assert loads([["a.py::x", "b.py::z"], ["a.py::y"]], durations) == [7.0, 6.0]


def test_without_scoped_setups_the_split_is_per_test_as_before() -> None:
    rng = random.Random(3)
    durations = {f"t{n // 7}.py::t{n}": rng.lognormvariate(0, 1) for n in range(300)}
    expected = split(durations, durations, 5)
    # Setups of scopes none of these tests is in change nothing.
    unrelated = {**durations, scoped_setup_key("other.py"): 100.0, scoped_setup_key("t1"): 9.0}
    assert split(durations, unrelated, 5) == expected
    assert [len(unit.tests) for unit in units(durations, unrelated, 5)] == [1] * 300


def test_a_group_far_above_the_ideal_load_is_cut_paying_its_setup_again() -> None:
    """One module holds most of the suite: kept whole it would run 13 s on one shard
    while the others idle; cut into 4 pieces, each paying its 3 s setup, the slowest
    shard runs 6 s."""
    durations = {scoped_setup_key("big.py"): 3.0}
    durations.update({f"big.py::t{n:03d}": 0.1 for n in range(100)})
    durations.update({f"small.py::t{n:02d}": 0.1 for n in range(20)})
    ids = [t for t in durations if "::" in t]
    shards = split(ids, durations, 4)
    assert sorted(t for shard in shards for t in shard) == sorted(ids)
    assert sum("big.py" in modules_of(shard) for shard in shards) == 4
    assert max(loads(shards, durations)) == pytest.approx(6.0)


def test_a_group_just_above_the_ideal_stays_whole_when_cutting_costs_more() -> None:
    """Its 4 s setup dominates: cut in two, both halves pay it (and the others' load
    grows by as much), so the bound is 7 s against 6 s kept whole."""
    durations = {scoped_setup_key("db.py"): 4.0}
    durations.update({f"db.py::t{n}": 0.5 for n in range(4)})
    durations.update({f"other.py::t{n}": 0.5 for n in range(8)})
    ids = [t for t in durations if "::" in t]
    shards = split(ids, durations, 2)
    assert sum("db.py" in modules_of(shard) for shard in shards) == 1
    assert max(loads(shards, durations)) == pytest.approx(6.0)


def test_a_class_kept_whole_inside_its_module_and_a_package_across_modules() -> None:
    durations = {
        scoped_setup_key("pkg"): 2.0,  # a package-scoped fixture of pkg/conftest.py
        scoped_setup_key("pkg/test_a.py::TestDb"): 1.0,
        **{f"pkg/test_a.py::TestDb::t{n}": 0.01 for n in range(5)},
        **{f"pkg/test_b.py::t{n}": 0.01 for n in range(5)},
        **{f"z/test_c.py::t{n}[{n}::x]": 0.5 for n in range(12)},
    }
    ids = [t for t in durations if "::" in t]
    shards = split(ids, durations, 3)
    assert [len([t for t in shard if t.startswith("pkg/")]) for shard in shards].count(10) == 1
    by_unit = {unit.id: unit.tests for unit in units(ids, durations, 3)}
    assert len(by_unit["pkg"]) == 10  # the class inside it, the other module beside


def test_scopes_of_a_test_id() -> None:
    assert scopes_of("a/b/test_x.py::C::D::test[p::q/r]") == [
        "a",
        "a/b",
        "a/b/test_x.py",
        "a/b/test_x.py::C",
        "a/b/test_x.py::C::D",
    ]
    assert scopes_of("test_x.py::test") == ["test_x.py"]
    assert scopes_of("plain id") == []


scoped_suite_st = st.lists(
    st.tuples(
        st.sampled_from(["p/a.py", "p/b.py", "c.py", "p/a.py::K", "q/d.py"]),
        st.integers(0, 5),
        st.floats(0, 5),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    tests=scoped_suite_st,
    setups=st.dictionaries(
        st.sampled_from(["p", "p/a.py", "c.py", "p/a.py::K", "q", "q/d.py"]), st.floats(0, 20)
    ),
    count=st.integers(min_value=1, max_value=5),
    seed=st.integers(0, 1000),
)
def test_scoped_splits_cover_every_test_once_whatever_the_order(
    tests: list[tuple[str, int, float]], setups: dict[str, float], count: int, seed: int
) -> None:
    durations = {f"{container}::t{n}": seconds for container, n, seconds in tests}
    durations.update({scoped_setup_key(scope): seconds for scope, seconds in setups.items()})
    ids = [t for t in durations if not t.startswith(scoped_setup_key(""))]
    shards = split(ids, durations, count)
    assert sorted(t for shard in shards for t in shard) == sorted(ids)
    shuffled = list(ids)
    rng = random.Random(seed)
    rng.shuffle(shuffled)
    reordered = list(durations.items())
    rng.shuffle(reordered)
    assert split(shuffled, dict(reordered), count) == shards
    # Never worse than paying every scope's setup on every shard on top of the per-test
    # LPT split (the bound the cutting rule keeps to, give or take LPT's own slack).
    per_test = split(ids, {t: durations[t] for t in ids}, count)
    assert (
        max(loads(shards, durations), default=0)
        <= max(loads(per_test, durations), default=0) * 4 / 3 + sum(setups.values()) + 1e-9
    )


def test_ten_thousand_tests_with_fixtures_within_five_percent_of_ideal() -> None:
    rng = random.Random(20261206)
    durations: dict[str, float] = {}
    for module in range(500):
        path = f"tests/pkg{module // 50}/test_{module}.py"
        if module % 3 == 0:
            durations[scoped_setup_key(path)] = rng.uniform(0.5, 5.0)
        for n in range(20):
            durations[f"{path}::test_{n}"] = rng.lognormvariate(-1.5, 1.0)
    ids = [t for t in durations if "::" in t]
    for count in (4, 16, 32):
        shards = split(ids, durations, count)
        setups = sum(v for k, v in durations.items() if "::" not in k)
        ideal = (sum(durations[t] for t in ids) + setups) / count
        assert max(loads(shards, durations)) <= 1.05 * ideal, count


def test_packages_with_fixtures_bigger_than_a_shard_still_pack_within_five_percent() -> None:
    """Ten packages, each with a package-scoped fixture and more tests than a shard
    holds: kept whole or cut into blocks they pack unevenly (15% over the ideal by
    longest first alone); filled shard after shard, each package is cut once or twice."""
    rng = random.Random(16)
    durations: dict[str, float] = {}
    for module in range(500):
        package = f"tests/pkg{module // 50}"
        path = f"{package}/test_{module}.py"
        if module % 50 == 0:
            durations[scoped_setup_key(package)] = rng.uniform(1, 10)
        if module % 3 == 0:
            durations[scoped_setup_key(path)] = rng.uniform(0.5, 5)
        for n in range(20):
            durations[f"{path}::test_{n}"] = rng.lognormvariate(-1.5, 1)
    ids = [t for t in durations if "::" in t]
    shards = split(ids, durations, 16)
    assert sorted(t for shard in shards for t in shard) == sorted(ids)
    ideal = sum(durations.values()) / 16  # every setup once
    assert max(loads(shards, durations)) <= 1.05 * ideal
