"""Test statistics: ingested reports stored as `Cache` parts, summaries, durations.

Each ingested report is one immutable part of `layout.STATS_RUNS_KEY`, a mapping
``{report id: Run}``, so shards ingest concurrently without losing anything; a second
part of `layout.DURATIONS_KEY` records the latest duration per test for
duration-balanced sharding (`cachekit.stats.sharding`) without reading whole reports.

Records are attrs classes (un)structured by cattrs; a stored run of the wrong shape is
skipped with a `CorruptValueWarning`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import cattrs

from cachekit.ci import layout
from cachekit.errors import CorruptValueWarning
from cachekit.stats.junit import Report, TestCase
from cachekit.values.cache import Cache, new_part_id
from cachekit.values.codec import JSON
from cachekit.values.merge import DURATIONS

_converter = cattrs.Converter()
# Stored runs leave default-valued fields out (no reruns, no message): a run of a large
# suite stores one record per test, and most have neither.
_stored = cattrs.Converter(omit_if_default=True)


@attrs.frozen
class Run:
    """One ingested report: its test cases and where they came from."""

    #: Unique per report (the id of the part that stores it).
    id: str
    #: When it was ingested (seconds since the epoch).
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
) -> Run:
    """A `Run` for a parsed report, with a fresh unique id."""
    return Run(
        id=new_part_id(f"run-{run_id}" if run_id else "report"),
        at=time.time() if at is None else at,
        run_id=run_id,
        source=report.source,
        label=label,
        cases=report.cases,
        shard=shard,
    )


def record_runs(cache: Cache, runs: Sequence[Run]) -> list[str]:
    """Write each run as a part of ``stats/runs`` and its durations as a part of
    ``stats/durations``; returns the store keys written."""
    return [
        cache.write_part(key, run.id, value)
        for run in runs
        for key, value in run_parts(run).items()
    ]


def run_parts(run: Run) -> dict[str, JSON]:
    """The parts that record ``run``, by key: the run itself under ``stats/runs`` and,
    if any test ran, its durations under ``stats/durations``."""
    parts: dict[str, JSON] = {layout.STATS_RUNS_KEY: {run.id: unstructure(run)}}
    observed: dict[str, JSON] = {
        test_id: {"at": run.at, "value": seconds}
        for test_id, seconds in durations_of(run.cases).items()
    }
    if observed:
        parts[layout.DURATIONS_KEY] = observed
    return parts


def load_runs(cache: Cache) -> list[Run]:
    """Every stored run, oldest first (ties by id)."""
    merged = cache.read_merged(layout.STATS_RUNS_KEY, layout.STATS_RUNS)
    return runs_from_value(merged.value)


def runs_from_value(value: Mapping[str, Any]) -> list[Run]:
    """Runs from a merged ``stats/runs`` value; malformed entries are skipped with a
    warning."""
    runs = []
    for report_id, data in value.items():
        try:
            runs.append(_stored.structure(data, Run))
        except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as error:
            warnings.warn(
                CorruptValueWarning(f"cachekit: ignoring unreadable run {report_id!r}: {error}"),
                stacklevel=2,
            )
    return sorted(runs, key=lambda run: (run.at, run.id))


def load_durations(cache: Cache) -> dict[str, float]:
    """The latest recorded duration per test id (for `cachekit.stats.sharding`)."""
    return durations_from_value(cache.read_merged(layout.DURATIONS_KEY, DURATIONS).value)


def durations_from_value(value: Mapping[str, Any]) -> dict[str, float]:
    """Seconds per test id from a merged ``stats/durations`` value."""
    return {
        test_id: float(entry["value"])
        for test_id, entry in sorted(value.items())
        if entry is not None and isinstance(entry["value"], (int, float))
    }


def unstructure(run: Run) -> dict[str, Any]:
    data: dict[str, Any] = _stored.unstructure(run)
    return data


# -- choosing and summarizing ---------------------------------------------------------


def latest_run(runs: Sequence[Run], run_id: str | None = None) -> list[TestCase]:
    """The cases of one CI run: every report with ``run_id`` (all its shards), by
    default the run of the most recent report."""
    if not runs:
        return []
    wanted = runs[-1].run_id if run_id is None else run_id
    if not wanted:  # reports without a run id stand alone
        chosen = [runs[-1]] if run_id is None else []
    else:
        chosen = [run for run in runs if run.run_id == wanted]
    return [case for run in chosen for case in run.cases]


def latest_per_test(runs: Iterable[Run]) -> list[TestCase]:
    """The most recent case of every test seen in any run, sorted by test id."""
    latest: dict[str, tuple[tuple[float, str], TestCase]] = {}
    for run in runs:
        order = (run.at, run.id)
        for case in run.cases:
            test_id = case.test_id  # built from three fields each time it is asked for
            seen = latest.get(test_id)
            if seen is None or order >= seen[0]:
                latest[test_id] = (order, case)
    return [case for _test_id, (_order, case) in sorted(latest.items())]


def durations_of(cases: Iterable[TestCase]) -> dict[str, float]:
    """Duration per test id of the cases that ran (passed or failed; skips and errors
    say little about how long a test takes); the last case of a test wins."""
    return {case.test_id: case.duration for case in cases if case.outcome in ("passed", "failed")}


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
