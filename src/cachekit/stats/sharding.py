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
scope first, so a class kept whole ends up inside its module's unit. A scope too large
for one shard is cut into pieces, each paying the setup again (`pieces`): the number of
pieces is the one that gives the smallest bound on the makespan, the larger of the
biggest piece and the mean shard load with every extra setup counted; one piece (kept
whole) wins ties. Without scoped setups every unit is one test and the split is the LPT
above, test for test. Units are ordered by (load descending, id), so the split depends
only on the set of test ids and the durations, never on collection order.
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
    return [sorted(shard) for shard in shards]


@attrs.frozen(eq=False)
class Unit:
    """What the split places on one shard: one test, or the tests of a scope kept
    together (or one piece of a scope cut up, `pieces`)."""

    #: The test's id, the scope's node id, or for a piece ``scope [i/m]``.
    id: str
    #: Sorted.
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
    unit_of = {test_id: Unit(test_id, (test_id,), seconds) for test_id, seconds in planned.items()}
    whole = sum(planned.values()) + sum(setups.values())  # every setup paid once
    for scope in sorted(setups, key=lambda scope: (-_depth(scope), scope)):
        inner = {id(unit): unit for unit in (unit_of[test_id] for test_id in members[scope])}
        for unit in pieces(scope, list(inner.values()), setups[scope], whole, count):
            unit_of.update(dict.fromkeys(unit.tests, unit))
    distinct = {id(unit): unit for unit in unit_of.values()}.values()
    return sorted(distinct, key=lambda unit: (-unit.load, unit.id))


def pieces(scope: str, inner: Sequence[Unit], setup: float, whole: float, count: int) -> list[Unit]:
    """The units of a scope whose fixtures cost ``setup`` to set up, made of the units
    ``inner`` inside it, in a split of ``whole`` seconds (every setup once) into
    ``count`` shards: one unit (the scope kept whole) unless cutting it into m pieces,
    each paying the setup, lowers the bound ``max(largest piece, (whole + (m - 1) *
    setup) / count)``; then m pieces filled longest first."""
    inner = sorted(inner, key=lambda unit: (-unit.load, unit.id))
    total = sum(unit.load for unit in inner)
    largest = inner[0].load if inner else 0.0

    def bound(m: int) -> float:
        return max(total / m + setup, largest + setup, (whole + (m - 1) * setup) / count)

    best = min(range(1, min(count, len(inner)) + 1), key=lambda m: (bound(m), m), default=1)
    if best == 1:
        tests = tuple(sorted(test_id for unit in inner for test_id in unit.tests))
        return [Unit(scope, tests, total + setup)]
    bins: list[list[Unit]] = [[] for _ in range(best)]
    heap = [(0.0, index) for index in range(best)]
    for unit in inner:
        load, index = heapq.heappop(heap)
        bins[index].append(unit)
        heapq.heappush(heap, (load + unit.load, index))
    return [
        Unit(
            f"{scope} [{index + 1}/{best}]",
            tuple(sorted(test_id for unit in piece for test_id in unit.tests)),
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
