"""Any other fsspec filesystem (``memory://``, ``file://``, ...): plain reads and writes.

fsspec has no generic compare-and-swap (``mode="create"`` is exists-then-write there), so
this backend declares neither create-only nor compare-and-swap and refuses conditional
writes rather than overwrite. Versions are content hashes: equal bytes, equal version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cachekit.errors import CacheError, StoreUnavailable, UnsupportedOperation
from cachekit.stores.base import Capabilities, Entry
from cachekit.stores.fsspec.backend import describe_error
from cachekit.urls import redact_url


def content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GenericBackend:
    """Whole-file reads and writes through the filesystem's public sync API."""

    def __init__(self, fs: Any, url: str) -> None:
        self.fs = fs
        self.url = redact_url(url)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(create_only=False, compare_and_swap=False)

    def get(self, path: str) -> Entry | None:
        try:
            data = bytes(self.fs.cat_file(path))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as error:
            raise self._unavailable(error) from error
        return Entry(data, content_version(data))

    def get_many(self, paths: Sequence[str]) -> dict[str, Entry]:
        entries = {path: self.get(path) for path in paths}
        return {path: entry for path, entry in entries.items() if entry is not None}

    def put(self, path: str, data: bytes, *, if_absent: bool, if_version: str | None) -> str:
        if if_absent or if_version is not None:
            raise UnsupportedOperation(
                f"{self.fs.protocol!r} filesystems have no atomic conditional write; "
                f"refusing to write {path!r} in {self.url} conditionally"
            )
        try:
            self.fs.pipe_file(path, data)
        except OSError as error:
            raise self._unavailable(error) from error
        return content_version(data)

    def delete_many(self, paths: Sequence[str]) -> None:
        for path in paths:
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                continue
            except OSError as error:
                raise self._unavailable(error) from error

    def list_paths(self, path_prefix: str) -> list[str]:
        directory = path_prefix.rpartition("/")[0]
        try:
            found: list[str] = self.fs.find(directory)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise self._unavailable(error) from error
        return [path for path in found if path.startswith(path_prefix)]

    def _unavailable(self, error: OSError) -> CacheError:
        return StoreUnavailable(f"store {self.url} is unavailable: {describe_error(error)}")
