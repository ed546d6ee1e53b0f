"""Remote read and write of the shared keys, through `cachekit.Cache` only.

Start of a run: one batched read (`Cache.read_merged_many`) of every shared key.
End of a run: this run's changes as its own parts (`Cache.write_part`), then compaction
of keys whose parts passed the threshold. Every remote call runs in a worker thread with
a deadline taken from one budget for the whole run; a call that fails or runs out of time
turns the sync off for the rest of the run and is reported as one `SyncFailed`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import attrs

from cachekit import (
    LASTFAILED,
    NODEIDS,
    Cache,
    CacheKitWarning,
    CorruptValueWarning,
    LatestWins,
    MappingUnion,
    Merged,
    MergeStrategy,
    SortedUnion,
    open_store,
    redact_url,
)
from cachekit.ci import Namespace, namespaced_cache
from cachekit.codec import JSON
from cachekit.errors import CacheError, InvalidURL, UnsupportedOperation
from cachekit.layout import LASTFAILED_KEY, NODEIDS_KEY
from cachekit.merge import still_failing
from cachekit_pytest.options import SharedKey

T = TypeVar("T")


class SyncFailed(Exception):
    """A remote call failed or ran past the budget; the message says which and why."""


class InvalidBackend(Exception):
    """The store URL cannot be opened (a configuration error, not a fault)."""


class Budget:
    """Seconds the shared cache may still cost this run, spent by `run`."""

    def __init__(self, seconds: float) -> None:
        self.remaining = seconds
        #: cachekit warnings (corrupt values) raised by remote calls, in order.
        self.warnings: list[CacheKitWarning] = []

    def run(self, function: Callable[[], T], what: str) -> T:
        """``function()`` in a worker thread; `SyncFailed` if it fails or runs out of time.

        A call past its deadline is abandoned (the thread is a daemon and its result is
        dropped), so a hung server costs no more than the budget.
        """
        if self.remaining <= 0:
            raise SyncFailed(f"{what}: no time left of the budget")
        outcome: list[Any] = []

        def target() -> None:
            try:
                outcome.append((True, function()))
            except BaseException as error:  # reported by the caller
                outcome.append((False, error))

        started = time.monotonic()
        thread = threading.Thread(target=target, name="cachekit-sync", daemon=True)
        # Warnings from the worker go through the process-wide filters: catch them here,
        # in the main thread, while it waits, so the worker never touches that state.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CacheKitWarning)
            thread.start()
            thread.join(self.remaining)
        self.remaining = max(0.0, self.remaining - (time.monotonic() - started))
        self.warnings.extend(w.message for w in caught if isinstance(w.message, CacheKitWarning))
        if not outcome:
            self.remaining = 0.0
            raise SyncFailed(f"{what}: no answer within the time budget")
        succeeded, value = outcome[0]
        if succeeded:
            return value  # type: ignore[no-any-return]
        self.remaining = 0.0
        raise SyncFailed(f"{what}: {type(value).__name__}: {value}") from value

    def corrupt_summary(self) -> CorruptValueWarning | None:
        """One warning for every corrupt or foreign value met, or None."""
        corrupt = [
            str(w).removeprefix("cachekit: ")
            for w in self.warnings
            if isinstance(w, CorruptValueWarning)
        ]
        if not corrupt:
            return None
        shown = "; ".join(corrupt[:3])
        if len(corrupt) > 3:
            shown += f"; and {len(corrupt) - 3} more"
        return CorruptValueWarning(f"cachekit: ignored {len(corrupt)} unreadable value(s): {shown}")


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
    """``cache/lastfailed``: parts are per-test observations, see `Recorder`."""

    def local(self, merged: Any) -> JSON:
        return still_failing(merged)  # type: ignore[return-value]

    def part(self, start: JSON, end: JSON, now: float) -> JSON:
        raise NotImplementedError("lastfailed parts come from the run's observations")


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


def shared_keys(extra: tuple[SharedKey, ...]) -> dict[str, Shared]:
    """The built-in shared keys, then those the ini option lists."""
    found: dict[str, Shared] = {
        LASTFAILED_KEY: LastFailedKey(LASTFAILED_KEY, LASTFAILED),
        NODEIDS_KEY: UnionKey(NODEIDS_KEY, NODEIDS),
    }
    for item in extra:
        if item.strategy == "union":
            found[item.key] = UnionKey(item.key, SortedUnion())
        elif item.strategy == "mapping":
            found[item.key] = MappingKey(item.key, MappingUnion(LatestWins()))
        else:
            found[item.key] = LatestKey(item.key, LatestWins())
    return found


def has_data(merged: Merged) -> bool:
    return merged.has_base or bool(merged.parts)


# -- the remote store ---------------------------------------------------------------------


class Remote:
    """The shared keys in the store a URL names, every call within ``budget``.

    Keys live in the run's namespace (`cachekit.layout`, `cachekit.ci`): reads follow its
    read chain (this ref, the base ref, the default branch), writes go under its own ref,
    and an untrusted run (a fork's pull request) never writes.
    """

    def __init__(self, url: str, *, namespace: Namespace, budget: Budget) -> None:
        self.url = url
        self.namespace = namespace
        self.budget = budget
        self._cache: Cache | None = None

    @property
    def display(self) -> str:
        return redact_url(self.url)

    @property
    def writable(self) -> bool:
        return self.namespace.trusted

    def _open(self) -> Cache:
        """The namespace's cache. Opening a store makes no request, but it imports the
        backend's libraries (botocore and friends take a second or more on a loaded
        machine): that is not time the store costs, so it is spent outside the budget."""
        if self._cache is None:
            try:
                store = open_store(self.url)
            except InvalidURL as error:
                raise InvalidBackend(str(error)) from error
            self._cache = namespaced_cache(store, self.namespace)
        return self._cache

    def read(self, keys: Mapping[str, Shared]) -> dict[str, Merged]:
        """Every key's merged value: one listing and one batched fetch per namespace."""
        strategies = {key: shared.strategy for key, shared in keys.items()}
        cache = self._open()
        return self.budget.run(
            lambda: cache.read_merged_many(strategies), f"reading {self.display}"
        )

    def write(
        self,
        parts: Mapping[str, JSON],
        *,
        compact: Mapping[str, MergeStrategy[Any]],
        min_parts: int,
    ) -> None:
        """Write ``parts`` (key to value) as this run's part, then compact ``compact``."""
        part_id = self.namespace.new_part_id()
        cache = self._open()

        def work() -> None:
            for key, value in parts.items():
                cache.write_part(key, part_id, value)
            for key, strategy in compact.items():
                try:
                    cache.compact(key, strategy, min_parts=min_parts)
                except UnsupportedOperation:
                    return  # the store has no compare-and-swap: parts stay, reads still merge

        self.budget.run(work, f"writing to {self.display}")

    def close(self) -> None:
        if self._cache is not None and self.budget.remaining > 0:
            store = self._cache.store
            with contextlib.suppress(SyncFailed, CacheError):
                self.budget.run(store.close, "closing the store")
