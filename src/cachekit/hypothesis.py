"""A Hypothesis example database on any `CacheStore`.

Failing examples found on one CI shard then replay on every other shard and on
developers' machines::

    from hypothesis import settings
    from cachekit.hypothesis import example_database

    settings.register_profile("ci", database=example_database("s3://bucket/hypothesis"))

Layout, like Hypothesis's ``DirectoryBasedExampleDatabase``: one object per (key, value)
pair, ``<prefix><sha256 of key>/<sha256 of value>``, holding the raw value bytes. Names
are hashes, so every Hypothesis key is a valid store key, and saving a value twice writes
one object.

The database never raises into Hypothesis because the store failed: the first
`CacheError` is reported once as a `StoreUnavailableWarning` and the database then
behaves as an empty, write-ignoring one for the rest of the process (so a store that is
down costs one timeout, not one per call).

Change listening (``add_listener``) is not supported: the store cannot notify, and
Hypothesis's default ``_start_listening`` warns that it is unsupported.

Hypothesis is an optional dependency: this module imports it, ``cachekit`` does not.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterable

from hypothesis.database import ExampleDatabase

from cachekit.ci.namespace import Namespace
from cachekit.errors import CacheError, PreconditionFailed
from cachekit.session import UNLIMITED, Session
from cachekit.stores import CacheStore
from cachekit.stores.keys import validate_prefix

__all__ = ["CacheStoreExampleDatabase", "example_database"]

#: Values fetched per ``get_many`` call.
FETCH_BATCH = 100
_HASH = re.compile(r"[0-9a-f]{64}")


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CacheStoreExampleDatabase(ExampleDatabase):
    """Hypothesis examples in ``store`` under ``prefix`` (default ``hypothesis/``).
    ``url``: the URL the store was opened from, whose credentials never reach a warning."""

    def __init__(self, store: CacheStore, prefix: str = "hypothesis/", *, url: str = "") -> None:
        super().__init__()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.store = store
        self.prefix = validate_prefix(prefix)
        #: Only for its failure rule: warn once, then leave the store alone.
        self._session = Session(
            url or repr(store), namespace=Namespace(), timeout=UNLIMITED, store=store, warn=_warn
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r}, prefix={self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CacheStoreExampleDatabase)
            and self.store is other.store
            and self.prefix == other.prefix
        )

    def __hash__(self) -> int:
        return hash((id(self.store), self.prefix))

    def _folder(self, key: bytes) -> str:
        return f"{self.prefix}{_hash(key)}/"

    def _object(self, key: bytes, value: bytes) -> str:
        return f"{self._folder(key)}{_hash(value)}"

    @property
    def _failed(self) -> bool:
        return self._session.degraded

    def _store_failed(self, what: str, error: CacheError) -> None:
        self._session.fail(
            f"the Hypothesis example database could not {what} "
            f"({type(error).__name__}: {error}); continuing without it"
        )

    def fetch(self, key: bytes) -> Iterable[bytes]:
        if self._failed:
            return []
        try:
            names = [
                name
                for name in self.store.list(self._folder(key))
                if _HASH.fullmatch(name.rpartition("/")[2])
            ]
            values: list[bytes] = []
            for start in range(0, len(names), FETCH_BATCH):
                found = self.store.get_many(names[start : start + FETCH_BATCH])
                for name in names[start : start + FETCH_BATCH]:
                    entry = found.get(name)
                    # Skip what vanished meanwhile and what is not the value its name says.
                    if entry is not None and _hash(entry.data) == name.rpartition("/")[2]:
                        values.append(entry.data)
        except CacheError as error:
            self._store_failed("read examples", error)
            return []
        return values

    def save(self, key: bytes, value: bytes) -> None:
        if self._failed or not self.store.capabilities.writable:
            return
        try:
            # Content-addressed: an existing object already holds these very bytes.
            self.store.put(
                self._object(key, value),
                bytes(value),
                if_absent=self.store.capabilities.create_only,
            )
        except PreconditionFailed:
            pass
        except CacheError as error:
            self._store_failed("save an example", error)

    def delete(self, key: bytes, value: bytes) -> None:
        if self._failed or not self.store.capabilities.writable:
            return
        try:
            self.store.delete(self._object(key, value))
        except CacheError as error:
            self._store_failed("delete an example", error)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        # Save first: a failure in between leaves the value in both places, never in none.
        self.save(dest, value)
        if src != dest:
            self.delete(src, value)


def _warn(warning: Warning) -> None:
    """A Python warning, pointing at the Hypothesis call that met the failure."""
    warnings.warn(warning, stacklevel=5)


def example_database(
    url: str | os.PathLike[str], prefix: str = "hypothesis/"
) -> CacheStoreExampleDatabase:
    """A `CacheStoreExampleDatabase` on the store ``url`` names (see `cachekit.open_store`).

    A URL that cannot be opened raises `InvalidURL`: that is a configuration mistake.
    """
    text = os.fspath(url)
    return CacheStoreExampleDatabase(Session(text, namespace=Namespace()).store, prefix, url=text)
