"""``open_store(url)``: from a URL or a plain path to a `CacheStore`.

Third-party backends register a factory under the ``cachekit.stores`` entry-point group,
named by URL scheme: ``myscheme = mypackage.store:open_myscheme``, a callable taking the
URL and returning a `CacheStore`. Registered schemes take precedence over built-in ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from cachekit.errors import InvalidURL
from cachekit.stores.base import CacheStore
from cachekit.stores.local import LocalStore
from cachekit.stores.memory import MemoryStore
from cachekit.urls import redact_url

ENTRY_POINT_GROUP = "cachekit.stores"


def open_store(url: str | os.PathLike[str]) -> CacheStore:
    """Open the store a URL names.

    - a plain path, or ``file://PATH``: `LocalStore`;
    - ``memory://NAME``: the in-process `MemoryStore` of that name;
    - a scheme registered under the ``cachekit.stores`` entry-point group: its factory;
    - any other fsspec protocol (``s3://``, ``gs://``, ``az://``, ``abfs://``, ...):
      `FsspecStore`, with storage options from the URL query and fsspec's environment
      configuration (``FSSPEC_S3_ENDPOINT_URL`` and the like).
    """
    text = os.fspath(url)
    if not text:
        raise InvalidURL("a store URL must not be empty")
    scheme = _scheme(text)
    if scheme is None:
        return LocalStore(text)
    factory = _registered_factory(scheme)
    if factory is not None:
        return factory(text)
    if scheme == "file":
        return LocalStore(urlsplit(text).path or "/")
    if scheme == "memory":
        name = text.split("://", 1)[1].strip("/")
        if not name:
            raise InvalidURL("memory:// needs a name, such as memory://tests")
        return MemoryStore.named(name)
    from cachekit.stores.fsspec import FsspecStore  # noqa: PLC0415 (needs fsspec only here)

    return FsspecStore.from_url(text)


def _scheme(text: str) -> str | None:
    """The URL scheme, or None for a plain path (``C:\\x`` included)."""
    if "://" not in text:
        return None
    scheme = text.split("://", 1)[0].lower()
    if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidURL(f"not a store URL or path: {redact_url(text)!r}")
    return scheme


def _registered_factory(scheme: str) -> Callable[[str], CacheStore] | None:
    """The factory a third-party distribution registered for ``scheme``, loaded lazily."""
    for point in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        factory: Callable[[str], CacheStore] = point.load()
        return factory
    return None


def is_in_process(url: str | os.PathLike[str]) -> bool:
    """Whether the store a URL names lives on this machine and needs no client library:
    a plain path, ``file://`` or ``memory://`` (when no third-party backend claims it)."""
    text = os.fspath(url)
    try:
        scheme = _scheme(text)
    except InvalidURL:
        return False  # opening it reports the error
    if scheme is None:
        return True
    return scheme in ("file", "memory") and _registered_factory(scheme) is None
