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
    makespan,
    parse_shard,
    select,
    split,
)

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
