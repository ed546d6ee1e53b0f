"""The pytest plugin on a 20,000-test suite: whole pytest runs, with and without cachekit.

Why: the plugin replaces pytest's own cache provider, so every pytest run pays for it,
shared cache or not. The issue's targets, on a generated suite of 20,000 tests (200
files, some parametrized, a few failing), as wall time of the whole ``pytest`` process:

- the plugin on the local default (no backend) costs at most 2% over pytest's built-in
  cache (median per-round ratio <= 1.02); the built-in cache itself costs about 3.6% over
  no cache at all, which this benchmark measures too as a reference;
- the plugin with the S3 backend, through the core benchmarks' 50 ms-per-request latency
  proxy in front of moto's server, costs at most 5% over the built-in cache (<= 1.05).

Peak memory (the maximum resident set size of each pytest process) is reported as well.

Variants, each a whole ``python -m pytest -q -p no:randomly -p no:hypothesispytest ...``
subprocess in the generated suite's directory:

- A1, plugin, local default: the plugin loaded, no ``--cache-url``;
- B, built-in: ``-p no:cachekit`` (pytest's own cacheprovider);
- C, no cache at all: ``-p no:cachekit -p no:cacheprovider``;
- A2, plugin with S3: ``--cache-url=s3://...?endpoint_url=http://127.0.0.1:<proxy>``.

Every variant with a cache keeps its own ``cache_dir`` (``-o cache_dir=.cache/<name>``),
so each run starts from the warm cache that the previous run of the same variant left:
a second run of unchanged code, the common case. Before timing, the S3 store is filled
the way CI fills it: two runs of the suite as four concurrent shards (each shard its
own machine, its own ``cache_dir``), with compaction at its default threshold (10
parts), so the timed runs read and merge real parts, write their own, and the first
timed round's run brings ``cache/lastfailed`` to 10 parts and compacts it.

Timing: one warm-up run of each variant, then ``--rounds`` rounds (default 11). A round
runs each of A1, C and A2 right next to a run of B (a pair), the pairs' order rotating
from round to round and B going first in every other round. The ratios reported are the
pairs' ratios A1/B, C/B and A2/B: their median and their min-max. Pairs, not rounds:
this benchmark's machine drifts by up to 15% over tens of seconds (C/B, which has no
cachekit code at all, ranged 0.79-1.14 when each round ran the four variants once and
paired them by round), and a B run next to each variant sees the same drift. Each
process's wall time, CPU time and peak RSS come from ``os.wait4``.

Run alone: ``python benchmarks/bench_plugin.py`` (``--write`` saves
``results/plugin.md`` and ``plugin.json``, ``--profile`` writes
``results/plugin-profile.txt``: where the plugin's time goes).
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
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
)
from benchmarks.harness import (
    PROJECT_DIR,
    RESULTS_DIR,
    WORK_DIR,
    Comparison,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    run_alone,
    run_process,
)
from benchmarks.latency_proxy import ProxyProcess

COMMAND = ".venv/bin/python -m benchmarks --only plugin"
SCRIPT_COMMAND = ".venv/bin/python benchmarks/bench_plugin.py --write"

#: The confidence of the interval reported for each median ratio.
INTERVAL_CONFIDENCE = 0.9
LOCAL_LIMIT = 1.02
S3_LIMIT = 1.05
#: The built-in cache's cost over no cache at all, as the issue measured it.
REFERENCE_BUILTIN_OVER_NONE = 1.036

# -- the generated suite ---------------------------------------------------------------------

SUITE_DIR = WORK_DIR / "plugin-suite"
FILES = 200
#: Tests per file, by file index modulo 5: 100 on average, 20,000 in all.
FILE_SIZES = (60, 80, 100, 120, 140)
#: Every tenth file (index 3, 13, 23, ...) has one test that fails: 20 in all.
FAILING_EVERY = 10
FAILING_AT = 3
TOTAL_TESTS = FILES * sum(FILE_SIZES) // len(FILE_SIZES)
TOTAL_FAILING = FILES // FAILING_EVERY
#: Change when the generator changes, so an old suite in .work/ is regenerated.
SUITE_VERSION = "1"

# -- the runs --------------------------------------------------------------------------------

BASE_ARGS = ("-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:hypothesispytest")
ORDER = ("A1", "B", "C", "A2")
#: The variants timed against B, each in a pair with a B run next to it.
PAIRED = ("A1", "C", "A2")
LABELS = {
    "A1": "plugin, local default",
    "B": "built-in cache",
    "C": "no cache",
    "A2": "plugin, S3 via 50 ms proxy",
}
SHARDS = 4
POPULATE_RUNS = 2
POPULATE_TIMEOUT = 120.0
RUN_TIMEOUT = 600.0
#: Variables that make cachekit detect a CI system: the namespace must not depend on
#: where the benchmark runs.
_CI_MARKERS = ("GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "JENKINS_URL", "TF_BUILD")
_NAMESPACE_ENV = {
    "CACHEKIT_REPOSITORY": "bench/suite",
    "CACHEKIT_REF": "main",
    "CACHEKIT_JOB": "tests",
}
_SUMMARY = re.compile(r"(\d+) (passed|failed|error|errors|skipped|warnings?)\b")
#: Warnings that would mean an S3 run did not really read or write the store.
_BAD_OUTPUT = ("StoreUnavailableWarning", "CorruptValueWarning", "PytestConfigWarning")


def generate_suite(directory: Path = SUITE_DIR) -> bool:
    """Write the suite unless it is there already; True if it was (re)generated."""
    signature = f"{SUITE_VERSION} {FILES} {FILE_SIZES} {FAILING_EVERY} {FAILING_AT}"
    stamp = directory / ".generated"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == signature:
        return False
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "tests").mkdir(parents=True)
    (directory / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n", encoding="utf-8")
    for index in range(FILES):
        path = _test_file(directory, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_module_source(index), encoding="utf-8")
    stamp.write_text(signature, encoding="utf-8")
    return True


def _test_file(directory: Path, index: int) -> Path:
    return directory / "tests" / f"area{index // 20:02d}" / f"test_module{index:03d}.py"


def _module_source(index: int) -> str:
    """One test file: module functions, a class, and (every other file) parametrized
    tests; trivial bodies, so that what pytest and its cache do is what takes time."""
    size = FILE_SIZES[index % len(FILE_SIZES)]
    parametrized = size * 2 // 5 if index % 2 == 0 else 0
    stacked = parametrized // 4 * 2  # sizes x modes, two modes
    single = parametrized - stacked
    plain = size - parametrized
    functions = plain // 2
    methods = plain - functions
    failing = index % FAILING_EVERY == FAILING_AT
    lines = ['"""Generated by benchmarks/bench_plugin.py; do not edit."""', "", "import pytest", ""]
    for number in range(functions):
        expected = number * 3 + (1 if failing and number == 0 else 0)
        lines += [
            f"def test_function_{number:03d}():",
            f"    assert {number} * 3 == {expected}",
            "",
        ]
    lines += ["class TestGroup:"]
    for number in range(methods):
        lines += [
            f"    def test_method_{number:03d}(self):",
            f"        assert {number} + 1 > {number}",
        ]
    lines.append("")
    if single:
        lines += [
            f"@pytest.mark.parametrize('value', range({single}))",
            "def test_single(value):",
            "    assert value >= 0",
            "",
        ]
    if stacked:
        lines += [
            "@pytest.mark.parametrize('mode', ['fast', 'slow'])",
            f"@pytest.mark.parametrize('size', range({stacked // 2}))",
            "def test_stacked(size, mode):",
            "    assert mode in ('fast', 'slow') and size >= 0",
            "",
        ]
    return "\n".join(lines)


def environment() -> dict[str, str]:
    """The environment of every pytest run: this one, minus anything that changes what
    pytest or cachekit do (``PYTEST_*``, ``CACHEKIT_*``, CI markers, no bytecode), plus
    fake AWS credentials and a fixed cachekit namespace."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "CACHEKIT_"))
        and name not in (*_CI_MARKERS, "PYTHONDONTWRITEBYTECODE")
    }
    return {**env, **FAKE_AWS_ENV, **_NAMESPACE_ENV}


def variant_args(variant: str, s3_url: str) -> list[str]:
    """The options that make a variant, after `BASE_ARGS`."""
    if variant == "A1":
        return ["-o", "cache_dir=.cache/a1"]
    if variant == "B":
        return ["-p", "no:cachekit", "-o", "cache_dir=.cache/b"]
    if variant == "C":  # no cache_dir: without the provider the option is unknown
        return ["-p", "no:cachekit", "-p", "no:cacheprovider"]
    if variant == "A2":
        return ["-o", "cache_dir=.cache/a2", f"--cache-url={s3_url}"]
    raise ValueError(variant)


def shard_args(shard: int, s3_url: str) -> list[str]:
    """One CI shard of the suite: every ``SHARDS``-th file, its own machine's cache_dir."""
    files = [str(_test_file(Path(), index)) for index in range(FILES) if index % SHARDS == shard]
    return [
        "-o",
        f"cache_dir=.cache/shard{shard}",
        f"--cache-url={s3_url}",
        f"--cache-shard={shard + 1}/{SHARDS}",
        # Filling the store is not timed; four processes starting at once on a small or
        # busy machine can take longer than the default 5 s to import and connect.
        f"--cache-timeout={POPULATE_TIMEOUT:g}",
        *files,
    ]


@dataclass
class Run:
    """One pytest process: what it took and what it reported."""

    variant: str
    seconds: float
    cpu_seconds: float
    max_rss_kib: int
    exit_code: int
    counts: dict[str, int]
    problems: list[str] = field(default_factory=list)
    #: For S3 runs: the proxy's request counts and the moto server's CPU.
    requests: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "max_rss_mib": self.max_rss_kib / 1024,
            "exit_code": self.exit_code,
            "counts": self.counts,
            "problems": self.problems,
            "requests": self.requests,
        }


def run_pytest(
    variant: str, args: Sequence[str], *, env: dict[str, str], log: Path, python: Sequence[str] = ()
) -> Run:
    """``python [python...] -m pytest ... args`` in the suite's directory, timed with
    ``perf_counter``, its CPU and peak RSS read from ``os.wait4``; output goes to ``log``."""
    command = [sys.executable, *python, *BASE_ARGS, *args]
    done = run_process(command, log=log, env=env, timeout=RUN_TIMEOUT, cwd=SUITE_DIR)
    text = log.read_text(encoding="utf-8", errors="replace")
    last = text.strip().splitlines()[-1] if text.strip() else ""
    counts = {_singular(kind): int(n) for n, kind in _SUMMARY.findall(last)}
    run = Run(variant, done.seconds, done.cpu_seconds, done.peak_rss_kib, done.exit_code, counts)
    run.problems += [f"{word} in the output" for word in _BAD_OUTPUT if word in text]
    return run


def _ordinal(number: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(number, f"{number}th")


def _singular(kind: str) -> str:
    return kind if kind in ("passed", "failed", "skipped") else kind.rstrip("s")


def check_full_run(run: Run) -> None:
    """A whole-suite run must report exactly the generated outcome."""
    expected = {"failed": TOTAL_FAILING, "passed": TOTAL_TESTS - TOTAL_FAILING}
    found = {kind: run.counts.get(kind, 0) for kind in ("failed", "passed", "error")}
    if found != {**expected, "error": 0} or run.exit_code != 1:
        run.problems.append(f"exit code {run.exit_code}, outcome {run.counts}, expected {expected}")


# -- the benchmark ---------------------------------------------------------------------------


@dataclass
class Timings:
    """All rounds: the runs of each variant, in round order."""

    #: Every timed run of each variant (B: one per pair).
    runs: dict[str, list[Run]] = field(default_factory=lambda: {key: [] for key in ORDER})
    #: Per variant of `PAIRED`: (its run, the B run next to it), in round order.
    pairs: dict[str, list[tuple[Run, Run]]] = field(
        default_factory=lambda: {key: [] for key in PAIRED}
    )
    orders: list[list[str]] = field(default_factory=list)
    warm_up: list[Run] = field(default_factory=list)
    populate: list[Run] = field(default_factory=list)
    populate_seconds: float = 0.0
    store_before: dict[str, int] = field(default_factory=dict)
    store_after: dict[str, int] = field(default_factory=dict)

    def comparison(self, variant: str) -> Comparison:
        """``variant`` against the built-in cache, by pairs (wall seconds)."""
        return Comparison(
            f"{variant}/B",
            LABELS[variant],
            LABELS["B"],
            1,
            [run.seconds for run, _ in self.pairs[variant]],
            [b.seconds for _, b in self.pairs[variant]],
        )

    def cpu_comparison(self, variant: str) -> Comparison:
        return Comparison(
            f"{variant}/B cpu",
            LABELS[variant],
            LABELS["B"],
            1,
            [run.cpu_seconds for run, _ in self.pairs[variant]],
            [b.cpu_seconds for _, b in self.pairs[variant]],
        )

    @property
    def all_runs(self) -> list[Run]:
        timed = [run for runs in self.runs.values() for run in runs]
        return self.populate + self.warm_up + timed


def run(*, rounds: int = 11, profile: bool = False) -> Report:
    """Generate the suite, start the store, fill it, time the rounds, report."""
    started = time.perf_counter()
    os.environ.update(FAKE_AWS_ENV)
    report = Report(f"pytest plugin: whole runs of a {TOTAL_TESTS:,}-test suite")
    local, remote, valid = _targets(rounds)
    report.targets += [local, remote, valid]
    load_before = _load()
    generated = generate_suite()
    shutil.rmtree(SUITE_DIR / ".cache", ignore_errors=True)
    logs = WORK_DIR / "plugin-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    timings = _measure(rounds, profile=profile, env=environment(), logs=logs)

    local.measured = timings.comparison("A1").median_ratio
    remote.measured = timings.comparison("A2").median_ratio
    problems = [f"{run.variant}: {problem}" for run in timings.all_runs for problem in run.problems]
    valid.measured = 0.0 if problems else 1.0
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        valid.note = "; ".join(problems[:3]) + more
    _add_sections(report, timings, rounds)
    section = report.sections[0]
    section.notes.append(
        f"Suite {'generated' if generated else 'reused'} in {SUITE_DIR.relative_to(PROJECT_DIR)}; "
        f"store filled by {POPULATE_RUNS} runs x {SHARDS} concurrent shards in "
        f"{fmt_seconds(timings.populate_seconds)}; total benchmark time "
        f"{fmt_seconds(time.perf_counter() - started)}; 1-minute load average "
        f"{load_before} before, {_load()} after."
    )
    warning = busy_warning()
    if warning:
        section.notes.append(warning)
    if profile:
        section.notes.append("Profiles of one run per variant: results/plugin-profile.txt.")
    return report


def _targets(rounds: int) -> tuple[Target, Target, Target]:
    local = Target(
        f"plugin, local default (A1) / built-in cache (B): median wall ratio, {rounds} rounds",
        LOCAL_LIMIT,
        "<=",
        "ratio",
    )
    remote = Target(
        f"plugin, S3 via 50 ms proxy (A2) / built-in cache (B): median wall ratio, {rounds} rounds",
        S3_LIMIT,
        "<=",
        "ratio",
    )
    valid = Target(
        "every run reported the suite's outcome, S3 runs synced without warnings (1 = yes)",
        1,
        ">=",
    )
    return local, remote, valid


def _measure(rounds: int, *, profile: bool, env: dict[str, str], logs: Path) -> Timings:
    """Start moto and the proxy, fill the store, run the warm-up and the timed rounds."""
    timings = Timings()
    with moto_server() as (moto_port, moto_process):
        proxy = ProxyProcess(moto_port, delay=DELAY, log=WORK_DIR / "latency-proxy.log")
        try:
            bench = Bench(moto_port, moto_process.pid, proxy)
            client = boto3_client(moto_port)
            client.create_bucket(Bucket=BUCKET)
            prefix = f"{bench.run_prefix}/plugin"

            populate_start = time.perf_counter()
            timings.populate = _populate(bench.direct_url("plugin"), env, logs)
            timings.populate_seconds = time.perf_counter() - populate_start
            timings.store_before = _store_state(client, prefix)

            s3_url = bench.proxied_url("plugin")
            for variant in ORDER:
                log = logs / f"warm-up-{variant}.log"
                timings.warm_up.append(_timed_run(variant, s3_url, env, log, bench))
            print(
                "  warm-up: " + ", ".join(f"{r.variant} {r.seconds:.2f} s" for r in timings.warm_up)
            )
            for round_number in range(rounds):
                order = _round_order(round_number)
                done = []
                for position, variant in enumerate(order):
                    log = logs / f"round{round_number + 1}-{position}-{variant}.log"
                    done.append(_timed_run(variant, s3_url, env, log, bench))
                timings.orders.append(order)
                for first, second in zip(done[::2], done[1::2], strict=True):
                    run, b = (second, first) if first.variant == "B" else (first, second)
                    timings.pairs[run.variant].append((run, b))
                for one in done:
                    timings.runs[one.variant].append(one)
                print(
                    f"  round {round_number + 1}: "
                    + ", ".join(f"{r.variant} {r.seconds:.2f} s" for r in done)
                )
            timings.store_after = _store_state(client, prefix)
            if profile:
                try:
                    _write_profile(s3_url, env, logs)
                except Exception as error:  # a diagnostic: never lose the timings for it
                    print(f"profiling failed: {type(error).__name__}: {error}")
        finally:
            proxy.stop()
    return timings


def _round_order(round_number: int) -> list[str]:
    """The runs of a round: a pair (variant, B) per variant of `PAIRED`, rotating which
    pair goes first, and B first in every other round."""
    shift = round_number % len(PAIRED)
    variants = PAIRED[shift:] + PAIRED[:shift]
    b_first = round_number % 2 == 1
    return [name for v in variants for name in (("B", v) if b_first else (v, "B"))]


def _timed_run(variant: str, s3_url: str, env: dict[str, str], log: Path, bench: Bench) -> Run:
    if variant == "A2":
        bench.proxy.reset()
        moto_cpu = _process_cpu_seconds(bench.moto_pid)
    one = run_pytest(variant, variant_args(variant, s3_url), env=env, log=log)
    check_full_run(one)
    if variant == "A2":
        stats = bench.proxy.stats()
        one.requests = {
            **stats,
            "moto_cpu_seconds": _process_cpu_seconds(bench.moto_pid) - moto_cpu,
        }
        kinds: dict[str, int] = stats["by_kind"]
        if not (kinds.get("GET") or kinds.get("LIST")) or not kinds.get("PUT"):
            one.problems.append(f"S3 run did not both read and write the store: {kinds}")
    return one


def _populate(url: str, env: dict[str, str], logs: Path) -> list[Run]:
    """Fill the store as CI does: whole runs of the suite as concurrent shards."""
    runs: list[Run] = []
    for number in range(POPULATE_RUNS):

        def shard_run(shard: int, number: int = number) -> Run:
            log = logs / f"populate{number}-shard{shard}.log"
            return run_pytest(f"shard{shard}", shard_args(shard, url), env=env, log=log)

        with ThreadPoolExecutor(SHARDS) as pool:
            runs += pool.map(shard_run, range(SHARDS))
    for one in runs:
        if one.exit_code not in (0, 1) or not one.counts.get("passed"):
            one.problems.append(f"populating: exit code {one.exit_code}, {one.counts}")
    return runs


def _store_state(client: Any, prefix: str) -> dict[str, int]:
    """How many bases and parts the store holds for the two shared keys."""
    counts = {"lastfailed base": 0, "lastfailed parts": 0, "nodeids base": 0, "nodeids parts": 0}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            key: str = item["Key"]
            for name in ("lastfailed", "nodeids"):
                if f"/cache/{name}/@base" in key:
                    counts[f"{name} base"] += 1
                elif f"/cache/{name}/@parts/" in key:
                    counts[f"{name} parts"] += 1
    return counts


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


# -- the report ------------------------------------------------------------------------------


def _add_sections(report: Report, timings: Timings, rounds: int) -> None:
    summary = Section(
        f"Whole pytest runs, {TOTAL_TESTS:,} tests ({TOTAL_FAILING} failing), {rounds} rounds",
        [
            "variant",
            "options (besides -q -p no:randomly -p no:hypothesispytest)",
            "median wall",
            "wall min-max",
            "vs built-in: median ratio",
            f"the median's {INTERVAL_CONFIDENCE:.0%} interval",
            "ratio min-max",
            "median CPU",
            "CPU ratio (median)",
            "peak RSS (median, max)",
        ],
    )
    data: dict[str, Any] = {"variants": {}, "rounds": []}
    for variant in ORDER:
        runs = timings.runs[variant]
        walls = [run.seconds for run in runs]
        rss = [run.max_rss_kib / 1024 for run in runs]
        cpu = [run.cpu_seconds for run in runs]
        if variant == "B":
            ratio_text = interval_text = range_text = cpu_ratio = "1 (baseline)"
            ratios: list[float] = [1.0] * len(runs)
            interval = None
        else:
            comparison = timings.comparison(variant)
            ratios = comparison.ratios
            ratio_text = f"{comparison.median_ratio:.3f}"
            interval = comparison.median_ratio_interval(INTERVAL_CONFIDENCE)
            interval_text = f"{interval.low:.3f}-{interval.high:.3f}"
            range_text = f"{min(ratios):.3f}-{max(ratios):.3f}"
            cpu_ratio = f"{timings.cpu_comparison(variant).median_ratio:.3f}"
        summary.rows.append(
            [
                f"{variant}: {LABELS[variant]}",
                " ".join(variant_args(variant, "s3://…")).replace(".cache/", "") or "—",
                fmt_seconds(statistics.median(walls)),
                f"{min(walls):.2f}-{max(walls):.2f} s",
                ratio_text,
                interval_text,
                range_text,
                fmt_seconds(statistics.median(cpu)),
                cpu_ratio,
                f"{statistics.median(rss):.0f} MiB, {max(rss):.0f} MiB",
            ]
        )
        data["variants"][variant] = {
            "label": LABELS[variant],
            "args": variant_args(variant, "s3://bucket/prefix?endpoint_url=..."),
            "median_seconds": statistics.median(walls),
            "median_cpu_seconds": statistics.median(cpu),
            "median_ratio_vs_builtin": statistics.median(ratios),
            "median_ratio_interval": None if interval is None else asdict(interval),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "median_max_rss_mib": statistics.median(rss),
            "max_max_rss_mib": max(rss),
            "runs": [run.as_dict() for run in runs],
        }
    c_over_b = timings.comparison("C").median_ratio
    some_interval = timings.comparison("A2").median_ratio_interval(INTERVAL_CONFIDENCE)
    rank, coverage = some_interval.rank, some_interval.coverage
    summary.notes += [
        f"Suite: {FILES} files in 10 directories, {TOTAL_TESTS:,} tests ({min(FILE_SIZES)}-"
        f"{max(FILE_SIZES)} per file), 40% of the tests of every other file parametrized, "
        f"{TOTAL_FAILING} failing deterministically; one-line test bodies.",
        "Each row is a whole `python -m pytest` process in the suite's directory, timed "
        "from spawn to exit; CPU (user+system) and peak RSS from `os.wait4`. Ratios are "
        "per pair: each run of A1, C and A2 with the built-in (B) run right next to it; "
        "the pairs' order rotates each round and B goes first in every other round.",
        "Every variant with a cache keeps its own `cache_dir`, warm from its previous run "
        "(a second run of unchanged code).",
        f"Interval: where the true median ratio lies with at least "
        f"{INTERVAL_CONFIDENCE:.0%} confidence, from the pairs alone (distribution-free: "
        f"the {_ordinal(rank)} smallest and largest of {rounds} pair ratios; "
        f"{coverage:.1%} coverage). A noisy machine widens it.",
        f"No cache at all (C) / built-in (B): median {c_over_b:.3f}, i.e. the built-in "
        f"cache costs {(1 / c_over_b - 1) * 100:.1f}% over none (the issue measured about "
        f"{(REFERENCE_BUILTIN_OVER_NONE - 1) * 100:.1f}%).",
    ]
    for index, order in enumerate(timings.orders):
        pairs = {variant: timings.pairs[variant][index] for variant in PAIRED}
        data["rounds"].append(
            {
                "order": order,
                "seconds": {
                    variant: {"run": run.seconds, "B": b.seconds}
                    for variant, (run, b) in pairs.items()
                },
                "ratios": {f"{v}/B": run.seconds / b.seconds for v, (run, b) in pairs.items()},
            }
        )
    data["warm_up"] = [run.as_dict() for run in timings.warm_up]
    summary.data = data
    report.sections.append(summary)

    per_round = Section(
        "Per round (wall time of each pair, variant / B; order as run)",
        ["round", "order", "A1 / B", "C / B", "A2 / B", "A1/B", "C/B", "A2/B"],
    )
    for index, entry in enumerate(data["rounds"]):
        seconds = entry["seconds"]
        ratios_of_round = entry["ratios"]
        per_round.rows.append(
            [
                str(index + 1),
                " ".join(entry["order"]),
                *(f"{seconds[v]['run']:.2f} / {seconds[v]['B']:.2f} s" for v in PAIRED),
                *(f"{ratios_of_round[f'{v}/B']:.3f}" for v in PAIRED),
            ]
        )
    report.sections.append(per_round)

    s3 = Section(
        "The S3 runs (A2): requests through the proxy, per run",
        ["round", "wall", "requests", "by kind", "connections", "moto CPU"],
    )
    for index, one in enumerate(timings.runs["A2"]):
        requests = one.requests
        s3.rows.append(
            [
                str(index + 1),
                fmt_seconds(one.seconds),
                str(requests.get("requests", "?")),
                ", ".join(f"{k} {n}" for k, n in requests.get("by_kind", {}).items()),
                str(requests.get("connections", "?")),
                fmt_seconds(requests.get("moto_cpu_seconds", 0.0)),
            ]
        )
    s3.notes += [
        f"Store before the timed runs (after {POPULATE_RUNS} runs x {SHARDS} shards, "
        f"compaction at its default threshold, and before the warm-up): "
        + ", ".join(f"{k} {n}" for k, n in timings.store_before.items())
        + "; after: "
        + ", ".join(f"{k} {n}" for k, n in timings.store_after.items())
        + ".",
        "Every S3 run reads the merged `cache/lastfailed` and `cache/nodeids` at start-up "
        f"and writes its own `cache/lastfailed` part ({TOTAL_TESTS:,} observations) at the "
        "end; a run that brings a key to 10 parts also compacts it (the extra LIST, GET, "
        "PUT and DELETE requests).",
    ]
    s3.data = {"store_before": timings.store_before, "store_after": timings.store_after}
    report.sections.append(s3)


# -- profiling -------------------------------------------------------------------------------


def _write_profile(s3_url: str, env: dict[str, str], logs: Path) -> None:
    """Where the plugin's time goes: cProfile of one warm run of B, A1 and A2 (cachekit's
    own functions, and the functions whose time grew most against B), and what importing
    the S3 stack does to pytest's log capturing, which walks every logger for each test
    phase."""
    text = io.StringIO()
    profiles: dict[str, dict[Any, Any]] = {}
    for variant in ("B", "A1", "A2"):
        output = logs / f"profile-{variant}.prof"
        one = run_pytest(
            variant,
            variant_args(variant, s3_url),
            env=env,
            log=logs / f"profile-{variant}.log",
            python=("-m", "cProfile", "-o", str(output)),
        )
        stats = pstats.Stats(str(output), stream=text)
        profiles[variant] = getattr(stats, "stats", {})
        total = float(getattr(stats, "total_tt", 0.0))
        ours = _own_seconds(profiles[variant])
        text.write(
            f"==== {variant} ({LABELS[variant]}): wall {one.seconds:.2f} s under cProfile, "
            f"profiled {total:.2f} s, of it in cachekit's own functions (tottime) "
            f"{ours:.3f} s ====\n"
        )
        if variant != "B":
            stats.sort_stats("cumulative").print_stats(r"cachekit", 20)
    for variant in ("A1", "A2"):
        text.write(f"==== {variant} against B: the 20 functions whose own time grew most ====\n")
        text.write("  +seconds  calls (variant, B)  function\n")
        for grown, calls, calls_b, name in _growth(profiles[variant], profiles["B"])[:20]:
            text.write(f"  {grown:+8.3f}  {calls:>8} {calls_b:>8}  {name}\n")
    text.write("==== garbage collection in one run (gc.callbacks), and objects it tracks ====\n")
    diagnostics = logs / "diagnostics"
    diagnostics.mkdir(exist_ok=True)
    (diagnostics / "cachekit_bench_gc.py").write_text(_GC_PLUGIN, encoding="utf-8")
    for variant in ("B", "A1", "A2"):
        one = run_pytest(
            variant,
            [*variant_args(variant, s3_url), "-p", "cachekit_bench_gc"],
            env={**env, "PYTHONPATH": str(diagnostics)},
            log=logs / f"gc-{variant}.log",
        )
        found = [line for line in _read(logs / f"gc-{variant}.log") if "GC-BENCH" in line]
        text.write(f"  {variant}: wall {one.seconds:.2f} s; " + "; ".join(found) + "\n")
    text.write("==== pytest's catching_logs enter+exit (6 per test) against the loggers ====\n")
    text.write(
        subprocess.run(
            [sys.executable, "-c", _LOGGING_PROBE],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "plugin-profile.txt").write_text(text.getvalue(), encoding="utf-8")


#: A pytest plugin for the diagnostics: time in the garbage collector, and how many
#: objects it tracks once collection is done (each full collection walks all of them).
_GC_PLUGIN = """
import gc, sys, time
_spent = [0.0, 0, 0.0]
def _callback(phase, info):
    if phase == "start":
        _spent[2] = time.perf_counter()
    else:
        _spent[0] += time.perf_counter() - _spent[2]
        _spent[1] += 1
gc.callbacks.append(_callback)
_tracked = [0]
def pytest_collection_finish(session):
    _tracked[0] = len(gc.get_objects())
def pytest_unconfigure(config):
    gens = [s["collections"] for s in gc.get_stats()]
    print(f"GC-BENCH {_spent[0]:.2f} s in {_spent[1]} collections (per generation {gens}), "
          f"{_tracked[0]:,} objects tracked after collection", file=sys.stderr)
"""


def _read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


#: Times pytest's own log-capturing context (entered and left around every setup, call
#: and teardown, twice each) before and after importing the S3 stack, as A2 does.
_LOGGING_PROBE = """
import logging, time
from _pytest.logging import LogCaptureHandler, catching_logs
def probe(label):
    handler = LogCaptureHandler()
    start = time.perf_counter()
    for _ in range(20000):
        with catching_logs(handler):
            pass
    each = (time.perf_counter() - start) / 20000
    loggers = len(logging.Logger.manager.loggerDict)
    print(f"  {label}: {loggers} loggers, {each * 1e6:.2f} us per enter+exit, "
          f"{each * 120000:.2f} s per 20,000 tests (120,000 enter+exit)")
probe("pytest alone")
import cachekit_pytest.plugin, cachekit_pytest.sync.agent
probe("with the plugin and the sync agent's client imported (A1, and A2's pytest process)")
import s3fs, cachekit.stores.fsspec
probe("with s3fs imported too (what the sync agent keeps out of the pytest process)")
"""


def _growth(variant: dict[Any, Any], baseline: dict[Any, Any]) -> list[tuple[float, int, int, str]]:
    """(own seconds gained, calls, calls in the baseline, function), largest first."""
    rows = []
    for key in set(variant) | set(baseline):
        mine = variant.get(key, (0, 0, 0.0))
        theirs = baseline.get(key, (0, 0, 0.0))
        filename, line, function = key
        short = filename.split("site-packages/")[-1].split("/lib/python3")[-1]
        rows.append((mine[2] - theirs[2], mine[1], theirs[1], f"{short}:{line}({function})"))
    return sorted(rows, reverse=True)


def _own_seconds(table: dict[Any, Any]) -> float:
    """Seconds spent in functions defined in cachekit's source (not in what they call)."""
    return float(
        sum(
            entry[2]
            for (filename, _, _), entry in table.items()
            if "/cachekit/" in filename or "/cachekit_pytest/" in filename
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds after the warm-up")
    parser.add_argument("--profile", action="store_true", help="profile one run per variant")
    parser.add_argument("--write", action="store_true", help="also write results/plugin.md/.json")
    args = parser.parse_args(argv)
    report = run_alone(
        "plugin",
        lambda: run(rounds=args.rounds, profile=args.profile),
        SCRIPT_COMMAND,
        write=args.write,
    )
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
