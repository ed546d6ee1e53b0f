"""The recorder behind ``--skip-passed``'s per-test dependencies, where making it cheap
could lose what it sees (`cachekit_pytest.skip.tracing`, `cachekit_pytest.skip.profiling`):
code a thread runs, an import made while the recorder is paused (a conftest's
``pytest_ignore_collect``), a test that sets a profiler of its own, and a function that
consecutive tests call (on Python 3.12+, seen once per window and disabled until the next).

Each test runs a small project in-process with pytester and reads which tests really ran
from a log its conftest writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from skip_support import SkipProject
from test_skip_passed import _environment

__all__ = ["_environment"]

PROJECT: dict[str, str] = {
    "pytest.ini": "[pytest]\npythonpath = .\n",
    "conftest.py": """\
import importlib
import os


def pytest_ignore_collect(collection_path):
    importlib.import_module("lib." + "late")  # while the recorder is paused; unseen

    return None


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


def in_thread():
    return 7
""",
    "lib/helpers.py": """\
def tag():
    return "t"
""",
    "lib/late.py": """\
from lib.helpers import tag

TAG = tag()
""",
    "test_a_profiled.py": """\
import cProfile

from lib.calc import add


def test_profiled():
    profiler = cProfile.Profile()
    profiler.enable()
    assert add(1, 2) == 3
    profiler.disable()
""",
    "test_b_calls.py": """\
import threading

from lib.calc import add, in_thread, mul


def test_add():
    assert add(1, 1) == 2


def test_add_again():
    assert add(2, 2) == 4


def test_mul():
    assert mul(2, 3) == 6


def test_thread():
    found = []
    thread = threading.Thread(target=lambda: found.append(in_thread()))
    thread.start()
    thread.join()
    assert found == [7]
""",
    "test_c_late.py": """\
from lib.late import TAG


def test_late():
    assert TAG == "t"
""",
}
PROFILED = "test_a_profiled.py::test_profiled"
ADD = {"test_b_calls.py::test_add", "test_b_calls.py::test_add_again"}
MUL = "test_b_calls.py::test_mul"
THREAD = "test_b_calls.py::test_thread"
LATE = "test_c_late.py::test_late"
EVERY_TEST = {PROFILED, *ADD, MUL, THREAD, LATE}
#: Before 3.12, ``test_profiled`` reruns for any change to what its file imports.
_PROFILED_FALLS_BACK = {PROFILED} if sys.version_info < (3, 12) else set()


@pytest.fixture
def project(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SkipProject:
    log = tmp_path / "ran.log"
    monkeypatch.setenv("RUN_LOG", str(log))
    made = SkipProject(pytester, log, PROJECT)
    assert made.tests_that_ran() == EVERY_TEST
    assert made.tests_that_ran() == set()
    return made


def test_consecutive_tests_that_call_a_function_both_rerun(project: SkipProject) -> None:
    """On 3.12+ ``add`` is disabled once seen in a window: the next test's window must
    see it again. ``test_profiled`` calls it too."""
    project.replace("lib/calc.py", "return a + b", "return b + a")
    assert project.tests_that_ran() == ADD | {PROFILED}


def test_code_a_thread_runs_counts_for_its_test(project: SkipProject) -> None:
    project.replace("lib/calc.py", "return 7", "return 3 + 4")
    assert project.tests_that_ran() == {THREAD} | _PROFILED_FALLS_BACK


def test_an_import_made_while_paused_counts_its_whole_closure(project: SkipProject) -> None:
    """``lib.late`` is first imported by the conftest's ``pytest_ignore_collect`` (by a
    name no static analysis sees), while the recorder does not look: what its import
    ran is unknown, so ``test_late`` depends on every file of its closure whole,
    ``tag``'s body included."""
    project.replace("lib/helpers.py", 'return "t"', 'return "t" + ""')
    assert project.tests_that_ran() == {LATE}


def test_a_test_that_sets_its_own_profiler(project: SkipProject) -> None:
    """Before 3.12 the test's profiler replaces the recorder's: the test falls back to
    its file's full key (``mul``'s body too), and the tests after it are recorded again.
    On 3.12+ its profiler is a ``sys.monitoring`` tool of its own and changes nothing."""
    project.replace("lib/calc.py", "return a * b", "return b * a")
    assert project.tests_that_ran() == {MUL} | _PROFILED_FALLS_BACK
