"""Merge strategies are joins: associative, commutative, idempotent, with ``empty()`` as
identity; ``check`` accepts their shape and refuses anything else with `CorruptData`; and
the ``lastfailed`` rules of DESIGN.md hold whatever order shards are read in."""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cachekit import Cache, MemoryStore
from cachekit.errors import CorruptData
from cachekit.values import codec
from cachekit.values.cache import join_balanced
from cachekit.values.merge import (
    CLOCK_SKEW,
    LASTFAILED,
    CanonicalMax,
    LatestWins,
    MappingUnion,
    Maximum,
    MergeStrategy,
    Outcome,
    SortedUnion,
    join_all,
    observe_outcomes,
    still_failing,
)


def _shape(value: Any) -> str:
    """A value's exact JSON spelling (1 and 1.0 differ), in canonical key order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


LAWS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- generators of each strategy's shape --------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
# Small ranges so that ties (equal timestamps, equal numbers spelled 1 and 1.0, or 0.0 and
# -0.0) occur often.
TIES = [0, 0.0, -0.0, 1, 1.0, 2, 2.0, 2.5]
timestamps = st.sampled_from(TIES) | st.integers(0, 4) | st.just(1e9 + 0.25)
numbers = (
    st.sampled_from(TIES) | st.integers(-3, 3) | st.floats(allow_nan=False, allow_infinity=False)
)
nodeid_names = st.sampled_from(
    ["a.py::t", "a.py::u", "b.py::t[1]", "b.py::t[2]", "c.py"]
) | st.text(max_size=6)

nodeid_sets = st.lists(nodeid_names, max_size=6).map(lambda items: sorted(set(items)))
maxima = st.none() | numbers
latest = st.none() | st.builds(
    lambda at, value: {"at": at, "value": value}, timestamps, json_values
)
outcomes = st.none() | st.builds(
    lambda at, failed: {"at": at, "failed": failed}, timestamps, st.booleans()
)


def mappings_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(nodeid_names, values, max_size=5)


CASES: list[tuple[str, MergeStrategy[Any], st.SearchStrategy[Any]]] = [
    ("SortedUnion", SortedUnion(), nodeid_sets),
    ("Maximum", Maximum(), maxima),
    ("LatestWins", LatestWins(), latest),
    ("Outcome", Outcome(), outcomes),
    ("CanonicalMax", CanonicalMax(), json_values),
    ("MappingUnion(SortedUnion)", MappingUnion(SortedUnion()), mappings_of(nodeid_sets)),
    ("MappingUnion(Maximum)", MappingUnion(Maximum()), mappings_of(maxima)),
    ("MappingUnion(LatestWins)", MappingUnion(LatestWins()), mappings_of(latest)),
    ("MappingUnion(Outcome)", MappingUnion(Outcome()), mappings_of(outcomes)),
    ("MappingUnion(CanonicalMax)", MappingUnion(CanonicalMax()), mappings_of(json_values)),
    ("MappingUnion()", MappingUnion(), mappings_of(json_values)),
    (
        "MappingUnion(MappingUnion(Outcome))",
        MappingUnion(MappingUnion(Outcome())),
        mappings_of(mappings_of(outcomes)),
    ),
    ("LASTFAILED", LASTFAILED, mappings_of(outcomes)),
]
CASE_IDS = [name for name, _, _ in CASES]
parametrize_cases = pytest.mark.parametrize(("name", "strategy", "values"), CASES, ids=CASE_IDS)


# -- the join laws ------------------------------------------------------------------------


@parametrize_cases
@LAWS
@given(data=st.data())
def test_join_is_associative(name, strategy, values, data):
    a, b, c = data.draw(values), data.draw(values), data.draw(values)
    assert strategy.join(strategy.join(a, b), c) == strategy.join(a, strategy.join(b, c))


@parametrize_cases
@LAWS
@given(data=st.data())
def test_join_is_commutative(name, strategy, values, data):
    a, b = data.draw(values), data.draw(values)
    assert strategy.join(a, b) == strategy.join(b, a)


@parametrize_cases
@LAWS
@given(data=st.data())
def test_join_is_idempotent(name, strategy, values, data):
    a, b = data.draw(values), data.draw(values)
    assert strategy.join(a, a) == a
    # Reading a part twice changes nothing, wherever the duplicate comes.
    joined = strategy.join(a, b)
    assert strategy.join(joined, a) == joined
    assert strategy.join(b, joined) == joined


@parametrize_cases
@LAWS
@given(data=st.data())
def test_empty_is_the_identity(name, strategy, values, data):
    a = data.draw(values)
    assert strategy.join(strategy.empty(), a) == a
    assert strategy.join(a, strategy.empty()) == a
    assert join_all(strategy, []) == strategy.empty()


@parametrize_cases
@LAWS
@given(data=st.data())
def test_join_all_does_not_depend_on_order_or_duplicates(name, strategy, values, data):
    items = data.draw(st.lists(values, max_size=5))
    shuffled = data.draw(st.permutations(items))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(items), max_size=3)) if items else []
    expected = join_all(strategy, items)
    assert join_all(strategy, shuffled) == expected
    assert join_all(strategy, duplicated) == expected


@parametrize_cases
@LAWS
@given(data=st.data())
def test_join_balanced_is_join_all_to_the_byte(name, strategy, values, data):
    """Merges, compactions and reads join many parts at once (`join_balanced`, one pass
    for mappings: `MappingUnion.join_many`): the same value as folding them one by one,
    spelled alike (1 or 1.0, key order), whatever their order."""
    items = data.draw(st.lists(values, max_size=6))
    shuffled = data.draw(st.permutations(items))
    expected = join_all(strategy, items)
    joined = join_balanced(strategy, shuffled)
    assert _shape(joined) == _shape(expected)
    if isinstance(strategy, MappingUnion):
        assert list(joined) == sorted(joined)  # iterates in key order


# -- check: accepts every value of the shape, refuses every other -------------------------


@parametrize_cases
@LAWS
@given(data=st.data())
def test_check_accepts_every_value_of_the_shape(name, strategy, values, data):
    value = data.draw(values)
    checked = strategy.check(value)
    assert checked == value
    # A value that went through JSON (as every stored value does) is accepted too.
    assert strategy.check(json.loads(json.dumps(value))) == value


@parametrize_cases
@LAWS
@given(value=json_values)
@example(value=10**400)
@example(value=-(10**400))
@example(value={"at": 10**400, "failed": True})
@example(value={"at": 10**400, "value": 1})
@example(value={"a.py::t": {"at": 10**400, "failed": True}})
@example(value={"a.py::t": 10**400})
@example(value=float("nan"))
@example(value={"at": float("inf"), "failed": False})
def test_check_raises_only_corrupt_data(name, strategy, values, value):
    """Whatever JSON a foreign writer stored, check returns a value of the shape or raises
    CorruptData: never another exception that would escape `Cache.read_merged`."""
    try:
        checked = strategy.check(value)
    except CorruptData:
        return
    # What check lets through is a value of the shape: checking it again and joining it
    # are safe. (Compared as JSON text: CanonicalMax lets NaN through, and NaN != NaN.)
    assert _shape(strategy.check(checked)) == _shape(checked)
    assert _shape(strategy.join(checked, checked)) == _shape(checked)


WRONG_SHAPES: dict[str, list[Any]] = {
    "SortedUnion": [None, "a.py::t", {"a": 1}, [1], ["a", None], [["a"]], 3, True],
    "Maximum": [
        "1",
        True,
        False,
        [1],
        {"at": 1},
        float("nan"),
        float("inf"),
        -float("inf"),
        10**400,  # no float holds it: float() raises OverflowError far from the read
        -(10**400),
    ],
    "LatestWins": [
        1,
        "x",
        [1, 2],
        {},
        {"at": 1},
        {"value": 1},
        {"at": "1", "value": 1},
        {"at": True, "value": 1},
        {"at": None, "value": 1},
        {"at": float("nan"), "value": 1},
        {"at": 10**400, "value": 1},
        {"at": 1, "value": 1, "extra": 0},
    ],
    "Outcome": [
        1,
        True,
        "failed",
        [],
        {},
        {"at": 1},
        {"failed": True},
        {"at": 1, "failed": 1},
        {"at": 1, "failed": "yes"},
        {"at": "1", "failed": True},
        {"at": False, "failed": True},
        {"at": float("inf"), "failed": True},
        {"at": 10**400, "failed": True},
        {"at": 1, "failed": True, "extra": 0},
    ],
    "MappingUnion": [None, [], ["a"], "a", 1, True],
}
# A duration is a number of seconds a test may take: none of these (issue 15: a planted
# 10**400 made every start-up read fail with OverflowError, "store unavailable").


def _wrong_shapes(name: str) -> list[Any]:
    if name in WRONG_SHAPES:
        return WRONG_SHAPES[name]
    if name == "CanonicalMax":
        return []
    inner = {
        "LASTFAILED": "Outcome",
    }.get(name) or name.removeprefix("MappingUnion(").removesuffix(")")
    wrong = list(WRONG_SHAPES["MappingUnion"])
    if inner in WRONG_SHAPES:
        wrong += [{"a.py::t": bad} for bad in WRONG_SHAPES[inner] if bad is not None]
    return wrong


@parametrize_cases
def test_check_refuses_wrong_shapes(name, strategy, values):
    wrong = _wrong_shapes(name)
    if name == "CanonicalMax":
        # Any JSON is a CanonicalMax value: there is no wrong shape to refuse.
        for value in [None, 1, "x", [1, {"a": None}], {"b": [True]}]:
            assert strategy.check(value) == value
        return
    assert wrong, name
    for value in wrong:
        with pytest.raises(CorruptData):
            strategy.check(value)


def test_sorted_union_check_sorts_and_drops_duplicates():
    assert SortedUnion().check(["b", "a", "b"]) == ["a", "b"]


# -- lastfailed: the rules of DESIGN.md -----------------------------------------------------


def merged_lastfailed(*parts: dict[str, Any]) -> dict[str, bool]:
    """still_failing of the parts, checking every order gives the same answer."""
    answers = {
        json.dumps(still_failing(join_all(LASTFAILED, [LASTFAILED.check(p) for p in order])))
        for order in itertools.permutations(parts)
    }
    assert len(answers) == 1, answers
    return json.loads(answers.pop())


def test_a_later_pass_on_another_shard_clears_an_earlier_failure():
    run1_shard1 = observe_outcomes(failed=["a.py::t"], passed=["a.py::u"], at=100.0)
    run1_shard2 = observe_outcomes(failed=["b.py::t"], passed=[], at=100.0)
    run2_shard1 = observe_outcomes(failed=[], passed=["b.py::t"], at=200.0)  # b moved shards
    run2_shard2 = observe_outcomes(failed=[], passed=["c.py::t"], at=200.0)
    assert merged_lastfailed(run1_shard1, run1_shard2) == {"a.py::t": True, "b.py::t": True}
    assert merged_lastfailed(run1_shard1, run1_shard2, run2_shard1, run2_shard2) == {
        "a.py::t": True
    }


def test_a_later_skip_clears_an_earlier_failure():
    # observe_outcomes takes skipped tests among ``passed``: a skip is not a failure.
    run1 = observe_outcomes(failed=["a.py::t"], passed=[], at=1.0)
    run2 = observe_outcomes(failed=[], passed=["a.py::t"], at=2.0)
    assert merged_lastfailed(run1, run2) == {}


def test_a_failure_in_the_latest_run_that_ran_the_test_keeps_it():
    run1 = observe_outcomes(failed=[], passed=["a.py::t"], at=1.0)
    run2 = observe_outcomes(failed=["a.py::t"], passed=["b.py::t"], at=2.0)
    run3 = observe_outcomes(failed=[], passed=["b.py::t"], at=3.0)  # did not run a.py::t
    assert merged_lastfailed(run1, run2) == {"a.py::t": True}
    assert merged_lastfailed(run1, run2, run3) == {"a.py::t": True}
    # ...and a failure that a later run fixed again is gone.
    run4 = observe_outcomes(failed=[], passed=["a.py::t"], at=4.0)
    assert merged_lastfailed(run1, run2, run3, run4) == {}


def test_a_test_not_run_by_a_later_run_keeps_its_state():
    run1 = observe_outcomes(failed=["a.py::t"], passed=["a.py::u"], at=1.0)
    run2 = observe_outcomes(failed=["z.py::t"], passed=["z.py::u"], at=2.0)
    merged = join_all(LASTFAILED, [run1, run2])
    assert merged["a.py::t"] == {"at": 1.0, "failed": True}
    assert merged["a.py::u"] == {"at": 1.0, "failed": False}
    assert merged_lastfailed(run1, run2) == {"a.py::t": True, "z.py::t": True}


def test_same_timestamp_tie_failure_wins():
    shard1 = observe_outcomes(failed=[], passed=["a.py::t"], at=5.0)
    shard2 = observe_outcomes(failed=["a.py::t"], passed=[], at=5.0)
    assert merged_lastfailed(shard1, shard2) == {"a.py::t": True}
    # An integer and a float timestamp of the same moment tie too.
    shard3 = observe_outcomes(failed=[], passed=["a.py::t"], at=5)
    assert merged_lastfailed(shard1, shard2, shard3) == {"a.py::t": True}


def test_observe_outcomes_failure_beats_pass_in_one_run():
    # A test reported both ways in one run (a rerun plugin) counts as failed.
    part = observe_outcomes(failed=["a.py::t"], passed=["a.py::t"], at=1.0)
    assert part == {"a.py::t": {"at": 1.0, "failed": True}}


def test_still_failing_is_sorted_and_drops_none_and_passes():
    merged = {
        "b.py::t": {"at": 1, "failed": True},
        "a.py::t": {"at": 1, "failed": True},
        "c.py::t": {"at": 1, "failed": False},
        "d.py::t": None,
    }
    result = still_failing(merged)
    assert result == {"a.py::t": True, "b.py::t": True}
    assert list(result) == ["a.py::t", "b.py::t"]


def test_lastfailed_rules_through_the_cache_with_compaction():
    cache = Cache(MemoryStore())
    cache.write_part(
        "cache/lastfailed", "run1-shard1", observe_outcomes(failed=["a"], passed=["b"], at=1)
    )
    cache.write_part(
        "cache/lastfailed", "run1-shard2", observe_outcomes(failed=["c"], passed=[], at=1)
    )
    assert cache.compact("cache/lastfailed", LASTFAILED) == 2
    cache.write_part(
        "cache/lastfailed", "run2-shard1", observe_outcomes(failed=["b"], passed=["a"], at=2)
    )
    merged = cache.read_merged("cache/lastfailed", LASTFAILED)
    assert merged.has_base
    assert merged.parts == ("run2-shard1",)
    assert still_failing(merged.value) == {"b": True, "c": True}


# -- merged output is deterministic, whatever order the parts are stored and read in ------


def _stored_merge(strategy: MergeStrategy[Any], values: list[Any], order: list[int]):
    """Write ``values`` as parts whose ids sort in ``order`` and read them merged."""
    cache = Cache(MemoryStore(), clock=lambda: 0.0)
    for position, index in enumerate(order):
        cache.write_part("k", f"part-{position:03d}", values[index])
    return cache.read_merged("k", strategy)


@parametrize_cases
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_read_merged_is_the_same_whatever_the_part_order(name, strategy, values, data):
    parts = data.draw(st.lists(values, min_size=1, max_size=5))
    first = list(range(len(parts)))
    results = [_stored_merge(strategy, parts, first)]
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(3):
        order = first[:]
        rng.shuffle(order)
        results.append(_stored_merge(strategy, parts, order))
    for result in results[1:]:
        assert result.value == results[0].value
        assert result.parts == results[0].parts
        assert list(result.parts) == sorted(result.parts)
    assert results[0].value == join_all(strategy, parts)


@parametrize_cases
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_merged_output_is_byte_identical_whatever_the_part_order(name, strategy, values, data):
    """Stricter than ==: what a compaction stores (the encoded bytes) does not depend on
    the part order either (DESIGN: 'Merges are deterministic'). Equal timestamps or
    numbers spelled 1 and 1.0 must not let the read order pick the spelling."""
    parts = data.draw(st.lists(values, min_size=1, max_size=3))
    encodings = {
        codec.encode(join_all(strategy, [parts[i] for i in order]))
        for order in itertools.permutations(range(len(parts)))
    }
    assert len(encodings) == 1, sorted(encodings)


@pytest.mark.parametrize(
    ("strategy", "parts"),
    [
        (Maximum(), [0, 0.0]),
        (Maximum(), [0.0, -0.0]),
        (Outcome(), [{"at": 1, "failed": True}, {"at": 1.0, "failed": True}]),
        (LatestWins(), [{"at": 1, "value": "x"}, {"at": 1.0, "value": "x"}]),
        (LASTFAILED, [{"t": {"at": 5, "failed": False}}, {"t": {"at": 5.0, "failed": False}}]),
    ],
    ids=["Maximum-int-float", "Maximum-signed-zero", "Outcome", "LatestWins", "LASTFAILED"],
)
def test_ties_between_spellings_of_one_number_do_not_depend_on_order(strategy, parts):
    """Two parts that observed the same moment, one spelling it 1 and the other 1.0:
    the merged (and compacted) bytes must not depend on which was read first."""
    forwards = codec.encode(join_all(strategy, parts))
    backwards = codec.encode(join_all(strategy, parts[::-1]))
    assert forwards == backwards


@pytest.mark.parametrize("strategy", [LASTFAILED, MappingUnion()], ids=["LASTFAILED", "default"])
def test_merged_mappings_are_sorted_by_key(strategy):
    """'Merges are deterministic (sorted output)': a merged mapping iterates in key order,
    not in an order that depends on which part was larger or read first."""
    left = {"b": None, "d": None}
    right = {"a": None, "c": None, "e": None}
    assert list(strategy.join(left, right)) == ["a", "b", "c", "d", "e"]
    assert list(strategy.join(right, left)) == ["a", "b", "c", "d", "e"]


def test_maximum_keeps_the_largest_and_none_is_empty():
    assert join_all(Maximum(), [1, -5, 2.5, None]) == 2.5
    assert join_all(Maximum(), [None, None]) is None
    assert Maximum().check(None) is None
    assert Maximum().check(-math.pi) == -math.pi


@pytest.mark.parametrize(
    ("strategy", "value"),
    [
        (Outcome(), {"at": "AHEAD", "failed": False}),
        (LatestWins(), {"at": "AHEAD", "value": 1}),
    ],
)
def test_a_time_beyond_the_clock_skew_is_corrupt(strategy: Any, value: dict[str, Any]) -> None:
    """A later time wins every merge: a planted time from the future would pin its value
    (a fixed test still failing, or a pass no later run replaces) until that moment."""
    now = time.time()
    ahead = {**value, "at": now + CLOCK_SKEW + 60}
    within = {**value, "at": now + CLOCK_SKEW - 60}
    with pytest.raises(CorruptData, match="future"):
        strategy.check(ahead)
    assert strategy.check(within) == within
