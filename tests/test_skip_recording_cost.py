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
import sys


def pytest_ignore_collect(collection_path):
    importlib.import_module("lib." + "late")  # while the recorder is paused; unseen

    return None


def pytest_unconfigure(config):
    calc = sys.modules.get("lib.calc")
    if calc is not None:  # the thread test_spinning left running ends after recording
        calc.STOP.set()


def pytest_runtest_setup(item):
    with open(os.environ["RUN_LOG"], "a", encoding="utf-8") as file:
        file.write(item.nodeid + "\\n")
""",
    "lib/__init__.py": "",
    "lib/calc.py": """\
import threading


def add(a, b):
    return a + b


def mul(a, b):
    return a * b


def in_thread():
    return 7


def neg(a):
    return -a


class Worker(threading.Thread):
    def run(self):
        self.result = 5


#: Set when the session ends (the conftest's ``pytest_unconfigure``).
STOP = threading.Event()


def spin(started):
    started.set()
    while not STOP.wait(0.01):
        pass
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

from lib.calc import Worker, add, in_thread, mul


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


def test_worker():
    worker = Worker()
    worker.start()
    worker.join()
    assert worker.result == 5
""",
    "test_d_spinning.py": """\
import threading

from lib.calc import spin


def test_spinning():  # the session's last test: no later test runs while spin does
    started = threading.Event()
    threading.Thread(target=spin, args=(started,), daemon=True).start()
    assert started.wait(10)
""",
    "test_0_collected.py": """\
import threading

from lib.calc import neg

# A thread that ends while the module is collected: its profiler is dropped afterwards.
_thread = threading.Thread(target=str)
_thread.start()
_thread.join()


def test_neg():
    assert neg(1) == -1
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
WORKER = "test_b_calls.py::test_worker"
SPINNING = "test_d_spinning.py::test_spinning"
LATE = "test_c_late.py::test_late"
NEG = "test_0_collected.py::test_neg"
EVERY_TEST = {PROFILED, *ADD, MUL, THREAD, WORKER, SPINNING, LATE, NEG}
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


def test_a_thread_subclass_run_counts_for_its_test(project: SkipProject) -> None:
    project.replace("lib/calc.py", "self.result = 5", "self.result = 2 + 3")
    assert project.tests_that_ran() == {WORKER} | _PROFILED_FALLS_BACK


def test_code_a_thread_still_runs_when_its_test_ends_counts_for_it(
    project: SkipProject,
) -> None:
    """``spin`` is still running (it returns when the session ends): before 3.12 a
    thread's profiler lists a function once it returns, so the thread's stack counts."""
    project.replace("lib/calc.py", "STOP.wait(0.01)", "STOP.wait(0.02)")
    assert project.tests_that_ran() == {SPINNING} | _PROFILED_FALLS_BACK


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
