"""Flaky tests told apart from broken and fixed ones, on a simulated history (issue 16).

Why: ``cachekit stats flaky`` must list the tests that passed and failed on the same
code, and no test that fails every time or was fixed by a commit, and it must do so in
bounded memory on a long history of a large suite. The target: on a simulated history of
50 CI runs with 5 flaky, 5 broken and 5 fixed tests among 500
(`benchmarks/flaky_history.py`, which ``tests/test_stats_flaky.py`` judges too), exactly
the 5 flaky are listed. The same history at ``--scale-tests`` tests (default 100,000)
shows the cost: the command's wall time and peak RSS as a whole process (``os.wait4``),
which stay bounded because runs are read one at a time and only tests that failed or
were rerun are kept (target: exactly the 5 flaky again, peak RSS <= 512 MiB).

The histories are written through the product's write path
(`cachekit.stats.runs.record_runs`, as the pytest plugin and ``stats ingest`` write) to
a local-directory store under ``benchmarks/.work/flaky-RUNSxTESTS/``, kept for a later
run with the same sizes (``--fresh`` rebuilds). ``stats flaky`` runs with ``--runs 50``
(every CI run).

Run alone: ``python benchmarks/bench_flaky.py`` (``--write`` saves
``results/flaky.md`` and ``flaky.json``), or ``python -m benchmarks --only flaky``.
Exits non-zero if a target fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.flaky_history import History, simulate
from benchmarks.harness import (
    WORK_DIR,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    run_alone,
    run_process,
)
from cachekit import LocalStore
from cachekit.ci.namespace import Namespace, detect_namespace, namespaced_cache
from cachekit.stats.flaky import find_flaky
from cachekit.stats.history import StoredRuns
from cachekit.stats.runs import record_runs

SCRIPT_COMMAND = ".venv/bin/python benchmarks/bench_flaky.py --write"
NAMESPACE = {"repository": "bench/flaky", "ref": "main", "job": "test"}
RUNS = 50
TESTS = 500
SCALE_TESTS = 100_000
MIB = 1024 * 1024
RSS_LIMIT_MIB = 512.0


def fill(history: History, *, fresh: bool) -> tuple[Path, dict[str, Any]]:
    """A store holding ``history``, written run by run (kept for a later run)."""
    directory = WORK_DIR / f"flaky-{history.ci_runs}x{history.tests}-{history.seed}"
    done = directory / "filled.json"
    if done.exists() and not fresh:
        return directory / "store", json.loads(done.read_text())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    cache = namespaced_cache(LocalStore(directory / "store"), _namespace())
    started = time.perf_counter()
    reports = cases = 0
    for run in history.runs():
        record_runs(cache, [run])
        reports += 1
        cases += len(run.cases)
    info = {"reports": reports, "cases": cases, "fill_seconds": time.perf_counter() - started}
    done.write_text(json.dumps(info))
    return directory / "store", info


def flaky_command(store: Path, log: Path) -> dict[str, Any]:
    """``cachekit stats flaky --json`` over every run, as a whole process."""
    options = [item for key, value in NAMESPACE.items() for item in (f"--{key}", value)]
    command = [sys.executable, "-m", "cachekit", "stats", "flaky", "--json"]
    command += ["--url", str(store), *options, "--runs", str(RUNS)]
    env = {name: value for name, value in os.environ.items() if not name.startswith("CACHEKIT_")}
    finished = run_process(
        command, log=log, env={**env, "CACHEKIT_TIMEOUT": "600"}, timeout=900, capture=True
    )
    if finished.exit_code != 0:
        raise RuntimeError(f"stats flaky exited {finished.exit_code}: see {log}")
    return {
        "wall": finished.seconds,
        "cpu": finished.cpu_seconds,
        "rss_mib": finished.peak_rss_kib / 1024,
        "listed": json.loads(finished.output),
    }


def judge(history: History, listed: list[dict[str, Any]]) -> dict[str, Any]:
    ids = [test["test_id"] for test in listed]
    return {
        "listed": len(ids),
        "flaky_found": len(set(ids) & history.flaky),
        "flaky_missed": sorted(history.flaky - set(ids)),
        "broken_listed": sorted(set(ids) & history.broken),
        "fixed_listed": sorted(set(ids) & history.fixed),
        "others_listed": sorted(set(ids) - history.flaky - history.broken - history.fixed),
        "wrong": len(set(ids) ^ history.flaky) + len(ids) - len(set(ids)),
    }


def ask_about(store: Path, history: History) -> dict[str, Any]:
    """The one-pass question a run asks (`find_flaky` with ``ids``): of the 15 tests that
    failed or flaked, which are flaky? In this process, for its time."""
    asked = sorted(history.flaky | history.broken | history.fixed)
    cache = namespaced_cache(LocalStore(store), _namespace())
    started = time.perf_counter()
    found = find_flaky(StoredRuns(cache), ci_runs=RUNS, ids=asked)
    return {
        "seconds": time.perf_counter() - started,
        "asked": len(asked),
        "flaky": sorted(test.test_id for test in found),
        "right": {test.test_id for test in found} == history.flaky,
    }


def _namespace() -> Namespace:
    return detect_namespace(
        {}, repository=NAMESPACE["repository"], ref=NAMESPACE["ref"], job=NAMESPACE["job"]
    )


def run(*, tests: int = TESTS, scale_tests: int = SCALE_TESTS, fresh: bool = False) -> Report:
    report = Report("Flaky tests: a simulated history with known answers")
    section = Section(
        f"`cachekit stats flaky --runs {RUNS}` on simulated histories of {RUNS} CI runs "
        "(local store)",
        [
            "tests",
            "stored reports",
            "listed",
            "flaky found",
            "broken listed",
            "fixed listed",
            "other listed",
            "wall",
            "peak RSS",
        ],
    )
    for size in (tests, scale_tests):
        if size <= 0:
            continue
        history = simulate(runs=RUNS, tests=size)
        print(f"filling {RUNS} CI runs of {size:,} tests", file=sys.stderr, flush=True)
        store, filled = fill(history, fresh=fresh)
        print(f"measuring stats flaky over {size:,} tests", file=sys.stderr, flush=True)
        measured = flaky_command(store, store.parent / "flaky.log")
        verdict = judge(history, measured.pop("listed"))
        asked = ask_about(store, history)
        section.rows.append(
            [
                f"{size:,}",
                f"{filled['reports']}",
                f"{verdict['listed']}",
                f"{verdict['flaky_found']} of {len(history.flaky)}",
                f"{len(verdict['broken_listed'])} of {len(history.broken)}",
                f"{len(verdict['fixed_listed'])} of {len(history.fixed)}",
                f"{len(verdict['others_listed'])}",
                fmt_seconds(measured["wall"]),
                f"{measured['rss_mib']:.0f} MiB",
            ]
        )
        section.notes.append(
            f"{size:,} tests: {filled['reports']} stored reports ({filled['cases']:,} cases, "
            f"{history.commits} commits, retried shards included) filled in "
            f"{filled['fill_seconds']:.0f} s; asking about the {asked['asked']} tests that "
            f"ever failed (`find_flaky(..., ids=...)`, one pass) took "
            f"{fmt_seconds(asked['seconds'])} and answered "
            f"{'the 5 flaky' if asked['right'] else 'wrongly: ' + str(asked['flaky'])}"
        )
        section.data[str(size)] = {
            "filled": filled,
            "command": measured,
            "verdict": verdict,
            "asked": asked,
        }
        report.targets.append(
            Target(
                f"{size:,} tests: tests listed wrongly or missed (of 5 flaky, 5 broken, 5 fixed)",
                0,
                "<=",
                "",
                float(verdict["wrong"]),
            )
        )
        if size == scale_tests:
            report.targets.append(
                Target(
                    f"{size:,} tests: peak RSS of `stats flaky`",
                    RSS_LIMIT_MIB,
                    "<=",
                    "MiB",
                    measured["rss_mib"],
                )
            )
    section.notes.append(
        f"each history: {RUNS} CI runs of two shards, 5 runs per commit; a flaky test fails "
        "30% of its runs (30% of those pass on a rerun), a shard with a failure is retried "
        "half the time (`benchmarks/flaky_history.py`)"
    )
    report.sections.append(section)
    warning = busy_warning()
    if warning:
        section.notes.append(warning)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=TESTS, help=f"tests ({TESTS})")
    parser.add_argument(
        "--scale-tests",
        type=int,
        default=SCALE_TESTS,
        help=f"tests of the larger history ({SCALE_TESTS:,}; 0 leaves it out)",
    )
    parser.add_argument("--fresh", action="store_true", help="refill the stores")
    parser.add_argument("--write", action="store_true", help="also write results/flaky.md/.json")
    args = parser.parse_args(argv)
    command = SCRIPT_COMMAND
    if (args.tests, args.scale_tests) != (TESTS, SCALE_TESTS):
        command += f" --tests {args.tests} --scale-tests {args.scale_tests}"
    report = run_alone(
        "flaky",
        lambda: run(tests=args.tests, scale_tests=args.scale_tests, fresh=args.fresh),
        command,
        write=args.write,
    )
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
