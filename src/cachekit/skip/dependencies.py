"""What a test depends on beyond its file's static key: the functions it executed.

A test passes on (a) its file's *static* key (`cachekit.skip.fingerprint.Fingerprinter
.file_key` with ``function_bodies=False``: environment, conftests, and the module-level
code of its import closure) and (b) the code it executed while it ran, recorded by the
pytest adapter as *dependencies*:

- ``label::function id``: the body of one function (`cachekit.skip.functions`);
- ``label`` module level: a file's skeleton (a ``<module>`` or class body executed, a file
  outside the static closure reached by a dynamic import);
- ``label`` whole file: a file that does not parse, or code that cannot be mapped.

The store never sees a label or a function name: a dependency is named by its id, a
keyed hash (`cachekit.skip.records.Secrets.dependency_hash`). A test's dependencies form a
*set*, content-addressed (its id is a hash of its sorted member ids) and stored once under
`DEPENDENCIES_KEY` however many tests share it (parametrized tests, tests of one file
calling the same helpers): a set whose members do not hash to its id is dropped on read.
A record names its set; its key is the keyed hash of the static key's hash and each
member's current hash (`dependency_key`), so any change to a member's code changes it.

Reading resolves members to their current hashes from the project files as they are now
(`Resolver`); a member that no longer resolves (a function renamed or removed, a file
gone) means "changed": the test runs.

A key also covers the module-level constant bindings the test can read
(`Resolver.bindings_read`, `cachekit.skip.names`): not stored in sets, they are worked out
from the static key's files and the set's members, the same way when recording and when
reading, so a new binding of a name the test reads changes its key too.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from cachekit.errors import CorruptData
from cachekit.skip.functions import SKELETON_NAMES, FunctionIndex
from cachekit.skip.names import (
    BOUND,
    EVERY_NAME,
    STAR_IMPORT,
    binding_test_name,
    reflection_reaches,
)
from cachekit.skip.records import HASH_HEX, Secrets
from cachekit.skip.snapshots import is_snapshot
from cachekit.values.codec import JSON

#: Where dependency sets are stored, beside ``skip/passed``: ``{set id: [member id, ...]}``,
#: members sorted, merged by union.
DEPENDENCIES_KEY = "skip/dependencies"
#: Part of every set id and dependency key: bump when what they cover changes.
SET_FORMAT = "cachekit-dependency-set-3"

#: A dependency's kinds: one function's body, a file's module-level code, a whole file,
#: one module-level constant binding (never stored in a set: `Resolver.bindings_read`).
BODY = "body"
SKELETON = "skeleton"
WHOLE = "file"
BINDING = "binding"

_HEX_HASH = re.compile(f"[0-9a-f]{{{HASH_HEX}}}")


@attrs.frozen(order=True)
class Dependency:
    """One thing a test's outcome depends on, by its file's label (its path relative to
    the root) and, for a body, the function's id."""

    label: str
    kind: str
    #: The function id of a body, the name of a binding.
    function: str = ""

    def text(self) -> str:
        """What the dependency id hashes: never equal for two dependencies (a function id
        holds no NUL)."""
        if self.kind == BODY:
            return f"{self.label}::{self.function}"
        if self.kind == BINDING:
            return f"{self.label}\0{self.kind}\0{self.function}"
        return f"{self.label}\0{self.kind}"

    def shown(self) -> str:
        """How a user reads it (``--skip-passed-explain``)."""
        if self.kind == BODY:
            return f"{self.label}::{self.function}"
        if self.kind == BINDING:
            return f"{self.label}::{self.function} (module-level constant)"
        return f"{self.label} ({'module-level code' if self.kind == SKELETON else 'whole file'})"


def set_id(members: Iterable[str]) -> str:
    """The id of a dependency set: a hash of its sorted, distinct member ids."""
    text = SET_FORMAT + "\n" + "\n".join(sorted(set(members)))
    return hashlib.sha256(text.encode("ascii", "replace")).hexdigest()[:HASH_HEX]


def dependency_key(secrets: Secrets, static_hash: str, pairs: Iterable[tuple[str, str]]) -> str:
    """The key hash of a record with dependencies: the static key's hash and each member
    (id, current hash), sorted."""
    lines = sorted(f"{member} {digest}" for member, digest in pairs)
    return secrets.key_hash(f"{SET_FORMAT}\0{static_hash}\n" + "\n".join(lines))


class DependencySets:
    """The merge strategy of `DEPENDENCIES_KEY`: a union of sets by id. On read, an entry
    whose members are not sorted distinct ids hashing to its name is dropped (corrupt or
    planted: its tests then run), so every set kept under an id holds the same members
    and the join keeps either. Runs' snapshots (`cachekit.skip.snapshots`, for explaining
    what changed) are kept beside them when shaped like one; their names are no set's."""

    def empty(self) -> dict[str, list[str]]:
        return {}

    def join(
        self, left: Mapping[str, list[str]], right: Mapping[str, list[str]]
    ) -> dict[str, list[str]]:
        merged = dict(left)
        added = False
        for name, members in right.items():
            if name not in merged:
                merged[name] = members
                added = True
        return dict(sorted(merged.items())) if added else merged

    def check(self, value: JSON) -> dict[str, list[str]]:
        if not isinstance(value, dict):
            raise CorruptData("expected a mapping of dependency sets")
        return {
            name: members  # type: ignore[misc]  # checked by _valid or is_snapshot
            for name, members in sorted(value.items())
            if _valid(name, members) or is_snapshot(name, members)
        }


class NamedSets(DependencySets):
    """How a run that records folds its namespace's sets: as `DependencySets`, dropping
    the sets (and snapshots) it read at its start that no record names (`cachekit.skip
    .records.named_sets`, `cachekit.skip.snapshots.named_snapshots`), so that sets no
    test uses any more are not read by every run for ever.
    A set it did not read is kept: another run may have written it, and a record naming
    it, since. A set named only by another namespace's later records goes too: its tests
    run once, and store it again."""

    def __init__(self, named: frozenset[str], read: frozenset[str]) -> None:
        self.named = named
        self.read = read

    def check(self, value: JSON) -> dict[str, list[str]]:
        return {
            name: members
            for name, members in super().check(value).items()
            if name in self.named or name not in self.read
        }


def _valid(name: str, members: Any) -> bool:
    return (
        isinstance(members, list)
        and all(type(member) is str and _HEX_HASH.fullmatch(member) for member in members)
        and all(left < right for left, right in itertools.pairwise(members))
        and set_id(members) == name
    )


# -- current hashes -----------------------------------------------------------------------


class Resolver:
    """The current hash of each dependency of the project files indexed so far, by id.

    ``functions(path)`` gives a file's `FunctionIndex` (None: it does not parse) and
    ``read(path)`` its bytes (`cachekit.skip.fingerprint.Fingerprinter`'s). Files are
    indexed once: a snapshot, like the fingerprinter.
    """

    def __init__(
        self,
        secrets: Secrets,
        root: Path,
        *,
        functions: Callable[[Path], FunctionIndex | None],
        read: Callable[[str], bytes],
    ) -> None:
        self.secrets = secrets
        self._root = os.path.realpath(root)
        self._functions = functions
        self._read = read
        #: Dependency id -> current hash ("" for an id two dependencies share: never
        #: resolves).
        self._current: dict[str, str] = {}
        #: Dependency id -> the dependency (for explaining what changed).
        self._named: dict[str, Dependency] = {}
        self._indexed: dict[str, FunctionIndex | None] = {}
        self._reals: dict[str | Path, str] = {}
        self._by_label: dict[str, FunctionIndex | None] = {}
        self._ids: dict[Dependency, str] = {}
        #: `_ids` reversed, rebuilt when it grew (`describe`).
        self._described: dict[str, Dependency] = {}
        #: For `bindings_read`: by test file and closure, and by file and part.
        self._closure_reads: dict[
            tuple[str, tuple[str, ...], bool],
            tuple[str | None, dict[str, FunctionIndex], frozenset[str], frozenset[str]],
        ] = {}
        self._names: dict[tuple[str, str], frozenset[str]] = {}
        #: The star imports among `_names` (module-level code only has them).
        self._stars: dict[tuple[str, str], frozenset[str]] = {}
        #: `_star_exports` by star imports and files read: tests of a file share them.
        self._exports: dict[
            tuple[frozenset[str], tuple[str, ...]], dict[str, frozenset[str] | None] | None
        ] = {}

    def label(self, real: str) -> str | None:
        """A file's label (relative to the root, ``/``-separated), or None outside it."""
        if not real.startswith(self._root + os.sep):
            return None
        return real[len(self._root) + 1 :].replace(os.sep, "/")

    def dependency_id(self, dependency: Dependency) -> str:
        found = self._ids.get(dependency)
        if found is None:
            found = self._ids[dependency] = self.secrets.dependency_hash(dependency.text())
        return found

    def index(self, path: str | Path) -> FunctionIndex | None:
        """Index one project file (a real path or any path to it); its `FunctionIndex`."""
        real = self._reals.get(path)
        if real is None:  # a system call per component: once per path
            real = self._reals[path] = os.path.realpath(path)
        if real in self._indexed:
            return self._indexed[real]
        self._indexed[real] = None
        label = self.label(real)
        if label is None:
            return None
        try:
            content = self._read(real)
        except OSError:
            return None  # gone: none of its dependencies resolve
        self._add(Dependency(label, WHOLE), hashlib.sha256(content).hexdigest())
        try:
            found = self._functions(Path(real))
        except Exception:  # any failure: only its whole-file id resolves
            found = None
        if found is not None:
            self._add(Dependency(label, SKELETON), found.skeleton)
            for function, digest in found.bodies.items():
                self._add(Dependency(label, BODY, function), digest)
        self._indexed[real] = self._by_label[label] = found
        return found

    def _add(self, dependency: Dependency, digest: str) -> None:
        member = self.dependency_id(dependency)
        known = self._current.get(member)
        self._named[member] = dependency
        self._current[member] = digest if known is None or known == digest else ""

    def bindings_read(
        self,
        entry: str,
        closure: tuple[str, ...],
        members: Iterable[str],
        *,
        own: frozenset[str] | None = None,
    ) -> list[tuple[str, str]]:
        """``(id, current hash)`` of each constant binding a test can read, sorted: in
        the files of its static key (``closure``, real paths; ``entry`` is its test file)
        and of its resolved ``members``, each binding whose name the code those cover
        reads (module-level code of every file, the bodies executed, any whole-file
        member entirely), all of them where that code is reflective (but the metadata
        dunders), and, without ``own``, all of the test file's.

        ``own``: the names of the test function bindings the test runs as its own (its
        function's, in its class and the classes it inherits from). A test function's
        binding (`cachekit.skip.names.binding_test_name`) then counts only where the
        code reads its name or looks names up (not a star import's: it passes tests on
        as tests of their own names), or where it is the test's own (in any file), and
        the test file is read as the other files are, its other bindings counting where
        named (pytest reaches no other by convention: its conventions' names are never
        bindings): so a new test, or a new import in the test file, changes no other
        test's key. Without it (a file's record, a doctest, a test that
        is no function), the test file counts whole, and every test function of the
        closure."""
        whole_entry = own is None
        base = self._closure_reads.get((entry, closure, whole_entry))
        if base is None:
            base = self._read_by_closure(entry, closure, whole_entry=whole_entry)
            self._closure_reads[entry, closure, whole_entry] = base
        entry_label, closure_indexes, closure_names, closure_stars = base
        indexes = dict(closure_indexes)
        names = set(closure_names)
        stars = set(closure_stars)
        for member in members:
            dependency = self._named.get(member)
            index = None if dependency is None else self._by_label.get(dependency.label)
            if dependency is None or index is None:
                continue
            label = dependency.label
            if label not in indexes:  # its module-level code: once
                indexes[label] = index
                names |= self._reads(label, index, SKELETON_NAMES)
                stars |= self._stars[label, SKELETON_NAMES]
            if dependency.kind == BODY:
                names |= self._reads(label, index, dependency.function)
            elif dependency.kind == WHOLE:
                names |= self._reads(label, index, "")
                stars |= self._stars[label, ""]
        every = EVERY_NAME in names
        exports: dict[str, frozenset[str] | None] | None = {}
        if stars:
            memo = (frozenset(stars), tuple(indexes))
            if memo not in self._exports:
                self._exports[memo] = _star_exports(stars, indexes)
            exports = self._exports[memo]

        def counts(label: str, name: str) -> bool:
            function = binding_test_name(name)
            if function is None:
                if name in names or (own is None and label == entry_label):
                    return True
                if every or exports is None:
                    return reflection_reaches(name)
                if label not in exports:
                    return False
                exported = exports[label]
                if exported is None:  # a star import of a module without a literal __all__
                    return reflection_reaches(name)
                # What the import binds (its presence only, for a metadata dunder).
                base = name.removesuffix(BOUND)
                return base in exported and (name != base or reflection_reaches(name))
            # A file's record (no ``own``) counts every test function of its closure: one
            # imported or inherited from another file is collected in the file too.
            return own is None or name in own or function in names or every

        return sorted(
            (self.dependency_id(Dependency(label, BINDING, name)), digest)
            for label, index in indexes.items()
            for name, digest in index.bindings.items()
            if counts(label, name)
        )

    def _read_by_closure(
        self, entry: str, closure: tuple[str, ...], *, whole_entry: bool
    ) -> tuple[str | None, dict[str, FunctionIndex], frozenset[str], frozenset[str]]:
        """What every test of ``entry`` reads, whatever it executed: the module-level code
        of its closure, and its own file whole if ``whole_entry``; and the star imports
        among it."""
        entry_label = self.label(os.path.realpath(entry))
        indexes: dict[str, FunctionIndex] = {}
        names: set[str] = set()
        stars: set[str] = set()
        for real in closure:
            label, index = self.label(real), self.index(real)
            if label is not None and index is not None:
                indexes[label] = index
                part = "" if whole_entry and label == entry_label else SKELETON_NAMES
                names |= self._reads(label, index, part)
                stars |= self._stars[label, part]
        return entry_label, indexes, frozenset(names), frozenset(stars)

    def _reads(self, label: str, index: FunctionIndex, part: str) -> frozenset[str]:
        """The names one part of a file reads ("": the whole file), computed once."""
        found = self._names.get((label, part))
        if found is None:
            found = index.every_name() if not part else index.names_of(part)
            stars = frozenset(
                _absolute_star(label, name) for name in found if name.startswith(STAR_IMPORT)
            )
            self._names[label, part] = found
            self._stars[label, part] = stars
        return found

    def current(self, member: str) -> str | None:
        """The member's current hash, or None when no indexed file has it."""
        return self._current.get(member) or None

    def named(self, member: str) -> Dependency | None:
        return self._named.get(member)

    def describe(self, member: str) -> Dependency | None:
        """What a member id (or a binding's) stands for, when this process hashed it
        (for explaining what changed)."""
        found = self._named.get(member)
        if found is None:
            if len(self._described) != len(self._ids):
                self._described = {ident: dependency for dependency, ident in self._ids.items()}
            found = self._described.get(member)
        return found

    def resolve(
        self, members: Iterable[str], *, more: Callable[[], Iterable[str | Path]] = tuple
    ) -> list[tuple[str, str]] | str:
        """Each member with its current hash; or, when one does not resolve even after
        indexing ``more()`` files too, that member's id."""
        pairs = []
        missing = None
        for member in members:
            digest = self.current(member)
            if digest is None:
                if missing is None:
                    missing = member
                    for path in more():
                        self.index(path)
                    digest = self.current(member)
                if digest is None:
                    return member
            pairs.append((member, digest))
        return pairs


def _star_exports(
    stars: Iterable[str], indexes: dict[str, FunctionIndex]
) -> dict[str, frozenset[str] | None] | None:
    """For each file of ``indexes`` (by label) that one of the star imports ``stars``
    reads: the names it binds (its module's literal ``__all__``), or None for every
    binding (no such ``__all__``). None when a star import's module is no file here
    (outside the project, or not found): then every file's bindings count, as for
    reflective code."""
    found: dict[str, frozenset[str] | None] = {}
    for name in stars:
        target = name[len(STAR_IMPORT) + 1 :].split(".")
        labels = [label for label in indexes if _module_parts(label)[-len(target) :] == target]
        if not labels:
            return None
        for label in labels:
            exported = indexes[label].exported
            found[label] = None if exported is None else frozenset(exported)
    return found


def _absolute_star(label: str, name: str) -> str:
    """A star import's name (`cachekit.skip.names.star_import_name`) with its module made
    absolute from the label of the file importing (``.more`` in ``pkg/__init__.py``:
    ``pkg.more``); beyond the root, left relative (it then matches no file)."""
    target = name[len(STAR_IMPORT) + 1 :]
    module = target.lstrip(".")
    level = len(target) - len(module)
    if not level:
        return name
    package = _module_parts(label)
    if label.rpartition("/")[2] != "__init__.py":
        package = package[:-1]
    if level - 1 > len(package):
        return name
    base = package[: len(package) - (level - 1)]
    return f"{STAR_IMPORT}:{'.'.join([*base, module] if module else base)}"


def _module_parts(label: str) -> list[str]:
    """The dotted name of a file's module from its label, as parts (``pkg/__init__.py``:
    ``["pkg"]``), whatever directory of the root it is imported from."""
    parts = label.removesuffix(".py").split("/")
    return parts[:-1] if parts[-1] == "__init__" else parts
