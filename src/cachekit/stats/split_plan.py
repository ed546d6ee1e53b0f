"""One split per CI run: the durations every shard of a CI run, and every rerun of one,
split the tests by.

Shards split alike only when they split by the same durations (`cachekit.stats.sharding`).
Reading them as of the last compaction keeps the shards of one attempt together, but a
workflow whose final job compacts between an attempt and a rerun of one of its shards
would split the rerun differently: some tests would run twice, others never. So the
first shard of a CI run to read the durations stores them under the run
(`layout.split_plan_key`), create-only; every other shard, and every rerun (a rerun keeps
the CI run, `Namespace.ci_run`), splits by those. As the plan fixes them, that first shard
reads the latest durations, parts not yet compacted included.

A plan only fixes the durations, never the assignment: each shard still splits the tests
it collected, so a plan cannot drop a test, and a bad one (planted by a store writer) can
only unbalance the shards. A run without a CI run id, or a read-only one, splits by the
durations as of the last compaction, as before, and says so in its shard summary.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import cast

import attrs

import cachekit.ci.layout as layout
from cachekit.ci.layout import DURATIONS_KEY
from cachekit.ci.namespace import Namespace
from cachekit.errors import CorruptData, CorruptValueWarning
from cachekit.values.cache import Cache
from cachekit.values.codec import JSON
from cachekit.values.durations import DURATIONS, checked_group, latest_durations

#: The stored form's version: ``{"format": 1, "durations": {test id: seconds}}``.
FORMAT = 1


@attrs.frozen
class SplitPlan:
    """The durations a shard splits by, and where they came from."""

    durations: dict[str, float]
    #: For the shard's summary line, such as "split plan of CI run 81, written by this
    #: shard".
    source: str


class SplitPlans:
    """The split plan of one run's CI run, in its namespace's cache. Store errors
    propagate (the caller's budget decides)."""

    def __init__(self, cache: Cache, namespace: Namespace) -> None:
        self.ci_run = namespace.ci_run
        #: Only this ref's namespace: a CI run id is never another ref's.
        self.own = Cache(cache.store, writer=cache.writer)
        self.key = layout.split_plan_key(self.ci_run) if self.ci_run else ""
        #: The plan's key holds something that is not a plan (planted, or another
        #: version's): no plan can be stored, so shards split as if there were none.
        self.unreadable = False

    @property
    def as_of_compaction(self) -> bool:
        """Whether to read the durations as of their last compaction. When this shard
        can store a plan, the plan fixes what every shard splits by, so it reads the
        latest (parts too: no final job needs to compact first). Otherwise (no CI run id,
        a read-only run, an unreadable plan) shards agree only on what writers cannot
        change until someone compacts."""
        return not (self.ci_run and self.own.store.capabilities.writable) or self.unreadable

    def stored(self, *, warn: bool = True) -> SplitPlan | None:
        """The stored plan, if there is one (one read). Something else under its key is
        a miss with a `CorruptValueWarning` (unless ``warn`` is false)."""
        if not self.ci_run:
            return None
        value = self.own.get(self.key)
        planned = _plan_from(value, self.key, warn=warn)
        self.unreadable = value is not None and planned is None
        if planned is None:
            return None
        return SplitPlan(planned, f"split plan of CI run {self.ci_run}, from the store")

    def offer(
        self, durations: dict[str, float], read_compacted: Callable[[], dict[str, float]]
    ) -> SplitPlan:
        """The plan, given that `stored` found none and this shard read ``durations`` (as
        `as_of_compaction` said): stored as the plan unless another shard stored one
        first, in which case that one. Without a CI run id, on a read-only run, or when
        the key holds no readable plan, durations as of the last compaction
        (``read_compacted()`` if ``durations`` may hold more), and the summary says why.
        """
        ci_run = self.ci_run
        if not ci_run:
            return SplitPlan(durations, f"{_AS_COMPACTED} ({_NO_CI_RUN})")
        if not self.own.store.capabilities.writable:
            return SplitPlan(
                durations,
                f"{_AS_COMPACTED} (CI run {ci_run} has no split plan, and a read-only run "
                "writes none)",
            )
        if not self.unreadable:
            plan = {"format": FORMAT, "durations": cast("JSON", durations)}
            if self.own.add(self.key, plan):
                return SplitPlan(durations, f"split plan of CI run {ci_run}, written by this shard")
            # Another shard's, stored first (quietly: `stored` warned of a corrupt one).
            found = self.stored(warn=False)
            if found is not None:
                return found
        return SplitPlan(
            read_compacted(), f"{_AS_COMPACTED} (CI run {ci_run}'s split plan is unreadable)"
        )


_AS_COMPACTED = "durations as of the last compaction"
_NO_CI_RUN = (
    "no CI run id, so a rerun after a compaction may split differently: set CACHEKIT_RUN_ID"
)


def agree_on_durations(cache: Cache, namespace: Namespace) -> SplitPlan:
    """The stored plan, else the durations read now, offered as the plan: for a caller
    that reads nothing else (``cachekit shard``)."""
    plans = SplitPlans(cache, namespace)
    found = plans.stored()
    if found is not None:
        return found

    def read(*, compacted: bool) -> dict[str, float]:
        bases_only = [DURATIONS_KEY] if compacted else []
        read = cache.read_merged_many({DURATIONS_KEY: DURATIONS}, bases_only=bases_only)
        return latest_durations(read[DURATIONS_KEY].value)

    return plans.offer(read(compacted=plans.as_of_compaction), lambda: read(compacted=True))


def _plan_from(value: JSON, key: str, *, warn: bool = True) -> dict[str, float] | None:
    """The durations of a stored plan; None when there is none, or (with a warning) when
    what is stored is not a plan."""
    if value is None:
        return None
    if isinstance(value, dict) and value.get("format") == FORMAT:
        stored = value.get("durations")
        if isinstance(stored, dict):
            with contextlib.suppress(CorruptData):
                return checked_group(stored)
    if warn:
        warnings.warn(
            CorruptValueWarning(f"ignored the split plan at {key!r}: not a plan of this version"),
            stacklevel=2,
        )
    return None
