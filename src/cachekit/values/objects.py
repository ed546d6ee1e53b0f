"""How a logical key of a `cachekit.values.cache.Cache` is kept in a store: the names of
its objects (``<key>/@base``, ``<key>/@parts/<part id>``), part ids, and the envelope
every object holds. `Cache` and its inventory both build on these; nothing here does
I/O.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Iterable
from typing import Any

import attrs

import cachekit.values.codec as codec
from cachekit.errors import CorruptData, CorruptValueWarning, InvalidKey
from cachekit.stores.base import Entry
from cachekit.stores.keys import safe_segment, validate_key
from cachekit.values.codec import JSON

BASE = "@base"
PARTS = "@parts"
_RESERVED_MARK = "@"


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"written_at is a JSON {type(value).__name__}, not a number")
    return float(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"writer is a JSON {type(value).__name__}, not a string")
    return value


def _part_ids(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise TypeError("folded is not a list of part ids")
    return tuple(value)


@attrs.frozen
class Envelope:
    """What is stored: the value, plus when and by whom it was written.

    Its converters check what a store holds (`structure_envelope`), rather than cattrs:
    every pytest run with a store decodes envelopes, and loading cattrs would cost it
    more than its whole start-up read of a shard's keys (about 11 ms against 8)."""

    #: Any JSON value, passed through as json.loads made it.
    value: Any
    written_at: float = attrs.field(converter=_seconds)
    writer: str = attrs.field(default="", converter=_text)
    #: For a base written by `Cache.compact`: the part ids folded into it.
    folded: tuple[str, ...] = attrs.field(default=(), converter=_part_ids)


_ENVELOPE_FIELDS = frozenset(field.name for field in attrs.fields(Envelope))


def new_part_id(label: str = "") -> str:
    """A unique, roughly chronological part id; ``label`` (a shard name) is sanitized."""
    stamp = f"{time.time_ns():020d}"
    suffix = secrets.token_hex(4)
    return f"{stamp}-{safe_segment(label)}-{suffix}" if label else f"{stamp}-{suffix}"


_STAMP_DIGITS = 20
_SUFFIX_HEX_DIGITS = 8


def parse_part_id(part_id: str) -> tuple[float | None, str]:
    """What a part id says about its writing: the time (seconds) in its leading
    nanosecond stamp, and the writer's label; (None, "") for what `new_part_id` did not
    make. An id that starts with a stamp but lacks the random suffix has no label."""
    stamp, _, rest = part_id.partition("-")
    if len(stamp) != _STAMP_DIGITS or not stamp.isdigit():
        return None, ""
    label, _, suffix = rest.rpartition("-")
    is_suffix = len(suffix) == _SUFFIX_HEX_DIGITS and all(c in "0123456789abcdef" for c in suffix)
    return int(stamp) / 1e9, label if is_suffix else ""


def structure_envelope(value: JSON) -> Envelope:
    if not isinstance(value, dict):
        raise CorruptData(f"not a cachekit envelope: a JSON {type(value).__name__}")
    unknown = value.keys() - _ENVELOPE_FIELDS
    if unknown:
        raise CorruptData(f"not a cachekit envelope: unknown fields {sorted(unknown)}")
    try:
        return Envelope(**value)
    # A field missing or of the wrong type; or an integer too large for a float.
    except (TypeError, ValueError, OverflowError) as error:
        raise CorruptData(f"not a cachekit envelope: {error}") from error


def check_cache_key(key: str) -> str:
    validate_key(key)
    if any(segment.startswith(_RESERVED_MARK) for segment in key.split("/")):
        raise InvalidKey(f"cache key segments must not start with {_RESERVED_MARK!r}: {key!r}")
    return key


def base_key(key: str) -> str:
    return f"{check_cache_key(key)}/{BASE}"


def parts_prefix(key: str) -> str:
    return f"{check_cache_key(key)}/{PARTS}/"


def part_key(key: str, part_id: str) -> str:
    if "/" in part_id or part_id.startswith(_RESERVED_MARK):
        raise InvalidKey(f"a part id must be one key segment not starting with '@': {part_id!r}")
    return validate_key(parts_prefix(key) + part_id)


def stored_keys_by_name(listed: Iterable[str]) -> dict[str, list[str]]:
    """The listed bases and parts (all a read needs to fetch) by the key they belong to,
    in listing order: one pass over the listing, however many keys are read from it."""
    stored: dict[str, list[str]] = {}
    for listed_key in listed:
        split = split_store_key(listed_key)
        if split is not None:
            stored.setdefault(split[0], []).append(listed_key)
    return stored


def split_store_key(store_key: str) -> tuple[str, str] | None:
    """(logical key, part id) of a part, (logical key, "") of a base, None for a key
    that is neither."""
    name, marker, last = store_key.rpartition("/")
    if marker and last == BASE:
        return name, ""
    # A part is one segment right under ``<key>/@parts/``: the last such marker.
    name, marker, part_id = store_key.rpartition(f"/{PARTS}/")
    if marker and part_id and "/" not in part_id:
        return name, part_id
    return None


def decode_entry(
    store_key: str, entry: Entry | None, allowance: codec.Allowance | None = None
) -> Envelope | None:
    """The envelope an object holds; None if absent, or (with a warning) unreadable."""
    if entry is None:
        return None
    try:
        return structure_envelope(codec.decode(entry.data, allowance=allowance))
    except CorruptData as error:
        warn_corrupt(store_key, error)
    return None


def part_id_of(store_key: str) -> str:
    """The part id of a part's store key; ``""`` for the base."""
    return "" if store_key.endswith(BASE) else store_key.rpartition("/")[2]


def warn_corrupt(store_key: str, error: CorruptData) -> None:
    # Past the deadline of a time budget nobody catches the warning: it would reach
    # the user as a stray line after the run gave up on the read. Stop instead.
    codec.check_deadline()
    warnings.warn(
        CorruptValueWarning(f"cachekit: ignoring unreadable {store_key!r}: {error}"), stacklevel=4
    )
