"""Unit tests of `Cache` over MemoryStore and LocalStore, and of the store wrappers."""

from __future__ import annotations

import json
import random
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import pytest

from cachekit import (
    Cache,
    Capabilities,
    Entry,
    LayeredStore,
    LocalStore,
    MemoryStore,
    PrefixedStore,
    ReadOnlyStore,
    new_part_id,
)
from cachekit.errors import (
    CorruptValueWarning,
    InvalidKey,
    PreconditionFailed,
    UnsupportedOperation,
)
from cachekit.values import streaming
from cachekit.values.cache import INVENTORY_BATCH, RawObject
from cachekit.values.codec import decode
from cachekit.values.compaction import compaction_due
from cachekit.values.merge import (
    LASTFAILED,
    MappingUnion,
    Maximum,
    SortedUnion,
    observe_outcomes,
)
from cachekit.values.objects import parse_part_id

#: A join of lists of strings, for tests of parts and reads.
UNION = SortedUnion()


class CountingStore:
    """Delegates to a store and counts the calls of each method."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()
        self.fetched: list[list[str]] = []

    @property
    def capabilities(self) -> Capabilities:
        return self.store.capabilities

    def get(self, key: str) -> Entry | None:
        self.calls["get"] += 1
        return self.store.get(key)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        self.calls["get_many"] += 1
        self.fetched.append(list(keys))
        return self.store.get_many(keys)

    def put(self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None):
        self.calls["put"] += 1
        return self.store.put(key, data, if_absent=if_absent, if_version=if_version)

    def delete(self, key: str) -> None:
        self.calls["delete"] += 1
        self.store.delete(key)

    def delete_many(self, keys: Iterable[str]) -> None:
        self.calls["delete_many"] += 1
        self.store.delete_many(keys)

    def list(self, prefix: str = "") -> list[str]:
        self.calls["list"] += 1
        return self.store.list(prefix)

    def close(self) -> None:
        self.store.close()


class NoCompareAndSwap(CountingStore):
    """A store that honours create-only writes but not compare-and-swap (like a GCS
    emulator that ignores preconditions would have to declare)."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(compare_and_swap=False)


@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryStore()
    return LocalStore(tmp_path / "store")


@pytest.fixture
def cache(store):
    return Cache(store, writer="tests")


# -- plain values ---------------------------------------------------------------------------


def test_get_missing_returns_default(cache):
    assert cache.get("a") is None
    assert cache.get("a", default={"x": 1}) == {"x": 1}


@pytest.mark.parametrize(
    "value", [None, 0, 1.5, "text", [1, "two", None], {"nested": {"list": [True, False]}}]
)
def test_set_then_get(cache, value):
    cache.set("cache/lastfailed", value)
    assert cache.get("cache/lastfailed", default="missing") == value


def test_set_overwrites_and_delete_removes(cache, store):
    cache.set("k", 1)
    cache.set("k", 2)
    assert cache.get("k") == 2
    cache.write_part("k", "p1", 3)
    cache.delete("k")
    assert cache.get("k", default="gone") == "gone"
    assert store.list() == []
    cache.delete("k")  # deleting twice is fine


def test_values_are_stored_in_an_envelope(cache, store):
    cache.set("k", [1])
    stored = decode(store.get("k/@base").data)
    assert stored["value"] == [1]
    assert stored["writer"] == "tests"
    assert isinstance(stored["written_at"], float)


def test_keys_do_not_interfere(cache):
    cache.set("a", 1)
    cache.set("a/b", 2)
    cache.set("ab", 3)
    assert (cache.get("a"), cache.get("a/b"), cache.get("ab")) == (1, 2, 3)
    cache.delete("a")
    assert (cache.get("a"), cache.get("a/b"), cache.get("ab")) == (None, 2, 3)


def test_update_with_default(cache):
    assert cache.update("n", lambda n: n + 1, default=10) == 11
    assert cache.update("n", lambda n: n + 1, default=10) == 12
    assert cache.get("n") == 12
    assert cache.update("list", lambda items: [*items, "x"], default=[]) == ["x"]


def test_update_retries_when_another_writer_wins(store):
    cache = Cache(store)
    cache.set("n", 0)
    calls = []

    def increment_while_someone_else_writes(n):
        calls.append(n)
        if len(calls) == 1:
            Cache(store).set("n", 100)  # a concurrent writer gets in between
        return n + 1

    assert cache.update("n", increment_while_someone_else_writes) == 101
    assert calls == [0, 100]
    assert cache.get("n") == 101


def always_raced(store):
    """An update function during which another writer always gets in first."""
    counter = iter(range(1000))

    def update(n):
        Cache(store).set("n", next(counter))
        return -1

    return update


def test_update_gives_up_after_the_attempts(store):
    cache = Cache(store, update_attempts=3)
    cache.set("n", 0)
    with pytest.raises(PreconditionFailed, match="3 attempts"):
        cache.update("n", always_raced(store))
    assert cache.get("n") != -1


# -- parts ----------------------------------------------------------------------------------


def test_write_part_is_create_only(cache, store):
    key = cache.write_part("cache/nodeids", "shard-1", ["a"])
    assert key == "cache/nodeids/@parts/shard-1"
    with pytest.raises(PreconditionFailed):
        cache.write_part("cache/nodeids", "shard-1", ["b"])
    assert decode(store.get(key).data)["value"] == ["a"]


class BarrierStore(CountingStore):
    """Each put waits until ``parties`` puts are in flight: only concurrent writes pass."""

    def __init__(self, store, parties: int) -> None:
        super().__init__(store)
        self.barrier = threading.Barrier(parties, timeout=10)

    def put(self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None):
        self.barrier.wait()
        return super().put(key, data, if_absent=if_absent, if_version=if_version)


def test_write_parts_writes_every_key_concurrently(store):
    values = {"cache/lastfailed": {"t": True}, "cache/nodeids": ["t"], "stats/runs": {"r": 1}}
    cache = Cache(BarrierStore(store, parties=len(values)))
    written = cache.write_parts("run-1", values)
    assert written == [f"{key}/@parts/run-1" for key in values]
    plain = Cache(store)
    assert plain.read_merged("cache/nodeids", UNION).parts == ("run-1",)
    assert [decode(store.get(key).data)["value"] for key in written] == list(values.values())


def test_write_parts_raises_what_a_write_raised(cache):
    cache.write_part("cache/nodeids", "run-1", ["a"])
    with pytest.raises(PreconditionFailed):
        cache.write_parts("run-1", {"cache/lastfailed": {}, "cache/nodeids": ["b"]})


@pytest.mark.parametrize("part_id", ["a/b", "@x", "", "..", "a\\b"])
def test_bad_part_ids_are_refused(cache, part_id):
    with pytest.raises(InvalidKey):
        cache.write_part("k", part_id, 1)


def test_new_part_id_is_unique_sortable_and_safe(cache):
    ids = [new_part_id("shard 1/../x") for _ in range(50)]
    assert len(set(ids)) == 50
    for part_id in ids:
        assert "/" not in part_id
        cache.write_part("k", part_id, 1)
    assert len(cache.parts("k")) == 50


def test_read_merged_joins_base_and_parts(cache):
    merged = cache.read_merged("nodeids", UNION)
    assert (merged.value, merged.has_base, merged.parts) == ([], False, ())
    cache.set("nodeids", ["b"])
    cache.write_part("nodeids", "p2", ["c", "a"])
    cache.write_part("nodeids", "p1", ["a"])
    merged = cache.read_merged("nodeids", UNION)
    assert merged.value == ["a", "b", "c"]
    assert merged.has_base
    assert merged.parts == ("p1", "p2")


def test_read_merged_ignores_nested_keys(cache):
    cache.write_part("k", "p", ["x"])
    cache.set("k/child", ["not a part"])
    cache.write_part("k/child", "q", ["nor this"])
    merged = cache.read_merged("k", UNION)
    assert merged.value == ["x"]
    assert merged.parts == ("p",)


def test_read_merged_is_one_list_and_one_get_many(store):
    counting = CountingStore(store)
    cache = Cache(counting)
    for index in range(5):
        cache.write_part("cache/nodeids", f"p{index}", [f"t{index}"])
    cache.set("cache/nodeids", ["base"])
    counting.calls.clear()
    merged = cache.read_merged("cache/nodeids", UNION)
    assert merged.value == ["base", "t0", "t1", "t2", "t3", "t4"]
    assert counting.calls == Counter(list=1, get_many=1)


def test_read_each_gives_base_and_parts_one_at_a_time_in_batches(store):
    counting = CountingStore(store)
    cache = Cache(counting)
    cache.set("stats/runs", {"r0": 0})
    for index in range(5):
        cache.write_part("stats/runs", f"p{index}", {f"r{index + 1}": index + 1})
    store.put("stats/runs/@parts/p9", b"not a cachekit value")
    counting.calls.clear()
    seen: list[tuple[int, int]] = []
    with pytest.warns(CorruptValueWarning):
        values = list(
            cache.read_each(
                "stats/runs", MappingUnion(), batch=2, progress=lambda *done: seen.append(done)
            )
        )
    assert values == [("", {"r0": 0})] + [(f"p{i}", {f"r{i + 1}": i + 1}) for i in range(5)]
    assert counting.calls == Counter(list=1, get_many=4)  # 7 objects, 2 at a time
    assert seen == [(2, 7), (4, 7), (6, 7), (7, 7)]


def test_read_merged_many_is_one_list_and_one_get_many(store):
    counting = CountingStore(store)
    cache = Cache(counting)
    lastfailed = "cache/lastfailed"
    cache.write_part(lastfailed, "s1", observe_outcomes(failed=["a"], passed=[], at=1))
    cache.write_part(lastfailed, "s2", observe_outcomes(failed=["b"], passed=["a"], at=2))
    cache.write_part("cache/nodeids", "s1", ["a", "b"])
    cache.set("cache/durations", {"a": 3.0})
    cache.write_part("cache/durations", "s2", {"a": 5.0, "b": 1.0})
    cache.set("elsewhere/x", 1)
    counting.calls.clear()
    counting.fetched.clear()
    result = cache.read_merged_many(
        {
            lastfailed: LASTFAILED,
            "cache/nodeids": UNION,
            "cache/durations": MappingUnion(Maximum()),
        }
    )
    assert counting.calls == Counter(list=1, get_many=1)
    assert result[lastfailed].value["a"] == {"at": 2, "failed": False}
    assert result[lastfailed].parts == ("s1", "s2")
    assert result["cache/nodeids"].value == ["a", "b"]
    assert not result["cache/nodeids"].has_base
    assert result["cache/durations"].value == {"a": 5.0, "b": 1.0}
    assert result["cache/durations"].has_base
    # Fetched only what the keys need, nothing from elsewhere.
    assert not any(key.startswith("elsewhere") for key in counting.fetched[0])


def test_read_merged_many_refuses_reserved_keys(cache):
    with pytest.raises(InvalidKey):
        cache.read_merged_many({"a/@parts": UNION})


# -- compaction -----------------------------------------------------------------------------


def test_compact_folds_parts_into_the_base(cache, store):
    cache.write_part("nodeids", "p1", ["a"])
    cache.write_part("nodeids", "p2", ["b"])
    assert cache.compact("nodeids", UNION) == 2
    assert cache.parts("nodeids") == []
    merged = cache.read_merged("nodeids", UNION)
    assert (merged.value, merged.has_base, merged.parts) == (["a", "b"], True, ())
    assert decode(store.get("nodeids/@base").data)["folded"] == ["p1", "p2"]
    assert cache.get("nodeids") == ["a", "b"]
    # New parts after a compaction join the base.
    cache.write_part("nodeids", "p3", ["c"])
    merged = cache.read_merged("nodeids", UNION)
    assert (merged.value, merged.has_base, merged.parts) == (["a", "b", "c"], True, ("p3",))
    assert cache.compact("nodeids", UNION) == 1
    assert cache.read_merged("nodeids", UNION).value == ["a", "b", "c"]
    assert store.list() == ["nodeids/@base"]


def test_compact_respects_min_parts(cache):
    cache.write_part("nodeids", "p1", ["a"])
    assert cache.compact("nodeids", UNION, min_parts=2) == 0
    assert cache.parts("nodeids") == ["nodeids/@parts/p1"]
    assert cache.compact("nodeids", UNION) == 1


def test_compact_with_nothing_to_do(cache):
    assert cache.compact("nodeids", UNION) == 0
    assert cache.get("nodeids") is None


def test_compact_loses_to_a_concurrent_base_change_and_keeps_parts(store):
    """A compactor whose base changed under it writes nothing and retires nothing."""

    class ChangeBaseBeforePut(CountingStore):
        def put(self, key, data, *, if_absent=False, if_version=None):
            if key.endswith("@base") and not self.calls["put"]:
                self.calls["put"] += 1
                self.store.put(key, Cache(self.store)._encode(["other"]))
            return super().put(key, data, if_absent=if_absent, if_version=if_version)

    Cache(store).set("nodeids", ["base"])
    Cache(store).write_part("nodeids", "p1", ["a"])
    cache = Cache(ChangeBaseBeforePut(store))
    assert cache.compact("nodeids", UNION) == 0
    assert Cache(store).parts("nodeids") == ["nodeids/@parts/p1"]
    assert Cache(store).read_merged("nodeids", UNION).value == ["a", "other"]


@pytest.mark.parametrize("wrapper", [ReadOnlyStore, NoCompareAndSwap])
def test_compact_and_update_refuse_without_compare_and_swap(store, wrapper):
    Cache(store).write_part("nodeids", "p1", ["a"])
    cache = Cache(wrapper(store))
    # Both are refused up front, each with its own reason.
    reason = "compare-and-swap" if wrapper is NoCompareAndSwap else "read-only"
    with pytest.raises(UnsupportedOperation, match=reason):
        cache.compact("nodeids", UNION)
    with pytest.raises(UnsupportedOperation, match=reason):
        cache.update("n", lambda n: 1, default=0)
    assert store.list() == ["nodeids/@parts/p1"]
    # Reading still works.
    assert cache.read_merged("nodeids", UNION).value == ["a"]


def test_compact_refuses_before_touching_the_store(store):
    counting = NoCompareAndSwap(store)
    with pytest.raises(UnsupportedOperation):
        Cache(counting).compact("nodeids", UNION)
    assert sum(counting.calls.values()) == 0


# -- inventory ------------------------------------------------------------------------------


def test_inventory_finds_bases_parts_unreadable_and_foreign_objects(store):
    cache = Cache(store, writer="tests", clock=lambda: 1000.0)
    cache.set("a/cache/nodeids", ["x"])
    stamped = new_part_id("run-7-shard-2of4")
    cache.write_part("a/cache/nodeids", stamped, ["y"])
    cache.write_part("b/lastfailed", "handmade", {"t": True})
    store.put("b/lastfailed/@parts/broken", b"not a cachekit value")
    store.put("notes/readme", b"hello")
    store.put("a/cache/nodeids/@parts/p/nested", b"too deep to be a part")

    inventory = cache.inventory()

    assert [key.name for key in inventory.keys] == ["a/cache/nodeids", "b/lastfailed"]
    nodeids, lastfailed = inventory.keys
    base = nodeids.base
    assert base is not None
    assert (base.key, base.part_id, base.label) == ("a/cache/nodeids/@base", "", "")
    assert base.envelope is not None
    assert (base.envelope.value, base.envelope.writer, base.written_at) == (["x"], "tests", 1000.0)
    assert base.size == len(store.get(base.key).data)
    [part] = nodeids.parts
    assert (part.part_id, part.label) == (stamped, "run-7-shard-2of4")
    assert part.written_at == 1000.0  # read: the envelope's time, not the id's
    assert not part.unreadable
    assert nodeids.size == base.size + part.size
    assert lastfailed.base is None
    broken, handmade = lastfailed.parts
    assert broken.part_id == "broken"
    assert broken.unreadable
    assert (broken.envelope, broken.written_at, broken.size) == (None, None, 20)
    assert handmade.envelope is not None
    assert handmade.envelope.value == {"t": True}
    assert (handmade.label, handmade.written_at) == ("", 1000.0)
    assert sorted(inventory.raw, key=lambda raw: raw.key) == [
        RawObject("a/cache/nodeids/@parts/p/nested", 21),
        RawObject("notes/readme", 5),
    ]
    assert inventory.listed == tuple(store.list())


def test_inventory_under_a_prefix(store):
    cache = Cache(store)
    cache.set("ns1/cache/nodeids", [])
    cache.set("ns2/cache/nodeids", [])
    store.put("ns2/other", b"?")
    inventory = cache.inventory("ns1/")
    assert [key.name for key in inventory.keys] == ["ns1/cache/nodeids"]
    assert (inventory.prefix, inventory.raw) == ("ns1/", ())


def test_inventory_dates_parts_by_their_id_without_reading_them(store):
    counting = CountingStore(store)
    cache = Cache(counting, clock=lambda: 1000.0)
    stamped = "00000002000000000000-shard-1of2-0123abcd"
    cache.write_part("k", stamped, 1)
    cache.write_part("k", "00000003000000000000-old", 2)  # a stamp, but no label
    cache.write_part("k", "unstamped", 3)
    cache.set("k", 0)
    counting.calls.clear()

    listing_only = cache.inventory(fetch="none")
    assert counting.calls == Counter(list=1)
    [key] = listing_only.keys
    assert key.base is not None
    assert (key.base.written_at, key.base.size, key.base.envelope) == (None, None, None)
    dates = {part.part_id: (part.written_at, part.label, part.size) for part in key.parts}
    assert dates == {
        stamped: (2000.0, "shard-1of2", None),
        "00000003000000000000-old": (3000.0, "", None),
        "unstamped": (None, "", None),
    }

    counting.fetched.clear()
    undated = cache.inventory(fetch="undated")
    assert counting.fetched == [["k/@base", "k/@parts/unstamped"]]
    [key] = undated.keys
    assert key.base is not None
    assert key.base.written_at == 1000.0
    assert {part.part_id: part.written_at for part in key.parts} == {
        stamped: 2000.0,
        "00000003000000000000-old": 3000.0,
        "unstamped": 1000.0,
    }


def test_inventory_fetches_in_batches_and_reports_progress(store):
    counting = CountingStore(store)
    cache = Cache(counting)
    cache.write_parts("p", {f"k{index:03d}": index for index in range(INVENTORY_BATCH + 44)})
    counting.fetched.clear()
    progress: list[tuple[int, int]] = []
    inventory = cache.inventory(progress=lambda done, total: progress.append((done, total)))
    assert [len(batch) for batch in counting.fetched] == [INVENTORY_BATCH, 44]
    assert progress == [(INVENTORY_BATCH, INVENTORY_BATCH + 44), (INVENTORY_BATCH + 44,) * 2]
    assert all(key.parts[0].envelope is not None for key in inventory.keys)


class ForgetfulStore(CountingStore):
    """Loses one object between the listing and the fetch (a concurrent compaction)."""

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        return {k: v for k, v in super().get_many(keys).items() if not k.endswith("/gone")}


def test_inventory_of_an_object_gone_since_the_listing(store):
    cache = Cache(ForgetfulStore(store))
    cache.write_part("k", "gone", 1)
    [key] = cache.inventory().keys
    [part] = key.parts
    assert (part.size, part.envelope, part.unreadable) == (None, None, False)


# -- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["@base", "a/@base", "a/@parts/x", "@x/y", "a/@"])
def test_cache_keys_with_at_segments_are_refused(cache, key):
    for operation in (
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.delete(key),
        lambda: cache.update(key, lambda n: 1),
        lambda: cache.write_part(key, "p", 1),
        lambda: cache.parts(key),
        lambda: cache.read_merged(key, UNION),
        lambda: cache.compact(key, UNION),
    ):
        with pytest.raises(InvalidKey):
            operation()


def test_at_inside_a_segment_is_fine(cache):
    cache.set("user@host/x", 1)
    assert cache.get("user@host/x") == 1


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "../a", "a/../b", "a\x00b", "a\\b"])
def test_cache_refuses_invalid_keys(cache, key):
    with pytest.raises(InvalidKey):
        cache.set(key, 1)
    with pytest.raises(InvalidKey):
        cache.get(key)


# -- wrappers -------------------------------------------------------------------------------


def test_read_only_store_refuses_every_write(store):
    store.put("k", b"v")
    read_only = ReadOnlyStore(store)
    assert not read_only.capabilities.writable
    assert read_only.get("k").data == b"v"
    assert read_only.list() == ["k"]
    assert set(read_only.get_many(["k", "missing"])) == {"k"}
    for operation in (
        lambda: read_only.put("k", b"w"),
        lambda: read_only.put("new", b"w", if_absent=True),
        lambda: read_only.put("k", b"w", if_version=store.get("k").version),
        lambda: read_only.delete("k"),
        lambda: read_only.delete_many(["k"]),
        lambda: Cache(read_only).set("x", 1),
        lambda: Cache(read_only).write_part("x", "p", 1),
        lambda: Cache(read_only).delete("x"),
    ):
        with pytest.raises(UnsupportedOperation):
            operation()
    assert store.list() == ["k"]
    assert store.get("k").data == b"v"


def test_prefixed_store_isolates(store):
    one = PrefixedStore(store, "team-one")
    two = PrefixedStore(store, "/team-two/")
    one.put("k", b"1")
    two.put("k", b"2")
    two.put("only-two", b"x")
    assert one.get("k").data == b"1"
    assert two.get("k").data == b"2"
    assert one.get("only-two") is None
    assert one.list() == ["k"]
    assert two.list() == ["k", "only-two"]
    assert set(one.get_many(["k", "only-two"])) == {"k"}
    assert store.list() == ["team-one/k", "team-two/k", "team-two/only-two"]
    one.delete("k")
    one.delete_many(["only-two"])  # not one's key: two keeps it
    assert store.list() == ["team-two/k", "team-two/only-two"]
    # Caches over prefixed stores do not see each other.
    Cache(one).set("cache/x", "one")
    assert Cache(two).get("cache/x") is None
    assert Cache(one).get("cache/x") == "one"


def test_prefixed_store_conditional_writes_pass_through(store):
    prefixed = PrefixedStore(store, "p")
    version = prefixed.put("k", b"1", if_absent=True)
    with pytest.raises(PreconditionFailed):
        prefixed.put("k", b"2", if_absent=True)
    with pytest.raises(PreconditionFailed):
        prefixed.put("k", b"2", if_version="stale")
    prefixed.put("k", b"3", if_version=version)
    assert store.get("p/k").data == b"3"


@pytest.mark.parametrize("prefix", ["", "/", "..", "a/../b", "a//b"])
def test_prefixed_store_refuses_bad_prefixes(store, prefix):
    with pytest.raises(InvalidKey):
        PrefixedStore(store, prefix)


def test_layered_store_first_hit_wins_and_writes_go_to_layer_zero(store):
    top, middle, bottom = store, MemoryStore(), MemoryStore()
    middle.put("shared", b"middle")
    bottom.put("shared", b"bottom")
    bottom.put("only-bottom", b"bottom")
    layered = LayeredStore([top, middle, bottom])
    assert layered.get("shared").data == b"middle"
    assert layered.get("only-bottom").data == b"bottom"
    assert layered.get("missing") is None
    found = layered.get_many(["shared", "only-bottom", "missing"])
    assert {key: entry.data for key, entry in found.items()} == {
        "shared": b"middle",
        "only-bottom": b"bottom",
    }
    assert layered.list() == ["only-bottom", "shared"]

    layered.put("shared", b"top")
    assert top.get("shared").data == b"top"
    assert layered.get("shared").data == b"top"
    assert middle.get("shared").data == b"middle"

    layered.delete("shared")  # deletes from layer 0 only: the lower layers show again
    assert top.get("shared") is None
    assert layered.get("shared").data == b"middle"
    layered.delete_many(["only-bottom"])
    assert bottom.get("only-bottom").data == b"bottom"


def test_layered_store_conditional_write_with_a_lower_layer_version_fails(store):
    lower = MemoryStore()
    lower.put("k", b"lower")
    layered = LayeredStore([store, lower])
    version = layered.get("k").version
    with pytest.raises(PreconditionFailed):
        layered.put("k", b"new", if_version=version)
    assert store.get("k") is None


def test_layered_cache_reads_through_and_writes_on_top(store):
    base_branch = MemoryStore()
    Cache(base_branch).write_part("cache/nodeids", "main-run", ["a"])
    Cache(base_branch).set("value", "from main")
    layered = Cache(LayeredStore([store, ReadOnlyStore(base_branch)]))
    assert layered.get("value") == "from main"
    layered.set("value", "from branch")
    layered.write_part("cache/nodeids", "branch-run", ["b"])
    assert layered.get("value") == "from branch"
    assert Cache(base_branch).get("value") == "from main"
    merged = layered.read_merged("cache/nodeids", UNION)
    assert merged.value == ["a", "b"]
    assert merged.parts == ("branch-run", "main-run")
    assert base_branch.list() == ["cache/nodeids/@parts/main-run", "value/@base"]


def test_layered_store_needs_a_layer():
    with pytest.raises(ValueError, match="at least one layer"):
        LayeredStore([])


def test_compact_keeps_the_parts_a_read_may_not_decode_for_a_later_compaction(store):
    """Parts refused only because the read's total allowance ran out (not for being
    corrupt) were deleted with the folded ones: 94 of 100 durations parts were lost so.
    Now only what was read is folded, and the rest waits for the next compaction."""
    values = {f"p{index}": [f"t{index}-{item:04d}" for item in range(100)] for index in range(4)}
    writer = Cache(store)
    writer.set("k", ["base"])
    for part_id, value in values.items():
        writer.write_part("k", part_id, value)
    one_value = len(json.dumps(values["p0"]))
    tight = Cache(store, read_size=3 * one_value)  # the base and about two parts
    with pytest.warns(CorruptValueWarning):
        folded = tight.compact("k", UNION)
    assert 1 <= folded < 4
    assert len(writer.parts("k")) == 4 - folded
    everything = sorted({"base", *(item for value in values.values() for item in value)})
    assert writer.read_merged("k", UNION).value == everything
    assert writer.compact("k", UNION) == 4 - folded  # a later compaction with room
    assert writer.read_merged("k", UNION).value == everything


def test_compact_never_replaces_a_base_it_could_not_read_for_the_allowance(store):
    writer = Cache(store)
    writer.set("k", [f"t{item:05d}" for item in range(1000)])
    writer.write_part("k", "p1", ["new"])
    tiny = Cache(store, read_size=100)
    with pytest.warns(CorruptValueWarning):
        assert tiny.compact("k", UNION) == 0
    assert len(writer.read_merged("k", UNION).value) == 1001


def test_copy_parts_copies_what_reads_accept_once(store):
    cache = Cache(store)
    cache.set("runs", {"r0": 0})
    for index in range(1, 20):  # over one batch
        cache.write_part("runs", f"p{index:02d}", {f"r{index}": index})
    store.put("runs/@parts/planted", b"not a cachekit value")
    with pytest.warns(CorruptValueWarning):
        assert cache.copy_parts("runs", "all/runs", MappingUnion()) == 20
    copied = cache.read_merged("all/runs", MappingUnion())
    with pytest.warns(CorruptValueWarning):
        assert copied.value == cache.read_merged("runs", MappingUnion()).value
    assert not copied.has_base  # the base became a part
    assert len(copied.parts) == 20
    with pytest.warns(CorruptValueWarning):
        assert cache.copy_parts("runs", "all/runs", MappingUnion()) == 0  # all there


def test_copy_parts_fetches_nothing_the_destination_holds(store):
    counting = CountingStore(store)
    cache = Cache(counting)
    for index in range(5):
        cache.write_part("runs", f"p{index}", {f"r{index}": index})
    assert cache.copy_parts("runs", "all/runs", MappingUnion()) == 5
    before = {key: store.get(key) for key in store.list("all/")}
    cache.write_part("runs", "p5", {"r5": 5})
    counting.fetched.clear()
    assert cache.copy_parts("runs", "all/runs", MappingUnion()) == 1
    # Only the new part was fetched: the others are immutable and there already.
    assert [key for keys in counting.fetched for key in keys] == ["runs/@parts/p5"]
    after = {key: store.get(key) for key in store.list("all/")}
    assert {key: after[key] for key in before} == before
    assert len(after) == len(before) + 1


def test_copy_parts_packs_small_parts_exactly_and_once(store):
    """Packed, the destination holds every record as its source part held it, in fewer
    parts; corrupt parts, large parts and parts whose keys another holds are not packed
    (the corrupt ones not copied at all), and copying again copies nothing."""
    clock = iter(range(1000, 2000))
    cache = Cache(store, writer="tests", clock=lambda: float(next(clock)))
    for source in ("a", "b"):
        for index in range(10):
            cache.write_part(f"{source}/runs", f"{source}{index:02d}", {f"{source}{index}": index})
    cache.write_part("b/runs", "p10", {"a3": "the same report id as a part of a/runs"})
    big = secrets.token_urlsafe(2 * streaming.PACK_MEMBER_BYTES)  # stored compressed
    cache.write_part("b/runs", "p11", {"big": big})
    cache.set("b/runs", {"b-base": 1})
    store.put("a/runs/@parts/planted", b"not a cachekit value")
    keys = ["a/runs", "b/runs"]
    with pytest.warns(CorruptValueWarning, match="planted"):
        assert cache.copy_parts(keys, "all/runs", MappingUnion(), pack=True) == 23
    copied = cache.parts("all/runs")
    assert len(copied) == 3  # the pack, the colliding part, the large part
    assert not any("planted" in key for key in copied)
    with pytest.warns(CorruptValueWarning, match="planted"):
        sources = [value for key in keys for _, value in cache.read_each(key, MappingUnion())]
    records = [value for _, value in cache.read_each("all/runs", MappingUnion())]
    assert _records(records) == _records(sources)
    [pack] = [key for key in copied if streaming.PACK_LABEL in key]
    envelope = decode(store.get(pack).data)
    assert len(envelope["folded"]) == 21
    # Dated as its newest member (the base of b/runs, written last), so that
    # ``cachekit gc`` retires it with its newest run.
    assert envelope["written_at"] == 1022.0
    assert parse_part_id(pack.rpartition("/")[2])[0] == pytest.approx(1022.0)
    listing = {key: store.get(key) for key in store.list("all/")}
    with pytest.warns(CorruptValueWarning, match="planted"):
        assert cache.copy_parts(keys, "all/runs", MappingUnion(), pack=True) == 0
    assert {key: store.get(key) for key in store.list("all/")} == listing


def test_copy_parts_packs_only_mapping_unions(cache):
    cache.write_part("k", "p1", ["t"])
    with pytest.raises(ValueError, match="MappingUnion"):
        cache.copy_parts("k", "all/k", UNION, pack=True)


def _records(values):
    """Each record of these mappings with how many times it occurs."""
    return Counter(json.dumps([key, record]) for value in values for key, record in value.items())


def test_retries_and_compaction_lots_leave_the_random_module_alone(store):
    """A test process may seed ``random`` (``random.seed``, pytest-randomly): the cache's
    backoff jitter and compaction lots, drawn in the same process, must not move it."""
    random.seed(1234)
    expected = random.Random(1234).random()
    cache = Cache(store, update_attempts=3)
    cache.set("n", 0)
    with pytest.raises(PreconditionFailed):
        cache.update("n", always_raced(store))  # backs off twice
    assert [compaction_due(400, 10, read=False) for _ in range(50)].count(True) < 50
    assert random.random() == expected
