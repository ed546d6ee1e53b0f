"""A version computed on import from the module's version constants, as in

    version_info = (24, 11, 1, "dev")
    __version__ = ".".join([str(part) for part in version_info if part or part == 0])

evaluated here, so that it counts as a constant binding whose hash covers its value,
instead of module-level code that every importer reruns for at each release.

Why this is safe: the expression is evaluated only when it is built from literals, the
module's metadata constants bound before it, a few builtins and the ``join`` and
``format`` methods of a literal string, and when no other statement anywhere in the
module binds any of those names (no ``str = ...``, no ``global version_info``, no star
import). It then computes here what the import computes. An expression that raises here
raises on import too: it stays module-level code, and every importer reruns (and fails).
No call but those, no ``*`` or ``**`` operator, no loop but over its own literals.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

#: The builtins the expression may call, by name.
_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in ("str", "int", "repr", "tuple", "list", "map", "len", "format")
}
#: In `bound_names`: a star import, which may bind any name.
ANY_NAME = "*"
#: Methods of a literal string the expression may call.
_STRING_METHODS = frozenset({"join", "format"})
_NODES = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Tuple, ast.List,
    ast.ListComp, ast.GeneratorExp, ast.comprehension, ast.Call, ast.keyword, ast.Starred,
    ast.Attribute, ast.Subscript, ast.Slice, ast.BoolOp, ast.And, ast.Or, ast.Compare,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is,
    ast.IsNot, ast.UnaryOp, ast.Not, ast.USub, ast.BinOp, ast.Add, ast.Mod, ast.IfExp,
    ast.JoinedStr, ast.FormattedValue,
)  # fmt: skip


def computed_version(
    expression: ast.expr,
    known: Mapping[str, object],
    bound_elsewhere: Callable[[], frozenset[str]],
) -> tuple[bool, object]:
    """``(True, value)`` if ``expression`` is such a computation (see the module
    docstring) over ``known`` (the values of the metadata constants bound before it)
    and evaluates; else ``(False, None)``. ``bound_elsewhere`` gives every name a
    statement of the module binds, but the module-level metadata assignments."""
    tree = ast.Expression(expression)
    local: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            return False, None
        if isinstance(node, ast.Attribute) and not _string_method(node):
            return False, None
        if isinstance(node, ast.Call) and not _allowed_call(node.func):
            return False, None
        if isinstance(node, ast.comprehension):
            local.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
    read = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    } - local
    if not read <= (known.keys() | _BUILTINS.keys()):
        return False, None
    elsewhere = bound_elsewhere()
    if read & elsewhere or ANY_NAME in elsewhere:
        return False, None
    scope = {"__builtins__": _BUILTINS, **{name: known[name] for name in read & known.keys()}}
    try:
        code = compile(ast.fix_missing_locations(tree), "<version>", "eval")
        value = eval(code, scope)  # checked above: see the module docstring
    except Exception:  # it would raise on import too: module-level code
        return False, None
    # Hashed by its repr: only values whose repr is the same in every process.
    return (True, value) if _plain(value) else (False, None)


def _plain(value: object) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (str, int, float))


def _string_method(node: ast.Attribute) -> bool:
    return (
        isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and node.attr in _STRING_METHODS
    )


def _allowed_call(function: ast.expr) -> bool:
    if isinstance(function, ast.Name):
        return function.id in _BUILTINS
    return isinstance(function, ast.Attribute) and _string_method(function)


def bound_names(statements: Iterable[ast.stmt], skipped: Collection[ast.AST]) -> frozenset[str]:
    """Every name the statements bind anywhere in them (assigned, deleted, defined,
    imported, declared ``global``, caught, matched; `ANY_NAME` for a star import), but
    the ``skipped`` name nodes. Locals count too: more than needed, never less."""
    found: set[str] = set()
    for statement in statements:
        for node in ast.walk(statement):
            if isinstance(node, ast.Name):
                if not isinstance(node.ctx, ast.Load) and node not in skipped:
                    found.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.add(node.name)
            elif isinstance(node, ast.alias):
                found.add(ANY_NAME if node.name == "*" else node.asname or node.name.split(".")[0])
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                found.update(node.names)
            elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)):
                found.update([node.name] if node.name else [])
            elif isinstance(node, ast.MatchMapping) and node.rest:
                found.add(node.rest)
    return frozenset(found)
