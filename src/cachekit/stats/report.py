"""``cachekit stats report``: what the HTML page of plots over the stored runs says.

The data comes first, in plain typed records computed from stored runs read a run at a
time (`build_report` over a `cachekit.stats.history.RunSource`, or `Run`s in memory);
rendering is a separate step (`cachekit.stats.report_html.render_html`) that turns them
into one HTML file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence

import attrs

from cachekit.stats.cases import Cases
from cachekit.stats.flaky import FlakyTally, FlakyTest, find_flaky
from cachekit.stats.history import DEFAULT_RUNS, LatestPerTest, MemoryRuns, RunInfo, RunSource
from cachekit.stats.junit import CaseOutcome, TestCase
from cachekit.stats.runs import Run

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
    #: Its reports (their tallies, not their cases), oldest first.
    reports: tuple[RunInfo, ...]


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
    #: The flaky tests of the covered runs (`cachekit.stats.flaky`), most recently seen
    #: first, the first ``top`` of ``flaky_total``.
    flaky: tuple[FlakyTest, ...] = ()
    flaky_total: int = 0

    @property
    def empty(self) -> bool:
        return not self.runs

    @property
    def reports(self) -> int:
        return sum(len(run.reports) for run in self.runs)


def build_report(
    runs: Sequence[Run] | RunSource,
    *,
    scope: str = "",
    top: int = DEFAULT_TOP,
    max_runs: int = DEFAULT_RUNS,
    now: float | None = None,
    observed: FlakyTally | None = None,
) -> StatsReport:
    """The report over the last ``max_runs`` CI runs of ``runs`` (`Run`s, or stored
    runs read a run at a time), with ``top`` bars per ranking. ``observed``: as for
    `find_flaky`."""
    source = MemoryRuns(runs) if isinstance(runs, Sequence) else runs
    ci_runs = group_infos(source.infos())[-max_runs:] if max_runs > 0 else []
    latest, unstable = _tally(source, ci_runs)
    tests = latest.cases()
    files = duration_by_file(tests)
    flaky = find_flaky(source, ci_runs=len(ci_runs), observed=observed) if ci_runs else []
    return StatsReport(
        scope=scope,
        generated_at=time.time() if now is None else now,
        runs=tuple(ci_runs),
        tests=len(tests),
        slowest=tuple(slowest_tests(tests, top)),
        files=tuple(files[:top]),
        files_total=len(files),
        shards=tuple(_fit(shard_balance(ci_runs[-SHARD_RUNS:]), SHARD_BARS)),
        outcomes=tuple(outcome_history(ci_runs)),
        unstable=tuple(unstable.ranking(top)),
        flaky=tuple(flaky[:top]),
        flaky_total=len(flaky),
    )


def _tally(source: RunSource, ci_runs: Sequence[CIRun]) -> tuple[LatestPerTest, UnstableTally]:
    """The latest case of each test and the unstable ones, over a run's cases at a time
    (none held once it returns)."""
    covered = {
        report.id: index for index, ci_run in enumerate(ci_runs) for report in ci_run.reports
    }
    latest = LatestPerTest()
    unstable = UnstableTally()
    for report, cases in source.cases(covered):
        index = covered[report.id]
        latest.add(report.order, cases)
        unstable.add(index, ci_runs[index].name, report.order, cases)
    return latest, unstable


def group_ci_runs(runs: Iterable[Run]) -> list[CIRun]:
    """Reports grouped by CI run, oldest first (by the time of each run's first report);
    of a shard run more than once, the latest attempt (`latest_attempts`)."""
    return group_infos(MemoryRuns(runs).infos())


def group_infos(infos: Iterable[RunInfo]) -> list[CIRun]:
    """`group_ci_runs` of runs as `RunSource.infos` gives them."""
    groups: dict[str, list[RunInfo]] = {}
    for report in infos:
        groups.setdefault(report.run_id or f"report {report.id}", []).append(report)
    ci_runs = []
    for key, reports in groups.items():
        reports.sort(key=lambda report: report.order)
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


def shard_of(report: Run | RunInfo) -> str:
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
            seconds[shard] = seconds.get(shard, 0.0) + report.seconds
            counts[shard] = counts.get(shard, 0) + report.tests
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
    return [
        RunOutcomes(
            run=ci_run.name,
            at=ci_run.at,
            passed=sum(report.passed for report in ci_run.reports),
            flaky=sum(report.flaky for report in ci_run.reports),
            failed=sum(report.failed for report in ci_run.reports),
            skipped=sum(report.skipped for report in ci_run.reports),
        )
        for ci_run in ci_runs
    ]


class UnstableTally:
    """Which tests failed or passed only after reruns, counted once per CI run (a
    failure outranks a flaky pass within one run), fed a run's cases at a time in any
    order. Per test it keeps a bit per CI run it ran in; per failure or flake, one entry."""

    _FLAKY, _FAILED = 2, 3

    def __init__(self) -> None:
        #: Test id -> a bit for each CI run (by index) that ran it.
        self.ran: dict[str, int] = {}
        #: (CI run index, test id) -> `_FLAKY` or `_FAILED`, the worst of that run.
        self.kinds: dict[tuple[int, str], int] = {}
        #: Test id -> where its most recent failure was, its message and CI run's name.
        self.last: dict[str, tuple[tuple[int, tuple[float, str], int], str, str]] = {}

    def add(self, index: int, name: str, order: tuple[float, str], cases: Cases) -> None:
        """The cases of one report of CI run ``index`` (named ``name``)."""
        ran, bit = self.ran, 1 << index
        for test_id in cases.ids:
            ran[test_id] = ran.get(test_id, 0) | bit
        for position in cases.unusual():
            code = cases.outcomes[position]
            if code == "s":
                continue
            test_id = cases.ids[position]
            kind = self._FLAKY if code == "p" else self._FAILED
            key = (index, test_id)
            self.kinds[key] = max(kind, self.kinds.get(key, 0))
            where = (index, order, position)
            if kind == self._FAILED and (test_id not in self.last or self.last[test_id][0] < where):
                self.last[test_id] = (where, cases.messages.get(position, ""), name)

    def ranking(self, top: int) -> list[UnstableTest]:
        """The ``top`` tests that most often failed or passed only after reruns."""
        failed: dict[str, int] = {}
        flaky: dict[str, int] = {}
        for (_index, test_id), kind in self.kinds.items():
            counts = failed if kind == self._FAILED else flaky
            counts[test_id] = counts.get(test_id, 0) + 1
        tests = [
            UnstableTest(
                test_id=test_id,
                failed=failed.get(test_id, 0),
                flaky=flaky.get(test_id, 0),
                runs=self.ran[test_id].bit_count(),
                last_message=self.last[test_id][1] if test_id in self.last else "",
                last_failed_run=self.last[test_id][2] if test_id in self.last else "",
            )
            for test_id in sorted(set(failed) | set(flaky))
        ]
        tests.sort(key=lambda test: (-(test.failed + test.flaky), -test.failed, test.test_id))
        return tests[:top]


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
