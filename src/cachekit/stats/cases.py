"""The test cases of a run by column: how a run is stored, and what readers aggregate.

A run of a 500,000-test suite stored as an object per case was 98 MB of JSON (over the
codec's 128 MiB per-value cap at a few more tests) and 50 million Python objects for 100
runs. By column it is one string of names, one of outcome codes and a list of integer
microseconds, with files and classnames run-length encoded and reruns and messages only
where present: 23 MB of JSON, about 2 MB after zstd, decoded in a tenth of a second
(``benchmarks/bench_stats.py``). Stored form, `FORMAT` 2::

    {"format": 2, "at": ..., "run_id": ..., "source": ..., "label": ..., "shard": ...,
     "commit": ...,
     "file": [["tests/test_a.py", 120], ...],   # run-length encoded, per case
     "classname": [["tests.test_a.TestA", 100], ["tests.test_a", 20], ...],
     "name": "test_x\\ntest_y...",             # joined by newlines (a list if a name has one)
     "outcome": "ppfs...",                      # p passed, f failed, e error, s skipped
     "us": [1500, 250000, ...],                 # durations, whole microseconds
     "reruns": {"2": 1}, "message": {"2": "assert 1 == 2"},   # by case index, if any
     "code": {"tests/test_a.py": "3f2a..."}}    # by file, if any

``shard``, ``commit`` (the commit the run tested, `cachekit.ci.commit`; runs stored
before it existed have none), ``reruns``, ``message`` and ``code`` are left out when
empty. ``code`` is each test file's code key: what ``--skip-passed`` keyed the file by
(its import closure and environment, as a keyed hash), finer than the commit for telling
flaky tests from fixed ones (`cachekit.stats.flaky`).
Durations are kept to the microsecond (what the pytest plugin measures; a JUnit report's
extra digits are rounded).
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from cachekit.stats.junit import CaseOutcome, TestCase, join_test_id, test_id_prefix

FORMAT = 2
CODES: dict[CaseOutcome, str] = {"passed": "p", "failed": "f", "error": "e", "skipped": "s"}
OUTCOMES: dict[str, CaseOutcome] = {code: outcome for outcome, code in CODES.items()}
#: The outcomes whose durations say how long a test takes (skips and errors say little).
TIMED_OUTCOMES: tuple[CaseOutcome, ...] = ("passed", "failed")
#: The longest duration stored, in microseconds: about 285 years, exact in a float.
MAX_MICROSECONDS = 2**53
#: The fields of a stored run besides its cases.
_META = ("at", "run_id", "source", "label", "shard", "commit")
_NOT_PASSED = re.compile("[fes]")


@attrs.frozen
class Pick:
    """Which cases of a run a reader needs, when not all: those that did not simply pass
    (`Cases.unusual`), and those named (the ``name`` column) in ``names``. Picking a few
    from a stored run of 500,000 builds a few `Cases` rows instead of 500,000."""

    unusual: bool = False
    names: frozenset[str] = frozenset()


class StoredRunError(ValueError):
    """A stored run that cachekit cannot read: another format, or not its shape."""


@attrs.frozen(eq=False)
class Cases:
    """Test cases by column, the i-th entry of each list being the i-th case."""

    files: list[str]
    classnames: list[str]
    names: list[str]
    #: One `CODES` letter per case.
    outcomes: str
    seconds: list[float]
    #: By case index, only where not 0 and "".
    reruns: dict[int, int]
    messages: dict[int, str]
    #: `TestCase.test_id` of each case, computed once per file and classname.
    ids: list[str]
    #: Test file -> its code key, for the files the run keyed (see the module docstring).
    codes: dict[str, str] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self.outcomes)

    def case(self, index: int) -> TestCase:
        return TestCase(
            file=self.files[index],
            classname=self.classnames[index],
            name=self.names[index],
            outcome=OUTCOMES[self.outcomes[index]],
            duration=self.seconds[index],
            reruns=self.reruns.get(index, 0),
            message=self.messages.get(index, ""),
        )

    def cases(self) -> tuple[TestCase, ...]:
        return tuple(self.case(index) for index in range(len(self)))

    def code(self, index: int) -> str:
        """The code key of the case's file ("" when the run recorded none)."""
        return self.codes.get(self.files[index], "") if self.codes else ""

    def unusual(self) -> list[int]:
        """Indexes of the cases that did not simply pass (failed, errored, skipped, or
        passed after reruns), in order."""
        found = {index for index, code in _not_passed(self.outcomes)}
        found.update(self.reruns)
        return sorted(found)

    def picked(self, pick: Pick | None) -> Cases:
        """The cases ``pick`` wants (all without one)."""
        if pick is None:
            return self
        return self.select(_picked(pick, self.outcomes, self.reruns, self.names))

    def select(self, indexes: Sequence[int]) -> Cases:
        """The cases at ``indexes`` (ascending), as a `Cases` of their own."""
        new_index = {old: new for new, old in enumerate(indexes)}
        return Cases(
            files=[self.files[i] for i in indexes],
            classnames=[self.classnames[i] for i in indexes],
            names=[self.names[i] for i in indexes],
            outcomes="".join(self.outcomes[i] for i in indexes),
            seconds=[self.seconds[i] for i in indexes],
            reruns={new_index[i]: n for i, n in self.reruns.items() if i in new_index},
            messages={new_index[i]: m for i, m in self.messages.items() if i in new_index},
            ids=[self.ids[i] for i in indexes],
            codes=self.codes,
        )

    @classmethod
    def of(cls, cases: Iterable[TestCase]) -> Cases:
        """The columns of ``cases`` (durations kept as they are)."""
        cases = list(cases)
        files = [case.file for case in cases]
        classnames = [case.classname for case in cases]
        names = [case.name for case in cases]
        return cls(
            files=files,
            classnames=classnames,
            names=names,
            outcomes="".join(CODES[case.outcome] for case in cases),
            seconds=[case.duration for case in cases],
            reruns={i: case.reruns for i, case in enumerate(cases) if case.reruns},
            messages={i: case.message for i, case in enumerate(cases) if case.message},
            ids=_test_ids(files, classnames, names),
        )


def to_stored(
    meta: dict[str, Any], cases: Sequence[TestCase], codes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The stored form of a run: ``meta`` (`_META`'s fields), its cases by column, and
    ``codes`` (test file -> code key) for the files among its cases."""
    return stored_columns(
        meta,
        files=[case.file for case in cases],
        classnames=[case.classname for case in cases],
        names=[case.name for case in cases],
        outcomes="".join(CODES[case.outcome] for case in cases),
        microseconds=[round(case.duration * 1e6) for case in cases],
        reruns={i: case.reruns for i, case in enumerate(cases) if case.reruns},
        messages={i: case.message for i, case in enumerate(cases) if case.message},
        codes=codes,
    )


def stored_columns(
    meta: dict[str, Any],
    *,
    files: Sequence[str],
    classnames: Sequence[str],
    names: Sequence[str],
    outcomes: str,
    microseconds: Sequence[int],
    reruns: Mapping[int, int],
    messages: Mapping[int, str],
    codes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`to_stored` from the columns themselves (case ``i`` is row ``i`` of each; reruns
    and messages only where there are any): the pytest plugin's 2,500 tests a shard need
    no `TestCase` each (`cachekit_pytest.sync.records`)."""
    stored: dict[str, Any] = {"format": FORMAT, "at": meta["at"]}
    stored.update((key, meta[key]) for key in _META[1:] if meta.get(key))
    stored.update(
        file=_run_lengths(files),
        classname=_run_lengths(classnames),
        name=list(names) if any("\n" in name for name in names) else "\n".join(names),
        outcome=outcomes,
        us=[min(MAX_MICROSECONDS, us) for us in microseconds],
    )
    if reruns:
        stored["reruns"] = {str(i): n for i, n in reruns.items()}
    if messages:
        stored["message"] = {str(i): message for i, message in messages.items()}
    if codes:
        present = set(files)
        coded = {file: key for file, key in sorted(codes.items()) if file in present}
        if coded:
            stored["code"] = coded
    return stored


@attrs.frozen
class StoredMeta:
    """What a stored run says besides its cases, and tallies of them (for planning a
    read without keeping the cases)."""

    at: float
    run_id: str
    source: str
    label: str
    shard: str
    tests: int
    #: Summed durations, in case order.
    seconds: float
    #: Cases that passed (without reruns), passed after reruns, failed or errored, and
    #: were skipped.
    passed: int
    flaky: int
    failed: int
    skipped: int
    #: The commit the run tested ("" if unknown).
    commit: str = ""


def read_meta(data: Any) -> StoredMeta:
    """The metadata and tallies of a stored run; raises `StoredRunError` if it is not a
    run of `FORMAT` (checking every column, so a run that passes reads whole)."""
    if not isinstance(data, dict):
        raise StoredRunError(f"expected a run, not a JSON {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise StoredRunError(
            f"stored in format {data.get('format', 1)!r}, not {FORMAT} (another cachekit "
            "version wrote it)"
        )
    at = data.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise StoredRunError("'at' is not a time")
    text = {key: data.get(key, "") for key in _META[1:]}
    for key, value in text.items():
        if not isinstance(value, str):
            raise StoredRunError(f"{key!r} is not a string")
    outcomes = data.get("outcome")
    if not isinstance(outcomes, str) or outcomes.strip("pfes"):
        raise StoredRunError("'outcome' is not a string of outcome codes")
    count = len(outcomes)
    for column in ("file", "classname"):
        if _run_length_total(data.get(column)) != count:
            raise StoredRunError(f"{column!r} does not cover the {count} cases")
    names = data.get("name")
    if isinstance(names, str):
        if (names.count("\n") + 1 if count else 0) != count:
            raise StoredRunError(f"'name' does not name the {count} cases")
    elif not (isinstance(names, list) and len(names) == count):
        raise StoredRunError(f"'name' does not name the {count} cases")
    elif not all(type(name) is str for name in names):
        raise StoredRunError("'name' holds a name that is not a string")
    micros = data.get("us")
    if not isinstance(micros, list) or len(micros) != count:
        raise StoredRunError(f"'us' does not time the {count} cases")
    if not all(type(value) is int for value in micros) or (
        micros and not (min(micros) >= 0 and max(micros) <= MAX_MICROSECONDS)
    ):
        raise StoredRunError("'us' holds a duration that is not whole microseconds")
    reruns = _sparse(data, "reruns", count, int)
    _sparse(data, "message", count, str)
    code = data.get("code", {})
    if not (isinstance(code, dict) and all(type(code_key) is str for code_key in code.values())):
        raise StoredRunError("'code' is not a mapping of files to code keys")
    flaky = sum(1 for index in reruns if outcomes[index] == "p")
    return StoredMeta(
        at=float(at),
        **text,
        tests=count,
        seconds=sum([value / 1e6 for value in micros]),
        passed=outcomes.count("p") - flaky,
        flaky=flaky,
        failed=outcomes.count("f") + outcomes.count("e"),
        skipped=outcomes.count("s"),
    )


def read_cases(data: dict[str, Any], pick: Pick | None = None) -> Cases:
    """The cases of a stored run that `read_meta` accepted: all, or those ``pick``
    wants (in their order)."""
    count = len(data["outcome"])
    names = data["name"]
    if isinstance(names, str):
        names = names.split("\n") if count else []
    reruns = {int(i): n for i, n in data.get("reruns", {}).items()}
    messages = {int(i): m for i, m in data.get("message", {}).items()}
    if pick is not None:
        indexes = _picked(pick, data["outcome"], reruns, names)
        return _read_picked(data, indexes, names, reruns, messages)
    files = _expand(data["file"])
    classnames = _expand(data["classname"])
    return Cases(
        files=files,
        classnames=classnames,
        names=names,
        outcomes=data["outcome"],
        seconds=[value / 1e6 for value in data["us"]],
        reruns=reruns,
        messages=messages,
        ids=_test_ids(files, classnames, names),
        codes=data.get("code", {}),
    )


def _picked(pick: Pick, outcomes: str, reruns: dict[int, int], names: list[str]) -> list[int]:
    """The indexes of the cases ``pick`` wants, ascending, found at C speed."""
    found: set[int] = set()
    if pick.unusual:
        found.update(index for index, _code in _not_passed(outcomes))
        found.update(reruns)
    if pick.names:
        found.update(itertools.compress(range(len(names)), map(pick.names.__contains__, names)))
    return sorted(found)


def _read_picked(
    data: dict[str, Any],
    indexes: list[int],
    names: list[str],
    reruns: dict[int, int],
    messages: dict[int, str],
) -> Cases:
    """`read_cases` of the cases at ``indexes``: the run-length columns are looked up,
    not expanded."""
    new_index = {old: new for new, old in enumerate(indexes)}
    files = _look_up(data["file"], indexes)
    classnames = _look_up(data["classname"], indexes)
    picked_names = [names[i] for i in indexes]
    outcomes = data["outcome"]
    micros = data["us"]
    return Cases(
        files=files,
        classnames=classnames,
        names=picked_names,
        outcomes="".join(outcomes[i] for i in indexes),
        seconds=[micros[i] / 1e6 for i in indexes],
        reruns={new_index[i]: n for i, n in reruns.items() if i in new_index},
        messages={new_index[i]: m for i, m in messages.items() if i in new_index},
        ids=_test_ids(files, classnames, picked_names),
        codes=data.get("code", {}),
    )


def _look_up(value: list[list[Any]], indexes: list[int]) -> list[str]:
    """The entries of a run-length encoded column at ``indexes``."""
    ends = list(itertools.accumulate(count for _item, count in value))
    return [value[bisect.bisect_right(ends, index)][0] for index in indexes]


def _test_ids(files: list[str], classnames: list[str], names: list[str]) -> list[str]:
    ids: list[str] = []
    start = 0
    for (file, classname), group in itertools.groupby(zip(files, classnames, strict=True)):
        stop = start + sum(1 for _ in group)
        prefix = test_id_prefix(file, classname)
        if prefix:
            ids += [join_test_id(prefix, name) for name in names[start:stop]]
        else:
            ids += names[start:stop]
        start = stop
    return ids


def _run_lengths(values: Iterable[str]) -> list[list[Any]]:
    return [[value, sum(1 for _ in group)] for value, group in itertools.groupby(values)]


def _run_length_total(value: Any) -> int:
    """Cases covered by a run-length encoded column, or -1 if it is not one."""
    if not isinstance(value, list):
        return -1
    total = 0
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and type(item[0]) is str
            and type(item[1]) is int
            and item[1] > 0
        ):
            return -1
        total += item[1]
    return total


def _expand(value: list[list[Any]]) -> list[str]:
    return list(
        itertools.chain.from_iterable(itertools.repeat(item, count) for item, count in value)
    )


def _sparse(data: dict[str, Any], key: str, count: int, kind: type[Any]) -> dict[int, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise StoredRunError(f"{key!r} is not a mapping")
    result = {}
    for index, item in value.items():
        wrong = type(item) is not kind or (type(item) is int and item < 0)
        if wrong or not (index.isascii() and index.isdigit()) or int(index) >= count:
            raise StoredRunError(f"{key!r} has an entry that is not a case's")
        result[int(index)] = item
    return result


def _not_passed(outcomes: str) -> Iterable[tuple[int, str]]:
    """(index, code) of the cases whose code is not ``p``, found at C speed."""
    return ((match.start(), match.group()) for match in _NOT_PASSED.finditer(outcomes))
