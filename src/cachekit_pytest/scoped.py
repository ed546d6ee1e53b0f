"""Scoped fixtures, timed apart from the tests that happen to trigger them.

A module-scoped fixture is set up in the setup of the module's first test, and torn down
in the teardown of its last: pytest's report counts it in those tests' durations. A
shard split that believes the first test is the slow one scatters the module's tests
over every shard, and each shard pays the setup again. `ScopedSetupTimer` times the
setup and teardown of every fixture whose scope is not "function" (its own code only:
the fixtures it requests are set up before, and timed on their own), and hands each
test report what was paid during that phase, by scope node id, as `REPORT_ATTRIBUTE`
(an attribute xdist carries to its controller with the rest of the report).
`cachekit_pytest.recording.TestStats` takes it out of the test's duration and records
it under the scope (`cachekit.values.durations.scoped_setup_key`), for the split
(`cachekit.stats.sharding`).

Session-scoped fixtures (and package-scoped ones outside any package, which pytest
scopes to the session) are taken out of the test's duration too, but not recorded:
every shard pays them whatever the split.
"""

from __future__ import annotations

from collections.abc import Generator
from time import perf_counter
from typing import Any

import pytest

#: The report attribute: ``{scope node id: seconds}`` paid during the report's phase.
REPORT_ATTRIBUTE = "cachekit_scoped"
#: Where an xdist controller that records statistics tells its workers to time fixtures.
WORKERINPUT_KEY = "cachekit_time_scoped"
#: Scope ids no split can use ("" is the session's, "." a package at the rootdir).
UNSPLITTABLE = ("", ".")


class ScopedSetupTimer:
    """Times scoped fixtures' setups and teardowns; registered in every process that
    runs tests whose statistics are recorded."""

    def __init__(self) -> None:
        #: Paid since the last report: scope node id -> seconds.
        self.pending: dict[str, float] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        node = request.node
        if fixturedef.scope == "function" or isinstance(node, pytest.Item):
            return (yield)  # a class-scoped fixture outside a class is the test's own
        scope_id = node.nodeid
        teardown_started: list[float] = []

        def teardown_done() -> None:  # the last finalizer to run but pytest's own hook
            if teardown_started:
                self._paid(scope_id, perf_counter() - teardown_started.pop())

        fixturedef.addfinalizer(teardown_done)
        start = perf_counter()
        try:
            return (yield)
        finally:
            self._paid(scope_id, perf_counter() - start)
            # Added after the fixture's own teardown: runs first, when teardown starts.
            fixturedef.addfinalizer(lambda: teardown_started.append(perf_counter()))

    def _paid(self, scope_id: str, seconds: float) -> None:
        self.pending[scope_id] = self.pending.get(scope_id, 0.0) + seconds

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before anything reads the report (the recorder, xdist's worker sending it)."""
        if self.pending:
            setattr(report, REPORT_ATTRIBUTE, self.pending)
            self.pending = {}


class TimersForWorkers:
    """On an xdist controller that records statistics: its workers run the tests, so
    they time the fixtures."""

    def pytest_configure_node(self, node: object) -> None:
        workerinput = getattr(node, "workerinput", None)
        if isinstance(workerinput, dict):
            workerinput[WORKERINPUT_KEY] = True


def scoped_paid(report: pytest.TestReport) -> dict[str, float] | None:
    """What `ScopedSetupTimer` found paid during a report's phase, if anything (checked:
    a report from a worker is data)."""
    paid = report.__dict__.get(REPORT_ATTRIBUTE)
    if not paid or not isinstance(paid, dict):
        return None
    return {
        str(scope_id): float(seconds)
        for scope_id, seconds in paid.items()
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0
    }
