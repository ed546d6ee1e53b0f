"""Duration-balanced sharding: ``--num-shards N --shard-id I`` runs one of N parts of
the selected tests, of about equal run time by the durations earlier runs recorded.

The split is `cachekit.stats.sharding.split` (longest first onto the least loaded shard;
unknown tests count at the average), computed by every shard alike from the same
durations, so each selected test runs on exactly one shard: the durations of the CI run's
split plan, which every rerun of a shard reads too (`cachekit.stats.split_plan`). It
applies last, to the tests that ``-k``, ``-m``, ``--deselect``, ``--lf`` and the rest
selected, keeping their order (``--ff``, ``--nf``).

``--shard-order=duration`` then runs the shard's tests longest first, a module or class
with a recorded scoped setup as one block (`cachekit.stats.sharding.units`), each block
in pytest's order; under ``-n N --dist loadgroup`` such a module or class is also one
``xdist_group``, so one worker pays its setup (`ScopedGroups`).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping

import pytest

from cachekit.stats.sharding import scoped_setups, split, units, xdist_groups

#: Where the xdist controller hands the durations to its workers.
WORKERINPUT_KEY = "cachekit_durations"


class ShardSelection:
    """Registered after ``LFPlugin``: its wrapper then encloses ``LFPlugin``'s, and it
    sees the tests after every other plugin chose them."""

    def __init__(
        self,
        shard_id: int,
        num_shards: int,
        durations: Mapping[str, float],
        source: str = "",
        *,
        by_duration: bool = False,
    ) -> None:
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.durations = durations
        #: Where the durations came from (`cachekit.stats.split_plan.SplitPlan.source`).
        self.source = source
        #: ``--shard-order=duration``: longest block first.
        self.by_duration = by_duration
        self.summary = ""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None, None, None]:
        yield
        shards = split((item.nodeid for item in items), self.durations, self.num_shards)
        mine = set(shards[self.shard_id])
        keep = [item for item in items if item.nodeid in mine]
        if len(keep) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in mine])
            items[:] = keep
        if self.by_duration:
            items[:] = longest_first(items, self.durations)
        known = sum(1 for test_id in mine if test_id in self.durations)
        planned = sum(self.durations.get(test_id, 0.0) for test_id in mine)
        setups = sum(scoped_setups(mine, self.durations)[0].values())
        self.summary = (
            f"cachekit: {describe_shard(self.shard_id, self.num_shards)}: {len(mine)} "
            f"test(s), {known} with a recorded duration ({planned:.1f} s recorded"
            + (f", {setups:.1f} s setup of scoped fixtures" if setups else "")
            + ")"
            + (f"; {self.source}" if self.source else "")
        )

    def pytest_report_collectionfinish(self) -> str | None:
        return self.summary or None


def longest_first(items: list[pytest.Item], durations: Mapping[str, float]) -> list[pytest.Item]:
    """``items`` by block, longest first (ties by id), each block in the given order."""
    blocks = units((item.nodeid for item in items), durations, 1)
    rank = {test_id: index for index, block in enumerate(blocks) for test_id in block.tests}
    return sorted(items, key=lambda item: rank[item.nodeid])  # stable: keeps each block's order


class ScopedGroups:
    """On an xdist worker under ``--dist loadgroup``: marks the tests of each module or
    class with a recorded scoped setup as one ``xdist_group`` (`xdist_groups`), before
    xdist's own hook turns the marks into groups. Tests with an ``xdist_group`` of their
    own keep it."""

    def __init__(self, durations: Mapping[str, float]) -> None:
        self.durations = durations

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        if not getattr(config.option, "loadgroup", False):
            return
        groups = xdist_groups((item.nodeid for item in items), self.durations)
        for item in items:
            group = groups.get(item.nodeid)
            if group is not None and item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(group))


def describe_shard(shard_id: int, num_shards: int) -> str:
    """How a run shows its shard: counted from 1, as every shard label cachekit prints
    (``shard 1/2``, the namespace's, ``cachekit shard``), and with the 0-based option it
    came from, so neither number can be mistaken for the other."""
    return f"shard {shard_id + 1}/{num_shards} (--shard-id={shard_id})"


class DurationsForWorkers:
    """On the xdist controller: workers collect and split, so they get the durations."""

    def __init__(self, durations: Mapping[str, float]) -> None:
        self.durations = dict(durations)

    def pytest_configure_node(self, node: object) -> None:
        workerinput = getattr(node, "workerinput", None)
        if isinstance(workerinput, dict):
            workerinput[WORKERINPUT_KEY] = self.durations
