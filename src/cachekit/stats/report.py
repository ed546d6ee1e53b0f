"""``cachekit stats report``: what the HTML page of plots over the stored runs says.

The data comes first, in plain typed records computed from `cachekit.stats.runs.Run`s
(`build_report`); rendering is a separate step (`cachekit.stats.report_html.render_html`)
that turns them into one HTML file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence

import attrs

from cachekit.stats.junit import CaseOutcome, TestCase
from cachekit.stats.runs import Run, latest_attempts, latest_per_test

#: How many CI runs the history and shard plots cover by default.
DEFAULT_RUNS = 30
#: How many bars the slowest-tests and per-file plots and the unstable table show.
DEFAULT_TOP = 20
#: How many of the most recent CI runs the shard balance plot shows, and at most how
#: many bars it draws (older runs are left out first; the latest run always shows).
SHARD_RUNS = 6
SHARD_BARS = 64
#: A shard whose reports do not name one (a run that was not split).
UNSHARDED = "unsharded"


# -- the data -------------------------------------------------------------------------


@attrs.frozen
class CIRun:
    """The reports of one CI run: every shard that shares its run id. Reports without a
    run id stand alone."""

    #: The run id, or the report id of a report without one (unique either way).
    key: str
    #: For people: the run id, or the time of a report without one.
    name: str
    #: When its first report was recorded (seconds since the epoch).
    at: float
    reports: tuple[Run, ...]

    @property
    def cases(self) -> list[TestCase]:
        return [case for report in self.reports for case in report.cases]


@attrs.frozen
class TestTime:
    """How long a test took in its most recent run."""

    __test__ = False  # not a pytest test class

    test_id: str
    seconds: float
    outcome: CaseOutcome


@attrs.frozen
class FileTime:
    """The summed latest durations of the tests of one file."""

    file: str
    seconds: float
    tests: int


@attrs.frozen
class ShardTime:
    """The summed test durations of one shard of a CI run."""

    shard: str
    seconds: float
    tests: int


@attrs.frozen
class ShardBalance:
    """How one CI run's test time was spread over its shards (sorted by shard)."""

    run: str
    at: float
    shards: tuple[ShardTime, ...]

    @property
    def imbalance(self) -> float:
        """The slowest shard's time over the mean (1.0 is perfect balance)."""
        mean = sum(shard.seconds for shard in self.shards) / len(self.shards)
        return max(shard.seconds for shard in self.shards) / mean if mean > 0 else 1.0


@attrs.frozen
class RunOutcomes:
    """What happened to the tests of one CI run."""

    run: str
    at: float
    passed: int
    #: Passed, but only after reruns.
    flaky: int
    #: Failed or errored.
    failed: int
    skipped: int

    @property
    def tests(self) -> int:
        return self.passed + self.flaky + self.failed + self.skipped


@attrs.frozen
class UnstableTest:
    """A test that failed or needed reruns in some of the CI runs."""

    test_id: str
    #: In how many runs it failed (or errored), passed only after reruns, ran at all.
    failed: int
    flaky: int
    runs: int
    #: The most recent failure message, and the run it came from ("" if only flaky).
    last_message: str
    last_failed_run: str


@attrs.frozen
class StatsReport:
    """Everything the page shows. Runs and plots are in chronological order."""

    #: Which namespace the runs come from (`cachekit.ci.namespace.Namespace.describe`).
    scope: str
    generated_at: float
    #: The CI runs covered (the most recent ones) and how many reports they hold.
    runs: tuple[CIRun, ...]
    #: The latest result of every test seen in the covered runs.
    tests: int
    slowest: tuple[TestTime, ...]
    #: Files by summed time, slowest first; ``files_total`` counts them all.
    files: tuple[FileTime, ...]
    files_total: int
    shards: tuple[ShardBalance, ...]
    outcomes: tuple[RunOutcomes, ...]
    unstable: tuple[UnstableTest, ...]

    @property
    def empty(self) -> bool:
        return not self.runs

    @property
    def reports(self) -> int:
        return sum(len(run.reports) for run in self.runs)


def build_report(
    runs: Sequence[Run],
    *,
    scope: str = "",
    top: int = DEFAULT_TOP,
    max_runs: int = DEFAULT_RUNS,
    now: float | None = None,
) -> StatsReport:
    """The report over the last ``max_runs`` CI runs of ``runs`` (as `load_runs` gives
    them), with ``top`` bars per ranking."""
    ci_runs = group_ci_runs(runs)[-max_runs:] if max_runs > 0 else []
    reports = [report for ci_run in ci_runs for report in ci_run.reports]
    latest = latest_per_test(reports)
    files = duration_by_file(latest)
    return StatsReport(
        scope=scope,
        generated_at=time.time() if now is None else now,
        runs=tuple(ci_runs),
        tests=len(latest),
        slowest=tuple(slowest_tests(latest, top)),
        files=tuple(files[:top]),
        files_total=len(files),
        shards=tuple(_fit(shard_balance(ci_runs[-SHARD_RUNS:]), SHARD_BARS)),
        outcomes=tuple(outcome_history(ci_runs)),
        unstable=tuple(unstable_tests(ci_runs, top)),
    )


def group_ci_runs(runs: Iterable[Run]) -> list[CIRun]:
    """Reports grouped by CI run, oldest first (by the time of each run's first report);
    of a shard run more than once, the latest attempt (`latest_attempts`)."""
    groups: dict[str, list[Run]] = {}
    for report in latest_attempts(list(runs)):
        groups.setdefault(report.run_id or f"report {report.id}", []).append(report)
    ci_runs = []
    for key, reports in groups.items():
        reports.sort(key=lambda report: (report.at, report.id))
        first = reports[0]
        name = first.run_id or format_utc(first.at)
        ci_runs.append(CIRun(key=key, name=name, at=first.at, reports=tuple(reports)))
    return sorted(ci_runs, key=lambda ci_run: (ci_run.at, ci_run.key))


def slowest_tests(cases: Iterable[TestCase], top: int) -> list[TestTime]:
    """The ``top`` slowest tests that ran (skips and errors say little about time)."""
    timed = [case for case in cases if case.outcome in ("passed", "failed")]
    timed.sort(key=lambda case: (-case.duration, case.test_id))
    return [TestTime(case.test_id, case.duration, case.outcome) for case in timed[:top]]


def duration_by_file(cases: Iterable[TestCase]) -> list[FileTime]:
    """Summed durations per test file, slowest first."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for case in cases:
        file = case.file or case.classname
        seconds[file] = seconds.get(file, 0.0) + case.duration
        counts[file] = counts.get(file, 0) + 1
    files = [FileTime(file, round(seconds[file], 6), counts[file]) for file in seconds]
    return sorted(files, key=lambda item: (-item.seconds, item.file))


def shard_of(report: Run) -> str:
    """The shard a report came from, as it was recorded (`UNSHARDED` if none)."""
    return report.shard or UNSHARDED


def shard_balance(ci_runs: Iterable[CIRun]) -> list[ShardBalance]:
    """Per CI run, the summed test time of each shard (several reports of one shard
    add up)."""
    balances = []
    for ci_run in ci_runs:
        seconds: dict[str, float] = {}
        counts: dict[str, int] = {}
        for report in ci_run.reports:
            shard = shard_of(report)
            seconds[shard] = seconds.get(shard, 0.0) + sum(c.duration for c in report.cases)
            counts[shard] = counts.get(shard, 0) + len(report.cases)
        shards = tuple(
            ShardTime(shard, round(seconds[shard], 6), counts[shard])
            for shard in sorted(seconds, key=_natural)
        )
        balances.append(ShardBalance(run=ci_run.name, at=ci_run.at, shards=shards))
    return balances


def _fit(balances: list[ShardBalance], bars: int) -> list[ShardBalance]:
    """The most recent balances whose shards add up to at most ``bars`` (at least one)."""
    while len(balances) > 1 and sum(len(balance.shards) for balance in balances) > bars:
        balances = balances[1:]
    return balances


def outcome_history(ci_runs: Iterable[CIRun]) -> list[RunOutcomes]:
    """Per CI run, how many tests passed, passed after reruns, failed and were skipped."""
    history = []
    for ci_run in ci_runs:
        counts = {"passed": 0, "flaky": 0, "failed": 0, "skipped": 0}
        for case in ci_run.cases:
            counts[_kind(case)] += 1
        history.append(RunOutcomes(run=ci_run.name, at=ci_run.at, **counts))
    return history


def unstable_tests(ci_runs: Iterable[CIRun], top: int) -> list[UnstableTest]:
    """The ``top`` tests that most often failed or passed only after reruns, counted
    once per CI run (a failure outranks a flaky pass within one run)."""
    failed: dict[str, int] = {}
    flaky: dict[str, int] = {}
    seen: dict[str, int] = {}
    last: dict[str, tuple[str, str]] = {}
    # A test id is built from its parts on every access: build each one once.
    ids: dict[tuple[str, str, str], str] = {}
    for ci_run in ci_runs:
        kinds: dict[str, str] = {}
        for case in ci_run.cases:
            key = (case.file, case.classname, case.name)
            test_id = ids.get(key) or ids.setdefault(key, case.test_id)
            kind = _kind(case)
            if kind == "failed":
                last[test_id] = (case.message, ci_run.name)
            if _RANK[kind] >= _RANK[kinds.get(test_id, "skipped")]:
                kinds[test_id] = kind
        for test_id, kind in kinds.items():
            seen[test_id] = seen.get(test_id, 0) + 1
            if kind == "failed":
                failed[test_id] = failed.get(test_id, 0) + 1
            elif kind == "flaky":
                flaky[test_id] = flaky.get(test_id, 0) + 1
    tests = [
        UnstableTest(
            test_id=test_id,
            failed=failed.get(test_id, 0),
            flaky=flaky.get(test_id, 0),
            runs=seen[test_id],
            last_message=last.get(test_id, ("", ""))[0],
            last_failed_run=last.get(test_id, ("", ""))[1],
        )
        for test_id in sorted(set(failed) | set(flaky))
    ]
    tests.sort(key=lambda test: (-(test.failed + test.flaky), -test.failed, test.test_id))
    return tests[:top]


_RANK = {"skipped": 0, "passed": 1, "flaky": 2, "failed": 3}


def _kind(case: TestCase) -> str:
    if case.failed:
        return "failed"
    if case.flaky:
        return "flaky"
    return case.outcome  # passed or skipped


def _natural(text: str) -> tuple[tuple[int, str], ...]:
    """``2/10`` after ``2/4``, and ``10/12`` after ``9/12``."""
    return tuple(
        (int(piece), "") if piece.isdigit() else (0, piece)
        for piece in re.split(r"(\d+)", text)
        if piece
    )


def format_utc(at: float) -> str:
    """A time as the page shows it, and names a CI run without a run id: to the minute,
    in UTC (CI runners and readers are in any time zone)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
