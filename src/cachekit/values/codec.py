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

For the same reason a value is decoded only while there is time: a caller that spends a
time budget (`cachekit.budget`) sets a deadline (`decoding_until`), and past it `decode`
raises `OutOfTime` instead of starting on a value, or instead of starting on one that
could not be decoded before it at the slowest JSON decodes (`worst_decode_seconds`).
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextvars import ContextVar
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
#: What a character costs ``json.loads`` at most, the garbage collector running (CPython
#: 3.11, values near the 128 MiB cap, planted shapes included; measured by
#: ``benchmarks/bench_decode.py``): an object's entry (``:``) 1.1-1.5 us besides its
#: ``,``; an item (``,``) up to 0.5 us (subnormal floats; zeros 0.05 us); a ``[`` or
#: ``{`` up to 0.6 us (lists nested 100 deep); a digit up to 25 ns (integers of 4,000
#: digits); any other byte 1-2 ns (escaped strings). Rounded up: what cachekit writes
#: decodes 4 to 25 times faster than this estimates.
_SECONDS_PER_COLON = 1.6e-6
_SECONDS_PER_COMMA = 0.6e-6
_SECONDS_PER_OPENING = 1.0e-6
_SECONDS_PER_DIGIT = 40e-9
_SECONDS_PER_BYTE = 3e-9
_DIGITS = b"0123456789"
#: Seconds past the deadline that a value estimated to take longer may still be started:
#: the estimate is an upper bound, and a read that refuses what would have fitted fails.
OVERRUN = 1.0
#: When the values being decoded in this context must be decoded by (`decoding_until`).
_deadline: ContextVar[float] = ContextVar("cachekit_decoding_deadline", default=math.inf)


class OutOfTime(Exception):
    """The deadline of `decoding_until` passed, or a value could not be decoded before it:
    nothing more is decoded. Not `CorruptData`: the value is not at fault, the read is
    (its caller treats it as running out of its time budget)."""


@contextlib.contextmanager
def decoding_until(deadline: float) -> Iterator[None]:
    """Within: `decode` decodes values only until ``deadline`` (a `time.monotonic` time;
    an earlier deadline of an enclosing call stays), then raises `OutOfTime`.

    A context variable: it holds in the thread that sets it, and in threads started with
    a copy of that thread's context (`contextvars.copy_context`), as `Cache` starts its
    threads. The caller's time budget cannot stop a thread inside ``json.loads`` (it
    holds the GIL), so the thread decoding stops itself.
    """
    token = _deadline.set(min(deadline, _deadline.get()))
    try:
        yield
    finally:
        _deadline.reset(token)


def check_deadline() -> None:
    """`OutOfTime` if the deadline of `decoding_until` has passed: past it nobody waits
    for what a read finds (nor for its warnings)."""
    if time.monotonic() >= _deadline.get():
        raise OutOfTime("the deadline for reading passed")


def worst_decode_seconds(text: bytes) -> float:
    """How long ``json.loads`` may take at most on the JSON ``text`` (UTF-8), from the
    cost of its slowest shapes: a few counts of characters and one deletion of digits,
    about 3 ms per MB."""
    digits = len(text) - len(text.translate(None, _DIGITS))
    # A "::" is in a string (no entry's colon has a colon beside it in valid JSON): test
    # ids have one each, and counting it would double the estimate of what cachekit writes.
    colons = text.count(b":") - 2 * text.count(b"::")
    return (
        colons * _SECONDS_PER_COLON
        + text.count(b",") * _SECONDS_PER_COMMA
        + (text.count(b"[") + text.count(b"{")) * _SECONDS_PER_OPENING
        + digits * _SECONDS_PER_DIGIT
        + len(text) * _SECONDS_PER_BYTE
    )


def _check_time_for(text: bytes, *, twice: bool) -> None:
    """`OutOfTime` unless there is time to decode the JSON ``text`` (``twice``: and
    encode it again) before the deadline, give or take `OVERRUN`."""
    deadline = _deadline.get()
    if math.isinf(deadline):
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise OutOfTime("the deadline for reading passed")
    times = 2 if twice else 1
    # At most one costly character per byte: a text this short needs no counting.
    if len(text) * (_SECONDS_PER_COLON + _SECONDS_PER_BYTE) * times <= left + OVERRUN:
        return
    worst = worst_decode_seconds(text) * times
    if worst > left + OVERRUN:
        raise OutOfTime(
            f"{len(text)} bytes of JSON may take up to {worst:.1f} s to decode, "
            f"{left:.1f} s before the deadline for reading"
        )


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
    JSON text is spent from it. `OutOfTime` past the deadline of `decoding_until`, or for
    a value that could not be decoded before it.
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
    except ValueError as error:
        raise CorruptData(f"not valid JSON: {error}") from error
    # Rare: `encode` writes none. Refusing one encodes the value again: twice the time.
    escaped = "\\" in text and _SURROGATE_ESCAPE.search(text) is not None
    # Counted in bytes (a memoryview's are `data`'s, its 8-byte header included).
    _check_time_for(payload if isinstance(payload, bytes) else data, twice=escaped)
    del payload  # the inflated bytes: not held while the objects are built
    try:
        value: JSON = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:  # bad JSON, an int of over 4300 digits
        check_deadline()  # past it, a corrupt value is no one's news
        raise CorruptData(f"not valid JSON: {error}") from error
    except RecursionError as error:  # hostile nesting: no value of ours is that deep
        check_deadline()
        raise CorruptData("JSON nested too deeply") from error
    check_deadline()  # decoded too late: its reader has given up on it
    if escaped:
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
