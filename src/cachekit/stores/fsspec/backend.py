"""What `FsspecStore` asks of a protocol-specific backend, and the shared async plumbing.

A backend works on full filesystem paths (``bucket/root/key``); the store owns keys,
validation and listing. Remote backends are async: their sync methods run coroutines on
the filesystem's own event loop, so ``get_many`` and ``delete_many`` can be concurrent.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from fsspec.asyn import sync

from cachekit.errors import CacheError, StoreUnavailable
from cachekit.stores.base import Capabilities, Entry
from cachekit.urls import redact_url

#: Requests in flight at once for ``get_many`` and ``delete_many``.
MAX_CONCURRENCY = 32

_T = TypeVar("_T")
_R = TypeVar("_R")
_URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


class Backend(Protocol):
    """One filesystem protocol's reads, conditional writes and deletes."""

    @property
    def capabilities(self) -> Capabilities: ...

    def get(self, path: str) -> Entry | None: ...

    def get_many(self, paths: Sequence[str]) -> dict[str, Entry]: ...

    def put(self, path: str, data: bytes, *, if_absent: bool, if_version: str | None) -> str: ...

    def delete_many(self, paths: Sequence[str]) -> None: ...

    def list_paths(self, path_prefix: str) -> list[str]:
        """Paths of the objects whose path starts with ``path_prefix``, in any order."""


def describe_error(error: BaseException) -> str:
    """``error`` as text fit for a message: any URL inside it is redacted."""
    text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def gather_bounded(
    function: Callable[[_T], Awaitable[_R]], items: Iterable[_T], limit: int = MAX_CONCURRENCY
) -> list[_R]:
    """``function`` over ``items`` concurrently, at most ``limit`` at a time, in order.

    The first failure cancels the rest, so a dead endpoint costs one timeout, not many.
    """
    semaphore = asyncio.Semaphore(limit)

    async def bounded(item: _T) -> _R:
        async with semaphore:
            return await function(item)

    tasks = [asyncio.ensure_future(bounded(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


class AsyncBackend:
    """Base of the remote backends: sync calls bridged to the filesystem's event loop.

    Subclasses implement `_get`, `_put` and `_delete_many` as coroutines, and list the
    exception types that mean "the storage could not be reached" in `unavailable_errors`;
    those become `StoreUnavailable` naming the (redacted) store URL. Anything else is a bug
    and propagates unchanged.
    """

    #: Library exceptions meaning network, timeout or credential failure.
    unavailable_errors: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)

    def __init__(self, fs: Any, url: str) -> None:
        self.fs = fs
        self.url = redact_url(url)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def get(self, path: str) -> Entry | None:
        return self._run(self._get, path)

    def get_many(self, paths: Sequence[str]) -> dict[str, Entry]:
        entries = self._run(gather_bounded, self._get, paths)
        return {
            path: entry for path, entry in zip(paths, entries, strict=True) if entry is not None
        }

    def put(self, path: str, data: bytes, *, if_absent: bool, if_version: str | None) -> str:
        return self._run(self._put, path, data, if_absent, if_version)

    def delete_many(self, paths: Sequence[str]) -> None:
        if paths:
            self._run(self._delete_many, paths)

    def list_paths(self, path_prefix: str) -> list[str]:
        return self._run(self._list, path_prefix)

    async def _get(self, path: str) -> Entry | None:
        raise NotImplementedError

    async def _put(self, path: str, data: bytes, if_absent: bool, if_version: str | None) -> str:
        raise NotImplementedError

    async def _delete_many(self, paths: Sequence[str]) -> None:
        raise NotImplementedError

    async def _list(self, path_prefix: str) -> list[str]:
        raise NotImplementedError

    def unavailable(self, error: BaseException, what: str = "") -> StoreUnavailable:
        """The `StoreUnavailable` to raise for ``error``, naming the redacted URL."""
        about = f" ({what})" if what else ""
        return StoreUnavailable(f"store {self.url} is unavailable{about}: {describe_error(error)}")

    def _run(self, function: Callable[..., Awaitable[_R]], *args: Any) -> _R:
        try:
            result: _R = sync(self.fs.loop, function, *args)
        except CacheError:
            raise
        except self.unavailable_errors as error:
            raise self.unavailable(error) from error
        return result
