"""Keys for skipping tests that already passed on exactly the same code.

A test file's key (`Fingerprinter.file_key`) is a hash of everything its outcome can
depend on that cachekit can see without running it: the environment
(`Fingerprinter.environment_key`: interpreter, platform, tool versions, installed
distributions or a lock file, named environment variables, declared data files, a salt),
the ``conftest.py`` chain above it, and the transitive closure of the project files it
and those conftests import, each by relative path and hash. Equal keys mean
"nothing we track changed"; the pytest adapter then trusts an earlier pass.

A member's hash (`member_digest`): a ``.py`` file that parses counts by its code, without
comments, formatting or docstrings (`cachekit.skip.functions`; the test file's own
docstrings count, for its doctests, but its test functions', which count in their
bindings: `cachekit.skip.names`), so that such edits rerun nothing; conftests, files
that do not parse and other files (doctest text files) count by their bytes.
``file_key(..., function_bodies=False)`` counts each module by its skeleton only (the
code that runs on import, and every ``def``'s header), for callers that check the bodies
of the functions a test executed apart (`Fingerprinter.functions`).

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

The parts live beside this module: `cachekit.skip.imports` (a file's imports from its
source), `cachekit.skip.closure` (imports resolved to project files, and closures),
`cachekit.skip.analysis` (per-file records and their cache file) and
`cachekit.skip.distributions`. The names importers use are all importable from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from cachekit.skip.analysis import (
    CACHE_FORMAT,
    CACHE_VERSION,
    PARSER,
    RACY_NANOSECONDS,
    FileAnalyses,
    FileRecord,
    Signer,
)
from cachekit.skip.closure import ImportResolver, is_under
from cachekit.skip.distributions import (
    ReachedDistributions,
    installed_distributions,
    normalize_name,
)
from cachekit.skip.functions import FunctionIndex, function_index
from cachekit.skip.imports import import_specs

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "KEY_FORMAT",
    "PARSER",
    "RACY_NANOSECONDS",
    "FileRecord",
    "Fingerprinter",
    "FunctionIndex",
    "KeyInputs",
    "function_index",
    "import_specs",
    "installed_distributions",
    "normalize_name",
]

#: Part of every key: bump it when what a key covers or how it is computed changes.
KEY_FORMAT = 5
#: Which docstrings a member counts (`member_digest`).
ALL_DOCSTRINGS = "all"
SHARED_DOCSTRINGS = "shared"
NO_DOCSTRINGS = ""


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
    #: distributions, for every test file. When it does not exist, the installed
    #: distributions count (`narrow_distributions`).
    lock_file: Path | None = None
    salt: str = ""
    #: Versions of the tools that run the tests, e.g. ``{"pytest": "9.2.0"}``.
    tool_versions: Mapping[str, str] = attrs.field(factory=dict)
    #: Extra import roots (relative paths are to ``root``). Files under them count as
    #: project files even outside ``root``.
    search_paths: tuple[Path, ...] = ()
    #: Whether installed distributions count only where a test file's imports reach them
    #: (`cachekit.skip.distributions.ReachedDistributions`), else all for every file.
    narrow_distributions: bool = True
    #: Distributions that count for every test file, with what they require: those that
    #: run the tests (pytest, pluggy, the plugins).
    always_distributions: tuple[str, ...] = ()
    #: Modules imported for every test file besides its own imports (``-p`` plugins,
    #: ``PYTEST_PLUGINS``): their distributions count for each.
    plugin_modules: tuple[str, ...] = ()


# -- the fingerprinter ----------------------------------------------------------------


class Fingerprinter:
    """Computes environment and test-file keys for one project, one session.

    Paths passed to its methods are ordinary paths (relative ones to the working
    directory); those in `KeyInputs` are relative to the root.
    """

    def __init__(
        self,
        inputs: KeyInputs,
        *,
        cache_file: Path | None = None,
        cache_signer: Signer | None = None,
    ) -> None:
        """``cache_file``: where analyses are kept between processes (`FileAnalyses`),
        signed by ``cache_signer`` and read only if they verify, when one is given."""
        self.inputs = inputs
        self.cache_file = cache_file
        self._root = os.path.realpath(inputs.root)
        root_path = Path(self._root)
        self._search_paths = [os.path.realpath(root_path / path) for path in inputs.search_paths]
        #: Where project files may live: the root, then search paths outside it.
        self._bases = [self._root] + [
            path for path in self._search_paths if not is_under(path, self._root)
        ]
        self._prefixes = tuple(base.rstrip(os.sep) + os.sep for base in self._bases)
        # `read` is looked up at each call: a hook that subclasses and tests replace.
        reader = lambda path: self.read(path)  # noqa: E731, PLW0108
        self._analyses = FileAnalyses(cache_file, read=reader, signer=cache_signer)
        #: Member lines by mode (function bodies, which docstrings) and node.
        self._lines: dict[tuple[bool, str], dict[int, str]] = {}
        self._resolver = ImportResolver(
            root=self._root,
            search_paths=self._search_paths,
            prefixes=self._prefixes,
            imports_of=self._analyses.imports,
        )
        self._reached = ReachedDistributions(
            index_of=self._analyses.distributions,
            always=inputs.always_distributions,
        )
        self._plugin_tops = tuple(name.partition(".")[0] for name in inputs.plugin_modules)
        self._distribution_lines: dict[frozenset[str], str] = {}
        self._plugin_files: list[str] | None = None
        self._closures: dict[Path, tuple[str, list[str], list[int], frozenset[str]]] = {}
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

    def file_key(
        self,
        test_file: Path,
        *,
        function_bodies: bool = True,
        keep_docstrings: bool = False,
    ) -> str:
        """Hex digest of the environment, the test file's conftest chain and the import
        closure of the test file and those conftests (relative path and hash of each
        member, `member_digest`).

        ``function_bodies=False`` leaves out the bodies of functions (outside conftests):
        the key of a test whose executed functions are checked apart.
        The test file's own docstrings always count: they are tests when doctests are
        collected (``--doctest-modules``), and the key must not depend on whether they
        are (records are shared by runs with and without). Its test functions' count
        only with ``keep_docstrings``: otherwise their bindings count them, for their own
        tests (`cachekit.skip.functions.FunctionIndex.shared_docstrings`).
        ``keep_docstrings`` counts the docstrings of every member.
        """
        path, conftests, nodes, modules = self._closure_of(test_file)
        mode = (function_bodies, ALL_DOCSTRINGS if keep_docstrings else NO_DOCSTRINGS)
        lines = [
            f"cachekit-file-key {KEY_FORMAT} bodies={int(function_bodies)}"
            f" docstrings={int(keep_docstrings)}",
            self.environment_key(),
            self._distribution_line(modules),
            "file " + self._label(path),
            "conftests " + " ".join(self._label(conftest) for conftest in conftests),
            *self._member_lines(nodes, mode, entry=self._resolver.node(path)),
        ]
        return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()

    def members(
        self,
        test_file: Path,
        *,
        function_bodies: bool = True,
        keep_docstrings: bool = False,
    ) -> list[tuple[str, str]]:
        """``(relative path, member digest)`` of every project file in ``test_file``'s
        key, sorted: the closure of the test file and of its conftests (for explaining a
        key)."""
        path, _, nodes, _ = self._closure_of(test_file)
        mode = (function_bodies, ALL_DOCSTRINGS if keep_docstrings else NO_DOCSTRINGS)
        lines = self._member_lines(nodes, mode, entry=self._resolver.node(path))
        return [(label, digest) for label, _, digest in (line.partition("\0") for line in lines)]

    def functions(self, path: Path) -> FunctionIndex | None:
        """The function index of a project file (`cachekit.skip.functions`), as of this
        snapshot; None when it is no project file, or no ``.py`` file that parses (then
        count it whole)."""
        try:
            real = self._project_file(path)
        except (ValueError, OSError):
            return None
        return self._analyses.functions(real)

    def project_file_label(self, path: Path) -> str | None:
        """A project file's name in keys (its path relative to the root, ``/``-separated),
        or None when it is no project file."""
        real = os.path.realpath(path)
        if not real.startswith(self._prefixes):
            return None
        return self._label(real)

    def closure(self, path: Path) -> list[Path]:
        """The project files ``path`` depends on transitively, itself included, sorted.

        Imports resolve against the import roots plus ``path``'s own base directory
        (pytest's "prepend" rule: the first directory upward without ``__init__.py``).
        """
        real = self._project_file(path)
        return sorted(Path(self._resolver.path(node)) for node in self._resolver.closure([real]))

    @property
    def roots(self) -> tuple[str, ...]:
        """The import roots every file shares (real paths, in priority order)."""
        return self._resolver.roots

    def save(self) -> None:
        """Write the per-file analysis to ``cache_file`` (atomically), if one was given
        and anything new was read."""
        self._analyses.save()

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
        elif inputs.narrow_distributions:
            # Counted per test file (`distributions`), these for every one.
            distributions = {"always": sorted(inputs.always_distributions)}
        else:
            distributions = {"installed": [list(item) for item in self._reached.installed()]}
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

    def distributions(self, test_file: Path) -> list[tuple[str, str]] | None:
        """``(name, version)`` of the installed distributions that count for
        ``test_file`` (for explaining a key), or None when a lock file stands for them."""
        if "lock_file" in self.environment()["distributions"]:
            return None
        if not self.inputs.narrow_distributions:
            return self._reached.installed()
        return self._reached.counted(self._closure_of(test_file)[3])

    def _distribution_line(self, modules: frozenset[str]) -> str:
        """The key line of the distributions a closure importing ``modules`` reaches;
        empty when a lock file stands for them (in the environment)."""
        line = self._distribution_lines.get(modules)
        if line is None:
            if (
                not self.inputs.narrow_distributions
                or "lock_file" in self.environment()["distributions"]
            ):
                line = ""  # in the environment
            else:
                counted = json.dumps(self._reached.counted(modules), separators=(",", ":"))
                line = "distributions " + hashlib.sha256(counted.encode()).hexdigest()
            self._distribution_lines[modules] = line
        return line

    def _data_files(self) -> list[list[str]]:
        found: dict[str, str] = {}
        root = Path(self._root)
        for pattern in self.inputs.data_globs:
            if Path(pattern).is_absolute():
                raise ValueError(f"a data glob must be relative to the root: {pattern!r}")
            for match in root.glob(pattern):
                real = os.path.realpath(match)
                if is_under(real, self._root) and os.path.isfile(real):
                    found[self._label(real)] = self._analyses.record(real, parse=False).digest
        return [[label, digest] for label, digest in sorted(found.items())]

    # -- roots and paths --------------------------------------------------------------

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
            if is_under(real, base):
                relative = os.path.relpath(real, base).replace(os.sep, "/")
                return f"<search_paths[{index}]>/{relative}"
        raise ValueError(f"not a project file: {real}")  # pragma: no cover

    def _closure_of(self, test_file: Path) -> tuple[str, list[str], list[int], frozenset[str]]:
        """A test file's real path, conftests, closure (nodes) and the top-level modules
        outside the project that closure imports; once per file (a file is keyed with
        and without function bodies)."""
        found = self._closures.get(test_file)
        if found is None:
            path = self._project_file(test_file)
            conftests = self._conftests(path)
            nodes, modules = self._resolver.closure_and_names(
                self._entries(path, conftests), also=self._plugin_tops
            )
            found = self._closures[test_file] = (path, conftests, nodes, modules)
        return found

    def _entries(self, real: str, conftests: list[str]) -> list[str]:
        """What a test file's closure starts from: itself, its conftests, and the project
        modules pytest loads as plugins for every test (`KeyInputs.plugin_modules`)."""
        if self._plugin_files is None:
            self._plugin_files = sorted(
                {
                    path
                    for name in self.inputs.plugin_modules
                    for path in self._resolver.module_files(name)
                }
            )
        return [real, *conftests, *self._plugin_files]

    def _conftests(self, real: str) -> list[str]:
        """``conftest.py`` files from the root down to ``real``'s directory."""
        if not is_under(real, self._root):
            return []
        directory = self._root
        found = []
        parts = os.path.relpath(os.path.dirname(real), self._root).split(os.sep)
        for part in [""] + [part for part in parts if part not in ("", ".")]:
            directory = os.path.join(directory, part) if part else directory
            conftest = self._resolver.listed_project_file(directory, "conftest.py")
            if conftest is not None:
                found.append(conftest)
        return found

    # -- members of a key -------------------------------------------------------------

    def _line(self, node: int, mode: tuple[bool, str]) -> str:
        lines = self._lines.setdefault(mode, {})
        line = lines.get(node)
        if line is None:
            path = self._resolver.path(node)
            function_bodies, docstrings = mode
            record = self._analyses.record(path, parse=False)
            if os.path.basename(path) == "conftest.py":
                # Its hooks and fixtures decide outcomes of every test below it: by bytes.
                digest = "bytes:" + record.digest
            else:
                digest = member_digest(
                    record, function_bodies=function_bodies, docstrings=docstrings
                )
            line = lines[node] = f"{self._label(path)}\0{digest}"
        return line

    def _member_lines(self, nodes: list[int], mode: tuple[bool, str], *, entry: int) -> list[str]:
        """``label NUL digest`` of ``nodes`` (a closure), sorted; ``entry`` (the test
        file) with its docstrings: all of them if the mode counts docstrings, else all
        but its test functions' (`cachekit.skip.functions.FunctionIndex
        .shared_docstrings`)."""
        lines = self._lines.setdefault(mode, {})
        members = [
            lines[node] if node in lines else self._line(node, mode)
            for node in nodes
            if node != entry
        ]
        entry_docstrings = ALL_DOCSTRINGS if mode[1] == ALL_DOCSTRINGS else SHARED_DOCSTRINGS
        members.append(self._line(entry, (mode[0], entry_docstrings)))
        members.sort()
        return members


def member_digest(record: FileRecord, *, function_bodies: bool, docstrings: str) -> str:
    """What one member of a key counts: a ``.py`` file that parses by its code without
    comments, formatting and docstrings (without function bodies unless
    ``function_bodies``; with the ``docstrings`` named: `ALL_DOCSTRINGS`,
    `SHARED_DOCSTRINGS` or `NO_DOCSTRINGS`), any other file by its bytes. The prefix
    keeps the kinds apart."""
    if record.code is None or record.skeleton is None:
        return "bytes:" + record.digest
    digest = ("code:" + record.code) if function_bodies else ("skeleton:" + record.skeleton)
    if docstrings == ALL_DOCSTRINGS:
        return f"{digest}+docstrings:{record.docstrings}"
    if docstrings == SHARED_DOCSTRINGS:
        return f"{digest}+shared-docstrings:{record.shared_docstrings}"
    return digest
