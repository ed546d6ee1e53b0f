"""Keys for skipping tests that already passed on exactly the same code.

A test file's key (`Fingerprinter.file_key`) is a hash of everything its outcome can
depend on that cachekit can see without running it: the environment
(`Fingerprinter.environment_key`: interpreter, platform, tool versions, installed
distributions or a lock file, named environment variables, declared data files, a salt),
the ``conftest.py`` chain above it, and the transitive closure of the project files it
and those conftests import, each by relative path and content hash. Equal keys mean
"nothing we track changed"; the pytest adapter then trusts an earlier pass.

Why static analysis: importing project code to learn its imports would run it (and its
side effects) before pytest does. The ``ast`` of each file gives its imports, including
those inside functions and ``if TYPE_CHECKING:`` blocks (counting too much only costs
a rerun; counting too little skips a test that should have run). Imports that resolve
to no project file (the standard library, third-party packages) are left out: the
installed distributions stand for them.

Why a per-file cache: hashing and parsing thousands of files on every run would cost
more than many test suites take. Each file's hash and imports are kept by
``(path, st_mtime_ns, st_size, st_ino)``, in memory and in an optional JSON file between
processes. That file is only a hint: an entry is used when the file's stat still
matches, otherwise the file is read again; a corrupt or foreign cache file is ignored.

A `Fingerprinter` is a snapshot: each file is looked at once per instance, so create a
new one per test session. It is not thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs

from cachekit.skip.analysis import (
    CACHE_FORMAT,
    CACHE_VERSION,
    PARSER,
    RACY_NANOSECONDS,
    FileRecord,
    _CacheFile,
    _converter,
)
from cachekit.skip.closure import _DIR, _FILE, _LINK, _basedir, _bits, _Graph, _is_under, _unique
from cachekit.skip.distributions import installed_distributions, normalize_name
from cachekit.skip.imports import import_specs

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "KEY_FORMAT",
    "PARSER",
    "RACY_NANOSECONDS",
    "FileRecord",
    "Fingerprinter",
    "KeyInputs",
    "import_specs",
    "installed_distributions",
    "normalize_name",
]

#: Part of every key: bump it when what a key covers or how it is computed changes.
KEY_FORMAT = 1


@attrs.frozen
class KeyInputs:
    """What goes into the keys besides the project's Python files."""

    #: The project root: only files under it are project files.
    root: Path
    #: Names of environment variables whose values enter every key.
    env_vars: tuple[str, ...] = ()
    #: Globs relative to ``root``; the matched files' contents enter every key.
    data_globs: tuple[str, ...] = ()
    #: When set (relative paths are to ``root``), its bytes stand for the installed
    #: distributions. When it does not exist, the installed distributions count.
    lock_file: Path | None = None
    salt: str = ""
    #: Versions of the tools that run the tests, e.g. ``{"pytest": "9.2.0"}``.
    tool_versions: Mapping[str, str] = attrs.field(factory=dict)
    #: Extra import roots (relative paths are to ``root``). Files under them count as
    #: project files even outside ``root``.
    search_paths: tuple[Path, ...] = ()


# -- the fingerprinter ----------------------------------------------------------------


class Fingerprinter:
    """Computes environment and test-file keys for one project, one session.

    Paths passed to its methods are ordinary paths (relative ones to the working
    directory); those in `KeyInputs` are relative to the root.
    """

    def __init__(self, inputs: KeyInputs, *, cache_file: Path | None = None) -> None:
        self.inputs = inputs
        self.cache_file = cache_file
        self._root = os.path.realpath(inputs.root)
        root_path = Path(self._root)
        self._search_paths = [os.path.realpath(root_path / path) for path in inputs.search_paths]
        #: Where project files may live: the root, then search paths outside it.
        self._bases = [self._root] + [
            path for path in self._search_paths if not _is_under(path, self._root)
        ]
        self._prefixes = tuple(base.rstrip(os.sep) + os.sep for base in self._bases)
        self._roots = tuple(_unique(self._default_roots() + self._search_paths))
        self._hints: dict[str, FileRecord] = self._load_cache()
        self._records: dict[str, FileRecord] = {}
        self._racy: set[str] = set()
        self._dirty = False
        self._listings: dict[str, dict[str, int]] = {}
        self._real_dirs: dict[str, str] = {}
        self._ids: dict[str, int] = {}
        self._paths: list[str] = []
        self._lines: dict[int, str] = {}
        self._absolute: dict[tuple[str, str], tuple[int, ...]] = {}
        self._relative: dict[tuple[str, str], tuple[int, ...]] = {}
        self._inits: dict[str, int | None] = {}
        self._in_roots: dict[str, tuple[int, ...]] = {}
        self._local_edges: dict[int, tuple[int, ...]] = {}
        self._top_names: dict[str, frozenset[str]] = {}
        self._graph = _Graph(self)
        self._environment: dict[str, Any] | None = None
        self._environment_key: str | None = None

    # -- public -----------------------------------------------------------------------

    def environment_key(self) -> str:
        """Hex digest of everything outside the project's Python files (computed once)."""
        if self._environment_key is None:
            encoded = json.dumps(self.environment(), sort_keys=True, separators=(",", ":"))
            self._environment_key = hashlib.sha256(encoded.encode()).hexdigest()
        return self._environment_key

    def environment(self) -> dict[str, Any]:
        """What `environment_key` hashes, as JSON-ready data (for explaining a key)."""
        if self._environment is None:
            self._environment = self._compute_environment()
        return self._environment

    def file_key(self, test_file: Path) -> str:
        """Hex digest of the environment, the test file's conftest chain and the import
        closure of the test file and those conftests (relative path and content hash of
        each member)."""
        path = self._project_file(test_file)
        conftests = self._conftests(path)
        lines = [
            f"cachekit-file-key {KEY_FORMAT}",
            self.environment_key(),
            "file " + self._label(path),
            "conftests " + " ".join(self._label(conftest) for conftest in conftests),
            *self._member_lines(path, conftests),
        ]
        return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()

    def members(self, test_file: Path) -> list[tuple[str, str]]:
        """``(relative path, sha256)`` of every project file in ``test_file``'s key,
        sorted: the closure of the test file and of its conftests (for explaining a key)."""
        path = self._project_file(test_file)
        lines = self._member_lines(path, self._conftests(path))
        return [(label, digest) for label, _, digest in (line.partition("\0") for line in lines)]

    def closure(self, path: Path) -> list[Path]:
        """The project files ``path`` depends on transitively, itself included, sorted.

        Imports resolve against the import roots plus ``path``'s own base directory
        (pytest's "prepend" rule: the first directory upward without ``__init__.py``).
        """
        real = self._project_file(path)
        return sorted(Path(self._paths[node]) for node in _bits(self._closure_mask([real])))

    @property
    def roots(self) -> tuple[str, ...]:
        """The import roots every file shares (real paths, in priority order)."""
        return self._roots

    def save(self) -> None:
        """Write the per-file analysis to ``cache_file`` (atomically), if one was given
        and anything new was read."""
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
        directory = self.cache_file.parent
        directory.mkdir(parents=True, exist_ok=True)
        # No fsync: a torn or stale file is detected (or caught by the stat check) and
        # costs a re-read, never a wrong key.
        handle, temp = tempfile.mkstemp(prefix=f".{self.cache_file.name}.", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(data)
            os.replace(temp, self.cache_file)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self._dirty = False

    def read(self, path: str) -> bytes:
        """Read one file's bytes: the one place files are read (a hook for tests and
        instrumentation)."""
        with open(path, "rb") as file:
            return file.read()

    # -- environment ------------------------------------------------------------------

    def _compute_environment(self) -> dict[str, Any]:
        inputs = self.inputs
        lock_file = Path(self._root, inputs.lock_file) if inputs.lock_file else None
        distributions: dict[str, Any]
        if lock_file is not None and lock_file.is_file():
            distributions = {"lock_file": hashlib.sha256(lock_file.read_bytes()).hexdigest()}
        else:
            distributions = {"installed": [list(item) for item in installed_distributions()]}
        return {
            "format": KEY_FORMAT,
            "python": {
                "implementation": sys.implementation.name,
                "version": list(sys.version_info),
                "abiflags": getattr(sys, "abiflags", ""),
                "cache_tag": sys.implementation.cache_tag,
            },
            # The OS and the architecture, not the kernel release: that changes with every
            # CI runner image update without changing what Python code does.
            "platform": {"system": sys.platform, "machine": platform.machine()},
            "tools": dict(sorted(inputs.tool_versions.items())),
            "distributions": distributions,
            # None (unset) is distinct from "" (set and empty).
            "env": {name: os.environ.get(name) for name in sorted(set(inputs.env_vars))},
            "data": self._data_files(),
            "salt": inputs.salt,
        }

    def _data_files(self) -> list[list[str]]:
        found: dict[str, str] = {}
        root = Path(self._root)
        for pattern in self.inputs.data_globs:
            if Path(pattern).is_absolute():
                raise ValueError(f"a data glob must be relative to the root: {pattern!r}")
            for match in root.glob(pattern):
                real = os.path.realpath(match)
                if _is_under(real, self._root) and os.path.isfile(real):
                    found[self._label(real)] = self._record(real, parse=False).digest
        return [[label, digest] for label, digest in sorted(found.items())]

    # -- roots and paths --------------------------------------------------------------

    def _default_roots(self) -> list[str]:
        """The root, ``root/src`` and the ``sys.path`` entries under the root, except the
        interpreter's own (a virtualenv inside the project is not project code)."""
        prefixes = {
            os.path.realpath(prefix)
            for prefix in (sys.prefix, sys.exec_prefix, sys.base_prefix)
            if prefix
        }
        inside = [prefix for prefix in prefixes if _is_under(prefix, self._root)]
        roots = [self._root, os.path.join(self._root, "src")]
        for entry in sys.path:
            real = os.path.realpath(entry or ".")
            if real == self._root or not _is_under(real, self._root):
                continue
            if any(real == prefix or _is_under(real, prefix) for prefix in inside):
                continue
            if os.path.basename(real) in ("site-packages", "dist-packages"):
                continue
            roots.append(real)
        return [root for root in roots if os.path.isdir(root)]

    def _project_file(self, path: Path) -> str:
        real = os.path.realpath(path)
        if not real.startswith(self._prefixes):
            raise ValueError(f"not a project file (outside {self._root}): {path}")
        if not stat.S_ISREG(os.stat(real).st_mode):
            raise ValueError(f"not a regular file: {path}")
        return real

    def _label(self, real: str) -> str:
        """A project file's name in keys: its path relative to the root (``/``-separated),
        so keys do not depend on where the project is checked out."""
        if real.startswith(self._prefixes[0]):
            return real[len(self._prefixes[0]) :].replace(os.sep, "/")
        for index, base in enumerate(self._search_paths):
            if _is_under(real, base):
                relative = os.path.relpath(real, base).replace(os.sep, "/")
                return f"<search_paths[{index}]>/{relative}"
        raise ValueError(f"not a project file: {real}")  # pragma: no cover

    def _conftests(self, real: str) -> list[str]:
        """``conftest.py`` files from the root down to ``real``'s directory."""
        if not _is_under(real, self._root):
            return []
        directory = self._root
        found = []
        parts = os.path.relpath(os.path.dirname(real), self._root).split(os.sep)
        for part in [""] + [part for part in parts if part not in ("", ".")]:
            directory = os.path.join(directory, part) if part else directory
            flags = self._listing(directory).get("conftest.py", 0)
            if flags & _FILE:
                conftest = self._project_real(directory, "conftest.py", flags)
                if conftest is not None:
                    found.append(conftest)
        return found

    def _listing(self, directory: str) -> dict[str, int]:
        listing = self._listings.get(directory)
        if listing is None:
            listing = {}
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        try:
                            flags = (
                                (_FILE if entry.is_file() else 0)
                                | (_DIR if entry.is_dir() else 0)
                                | (_LINK if entry.is_symlink() else 0)
                            )
                        except OSError:
                            continue
                        listing[entry.name] = flags
            except OSError:
                pass
            self._listings[directory] = listing
        return listing

    def _real_dir(self, directory: str) -> str:
        real = self._real_dirs.get(directory)
        if real is None:
            real = self._real_dirs[directory] = os.path.realpath(directory)
        return real

    def _project_real(self, directory: str, name: str, flags: int) -> str | None:
        """The real path of ``directory/name`` if it is a project file (symlinks leading
        out of the project are not followed), else None."""
        if flags & _LINK:
            real = os.path.realpath(os.path.join(directory, name))
        else:
            real = os.path.join(self._real_dir(directory), name)
        return real if real.startswith(self._prefixes) else None

    def _found(self, directory: str, name: str, flags: int) -> int | None:
        """The node of ``directory/name`` if it is a project file."""
        real = self._project_real(directory, name, flags)
        return None if real is None else self._node(real)

    def _node(self, real: str) -> int:
        node = self._ids.get(real)
        if node is None:
            node = self._ids[real] = len(self._paths)
            self._paths.append(real)
        return node

    # -- import resolution ------------------------------------------------------------

    def _chain(self, directory: str, parts: Sequence[str], found: list[int]) -> None:
        """Append the files importing ``parts`` from ``directory`` runs: each package's
        ``__init__.py`` and the final module, as far as they exist (a regular package
        wins over a module of the same name, which wins over a namespace package)."""
        for part in parts:
            listing = self._listing(directory)
            flags = listing.get(part, 0)
            if flags & _DIR:
                package = os.path.join(directory, part)
                if self._listing(package).get("__init__.py", 0) & _FILE:
                    node = self._package_init(package)
                    if node is not None:
                        found.append(node)
                    directory = package
                    continue
            module = listing.get(part + ".py", 0)
            if module & _FILE:
                node = self._found(directory, part + ".py", module)
                if node is not None:
                    found.append(node)
                return
            if not flags & _DIR:
                return
            directory = os.path.join(directory, part)  # a namespace package

    def _resolve_absolute(self, root: str, name: str) -> tuple[int, ...]:
        key = (root, name)
        nodes = self._absolute.get(key)
        if nodes is None:
            found: list[int] = []
            self._chain(root, name.split("."), found)
            nodes = self._absolute[key] = tuple(found)
        return nodes

    def _root_free_edges(self, node: int) -> tuple[int, ...]:
        """What ``node`` depends on whatever the import roots: its package's
        ``__init__.py`` (Python runs it first) and its relative imports."""
        edges = self._local_edges.get(node)
        if edges is not None:
            return edges
        directory, name = os.path.split(self._paths[node])
        init = self._package_init(
            os.path.dirname(directory) if name == "__init__.py" else directory
        )
        found = set() if init is None else {init}
        for spec in self._imports(node):
            if spec.startswith("."):
                found.update(self._resolve_relative(directory, spec))
        found.discard(node)
        edges = self._local_edges[node] = tuple(found)
        return edges

    def _package_init(self, directory: str) -> int | None:
        """The node of ``directory/__init__.py``, if that is a project file."""
        if directory in self._inits:
            return self._inits[directory]
        flags = self._listing(directory).get("__init__.py", 0)
        node = self._found(directory, "__init__.py", flags) if flags & _FILE else None
        self._inits[directory] = node
        return node

    def _resolve_relative(self, directory: str, spec: str) -> tuple[int, ...]:
        """``from ..a import b`` in ``directory``: the package's ``__init__.py`` and the
        chain below it."""
        key = (directory, spec)
        nodes = self._relative.get(key)
        if nodes is None:
            level = len(spec) - len(spec.lstrip("."))
            base = directory
            for _ in range(level - 1):
                base = os.path.dirname(base)
            init = self._package_init(base)
            found = [] if init is None else [init]
            rest = spec[level:]
            if rest:
                self._chain(base, rest.split("."), found)
            nodes = self._relative[key] = tuple(found)
        return nodes

    def _imports(self, node: int) -> tuple[str, ...]:
        imports = self._record(self._paths[node], parse=True).imports
        assert imports is not None
        return imports

    def _in_import_roots(self, name: str) -> tuple[int, ...]:
        """The files importing absolute ``name`` runs, under any of the shared roots."""
        nodes = self._in_roots.get(name)
        if nodes is None:
            found: set[int] = set()
            for root in self._roots:
                found.update(self._resolve_absolute(root, name))
            nodes = self._in_roots[name] = tuple(found)
        return nodes

    def _tops(self, root: str) -> frozenset[str]:
        """The top-level names importable from ``root``."""
        names = self._top_names.get(root)
        if names is None:
            listing = self._listing(root)
            names = self._top_names[root] = frozenset(
                name.removesuffix(".py")
                for name, flags in listing.items()
                if flags & _DIR or (flags & _FILE and name.endswith(".py"))
            )
        return names

    def _closure_mask(self, entries: Sequence[str]) -> int:
        """The closure of ``entries`` (real paths) as a bit mask over nodes.

        Each entry's base directory (pytest's "prepend" rule) is an import root for it.
        Rather than a graph per set of roots, the closure in the shared graph is
        extended: a file in it whose absolute imports name something importable from an
        extra root gains those edges, and their closures join, until nothing new comes
        (usually at once: base directories seldom hold what project modules import).
        """
        graph = self._graph
        mask = 0
        for entry in entries:
            mask |= graph.closure_mask(self._node(entry))
        extras = [
            basedir
            for basedir in _unique(_basedir(self, entry) for entry in entries)
            if basedir not in self._roots
        ]
        if not extras:
            return mask
        tops = frozenset().union(*(self._tops(root) for root in extras))
        followed: set[int] = set()
        while True:
            affected = 0
            for name in tops:
                affected |= graph.heads.get(name, 0) & mask
            grown = mask
            for node in _bits(affected):
                if node in followed:
                    continue
                followed.add(node)
                for spec in self._imports(node):
                    if spec.partition(".")[0] in tops and not spec.startswith("."):
                        for root in extras:
                            for target in self._resolve_absolute(root, spec):
                                grown |= graph.closure_mask(target)
            if grown == mask:
                return mask
            mask = grown

    # -- per-file analysis ------------------------------------------------------------

    def _record(self, path: str, *, parse: bool) -> FileRecord:
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
            data = self.read(path)
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

    def _line(self, node: int) -> str:
        line = self._lines.get(node)
        if line is None:
            path = self._paths[node]
            digest = self._record(path, parse=False).digest
            line = self._lines[node] = f"{self._label(path)}\0{digest}"
        return line

    def _member_lines(self, path: str, conftests: list[str]) -> list[str]:
        """``label NUL digest`` of the closure of ``path`` and its conftests, sorted."""
        lines = self._lines
        members = [
            lines[node] if node in lines else self._line(node)
            for node in _bits(self._closure_mask([path, *conftests]))
        ]
        members.sort()
        return members

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
