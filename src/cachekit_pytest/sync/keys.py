"""How each shared key is stored in a store, merged, and projected onto the shape
pytest keeps in its working copy (``.pytest_cache``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import attrs

from cachekit.ci.layout import DURATIONS_KEY, LASTFAILED_KEY, NODEIDS_KEY, PYTEST_SHARED_KEYS
from cachekit.values.codec import JSON
from cachekit.values.digests import DigestSet
from cachekit.values.durations import DURATIONS, latest_durations
from cachekit.values.merge import (
    LatestWins,
    MappingUnion,
    MergeStrategy,
    SortedUnion,
    still_failing,
)


@attrs.frozen
class SharedKey:
    """A key the run shares beyond pytest's own, and how (a name of `EXTRA_KEY_KINDS`)."""

    key: str
    strategy: str


class Shared(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def strategy(self) -> MergeStrategy[Any]: ...

    #: Whether the working copy takes the merged value (`local`); if not, `local` is
    #: only what the start-up read hands over.
    in_working_copy: bool

    def local(self, merged: Any) -> JSON:
        """The value the local working copy gets from a merged value."""

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        """What this run adds, given the working copy's value at start and end; None if
        nothing."""


S = TypeVar("S")


@attrs.frozen
class _Shared(Generic[S]):
    key: str
    strategy: MergeStrategy[S]
    in_working_copy = True


class LastFailedKey(_Shared[Any]):
    """``cache/lastfailed``: parts are per-test observations (`ObservedOutcomes`)."""

    def local(self, merged: Any) -> JSON:
        return still_failing(merged)  # type: ignore[return-value]

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        raise NotImplementedError("lastfailed parts come from the run's observations")


@attrs.frozen
class ObservedOutcomes:
    """What a run saw of each test and collector, as the pytest process hands it over:
    two lists of node ids are a fraction of the work of the part itself to send to the
    sync agent."""

    at: float
    failed: list[str]
    passed: list[str]

    def part(self) -> dict[str, JSON]:
        """The run's ``cache/lastfailed`` part (`cachekit.values.merge.LASTFAILED`)."""
        seen = [(nodeid, True) for nodeid in self.failed]
        seen += [(nodeid, False) for nodeid in self.passed]
        return {nodeid: {"at": self.at, "failed": failed} for nodeid, failed in sorted(seen)}


class NodeIdsKey(_Shared[Any]):
    """``cache/nodeids``: every test id any run collected, kept as digests
    (`cachekit.values.digests`). The working copy keeps what this machine collected,
    as pytest alone would; ``NFPlugin`` asks the store's set whether a test is new
    (`cachekit_pytest.shared.KnownNodeIds`). Only runs that use that set read it
    (``--nf``); their parts hold, by name, the ids it did not know. Other runs never
    read it, and their parts hold every id they collected, as digests.
    """

    in_working_copy = False

    def local(self, merged: Any) -> JSON:
        # The set as it is: in process nothing converts it; the sync agent sends it as
        # `DigestSet.to_json` (`cachekit_pytest.sync.agent.encode`).
        return merged  # type: ignore[no-any-return]

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        raise NotImplementedError("nodeids parts come from NFPlugin and the store's set")


def known_nodeids(found: Found | None) -> DigestSet:
    """The store's test ids as the start-up read found them (empty if it did not): the
    set itself, or as the sync agent sent it."""
    if found is None:
        return DigestSet()
    return found.value if isinstance(found.value, DigestSet) else DigestSet.from_json(found.value)


class UnionKey(_Shared[Any]):
    """A sorted list of strings (``cache/nodeids``, or ``KEY = union``): parts hold the new
    items only."""

    def local(self, merged: Any) -> JSON:
        return merged  # type: ignore[no-any-return]

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        if not _is_string_list(end):
            return None
        known = set(_strings(start))
        return sorted(set(_strings(end)) - known) or None  # type: ignore[return-value]


class LatestKey(_Shared[Any]):
    """Any JSON value; the latest written wins (``KEY`` or ``KEY = latest``)."""

    def local(self, merged: Any) -> JSON:
        return None if merged is None else merged["value"]

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        return None if end == start or end is None else {"at": now, "value": end}


class MappingKey(_Shared[Any]):
    """A mapping; per entry, the latest written wins (``KEY = mapping``)."""

    def local(self, merged: Any) -> JSON:
        return {name: entry["value"] for name, entry in sorted(merged.items()) if entry is not None}

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        if not isinstance(end, dict):
            return None
        before = start if isinstance(start, dict) else {}
        changed: dict[str, JSON] = {
            name: {"at": now, "value": value}
            for name, value in end.items()
            if name not in before or before[name] != value
        }
        return changed or None


def _is_string_list(value: JSON) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _strings(value: JSON) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


class DurationsKey(_Shared[Any]):
    """``stats/durations``, read for duration-balanced sharding: every shard of a CI run,
    and any rerun of one, splits by the durations its run's split plan holds
    (`cachekit.stats.split_plan`; without one, as of their last compaction). Its parts
    come from the runs' test statistics (`cachekit_pytest.sync.records.RunRecord.parts`),
    never from the working copy."""

    def local(self, merged: Any) -> JSON:
        return latest_durations(merged)  # type: ignore[return-value]  # checked by DURATIONS

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        raise NotImplementedError("durations parts come from the run's test statistics")


#: Read at start-up only when the run picks its shard of the tests by duration.
DURATIONS_READ = SharedKey(DURATIONS_KEY, "durations")


#: pytest's own keys, always shared (their strategies are `PYTEST_SHARED_KEYS`').
BUILTIN_SHARED_KEYS = tuple(PYTEST_SHARED_KEYS)
_BUILTIN_KINDS: dict[str, Callable[[str, MergeStrategy[Any]], Shared]] = {
    LASTFAILED_KEY: LastFailedKey,
    NODEIDS_KEY: NodeIdsKey,
}

#: How a key listed in the ``cache_shared_keys`` ini option is kept, by the name after
#: its ``=`` (`DEFAULT_KEY_KIND` when none).
EXTRA_KEY_KINDS: dict[str, Callable[[str], Shared]] = {
    "latest": lambda key: LatestKey(key, LatestWins()),
    "union": lambda key: UnionKey(key, SortedUnion()),
    "mapping": lambda key: MappingKey(key, MappingUnion(LatestWins())),
}
DEFAULT_KEY_KIND = "latest"


def shared_keys(extra: tuple[SharedKey, ...]) -> dict[str, Shared]:
    """The built-in shared keys, then those the ini option lists (and `DURATIONS_READ`)."""
    found: dict[str, Shared] = {
        key: _BUILTIN_KINDS[key](key, strategy) for key, strategy in PYTEST_SHARED_KEYS.items()
    }
    for item in extra:
        if item == DURATIONS_READ:
            found[item.key] = DurationsKey(item.key, DURATIONS)
        else:
            found[item.key] = EXTRA_KEY_KINDS[item.strategy](item.key)
    return found


@attrs.frozen
class Found:
    """What the start-up read found for one shared key, in pytest's shape."""

    #: The merged value projected onto what pytest keeps (`Shared.local`): JSON, typed
    #: Any so cattrs passes it through.
    value: Any
    has_base: bool
    #: The ids of the parts joined into it, sorted.
    parts: tuple[str, ...]
    #: Where the value came from, when that is worth a line in the run's report (the
    #: durations of a split: `cachekit.stats.split_plan.SplitPlan.source`).
    note: str = ""

    @property
    def has_data(self) -> bool:
        return self.has_base or bool(self.parts)
