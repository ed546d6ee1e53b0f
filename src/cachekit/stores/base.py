"""The `CacheStore` protocol: bytes by key, opaque versions, conditional writes.

A store knows nothing of JSON, pytest or shards. Every backend passes the same
conformance suite (`cachekit.testing.StoreTests`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen
class Entry:
    """Bytes read from a store and the version token they had."""

    data: bytes
    #: Opaque: an ETag, a GCS generation, a local file identity. Only ever compared
    #: for equality or passed back as ``if_version``.
    version: str


@attrs.frozen
class Capabilities:
    """What a store can honour. A store refuses (`UnsupportedOperation`) what it cannot."""

    #: ``put`` and ``delete`` are allowed at all.
    writable: bool = True
    #: ``put(..., if_absent=True)`` is atomic: of many racing writers exactly one wins.
    create_only: bool = True
    #: ``put(..., if_version=v)`` is atomic compare-and-swap.
    compare_and_swap: bool = True


@runtime_checkable
class CacheStore(Protocol):
    """Bytes by ``/``-separated key. Implementations must be safe to share between threads.

    A key that is also a directory of other keys (``a`` beside ``a/b``) is not portable:
    object stores allow it, a local directory cannot (it raises `InvalidKey`).
    `cachekit.Cache` never makes such keys.
    """

    @property
    def capabilities(self) -> Capabilities: ...

    def get(self, key: str) -> Entry | None:
        """The stored bytes and their version, or None if the key is absent."""

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        """Entries of the present keys among ``keys``; concurrent on remote stores."""

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        """Store ``data`` and return its new version.

        With ``if_absent`` the write happens only if the key does not exist; with
        ``if_version`` only if the key still has that version. Otherwise it raises
        `PreconditionFailed`, atomically: never check-then-write.
        """

    def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove many keys; batched or concurrent on remote stores."""

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix``."""

    def close(self) -> None:
        """Release connections and threads. The store must not be used afterwards."""
