"""PyTorch-sized suites: one shard's run against a namespace of 500,000 tests from 200 shards.

Why: the flagship users run hundreds of thousands of tests over hundreds of CI shards.
What one shard pays for the shared cache must follow what changed, not what exists, so
this benchmark builds such a namespace the way CI does and measures what a shard, and
the final job's ``cachekit merge`` and ``compact``, cost against it. Targets (issue 12):

- a shard's whole pytest run with the plugin on a local-directory store: median wall at
  most 1.05x pytest's built-in cache (``-p no:cachekit``), peak RSS at most +64 MiB;
- the same on S3 (moto's server) through the 50 ms-per-request latency proxy: at most
  1.10x;
- ``cachekit merge`` and ``cachekit compact`` of the 200 shards' uncompacted parts through
  the proxy: under 10 s each;
- no run warns (any "cachekit: ..." warning means the run degraded) and every run reports
  its shard's expected outcome.

The namespace is built through the product's own write path: real pytest runs with the
plugin (`scale_suite` generates ``shard_000/`` ... , 25 files of one parametrized test
per shard, ~0.2% failing by seed), each shard on a fresh runner (`scale_suite.run_shard`)
and on its own directory, two at a time, into a local-directory store. Run 1 lets the
store compact as the plugin does (default ``cache_compact_threshold``), then its final
job runs ``cachekit compact`` as a workflow's does; run 2, the steady
state (half of run 1's failures fixed, a few new failures and new tests), holds
compaction back (``-o cache_compact_threshold=1000000000``) so that the final job has
the 200 shards' parts to fold. Build runs get ``--cache-timeout=300``: the build must not
degrade, whatever the code's speed. Outside CI every run is trusted (read-write), and
records test statistics (the default with a backend). The S3 namespaces are byte copies
of the local store's objects (boto3 straight to moto, not through the proxy).

Then, with moto and the proxy running: ``cachekit merge`` (``--from`` the ref prefix,
``--into`` a fresh namespace) and ``cachekit compact --prefix <namespace>`` of each S3
copy (``--repeats``), ``cachekit compact`` of the local store (no target), and the timed
rounds: each a run of one shard with the plugin on the local store (L) and on S3 (S),
each right next to a run with ``-p no:cachekit`` (B), all on fresh runners, the pairs'
order rotating and B going first in every other round (as `bench_plugin` does). Ratios
are per pair. Wall time from spawn to exit; CPU and peak RSS from ``os.wait4`` (for a
pytest run that includes the helpers it waited for).

Takes about 15 minutes at full size on two cores, so ``python -m benchmarks`` runs it
only when asked (``--only scale``). Run alone: ``python benchmarks/bench_scale.py``
(``--tests N --shards N`` for a quick run, ``--write`` saves ``results/scale.md`` and
``scale.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_merge, bench_plugin
from benchmarks.bench_remote import (
    BUCKET,
    DELAY,
    FAKE_AWS_ENV,
    Bench,
    _process_cpu_seconds,
    boto3_client,
    moto_server,
)
from benchmarks.harness import (
    WORK_DIR,
    Report,
    Target,
    busy_warning,
    fmt_seconds,
    run_alone,
    run_process,
)
from benchmarks.latency_proxy import ProxyProcess
from benchmarks.scale_report import (
    BUILD_BUDGET,
    CONCURRENCY,
    Command,
    Config,
    Findings,
    add_sections,
)
from benchmarks.scale_suite import (
    PASS_VARIABLE,
    Run,
    Shape,
    bytes_by_key,
    expected_counts,
    generate_suite,
    local_sizes,
    run_shard,
    total_tests,
)

TESTS = 500_000
SHARDS = 200
LOCAL_LIMIT = 1.05
RSS_LIMIT_MIB = 64.0
S3_LIMIT = 1.10
FOLD_LIMIT = 10.0
#: A pytest run (or command) still running after this is killed.
RUN_TIMEOUT = 900.0
NAMESPACE_ENV = {
    "CACHEKIT_REPOSITORY": "bench/scale",
    "CACHEKIT_REF": "main",
    "CACHEKIT_JOB": "tests",
}
HOLD_BACK = ("-o", "cache_compact_threshold=1000000000")
PAIRED = ("L", "S", "N")
SCRIPT_COMMAND = ".venv/bin/python benchmarks/bench_scale.py --write"
SCALE_DIR = WORK_DIR / "scale"
#: What `--reuse` keeps of a build: the store as the build left it, and the namespace.
BUILT_NAMESPACE = "namespace.json"


# -- environments and commands ----------------------------------------------------------------


def pytest_environment(run: int, run_id: str) -> dict[str, str]:
    """`bench_plugin.environment` (no CI markers, ``PYTEST_*`` or ``CACHEKIT_*`` from
    outside; fake AWS credentials) with this benchmark's namespace and CI run."""
    return {
        **bench_plugin.environment(),
        **NAMESPACE_ENV,
        "CACHEKIT_RUN_ID": run_id,
        PASS_VARIABLE: str(run),
    }


def detect_namespace() -> dict[str, Any]:
    """The namespace the runs use, as ``cachekit namespace --json`` detects it, with
    ``repository_prefix``: the ref prefix's parent, where ``merge`` writes."""
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "cachekit"), "namespace", "--json"],
        env=pytest_environment(1, "run1"),
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, Any] = json.loads(completed.stdout)
    found["repository_prefix"] = found["ref_prefix"].rpartition("/")[0]
    return found


def run_command(label: str, command: Sequence[str], log: Path) -> Command:
    """A CLI process timed from spawn to exit, its CPU and peak RSS from ``os.wait4``."""
    done = run_process(
        command, log=log, env=bench_merge.environment(), timeout=RUN_TIMEOUT, capture=True
    )
    output = done.output
    if done.exit_code:
        output += log.read_text(encoding="utf-8", errors="replace")[-500:]
    return Command(
        label, done.seconds, done.cpu_seconds, done.peak_rss_kib / 1024, done.exit_code, output
    )


def cachekit(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "cachekit"), *args, f"--timeout={BUILD_BUDGET:g}"]


# -- building the namespace -------------------------------------------------------------------


def build(config: Config, suite: Path, store: Path, logs: Path, found: Findings) -> None:
    """Every shard of every CI run through real pytest runs, ``CONCURRENCY`` at a time."""
    for number in range(1, config.passes + 1):
        start = time.perf_counter()
        found.build[number] = build_run(config, number, suite, store, logs)
        if number != config.final_pass:
            # The workflow's final job, as every CI run has one: what the next run's
            # shards start from. The final run's parts are left for the timed fold.
            compact = cachekit("compact", f"--url={store}", f"--prefix={found.namespace['prefix']}")
            env = pytest_environment(number, f"run{number}")
            subprocess.run(compact, check=True, capture_output=True, env=env)
        found.build_seconds[number] = time.perf_counter() - start


def build_run(config: Config, number: int, suite: Path, store: Path, logs: Path) -> list[Run]:
    """CI run ``number``: every shard, each on a fresh runner; the last run holds
    compaction back (see the module doc)."""
    shape = config.shape
    extra = HOLD_BACK if number == config.final_pass else ()
    env = pytest_environment(number, f"run{number}")
    done = [0]
    lock = threading.Lock()
    started = time.perf_counter()

    def one(shard: int) -> Run:
        args = [
            f"--cache-url={store}",
            f"--cache-shard={shard + 1}/{shape.shards}",
            f"--cache-timeout={BUILD_BUDGET:g}",
            *extra,
        ]
        run = run_shard(
            suite,
            logs,
            shard,
            args,
            env=env,
            label=f"run{number}-shard{shard:03d}",
            expected=expected_counts(shape, shard, number),
            timeout=RUN_TIMEOUT,
        )
        with lock:
            done[0] += 1
            if done[0] % max(1, shape.shards // 10) == 0 or done[0] == shape.shards:
                elapsed = time.perf_counter() - started
                print(
                    f"  run {number}: {done[0]}/{shape.shards} shards in {elapsed:.0f} s "
                    f"(this one {run.seconds:.2f} s)",
                    flush=True,
                )
        return run

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(one, range(shape.shards)))


def upload(store: Path, bench: Bench, prefixes: Sequence[str]) -> int:
    """Copy every object of the local store under each of ``prefixes`` of the bucket."""
    client = boto3_client(bench.moto_port)
    objects = [path for path in store.rglob("*") if path.is_file()]

    def put(item: tuple[str, Path]) -> None:
        prefix, path = item
        key = f"{bench.run_prefix}/{prefix}/{path.relative_to(store).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, [(prefix, path) for prefix in prefixes for path in objects]))
    return len(objects) * len(prefixes)


def _proxied(bench: Bench, label: str, command: list[str], log: Path) -> Command:
    """``command`` with the proxy's request counts and the server's CPU."""
    bench.proxy.reset()
    moto_cpu = _process_cpu_seconds(bench.moto_pid)
    done = run_command(label, command, log)
    done.requests = {
        **bench.proxy.stats(),
        "moto_cpu_seconds": _process_cpu_seconds(bench.moto_pid) - moto_cpu,
    }
    return done


def fold(config: Config, bench: Bench, logs: Path, found: Findings) -> None:
    """``cachekit merge`` then ``cachekit compact`` of each S3 copy, through the proxy."""
    namespace, ref_prefix = found.namespace["prefix"], found.namespace["ref_prefix"]
    for copy in range(config.repeats):
        url = bench.proxied_url(f"scale{copy}")
        into = f"{found.namespace['repository_prefix']}/merged{copy}/all/default"
        merge = cachekit("merge", f"--url={url}", f"--from={ref_prefix}/", f"--into={into}")
        found.merges.append(_proxied(bench, f"merge{copy}", [*merge, "--json"], logs / "merge.log"))
        compact = cachekit("compact", f"--url={url}", f"--prefix={namespace}", "--json")
        found.compactions.append(_proxied(bench, f"compact{copy}", compact, logs / "compact.log"))
        print(
            f"  S3 copy {copy}: merge {found.merges[-1].seconds:.2f} s, "
            f"compact {found.compactions[-1].seconds:.2f} s",
            flush=True,
        )


# -- the timed rounds ---------------------------------------------------------------------------


def variant_args(variant: str, config: Config, store: Path, s3_url: str) -> list[str]:
    shard = f"--cache-shard={config.timed_shard + 1}/{config.shape.shards}"
    if variant == "B":
        return ["-p", "no:cachekit"]
    if variant == "L":
        return [f"--cache-url={store}", shard]
    if variant == "S":
        return [f"--cache-url={s3_url}", shard]
    if variant == "N":  # what installing the plugin costs a run that shares nothing
        return []
    raise ValueError(variant)


def round_order(round_number: int) -> list[str]:
    """A pair (variant, B) per variant of `PAIRED`, rotating which pair goes first, and
    B first in every other round."""
    shift = round_number % len(PAIRED)
    variants = PAIRED[shift:] + PAIRED[:shift]
    b_first = round_number % 2 == 1
    return [name for v in variants for name in (("B", v) if b_first else (v, "B"))]


def timed_rounds(config: Config, store: Path, bench: Bench, logs: Path, found: Findings) -> None:
    s3_url = bench.proxied_url("scale0")
    env = pytest_environment(config.final_pass, "timed")
    expected = expected_counts(config.shape, config.timed_shard, config.final_pass)
    suite = suite_dir(config.shape)
    counter = [0]

    def timed(variant: str) -> Run:
        counter[0] += 1
        moto_cpu = 0.0
        if variant == "S":
            bench.proxy.reset()
            moto_cpu = _process_cpu_seconds(bench.moto_pid)
        run = run_shard(
            suite,
            logs,
            config.timed_shard,
            variant_args(variant, config, store, s3_url),
            env=env,
            label=f"timed{counter[0]:03d}-{variant}",
            expected=expected,
            timeout=RUN_TIMEOUT,
        )
        if variant == "S":
            run.requests = {
                **bench.proxy.stats(),
                "moto_cpu_seconds": _process_cpu_seconds(bench.moto_pid) - moto_cpu,
            }
        return run

    found.warm_up = [timed(variant) for variant in ("B", *PAIRED)]
    for number in range(config.rounds):
        order = round_order(number)
        done = [timed(variant) for variant in order]
        for first, second in zip(done[::2], done[1::2], strict=True):
            run, b = (second, first) if first.label.endswith("-B") else (first, second)
            variant = run.label[-1]
            found.pairs[variant].append((run, b))
        for run in done:
            found.runs[run.label[-1]].append(run)
        print(
            f"  round {number + 1}: " + ", ".join(f"{r.label[-1]} {r.seconds:.2f} s" for r in done),
            flush=True,
        )


# -- the benchmark ------------------------------------------------------------------------------


def suite_dir(shape: Shape) -> Path:
    return SCALE_DIR / f"suite-{shape.tests}-{shape.shards}"


def run(config: Config) -> Report:
    """Generate the suite, build the namespace, fold it, time the rounds, report."""
    started = time.perf_counter()
    os.environ.update(FAKE_AWS_ENV)
    shape = config.shape
    report = Report(
        f"scale: one shard of {shape.per_shard:,} tests against a namespace of "
        f"{total_tests(shape, config.final_pass):,} tests from {shape.shards} shards"
    )
    targets = _targets(config)
    report.targets += list(targets.values())
    load_before = _load()

    suite = suite_dir(shape)
    generated = generate_suite(shape, suite)
    store, logs = SCALE_DIR / "store", SCALE_DIR / "logs"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    found = Findings(namespace=detect_namespace())
    if not (config.reuse and restore_build(config, store, found)):
        print(f"  namespace {found.namespace['prefix']}; building {config.passes} CI run(s)")
        build(config, suite, store, logs, found)
        keep_build(config, store, found)
    found.bytes_before = bytes_by_key(local_sizes(store), found.namespace["prefix"])
    if config.only == "fold":
        return fold_only(config, store, logs, found, report=report, targets=targets)

    with moto_server() as (moto_port, moto_process):
        proxy = ProxyProcess(moto_port, delay=DELAY, log=WORK_DIR / "latency-proxy.log")
        try:
            bench = Bench(moto_port, moto_process.pid, proxy)
            boto3_client(moto_port).create_bucket(Bucket=BUCKET)
            upload_start = time.perf_counter()
            prefixes = [f"scale{copy}" for copy in range(config.repeats)]
            found.uploaded_objects = upload(store, bench, prefixes)
            found.upload_seconds = time.perf_counter() - upload_start
            fold(config, bench, logs, found)
            compact = cachekit("compact", f"--url={store}", f"--prefix={found.namespace['prefix']}")
            found.local_compaction = run_command(
                "compact local", [*compact, "--json"], logs / "compact-local.log"
            )
            found.bytes_after = bytes_by_key(local_sizes(store), found.namespace["prefix"])
            timed_rounds(config, store, bench, logs, found)
        finally:
            proxy.stop()

    _measure_targets(targets, found)
    add_sections(report, config, found)
    report.sections[0].notes.append(
        f"Suite {'generated' if generated else 'reused'} in "
        f"{suite.relative_to(WORK_DIR.parent.parent)}; total benchmark time "
        f"{fmt_seconds(time.perf_counter() - started)}; 1-minute load average "
        f"{load_before} before, {_load()} after."
    )
    warning = busy_warning()
    if warning:
        report.sections[0].notes.append(warning)
    return report


def built_dir(config: Config) -> Path:
    """Where `keep_build` keeps a build of ``config``'s shape and passes."""
    shape = config.shape
    return SCALE_DIR / f"built-{shape.tests}-{shape.shards}-{config.passes}"


def keep_build(config: Config, store: Path, found: Findings) -> None:
    """Keep a copy of the freshly built store, for `--reuse` (the benchmark's later
    steps compact and write into ``store``)."""
    kept = built_dir(config)
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(store, kept / "store")
    (kept / BUILT_NAMESPACE).write_text(json.dumps(found.namespace), encoding="utf-8")


def restore_build(config: Config, store: Path, found: Findings) -> bool:
    """Put back the store `keep_build` kept for this shape, if there is one for the same
    namespace; False when there is none (then the caller builds)."""
    kept = built_dir(config)
    try:
        namespace = json.loads((kept / BUILT_NAMESPACE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if namespace != found.namespace:
        return False
    shutil.copytree(kept / "store", store)
    print(f"  namespace {found.namespace['prefix']}: reusing the build in {kept}")
    return True


def fold_only(
    config: Config,
    store: Path,
    logs: Path,
    found: Findings,
    *,
    report: Report,
    targets: dict[str, Target],
) -> Report:
    """``--only fold``: the merges and compactions through the proxy, nothing else (a
    quick measure of the final job; the report says only that)."""
    with moto_server() as (moto_port, moto_process):
        proxy = ProxyProcess(moto_port, delay=DELAY, log=WORK_DIR / "latency-proxy.log")
        try:
            bench = Bench(moto_port, moto_process.pid, proxy)
            boto3_client(moto_port).create_bucket(Bucket=BUCKET)
            prefixes = [f"scale{copy}" for copy in range(config.repeats)]
            found.uploaded_objects = upload(store, bench, prefixes)
            fold(config, bench, logs, found)
            if config.profile is not None:
                profile_merge(config, bench, logs, found)
        finally:
            proxy.stop()
    report.targets = [targets["merge"], targets["compact"]]
    targets["merge"].measured = statistics.median(one.seconds for one in found.merges)
    targets["compact"].measured = statistics.median(one.seconds for one in found.compactions)
    for one in [*found.merges, *found.compactions]:
        print(
            f"  {one.label}: {one.seconds:.2f} s wall, {one.cpu_seconds:.2f} s CPU, "
            f"{one.max_rss_mib:.0f} MiB, exit {one.exit_code}, "
            f"{one.requests.get('requests', '?')} requests {one.requests.get('by_kind', {})}",
            flush=True,
        )
    return report


def profile_merge(config: Config, bench: Bench, logs: Path, found: Findings) -> None:
    """One more merge, into a namespace of its own, under cProfile in each of its threads
    (``--profile FILE``, `profile_threads`)."""
    assert config.profile is not None
    url = bench.proxied_url("scale0")
    into = f"{found.namespace['repository_prefix']}/profiled/all/default"
    ref_prefix = found.namespace["ref_prefix"]
    command = cachekit("merge", f"--url={url}", f"--from={ref_prefix}/", f"--into={into}")
    helper = Path(__file__).with_name("profile_threads.py")  # every thread, not the main one
    profiled = [sys.executable, str(helper), str(config.profile), *command[1:]]
    one = _proxied(bench, "merge profiled", [*profiled, "--json"], logs / "merge-profiled.log")
    print(f"  profiled merge: {one.seconds:.2f} s, profile in {config.profile}", flush=True)


def _targets(config: Config) -> dict[str, Target]:
    rounds = config.rounds
    return {
        "local": Target(
            f"plugin, local store (L) / built-in cache (B): median wall ratio, {rounds} pairs",
            LOCAL_LIMIT,
            "<=",
            "ratio",
        ),
        "rss": Target(
            "plugin, local store: peak RSS over the built-in cache's (medians)",
            RSS_LIMIT_MIB,
            "<=",
            " MiB",
        ),
        "s3": Target(
            f"plugin, S3 via 50 ms proxy (S) / built-in cache (B): median wall ratio, "
            f"{rounds} pairs",
            S3_LIMIT,
            "<=",
            "ratio",
        ),
        "merge": Target(
            f"cachekit merge of the {config.shape.shards} shards' parts via the proxy: "
            f"median wall of {config.repeats}",
            FOLD_LIMIT,
            "<=",
            "s",
        ),
        "compact": Target(
            f"cachekit compact of the {config.shape.shards} shards' parts via the proxy: "
            f"median wall of {config.repeats}",
            FOLD_LIMIT,
            "<=",
            "s",
        ),
        "valid": Target(
            "every run reported its shard's outcome without a cachekit warning, every "
            "command exited 0 (1 = yes)",
            1,
            ">=",
        ),
    }


def _measure_targets(targets: dict[str, Target], found: Findings) -> None:
    targets["local"].measured = found.comparison("L").median_ratio
    targets["s3"].measured = found.comparison("S").median_ratio
    rss = {v: statistics.median(run.max_rss_mib for run in found.runs[v]) for v in ("B", "L")}
    targets["rss"].measured = rss["L"] - rss["B"]
    targets["merge"].measured = statistics.median(one.seconds for one in found.merges)
    targets["compact"].measured = statistics.median(one.seconds for one in found.compactions)
    problems = _problems(found)
    targets["valid"].measured = 0.0 if problems else 1.0
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        targets["valid"].note = "; ".join(problems[:3]) + more


def _problems(found: Findings) -> list[str]:
    runs = [run for runs in found.build.values() for run in runs]
    runs += found.warm_up + [run for runs in found.runs.values() for run in runs]
    problems = [f"{run.label}: {problem}" for run in runs for problem in run.problems]
    problems += [f"{run.label}: warned: {warning}" for run in runs for warning in run.warnings]
    commands = [*found.merges, *found.compactions]
    commands += [found.local_compaction] if found.local_compaction else []
    problems += [f"{one.label}: exit code {one.exit_code}" for one in commands if one.exit_code]
    return problems


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def default_config() -> Config:
    """The issue's size: 500,000 tests from 200 shards, two CI runs."""
    return Config(Shape(TESTS, SHARDS))


def command_line(config: Config) -> str:
    """The command that reproduces a result of ``config``."""
    flags = ""
    defaults = default_config()
    if config.shape != defaults.shape:
        flags += f" --tests {config.shape.tests} --shards {config.shape.shards}"
    for name in ("passes", "rounds", "repeats"):
        if getattr(config, name) != getattr(defaults, name):
            flags += f" --{name} {getattr(config, name)}"
    return SCRIPT_COMMAND + flags


def parse(argv: list[str] | None) -> tuple[Config, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=TESTS, help="tests in the namespace")
    parser.add_argument("--shards", type=int, default=SHARDS, help="CI shards")
    parser.add_argument(
        "--passes", type=int, choices=(1, 2), default=Config.passes, help="CI runs to build"
    )
    parser.add_argument(
        "--rounds", type=int, default=Config.rounds, help="timed rounds (pairs per variant)"
    )
    parser.add_argument(
        "--repeats", type=int, default=Config.repeats, help="merge and compact repeats"
    )
    parser.add_argument("--write", action="store_true", help="also write results/scale.md/.json")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="start from the last build of this shape and passes, if kept (under "
        f"{SCALE_DIR.relative_to(WORK_DIR.parent.parent)}/built-*), instead of building",
    )
    parser.add_argument(
        "--only",
        choices=("fold",),
        help="fold: only the merges and compactions through the proxy (not with --write)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="FILE", help="with --only fold: one more merge, profiled"
    )
    args = parser.parse_args(argv)
    if args.write and (args.only or args.reuse):
        parser.error("--write records a full run: not with --only or --reuse")
    if args.profile is not None and args.only != "fold":
        parser.error("--profile needs --only fold")
    config = Config(
        Shape(args.tests, args.shards),
        args.passes,
        args.rounds,
        args.repeats,
        reuse=args.reuse,
        only=args.only,
        profile=args.profile,
    )
    return config, args.write


def main(argv: list[str] | None = None) -> int:
    config, write = parse(argv)
    report = run_alone("scale", lambda: run(config), command_line(config), write=write)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
