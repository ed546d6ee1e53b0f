"""Test statistics of a pytest run: per test, its outcome, duration and reruns.

Recorded as the run's own parts of ``stats/runs`` and ``stats/durations``
(`cachekit.stats.runs.run_parts`), exactly as ``cachekit stats ingest`` records a JUnit XML
report, so ``cachekit stats summary`` and duration-balanced sharding read both alike.
The pytest process only tallies reports; the records are built where the parts are
written (`RunRecord.parts`: in the sync agent for a remote store), off the test run's
critical path.
"""

from __future__ import annotations

from typing import Any

import attrs
from _pytest.reports import TestReport

from cachekit.ci.commit import detect_commit
from cachekit.stats.junit import CaseOutcome, TestCase
from cachekit.stats.runs import Run, run_parts
from cachekit.values.codec import JSON

#: failure > error > skipped > success, as for JUnit reports (DESIGN.md).
_RANK: dict[CaseOutcome, int] = {"passed": 0, "skipped": 1, "error": 2, "failed": 3}


class TestStats:
    """Tallies of the reports the process receives (not on xdist workers). Called by
    `cachekit_pytest.provider.Recorder`'s hook rather than from a hook of its own: that
    saves pluggy a call per report, and most reports (passed) only add a duration."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        #: node id -> seconds of its setup, call and teardown, in the order tests reported.
        self.seconds: dict[str, float] = {}
        #: node id -> [outcome, reruns, message], for tests that did not simply pass.
        self.unusual: dict[str, list[Any]] = {}

    def tally(self, report: TestReport) -> None:
        nodeid = report.nodeid
        seconds = self.seconds
        seconds[nodeid] = seconds.get(nodeid, 0.0) + report.duration
        if report.outcome == "passed":
            return
        entry = self.unusual.get(nodeid)
        if entry is None:
            entry = self.unusual[nodeid] = ["passed", 0, ""]
        if str(report.outcome) == "rerun":  # pytest-rerunfailures: another attempt follows
            entry[1] += 1
            return
        outcome: CaseOutcome
        if report.skipped:
            outcome = "skipped"
        elif report.when == "call":
            outcome = "failed"
        else:
            outcome = "error"
        if _RANK[outcome] > _RANK[entry[0]]:
            entry[0] = outcome
            entry[2] = _message(report)

    def record(
        self, *, at: float, run_id: str, label: str, shard: str = "", commit: str | None = None
    ) -> RunRecord:
        """The run's record; ``commit`` by default from the CI environment
        (`detect_commit`), for telling flaky tests from fixed ones."""
        return RunRecord(
            at=at,
            run_id=run_id,
            label=label,
            shard=shard,
            commit=detect_commit() if commit is None else commit,
            # Whole microseconds, the precision recorded: integers are a third of the
            # work of floats to send to the sync agent as JSON.
            microseconds={nodeid: round(value * 1e6) for nodeid, value in self.seconds.items()},
            unusual=self.unusual,
        )


@attrs.frozen
class RunRecord:
    """A run's tallies, as the pytest process hands them to whoever writes the parts."""

    at: float
    #: The CI run (`cachekit.ci.namespace.Namespace.run_id`) and the namespace, for people.
    run_id: str
    label: str
    #: Which shard of the CI run this is (`cachekit.ci.namespace.Namespace.shard`).
    shard: str
    #: The commit the run tested ("" if unknown; `cachekit.ci.commit`).
    commit: str
    #: node id -> duration in whole microseconds, for every test that reported.
    microseconds: dict[str, int]
    #: node id -> [outcome, reruns, message] where not [passed, 0, ""] (typed Any: passed
    #: through as JSON).
    unusual: dict[str, Any]

    def cases(self) -> tuple[TestCase, ...]:
        passed = ("passed", 0, "")
        return tuple(
            _case(nodeid, microseconds / 1e6, *self.unusual.get(nodeid, passed))
            for nodeid, microseconds in self.microseconds.items()
        )

    def parts(self, part_id: str) -> dict[str, JSON]:
        """The parts that record this run, by key, the run named by its part id."""
        run = Run(
            id=part_id,
            at=self.at,
            run_id=self.run_id,
            source="pytest",
            label=self.label,
            cases=self.cases(),
            shard=self.shard,
            commit=self.commit,
        )
        return run_parts(run)


def _case(nodeid: str, seconds: float, outcome: CaseOutcome, reruns: int, message: str) -> TestCase:
    """A `TestCase` whose `TestCase.test_id` is ``nodeid`` again (JUnit's naming:
    ``file``, a dotted ``classname`` of module and classes, and ``name``)."""
    head, _, parameters = nodeid.partition("[")
    path, *classes, name = head.split("::")
    name += f"[{parameters}" if parameters else ""
    module = path[:-3].replace("/", ".") if path.endswith(".py") else ""
    classname = ".".join(part for part in (module, *classes) if part)
    return TestCase(
        file=path,
        classname=classname,
        name=name,
        outcome=outcome,
        duration=seconds,
        reruns=reruns,
        message=message,
    )


def _message(report: TestReport) -> str:
    """The first line of why a test failed or was skipped, at most 200 characters."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        text = str(longrepr[2]).removeprefix("Skipped: ")
    else:
        crash = getattr(getattr(longrepr, "reprcrash", None), "message", None)
        text = str(crash if crash is not None else longrepr or "")
    return text.strip().split("\n", 1)[0][:200]
