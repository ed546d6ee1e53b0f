"""Run every benchmark: the core's into ``results/core.md`` and ``core.json``, the pytest
plugin's (`bench_plugin`) into ``results/plugin.md`` and ``plugin.json``, the test-file
keys' (`bench_fingerprint`) into ``results/fingerprint.md`` and ``fingerprint.json``,
``cachekit merge``'s (`bench_merge`) into ``results/merge.md`` and ``merge.json``,
``--skip-passed``'s (`bench_skip`) into ``results/skip.md`` and ``skip.json``, flaky tests
(`bench_flaky`) into ``results/flaky.md`` and ``flaky.json``, shards that respect scoped
fixtures (`bench_sharding`) into ``results/sharding.md`` and ``sharding.json``.

Why one entry point: the committed result file must say exactly how it was produced, on
what machine, and whether each target passed, so it is written by the same code that
measured, never assembled by hand. Local benchmarks run first, before the S3 server and
the proxy exist, so those processes cannot disturb the microsecond timings.

Run from the project root: ``.venv/bin/python -m benchmarks`` (or
``.venv/bin/python benchmarks/run.py``); ``--only plugin`` (or ``local``, ``remote``,
``merge``, ``fingerprint``, ``skip``, ``flaky``, ``sharding``, ``scale``; repeatable)
runs just those.
The plugin's benchmark runs near the end: it takes about six minutes of whole pytest
runs; the ``--skip-passed`` one, after it, about two more; the flaky tests' one, about a
minute; the sharding one, about three. The scale benchmark (`bench_scale`,
``results/scale.*``) takes about fifteen minutes, so it runs only with ``--only scale``.
Exits non-zero when a target fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    bench_fingerprint,
    bench_flaky,
    bench_local,
    bench_merge,
    bench_plugin,
    bench_remote,
    bench_scale,
    bench_sharding,
    bench_skip,
)
from benchmarks.harness import (
    WORK_DIR,
    Report,
    machine_info,
    print_report,
    run_alone,
    write_results,
)

COMMAND = ".venv/bin/python -m benchmarks"
BENCHMARKS = (
    "local",
    "remote",
    "merge",
    "fingerprint",
    "plugin",
    "skip",
    "flaky",
    "sharding",
    "scale",
)
#: What runs without ``--only``: all but the quarter-hour scale benchmark.
DEFAULT = tuple(name for name in BENCHMARKS if name != "scale")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-remote", action="store_true", help="no S3 benchmark (core)")
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        help="run only this benchmark (repeatable); plugin results go to results/plugin.*",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile one cachekit S3 read; profile one pytest run per plugin variant",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave results/ untouched"
    )
    args = parser.parse_args(argv)

    selected = set(args.only or DEFAULT)
    if args.skip_remote:
        selected.discard("remote")
    flags = "".join(f" --only {name}" for name in BENCHMARKS if name in (args.only or ()))
    flags += " --skip-remote" if args.skip_remote else ""
    flags += " --profile" if args.profile else ""

    started = time.perf_counter()
    reports: list[Report] = []
    if "local" in selected:
        reports.append(bench_local.run())
        print_report(reports[-1])
    if "remote" in selected:
        reports.append(bench_remote.run(profile=args.profile))
        print_report(reports[-1])
    if reports:
        machine = machine_info(WORK_DIR)
        machine["total_runtime"] = f"{time.perf_counter() - started:.0f} s"
        if not args.no_write:
            paths = write_results(
                "core", "cachekit core benchmarks", reports, machine, COMMAND + flags
            )
            print("wrote", *(str(path) for path in paths))
    if "merge" in selected:
        reports.append(
            run_alone("merge", bench_merge.run, COMMAND + flags, write=not args.no_write)
        )
    if "fingerprint" in selected:
        reports.append(
            run_alone(
                "fingerprint", bench_fingerprint.run, COMMAND + flags, write=not args.no_write
            )
        )
    if "plugin" in selected:
        plugin = run_alone(
            "plugin",
            lambda: bench_plugin.run(profile=args.profile),
            COMMAND + flags,
            write=not args.no_write,
        )
        reports.append(plugin)
    if "skip" in selected:  # whole runs of the plugin benchmark's suite, about two minutes
        reports.append(run_alone("skip", bench_skip.run, COMMAND + flags, write=not args.no_write))
    if "flaky" in selected:  # simulated histories of 500 and 100,000 tests: about a minute
        reports.append(
            run_alone("flaky", bench_flaky.run, COMMAND + flags, write=not args.no_write)
        )
    if "sharding" in selected:  # 2 x 3 rounds of 5 pytest runs, and a model: about 3 minutes
        reports.append(
            run_alone("sharding", bench_sharding.run, COMMAND + flags, write=not args.no_write)
        )
    if "scale" in selected:  # 500,000 tests from 200 shards: about fifteen minutes
        scale = bench_scale.default_config()
        reports.append(
            run_alone(
                "scale", lambda: bench_scale.run(scale), COMMAND + flags, write=not args.no_write
            )
        )
    for report in reports:
        for target in report.targets:
            print(f"{target.status:8} {target.name}")
    return 0 if all(report.passed for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
