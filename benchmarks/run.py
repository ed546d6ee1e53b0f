"""Run every core benchmark and write ``benchmarks/results/core.md`` and ``core.json``.

Why one entry point: the committed result file must say exactly how it was produced, on
what machine, and whether each target passed, so it is written by the same code that
measured, never assembled by hand. Local benchmarks run first, before the S3 server and
the proxy exist, so those processes cannot disturb the microsecond timings.

Run from the project root: ``.venv/bin/python -m benchmarks`` (or
``.venv/bin/python benchmarks/run.py``). Exits non-zero when a target fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_local, bench_remote
from benchmarks.harness import WORK_DIR, Report, machine_info, print_report, write_results

COMMAND = ".venv/bin/python -m benchmarks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-remote", action="store_true", help="local benchmarks only")
    parser.add_argument("--profile", action="store_true", help="cProfile one cachekit S3 read")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave results/ untouched"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    reports: list[Report] = [bench_local.run()]
    print_report(reports[-1])
    if not args.skip_remote:
        reports.append(bench_remote.run(profile=args.profile))
        print_report(reports[-1])
    machine = machine_info(WORK_DIR)
    machine["total_runtime"] = f"{time.perf_counter() - started:.0f} s"
    if not args.no_write:
        command = COMMAND + (" --skip-remote" if args.skip_remote else "")
        paths = write_results("core", "cachekit core benchmarks", reports, machine, command)
        print("wrote", *(str(path) for path in paths))
    for report in reports:
        for target in report.targets:
            print(f"{target.status:8} {target.name}")
    return 0 if all(report.passed for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
