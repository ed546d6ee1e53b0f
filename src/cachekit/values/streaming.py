"""A key's base and parts one at a time, unjoined: for values too large to hold joined
(a history of test runs), read (`read_each`) or copied as stored (`copy_parts`).
`cachekit.values.cache.Cache` offers both over its own store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

from cachekit.errors import CorruptData, PreconditionFailed
from cachekit.stores.base import CacheStore
from cachekit.values import codec, objects
from cachekit.values.merge import MergeStrategy
from cachekit.values.objects import BASE
from cachekit.values.pool import side_by_side

T = TypeVar("T")

#: Objects fetched together by `read_each`: round trips overlap, memory stays a few
#: values' worth.
READ_EACH_BATCH = 8


def read_each(
    store: CacheStore,
    key: str,
    strategy: MergeStrategy[T],
    *,
    batch: int = READ_EACH_BATCH,
    progress: Callable[[int, int], None] | None = None,
    only: Collection[str] | None = None,
) -> Iterator[tuple[str, T]]:
    """The base and each part of ``key``, one at a time, unjoined: ``(part id, value)``
    with ``""`` for the base, checked by ``strategy`` (unreadable ones are skipped
    with a warning, as in `read_merged`). ``only``: just these part ids (``""``: the
    base), for a caller that knows where what it wants is.

    For values too large to hold joined (a history of test runs): a caller holds one
    at a time. Objects are fetched ``batch`` at a time (``progress(done, total)``
    after each), so a remote store's round trips overlap without holding the whole
    key's bytes. Parts a compaction retires meanwhile are skipped: their contents
    are in the base, which is read first. One store: no read chain.
    """
    for store_key, _, value in each_checked(
        store, key, strategy, batch=batch, progress=progress, only=only
    ):
        yield objects.part_id_of(store_key), value


def copy_parts(
    store: CacheStore,
    key: str,
    destination: str,
    strategy: MergeStrategy[Any],
    *,
    batch: int = 16,
) -> int:
    """Copy the base and each part of ``key`` as parts of ``destination`` (for keys kept
    as parts, which a merge must not join into one value); returns how many.

    Each object is checked by ``strategy`` first (unreadable ones are left behind
    with a warning, as a read does) and copied as stored, create-only under its part
    id (a base under one named by its bytes): copying again copies nothing twice.
    ``batch`` objects are fetched, checked one at a time and written side by side,
    so memory holds a batch's stored bytes and one decoded value.
    """
    objects.check_cache_key(destination)
    copied = 0
    copies: list[tuple[str, bytes]] = []
    for store_key, data, _ in each_checked(store, key, strategy, batch=batch):
        # A base is copied under a part id named by its bytes: once, too.
        part_id = store_key.rpartition("/")[2]
        if store_key.endswith(BASE):
            part_id = "base-" + hashlib.sha256(data).hexdigest()[:32]
        copies.append((objects.part_key(destination, part_id), data))
        if len(copies) == batch:
            copied, copies = copied + _put_all_new(store, copies), []
    return copied + _put_all_new(store, copies)


def each_checked(
    store: CacheStore,
    key: str,
    strategy: MergeStrategy[T],
    *,
    batch: int,
    progress: Callable[[int, int], None] | None = None,
    only: Collection[str] | None = None,
) -> Iterator[tuple[str, bytes, T]]:
    """The base and each part of ``key`` (those ``only`` names, if given: part ids,
    ``""`` for the base) as ``(store key, stored bytes, checked value)``: fetched
    ``batch`` at a time, decoded one at a time (each within the per-value cap, no
    total: the point is to stream), unreadable ones skipped with a warning."""
    objects.check_cache_key(key)
    wanted = [objects.base_key(key), *store.list(objects.parts_prefix(key))]
    if only is not None:
        named = frozenset(only)
        wanted = [store_key for store_key in wanted if objects.part_id_of(store_key) in named]
    for start in range(0, len(wanted), batch):
        codec.check_deadline()  # past it, no more fetching either
        chunk = wanted[start : start + batch]
        fetched = dict(store.get_many(chunk))  # each dropped once decoded
        for store_key in chunk:
            entry = fetched.pop(store_key, None)
            envelope = objects.decode_entry(store_key, entry)
            if entry is None or envelope is None:
                continue
            try:
                value = strategy.check(envelope.value)
            except CorruptData as error:
                objects.warn_corrupt(store_key, error)
                continue
            yield store_key, entry.data, value
        if progress is not None:
            progress(min(start + batch, len(wanted)), len(wanted))


def _put_all_new(store: CacheStore, copies: list[tuple[str, bytes]]) -> int:
    """Write each ``(store key, bytes)`` create-only, side by side; how many were new."""
    if not copies:
        return 0
    return sum(side_by_side(lambda copy: _put_new(store, *copy), copies, "cachekit-copy"))


def _put_new(store: CacheStore, store_key: str, data: bytes) -> bool:
    try:
        store.put(store_key, data, if_absent=store.capabilities.create_only)
    except PreconditionFailed:
        return False
    return True
