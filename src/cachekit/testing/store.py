"""The conformance suite every `CacheStore` passes, whatever the backend.

Written against the protocol only. A backend that cannot honour a precondition must say
so through its capabilities and refuse; the suite checks that it does. A *server* that
ignores preconditions a backend sends (an emulator) is declared with
``server_honours_preconditions = False``: the tests that depend on them then run and are
expected to fail, and report it, rather than pass vacuously.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from cachekit.errors import (
    CorruptValueWarning,
    InvalidKey,
    PreconditionFailed,
    UnsupportedOperation,
)
from cachekit.stores.base import CacheStore
from cachekit.values.cache import Cache
from cachekit.values.merge import LASTFAILED, SortedUnion, observe_outcomes, still_failing
from cachekit.values.objects import new_part_id

#: A plain join of lists of strings, for the tests of parts.
UNION = SortedUnion()

#: Keys every store must refuse: each would escape the root or is ambiguous.
BAD_KEYS = [
    "",
    "/abs",
    "../x",
    "a/../../b",
    "a/./b",
    "a//b",
    "a/",
    ".",
    "..",
    "a\x00b",
    "a\\b",
    "a\nb",
    "x" * 2000,
    "a/" + "y" * 300,
]


class StoreTests:
    """Subclass with a function-scoped ``store`` fixture returning an empty store."""

    #: False for servers (emulators) known to ignore conditional-write headers.
    server_honours_preconditions: bool = True

    @pytest.fixture
    def store(self) -> CacheStore:
        raise NotImplementedError("subclasses provide a fresh, empty store")

    @contextmanager
    def preconditions_needed(self) -> Iterator[None]:
        """Run a block that relies on the server honouring preconditions.

        Where the server is declared not to, the block must fail, and the test is
        reported as an expected failure with that reason; if it passes, the declaration
        is out of date and the test fails.
        """
        if self.server_honours_preconditions:
            yield
            return
        try:
            yield
        except (AssertionError, PreconditionFailed, pytest.fail.Exception) as error:
            pytest.xfail(f"this server ignores conditional-write preconditions ({error!r})")
        pytest.fail("server_honours_preconditions is False, but the server honoured them")

    @staticmethod
    def require(store: CacheStore, capability: str) -> None:
        if not getattr(store.capabilities, capability):
            pytest.skip(f"{store!r} declares no {capability}; refusal is tested separately")

    # -- basic reads and writes ------------------------------------------------------

    def test_get_of_missing_key_is_none(self, store: CacheStore) -> None:
        assert store.get("missing") is None
        assert store.get("deep/missing/key") is None

    def test_put_then_get_round_trips_any_bytes(self, store: CacheStore) -> None:
        payloads = {"empty": b"", "binary": bytes(range(256)), "text": "é ✓".encode()}
        versions = {key: store.put(f"rt/{key}", data) for key, data in payloads.items()}
        for key, data in payloads.items():
            entry = store.get(f"rt/{key}")
            assert entry is not None
            assert entry.data == data
            assert entry.version == versions[key]

    def test_large_value_round_trips(self, store: CacheStore) -> None:
        data = bytes(range(256)) * 8192  # 2 MiB
        store.put("large", data)
        entry = store.get("large")
        assert entry is not None
        assert entry.data == data

    def test_overwrite_replaces_value_and_changes_version(self, store: CacheStore) -> None:
        first = store.put("k", b"one")
        second = store.put("k", b"two")
        assert first != second
        entry = store.get("k")
        assert entry is not None
        assert (entry.data, entry.version) == (b"two", second)

    def test_delete_removes_key_and_tolerates_missing(self, store: CacheStore) -> None:
        store.put("a/b", b"1")
        store.delete("a/b")
        assert store.get("a/b") is None
        store.delete("a/b")
        store.delete("never/existed")

    def test_delete_many_removes_only_named_keys(self, store: CacheStore) -> None:
        for index in range(5):
            store.put(f"d/{index}", b"x")
        store.delete_many(["d/0", "d/2", "d/4", "d/missing"])
        assert store.list("d/") == ["d/1", "d/3"]

    def test_get_many_returns_present_keys_only(self, store: CacheStore) -> None:
        store.put("m/1", b"one")
        store.put("m/2", b"two")
        found = store.get_many(["m/1", "m/2", "m/3"])
        assert {key: entry.data for key, entry in found.items()} == {"m/1": b"one", "m/2": b"two"}
        assert store.get_many([]) == {}

    def test_get_many_many_keys(self, store: CacheStore) -> None:
        keys = [f"many/{index:03d}" for index in range(64)]
        for key in keys:
            store.put(key, key.encode())
        found = store.get_many(keys)
        assert {key: entry.data for key, entry in found.items()} == {k: k.encode() for k in keys}

    # -- listing -----------------------------------------------------------------------

    def test_list_is_sorted_recursive_and_filtered_by_prefix(self, store: CacheStore) -> None:
        for key in ["b/2", "a/1", "b/1", "b/sub/3", "bb/4", "c"]:
            store.put(key, b".")
        assert store.list() == ["a/1", "b/1", "b/2", "b/sub/3", "bb/4", "c"]
        assert store.list("b/") == ["b/1", "b/2", "b/sub/3"]
        assert store.list("b") == ["b/1", "b/2", "b/sub/3", "bb/4"]
        assert store.list("b/s") == ["b/sub/3"]
        assert store.list("nothing/") == []

    def test_list_of_empty_store_is_empty(self, store: CacheStore) -> None:
        assert store.list() == []

    # -- keys --------------------------------------------------------------------------

    @pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
    def test_bad_keys_are_refused_by_every_operation(self, store: CacheStore, key: str) -> None:
        operations: list[Callable[[], object]] = [
            lambda: store.get(key),
            lambda: store.put(key, b"x"),
            lambda: store.delete(key),
            lambda: store.get_many([key]),
        ]
        for operation in operations:
            with pytest.raises(InvalidKey):
                operation()
        assert store.list() == []

    def test_keys_with_unusual_but_safe_characters(self, store: CacheStore) -> None:
        keys = ["sp ace", "dots.in.name", "ünï", "a-b_c~d", "tests/test_x.py::test[1-2]"]
        for key in keys:
            store.put(key, key.encode())
        for key in keys:
            entry = store.get(key)
            assert entry is not None
            assert entry.data == key.encode()
        assert store.list() == sorted(keys)

    # -- conditional writes --------------------------------------------------------------

    def test_conditional_writes_are_refused_without_capability(self, store: CacheStore) -> None:
        capabilities = store.capabilities
        if capabilities.create_only and capabilities.compare_and_swap:
            pytest.skip(f"{store!r} supports every precondition")
        store.put("k", b"original")
        if not capabilities.create_only:
            with pytest.raises(UnsupportedOperation):
                store.put("k", b"new", if_absent=True)
        if not capabilities.compare_and_swap:
            entry = store.get("k")
            assert entry is not None
            with pytest.raises(UnsupportedOperation):
                store.put("k", b"new", if_version=entry.version)
        entry = store.get("k")
        assert entry is not None
        assert entry.data == b"original"

    def test_if_absent_creates_a_missing_key(self, store: CacheStore) -> None:
        self.require(store, "create_only")
        version = store.put("new", b"v", if_absent=True)
        entry = store.get("new")
        assert entry is not None
        assert (entry.data, entry.version) == (b"v", version)

    def test_if_absent_refuses_an_existing_key(self, store: CacheStore) -> None:
        self.require(store, "create_only")
        store.put("k", b"original")
        with self.preconditions_needed():
            with pytest.raises(PreconditionFailed):
                store.put("k", b"intruder", if_absent=True)
            entry = store.get("k")
            assert entry is not None
            assert entry.data == b"original"

    def test_if_version_swaps_the_current_version(self, store: CacheStore) -> None:
        self.require(store, "compare_and_swap")
        version = store.put("k", b"one")
        new_version = store.put("k", b"two", if_version=version)
        entry = store.get("k")
        assert entry is not None
        assert (entry.data, entry.version) == (b"two", new_version)

    def test_if_version_refuses_a_stale_version(self, store: CacheStore) -> None:
        self.require(store, "compare_and_swap")
        stale = store.put("k", b"one")
        store.put("k", b"two")
        with self.preconditions_needed():
            with pytest.raises(PreconditionFailed):
                store.put("k", b"three", if_version=stale)
            entry = store.get("k")
            assert entry is not None
            assert entry.data == b"two"

    def test_if_version_refuses_a_missing_key(self, store: CacheStore) -> None:
        self.require(store, "compare_and_swap")
        version = store.put("k", b"one")
        store.delete("k")
        with self.preconditions_needed():
            with pytest.raises(PreconditionFailed):
                store.put("k", b"two", if_version=version)
            assert store.get("k") is None

    def test_racing_create_only_has_exactly_one_winner(self, store: CacheStore) -> None:
        self.require(store, "create_only")
        contenders = 8
        barrier = threading.Barrier(contenders)

        def contend(index: int) -> bool:
            barrier.wait()
            try:
                store.put("race", str(index).encode(), if_absent=True)
            except PreconditionFailed:
                return False
            return True

        with ThreadPoolExecutor(contenders) as pool:
            wins = list(pool.map(contend, range(contenders)))
        with self.preconditions_needed():
            assert wins.count(True) == 1
            entry = store.get("race")
            assert entry is not None
            assert entry.data == str(wins.index(True)).encode()

    def test_racing_updates_lose_nothing(self, store: CacheStore) -> None:
        self.require(store, "compare_and_swap")
        cache = Cache(store)
        threads, increments = 4, 10

        def work(_: int) -> None:
            for _ in range(increments):
                cache.update("counter", lambda value: int(value) + 1, default=0)  # type: ignore[arg-type]

        with self.preconditions_needed():
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(work, range(threads)))
            assert cache.get("counter") == threads * increments

    # -- the value layer on this store --------------------------------------------------

    def test_parts_merge_and_compact(self, store: CacheStore) -> None:
        cache = Cache(store)
        cache.write_part(
            "lf", new_part_id("s1"), observe_outcomes(failed=["t1", "t2"], passed=[], at=1)
        )
        cache.write_part(
            "lf", new_part_id("s2"), observe_outcomes(failed=["t3"], passed=["t1"], at=2)
        )
        merged = cache.read_merged("lf", LASTFAILED)
        assert still_failing(merged.value) == {"t2": True, "t3": True}
        assert len(merged.parts) == 2
        if not store.capabilities.compare_and_swap:
            with pytest.raises(UnsupportedOperation):
                cache.compact("lf", LASTFAILED)
            return
        assert cache.compact("lf", LASTFAILED) == 2
        compacted = cache.read_merged("lf", LASTFAILED)
        assert (compacted.has_base, compacted.parts) == (True, ())
        assert compacted.value == merged.value

    def test_read_merged_many_reads_several_keys(self, store: CacheStore) -> None:
        cache = Cache(store)
        cache.write_part("cache/nodeids", new_part_id("a"), ["t2", "t1"])
        cache.write_part("cache/nodeids", new_part_id("b"), ["t3", "t1"])
        cache.write_part(
            "cache/lastfailed", new_part_id("a"), observe_outcomes(failed=["t2"], passed=[], at=1)
        )
        merged = cache.read_merged_many({"cache/nodeids": UNION, "cache/lastfailed": LASTFAILED})
        assert merged["cache/nodeids"].value == ["t1", "t2", "t3"]
        assert still_failing(merged["cache/lastfailed"].value) == {"t2": True}

    def test_write_part_is_create_only(self, store: CacheStore) -> None:
        self.require(store, "create_only")
        cache = Cache(store)
        cache.write_part("k", "part-1", ["a"])
        with self.preconditions_needed():
            with pytest.raises(PreconditionFailed):
                cache.write_part("k", "part-1", ["b"])
            assert cache.read_merged("k", UNION).value == ["a"]

    def test_garbage_in_the_store_reads_as_a_miss(self, store: CacheStore) -> None:
        cache = Cache(store)
        store.put("value/@base", b"\x00garbage, not written by cachekit")
        store.put("parts/@parts/foreign", b'{"json": "but not ours"}')
        cache.write_part("parts", "good", ["t1"])
        with pytest.warns(CorruptValueWarning):
            assert cache.get("value", "default") == "default"
        with pytest.warns(CorruptValueWarning):
            assert cache.read_merged("parts", UNION).value == ["t1"]

    # -- a model ---------------------------------------------------------------------------

    def test_matches_a_dict_model(self, store: CacheStore) -> None:
        """Random operation sequences agree with a plain dict (Hypothesis, stateful)."""
        from cachekit.testing.stateful import run_against_model  # noqa: PLC0415 (needs hypothesis)

        run_against_model(store, honours_preconditions=self.server_honours_preconditions)
