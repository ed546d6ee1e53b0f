"""The one seam between a store and the tools that use it: the pytest plugin and its sync
agent, ``--skip-passed``, ``cachekit.unittest``, the Hypothesis database and the
``cachekit`` command.

A `Session` is one run of one tool against one store: the store's URL, opened lazily
(importing a cloud client costs a second; a run that never reads should not pay it), the
run's CI namespace (its read chain and whether it is trusted to write), one time budget
for every store call, and the rule that a cache never fails a run: the first call that
fails or runs out of time turns the store off for the rest of the run with one warning,
and corrupt values met along the way make one more. Credentials never reach a warning.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import cachekit.ci.layout as layout
from cachekit.budget import DEFAULT_TIMEOUT, Budget, BudgetCallFailed, side_by_side
from cachekit.ci.namespace import Namespace, detect_namespace, namespaced_cache
from cachekit.errors import (
    CorruptValueWarning,
    InvalidURL,
    StoreUnavailableWarning,
    UnsupportedOperation,
)
from cachekit.stores.base import CacheStore
from cachekit.stores.registry import open_store
from cachekit.stores.wrappers import PrefixedStore, ReadOnlyStore
from cachekit.urls import redact_text, redact_url
from cachekit.values.cache import Cache, Merged, join_balanced
from cachekit.values.codec import JSON
from cachekit.values.merge import MergeStrategy

T = TypeVar("T")

#: What to do when a store refuses for want of credentials: the plugin, every tool's
#: warning and the ``cachekit`` command say it alike (`with_hints`).
CREDENTIALS_HINT = (
    "configure the storage credentials the usual way for this provider, such as "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://"
)
#: No time limit of the session's own (the sync agent: the pytest process holds the
#: run's budget).
UNLIMITED = float("inf")


def with_hints(message: str, error: BaseException | None = None) -> str:
    """``message`` (a store error, raised as ``error`` if given) with what to do about
    it, where that is known."""
    named = type(error).__name__ if error is not None else ""
    if "credential" in f"{named} {message}".lower():
        return f"{message} ({CREDENTIALS_HINT})"
    return message


def print_warning(warning: Warning) -> None:
    """One line on stderr. Not through `warnings`: under ``-W error`` a warning becomes an
    exception, and the cache must never change how a run ends."""
    print(f"{type(warning).__name__}: {warning}", file=sys.stderr, flush=True)


class Session:
    """One run of a tool against the store ``url`` names, in ``namespace``.

    ``store`` gives an opened store instead of opening ``url`` (the URL then only names it
    in messages). ``warn`` receives the run's warnings: at most one that the store is
    unavailable and one about corrupt values.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: Namespace | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        timeout_setting: str = "",
        warn: Callable[[Warning], None] = print_warning,
        store: CacheStore | None = None,
    ) -> None:
        self.url = url
        self.namespace = detect_namespace() if namespace is None else namespace
        self.budget = Budget(timeout, setting=timeout_setting)
        self.warn = warn
        #: True once a store call failed: the rest of the run leaves the store alone.
        self.degraded = False
        self._store = store
        self._cache: Cache | None = None
        self._warned_corrupt = False
        self._failing = threading.Lock()  # tools may call from several threads at once

    # -- what the run sees ----------------------------------------------------------------

    @property
    def display(self) -> str:
        """The URL as it may be printed (credentials redacted)."""
        return redact_url(self.url)

    def describe(self) -> str:
        """The store and the namespace, for a report header."""
        return f"{self.display} ({self.namespace.describe()})"

    def redact(self, text: str) -> str:
        """``text`` (an error message) without the credentials of the store's URL."""
        return redact_text(text, self.url)

    @property
    def store(self) -> CacheStore:
        """The whole store, opened on first use; `cachekit.InvalidURL` if ``url`` names
        none (a configuration error, which the caller reports as such)."""
        if self._store is None:
            try:
                self._store = open_store(self.url)
            except InvalidURL as error:  # a backend's message may quote the URL whole
                raise InvalidURL(self.redact(str(error))) from None
        return self._store

    @property
    def cache(self) -> Cache:
        """The run's namespace: merged reads join its read chain (own ref, base ref,
        default branch), writes go under its own ref, and never when it is not trusted."""
        if self._cache is None:
            self._cache = namespaced_cache(self.store, self.namespace)
        return self._cache

    def cache_under(self, prefix: str) -> Cache:
        """A `Cache` of one prefix of the store only (``cachekit --namespace-prefix``):
        no read chain; writable only when the run is trusted."""
        view: CacheStore = PrefixedStore(self.store, prefix)
        if not self.namespace.trusted:
            view = ReadOnlyStore(view)
        return Cache(view, writer=self.namespace.part_label)

    # -- calls within the budget ----------------------------------------------------------

    def run(self, function: Callable[[], T], what: str) -> T:
        """``function()`` within the run's budget; `BudgetCallFailed` (its message free of
        credentials) if it fails or runs out of time."""
        try:
            return self.budget.run(function, what)
        except BudgetCallFailed as error:
            raise BudgetCallFailed(self.redact(" ".join(str(error).split()))) from error

    def attempt(self, function: Callable[[], T], what: str) -> T | None:
        """``function()`` within the budget, or None once the store has failed: the first
        failure degrades the run with one warning (see the module doc)."""
        if self.degraded:
            return None
        try:
            return self.run(function, what)
        except BudgetCallFailed as error:
            self.fail(str(error))
            return None
        finally:
            self.warn_corrupt()

    def fail(self, message: str) -> None:
        """The store failed: leave it alone from now on, and say so once."""
        with self._failing:
            first, self.degraded = not self.degraded, True
        if first:
            self.warn(StoreUnavailableWarning(f"cachekit: {self.redact(with_hints(message))}"))

    def warn_corrupt(self) -> None:
        """One warning for the corrupt or foreign values the calls met, the first time
        there are any."""
        warning = self.budget.corrupt_summary()
        if warning is not None and not self._warned_corrupt:
            self._warned_corrupt = True
            self.warn(warning)

    def close(self) -> None:
        """Close the store, best effort, within what is left of the budget."""
        if self._store is None or self.degraded or self.budget.remaining <= 0:
            return
        store = self._store
        with contextlib.suppress(BudgetCallFailed):
            self.budget.run(store.close, "closing the store")

    # -- reads and writes that every tool makes alike -------------------------------------

    def warn_if_older_layout(self) -> None:
        """For a read that found nothing: one unreadable-value warning if the run's own
        namespace holds data in an older layout (0.1.0's ``v1/``), which this version
        does not read, so that the empty cache is explained. One listing; call it within
        the budget."""
        older = layout.legacy_prefix(self.namespace.prefix)
        if older is not None and self.store.list(older + "/"):
            warnings.warn(
                CorruptValueWarning(
                    f"cachekit: {older}/ holds data of an older cachekit, in a layout this "
                    f"version does not read (its own is {layout.LAYOUT_VERSION}/): running "
                    "as with an empty cache; the old objects can be deleted"
                ),
                stacklevel=2,
            )

    def read_layers(self, key: str, strategy: MergeStrategy[Any]) -> list[Merged]:
        """``key`` merged in each namespace of the read chain, nearest first, the layers
        read side by side: one listing and one batched fetch each. No time limit of its
        own: call it through `run` or `attempt`."""
        chain = self.cache.read_chain

        def reader(store: CacheStore) -> Callable[[], Merged]:
            return lambda: Cache(store).read_merged(key, strategy)

        if len(chain) == 1:
            return [reader(chain[0])()]
        return side_by_side([reader(store) for store in chain])

    def read_joined(self, key: str, strategy: MergeStrategy[T]) -> T:
        """``key`` joined across the whole read chain (see `read_layers`)."""
        values: list[T] = [layer.value for layer in self.read_layers(key, strategy)]
        return join_balanced(strategy, values)

    def write_parts(
        self,
        part_id: str,
        values: Mapping[str, JSON],
        *,
        compact: Mapping[str, MergeStrategy[Any]] | None = None,
        min_parts: int = 1,
    ) -> None:
        """``values`` (key to value) as this run's own parts, then compaction of the keys
        in ``compact`` that have ``min_parts`` parts. A store without compare-and-swap
        keeps the parts (readers still merge them)."""
        self.cache.write_parts(part_id, values)
        for key, strategy in (compact or {}).items():
            try:
                self.cache.compact(key, strategy, min_parts=min_parts)
            except UnsupportedOperation:
                return
