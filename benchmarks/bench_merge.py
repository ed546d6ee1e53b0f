"""`cachekit merge` of 256 CI shards from S3 through the 50 ms proxy, against downloading
and merging them one after another (the PyTorch approach).

Why: at the end of a sharded CI run, one job folds what every shard learnt into one
namespace for the next run (``cachekit merge --from <ref prefix> --into <namespace>``).
Teams without cachekit do it by hand: PyTorch downloads each shard's cache from S3 in
turn, unions it into the result and uploads that. On a remote store the cost is the
sequential round trips, so the issue's target is about the whole command, as a CI job runs
it, start-up included: from S3 through `latency_proxy` (50 ms per request, the core
benchmarks' link), under 5 s on this machine and at least 5x faster than the sequential
approach in the same run.

Workload: 256 shards of one CI run, spread over ``--jobs`` job namespaces (default 4, so
64 shards per namespace, as cachekit's layout puts the shards of one job and config in one
namespace; ``--jobs 256`` gives each shard a namespace of its own). Each shard holds ~390
tests of its own, 100,000 distinct node ids in all, and writes what the pytest plugin and
``cachekit stats ingest`` write, with the real writers (`cachekit.ci.namespace.Namespace` part ids,
`cachekit.Cache.write_part`): a ``cache/lastfailed`` part (an observation per test it ran,
`cachekit.values.merge.observe_outcomes`, ~0.3% failing), a ``cache/nodeids`` part and a
``stats/durations`` part. That is 768 objects, written straight to moto's server (not
through the proxy).

Variants, each a whole subprocess (both pay interpreter start-up and imports), timed from
spawn to exit, with CPU and peak RSS from ``os.wait4``, each into a fresh destination:

- A, ``cachekit merge``: the console script, ``.venv/bin/cachekit merge --url
  s3://...?endpoint_url=<proxy> --from <ref prefix>/ --into <destination> --json``;
- B, the PyTorch approach: ``python benchmarks/bench_merge.py baseline ...``: boto3
  lists the prefix, then GETs every object one after another, decodes it with
  `cachekit.values.codec`, joins it with the same strategies (`cachekit.ci.layout.STRATEGIES`) and
  uploads the result, one part per key.

Timing: `harness.interleave` (one warm-up round, then ``--rounds`` rounds, default 5,
alternating which goes first). The proxy counts each variant's requests. Afterwards every
destination written (every round, both variants) is read back and compared with the
in-memory join of the generated values: any difference fails the benchmark.

Targets: median A < 5 s; median of the per-round ratios B/A >= 5; all merged values equal.

Run alone: ``python benchmarks/bench_merge.py`` (``--rounds N``, ``--jobs N``, ``--write``
saves ``results/merge.md`` and ``merge.json``); or ``python -m benchmarks --only merge``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_remote import (
    BUCKET,
    DELAY,
    FAKE_AWS_ENV,
    Bench,
    _process_cpu_seconds,
    boto3_client,
    moto_server,
    test_ids,
)
from benchmarks.harness import (
    PROJECT_DIR,
    WORK_DIR,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    interleave,
    run_alone,
    run_process,
)
from benchmarks.latency_proxy import ProxyProcess
from cachekit import Cache, PrefixedStore, open_store
from cachekit.ci import layout
from cachekit.ci.namespace import Namespace
from cachekit.values import codec
from cachekit.values.digests import DigestSet
from cachekit.values.durations import durations_part
from cachekit.values.merge import join_all, observe_outcomes, still_failing, stored_form
from cachekit.values.objects import BASE, PARTS, new_part_id

SHARDS = 256
TESTS = 100_000
JOBS = 4
REPOSITORY = "acme/app"
REF = "pr-4"
RUN_ID = "4242"
#: When the shards finished: one run, each shard a little after the one before.
STARTED_AT = 1_760_000_000.0
FAIL_RATE = 0.003
SECONDS_LIMIT = 5.0
SPEEDUP_LIMIT = 5.0
#: Other work keeping this many cores busy during a run of A earns a warning.
CONTENTION_LIMIT = 0.25
#: The keys a shard writes, and the strategies that join them (`cachekit merge`'s own).
KEYS = (layout.LASTFAILED_KEY, layout.NODEIDS_KEY, layout.DURATIONS_KEY)
#: A whole merge that takes longer than this is killed (and fails the run).
RUN_TIMEOUT = 300.0
SCRIPT = Path(__file__).resolve()
#: Where the shards wrote: every job and config of the pull request's ref.
SOURCE = layout.ref_prefix(REPOSITORY, REF) + "/"
SCRIPT_COMMAND = ".venv/bin/python benchmarks/bench_merge.py --write"


# -- the workload ------------------------------------------------------------------------------


@dataclass
class Shard:
    """One shard's namespace and what it writes there (key -> value)."""

    namespace: Namespace
    at: float
    values: dict[str, Any]


def shard_values(
    shards: int = SHARDS, tests: int = TESTS, jobs: int = JOBS, seed: int = 4
) -> list[Shard]:
    """``shards`` shards of one CI run over ``jobs`` job namespaces, ~tests/shards each."""
    if shards % jobs:
        raise ValueError(f"{shards} shards do not split evenly over {jobs} jobs")
    rng = random.Random(seed)
    universe = test_ids(tests)
    per_job = shards // jobs
    result = []
    for number in range(shards):
        job, index = divmod(number, per_job)
        ids = sorted(universe[number * tests // shards : (number + 1) * tests // shards])
        at = STARTED_AT + number * 0.25
        failed = [test for test in ids if rng.random() < FAIL_RATE]
        passed = sorted(set(ids).difference(failed))
        namespace = Namespace(
            repository=REPOSITORY,
            ref=REF,
            job=f"test-{job}",
            shard=f"{index + 1}/{per_job}",
            run_id=RUN_ID,
        )
        values = {
            layout.LASTFAILED_KEY: observe_outcomes(failed=failed, passed=passed, at=at),
            # As a shard that did not read the store's ids writes them: 8-byte digests.
            layout.NODEIDS_KEY: layout.NODEIDS.stored(DigestSet(frozenset(ids))),
            layout.DURATIONS_KEY: durations_part(
                at, {test: round(rng.lognormvariate(-3.0, 1.5), 6) for test in ids}
            ),
        }
        result.append(Shard(namespace, at, values))
    return result


def expected_values(shards: Sequence[Shard]) -> dict[str, Any]:
    """The reference: every shard's values joined in memory, per key."""
    return {
        key: join_all(
            layout.STRATEGIES[key],
            (layout.STRATEGIES[key].check(shard.values[key]) for shard in shards),
        )
        for key in KEYS
    }


def populate(url: str, shards: Sequence[Shard]) -> int:
    """Write every shard's parts as CI does (one part id per shard); returns objects written."""
    store = open_store(url)

    def write(shard: Shard) -> int:
        namespace = shard.namespace
        cache = Cache(
            PrefixedStore(store, namespace.prefix),
            writer=namespace.part_label,
            clock=lambda: shard.at,
        )
        part_id = namespace.new_part_id()
        for key, value in shard.values.items():
            cache.write_part(key, part_id, value)
        return len(shard.values)

    try:
        with ThreadPoolExecutor(8) as pool:
            return sum(pool.map(write, shards))
    finally:
        store.close()


# -- the baseline: the PyTorch approach, run as its own process --------------------------------


def _logical_tail(key: str, prefix: str) -> str | None:
    """The `layout.STRATEGIES` key a listed base or part belongs to, or None."""
    name, marker, part = key.rpartition(f"/{PARTS}/")
    if not (marker and part and "/" not in part):
        name = key.removesuffix(f"/{BASE}") if key.endswith(f"/{BASE}") else ""
    for tail in layout.STRATEGIES:
        if name.startswith(prefix) and (name == tail or name.endswith("/" + tail)):
            return tail
    return None


def baseline(endpoint_url: str, bucket: str, source: str, into: str) -> dict[str, Any]:
    """List ``source``, GET each object in turn, decode, join, upload one part per key."""
    port = int(endpoint_url.rpartition(":")[2])
    client = boto3_client(port)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=source):
        keys += [item["Key"] for item in page.get("Contents", [])]
    merged = {tail: strategy.empty() for tail, strategy in layout.STRATEGIES.items()}
    fetched = 0
    for key in sorted(keys):
        tail = _logical_tail(key, source)
        if tail is None:
            continue
        envelope = codec.decode(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        fetched += 1
        assert isinstance(envelope, dict)
        strategy = layout.STRATEGIES[tail]
        merged[tail] = strategy.join(merged[tail], strategy.check(envelope["value"]))
    part_id = new_part_id("baseline")
    written = []
    for tail, value in merged.items():
        strategy = layout.STRATEGIES[tail]
        if value == strategy.empty():
            continue
        stored = stored_form(strategy, value)
        body = codec.encode({"value": stored, "written_at": time.time(), "writer": "baseline"})
        key = f"{into}/{tail}/{PARTS}/{part_id}"
        client.put_object(Bucket=bucket, Key=key, Body=body)
        written.append(key)
    return {"listed": len(keys), "fetched": fetched, "written": written}


# -- running the two variants --------------------------------------------------------------


@dataclass
class Run:
    """One whole merge process: what it took, and what the proxy and server saw."""

    variant: str
    destination: str
    seconds: float
    cpu_seconds: float
    max_rss_kib: int
    exit_code: int
    requests: int
    by_kind: dict[str, int]
    server_cpu: float
    proxy_cpu: float
    output: str
    #: CPU seconds that other processes on the machine used meanwhile (not ours: not this
    #: process, the merge, the server or the proxy), and the 1-minute load at the end.
    others_cpu: float = 0.0
    load: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def others_cores(self) -> float:
        """How many cores other work kept busy on average during the run."""
        return self.others_cpu / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "destination": self.destination,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "max_rss_mib": self.max_rss_kib / 1024,
            "exit_code": self.exit_code,
            "requests": self.requests,
            "by_kind": self.by_kind,
            "server_cpu_seconds": self.server_cpu,
            "proxy_cpu_seconds": self.proxy_cpu,
            "others_cpu_seconds": self.others_cpu,
            "load_1min_at_end": self.load,
            "problems": self.problems,
        }


def environment() -> dict[str, str]:
    """This environment without ``CACHEKIT_*`` (no store or namespace may leak in), with
    the fake credentials; bytecode is written, so imports are warm after the warm-up."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CACHEKIT_", "FSSPEC_")) and name != "PYTHONDONTWRITEBYTECODE"
    }
    return {**env, **FAKE_AWS_ENV}


class Runner:
    """Starts the variants' processes through the proxy, each into a fresh destination."""

    def __init__(self, bench: Bench, source: str, env: dict[str, str], logs: Path) -> None:
        self.bench = bench
        self.source = source
        self.env = env
        self.logs = logs
        self.runs: dict[str, list[Run]] = {"A": [], "B": []}
        self.cachekit = Path(sys.executable).parent / "cachekit"

    def destination(self, variant: str) -> str:
        number = len(self.runs[variant]) + 1
        return layout.namespace_prefix(REPOSITORY, f"merged-{variant.lower()}{number}", "all")

    def command(self, variant: str, destination: str) -> list[str]:
        if variant == "A":
            return [
                str(self.cachekit),
                "merge",
                f"--url={self.bench.proxied_url('merge')}",
                f"--from={self.source}",
                f"--into={destination}",
                "--json",
            ]
        return [
            sys.executable,
            str(SCRIPT),
            "baseline",
            f"--endpoint-url=http://127.0.0.1:{self.bench.proxy.port}",
            f"--bucket={BUCKET}",
            f"--from={self.bench.run_prefix}/merge/{self.source}",
            f"--into={self.bench.run_prefix}/merge/{destination}",
        ]

    def run(self, variant: str) -> Run:
        destination = self.destination(variant)
        log = self.logs / f"{variant}{len(self.runs[variant]) + 1}.log"
        self.bench.proxy.reset()
        server_cpu = _process_cpu_seconds(self.bench.moto_pid)
        proxy_cpu = _process_cpu_seconds(self.bench.proxy.pid)
        machine_cpu, own_cpu = _machine_busy_seconds(), time.process_time()
        done = run_process(
            self.command(variant, destination),
            log=log,
            env=self.env,
            timeout=RUN_TIMEOUT,
            capture=True,
        )
        output = done.output
        stats = self.bench.proxy.stats()
        one = Run(
            variant,
            destination,
            done.seconds,
            done.cpu_seconds,
            done.peak_rss_kib,
            done.exit_code,
            stats["requests"],
            stats["by_kind"],
            _process_cpu_seconds(self.bench.moto_pid) - server_cpu,
            _process_cpu_seconds(self.bench.proxy.pid) - proxy_cpu,
            output,
        )
        ours = one.cpu_seconds + one.server_cpu + one.proxy_cpu + time.process_time() - own_cpu
        one.others_cpu = max(0.0, _machine_busy_seconds() - machine_cpu - ours)
        one.load = os.getloadavg()[0]
        if one.exit_code != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").strip()[-300:]
            one.problems.append(f"exit code {one.exit_code}: {tail}")
        self.runs[variant].append(one)
        return one


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def check_destinations(url: str, runs: Sequence[Run], expected: dict[str, Any]) -> list[str]:
    """Read back what each run wrote (directly, not timed); the differences found."""
    store = open_store(url)
    problems = []
    try:
        cache = Cache(store)
        for one in runs:
            merged = cache.read_merged_many(
                {f"{one.destination}/{key}": layout.STRATEGIES[key] for key in KEYS}
            )
            for key in KEYS:
                read, strategy = merged[f"{one.destination}/{key}"], layout.STRATEGIES[key]
                if len(read.parts) != 1 or read.has_base:
                    one.problems.append(f"{key}: expected one part, found {read}")
                # Compared as stored: equal sets of ids may be held in different arrays.
                if stored_form(strategy, read.value) != stored_form(strategy, expected[key]):
                    one.problems.append(f"{key}: merged value differs from the reference join")
            problems += [f"{one.variant} {one.destination}: {p}" for p in one.problems]
    finally:
        store.close()
    return problems


# -- the benchmark ---------------------------------------------------------------------------


@dataclass
class Timings:
    """What the rounds found: every run of each variant (the first is the warm-up)."""

    runs: dict[str, list[Run]]
    objects: int
    populate_seconds: float
    problems: list[str]
    median_a_over_b: float
    commands: dict[str, list[str]]

    def timed(self, variant: str) -> list[Run]:
        return self.runs[variant][1:]

    @property
    def speedups(self) -> list[float]:
        return [
            b.seconds / a.seconds for a, b in zip(self.timed("A"), self.timed("B"), strict=True)
        ]


def run(*, rounds: int = 5, jobs: int = JOBS) -> Report:
    """Start the server and the proxy, fill the store, time the rounds, check, report."""
    started = time.perf_counter()
    os.environ.update(FAKE_AWS_ENV)
    load_before = _load()
    report = Report(f"cachekit merge of {SHARDS} shards ({TESTS:,} tests) via a 50 ms proxy")
    seconds = Target(f"cachekit merge (A): median wall, {rounds} rounds", SECONDS_LIMIT, "<=", "s")
    speedup = Target(
        "sequential download+merge (B) / cachekit merge (A): median per-round ratio",
        SPEEDUP_LIMIT,
        ">=",
        "x",
    )
    correct = Target("every merge exited 0 and wrote the reference values (1 = yes)", 1, ">=")
    report.targets += [seconds, speedup, correct]

    shards = shard_values(jobs=jobs)
    expected = expected_values(shards)
    timings = _measure(shards, expected, rounds)
    seconds.measured = statistics.median(one.seconds for one in timings.timed("A"))
    speedup.measured = statistics.median(timings.speedups)
    correct.measured = 0.0 if timings.problems else 1.0
    if timings.problems:
        more = f"; and {len(timings.problems) - 3} more" if len(timings.problems) > 3 else ""
        correct.note = "; ".join(timings.problems[:3]) + more

    section = _section(timings, expected, jobs, rounds)
    section.notes.append(
        f"Total benchmark time {fmt_seconds(time.perf_counter() - started)}; 1-minute load "
        f"average {load_before} before, {_load()} after."
    )
    warning = busy_warning() or _contention_warning(timings)
    if warning:
        section.notes.append(warning)
    report.sections.append(section)
    return report


def _contention_warning(timings: Timings) -> str | None:
    """A warning when other work took a fair share of the CPU while A ran (the 1-minute
    load at the end of a 10-minute benchmark says little about its middle)."""
    busiest = max(timings.timed("A"), key=lambda one: one.others_cores, default=None)
    if busiest is None or busiest.others_cores < CONTENTION_LIMIT:
        return None
    return (
        f"Other processes competed for CPU during the rounds (up to {busiest.others_cores:.1f} "
        f"cores' worth during a run of A, median "
        f"{statistics.median(one.others_cores for one in timings.timed('A')):.2f}): A is "
        "CPU-bound on two cores, so its times are inflated. Rerun on an idle machine before "
        "trusting a close call."
    )


def _measure(shards: Sequence[Shard], expected: dict[str, Any], rounds: int) -> Timings:
    """Start moto and the proxy, fill the store, run the rounds, read back every result."""
    logs = WORK_DIR / "merge-logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    with moto_server() as (moto_port, moto_process):
        proxy = ProxyProcess(moto_port, delay=DELAY, log=WORK_DIR / "latency-proxy.log")
        try:
            bench = Bench(moto_port, moto_process.pid, proxy)
            boto3_client(moto_port).create_bucket(Bucket=BUCKET)
            populate_start = time.perf_counter()
            objects = populate(bench.direct_url("merge"), shards)
            populate_seconds = time.perf_counter() - populate_start
            runner = Runner(bench, SOURCE, environment(), logs)
            comparison = interleave(
                "merge",
                lambda: _report_run(runner.run("A")),
                lambda: _report_run(runner.run("B")),
                a_label="cachekit merge",
                b_label="sequential download + merge",
                rounds=rounds,
                ops_per_sample=1,
                warmup_rounds=1,
            )
            every_run = [*runner.runs["A"], *runner.runs["B"]]
            problems = check_destinations(bench.direct_url("merge"), every_run, expected)
            commands = {v: _shown(runner.command(v, "<destination>")) for v in ("A", "B")}
        finally:
            proxy.stop()
    return Timings(
        runner.runs,
        objects,
        populate_seconds,
        problems,
        comparison.median_ratio,
        commands,
    )


def _section(timings: Timings, expected: dict[str, Any], jobs: int, rounds: int) -> Section:
    section = Section(
        f"Whole processes, {SHARDS} shards in {jobs} namespace(s), {timings.objects} objects, "
        f"S3 via a 50 ms-per-request proxy, {rounds} rounds",
        [
            "variant",
            "median wall",
            "wall min-max",
            "median CPU",
            "peak RSS",
            "requests (by kind)",
            "server CPU",
            "proxy CPU",
            "other work",
        ],
    )
    for variant, label in (("A", "A: cachekit merge"), ("B", "B: list + sequential GET + join")):
        runs = timings.timed(variant)
        walls = [one.seconds for one in runs]
        middle = sorted(runs, key=lambda one: one.seconds)[len(runs) // 2]
        section.rows.append(
            [
                label,
                fmt_seconds(statistics.median(walls)),
                f"{fmt_seconds(min(walls))}-{fmt_seconds(max(walls))}",
                fmt_seconds(statistics.median(one.cpu_seconds for one in runs)),
                f"{max(one.max_rss_kib for one in runs) / 1024:.0f} MiB",
                f"{middle.requests} ("
                + ", ".join(f"{kind} {count}" for kind, count in middle.by_kind.items())
                + ")",
                fmt_seconds(statistics.median(one.server_cpu for one in runs)),
                fmt_seconds(statistics.median(one.proxy_cpu for one in runs)),
                f"{statistics.median(one.others_cores for one in runs):.2f} cores",
            ]
        )
    failing = len(still_failing(expected[layout.LASTFAILED_KEY]))
    warm_a, warm_b = timings.runs["A"][0], timings.runs["B"][0]
    pairs = zip(timings.timed("A"), timings.timed("B"), strict=True)
    section.notes += [
        f"Workload: {SHARDS} shards of one CI run in {jobs} job namespace(s) under "
        f"`{SOURCE}`, each shard ~{TESTS // SHARDS} tests of its own ({TESTS:,} distinct "
        f"node ids), one part each of {', '.join(KEYS)}: {timings.objects} objects, written "
        f"by `Cache.write_part` straight to the server in "
        f"{fmt_seconds(timings.populate_seconds)}; {failing} tests failing after the merge.",
        "A: `" + " ".join(timings.commands["A"]) + "`.",
        "B: `"
        + " ".join(timings.commands["B"])
        + "`: boto3 list, then one GET per object in turn, `cachekit.values.codec.decode`, join "
        "with `cachekit.ci.layout.STRATEGIES`, one PUT per key.",
        "Wall time is from spawn to exit (start-up and imports included); CPU and peak RSS "
        "of the process from `os.wait4`; requests as counted by the proxy; server and "
        "proxy CPU from /proc; other work: the CPU the rest of the machine used during "
        "the run (/proc/stat, less all of ours) over its wall time. Rounds alternate "
        "which variant goes first, after one "
        f"warm-up round of each (A {fmt_seconds(warm_a.seconds)}, B "
        f"{fmt_seconds(warm_b.seconds)}, not counted). Each run writes into a fresh "
        "destination namespace.",
        "Per round, A / B (B/A; cores other work kept busy during A, during B): "
        + "; ".join(
            f"{fmt_seconds(a.seconds)} / {fmt_seconds(b.seconds)} ({b.seconds / a.seconds:.1f}x; "
            f"{a.others_cores:.2f}, {b.others_cores:.2f})"
            for a, b in pairs
        )
        + f". The harness's own timing (spawn to exit plus bookkeeping) gives a median A/B "
        f"of {timings.median_a_over_b:.3f}.",
        "Every destination written (warm-up included) was read back and compared with the "
        "in-memory join of the generated values: "
        + ("all equal." if not timings.problems else f"{len(timings.problems)} problem(s)."),
    ]
    section.data = {
        "jobs": jobs,
        "objects": timings.objects,
        "runs": {v: [one.as_dict() for one in timings.timed(v)] for v in ("A", "B")},
        "warm_up": {"A": warm_a.as_dict(), "B": warm_b.as_dict()},
        "speedups": timings.speedups,
    }
    return section


def _report_run(one: Run) -> None:
    print(
        f"  {one.variant}: {one.seconds:.2f} s, {one.requests} requests, "
        f"other work {one.others_cores:.2f} cores",
        flush=True,
    )


def _shown(command: list[str]) -> list[str]:
    """A command as the report shows it: paths relative, the ports left out."""
    shown = []
    for word in command:
        text = word.replace(str(PROJECT_DIR) + "/", "").replace(sys.executable, "python")
        for marker in ("endpoint_url=http://127.0.0.1:", "endpoint-url=http://127.0.0.1:"):
            head, found, _port = text.partition(marker)
            if found:
                text = f"{head}{marker}PORT"
        shown.append(text)
    return shown


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument(
        "--jobs", type=int, default=JOBS, help=f"job namespaces the {SHARDS} shards use"
    )
    parser.add_argument("--write", action="store_true", help="also write results/merge.md/.json")
    base = commands.add_parser("baseline", help="variant B alone (the benchmark runs it)")
    base.add_argument("--endpoint-url", required=True)
    base.add_argument("--bucket", required=True)
    base.add_argument("--from", dest="source", required=True)
    base.add_argument("--into", required=True)
    args = parser.parse_args(argv)
    if args.command == "baseline":
        result = baseline(args.endpoint_url, args.bucket, args.source, args.into.rstrip("/"))
        print(json.dumps(result))
        return 0
    report = run_alone(
        "merge", lambda: run(rounds=args.rounds, jobs=args.jobs), SCRIPT_COMMAND, write=args.write
    )
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
