"""`FsspecStore`: the CacheStore protocol over any fsspec filesystem.

Reads, conditional writes and deletes go through a small backend per protocol
(``_s3``, ``_gcs``, ``_azure``; ``_generic`` for the rest), because fsspec itself has no
compare-and-swap. Each operation is one request (a
listing may page); nothing checks existence before reading or writing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import fsspec
from fsspec.config import apply_config

from cachekit.errors import InvalidKey, InvalidURL, StoreUnavailable
from cachekit.stores.base import Capabilities, Entry
from cachekit.stores.extras import EXTRAS, missing_library
from cachekit.stores.fsspec.backend import MAX_CONCURRENCY, Backend
from cachekit.stores.keys import validate_key, validate_prefix
from cachekit.urls import redact_url

#: Backend class per extra (`cachekit.stores.extras.EXTRAS`), as "module:class", imported
#: only when used.
_BACKENDS = {
    "s3": "cachekit.stores.fsspec.s3:S3Backend",
    "gcs": "cachekit.stores.fsspec.gcs:GcsBackend",
    "azure": "cachekit.stores.fsspec.azure:AzureBackend",
}
_GENERIC_BACKEND = "cachekit.stores.fsspec.generic:GenericBackend"
#: Options cachekit sets unless the URL or fsspec's configuration sets them: a cache
#: that cannot be reached should fail within seconds, not after a minute of retries; and
#: the connection pool is as large as ``get_many`` is concurrent (botocore's default of 10
#: connections would queue the rest: 768 GETs at 50 ms took 5.3 s instead of 2.8 s).
_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {
        "config_kwargs": {
            "retries": {"mode": "standard", "total_max_attempts": 3},
            "max_pool_connections": MAX_CONCURRENCY,
        }
    },
}


class FsspecStore:
    """Keys under ``root`` (``bucket/prefix``) of an fsspec filesystem.

    The store owns the filesystem only when `from_url` made it; `close` then drops it, and
    the filesystem's own finalizer closes its connections.
    """

    def __init__(self, fs: Any, root: str, *, url: str | None = None) -> None:
        self._fs: Any = fs
        self._root = str(fs._strip_protocol(root)).rstrip("/")
        if not self._root.strip("/"):
            raise InvalidURL(f"an fsspec store needs a root (a bucket at least), not {root!r}")
        self._url = redact_url(url or str(fs.unstrip_protocol(self._root)))
        self._backend: Backend | None = _backend_for(fs, self._url)

    @classmethod
    def from_url(cls, url: str) -> FsspecStore:
        """Open ``protocol://bucket/prefix?option=value&...``.

        Query values become storage options (``true``/``false`` become booleans), on top
        of fsspec's own configuration (``FSSPEC_S3_ENDPOINT_URL`` and the like).
        """
        parts = urlsplit(url)
        protocol = parts.scheme.lower()
        filesystem_class = _filesystem_class(protocol, url)
        options = _storage_options(protocol, filesystem_class, parts.query, url)
        options.setdefault("skip_instance_cache", True)  # the store owns its filesystem
        try:
            fs = filesystem_class(**options)
        except (TypeError, ValueError) as error:
            raise InvalidURL(f"cannot open {redact_url(url)}: {error}") from error
        return cls(fs, f"{parts.netloc}{parts.path}", url=url)

    @property
    def capabilities(self) -> Capabilities:
        return self._live_backend.capabilities

    def get(self, key: str) -> Entry | None:
        return self._live_backend.get(self._path(key))

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        paths = {self._path(key): key for key in keys}
        found = self._live_backend.get_many(list(paths)) if paths else {}
        return {paths[path]: entry for path, entry in found.items()}

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        path = self._path(key)
        return self._live_backend.put(path, bytes(data), if_absent=if_absent, if_version=if_version)

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        paths = [self._path(key) for key in keys]
        self._live_backend.delete_many(paths)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        paths = self._live_backend.list_paths(f"{self._root}/{prefix}")
        keys = (self._key_of(path) for path in paths)
        return sorted(key for key in keys if key is not None and key.startswith(prefix))

    def close(self) -> None:
        """Drop the filesystem; later use raises `StoreUnavailable`."""
        self._fs = self._backend = None

    def __repr__(self) -> str:
        return f"FsspecStore({self._url!r})"

    @property
    def _live_backend(self) -> Backend:
        if self._backend is None:
            raise StoreUnavailable(f"{self!r} is closed")
        return self._backend

    def _path(self, key: str) -> str:
        return f"{self._root}/{validate_key(key)}"

    def _key_of(self, path: str) -> str | None:
        """The key of a listed path, or None for foreign objects no key can name."""
        stripped = str(self._fs._strip_protocol(path))
        if not stripped.startswith(self._root + "/"):
            return None
        try:
            return validate_key(stripped.removeprefix(self._root + "/"))
        except InvalidKey:
            return None


def _backend_for(fs: Any, url: str) -> Backend:
    """The conditional-write backend for ``fs``'s protocol; the generic one by default."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    extras = [EXTRAS[protocol] for protocol in protocols if protocol in EXTRAS]
    spec = _BACKENDS[extras[0]] if extras else _GENERIC_BACKEND
    module_name, class_name = spec.split(":")
    backend: Backend = getattr(importlib.import_module(module_name), class_name)(fs, url)
    return backend


def _filesystem_class(protocol: str, url: str) -> type[Any]:
    """fsspec's class for ``protocol``, or one clear `InvalidURL` saying what to install."""
    try:
        filesystem_class: type[Any] = fsspec.get_filesystem_class(protocol)
    except ImportError as error:
        if protocol in EXTRAS:
            raise missing_library(url) from error
        raise InvalidURL(f"cannot open {redact_url(url)}: {error}") from error
    except ValueError as error:
        raise InvalidURL(
            f"cannot open {redact_url(url)}: {protocol!r} is not a known fsspec protocol"
        ) from error
    return filesystem_class


def _storage_options(
    protocol: str, filesystem_class: type[Any], query: str, url: str
) -> dict[str, Any]:
    """The URL query's options over fsspec's configuration over cachekit's defaults."""
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in options:
            raise InvalidURL(f"option {name!r} given twice in {redact_url(url)}")
        options[name] = {"true": True, "false": False}.get(value.lower(), value)
    configured = apply_config(filesystem_class, options)
    return {**_DEFAULT_OPTIONS.get(EXTRAS.get(protocol, ""), {}), **configured}
