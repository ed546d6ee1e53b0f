"""Test statistics of a pytest run: per test, its outcome, duration and reruns.

Recorded as the run's own parts of ``stats/runs`` and ``stats/durations``
(`cachekit.stats.runs.run_parts`), exactly as ``cachekit stats ingest`` records a JUnit XML
report, so ``cachekit stats summary`` and duration-balanced sharding read both alike.
The pytest process only tallies reports; the records are built where the parts are
written (`RunRecord.parts`: in the sync agent for a remote store), off the test run's
critical path.

A test's duration is its own: the setup and teardown of module-, class- and
package-scoped fixtures it happened to trigger (`cachekit_pytest.scoped`) are taken out
and recorded under their scope, in the same ``stats/durations`` part.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from _pytest.reports import TestReport

from cachekit.ci.commit import detect_commit
from cachekit.stats.junit import CaseOutcome
from cachekit_pytest.scoped import REPORT_ATTRIBUTE, UNSPLITTABLE, scoped_paid
from cachekit_pytest.sync.records import RunRecord

#: The name the ``--skip-passed`` run plugin (`cachekit_pytest.skip.run.SkipRun`) is
#: registered under, which `code_keys` looks it up by. Here, not in that package: this
#: module is always imported, and the package only when the feature is on.
RUN_PLUGIN = "cachekit-skip-passed-run"
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
        #: xdist worker ("" without xdist) -> scope node id -> seconds of its scoped
        #: fixtures' setups and teardowns there.
        self.scoped: dict[str, dict[str, float]] = {}

    def tally(self, report: TestReport) -> None:
        nodeid = report.nodeid
        seconds = self.seconds
        duration = report.duration
        if REPORT_ATTRIBUTE in report.__dict__:
            duration = self._scoped(report, duration)
        seconds[nodeid] = seconds.get(nodeid, 0.0) + duration
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

    def _scoped(self, report: TestReport, duration: float) -> float:
        """``duration`` less the scoped fixtures paid in the report's phase, which are
        tallied by scope instead."""
        paid = scoped_paid(report)
        if not paid:
            return duration
        worker = self.scoped.setdefault(str(getattr(report, "worker_id", "")), {})
        for scope_id, spent in paid.items():
            worker[scope_id] = worker.get(scope_id, 0.0) + spent
        return max(0.0, duration - sum(paid.values()))

    def scoped_setups(self) -> dict[str, float]:
        """Seconds per scope: the most one process paid (xdist workers each set up the
        fixtures of the scopes they ran), sessions left out (`scoped.UNSPLITTABLE`)."""
        result: dict[str, float] = {}
        for paid in self.scoped.values():
            for scope_id, spent in paid.items():
                if scope_id not in UNSPLITTABLE:
                    result[scope_id] = max(spent, result.get(scope_id, 0.0))
        return result

    def record(
        self,
        *,
        at: float,
        run_id: str,
        label: str,
        shard: str = "",
        commit: str | None = None,
        codes: dict[str, str] | None = None,
    ) -> RunRecord:
        """The run's record; ``commit`` by default from the CI environment
        (`detect_commit`), and ``codes`` (test file -> code key, from ``--skip-passed``),
        for telling flaky tests from fixed ones."""
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
            scoped_microseconds={
                scope_id: round(spent * 1e6) for scope_id, spent in self.scoped_setups().items()
            },
            codes=codes or {},
        )


def code_keys(config: pytest.Config, nodeids: Iterable[str]) -> dict[str, str]:
    """The code key of each test file of ``nodeids``, when ``--skip-passed`` keyed it:
    the keyed hash of the file's key that its pass records hold
    (`cachekit_pytest.skip.selection.Decision`), the same on every run and shard that
    shares the signing key and ran the same code. Empty when the feature is off."""
    run = config.pluginmanager.get_plugin(RUN_PLUGIN)
    decisions = getattr(getattr(run, "selection", None), "decisions", None)
    if not decisions:
        return {}
    codes: dict[str, str] = {}
    for nodeid in nodeids:
        decision = decisions.get(nodeid)
        if decision is not None and decision.key_hash:
            codes.setdefault(nodeid.partition("::")[0], decision.key_hash)
    return codes


def _message(report: TestReport) -> str:
    """The first line of why a test failed or was skipped, at most 200 characters."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        text = str(longrepr[2]).removeprefix("Skipped: ")
    else:
        crash = getattr(getattr(longrepr, "reprcrash", None), "message", None)
        text = str(crash if crash is not None else longrepr or "")
    return text.strip().split("\n", 1)[0][:200]
