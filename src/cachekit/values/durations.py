"""`DURATIONS`: the latest duration of every test, kept compact enough for 500,000 tests.

A value groups the tests by when their latest duration was recorded::

    {"1700000000.25": {"tests/test_a.py::test_x": 0.5, ...}, "1700000100.0": {...}}

(the time as a float's ``repr``, in seconds since the epoch; durations in seconds). A
run's part is one group, and a compacted base a few groups, so a reader decodes one
string and one float per test instead of an ``{"at", "value"}`` object per test: the
shard split's read of 500,000 tests decodes in about a third of a second
(``benchmarks/bench_stats.py``). Each test is in at most one group.

Besides tests, a group may hold the setup (and teardown) time of a module-, class- or
package-scoped fixture, recorded apart from the test that happened to trigger it, under
`scoped_setup_key` of the scope's node id (`SCOPED_SETUP_PREFIX`). Such an entry is no
test id: readers look up the test ids they hold (`cachekit.stats.sharding`) and never
list the entries as tests.

The join keeps, per test, the latest time and, at equal times, the longer duration: a
join (associative, commutative, idempotent), so parts merge in any order. Joined values
share their groups with the values joined (nothing changes a group in place).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable, Mapping

from cachekit.errors import CorruptData
from cachekit.values.codec import JSON
from cachekit.values.merge import CLOCK_SKEW

#: Longer than any CI job may run (GitHub's limit is 6 hours, the longest 30 days).
MAX_DURATION = 31 * 86400.0

#: What starts the entry of a scoped setup in a group, followed by the scope's node id
#: (``"\x00setup tests/test_db.py"``, ``"\x00setup tests/test_db.py::TestUsers"``,
#: ``"\x00setup tests/db"`` for a package). A pytest node id starts with a file path or a
#: collector's name, and no path holds a NUL, so no test id is ever one of these. The one
#: place that says so.
SCOPED_SETUP_PREFIX = "\x00setup "

#: ``{time: {test id: seconds}}``.
Groups = dict[str, dict[str, float]]


def time_key(at: float) -> str:
    """The group key of a time: one spelling per float (5, 5.0 and "5.0" are one)."""
    return repr(float(at))


def scoped_setup_key(scope_id: str) -> str:
    """The entry that holds the setup time of the fixtures scoped to ``scope_id`` (the
    node id of a module, class or package)."""
    return SCOPED_SETUP_PREFIX + scope_id


def durations_part(at: float, durations: Mapping[str, float]) -> Groups:
    """The part a run writes: ``durations`` observed at ``at``; durations outside 0 to
    `MAX_DURATION` (a clock jump, a hostile report) are left out. ``{}`` if none."""
    kept = {
        test_id: float(seconds)
        for test_id, seconds in durations.items()
        if 0 <= seconds <= MAX_DURATION
    }
    return {time_key(at): kept} if kept else {}


def latest_durations(value: Groups) -> dict[str, float]:
    """Seconds per test id of a (checked) value: its groups laid over each other (the
    one group itself if there is one: 500,000 entries are not copied)."""
    if len(value) == 1:
        return next(iter(value.values()))
    result: dict[str, float] = {}
    for key in sorted(value, key=float):  # later groups last: they win should any overlap
        result.update(value[key])
    return result


class Durations:
    """The merge strategy of ``stats/durations`` (see the module's docstring)."""

    def empty(self) -> Groups:
        return {}

    def join(self, left: Groups, right: Groups) -> Groups:
        if not right or left is right:
            return left
        if not left:
            return right
        if sum(map(len, left.values())) < sum(map(len, right.values())):
            left, right = right, left  # walk the smaller side entry by entry
        # Groups are shared between values, never changed in place: a group is copied
        # only when a test leaves it, so joining the disjoint parts of one run's shards
        # costs a dict per part, not a copy of everything joined so far.
        where: dict[str, str] = {}  # test id -> its group on the right
        for key, group in right.items():
            where.update(dict.fromkeys(group, key))
        merged = dict(left)
        incoming = dict(right)
        copied: set[str] = set()  # the groups on the right copied already

        def drop(key: str, test_ids: Collection[str]) -> None:
            """Take ``test_ids`` out of the group ``key`` on the right (a test is in one
            group on each side, so none is taken out twice)."""
            if len(test_ids) == len(incoming[key]):  # all of it: an older run's part
                incoming[key] = {}
                copied.add(key)
                return
            if key not in copied:
                incoming[key] = dict(incoming[key])
                copied.add(key)
            group = incoming[key]
            for test_id in test_ids:
                del group[test_id]

        times = {key: float(key) for key in right}
        for held_key, held in left.items():
            both = held.keys() & where.keys()  # at C speed, over the smaller of the two
            if not both:
                continue
            held_at = float(held_key)
            # The tests in both, a group on the right at a time (found through one of
            # them, taken out at C speed): that group's time against the held group's
            # decides for all of them at once, and only a tie compares durations. A base
            # of 500,000 against 200 parts: 200 decisions, not 500,000.
            leaving: set[str] = set()  # tests the held group loses
            while both:
                key = where[next(iter(both))]
                if len(right) == 1:  # a run's part: every test in both is in it
                    common, both = both, set()
                else:
                    common = right[key].keys() & both
                    both -= common
                at = times[key]
                if at > held_at:
                    if leaving:
                        leaving |= common
                    else:  # most often the only group: taken as it is, not copied
                        leaving = common
                elif at < held_at:
                    drop(key, common)
                else:
                    group = right[key]
                    wins = {test_id for test_id in common if group[test_id] > held[test_id]}
                    leaving |= wins
                    if len(wins) < len(common):
                        drop(key, common - wins)
            if leaving:  # each held group is visited once: a new dict, not changed
                merged[held_key] = _without(held, leaving)
        for key, group in incoming.items():
            merged[key] = {**merged[key], **group} if key in merged else group
        return _sorted_groups(merged)

    def join_many(self, values: Iterable[Groups]) -> Groups:
        """`cachekit.values.merge.join_all` of ``values`` in one pass
        (`cachekit.values.cache.join_balanced` uses it): the groups, latest time first,
        each keeping the tests no later group held. Pairwise joins walk every test at each
        level of the tree (200 parts of 2,500 tests and a base: eight times 500,000)."""
        at_time: dict[str, list[dict[str, float]]] = {}
        for value in values:
            for key, group in value.items():
                if group:
                    at_time.setdefault(key, []).append(group)
        merged: Groups = {}
        seen: set[str] = set()  # the tests of the later groups
        for key in sorted(at_time, key=float, reverse=True):
            groups = at_time[key]
            group = groups[0] if len(groups) == 1 else _longest(groups)
            later = group.keys() & seen  # at C speed, as the updates below
            if later:
                group = _without(group, later)
            seen.update(group)
            merged[key] = group
        return _sorted_groups(merged)

    def check(self, value: JSON) -> Groups:
        if not isinstance(value, dict):
            raise CorruptData("expected {time: {test id: seconds}}")
        horizon = time.time() + CLOCK_SKEW
        pairs: list[tuple[str, dict[str, float]]] = []
        for key, group in value.items():
            try:
                at = float(key)
            except ValueError:
                raise CorruptData(f"expected a time, not {key[:40]!r}") from None
            if not math.isfinite(at):
                raise CorruptData(f"expected a time, not {key[:40]!r}")
            if at > horizon:
                raise CorruptData(f"a time in the future ({key})")
            if not isinstance(group, dict):
                raise CorruptData("expected {test id: seconds} for each time")
            pairs.append((time_key(at), checked_group(group)))
        groups = dict(pairs)
        if len(groups) == len(pairs) and (
            len(groups) <= 1 or sum(map(len, groups.values())) == len(set().union(*groups.values()))
        ):
            return _sorted_groups(groups)
        # A test in two groups, or one time spelled twice (5 and 5.0): not what cachekit
        # writes. Keep what the join of the groups would.
        return self.join_many({key: group} for key, group in pairs)

    def __repr__(self) -> str:
        return "Durations()"


def checked_group(group: dict[str, JSON]) -> dict[str, float]:
    """``{test id: seconds}`` as floats; `CorruptData` unless every value is a duration
    of 0 to `MAX_DURATION` seconds."""
    # Hot: 500,000 entries in a base. Exact type tests at C speed first.
    if not all(type(seconds) is float for seconds in group.values()):
        for seconds in group.values():
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise CorruptData("expected a duration in seconds")
        try:
            group = {test_id: float(seconds) for test_id, seconds in group.items()}  # type: ignore[arg-type]
        except OverflowError:  # an int no float holds (10**400)
            raise CorruptData("expected a duration in seconds") from None
    values: list[float] = list(group.values())  # type: ignore[arg-type]  # checked above
    if values and not (
        math.isfinite(sum(values)) and min(values) >= 0 and max(values) <= MAX_DURATION
    ):
        raise CorruptData(f"expected durations of 0 to {MAX_DURATION:g} seconds")
    return group  # type: ignore[return-value]  # checked above


def _without(group: dict[str, float], leaving: set[str]) -> dict[str, float]:
    """A copy of ``group`` less ``leaving`` (some of its tests), made the cheapest way."""
    if len(leaving) == len(group):  # replaced whole: by a newer run of its tests
        return {}
    if len(leaving) * 4 > len(group):
        return {test_id: seconds for test_id, seconds in group.items() if test_id not in leaving}
    kept = dict(group)  # a few tests out of many: copied at C speed, then taken out
    for test_id in leaving:
        del kept[test_id]
    return kept


def _longest(groups: list[dict[str, float]]) -> dict[str, float]:
    """Groups of one time as one: the longer duration of a test in two (two shards that
    recorded it at the same moment)."""
    merged = dict(groups[0])
    for group in groups[1:]:
        for test_id, seconds in group.items():
            if seconds > merged.get(test_id, -1.0):
                merged[test_id] = seconds
    return merged


def _sorted_groups(groups: Groups) -> Groups:
    return {key: groups[key] for key in sorted(groups, key=float) if groups[key]}


#: Per test, the latest duration (``stats/durations``).
DURATIONS = Durations()
