"""Single-line mutations of a project's source, for `bench_skip_history`.

Why our own and not a mutation-testing package: the benchmark needs few mutants, spread
over many modules, deterministic from a seed, and tagged with *where* they run: code in
a function body runs when a test calls it, code at module level (module statements,
class bodies, decorators, default arguments) runs when the module is imported. The
second kind is where coverage-based selection misses (coverage ties import-time lines to
no test), so the benchmark asks for some of each.

Operators, each changing one token or one expression on one line: a comparison
(``<`` and ``<=``, ``>`` and ``>=``, ``==`` and ``!=``), ``+`` and ``-`` (also ``+=`` and
``-=``), ``True`` and ``False``, a decimal integer ``n`` to ``n + 1``, and ``return x``
to ``return None``. Code under ``if __name__ == "__main__":`` is left alone (no test
runs it). A mutant must still compile; at most one mutant per line is offered.
"""

from __future__ import annotations

import ast
import io
import random
import re
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Where a mutated line runs: at import (module level, class body) or when called.
Where = Literal["module", "class body", "function"]

SWAPS = {
    "<": "<=",
    "<=": "<",
    ">": ">=",
    ">=": ">",
    "==": "!=",
    "!=": "==",
    "+": "-",
    "-": "+",
    "+=": "-=",
    "-=": "+=",
    "True": "False",
    "False": "True",
}
_DECIMAL = re.compile(r"[0-9]+")

Position = tuple[int, int]  # (line, column in characters), lines from 1


@dataclass(frozen=True)
class Mutant:
    """One change of one line of one file (``path`` relative to the project's root)."""

    path: str
    line: int
    column: int
    old: str
    new: str
    where: Where

    @property
    def import_time(self) -> bool:
        return self.where != "function"

    def describe(self) -> str:
        return f"{self.path}:{self.line} `{self.old}` -> `{self.new}` ({self.where})"

    def apply(self, source: str) -> str:
        """``source`` with this change; raises ValueError when the text is not there."""
        lines = source.splitlines(keepends=True)
        text = lines[self.line - 1]
        if text[self.column : self.column + len(self.old)] != self.old:
            raise ValueError(f"{self.describe()}: the line no longer reads so")
        lines[self.line - 1] = text[: self.column] + self.new + text[self.column + len(self.old) :]
        return "".join(lines)


def mutants_of(path: str, source: str) -> list[Mutant]:
    """Every mutant of one file that compiles, one per line (the first found on it)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    scopes = _Scopes(tree)
    lines = source.splitlines(keepends=True)
    found: dict[int, Mutant] = {}
    for (line, column), old, new in [*_token_changes(source), *_return_changes(tree, lines)]:
        if line in found or scopes.never_imported(line, column):
            continue
        mutant = Mutant(path, line, column, old, new, scopes.where(line, column))
        try:
            compile(mutant.apply(source), path, "exec")
        except (SyntaxError, ValueError):
            continue
        found[line] = mutant
    return [found[line] for line in sorted(found)]


def _token_changes(source: str) -> Iterator[tuple[Position, str, str]]:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return
    for token in tokens:
        if token.type in (tokenize.OP, tokenize.NAME) and token.string in SWAPS:
            yield token.start, token.string, SWAPS[token.string]
        elif token.type == tokenize.NUMBER and _DECIMAL.fullmatch(token.string):
            yield token.start, token.string, str(int(token.string) + 1)


def _return_changes(tree: ast.Module, lines: Sequence[str]) -> Iterator[tuple[Position, str, str]]:
    for node in ast.walk(tree):
        value = node.value if isinstance(node, ast.Return) else None
        if value is None or value.end_lineno != value.lineno or value.end_col_offset is None:
            continue
        if isinstance(value, ast.Constant) and value.value is None:
            continue
        encoded = lines[value.lineno - 1].encode("utf-8")  # ast counts columns in bytes
        start = len(encoded[: value.col_offset].decode("utf-8"))
        old = encoded[value.col_offset : value.end_col_offset].decode("utf-8")
        yield (value.lineno, start), old, "None"


class _Scopes:
    """Which code of a module runs when: spans of function bodies, of class bodies, and
    of ``if __name__ == "__main__":`` blocks."""

    def __init__(self, tree: ast.Module) -> None:
        self.functions: list[tuple[Position, Position]] = []
        self.classes: list[tuple[Position, Position]] = []
        self.main_blocks: list[tuple[Position, Position]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions += [_span(statement) for statement in node.body]
            elif isinstance(node, ast.Lambda):
                self.functions.append(_span(node.body))
            elif isinstance(node, ast.ClassDef):
                self.classes += [_span(statement) for statement in node.body]
        self.main_blocks = [_span(node) for node in tree.body if _is_main_block(node)]

    def where(self, line: int, column: int) -> Where:
        if _inside(self.functions, (line, column)):
            return "function"
        return "class body" if _inside(self.classes, (line, column)) else "module"

    def never_imported(self, line: int, column: int) -> bool:
        return _inside(self.main_blocks, (line, column))


def _span(node: ast.expr | ast.stmt) -> tuple[Position, Position]:
    end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
    return (node.lineno, node.col_offset), end


def _inside(spans: Sequence[tuple[Position, Position]], where: Position) -> bool:
    """Columns here are characters and the spans' bytes: equal for ASCII code, and a
    mutant on a line with other characters is classed by its line in the worst case."""
    return any(start <= where < end for start, end in spans)


def _is_main_block(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    names = [node.test.left, *node.test.comparators]
    return any(isinstance(name, ast.Name) and name.id == "__name__" for name in names)


def candidates(root: Path, files: Sequence[str], seed: int) -> tuple[list[Mutant], list[Mutant]]:
    """The mutants of ``files`` (paths relative to ``root``) in the order to try them, as
    two queues: import-time code and function bodies. Each is shuffled by ``seed`` and
    then dealt one module at a time, so consecutive tries hit different modules."""
    rng = random.Random(seed)
    by_file = {name: mutants_of(name, (root / name).read_text("utf-8")) for name in files}
    import_time: list[list[Mutant]] = []
    in_functions: list[list[Mutant]] = []
    for name in sorted(by_file):
        mutants = by_file[name]
        rng.shuffle(mutants)
        import_time.append([mutant for mutant in mutants if mutant.import_time])
        in_functions.append([mutant for mutant in mutants if not mutant.import_time])
    return _deal(import_time, rng), _deal(in_functions, rng)


def _deal(per_file: list[list[Mutant]], rng: random.Random) -> list[Mutant]:
    """Round-robin over the files (in a shuffled order), one mutant from each in turn."""
    queues = [list(mutants) for mutants in per_file if mutants]
    rng.shuffle(queues)
    dealt: list[Mutant] = []
    while queues:
        dealt += [queue.pop(0) for queue in queues]
        queues = [queue for queue in queues if queue]
    return dealt
