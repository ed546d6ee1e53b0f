"""An in-process store: tests, and ``memory://NAME`` shared by name within a process."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

from cachekit.errors import PreconditionFailed
from cachekit.stores.base import Capabilities, Entry
from cachekit.stores.keys import validate_key, validate_prefix


class MemoryStore:
    """A dict behind a lock. Versions come from a process-wide counter, so a key that is
    deleted and written again never gets back an old version."""

    _named: ClassVar[dict[str, MemoryStore]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()
    _versions: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    @classmethod
    def named(cls, name: str) -> MemoryStore:
        """The store of that name in this process, created on first use."""
        with cls._named_lock:
            return cls._named.setdefault(name, cls())

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def get(self, key: str) -> Entry | None:
        validate_key(key)
        with self._lock:
            return self._entries.get(key)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        for key in keys:
            validate_key(key)
        with self._lock:
            return {key: self._entries[key] for key in keys if key in self._entries}

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        validate_key(key)
        with self._lock:
            current = self._entries.get(key)
            if if_absent and current is not None:
                raise PreconditionFailed(f"{key!r} already exists")
            if if_version is not None and (current is None or current.version != if_version):
                raise PreconditionFailed(f"{key!r} is not at version {if_version!r}")
            version = str(next(self._versions))
            self._entries[key] = Entry(bytes(data), version)
            return version

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            self._entries.pop(key, None)

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        with self._lock:
            return sorted(key for key in self._entries if key.startswith(prefix))

    def close(self) -> None:
        """Nothing to release: a named store keeps its data for the life of the process."""

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._entries)} keys)"
