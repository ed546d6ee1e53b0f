"""Where a shard's run spends the plugin's time: each pytest hook's median time with the
plugin on the local store (L) and with pytest's built-in cache (B), on `bench_scale`'s
namespace of 500,000 tests.

Why: `bench_scale` says how much slower L is than B; this says where. Every cost the
plugin adds to a run is paid inside a hook, which `hook_timer` times from outside
(nested hooks subtracted), with the garbage collector apart. The timer costs a few
microseconds a hook call in both variants, so the whole-process figures here are not
`bench_scale`'s ratio: that stays the benchmark. This is a diagnosis, written nowhere.

Runs on the build `bench_scale` keeps (``benchmarks/.work/scale/built-*``: run
``bench_scale.py`` once first): one warm-up L run (it compacts the build's held-back
parts, as `bench_scale`'s warm-up does), then ``--pairs`` B and L runs of the same
shard on fresh runners, alternating which goes first, exactly as `bench_scale` runs
them plus ``-p benchmarks.hook_timer``.

``.venv/bin/python benchmarks/scale_phases.py [--pairs 7]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_scale import (
    RUN_TIMEOUT,
    SCALE_DIR,
    default_config,
    detect_namespace,
    pytest_environment,
    restore_build,
    suite_dir,
    variant_args,
)
from benchmarks.hook_timer import OUTPUT_VARIABLE
from benchmarks.scale_report import Findings
from benchmarks.scale_suite import Run, expected_counts, run_shard

ROOT = Path(__file__).resolve().parent.parent
#: Rows shown: the hooks whose medians differ most between L and B.
SHOWN = 12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=7, help="B and L runs of each")
    args = parser.parse_args(argv)
    config = default_config()
    work = SCALE_DIR / "phases"
    shutil.rmtree(work, ignore_errors=True)
    store, logs = work / "store", work / "logs"
    logs.mkdir(parents=True)
    found = Findings(namespace=detect_namespace())
    if not restore_build(config, store, found):
        print("no kept build of the issue's shape: run benchmarks/bench_scale.py first")
        return 2
    expected = expected_counts(config.shape, config.timed_shard, config.final_pass)
    environment = {**pytest_environment(config.final_pass, "phases"), "PYTHONPATH": str(ROOT)}

    def timed(variant: str, label: str) -> tuple[Run, dict[str, Any]]:
        times = logs / f"{label}.json"
        run = run_shard(
            suite_dir(config.shape),
            logs,
            config.timed_shard,
            ["-p", "benchmarks.hook_timer", *variant_args(variant, config, store, "")],
            env={**environment, OUTPUT_VARIABLE: str(times)},
            label=label,
            expected=expected,
            timeout=RUN_TIMEOUT,
        )
        if run.problems or run.warnings:
            raise SystemExit(f"{label}: {run.problems or run.warnings} (see {logs})")
        return run, json.loads(times.read_text(encoding="utf-8"))

    timed("L", "warm-up-L")
    runs: dict[str, list[tuple[Run, dict[str, Any]]]] = {"B": [], "L": []}
    for number in range(args.pairs):
        for variant in ("B", "L") if number % 2 else ("L", "B"):
            runs[variant].append(timed(variant, f"pair{number:02d}-{variant}"))
        print(f"  pair {number + 1} of {args.pairs}", flush=True)
    print(report(runs))
    return 0


def report(runs: dict[str, list[tuple[Run, dict[str, Any]]]]) -> str:
    """A table of median milliseconds: the hooks that differ most, then the collector,
    the timed process and the whole run (spawn to exit)."""

    def median_ms(variant: str, pick: Any) -> float:
        return 1000 * statistics.median(pick(run, times) for run, times in runs[variant])

    def hook(name: str) -> Any:
        return lambda run, times: times["hooks"].get(name, [0.0, 0])[0]

    names = {name for _, times in runs["B"] + runs["L"] for name in times["hooks"]}
    rows = [(name, median_ms("B", hook(name)), median_ms("L", hook(name))) for name in names]
    rows.sort(key=lambda row: -abs(row[2] - row[1]))
    rows = rows[:SHOWN]
    rows.append(("(garbage collection)", *(median_ms(v, _collection) for v in ("B", "L"))))
    rows.append(("(timed process)", *(median_ms(v, _process) for v in ("B", "L"))))
    rows.append(("(whole run, spawn to exit)", *(median_ms(v, _wall) for v in ("B", "L"))))
    lines = [
        f"medians of {len(runs['L'])} runs each, in ms",
        f"{'hook':<36} {'B':>9} {'L':>9} {'L - B':>9}",
    ]
    lines += [f"{name:<36} {b:9.1f} {lo:9.1f} {lo - b:+9.1f}" for name, b, lo in rows]
    return "\n".join(lines)


def _collection(run: Run, times: dict[str, Any]) -> float:
    return float(times["gc"][0])


def _process(run: Run, times: dict[str, Any]) -> float:
    return float(times["process"])


def _wall(run: Run, times: dict[str, Any]) -> float:
    return run.seconds


if __name__ == "__main__":
    sys.exit(main())
