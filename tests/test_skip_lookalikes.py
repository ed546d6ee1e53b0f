"""``--skip-passed`` keeps look-alike functions of different files apart (issue 14).

CPython's code objects compare equal, with equal hashes, when they differ only in their
file name: identical functions of the same name on the same line of two modules (small
helpers, same-shaped ``__init__``s, generated code) were one entry in the recorder's sets
and the attribution's maps, so a test that executed one module's function was recorded as
executing another's, and a change to its own left it skipped (a false skip).

Each test runs a small project in-process with pytester and reads which tests really ran
from a log its conftest writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from skip_support import SkipProject
from test_skip_passed import _environment

__all__ = ["_environment"]

#: Modules lib/m0.py ... each defining the same function on the same line, and a test
#: file each whose tests (themselves alike, line for line) call its module's function.
MODULES = 5
HELPER = "def f3(x):\n    return x + 3\n"
TESTS = """\
from lib.m{index} import f3


def test_f3():
    assert f3(1) == 4


def test_f3_again():
    assert f3(2) == 5
"""
CONFTEST = """\
import os


def pytest_runtest_setup(item):
    with open(os.environ["RUN_LOG"], "a", encoding="utf-8") as file:
        file.write(item.nodeid + "\\n")
"""


def module_tests(index: int) -> set[str]:
    return {f"test_m{index}.py::test_f3", f"test_m{index}.py::test_f3_again"}


EVERY_TEST = set().union(*(module_tests(index) for index in range(MODULES)))


def project_files() -> dict[str, str]:
    files = {"pytest.ini": "[pytest]\npythonpath = .\n", "conftest.py": CONFTEST}
    files["lib/__init__.py"] = ""
    for index in range(MODULES):
        files[f"lib/m{index}.py"] = HELPER
        files[f"test_m{index}.py"] = TESTS.format(index=index)
    return files


@pytest.fixture
def project(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SkipProject:
    made = SkipProject.logged(pytester, tmp_path, monkeypatch, project_files())
    assert made.tests_that_ran() == EVERY_TEST
    assert made.tests_that_ran() == set()
    return made


@pytest.mark.parametrize("index", [3, 0])
def test_a_change_to_one_modules_lookalike_reruns_exactly_its_tests(
    project: SkipProject, index: int
) -> None:
    """m3 is neither the first module run nor the last; m0 is the first (the one its
    look-alikes were recorded as)."""
    project.replace(f"lib/m{index}.py", "return x + 3", "return 3 + x")
    assert project.tests_that_ran() == module_tests(index)
    assert project.tests_that_ran() == set()


def test_a_change_to_one_lookalike_test_reruns_exactly_that_test(project: SkipProject) -> None:
    project.replace("test_m2.py", "assert f3(2) == 5", "assert f3(2) == 2 + 3")
    assert project.tests_that_ran() == {"test_m2.py::test_f3_again"}
