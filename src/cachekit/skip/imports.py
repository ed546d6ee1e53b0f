"""What a Python file imports, read from its source without running it.

Why static analysis: importing project code to learn its imports would run it (and its
side effects) before pytest does. The ``ast`` of each file gives its imports, including
those inside functions and ``if TYPE_CHECKING:`` blocks (counting too much only costs
a rerun; counting too little skips a test that should have run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Sequence

_DYNAMIC_IMPORT_HINTS = (b"__import__", b"import_module")

#: Stands, among a file's imports, for modules no import statement names: those imported
#: by a computed name (``import_module(name)``), and the installed distributions read as
#: data (their metadata and entry points, ``pkg_resources``, ``pkgutil``'s walk of
#: ``sys.path``, ``zoneinfo``'s ``tzdata``). Every installed distribution counts for the
#: files whose closure holds it (`cachekit.skip.distributions.ReachedDistributions`).
#: Not a module name: no project file or distribution can provide it.
EVERY_DISTRIBUTION = "<every installed distribution>"
#: Text that marks a file as reading the installed distributions (anywhere in it, even a
#: comment: counting too much only costs a rerun).
_DISTRIBUTION_READER_HINTS = (
    b"importlib.metadata",
    b"importlib_metadata",
    b"importlib.resources",
    b"importlib_resources",
    b"entry_points",
    b"pkg_resources",
    b"pkgutil",
    b"zoneinfo",
)


def import_specs(source: bytes) -> tuple[str, ...]:
    """The modules ``source`` imports, sorted, without running it.

    ``import a.b`` gives ``"a.b"`` (its parent packages count when it is resolved);
    ``from a.b import c`` gives ``"a.b.c"`` (``c`` may be a submodule or a name in
    ``a/b/__init__.py``: resolving stops at the last module that exists);
    ``from ..p import z`` gives ``"..p.z"``, resolved from the file's directory.
    ``__import__("m")`` and ``importlib.import_module("m")`` with a string literal count
    too, and so do the modules a ``pytest_plugins = [...]`` of string literals names
    (pytest imports them for the conftest or test module); with any other argument, or
    where the file reads the installed distributions as data, `EVERY_DISTRIBUTION`
    stands for what it may import or read. Source that does not parse
    imports nothing as far as keys go: its own hash still counts, and a test that imports
    it fails, so it is never skipped.
    """
    if (
        b"import" not in source
        and _PLUGINS_NAME.encode() not in source
        and not _reads_distributions(source)
    ):
        return ()
    tree = parse_source(source)
    return () if tree is None else imports_in_tree(tree, source)


def parse_source(source: bytes) -> ast.Module | None:
    """``source``'s syntax tree, or None when it does not parse."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return None


def imports_in_tree(tree: ast.Module, source: bytes) -> tuple[str, ...]:
    """`import_specs` of ``source`` parsed as ``tree`` (so that one parse serves every
    analysis of a file)."""
    found: set[str] = set()
    dynamic = any(hint in source for hint in _DYNAMIC_IMPORT_HINTS)
    nodes: Iterable[ast.AST] = ast.walk(tree) if dynamic else _statements(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            for alias in node.names:
                if alias.name == "*":
                    found.add(base)
                else:
                    found.add(f"{base}.{alias.name}" if node.module else base + alias.name)
        elif isinstance(node, ast.Call):
            name = _import_call(node)
            if name:
                found.add(name)
        elif isinstance(node, _ASSIGNMENTS):
            found.update(_plugin_modules(node))
    found.discard("")
    if _reads_distributions(source):
        found.add(EVERY_DISTRIBUTION)
    return tuple(sorted(found))


def _reads_distributions(source: bytes) -> bool:
    return any(hint in source for hint in _DISTRIBUTION_READER_HINTS)


#: The statements that hold other statements (``try``/``match`` ones in handlers and
#: cases); imports can only be statements.
_COMPOUND = tuple(
    getattr(ast, name)
    for name in (
        "FunctionDef", "AsyncFunctionDef", "ClassDef", "If", "For", "AsyncFor", "While",
        "With", "AsyncWith", "Try", "TryStar", "Match",
    )
    if hasattr(ast, name)
)  # fmt: skip
_IMPORTS = (ast.Import, ast.ImportFrom)
_ASSIGNMENTS = (ast.Assign, ast.AnnAssign, ast.AugAssign)
#: The module variable naming plugins pytest imports for a conftest or test module.
_PLUGINS_NAME = "pytest_plugins"


def _statements(body: Sequence[ast.stmt]) -> Iterator[ast.stmt]:
    """Every import statement, nested ones included (function bodies, ``if``,
    ``try``...). Cheaper than `ast.walk`, which visits every expression."""
    stack = list(body)
    while stack:
        statement = stack.pop()
        if isinstance(statement, _IMPORTS) or (
            isinstance(statement, _ASSIGNMENTS) and _assigns_plugins(statement)
        ):
            yield statement
        elif isinstance(statement, _COMPOUND):
            for field in ("body", "orelse", "finalbody"):
                stack.extend(getattr(statement, field, ()))
            for child in getattr(statement, "handlers", ()):
                stack.extend(child.body)
            for child in getattr(statement, "cases", ()):
                stack.extend(child.body)


def _import_call(node: ast.Call) -> str | None:
    """The module of ``__import__("m")`` / ``importlib.import_module("m")``;
    `EVERY_DISTRIBUTION` for any other argument; None for any other call."""
    function = node.func
    if isinstance(function, ast.Name):
        called = function.id
    elif isinstance(function, ast.Attribute):
        called = function.attr
    else:
        return None
    if called not in ("__import__", "import_module") or not node.args:
        return None
    argument = node.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value.strip()
    return EVERY_DISTRIBUTION


def _assigns_plugins(statement: ast.Assign | ast.AnnAssign | ast.AugAssign) -> bool:
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    return any(isinstance(target, ast.Name) and target.id == _PLUGINS_NAME for target in targets)


def _plugin_modules(statement: ast.Assign | ast.AnnAssign | ast.AugAssign) -> list[str]:
    """The modules ``pytest_plugins = "m"`` / ``= ["m", ...]`` (or ``+=``) names, as far
    as they are string literals."""
    if not _assigns_plugins(statement) or statement.value is None:
        return []
    value = statement.value
    items = value.elts if isinstance(value, (ast.List, ast.Tuple, ast.Set)) else [value]
    return [
        item.value.strip()
        for item in items
        if isinstance(item, ast.Constant) and isinstance(item.value, str)
    ]
