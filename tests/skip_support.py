"""A small project in pytester's directory for the ``--skip-passed`` tests: its files,
its in-process runs, and which tests really ran (its conftest appends the id of each test
it sets up to the log file the test gives it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from cachekit import LocalStore
from cachekit_pytest.skip.keys import CACHE_DIR_NAME


class SkipProject:
    """The project's files in pytester's directory, and its runs."""

    def __init__(self, pytester: pytest.Pytester, log: Path, files: Mapping[str, str]) -> None:
        self.pytester = pytester
        self.root = pytester.path
        self.log = log
        for name, text in files.items():
            self.write(name, text)

    @classmethod
    def logged(
        cls,
        pytester: pytest.Pytester,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        files: Mapping[str, str],
    ) -> SkipProject:
        """The project, its conftest logging to a file under ``tmp_path`` (``RUN_LOG``)."""
        log = tmp_path / "ran.log"
        monkeypatch.setenv("RUN_LOG", str(log))
        return cls(pytester, log, files)

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def read(self, name: str) -> str:
        return (self.root / name).read_text(encoding="utf-8")

    def append(self, name: str, text: str) -> None:
        self.write(name, self.read(name) + text)

    def replace(self, name: str, old: str, new: str) -> None:
        text = self.read(name)
        assert text.count(old) == 1, (name, old)
        self.write(name, text.replace(old, new))

    def run(self, *args: str) -> pytest.RunResult:
        """One in-process ``--skip-passed`` run; which tests ran is `ran` afterwards."""
        self.log.write_text("")
        return self.pytester.runpytest("--skip-passed", "-p", "no:randomly", *args)

    def run_subprocess(self, *args: str) -> pytest.RunResult:
        self.log.write_text("")
        return self.pytester.runpytest_subprocess("--skip-passed", "-p", "no:randomly", *args)

    def tests_that_ran(self, *args: str, exit_codes: tuple[int, ...] = (0, 5)) -> set[str]:
        """`run`, which must end with one of ``exit_codes``: the tests that ran."""
        result = self.run(*args)
        assert result.ret in exit_codes, result.stdout.str()
        return self.ran

    @property
    def ran(self) -> set[str]:
        return set(self.log.read_text().split())

    @property
    def store(self) -> LocalStore:
        """The default store of ``--skip-passed`` records (in pytest's cache directory)."""
        return LocalStore(self.root / ".pytest_cache" / "d" / CACHE_DIR_NAME / "store")
