"""``--skip-passed`` with per-test dependencies: a test reruns when its file's static key
changed (module-level code of its import closure, conftests, the environment) or when a
function it executed, while it passed, changed; not for a change to a function it never
executed.

Each test runs a small project in-process with pytester (the xdist one in a subprocess)
and reads which tests really ran from a log its conftest writes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cachekit import Cache
from cachekit.ci.layout import SKIP_PASSED_KEY
from cachekit.ci.namespace import detect_namespace, namespaced_cache
from cachekit.ci.signing import signing_key_from_text
from cachekit.skip.dependencies import DEPENDENCIES_KEY, DependencySets, NamedSets, set_id
from cachekit.skip.records import HASH_HEX, PASSED, Message, Secrets
from cachekit.skip.snapshots import SNAPSHOT_PREFIX
from cachekit.values.codec import JSON
from cachekit_pytest.skip.selection import file_id
from skip_support import SkipProject
from test_skip_passed import SIGNING_KEY, _environment

__all__ = ["_environment"]

PROJECT: dict[str, str] = {
    "pytest.ini": "[pytest]\npythonpath = .\n",
    "conftest.py": """\
import os


def pytest_runtest_setup(item):
    with open(os.environ["RUN_LOG"], "a", encoding="utf-8") as file:
        file.write(item.nodeid + "\\n")
""",
    "lib/__init__.py": "",
    "lib/calc.py": """\
def add(a, b):
    return a + b


def mul(a, b):
    return a * b
""",
    "lib/registry.py": """\
def make_sentinel(name):
    return f"<{name}>"


SENTINEL = make_sentinel("missing")
""",
    "lib/plugins/__init__.py": "",
    "lib/plugins/extra.py": """\
def extra():
    return 42
""",
    "test_add.py": """\
from lib.calc import add


def test_add():
    assert add(1, 2) == 3


def test_add_zero():
    assert add(0, 0) == 0
""",
    "test_mul.py": """\
from lib.calc import add, mul


def test_mul():
    assert mul(2, 3) == 6


def test_mix():
    assert add(mul(2, 2), 1) == 5
""",
    "test_registry.py": """\
from lib.registry import SENTINEL


def test_sentinel():
    assert SENTINEL.startswith("<")


def test_unrelated():
    assert True
""",
    "test_fixture.py": """\
import pytest

from lib.calc import mul


@pytest.fixture(scope="module")
def square():
    return mul(3, 3)


def test_first(square):
    assert square == 9


def test_second(square):
    assert square == 9


def test_plain():
    assert True
""",
    "test_dynamic.py": """\
import importlib


def test_dynamic():
    module = importlib.import_module("lib.plugins.extra")
    assert module.extra() == 42


def test_static():
    assert True
""",
}

ADD = {"test_add.py::test_add", "test_add.py::test_add_zero"}
MUL = {"test_mul.py::test_mul", "test_mul.py::test_mix"}
REGISTRY = {"test_registry.py::test_sentinel", "test_registry.py::test_unrelated"}
FIXTURE = {"test_fixture.py::test_first", "test_fixture.py::test_second"}
DYNAMIC = {"test_dynamic.py::test_dynamic", "test_dynamic.py::test_static"}
EVERY_TEST = ADD | MUL | REGISTRY | FIXTURE | DYNAMIC | {"test_fixture.py::test_plain"}


class Project(SkipProject):
    """The project in pytester's directory, and its runs."""

    def __init__(self, pytester: pytest.Pytester, log: Path) -> None:
        super().__init__(pytester, log, PROJECT)


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    log = tmp_path / "ran.log"
    monkeypatch.setenv("RUN_LOG", str(log))
    made = Project(pytester, log)
    made.run().assert_outcomes(passed=len(EVERY_TEST))
    assert made.ran == EVERY_TEST
    return made


def test_nothing_changed_nothing_runs(project: Project) -> None:
    result = project.run()
    assert project.ran == set()
    assert result.parseoutcomes() == {"cached": len(EVERY_TEST)}


def test_a_function_body_change_reruns_only_the_tests_that_executed_it(project: Project) -> None:
    """``add`` is imported by test_add.py and test_mul.py; test_mul.py's ``test_mul`` and
    the fixture tests never call it."""
    project.replace("lib/calc.py", "return a + b", "return b + a")
    result = project.run()
    assert project.ran == ADD | {"test_mul.py::test_mix"}
    assert result.parseoutcomes() == {"passed": 3, "cached": len(EVERY_TEST) - 3}
    project.run()
    assert project.ran == set()


def test_a_test_function_edit_reruns_only_that_test(project: Project) -> None:
    project.replace("test_add.py", "assert add(0, 0) == 0", "assert add(0, 0) == 0 * 1")
    project.run()
    assert project.ran == {"test_add.py::test_add_zero"}


def test_a_module_scoped_fixture_change_reruns_every_test_using_it(project: Project) -> None:
    """``square`` ran during test_first only; test_second used its value. A change to what
    the fixture executed (``mul``) or to its own body reruns both."""
    project.replace("lib/calc.py", "return a * b", "return b * a")
    project.run()
    assert project.ran == FIXTURE | {"test_mul.py::test_mul", "test_mul.py::test_mix"}
    project.replace("test_fixture.py", "return mul(3, 3)", "return mul(3, 3) + 0")
    project.run()
    assert project.ran == FIXTURE


def test_a_helper_called_at_import_time_reruns_all_importers(project: Project) -> None:
    """``make_sentinel`` runs while ``lib.registry`` is imported (collection), in no
    test: a change to its body still reruns every test of the files that import it,
    and nothing else."""
    project.replace("lib/registry.py", 'return f"<{name}>"', 'return "<" + name + ">"')
    project.run()
    assert project.ran == REGISTRY


def test_module_level_code_reruns_all_importers(project: Project) -> None:
    project.replace("lib/calc.py", "def mul(a, b):", "LIMIT = len('x')\n\n\ndef mul(a, b):")
    project.run()
    assert project.ran == ADD | MUL | FIXTURE | {"test_fixture.py::test_plain"}


# -- module-level constants ------------------------------------------------------------


def test_a_version_bump_reruns_nothing(project: Project) -> None:
    """Issue 14's commonest full rerun: ``__version__`` in the package ``__init__``, read
    by no code of the project."""
    project.write("lib/__init__.py", '__version__ = "1.0"\n')
    project.run()
    assert project.ran == set()
    project.replace("lib/__init__.py", '"1.0"', '"1.1.dev0"')
    project.run()
    assert project.ran == set()


def test_a_version_imported_into_the_package_reruns_nothing_when_bumped(
    project: Project,
) -> None:
    """The commonest layout: ``__version__`` in a module of its own, imported into the
    package ``__init__`` that every test imports. The import passes the value on without
    reading it; only code naming ``__version__`` depends on it."""
    project.write("lib/_version.py", '__version__ = "1.0"\n')
    project.write("lib/__init__.py", "from lib._version import __version__\n")
    project.write(
        "test_version.py",
        "import lib\n\n\ndef test_version():\n    assert lib.__version__ < '2'\n",
    )
    project.run()
    assert "test_version.py::test_version" in project.ran
    project.replace("lib/_version.py", '"1.0"', '"1.1.dev0"')
    project.run()
    assert project.ran == {"test_version.py::test_version"}
    # Gone, the import fails: every importer is collected again (and errors), none is
    # skipped: the package's import reads that it is bound (``__version__?``).
    project.write("lib/_version.py", "")
    result = project.run()
    assert result.parseoutcomes() == {"errors": 5}  # the five test files importing lib
    assert "ImportError: cannot import name '__version__'" in result.stdout.str()


def test_a_version_computed_from_a_version_tuple_reruns_nothing_when_bumped(
    project: Project,
) -> None:
    """glom's layout: ``version_info`` and a ``__version__`` computed from it in
    ``_version.py``, imported into the package. A bump reruns the tests that name
    either; a tuple the computation fails on reruns every importer, which fail."""
    project.write(
        "lib/_version.py",
        "version_info = (1, 0)\n"
        "__version__ = '.'.join([str(part) for part in version_info if part or part == 0])\n",
    )
    project.write("lib/__init__.py", "from lib._version import __version__\n")
    project.write(
        "test_version.py",
        "import lib\n\n\ndef test_version():\n    assert lib.__version__ < '2'\n",
    )
    project.run()
    project.replace("lib/_version.py", "(1, 0)", "(1, 1, 'dev')")
    project.run()
    assert project.ran == {"test_version.py::test_version"}
    project.replace("lib/_version.py", "(1, 1, 'dev')", "11")
    result = project.run()
    assert result.parseoutcomes() == {"errors": 5}
    assert "TypeError: 'int' object is not iterable" in result.stdout.str()


def test_a_version_imported_under_another_name_reruns_all_importers(project: Project) -> None:
    """``from lib._version import __version__ as VERSION``: code reads it as ``VERSION``,
    so the import counts as reading it."""
    project.write("lib/_version.py", '__version__ = "1.0"\n')
    project.write("lib/__init__.py", "from lib._version import __version__ as VERSION\n")
    project.run()
    project.replace("lib/_version.py", '"1.0"', '"1.1"')
    project.run()
    assert project.ran == EVERY_TEST


def test_a_new_undecorated_function_reruns_nothing(project: Project) -> None:
    text = "\n\ndef div(a, b=2):\n    return a / b\n"
    project.write("lib/calc.py", project.read("lib/calc.py") + text)
    project.run()
    assert project.ran == set()


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"),
    [
        ("lib/calc.py", "return a * b", "return ceil(a * b)", MUL | FIXTURE),
        (
            "test_add.py",
            "assert add(0, 0) == 0",
            "assert add(0, 0) == ceil(0)",
            {"test_add.py::test_add_zero"},
        ),
    ],
    ids=["in-a-module", "in-a-test-file"],
)
def test_a_standard_library_import_reruns_only_the_tests_whose_code_names_it(
    project: Project, path: str, old: str, new: str, expected: set[str]
) -> None:
    """Adding an import of the standard library (or a name to one), to a module or to a
    test file, changes no test's key; using it reruns the tests whose code does."""
    project.write(path, "from math import floor\n\n\n" + project.read(path))
    project.run()
    assert project.ran == set()
    project.replace(path, "from math import floor", "from math import ceil, floor")
    project.run()
    assert project.ran == set()
    project.replace(path, old, new)
    project.run()
    assert project.ran == expected


def test_a_standard_library_import_that_fails_reruns_every_importer(project: Project) -> None:
    """A name the module does not have (a typo, a name of another Python version) would
    fail the import: the statement is the skeleton's, and every importer reruns."""
    project.write("lib/calc.py", "from math import floor\n\n\n" + project.read("lib/calc.py"))
    project.run()
    project.replace("lib/calc.py", "from math import floor", "from math import floor, flor")
    result = project.run()
    # The three test files importing calc (the others' pass is cached).
    assert result.parseoutcomes() == {"errors": 3, "cached": 4}
    assert "ImportError: cannot import name 'flor'" in result.stdout.str()


def _star_imported_calc(project: Project, *, exported: str | None) -> None:
    """``lib/__init__.py`` star-imports ``lib.calc``, whose ``__all__`` is ``exported``
    (none when None), and the tests import the package; recorded."""
    text = project.read("lib/calc.py")
    if exported is not None:
        text = f"__all__ = {exported}\n\n\n{text}"
    project.write("lib/calc.py", "from math import floor\n" + text)
    project.write("lib/__init__.py", "from .calc import *\n")
    for name in ("test_add.py", "test_mul.py", "test_fixture.py"):
        project.replace(name, "from lib.calc import", "from lib import")
    project.run()
    project.run()
    assert project.ran == set()


def test_through_a_star_import_an_import_counts_only_where_named_when_all_is_given(
    project: Project,
) -> None:
    """``from .calc import *`` binds what ``calc.__all__`` names: a new import in
    ``calc`` (not exported) reruns no test; without ``__all__`` it would be exported and
    reruns every importer."""
    _star_imported_calc(project, exported='["add", "mul"]')
    project.replace("lib/calc.py", "from math import floor", "from math import ceil, floor")
    project.run()
    assert project.ran == set()


def test_through_a_star_import_without_all_every_binding_counts(project: Project) -> None:
    _star_imported_calc(project, exported=None)
    project.replace("lib/calc.py", "from math import floor", "from math import ceil, floor")
    project.run()
    assert project.ran == EVERY_TEST  # every test file imports the package


def test_reordering_all_reruns_only_the_tests_naming_it(project: Project) -> None:
    _star_imported_calc(project, exported='["add", "mul"]')
    project.write(
        "test_all.py", "import lib.calc\n\n\ndef test_all():\n    assert lib.calc.__all__\n"
    )
    project.run()
    project.replace("lib/calc.py", '["add", "mul"]', '["mul", "add"]')
    project.run()
    assert project.ran == {"test_all.py::test_all"}


def test_removing_a_function_all_names_reruns_every_importer(project: Project) -> None:
    """The star import then fails: every test file importing the package errors (all
    but ``test_dynamic.py``, which imports it as its test runs)."""
    _star_imported_calc(project, exported='["add", "mul"]')
    project.replace("lib/calc.py", "def mul(a, b):\n    return a * b\n", "")
    result = project.run()
    assert result.parseoutcomes() == {"errors": 4}
    assert "module 'lib.calc' has no attribute 'mul'" in result.stdout.str()


@pytest.mark.skipif(sys.version_info >= (3, 15), reason="lazy imports from 3.15 (PEP 810)")
def test_lazy_modules_rerun_nothing_before_python_3_15(project: Project) -> None:
    project.write("lib/calc.py", "__lazy_modules__ = ['json']\n" + project.read("lib/calc.py"))
    project.run()
    project.replace("lib/calc.py", "['json']", "frozenset({'json', 'csv'})")
    project.run()
    assert project.ran == set()


def test_a_plain_constant_reruns_all_importers(project: Project) -> None:
    """Frameworks read module constants from code that is not the project's (Django's
    settings through ``dir()``): only the metadata dunders count by name."""
    project.replace("lib/calc.py", "def mul(a, b):", "LIMIT = 10\n\n\ndef mul(a, b):")
    project.run()
    assert project.ran == ADD | MUL | FIXTURE | {"test_fixture.py::test_plain"}


def test_a_new_decorated_function_reruns_all_importers(project: Project) -> None:
    """A decorator runs code at import: the skeleton counts it."""
    text = "\n\n@staticmethod\ndef div(a, b=2):\n    return a / b\n"
    project.write("lib/calc.py", project.read("lib/calc.py") + text)
    project.run()
    assert project.ran == ADD | MUL | FIXTURE | {"test_fixture.py::test_plain"}


def test_a_version_read_by_a_function_reruns_the_tests_that_executed_it(
    project: Project,
) -> None:
    """``mul`` reads ``lib.__version__``: a bump reruns exactly the tests that executed
    ``mul`` (directly or through the module-scoped fixture), not the other importers."""
    project.write("lib/__init__.py", '__version__ = "1.0"\n')
    project.replace("lib/calc.py", "def add(a, b):", "import lib\n\n\ndef add(a, b):")
    project.replace("lib/calc.py", "return a * b", "return a * b * len(lib.__version__) // 3")
    project.run()
    project.replace("lib/__init__.py", '"1.0"', '"1.1"')
    project.run()
    assert project.ran == MUL | FIXTURE
    project.replace("lib/__init__.py", '"1.1"', '"10.10.1"')
    result = project.run()
    assert project.ran == MUL | FIXTURE
    assert result.parseoutcomes()["failed"] == 4


def test_a_constant_read_at_import_reruns_all_importers(project: Project) -> None:
    """``SENTINEL = make_sentinel(PREFIX)`` reads ``PREFIX`` when the module is imported:
    every importer's key counts it, whether or not a test names it."""
    project.replace(
        "lib/registry.py",
        'SENTINEL = make_sentinel("missing")',
        'PREFIX = "missing"\nSENTINEL = make_sentinel(PREFIX)',
    )
    project.run()
    assert project.ran == REGISTRY
    project.replace("lib/registry.py", 'PREFIX = "missing"', 'PREFIX = "absent"')
    project.run()
    assert project.ran == REGISTRY


def test_moving_a_constant_below_the_code_that_reads_it_reruns_its_readers(
    project: Project,
) -> None:
    """The skeleton is the same whether ``PREFIX`` is bound before or after the call;
    the constant's hash counts how many skeleton statements precede it."""
    project.replace(
        "lib/registry.py",
        'SENTINEL = make_sentinel("missing")',
        'PREFIX = "missing"\nSENTINEL = make_sentinel(PREFIX)\nOTHER = 1',
    )
    project.run()
    project.replace("lib/registry.py", 'PREFIX = "missing"\n', "")
    project.replace("lib/registry.py", "OTHER = 1", 'OTHER = 1\nPREFIX = "missing"')
    result = project.run()
    assert project.ran == set()  # the file fails to import: its tests error at collection
    assert result.ret != 0
    assert "NameError" in result.stdout.str()


def test_code_that_looks_names_up_reruns_on_any_new_function(project: Project) -> None:
    """``getattr(module, name)`` with a computed name can read any binding."""
    project.write(
        "lib/lookup.py",
        "import lib.calc\n\n\ndef find(name):\n    return getattr(lib.calc, name.strip())\n",
    )
    project.write(
        "test_lookup.py",
        "from lib.lookup import find\n\n\ndef test_find():\n    assert find(' add ')(1, 1) == 2\n",
    )
    project.run()
    assert project.ran == {"test_lookup.py::test_find"}
    project.write("lib/calc.py", project.read("lib/calc.py") + "\n\ndef div(a, b=2):\n    pass\n")
    project.run()
    assert project.ran == {"test_lookup.py::test_find"}
    # Metadata dunders count only where named: code walking a namespace skips them.
    project.write("lib/__init__.py", '__version__ = "1.0"\n')
    project.run()
    assert project.ran == set()


def test_a_test_files_own_constants_rerun_its_tests(project: Project) -> None:
    project.replace("test_add.py", "def test_add():", "EXPECTED = 3\n\n\ndef test_add():")
    project.run()
    assert project.ran == ADD
    project.replace("test_add.py", "EXPECTED = 3", "EXPECTED = 4")
    project.run()
    assert project.ran == ADD


def test_a_function_reached_by_a_dynamic_import_is_tracked(project: Project) -> None:
    """``lib.plugins.extra`` is in no static import: the test that imported it reruns
    when it changes, its neighbour does not."""
    project.replace("lib/plugins/extra.py", "return 42", "return 6 * 7")
    project.run()
    assert project.ran == {"test_dynamic.py::test_dynamic"}


def test_docstring_and_comment_edits_rerun_nothing(project: Project) -> None:
    project.replace(
        "lib/calc.py", "    return a + b", '    """Sum."""\n    # plain\n    return a + b'
    )
    project.run()
    assert project.ran == set()


def test_a_test_that_failed_reruns_until_it_passes(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``test_mul`` fails for a reason outside its key (an environment variable no key
    names), seen by a verify run: it runs again, with the same key, until it passes."""
    project.replace("test_mul.py", "def test_mul():", "def test_mul():\n    import os\n")
    project.replace(
        "test_mul.py",
        "assert mul(2, 3) == 6",
        'assert mul(2, 3) == 6 + int(os.environ.get("BREAK", "0"))',
    )
    project.run()
    assert project.ran == {"test_mul.py::test_mul"}
    monkeypatch.setenv("BREAK", "1")
    failed = project.run("--skip-passed-verify")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    monkeypatch.delenv("BREAK")
    explained = project.run("--skip-passed-explain")
    assert project.ran == {"test_mul.py::test_mul"}
    explained.stdout.fnmatch_lines(["RAN test_mul.py::test_mul - failed last time"])
    project.run()
    assert project.ran == set()


def test_code_that_parametrizes_tests_while_collecting_reruns_them(project: Project) -> None:
    """``pytest_generate_tests`` runs while pytest collects a module or a class, in no test
    and not on import: what it executed still counts for the tests collected there (the
    ids stay the same, so only their dependencies can say the values changed)."""
    project.write(
        "test_generated.py",
        "def values():\n    return [1, 2]\n\n\n"
        "def pytest_generate_tests(metafunc):\n"
        "    if 'n' in metafunc.fixturenames:\n"
        "        metafunc.parametrize('n', values(), ids=['a', 'b'])\n\n\n"
        "def test_module_level(n):\n    assert n > 0\n\n\n"
        "class TestInClass:\n    def test_method(self, n):\n        assert n > 0\n",
    )
    generated = {
        "test_generated.py::test_module_level[a]",
        "test_generated.py::test_module_level[b]",
        "test_generated.py::TestInClass::test_method[a]",
        "test_generated.py::TestInClass::test_method[b]",
    }
    project.run()
    assert project.ran == generated
    project.replace("test_generated.py", "return [1, 2]", "return [1, -2]")
    result = project.run()
    assert project.ran == generated
    assert result.parseoutcomes()["failed"] == 2


def test_parametrized_tests_share_one_dependency_set(project: Project) -> None:
    """Twenty parametrized tests that execute the same code are stored as one set (their
    file's, the union of theirs, is the same)."""
    before = set(_sets(project))
    project.write(
        "test_many.py",
        "import pytest\n\nfrom lib.calc import add\n\n\n"
        "@pytest.mark.parametrize('n', range(20))\n"
        "def test_many(n):\n    assert add(n, 0) == n\n",
    )
    project.run()
    assert len(project.ran) == 20
    assert len(set(_sets(project)) - before) == 1  # the file's union is the same set
    project.run()
    assert project.ran == set()


def test_xdist_records_and_skips_the_same_way(project: Project) -> None:
    project.run_subprocess("-n", "2")  # its own records (another process, other options)
    result = project.run_subprocess("-n", "2")
    assert project.ran == set()
    # Whole files too (nothing collected), test_dynamic.py (a member outside its closure)
    # included.
    result.stdout.fnmatch_lines(["*2 workers [[]0 items[]]*"])
    project.replace("lib/calc.py", "return a + b", "return b + a")
    result = project.run_subprocess("-n", "2", "--skip-passed-explain")
    assert project.ran == ADD | {"test_mul.py::test_mix"}
    assert result.parseoutcomes() == {"passed": 3, "cached": len(EVERY_TEST) - 3}
    # The workers explain from the snapshot the controller wrote.
    result.stdout.fnmatch_lines(["RAN test_mul.py::test_mix - function lib/calc.py::add changed"])
    project.replace("lib/calc.py", "return a * b", "return b * a")
    project.run_subprocess("-n", "2")
    assert project.ran == FIXTURE | {"test_mul.py::test_mul", "test_mul.py::test_mix"}
    project.run_subprocess("-n", "2")
    assert project.ran == set()


# -- what is stored -------------------------------------------------------------------------


def _stored(project: Project) -> dict[str, list[str]]:
    """``skip/dependencies``: the sets and the runs' snapshots."""
    cache = namespaced_cache(project.store, detect_namespace())
    value: dict[str, list[str]] = cache.read_merged(DEPENDENCIES_KEY, DependencySets()).value
    return value


def _sets(project: Project) -> dict[str, list[str]]:
    return {k: v for k, v in _stored(project).items() if not k.startswith(SNAPSHOT_PREFIX)}


def _plant(project: Project, key: str, part: str, value: Any) -> None:
    """A part written as any store writer could, without the signing key."""
    Cache(namespaced_cache(project.store, detect_namespace()).store).write_part(key, part, value)


def test_a_set_no_record_names_is_dropped_when_a_run_compacts(project: Project) -> None:
    """``test_add`` starts calling ``mul``: its new set is stored beside the old one. Once
    the fold kept only its newer record, the next run that compacts new sets drops the
    old ones, and every test still skips."""
    project.write("pytest.ini", PROJECT["pytest.ini"] + "cache_compact_threshold = 1\n")
    project.run()
    before = set(_sets(project))
    project.replace("test_add.py", "import add\n", "import add, mul\n")
    project.replace("test_add.py", "assert add(1, 2) == 3", "assert add(1, 2) == mul(3, 1)")
    project.run()
    assert project.ran == ADD
    grown = set(_sets(project))
    new = grown - before  # test_add's, and its file's union
    assert new
    assert before < grown  # the old ones are still named
    project.replace("test_mul.py", "assert mul(2, 3) == 6", "assert mul(2, 3) == add(3, 3)")
    project.run()
    assert project.ran == {"test_mul.py::test_mul"}
    after = set(_sets(project))
    assert new <= after
    assert grown - after <= before  # only old ones went
    assert len(grown - after) == len(new)  # each one replaced
    project.run()
    assert project.ran == set()


def test_a_set_written_since_the_read_is_kept_whether_or_not_named() -> None:
    """Another run may have stored a set, and a record naming it, after this run read:
    only sets this run read and no record names are dropped."""
    old, named, unseen = ([digit * HASH_HEX] for digit in "012")
    value: JSON = {set_id(members): list[JSON](members) for members in (old, named, unseen)}
    kept = NamedSets(frozenset({set_id(named)}), frozenset({set_id(old), set_id(named)}))
    assert kept.check(value) == {set_id(named): named, set_id(unseen): unseen}


def test_without_its_dependency_set_a_test_runs(project: Project) -> None:
    for key in project.store.list(""):
        if "/skip/dependencies/" in key:
            project.store.delete(key)
    project.run()
    assert project.ran == EVERY_TEST


def test_a_record_of_the_older_format_is_a_miss_with_one_warning(project: Project) -> None:
    """Signed passes without a dependency set (as written before them), of a test and of
    its file, newer than the real ones: they skip nothing, one warning says so, and the
    test is recorded again."""
    secrets = Secrets.derive(signing_key_from_text(SIGNING_KEY, "test"), "")
    namespace = detect_namespace()
    now = time.time()
    test = Message(
        namespace.prefix, PASSED, secrets.test_hash("test_add.py::test_add"), "0" * 32, now, "old"
    )
    file = Message(
        namespace.prefix,
        PASSED,
        secrets.file_hash(file_id("test_add.py", doctests=False)),
        "0" * 32,
        now,
        "old",
        count=2,
    )
    planted = {message.name: secrets.stored(message) for message in (test, file)}
    _plant(project, SKIP_PASSED_KEY, "older", planted)
    result = project.run()
    assert project.ran == {"test_add.py::test_add"}
    text = result.stdout.str()
    assert text.count("records of an older format") == 1, text
    project.run()
    assert project.ran == set()  # recorded again, in the current format


def test_explain_says_why_each_test_ran(project: Project) -> None:
    project.replace("lib/calc.py", "return a + b", "return b + a")
    project.write("test_new.py", "def test_new():\n    pass\n")
    result = project.run("--skip-passed-explain")
    result.stdout.fnmatch_lines(
        [
            "*= 4 test(s) ran (skip-passed): why =*",
            "RAN test_add.py::test_add - function lib/calc.py::add changed",
            "RAN test_add.py::test_add_zero - function lib/calc.py::add changed",
            "RAN test_mul.py::test_mix - function lib/calc.py::add changed",
            "RAN test_new.py::test_new - never recorded",
            "cachekit skip-passed: 4 ran: 3 function lib/calc.py::add changed; 1 never recorded",
        ]
    )
    quiet = project.run()
    assert "ran (skip-passed): why" not in quiet.stdout.str()


def test_a_scoped_fixture_requested_by_getfixturevalue_counts(project: Project) -> None:
    """``total`` runs during ``test_direct``; ``test_lookup`` asks for it by name (not
    in its signature) and uses the value: a change to what ``total`` executed reruns
    both."""
    project.write(
        "test_lookup.py",
        "import pytest\n\nfrom lib.calc import add\n\n\n"
        '@pytest.fixture(scope="module")\ndef total():\n    return add(2, 2)\n\n\n'
        "def test_direct(total):\n    assert total == 4\n\n\n"
        'def test_lookup(request):\n    assert request.getfixturevalue("total") == 4\n',
    )
    project.run()
    project.replace("lib/calc.py", "return a + b", "return b + a")
    project.run()
    assert {"test_lookup.py::test_direct", "test_lookup.py::test_lookup"} <= project.ran
