"""From recorded code to dependency sets and keys, and back: the keys of this run's tests
(`Attribution.assemble`) and what a record's dependency set is worth now
(`Attribution.key_of`). See `cachekit.skip.dependencies` for what is stored, and
`cachekit_pytest.skip.tracing` for what is recorded.

Both sides work where the tests are collected (the pytest process, or each xdist worker),
on the session's one `cachekit.skip.fingerprint.Fingerprinter` snapshot: a dependency's
hash when recorded and when read back is computed the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import CodeType

import attrs
import pytest
from _pytest.doctest import DoctestItem

from cachekit.skip.dependencies import (
    BODY,
    SKELETON,
    WHOLE,
    Dependency,
    Resolver,
    dependency_key,
    set_id,
)
from cachekit.skip.fingerprint import Fingerprinter
from cachekit.skip.records import Miss, Secrets
from cachekit.skip.snapshots import Hashes, Snapshot
from cachekit_pytest.skip.changes import describe, static_components, summarize
from cachekit_pytest.skip.tracing import (
    Codes,
    Recorder,
    Window,
    collector_windows,
    fixture_windows,
    project_file_test,
)

#: A dependency set with each member's hash when it was resolved: (member id, hash).
Pairs = list[tuple[str, str]]


def own_bindings(item: pytest.Item) -> frozenset[str] | None:
    """The names of the test function bindings a test item runs as its own
    (`cachekit.skip.names.binding_test_name`): its function's, in its class and each
    class it inherits from (``Base.test_x``: an override added in between replaces it),
    which its key counts (`Resolver.bindings_read`); None for an item that runs no test
    function (a doctest, a plugin's item): its key counts its file whole."""
    if not isinstance(item, pytest.Function):
        return None
    name = item.originalname
    if item.cls is None:
        return frozenset({name})
    return frozenset(f"{cls.__name__}.{name}" for cls in item.cls.__mro__)


@attrs.frozen
class TestKey:
    """What a record of a test that ran holds: its key hash and dependency set id ("" for
    the fallback to its test file's full key); and, for the run's snapshot, its test
    file's path and whether it is a doctest (its static key counts docstrings)."""

    key_hash: str
    deps: str
    path: str = ""
    doctest: bool = False


@attrs.frozen
class Assembled:
    """This process's tests' keys, and the dependency sets they name, with hashes."""

    keys: dict[str, TestKey] = attrs.field(factory=dict)
    sets: dict[str, Pairs] = attrs.field(factory=dict)


class Attribution:
    """Dependency sets and keys for one session (see the module docstring)."""

    def __init__(self, fingerprinter: Fingerprinter, secrets: Secrets, root: Path) -> None:
        self.fingerprinter = fingerprinter
        self.secrets = secrets
        self._root = os.path.realpath(root)
        self.resolver = Resolver(
            secrets, root, functions=fingerprinter.functions, read=fingerprinter.read
        )
        self._static: dict[tuple[Path, bool], str] = {}
        self._members: dict[Path, tuple[str, ...]] = {}
        self._closures: dict[str, tuple[str, ...]] = {}
        self._keys: dict[tuple[str, str, frozenset[str] | None], str | None] = {}
        #: Dependency sets read that resolved, with their members' current hashes.
        self.resolved: dict[str, Pairs] = {}
        #: Every file of a closure met so far: where an unresolved member is looked for.
        self._known: set[str] = set()
        self._walked = False
        #: By the code object's id (`cachekit_pytest.skip.tracing.Codes`: look-alikes of
        #: other files compare equal), with the object, kept alive so its id stays its.
        self._code_ids: dict[int, tuple[CodeType, tuple[str, ...]]] = {}
        self._import_ids: dict[str, frozenset[str]] = {}
        #: The recorder's files by real path (made once, when assembling).
        self._preloaded_real: frozenset[str] | None = None
        self._imports_real: dict[str, Codes] | None = None
        #: Code objects' file names by real path (``os.path.realpath`` costs a system
        #: call per component: once per file name, not per code object and test).
        self._reals: dict[str, str] = {}
        #: By the id of a window's code (kept alive): `_window_ids`.
        self._windows: dict[int, tuple[Codes, frozenset[str], frozenset[str]]] = {}
        #: For explaining: hashes of components, static ones by file, snapshots read.
        self.hashes = Hashes(secrets)
        self._static_components: dict[tuple[Path, bool], dict[str, str]] = {}
        self._snapshots: dict[tuple[str, str, float], Snapshot | None] = {}

    # -- keys -----------------------------------------------------------------------------

    def static_key(self, path: Path, *, docstrings: bool = False) -> str:
        """The test file's static key (function bodies left out; docstrings counted for
        doctests); raises what keying raised."""
        key = self._static.get((path, docstrings))
        if key is None:
            key = self._static[path, docstrings] = self.fingerprinter.file_key(
                path, function_bodies=False, keep_docstrings=docstrings
            )
        return key

    def members(self, path: Path) -> tuple[str, ...]:
        """Real paths of the test file's closure and its conftests' (its static key's
        members)."""
        found = self._members.get(path)
        if found is None:
            labels = [label for label, _ in self.fingerprinter.members(path)]
            found = self._members[path] = tuple(self._real(label) for label in labels)
            self._known.update(found)
        return found

    def _real(self, label: str) -> str:
        return os.path.join(self._root, *label.split("/"))

    def key_of(
        self,
        path: Path,
        static_hash: str,
        full_hash: str,
        sets: dict[str, list[str]],
        *,
        own: frozenset[str] | None = None,
    ) -> Callable[[str], str | None]:
        """For a test of ``path`` (its own bindings: `own_bindings`): a record's key
        hash now, from its dependency set's id ("" is the full key), None when the set is
        unknown or a member no longer resolves."""

        def key_of(deps: str) -> str | None:
            if not deps:
                return full_hash
            memo = (static_hash, deps, own)
            if memo not in self._keys:
                self._keys[memo] = None
                pairs = self.resolved.get(deps)
                if pairs is None:  # unresolved: tried again from another file's closure
                    pairs = self.resolve(path, sets.get(deps))
                if pairs is not None:
                    self.resolved[deps] = pairs
                    self._keys[memo] = self.key(path, static_hash, pairs, own=own)
            return self._keys[memo]

        return key_of

    def why_changed(
        self,
        path: Path,
        miss: Miss,
        sets: dict[str, list[str]],
        *,
        doctest: bool = False,
        ini: str | None = None,
        own: frozenset[str] | None = None,
    ) -> str:
        """Why a test of ``path`` whose latest pass (``miss``) no longer matches runs
        (``--skip-passed-explain``): what changed among its key's components since that
        pass, as its run's snapshot has them (`cachekit.skip.snapshots`); without one
        that verifies, or when ``ini`` (how the pytest config is named) is None (the
        run does not explain: no cost), what may have."""
        deps = miss.deps
        if not deps:
            return "its file changed (its pass was recorded by the file's full key)"
        if deps not in sets:
            return "the dependency set of its pass is missing from the store"
        pairs = self.resolved.get(deps) or self.resolve(path, sets[deps])
        if pairs is None:
            return "a function or file it executed is gone (renamed, removed or unparsable)"
        named = ""
        try:
            if ini is not None:
                named = self._changed(path, miss, pairs, sets, doctest=doctest, ini=ini, own=own)
        except Exception:  # advisory: any failure says less, and decides nothing
            named = ""
        return named or (
            "its file's static key, a function it executed or a module-level name it reads changed"
        )

    def _changed(
        self,
        path: Path,
        miss: Miss,
        pairs: Pairs,
        sets: dict[str, list[str]],
        *,
        doctest: bool,
        ini: str,
        own: frozenset[str] | None,
    ) -> str:
        """The changed components named, or "" without a snapshot or a difference."""
        record = miss.record
        if record is None:
            return ""
        memo = (record.namespace, record.run, record.at)
        if memo not in self._snapshots:
            self._snapshots[memo] = Snapshot.read(self.secrets, sets, *memo)
        snapshot = self._snapshots[memo]
        if snapshot is None:
            return ""
        components = self.components(path, pairs, doctest=doctest, own=own)
        changes = snapshot.differences(self.hashes, components.items())
        words = describe(changes, values=components, named=self.resolver.describe, ini=ini)
        return summarize(words)

    def components(
        self, path: Path, pairs: Pairs, *, doctest: bool = False, own: frozenset[str] | None = None
    ) -> dict[str, str]:
        """The components of the key of a test of ``path`` (its own bindings:
        `own_bindings`) that executed ``pairs`` (`cachekit_pytest.skip.changes`): its
        static key's, its dependencies' and the module-level names it can read, by name,
        with their values now."""
        found = dict(self._static_of(path, doctest))
        found.update(self._members_and_names(path, pairs, own))
        return found

    def recorded_components(self, tests: Iterable[tuple[Path, bool, Pairs]]) -> dict[str, str]:
        """The components of the keys of tests (test file, doctest, what each executed),
        for a run's snapshot: `components` of each, but the module-level names as read by
        all the tests of a file together, its file whole (a superset of each one's,
        computed once per file: an extra component in a snapshot only costs room)."""
        found: dict[str, str] = {}
        by_file: dict[tuple[Path, bool], dict[str, str]] = {}
        for path, doctest, pairs in tests:
            by_file.setdefault((path, doctest), {}).update(pairs)
        for (path, doctest), union in by_file.items():
            found.update(self._static_of(path, doctest))
            found.update(self._members_and_names(path, sorted(union.items()), None))
        return found

    def _static_of(self, path: Path, doctest: bool) -> dict[str, str]:
        static = self._static_components.get((path, doctest))
        if static is None:
            static = static_components(self.fingerprinter, path, doctest=doctest)
            self._static_components[path, doctest] = static
        return static

    def _members_and_names(
        self, path: Path, pairs: Pairs, own: frozenset[str] | None
    ) -> dict[str, str]:
        members = [member for member, _ in pairs]
        if any(self.resolver.named(member) is None for member in members):
            self.resolve(path, members)
        closure = self.members(path)
        bindings = self.resolver.bindings_read(str(path), closure, members, own=own)
        return {"m\0" + member: digest for member, digest in [*pairs, *bindings]}

    def resolve(self, path: Path, members: Iterable[str] | None) -> Pairs | None:
        """``members`` with their current hashes, looked for in ``path``'s closure, then in
        every closure met so far; None when one does not resolve (it changed)."""
        if members is None:
            return None
        for real in self.members(path):
            self.resolver.index(real)
        pairs = self.resolver.resolve(members, more=self._more)
        return None if isinstance(pairs, str) else pairs

    def _more(self) -> list[str]:
        """Where a member not in a test file's closure is looked for: every closure met
        so far, then (once) every project source under the root."""
        if not self._walked:
            self._walked = True
            self._known.update(project_sources(self._root))
        return sorted(self._known)

    # -- assembling what ran --------------------------------------------------------------

    def assemble(
        self,
        recorder: Recorder,
        static_hashes: dict[str, str],
        full_hashes: dict[str, str],
    ) -> Assembled:
        """The key and dependency set of each test the recorder saw that has a static key
        hash (and a full one, for the fallback)."""
        keys: dict[str, TestKey] = {}
        sets: dict[str, Pairs] = {}
        outside = self._ids_of(recorder.outside.codes.values())
        for nodeid, window in recorder.tests.items():
            item = recorder.items[nodeid]
            static_hash = static_hashes.get(nodeid)
            full_hash = full_hashes.get(nodeid)
            if static_hash is None or full_hash is None:
                continue
            windows = [
                window,
                *fixture_windows(recorder, item),
                *collector_windows(recorder, item),
            ]
            found = None
            if not recorder.blocked and all(w.complete for w in windows):
                found = self._dependencies(recorder, item.path, windows, outside)
            if found is None:
                keys[nodeid] = TestKey(full_hash, "")
                continue
            deps = set_id(member for member, _ in found)
            sets.setdefault(deps, found)
            own = own_bindings(item)
            key = self._keys.get((static_hash, deps, own))
            if key is None:
                key = self.key(item.path, static_hash, found, own=own)
                self._keys[static_hash, deps, own] = key
            keys[nodeid] = TestKey(key, deps, str(item.path), isinstance(item, DoctestItem))
        return Assembled(keys, sets)

    def key(
        self, path: Path, static_hash: str, pairs: Pairs, *, own: frozenset[str] | None = None
    ) -> str:
        """The key hash of a test of ``path`` (its own bindings: `own_bindings`; None
        for the file whole) that executed ``pairs``: its static key's, its dependencies'
        and those of the module-level constants it can read (`Resolver.bindings_read`)."""
        members = [member for member, _ in pairs]
        if any(self.resolver.named(member) is None for member in members):
            # Pairs resolved elsewhere (the xdist controller keys whole files from its
            # workers' sets): index their files as a reader would, for the same names.
            self.resolve(path, members)
        closure = self.members(path)
        bindings = self.resolver.bindings_read(str(path), closure, members, own=own)
        return dependency_key(self.secrets, static_hash, [*pairs, *bindings])

    def _dependencies(
        self, recorder: Recorder, path: Path, windows: list[Window], outside: frozenset[str]
    ) -> Pairs | None:
        try:
            members = self.members(path)
        except Exception:  # no key: not recorded anyway
            return None
        ids: set[str] = set(outside)
        touched: set[str] = set()
        for window in windows:
            window_ids, window_files = self._window_ids(window)
            ids |= window_ids
            touched |= window_files
        frontier = set(members)
        for filename in touched:
            real = self._realpath(filename)
            if real not in frontier:
                frontier.update(self._closure(real))
        for real in frontier:
            ids.update(self._imports_of(recorder, real))
        pairs = self.resolver.resolve(sorted(ids))
        return None if isinstance(pairs, str) else pairs

    def _window_ids(self, window: Window) -> tuple[frozenset[str], frozenset[str]]:
        """The ids of what a window's code depends on, and its code's file names: once
        per window (tests share their scoped fixtures' and collectors' windows, and
        parametrized tests one set of code), when the run has ended."""
        known = self._windows.get(id(window.codes))
        if known is None:
            ids: set[str] = set()
            files: set[str] = set()
            for code in window.codes.values():
                ids.update(self._code_ids_of(code))
                files.add(code.co_filename)
            known = self._windows[id(window.codes)] = (
                window.codes,
                frozenset(ids),
                frozenset(files),
            )
        return known[1], known[2]

    def _closure(self, real: str) -> tuple[str, ...]:
        found = self._closures.get(real)
        if found is None:
            try:
                paths = [str(path) for path in self.fingerprinter.closure(Path(real))]
            except (ValueError, OSError):
                paths = [real]
            found = self._closures[real] = tuple(paths)
            self._known.update(found)
        return found

    def _imports_of(self, recorder: Recorder, real: str) -> frozenset[str]:
        """The ids of what importing a project file executed: its recorded import-time
        code, or, when it was imported before recording began, every file of its closure
        whole."""
        found = self._import_ids.get(real)
        if found is None:
            if real in self._preloaded(recorder):
                ids = set()
                for member in self._closure(real):
                    label = self._label(member)
                    if label is not None:
                        self.resolver.index(member)
                        ids.add(self.resolver.dependency_id(Dependency(label, WHOLE)))
                found = frozenset(ids)
            else:
                imported = self._recorded_imports(recorder).get(real)
                found = self._ids_of(imported.values() if imported else ())
            self._import_ids[real] = found
        return found

    def _preloaded(self, recorder: Recorder) -> frozenset[str]:
        if self._preloaded_real is None:
            self._preloaded_real = frozenset(self._realpath(f) for f in recorder.preloaded)
        return self._preloaded_real

    def _recorded_imports(self, recorder: Recorder) -> dict[str, Codes]:
        if self._imports_real is None:
            merged: dict[str, Codes] = {}
            for filename, codes in recorder.imports.items():
                merged.setdefault(self._realpath(filename), {}).update(codes)
            self._imports_real = merged
        return self._imports_real

    def _ids_of(self, codes: Iterable[CodeType]) -> frozenset[str]:
        ids: set[str] = set()
        for code in codes:
            ids.update(self._code_ids_of(code))
        return frozenset(ids)

    def _label(self, real: str) -> str | None:
        return self.resolver.label(real)

    def _realpath(self, filename: str) -> str:
        real = self._reals.get(filename)
        if real is None:
            real = self._reals[filename] = os.path.realpath(filename)
        return real

    def _code_ids_of(self, code: CodeType) -> tuple[str, ...]:
        """The ids of what executing ``code`` depends on: its function's body (or its
        file's module-level code, or the whole file) and its file's module-level code."""
        known = self._code_ids.get(id(code))
        if known is not None:
            return known[1]
        real = self._realpath(code.co_filename)
        label = self._label(real)
        found: tuple[str, ...] = ()
        if label is not None:
            index = self.resolver.index(real)
            dependency = Dependency(label, WHOLE)
            if index is not None:
                function = None
                if code.co_name != "<module>":
                    function = index.function_at(code.co_firstlineno)
                if function is None:
                    dependency = Dependency(label, SKELETON)
                elif function in index.bodies:
                    dependency = Dependency(label, BODY, function)
            dependencies = {dependency}
            if index is not None:
                dependencies.add(Dependency(label, SKELETON))
            found = tuple(self.resolver.dependency_id(d) for d in sorted(dependencies))
        self._code_ids[id(code)] = (code, found)
        return found


#: Directories never searched for project sources.
_SKIPPED_DIRECTORIES = frozenset({"node_modules", "__pycache__", "site-packages", "dist-packages"})


def project_sources(root: str) -> list[str]:
    """Every project source under ``root`` (real paths; hidden directories, virtualenvs
    and site-packages left out)."""
    is_project = project_file_test(root)
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [
            name
            for name in subdirectories
            if not name.startswith(".") and name not in _SKIPPED_DIRECTORIES
        ]
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith(".py") and is_project(path):
                found.append(os.path.realpath(path))
    return found
