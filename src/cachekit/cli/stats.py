"""``cachekit stats ingest``, ``summary``, ``flaky`` and ``report``: test statistics."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import cattrs

import cachekit.stats.history as history
import cachekit.stats.report as stats_report
import cachekit.stats.report_html as report_html
from cachekit.ci.commit import COMMIT_VARIABLES, detect_commit, valid_commit
from cachekit.cli.command import EXIT_OK, CommandGroup, Invocation, UsageError
from cachekit.cli.output import Progress, print_table
from cachekit.stats.flaky import KEY_PREFIX, FlakyTally, FlakyTest, Seen, find_flaky
from cachekit.stats.junit import TestCase, parse_junit_file
from cachekit.stats.runs import make_run, record_runs, summarize, summary_to_json
from cachekit.stats.signatures import run_signer

_converter = cattrs.Converter()


def add_commands(commands: CommandGroup) -> None:
    stats_commands = commands.add_group(
        "stats",
        "test statistics from JUnit XML reports",
        "Ingest JUnit XML reports and summarize them.",
    )
    ingest = stats_commands.add(
        "ingest",
        "store JUnit XML reports",
        "Parse each report (pytest, unittest-xml-reporting, PyTorch, Surefire...) and store "
        "one part per report under this run's namespace. If any report is malformed, "
        "nothing is written. Read-only runs store nothing and exit 0.",
        cmd_stats_ingest,
    )
    ingest.add_argument("reports", nargs="+", metavar="REPORT.xml", help="JUnit XML files")
    ingest.add_argument(
        "--commit",
        type=_commit,
        default=None,
        help="the commit the reports tested, which tells flaky tests from fixed ones "
        f"(default: ${', $'.join(COMMIT_VARIABLES)}, the first set)",
    )
    stats_commands.add_namespace_options(ingest)

    summary = stats_commands.add(
        "summary",
        "summarize stored reports",
        "Totals per file and class, failed, flaky and slowest tests. By default the "
        "latest run (all its shards) of this namespace.",
        cmd_stats_summary,
    )
    which = summary.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN_ID", help="summarize this run id")
    which.add_argument(
        "--all-runs",
        action="store_true",
        help="summarize the latest result of every test seen in any run",
    )
    summary.add_argument(
        "--top", type=int, default=10, metavar="N", help="how many slowest tests (default 10)"
    )
    stats_commands.add_namespace_options(summary)

    flaky = stats_commands.add(
        "flaky",
        "list the flaky tests with their evidence",
        "The tests that passed and failed on the same commit (without a recorded commit: "
        "in the same CI run, any shard or attempt), or passed only after reruns, most "
        "recently seen first, each with the runs and shards that passed and failed, the "
        "failure messages, and when and on which commit. A test that fails every time is "
        "broken, and one that failed until its code changed was fixed: neither is listed.",
        cmd_stats_flaky,
    )
    _add_runs_option(flaky)
    flaky.add_argument(
        "--evidence",
        type=int,
        default=3,
        metavar="N",
        help="runs shown per test that passed, and that failed (default 3; --json lists all)",
    )
    stats_commands.add_namespace_options(flaky)

    report = stats_commands.add(
        "report",
        "write an HTML page of plots over the stored runs",
        "Write one self-contained HTML page (it loads nothing when viewed) with the "
        "slowest tests, the duration per test file, the balance of each run's shards, and "
        "failures and flaky tests over the recent CI runs of this namespace.",
        cmd_stats_report,
    )
    report.add_argument(
        "--html", required=True, type=Path, metavar="OUT", help="the HTML file to write"
    )
    report.add_argument(
        "--top",
        type=int,
        default=stats_report.DEFAULT_TOP,
        metavar="N",
        help="bars per ranking and rows of the unstable tests "
        f"(default {stats_report.DEFAULT_TOP})",
    )
    _add_runs_option(report)
    stats_commands.add_namespace_options(report)


def _add_runs_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--runs",
        type=int,
        default=history.DEFAULT_RUNS,
        metavar="N",
        help=f"cover the N most recent CI runs (default {history.DEFAULT_RUNS})",
    )


def cmd_stats_ingest(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    namespace = invocation.namespace()
    progress = Progress("parsing", len(args.reports))
    reports = []
    for done, path in enumerate(args.reports, 1):
        reports.append(parse_junit_file(path))  # any error: nothing is written
        progress.step(done)
    progress.close()
    if not namespace.trusted:
        invocation.note(f"read-only run, nothing ingested: {namespace.untrusted_reason}")
        if args.json:
            invocation.print_json({"ingested": 0, "reason": namespace.untrusted_reason})
        return EXIT_OK
    session = invocation.session(namespace)
    at = time.time()  # the reports of one ingest are one attempt (`latest_attempts`)
    commit = detect_commit() if args.commit is None else args.commit
    runs = [
        make_run(
            report,
            run_id=namespace.run_id,
            label=namespace.describe(),
            shard=namespace.shard,
            at=at,
            commit=commit,
        )
        for report in reports
    ]
    invocation.run(
        session,
        lambda: record_runs(
            invocation.cache(session, read_chain=False), runs, signer=run_signer(namespace)
        ),
        "writing to the store",
    )
    cases = [case for run in runs for case in run.cases]
    failed = sum(1 for case in cases if case.failed)
    if args.json:
        invocation.print_json(
            {
                "ingested": len(runs),
                "reports": [run.id for run in runs],
                "tests": len(cases),
                "failed": failed,
                "commit": commit,
                "prefix": invocation.prefix(session),
            },
        )
    else:
        out.write(
            f"ingested {len(runs)} report(s): {len(cases)} test(s), {failed} failed\n"
            f"  {namespace.describe()}\n"
        )
    return EXIT_OK


def cmd_stats_summary(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    session = invocation.session()
    namespace = session.namespace

    def read() -> tuple[list[TestCase], str, int]:
        observed = FlakyTally()  # the flaky count's first pass, as the plan reads
        source = history.StoredRuns(
            invocation.cache(session, read_chain=False),
            progress=ReadProgress().step,
            observe=observed.observe,
        )
        infos = source.infos()
        if args.all_runs:
            cases = history.latest_per_test(source, infos)
            scope = f"latest result of each test over {len(infos)} report(s)"
        else:
            cases = history.cases_of(source, history.choose_run(infos, args.run))
            run_id = args.run if args.run is not None else (infos[-1].run_id if infos else "")
            scope = f"run {run_id or '(no id)'}" if infos else "no reports"
        flaky = find_flaky(source, ci_runs=history.DEFAULT_RUNS, observed=observed) if infos else []
        return cases, scope, len(flaky)

    cases, scope, flaky_tests = invocation.run(session, read, "reading the store")
    summary = summarize(cases, slowest=max(0, args.top))
    if args.json:
        invocation.print_json(
            {
                "namespace": namespace.describe(),
                "prefix": invocation.prefix(session),
                "scope": scope,
                **summary_to_json(summary),
                "flaky_tests": flaky_tests,
                "flaky_tests_runs": history.DEFAULT_RUNS,
            },
        )
        return EXIT_OK
    out.write(f"{namespace.describe()}\n{scope}\n\n")
    if not cases:
        out.write("no test results stored yet (run 'cachekit stats ingest' first)\n")
        return EXIT_OK
    header = ("TESTS", "FAILURES", "ERRORS", "SKIPPED", "SUCCESSES", "TIME")

    def counts(name: str, totals: Any) -> tuple[object, ...]:
        return (
            name,
            totals.tests,
            totals.failures,
            totals.errors,
            totals.skipped,
            totals.successes,
            f"{totals.time:.2f}s",
        )

    print_table(
        out,
        ("FILE", *header),
        [
            *(counts(name, totals) for name, totals in summary.files.items()),
            counts("total", summary.totals),
        ],
    )
    out.write("\n")
    print_table(out, ("CLASS", *header), (counts(n, t) for n, t in summary.classes.items()))
    _section(out, "failed", ((c.test_id, f"{c.outcome}: {c.message}") for c in summary.failed))
    _section(out, "flaky", ((c.test_id, f"{c.reruns} rerun(s)") for c in summary.flaky))
    _section(out, "slowest", ((c.test_id, f"{c.duration:.2f}s") for c in summary.slowest))
    out.write(
        f"\nflaky tests over the last {history.DEFAULT_RUNS} CI runs: {flaky_tests}"
        f"{' (cachekit stats flaky lists them)' if flaky_tests else ''}\n"
    )
    return EXIT_OK


def cmd_stats_flaky(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    if args.runs < 1 or args.evidence < 0:
        raise UsageError("--runs must be at least 1, --evidence at least 0")
    session = invocation.session()
    namespace = session.namespace

    def read() -> tuple[list[FlakyTest], int]:
        observed = FlakyTally()
        source = history.StoredRuns(
            invocation.cache(session, read_chain=False),
            progress=ReadProgress().step,
            observe=observed.observe,
        )
        covered = history.last_ci_runs(source.every_attempt().infos(), args.runs)
        ci_runs = len({history.ci_run_key(info) for info in covered})
        return find_flaky(source, ci_runs=args.runs, observed=observed), ci_runs

    flaky, ci_runs = invocation.run(session, read, "reading the store")
    if args.json:
        invocation.print_json([flaky_to_json(test) for test in flaky])
        return EXIT_OK
    out.write(f"{namespace.describe()}\n{len(flaky)} flaky test(s) over {ci_runs} CI run(s)\n")
    for test in flaky:
        out.write(
            f"\n{test.test_id}\n  passed {len(test.passes)}, failed {len(test.failures)} "
            f"on {_code(test.code)}; first seen {stats_report.format_utc(test.first_seen)}, "
            f"last seen {stats_report.format_utc(test.last_seen)}\n"
        )
        for seen in (*test.failures[: args.evidence], *test.passes[: args.evidence]):
            out.write(f"  {_evidence(seen)}\n")
    return EXIT_OK


def flaky_to_json(test: FlakyTest) -> dict[str, Any]:
    """A flaky test as ``stats flaky --json`` prints it."""
    data: dict[str, Any] = _converter.unstructure(test)
    data["last_message"] = test.last_message
    return data


def _code(code: tuple[str, ...], shown: int = 3) -> str:
    """The code a test flaked on, for people: commits and code keys cut to 12
    characters ("run ID" and "report ID" stay whole), the newest ``shown`` of them."""
    names = [
        f"code key {key.removeprefix(KEY_PREFIX)[:12]}"
        if key.startswith(KEY_PREFIX)
        else key
        if " " in key
        else key[:12]
        for key in code[:shown]
    ]
    more = f" and {len(code) - shown} more" if len(code) > shown else ""
    return ", ".join(names) + more


def _evidence(seen: Seen) -> str:
    how = seen.outcome + (f" after {seen.reruns} rerun(s)" if seen.reruns else "")
    where = f"run {seen.run_id}" if seen.run_id else "a report"
    where += f" shard {seen.shard}" if seen.shard else ""
    where += f" at {seen.commit[:12]}" if seen.commit else ""
    message = f": {seen.message}" if seen.message else ""
    return f"{how:<9} {where}, {stats_report.format_utc(seen.at)}{message}"


def _commit(text: str) -> str:
    """``--commit``: a commit-like token (`cachekit.ci.commit.valid_commit`)."""
    text = text.strip()
    if text and not valid_commit(text):
        raise argparse.ArgumentTypeError(f"not a commit: {text[:40]!r}")
    return text


def cmd_stats_report(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    if args.top < 1 or args.runs < 1:
        raise UsageError("--top and --runs must be at least 1")
    path: Path = args.html
    if path.is_dir():
        raise UsageError(f"--html {path} is a directory; name the file to write")
    if not path.parent.is_dir():
        raise UsageError(f"--html {path}: the directory {path.parent} does not exist")
    session = invocation.session()
    namespace = session.namespace

    def read() -> stats_report.StatsReport:
        observed = FlakyTally()
        source = history.StoredRuns(
            invocation.cache(session, read_chain=False),
            progress=ReadProgress().step,
            observe=observed.observe,
        )
        return stats_report.build_report(
            source, scope=namespace.describe(), top=args.top, max_runs=args.runs, observed=observed
        )

    report = invocation.run(session, read, "reading the store")
    report_html.write_report(path, report_html.render_html(report))
    latest = report.outcomes[-1] if report.outcomes else None
    if args.json:
        invocation.print_json(
            {
                "path": str(path),
                "prefix": invocation.prefix(session),
                "runs": len(report.runs),
                "reports": report.reports,
                "tests": report.tests,
                "failed": latest.failed if latest else 0,
                "flaky": latest.flaky if latest else 0,
            },
        )
    elif latest is None:
        out.write(f"wrote {path}\n  nothing recorded yet for {namespace.describe()}\n")
    else:
        out.write(
            f"wrote {path}\n  {len(report.runs)} CI run(s), {report.reports} report(s), "
            f"{report.tests} test(s); latest run {latest.run}: {latest.failed} failed, "
            f"{latest.flaky} flaky\n"
        )
    return EXIT_OK


def _section(out: TextIO, title: str, lines: Iterable[tuple[str, str]]) -> None:
    items = list(lines)
    out.write(f"\n{title} ({len(items)}):\n")
    for test_id, detail in items:
        out.write(f"  {test_id}  {detail}\n")


class ReadProgress:
    """Progress of a read of stored runs on stderr (`history.Progress`): on a terminal,
    one line rewritten as it goes (`Progress`); elsewhere, as in a CI log, a line every
    `LOG_EVERY` seconds once a read has taken `LOG_AFTER`, so a quick read prints
    nothing."""

    LOG_AFTER = 2.0
    LOG_EVERY = 5.0

    def __init__(self) -> None:
        self._terminal = sys.stderr.isatty()
        self._line: Progress | None = None
        self._what = ""
        self._started = time.monotonic()
        self._logged = 0.0

    def step(self, what: str, done: int, total: int) -> None:
        if self._terminal:
            if what != self._what and self._line is not None:
                self._line.close()
                self._line = None
            if self._line is None:
                self._line = Progress(what)
            self._what = what
            self._line.step(done, total)
            if done >= total:
                self._line.close()
                self._line = None
            return
        now = time.monotonic()
        due = now - self._started >= self.LOG_AFTER and now - self._logged >= self.LOG_EVERY
        if due or (self._logged and done >= total):
            self._logged = now
            sys.stderr.write(f"cachekit: {what} {done}/{total}\n")
            sys.stderr.flush()
