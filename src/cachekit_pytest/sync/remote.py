"""Remote read and write of the shared keys, through `cachekit.Cache` only.

Start of a run: one batched read (`Cache.read_merged_many`) of every shared key.
End of a run: this run's changes as its own parts (`Cache.write_part`), then compaction
of keys whose parts passed the threshold. A store on this machine is used from the pytest
process; a remote one from the sync agent, a helper process (`cachekit_pytest.sync.agent`).
Either way every remote call has a deadline taken from one budget for the whole run; a
call that fails or runs out of time turns the sync off for the rest of the run and is
reported as one `SyncFailed`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import attrs

from cachekit import (
    LASTFAILED,
    NODEIDS,
    Cache,
    LatestWins,
    MappingUnion,
    Merged,
    MergeStrategy,
    SortedUnion,
    open_store,
    redact_url,
)
from cachekit.budget import Budget, BudgetCallFailed
from cachekit.ci.layout import DURATIONS_KEY, LASTFAILED_KEY, NODEIDS_KEY
from cachekit.ci.namespace import Namespace, namespaced_cache
from cachekit.errors import CacheError, InvalidURL, UnsupportedOperation
from cachekit.stats.runs import durations_from_value
from cachekit.stores.registry import is_in_process
from cachekit.values.codec import JSON
from cachekit.values.merge import DURATIONS, still_failing
from cachekit_pytest.options import SharedKey
from cachekit_pytest.recording import RunRecord

T = TypeVar("T")


#: A remote call failed or ran past the budget; the message says which and why.
SyncFailed = BudgetCallFailed


class InvalidBackend(Exception):
    """The store URL cannot be opened (a configuration error, not a fault)."""


# -- how each shared key is stored, merged and projected onto pytest's shape ------------


class Shared(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def strategy(self) -> MergeStrategy[Any]: ...

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


class LastFailedKey(_Shared[Any]):
    """``cache/lastfailed``: parts are per-test observations (`Observations`)."""

    def local(self, merged: Any) -> JSON:
        return still_failing(merged)  # type: ignore[return-value]

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        raise NotImplementedError("lastfailed parts come from the run's observations")


@attrs.frozen
class Observations:
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
    """``stats/durations``, read for duration-balanced sharding as of its last compaction
    (by ``cachekit compact`` or ``merge``, typically in a CI workflow's final job): every
    shard of a run, and any re-run of one, then splits by the same durations, however
    soon other shards write theirs. Its parts come from the runs' test statistics
    (`cachekit.stats.runs.run_parts`), never from the working copy."""

    def local(self, merged: Any) -> JSON:
        return durations_from_value(merged)  # type: ignore[return-value]

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        raise NotImplementedError("durations parts come from the run's test statistics")


#: Read at start-up only when the run picks its shard of the tests by duration.
DURATIONS_READ = SharedKey(DURATIONS_KEY, "durations")


def shared_keys(extra: tuple[SharedKey, ...]) -> dict[str, Shared]:
    """The built-in shared keys, then those the ini option lists (and `DURATIONS_READ`)."""
    found: dict[str, Shared] = {
        LASTFAILED_KEY: LastFailedKey(LASTFAILED_KEY, LASTFAILED),
        NODEIDS_KEY: UnionKey(NODEIDS_KEY, NODEIDS),
    }
    for item in extra:
        if item == DURATIONS_READ:
            found[item.key] = DurationsKey(item.key, DURATIONS)
        elif item.strategy == "union":
            found[item.key] = UnionKey(item.key, SortedUnion())
        elif item.strategy == "mapping":
            found[item.key] = MappingKey(item.key, MappingUnion(LatestWins()))
        else:
            found[item.key] = LatestKey(item.key, LatestWins())
    return found


def has_data(merged: Merged) -> bool:
    return merged.has_base or bool(merged.parts)


@attrs.frozen
class Found:
    """What the start-up read found for one shared key, in pytest's shape."""

    #: The merged value projected onto what pytest keeps (`Shared.local`): JSON, typed
    #: Any so cattrs passes it through.
    value: Any
    has_base: bool
    #: The ids of the parts joined into it, sorted.
    parts: tuple[str, ...]

    @property
    def has_data(self) -> bool:
        return self.has_base or bool(self.parts)


# -- the remote store ---------------------------------------------------------------------


class Remote:
    """The shared keys in the store a URL names, with no time limit of its own.

    Keys live in the run's namespace (`cachekit.ci.layout`, `cachekit.ci.namespace`):
    reads follow its read chain (this ref, the base ref, the default branch), writes go
    under its own ref. Runs in the pytest process (`InProcessSync`) or in the sync agent
    (`cachekit_pytest.sync.agent`).
    """

    def __init__(self, url: str, *, namespace: Namespace, keys: Mapping[str, Shared]) -> None:
        self.url = url
        self.namespace = namespace
        self.keys = dict(keys)
        self._cache: Cache | None = None

    def open(self) -> Cache:
        """The namespace's cache. Opening makes no request, but it imports the backend's
        libraries (botocore and friends take a second or more on a loaded machine)."""
        if self._cache is None:
            try:
                store = open_store(self.url)
            except InvalidURL as error:
                raise InvalidBackend(str(error)) from error
            self._cache = namespaced_cache(store, self.namespace)
        return self._cache

    def read(self) -> dict[str, Found]:
        """Every key's merged value: one listing and one batched fetch per namespace."""
        strategies = {key: shared.strategy for key, shared in self.keys.items()}
        as_compacted = [
            key for key, shared in self.keys.items() if isinstance(shared, DurationsKey)
        ]
        merged = self.open().read_merged_many(strategies, bases_only=as_compacted)
        return {
            key: Found(self.keys[key].local(value.value), value.has_base, value.parts)
            for key, value in merged.items()
        }

    def write(
        self,
        parts: Mapping[str, JSON],
        *,
        observed: Observations | None = None,
        compact: Iterable[str],
        min_parts: int,
        stats: RunRecord | None = None,
    ) -> None:
        """Write ``parts`` (key to value), the run's observations and its test statistics
        as this run's part, then compact ``compact``."""
        part_id = self.namespace.new_part_id()
        cache = self.open()
        parts = dict(parts)
        if observed is not None:
            parts[LASTFAILED_KEY] = observed.part()
        if stats is not None:
            parts.update(stats.parts(part_id))
        cache.write_parts(part_id, parts)
        for key in compact:
            try:
                cache.compact(key, self.keys[key].strategy, min_parts=min_parts)
            except UnsupportedOperation:
                return  # the store has no compare-and-swap: parts stay, reads still merge

    def close(self) -> None:
        if self._cache is not None:
            self._cache.store.close()


class Sync(Protocol):
    """The shared cache as the provider uses it: every call within one `Budget`.

    `start` begins the start-up read; `result` waits for it, so a run that needs the
    values only at its end (no ``--lf``, ``--ff`` or ``--nf``) reads while it collects and
    runs tests. Likewise `write` may only begin the write, and `written` wait for it:
    the store is written while pytest reports the run.
    """

    url: str
    namespace: Namespace
    budget: Budget

    def start(self, *, read: bool) -> None: ...

    def opened(self) -> None:
        """Wait until the store is open; `InvalidBackend` if its URL cannot be opened."""

    def result(self) -> dict[str, Found]: ...

    def write(
        self,
        parts: Mapping[str, JSON],
        *,
        observed: Observations | None = None,
        compact: Iterable[str],
        min_parts: int,
        stats: RunRecord | None = None,
    ) -> None: ...

    def written(self) -> None:
        """Wait until what `write` began is stored; `SyncFailed` if that failed."""

    def close(self) -> None: ...


class InProcessSync:
    """`Remote` in the pytest process, for stores on this machine (paths, ``memory://``)
    and wherever ``CACHEKIT_IN_PROCESS=1`` asks for it."""

    def __init__(
        self, url: str, *, namespace: Namespace, keys: Mapping[str, Shared], budget: Budget
    ):
        self.url = url
        self.namespace = namespace
        self.budget = budget
        self.remote = Remote(url, namespace=namespace, keys=keys)

    def start(self, *, read: bool) -> None:
        self.remote.open()  # outside the budget: importing libraries is not the store's cost

    def opened(self) -> None:
        self.remote.open()

    def result(self) -> dict[str, Found]:
        return self.budget.run(self.remote.read, f"reading {redact_url(self.url)}")

    def write(
        self,
        parts: Mapping[str, JSON],
        *,
        observed: Observations | None = None,
        compact: Iterable[str],
        min_parts: int,
        stats: RunRecord | None = None,
    ) -> None:
        self.budget.run(
            lambda: self.remote.write(
                parts, observed=observed, compact=compact, min_parts=min_parts, stats=stats
            ),
            f"writing to {redact_url(self.url)}",
        )

    def written(self) -> None:
        """`write` is done when it returns: a store on this machine takes no time."""

    def close(self) -> None:
        if self.budget.remaining > 0:
            with contextlib.suppress(SyncFailed, CacheError):
                self.budget.run(self.remote.close, "closing the store")


def open_sync(
    url: str, *, namespace: Namespace, keys: tuple[SharedKey, ...], budget: Budget
) -> Sync:
    """In the pytest process for a store on this machine; in the sync agent for a remote
    one, so that its client libraries (botocore: imports, threads, loggers, garbage)
    never load into the test process and its start-up read overlaps the run."""
    if is_in_process(url) or os.environ.get("CACHEKIT_IN_PROCESS", "") not in ("", "0"):
        return InProcessSync(url, namespace=namespace, keys=shared_keys(keys), budget=budget)
    from cachekit_pytest.sync.agent import AgentSync  # noqa: PLC0415 (a cycle otherwise)

    return AgentSync(url, namespace=namespace, keys=keys, budget=budget)
