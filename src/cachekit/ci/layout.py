"""Where things live in a store: the one place that defines cachekit's key layout.

Every tool that reads or writes CI data (the ``cachekit`` command, the pytest plugin,
other runners) builds keys with this module, so the layout can only change here.

A store shared by CI holds one *namespace* per (repository, ref, job, config)::

    v2/<repository>/<ref>/<job>/<config>/            namespace_prefix(...)
        cache/lastfailed/@base                       LASTFAILED: failures and recent fixes
        cache/lastfailed/@parts/<part id>            one part per shard and run
        cache/nodeids/@base | @parts/<part id>       NODEIDS: every test id, as digests
        stats/runs/@base | @parts/<part id>          one part per ingested report
        stats/durations/@base | @parts/<part id>     DURATIONS: latest duration per test
        stats/split-plans/<CI run>/@base             the durations one CI run splits by
        unittest/lastfailed/@base | @parts/<id>      LASTFAILED, for cachekit.unittest

- Every segment of the prefix is user-controlled text passed through
  `cachekit.stores.keys.safe_segment`: a branch ``feature/x`` becomes ``feature-x-<hash>``, so
  no name can add segments, climb out of the prefix or collide with another name.
- Shards of one job and config share the namespace: each shard and run writes its own
  immutable part (its id carries `part_label`), and readers join all parts (DESIGN.md,
  "Writing without lost updates"). A later shard split therefore sees every test.
- A run reads its own ref, then the base ref, then the default branch, through one
  `cachekit.LayeredStore` of `cachekit.PrefixedStore` layers (see `cachekit.ci.namespace`). Parts
  of every layer are joined; a ``@base`` in a nearer layer hides the ``@base`` of a
  farther one. Writes go to the run's own ref only.
- The keys inside a namespace are pytest's own cache keys for what pytest shares
  (``cache/lastfailed``, ``cache/nodeids``) and ``stats/...`` for test statistics.
  ``cache/lastfailed`` is stored as observations ``{nodeid: {"at": t, "failed": bool}}``
  (`cachekit.values.merge.observe_outcomes`), and projected back to pytest's ``{nodeid: true}``
  with `cachekit.values.merge.still_failing`.
- What a run reads and writes grows with what changed, not with the suite (DESIGN.md,
  "Scale"): ``cache/lastfailed`` holds failures and the passes that fixed them, never a
  pass per test (`cachekit.values.merge.LastOutcomes`); ``cache/nodeids`` bases hold
  8-byte digests, not names (`cachekit.values.digests`).
"""

from __future__ import annotations

from typing import Any

from cachekit.stores.keys import safe_segment
from cachekit.values.digests import NODEIDS
from cachekit.values.durations import DURATIONS
from cachekit.values.merge import (
    LASTFAILED,
    LatestWins,
    MappingUnion,
    MergeStrategy,
)

#: The first segment of every namespace; bumped when the layout or a stored form changes.
LAYOUT_VERSION = "v2"
#: Earlier layouts, which this version does not read (0.1.0 wrote ``v1``): a namespace
#: found only there reads as empty, with one warning (`legacy_prefix`).
OLD_LAYOUT_VERSIONS = ("v1",)

#: pytest's ``cache/lastfailed``, stored as per-test observations (`LASTFAILED`).
LASTFAILED_KEY = "cache/lastfailed"
#: pytest's ``cache/nodeids``: every test id seen (`NODEIDS`).
NODEIDS_KEY = "cache/nodeids"
#: Ingested test reports: ``{report id: run record}`` (see `cachekit.stats.runs`).
STATS_RUNS_KEY = "stats/runs"
#: Latest duration per test id, grouped by when it was recorded (`DURATIONS`).
DURATIONS_KEY = "stats/durations"

#: Where each CI run keeps the durations all its shards, and every rerun of one, split
#: the tests by: one plain value per run, written create-only by its first shard
#: (`split_plan_key`, `cachekit.stats.split_plan`); ``cachekit gc`` retires old ones.
SPLIT_PLANS_PREFIX = "stats/split-plans"

#: ``python -m cachekit.unittest``'s failures: per test id (``pkg.mod.Class.test``), module
#: or class, the last outcome, stored like `LASTFAILED_KEY` (see `cachekit.unittest`).
UNITTEST_LASTFAILED_KEY = "unittest/lastfailed"

#: Tests that passed, for ``--skip-passed``: ``{test hash: {"at": t, "value": record}}``,
#: keyed hashes and signed records only (see `cachekit.skip.records`).
SKIP_PASSED_KEY = "skip/passed"

#: Merge strategy of the stats runs: a union of reports keyed by report id.
STATS_RUNS = MappingUnion()
#: The latest record per test wins (`SKIP_PASSED_KEY`).
SKIP_PASSED = MappingUnion(LatestWins())

#: The pytest cache keys shared through the store, and how their parts are joined.
#: Only these are shared; every other pytest key (``cache/stepwise``, ``d/...``) stays
#: per machine.
PYTEST_SHARED_KEYS: dict[str, MergeStrategy[Any]] = {
    LASTFAILED_KEY: LASTFAILED,
    NODEIDS_KEY: NODEIDS,
}

#: Every key of a namespace and its merge strategy (for ``cachekit compact``/``merge``).
STRATEGIES: dict[str, MergeStrategy[Any]] = {
    **PYTEST_SHARED_KEYS,
    STATS_RUNS_KEY: STATS_RUNS,
    DURATIONS_KEY: DURATIONS,
    SKIP_PASSED_KEY: SKIP_PASSED,
    UNITTEST_LASTFAILED_KEY: LASTFAILED,
}

#: Keys of signed records, which only a holder of the signing key may fold: a fold
#: without the key keeps the latest record whatever its signature, so a record planted
#: before it could hide a signed one. ``--skip-passed`` runs compact them with a strategy
#: that verifies (`cachekit.skip.records.SignedLatest`); ``cachekit compact`` and
#: ``merge`` leave them alone (and records are signed over their namespace, so a copy
#: into another would not verify anyway).
SIGNED_KEYS = frozenset({SKIP_PASSED_KEY})

#: Keys kept as parts, never folded into one base: each part records one run (2 MB for
#: a run of 500,000 tests; a hundred joined would be more than one value may hold).
#: ``cachekit compact`` leaves them, ``cachekit merge`` copies their parts, and
#: ``cachekit gc --older-than`` retires old runs.
UNFOLDED_KEYS = frozenset({STATS_RUNS_KEY})

#: Used for a namespace field that is empty.
DEFAULT_SEGMENT = "default"


def segment(text: str | None) -> str:
    """One safe key segment for a (possibly empty, user-controlled) name."""
    return safe_segment(text) if text else DEFAULT_SEGMENT


def namespace_prefix(repository: str, ref: str, job: str = "", config: str = "") -> str:
    """The key prefix (without a trailing ``/``) of one namespace."""
    return "/".join(
        [LAYOUT_VERSION, segment(repository), segment(ref), segment(job), segment(config)]
    )


def legacy_prefix(prefix: str) -> str | None:
    """The same namespace under the layout before this one (``v1/...`` for ``v2/...``);
    None for a prefix of no layout."""
    version, _, rest = prefix.partition("/")
    if version != LAYOUT_VERSION or not rest:
        return None
    return f"{OLD_LAYOUT_VERSIONS[-1]}/{rest}"


def repository_prefix(repository: str) -> str:
    """The prefix of every namespace of one repository."""
    return f"{LAYOUT_VERSION}/{segment(repository)}"


def ref_prefix(repository: str, ref: str) -> str:
    """The prefix of every job and config of one ref (e.g. for ``cachekit compact``)."""
    return f"{repository_prefix(repository)}/{segment(ref)}"


def part_label(*, shard: str = "", run_id: str = "") -> str:
    """What a part id says about its writer: the run and shard (empty if neither)."""
    shard = shard.replace("/", "of")  # "2/4" -> "2of4": readable and one segment
    pieces = [f"run-{run_id}" if run_id else "", f"shard-{shard}" if shard else ""]
    return "-".join(piece for piece in pieces if piece)


def split_plan_key(ci_run: str) -> str:
    """The key of one CI run's split plan (`SPLIT_PLANS_PREFIX`)."""
    return f"{SPLIT_PLANS_PREFIX}/{segment(ci_run)}"


def strategy_for(key: str) -> MergeStrategy[Any] | None:
    """The merge strategy of a logical key, matched on its last two segments.

    ``v2/acme-app-1a2b/main/test/default/cache/lastfailed`` and ``cache/lastfailed`` both
    give `LASTFAILED`; an unknown key gives None.
    """
    return STRATEGIES.get(_tail(key))


def is_signed(key: str) -> bool:
    """Whether a logical key holds signed records (`SIGNED_KEYS`), matched like
    `strategy_for`."""
    return _tail(key) in SIGNED_KEYS


def is_unfolded(key: str) -> bool:
    """Whether a logical key is kept as parts (`UNFOLDED_KEYS`), matched like
    `strategy_for`."""
    return _tail(key) in UNFOLDED_KEYS


def _tail(key: str) -> str:
    return "/".join(key.split("/")[-2:])
