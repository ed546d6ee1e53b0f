"""What a run saw fail, pass and collect, replayed the way pytest's ``LFPlugin`` keeps
``cache/lastfailed``: the run's part of the shared key, and the value pytest ends with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
from _pytest.reports import CollectReport, TestReport

from cachekit_pytest.recording import TestStats
from cachekit_pytest.sync.keys import ObservedOutcomes


class Recorder:
    """What this run saw fail, pass and collect, in order: replayed onto the
    ``cache/lastfailed`` of the run's start (`replay`), it gives this run's part and the
    value ``LFPlugin`` ends with.

    Mirrors ``LFPlugin``'s bookkeeping exactly, so the merged value a later run reads
    agrees with what pytest alone would have written on one machine. Keeping events
    rather than a running state lets the start value arrive late (`CacheProvider`).
    Its report hook also feeds the run's `TestStats`: one hook per report instead of two.
    """

    def __init__(self, stats: TestStats | None = None) -> None:
        #: A bare node id is the most common event by far: that test passed (or was
        #: skipped). Kept as the report's own string, it costs no object of its own.
        self.events: list[str | Failed | Collected | WorkersCollected] = []
        self.stats = stats
        self._last: tuple[tuple[tuple[str, ...], int], Replay] | None = None

    def pytest_runtest_logreport(self, report: TestReport) -> None:
        outcome = report.outcome  # once: ``report.passed`` and friends are properties
        if outcome == "passed":
            if report.when == "call":
                self.events.append(report.nodeid)
        elif outcome == "skipped":
            self.events.append(report.nodeid)
        elif outcome == "failed":
            self.events.append(Failed(report.nodeid))
        if self.stats is not None:
            self.stats.tally(report)

    def pytest_collectreport(self, report: CollectReport) -> None:
        if report.outcome in ("passed", "skipped"):
            self.events.append(Collected(report.nodeid, [item.nodeid for item in report.result]))
        else:
            self.events.append(Failed(report.nodeid))

    def workers_collected(self, ids: Sequence[str]) -> WorkersCollected:
        event = WorkersCollected(frozenset(ids))
        self.events.append(event)
        return event

    def replay(self, failing_at_start: Iterable[str]) -> Replay:
        """The events so far, replayed onto ``failing_at_start``. The last replay is kept
        (the end of a session asks twice); treat it as read-only."""
        key = (tuple(failing_at_start), len(self.events))
        if self._last is None or self._last[0] != key:
            replay = Replay(dict.fromkeys(key[0], True), {}, frozenset(key[0]))
            for event in self.events:
                if isinstance(event, str):
                    replay.see(event, False)
                else:
                    event.apply(replay)
            self._last = (key, replay)
        return self._last[1]


@attrs.define
class Replay:
    #: Failing node ids, in ``LFPlugin``'s order.
    failing: dict[str, bool]
    #: This run's observations: node id to whether it failed, the last one winning.
    observed: dict[str, bool]
    #: What was failing when the run started.
    failing_at_start: frozenset[str] = frozenset()

    def see(self, nodeid: str, failed: bool) -> None:
        self.observed[nodeid] = failed
        if failed:
            self.failing[nodeid] = True
        else:
            self.failing.pop(nodeid, None)

    def observations(self, at: float, *, every_pass: bool = False) -> ObservedOutcomes | None:
        """The run's ``cache/lastfailed`` part, in short: its failures, and its passes of
        tests that were failing when it started (None if neither).

        Any other pass changes nothing a reader sees, so it is not stored: parts grow
        with failures and fixes, not with the suite (DESIGN.md, "Scale"). The one case
        where it would count, a failure that a concurrent run wrote after this run
        started, keeps that failure: the conservative answer (``--lf`` reruns it).
        ``every_pass``: the run did not read what was failing (``--cache-clear``), so
        every pass may be a fix.
        """
        start = self.failing_at_start
        failed = [nodeid for nodeid, failed in self.observed.items() if failed]
        passed = [
            nodeid
            for nodeid, failed in self.observed.items()
            if not failed and (every_pass or nodeid in start)
        ]
        return ObservedOutcomes(at, failed=failed, passed=passed) if failed or passed else None


@attrs.frozen
class Failed:
    """A test or collector failed."""

    nodeid: str

    def apply(self, replay: Replay) -> None:
        replay.see(self.nodeid, True)


@attrs.frozen
class Collected:
    """A collector collected fine: if it failed before, what it holds is now to run."""

    nodeid: str
    result: list[str]

    def apply(self, replay: Replay) -> None:
        if self.nodeid in replay.failing:
            replay.see(self.nodeid, False)
            for nodeid in self.result:
                replay.see(nodeid, True)


@attrs.frozen
class WorkersCollected:
    """Under xdist, the ids a worker collected (the controller sees no collection)."""

    ids: frozenset[str]

    def fixed_collectors(self, failing: Iterable[str]) -> list[str]:
        """Failing collectors that have collected items now; they are no longer failing."""
        return [
            collector
            for collector in sorted(failing)
            if collector not in self.ids
            and any(_is_inside(nodeid, collector) for nodeid in self.ids)
        ]

    def apply(self, replay: Replay) -> None:
        for collector in self.fixed_collectors(replay.failing):
            replay.see(collector, False)


def _is_inside(nodeid: str, collector: str) -> bool:
    return nodeid.startswith((collector + "::", collector.rstrip("/") + "/"))
