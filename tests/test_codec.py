"""The codec: JSON values round-trip, zstd is chosen by size, and every kind of damage or
foreign data reads as `CorruptData` (and as a miss with a warning through `Cache`)."""

from __future__ import annotations

import contextlib
import json
import struct
import zlib

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cachekit
from cachekit import Cache, LocalStore, MemoryStore
from cachekit.errors import CorruptData
from cachekit.values import codec
from cachekit.values.codec import (
    DEFAULT_COMPRESS_ABOVE,
    FORMAT_VERSION,
    MAGIC,
    Codec,
    decode,
    encode,
)
from cachekit.values.merge import SortedUnion

HEADER = struct.Struct(">2sBBI")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def frame(payload: bytes, *, codec_byte: int = Codec.JSON, version: int = FORMAT_VERSION) -> bytes:
    """A header with a valid checksum around any payload: what a foreign writer could store."""
    return HEADER.pack(MAGIC, version, codec_byte, zlib.crc32(payload)) + payload


def codec_byte(data: bytes) -> int:
    return HEADER.unpack_from(data)[2]


SMALL = encode({"cache/lastfailed": {"a.py::t": True}, "n": [1, 2.5, None]})
COMPRESSED = encode({"nodeids": [f"tests/test_{i}.py::test_{i}" for i in range(400)]})


# -- round trips ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, compress_above=st.sampled_from([0, 64, DEFAULT_COMPRESS_ABOVE]))
def test_round_trip(value, compress_above):
    data = encode(value, compress_above=compress_above)
    assert data[:2] == MAGIC
    decoded = decode(data)
    assert decoded == value
    # Exactly: an int stays an int, a float a float (1 and 1.0 are == but not the same).
    assert json.dumps(decoded, sort_keys=True) == json.dumps(value, sort_keys=True)


@settings(max_examples=50, deadline=None)
@given(value=json_values)
def test_encoding_is_deterministic(value):
    assert encode(value) == encode(json.loads(json.dumps(value)))


def test_key_order_does_not_change_the_bytes():
    assert encode({"a": 1, "b": 2}) == encode({"b": 2, "a": 1})


def test_encode_refuses_nan():
    with pytest.raises(ValueError, match="JSON compliant"):
        encode(float("nan"))


# -- compression threshold -------------------------------------------------------------------


def test_zstd_used_above_the_threshold_and_not_below():
    # json.dumps of a string of n ASCII characters is n + 2 bytes.
    at_threshold = "x" * (DEFAULT_COMPRESS_ABOVE - 2)
    above = "x" * (DEFAULT_COMPRESS_ABOVE - 1)
    assert codec_byte(encode(at_threshold)) == Codec.JSON
    assert codec_byte(encode(above)) == Codec.JSON_ZSTD
    assert len(encode(above)) < 200  # compressed for real
    assert decode(encode(above)) == above
    assert codec_byte(encode("x" * 10)) == Codec.JSON
    assert codec_byte(SMALL) == Codec.JSON
    assert codec_byte(COMPRESSED) == Codec.JSON_ZSTD


@pytest.mark.parametrize("threshold", [0, 10, 1000])
def test_threshold_is_configurable_and_readers_need_not_know_it(threshold):
    value = "y" * 500
    data = encode(value, compress_above=threshold)
    assert codec_byte(data) == (Codec.JSON_ZSTD if threshold < 502 else Codec.JSON)
    assert decode(data) == value


def test_cache_compress_above_is_used():
    store = MemoryStore()
    Cache(store, compress_above=0).set("k", "small")
    Cache(store, compress_above=10**9).set("big", "z" * 100_000)
    assert codec_byte(store.get("k/@base").data) == Codec.JSON_ZSTD
    assert codec_byte(store.get("big/@base").data) == Codec.JSON
    assert Cache(store).get("k") == "small"
    assert Cache(store).get("big") == "z" * 100_000


# -- corruption --------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [SMALL, COMPRESSED], ids=["json", "zstd"])
def test_every_truncation_is_corrupt(data):
    for length in range(len(data)):
        with pytest.raises(CorruptData):
            decode(data[:length])


@pytest.mark.parametrize("data", [SMALL, COMPRESSED], ids=["json", "zstd"])
def test_every_flipped_bit_is_corrupt(data):
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptData):
            decode(bytes(damaged))


def test_appended_garbage_is_corrupt():
    with pytest.raises(CorruptData, match="checksum"):
        decode(SMALL + b"\x00")


@pytest.mark.parametrize("magic", [b"ck", b"PK", b"\x00\x00", b'{"'])
def test_wrong_magic(magic):
    with pytest.raises(CorruptData, match="header"):
        decode(magic + SMALL[2:])


@pytest.mark.parametrize("version", [0, 2, 255])
def test_other_format_versions(version):
    with pytest.raises(CorruptData, match="format version"):
        decode(frame(b"1", version=version))


@pytest.mark.parametrize("codec_value", [2, 7, 255])
def test_unknown_codec(codec_value):
    with pytest.raises(CorruptData, match="unknown codec"):
        decode(frame(b"1", codec_byte=codec_value))


def test_json_payload_labelled_zstd():
    with pytest.raises(CorruptData, match="decompress"):
        decode(frame(b'{"a": 1}', codec_byte=Codec.JSON_ZSTD))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xfe", b"{", b"not json", b"[1,]", b'{"a": 1} trailing', b"\xed\xa0\x80"],
    ids=["empty", "bad-utf8", "unclosed", "words", "trailing-comma", "trailing-text", "surrogate"],
)
def test_non_json_payload_with_valid_checksum(payload):
    with pytest.raises(CorruptData, match="JSON"):
        decode(frame(payload))


def test_non_json_inside_a_valid_zstd_frame():
    compressed = zstandard.ZstdCompressor().compress(b"\x00\x01 definitely not json")
    with pytest.raises(CorruptData, match="JSON"):
        decode(frame(compressed, codec_byte=Codec.JSON_ZSTD))


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
    ids=["deep-list", "deep-dict"],
)
def test_deeply_nested_json_is_corrupt_not_a_crash(payload):
    """A foreign writer can store valid, deeply nested JSON with a valid checksum; json
    raises RecursionError on it, which must not escape as anything but CorruptData."""
    with pytest.raises(CorruptData):
        decode(frame(payload))


def test_integer_too_long_to_parse_is_corrupt():
    """Python refuses int literals over 4300 digits with a bare ValueError."""
    with pytest.raises(CorruptData):
        decode(frame(b"1" * 5000))


@pytest.mark.parametrize("payload", [b"NaN", b"[Infinity]", b'{"at": -Infinity}'])
def test_non_standard_json_constants_are_corrupt(payload):
    """encode refuses NaN and infinities (allow_nan=False), so bytes holding them were not
    written by cachekit; letting them through poisons merges and compaction (encoding the
    merged value raises ValueError)."""
    with pytest.raises(CorruptData):
        decode(frame(payload))


def _zstd_frame_claiming(size: int) -> bytes:
    # Magic, a frame header descriptor with an 8-byte content size in a single segment,
    # the size, then one empty last raw block.
    return struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", size) + bytes([1, 0, 0])


def test_zstd_frame_claiming_a_huge_content_size():
    payload = _zstd_frame_claiming(2**40)
    assert zstandard.frame_content_size(payload) == 2**40  # the claim is really in the frame
    with pytest.raises(CorruptData, match="inflate"):
        decode(frame(payload, codec_byte=Codec.JSON_ZSTD))


def test_zstd_frame_claiming_just_over_the_limit():
    payload = _zstd_frame_claiming(codec.MAX_DECODED_SIZE + 1)
    with pytest.raises(CorruptData, match="inflate"):
        decode(frame(payload, codec_byte=Codec.JSON_ZSTD))


def test_zstd_frame_lying_about_its_size():
    real = zstandard.ZstdCompressor().compress(b'"' + b"a" * 1000 + b'"')
    lying = _zstd_frame_claiming(3)
    with pytest.raises(CorruptData):
        decode(frame(lying, codec_byte=Codec.JSON_ZSTD))
    truncated = real[: len(real) // 2]
    with pytest.raises(CorruptData):
        decode(frame(truncated, codec_byte=Codec.JSON_ZSTD))


@pytest.mark.parametrize("declare_size", [True, False], ids=["declared", "undeclared"])
def test_decompression_bomb_is_refused(monkeypatch, declare_size):
    """A frame inflating beyond MAX_DECODED_SIZE is refused whether or not it declares its
    size (lowered here so the test does not allocate 512 MiB)."""
    monkeypatch.setattr(codec, "MAX_DECODED_SIZE", 10_000)
    inflated = b'"' + b"a" * 50_000 + b'"'
    bomb = zstandard.ZstdCompressor(write_content_size=declare_size).compress(inflated)
    assert len(bomb) < 200
    with pytest.raises(CorruptData):
        decode(frame(bomb, codec_byte=Codec.JSON_ZSTD))
    # The same frame under the limit decodes.
    monkeypatch.setattr(codec, "MAX_DECODED_SIZE", 100_000)
    assert decode(frame(bomb, codec_byte=Codec.JSON_ZSTD)) == "a" * 50_000


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_corrupt_data(data):
    for candidate in (data, SMALL[:8] + data, COMPRESSED[:8] + data):
        with contextlib.suppress(CorruptData):
            decode(candidate)


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=64), codec_value=st.sampled_from([0, 1]))
def test_arbitrary_payload_with_valid_checksum_decodes_or_raises_corrupt_data(payload, codec_value):
    try:
        value = decode(frame(payload, codec_byte=codec_value))
    except CorruptData:
        return
    # Whatever decodes is a value cachekit could have written.
    assert decode(encode(value)) == value


# -- through Cache: a miss and a warning, never an exception --------------------------------

GARBAGE = [
    b"",
    b"garbage",
    SMALL[:-1],
    b"PK\x03\x04" + b"\x00" * 30,
    frame(b"[1, 2]"),  # a cachekit value, but not an envelope
    frame(b'"a string"'),
    frame(b"7"),
    frame(b'{"value": 1}'),  # an envelope missing written_at
    frame(b'{"value": 1, "written_at": 1.0, "unexpected": 2}'),
    frame(b'{"value": 1, "written_at": "yesterday"}'),
    frame(b'{"value": 1, "written_at": true}'),
    frame(b'{"value": 1, "written_at": 1' + b"0" * 400 + b"}"),
    frame(b'{"value": 1, "written_at": 1.0, "writer": 7}'),
    frame(b'{"value": 1, "written_at": 1.0, "folded": "ab"}'),
    frame(b'{"value": 1, "written_at": 1.0, "folded": [1, 2]}'),
    frame(b"\xff"),
    frame(b"[" * 100_000),
]
GARBAGE_IDS = [
    "empty",
    "text",
    "truncated",
    "zip",
    "not-envelope",
    "string",
    "number",
    "no-written_at",
    "extra-key",
    "bad-written_at",
    "bool-written_at",
    "huge-written_at",
    "number-writer",
    "string-folded",
    "numbers-folded",
    "bad-utf8",
    "deep-nesting",
]


@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    return MemoryStore() if request.param == "memory" else LocalStore(tmp_path / "store")


@pytest.mark.parametrize("garbage", GARBAGE, ids=GARBAGE_IDS)
def test_cache_get_on_garbage_returns_default_with_a_warning(store, garbage):
    store.put("some/key/@base", garbage)
    cache = Cache(store)
    with pytest.warns(cachekit.CorruptValueWarning, match="some/key/@base"):
        assert cache.get("some/key", default="fallback") == "fallback"


def test_cache_get_warning_is_a_cachekit_warning(store):
    store.put("k/@base", b"junk")
    with pytest.warns(cachekit.CacheKitWarning):
        assert Cache(store).get("k") is None


@pytest.mark.parametrize("garbage", GARBAGE, ids=GARBAGE_IDS)
def test_read_merged_skips_a_garbage_part_with_a_warning(store, garbage):
    cache = Cache(store)
    cache.write_part("nodeids", "good", ["a.py::t"])
    store.put("nodeids/@parts/bad", garbage)
    with pytest.warns(cachekit.CorruptValueWarning, match="nodeids/@parts/bad"):
        merged = cache.read_merged("nodeids", SortedUnion())
    assert merged.value == ["a.py::t"]
    assert merged.parts == ("good",)


def test_read_merged_skips_a_part_of_the_wrong_shape_with_a_warning(store):
    cache = Cache(store)
    cache.write_part("nodeids", "good", ["a.py::t"])
    cache.write_part("nodeids", "wrong", {"not": "a list"})
    with pytest.warns(cachekit.CorruptValueWarning, match="wrong"):
        merged = cache.read_merged("nodeids", SortedUnion())
    assert merged.value == ["a.py::t"]
    assert merged.parts == ("good",)


def test_update_over_garbage_starts_from_the_default(store):
    store.put("counter/@base", b"junk")
    cache = Cache(store)
    with pytest.warns(cachekit.CorruptValueWarning):
        assert cache.update("counter", lambda n: n + 1, default=41) == 42
    assert cache.get("counter") == 42
