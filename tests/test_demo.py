"""The README's first command: the end-to-end demo runs and shows what it claims.

Durations vary from run to run, so the assertions hold on what the demo's sleeps decide:
which tests each shard runs (and the sleeps they add up to), never measured times.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


def section(out: str, heading: str) -> str:
    """The demo's output under one heading, with its line breaks and indents folded to
    single spaces (long lines are wrapped)."""
    start = out.index(f"\n== {heading}")
    end = out.find("\n== ", start + 1)
    return " ".join(out[start : end if end != -1 else len(out)].split())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The demo's output and its kept directory, from one run (it takes half a minute)."""
    workdir = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, str(DEMO), "--keep", str(workdir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return result.stdout, workdir


@pytest.mark.slow
def test_lf_sees_every_shards_failures_and_a_fix_clears_them(demo: tuple[str, Path]) -> None:
    out, workdir = demo
    # Run 1 records both failures, from two shards.
    run_1 = section(out, "Run 1:")
    assert "still failing: ['test_cart.py::test_total', 'test_search.py::test_fuzzy']" in run_1
    # Run 2: fresh runners with swapped files rerun exactly the other shard's failure.
    run_2 = section(out, "Run 2:")
    assert (
        "shard A $ pytest --cache-url=$STORE --cache-shard=A --lf test_users.py test_search.py "
        "-> 1 failed, 3 deselected in "
    ) in run_2
    assert (
        "shard B $ pytest --cache-url=$STORE --cache-shard=B --lf test_cart.py test_prices.py "
        "-> 1 failed, 3 deselected in "
    ) in run_2
    # Run 3: the fix seen on one shard clears the failure for all.
    run_3 = section(out, "Run 3:")
    assert "--cache-shard=B test_cart.py test_prices.py -> 7 passed in " in run_3
    assert "still failing: ['test_search.py::test_fuzzy']" in run_3
    # Run 4: --lf reruns only what is still failing; a shard with none runs everything.
    run_4 = section(out, "Run 4:")
    assert "--cache-shard=A --lf test_cart.py test_prices.py -> 7 passed in " in run_4
    assert "--cache-shard=B --lf test_users.py test_search.py -> 1 failed, 3 deselected" in run_4
    # Every runner started from a copy of a project that never had a .pytest_cache.
    assert not (workdir / "project" / ".pytest_cache").exists()
    assert (workdir / "shared-store").is_dir()


@pytest.mark.slow
def test_shards_split_by_duration_and_a_rerun_splits_as_its_ci_run_did(
    demo: tuple[str, Path],
) -> None:
    out, _workdir = demo
    # Runs 1-4 recorded every test's duration: run 5's first shard stores them as the run's
    # split plan, and LPT puts ranking (0.6 s) alone, the other 13 tests (0.45 s) together.
    run_5 = section(out, "Run 5:")
    assert "shard 1/2 (--shard-id=0): 1 test(s), 1 with a recorded duration" in run_5
    assert "shard 2/2 (--shard-id=1): 13 test(s), 13 with a recorded duration" in run_5
    assert run_5.count("split plan of CI run 5, written by this shard") == 1
    assert run_5.count("split plan of CI run 5, from the store") == 1
    assert "shard 1/2: 1 test, 0.60 s of sleep" in run_5
    assert "shard 2/2: 13 tests, 0.45 s of sleep" in run_5
    # The final job folds the durations of runs 1-5 (two shards each) into the base.
    compact = section(out, "The workflow's final job")
    assert "$ cachekit compact --url=$STORE --prefix=v2/local/local" in compact
    assert "stats/durations: folded 10 part(s)" in compact
    # The rerun of shard 2/2 is CI run 5 still: its plan, the same 13 tests.
    rerun = section(out, "Run 5 again:")
    assert "13 with a recorded duration (0.5 s recorded); split plan of CI run 5, from" in rerun
    assert "shard 2/2 again: 13 tests, 0.45 s of sleep" in rerun
    run_6 = section(out, "Run 6:")
    assert run_6.count("split plan of CI run 6, written by this shard") == 1
    assert "--shard-id=0 cachekit: shard 1/2 (--shard-id=0): 1 test(s)" in run_6
    assert "-> 1 passed, 13 deselected in " in run_6  # ranking passes; fuzzy fails on 1
    assert "-> 1 failed, 12 passed, 1 deselected in " in run_6
    recap = section(out, "Recap")
    assert "shards by duration (run 5): 1 test (0.60 s) and 13 tests (0.45 s)" in recap
    assert "rerun of shard 2/2 (run 5): 13 tests (0.45 s)" in recap
    assert "shards of run 6: 1 test (0.60 s) and 13 tests (0.45 s)" in recap


@pytest.mark.slow
def test_stats_summary_shows_the_latest_run_its_failure_and_slowest_test(
    demo: tuple[str, Path],
) -> None:
    out, _workdir = demo
    stats = section(out, "The statistics summary")
    assert "$ cachekit stats summary --url=$STORE --top=3" in stats
    assert "run 6 FILE TESTS FAILURES ERRORS SKIPPED SUCCESSES TIME" in stats  # both shards
    assert " total 14 1 0 0 13 " in stats
    assert (
        "failed (1): test_search.py::test_fuzzy failed: "
        "AssertionError: fuzzy is broken in shop/search.py"
    ) in stats
    slowest = r"slowest \(3\): test_search.py::test_ranking \S+s test_search.py::test_fuzzy \S+s "
    assert re.search(slowest + r"test_prices.py::test_tax", stats)


@pytest.mark.slow
def test_skip_passed_skips_unchanged_code_and_reruns_what_a_change_affects(
    demo: tuple[str, Path],
) -> None:
    out, _workdir = demo
    # Run 7 records passes: nothing was recorded before, so everything runs.
    run_7 = section(out, "Run 7:")
    assert run_7.count("; 0 passed before (cached)") == 2
    assert "-> 1 failed, 12 passed, 1 deselected in " in run_7
    # Run 8, same code: 13 tests cached, only the failing one runs.
    run_8 = section(out, "Run 8:")
    assert "-> 13 deselected, 1 cached in " in run_8
    assert "-> 1 failed, 1 deselected, 12 cached in " in run_8
    assert run_8.endswith("ran: test_search.py::test_fuzzy")  # and nothing else
    # Run 9: shop/search.py changed; only test_search.py's four tests run again.
    run_9 = section(out, "Run 9:")
    assert "-> 1 passed, 13 deselected in " in run_9
    assert "-> 3 passed, 1 deselected, 10 cached in " in run_9
    assert (
        "ran: test_search.py::test_exact, test_search.py::test_fuzzy, "
        "test_search.py::test_paging, test_search.py::test_ranking "
    ) in run_9
    assert "still failing: []" in run_9
    recap = section(out, "Recap")
    assert "skip-passed, same code: 13 cached, ran test_search.py::test_fuzzy" in recap
    assert "skip-passed, search fixed: 10 cached, ran 4 tests of test_search.py" in recap
