"""The import graph of the project files and its transitive closures."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cachekit.skip.fingerprint import Fingerprinter

_FILE, _DIR, _LINK = 1, 2, 4


class _Graph:
    """The import graph under the shared import roots, with closures memoized.

    Closures are bit masks over the fingerprinter's node numbers: strongly connected
    components (import cycles) share one, and a component's closure is its members'
    bits or'ed with its successors' closures, found by Tarjan's algorithm (iterative,
    so deep import chains do not hit the recursion limit).
    """

    def __init__(self, owner: Fingerprinter) -> None:
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


def _basedir(owner: Fingerprinter, real: str) -> str:
    """pytest's "prepend" import rule: the first directory upward from the file that has
    no ``__init__.py`` goes on ``sys.path``."""
    directory = os.path.dirname(real)
    while owner._listing(directory).get("__init__.py", 0) & _FILE:
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return directory


def _is_under(path: str, base: str) -> bool:
    return path.startswith(base.rstrip(os.sep) + os.sep)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
