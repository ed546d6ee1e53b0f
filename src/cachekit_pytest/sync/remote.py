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
from collections.abc import Iterable, Mapping
from typing import Protocol

from cachekit import Cache, open_store, redact_url
from cachekit.budget import Budget, BudgetCallFailed
from cachekit.ci.layout import LASTFAILED_KEY
from cachekit.ci.namespace import Namespace, namespaced_cache
from cachekit.errors import CacheError, InvalidURL, UnsupportedOperation
from cachekit.values.codec import JSON
from cachekit_pytest.recording import RunRecord
from cachekit_pytest.sync.keys import DurationsKey, Found, Observations, Shared

#: A remote call failed or ran past the budget; the message says which and why.
SyncFailed = BudgetCallFailed


class InvalidBackend(Exception):
    """The store URL cannot be opened (a configuration error, not a fault)."""


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
