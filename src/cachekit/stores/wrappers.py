"""Stores built from stores: read-only, prefixed, and a layered read chain.

Like Hypothesis's ``ReadOnlyDatabase`` and ``MultiplexedDatabase``: composition instead of
options on every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from cachekit.errors import UnsupportedOperation
from cachekit.stores.base import CacheStore, Capabilities, Entry
from cachekit.stores.keys import validate_key, validate_prefix


class ReadOnlyStore:
    """Reads pass through; every write raises `UnsupportedOperation`.

    For untrusted runs (pull requests from forks): they read what trusted runs wrote.
    """

    def __init__(self, store: CacheStore) -> None:
        self.store = store

    @property
    def capabilities(self) -> Capabilities:
        return attrs.evolve(self.store.capabilities, writable=False)

    def get(self, key: str) -> Entry | None:
        return self.store.get(key)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        return self.store.get_many(keys)

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        raise UnsupportedOperation(f"{self!r} is read-only: cannot write {key!r}")

    def delete(self, key: str) -> None:
        raise UnsupportedOperation(f"{self!r} is read-only: cannot delete {key!r}")

    def delete_many(self, keys: Iterable[str]) -> None:
        raise UnsupportedOperation(f"{self!r} is read-only: cannot delete")

    def list(self, prefix: str = "") -> list[str]:
        return self.store.list(prefix)

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"ReadOnlyStore({self.store!r})"


class PrefixedStore:
    """A sub-namespace: every key is stored as ``prefix/key`` in the wrapped store."""

    def __init__(self, store: CacheStore, prefix: str) -> None:
        self.store = store
        self.prefix = validate_key(prefix.strip("/")) + "/"

    @property
    def capabilities(self) -> Capabilities:
        return self.store.capabilities

    def _inner(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def get(self, key: str) -> Entry | None:
        return self.store.get(self._inner(key))

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        found = self.store.get_many([self._inner(key) for key in keys])
        return {key.removeprefix(self.prefix): entry for key, entry in found.items()}

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        return self.store.put(self._inner(key), data, if_absent=if_absent, if_version=if_version)

    def delete(self, key: str) -> None:
        self.store.delete(self._inner(key))

    def delete_many(self, keys: Iterable[str]) -> None:
        self.store.delete_many([self._inner(key) for key in keys])

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        return [key.removeprefix(self.prefix) for key in self.store.list(self.prefix + prefix)]

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"PrefixedStore({self.store!r}, {self.prefix!r})"


class LayeredStore:
    """A read chain: reads try each layer in turn and the first hit wins; writes, deletes
    and conditional writes go to the first layer only.

    A run reads its own ref, then the base branch, then the default branch, and writes
    only under its own ref. Versions are those of the layer that answered; a conditional
    write with a version from a lower layer fails, as it should: that value is not in the
    first layer.
    """

    def __init__(self, layers: Sequence[CacheStore]) -> None:
        if not layers:
            raise ValueError("a LayeredStore needs at least one layer")
        self.layers = tuple(layers)

    @property
    def capabilities(self) -> Capabilities:
        return self.layers[0].capabilities

    def get(self, key: str) -> Entry | None:
        validate_key(key)
        for layer in self.layers:
            entry = layer.get(key)
            if entry is not None:
                return entry
        return None

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        found: dict[str, Entry] = {}
        missing = list(keys)
        for layer in self.layers:
            if not missing:
                break
            found.update(layer.get_many(missing))
            missing = [key for key in missing if key not in found]
        return found

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        return self.layers[0].put(key, data, if_absent=if_absent, if_version=if_version)

    def delete(self, key: str) -> None:
        self.layers[0].delete(key)

    def delete_many(self, keys: Iterable[str]) -> None:
        self.layers[0].delete_many(keys)

    def list(self, prefix: str = "") -> list[str]:
        """The union of every layer's keys: each is readable through the chain."""
        return sorted({key for layer in self.layers for key in layer.list(prefix)})

    def close(self) -> None:
        for layer in self.layers:
            layer.close()

    def __repr__(self) -> str:
        return f"LayeredStore({list(self.layers)!r})"
