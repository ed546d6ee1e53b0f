"""Module-level *constant bindings*, and the names code reads: so that a version bump or a
new function reruns only the tests whose code can see it, not every test importing its
module.

Why this is safe: a statement like ``__version__ = "1.2"`` or an undecorated
``def helper(x, limit=10):`` at module level runs no code and reads no name when the
module is imported; it only binds a name. Its value can reach a test only through code
that *names* it: ``LOAD_GLOBAL``/``LOAD_NAME`` in its module, an attribute (``pkg.X``), an
import (``from pkg import X``), a string (``getattr(pkg, "X")``, ``mock.patch("pkg.X")``,
a string annotation). So a test depends on a constant binding only when the code its key
already covers names it (`cachekit.skip.dependencies.Resolver.bindings_read`): the
module-level code of every module in its closure, the functions it executed (import-time
ones included); for a test that is no function (a doctest) or a file's record, every
binding of the test file too. Code that can reach a name without spelling it (``vars``,
``globals``, ``dir``, ``__dict__``, ``getattr`` with a computed name, ``eval``...) reads
`EVERY_NAME`: every binding but the metadata dunders (`reflection_reaches`); a star
import reads what its module exports (`star_import_name`).

Why a metadata dunder imported under its own name (``from ._version import __version__``
in a package ``__init__``, the commonest way to publish a version) is not read by the
import: the import only passes the value on, to code that must name it to read it. Only
its presence is read (the import fails without it): the import reads ``__version__?``
(`BOUND`), a binding whose hash never changes and that a module has while it binds
``__version__`` as a constant. Removing the version reruns every test that imports it,
a new value only the tests whose code names it.

Why only constants: a binding that reads a name or calls anything at import could fail
or differ with the order of statements, so it stays in the skeleton (every importer
reruns when it changes). A constant binding's hash includes how many skeleton statements
precede it, so moving it across one changes it too (the skeleton alone would not); a test
function's does not (see below: pytest calls it once the module is imported). One
exception: a version computed from the module's version constants
(``__version__ = ".".join(map(str, version_info))``), evaluated here when that is safe
(`cachekit.skip.versions`) and hashed with its value.

Why absolute imports of the standard library, when the modules are imported already
from the interpreter's library and have every name the statement takes
(`_standard_import`): then the statement cannot fail and runs nothing of the project's,
the module being the same for every run of this Python (the analysis cache is kept per
Python version); it binds names as a constant does. Any other import stays in the
skeleton: a project module's import runs its code, and a third-party one's names change
with the installed version. Which modules are imported when a file is keyed varies a
little from run to run; an import counted in the skeleton in one run and as a binding in
another changes the file's keys (its tests rerun), never hides a change.

Why ``__all__`` is split: a star import binds the set of names it holds, whatever
their order, and checks they exist; the skeleton keeps that set (its strings name the
bindings for every importer), and the list itself, order included, is a binding of its
own, read where code names ``__all__``. A star import (`star_import_name`) reads the
bindings its module exports (`exported_names`), not every binding of every file.
``__lazy_modules__`` is inert before Python 3.15 (PEP 810 reads it from 3.15 on): a
literal one is a binding there.

Why only the metadata dunders among assignments: frameworks read plain module constants
from code that is not the project's, so never analysed here (Django's settings through
``dir()`` and ``getattr``, ``app_name`` in a URL module, Flask's ``from_object``): a
``DEBUG = False`` must rerun every importer. Functions are called by name, or by
conventions kept out here. ``version_info`` counts as metadata too: the lowercase
version tuple that ``sys.version_info`` named, which settings readers (uppercase names)
never take.

Never constant, whatever the right-hand side: other dunder names (they change how Python
and pytest treat a module: ``__getattr__``, ``__path__``...; ``__all__`` but its order,
below), names pytest
collects or calls by convention (``Test*``, ``pytest*``, xunit-style ``setup_module``...),
and bindings inside ``if``/``try`` blocks.

*Test functions* are the exception among the collected names: a ``def test*`` with a
constant header, at module level or directly in an undecorated class without keywords
(``Class.test_x``), is a binding too (`binding_test_name`), its docstring hashed with it
(`cachekit.skip.functions`). Pytest calls it by convention, but only as the test of that
name: adding one to a test file adds a test and changes no other, so a test counts
another test function only where its code names it or looks names up, and its own in
its class and the classes it inherits from (an override in between included:
`cachekit.skip.dependencies.Resolver.bindings_read`). Its decorators may be pytest's
marks with literal arguments (``@pytest.mark.parametrize("n", [1, 2])``); a test with any
other decorator, or a method of a decorated class, stays in the skeleton: the decorator
may run code.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import json
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Sequence

from cachekit.skip.versions import bound_names, computed_version

#: The name a reflective construct reads: every binding counts.
EVERY_NAME = "*"
#: What a star import reads starts so, followed by ``:`` and its module as written
#: (`star_import_name`): the bindings its module exports (its literal ``__all__``'s, or
#: every one but test functions: `cachekit.skip.dependencies.Resolver.bindings_read`).
STAR_IMPORT = "*import"
#: After a metadata dunder's name, the binding that says it is bound (see above).
BOUND = "?"
_ALL = "__all__"
_LAZY_MODULES = "__lazy_modules__"
_BOUND_HASH = hashlib.sha256(b"bound").hexdigest()

#: Module dunders that only describe the module (and ``version_info``); every other dunder
#: stays in the skeleton.
_METADATA = frozenset(
    {
        "__version__",
        "__version_info__",
        "__author__",
        "__email__",
        "__license__",
        "__copyright__",
        "__credits__",
        "__maintainer__",
        "__status__",
        "__date__",
        "__docformat__",
        "version_info",
    }
)
#: Names pytest and unittest find by themselves in a module (without anyone naming them).
_COLLECTED_PREFIXES = ("test", "Test", "pytest")
#: The names of test functions, which may be bindings all the same (`binding_test_name`).
_TEST_FUNCTION_PREFIX = "test"
_XUNIT = frozenset(
    {
        "setup_module",
        "teardown_module",
        "setup_function",
        "teardown_function",
        "setUpModule",
        "tearDownModule",
        "setup",
        "teardown",
        "load_tests",
        "collect_ignore",
        "collect_ignore_glob",
    }
)
#: Builtins and attributes that reach a namespace's names without spelling them.
_REFLECTIVE_NAMES = frozenset({"vars", "globals", "locals", "dir", "eval", "exec", "__import__"})
_REFLECTIVE_ATTRIBUTES = frozenset({"__dict__", "getmembers", "__getattribute__"})
#: Callables that look a name up from their argument: reflective unless it is a literal.
_LOOKUPS = {"getattr": 1, "hasattr": 1, "setattr": 1, "delattr": 1, "attrgetter": 0}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Where this interpreter's standard library lives (``os`` is always from it).
_STANDARD_LIBRARY = os.path.realpath(os.path.dirname(os.__file__)) + os.sep
#: Third-party code inside it (a backport named as a standard module is not the library).
_INSTALLED = frozenset({"site-packages", "dist-packages"})


def _constant_binding(statement: ast.stmt, *, lazy_annotations: bool) -> list[str] | None:
    """The names a module-level statement binds if it is a constant binding (see the
    module docstring), else None. ``lazy_annotations``: the module imports
    ``from __future__ import annotations`` (annotations are not evaluated)."""
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return _standard_import(statement)
    if _inert_lazy_modules(statement):
        return [_LAZY_MODULES]
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if not _constant_header(statement, lazy_annotations=lazy_annotations):
            return None
        if statement.name.startswith(_TEST_FUNCTION_PREFIX):
            return [statement.name]
        evaluated: list[ast.expr] = []
        names = [statement.name]
    elif isinstance(statement, ast.Assign):
        if not all(isinstance(target, ast.Name) for target in statement.targets):
            return None
        evaluated = [statement.value]
        names = [target.id for target in statement.targets]  # type: ignore[attr-defined]
        if not all(name in _METADATA for name in names):
            return None
    elif isinstance(statement, ast.AnnAssign):
        if statement.value is None or not isinstance(statement.target, ast.Name):
            return None
        evaluated = [statement.value]
        if not lazy_annotations:
            evaluated.append(statement.annotation)
        names = [statement.target.id]
        if names[0] not in _METADATA:
            return None
    else:
        return None
    if not all(_is_constant(node) for node in evaluated):
        return None
    if not all(_may_be_constant(name) for name in names):
        return None
    return names


def _inert_lazy_modules(statement: ast.stmt) -> bool:
    """``__lazy_modules__ = <literal>`` (or ``frozenset(<literal>)``), before Python 3.15:
    the interpreter ignores it there (it makes the listed imports lazy from 3.15, PEP
    810), so only code naming it sees it."""
    if sys.version_info >= (3, 15) or not (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
        and statement.targets[0].id == _LAZY_MODULES
    ):
        return False
    value = statement.value
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "frozenset"
        and len(value.args) == 1
        and not value.keywords
    ):
        value = value.args[0]
    return _is_constant(value)


def _standard_import(statement: ast.Import | ast.ImportFrom) -> list[str] | None:
    """The names an absolute import of the standard library binds, when the modules it
    imports are already imported from this interpreter's library and have every name it
    takes (so it cannot fail); else None. Not ``__future__`` (it changes how the module
    compiles), nor a star import (what it binds is not spelled)."""
    if isinstance(statement, ast.Import):
        names = []
        for alias in statement.names:
            if _standard_module(alias.name) is None:
                return None
            names.append(alias.asname or alias.name.partition(".")[0])
    else:
        if statement.level or statement.module in (None, "__future__"):
            return None
        module = _standard_module(statement.module or "")
        if module is None or not all(alias.name in vars(module) for alias in statement.names):
            return None  # a name only a module ``__getattr__`` gives runs its code
        names = [alias.asname or alias.name for alias in statement.names]
    return names if all(_may_be_constant(name) for name in names) else None


def _standard_module(name: str) -> types.ModuleType | None:
    """The module of the standard library called ``name``, if it is imported (so looking
    at it runs nothing) and comes from the library, not from a file of the project's
    shadowing it."""
    if name.partition(".")[0] not in sys.stdlib_module_names:
        return None
    module = sys.modules.get(name)
    if not isinstance(module, types.ModuleType):
        return None
    filename = getattr(module, "__file__", None)
    if filename is None:
        return module  # built in, or frozen
    real = os.path.realpath(filename)
    if not real.startswith(_STANDARD_LIBRARY):
        return None
    return None if _INSTALLED & set(real[len(_STANDARD_LIBRARY) :].split(os.sep)) else module


def _constant_header(
    statement: ast.FunctionDef | ast.AsyncFunctionDef, *, lazy_annotations: bool
) -> bool:
    """Whether a ``def`` runs no code of the project's and reads no name of it when it
    is executed: no type parameter, constant defaults, constant annotations unless they
    are not evaluated, and no decorator but, on a test, pytest's marks with constant
    arguments (`_is_constant_mark`)."""
    if getattr(statement, "type_params", None):
        return False
    if statement.decorator_list and not (
        statement.name.startswith(_TEST_FUNCTION_PREFIX)
        and all(_is_constant_mark(decorator) for decorator in statement.decorator_list)
    ):
        return False
    arguments = statement.args
    evaluated = [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]
    every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    every += [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
    if not lazy_annotations:
        evaluated += [a.annotation for a in every if a.annotation is not None]
        if statement.returns is not None:
            evaluated.append(statement.returns)
    return all(_is_constant(node) for node in evaluated)


def _split_test_methods(
    statement: ast.ClassDef, *, lazy_annotations: bool
) -> tuple[ast.ClassDef, list[tuple[str, ast.stmt]]]:
    """A top-level class without its test-function bindings (`binding_test_name`), and
    each of them with its name (``Class.test_x``). A decorated class, or one with
    keywords (a metaclass), keeps them all: its decorator or metaclass may read every
    method."""
    if statement.decorator_list or statement.keywords or getattr(statement, "type_params", None):
        return statement, []
    kept: list[ast.stmt] = []
    methods: list[tuple[str, ast.stmt]] = []
    for member in statement.body:
        if (
            isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef))
            and member.name.startswith(_TEST_FUNCTION_PREFIX)
            and _constant_header(member, lazy_annotations=lazy_annotations)
        ):
            methods.append((f"{statement.name}.{member.name}", member))
        else:
            kept.append(member)
    if not methods:
        return statement, []
    skeleton = copy.copy(statement)
    skeleton.body = kept
    return skeleton, methods


def _is_constant_mark(decorator: ast.expr) -> bool:
    """``@pytest.mark.NAME`` or ``@pytest.mark.NAME(<constants>)``: pytest's own code
    attaching a mark to the test, given nothing of the project's (``parametrize`` with
    literal values, ``usefixtures``, ``xfail``...)."""
    if isinstance(decorator, ast.Call):
        if not all(_is_constant(argument) for argument in decorator.args):
            return False
        if not all(k.arg is not None and _is_constant(k.value) for k in decorator.keywords):
            return False
        decorator = decorator.func
    marks = decorator.value if isinstance(decorator, ast.Attribute) else None
    return (
        isinstance(marks, ast.Attribute)
        and marks.attr == "mark"
        and isinstance(marks.value, ast.Name)
        and marks.value.id == "pytest"
    )


def binding_test_name(name: str) -> str | None:
    """For a test function's binding (``test_x``, ``Class.test_x``): the function's name,
    which code names to reach it (``self.test_x``) and pytest gives its test; None for
    any other binding."""
    read = name.rpartition(".")[2]
    return read if read.startswith(_TEST_FUNCTION_PREFIX) else None


def binding_hashes(
    statements: list[ast.stmt], elsewhere: Sequence[ast.stmt] = ()
) -> tuple[list[ast.stmt], dict[str, str]]:
    """A module's top-level statements split into the skeleton's and the constant
    bindings', hashed by name (every constant statement binding the name, in order, each
    with the number of skeleton statements before it). A metadata dunder computed from
    the module's metadata constants (`cachekit.skip.versions`) is a constant binding
    too, hashed with its value. ``elsewhere``: the module's other statements (function
    bodies cut from ``statements``), for what they bind."""
    lazy_annotations = any(
        isinstance(statement, ast.ImportFrom)
        and statement.module == "__future__"
        and any(alias.name == "annotations" for alias in statement.names)
        for statement in statements
    )
    skeleton: list[ast.stmt] = []
    parts: dict[str, list[object]] = {}
    #: The values of the metadata constants bound so far, for computed versions.
    known: dict[str, object] = {}
    bound_elsewhere = functools.cache(lambda: _bound_elsewhere(statements, elsewhere))
    for statement in statements:
        exported = _literal_all(statement)
        if exported is not None and isinstance(statement, ast.Assign):
            # What a star import binds is the set of names: the skeleton keeps that; the
            # list's order only code naming ``__all__`` sees: a binding of its own.
            parts.setdefault(_ALL, []).append([len(skeleton), ast.dump(statement)])
            as_set = copy.copy(statement)
            as_set.value = ast.List(
                elts=[ast.Constant(name) for name in sorted(set(exported))], ctx=ast.Load()
            )
            skeleton.append(as_set)
            continue
        if isinstance(statement, ast.ClassDef):
            kept, methods = _split_test_methods(statement, lazy_annotations=lazy_annotations)
            for name, method in methods:
                parts.setdefault(name, []).append([ast.dump(method)])
            skeleton.append(kept)
            continue
        names = _constant_binding(statement, lazy_annotations=lazy_annotations)
        metadata = [target.id for target in _metadata_targets(statement)]
        value = _UNKNOWN
        if metadata:
            value = _metadata_value(statement, known, bound_elsewhere, constant=names is not None)
        for name in metadata:
            if value is _UNKNOWN:
                known.pop(name, None)
            else:
                known[name] = value
        computed = names is None and value is not _UNKNOWN
        if computed:
            names = metadata
        if names is None:
            skeleton.append(statement)
            continue
        # Where a test function stands among the statements does not matter: pytest
        # calls it once the module is imported.
        part: list[object] = [ast.dump(statement)]
        if binding_test_name(names[0]) is None:
            part.insert(0, len(skeleton))
        if computed:
            part.append(repr(value))  # a computed version: by its value too
        for name in names:
            parts.setdefault(name, []).append(part)
    hashes = {
        name: hashlib.sha256(json.dumps(found).encode("utf-8", "surrogatepass")).hexdigest()
        for name, found in sorted(parts.items())
    }
    hashes.update((name + BOUND, _BOUND_HASH) for name in sorted(parts.keys() & _METADATA))
    return skeleton, hashes


#: What `_metadata_value` returns for a value it cannot know.
_UNKNOWN = object()


def _metadata_targets(statement: ast.stmt) -> list[ast.Name]:
    """The targets of a top-level assignment of metadata dunders (none for any other
    statement)."""
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        targets = [statement.target]
    else:
        return []
    names = [target for target in targets if isinstance(target, ast.Name)]
    if len(names) != len(targets) or not all(name.id in _METADATA for name in names):
        return []
    return names


def _metadata_value(
    statement: ast.stmt,
    known: dict[str, object],
    bound_elsewhere: Callable[[], frozenset[str]],
    *,
    constant: bool,
) -> object:
    """The value a top-level metadata assignment binds, if it can be known: a literal,
    or a computed version (`cachekit.skip.versions`); else `_UNKNOWN`."""
    expression = statement.value  # type: ignore[attr-defined]
    if constant:
        try:
            return ast.literal_eval(expression)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return _UNKNOWN
    computed, value = computed_version(expression, known, bound_elsewhere)
    return value if computed else _UNKNOWN


def _bound_elsewhere(statements: list[ast.stmt], elsewhere: Sequence[ast.stmt]) -> frozenset[str]:
    """What the module binds but by its top-level metadata assignments."""
    targets = [target for statement in statements for target in _metadata_targets(statement)]
    return bound_names([*statements, *elsewhere], skipped=targets)


def star_import_name(level: int, module: str | None) -> str:
    """The name ``from <level dots><module> import *`` reads."""
    return f"{STAR_IMPORT}:{'.' * level}{module or ''}"


def exported_names(statements: Sequence[ast.stmt]) -> frozenset[str] | None:
    """What ``from module import *`` binds, when the module says so: the names of its one
    top-level ``__all__`` of literal strings, when no other statement names ``__all__``
    outside function bodies (the caller checks those, by the names they read); else
    None."""
    found = None
    for statement in statements:
        names = _literal_all(statement)
        if names is not None:
            if found is not None:
                return None
            found = frozenset(names)
        elif any(isinstance(node, ast.Name) and node.id == _ALL for node in ast.walk(statement)):
            return None
    return found


def _literal_all(statement: ast.stmt) -> list[str] | None:
    """The names of an ``__all__ = [...]`` (or a tuple) of literal strings, else None."""
    if not (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
        and statement.targets[0].id == _ALL
        and isinstance(statement.value, (ast.List, ast.Tuple))
    ):
        return None
    elements = statement.value.elts
    if not all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elements):
        return None
    return [e.value for e in elements]  # type: ignore[attr-defined]


def reflection_reaches(name: str) -> bool:
    """Whether code reading names reflectively counts as reading ``name``: not for the
    metadata dunders (``__version__``...), which code that walks a namespace skips and
    reads only by name; counting them would rerun every such test on each release."""
    return name.removesuffix(BOUND) not in _METADATA


def dump_and_names(nodes: Iterable[ast.AST]) -> tuple[str, set[str]]:
    """One walk of ``nodes`` for both what `cachekit.skip.functions` hashes and the
    names the code can read.

    The text determines the trees as ``ast.dump`` does (each node's class and every
    field in order, scalars by ``repr``; no line numbers), one line per node. The names:
    names, attributes, imported names, identifiers inside strings; `EVERY_NAME` for a
    reflective construct.

    Why one walk: ``ast.dump`` and a walk for the names were two walks in Python of
    every node of every file, the larger part of keying a project from an empty
    analysis cache; this one costs less than half of the two (measured on boltons).
    """
    out: list[str] = []
    names: set[str] = set()
    append = out.append
    add = names.add
    update = names.update
    find_identifiers = _IDENTIFIER.findall
    fields_of = _FIELDS_OF
    node_class = ast.AST

    def visit(node: ast.AST) -> None:
        known = fields_of.get(node.__class__)
        if known is None:
            known = _fields_of(node.__class__)
        append(known[0])
        kind = known[2]
        if kind == _NAME:
            add(node.id)  # type: ignore[attr-defined]
            if node.id in _REFLECTIVE_NAMES:  # type: ignore[attr-defined]
                add(EVERY_NAME)
        elif kind == _ATTRIBUTE:
            add(node.attr)  # type: ignore[attr-defined]
            if node.attr in _REFLECTIVE_ATTRIBUTES:  # type: ignore[attr-defined]
                add(EVERY_NAME)
        elif kind == _CONSTANT:
            if isinstance(node.value, str):  # type: ignore[attr-defined]
                update(find_identifiers(node.value))  # type: ignore[attr-defined]
        elif kind == _ALIAS:
            update(_imported_names(node))  # type: ignore[arg-type]
        elif kind == _DECLARATION:
            update(node.names)  # type: ignore[attr-defined]
        elif kind == _CALL and _computed_lookup(node):  # type: ignore[arg-type]
            add(EVERY_NAME)
        for field in known[1]:
            value = getattr(node, field, None)
            if isinstance(value, node_class):
                visit(value)
            elif isinstance(value, list):
                append("[")
                for item in value:
                    if isinstance(item, node_class):
                        visit(item)
                    else:
                        append(repr(item))
                    append(",")
                append("]")
            else:
                append(repr(value))
            append(",")
        append(")")

    for node in nodes:
        visit(node)
        append("\n")
    return "".join(out), names


#: Per node class: the start of its text in `dump_and_names`, its fields, and how it
#: names what it reads (`_fields_of`).
_FIELDS_OF: dict[type, tuple[str, tuple[str, ...], int]] = {}
_OTHER, _NAME, _ATTRIBUTE, _CONSTANT, _ALIAS, _DECLARATION, _CALL = range(7)
_KINDS: tuple[tuple[type, int], ...] = (
    (ast.ImportFrom, _ALIAS),  # its star import (`_imported_names`)
    (ast.Name, _NAME),
    (ast.Attribute, _ATTRIBUTE),
    (ast.Constant, _CONSTANT),
    (ast.alias, _ALIAS),
    (ast.Global, _DECLARATION),
    (ast.Nonlocal, _DECLARATION),
    (ast.Call, _CALL),
)


def _fields_of(cls: type) -> tuple[str, tuple[str, ...], int]:
    kind = next((kind for base, kind in _KINDS if issubclass(cls, base)), _OTHER)
    fields: tuple[str, ...] = getattr(cls, "_fields", ())
    known = _FIELDS_OF[cls] = (cls.__name__ + "(", fields, kind)
    return known


def names_in_text(text: str) -> set[str]:
    """The identifiers in a text (a docstring's doctest examples)."""
    return set(_IDENTIFIER.findall(text))


def _imported_names(alias: ast.alias | ast.ImportFrom) -> list[str]:
    """The names an import reads: each part of a dotted name; for a metadata dunder
    imported under its own name, that it is bound (passed on, not read: see the module
    docstring). A star import reads what its module exports (`star_import_name`)."""
    if isinstance(alias, ast.ImportFrom):
        if any(name.name == "*" for name in alias.names):
            return [star_import_name(alias.level, alias.module)]
        return []
    if alias.name == "*":
        return []
    if alias.name in _METADATA and alias.asname in (None, alias.name):
        return [alias.name + BOUND]
    return alias.name.split(".")


def _computed_lookup(call: ast.Call) -> bool:
    """``getattr(x, name)`` and the like with a name that is not a literal string."""
    function = call.func
    called = function.id if isinstance(function, ast.Name) else None
    if isinstance(function, ast.Attribute):
        called = function.attr
    position = _LOOKUPS.get(called or "")
    if position is None:
        return False
    looked_up = call.args[position:] if called == "attrgetter" else call.args[1:2]
    if not looked_up or any(isinstance(arg, ast.Starred) for arg in call.args):
        return True
    return not all(
        isinstance(arg, ast.Constant) and isinstance(arg.value, str) for arg in looked_up
    )


def _is_constant(node: ast.expr) -> bool:
    """An expression that reads no name and calls no code of the project's: literals,
    containers of literals, arithmetic on literals."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_constant(element) for element in node.elts)
    if isinstance(node, ast.Dict):
        return all(key is not None and _is_constant(key) for key in node.keys) and all(
            _is_constant(value) for value in node.values
        )
    if isinstance(node, ast.UnaryOp):
        return _is_constant(node.operand)
    if isinstance(node, ast.BinOp):
        return _is_constant(node.left) and _is_constant(node.right)
    return False


def _may_be_constant(name: str) -> bool:
    if name.startswith("__") and name.endswith("__"):
        return name in _METADATA
    return not name.startswith(_COLLECTED_PREFIXES) and name not in _XUNIT
