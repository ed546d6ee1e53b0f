"""Flaky tests told apart from broken and fixed ones (``cachekit stats flaky``,
`cachekit.stats.flaky`): through real pytest runs on a directory and on S3, the
commit each run records, and a simulated 50-run history with known answers."""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cachekit import Cache, LocalStore, MemoryStore, open_store
from cachekit.ci.commit import COMMIT_VARIABLES, detect_commit
from cachekit.ci.layout import STATS_RUNS_KEY
from cachekit.ci.namespace import detect_namespace, namespaced_cache
from cachekit.ci.signing import ENV_SIGNING_KEY
from cachekit.stats.cases import Cases, Pick, read_cases, read_meta
from cachekit.stats.flaky import FlakyTally, find_flaky, names_of
from cachekit.stats.history import MemoryRuns, StoredRuns
from cachekit.stats.junit import CaseOutcome, TestCase
from cachekit.stats.runs import Run, record_runs, stored
from plugin_support import shared
from test_cache import CountingStore

REPOSITORY = Path(__file__).resolve().parent.parent

#: A test whose outcome the file ``outcome`` next to it decides, one that always fails
#: and one that always passes.
SUITE = """
from pathlib import Path

def test_it():
    assert Path(__file__).with_name("outcome").read_text() == "pass", "told to fail"

def test_broken():
    assert False, "always broken"

def test_fine():
    pass
"""


@pytest.fixture(autouse=True)
def _no_commit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI's own commit (GITHUB_SHA...) must not reach the runs: each test sets its own."""
    for name in (*COMMIT_VARIABLES, "CACHEKIT_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    outcome: str,
    *,
    commit: str = "",
    run_id: str = "",
    args: tuple[str, ...] = (),
) -> None:
    """One real pytest run with the plugin, ``test_it`` told to ``outcome``."""
    (pytester.path / "outcome").write_text(outcome)
    for name, value in (("CACHEKIT_COMMIT", commit), ("CACHEKIT_RUN_ID", run_id)):
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    result = pytester.runpytest(f"--cache-url={url}", "-p", "no:randomly", *args)
    assert result.ret in (0, 1), result.outlines


def cachekit(cwd: Path, *args: str) -> Any:
    """``cachekit ARGS --json`` in a subprocess, its output parsed."""
    completed = subprocess.run(
        [sys.executable, "-m", "cachekit", *args, "--json"],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def flaky_ids(cwd: Path, url: str) -> list[str]:
    return [test["test_id"] for test in cachekit(cwd, "stats", "flaky", "--url", url)]


# -- through real pytest runs ---------------------------------------------------------


def test_alternating_outcomes_on_one_commit_are_flaky(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, remote_url: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    for number, outcome in enumerate(["fail", "pass", "fail", "pass"], 1):
        run(pytester, monkeypatch, remote_url, outcome, commit="a1b2c3", run_id=str(number))

    (found,) = cachekit(pytester.path, "stats", "flaky", "--url", remote_url)
    assert found["test_id"] == "test_suite.py::test_it"  # not test_broken, not test_fine
    assert [seen["run_id"] for seen in found["failures"]] == ["3", "1"]  # newest first
    assert [seen["run_id"] for seen in found["passes"]] == ["4", "2"]
    assert {seen["commit"] for seen in found["failures"] + found["passes"]} == {"a1b2c3"}
    assert "told to fail" in found["failures"][0]["message"]
    assert found["code"] == ["a1b2c3"]
    assert found["last_seen"] == found["passes"][0]["at"] > found["first_seen"]
    assert found["first_seen"] == found["failures"][-1]["at"]

    summary = cachekit(pytester.path, "stats", "summary", "--url", remote_url)
    assert summary["flaky_tests"] == 1


def test_a_fix_between_runs_and_a_test_that_always_fails_are_not_flaky(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = str(tmp_path / "store")
    pytester.makepyfile(test_suite=SUITE)
    for number, (outcome, commit) in enumerate(
        [("fail", "old"), ("fail", "old"), ("pass", "new"), ("pass", "new")], 1
    ):
        run(pytester, monkeypatch, url, outcome, commit=commit, run_id=str(number))
    assert flaky_ids(pytester.path, url) == []
    # The same outcomes on one commit are flaky: only the commit told them apart.
    (pytester.path / "outcome").write_text("fail")
    run(pytester, monkeypatch, url, "fail", commit="new", run_id="5")
    assert flaky_ids(pytester.path, url) == ["test_suite.py::test_it"]


def test_with_skip_passed_a_test_is_flaky_when_its_code_key_is(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--skip-passed`` keys each test file by the code it imports: a failure and a pass
    with one key are flaky across commits (commits alone would call it fixed), and a
    failure and a pass with different keys are not, on one commit (commits alone would
    call it flaky)."""
    monkeypatch.setenv(ENV_SIGNING_KEY, "k" * 32)  # what CI shares: one key everywhere
    skipping = ("--skip-passed",)
    pytester.makepyfile(test_suite=SUITE)
    across = str(tmp_path / "across-commits")
    run(pytester, monkeypatch, across, "fail", commit="c1", run_id="1", args=skipping)
    run(pytester, monkeypatch, across, "pass", commit="c2", run_id="2", args=skipping)
    (found,) = cachekit(pytester.path, "stats", "flaky", "--url", across)
    assert found["test_id"] == "test_suite.py::test_it"
    assert [seen["commit"] for seen in found["failures"] + found["passes"]] == ["c1", "c2"]
    (code,) = found["code"]
    assert code.startswith("key ")
    assert {seen["code"] for seen in found["failures"] + found["passes"]} == {code}
    without = str(tmp_path / "without-keys")
    run(pytester, monkeypatch, without, "fail", commit="c1", run_id="1")
    run(pytester, monkeypatch, without, "pass", commit="c2", run_id="2")
    assert flaky_ids(pytester.path, without) == []  # what commits alone tell

    one_commit = str(tmp_path / "one-commit")
    run(pytester, monkeypatch, one_commit, "fail", commit="c3", run_id="3", args=skipping)
    pytester.makepyfile(test_suite=SUITE + "\n\ndef test_added():\n    pass\n")  # new code
    run(pytester, monkeypatch, one_commit, "pass", commit="c3", run_id="4", args=skipping)
    assert flaky_ids(pytester.path, one_commit) == []


def test_a_rerun_inside_a_run_is_flaky(pytester: pytest.Pytester, remote_url: str) -> None:
    pytester.makepyfile(
        test_suite="""
        from pathlib import Path

        def test_once():
            marker = Path(__file__).with_name("ran-once")
            if not marker.exists():
                marker.write_text("")
                assert False, "first attempt fails"

        def test_broken():
            assert False
        """
    )
    pytester.runpytest(f"--cache-url={remote_url}", "--reruns=2", "-p", "no:randomly")
    (found,) = cachekit(pytester.path, "stats", "flaky", "--url", remote_url)
    assert found["test_id"] == "test_suite.py::test_once"  # no commit needed
    assert [(seen["outcome"], seen["reruns"]) for seen in found["passes"]] == [("passed", 1)]
    assert found["failures"] == []


def test_a_retried_job_that_passed_is_flaky_without_a_commit(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CI retry (same run id and shard) replaces its first attempt in the summary, but
    its failure on the same code still counts as evidence here."""
    url = str(tmp_path / "store")
    pytester.makepyfile(test_suite=SUITE)
    shard = ("--cache-shard=2/3",)
    run(pytester, monkeypatch, url, "fail", run_id="81", args=shard)
    run(pytester, monkeypatch, url, "pass", run_id="81", args=shard)
    summary = cachekit(pytester.path, "stats", "summary", "--url", url)
    assert summary["totals"]["failures"] == 1  # test_broken: the retry replaced test_it's
    (found,) = cachekit(pytester.path, "stats", "flaky", "--url", url)
    assert found["test_id"] == "test_suite.py::test_it"
    assert found["code"] == ["run 81"]
    assert [(seen["run_id"], seen["shard"]) for seen in found["failures"]] == [("81", "2/3")]


def test_without_a_commit_other_ci_runs_are_not_the_same_code(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Runs that recorded no commit may have tested different code: a failure in one and
    a pass in the next is a fix as far as anyone can tell."""
    url = str(tmp_path / "store")
    pytester.makepyfile(test_suite=SUITE)
    for number, outcome in enumerate(["fail", "pass", "fail", "pass"], 1):
        run(pytester, monkeypatch, url, outcome, run_id=str(number))
    assert flaky_ids(pytester.path, url) == []
    runs = StoredRuns(shared(url)).infos()
    assert [info.commit for info in runs] == ["", "", "", ""]


def test_each_run_records_the_commit_from_the_ci_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = str(tmp_path / "store")
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("GITHUB_SHA", "f" * 40)
    run(pytester, monkeypatch, url, "pass")
    run(pytester, monkeypatch, url, "pass", commit="override")
    assert [info.commit for info in StoredRuns(shared(url)).infos()] == ["f" * 40, "override"]


def test_the_text_listing_shows_the_evidence(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = str(tmp_path / "store")
    pytester.makepyfile(test_suite=SUITE)
    run(pytester, monkeypatch, url, "fail", commit="abc123", run_id="7")
    run(pytester, monkeypatch, url, "pass", commit="abc123", run_id="8")
    completed = subprocess.run(
        [sys.executable, "-m", "cachekit", "stats", "flaky", "--url", url],
        capture_output=True,
        text=True,
        cwd=pytester.path,
        check=True,
    )
    lines = completed.stdout.splitlines()
    assert lines[1] == "1 flaky test(s) over 2 CI run(s)"
    assert "test_suite.py::test_it" in lines
    assert any(
        line.startswith("  failed") and "run 7" in line and "told to fail" in line for line in lines
    )
    assert any(
        line.startswith("  passed") and "run 8" in line and "abc123" in line for line in lines
    )


# -- ingest, and what is stored --------------------------------------------------------

REPORT = """<testsuite name="pytest" tests="2">
  <testcase classname="tests.test_a" name="test_x" file="tests/test_a.py" time="0.5">
    {failure}
  </testcase>
  <testcase classname="tests.test_a" name="test_y" file="tests/test_a.py" time="0.1"/>
</testsuite>
"""


def test_ingest_records_the_commit_it_is_given_or_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "store")
    failing, passing = tmp_path / "failing.xml", tmp_path / "passing.xml"
    failing.write_text(REPORT.format(failure='<failure message="boom">boom</failure>'))
    passing.write_text(REPORT.format(failure=""))
    ns = ("--repository", "acme/app", "--ref", "main")
    monkeypatch.setenv("CI_COMMIT_SHA", "e" * 40)
    ingested = cachekit(
        tmp_path, "stats", "ingest", "--url", store, *ns, "--run-id", "1", str(failing)
    )
    assert ingested["commit"] == "e" * 40
    cachekit(tmp_path, "stats", "ingest", "--url", store, *ns, "--run-id", "2", str(passing))
    (found,) = cachekit(tmp_path, "stats", "flaky", "--url", store, *ns)
    assert found["test_id"] == "tests/test_a.py::test_x"
    assert found["failures"][0]["message"] == "boom"
    # --commit wins over the environment: another commit, so no longer the same code.
    third = cachekit(
        tmp_path,
        "stats",
        "ingest",
        "--url",
        store,
        *ns,
        "--run-id",
        "3",
        "--commit",
        "fix1",
        str(passing),
    )
    assert third["commit"] == "fix1"
    assert len(cachekit(tmp_path, "stats", "flaky", "--url", store, *ns)) == 1
    # Without the first run's failure in the runs covered, nothing is flaky.
    assert cachekit(tmp_path, "stats", "flaky", "--url", store, *ns, "--runs", "2") == []
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cachekit",
            "stats",
            "ingest",
            "--url",
            store,
            *ns,
            "--commit",
            "a b",
            str(passing),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert "not a commit" in completed.stderr


def test_detect_commit_reads_one_variable_in_order() -> None:
    assert detect_commit({}) == ""
    assert detect_commit({"GIT_COMMIT": "abc", "BUILD_SOURCEVERSION": "def"}) == "abc"
    assert detect_commit({"CACHEKIT_COMMIT": "mine", "GITHUB_SHA": "theirs"}) == "mine"
    assert detect_commit({"CACHEKIT_COMMIT": "", "CIRCLE_SHA1": "c1"}) == "c1"
    assert detect_commit({"GITHUB_SHA": "not a\nsha"}) == ""  # never stored as is
    assert detect_commit({"GITHUB_SHA": "x" * 101}) == ""


def test_runs_stored_without_a_commit_still_read() -> None:
    """Runs of the same format written before the commit was recorded have none; runs
    with one are read the same way (the format number did not change)."""
    old = {
        "format": 2,
        "at": 5.0,
        "run_id": "1",
        "file": [["t.py", 1]],
        "classname": [["t", 1]],
        "name": "test_a",
        "outcome": "f",
        "us": [10],
    }
    assert read_meta(old).commit == ""
    assert read_meta({**old, "commit": "abc"}).commit == "abc"
    cache = Cache(MemoryStore())
    cache.write_part(STATS_RUNS_KEY, "old", {"r-old": old})
    cache.write_part(STATS_RUNS_KEY, "new", {"r-new": {**old, "at": 6.0, "outcome": "p"}})
    infos = StoredRuns(cache).every_attempt().infos()
    assert [(info.id, info.commit) for info in infos] == [("r-old", ""), ("r-new", "")]
    (found,) = find_flaky(StoredRuns(cache))  # one CI run, retried: one code
    assert found.code == ("run 1",)


# -- a simulated history ---------------------------------------------------------------


@functools.cache
def flaky_history() -> ModuleType:
    """``benchmarks/flaky_history.py``: the history the committed benchmark judges."""
    spec = importlib.util.spec_from_file_location(
        "flaky_history", REPOSITORY / "benchmarks" / "flaky_history.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_simulated_history_lists_exactly_its_flaky_tests(tmp_path: Path) -> None:
    """50 CI runs of 500 tests with 5 flaky, 5 broken and 5 fixed, stored in a directory
    and read by ``cachekit stats flaky`` (issue 16's target)."""
    history = flaky_history().simulate()
    assert len({run.run_id for run in history.runs()}) == 50
    ns = {"repository": "acme/app", "ref": "main"}
    namespace = detect_namespace({}, **ns)
    record_runs(
        namespaced_cache(open_store(str(tmp_path / "store")), namespace), list(history.runs())
    )
    options = [option for name, value in ns.items() for option in (f"--{name}", value)]
    found = cachekit(
        tmp_path, "stats", "flaky", "--url", str(tmp_path / "store"), *options, "--runs", "50"
    )
    assert {test["test_id"] for test in found} == history.flaky
    assert len(found) == 5
    last_seen = [test["last_seen"] for test in found]
    assert last_seen == sorted(last_seen, reverse=True)


def test_asked_about_some_tests_it_answers_as_for_all() -> None:
    """The one-pass question (``ids``: "which of these are flaky?") agrees with the
    listing, and the listing keeps state only for tests that failed or were rerun."""
    history = flaky_history().simulate()
    source = MemoryRuns(history.runs())
    everything = find_flaky(source)
    asked = sorted(history.flaky | history.broken | history.fixed)[::2]
    assert find_flaky(source, ids=asked) == [t for t in everything if t.test_id in asked]
    assert find_flaky(source, ids=[]) == []

    tally = FlakyTally()
    attempts = source.every_attempt()
    for info, cases in attempts.cases({info.id for info in attempts.infos()}):
        tally.add_unusual(info, cases)
    unusual = {
        case.test_id for run in history.runs() for case in run.cases if case.failed or case.reruns
    }
    assert set(tally.seen) == unusual
    assert unusual == history.flaky | history.broken | history.fixed  # 15 of 500


def test_a_tally_that_observed_the_plan_finds_the_same() -> None:
    """The first pass done as the plan reads (`StoredRuns`' ``observe``) finds what a
    first pass of its own finds, over all runs or the last few."""
    history = flaky_history().simulate()
    cache = Cache(MemoryStore())
    record_runs(cache, list(history.runs()))
    for ci_runs in (None, 50, 12, 3):
        plain = find_flaky(StoredRuns(cache, hold=0), ci_runs=ci_runs)
        tally = FlakyTally()
        source = StoredRuns(cache, hold=0, observe=tally.observe)
        assert find_flaky(source, ci_runs=ci_runs, observed=tally) == plain
        assert tally.observed
    assert {test.test_id for test in plain} <= history.flaky
    assert {test.test_id for test in find_flaky(StoredRuns(cache))} == history.flaky


# -- reading only the cases in question ------------------------------------------------


def columns(cases: Cases) -> tuple[object, ...]:
    return (
        cases.files,
        cases.classnames,
        cases.names,
        cases.outcomes,
        cases.seconds,
        cases.reruns,
        cases.messages,
        cases.ids,
    )


@pytest.mark.parametrize("newline", [False, True])
def test_picked_cases_are_those_of_the_whole_run(newline: bool) -> None:
    """Cases picked out of a stored run (unusual ones, by name) are exactly the ones a
    whole read has at those places, whatever the files, classes and names."""
    outcomes: list[CaseOutcome] = ["passed", "failed", "error", "skipped"]
    cases = [
        TestCase(
            file=f"tests/test_{n % 3 if n < 30 else 9}.py",
            classname=f"tests.test_{n % 3 if n < 30 else 9}" + (".TestK" if n % 5 == 0 else ""),
            name=f"test_{n}[a::b]"
            if n % 7 == 0
            else f"test_{n}" + ("\nx" if newline and n == 3 else ""),
            outcome=outcomes[n % 4] if n % 6 == 0 else "passed",
            duration=n / 1000,
            reruns=1 if n % 11 == 0 else 0,
            message=f"m{n}" if n % 6 == 0 else "",
        )
        for n in range(60)
    ]
    data = stored(Run("r", 1.0, "", "", "", tuple(cases)))
    whole = read_cases(data)
    unusual = whole.unusual()
    assert unusual  # failures, errors, skips and reruns
    wanted_ids = {whole.ids[7], whole.ids[14], whole.ids[25], "tests/test_9.py::test_59"}
    for pick in (
        Pick(unusual=True),
        Pick(names=names_of(wanted_ids)),
        Pick(unusual=True, names=names_of(wanted_ids)),
    ):
        picked = read_cases(data, pick)
        indexes = sorted(
            {i for i in range(len(whole)) if pick.unusual and i in unusual}
            | {i for i, name in enumerate(whole.names) if name in pick.names}
        )
        assert columns(picked) == columns(whole.select(indexes))
        assert columns(whole.picked(pick)) == columns(picked)
        if pick.names:
            assert wanted_ids <= set(picked.ids)


def test_later_passes_read_only_the_parts_of_the_runs_they_want(tmp_path: Path) -> None:
    """The first pass reads every stored run; a pass that wants some of them (the runs
    on code where a test failed, say) fetches only their parts, not the whole history."""
    counting = CountingStore(LocalStore(tmp_path / "store"))
    cache = Cache(counting)
    outcomes: list[CaseOutcome] = ["passed"] * 19 + ["failed"]
    runs = [
        Run(
            id=f"report-{n}",
            at=1000.0 + n,
            run_id=str(n),
            source="junit",
            label="",
            cases=(TestCase("t.py", "t", "test_a", outcomes[n]),),
            commit=f"c{n}",
        )
        for n in range(20)
    ]
    record_runs(cache, runs)
    history = StoredRuns(cache, hold=0)  # keeps no run from the first pass
    assert len(history.infos()) == 20
    counting.fetched.clear()
    assert [info.id for info, _cases in history.cases({"report-19"})] == ["report-19"]
    fetched = [key for batch in counting.fetched for key in batch]
    assert len(fetched) == 1
    assert "-run-19-" in fetched[0]
