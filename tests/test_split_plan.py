"""One split per CI run (`cachekit.stats.split_plan`): of many shards starting at once,
one stores the durations it read as the run's plan, and every shard splits by them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cachekit import open_store
from cachekit.ci.layout import DURATIONS_KEY, split_plan_key
from cachekit.ci.namespace import Namespace, namespaced_cache
from cachekit.stats.split_plan import SplitPlan, SplitPlans, agree_on_durations
from cachekit.values.cache import Cache
from cachekit.values.durations import DURATIONS

SHARDS = 8


def shard_cache(url: str, shard: int, ci_run: str = "81") -> tuple[Cache, Namespace]:
    namespace = Namespace(
        repository="acme/app",
        ref="main",
        job="test",
        shard=f"{shard}/8",
        run_id=f"{ci_run}-1",
        ci_run=ci_run,
    )
    return namespaced_cache(open_store(url), namespace), namespace


def record(cache: Cache, shard: int) -> None:
    """A shard's recorded durations: each shard's own run saw other times."""
    cache.write_part(
        DURATIONS_KEY, f"part-{shard}", {"1.0": {"t.py::a": float(shard), "t.py::b": 1.0}}
    )


def test_shards_starting_at_once_agree_on_one_plan(remote_url: str) -> None:
    """Each shard has read different durations (parts written by shards that finished
    early), yet all split by the one plan stored first, and a rerun finds it."""
    caches = [shard_cache(remote_url, shard) for shard in range(SHARDS)]
    record(caches[0][0], 0)
    plans: list[SplitPlan | None] = [None] * SHARDS
    barrier = threading.Barrier(SHARDS)

    def start(shard: int) -> None:
        cache, namespace = caches[shard]
        record(cache, shard + 1)  # what this shard's view holds beyond the others'
        barrier.wait()
        plans[shard] = agree_on_durations(cache, namespace)

    threads = [threading.Thread(target=start, args=(shard,)) for shard in range(SHARDS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    agreed = [plan for plan in plans if plan is not None]
    assert len(agreed) == SHARDS
    sources = [plan.source for plan in agreed]
    assert sources.count("split plan of CI run 81, written by this shard") == 1
    assert sources.count("split plan of CI run 81, from the store") == SHARDS - 1
    assert len({tuple(sorted(plan.durations.items())) for plan in agreed}) == 1
    cache, namespace = shard_cache(remote_url, 3)
    rerun = agree_on_durations(cache, namespace)
    assert rerun.durations == agreed[0].durations
    assert rerun.source == "split plan of CI run 81, from the store"


def test_an_unreadable_plan_makes_every_shard_split_as_of_the_last_compaction(
    tmp_path: Path,
) -> None:
    url = str(tmp_path / "store")
    cache, namespace = shard_cache(url, 0)
    cache.write_part(DURATIONS_KEY, "compacted", {"1.0": {"t.py::a": 2.0}})
    cache.compact(DURATIONS_KEY, DURATIONS)
    record(cache, 5)  # a part written since: shards that read it would disagree
    cache.set(split_plan_key("81"), "not a plan")
    with pytest.warns(Warning, match="ignored the split plan"):
        plan = agree_on_durations(cache, namespace)
    assert plan.durations == {"t.py::a": 2.0}
    assert (
        plan.source == "durations as of the last compaction (CI run 81's split plan is unreadable)"
    )
    assert cache.get(split_plan_key("81")) == "not a plan"  # left as it was


def test_a_plan_is_read_from_this_refs_namespace_only(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    main, _ = shard_cache(url, 0)
    main.set(split_plan_key("81"), {"format": 1, "durations": {"t.py::a": 9.0}})
    namespace = Namespace(
        repository="acme/app", ref="feature", base_ref="main", job="test", ci_run="81"
    )
    plans = SplitPlans(namespaced_cache(open_store(url), namespace), namespace)
    assert plans.stored() is None
