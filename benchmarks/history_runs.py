"""The runs of `bench_skip_history`: a clone of the project per tool, one pytest process
in it, what its junit report says, and the sums the report is made of.

Why junit: it is the one account of a run that both tools and plain pytest write the same
way. cachekit leaves its cached passes out of it, testmon the tests it deselects or never
collects, so a test in it is a test that was executed (a cached pass found in it anyway
is not counted, nor a test skipped by a mark or ``pytest.skip()``: its body never ran).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from xml.etree import ElementTree

from benchmarks.harness import run_process
from benchmarks.mutations import Mutant

TOOLS = ("cachekit", "testmon")
#: The options that make each kind of run, after `BASE_ARGS` and before the test paths.
TOOL_ARGS = {
    "plain": ["-p", "no:cachekit", "-p", "no:testmon"],
    "cachekit": ["--skip-passed", "-p", "no:testmon"],
    "testmon": ["--testmon", "-p", "no:cachekit"],
}
#: Other plugins that reorder or spread tests stay off, if the project's venv has them;
#: a collection error must not stop the rest of the run (it counts as its file failing).
BASE_ARGS = ["-q", "-p", "no:randomly", "-p", "no:xdist", "--continue-on-collection-errors"]
#: Each tool's state in its clone: what is saved after settling and restored per mutant.
STATE = {
    "plain": [],
    "cachekit": [".pytest_cache"],
    "testmon": [".testmondata", ".testmondata-wal", ".testmondata-shm"],
}
#: cachekit's line about what it skipped, kept with the run beside pytest's summary line.
CACHEKIT_LINE = "cachekit skip-passed:"
_COLLECTION_FAILURE = "collection failure"
_ROOTDIR = re.compile(r"^rootdir: ([^,\n]+)", re.MULTILINE)
#: Source files get modification times from this counter, one second apart: a mutant and
#: the original text have the same size, so a write in the same second as the last would
#: let Python's bytecode cache (and any tool that trusts size and time) take one for the
#: other.
_MTIMES = itertools.count(1_500_000_000)


class RunSettings(Protocol):
    tests: list[str]
    timeout: float


@dataclass
class PytestRun:
    """One pytest process and what its junit report says."""

    tool: str
    label: str
    seconds: float
    exit_code: int
    timed_out: bool
    has_report: bool
    #: Test ids in the report (``classname::name``; a collection error ``collect::<module>``).
    executed: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    #: Test ids skipped by a mark, unittest or ``pytest.skip()``: not among ``executed``.
    skipped: set[str] = field(default_factory=set)
    collection_errors: int = 0
    #: pytest's last line, and cachekit's line about what it skipped ("" elsewhere).
    summary: str = ""
    cachekit_line: str = ""

    @property
    def collected(self) -> int:
        """For a plain run: every test it ran (not those skipped), and each file that
        failed to collect."""
        return len(self.executed)

    def unusable(self) -> str:
        """Why a plain run cannot be the reference for its commit ("" if it can)."""
        if self.unfinished():
            return self.unfinished()
        if self.collection_errors:
            return f"{self.collection_errors} test file(s) failed to collect"
        return ""

    def unfinished(self) -> str:
        if self.timed_out:
            return "timed out"
        if not self.has_report:
            return f"exit code {self.exit_code}, no junit report"
        return "" if self.exit_code in (0, 1, 5) else f"exit code {self.exit_code}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "executed": len(self.executed),
            "skipped": len(self.skipped),
            "failed": sorted(self.failed),
            "collection_errors": self.collection_errors,
            "summary": self.summary,
            "cachekit_line": self.cachekit_line,
        }


def read_junit(path: Path, run: PytestRun) -> None:
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return
    run.has_report = True
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        skipped = case.find("skipped")
        if skipped is not None and "cached" in (skipped.get("message") or "").lower():
            continue
        if skipped is not None and skipped.get("type") == "pytest.skip":
            # Skipped by a mark, unittest or ``pytest.skip()``: its body did not run (an
            # xfail's did). cachekit runs it again (it caches passes only), testmon does
            # not: counting it would count a skip check as an execution.
            run.skipped.add(f"{classname}::{name}")
            continue
        errors = [*case.iter("failure"), *case.iter("error")]
        collection = any(e.get("message") == _COLLECTION_FAILURE for e in errors)
        test_id = f"collect::{name}" if collection or not classname else f"{classname}::{name}"
        run.collection_errors += collection
        run.executed.add(test_id)
        if errors:
            run.failed.add(test_id)


@dataclass
class Clone:
    """A clone of the project that one kind of run (plain or a tool) works in."""

    name: str
    path: Path
    python: Path
    settings: RunSettings
    logs: Path
    env: dict[str, str]
    originals: dict[str, str] = field(default_factory=dict)
    #: ``-c`` and ``--rootdir`` when pytest would take its configuration from a directory
    #: above the clone (the clones sit inside this project, whose pyproject has a
    #: ``[tool.pytest.ini_options]``): the project is then run as if alone.
    isolation: list[str] = field(default_factory=list)

    @classmethod
    def fresh(
        cls,
        name: str,
        repo: Path,
        path: Path,
        *,
        python: Path,
        settings: RunSettings,
        logs: Path,
        env: dict[str, str],
    ) -> Clone:
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(path)], check=True)
        return cls(name, path, python, settings, logs, env)

    def checkout(self, commit: str) -> None:
        subprocess.run(
            ["git", "-C", str(self.path), "checkout", "-q", "-f", "--detach", commit], check=True
        )

    def pytest(self, label: str) -> PytestRun:
        junit = self.logs / f"{label}-{self.name}.xml"
        junit.unlink(missing_ok=True)
        command = [
            str(self.python), "-m", "pytest", *BASE_ARGS, *self.isolation,
            *TOOL_ARGS[self.name], f"--junitxml={junit}", *self.settings.tests,
        ]  # fmt: skip
        log = self.logs / f"{label}-{self.name}.log"
        finished = run_process(
            command, log=log, env=self.env, timeout=self.settings.timeout, cwd=self.path
        )
        timed_out = finished.exit_code < 0 and finished.seconds >= self.settings.timeout
        run = PytestRun(self.name, label, finished.seconds, finished.exit_code, timed_out, False)
        read_junit(junit, run)
        lines = log.read_text("utf-8", errors="replace").strip().splitlines()
        run.summary = lines[-1] if lines else ""
        run.cachekit_line = next((x for x in lines if x.startswith(CACHEKIT_LINE)), "")
        return run

    def warm_up(self) -> None:
        """Collect once with no tool and no cache: the first run of each kind then pays
        no more than the others for compiling the project and rewriting its asserts. Its
        header says where pytest found the rootdir (see `isolation`)."""
        command = [
            str(self.python), "-m", "pytest", "--collect-only", "-p", "no:cacheprovider",
            *TOOL_ARGS["plain"], *self.settings.tests,
        ]  # fmt: skip
        log = self.logs / f"warm-up-{self.name}.log"
        run_process(command, log=log, env=self.env, timeout=self.settings.timeout, cwd=self.path)
        found = _ROOTDIR.search(log.read_text("utf-8", errors="replace"))
        if found and Path(found[1]).resolve() != self.path.resolve():
            empty = self.logs / "no-pytest-config.ini"
            empty.write_text("[pytest]\n", "utf-8")
            self.isolation = ["-c", str(empty), "--rootdir", str(self.path)]

    def clear_state(self) -> None:
        """The tool's state gone: its next run is a first one again."""
        for name in STATE[self.name]:
            _remove(self.path / name)

    @property
    def _saved(self) -> Path:
        return self.path.parent / "state" / self.name

    def save_state(self) -> None:
        shutil.rmtree(self._saved, ignore_errors=True)
        self._saved.mkdir(parents=True)
        for name in STATE[self.name]:
            _copy(self.path / name, self._saved / name)

    def restore_state(self) -> None:
        for name in STATE[self.name]:
            _remove(self.path / name)
            _copy(self._saved / name, self.path / name)

    def write_mutant(self, mutant: Mutant) -> None:
        original = (self.path / mutant.path).read_text("utf-8")
        self.originals[mutant.path] = original
        _write_source(self.path / mutant.path, mutant.apply(original))

    def restore_source(self, mutant: Mutant) -> None:
        original = self.originals.pop(mutant.path, None)
        if original is not None:
            _write_source(self.path / mutant.path, original)


def _write_source(path: Path, text: str) -> None:
    """A new file in its place (a new inode), with a modification time of its own."""
    temporary = path.with_name(path.name + ".mutating")
    temporary.write_text(text, "utf-8")
    stamp = next(_MTIMES) * 1_000_000_000
    os.utime(temporary, ns=(stamp, stamp))
    os.replace(temporary, path)


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    elif source.exists():
        shutil.copy2(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass
class Measured:
    """One commit (or one mutant): the plain run and each tool's run of it."""

    commit: str
    subject: str
    plain: PytestRun
    runs: dict[str, PytestRun]
    changed: list[str]

    def executed(self, tool: str) -> int:
        return len(self.runs[tool].executed)

    def hidden(self, tool: str) -> set[str]:
        """Tests that fail in the plain run and that the tool did not run."""
        return self.plain.failed - self.runs[tool].executed

    def passed_when_run(self, tool: str) -> set[str]:
        """Tests that fail in the plain run, and passed when the tool ran them: the tool
        hid nothing, the test's outcome differs from run to run (a random choice, a
        timing). Reported apart from those hidden."""
        run = self.runs[tool]
        return (self.plain.failed & run.executed) - run.failed

    def line(self) -> str:
        shown = ", ".join(
            f"{tool} {self.executed(tool)} run {self.runs[tool].seconds:.1f} s"
            f" hidden {len(self.hidden(tool))}"
            + (f" passed when run {len(passed)}" if (passed := self.passed_when_run(tool)) else "")
            for tool in TOOLS
        )
        return (
            f"{self.plain.collected} tests, {len(self.plain.failed)} failing, "
            f"plain {self.plain.seconds:.1f} s; {shown}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "subject": self.subject,
            "changed": self.changed,
            "plain": self.plain.as_dict(),
            "runs": {tool: run.as_dict() for tool, run in self.runs.items()},
            "hidden": {tool: sorted(self.hidden(tool)) for tool in TOOLS},
            "passed_when_run": {tool: sorted(self.passed_when_run(tool)) for tool in TOOLS},
        }


@dataclass
class Total:
    """One tool over a list of `Measured`."""

    collected: int = 0
    executed: int = 0
    hidden: int = 0
    with_hidden: int = 0
    passed_when_run: int = 0
    seconds: float = 0.0
    plain_seconds: float = 0.0

    @property
    def left_out(self) -> float:
        return 1 - self.executed / self.collected if self.collected else 0.0

    @property
    def saved(self) -> float:
        return 1 - self.seconds / self.plain_seconds if self.plain_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "collected": self.collected,
            "executed": self.executed,
            "hidden": self.hidden,
            "with_hidden": self.with_hidden,
            "passed_when_run": self.passed_when_run,
            "seconds": round(self.seconds, 3),
            "plain_seconds": round(self.plain_seconds, 3),
            "left_out": self.left_out,
            "saved": self.saved,
        }


def totals(measured: Sequence[Measured]) -> dict[str, Total]:
    sums = {tool: Total() for tool in TOOLS}
    for one in measured:
        for tool, total in sums.items():
            hidden = len(one.hidden(tool))
            total.collected += one.plain.collected
            total.executed += one.executed(tool)
            total.hidden += hidden
            total.with_hidden += hidden > 0
            total.passed_when_run += len(one.passed_when_run(tool))
            total.seconds += one.runs[tool].seconds
            total.plain_seconds += one.plain.seconds
    return sums
