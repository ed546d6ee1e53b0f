"""`Cache`: JSON values over any `CacheStore`, with lossless multi-writer values.

A logical key has a *base* object and any number of immutable *parts*::

    <key>/@base              written by set(), update() and compact()
    <key>/@parts/<part_id>   written once by write_part(), never rewritten

Shards and runs never rewrite a shared object: each writes its own part (create-only),
and `read_merged` joins the base with every part. `compact` folds the parts into the base
with compare-and-swap and then retires them, so a read stays one listing and a few
fetches however long the history. `Cache.inventory` says what a prefix of the store
holds in these terms, for tools that look after a store (``cachekit show``, ``gc``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

import cachekit.values.codec as codec
import cachekit.values.objects as objects
import cachekit.values.streaming as streaming
from cachekit.errors import (
    CorruptData,
    PreconditionFailed,
    UnsupportedOperation,
)
from cachekit.stores.base import CacheStore, Entry
from cachekit.values.codec import JSON
from cachekit.values.merge import MergeStrategy, stored_form
from cachekit.values.objects import (
    BASE,
    Envelope,
)
from cachekit.values.pool import side_by_side

T = TypeVar("T")
R = TypeVar("R")

#: How many times a read is retried when compaction retired a part it had listed.
_READ_ATTEMPTS = 3
#: Objects per `CacheStore.get_many` call of `Cache.inventory`: enough to keep a remote
#: store's connections busy, few enough to show progress on a large store.
INVENTORY_BATCH = 256


@attrs.frozen
class Merged:
    """The result of `Cache.read_merged`: the joined value and where it came from."""

    value: Any
    #: Whether a base existed, and the ids of the parts joined into it, sorted.
    has_base: bool
    parts: tuple[str, ...]


#: What `Cache.inventory` reads: nothing (the listing says which keys and parts there
#: are), only the objects the listing cannot date (``"undated"``: bases, and parts whose
#: id has no time stamp), or everything (sizes, values, and which objects are unreadable).
Fetch = Literal["none", "undated", "all"]


@attrs.frozen
class StoredObject:
    """The base or one part of a logical key, as `Cache.inventory` found it."""

    #: The store key.
    key: str
    #: The part id; "" for the base.
    part_id: str = ""
    #: The writer's label in the part id (a run and shard, see `new_part_id`); "" for the
    #: base and for a part id without one.
    label: str = ""
    #: When it was written: the envelope's ``written_at`` if it was read, else the time
    #: stamp of its part id; None when neither is known.
    written_at: float | None = None
    #: Its size in bytes, if it was read (None also when it was gone by then).
    size: int | None = None
    #: What it holds, if it was read and is a cachekit value.
    envelope: Envelope | None = None
    #: It was read and is not a cachekit value (corrupt, or foreign bytes).
    unreadable: bool = False


@attrs.frozen
class StoredKey:
    """A logical key of a `Cache` and the objects that hold it."""

    name: str
    base: StoredObject | None
    #: Its parts not yet compacted, in listing order.
    parts: tuple[StoredObject, ...]

    @property
    def objects(self) -> tuple[StoredObject, ...]:
        """The base (if any), then the parts."""
        return ((self.base,) if self.base is not None else ()) + self.parts

    @property
    def size(self) -> int:
        """Bytes of the objects that were read."""
        return sum(stored.size for stored in self.objects if stored.size is not None)


@attrs.frozen
class RawObject:
    """An object that is no base or part of any key: cachekit did not write it."""

    key: str
    #: Its size in bytes, if it was read.
    size: int | None = None


@attrs.frozen
class Inventory:
    """What `Cache.inventory` found under a prefix of the store."""

    prefix: str
    #: The logical keys, sorted by name.
    keys: tuple[StoredKey, ...]
    #: The objects cachekit did not write, in listing order.
    raw: tuple[RawObject, ...]
    #: The listing it was made from: `Cache.read_merged_many` takes it as ``listed`` to
    #: read the keys without listing again.
    listed: tuple[str, ...]


def join_balanced(strategy: MergeStrategy[T], values: Sequence[T]) -> T:
    """`cachekit.values.merge.join_all`, the same value: in one pass where the strategy
    has a ``join_many``, else joined pairwise in a balanced tree.

    Joins are associative and commutative, so the grouping does not change the result,
    but it changes the cost: folding n parts one by one into a growing value copies (and
    for sets and mappings, re-sorts) that value n times, O(n^2) entries for n parts of
    similar size. Joining neighbours level by level copies each entry about log2(n)
    times. Measured on 256 ``lastfailed`` parts of ~390 entries: 0.3 s instead of 5.7 s.
    """
    if not values:
        return strategy.empty()
    join_many = getattr(strategy, "join_many", None)
    if join_many is not None:  # a strategy that joins many values in one pass
        return join_many(values)  # type: ignore[no-any-return]
    level = list(values)
    while len(level) > 1:
        paired = [
            strategy.join(left, right) for left, right in zip(level[::2], level[1::2], strict=False)
        ]
        level = paired + level[-1:] if len(level) % 2 else paired
    # As join_all does, end with a join against the identity: the result is then never
    # one of the inputs itself (for mappings, a fresh dict), whatever their number.
    return strategy.join(strategy.empty(), level[0])


def _counted(strategy: MergeStrategy[Any], store_keys: Sequence[str]) -> Merged:
    """A key's `Merged` from the listing alone (`Cache.read_merged_many`'s ``count_only``):
    the empty value, and the base and parts listed."""
    parts = [k.rpartition("/")[2] for k in store_keys if not k.endswith(BASE)]
    has_base = len(parts) < len(store_keys)
    return Merged(strategy.empty(), has_base, tuple(sorted(parts)))


class Cache:
    """JSON values in a `CacheStore`.

    Corrupt or foreign bytes read as a miss with a `CorruptValueWarning`; store errors
    (`StoreUnavailable` and friends) propagate, for the caller to decide how to degrade.
    Within `codec.decoding_until` (a time budget's calls), reads raise `codec.OutOfTime`
    rather than decode a value past its deadline.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        read_also: Sequence[CacheStore] = (),
        writer: str = "",
        compress_above: int = codec.DEFAULT_COMPRESS_ABOVE,
        update_attempts: int = 100,
        clock: Callable[[], float] = time.time,
        read_size: int = codec.MAX_READ_SIZE,
    ) -> None:
        self.store = store
        #: The read chain: ``store`` first, then ``read_also`` (say, the base branch's
        #: and the default branch's namespaces). Writes go to ``store`` only.
        self.read_chain: tuple[CacheStore, ...] = (store, *read_also)
        self.writer = writer
        self.compress_above = compress_above
        self.update_attempts = update_attempts
        self.clock = clock
        #: Bytes of JSON one merged read (or compaction) may decode, all its values and
        #: stores together; values past it are refused as corrupt (`codec.Allowance`).
        self.read_size = read_size

    # -- plain values -------------------------------------------------------------------

    def get(self, key: str, default: JSON = None) -> JSON:
        """The value last `set` (or compacted) under ``key``, or ``default``; the first
        store of the read chain that has one answers."""
        base_key = objects.base_key(key)
        for store in self.read_chain:
            envelope = objects.decode_entry(base_key, store.get(base_key))
            if envelope is not None:
                value: JSON = envelope.value
                return value
        return default

    def set(self, key: str, value: JSON) -> None:
        self.store.put(objects.base_key(key), self._encode(value))

    def add(self, key: str, value: JSON) -> bool:
        """`set` only if ``key`` has no value yet: of many racing writers exactly one
        gets True, atomically where the store can create only (elsewhere the last
        writer's value stays, and each gets True)."""
        create_only = self.store.capabilities.create_only
        try:
            self.store.put(objects.base_key(key), self._encode(value), if_absent=create_only)
        except PreconditionFailed:
            return False
        return True

    def delete(self, key: str) -> None:
        """Remove the value and every part of ``key``."""
        self.store.delete_many([objects.base_key(key), *self.parts(key)])

    def update(self, key: str, function: Callable[[JSON], JSON], *, default: JSON = None) -> JSON:
        """Replace the value with ``function(old value or default)`` by compare-and-swap.

        Retries with jittered backoff when another writer got there first, so racing
        updates are all applied; raises `PreconditionFailed` after ``update_attempts``.
        Returns the value written.
        """
        self._require_compare_and_swap("update")
        base_key = objects.base_key(key)
        for attempt in range(self.update_attempts):
            entry = self.store.get(base_key)
            envelope = objects.decode_entry(base_key, entry)
            new_value = function(default if envelope is None else envelope.value)
            try:
                self._put_conditionally(base_key, self._encode(new_value), entry)
            except PreconditionFailed:
                _backoff(attempt)
                continue
            return new_value
        raise PreconditionFailed(f"gave up updating {key!r} after {self.update_attempts} attempts")

    # -- multi-writer values -------------------------------------------------------------

    def write_part(self, key: str, part_id: str, value: JSON) -> str:
        """Write one immutable part of ``key``; a part id can be written only once.

        Returns the store key of the part.
        """
        part_key = objects.part_key(key, part_id)
        # Create-only where the store can; part ids are unique, so elsewhere a plain write
        # is safe too (parts work with or without conditional writes).
        create_only = self.store.capabilities.create_only
        self.store.put(part_key, self._encode(value), if_absent=create_only)
        return part_key

    def write_parts(self, part_id: str, values: Mapping[str, JSON]) -> list[str]:
        """`write_part` of one part id for several keys (what one run changed), the
        writes concurrent: on a remote store each is a round trip.

        Returns the store keys of the parts, in the order of ``values``.
        """
        if len(values) <= 1:
            return [self.write_part(key, part_id, value) for key, value in values.items()]
        return side_by_side(
            lambda item: self.write_part(item[0], part_id, item[1]),
            list(values.items()),
            "cachekit-write",
        )

    def parts(self, key: str) -> list[str]:
        """Store keys of the parts of ``key`` not yet compacted, sorted."""
        return self.store.list(objects.parts_prefix(key))

    def read_merged(self, key: str, strategy: MergeStrategy[T]) -> Merged:
        """Join the base and every part of ``key`` (one listing, one batched fetch)."""
        return self.read_merged_many({key: strategy})[key]

    def read_merged_many(
        self,
        strategies: Mapping[str, MergeStrategy[Any]],
        *,
        list_prefix: str | None = None,
        listed: Sequence[str] | None = None,
        bases_only: Collection[str] = (),
        count_only: Collection[str] = (),
    ) -> dict[str, Merged]:
        """`read_merged` for several keys in one listing and one batched fetch per store
        of the read chain (the stores are read concurrently).

        Every store of the chain is joined, bases and parts alike: merge strategies are
        joins, so what each namespace observed counts, the latest observation winning.
        The listing covers the longest common prefix of the keys (or ``list_prefix``),
        so keep keys read together under one prefix.

        ``listed``: what ``store.list(list_prefix)`` has just returned to the caller, to
        spare a second listing (a cache without a read chain only). Should a compaction
        retire a listed part before it is fetched, the read lists again, as usual.

        ``bases_only``: keys read as of their last compaction, parts left out: a value
        that concurrent writers cannot change until someone compacts (such as the
        durations every shard of a CI run must split the tests by alike).

        ``count_only``: keys listed but not fetched: their `Merged` holds the strategy's
        empty value, with the base and parts the listing found (what a reader that does
        not need a large value still needs: whether it has parts enough to compact).
        """
        for key in strategies:
            objects.check_cache_key(key)
        prefix = list_prefix if list_prefix is not None else _common_directory(strategies)
        if listed is not None and (list_prefix is None or len(self.read_chain) != 1):
            raise ValueError("listed= needs list_prefix= and a cache without a read chain")
        bases_only, count_only = frozenset(bases_only), frozenset(count_only)
        allowance = codec.Allowance(self.read_size)
        if len(self.read_chain) == 1:
            return self._read_merged_from(
                self.store,
                strategies,
                prefix,
                allowance,
                listed=listed,
                bases_only=bases_only,
                count_only=count_only,
            )
        reads = side_by_side(
            lambda store: self._read_merged_from(
                store, strategies, prefix, allowance, bases_only=bases_only, count_only=count_only
            ),
            self.read_chain,
            "cachekit-read",
        )
        return {
            key: Merged(
                join_balanced(strategy, [read[key].value for read in reads]),
                any(read[key].has_base for read in reads),
                tuple(sorted(part for read in reads for part in read[key].parts)),
            )
            for key, strategy in strategies.items()
        }

    def _read_merged_from(
        self,
        store: CacheStore,
        strategies: Mapping[str, MergeStrategy[Any]],
        prefix: str,
        allowance: codec.Allowance,
        *,
        listed: Sequence[str] | None = None,
        bases_only: frozenset[str] = frozenset(),
        count_only: frozenset[str] = frozenset(),
    ) -> dict[str, Merged]:
        for attempt in range(_READ_ATTEMPTS):
            if attempt or listed is None:
                listed = store.list(prefix)
            stored = objects.stored_keys_by_name(listed)
            wanted = {
                key: [k for k in stored.get(key, []) if key not in bases_only or k.endswith(BASE)]
                for key in strategies
            }
            fetching = [k for key, keys in wanted.items() if key not in count_only for k in keys]
            fetched = store.get_many(fetching)
            if all(k in fetched for k in fetching):
                break
            # A compaction retired parts between our listing and our fetch (their
            # contents are in a newer base now), or replaced the base: read again.
        return {
            key: (
                _counted(strategy, keys)
                if key in count_only
                else self._join(key, strategy, keys, fetched, allowance)
            )
            for (key, strategy), keys in zip(strategies.items(), wanted.values(), strict=True)
        }

    def read_each(
        self,
        key: str,
        strategy: MergeStrategy[T],
        *,
        batch: int = streaming.READ_EACH_BATCH,
        progress: Callable[[int, int], None] | None = None,
        only: Collection[str] | None = None,
    ) -> Iterator[tuple[str, T]]:
        """`cachekit.values.streaming.read_each` of this cache's own store (no read
        chain): the base and each part of ``key``, one at a time, unjoined."""
        return streaming.read_each(
            self.store, key, strategy, batch=batch, progress=progress, only=only
        )

    def copy_parts(
        self,
        keys: str | Sequence[str],
        destination: str,
        strategy: MergeStrategy[Any],
        *,
        listed: Sequence[str] | None = None,
        batch: int = streaming.COPY_BATCH,
        pack: bool = False,
    ) -> int:
        """`cachekit.values.streaming.copy_all` within this cache's own store: the base
        and each part of ``keys`` (one key or several) as parts of ``destination``, but
        parts it holds already; returns how many were copied. ``listed``: a listing
        that covers ``keys``, to spare listing them again; ``pack``: small parts are
        written several to a part (a `MappingUnion` only)."""
        keys = [keys] if isinstance(keys, str) else keys
        encode = self._encode_pack if pack else None
        return streaming.copy_all(
            self.store, keys, destination, strategy, listed=listed, batch=batch, pack=encode
        )

    def _encode_pack(self, value: JSON, written_at: float, folded: tuple[str, ...]) -> bytes:
        """A part that packs the parts ``folded`` (`copy_parts`), dated as its newest."""
        envelope = Envelope(value, written_at, self.writer, folded)
        return codec.encode(
            attrs.asdict(envelope, recurse=False), compress_above=self.compress_above
        )

    def compact(self, key: str, strategy: MergeStrategy[Any], *, min_parts: int = 1) -> int:
        """Fold the parts of ``key`` into its base and retire them; returns how many.

        Safe against concurrent writers and compactors: the base is replaced by
        compare-and-swap, and only parts folded into it are deleted. Returns 0 when there
        were fewer than ``min_parts`` parts or another compactor won the race.
        """
        self._require_compare_and_swap("compact")
        base_key = objects.base_key(key)
        part_keys = self.parts(key)
        if len(part_keys) < min_parts:
            return 0
        fetched = self.store.get_many([base_key, *part_keys])
        present = [part for part in part_keys if part in fetched]
        allowance = codec.Allowance(self.read_size)
        merged = self._join(key, strategy, [base_key, *present], fetched, allowance)
        if allowance.exhausted:
            # Parts beyond what one read may decode stay for a later compaction (and a
            # base never read is never replaced): only what was read is folded.
            if base_key in fetched and not merged.has_base:
                return 0
            present = [part for part in present if part.rpartition("/")[2] in merged.parts]
        folded = tuple(part.rpartition("/")[2] for part in present)
        try:
            self._put_conditionally(
                base_key,
                self._encode(stored_form(strategy, merged.value), folded=folded),
                fetched.get(base_key),
            )
        except PreconditionFailed:
            return 0
        self.store.delete_many(present)
        return len(present)

    # -- looking after a store -------------------------------------------------------------

    def inventory(
        self,
        prefix: str = "",
        *,
        fetch: Fetch = "all",
        progress: Callable[[int, int], None] | None = None,
    ) -> Inventory:
        """The logical keys under ``prefix`` of this cache's own store (not its read
        chain): see `take_inventory`."""
        return take_inventory(self.store, prefix, fetch=fetch, progress=progress)

    # -- internals --------------------------------------------------------------------------

    def _join(
        self,
        key: str,
        strategy: MergeStrategy[Any],
        keys: Sequence[str],
        fetched: Mapping[str, Entry],
        allowance: codec.Allowance,
    ) -> Merged:
        bases = []
        values = []
        parts = []
        for store_key in keys:
            envelope = objects.decode_entry(store_key, fetched.get(store_key), allowance)
            if envelope is None:
                continue
            try:
                value = strategy.check(envelope.value)
            except CorruptData as error:
                objects.warn_corrupt(store_key, error)
                continue
            if store_key.endswith(BASE):
                bases.append(value)
            else:
                values.append(value)
                parts.append(store_key.rpartition("/")[2])
        # The parts first, then the base, the largest value, once: joined among the
        # parts, it would be copied again at every level of the tree.
        joined = join_balanced(strategy, [*bases, join_balanced(strategy, values)])
        return Merged(joined, bool(bases), tuple(sorted(parts)))

    def _encode(self, value: JSON, *, folded: tuple[str, ...] = ()) -> bytes:
        envelope = Envelope(value, self.clock(), self.writer, folded)
        # Shallow: the value is JSON already. cattrs' unstructure would walk and copy all
        # of it (a third of a second for a 100,000-entry value) to produce the same bytes.
        fields = attrs.asdict(envelope, recurse=False)
        return codec.encode(fields, compress_above=self.compress_above)

    def _put_conditionally(self, store_key: str, data: bytes, previous: Entry | None) -> None:
        if previous is None:
            self.store.put(store_key, data, if_absent=True)
        else:
            self.store.put(store_key, data, if_version=previous.version)

    def _require_compare_and_swap(self, operation: str) -> None:
        capabilities = self.store.capabilities
        if not capabilities.writable:
            raise UnsupportedOperation(f"cannot {operation}: {self.store!r} is read-only")
        if not (capabilities.compare_and_swap and capabilities.create_only):
            raise UnsupportedOperation(
                f"{operation} needs compare-and-swap, which {self.store!r} cannot honour"
            )


def take_inventory(
    store: CacheStore,
    prefix: str = "",
    *,
    fetch: Fetch = "all",
    progress: Callable[[int, int], None] | None = None,
) -> Inventory:
    """The logical keys under ``prefix`` of ``store``, with their bases and parts, and
    the raw objects cachekit did not write.

    One listing, then the objects ``fetch`` asks for in batches of `INVENTORY_BATCH`
    (``progress(done, total)`` after each). Objects that do not decode are marked
    unreadable, without a warning: finding them is the point.
    """
    listed = store.list(prefix)
    bases: dict[str, str] = {}  # logical key -> store key of its base
    parts: dict[str, list[tuple[str, str]]] = {}  # logical key -> (store key, part id)
    raw: list[str] = []
    for store_key in listed:
        split = objects.split_store_key(store_key)
        if split is None:
            raw.append(store_key)
        elif split[1]:
            parts.setdefault(split[0], []).append((store_key, split[1]))
        else:
            bases[split[0]] = store_key
    if fetch == "all":
        wanted = listed
    elif fetch == "undated":
        wanted = [*bases.values()] + [
            store_key
            for key_parts in parts.values()
            for store_key, part_id in key_parts
            if objects.parse_part_id(part_id)[0] is None
        ]
    else:
        wanted = []
    fetched = _fetch_in_batches(store, wanted, progress)
    keys = tuple(
        StoredKey(
            name,
            _stored_object(bases[name], "", fetched) if name in bases else None,
            tuple(
                _stored_object(store_key, part_id, fetched)
                for store_key, part_id in parts.get(name, [])
            ),
        )
        for name in sorted(bases.keys() | parts.keys())
    )
    raw_objects = tuple(
        RawObject(key, len(fetched[key].data) if key in fetched else None) for key in raw
    )
    return Inventory(prefix, keys, raw_objects, tuple(listed))


def _fetch_in_batches(
    store: CacheStore, keys: Sequence[str], progress: Callable[[int, int], None] | None
) -> dict[str, Entry]:
    fetched: dict[str, Entry] = {}
    for start in range(0, len(keys), INVENTORY_BATCH):
        fetched.update(store.get_many(keys[start : start + INVENTORY_BATCH]))
        if progress is not None:
            progress(min(start + INVENTORY_BATCH, len(keys)), len(keys))
    return fetched


def _stored_object(store_key: str, part_id: str, fetched: Mapping[str, Entry]) -> StoredObject:
    stamped_at, label = objects.parse_part_id(part_id) if part_id else (None, "")
    entry = fetched.get(store_key)
    if entry is None:
        return StoredObject(store_key, part_id, label, stamped_at)
    try:
        envelope = objects.structure_envelope(codec.decode(entry.data))
    except CorruptData:
        return StoredObject(store_key, part_id, label, stamped_at, len(entry.data), None, True)
    return StoredObject(store_key, part_id, label, envelope.written_at, len(entry.data), envelope)


def _common_directory(keys: Iterable[str]) -> str:
    """The longest ``/``-terminated prefix shared by all keys ('' when there is none)."""
    split = [key.split("/") for key in keys]
    common: list[str] = []
    for segments in zip(*split, strict=False):
        if len(set(segments)) != 1:
            break
        common.append(segments[0])
    return "/".join(common) + "/" if common else ""


#: The jitter of `_backoff`, apart from the ``random`` module's shared state: a cache
#: inside a test process must not move a sequence the tests seeded (``random.seed``,
#: pytest-randomly), whichever thread it retries in.
_JITTER = random.Random()


def _backoff(attempt: int) -> None:
    time.sleep(_JITTER.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 10))))
