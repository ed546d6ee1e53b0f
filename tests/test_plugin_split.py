"""``--num-shards N --shard-id I``: one of N shards of the selected tests, balanced by
the durations earlier runs recorded; every selected test runs on exactly one shard."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cachekit.stats.runs import load_durations
from cachekit.stats.sharding import split
from cachekit.values.durations import scoped_setup_key
from plugin_support import shared

SLEEPY = """
import os, time, pytest

FAIL = set(filter(None, os.environ.get("CK_FAIL", "").split(",")))
SECONDS = [1.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]

@pytest.mark.parametrize("n", range(8))
def test_t(n):
    time.sleep(SECONDS[n])
    assert f"t{n}" not in FAIL
"""

_RAN = re.compile(r"(\S+::\S+) (?:PASSED|FAILED|ERROR)|(?:PASSED|FAILED|ERROR) (\S+::\S+)")


def ran(result: pytest.RunResult) -> set[str]:
    """The node ids a ``-v`` run reports as run (plain or xdist output)."""
    found = set()
    for line in result.stdout.lines:
        match = _RAN.search(line)
        if match:
            found.add(match[1] or match[2])
    return found


def every_shard(pytester: pytest.Pytester, count: int, *args: str) -> list[set[str]]:
    shards = []
    for index in range(count):
        result = pytester.runpytest(
            "-v", "-p", "no:randomly", f"--num-shards={count}", f"--shard-id={index}", *args
        )
        assert result.ret in (
            pytest.ExitCode.OK,
            pytest.ExitCode.TESTS_FAILED,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        )
        shards.append(ran(result))
    return shards


def assert_partition(shards: list[set[str]], everything: set[str]) -> None:
    assert set().union(*shards) == everything
    assert sum(len(shard) for shard in shards) == len(everything)  # no test twice


ALL = {f"test_sleepy.py::test_t[{n}]" for n in range(8)}


def test_without_durations_shards_split_by_count(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sleepy=SLEEPY.replace("time.sleep(SECONDS[n])", "pass"))
    shards = every_shard(pytester, 3)
    assert_partition(shards, ALL)
    assert sorted(len(shard) for shard in shards) == [2, 3, 3]
    assert every_shard(pytester, 3) == shards  # deterministic


def compact(url: str, cwd: Path) -> None:
    """What a CI workflow's final job does: fold every run's parts into the bases."""
    subprocess.run([sys.executable, "-m", "cachekit", "compact", "--url", url], check=True, cwd=cwd)


def test_recorded_durations_balance_the_shards(pytester: pytest.Pytester, remote_url: str) -> None:
    pytester.makepyfile(test_sleepy=SLEEPY)
    # Recorded in a process of its own, away from this one's heap and threads: a run in
    # it once recorded 0.9 s for three 0.1 s tests while the whole suite ran on 2 cores.
    pytester.runpytest_subprocess(f"--cache-url={remote_url}").assert_outcomes(passed=8)
    compact(remote_url, pytester.path)
    durations = load_durations(shared(remote_url))
    assert set(durations) == ALL
    expected = [set(shard) for shard in split(ALL, durations, 2)]
    shards = every_shard(pytester, 2, f"--cache-url={remote_url}")
    assert shards == expected
    assert_partition(shards, ALL)
    # By count the split would be 4 and 4 tests; by time the 1.2 s test runs alone: the
    # other seven sleep 0.6 s together, and a loaded machine's clock (it once recorded
    # 0.7 s for them here) would have to double them to give it company.
    assert {"test_sleepy.py::test_t[0]"} in shards


def test_shards_compose_with_last_failed(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_sleepy=SLEEPY.replace("time.sleep(SECONDS[n])", "pass"))
    monkeypatch.setenv("CK_FAIL", "t1,t4,t6")
    pytester.runpytest(f"--cache-url={remote_url}").assert_outcomes(passed=5, failed=3)
    shards = every_shard(pytester, 2, f"--cache-url={remote_url}", "--lf")
    assert_partition(shards, {f"test_sleepy.py::test_t[{n}]" for n in (1, 4, 6)})


def test_shards_compose_with_keyword_selection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sleepy=SLEEPY.replace("time.sleep(SECONDS[n])", "pass"))
    shards = every_shard(pytester, 2, "-k", "not t[0] and not t[7]")
    assert_partition(shards, ALL - {"test_sleepy.py::test_t[0]", "test_sleepy.py::test_t[7]"})


def test_shards_under_xdist(pytester: pytest.Pytester, remote_url: str) -> None:
    pytester.makepyfile(test_sleepy=SLEEPY)
    pytester.runpytest(f"--cache-url={remote_url}").assert_outcomes(passed=8)
    compact(remote_url, pytester.path)
    expected = split(ALL, load_durations(shared(remote_url)), 2)
    for index in range(2):
        result = pytester.runpytest_subprocess(
            "-v", "-n", "2", f"--cache-url={remote_url}", "--num-shards=2", f"--shard-id={index}"
        )
        assert ran(result) == set(expected[index])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard-id=1"], "*--shard-id needs --num-shards*"),
        (["--num-shards=2"], "*--num-shards needs --shard-id*"),
        (["--num-shards=2", "--shard-id=2"], "*--shard-id 2 does not exist: shards are 0 to 1*"),
        (
            ["--num-shards=0", "--shard-id=0"],
            "*--num-shards*expected a whole number >= 1, got '0'*",
        ),
    ],
)
def test_bad_shard_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_shards_split_before_cached_passes_are_skipped(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard 0 finishes and records its passes before shard 1 starts: shard 1 must still
    split all eight tests (then skip what is cached in its own share), or tests that
    shard 0's passes moved would run on neither shard."""
    monkeypatch.setenv("CACHEKIT_SIGNING_KEY", "s" * 32)
    pytester.makepyfile(test_sleepy=SLEEPY.replace("time.sleep(SECONDS[n])", "pass"))
    shards = every_shard(pytester, 2, f"--cache-url={remote_url}", "--skip-passed")
    assert_partition(shards, ALL)


def test_the_run_says_which_shard_it_is(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sleepy=SLEEPY.replace("time.sleep(SECONDS[n])", "pass"))
    result = pytester.runpytest("--collect-only", "-q", "--num-shards=4", "--shard-id=1")
    result.stdout.fnmatch_lines(
        ["cachekit: shard 2/4 (--shard-id=1): 2 test(s), 0 with a recorded duration*"]
    )


SHIFTING = """
import os, time, pytest

SLOW = int(os.environ.get("CK_SLOW", "0"))

@pytest.mark.parametrize("n", range(8))
def test_t(n):
    time.sleep(0.4 if n == SLOW else 0.02)
"""


def test_a_rerun_after_a_compaction_splits_as_its_ci_run_did(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a CI run's shards and a rerun of one of them, another run records other
    durations and its final job compacts: the rerun still splits as its CI run did, so
    every test runs exactly once in the final set of attempts."""
    pytester.makepyfile(test_sleepy=SHIFTING)
    url = f"--cache-url={remote_url}"

    def record_durations(slow: int) -> dict[str, float]:
        monkeypatch.setenv("CK_SLOW", str(slow))
        monkeypatch.setenv("CACHEKIT_RUN_ID", f"recorder-{slow}")
        pytester.runpytest(url).assert_outcomes(passed=8)
        compact(remote_url, pytester.path)
        return load_durations(shared(remote_url))

    before = record_durations(slow=0)
    monkeypatch.setenv("CACHEKIT_RUN_ID", "ci-7")
    attempt = every_shard(pytester, 2, url)
    assert_partition(attempt, ALL)
    after = record_durations(slow=7)
    # Without the plan the rerun would split by these and run some tests twice, others never.
    assert split(ALL, after, 2) != split(ALL, before, 2)
    monkeypatch.setenv("CACHEKIT_RUN_ID", "ci-7")
    result = pytester.runpytest("-v", url, "--num-shards=2", "--shard-id=1")
    result.stdout.fnmatch_lines(
        ["cachekit: shard 2/2 *; split plan of CI run ci-7, from the store"]
    )
    assert ran(result) == attempt[1]
    # A new CI run splits by the new durations, and writes its own plan.
    monkeypatch.setenv("CACHEKIT_RUN_ID", "ci-8")
    result = pytester.runpytest("-v", url, "--num-shards=2", "--shard-id=1")
    result.stdout.fnmatch_lines(["*; split plan of CI run ci-8, written by this shard"])
    assert ran(result) == set(split(ALL, after, 2)[1])


def test_without_a_ci_run_id_the_run_says_how_it_split(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(test_sleepy=SLEEPY.replace("time.sleep(SECONDS[n])", "pass"))
    result = pytester.runpytest(
        f"--cache-url={tmp_path / 'store'}", "--num-shards=2", "--shard-id=0"
    )
    result.stdout.fnmatch_lines(
        [
            "*; durations as of the last compaction (no CI run id, so a rerun after a compaction "
            "may split differently: set CACHEKIT_RUN_ID)"
        ]
    )
    assert list((tmp_path / "store").rglob("split-plans")) == []


def test_a_read_only_run_writes_no_plan(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_sleepy=SLEEPY.replace("time.sleep(SECONDS[n])", "pass"))
    monkeypatch.setenv("CACHEKIT_RUN_ID", "ci-3")
    monkeypatch.setenv("CACHEKIT_READONLY", "1")
    store = tmp_path / "store"
    result = pytester.runpytest(f"--cache-url={store}", "--num-shards=2", "--shard-id=0")
    result.stdout.fnmatch_lines(
        ["*CI run ci-3 has no split plan, and a read-only run writes none)"]
    )
    assert not store.exists() or list(store.rglob("split-plans")) == []


def test_a_planted_plan_that_is_not_one_is_a_miss(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a store writer puts under the plan's key, every test still runs on exactly
    one shard: a plan that is not one is ignored with one warning (and a plan only ever
    holds durations, so a plausible one can only unbalance the shards)."""
    pytester.makepyfile(test_sleepy=SLEEPY.replace("time.sleep(SECONDS[n])", "pass"))
    monkeypatch.setenv("CACHEKIT_RUN_ID", "ci-5")
    store = tmp_path / "store"
    shared(str(store)).set("stats/split-plans/ci-5", {"format": 1, "durations": {"x": -1}})
    shards = []
    for index in range(2):
        result = pytester.runpytest(
            "-v", f"--cache-url={store}", "--num-shards=2", f"--shard-id={index}"
        )
        result.stdout.fnmatch_lines(["*ignored the split plan at *not a plan of this version*"])
        shards.append(ran(result))
    assert_partition(shards, ALL)


# -- scoped fixtures: a module with an expensive fixture stays on one shard ----------

EXPENSIVE = """
import os, time, pytest

@pytest.fixture(scope="module")
def database():
    with open("setups.log", "a") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(0.6)
    yield
    time.sleep(0.2)

@pytest.mark.parametrize("n", range(6))
def test_query(database, n):
    pass
"""

PLAIN = """
import time, pytest

@pytest.mark.parametrize("n", range(6))
def test_p(n):
    time.sleep(0.1)
"""

DATABASE = {f"test_db.py::test_query[{n}]" for n in range(6)}
PLAIN_IDS = {f"test_plain.py::test_p[{n}]" for n in range(6)}


def record_scoped_suite(pytester: pytest.Pytester, url: str) -> dict[str, float]:
    pytester.makepyfile(test_db=EXPENSIVE, test_plain=PLAIN)
    pytester.runpytest(f"--cache-url={url}").assert_outcomes(passed=12)
    compact(url, pytester.path)
    return load_durations(shared(url))


def test_a_module_with_an_expensive_module_fixture_stays_on_one_shard(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    durations = record_scoped_suite(pytester, remote_url)
    # The fixture's setup and teardown are recorded under its module, not in the tests
    # that happened to trigger them (the first and the last of the module).
    assert durations[scoped_setup_key("test_db.py")] >= 0.75
    assert max(durations[test_id] for test_id in DATABASE) < 0.6  # the setup sleeps 0.6 s
    assert set(durations) == DATABASE | PLAIN_IDS | {scoped_setup_key("test_db.py")}
    (pytester.path / "setups.log").unlink()
    shards = every_shard(pytester, 2, f"--cache-url={remote_url}")
    assert_partition(shards, DATABASE | PLAIN_IDS)
    assert [bool(shard & DATABASE) for shard in shards].count(True) == 1
    assert len((pytester.path / "setups.log").read_text().split()) == 1  # paid once
    # Split per test (the setup in no test's duration), the database tests would land
    # on both shards. Round durations: measured ones differ by noise, which LPT follows.
    even = {test_id: 0.1 for test_id in PLAIN_IDS} | {test_id: 0.01 for test_id in DATABASE}
    per_test = split(DATABASE | PLAIN_IDS, even, 2)
    assert all(set(shard) & DATABASE for shard in per_test)


def test_under_xdist_a_scoped_setup_is_recorded_once_and_kept_from_the_tests(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    pytester.makepyfile(test_db=EXPENSIVE, test_plain=PLAIN)
    pytester.runpytest_subprocess("-n", "2", f"--cache-url={store}").assert_outcomes(passed=12)
    durations = load_durations(shared(store))
    # Each worker that ran a database test paid the setup: the most one paid is recorded.
    assert 0.75 <= durations[scoped_setup_key("test_db.py")] < 1.5
    assert max(durations[test_id] for test_id in DATABASE) < 0.6  # the setup sleeps 0.6 s


_WORKER_RAN = re.compile(r"\[(gw\d+)\].* PASSED (\S+::\S+)")


def test_shard_order_duration_runs_the_longest_block_first_and_keeps_it_on_one_worker(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    durations = record_scoped_suite(pytester, store)
    args = ["-v", f"--cache-url={store}", "--num-shards=1", "--shard-order=duration"]
    result = pytester.runpytest(*args, "-p", "no:randomly")
    # The figures the clock gave, not round ones: a loaded machine's sleeps run long.
    recorded = sum(durations[test_id] for test_id in DATABASE | PLAIN_IDS)
    setup = durations[scoped_setup_key("test_db.py")]
    summary = f"*12 with a recorded duration ({recorded:.1f} s recorded, {setup:.1f} s setup*"
    result.stdout.fnmatch_lines([summary])
    order = [line.split(" ")[0] for line in result.stdout.lines if " PASSED" in line]
    # The database module (0.8 s with its setup) first, in pytest's order, then the
    # 0.1 s tests longest first.
    assert order[:6] == sorted(DATABASE)
    assert set(order[6:]) == PLAIN_IDS
    assert [durations[t] for t in order[6:]] == sorted(
        (durations[t] for t in PLAIN_IDS), reverse=True
    )
    # Under xdist, --dist loadscope keeps the block on one worker: one setup.
    (pytester.path / "setups.log").unlink()
    result = pytester.runpytest_subprocess(*args, "-n", "2", "--dist", "loadscope")
    assert len(worker_of(result)["test_db.py"]) == 1
    assert len((pytester.path / "setups.log").read_text().split()) == 1


MARKS = """
import json, pytest

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):
        marks = {item.nodeid: [m.args for m in item.iter_markers("xdist_group")] for item in items}
        with open(f"marks-{config.workerinput['workerid']}.json", "w") as out:
            json.dump(marks, out)
"""


def test_under_dist_loadgroup_a_scoped_block_is_one_xdist_group(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """The marks xdist's ``loadgroup`` sends to one worker (xdist 3.8 writes the group
    into the node id, which pytest 9.2 no longer lets it do: its scheduler then sees no
    group, hence --dist loadscope in the test above)."""
    store = str(tmp_path / "store")
    record_scoped_suite(pytester, store)
    pytester.makeconftest(MARKS)
    args = [f"--cache-url={store}", "--num-shards=1", "--shard-order=duration"]
    pytester.runpytest_subprocess(*args, "-n", "2", "--dist", "loadgroup").assert_outcomes(
        passed=12
    )
    for worker in ("gw0", "gw1"):
        marks = json.loads((pytester.path / f"marks-{worker}.json").read_text())
        assert {t: m for t, m in marks.items() if m} == {t: [["test_db.py"]] for t in DATABASE}


def worker_of(result: pytest.RunResult) -> dict[str, set[str]]:
    """Per test file, the xdist workers a ``-v`` run reports running its tests."""
    workers: dict[str, set[str]] = {}
    for line in result.stdout.lines:
        match = _WORKER_RAN.search(line)
        if match:
            workers.setdefault(match[2].split("::")[0], set()).add(match[1])
    return workers


def test_a_bad_shard_order_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("-p", "no:randomly", "--num-shards=1", "--shard-order=fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
