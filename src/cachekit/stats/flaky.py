"""Flaky tests: told apart from broken and fixed ones by the code they ran against.

A test is flaky when the stored runs saw it both pass and fail on the same code, or pass
only after reruns (pytest-rerunfailures' ``reruns`` or cachekit's ``--rerun-flaky``). The
code a test ran against is its file's code key where the run recorded one (``--skip-passed``
keys each test file by its import closure and environment: the same key on two commits
is the same code for that test, and a key that changed is other code on one commit);
otherwise the run's commit (`cachekit.ci.commit`); a run stored without one is compared
only with the other shards and attempts of its own CI run (they test one commit), and a
report without a run id only with itself. Code keys and commits are never compared
with each other. So a test that fails every time is broken, not flaky, and one that
failed until its code changed and passes since was fixed, not flaky. Every attempt of a
retried shard counts here (`RunSource.every_attempt`): a failure that the retry passed
is the commonest evidence there is.

Runs are read a run at a time, and per-test state is kept only for tests that ever
failed or were rerun (most tests always pass): `find_flaky` reads the runs once for
those, then again only the runs on code where one of them failed, for its passes. Asked
about given test ids (``ids``: this run's failures, say), it reads the runs once and
keeps state only for those. Either way only the cases wanted are built out of a stored
run (`Pick`: the unusual ones, and those by the names of the tests in question).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from cachekit.stats.cases import OUTCOMES, Cases, Pick, read_cases
from cachekit.stats.history import RunInfo, RunSource, last_ci_runs
from cachekit.stats.junit import CaseOutcome

#: One case of a test as `FlakyTally` keeps it: its run, the code it ran against
#: (`case_code`), outcome code, reruns, message.
_Seen = tuple[RunInfo, str, str, int, str]
_SEPARATOR = re.compile("::")


@attrs.frozen
class Seen:
    """One run (report) of a flaky test: where, on what code, and how it went."""

    at: float
    run_id: str
    shard: str
    #: The commit the run tested ("" if it recorded none).
    commit: str
    #: The code it ran against (`case_code`): a code key, a commit, a CI run or a report.
    code: str
    outcome: CaseOutcome
    reruns: int
    message: str


@attrs.frozen
class FlakyTest:
    """A flaky test and its evidence, newest first."""

    test_id: str
    #: Runs where it passed on code it also failed on, or passed after reruns.
    passes: tuple[Seen, ...]
    #: Runs where it failed (or errored) on code it also passed on.
    failures: tuple[Seen, ...]
    #: The code it flaked on (`code_key`), newest first.
    code: tuple[str, ...]
    #: The first and last of that evidence (seconds since the epoch).
    first_seen: float
    last_seen: float

    @property
    def last_message(self) -> str:
        """The most recent failure message ("" if it only passed after reruns)."""
        return next((seen.message for seen in self.failures if seen.message), "")


#: How `case_code` names a code key: never a commit, a CI run or a report.
KEY_PREFIX = "key "


def code_key(info: RunInfo) -> str:
    """Which code a run tested: its commit; without one, its CI run (``run ID``: all its
    shards and attempts test one commit); without either, the report alone."""
    if info.commit:
        return info.commit
    if info.run_id:
        return f"run {info.run_id}"
    return f"report {info.id}"


def case_code(info: RunInfo, cases: Cases, position: int) -> str:
    """Which code one case ran against: its file's code key where the run recorded one,
    otherwise the run's (`code_key`)."""
    key = cases.code(position)
    return KEY_PREFIX + key if key else code_key(info)


class FlakyTally:
    """The cases of tests that might be flaky, fed a run's cases at a time in any order.

    With ``ids``, only those tests are watched and `add` takes every case of theirs.
    Without, `add_unusual` first takes the failures and reruns of every test, and
    `add_passes` then the plain passes of the tests seen so far in the runs on code where
    they failed (`failing_codes`). `observe` is `add_unusual` for a stored run as
    `cachekit.stats.history.StoredRuns` reads its plan (its ``observe``): `find_flaky`
    then needs no first pass of its own.
    """

    def __init__(self, ids: Iterable[str] | None = None) -> None:
        self.watched: set[str] | None = None if ids is None else set(ids)
        #: Test id -> its unusual cases, and its plain passes once `add_passes` ran.
        self.seen: dict[str, list[_Seen]] = {}
        #: Whether `observe` saw a plan's runs.
        self.observed = False

    def add(self, info: RunInfo, cases: Cases) -> None:
        """Every case of the watched tests in one run (needs ``ids``)."""
        assert self.watched is not None, "add needs the ids to watch"
        self.add_unusual(info, cases)
        self.add_passes(info, cases)

    def add_unusual(self, info: RunInfo, cases: Cases) -> None:
        """The failures, errors and passes after reruns of one run."""
        watched = self.watched
        for position in cases.unusual():
            outcome = cases.outcomes[position]
            test_id = cases.ids[position]
            if outcome == "s" or (watched is not None and test_id not in watched):
                continue
            reruns = cases.reruns.get(position, 0)
            message = cases.messages.get(position, "")
            self._note(test_id, (info, case_code(info, cases, position), outcome, reruns, message))

    def observe(self, info: RunInfo, record: dict[str, Any]) -> None:
        """`add_unusual` of a stored run (`cachekit.stats.history.Observer`)."""
        self.observed = True
        self.add_unusual(info, read_cases(record, Pick(unusual=True)))

    def keep(self, infos: Collection[RunInfo]) -> None:
        """Forget what was seen in runs other than ``infos`` (older ones, copies a
        later copy replaced)."""
        wanted = set(infos)
        for test_id, seen in list(self.seen.items()):
            kept = [item for item in seen if item[0] in wanted]
            if kept:
                self.seen[test_id] = kept
            else:
                del self.seen[test_id]

    def failing_codes(self) -> dict[str, set[str]]:
        """Per test seen failing or erroring, the code (`case_code`) of those cases."""
        codes: dict[str, set[str]] = {}
        for test_id, seen in self.seen.items():
            for _info, code, outcome, _reruns, _message in seen:
                if outcome != "p":
                    codes.setdefault(test_id, set()).add(code)
        return codes

    def add_passes(
        self, info: RunInfo, cases: Cases, failing: Mapping[str, Collection[str]] | None = None
    ) -> None:
        """The plain passes (no reruns) in one run of the watched tests, or, given
        ``failing`` (`failing_codes`), of the tests that failed on this run's code: a
        pass on other code is no evidence, and holding it would cost memory per test
        per run."""
        known: Collection[str] = self.seen if self.watched is None else self.watched
        if failing is not None:
            known = failing
        if not known:
            return
        outcomes, reruns = cases.outcomes, cases.reruns
        for position in itertools.compress(range(len(cases)), map(known.__contains__, cases.ids)):
            if outcomes[position] != "p" or position in reruns:
                continue
            test_id, code = cases.ids[position], case_code(info, cases, position)
            if failing is None or code in failing[test_id]:
                self._note(test_id, (info, code, "p", 0, ""))

    def flaky(self) -> list[FlakyTest]:
        """The flaky tests among those seen, most recently seen first."""
        found = [test for test_id, seen in self.seen.items() if (test := _judge(test_id, seen))]
        found.sort(key=lambda test: (-test.last_seen, test.test_id))
        return found

    def _note(self, test_id: str, seen: _Seen) -> None:
        held = self.seen.get(test_id)
        if held is None:
            self.seen[test_id] = [seen]
        else:
            held.append(seen)


def find_flaky(
    source: RunSource,
    *,
    ci_runs: int | None = None,
    ids: Iterable[str] | None = None,
    observed: FlakyTally | None = None,
) -> list[FlakyTest]:
    """The flaky tests of ``source``'s runs (every attempt), most recently seen first:
    over its ``ci_runs`` most recent CI runs (default all), among ``ids`` (default every
    test). ``observed``: a `FlakyTally` that observed ``source``'s plan (see
    `FlakyTally`), which saves a read of the runs. See the module's docstring for what
    it reads."""
    attempts = source.every_attempt()
    infos = attempts.infos()
    if ci_runs is not None:
        infos = last_ci_runs(infos, ci_runs)
    covered = {info.id for info in infos}
    if ids is None and observed is not None and observed.observed:
        observed.keep(infos)
        return _passes(observed, attempts, infos)
    tally = FlakyTally(ids)
    if tally.watched is not None:
        if tally.watched:
            pick = Pick(unusual=True, names=names_of(tally.watched))
            for info, cases in attempts.cases(covered, pick):
                tally.add(info, cases)
        return tally.flaky()
    for info, cases in attempts.cases(covered, Pick(unusual=True)):
        tally.add_unusual(info, cases)
    return _passes(tally, attempts, infos)


def _passes(tally: FlakyTally, attempts: RunSource, infos: Iterable[RunInfo]) -> list[FlakyTest]:
    """The second pass: the plain passes of the tests that failed, in the other runs on
    the code they failed on; then the verdict. Code that one report alone tested (a CI
    run of one shard, without a commit) holds no such pass: its runs are not read. A
    failure on a code key may have passes on any run (the key outlives commits): when
    there is one, every run is read again, for those tests only."""
    infos = list(infos)
    failing = tally.failing_codes()
    reports = Counter(code_key(info) for info in infos)
    codes = {
        code
        for tested in failing.values()
        for code in tested
        if code.startswith(KEY_PREFIX) or reports[code] > 1
    }
    keyed = any(code.startswith(KEY_PREFIX) for code in codes)
    again = {info.id for info in infos if keyed or code_key(info) in codes}
    suspects = [test_id for test_id, tested in failing.items() if not tested.isdisjoint(codes)]
    if suspects and again:
        for info, cases in attempts.cases(again, Pick(names=names_of(suspects))):
            tally.add_passes(info, cases, failing)
    return tally.flaky()


def names_of(ids: Iterable[str]) -> frozenset[str]:
    """Every ``name`` a case of these test ids may have (`cachekit.stats.junit.join_test_id`:
    what follows some ``::``, or the whole id), to pick their cases out of a stored run
    without building every case's id; `FlakyTally` then matches whole ids."""
    names = {""}
    for test_id in ids:
        names.add(test_id)
        names.update(test_id[match.end() :] for match in _SEPARATOR.finditer(test_id))
    return frozenset(names)


def _judge(test_id: str, seen: list[_Seen]) -> FlakyTest | None:
    """The evidence that a test is flaky, or None if there is none."""
    passed: set[str] = set()
    failed: set[str] = set()
    for _info, code, outcome, _reruns, _message in seen:
        (passed if outcome == "p" else failed).add(code)
    both = passed & failed
    evidence = [
        item
        for item in seen
        if item[1] in both or (item[2] == "p" and item[3] > 0)  # passed after reruns
    ]
    if not evidence:
        return None
    evidence.sort(key=lambda item: item[0].order, reverse=True)
    shown = [_shown(item) for item in evidence]
    codes = dict.fromkeys(item[1] for item in evidence)  # in order, once each
    return FlakyTest(
        test_id=test_id,
        passes=tuple(item for item in shown if item.outcome == "passed"),
        failures=tuple(item for item in shown if item.outcome != "passed"),
        code=tuple(codes),
        first_seen=evidence[-1][0].at,
        last_seen=evidence[0][0].at,
    )


def _shown(item: _Seen) -> Seen:
    info, code, outcome, reruns, message = item
    return Seen(
        at=info.at,
        run_id=info.run_id,
        shard=info.shard,
        commit=info.commit,
        code=code,
        outcome=OUTCOMES[outcome],
        reruns=reruns,
        message=message,
    )
