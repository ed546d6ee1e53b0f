"""Reading a namespace's stored runs a run at a time: first the plan, then the cases.

``stats/runs`` holds one part per pytest run or ingested report, each a few MB after zstd
at 500,000 tests (`cachekit.stats.cases`). A history of 100 such runs is 50 million
cases, so readers never hold them all. They read with `Cache.read_each`, in passes:

1. the plan: every run's metadata and tallies (`RunInfo`), its cases dropped as soon as
   they are counted;
2. only when a shard of a CI run was recorded more than once (a retried job): the
   attempts of those shards, to know which tests each later attempt replaces
   (`cachekit.stats.runs.latest_attempts`);
3. the cases of the runs a question needs (the latest CI run, the last N, or all), one
   run at a time, to aggregators that keep results per test (`LatestPerTest`).

Peak memory is thus about one run's cases plus the per-test results. A history of at
most `HOLD` cases in all is read once and kept for the later passes. Should a run be
written meanwhile, the read answers as of its first pass; should ``cachekit gc`` delete a
run meanwhile, that run's cases are left out.

Flaky tests (`cachekit.stats.flaky`) read every attempt instead
(`RunSource.every_attempt`): a failure that a retried job passed is evidence for them.
"""

from __future__ import annotations

import copy
import itertools
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs

import cachekit.ci.layout as layout
from cachekit.errors import CorruptValueWarning
from cachekit.stats.cases import (
    OUTCOMES,
    Cases,
    Pick,
    StoredMeta,
    StoredRunError,
    read_cases,
    read_meta,
)
from cachekit.stats.junit import TestCase
from cachekit.values.cache import Cache
from cachekit.values.merge import CLOCK_SKEW

#: Cases of the newest runs a read keeps in memory between its passes rather than read
#: the store again: two runs of a 500,000-test suite, about 100 MB.
HOLD = 1_000_000
#: How many of the most recent CI runs the report, the flaky tests and the summary's count
#: of them cover by default.
DEFAULT_RUNS = 30
#: Runs fetched together: a remote store's round trips overlap, memory stays a few runs.
READ_BATCH = 8
#: ``observe(info, record)``: a stored run (`read_meta` accepted it) as the first pass
#: reads it (`StoredRuns`' ``observe``).
Observer = Callable[["RunInfo", dict[str, Any]], None]
#: ``progress(what, done, total)``: ``done`` of ``total`` stored objects read by the pass
#: named ``what`` (such as "reading runs").
Progress = Callable[[str, int, int], None]


@attrs.frozen
class RunInfo:
    """A stored run (an ingested report or a pytest run) without its cases: what it says
    of itself and tallies of its cases, as `latest_attempts` left them."""

    id: str
    at: float
    run_id: str
    source: str
    label: str
    shard: str
    tests: int = 0
    #: Summed durations, in case order.
    seconds: float = 0.0
    #: Cases that passed (without reruns), passed only after reruns, failed or errored,
    #: and were skipped.
    passed: int = 0
    flaky: int = 0
    failed: int = 0
    skipped: int = 0
    #: The commit the run tested ("" if unknown: runs stored before it was recorded).
    commit: str = ""

    @property
    def order(self) -> tuple[float, str]:
        """Runs are ordered by time, then id."""
        return self.at, self.id


def info_of(report_id: str, meta: StoredMeta) -> RunInfo:
    return RunInfo(report_id, **attrs.asdict(meta))


def tallied(info: RunInfo, cases: Cases) -> RunInfo:
    """``info`` with the tallies of ``cases``."""
    reruns = [i for i in cases.reruns if cases.outcomes[i] == "p"]
    return attrs.evolve(
        info,
        tests=len(cases),
        seconds=sum(cases.seconds),
        passed=cases.outcomes.count("p") - len(reruns),
        flaky=len(reruns),
        failed=cases.outcomes.count("f") + cases.outcomes.count("e"),
        skipped=cases.outcomes.count("s"),
    )


class RunSource(Protocol):
    """Stored runs, read as a plan and then case by case."""

    def infos(self) -> list[RunInfo]:
        """Every run, latest attempts only (`latest_attempts`), oldest first."""

    def cases(
        self, wanted: Collection[str], pick: Pick | None = None
    ) -> Iterator[tuple[RunInfo, Cases]]:
        """The cases of the runs with ids in ``wanted`` (as `latest_attempts` left
        them), a run at a time, in no particular order; only those ``pick`` wants, if
        given."""

    def every_attempt(self) -> RunSource:
        """The same runs with every attempt of a retried shard whole (no
        `latest_attempts`): a failure its retry replaced is evidence of a flaky test
        (`cachekit.stats.flaky`). Shares what this source has read."""


def claims(attempts: Iterable[tuple[str, float, Collection[str]]]) -> dict[str, set[str]]:
    """For the runs (id, time, test ids) of one CI run and shard: the test ids that a
    later attempt (a later time) recorded, by run id. A run's cases of those tests do not
    count; a run left with none is dropped (`latest_attempts`)."""
    by_time: dict[float, list[tuple[str, Collection[str]]]] = {}
    for run_id, at, ids in attempts:
        by_time.setdefault(at, []).append((run_id, ids))
    claimed: set[str] = set()
    found = {}
    for at in sorted(by_time, reverse=True):
        for run_id, _ids in by_time[at]:
            found[run_id] = claimed
        claimed = claimed.union(*(ids for _run_id, ids in by_time[at]))
    return found


def retried(infos: Iterable[RunInfo]) -> list[list[RunInfo]]:
    """The runs of each CI run and shard recorded at more than one time."""
    groups: dict[tuple[str, str], list[RunInfo]] = {}
    for info in infos:
        if info.run_id:  # reports without a run id stand alone
            groups.setdefault((info.run_id, info.shard), []).append(info)
    return [group for group in groups.values() if len({info.at for info in group}) > 1]


class Recorded(Protocol):
    """A run in memory (`cachekit.stats.runs.Run`)."""

    @property
    def id(self) -> str: ...
    @property
    def at(self) -> float: ...
    @property
    def run_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def shard(self) -> str: ...
    @property
    def commit(self) -> str: ...
    @property
    def cases(self) -> Sequence[TestCase]: ...


class MemoryRuns:
    """A `RunSource` over runs in memory."""

    def __init__(self, runs: Iterable[Recorded]) -> None:
        ordered = sorted(runs, key=lambda run: (run.at, run.id))
        self._cases = {run.id: Cases.of(run.cases) for run in ordered}
        self._all = [
            tallied(
                RunInfo(
                    run.id, run.at, run.run_id, run.source, run.label, run.shard, commit=run.commit
                ),
                self._cases[run.id],
            )
            for run in ordered
        ]
        self._infos, self._claims = trim(self._all, self._cases)

    def infos(self) -> list[RunInfo]:
        return list(self._infos)

    def cases(
        self, wanted: Collection[str], pick: Pick | None = None
    ) -> Iterator[tuple[RunInfo, Cases]]:
        for info in self._infos:
            if info.id in wanted:
                cases = _unclaimed(self._cases[info.id], self._claims.get(info.id))
                yield info, cases.picked(pick)

    def every_attempt(self) -> RunSource:
        attempts = copy.copy(self)
        attempts._infos, attempts._claims = self._all, {}
        return attempts


def trim(
    infos: list[RunInfo], cases: dict[str, Cases]
) -> tuple[list[RunInfo], dict[str, set[str]]]:
    """``infos`` as `latest_attempts` leaves them, given the ``cases`` of (at least)
    the retried shards' runs; and the tests a later attempt took from each run that
    keeps some of its cases."""
    kept: dict[str, RunInfo | None] = {}
    taken: dict[str, set[str]] = {}
    for group in retried(infos):
        present = [info for info in group if info.id in cases]
        found = claims((info.id, info.at, cases[info.id].ids) for info in present)
        for info in present:
            claimed, own = found[info.id], cases[info.id]
            keep = [i for i, test_id in enumerate(own.ids) if test_id not in claimed]
            if claimed and not keep:
                kept[info.id] = None
            elif len(keep) < len(own):
                taken[info.id] = claimed
                kept[info.id] = tallied(info, own.select(keep))
    trimmed = [left for info in infos for left in (kept.get(info.id, info),) if left is not None]
    return trimmed, taken


def _unclaimed(cases: Cases, claimed: set[str] | None) -> Cases:
    if not claimed:
        return cases
    return cases.select([i for i, test_id in enumerate(cases.ids) if test_id not in claimed])


class StoredRuns:
    """A `RunSource` over ``stats/runs`` of a cache's own store (see the module's
    docstring). Unreadable runs are skipped with one warning each, on the first pass."""

    def __init__(
        self,
        cache: Cache | None,
        *,
        progress: Progress | None = None,
        hold: int = HOLD,
        batch: int = READ_BATCH,
        observe: Observer | None = None,
        accept: Callable[[str, Any], bool] | None = None,
    ) -> None:
        self.cache = cache
        #: Only the runs this accepts, given report id and stored record, count (say,
        #: those a trusted run signed: `cachekit.stats.signatures`); None: every run.
        self.accept = accept
        self.progress = progress
        #: Shown each readable run the first pass reads (a copy that a later one of the
        #: same report replaces included): a caller's own first pass, for free.
        self.observe = observe
        #: At most how many cases the first pass keeps, of the newest runs, for the
        #: later passes: a pass that needs only those reads no more from the store.
        self.hold = hold
        self.batch = batch
        self._infos: list[RunInfo] | None = None
        self._planned: list[RunInfo] | None = None
        #: Stored records the first pass kept, by report id, and whether that is all.
        self._held: dict[str, Any] = {}
        self._complete = False
        #: Of a report stored more than once (ingested twice), the copy that counts.
        self._winners: dict[str, tuple[float, str, str]] = {}
        #: Tests a later attempt replaced, by run id (runs that keep some cases only).
        self._claims: dict[str, set[str]] = {}
        #: The parts (ids) each report was found in by the first pass: a later pass that
        #: wants some runs reads only their parts.
        self._parts_of: dict[str, set[str]] = {}

    def infos(self) -> list[RunInfo]:
        if self._infos is None:
            self._infos = self._trim(self.planned())
        return list(self._infos)

    def cases(
        self, wanted: Collection[str], pick: Pick | None = None
    ) -> Iterator[tuple[RunInfo, Cases]]:
        infos = {info.id: info for info in self.infos()}
        chosen = {i for i in wanted if i in infos}
        for info, cases in self._read(chosen, "summarizing runs", pick):
            yield infos[info.id], _unclaimed(cases, self._claims.get(info.id))

    def every_attempt(self) -> RunSource:
        return _EveryAttempt(self)

    @classmethod
    def of_value(cls, value: Mapping[str, Any]) -> StoredRuns:
        """A `RunSource` over a ``stats/runs`` value in memory (a part, say)."""
        runs = cls(None, hold=sys.maxsize)
        runs._held, runs._complete = dict(value), True
        return runs

    # -- the passes -------------------------------------------------------------------------

    def planned(self) -> list[RunInfo]:
        """Every run, every attempt (`RunSource.every_attempt`), oldest first."""
        if self._planned is None:
            self._planned = self._plan()
        return list(self._planned)

    def _plan(self) -> list[RunInfo]:
        found: dict[str, tuple[tuple[float, str, str], RunInfo]] = {}
        held: dict[str, Any] = {}
        held_cases = 0
        complete = True
        horizon = time.time() + CLOCK_SKEW  # a later attempt wins: none may come from the future
        for report_id, record in self._records("reading runs", None):
            try:
                meta = read_meta(record)
                if meta.at > horizon:
                    raise StoredRunError(f"a time in the future ({meta.at})")
            except StoredRunError as error:
                warnings.warn(
                    CorruptValueWarning(
                        f"cachekit: ignoring unreadable run {report_id!r}: {error}"
                    ),
                    stacklevel=4,
                )
                continue
            copy = (meta.at, meta.source, meta.label)
            if report_id in found and found[report_id][0] >= copy:
                continue
            found[report_id] = (copy, info_of(report_id, meta))
            if self.observe is not None:
                self.observe(found[report_id][1], record)
            if report_id in held:
                held_cases -= found[report_id][1].tests
            held[report_id] = record
            held_cases += meta.tests
            while held_cases > self.hold:  # keep the newest runs only
                oldest = min(held, key=lambda held_id: found[held_id][1].order)
                held_cases -= found[oldest][1].tests
                del held[oldest]
                complete = False
        self._held, self._complete = held, complete
        self._winners = {report_id: copy for report_id, (copy, _info) in found.items()}
        return sorted((info for _copy, info in found.values()), key=lambda info: info.order)

    def _trim(self, infos: list[RunInfo]) -> list[RunInfo]:
        """`trim`: this reads the attempts of the retried shards again, and holds their
        cases until it has them all."""
        groups = retried(infos)
        if not groups:
            return infos
        attempts = {info.id for group in groups for info in group}
        cases = {info.id: found for info, found in self._read(attempts, "reading retried shards")}
        trimmed, self._claims = trim(infos, cases)
        return trimmed

    def _read(
        self, wanted: set[str], what: str, pick: Pick | None = None
    ) -> Iterator[tuple[RunInfo, Cases]]:
        """The cases of the winning copy of each wanted run (those ``pick`` wants),
        untrimmed."""
        done: set[str] = set()
        for report_id, record in self._records(what, wanted):
            if report_id not in wanted or report_id in done:
                continue
            try:
                meta = read_meta(record)
            except StoredRunError:
                continue  # warned about on the first pass
            if (meta.at, meta.source, meta.label) != self._winners.get(report_id):
                continue
            done.add(report_id)
            yield info_of(report_id, meta), read_cases(record, pick)

    def _records(self, what: str, wanted: set[str] | None) -> Iterator[tuple[str, Any]]:
        """`_stored_records` that ``accept`` accepts."""
        records = self._stored_records(what, wanted)
        if self.accept is None:
            return records
        accept = self.accept
        return ((report_id, record) for report_id, record in records if accept(report_id, record))

    def _stored_records(self, what: str, wanted: set[str] | None) -> Iterator[tuple[str, Any]]:
        """(report id, stored record) of the ``wanted`` runs (None: the first pass,
        every run): from those the first pass kept if they are there, else read again
        one part at a time (warnings about unreadable parts only the first time)."""
        if self.cache is None:  # `of_value`
            yield from list(self._held.items())
            return
        if wanted is not None and (self._complete or wanted <= self._held.keys()):
            yield from [(report_id, self._held[report_id]) for report_id in wanted]
            return
        progress = self.progress

        def step(done: int, total: int) -> None:
            if progress is not None:
                progress(what, done, total)

        only = None
        if wanted is not None:
            only = {part for report_id in wanted for part in self._parts_of.get(report_id, ())}
        parts = self.cache.read_each(
            layout.STATS_RUNS_KEY, layout.STATS_RUNS, batch=self.batch, progress=step, only=only
        )
        while True:
            with warnings.catch_warnings():
                if wanted is not None:
                    warnings.simplefilter("ignore", CorruptValueWarning)
                item = next(parts, None)
            if item is None:
                return
            part_id, value = item
            del item
            for report_id in list(value):
                if wanted is None:
                    self._parts_of.setdefault(report_id, set()).add(part_id)
                yield report_id, value.pop(report_id)  # hold one run at a time
            del value


class _EveryAttempt:
    """`StoredRuns.every_attempt`: its plan and reads, untrimmed."""

    def __init__(self, runs: StoredRuns) -> None:
        self._runs = runs

    def infos(self) -> list[RunInfo]:
        return self._runs.planned()

    def cases(
        self, wanted: Collection[str], pick: Pick | None = None
    ) -> Iterator[tuple[RunInfo, Cases]]:
        infos = {info.id: info for info in self._runs.planned()}
        chosen = {i for i in wanted if i in infos}
        for info, cases in self._runs._read(chosen, "reading every attempt", pick):
            yield infos[info.id], cases

    def every_attempt(self) -> RunSource:
        return self


# -- aggregating ------------------------------------------------------------------------

#: A case as `LatestPerTest` keeps it: the run's order, then `TestCase`'s fields.
Row = tuple[tuple[float, str], str, str, str, str, float, int | None, str | None]


class LatestPerTest:
    """The most recent case of every test: of a later run, or later in the same run."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self._newest: tuple[float, str] | None = None

    def add(self, order: tuple[float, str], cases: Cases) -> None:
        count = len(cases)
        rows: Iterator[Row] = zip(
            itertools.repeat(order, count),
            cases.files,
            cases.classnames,
            cases.names,
            cases.outcomes,
            cases.seconds,
            map(cases.reruns.get, range(count)),
            map(cases.messages.get, range(count)),
            strict=True,
        )
        if self._newest is None or order > self._newest:
            self._newest = order
            self.rows.update(zip(cases.ids, rows, strict=True))  # the usual case: at C speed
            return
        latest = self.rows
        for test_id, row in zip(cases.ids, rows, strict=True):
            held = latest.get(test_id)
            if held is None or order >= held[0]:
                latest[test_id] = row

    def cases(self) -> list[TestCase]:
        """The latest case of each test, sorted by test id."""
        return [
            TestCase(file, classname, name, OUTCOMES[code], seconds, reruns or 0, message or "")
            for _test_id, (_order, file, classname, name, code, seconds, reruns, message) in sorted(
                self.rows.items()
            )
        ]


def latest_per_test(source: RunSource, infos: Sequence[RunInfo] | None = None) -> list[TestCase]:
    """The most recent case of every test seen in ``infos`` (default: every run),
    sorted by test id."""
    wanted = {info.id for info in (source.infos() if infos is None else infos)}
    latest = LatestPerTest()
    for info, cases in source.cases(wanted):
        latest.add(info.order, cases)
    return latest.cases()


def last_ci_runs(infos: Sequence[RunInfo], count: int) -> list[RunInfo]:
    """The reports of the ``count`` most recent CI runs of ``infos`` (a CI run: the
    reports that share a run id; a report without one stands alone), in their order. A
    CI run is as recent as its first report."""
    first: dict[str, float] = {}
    for info in infos:
        key = ci_run_key(info)
        first[key] = min(first.get(key, info.at), info.at)
    if count <= 0:
        return []
    kept = set(sorted(first, key=lambda key: (first[key], key))[-count:])
    return [info for info in infos if ci_run_key(info) in kept]


def ci_run_key(info: RunInfo) -> str:
    """Which CI run a report belongs to: its run id, or the report alone."""
    return info.run_id or f"report {info.id}"


def choose_run(infos: Sequence[RunInfo], run_id: str | None = None) -> list[RunInfo]:
    """The reports of one CI run: every report with ``run_id`` (all its shards), by
    default the run of the most recent report."""
    if not infos:
        return []
    wanted = infos[-1].run_id if run_id is None else run_id
    if not wanted:  # reports without a run id stand alone
        return [infos[-1]] if run_id is None else []
    return [info for info in infos if info.run_id == wanted]


def cases_of(source: RunSource, infos: Sequence[RunInfo]) -> list[TestCase]:
    """The cases of ``infos``, run after run in their order."""
    order = {info.id: index for index, info in enumerate(infos)}
    found = sorted(source.cases(order), key=lambda item: order[item[0].id])
    return [case for _info, cases in found for case in cases.cases()]
