"""Values to bytes and back: JSON, a small self-describing header, zstd above a size.

Layout of an encoded value::

    b"CK"   format version (1 byte)   codec (1 byte)   CRC-32 of payload (4 bytes)   payload

Readers auto-detect the codec from the header, so the compression threshold can change
without a migration. Anything that does not decode (foreign bytes, a truncated write, a
flipped bit, JSON that is not a value, a string that is not Unicode) raises
`CorruptData`; nothing is ever unpickled.

What a value may cost is bounded before it is built: JSON text beyond `MAX_DECODED_SIZE`
(or beyond what is left of a read's `Allowance`), or a zstd frame inflating more than
`MAX_EXPANSION` times, is refused while decompressing, not after. ``json.loads`` holds
the GIL for the whole text, so these bounds are what keeps a hostile value from stalling
every thread of a run, the one that enforces the time budget included.
"""

from __future__ import annotations

import enum
import json
import re
import struct
import threading
import zlib
from typing import TypeAlias

import zstandard

from cachekit.errors import CorruptData

#: A JSON value as json.loads returns it.
JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"

MAGIC = b"CK"
FORMAT_VERSION = 1
DEFAULT_COMPRESS_ABOVE = 4096
_MIB = 1024 * 1024
#: The most JSON text one value may decode to. The largest values cachekit writes are a
#: namespace's bases of ``cache/lastfailed`` and ``stats/durations``: 40-65 MB at 500,000
#: tests (DESIGN.md's scale, ids of 60-80 characters; measured), so this leaves room for
#: ids twice as long. Anything larger is refused while it is being decompressed.
MAX_DECODED_SIZE = 128 * _MIB
#: The most one read (`Allowance`: all the values of one ``Cache.read_merged_many`` or
#: ``compact``) may decode in total: a start-up read of the shared keys of a 500,000-test
#: namespace decodes about 160 MB, and no more than this fits in a run's time budget.
MAX_READ_SIZE = 256 * _MIB
#: zstd level 3 shrinks the JSON cachekit writes 40 to 130 times (test ids, 1,000 to
#: 500,000 of them; measured): a frame inflating more than this, and to more than
#: `_EXPANSION_FREE` bytes, is a decompression bomb, refused at the size it claims or
#: as soon as it passes the ratio.
MAX_EXPANSION = 1024
_EXPANSION_FREE = 1 * _MIB
_CHUNK = 1 * _MIB
_HEADER = struct.Struct(">2sBBI")
#: An escaped UTF-16 surrogate: the only way JSON text that is valid UTF-8 can produce a
#: ``str`` that is not Unicode (a lone surrogate), which nothing can encode again.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class Allowance:
    """Bytes of JSON text that the values of one read may still decode to, shared by the
    threads of that read: the total bound of `MAX_READ_SIZE`."""

    def __init__(self, size: int = MAX_READ_SIZE) -> None:
        self.size = size
        self._left = size
        #: Whether a value was refused because too little was left (not for itself).
        self.exhausted = False
        self._lock = threading.Lock()

    @property
    def left(self) -> int:
        return self._left

    def take(self, size: int) -> None:
        """Spend ``size`` bytes, or raise `CorruptData` if fewer are left."""
        with self._lock:
            if size > self._left:
                self.exhausted = True
                raise CorruptData(
                    f"{size} bytes of JSON, beyond what is left of the {self.size} bytes "
                    "one read may decode"
                )
            self._left -= size


class Codec(enum.IntEnum):
    JSON = 0
    JSON_ZSTD = 1


def encode(value: JSON, *, compress_above: int = DEFAULT_COMPRESS_ABOVE) -> bytes:
    """Encode a JSON value deterministically (sorted keys, no NaN)."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    payload = text.encode("utf-8")
    codec = Codec.JSON
    if len(payload) > compress_above:
        payload = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(payload)
        codec = Codec.JSON_ZSTD
    return _HEADER.pack(MAGIC, FORMAT_VERSION, codec, zlib.crc32(payload)) + payload


def decode(data: bytes, *, allowance: Allowance | None = None) -> JSON:
    """Decode bytes that `encode` wrote, or raise `CorruptData` saying what is wrong.

    ``allowance``: what is left to decode of the read this value belongs to; the value's
    JSON text is spent from it.
    """
    if len(data) < _HEADER.size:
        raise CorruptData(f"too short to be a cachekit value ({len(data)} bytes)")
    magic, version, codec, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptData("not a cachekit value (unknown header)")
    if version != FORMAT_VERSION:
        raise CorruptData(
            f"written in format version {version}; this cachekit reads {FORMAT_VERSION}"
        )
    payload: bytes | memoryview = memoryview(data)[_HEADER.size :]
    if zlib.crc32(payload) != checksum:
        raise CorruptData("checksum mismatch: the value was truncated or altered")
    limit = MAX_DECODED_SIZE if allowance is None else min(MAX_DECODED_SIZE, allowance.left)
    if codec == Codec.JSON_ZSTD:
        try:
            payload = _inflate(payload, limit)
        except CorruptData:
            if allowance is not None and limit < MAX_DECODED_SIZE:
                allowance.exhausted = True  # perhaps fine alone: the read's total ran out
            raise
    elif codec != Codec.JSON:
        raise CorruptData(f"unknown codec {codec}")
    if len(payload) > MAX_DECODED_SIZE:
        raise CorruptData(
            f"{len(payload)} bytes of JSON, over the {MAX_DECODED_SIZE} one value may hold"
        )
    if allowance is not None:
        allowance.take(len(payload))
    try:
        text = str(payload, "utf-8")
        del payload  # the inflated bytes: not held while the objects are built
        value: JSON = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:  # bad UTF-8, bad JSON, an int of over 4300 digits
        raise CorruptData(f"not valid JSON: {error}") from error
    except RecursionError as error:  # hostile nesting: no value of ours is that deep
        raise CorruptData("JSON nested too deeply") from error
    if "\\" in text and _SURROGATE_ESCAPE.search(text):  # rare: `encode` writes none
        _refuse_surrogates(value)
    return value


def _inflate(payload: bytes | memoryview, limit: int) -> bytes:
    """The zstd frame ``payload`` decompressed, refused (`CorruptData`) as soon as it
    passes ``limit`` bytes or `MAX_EXPANSION` times its size: streamed, so a bomb is
    never materialized."""
    limit = min(limit, max(_EXPANSION_FREE, MAX_EXPANSION * len(payload)))
    try:
        declared = zstandard.frame_content_size(payload)
        if declared > limit:
            raise CorruptData(f"claims to inflate to {declared} bytes, beyond {limit}")
        if declared >= 0:  # as `encode` writes: decompressed into exactly that many bytes
            return zstandard.ZstdDecompressor().decompress(payload)
        chunks = []
        size = 0
        with zstandard.ZstdDecompressor().stream_reader(payload) as reader:
            while chunk := reader.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise CorruptData(f"inflates beyond {limit} bytes")
                chunks.append(chunk)
        return b"".join(chunks)
    except zstandard.ZstdError as error:
        raise CorruptData(f"cannot decompress: {error}") from error


def _refuse_surrogates(value: JSON) -> None:
    """`CorruptData` if a string of ``value`` (a key of an object included) holds a lone
    surrogate: no JSON encoder, pytest's included, can write it back."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        raise CorruptData("holds a string that is not valid Unicode (a lone surrogate)") from error


def _refuse_constant(name: str) -> None:
    """NaN and infinities are not JSON, and `encode` never writes them."""
    raise ValueError(f"{name} is not a JSON value")
