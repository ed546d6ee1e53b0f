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

from collections.abc import Collection, Mapping
from functools import partial
from typing import Any, Protocol

from cachekit.budget import BudgetCallFailed
from cachekit.ci.layout import LASTFAILED_KEY, STATS_RUNS_KEY
from cachekit.errors import InvalidURL
from cachekit.session import Session
from cachekit.stats.signatures import run_signer, sign_runs
from cachekit.stats.split_plan import SplitPlans
from cachekit.values.cache import Cache
from cachekit_pytest.sync.keys import DurationsKey, Found, Shared
from cachekit_pytest.sync.records import Write

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

    def __init__(
        self, session: Session, keys: Mapping[str, Shared], *, count_only: Collection[str] = ()
    ) -> None:
        self.session = session
        self.keys = dict(keys)
        #: Keys whose value the run does not need: the start-up read only counts their
        #: parts, for the end's compaction (`Cache.read_merged_many`).
        self.count_only = frozenset(count_only)
        #: The start-up read found no value at all (a new namespace, or one that an
        #: older cachekit wrote: the first write looks, off the start-up's path).
        self.found_nothing = False

    def open(self) -> Cache:
        """The namespace's cache. Opening makes no request, but it imports the backend's
        libraries (botocore and friends take a second or more on a loaded machine)."""
        try:
            return self.session.cache
        except InvalidURL as error:
            raise InvalidBackend(str(error)) from error

    def read(self) -> dict[str, Found]:
        """Every key's merged value: one listing and one batched fetch per namespace.

        Durations (read only to pick this shard's tests) come from the CI run's split
        plan when one is stored, read first and in place of them; otherwise they are read
        and offered as the plan (`cachekit.stats.split_plan`).
        """
        cache = self.open()
        strategies = {key: shared.strategy for key, shared in self.keys.items()}
        split_by = [key for key, shared in self.keys.items() if isinstance(shared, DurationsKey)]
        plans = SplitPlans(cache, self.session.namespace)
        plan = plans.stored() if split_by else None
        if plan is not None:
            strategies = {key: value for key, value in strategies.items() if key not in split_by}
        as_compacted = split_by if plans.as_of_compaction else []
        count_only = self.count_only & set(strategies)
        merged = cache.read_merged_many(strategies, bases_only=as_compacted, count_only=count_only)
        self.found_nothing = plan is None and not any(
            value.has_base or value.parts for value in merged.values()
        )
        found = {
            key: Found(self.keys[key].local(value.value), value.has_base, value.parts)
            for key, value in merged.items()
        }
        for key in split_by:
            if plan is None:
                plan = plans.offer(found[key].value, partial(self._read_compacted, cache, key))
            found[key] = Found(plan.durations, bool(plan.durations), (), note=plan.source)
        return found

    def _read_compacted(self, cache: Cache, key: str) -> Any:
        """A key's value in pytest's shape as of its last compaction (parts left out)."""
        shared = self.keys[key]
        merged = cache.read_merged_many({key: shared.strategy}, bases_only=[key])
        return shared.local(merged[key].value)

    def write(self, write: Write) -> None:
        """Write the run's parts, its observations and its test statistics as this run's
        part of each key, then compact the keys ``write`` names."""
        part_id = self.session.namespace.new_part_id()
        self.open()
        if self.found_nothing:
            self.found_nothing = False
            self.session.warn_if_older_layout()
        parts = dict(write.parts)
        if write.observed is not None:
            parts[LASTFAILED_KEY] = write.observed.part()
        if write.stats is not None:
            parts.update(write.stats.parts(part_id))
            signer = run_signer(self.session.namespace)
            if signer is not None:  # evidence that may quarantine a flaky test
                parts[STATS_RUNS_KEY] = sign_runs(signer, parts[STATS_RUNS_KEY])
        strategies = {key: self.keys[key].strategy for key in write.compact}
        self.session.write_parts(part_id, parts, compact=strategies, min_parts=write.min_parts)

    def close(self) -> None:
        self.session.close()


class Sync(Protocol):
    """The shared cache as the provider uses it: every call within one `Budget`.

    `start` begins the start-up read; `result` waits for it, so a run that needs the
    values only at its end (no ``--lf``, ``--ff`` or ``--nf``) reads while it collects and
    runs tests. Likewise `write` may only begin the write, and `written` wait for it:
    the store is written while pytest reports the run.
    """

    session: Session
    #: Whether `start` checked the URL as far as it can be without opening the store
    #: (its scheme and client library): what opening could still refuse is rare, and the
    #: tests need not wait for it (`opened` without waiting).
    checked_here: bool

    def start(self, *, read: bool, count_only: Collection[str] = ()) -> None:
        """Open the store; begin the start-up read unless not ``read``, counting the parts
        of ``count_only`` without reading their values (`Remote.count_only`)."""

    def opened(self, *, wait: bool = True) -> bool:
        """Whether the store is open, waiting until it is unless not ``wait``;
        `InvalidBackend` if its URL cannot be opened."""

    def result(self) -> dict[str, Found]: ...

    def write(self, write: Write) -> None: ...

    def written(self) -> None:
        """Wait until what `write` began is stored; `SyncFailed` if that failed."""

    def close(self) -> None: ...


class InProcessSync:
    """`Remote` in the pytest process, for stores on this machine (paths, ``memory://``)
    and wherever ``CACHEKIT_IN_PROCESS=1`` asks for it."""

    def __init__(self, session: Session, keys: Mapping[str, Shared]) -> None:
        self.session = session
        self.remote = Remote(session, keys)
        self.checked_here = True  # `start` opens the store

    def start(self, *, read: bool, count_only: Collection[str] = ()) -> None:
        self.remote.count_only = frozenset(count_only)
        self.remote.open()  # outside the budget: importing libraries is not the store's cost

    def opened(self, *, wait: bool = True) -> bool:
        self.remote.open()
        return True

    def result(self) -> dict[str, Found]:
        return self.session.run(self.remote.read, f"reading {self.session.display}")

    def write(self, write: Write) -> None:
        self.session.run(lambda: self.remote.write(write), f"writing to {self.session.display}")

    def written(self) -> None:
        """`write` is done when it returns: a store on this machine takes no time."""

    def close(self) -> None:
        self.session.close()
