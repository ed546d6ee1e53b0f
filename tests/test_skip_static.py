"""The static half of finer ``--skip-passed`` keys: which edits change a test file's key.

A key with function bodies (``file_key(...)``, what skipping uses on its own) changes with
any change to what the code does, but not with comments, formatting or docstrings. The
static key (``function_bodies=False``) changes only with code outside function bodies:
the bodies a test executed are checked apart. `FunctionIndex` names functions by the line
CPython reports for their code objects, checked here against real code objects.
"""

from __future__ import annotations

import ast
import os
import re
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachekit.skip.fingerprint import Fingerprinter, KeyInputs
from cachekit.skip.functions import SKELETON_NAMES, FunctionIndex, function_index
from cachekit.skip.names import EVERY_NAME, dump_and_names

MODULE = '''\
"""The module's docstring."""

import functools

LIMIT = 10


def register(function):
    return function


class Shape:
    """A shape."""

    sides = 4

    def area(self, scale=2):
        """Its area."""
        return self.sides * scale  # a comment

    @property
    def name(self):
        return "shape"


@register
def total(values, start=0):
    return sum(values, start)


def helper():
    return LIMIT
'''

TEST = """\
from app.shapes import Shape, helper, total


def test_total():
    assert total([1, 2]) == 3


def test_area():
    assert Shape().area() == 8
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in {
        "app/__init__.py": "",
        "app/shapes.py": MODULE,
        "app/other.py": "def unrelated():\n    return 1\n",
        "tests/test_shapes.py": TEST,
        "tests/conftest.py": "import pytest\n\n\n@pytest.fixture\ndef value():\n    return 1\n",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def keys(root: Path) -> tuple[str, str]:
    """The test file's key with function bodies and its static key (a new snapshot)."""
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    test_file = root / "tests/test_shapes.py"
    return (
        fingerprinter.file_key(test_file),
        fingerprinter.file_key(test_file, function_bodies=False),
    )


def edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text()
    assert text.count(old) == 1, (name, old)
    path.write_text(text.replace(old, new))


# -- what changes which key ---------------------------------------------------------------

UNCHANGED = (False, False)
BODY_ONLY = (True, False)
BOTH = (True, True)


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        pytest.param(
            "app/shapes.py", "# a comment", "# another comment", UNCHANGED, id="comment"
        ),
        pytest.param(
            "app/shapes.py", "LIMIT = 10\n", "LIMIT = 10  # the limit\n\n\n", UNCHANGED,
            id="comment-and-blank-lines",
        ),
        pytest.param(
            "app/shapes.py", "def total(values, start=0):",
            "def total(\n    values,\n    start=0,\n):", UNCHANGED, id="formatting",
        ),
        pytest.param(
            "app/shapes.py", "return self.sides * scale", "return (self.sides\n * scale)",
            UNCHANGED, id="formatting-in-a-body",
        ),
        pytest.param(
            "app/shapes.py", '"""Its area."""', '"""Its area, in square units."""',
            UNCHANGED, id="function-docstring",
        ),
        pytest.param(
            "app/shapes.py", '"""A shape."""', '"""A plane shape."""', UNCHANGED,
            id="class-docstring",
        ),
        pytest.param(
            "app/shapes.py", '"""The module\'s docstring."""', '"""Shapes."""', UNCHANGED,
            id="module-docstring",
        ),
        pytest.param(
            "tests/test_shapes.py", "from app.shapes",
            '"""The shapes\' tests."""\nfrom app.shapes', BOTH,
            id="the-test-files-own-docstring",
        ),
        pytest.param(  # its test's key counts it, with the test function's binding
            "tests/test_shapes.py", "def test_total():\n",
            'def test_total():\n    """Totals add up."""\n', BODY_ONLY,
            id="a-test-functions-docstring",
        ),
        pytest.param(
            "app/shapes.py", "return LIMIT", "return LIMIT + 1", BODY_ONLY, id="function-body"
        ),
        pytest.param(
            "app/shapes.py", "return self.sides * scale", "return self.sides * scale * 1.0",
            BODY_ONLY, id="method-body",
        ),
        pytest.param(
            "tests/test_shapes.py", "assert total([1, 2]) == 3", "assert total([2, 1]) == 3",
            BODY_ONLY, id="test-body",
        ),
        pytest.param(
            "app/shapes.py", "@register\ndef total", "@functools.lru_cache\ndef total",
            BOTH, id="decorator",
        ),
        pytest.param("app/shapes.py", "sides = 4", "sides = 3", BOTH, id="class-body"),
        pytest.param(
            "app/shapes.py", "def area(self, scale=2):", "def area(self, scale=3):", BOTH,
            id="default-argument",
        ),
        pytest.param(
            "app/shapes.py", "def helper():", "def helper() -> int:", BOTH, id="annotation"
        ),
        pytest.param("app/shapes.py", "LIMIT = 10", "LIMIT = 11", BOTH, id="module-level"),
        pytest.param(
            "app/shapes.py", "import functools\n", "import functools\nimport app.other\n",
            BOTH, id="new-import",
        ),
        pytest.param(
            "app/shapes.py", "def helper():\n    return LIMIT\n",
            "def helper():\n    import app.other\n    return LIMIT\n",
            BOTH, id="new-import-in-a-body",
        ),
        pytest.param(
            "tests/conftest.py", "return 1", "return 2", BOTH, id="conftest-fixture-body"
        ),
        pytest.param(
            "tests/conftest.py", "import pytest\n", "import pytest  # fixtures\n", BOTH,
            id="conftest-comment",
        ),
        pytest.param(
            "app/other.py", "return 1", "return 2", UNCHANGED, id="module-not-imported"
        ),
    ],
)  # fmt: skip
def test_which_edits_change_which_key(
    project: Path, name: str, old: str, new: str, expected: tuple[bool, bool]
) -> None:
    full, static = keys(project)
    edit(project, name, old, new)
    new_full, new_static = keys(project)
    assert (new_full != full, new_static != static) == expected


def test_line_shifts_change_starts_not_hashes(project: Path) -> None:
    before = function_index((project / "app/shapes.py").read_bytes())
    full, static = keys(project)
    edit(project, "app/shapes.py", "LIMIT = 10\n", "# The limit.\n\nLIMIT = 10\n\n")
    after = function_index((project / "app/shapes.py").read_bytes())
    assert before is not None
    assert after is not None
    assert (after.skeleton, after.bodies) == (before.skeleton, before.bodies)
    assert after.starts == {line + 3: name for line, name in before.starts.items()}
    assert keys(project) == (full, static)


def test_reordering_functions_changes_the_skeleton(project: Path) -> None:
    """Definitions run in order on import (decorators may register them, say)."""
    _, static = keys(project)
    total = "@register\ndef total(values, start=0):\n    return sum(values, start)\n"
    edit(project, "app/shapes.py", "\n\n" + total, "")
    edit(project, "app/shapes.py", "LIMIT = 10\n", "LIMIT = 10\n\n\n" + total)
    assert keys(project)[1] != static


def test_a_file_that_does_not_parse_counts_by_every_byte(project: Path) -> None:
    edit(project, "app/shapes.py", "def helper():", "def helper(:")
    full, static = keys(project)
    for change in ("# a comment\n", "\n", '"""doc"""\n'):
        (project / "app/shapes.py").write_text((project / "app/shapes.py").read_text() + change)
        new_full, new_static = keys(project)
        assert new_full != full
        assert new_static != static
        full, static = new_full, new_static
    assert function_index((project / "app/shapes.py").read_bytes()) is None


def test_a_test_file_that_is_no_python_file_counts_by_every_byte(project: Path) -> None:
    """A doctest text file may parse as Python: it is still hashed whole."""
    text_file = project / "tests/test_doc.txt"
    text_file.write_text('"""\n>>> 1 + 1\n2\n"""\n')
    fingerprinter = Fingerprinter(KeyInputs(root=project))
    before = fingerprinter.file_key(text_file, function_bodies=False)
    text_file.write_text('"""\n>>> 1 + 1\n3\n"""\n')
    assert Fingerprinter(KeyInputs(root=project)).file_key(text_file) != before


def test_a_files_own_docstrings_count_in_its_key_not_in_its_importers(project: Path) -> None:
    """Under ``--doctest-modules`` a module is a test file and its docstrings are tests;
    its importers' tests do not run them. The key is the same with and without doctests."""

    def module_keys(**options: bool) -> tuple[str, str]:
        fingerprinter = Fingerprinter(KeyInputs(root=project))
        return (
            fingerprinter.file_key(project / "app/shapes.py", **options),
            fingerprinter.file_key(project / "app/shapes.py", function_bodies=False, **options),
        )

    as_test_file = module_keys()
    importer = keys(project)
    edit(project, "app/shapes.py", '"""Its area."""', '"""Its area.\n\n>>> 1\n1\n"""')
    new_as_test_file = module_keys()
    assert new_as_test_file[0] != as_test_file[0]
    assert new_as_test_file[1] != as_test_file[1]
    assert keys(project) == importer
    edit(project, "app/shapes.py", "# a comment", "")
    assert module_keys() == new_as_test_file
    # keep_docstrings counts every member's docstrings.
    every_docstring = module_keys(keep_docstrings=True)
    (project / "app/__init__.py").write_text('"""The package."""\n')
    assert module_keys() == new_as_test_file
    assert module_keys(keep_docstrings=True) != every_docstring


def test_the_static_key_and_the_full_key_never_coincide(project: Path) -> None:
    full, static = keys(project)
    assert full != static
    (project / "app/shapes.py").write_text("X = 1\n")  # no function: same members
    full, static = keys(project)
    assert full != static


# -- function indexes against CPython's code objects ------------------------------------

INDEXED = '''\
"""Every kind of function."""
import functools

TABLE = [x * 2 for x in range(3)]
SQUARE = lambda x: x * x  # noqa: E731


def plain(a, b=lambda: 0):
    return a


@functools.cache
@functools.wraps(plain)
def decorated(
    a,
):
    values = [a for _ in range(2)]
    return (lambda y: y + sum(v for v in values))(a)


async def coroutine():
    return {k: k for k in "ab"}


def duplicate():
    return 1


def duplicate():
    def inner():
        return 2

    return inner


class Outer:
    field = {k: 1 for k in "xy"}

    def method(self):
        return [lambda: i for i in range(2)]

    @property
    def value(self):
        return 1

    @value.setter
    def value(self, new):
        pass

    class Inner:
        async def deep(self):
            def local():
                class InFunction:
                    def method_in_function(self):
                        return 3

                    attribute = [n for n in range(2)]

                return InFunction

            return local


def outer():
    def nested(x=lambda: 1):
        return x

    def made_global():
        pass

    return nested


def declares_global():
    global made_global

    def made_global():
        return "global qualname"


if TABLE:

    def conditional():
        return 1

else:

    def conditional():
        return 2
'''


def code_objects(code: types.CodeType) -> Iterator[tuple[types.CodeType, types.CodeType | None]]:
    """Every code object under ``code``, with its nearest enclosing *function* code object
    (a ``def``: not a lambda, comprehension or class body), or None."""
    stack: list[tuple[types.CodeType, types.CodeType | None]] = [(code, None)]
    while stack:
        current, function = stack.pop()
        yield current, function
        enclosing = current if is_def(current) else function
        stack.extend(
            (constant, enclosing)
            for constant in current.co_consts
            if isinstance(constant, types.CodeType)
        )


def is_def(code: types.CodeType) -> bool:
    """A ``def``'s code (class bodies lack CO_NEWLOCALS; lambdas and comprehensions have
    names in angle brackets)."""
    return not code.co_name.startswith("<") and bool(code.co_flags & 0x2)


def spelled_as_cpython(function_id: str) -> str:
    """A function id without the suffixes that tell same-named functions apart."""
    return re.sub(r"#\d+", "", function_id)


def test_function_ids_and_starts_match_cpythons_code_objects() -> None:
    source = INDEXED.encode()
    index = function_index(source)
    assert index is not None
    functions = [
        (code, function) for code, function in code_objects(compile(source, "indexed.py", "exec"))
    ]
    defs = [code for code, _ in functions if is_def(code)]
    assert len(defs) == len(index.bodies) == len(index.starts) == 19
    for code in defs:
        function_id = index.starts[code.co_firstlineno]
        # Python 3.10's code objects have no qualified name: their own name must match.
        qualname = getattr(code, "co_qualname", None)
        if qualname is None:
            assert spelled_as_cpython(function_id).rpartition(".")[2] == code.co_name
        else:
            assert spelled_as_cpython(function_id) == qualname
        assert index.function_at(code.co_firstlineno) == function_id
    # Lambdas, comprehensions, generator expressions and class bodies belong to the
    # function around them, module-level ones to the skeleton; a lambda in a def's
    # header starts on its line and goes with that def (whose hash covers its header).
    for code, function in functions:
        if is_def(code) or code.co_name == "<module>":
            continue
        expected = None if function is None else index.starts[function.co_firstlineno]
        if code.co_firstlineno in index.starts:
            expected = index.starts[code.co_firstlineno]
        assert index.function_at(code.co_firstlineno) == expected, code


def test_function_ids_name_every_kind_of_function() -> None:
    index = function_index(INDEXED.encode())
    assert index is not None
    assert list(index.bodies) == [
        "plain",
        "decorated",
        "coroutine",
        "duplicate",
        "duplicate#2",
        "duplicate#2.<locals>.inner",
        "Outer.method",
        "Outer.value",
        "Outer.value#2",
        "Outer.Inner.deep",
        "Outer.Inner.deep.<locals>.local",
        "Outer.Inner.deep.<locals>.local.<locals>.InFunction.method_in_function",
        "outer",
        "outer.<locals>.nested",
        "outer.<locals>.made_global",
        "declares_global",
        "made_global",
        "conditional",
        "conditional#2",
    ]
    decorated = INDEXED.splitlines().index("@functools.cache") + 1
    assert index.starts[decorated] == "decorated"
    assert all(first <= last for first, last, _ in index.spans)


def test_a_nested_function_counts_in_its_own_body_and_by_its_header_in_the_outer_one() -> None:
    source = textwrap.dedent(
        """\
        def outer():
            def inner(x=1):
                return x
            return inner
        """
    )
    index = function_index(source.encode())
    body_edit = function_index(source.replace("return x", "return x + 1").encode())
    header_edit = function_index(source.replace("x=1", "x=2").encode())
    assert index is not None
    assert body_edit is not None
    assert header_edit is not None
    assert body_edit.bodies["outer"] == index.bodies["outer"]
    assert body_edit.bodies["outer.<locals>.inner"] != index.bodies["outer.<locals>.inner"]
    assert header_edit.bodies["outer"] != index.bodies["outer"]
    assert header_edit.bodies["outer.<locals>.inner"] != index.bodies["outer.<locals>.inner"]
    assert body_edit.skeleton == header_edit.skeleton == index.skeleton


def test_function_at_finds_the_innermost_function_of_a_line() -> None:
    index = FunctionIndex(
        skeleton="s",
        bodies={"f": "1", "f.<locals>.g": "2"},
        starts={1: "f", 3: "f.<locals>.g"},
        spans=((1, 10, "f"), (3, 5, "f.<locals>.g")),
    )
    assert index.function_at(1) == "f"
    assert index.function_at(2) == "f"
    assert index.function_at(4) == "f.<locals>.g"
    assert index.function_at(7) == "f"
    assert index.function_at(11) is None


def test_an_unparsable_source_has_no_index() -> None:
    assert function_index(b"def broken(:\n") is None
    assert function_index(b"\xff\xfe not utf-8") is None
    assert function_index(b"x = (" * 10_000) is None  # too deep


# -- what core reads -----------------------------------------------------------------------


def test_the_fingerprinter_gives_a_project_files_index_and_label(
    project: Path, tmp_path: Path
) -> None:
    hour_ago = time.time() - 3600  # out of the window where the cache is not trusted
    for path in project.rglob("*.py"):
        os.utime(path, (hour_ago, hour_ago))
    cache_file = tmp_path / "cache" / "analysis.json"
    fingerprinter = Fingerprinter(KeyInputs(root=project), cache_file=cache_file)
    fingerprinter.file_key(project / "tests/test_shapes.py")
    fingerprinter.save()
    index = fingerprinter.functions(project / "app/shapes.py")
    assert index is not None
    assert "Shape.area" in index.bodies
    assert fingerprinter.project_file_label(project / "app/shapes.py") == "app/shapes.py"
    assert fingerprinter.project_file_label(tmp_path / "elsewhere.py") is None
    assert fingerprinter.functions(tmp_path / "elsewhere.py") is None
    # A later session finds the index in the cache, without reading the file again.
    again = Fingerprinter(KeyInputs(root=project), cache_file=cache_file)
    reads: list[str] = []
    read = again.read

    def counting_read(path: str) -> bytes:
        reads.append(path)
        return read(path)

    again.read = counting_read  # type: ignore[method-assign]
    assert again.functions(project / "app/shapes.py") == index
    assert reads == []


def test_modules_named_by_pytest_plugins_count_as_imports(project: Path) -> None:
    """pytest imports them for every test below the conftest that names them."""
    (project / "app/fixtures.py").write_text("import pytest\n\nSIZE = len('x')\n")
    (project / "tests/conftest.py").write_text('pytest_plugins = ["app.fixtures"]\n')
    full, static = keys(project)
    edit(project, "app/fixtures.py", "len('x')", "len('xy')")
    new_full, new_static = keys(project)
    assert new_full != full
    assert new_static != static


def test_project_modules_loaded_with_p_count_for_every_test_file(project: Path) -> None:
    """``-p app.plugin`` (or ``PYTEST_PLUGINS``) loads it for every test."""
    (project / "app/plugin.py").write_text("ENABLED = bool(1)\n")

    def plugin_keys() -> tuple[str, str]:
        fingerprinter = Fingerprinter(KeyInputs(root=project, plugin_modules=("app.plugin",)))
        test_file = project / "tests/test_shapes.py"
        return (
            fingerprinter.file_key(test_file),
            fingerprinter.file_key(test_file, function_bodies=False),
        )

    full, static = plugin_keys()
    edit(project, "app/plugin.py", "bool(1)", "bool(0)")
    new_full, new_static = plugin_keys()
    assert new_full != full
    assert new_static != static


# -- module-level constants ----------------------------------------------------------------


def test_constant_bindings_leave_the_skeleton_and_are_hashed_by_name() -> None:
    source = textwrap.dedent(
        """\
        import os

        __version__ = "1.0"
        LIMIT = 10
        SIZES = {"a": (1, -2), "b": 2 ** 8}


        def helper(x, limit=3):
            return x


        ALIAS = os.sep
        DEFAULT = dict()
        __all__ = ["helper"]


        def typed(x: int) -> int:
            return x


        @staticmethod
        def decorated():
            pass


        def setup_module():
            pass


        def test_collected():
            pass
        """
    )
    index = function_index(source.encode())
    assert index is not None
    # A test function is a binding (a new test changes no other's key), by its name; so
    # is an import of the standard library (imported already: ``os``), and ``__all__``'s
    # order (its names stay in the skeleton, as a set).
    assert sorted(index.bindings) == [
        "__all__",
        "__version__",
        "__version__?",
        "helper",
        "os",
        "test_collected",
    ]
    bumped = function_index(source.replace('"1.0"', '"1.1"').encode())
    assert bumped is not None
    assert bumped.skeleton == index.skeleton
    assert bumped.bindings["__version__"] != index.bindings["__version__"]
    assert {k: v for k, v in bumped.bindings.items() if k != "__version__"} == {
        k: v for k, v in index.bindings.items() if k != "__version__"
    }
    assert bumped.code_digest() != index.code_digest()
    # Not constants: a plain constant (frameworks read them), reads a name, calls, a
    # dunder, a typed def (annotations evaluated), a decorator, a name pytest calls by
    # convention: each edit changes the skeleton.
    reordered = function_index(source.replace('["helper"]', '["helper", "typed"]').encode())
    assert reordered is not None
    assert (
        function_index(source.replace('["helper"]', '["typed", "helper"]').encode()).skeleton
        == reordered.skeleton
    )  # type: ignore[union-attr]
    for old, new in (
        ("import os", "import os, this_module_does_not_exist"),
        ("import os", "from os import no_such_name"),
        ("import os", "from __future__ import annotations\nimport os"),
        ("LIMIT = 10", "LIMIT = 11"),
        ('"b": 2 ** 8', '"b": 2 ** 9'),
        ("os.sep", "os.pathsep"),
        ("dict()", "list()"),
        ('["helper"]', '["typed"]'),
        ("x: int", "x: float"),
        ("@staticmethod", "@classmethod"),
        ("def setup_module():", "def setup_module(a=1):"),
    ):
        edited = function_index(source.replace(old, new).encode())
        assert edited is not None
        assert edited.skeleton != index.skeleton, old


def test_a_metadata_dunder_imported_under_its_own_name_is_passed_on_not_read() -> None:
    """``from ._version import __version__`` reads only that ``__version__`` is bound
    (the import fails without it), not its value: code naming ``__version__`` does.
    Under another name, code reads it by that name, so the import reads the value."""
    passed_on = function_index(b"from ._version import __version__, __author__, helper\n")
    assert passed_on is not None
    assert passed_on.names_of(SKELETON_NAMES) == {"__version__?", "__author__?", "helper"}
    renamed = function_index(b"from ._version import __version__ as VERSION\n")
    assert renamed is not None
    assert renamed.names_of(SKELETON_NAMES) == {"__version__"}
    bound = function_index(b'__version__ = "1.0"\n')
    bumped = function_index(b'__version__ = "1.1"\n')
    assert bound is not None
    assert bumped is not None
    assert sorted(bound.bindings) == ["__version__", "__version__?"]
    assert bumped.bindings["__version__?"] == bound.bindings["__version__?"]
    assert bumped.bindings["__version__"] != bound.bindings["__version__"]


COMPUTED_VERSION = (
    "version_info = (24, 11, 0)\n"
    "__version__ = '.'.join([str(part) for part in version_info if part or part == 0])\n"
)


def test_a_version_computed_from_version_constants_is_a_constant_binding() -> None:
    """glom's ``_version.py``: the computed ``__version__`` is evaluated here and
    hashed with its value, so a bump changes two bindings and no module-level code."""
    index = function_index(COMPUTED_VERSION.encode())
    bumped = function_index(COMPUTED_VERSION.replace("0)", "1, 'dev')").encode())
    assert index is not None
    assert bumped is not None
    assert {"__version__", "version_info"} <= index.bindings.keys()
    assert index.names_of(SKELETON_NAMES) == frozenset()
    assert bumped.skeleton == index.skeleton
    for name in ("__version__", "version_info"):
        assert bumped.bindings[name] != index.bindings[name]
    formatted = function_index(
        b"__version_info__ = (1, 2, 3)\n__version__ = '{}.{}.{}'.format(*__version_info__)\n"
    )
    assert formatted is not None
    assert "__version__" in formatted.bindings


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (("(24, 11, 0)", "24"), "raises on import (not iterable): every importer reruns"),
        (("(24, 11, 0)", "tuple(range(9))"), "reads a name at import"),
        (("version_info = ", "VERSION = "), "a plain constant"),
        (("str(part)", "helper(part)"), "calls the project's code"),
        (("str(part)", "str(part) * 2"), "an operator that can build a large value"),
        (("'.'.join([str(part)", "map(str, [part"), "a value whose repr differs by process"),
    ],
)
def test_a_version_computed_otherwise_stays_module_level_code(
    edit: tuple[str, str], why: str
) -> None:
    index = function_index(COMPUTED_VERSION.replace(*edit).encode())
    assert index is not None
    assert "__version__" not in index.bindings, why


@pytest.mark.parametrize(
    "elsewhere",
    [
        "str = repr\n",
        "from os.path import *\n",
        "def bump():\n    global version_info\n    version_info = (25,)\n",
        "if True:\n    version_info = (0,)\n",
        "def local():\n    for str in ():\n        pass\n",
    ],
)
def test_a_version_computed_from_names_bound_elsewhere_stays_module_level_code(
    elsewhere: str,
) -> None:
    """What the import computes could differ from what is evaluated here."""
    index = function_index((elsewhere + COMPUTED_VERSION).encode())
    assert index is not None
    assert "__version__" not in index.bindings


def test_annotations_postponed_by_the_future_import_do_not_make_a_def_module_level_code() -> None:
    source = "from __future__ import annotations\n\n\ndef typed(x: int) -> Path:\n    return x\n"
    index = function_index(source.encode())
    assert index is not None
    assert list(index.bindings) == ["typed"]
    without = function_index(source.replace("from __future__ import annotations\n", "").encode())
    assert without is not None
    assert without.bindings == {}


def test_a_constants_hash_counts_the_module_level_code_before_it() -> None:
    before = function_index(b"def f():\n    pass\nY = make(f)\n")
    after = function_index(b"Y = make(f)\ndef f():\n    pass\n")
    assert before is not None
    assert after is not None
    assert before.skeleton == after.skeleton
    assert before.bindings["f"] != after.bindings["f"]


def test_the_names_code_reads() -> None:
    source = textwrap.dedent(
        """\
        import pkg.sub as alias
        from other import thing

        RESULT = compute(alias.VALUE)


        def reads():
            return CONSTANT + getattr(pkg, "BY_STRING") + mod.ATTRIBUTE


        def reflective(name):
            return getattr(pkg, name)


        def through_vars():
            return vars(pkg)
        """
    )
    index = function_index(source.encode())
    assert index is not None
    skeleton = index.names_of(SKELETON_NAMES)
    assert {"pkg", "sub", "alias", "thing", "compute", "VALUE", "RESULT"} <= skeleton
    assert {"CONSTANT", "BY_STRING", "ATTRIBUTE", "getattr"} <= index.names_of("reads")
    assert EVERY_NAME not in index.names_of("reads")
    assert EVERY_NAME in index.names_of("reflective")
    assert EVERY_NAME in index.names_of("through_vars")
    assert EVERY_NAME not in skeleton


def test_the_one_walk_tells_statements_apart_as_ast_dump_does() -> None:
    """Keying walks each tree once (`dump_and_names`): over every statement of this
    project's own sources, it tells statements apart exactly when ``ast.dump`` does, and
    finds the names each kind of node reads."""
    tricky = textwrap.dedent(
        """\
        x = 1
        x = "1"
        x = b"1"
        x = 1.0
        x = True
        x = None
        x = "a, b)"
        x = ("a", "b")
        x = "a" "b"
        def f():
            global SEEN_ONLY_HERE
        def g():
            def h():
                nonlocal ALSO_ONLY_HERE
        from . import a
        from .. import a
        import a.b.c as d
        """
    ).encode()
    sources = [tricky, *(p.read_bytes() for p in Path(__file__).parents[1].glob("src/**/*.py"))]
    assert len(sources) > 20
    by_dump: dict[str, str] = {}
    by_text: dict[str, str] = {}
    for source in sources:
        for statement in ast.parse(source).body:
            text, _ = dump_and_names([statement])
            dumped = ast.dump(statement)
            assert by_dump.setdefault(dumped, text) == text
            assert by_text.setdefault(text, dumped) == dumped
    assert len(by_text) > 1000
    _, names = dump_and_names(ast.parse(tricky).body)
    # Stored names, strings' identifiers, declarations and every part of an import.
    assert names == {"x", "a", "b", "ab", "c", "SEEN_ONLY_HERE", "ALSO_ONLY_HERE"}
