"""``--skip-passed`` runs on edits that change no code, docstrings under doctests, and
what counts of the ini file and of the installed distributions.

Each test runs pytest in-process (pytester) on a small project, twice or more, and reads
which tests ran from a log its conftest writes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cachekit.ci.signing import ENV_SIGNING_KEY
from cachekit_pytest.skip.keys import ini_digest
from skip_support import SkipProject

SIGNING_KEY = "test-signing-key-" + "0123456789abcdef" * 2

CONFTEST = """\
import os


def pytest_runtest_setup(item):
    with open(os.environ["STATIC_RUN_LOG"], "a", encoding="utf-8") as file:
        file.write(item.nodeid + "\\n")
"""

CALC = '''\
"""Arithmetic."""


def add(a, b):
    """Add two numbers.

    >>> add(1, 2)
    3
    """
    return a + b  # plain addition


def twice(a):
    return 2 * a
'''


FILES = {
    "conftest.py": CONFTEST,
    "calc.py": CALC,
    "test_add.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    "test_twice.py": "from calc import twice\n\n\ndef test_twice():\n    assert twice(2) == 4\n",
}


@pytest.fixture
def project(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SkipProject:
    for name in list(os.environ):
        if name.startswith("CACHEKIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(ENV_SIGNING_KEY, SIGNING_KEY)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    log = tmp_path / "ran.log"
    monkeypatch.setenv("STATIC_RUN_LOG", str(log))
    return SkipProject(pytester, log, FILES)


#: Every run here must pass: these tests never fail, and some always run.
OK = (int(pytest.ExitCode.OK),)
EVERY_TEST = {"test_add.py::test_add", "test_twice.py::test_twice"}


def test_edits_that_change_no_code_rerun_nothing(project: SkipProject) -> None:
    assert project.tests_that_ran(exit_codes=OK) == EVERY_TEST
    project.replace("calc.py", "# plain addition", "# the sum")
    project.replace("calc.py", '"""Arithmetic."""', '"""Arithmetic, done simply."""')
    project.replace("calc.py", "def twice(a):", "def twice(\n    a,\n):")
    project.replace("test_add.py", "def test_add():", "def test_add():  # the basic case")
    assert project.tests_that_ran(exit_codes=OK) == set()
    project.replace("calc.py", "return 2 * a", "return a + a")
    assert project.tests_that_ran(exit_codes=OK) == {
        "test_twice.py::test_twice"
    }  # the test that executed it


def test_a_docstring_edit_reruns_doctests_when_they_run(project: SkipProject) -> None:
    """Under ``--doctest-modules`` a docstring is a test: its edit reruns it."""
    doctest = "calc.py::calc.add"
    assert project.tests_that_ran("--doctest-modules", exit_codes=OK) == EVERY_TEST | {doctest}
    project.replace("calc.py", "    >>> add(1, 2)\n    3\n", "    >>> add(2, 2)\n    4\n")
    assert project.tests_that_ran("--doctest-modules", exit_codes=OK) == {
        doctest
    }  # its importers' keys: unchanged
    project.replace("calc.py", "# plain addition", "# the sum")
    assert project.tests_that_ran("--doctest-modules", exit_codes=OK) == set()


PYPROJECT = """\
[project]
name = "calc"
version = "1.0"

[tool.pytest.ini_options]
addopts = "-p no:randomly"

[tool.other]
setting = 1
"""


def test_only_the_pytest_sections_of_the_ini_file_count(project: SkipProject) -> None:
    project.write("pyproject.toml", PYPROJECT)
    assert project.tests_that_ran(exit_codes=OK) == EVERY_TEST
    project.replace("pyproject.toml", 'version = "1.0"', 'version = "1.1"')
    project.replace("pyproject.toml", "setting = 1", "setting = 2  # elsewhere")
    assert project.tests_that_ran(exit_codes=OK) == set()
    project.replace("pyproject.toml", '"-p no:randomly"', '"-p no:randomly -p no:doctest"')
    assert project.tests_that_ran(exit_codes=OK) == EVERY_TEST


@pytest.mark.parametrize(
    ("name", "text", "edits"),
    [
        pytest.param(
            "pyproject.toml",
            '[project]\nversion = "1"\n[tool.pytest.ini_options]\nxfail_strict = true\n',
            [('version = "1"', 'version = "2"', False), ("true", "false", True)],
            id="pyproject.toml",
        ),
        pytest.param(
            "pyproject.toml",
            '[tool.pytest]\nminversion = "9.0"\n[tool.black]\nline-length = 88\n',
            [("88", "100", False), ('"9.0"', '"9.1"', True)],
            id="pytest-9-native-toml",
        ),
        pytest.param(
            "setup.cfg",
            "[metadata]\nversion = 1\n[tool:pytest]\nxfail_strict = true\n",
            [("version = 1", "version = 2", False), ("true", "false", True)],
            id="setup.cfg",
        ),
        pytest.param(
            "tox.ini",
            "[tox]\nenvlist = py311\n[pytest]\nxfail_strict = true\n",
            [("py311", "py312", False), ("xfail_strict", "XFAIL_STRICT", True)],
            id="tox.ini",
        ),
        pytest.param(
            "pytest.ini",
            "# settings\n[pytest]\nxfail_strict = true\n",
            [("# settings", "# the settings", False), ("true", "false", True)],
            id="pytest.ini",
        ),
    ],
)
def test_ini_digest_counts_the_sections_pytest_reads(
    tmp_path: Path, name: str, text: str, edits: list[tuple[str, str, bool]]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    before = ini_digest(path)
    for old, new, changes in edits:
        path.write_text(path.read_text().replace(old, new))
        after = ini_digest(path)
        assert (after != before) == changes, (old, new)
        before = after


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("pyproject.toml", "[tool.pytest.ini_options\nbroken = \n"),
        ("pyproject.toml", "tool = 1\n"),
        ("setup.cfg", "[tool:pytest]\nx = 1\nx = 2\n"),  # a duplicate
        ("tox.ini", "no section header\n"),
        ("pytest.ini", "[pytest]\n\xff\n"),
    ],
)
def test_an_ini_file_that_does_not_parse_counts_whole(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    before = ini_digest(path)
    assert before.startswith("file ")
    path.write_bytes(path.read_bytes() + b"\n# anything\n")
    assert ini_digest(path) != before
