"""A key's base and parts one at a time, unjoined: for values too large to hold joined
(a history of test runs), read (`read_each`) or copied (`copy_all`: as stored, or small
ones several to a part). `cachekit.values.cache.Cache` offers both over its own store."""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

import cachekit.values.codec as codec
import cachekit.values.objects as objects
from cachekit.errors import CorruptData, PreconditionFailed
from cachekit.stores.base import CacheStore
from cachekit.values.codec import JSON
from cachekit.values.merge import MappingUnion, MergeStrategy
from cachekit.values.objects import BASE, Envelope
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


#: Objects a copy fetches, then writes, together: as many as an fsspec store keeps
#: connections (`cachekit.stores.fsspec.backend.MAX_CONCURRENCY`).
COPY_BATCH = 32
#: `copy_all` with ``pack``: parts of at most this many stored bytes are copied several
#: to a part (a run of 2,500 tests is about 4 KB: one write per run would be most of
#: what a merge costs on a remote store) ...
PACK_MEMBER_BYTES = 64 * 1024
#: ... until their stored bytes reach this: memory holds one pack's values.
PACK_BYTES = 512 * 1024
#: The writer's label in the id of a part that packs several (`objects.parse_part_id`).
PACK_LABEL = "merge-pack"


def copy_all(
    store: CacheStore,
    keys: Sequence[str],
    destination: str,
    strategy: MergeStrategy[Any],
    *,
    listed: Sequence[str] | None = None,
    batch: int = COPY_BATCH,
    pack: Callable[[JSON, float, tuple[str, ...]], bytes] | None = None,
) -> int:
    """Copy the base and each part of each of ``keys`` as parts of ``destination`` (for
    keys kept as parts, which a merge must not join into one value); returns how many.

    Each object is checked by ``strategy`` first (unreadable ones are left behind
    with a warning, as a read does) and copied as stored, create-only under its part
    id (a base under one named by its bytes): copying again copies nothing twice.
    Parts are immutable, so a part id the destination holds already is not fetched
    again: one listing of the destination spares a merge into the same namespace the
    round trips of every run it copied before.

    ``pack``: for a `MappingUnion` of records read one part at a time (``stats/runs``),
    small parts (`PACK_MEMBER_BYTES`) with keys of their own are written several to a
    part instead, the join of their checked values, encoded by ``pack(value, written_at,
    folded)``: its envelope's ``folded`` names the parts it holds (so copying again
    copies none of them), its time and its id's stamp are its newest member's (so
    ``cachekit gc`` retires it with its newest run).

    ``listed``: a listing of the store that covers ``keys`` (what a caller that found
    them has), so the sources are not listed again; without it, each key is listed.
    ``batch`` objects are fetched together, checked one at a time and written side by
    side, so memory holds a batch's stored bytes, one decoded value, and one pack.
    """
    objects.check_cache_key(destination)
    if pack is not None and not isinstance(strategy, MappingUnion):
        raise ValueError(f"cannot pack the parts of {strategy!r}: not a MappingUnion")
    wanted = set(keys)
    for key in wanted:
        objects.check_cache_key(key)
    if listed is None:
        listed = [found for key in sorted(wanted) for found in store.list(f"{key}/")]
    there = _copied_to(store, destination, batch)
    sources = [
        found
        for name, stored in objects.stored_keys_by_name(listed).items()
        if name in wanted
        for found in stored
        if found.endswith(BASE) or objects.part_id_of(found) not in there
    ]
    packing = _Pack(strategy, destination, pack)
    copied = 0
    for start in range(0, len(sources), batch):
        copies: list[tuple[str, bytes, int]] = []
        for store_key, data, envelope, value in _checked(
            store, sources[start : start + batch], strategy
        ):
            part_id = objects.part_id_of(store_key)
            if not part_id:  # a base is copied under a part id named by its bytes: once
                part_id = "base-" + hashlib.sha256(data).hexdigest()[:32]
            if part_id in there:
                continue
            there.add(part_id)
            if not packing.add(part_id, data, envelope.written_at, value):
                copies.append((objects.part_key(destination, part_id), data, 1))
            if packing.full:
                copies.append(packing.take())
        copied += _put_all_new(store, copies)
    return copied + _put_all_new(store, [packing.take()] if packing.members else [])


def _copied_to(store: CacheStore, destination: str, batch: int) -> set[str]:
    """The part ids ``destination`` holds, and those its packs hold (`copy_all`)."""
    there = {objects.part_id_of(found) for found in store.list(objects.parts_prefix(destination))}
    packs = [
        objects.part_key(destination, part_id)
        for part_id in there
        if objects.parse_part_id(part_id)[1] == PACK_LABEL
    ]
    for start in range(0, len(packs), batch):
        chunk = packs[start : start + batch]
        fetched = store.get_many(chunk)
        for store_key in chunk:
            envelope = objects.decode_entry(store_key, fetched.get(store_key))
            if envelope is not None:
                there.update(envelope.folded)
    return there


class _Pack:
    """The parts `copy_all` packs into one, as they come."""

    def __init__(
        self,
        strategy: MergeStrategy[Any],
        destination: str,
        encode: Callable[[JSON, float, tuple[str, ...]], bytes] | None,
    ) -> None:
        self.strategy = strategy
        self.destination = destination
        self.encode = encode
        self.members: list[str] = []
        self.value: dict[str, Any] = {}
        self.first = b""  # the first member as stored
        self.size = 0
        self.written_at = 0.0

    @property
    def full(self) -> bool:
        return self.size >= PACK_BYTES

    def add(self, part_id: str, data: bytes, written_at: float, value: Any) -> bool:
        """Take a part into the pack; False if it is copied as stored instead (too large,
        or a key another member has: joining would change what a reader of parts sees)."""
        if self.encode is None or len(data) > PACK_MEMBER_BYTES or self.value.keys() & value:
            return False
        self.value = self.strategy.join(self.value, value)
        self.members.append(part_id)
        self.first = self.first or data
        self.size += len(data)
        if math.isfinite(written_at):  # 1e999 reads as inf; a future time counts as now
            self.written_at = max(self.written_at, min(written_at, time.time()))
        return True

    def take(self) -> tuple[str, bytes, int]:
        """The pack as ``(store key, bytes, parts it holds)`` (a lone member as stored,
        under its own id); the pack starts empty."""
        assert self.encode is not None
        if len(self.members) == 1:
            taken = (objects.part_key(self.destination, self.members[0]), self.first, 1)
        else:
            at = self.written_at or time.time()
            part_id = f"{int(at * 1e9):020d}-{PACK_LABEL}-{secrets.token_hex(4)}"
            data = self.encode(self.value, at, tuple(self.members))
            taken = (objects.part_key(self.destination, part_id), data, len(self.members))
        self.members, self.value, self.first, self.size, self.written_at = [], {}, b"", 0, 0.0
        return taken


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
        for store_key, data, _, value in _checked(store, wanted[start : start + batch], strategy):
            yield store_key, data, value
        if progress is not None:
            progress(min(start + batch, len(wanted)), len(wanted))


def _checked(
    store: CacheStore, store_keys: Sequence[str], strategy: MergeStrategy[T]
) -> Iterator[tuple[str, bytes, Envelope, T]]:
    """`each_checked` of one batch, with envelopes: ``store_keys`` fetched together, then
    decoded and checked one at a time (each dropped once decoded)."""
    codec.check_deadline()  # past it, no more fetching either
    fetched = dict(store.get_many(store_keys))
    for store_key in store_keys:
        entry = fetched.pop(store_key, None)
        envelope = objects.decode_entry(store_key, entry)
        if entry is None or envelope is None:
            continue
        try:
            value = strategy.check(envelope.value)
        except CorruptData as error:
            objects.warn_corrupt(store_key, error)
            continue
        yield store_key, entry.data, envelope, value


def _put_all_new(store: CacheStore, copies: list[tuple[str, bytes, int]]) -> int:
    """Write each ``(store key, bytes, parts it holds)`` create-only, side by side; how
    many parts were new."""
    if not copies:
        return 0
    return sum(side_by_side(lambda copy: _put_new(store, *copy), copies, "cachekit-copy"))


def _put_new(store: CacheStore, store_key: str, data: bytes, parts: int) -> int:
    try:
        store.put(store_key, data, if_absent=store.capabilities.create_only)
    except PreconditionFailed:
        return 0
    return parts
