"""``--skip-passed`` when tests are added to a test file: the new test runs, and no other
test of the file does, unless its code can see the new one (by name, by reflection, by
inheriting it as its own, or through a decorator that may read its neighbours).

Each test runs a small project in-process with pytester and reads which tests really ran
from a log its conftest writes (`skip_support.SkipProject`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from skip_support import SkipProject
from test_skip_functions import PROJECT as LOGGED
from test_skip_passed import _environment

__all__ = ["_environment"]

#: The runs' log, a library module to test, and two test files.
PROJECT: dict[str, str] = {
    **{
        name: LOGGED[name]
        for name in ("pytest.ini", "conftest.py", "lib/__init__.py", "lib/calc.py")
    },
    "test_functions.py": """\
import pytest

import lib.calc as calc


def test_add():
    assert calc.add(1, 2) == 3


@pytest.mark.parametrize("n", [1, 2])
def test_mul(n):
    assert calc.mul(n, 1) == n
""",
    "test_cases.py": """\
import unittest

import lib.calc as calc


class BaseTests(unittest.TestCase):
    def setUp(self):
        self.one = 1

    def test_add(self):
        self.assertEqual(calc.add(self.one, 1), 2)


class MoreTests(BaseTests):
    def test_mul(self):
        self.assertEqual(calc.mul(self.one, 3), 3)
""",
}

FUNCTIONS = {
    "test_functions.py::test_add",
    "test_functions.py::test_mul[1]",
    "test_functions.py::test_mul[2]",
}
CASES = {
    "test_cases.py::BaseTests::test_add",
    "test_cases.py::MoreTests::test_add",
    "test_cases.py::MoreTests::test_mul",
}
NEG = "\n\ndef neg(a):\n    return -a\n"
NEG_METHOD = "    def test_neg(self):\n        self.assertEqual(calc.neg(self.one), -1)\n\n"
NEW_METHOD = "    def test_new(self):\n        pass\n\n"


def add_method(project: SkipProject, before: str, method: str) -> None:
    """Put ``method`` (its text ending with a blank line) in ``test_cases.py``, as the
    method before ``before``."""
    anchor = f"    def {before}(self):"
    project.replace("test_cases.py", anchor, method + anchor)


@pytest.fixture
def project(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SkipProject:
    made = SkipProject.logged(pytester, tmp_path, monkeypatch, PROJECT)
    made.run().assert_outcomes(passed=len(FUNCTIONS | CASES))
    assert made.ran == FUNCTIONS | CASES
    return made


def test_a_new_test_function_runs_alone(project: SkipProject) -> None:
    # It calls a function no test named before, added to the library with it.
    project.append("lib/calc.py", NEG)
    new = "\n\ndef test_neg():\n    assert calc.neg(1) == -1\n"
    project.append("test_functions.py", new)
    project.run()
    assert project.ran == {"test_functions.py::test_neg"}
    project.run()
    assert project.ran == set()  # the file is skipped whole again


def test_moving_tests_around_reruns_nothing(project: SkipProject) -> None:
    """Pytest calls a test once its module is imported: above or below an import, the
    same test."""
    test_add = "def test_add():\n    assert calc.add(1, 2) == 3\n\n\n"
    project.replace("test_functions.py", test_add, "")
    project.replace("test_functions.py", "import pytest\n", test_add + "import pytest\n")
    project.run()
    assert project.ran == set()


def test_a_new_parametrized_test_runs_alone_and_reruns_when_its_values_change(
    project: SkipProject,
) -> None:
    new = '\n\n@pytest.mark.parametrize("n", [3, 4])\ndef test_more(n):\n    assert n > 2\n'
    project.append("test_functions.py", new)
    project.run()
    assert project.ran == {"test_functions.py::test_more[3]", "test_functions.py::test_more[4]"}
    project.replace("test_functions.py", "[3, 4]", "[3, 5]")
    project.run()
    assert project.ran == {"test_functions.py::test_more[3]", "test_functions.py::test_more[5]"}
    project.replace("test_functions.py", '"n", [1, 2]', '"n", [1, 2, 3]')
    project.run()
    assert project.ran == {f"test_functions.py::test_mul[{n}]" for n in (1, 2, 3)}


def test_a_new_test_method_runs_alone_in_its_class_and_the_subclasses(
    project: SkipProject,
) -> None:
    project.append("lib/calc.py", NEG)
    add_method(project, "test_add", NEG_METHOD)
    project.run()
    assert project.ran == {
        "test_cases.py::BaseTests::test_neg",
        "test_cases.py::MoreTests::test_neg",
    }


def test_a_test_docstring_counts_for_its_test_alone(project: SkipProject) -> None:
    """The test file's docstrings count for its tests (doctests may run them), but a
    test function's only for its own test."""
    add_method(project, "test_mul", '    def test_new(self):\n        """Documented."""\n\n')
    project.run()
    assert project.ran == {"test_cases.py::MoreTests::test_new"}
    project.replace("test_cases.py", '"""Documented."""', '"""Documented again."""')
    project.run()
    assert project.ran == {"test_cases.py::MoreTests::test_new"}
    project.replace("test_cases.py", "import unittest", '"""The cases."""\nimport unittest')
    project.run()
    assert project.ran == CASES | {"test_cases.py::MoreTests::test_new"}


def test_an_override_in_a_subclass_reruns_the_test_it_replaces(project: SkipProject) -> None:
    """``MoreTests::test_add`` ran ``BaseTests.test_add``; now its own. A test counts
    the test functions of its name in its class and the classes it inherits from:
    ``BaseTests::test_add`` does not rerun."""
    add_method(
        project,
        "test_mul",
        "    def test_add(self):\n        self.assertEqual(calc.add(2, 2), 4)\n\n",
    )
    project.run()
    assert project.ran == {"test_cases.py::MoreTests::test_add"}
    project.replace("test_cases.py", "calc.add(2, 2), 4", "calc.add(2, 3), 5")
    project.run()
    assert project.ran == {"test_cases.py::MoreTests::test_add"}


def test_what_the_tests_of_a_file_share_reruns_them_all(project: SkipProject) -> None:
    project.replace("test_cases.py", "self.one = 1", "self.one = 1.0")  # setUp, run by all
    project.run()
    assert project.ran == CASES
    # A class body's other statements are module-level code.
    project.replace(
        "test_cases.py", "class MoreTests(BaseTests):", "class MoreTests(BaseTests):\n    x = 1\n"
    )
    project.run()
    assert project.ran == CASES


def test_a_test_that_looks_its_neighbours_up_reruns_when_one_is_added(
    project: SkipProject,
) -> None:
    project.replace(
        "test_cases.py",
        "class MoreTests(BaseTests):",
        "class MoreTests(BaseTests):\n"
        "    def test_count(self):\n"
        '        self.assertTrue([name for name in dir(self) if name.startswith("test_")])\n',
    )
    project.run()
    assert project.ran == {"test_cases.py::MoreTests::test_count"}
    add_method(project, "test_count", NEW_METHOD)
    project.run()
    assert project.ran == {
        "test_cases.py::MoreTests::test_count",
        "test_cases.py::MoreTests::test_new",
    }


def test_a_test_added_under_a_decorator_that_may_read_it_reruns_its_neighbours(
    project: SkipProject,
) -> None:
    """A decorated class, or a test with a decorator other than pytest's marks with
    literal values, is module-level code: every test of the file reruns."""
    project.replace(
        "test_cases.py",
        "class MoreTests(BaseTests):",
        "@unittest.skipIf(False, 'never')\nclass MoreTests(BaseTests):",
    )
    project.run()
    assert project.ran == CASES
    add_method(project, "test_mul", NEW_METHOD)
    project.run()
    assert project.ran == CASES | {"test_cases.py::MoreTests::test_new"}
    new = '\n\n@pytest.mark.skipif(calc.add(1, 1) != 2, reason="")\ndef test_new():\n    pass\n'
    project.append("test_functions.py", new)
    project.run()
    assert project.ran == FUNCTIONS | {"test_functions.py::test_new"}


def test_under_xdist_a_new_test_runs_alone(project: SkipProject) -> None:
    """xdist workers key their tests and the controller keys whole files: recorded
    without xdist, skipped with it, and the reverse."""
    project.append("lib/calc.py", NEG)
    new = "\n\ndef test_neg():\n    assert calc.neg(1) == -1\n"
    project.append("test_functions.py", new)
    add_method(project, "test_mul", NEG_METHOD)
    project.run_subprocess("-n", "2").assert_outcomes(passed=2)
    assert project.ran == {"test_functions.py::test_neg", "test_cases.py::MoreTests::test_neg"}
    project.run()
    assert project.ran == set()


def test_a_test_added_to_a_class_another_file_imports_runs_there_too(
    project: SkipProject,
) -> None:
    """Pytest collects a test class imported into a test file, and its subclasses: the
    new method is a new test of that file too, which must not be skipped whole."""
    derived = "from test_cases import BaseTests\n\n\nclass DerivedTests(BaseTests):\n    pass\n"
    project.write("test_derived.py", derived)
    project.run()
    assert project.ran == {
        "test_derived.py::BaseTests::test_add",
        "test_derived.py::DerivedTests::test_add",
    }
    add_method(project, "test_add", NEW_METHOD)
    project.run()
    assert project.ran == {
        f"{path}::{cls}::test_new"
        for path, cls in (
            ("test_cases.py", "BaseTests"),
            ("test_cases.py", "MoreTests"),
            ("test_derived.py", "BaseTests"),
            ("test_derived.py", "DerivedTests"),
        )
    }


def test_a_star_import_of_the_package_passes_tests_on_by_name(project: SkipProject) -> None:
    """A package ``__init__`` re-exporting its modules with ``from .calc import *`` reads
    every binding of theirs, but a new test beside its importers' is no name it reads."""
    project.write("lib/__init__.py", "from .calc import *\n")
    project.replace("test_cases.py", "import lib.calc as calc", "import lib as calc")
    project.run()
    assert project.ran == FUNCTIONS | CASES  # the package's module-level code changed
    add_method(project, "test_add", NEW_METHOD)
    project.run()
    assert project.ran == {
        "test_cases.py::BaseTests::test_new",
        "test_cases.py::MoreTests::test_new",
    }
    project.append("lib/calc.py", NEG)  # a name it reads
    project.run()
    assert project.ran == FUNCTIONS | CASES | {
        "test_cases.py::BaseTests::test_new",
        "test_cases.py::MoreTests::test_new",
    }
