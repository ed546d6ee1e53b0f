"""A directory on local disk: atomic, durable writes and real compare-and-swap.

Every write goes to a temporary file in the target's own directory, is flushed and
fsynced, renamed over the target, and the directory is fsynced: a reader sees the old or
the new bytes, never a torn file, even if the writer is killed. Mutations of a directory
hold an exclusive ``flock`` on it, so a conditional write's check and its rename are one
step for every process using this store.

Nothing below the root is reached through a symbolic link: writes, deletes and listings
walk the key's directories one descriptor at a time with ``O_NOFOLLOW``, and a read
checks where the file it opened really is. A link planted in the store can neither
redirect a write nor leak a file from elsewhere. Files are opened without blocking and
read only if they are regular files: a FIFO or a device planted in the store is no
value, and never hangs a read or a compaction. Names that are not UTF-8, or that no key
could have, are left out of listings (foreign, not an error).

A version is the file's identity (inode, modification time, size) plus a CRC-32 of its
bytes: inodes are reused at once and timestamps can be coarse, so identity alone could
repeat and let a stale compare-and-swap through.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cachekit.errors import InvalidKey, PreconditionFailed, StoreUnavailable
from cachekit.stores.base import Capabilities, Entry
from cachekit.stores.keys import validate_key, validate_prefix

#: Temporary files start with this; listings skip them and keys may not use it.
TEMP_PREFIX = ".ck-tmp-"
#: Seconds after which a temporary file is a killed writer's: a live writer renames its
#: own within moments (an hour leaves room for a huge value on a slow disk).
STALE_TEMPORARY_AGE = 3600.0
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR)
_PROC_FD = "/proc/self/fd/" if sys.platform.startswith("linux") else None


def _version_of(st: os.stat_result, data: bytes) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}-{zlib.crc32(data):08x}"


def _read_all(fd: int, size_hint: int) -> bytes:
    """Read a whole file from ``fd`` without a buffered reader (faster for small files)."""
    data = os.read(fd, size_hint + 1)
    if len(data) <= size_hint:
        return data
    chunks = [data]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class LocalStore:
    """Files under ``root``, one per key; keys' segments become directories."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        #: ``durable=False`` skips the fsyncs: still atomic, not crash-proof.
        self.root = Path(root).absolute()
        self._root_text = str(self.root)
        #: The root itself may be a link; what lies below it may not.
        self._real_root = os.path.realpath(self.root)
        self._durable = durable

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        try:
            fd = os.open(f"{self._root_text}/{self._check(key)}", _FILE_FLAGS)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.EISDIR, *_LINK_ERRNOS):
                return None
            raise StoreUnavailable(f"cannot read {key!r} from {self.root}: {error}") from error
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not self._opened_inside_root(fd, key):
                return None
            data = _read_all(fd, st.st_size)
            return Entry(data, _version_of(st, data))
        finally:
            os.close(fd)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        found = {}
        for key in keys:
            entry = self.get(key)
            if entry is not None:
                found[key] = entry
        return found

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        start = prefix.rpartition("/")[0]
        with self._directory(start) as fd:
            if fd is None:
                return []
            keys = [key for key in self._scan(fd, start) if key.startswith(prefix)]
        return sorted(keys)

    # -- writes --------------------------------------------------------------------------

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        directory, _, name = self._check(key).rpartition("/")
        with self._directory(directory, create=True) as dir_fd:
            assert dir_fd is not None  # created
            fcntl.flock(dir_fd, fcntl.LOCK_EX)  # released when the descriptor closes
            if if_absent or if_version is not None:
                current = self._version_at(dir_fd, name)
                if if_absent and current is not None:
                    raise PreconditionFailed(f"{key!r} already exists")
                if if_version is not None and current != if_version:
                    raise PreconditionFailed(f"{key!r} is not at version {if_version!r}")
            return self._replace(dir_fd, name, key, data)

    def delete(self, key: str) -> None:
        directory, _, name = self._check(key).rpartition("/")
        with self._directory(directory) as dir_fd:
            if dir_fd is None:
                return
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            try:
                os.unlink(name, dir_fd=dir_fd)
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                return  # Linux says EISDIR for a directory, macOS EPERM
            if self._durable:
                os.fsync(dir_fd)

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def remove_stale_temporaries(
        self, prefix: str = "", *, older_than: float = STALE_TEMPORARY_AGE, dry_run: bool = False
    ) -> tuple[str, ...]:
        """Delete the temporary files under ``prefix`` last modified over ``older_than``
        seconds ago: what writers killed between writing and renaming left behind, which
        no key names, so nothing else ever removes them. Returns their paths below the
        root (what would be deleted, with ``dry_run``)."""
        validate_prefix(prefix)
        cutoff = time.time() - older_than
        start = prefix.rpartition("/")[0]
        with self._directory(start) as fd:
            if fd is None:
                return ()
            stale = sorted(self._remove_temporaries(fd, start, prefix, cutoff, dry_run=dry_run))
            return tuple(stale)

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    def __repr__(self) -> str:
        return f"LocalStore({self._root_text!r})"

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _check(key: str) -> str:
        validate_key(key)
        if TEMP_PREFIX in key and any(s.startswith(TEMP_PREFIX) for s in key.split("/")):
            raise InvalidKey(f"key segments must not start with {TEMP_PREFIX!r}: {key!r}")
        return key

    def _opened_inside_root(self, fd: int, key: str) -> bool:
        """Whether the file open on ``fd`` lies inside the root (no link was followed)."""
        if _PROC_FD is not None:
            try:
                real = os.readlink(f"{_PROC_FD}{fd}")
            except OSError:
                real = os.path.realpath(f"{self._root_text}/{key}")
        else:
            real = os.path.realpath(f"{self._root_text}/{key}")
        return real.startswith(self._real_root + os.sep)

    @contextmanager
    def _directory(self, relative: str, *, create: bool = False) -> Iterator[int | None]:
        """An open descriptor of ``relative`` below the root, reached without following
        any link, creating missing directories if asked; None if it does not exist."""
        fd: int | None
        try:
            fd = os.open(self._root_text, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except FileNotFoundError:
            if not create:
                yield None
                return
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._root_text, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        try:
            for segment in relative.split("/") if relative else ():
                parent, fd = fd, None  # closed below whatever happens; fd is the child's
                try:
                    fd = self._open_child_directory(parent, segment, relative, create=create)
                finally:
                    os.close(parent)
                if fd is None:
                    break
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _open_child_directory(
        self, parent: int, name: str, relative: str, *, create: bool
    ) -> int | None:
        try:
            return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as error:
            if error.errno in _LINK_ERRNOS:
                if not create:
                    return None
                raise InvalidKey(
                    f"{relative!r} goes through a link or lies below a key that holds a value"
                ) from error
            raise
        try:
            os.mkdir(name, dir_fd=parent)
        except FileExistsError:
            pass  # another writer made it first
        else:
            if self._durable:
                os.fsync(parent)
        return self._open_child_directory(parent, name, relative, create=False) or _missing(
            relative
        )

    def _version_at(self, dir_fd: int, name: str) -> str | None:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.EISDIR, *_LINK_ERRNOS):
                return None
            raise
        try:
            st = os.fstat(fd)
            return _version_of(st, _read_all(fd, st.st_size)) if stat.S_ISREG(st.st_mode) else None
        finally:
            os.close(fd)

    def _replace(self, dir_fd: int, name: str, key: str, data: bytes) -> str:
        """Write ``data`` to a temporary file and rename it over ``name``, durably."""
        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._durable:
                    os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as error:
            os.unlink(temp, dir_fd=dir_fd)
            if isinstance(error, IsADirectoryError):
                raise InvalidKey(f"{key!r} is a prefix of other keys, not a value") from error
            raise
        if self._durable:
            os.fsync(dir_fd)
        return _version_of(st, data)

    def _scan(self, dir_fd: int, relative: str) -> Iterator[str]:
        """Keys of the regular files below ``dir_fd``; links and temporary files skipped."""
        with os.scandir(dir_fd) as entries:
            listed = [
                (
                    entry.name,
                    entry.is_dir(follow_symlinks=False),
                    entry.is_file(follow_symlinks=False),
                )
                for entry in entries
            ]
        for name, is_directory, is_file in listed:
            if name.startswith(TEMP_PREFIX) or not (is_file or is_directory):
                continue
            key = f"{relative}/{name}" if relative else name
            if not _is_key_segment(name):
                continue  # not UTF-8 (undecodable bytes), or no key could name it
            if is_file:
                yield key
            else:
                with self._child(dir_fd, name) as child:
                    if child is not None:
                        yield from self._scan(child, key)

    def _remove_temporaries(
        self, dir_fd: int, relative: str, prefix: str, cutoff: float, *, dry_run: bool
    ) -> Iterator[str]:
        """Paths of the temporary files below ``dir_fd`` (starting with ``prefix``) older
        than ``cutoff``, deleted."""
        with os.scandir(dir_fd) as entries:
            listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for name, is_directory in listed:
            path = f"{relative}/{name}" if relative else name
            if is_directory:
                with self._child(dir_fd, name) as child:
                    if child is not None:
                        yield from self._remove_temporaries(
                            child, path, prefix, cutoff, dry_run=dry_run
                        )
                continue
            if not name.startswith(TEMP_PREFIX) or not path.startswith(prefix):
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if st.st_mtime >= cutoff:
                    continue
                if not dry_run:
                    os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                continue  # renamed into place, or removed by another gc
            yield path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    @staticmethod
    @contextmanager
    def _child(dir_fd: int, name: str) -> Iterator[int | None]:
        """The directory ``name`` below ``dir_fd``, opened without following a link; None
        if it was removed, or swapped for a link, since the scan."""
        try:
            child = os.open(name, _DIRECTORY_FLAGS, dir_fd=dir_fd)
        except OSError:
            yield None
            return
        try:
            yield child
        finally:
            os.close(child)


def _is_key_segment(name: str) -> bool:
    """Whether a file name can be a segment of a key: valid UTF-8 (``os.scandir`` turns
    other bytes into lone surrogates) and a valid key by itself."""
    try:
        name.encode("utf-8")
        validate_key(name)
    except (UnicodeEncodeError, InvalidKey):
        return False
    return True


def _missing(relative: str) -> int:
    raise StoreUnavailable(f"directory {relative!r} vanished while being created")
