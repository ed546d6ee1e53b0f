"""A Python file split into what runs when it is imported and what runs only when a
function is called, each part hashed apart, so that keys can count a function's body only
for the tests that executed it.

Why the split: a test's outcome depends on all module-level code of the modules it
imports (it runs on import, whatever the test does), but only on the bodies of the
functions it actually called. The *skeleton* is everything outside function bodies:
module-level statements, class bodies, and each ``def``'s name, signature, decorators,
default arguments and annotations (all evaluated when the ``def`` runs). Each function's
*body* is hashed on its own; a ``def`` nested in a body counts there by its header only,
its own body being its own entry.

Why the syntax tree (`cachekit.skip.names.dump_and_names`, each node with its fields, as
``ast.dump`` spells them but in one walk with the names code reads): without line numbers
and with docstrings dropped, comments, blank lines, formatting and moved code hash equal,
while any change to what the code does changes a hash. Docstrings are hashed apart
(`FunctionIndex.docstrings`) for runs that execute them (``--doctest-modules``).

Why a function's id is CPython's ``co_qualname`` (with ``#2``... for a name defined
again in the same scope) and `FunctionIndex.starts` its ``co_firstlineno``: a tracer sees
code objects, and a code object is found here by the line CPython reports for it.
Lambdas, comprehensions, generator expressions and class bodies are code objects of their
own but not entries: `FunctionIndex.function_at` gives the function whose body holds them,
or None for module-level code (counted in the skeleton).

Module-level *constant bindings* (``__version__ = "1.2"``, an undecorated ``def``) are
left out of the skeleton and hashed by name (`FunctionIndex.bindings`), with the names
each part of the file reads (`FunctionIndex.names`): a test counts a binding only when
code it depends on names it (`cachekit.skip.names`).
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterator, Sequence

import attrs

from cachekit.skip.names import (
    binding_hashes,
    binding_test_name,
    dump_and_names,
    exported_names,
    names_in_text,
)

#: The statements whose nested statements share their scope (for ``global`` names).
_BLOCKS = (
    ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
    *((ast.TryStar,) if hasattr(ast, "TryStar") else ()),
    ast.Match,
)  # fmt: skip
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
#: `FunctionIndex.names` keys besides function ids (no function id starts with ``<``).
SKELETON_NAMES = "<skeleton>"
DOCSTRING_NAMES = "<docstrings>"


@attrs.frozen
class FunctionIndex:
    """The hashes of one Python file's parts (sha256 hex), and where its functions are."""

    #: The code outside function bodies (see the module docstring); docstrings excluded.
    skeleton: str
    #: Function id -> hash of its header and body; a nested ``def`` counts by its header
    #: (its body is its own entry). Docstrings excluded.
    bodies: dict[str, str]
    #: ``co_firstlineno`` of each function (its first decorator's line when decorated)
    #: -> function id.
    starts: dict[int, str]
    #: ``(first line, last line, function id)`` of every function, in source order.
    spans: tuple[tuple[int, int, str], ...]
    #: Hash of every docstring (module, classes, functions) with its owner.
    docstrings: str = ""
    #: The same but for test functions' (`cachekit.skip.names.binding_test_name`), which
    #: count in their bindings instead: for the keys of tests that are no doctests, so
    #: that a new test's docstring changes no other test's key.
    shared_docstrings: str = ""
    #: Module-level constant binding's name -> hash of the statements binding it
    #: (`cachekit.skip.names`); left out of ``skeleton``.
    bindings: dict[str, str] = attrs.field(factory=dict)
    #: Function id, `SKELETON_NAMES` or `DOCSTRING_NAMES` -> the names that code reads,
    #: space-separated (`cachekit.skip.names.dump_and_names`).
    names: dict[str, str] = attrs.field(factory=dict)
    #: What a star import of the module binds, when its literal ``__all__`` says so
    #: (`cachekit.skip.names.exported_names`), sorted; else None.
    exported: tuple[str, ...] | None = None

    def function_at(self, firstlineno: int) -> str | None:
        """The id of the function whose code object starts at ``firstlineno``; for a code
        object that is no function (lambda, comprehension, class body), the innermost
        function whose lines hold it; None for module-level code."""
        found = self.starts.get(firstlineno)
        if found is not None:
            return found
        best: tuple[int, int, str] | None = None
        for span in self.spans:
            first, last, _ = span
            if first <= firstlineno <= last and (best is None or first >= best[0]):
                best = span
        return None if best is None else best[2]

    def code_digest(self) -> str:
        """Hash of the whole file's code: the skeleton, every constant binding and every
        body (docstrings, comments and formatting excluded)."""
        text = self.skeleton + "".join(
            f"\n{name}\0{self.bodies[name]}" for name in sorted(self.bodies)
        )
        text += "".join(f"\n={name}\0{self.bindings[name]}" for name in sorted(self.bindings))
        return _sha256(text)

    def names_of(self, part: str) -> frozenset[str]:
        """The names one part reads (a function id, `SKELETON_NAMES`); none if unknown."""
        return frozenset(self.names.get(part, "").split())

    def every_name(self) -> frozenset[str]:
        """The names any code or docstring of the file reads."""
        return frozenset(name for text in self.names.values() for name in text.split())


def function_index(source: bytes) -> FunctionIndex | None:
    """``source``'s `FunctionIndex`, or None when it does not parse (callers then count
    the file by its bytes)."""
    try:
        tree = ast.parse(source)
        return index_tree(tree)
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return None


def index_tree(tree: ast.Module) -> FunctionIndex:
    """The `FunctionIndex` of a parsed module. Modifies ``tree`` (strips docstrings and
    function bodies): parse again to reuse it."""
    indexer = _Indexer()
    indexer.scope(tree.body, prefix="", in_function=False, owner="")
    # Every function's own statements, kept before any body is cut.
    bodies = [(function_id, node, node.body) for function_id, node in indexer.functions]
    for _, node, _ in bodies:
        node.body = []
    hashes: dict[str, str] = {}
    names: dict[str, str] = {}
    for function_id, node, statements in bodies:
        # The header (empty body) too: code objects in it (a lambda default, say) start
        # on the def's line and are attributed to this function.
        text, read = dump_and_names([node, *statements])
        hashes[function_id] = _sha256(text)
        names[function_id] = _joined(read)
    cut = [statement for _, _, statements in bodies for statement in statements]
    exported = exported_names(tree.body)
    if exported is not None and any("__all__" in read.split(" ") for read in names.values()):
        exported = None  # a function changes it, or reads it
    tree.body, bindings = binding_hashes(tree.body, elsewhere=cut)
    shared = _fold_test_docstrings(indexer.docstrings, bindings)
    skeleton, read = dump_and_names([tree])
    if exported is not None:  # only its own assignment names ``__all__``: no reading
        read.discard("__all__")
    names[SKELETON_NAMES] = _joined(read)
    names[DOCSTRING_NAMES] = _joined(
        {name for _, text in indexer.docstrings for name in names_in_text(text)}
    )
    spans = tuple(indexer.spans)
    return FunctionIndex(
        skeleton=_sha256(skeleton),
        bodies=hashes,
        starts={first: function_id for first, _, function_id in spans},
        spans=spans,
        docstrings=_sha256(json.dumps(indexer.docstrings)),
        shared_docstrings=_sha256(json.dumps(shared)),
        bindings=bindings,
        names=names,
        exported=None if exported is None else tuple(sorted(exported)),
    )


def _fold_test_docstrings(
    docstrings: list[tuple[str, str]], bindings: dict[str, str]
) -> list[tuple[str, str]]:
    """Each test function binding's docstrings hashed into its binding (a function id
    is its binding's name, with ``#2``... for a name defined again), the others
    returned, with their owners."""
    shared = []
    by_test: dict[str, list[str]] = {}
    for owner, text in docstrings:
        name = owner.partition("#")[0]
        if name in bindings and binding_test_name(name) is not None:
            by_test.setdefault(name, []).append(text)
        else:
            shared.append((owner, text))
    for name, texts in by_test.items():
        bindings[name] = _sha256(json.dumps([bindings[name], texts]))
    return shared


def _joined(names: set[str]) -> str:
    return " ".join(sorted(names))


class _Indexer:
    """Names every function as CPython does and strips docstrings, in source order."""

    def __init__(self) -> None:
        self.functions: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
        self.spans: list[tuple[int, int, str]] = []
        self.docstrings: list[tuple[str, str]] = []
        self._seen: dict[str, int] = {}

    def scope(self, body: list[ast.stmt], *, prefix: str, in_function: bool, owner: str) -> None:
        """Visit the statements of one scope (module, class or function body)."""
        self._strip_docstring(body, owner)
        declared_global = _global_names(body) if prefix else frozenset()
        for node in _scope_definitions(body):
            # CPython: a name declared ``global`` in the enclosing scope gets no prefix.
            qualname = node.name if node.name in declared_global else prefix + node.name
            if isinstance(node, ast.ClassDef):
                self.scope(node.body, prefix=qualname + ".", in_function=False, owner=qualname)
                continue
            function_id = self._unique(qualname)
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            last = node.end_lineno if node.end_lineno is not None else node.lineno
            self.functions.append((function_id, node))
            self.spans.append((first, last, function_id))
            self.scope(
                node.body, prefix=function_id + ".<locals>.", in_function=True, owner=function_id
            )

    def _unique(self, qualname: str) -> str:
        count = self._seen.get(qualname, 0) + 1
        self._seen[qualname] = count
        return qualname if count == 1 else f"{qualname}#{count}"

    def _strip_docstring(self, body: list[ast.stmt], owner: str) -> None:
        if body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                self.docstrings.append((owner, value.value))
                del body[0]


def _scope_definitions(
    body: Sequence[ast.stmt],
) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    """The ``def``s and ``class``es of one scope, in source order, including those inside
    ``if``/``try``/``with``/loops/``match`` (same scope), not inside nested scopes."""
    for statement in body:
        if isinstance(statement, _SCOPES):
            yield statement
        elif isinstance(statement, _BLOCKS):
            yield from _scope_definitions(_block_statements(statement))


def _block_statements(statement: ast.stmt) -> list[ast.stmt]:
    nested: list[ast.stmt] = []
    for field in ("body", "orelse", "finalbody"):
        nested.extend(getattr(statement, field, ()))
    for child in getattr(statement, "handlers", ()):
        nested.extend(child.body)
    for child in getattr(statement, "cases", ()):
        nested.extend(child.body)
    return nested


def _global_names(body: Sequence[ast.stmt]) -> frozenset[str]:
    """The names a scope declares ``global`` (in its own statements)."""
    names: set[str] = set()
    stack = list(body)
    while stack:
        statement = stack.pop()
        if isinstance(statement, ast.Global):
            names.update(statement.names)
        elif isinstance(statement, _BLOCKS):
            stack.extend(_block_statements(statement))
    return frozenset(names)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
