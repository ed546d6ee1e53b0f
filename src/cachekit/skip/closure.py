"""The import graph of the project files and its transitive closures."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence

_FILE, _DIR, _LINK = 1, 2, 4


class ImportResolver:
    """Resolves the imports of project files to project files, and finds the transitive
    closure of a set of them.

    Files become nodes, numbered as they are met, so that a closure is a bit mask.
    Directory listings and resolutions are kept for the instance's life: like the
    `Fingerprinter` that holds it, it is a snapshot of the tree.
    """

    def __init__(
        self,
        *,
        root: str,
        search_paths: Sequence[str],
        prefixes: tuple[str, ...],
        imports_of: Callable[[str], tuple[str, ...]],
    ) -> None:
        """``root`` and ``search_paths`` are real paths; ``prefixes`` (each ending in a
        separator) are where project files may live; ``imports_of(real path)`` gives a
        file's recorded imports (`cachekit.skip.imports.import_specs`)."""
        #: The import roots every file shares (real paths, in priority order).
        self.roots = tuple(_unique(_default_roots(root) + list(search_paths)))
        self._prefixes = prefixes
        self._imports_of = imports_of
        self._listings: dict[str, dict[str, int]] = {}
        self._real_dirs: dict[str, str] = {}
        self._ids: dict[str, int] = {}
        self._paths: list[str] = []
        self._absolute: dict[tuple[str, str], tuple[int, ...]] = {}
        self._relative: dict[tuple[str, str], tuple[int, ...]] = {}
        self._inits: dict[str, int | None] = {}
        self._in_roots: dict[str, tuple[int, ...]] = {}
        self._local_edges: dict[int, tuple[int, ...]] = {}
        self._top_names: dict[str, frozenset[str]] = {}
        self._graph = _Graph(self)

    def closure(self, entries: Sequence[str]) -> list[int]:
        """The nodes of the closure of ``entries`` (real paths of project files),
        ascending."""
        return _bits(self._closure_mask(entries))

    def closure_and_names(
        self, entries: Sequence[str], *, also: Iterable[str] = ()
    ) -> tuple[list[int], frozenset[str]]:
        """The closure of ``entries`` (as `closure`) and the top-level names imported
        absolutely in it (and the names in ``also``) that name nothing under its import
        roots: the standard library and installed distributions, or modules that do not
        exist."""
        mask = self._closure_mask(entries)
        roots = [*self.roots, *(self._basedir(entry) for entry in entries)]
        project = frozenset().union(*(self._tops(root) for root in _unique(roots)))
        imported = [name for name, nodes in self._graph.heads.items() if nodes & mask]
        names = frozenset(name for name in (*imported, *also) if name not in project)
        return _bits(mask), names

    def module_files(self, name: str) -> list[str]:
        """The real paths of the project files importing absolute ``name`` runs (its
        packages' ``__init__.py`` files and the module), under the shared roots."""
        return [self._paths[node] for node in self._in_import_roots(name)]

    def node(self, real: str) -> int:
        """The node of a project file (a real path)."""
        return self._node(real)

    def path(self, node: int) -> str:
        """The real path of ``node``."""
        return self._paths[node]

    def listed_project_file(self, directory: str, name: str) -> str | None:
        """The real path of ``directory/name`` if the directory lists it as a file and it
        is a project file, else None."""
        flags = self._listing(directory).get(name, 0)
        return self._project_real(directory, name, flags) if flags & _FILE else None

    # -- directories and nodes --------------------------------------------------------

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
        return self._imports_of(self._paths[node])

    def _in_import_roots(self, name: str) -> tuple[int, ...]:
        """The files importing absolute ``name`` runs, under any of the shared roots."""
        nodes = self._in_roots.get(name)
        if nodes is None:
            found: set[int] = set()
            for root in self.roots:
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
            for basedir in _unique(self._basedir(entry) for entry in entries)
            if basedir not in self.roots
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

    def _basedir(self, real: str) -> str:
        """pytest's "prepend" import rule: the first directory upward from the file that
        has no ``__init__.py`` goes on ``sys.path``."""
        directory = os.path.dirname(real)
        while self._listing(directory).get("__init__.py", 0) & _FILE:
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
        return directory


class _Graph:
    """The import graph under the shared import roots, with closures memoized.

    Closures are bit masks over the resolver's node numbers: strongly connected
    components (import cycles) share one, and a component's closure is its members'
    bits or'ed with its successors' closures, found by Tarjan's algorithm (iterative,
    so deep import chains do not hit the recursion limit).
    """

    def __init__(self, owner: ImportResolver) -> None:
        self._owner = owner
        self._edges: dict[int, tuple[int, ...]] = {}
        self._masks: dict[int, int] = {}
        #: The nodes (a mask) whose absolute imports start with each top-level name.
        self.heads: dict[str, int] = {}

    def successors(self, node: int) -> tuple[int, ...]:
        edges = self._edges.get(node)
        if edges is None:
            owner = self._owner
            heads = self.heads
            bit = 1 << node
            found = set(owner._root_free_edges(node))
            for spec in owner._imports(node):
                if not spec.startswith("."):
                    found.update(owner._in_import_roots(spec))
                    head = spec.partition(".")[0]
                    heads[head] = heads.get(head, 0) | bit
            found.discard(node)
            edges = self._edges[node] = tuple(found)
        return edges

    def closure_mask(self, start: int) -> int:
        masks = self._masks
        if start in masks:
            return masks[start]
        index: dict[int, int] = {start: 0}
        low: dict[int, int] = {start: 0}
        stack = [start]
        on_stack = {start}
        work = [(start, iter(self.successors(start)))]
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor in masks:
                    continue  # a finished component
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(self.successors(successor))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    mask = 0
                    for member in members:
                        mask |= 1 << member
                    inside = set(members)
                    for member in members:
                        for successor in self.successors(member):
                            if successor not in inside:
                                mask |= masks[successor]
                    for member in members:
                        masks[member] = mask
        return masks[start]


_BYTE_BITS = [tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256)]


def _bits(mask: int) -> list[int]:
    """The positions of the set bits of ``mask``, ascending (a byte at a time: closures
    of thousands of files are enumerated once per test file)."""
    positions: list[int] = []
    for index, value in enumerate(mask.to_bytes((mask.bit_length() + 7) // 8, "little")):
        if value:
            base = index * 8
            positions += [base + bit for bit in _BYTE_BITS[value]]
    return positions


def _default_roots(root: str) -> list[str]:
    """The root, ``root/src`` and the ``sys.path`` entries under the root, except the
    interpreter's own (a virtualenv inside the project is not project code)."""
    prefixes = {
        os.path.realpath(prefix)
        for prefix in (sys.prefix, sys.exec_prefix, sys.base_prefix)
        if prefix
    }
    inside = [prefix for prefix in prefixes if is_under(prefix, root)]
    roots = [root, os.path.join(root, "src")]
    for entry in sys.path:
        real = os.path.realpath(entry or ".")
        if real == root or not is_under(real, root):
            continue
        if any(real == prefix or is_under(real, prefix) for prefix in inside):
            continue
        if os.path.basename(real) in ("site-packages", "dist-packages"):
            continue
        roots.append(real)
    return [root for root in roots if os.path.isdir(root)]


def is_under(path: str, base: str) -> bool:
    """Whether ``path`` is below the directory ``base`` (both real paths)."""
    return path.startswith(base.rstrip(os.sep) + os.sep)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
