"""``open_store(url)``: from a URL or a plain path to a `CacheStore`.

Third-party backends register a factory under the ``cachekit.stores`` entry-point group,
named by URL scheme: ``myscheme = mypackage.store:open_myscheme``, a callable taking the
URL and returning a `CacheStore`. Registered schemes take precedence over built-in ones.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
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
        if text.lower().startswith("file:/"):
            return LocalStore(text[len("file:") :])
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

    try:
        return FsspecStore.from_url(text)
    except ImportError as error:  # a filesystem that needs a library at construction
        raise InvalidURL(f"cannot open {redact_url(text)}: {error}") from error


#: ``scheme:`` at the start of a value: a URL, or a typo of one (``s3:/bucket``).
_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.DOTALL)


def _scheme(text: str) -> str | None:
    """The URL scheme, or None for a plain path. A value that looks like a URL but is
    not one (``s3:/bucket``, ``memory:tests``, ``nosuch:/x``) is `InvalidURL`, naming the
    likely fix: taken for a path, it would silently become a local directory."""
    if "://" not in text:
        _refuse_url_lookalike(text)
        return None
    scheme = text.split("://", 1)[0].lower()
    if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidURL(f"not a store URL or path: {redact_url(text)!r}")
    return scheme


def _refuse_url_lookalike(text: str) -> None:
    """`InvalidURL` for ``scheme:rest`` where the scheme is one a store URL can have or
    the rest starts with ``/``; ``./a:b`` and ``a:b`` stay paths."""
    match = _SCHEME_PREFIX.fullmatch(text)
    if match is None:
        return
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "file" and rest.startswith("/"):
        return  # file:/path, a valid file URL: opened as the path (see open_store)
    if not (rest.startswith("/") or _is_known_scheme(scheme)):
        return
    fix = f"{scheme}://{rest.lstrip('/')}"
    raise InvalidURL(
        f"not a store URL or path: {redact_url(text)!r}; did you mean {redact_url(fix)!r}? "
        "(a local directory whose name has a colon: start it with './')"
    )


def _is_known_scheme(scheme: str) -> bool:
    """Whether ``scheme`` names a store: built in, registered, or an fsspec protocol."""
    if scheme in ("file", "memory") or _registered_factory(scheme) is not None:
        return True
    from fsspec.registry import known_implementations  # noqa: PLC0415 (only for a colon)

    return scheme in known_implementations


def _registered_factory(scheme: str) -> Callable[[str], CacheStore] | None:
    """The factory a third-party distribution registered for ``scheme``, loaded lazily."""
    point = _registered_schemes(_installed_state()).get(scheme)
    if point is None:
        return None
    factory: Callable[[str], CacheStore] = point.load()
    return factory


def _installed_state() -> tuple[tuple[str, float], ...]:
    """Each ``sys.path`` entry with its modification time: what installing or removing a
    distribution changes (as `importlib.metadata` itself tells when to list again)."""
    state = []
    for entry in sys.path:
        try:
            modified = os.stat(entry or ".").st_mtime
        except OSError:
            modified = -1.0
        state.append((entry, modified))
    return tuple(state)


@functools.lru_cache(maxsize=4)
def _registered_schemes(installed: tuple[tuple[str, float], ...]) -> dict[str, EntryPoint]:
    """Scheme -> the first entry point registered for it, for the distributions
    ``installed`` describes. Scanning every distribution's entry points takes 5 to 10 ms,
    and a run asks for a URL's scheme several times: once per state of ``sys.path``."""
    schemes: dict[str, EntryPoint] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        schemes.setdefault(point.name, point)
    return schemes


def is_in_process(url: str | os.PathLike[str]) -> bool:
    """Whether the store a URL names lives on this machine and needs no client library:
    a plain path, ``file://`` or ``memory://`` (when no third-party backend claims it)."""
    text = os.fspath(url)
    try:
        scheme = _scheme(text)
    except InvalidURL:
        return True  # opening it here reports the error at once, with no helper process
    if scheme is None:
        return True
    return scheme in ("file", "memory") and _registered_factory(scheme) is None
