"""Duration-balanced sharding: split test ids into shards of about equal run time.

Longest processing time first (LPT): tests are placed longest first, each onto the
shard with the least total so far. The longest shard is at most ``4/3 - 1/(3n)`` times
the best possible, and on large suites within a hair of ``total / n``.

Every shard computes the same split independently: the order is fixed by (duration
descending, test id ascending) and load ties go to the lowest shard index, so each test
lands in exactly one shard without any coordination. Tests without a recorded duration
count at the average of the known ones (1 second when nothing is known).

Scoped setups: the durations may also hold the setup time of a module-, class- or
package-scoped fixture (`cachekit.values.durations.scoped_setup_key`), which every shard
running a test of that scope pays once. The split then places *units*, not tests: a
scope with a recorded setup is one unit (its tests plus its setup once), built innermost
scope first, so a class kept whole ends up inside its module's unit. Big units leave
shards uneven, so the split also tries cutting every scope larger than a limit into
pieces no larger, each paying the setup again (`pieces`), for limits of the ideal shard
load (every setup once) times each of `CUTS`, and keeps the candidate whose longest-first
split plans the shortest slowest shard, the fewest cuts on a tie (stopping at one within
`CLOSE_ENOUGH` of the ideal). When scopes are bigger
than a shard (a package-scoped fixture over much of the suite), filling shard after shard
in test id order (`_wrap`: a scope's tests are neighbours, so only the scopes a shard
boundary falls in pay their setup again) packs better, and is taken when it plans a
shorter slowest shard. Without scoped setups every unit is one test and the split is the
LPT above, test for test. Units are ordered by (load descending, id), so the split
depends only on the set of test ids and the durations, never on collection order.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

from cachekit.values.durations import scoped_setup_key

#: Assumed duration of a test when no test has a recorded duration.
DEFAULT_DURATION = 1.0
_SHARD = re.compile(r"^\s*(\d+)\s*(?:/|of)\s*(\d+)\s*$")


def estimate(test_ids: Iterable[str], durations: Mapping[str, float]) -> dict[str, float]:
    """The duration to plan with for each test id: the recorded one, else the average of
    the recorded ones among ``test_ids`` (`DEFAULT_DURATION` if none). Negative, NaN or
    infinite records count as unknown."""
    ids = sorted(set(test_ids))
    known = {
        test_id: float(durations[test_id])
        for test_id in ids
        if test_id in durations and math.isfinite(durations[test_id]) and durations[test_id] >= 0
    }
    fallback = sum(known.values()) / len(known) if known else DEFAULT_DURATION
    return {test_id: known.get(test_id, fallback) for test_id in ids}


def split(test_ids: Iterable[str], durations: Mapping[str, float], count: int) -> list[list[str]]:
    """``count`` shards (lists of test ids, each sorted) covering every test id once."""
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, not {count}")
    planned = estimate(test_ids, durations)
    setups, members = scoped_setups(planned, durations)
    shards: list[list[str]] = [[] for _ in range(count)]
    loads = [(0.0, index) for index in range(count)]  # a heap: least loaded, lowest index
    if not setups:  # one test a unit (no object per test: 500,000 tests)
        for test_id in sorted(planned, key=lambda test_id: (-planned[test_id], test_id)):
            load, index = heapq.heappop(loads)
            shards[index].append(test_id)
            heapq.heappush(loads, (load + planned[test_id], index))
        return [sorted(shard) for shard in shards]
    for unit in _units(planned, setups, members, count):
        load, index = heapq.heappop(loads)
        shards[index].extend(unit.tests)
        heapq.heappush(loads, (load + unit.load, index))
    # What the shards pay (pieces of one scope on one shard pay its setup once), to beat.
    spans = [sum(planned[test_id] for test_id in shard) for shard in shards]
    shard_of = {test_id: index for index, shard in enumerate(shards) for test_id in shard}
    for scope, tests in members.items():
        for index in {shard_of[test_id] for test_id in tests}:
            spans[index] += setups[scope]
    ideal = (sum(planned.values()) + sum(setups.values())) / count
    if max(spans) > ideal * CLOSE_ENOUGH:
        wrapped = _wrap(planned, setups, members, count, max(spans))
        if wrapped is not None:
            shards = wrapped
    return [sorted(shard) for shard in shards]


@attrs.frozen(eq=False)
class Unit:
    """What the split places on one shard: one test, or the tests of a scope kept
    together (or one piece of a scope cut up, `pieces`)."""

    #: The test's id, the scope's node id, or for a piece ``scope [i/m]``.
    id: str
    #: In a fixed order (not sorted).
    tests: tuple[str, ...]
    #: Planned seconds: the tests' and the scoped setups the unit pays.
    load: float


def units(test_ids: Iterable[str], durations: Mapping[str, float], count: int) -> list[Unit]:
    """The units a split into ``count`` shards places, by (load descending, id)."""
    planned = estimate(test_ids, durations)
    return _units(planned, *scoped_setups(planned, durations), count)


def _units(
    planned: Mapping[str, float],
    setups: Mapping[str, float],
    members: Mapping[str, list[str]],
    count: int,
) -> list[Unit]:
    """The units of the candidate cut (`CUTS`) whose longest-first split plans the
    shortest slowest shard; the fewest cuts on a tie."""
    ideal = (sum(planned.values()) + sum(setups.values())) / count  # every setup once
    best: tuple[float, list[Unit]] | None = None
    tests = {test_id: Unit(test_id, (test_id,), seconds) for test_id, seconds in planned.items()}
    for cut in CUTS if count > 1 else CUTS[:1]:  # one shard: nothing to gain by cutting
        built = _cut(tests, setups, members, count, ideal * cut)
        span = _slowest(built, count)
        if best is None or span < best[0] * (1 - 1e-9):
            best = (span, built)
        if span <= ideal * CLOSE_ENOUGH:
            break
    assert best is not None
    return best[1]


#: A plan this close to the ideal shard load is not worth more candidates (`_units`,
#: `_wrap`): the time they take counts on every shard.
CLOSE_ENOUGH = 1.002


#: The largest block the split tries to allow, as fractions of the ideal shard load
#: (`pieces`); ``inf`` keeps every scope whole. The fewest cuts come first.
CUTS = (math.inf, 1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32)


def _cut(
    tests: Mapping[str, Unit],
    setups: Mapping[str, float],
    members: Mapping[str, list[str]],
    count: int,
    limit: float,
) -> list[Unit]:
    unit_of = dict(tests)
    for scope in sorted(setups, key=lambda scope: (-_depth(scope), scope)):  # inner first
        inner = {id(unit): unit for unit in (unit_of[test_id] for test_id in members[scope])}
        for unit in pieces(scope, list(inner.values()), setups[scope], limit, count):
            unit_of.update(dict.fromkeys(unit.tests, unit))
    distinct = {id(unit): unit for unit in unit_of.values()}.values()
    return sorted(distinct, key=lambda unit: (-unit.load, unit.id))


def _slowest(units: Iterable[Unit], count: int) -> float:
    """The planned load of the slowest shard of a longest-first split of ``units``."""
    loads = [0.0] * count
    heap = [(0.0, index) for index in range(count)]
    for unit in units:
        load, index = heapq.heappop(heap)
        loads[index] = load + unit.load
        heapq.heappush(heap, (loads[index], index))
    return max(loads)


def _wrap(
    planned: Mapping[str, float],
    setups: Mapping[str, float],
    members: Mapping[str, list[str]],
    count: int,
    to_beat: float,
) -> list[list[str]] | None:
    """Wrap-around, for suites whose scopes are too big for the units to pack well (a
    package-scoped fixture over most of the suite): the tests in id order (a package's,
    module's or class's tests are neighbours) filled into shard after shard up to a
    capacity, each shard paying the setups of the scopes it runs a test of; the smallest
    capacity that fits in ``count`` shards, found by bisection. Its shards if their
    slowest plans shorter than ``to_beat``, else None."""
    scopes: dict[str, set[str]] = {}
    for scope, tests in members.items():
        for test_id in tests:
            scopes.setdefault(test_id, set()).add(scope)
    # The tests of a scope are neighbours in id order (every id with a prefix is), so a
    # test continuing a shard pays the setups its neighbour before it did not.
    order = sorted(planned)
    starting: list[float] = []  # a test's cost on a new shard
    continuing: list[float] = []  # after the test before it on the same shard
    before: set[str] = set()
    for test_id in order:
        mine = scopes.get(test_id, set())
        starting.append(planned[test_id] + sum(setups[scope] for scope in mine))
        continuing.append(planned[test_id] + sum(setups[scope] for scope in mine - before))
        before = mine

    def fill(capacity: float) -> tuple[float, list[int]] | None:
        starts = [0]  # where each shard starts in ``order``
        load = slowest = 0.0
        for index, cost in enumerate(continuing):
            if load + cost > capacity and index > starts[-1]:
                if len(starts) == count:
                    return None
                starts.append(index)
                load = starting[index]
            else:
                load += cost
            slowest = max(slowest, load)
        return slowest, starts

    low = (sum(planned.values()) + sum(setups.values())) / count
    best = fill(to_beat)
    if best is None or best[0] >= to_beat * (1 - 1e-9):
        return None
    high = best[0]
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        found = fill(middle)
        if found is None:
            low = middle
        else:
            best, high = found, found[0]
    ends = [*best[1][1:], len(order)]
    shards = [order[start:end] for start, end in zip(best[1], ends, strict=True)]
    return shards + [[] for _ in range(count - len(shards))]


#: Halvings of the wrap-around's capacity range: to within 1/65,536 of it.
_BISECTIONS = 16


def pieces(
    scope: str, inner: Sequence[Unit], setup: float, limit: float, shards: int
) -> list[Unit]:
    """The units of a scope whose fixtures cost ``setup`` to set up, made of the units
    ``inner`` inside it: one (the scope kept whole) when it fits in ``limit`` seconds or
    its setup alone does not; otherwise as many pieces as it takes to fit (at most one per
    inner unit and per shard), each paying the setup, filled longest first."""
    inner = sorted(inner, key=lambda unit: (-unit.load, unit.id))
    total = sum(unit.load for unit in inner)
    count = 1
    if total + setup > limit > setup:
        count = min(len(inner), shards, math.ceil(total / (limit - setup)))
    if count <= 1:
        return [Unit(scope, tuple(t for unit in inner for t in unit.tests), total + setup)]
    bins: list[list[Unit]] = [[] for _ in range(count)]
    heap = [(0.0, index) for index in range(count)]
    for unit in inner:
        load, index = heapq.heappop(heap)
        bins[index].append(unit)
        heapq.heappush(heap, (load + unit.load, index))
    return [
        Unit(
            f"{scope} [{index + 1}/{count}]",
            tuple(t for unit in piece for t in unit.tests),
            sum(unit.load for unit in piece) + setup,
        )
        for index, piece in enumerate(bins)
    ]


def scoped_setups(
    test_ids: Iterable[str], durations: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, list[str]]]:
    """The recorded setups of the scopes holding any of ``test_ids`` (scope node id ->
    seconds; unusable records left out), and each such scope's tests among them.
    Looks up each test's scopes (`scopes_of`), once per module or class: it never reads
    the whole of ``durations``."""
    setups: dict[str, float] = {}
    members: dict[str, list[str]] = {}
    found: dict[str, list[str]] = {}  # a test's container -> its scopes with a setup
    for test_id in test_ids:
        container = test_id.partition("[")[0].rpartition("::")[0]
        scopes = found.get(container)
        if scopes is None:
            scopes = found[container] = []
            for scope in scopes_of(test_id):
                seconds = durations.get(scoped_setup_key(scope))
                if seconds is not None and math.isfinite(seconds) and seconds >= 0:
                    setups[scope] = float(seconds)
                    scopes.append(scope)
        for scope in scopes:
            members.setdefault(scope, []).append(test_id)
    return setups, members


def xdist_groups(test_ids: Iterable[str], durations: Mapping[str, float]) -> dict[str, str]:
    """For the tests in a module or class with a recorded scoped setup, the outermost
    such scope: the group that keeps them on one xdist worker (``--dist loadgroup``).
    Packages are left out (one worker would run a whole package), and so are cut pieces:
    the groups depend only on which scopes have a setup, not on the durations, as xdist
    writes a group into the test ids."""
    setups, members = scoped_setups(test_ids, durations)
    groups: dict[str, str] = {}
    for scope in sorted(setups, key=lambda scope: (-_depth(scope), scope)):  # outer last
        for test_id in members[scope]:
            if "::" in scope or test_id.startswith(scope + "::"):  # a class, or the module
                groups[test_id] = scope
    return groups


def scopes_of(test_id: str) -> list[str]:
    """The node ids of the packages, module and classes a test id lies in, outermost
    first: ``a/b/test_x.py::C::test[p]`` -> ``a``, ``a/b``, ``a/b/test_x.py``,
    ``a/b/test_x.py::C``."""
    path, *names = test_id.partition("[")[0].split("::")
    if not names:
        return []
    parts = path.split("/")
    scopes = ["/".join(parts[:end]) for end in range(1, len(parts))]
    scopes.append(path)
    scopes.extend("::".join([path, *names[:end]]) for end in range(1, len(names)))
    return scopes


def _depth(scope: str) -> int:
    """Deeper for a scope inside another: a package's modules, a module's classes."""
    return scope.count("/") + scope.count("::")


def loads(shards: Iterable[Iterable[str]], durations: Mapping[str, float]) -> list[float]:
    """The planned time of each shard: its tests' durations (as `estimate` plans them,
    over all the shards' tests) and the setup of each scope it runs a test of, once."""
    shards = [list(shard) for shard in shards]
    planned = estimate((test_id for shard in shards for test_id in shard), durations)
    result = []
    for shard in shards:
        setups, _ = scoped_setups(shard, durations)
        result.append(sum(planned[test_id] for test_id in shard) + sum(setups.values()))
    return result


def select(
    test_ids: Iterable[str], durations: Mapping[str, float], index: int, count: int
) -> list[str]:
    """The test ids of shard ``index`` (1-based) of ``count``."""
    if not 1 <= index <= count:
        raise ValueError(f"shard {index} does not exist: shards are numbered 1 to {count}")
    return split(test_ids, durations, count)[index - 1]


def makespan(shards: Iterable[Iterable[str]], durations: Mapping[str, float]) -> float:
    """The planned time of the longest shard."""
    return max((sum(durations[test_id] for test_id in shard) for shard in shards), default=0.0)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` or ``"2of4"`` -> ``(2, 4)`` (1-based); raises ValueError otherwise."""
    match = _SHARD.match(text)
    if not match:
        raise ValueError(f"a shard is written INDEX/COUNT, such as 2/4, not {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count} does not exist: INDEX must be 1 to COUNT")
    return index, count
