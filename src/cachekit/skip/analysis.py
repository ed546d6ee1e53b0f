"""What each file contributes to keys (content hash and imports), and the JSON file that
keeps it between processes, valid while the file's stat is unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import cattrs

from cachekit.files import write_atomically
from cachekit.skip.imports import import_specs

#: Identifies cachekit's analysis cache files (a foreign JSON file is ignored).
CACHE_FORMAT = "cachekit.skip.fingerprint"
CACHE_VERSION = 1
#: What a file's recorded imports depend on besides its bytes: what parses (and so what
#: counts as a syntax error) differs between Python versions.
PARSER = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
#: A file modified this recently may change again within its timestamp's resolution
#: without its stat changing (the "racy git" problem): its analysis is used for this
#: session but not written to the cache file.
RACY_NANOSECONDS = 2_000_000_000

_converter = cattrs.Converter()


@attrs.frozen
class FileRecord:
    """What one file contributes, valid while its stat says it is unchanged."""

    mtime_ns: int
    size: int
    ino: int
    #: sha256 of the content, hex.
    digest: str
    #: Imported module names: ``"a.b.c"`` absolute, ``".x"``/``"..pkg.z"`` relative to
    #: the file's directory. Empty when the file does not parse; None when the file
    #: was only hashed (a data file).
    imports: tuple[str, ...] | None


@attrs.frozen
class _CacheFile:
    format: str
    version: int
    parser: str
    files: dict[str, FileRecord]


class FileAnalyses:
    """Each file's record for one session: from memory, else from the cache file while
    the file's stat still matches, else by reading the file again.

    Files are read through ``read`` only (the `Fingerprinter.read` hook).
    """

    def __init__(self, cache_file: Path | None, *, read: Callable[[str], bytes]) -> None:
        self.cache_file = cache_file
        self._read = read
        self._hints: dict[str, FileRecord] = self._load_cache()
        self._records: dict[str, FileRecord] = {}
        self._racy: set[str] = set()
        self._dirty = False

    def record(self, path: str, *, parse: bool) -> FileRecord:
        """``path``'s record (a real path); ``parse`` also wants its imports."""
        record = self._records.get(path)
        if record is not None and (record.imports is not None or not parse):
            return record
        try:
            status = os.stat(path)
            signature = (status.st_mtime_ns, status.st_size, status.st_ino)
            hint = self._hints.get(path) if record is None else None
            if (
                hint is not None
                and (hint.mtime_ns, hint.size, hint.ino) == signature
                and (hint.imports is not None or not parse)
            ):
                self._records[path] = hint
                return hint
            data = self._read(path)
        except OSError as error:
            # Vanished or unreadable since it was listed: a key unlike any readable
            # content, never written to the cache file.
            record = FileRecord(-1, -1, -1, f"unreadable: {error.strerror}", ())
            self._records[path] = record
            self._racy.add(path)
            return record
        record = FileRecord(
            *signature,
            digest=hashlib.sha256(data).hexdigest(),
            imports=import_specs(data) if parse else None,
        )
        self._records[path] = record
        self._dirty = True
        if abs(time.time_ns() - status.st_mtime_ns) < RACY_NANOSECONDS:
            self._racy.add(path)
        return record

    def imports(self, path: str) -> tuple[str, ...]:
        """The modules ``path`` imports (`cachekit.skip.imports.import_specs`)."""
        imports = self.record(path, parse=True).imports
        assert imports is not None
        return imports

    def save(self) -> None:
        """Write the records to ``cache_file`` (atomically), if one was given and anything
        new was read."""
        if self.cache_file is None or not self._dirty:
            return
        files = {
            path: record
            for path, record in self._hints.items()
            if path not in self._records and os.path.exists(path)
        }
        files.update(
            (path, record) for path, record in self._records.items() if path not in self._racy
        )
        document = _CacheFile(CACHE_FORMAT, CACHE_VERSION, PARSER, dict(sorted(files.items())))
        data = json.dumps(_converter.unstructure(document), separators=(",", ":"))
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        # Not durable: a torn or stale file is detected (or caught by the stat check) and
        # costs a re-read, never a wrong key.
        write_atomically(self.cache_file, data.encode("utf-8"), durable=False)
        self._dirty = False

    def _load_cache(self) -> dict[str, FileRecord]:
        """The cache file's records, or nothing if it is missing, corrupt or foreign."""
        if self.cache_file is None:
            return {}
        try:
            data = json.loads(self.cache_file.read_bytes())
            if not (
                isinstance(data, dict)
                and data.get("format") == CACHE_FORMAT
                and data.get("version") == CACHE_VERSION
                and data.get("parser") == PARSER
            ):
                return {}
            document = _converter.structure(data, _CacheFile)
        except (
            OSError,
            ValueError,
            TypeError,
            KeyError,
            RecursionError,
            cattrs.BaseValidationError,
        ):
            return {}
        return document.files
