"""Values to bytes and back: JSON, a small self-describing header, zstd above a size.

Layout of an encoded value::

    b"CK"   format version (1 byte)   codec (1 byte)   CRC-32 of payload (4 bytes)   payload

Readers auto-detect the codec from the header, so the compression threshold can change
without a migration. Anything that does not decode (foreign bytes, a truncated write, a
flipped bit, JSON that is not a value) raises `CorruptData`; nothing is ever unpickled.
"""

from __future__ import annotations

import enum
import json
import struct
import zlib
from typing import TypeAlias

import zstandard

from cachekit.errors import CorruptData

#: A JSON value as json.loads returns it.
JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"

MAGIC = b"CK"
FORMAT_VERSION = 1
DEFAULT_COMPRESS_ABOVE = 4096
#: A value that claims to inflate beyond this is refused rather than decompressed.
MAX_DECODED_SIZE = 512 * 1024 * 1024
_HEADER = struct.Struct(">2sBBI")


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


def decode(data: bytes) -> JSON:
    """Decode bytes that `encode` wrote, or raise `CorruptData` saying what is wrong."""
    if len(data) < _HEADER.size:
        raise CorruptData(f"too short to be a cachekit value ({len(data)} bytes)")
    magic, version, codec, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptData("not a cachekit value (unknown header)")
    if version != FORMAT_VERSION:
        raise CorruptData(
            f"written in format version {version}; this cachekit reads {FORMAT_VERSION}"
        )
    payload = memoryview(data)[_HEADER.size :]
    if zlib.crc32(payload) != checksum:
        raise CorruptData("checksum mismatch: the value was truncated or altered")
    if codec == Codec.JSON_ZSTD:
        try:
            if zstandard.frame_content_size(payload) > MAX_DECODED_SIZE:
                raise CorruptData(f"claims to inflate beyond {MAX_DECODED_SIZE} bytes")
            payload = memoryview(
                zstandard.ZstdDecompressor().decompress(payload, max_output_size=MAX_DECODED_SIZE)
            )
        except zstandard.ZstdError as error:
            raise CorruptData(f"cannot decompress: {error}") from error
    elif codec != Codec.JSON:
        raise CorruptData(f"unknown codec {codec}")
    try:
        value: JSON = json.loads(bytes(payload).decode("utf-8"), parse_constant=_refuse_constant)
    except ValueError as error:  # bad UTF-8, bad JSON, an int of over 4300 digits
        raise CorruptData(f"not valid JSON: {error}") from error
    except RecursionError as error:  # hostile nesting: no value of ours is that deep
        raise CorruptData("JSON nested too deeply") from error
    return value


def _refuse_constant(name: str) -> None:
    """NaN and infinities are not JSON, and `encode` never writes them."""
    raise ValueError(f"{name} is not a JSON value")
