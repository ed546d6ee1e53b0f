"""What each file contributes to keys (content hash, imports and, for Python files, the
hashes of their code outside and inside function bodies), and the JSON files that keep it
between processes, valid while the file's stat is unchanged.

Why the function indexes sit in a file of their own (``*.functions.json`` beside the
cache file), by content hash: a warm run keys every test file from the records alone, and
loading every function's hash with them would cost more than the keying itself. They are
read only when a caller asks for one (`FileAnalyses.functions`).

Why the files can be signed: CI runners start without a cache directory, so a project
keyed from an empty analysis cache pays a parse of every file (most of a run's keying),
and restoring the directory from the CI system's cache spares that. But an analysis is
trusted: one that said a test file imports nothing would let a record of it skip its
tests whatever changed. Signed with a key derived from the signing key
(`cachekit.skip.records.Secrets.sign_analysis`), a file that does not verify is ignored,
so whoever can write the CI cache but does not hold the key can make runs slower, never
make a test be skipped."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
import cattrs

import cachekit.collector as collector
from cachekit.files import write_atomically
from cachekit.skip.distributions import DistributionIndex, distribution_index
from cachekit.skip.functions import FunctionIndex, index_tree
from cachekit.skip.imports import imports_in_tree, parse_source

#: Identifies cachekit's analysis cache files (a foreign JSON file is ignored).
CACHE_FORMAT = "cachekit.skip.fingerprint"
CACHE_VERSION = 9
#: What a file's recorded imports depend on besides its bytes: what parses (and so what
#: counts as a syntax error) differs between Python versions.
PARSER = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
#: A file modified this recently may change again within its timestamp's resolution
#: without its stat changing (the "racy git" problem): its analysis is used for this
#: session but not written to the cache file.
RACY_NANOSECONDS = 2_000_000_000

#: The first line of a signed file: this, the signature (hex), a newline, the JSON.
SIGNED_PREFIX = b"cachekit-signed "
#: Signs a file's JSON bytes (`cachekit.skip.records.Secrets.sign_analysis`).
Signer = Callable[[bytes], str]

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
    #: For a ``.py`` file that parses (`cachekit.skip.functions`): the hash of its code
    #: without docstrings, comments or formatting (`FunctionIndex.code_digest`), of its
    #: skeleton, of its docstrings, and of those but its test functions'. None
    #: otherwise (then only ``digest`` counts).
    code: str | None = None
    skeleton: str | None = None
    docstrings: str | None = None
    shared_docstrings: str | None = None


@attrs.frozen
class _CacheFile:
    format: str
    version: int
    parser: str
    files: dict[str, FileRecord]
    distributions: DistributionIndex | None = None


@attrs.frozen
class _IndexFile:
    format: str
    version: int
    parser: str
    #: By the sha256 of the file's content (`FileRecord.digest`).
    indexes: dict[str, FunctionIndex]


_Document = TypeVar("_Document", _CacheFile, _IndexFile)
_ERRORS = (OSError, ValueError, TypeError, KeyError, RecursionError, cattrs.BaseValidationError)


class FileAnalyses:
    """Each file's record for one session: from memory, else from the cache file while
    the file's stat still matches, else by reading the file again.

    Files are read through ``read`` only (the `Fingerprinter.read` hook).
    """

    def __init__(
        self, cache_file: Path | None, *, read: Callable[[str], bytes], signer: Signer | None = None
    ) -> None:
        self.cache_file = cache_file
        self._read = read
        #: Given, the files are written signed and read only if they verify.
        self._signer = signer
        document = self._load_cache()
        self._hints: dict[str, FileRecord] = {} if document is None else document.files
        #: The distribution index the cache file holds, or the one read this session.
        self._distributions = None if document is None else document.distributions
        self._records: dict[str, FileRecord] = {}
        self._racy: set[str] = set()
        self._dirty = False
        #: Function indexes by content digest: those made this session, then (once one is
        #: asked for that was not) those of the index file.
        self._indexes: dict[str, FunctionIndex] = {}
        self._stored_indexes: dict[str, FunctionIndex] | None = None
        self._new_indexes = False
        #: Analysed records by (content digest, ``.py``), made when first needed.
        self._by_content: dict[tuple[str, bool], FileRecord] | None = None

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
        digest = hashlib.sha256(data).hexdigest()
        record = None
        if parse:
            known = self._same_content(digest, python=path.endswith(".py"))
            if known is not None:
                mtime_ns, size, ino = signature
                record = attrs.evolve(known, mtime_ns=mtime_ns, size=size, ino=ino)
            else:
                record = self._analyse(path, data, digest, signature)
        if record is None:
            record = FileRecord(*signature, digest=digest, imports=None)
        self._records[path] = record
        self._dirty = True
        if abs(time.time_ns() - status.st_mtime_ns) < RACY_NANOSECONDS:
            self._racy.add(path)
        return record

    def _same_content(self, digest: str, *, python: bool) -> FileRecord | None:
        """An analysis of the same content (``digest``) and kind (a ``.py`` file or not:
        only that and the bytes decide it), from the cache file or this session: a
        checkout, or a restored cache directory, changes every file's stat but few
        files' content; identical files (empty ``__init__.py``) are analysed once."""
        if self._by_content is None:
            self._by_content = {}
            for known_path, known in [*self._hints.items(), *self._records.items()]:
                if known.imports is not None and known.mtime_ns >= 0:
                    self._by_content[known.digest, known_path.endswith(".py")] = known
        return self._by_content.get((digest, python))

    def _analyse(
        self, path: str, data: bytes, digest: str, signature: tuple[int, int, int]
    ) -> FileRecord:
        """The record of a file read for its imports: one parse serves the imports and,
        for a ``.py`` file, its function index.

        Without the cyclic garbage collector meanwhile: a syntax tree is many objects in
        no cycle (reference counting frees it), whose allocation would start collections
        that traverse the whole heap of the process (pytest's, in a test run) to find
        nothing of it."""
        with collector.held_off():
            return self._analyse_tree(path, data, digest, signature)

    def _analyse_tree(
        self, path: str, data: bytes, digest: str, signature: tuple[int, int, int]
    ) -> FileRecord:
        tree = parse_source(data) if b"import" in data or path.endswith(".py") else None
        if tree is None:
            return FileRecord(*signature, digest=digest, imports=())
        imports = imports_in_tree(tree, data)
        index = None
        if path.endswith(".py"):
            try:
                index = index_tree(tree)
            except (RecursionError, MemoryError):  # too deep to dump: counted by bytes
                index = None
        if index is None:
            record = FileRecord(*signature, digest=digest, imports=imports)
        else:
            self._indexes[digest] = index
            self._new_indexes = True
            record = FileRecord(
                *signature,
                digest=digest,
                imports=imports,
                code=index.code_digest(),
                skeleton=index.skeleton,
                docstrings=index.docstrings,
                shared_docstrings=index.shared_docstrings,
            )
        if self._by_content is not None:
            self._by_content[digest, path.endswith(".py")] = record
        return record

    def distributions(self, installed: Sequence[tuple[str, str]]) -> DistributionIndex:
        """The `DistributionIndex` of ``installed`` (`installed_distributions`): the
        cached one while the installed distributions are the same, else read again."""
        index = self._distributions
        if index is None or index.installed != tuple(installed):
            index = self._distributions = distribution_index(installed)
            self._dirty = True
        return index

    def imports(self, path: str) -> tuple[str, ...]:
        """The modules ``path`` imports (`cachekit.skip.imports.import_specs`)."""
        imports = self.record(path, parse=True).imports
        assert imports is not None
        return imports

    def functions(self, path: str) -> FunctionIndex | None:
        """``path``'s function index as of its record (a real path), or None when it is
        no ``.py`` file that parses."""
        record = self.record(path, parse=True)
        if record.code is None:
            return None
        index = self._indexes.get(record.digest)
        if index is None:
            if self._stored_indexes is None:
                self._stored_indexes = self._load_indexes()
            index = self._stored_indexes.get(record.digest)
            if index is not None and index.code_digest() != record.code:
                index = None  # not the index of this record: made again below
        if index is None:
            # Its record came from the cache file but its index did not: the file is read
            # again, and must still be what the record says.
            try:
                data = self._read(path)
            except OSError:
                return None
            if hashlib.sha256(data).hexdigest() != record.digest:
                return None
            with collector.held_off():
                tree = parse_source(data)
                try:
                    index = None if tree is None else index_tree(tree)
                except (RecursionError, MemoryError):
                    index = None
            if index is None or index.code_digest() != record.code:
                return None
            self._new_indexes = True
        self._indexes[record.digest] = index
        return index

    def save(self) -> None:
        """Write the records to ``cache_file`` (atomically), if one was given and anything
        new was read."""
        if self.cache_file is None or not (self._dirty or self._new_indexes):
            return
        files = {
            path: record
            for path, record in self._hints.items()
            if path not in self._records and os.path.exists(path)
        }
        files.update(
            (path, record) for path, record in self._records.items() if path not in self._racy
        )
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        if self._dirty:
            document = _CacheFile(
                CACHE_FORMAT,
                CACHE_VERSION,
                PARSER,
                dict(sorted(files.items())),
                self._distributions,
            )
            self._write(self.cache_file, document, self._signer)
        if self._new_indexes:
            self._save_indexes(_index_file(self.cache_file), files)
        self._dirty = self._new_indexes = False

    def _save_indexes(self, path: Path, files: dict[str, FileRecord]) -> None:
        """Write the function indexes of the files in ``files``: those of this session and
        those already stored (others are dropped)."""
        if self._stored_indexes is None:
            self._stored_indexes = self._load_indexes()
        wanted = {record.digest for record in files.values() if record.code is not None}
        indexes = {
            digest: index
            for digest, index in (*self._stored_indexes.items(), *self._indexes.items())
            if digest in wanted
        }
        document = _IndexFile(
            CACHE_FORMAT + ".functions", CACHE_VERSION, PARSER, dict(sorted(indexes.items()))
        )
        self._write(path, document, self._signer)

    @staticmethod
    def _write(path: Path, document: _CacheFile | _IndexFile, signer: Signer | None) -> None:
        data = json.dumps(_converter.unstructure(document), separators=(",", ":")).encode()
        if signer is not None:
            data = SIGNED_PREFIX + signer(data).encode() + b"\n" + data
        # Not durable: a torn or stale file is detected (or caught by the stat check) and
        # costs a re-read, never a wrong key.
        write_atomically(path, data, durable=False)

    def _load_cache(self) -> _CacheFile | None:
        """The cache file, or None if it is missing, corrupt or foreign."""
        if self.cache_file is None:
            return None
        return _load(self.cache_file, CACHE_FORMAT, _CacheFile, self._signer)

    def _load_indexes(self) -> dict[str, FunctionIndex]:
        """The index file's function indexes, or nothing if it is missing, corrupt or
        foreign. An index is used only for a file whose content has its digest."""
        if self.cache_file is None:
            return {}
        document = _load(
            _index_file(self.cache_file), CACHE_FORMAT + ".functions", _IndexFile, self._signer
        )
        return {} if document is None else document.indexes


def _index_file(cache_file: Path) -> Path:
    """Where the function indexes of ``cache_file``'s records are kept."""
    return cache_file.with_name(cache_file.stem + ".functions.json")


def _load(
    path: Path, expected_format: str, kind: type[_Document], signer: Signer | None
) -> _Document | None:
    """The document in ``path``, or None if it is missing, corrupt, foreign or, with a
    ``signer``, not signed by it."""
    try:
        body = _verified(path.read_bytes(), signer)
        if body is None:
            return None
        data = json.loads(body)
        if not (
            isinstance(data, dict)
            and data.get("format") == expected_format
            and data.get("version") == CACHE_VERSION
            and data.get("parser") == PARSER
        ):
            return None
        return _converter.structure(data, kind)
    except _ERRORS:
        return None


def _verified(data: bytes, signer: Signer | None) -> bytes | None:
    """The JSON of a file's bytes: with a ``signer``, only if signed by it; without one,
    signed or not (the cache directory is trusted then, as it always was)."""
    if not data.startswith(SIGNED_PREFIX):
        return data if signer is None else None
    first, _, body = data.partition(b"\n")
    if signer is not None:
        signature = first.removeprefix(SIGNED_PREFIX)
        if not hmac.compare_digest(signature, signer(body).encode()):
            return None
    return body
