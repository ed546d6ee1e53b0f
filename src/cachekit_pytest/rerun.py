"""``--rerun-flaky=N``: a failure of a test known to be flaky is retried, up to N times.

Known to be flaky as for ``--quarantine-flaky``: the signed history says so
(`cachekit_pytest.quarantine.SignedHistory`), so no store writer can make cachekit retry
a test, and a new failure of any other test is reported at once, as without the option.
The history is read once, when the first test fails; under xdist the controller reads it
before the tests start and hands it to the workers, which have no store of their own.

Each failed attempt is reported as a rerun (``R``, "N rerun" in the summary line, as
pytest-rerunfailures reports them, which is not needed), and the statistics record it: a
pass after reruns is itself evidence that the test is flaky. Only the test's own failures
are retried: an error in a module-, class- or session-scoped fixture is kept by pytest
for every test that needs it, so a retry would only repeat it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

from cachekit.errors import CacheKitWarning
from cachekit.session import Session
from cachekit_pytest.quarantine import SignedHistory, signed_history

#: The xdist worker input that carries the known flaky tests to the workers.
WORKER_INPUT = "cachekit_known_flaky"
_OFF = "cachekit: --rerun-flaky reruns nothing in this run"


class RerunWarning(CacheKitWarning):
    """``--rerun-flaky`` cannot tell which tests are flaky in this run."""


def configure(config: pytest.Config, session: Session | None, reruns: int) -> None:
    """Register up to ``reruns`` reruns of a flaky test's failure if the run can tell
    flaky tests apart; otherwise one warning says why not. An xdist worker gets the flaky
    tests from its controller."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        known = workerinput.get(WORKER_INPUT)
        if isinstance(known, list):
            flaky = frozenset(str(test_id) for test_id in known)
            config.pluginmanager.register(FlakyReruns(reruns, lambda: flaky), "cachekit-rerun")
        return
    history = signed_history(config, session, off=_OFF, warning=RerunWarning)
    if history is not None:
        config.pluginmanager.register(FlakyReruns(reruns, _known(history)), "cachekit-rerun")


def _known(history: SignedHistory) -> Callable[[], frozenset[str]]:
    """The flaky tests' ids, read once when first asked (none if the store cannot say
    within the run's time budget)."""

    @functools.cache
    def known() -> frozenset[str]:
        tests = history.session.attempt(history.flaky, "reading the history of flaky tests")
        return frozenset(test.test_id for test in tests or ())

    return known


class FlakyReruns:
    """Runs each test, and again after a failure while it is known to be flaky."""

    def __init__(self, reruns: int, known: Callable[[], frozenset[str]]) -> None:
        self.reruns = reruns
        self.known = known

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: the workers run the tests, with the flaky ones it knows."""
        node.workerinput[WORKER_INPUT] = sorted(self.known())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        """pytest's protocol (`runtestprotocol`), repeated while a known flaky test
        fails and reruns are left; a failed attempt's reports up to its failure are
        logged, the failure as a rerun."""
        hook = item.ihook
        hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for attempt in range(self.reruns + 1):
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            failed = next((report for report in reports if report.failed), None)
            if failed is None or attempt == self.reruns or item.nodeid not in self.known():
                for report in reports:
                    hook.pytest_runtest_logreport(report=report)
                break
            for report in reports[: reports.index(failed) + 1]:
                if report is failed:
                    report.outcome = "rerun"  # type: ignore[assignment]  # as rerunfailures
                hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def pytest_report_teststatus(
        self, report: pytest.TestReport
    ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        if report.outcome == "rerun":  # type: ignore[comparison-overlap]
            return "rerun", "R", ("RERUN", {"yellow": True})
        return None
