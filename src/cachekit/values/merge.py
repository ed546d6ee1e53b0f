"""Merge strategies: joins, so the merged value of many parts does not depend on the order
they are read in, or on a part being read twice.

Each strategy is a join-semilattice on JSON values: ``join`` is associative, commutative
and idempotent, ``empty()`` is its identity, and ``check`` shape-checks a value read from
storage (raising `CorruptData`), so foreign data never reaches a caller's merge.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

from cachekit.errors import CorruptData
from cachekit.values.codec import JSON

T = TypeVar("T")


class MergeStrategy(Protocol[T]):
    """A join on values of type ``T``.

    A strategy may also have ``join_many(values)``, `join_all` in one pass, and
    ``stored(value)``, what to write for a joined value (`stored_form`): both optional,
    found with ``getattr`` where many values are joined or one is written."""

    def empty(self) -> T:
        """The identity: ``join(empty(), x) == x``."""

    def join(self, left: T, right: T) -> T:
        """The least upper bound of two values."""

    def check(self, value: JSON) -> T:
        """``value`` if it has this strategy's shape, else raise `CorruptData`."""


def stored_form(strategy: MergeStrategy[T], value: T) -> JSON:
    """What to write for ``value``, joined by ``strategy`` (a compaction, a merge): its
    ``stored(value)`` where the strategy has one (its joined values are not JSON as they
    stand, or hold more than a stored value should), else the value."""
    stored = getattr(strategy, "stored", None)
    return stored(value) if stored is not None else value  # type: ignore[return-value]


def join_all(strategy: MergeStrategy[T], values: Iterable[T]) -> T:
    """Join any number of values (none gives the identity)."""
    result = strategy.empty()
    for value in values:
        result = strategy.join(result, value)
    return result


def _canonical(value: JSON) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


#: The largest int that is a number for the checks below: one ``float()`` can convert
#: (``10**400`` in a stored value would raise OverflowError far from where it was read).
_LARGEST_INT = int(sys.float_info.max)


#: How far ahead of this machine's clock a stored time may be: clocks of CI runners differ
#: by seconds, and a later time wins every merge, so a time from the future would pin a
#: value (a planted "passed" for ever) until that moment.
CLOCK_SKEW = 300.0


def _in_future(at: float) -> bool:
    return at > time.time() + CLOCK_SKEW


def _is_number(value: object) -> bool:
    """A JSON number a float can hold: a finite float, or an int no larger than the
    largest float; never a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_LARGEST_INT <= value <= _LARGEST_INT
    return isinstance(value, float) and math.isfinite(value)


class SortedUnion:
    """Sets of strings, stored as sorted lists: pytest's ``cache/nodeids``."""

    def empty(self) -> list[str]:
        return []

    def join(self, left: list[str], right: list[str]) -> list[str]:
        if not right or left == right:
            return left
        if not left:
            return right
        return sorted(set(left).union(right))

    def check(self, value: JSON) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise CorruptData("expected a list of strings")
        return sorted(set(value))  # type: ignore[arg-type]  # checked above


class Maximum:
    """Numbers; the largest wins. ``None`` is the identity."""

    def empty(self) -> float | None:
        return None

    def join(self, left: float | None, right: float | None) -> float | None:
        if left is None:
            return right
        if right is None:
            return left
        if left == right:  # 5 and 5.0, or 0.0 and -0.0: pick one spelling, whatever the order
            return max(left, right, key=_canonical)
        return max(left, right)

    def check(self, value: JSON) -> float | None:
        if value is not None and not _is_number(value):
            raise CorruptData("expected a finite number")
        return value  # type: ignore[return-value]  # checked above


class LatestWins:
    """Timestamped values ``{"at": seconds, "value": v}``; the latest wins.

    Equal timestamps are broken by the canonical JSON of the timestamp and the value, so
    every reader picks the same winner.
    """

    def empty(self) -> dict[str, JSON] | None:
        return None

    def join(
        self, left: dict[str, JSON] | None, right: dict[str, JSON] | None
    ) -> dict[str, JSON] | None:
        if left is None:
            return right
        if right is None:
            return left
        if left["at"] != right["at"]:  # the common case: no canonical JSON to build
            return left if left["at"] > right["at"] else right  # type: ignore[operator]
        return max(left, right, key=self._order)

    @staticmethod
    def _order(item: dict[str, JSON]) -> tuple[str, str]:
        return _canonical(item["at"]), _canonical(item["value"])

    def check(self, value: JSON) -> dict[str, JSON] | None:
        if value is None:
            return None
        if (
            not isinstance(value, dict)
            or set(value) != {"at", "value"}
            or not _is_number(value["at"])
        ):
            raise CorruptData('expected {"at": number, "value": ...}')
        if _in_future(value["at"]):  # type: ignore[arg-type]  # a number, checked above
            raise CorruptData(f"a time in the future ({value['at']})")
        return value


class Outcome:
    """A test's last observed outcome ``{"at": seconds, "failed": bool}``.

    The latest observation wins; in a tie (two shards of one run) a failure wins, so a
    failure is never hidden by a pass that happened at the same moment.
    """

    def empty(self) -> dict[str, JSON] | None:
        return None

    def join(
        self, left: dict[str, JSON] | None, right: dict[str, JSON] | None
    ) -> dict[str, JSON] | None:
        if left is None:
            return right
        if right is None:
            return left
        # Hot: called once per test per part. Plain comparisons, no key function.
        left_at, right_at = left["at"], right["at"]
        if left_at != right_at:
            return left if left_at > right_at else right  # type: ignore[operator]
        if left["failed"] != right["failed"]:
            return left if left["failed"] else right
        # The same observation, perhaps spelled 5 and 5.0: pick one, whatever the order.
        return left if repr(left_at) >= repr(right_at) else right

    def check(self, value: JSON) -> dict[str, JSON] | None:
        if value is None:
            return None
        # Hot: exact type tests first; the general checks only for unusual values.
        if type(value) is dict and len(value) == 2 and type(value.get("failed")) is bool:
            at = value.get("at")
            if (type(at) is float and math.isfinite(at)) or (
                type(at) is int and -_LARGEST_INT <= at <= _LARGEST_INT
            ):
                if _in_future(at):
                    raise CorruptData(f"a time in the future ({at})")
                return value
        raise CorruptData('expected {"at": number, "failed": bool}')


class MappingUnion:
    """Mappings from strings to values; keys present on both sides are joined by ``values``.

    The default for ``values`` keeps the greater value by canonical JSON: a join on any
    JSON, deterministic, for mappings whose writers agree anyway. Results iterate in key
    order, whatever order the parts were joined in.
    """

    def __init__(self, values: MergeStrategy[Any] | None = None) -> None:
        self.values: MergeStrategy[Any] = values if values is not None else CanonicalMax()

    def empty(self) -> dict[str, Any]:
        return {}

    def join(self, left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
        if len(left) < len(right):
            left, right = right, left
        merged = dict(left)
        added = False
        for key, value in right.items():
            if key in merged:
                merged[key] = self.values.join(merged[key], value)
            else:
                merged[key] = value
                added = True
        # Sorted inputs stay sorted unless keys were added; then two sorted runs, which
        # sorting merges in linear time.
        return dict(sorted(merged.items())) if added else merged

    def join_many(self, values: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """`join_all` of ``values`` in one pass (`cachekit.values.cache.join_balanced`
        uses it): each entry is joined once and the result sorted once, where pairwise
        joins copy and re-sort the growing mapping at every level (256 ``lastfailed``
        parts of ~390 entries: 0.34 s pairwise in a balanced tree)."""
        merged: dict[str, Any] = {}
        join = self.values.join
        for value in values:
            for key, item in value.items():
                merged[key] = join(merged[key], item) if key in merged else item
        return dict(sorted(merged.items()))

    def check(self, value: JSON) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise CorruptData("expected a mapping")
        return {key: self.values.check(item) for key, item in sorted(value.items())}

    def __repr__(self) -> str:
        return f"MappingUnion({self.values!r})"


class CanonicalMax:
    """Any JSON value; the greatest by canonical JSON text wins. ``None`` is the identity."""

    def empty(self) -> JSON:
        return None

    def join(self, left: JSON, right: JSON) -> JSON:
        if left is None:
            return right
        if right is None:
            return left
        return max(left, right, key=_canonical)

    def check(self, value: JSON) -> JSON:
        return value


class LastOutcomes(MappingUnion):
    """Per test, the latest observation `Outcome`: a failure stays until a later run
    passes (or skips) the test.

    Runs record their failures, and passes only of tests that were failing when they
    started (`cachekit_pytest.lastfailed.Replay.observations`): the value grows with
    failures and fixes, not with the suite. A stored value keeps a pass for
    `PASS_WINDOW` after the latest observation in it only: long enough to outlast any
    run that started before the pass (whose late failure it must still outrank), not
    for ever.
    """

    #: Longer than any CI run lasts (GitHub's limit is 6 hours, self-hosted 5 days).
    PASS_WINDOW = 7 * 86400.0

    def __init__(self) -> None:
        super().__init__(Outcome())

    def stored(self, value: dict[str, Any]) -> JSON:
        # Counted back from the latest observation, not the clock: the same value is
        # stored alike whenever and wherever it is compacted.
        latest = max((outcome["at"] for outcome in value.values() if outcome), default=0)
        horizon = latest - self.PASS_WINDOW
        return {
            nodeid: outcome
            for nodeid, outcome in value.items()
            if outcome is not None and (outcome["failed"] or outcome["at"] >= horizon)
        }

    def __repr__(self) -> str:
        return "LastOutcomes()"


#: Per-test latest observation, failures and recent fixes only (`LastOutcomes`).
LASTFAILED = LastOutcomes()


def observe_outcomes(*, failed: Iterable[str], passed: Iterable[str], at: float) -> dict[str, JSON]:
    """A `LASTFAILED` part for one run: what it saw fail and what it saw pass or skip."""
    outcomes: dict[str, JSON] = {nodeid: {"at": at, "failed": False} for nodeid in passed}
    outcomes.update({nodeid: {"at": at, "failed": True} for nodeid in failed})
    return outcomes


def still_failing(merged: Mapping[str, Mapping[str, JSON] | None]) -> dict[str, bool]:
    """Project a merged `LASTFAILED` value onto pytest's shape ``{nodeid: True}``, sorted."""
    return {
        nodeid: True
        for nodeid, outcome in sorted(merged.items())
        if outcome is not None and outcome["failed"]
    }
