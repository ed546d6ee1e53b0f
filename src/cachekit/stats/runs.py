"""Test statistics: ingested reports stored as `Cache` parts, summaries, durations.

Each ingested report (or pytest run) is one immutable part of `layout.STATS_RUNS_KEY`, a
mapping ``{report id: run}`` whose cases are stored by column (`cachekit.stats.cases`),
so shards ingest concurrently without losing anything; a second part of
`layout.DURATIONS_KEY` records each test's duration for duration-balanced sharding
(`cachekit.stats.sharding`, `cachekit.values.durations`) without reading whole reports.
The runs are read a run at a time (`cachekit.stats.history`): nothing holds a whole
history of a large suite.

A test counts once per CI run and shard however often it was recorded: an ingested
report's id is a hash of what it holds (ingesting a file twice stores one report), and
runs are read with only the latest attempt of each shard (`latest_attempts`: a CI retry
shares its run id, as GitLab's ``CI_PIPELINE_ID``).

A stored run of the wrong shape, or of another format, is skipped with a
`CorruptValueWarning`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import cattrs

import cachekit.ci.layout as layout
import cachekit.stats.history as history
from cachekit.stats.cases import TIMED_OUTCOMES, to_stored
from cachekit.stats.junit import Report, TestCase
from cachekit.stats.signatures import RunSigner, sign_runs
from cachekit.values.cache import Cache
from cachekit.values.codec import JSON
from cachekit.values.durations import DURATIONS, durations_part, latest_durations
from cachekit.values.objects import new_part_id

_converter = cattrs.Converter()


@attrs.frozen
class Run:
    """One ingested report: its test cases and where they came from."""

    #: Unique per report: for an ingested report a hash of its run, shard and cases (the
    #: same report ingested again is the same entry), for a pytest run's record the id of
    #: the part that stores it.
    id: str
    #: When it was ingested (seconds since the epoch). The reports of one attempt share
    #: it (one ``stats ingest``, one pytest run); a later attempt of the same run and
    #: shard replaces it (`latest_attempts`).
    at: float
    #: The CI run it belongs to; the shards of one run share it ("" if unknown).
    run_id: str
    #: The report's file name, for people.
    source: str
    #: The namespace description (`cachekit.ci.namespace.Namespace.describe`), for people.
    label: str
    cases: tuple[TestCase, ...]
    #: Which shard of the CI run wrote it, such as ``2/4`` ("" when the run was not
    #: split). A field of its own, not parsed out of ``label``: that text is for people.
    #: Records stored before it existed load with "".
    shard: str = ""
    #: The commit the run tested (`cachekit.ci.commit.detect_commit`), "" if unknown: what
    #: tells a flaky test from a fixed one (`cachekit.stats.flaky`).
    commit: str = ""
    #: Test file -> its code key, where the run keyed its files (``--skip-passed``): the
    #: code a test ran against, finer than the commit (`cachekit.stats.cases`).
    codes: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Totals:
    """Counts and time of a group of test cases."""

    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    successes: int = 0
    #: Seconds, summed.
    time: float = 0.0


@attrs.frozen
class Summary:
    """What `summarize` found."""

    totals: Totals
    #: Per test file, sorted by file.
    files: dict[str, Totals]
    #: Per class (``file::Class``; module-level tests count under their file), sorted.
    classes: dict[str, Totals]
    #: Failures and errors, sorted by test id.
    failed: tuple[TestCase, ...]
    #: Passed after reruns, sorted by test id.
    flaky: tuple[TestCase, ...]
    #: The slowest tests, slowest first.
    slowest: tuple[TestCase, ...]


# -- storing --------------------------------------------------------------------------


def make_run(
    report: Report,
    *,
    run_id: str = "",
    label: str = "",
    shard: str = "",
    at: float | None = None,
    commit: str = "",
) -> Run:
    """A `Run` for a parsed report, named by what it holds (`report_id`). The reports
    of one ingest share ``at``: they are one attempt."""
    return Run(
        id=report_id(run_id, shard, report.cases),
        at=time.time() if at is None else at,
        run_id=run_id,
        source=report.source,
        label=label,
        cases=report.cases,
        shard=shard,
        commit=commit,
    )


def report_id(run_id: str, shard: str, cases: Iterable[TestCase]) -> str:
    """``report-`` and a hash of a report's run, shard and cases: the same report
    ingested twice is one entry of the ``stats/runs`` mapping, not two. The file name
    and the time are left out (the same file, given by another path or ingested later,
    is the same report)."""
    content = json.dumps(
        [run_id, shard, [_converter.unstructure(case) for case in cases]],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return "report-" + hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def record_runs(cache: Cache, runs: Sequence[Run], *, signer: RunSigner | None = None) -> list[str]:
    """Write each run as a part of ``stats/runs`` (signed by ``signer``, if given) and its
    durations as a part of ``stats/durations`` (each under a fresh part id: parts are
    written once, and a report ingested again is still one entry); returns the store keys
    written."""
    written = []
    for run in runs:
        part_id = new_part_id(f"run-{run.run_id}" if run.run_id else "report")
        parts = run_parts(run)
        if signer is not None:
            parts[layout.STATS_RUNS_KEY] = sign_runs(signer, parts[layout.STATS_RUNS_KEY])  # type: ignore[arg-type]
        written += [cache.write_part(key, part_id, value) for key, value in parts.items()]
    return written


def run_parts(run: Run) -> dict[str, JSON]:
    """The parts that record ``run``, by key: the run itself under ``stats/runs`` and,
    if any test ran, its durations under ``stats/durations``."""
    parts: dict[str, JSON] = {layout.STATS_RUNS_KEY: {run.id: stored(run)}}
    observed = durations_part(run.at, durations_of(run.cases))
    if observed:
        parts[layout.DURATIONS_KEY] = observed  # type: ignore[assignment]  # JSON
    return parts


def stored(run: Run) -> dict[str, Any]:
    """What ``stats/runs`` stores for a run under its id (`cachekit.stats.cases`)."""
    meta = {
        "at": run.at,
        "run_id": run.run_id,
        "source": run.source,
        "label": run.label,
        "shard": run.shard,
        "commit": run.commit,
    }
    return to_stored(meta, run.cases, run.codes)


def load_runs(cache: Cache) -> list[Run]:
    """Every stored run, oldest first (ties by id), as `latest_attempts` leaves them.
    This holds every case of every run: for small histories (tests, tools); the
    ``stats`` commands read a run at a time (`cachekit.stats.history.StoredRuns`)."""
    return runs_of(history.StoredRuns(cache))


def runs_from_value(value: Mapping[str, Any]) -> list[Run]:
    """Runs from a ``stats/runs`` value (a part or a merged value), the latest attempt of
    each shard only (`latest_attempts`); unreadable entries are skipped with a warning."""
    return runs_of(history.StoredRuns.of_value(value))


def runs_of(source: history.RunSource) -> list[Run]:
    infos = source.infos()
    found = dict(source.cases({info.id for info in infos}))
    cases = {info.id: found_cases for info, found_cases in found.items()}
    return [
        Run(
            id=info.id,
            at=info.at,
            run_id=info.run_id,
            source=info.source,
            label=info.label,
            cases=cases[info.id].cases() if info.id in cases else (),
            shard=info.shard,
            commit=info.commit,
            codes=cases[info.id].codes if info.id in cases else {},
        )
        for info in infos
    ]


def latest_attempts(runs: Sequence[Run]) -> list[Run]:
    """``runs`` with each test counted once per CI run and shard: where several attempts
    (reports of different times) of one run id and shard recorded a test, the latest
    attempt's result stands and the earlier ones are left out; a report with nothing
    left is dropped. Reports without a run id stand alone. Order is kept.

    A retried CI job (same run id and shard) thus replaces its first attempt, while the
    several reports of one attempt (one ``stats ingest`` of many files, which share
    their time) all count, and so do records stored before ``at`` was shared.
    """
    by_id = {run.id: run for run in runs}
    infos = [history.RunInfo(run.id, run.at, run.run_id, "", "", run.shard) for run in runs]
    trimmed: dict[str, Run | None] = {}
    for group in history.retried(infos):
        found = history.claims(
            (info.id, info.at, [case.test_id for case in by_id[info.id].cases]) for info in group
        )
        for info in group:
            run, claimed = by_id[info.id], found[info.id]
            kept = tuple(case for case in run.cases if case.test_id not in claimed)
            if len(kept) < len(run.cases) or (not run.cases and claimed):
                trimmed[run.id] = attrs.evolve(run, cases=kept) if kept else None
    if not trimmed:
        return list(runs)
    return [
        kept_run for run in runs for kept_run in (trimmed.get(run.id, run),) if kept_run is not None
    ]


def load_durations(cache: Cache) -> dict[str, float]:
    """The latest recorded duration per test id (for `cachekit.stats.sharding`)."""
    return durations_from_value(cache.read_merged(layout.DURATIONS_KEY, DURATIONS).value)


def durations_from_value(value: Mapping[str, Any]) -> dict[str, float]:
    """Seconds per test id from a merged ``stats/durations`` value."""
    return latest_durations(value)  # type: ignore[arg-type]  # checked by DURATIONS


# -- choosing and summarizing ---------------------------------------------------------


def latest_run(runs: Sequence[Run], run_id: str | None = None) -> list[TestCase]:
    """The cases of one CI run: every report with ``run_id`` (all its shards), by
    default the run of the most recent report."""
    chosen = {run.id for run in history.choose_run(runs, run_id)}  # type: ignore[arg-type]
    return [case for run in runs if run.id in chosen for case in run.cases]


def latest_per_test(runs: Iterable[Run]) -> list[TestCase]:
    """The most recent case of every test seen in any run, sorted by test id."""
    return history.latest_per_test(history.MemoryRuns(runs))


def durations_of(cases: Iterable[TestCase]) -> dict[str, float]:
    """Duration per test id of the cases that ran (passed or failed; skips and errors
    say little about how long a test takes); the last case of a test wins."""
    return {case.test_id: case.duration for case in cases if case.outcome in TIMED_OUTCOMES}


def durations(runs: Iterable[Run]) -> dict[str, float]:
    """The latest duration per test over runs (oldest first), as sharding wants it."""
    result: dict[str, float] = {}
    for run in sorted(runs, key=lambda run: (run.at, run.id)):
        result.update(durations_of(run.cases))
    return dict(sorted(result.items()))


def summarize(cases: Iterable[TestCase], *, slowest: int = 10) -> Summary:
    """Totals overall, per file and per class; the failed, flaky and slowest tests."""
    cases = list(cases)
    files: dict[str, list[TestCase]] = {}
    classes: dict[str, list[TestCase]] = {}
    for case in cases:
        files.setdefault(case.file or case.classname, []).append(case)
        classes.setdefault(_class_key(case), []).append(case)
    by_id = sorted(cases, key=lambda case: case.test_id)
    return Summary(
        totals=_totals(cases),
        files={name: _totals(group) for name, group in sorted(files.items())},
        classes={name: _totals(group) for name, group in sorted(classes.items())},
        failed=tuple(case for case in by_id if case.failed),
        flaky=tuple(case for case in by_id if case.flaky),
        slowest=tuple(sorted(cases, key=lambda case: (-case.duration, case.test_id))[:slowest]),
    )


def summary_to_json(summary: Summary) -> dict[str, Any]:
    """A JSON-ready form of a summary (test cases carry their ``test_id``)."""

    def case(item: TestCase) -> dict[str, Any]:
        data: dict[str, Any] = _converter.unstructure(item)
        return {"test_id": item.test_id, **data}

    return {
        "totals": _converter.unstructure(summary.totals),
        "files": _converter.unstructure(summary.files),
        "classes": _converter.unstructure(summary.classes),
        "failed": [case(item) for item in summary.failed],
        "flaky": [case(item) for item in summary.flaky],
        "slowest": [case(item) for item in summary.slowest],
    }


def _class_key(case: TestCase) -> str:
    test_id = case.test_id
    head, _sep, _name = test_id.rpartition("::")
    return head or test_id


def _totals(cases: Iterable[TestCase]) -> Totals:
    counts = {"failed": 0, "error": 0, "skipped": 0, "passed": 0}
    seconds = 0.0
    for case in cases:
        counts[case.outcome] += 1
        seconds += case.duration
    return Totals(
        tests=sum(counts.values()),
        failures=counts["failed"],
        errors=counts["error"],
        skipped=counts["skipped"],
        successes=counts["passed"],
        time=round(seconds, 6),
    )
