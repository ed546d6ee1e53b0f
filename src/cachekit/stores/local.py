"""A directory on local disk: atomic, durable writes and real compare-and-swap.

Every write goes to a temporary file in the target's own directory, is flushed and
fsynced, renamed over the target, and the directory is fsynced: a reader sees the old or
the new bytes, never a torn file, even if the writer is killed. Mutations of a directory
hold an exclusive ``flock`` on it, so a conditional write's check and its rename are one
step for every process using this store. The version of a file is its identity (inode,
modification time, size): each write creates a new inode, so any write changes it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cachekit.errors import InvalidKey, PreconditionFailed, StoreUnavailable
from cachekit.keys import validate_key, validate_prefix
from cachekit.stores.base import Capabilities, Entry

#: Temporary files start with this; listings skip them and keys may not use it.
TEMP_PREFIX = ".ck-tmp-"
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _version_of(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalStore:
    """Files under ``root``, one per key; keys' segments become directories."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        #: ``durable=False`` skips the fsyncs: still atomic, not crash-proof.
        self.root = Path(root).absolute()
        self._real_root = os.path.realpath(self.root)
        self._durable = durable

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def _path(self, key: str) -> Path:
        validate_key(key)
        if any(segment.startswith(TEMP_PREFIX) for segment in key.split("/")):
            raise InvalidKey(f"key segments must not start with {TEMP_PREFIX!r}: {key!r}")
        return self.root / key

    def get(self, key: str) -> Entry | None:
        path = self._path(key)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            return None
        except OSError as error:
            raise StoreUnavailable(f"cannot read {key!r} from {self.root}: {error}") from error
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            with os.fdopen(fd, "rb", closefd=False) as file:
                data = file.read()
            return Entry(data, _version_of(st))
        finally:
            os.close(fd)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        found = {}
        for key in keys:
            entry = self.get(key)
            if entry is not None:
                found[key] = entry
        return found

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        path = self._path(key)
        directory = self._make_directory(path.parent)
        with self._locked(directory) as dir_fd:
            if if_absent or if_version is not None:
                current = self._current_version(path)
                if if_absent and current is not None:
                    raise PreconditionFailed(f"{key!r} already exists")
                if if_version is not None and current != if_version:
                    raise PreconditionFailed(f"{key!r} is not at version {if_version!r}")
            temp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            try:
                with open(temp, "xb") as file:
                    file.write(data)
                    file.flush()
                    if self._durable:
                        os.fsync(file.fileno())
                    version = _version_of(os.fstat(file.fileno()))
                os.replace(temp, path)
            except IsADirectoryError as error:
                temp.unlink(missing_ok=True)
                raise InvalidKey(f"{key!r} is a prefix of other keys, not a value") from error
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            if self._durable:
                os.fsync(dir_fd)
            return version

    def delete(self, key: str) -> None:
        path = self._path(key)
        if not path.parent.is_dir():
            return
        with self._locked(path.parent) as dir_fd:
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError):
                return
            if self._durable:
                os.fsync(dir_fd)

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        start = prefix.rpartition("/")[0]
        found = [key for key in self._walk(self.root / start, start) if key.startswith(prefix)]
        return sorted(found)

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _walk(self, directory: Path, relative: str) -> Iterator[str]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            key = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key)
            elif entry.is_file(follow_symlinks=False):
                yield key

    def _current_version(self, path: Path) -> str | None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        return _version_of(st) if stat.S_ISREG(st.st_mode) else None

    def _make_directory(self, directory: Path) -> Path:
        """Create ``directory`` (durably) and check it resolves inside the root."""
        if not directory.is_dir():
            missing = []
            walk = directory
            while not walk.exists() and walk != walk.parent:
                missing.append(walk)
                walk = walk.parent
            for new in reversed(missing):
                try:
                    new.mkdir()
                except FileExistsError:
                    continue
                if self._durable:
                    self._fsync_directory(new.parent)
            if not directory.is_dir():
                raise InvalidKey(f"{directory} lies below a key that holds a value")
        real = os.path.realpath(directory)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise InvalidKey(f"{directory} resolves outside the store's root {self.root}")
        return directory

    @staticmethod
    def _fsync_directory(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _locked(self, directory: Path) -> Iterator[int]:
        """Hold an exclusive lock on ``directory`` and yield its open descriptor."""
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock
