"""``--quarantine-flaky``: a failure of a test known to be flaky does not fail the run.

Known to be flaky: the signed history says so (`cachekit.stats.flaky` over the runs of
this namespace's read chain that a holder of ``CACHEKIT_SIGNING_KEY`` signed,
`cachekit.stats.signatures`), so a store writer without the key cannot quarantine a test,
nor can a run without it. Quarantined tests still run; their failures are listed in a
summary section of their own, and when nothing else failed the run exits 0. Any other
failure fails the run as before.

The history is read only when tests failed, at the end of the run, within its time budget
(the most recent `HISTORY_CI_RUNS` CI runs); a store that cannot answer quarantines
nothing.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import attrs
import pytest

from cachekit.ci.signing import ENV_SIGNING_KEY
from cachekit.errors import CacheKitWarning
from cachekit.session import Session
from cachekit.stats.flaky import FlakyTest, find_flaky
from cachekit.stats.history import StoredRuns
from cachekit.stats.signatures import RunSigner, run_signer
from cachekit_pytest.report import warn

_OFF = "cachekit: --quarantine-flaky quarantines nothing in this run"
#: How many of the most recent CI runs tell which tests are flaky.
HISTORY_CI_RUNS = 50


class QuarantineWarning(CacheKitWarning):
    """``--quarantine-flaky`` cannot quarantine anything in this run."""


def configure(config: pytest.Config, session: Session | None) -> None:
    """Register the quarantine the run asks for if it can tell flaky tests apart;
    otherwise one warning says why not."""
    history = signed_history(config, session, off=_OFF, warning=QuarantineWarning)
    if history is not None:
        config.pluginmanager.register(Quarantine(history), "cachekit-quarantine")


@attrs.frozen
class SignedHistory:
    """The runs of this namespace's read chain that a holder of the signing key signed:
    what tells which tests are flaky, for ``--quarantine-flaky`` and ``--rerun-flaky``."""

    session: Session
    signer: RunSigner

    def flaky(self, ids: Collection[str] | None = None) -> list[FlakyTest]:
        """The flaky tests (among ``ids``, default all) over the most recent
        `HISTORY_CI_RUNS` CI runs of every namespace of the read chain (a pull request
        counts its base branch's history)."""
        found: dict[str, FlakyTest] = {}
        for prefix in self.session.namespace.read_prefixes:
            runs = StoredRuns(self.session.cache_under(prefix), accept=self.signer.verified)
            for test in find_flaky(runs, ci_runs=HISTORY_CI_RUNS, ids=ids):
                found.setdefault(test.test_id, test)
        return list(found.values())


def signed_history(
    config: pytest.Config, session: Session | None, *, off: str, warning: type[Warning]
) -> SignedHistory | None:
    """The signed history, or None with one ``warning`` (starting with ``off``) saying
    why there is none: no store, or no signing key (without which any store writer
    could make a test look flaky)."""
    if session is None:
        warn(config, warning(f"{off}: it needs a store (--cache-url)"))
        return None
    signer = run_signer(session.namespace)
    if signer is None:
        warn(
            config,
            warning(
                f"{off}: it needs {ENV_SIGNING_KEY}, as only runs signed with it tell "
                "which tests are flaky (so that no store writer can make a test look flaky)"
            ),
        )
        return None
    return SignedHistory(session, signer)


class Quarantine:
    """Collects the run's failures; at its end, sets aside those of known flaky tests."""

    def __init__(self, history: SignedHistory) -> None:
        self.history = history
        #: Node ids of the tests that failed (in any phase), in order.
        self.failed: dict[str, None] = {}
        self.quarantined: list[FlakyTest] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed[report.nodeid] = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Before the terminal summary and the exit code: which failures are set aside."""
        if not self.failed or session.exitstatus != pytest.ExitCode.TESTS_FAILED:
            return
        found = self.history.session.attempt(
            lambda: self.history.flaky(list(self.failed)), "reading the history of flaky tests"
        )
        self.quarantined = [test for test in found or () if test.test_id in self.failed]
        if len(self.quarantined) == len(self.failed):
            session.exitstatus = pytest.ExitCode.OK

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.quarantined:
            return
        write = terminalreporter.write_line
        terminalreporter.section("cachekit: quarantined flaky tests", sep="=", yellow=True)
        for test in self.quarantined:
            passes, failures = len(test.passes), len(test.failures)
            write(
                f"QUARANTINED {test.test_id}: flaky in the signed history ({passes} "
                f"pass(es), {failures} failure(s) on the same code; last seen "
                f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(test.last_seen))} UTC)"
            )
        others = len(self.failed) - len(self.quarantined)
        write(
            f"{len(self.quarantined)} failure(s) quarantined: they do not fail the run"
            + (f"; {others} other failure(s) do" if others else "")
        )
