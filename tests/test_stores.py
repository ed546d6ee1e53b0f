"""The conformance suite on the in-process backends and the wrappers."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachekit import (
    CacheStore,
    InvalidKey,
    InvalidURL,
    LayeredStore,
    LocalStore,
    MemoryStore,
    PrefixedStore,
    ReadOnlyStore,
    UnsupportedOperation,
    open_store,
)
from cachekit.testing import StoreTests


class TestMemoryStore(StoreTests):
    @pytest.fixture
    def store(self) -> CacheStore:
        return MemoryStore()


class TestLocalStore(StoreTests):
    @pytest.fixture
    def store(self, tmp_path: Path) -> CacheStore:
        return LocalStore(tmp_path / "store")


class TestPrefixedStore(StoreTests):
    @pytest.fixture
    def store(self) -> CacheStore:
        inner = MemoryStore()
        inner.put("outside/prefix", b"not visible")
        return PrefixedStore(inner, "team/project")


class TestLayeredStore(StoreTests):
    """A chain whose lower layer is empty behaves as its first layer."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> CacheStore:
        return LayeredStore([LocalStore(tmp_path / "top"), MemoryStore()])


def test_local_store_writes_nothing_outside_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    store = LocalStore(root)
    with pytest.raises(InvalidKey):
        store.put("link/escaped", b"x")
    assert list(outside.iterdir()) == []


def test_local_store_refuses_a_key_below_an_existing_value(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a", b"value")
    with pytest.raises(InvalidKey, match="a"):
        store.put("a/b", b"x")
    store.put("dir/x", b"value")
    with pytest.raises(InvalidKey):
        store.put("dir", b"x")


def test_local_store_listing_skips_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/b", b"x")
    (tmp_path / "a" / ".ck-tmp-0123").write_bytes(b"left by a killed writer")
    assert store.list() == ["a/b"]
    with pytest.raises(InvalidKey):
        store.put("a/.ck-tmp-0123", b"x")


def test_read_only_store_refuses_every_write() -> None:
    inner = MemoryStore()
    inner.put("k", b"v")
    store = ReadOnlyStore(inner)
    assert not store.capabilities.writable
    with pytest.raises(UnsupportedOperation):
        store.put("k", b"new")
    with pytest.raises(UnsupportedOperation):
        store.delete("k")
    with pytest.raises(UnsupportedOperation):
        store.delete_many(["k"])
    entry = store.get("k")
    assert entry is not None
    assert entry.data == b"v"


def test_prefixed_store_is_isolated_from_its_siblings() -> None:
    inner = MemoryStore()
    left, right = PrefixedStore(inner, "left"), PrefixedStore(inner, "right")
    left.put("k", b"L")
    right.put("k", b"R")
    assert [left.get("k"), right.get("k")] == [inner.get("left/k"), inner.get("right/k")]
    assert left.list() == ["k"]
    assert inner.list() == ["left/k", "right/k"]


def test_layered_store_reads_first_hit_and_writes_first_layer() -> None:
    top, base, default = MemoryStore(), MemoryStore(), MemoryStore()
    base.put("shared", b"from base")
    default.put("shared", b"from default")
    default.put("only-default", b"d")
    chain = LayeredStore([top, base, default])
    assert [chain.get(k).data for k in ("shared", "only-default")] == [b"from base", b"d"]  # type: ignore[union-attr]
    assert {k: e.data for k, e in chain.get_many(["shared", "only-default", "nope"]).items()} == {
        "shared": b"from base",
        "only-default": b"d",
    }
    chain.put("shared", b"mine")
    assert chain.get("shared").data == b"mine"  # type: ignore[union-attr]
    assert base.get("shared").data == b"from base"  # type: ignore[union-attr]
    assert chain.list() == ["only-default", "shared"]


class TestOpenStore:
    def test_plain_path_and_file_url_open_a_local_store(self, tmp_path: Path) -> None:
        for url in (str(tmp_path), f"file://{tmp_path}", tmp_path):
            store = open_store(url)
            assert isinstance(store, LocalStore)
            assert store.root == tmp_path

    def test_memory_urls_are_shared_by_name(self) -> None:
        open_store("memory://shared-by-name").put("k", b"v")
        assert open_store("memory://shared-by-name").get("k") is not None
        assert open_store("memory://another-name").get("k") is None

    @pytest.mark.parametrize("url", ["", "memory://", "no such://x"])
    def test_bad_urls_get_one_clear_error(self, url: str) -> None:
        with pytest.raises(InvalidURL):
            open_store(url)
