"""Large sets of strings kept as 64-bit digests: pytest's ``cache/nodeids`` at scale.

Every test id a suite ever ran is half a million strings for the largest suites: 38 MB
of JSON, and about 140 MiB of Python objects once read. A run needs none of them by
name: only whether each test it collected was seen before (``--nf``) and which of its
ids are new. So a compacted value keeps a sorted array of 8-byte digests (4 MB for
500,000 ids, searched in place with `bisect`), and only parts, which hold the few ids
runs added since, keep names. Two different ids share a digest with odds of about one
in 10^8 at that size; the cost of such a clash is one new test not ordered first.

Stored forms: a part is a sorted list of strings (as pytest keeps ``cache/nodeids``);
a base is ``{"digests": "<base64 of sorted little-endian uint64>"}`` (`DigestUnion`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import sys
from array import array
from collections.abc import Iterable

import attrs

from cachekit.errors import CorruptData
from cachekit.values.codec import JSON

_DIGEST_SIZE = 8


def digest(name: str) -> int:
    """The 64-bit digest of one string (the same on every machine)."""
    encoded = name.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=_DIGEST_SIZE).digest(), "little")


def _to_array(data: bytes) -> array[int]:
    digests = array("Q", data)
    if sys.byteorder == "big":  # stored little-endian on every machine
        digests.byteswap()
    return digests


def _to_bytes(digests: array[int]) -> bytes:
    if sys.byteorder == "big":
        digests = array("Q", digests)
        digests.byteswap()
    return digests.tobytes()


def _encode(digests: array[int]) -> str:
    return base64.b64encode(_to_bytes(digests)).decode("ascii")


def _contains(digests: array[int], value: int) -> bool:
    index = bisect.bisect_left(digests, value)
    return index < len(digests) and digests[index] == value


@attrs.frozen
class DigestSet:
    """A set of strings: those held by name, plus those of sorted digest arrays.

    Joins never merge two arrays (the bases of a read chain stay apart, each searched in
    place); `DigestUnion.stored` builds one array when a value is written.
    """

    #: Strings held by name (from parts not yet compacted).
    names: frozenset[str] = frozenset()
    #: Sorted arrays of unique digests (from bases), in a canonical order.
    arrays: tuple[array[int], ...] = ()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self.names:
            return True
        if not self.arrays:
            return False
        value = digest(name)
        return any(_contains(digests, value) for digests in self.arrays)

    def __bool__(self) -> bool:
        return bool(self.names) or any(self.arrays)

    def __len__(self) -> int:
        """How many distinct strings (digests) it holds."""
        return len(_union(self.arrays, self._name_digests()))

    def to_json(self) -> JSON:
        """As JSON, names and arrays kept apart (to hand it to another process; what a
        store keeps is `DigestUnion.stored`)."""
        names: list[JSON] = [*sorted(self.names)]
        arrays: list[JSON] = [_encode(digests) for digests in self.arrays]
        return {"names": names, "arrays": arrays}

    @classmethod
    def from_json(cls, value: JSON) -> DigestSet:
        """The inverse of `to_json`; anything else gives an empty set."""
        if not isinstance(value, dict):
            return cls()
        names = value.get("names", [])
        arrays = value.get("arrays", [])
        if not isinstance(names, list) or not isinstance(arrays, list):
            return cls()
        return cls(
            frozenset(name for name in names if isinstance(name, str)),
            tuple(_to_array(base64.b64decode(text)) for text in arrays if isinstance(text, str)),
        )

    def _name_digests(self) -> list[int]:
        return sorted({digest(name) for name in self.names})


def _union(arrays: Iterable[array[int]], extra: list[int]) -> array[int]:
    """The sorted union of sorted unique arrays and a sorted list of unique digests.

    The common case (compaction: one base and the ids of a few parts) splices the new
    digests into the base's array: linear copying, and Python work only per new id.
    """
    arrays = [digests for digests in arrays if digests]
    if not arrays:
        return array("Q", extra)
    if len(arrays) == 1 and len(extra) <= len(arrays[0]) // 8:
        base = arrays[0]
        result = array("Q")
        start = 0
        for value in extra:
            index = bisect.bisect_left(base, value, start)
            if index < len(base) and base[index] == value:
                continue
            result.extend(base[start:index])
            result.append(value)
            start = index
        if not start and len(result) == 0:
            return base
        result.extend(base[start:])
        return result
    # Sorted runs one after another: the sort merges them, and ``dict.fromkeys`` drops
    # the digests in more than one, keeping their order (both at C speed). A set of them
    # sorted again took 2.5 times as long (a base of 500,000 and 200 parts of 2,500).
    joined = array("Q", extra)
    for digests in arrays:
        joined.extend(digests)
    ordered = joined.tolist()
    ordered.sort()
    return array("Q", dict.fromkeys(ordered))


class DigestUnion:
    """The join of `DigestSet`: a union. Parts are lists of strings, bases digests."""

    def empty(self) -> DigestSet:
        return DigestSet()

    def join(self, left: DigestSet, right: DigestSet) -> DigestSet:
        if not right or left == right:
            return left
        if not left:
            return right
        arrays = list(left.arrays)
        arrays += [digests for digests in right.arrays if digests not in arrays]
        return DigestSet(left.names | right.names, tuple(sorted(arrays)))

    def check(self, value: JSON) -> DigestSet:
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise CorruptData("expected a list of strings")
            return DigestSet(frozenset(value))  # type: ignore[arg-type]  # checked above
        if not isinstance(value, dict) or set(value) != {"digests"}:
            raise CorruptData('expected a list of strings or {"digests": base64}')
        encoded = value["digests"]
        if not isinstance(encoded, str):
            raise CorruptData("digests: expected a base64 string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise CorruptData(f"digests: {error}") from None
        if len(data) % _DIGEST_SIZE:
            raise CorruptData(f"digests: {len(data)} bytes, not a multiple of {_DIGEST_SIZE}")
        return DigestSet(arrays=(_to_array(data),) if data else ())

    def stored(self, value: DigestSet) -> JSON:
        """What a compaction writes: every string as a digest, in one sorted array."""
        merged = _union(value.arrays, value._name_digests())
        return {"digests": _encode(merged)}


#: pytest's ``cache/nodeids``: every test id any shard ever collected, as digests.
NODEIDS = DigestUnion()
