"""Merged reads from S3 through a 50 ms loopback proxy: cachekit against the naive loop.

Why: on a remote store the cost of a read is its sequential round trips. A CI run's
start-up read of ``lastfailed`` joins every shard's part of every recent run; done the
obvious way (list, then fetch each part one after another) it takes one round trip per
part. cachekit's design promises one listing plus one *concurrent* batched fetch, and,
after `Cache.compact`, one listing plus one fetch whatever the history. This benchmark
checks both promises where they matter: against a real S3 server (moto's, in its own
process) behind `latency_proxy` adding 50 ms per request, as a CI runner sees a bucket.

Workload: 256 parts (32 runs x 8 shards), each a 2,000-entry ``lastfailed`` value built
with `cachekit.values.merge.observe_outcomes`. The 16,000 test ids are spread over the shards of
a run, and the split drifts from run to run (as duration-balanced sharding does), so
parts of different runs overlap partially; a few tests fail for good, a block breaks and
is fixed later, and some flake.

Targets (from the issue):
- ``read_merged`` of the 256 parts is at least 5x faster than the baseline (list, then
  get each object sequentially with boto3, decode, join with ``LASTFAILED``);
- after ``Cache.compact()`` the same read makes at most 2 requests (listing + fetch).

The cachekit side needs ``cachekit.stores.fsspec`` (``open_store("s3://...")``); without
it the baseline still runs and the cachekit targets are reported NOT RUN.

Run alone: ``python benchmarks/bench_remote.py`` (``--write`` saves ``results/remote.*``,
``--profile`` adds a cProfile of one cachekit read, every thread included).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    RESULTS_DIR,
    WORK_DIR,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    machine_info,
    print_report,
    write_results,
)
from benchmarks.latency_proxy import LOOPBACK, ProxyProcess
from cachekit import Cache, CacheStore, MemoryStore, Merged, open_store
from cachekit.values import codec
from cachekit.values.merge import LASTFAILED, observe_outcomes, still_failing
from cachekit.values.objects import BASE, PARTS

#: Static fake credentials, and no probing of cloud metadata addresses, ever.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
BUCKET = "cachekit-bench"
CACHE_KEY = "bench/lastfailed"
DELAY = 0.050
SPEEDUP_LIMIT = 5.0
COMPACTED_REQUEST_LIMIT = 2
#: The cachekit timings are of a store that has already made one request (its session,
#: credentials and connection pool set up), like a store in the middle of a run; the
#: baseline's boto3 client likewise. A cold first read is reported separately.
_WARM_UP_KEY = "bench/warm-up-absent"


# -- the workload ------------------------------------------------------------------------------


def test_ids(count: int) -> list[str]:
    """Plausible pytest node ids: areas, modules, classes, parametrized tests."""
    ids = []
    for i in range(count):
        area, module, test = i // 1600, (i // 40) % 40, i % 40
        param = f"[case{test % 7}-{'fast' if test % 3 else 'slow'}]" if test % 4 == 0 else ""
        ids.append(
            f"tests/area{area:02d}/test_module{module:02d}.py::TestGroup{test // 10}"
            f"::test_behaviour_{test:02d}{param}"
        )
    return ids


def lastfailed_parts(
    parts: int = 256, entries: int = 2000, shards: int = 8, seed: int = 6423
) -> list[tuple[str, dict[str, Any]]]:
    """``(part_id, value)`` for ``parts // shards`` runs of ``shards`` shards each."""
    rng = random.Random(seed)
    universe = test_ids(entries * shards)
    always_failing = set(rng.sample(universe, 10))
    broken_for_a_while = set(rng.sample(universe, 30))
    runs = parts // shards
    result = []
    for run in range(runs):
        at = 1_760_000_000.0 + run * 1800.0
        # The split drifts between runs, as duration-balanced sharding moves tests.
        offset = (run * 211) % len(universe)
        ordered = universe[offset:] + universe[:offset]
        for shard in range(shards):
            ids = ordered[shard * entries : (shard + 1) * entries]
            failed = {i for i in ids if i in always_failing or rng.random() < 0.003}
            if runs // 4 <= run < runs // 2:
                failed |= broken_for_a_while.intersection(ids)
            passed = [i for i in ids if i not in failed]
            value = observe_outcomes(failed=sorted(failed), passed=passed, at=at)
            result.append((f"{int(at * 1e9):020d}-shard{shard}-run{run:04d}", value))
    return result


def encode_parts(parts: list[tuple[str, dict[str, Any]]]) -> dict[str, bytes]:
    """The exact bytes `Cache.write_part` stores for each part, by store key."""
    memory = MemoryStore()
    cache = Cache(memory, writer="bench", clock=lambda: 1_760_000_000.0)
    keys = [cache.write_part(CACHE_KEY, part_id, value) for part_id, value in parts]
    return {key: entry.data for key, entry in memory.get_many(keys).items()}


# -- processes: the S3 server and the proxy -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def moto_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """moto's standalone S3 server in its own process on a free loopback port."""
    port = _free_port()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with open(WORK_DIR / "moto-server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **FAKE_AWS_ENV},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start; see {log.name}") from None
                time.sleep(0.1)
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _process_cpu_seconds(pid: int) -> float:
    """User plus system CPU of another process, from /proc (0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Findings:
    """What the run found so far: the measurements, notes, and the targets to fill in."""

    speedup: Target
    after_compact: Target
    correct: Target
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Measurement:
    """One timed read: wall time, requests seen by the proxy, and CPU on both ends."""

    label: str
    seconds: float
    requests: int
    by_kind: dict[str, int]
    client_cpu: float
    server_cpu: float
    proxy_cpu: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_per_request(self) -> float:
        return (self.client_cpu + self.server_cpu) / max(self.requests, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seconds": self.seconds,
            "requests": self.requests,
            "by_kind": self.by_kind,
            "client_cpu_seconds": self.client_cpu,
            "server_cpu_seconds": self.server_cpu,
            "proxy_cpu_seconds": self.proxy_cpu,
            "cpu_per_request_ms": self.cpu_per_request * 1e3,
            **self.extra,
        }


class Bench:
    """The running server and proxy, and a way to measure one operation through them."""

    def __init__(self, moto_port: int, moto_pid: int, proxy: ProxyProcess) -> None:
        self.moto_port = moto_port
        self.moto_pid = moto_pid
        self.proxy = proxy
        self.run_prefix = f"run-{uuid.uuid4().hex[:8]}"

    def direct_url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{self.run_prefix}/{prefix}?endpoint_url=http://{LOOPBACK}:{self.moto_port}"

    def proxied_url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{self.run_prefix}/{prefix}?endpoint_url=http://{LOOPBACK}:{self.proxy.port}"

    def measure(self, label: str, function: Callable[[], Any]) -> tuple[Measurement, Any]:
        self.proxy.reset()
        client_cpu, server_cpu = time.process_time(), _process_cpu_seconds(self.moto_pid)
        proxy_cpu = _process_cpu_seconds(self.proxy.pid)
        start = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - start
        client_cpu = time.process_time() - client_cpu
        server_cpu = _process_cpu_seconds(self.moto_pid) - server_cpu
        proxy_cpu = _process_cpu_seconds(self.proxy.pid) - proxy_cpu
        stats = self.proxy.stats()
        measurement = Measurement(
            label, seconds, stats["requests"], stats["by_kind"], client_cpu, server_cpu, proxy_cpu
        )
        return measurement, result


def boto3_client(port: int) -> Any:
    import boto3  # type: ignore[import-untyped]  # noqa: PLC0415 (after the fake credentials)
    from botocore.config import Config  # noqa: PLC0415

    config = Config(retries={"max_attempts": 1}, max_pool_connections=32)
    return boto3.client("s3", endpoint_url=f"http://{LOOPBACK}:{port}", config=config)


def baseline_read(client: Any, prefix: str) -> dict[str, Any]:
    """The naive merged read: list, then fetch and join each object, one after another."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    merged = LASTFAILED.empty()
    for key in sorted(keys):
        envelope = codec.decode(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert isinstance(envelope, dict)
        merged = LASTFAILED.join(merged, LASTFAILED.check(envelope["value"]))
    return merged


def fsspec_store_problem() -> str | None:
    """Why the cachekit S3 store cannot be used yet, or None when it can."""
    try:
        import cachekit.stores.fsspec  # noqa: F401, PLC0415
    except Exception as error:  # any failure means "not ready"
        return f"cachekit.stores.fsspec not importable: {type(error).__name__}: {error}"
    return None


def profile_all_threads(function: Callable[[], Any]) -> tuple[Any, str]:
    """cProfile ``function`` in this thread *and* in fsspec's I/O thread, merged.

    s3fs runs every request on fsspec's event loop in a separate thread; a profile of the
    calling thread alone would show only the time spent waiting for it.
    """
    import fsspec.asyn  # noqa: PLC0415

    loop = fsspec.asyn.get_loop()
    io_profile = cProfile.Profile()
    main_profile = cProfile.Profile()
    enabled = threading.Event()
    disabled = threading.Event()

    def switch(enable: bool) -> None:
        if enable:
            io_profile.enable()
            enabled.set()
        else:
            io_profile.disable()
            disabled.set()

    loop.call_soon_threadsafe(switch, True)
    enabled.wait(5)
    main_profile.enable()
    try:
        result = function()
    finally:
        main_profile.disable()
        loop.call_soon_threadsafe(switch, False)
        disabled.wait(5)
    text = io.StringIO()
    for title, profile in (("calling thread", main_profile), ("fsspec I/O thread", io_profile)):
        text.write(f"==== {title}: by total time ====\n")
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
        text.write(f"==== {title}: by cumulative time ====\n")
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(30)
    return result, text.getvalue()


def _open_warm(url: str) -> CacheStore:
    """A fresh store that has made one request, so its session and pool exist."""
    store = open_store(url)
    store.get(_WARM_UP_KEY)
    return store


# -- the benchmark -----------------------------------------------------------------------------


def run(*, repeats: int = 3, profile: bool = False) -> Report:
    """Start the server and the proxy, measure both reads, stop them, report."""
    os.environ.update(FAKE_AWS_ENV)
    report = Report("S3 through a 50 ms proxy, read_merged of 256 lastfailed parts")
    parts = lastfailed_parts()
    encoded = encode_parts(parts)
    expected = still_failing(_join_all_values(value for _, value in parts))
    found = Findings(
        speedup=Target(
            "read_merged(256 parts) >= 5x faster than sequential list+get",
            SPEEDUP_LIMIT,
            ">=",
            "x",
        ),
        after_compact=Target(
            "read_merged after compact(): requests", COMPACTED_REQUEST_LIMIT, "<=", "requests"
        ),
        correct=Target("merged values equal the baseline's (1 = yes)", 1, ">=", ""),
    )
    report.targets += [found.speedup, found.after_compact, found.correct]
    problem = fsspec_store_problem()

    with moto_server() as (moto_port, moto_process):
        proxy = ProxyProcess(moto_port, delay=DELAY, log=WORK_DIR / "latency-proxy.log")
        try:
            bench = Bench(moto_port, moto_process.pid, proxy)
            direct = boto3_client(moto_port)
            direct.create_bucket(Bucket=BUCKET)
            baseline_prefix = f"{bench.run_prefix}/baseline"
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda item: direct.put_object(
                            Bucket=BUCKET, Key=f"{baseline_prefix}/{item[0]}", Body=item[1]
                        ),
                        encoded.items(),
                    )
                )

            # Baseline: boto3 through the proxy, one request after another.
            client = boto3_client(proxy.port)
            client.head_bucket(Bucket=BUCKET)
            baseline, baseline_value = bench.measure(
                "baseline: boto3 list + 256 sequential get + join",
                lambda: baseline_read(client, f"{baseline_prefix}/{CACHE_KEY}/"),
            )
            found.measurements.append(baseline)
            baseline_ok = still_failing(baseline_value) == expected

            if problem is None:
                problem = _run_cachekit(
                    bench, parts, baseline, baseline_value, found, repeats=repeats, profile=profile
                )
            if problem is not None:
                for target in report.targets:
                    target.note = problem
        finally:
            proxy.stop()

    section = Section(
        "Remote: S3 (moto server) through a 50 ms-per-request loopback proxy",
        [
            "read",
            "time",
            "requests",
            "by kind",
            "client CPU",
            "server CPU",
            "proxy CPU",
            "CPU/request",
        ],
    )
    for measurement in found.measurements:
        section.rows.append(
            [
                measurement.label,
                fmt_seconds(measurement.seconds),
                str(measurement.requests),
                ", ".join(f"{kind} {count}" for kind, count in measurement.by_kind.items()),
                fmt_seconds(measurement.client_cpu),
                fmt_seconds(measurement.server_cpu),
                fmt_seconds(measurement.proxy_cpu),
                f"{measurement.cpu_per_request * 1e3:.1f} ms",
            ]
        )
    section.notes += [
        f"Workload: {len(parts)} parts x 2,000 entries, {sum(map(len, encoded.values())):,} "
        f"bytes stored in all; {len(expected)} tests still failing after the merge; "
        f"baseline's projection matches the reference join: {'yes' if baseline_ok else 'NO'}.",
        "CPU is user+system time of the benchmark process (client: requests, decoding and "
        "merging), of the moto server process and of the proxy process; CPU/request divides "
        "client plus server CPU by the requests counted.",
        "Times of repeated reads are medians; each repeat uses a freshly opened store that "
        "has made one warm-up request, as the baseline's boto3 client has.",
        *found.notes,
    ]
    section.data = {"measurements": [m.as_dict() for m in found.measurements]}
    warning = busy_warning()
    if warning:
        section.notes.append(warning)
    report.sections.append(section)
    return report


def _run_cachekit(
    bench: Bench,
    parts: list[tuple[str, dict[str, Any]]],
    baseline: Measurement,
    baseline_value: dict[str, Any],
    found: Findings,
    *,
    repeats: int,
    profile: bool,
) -> str | None:
    """The cachekit side; returns why it could not run, or None."""
    try:
        writer_store = open_store(bench.direct_url("cachekit"))
        writer = Cache(writer_store, writer="bench", clock=lambda: 1_760_000_000.0)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda item: writer.write_part(CACHE_KEY, *item), parts))
        writer_store.close()
    except Exception as error:  # a store under construction may fail anyhow
        return f"cachekit S3 store failed during set-up: {type(error).__name__}: {error}"

    url = bench.proxied_url("cachekit")
    values_equal = True

    cold_store = open_store(url)
    try:
        cold, cold_merged = bench.measure(
            "cachekit read_merged, cold (first request of a fresh store)",
            lambda: Cache(cold_store).read_merged(CACHE_KEY, LASTFAILED),
        )
    finally:
        cold_store.close()
    values_equal &= cold_merged.value == baseline_value

    before, equal = _repeated_reads(
        bench, url, "cachekit read_merged, 256 parts", repeats, baseline_value
    )
    values_equal &= equal
    fetch = _fetch_only(bench, url)
    found.measurements += [before, fetch, cold]
    found.speedup.measured = baseline.seconds / before.seconds
    found.notes.append(
        f"Speed-up over the baseline: {found.speedup.measured:.1f}x warm, "
        f"{baseline.seconds / cold.seconds:.1f}x cold; repeats: "
        + ", ".join(fmt_seconds(s) for s in before.extra["all_seconds"])
        + f" (requests {before.extra['all_requests']}). Of the read, the listing and "
        f"batched fetch alone take {fmt_seconds(fetch.seconds)}; decoding, checking and "
        f"joining the 512,000 entries take the remaining "
        f"~{fmt_seconds(max(before.seconds - fetch.seconds, 0))}, after the last fetch."
    )

    if profile:
        _write_profile(url)
        found.notes.append("cProfile of one warm read (both threads): results/remote-profile.txt.")

    compact_store = _open_warm(url)
    try:
        compaction, folded = bench.measure(
            "cachekit compact (fold 256 parts into the base)",
            lambda: Cache(compact_store).compact(CACHE_KEY, LASTFAILED),
        )
    except Exception as error:  # report it, and still write the other numbers
        return f"compact failed: {type(error).__name__}: {error}"
    finally:
        compact_store.close()
    compaction.extra["parts_folded"] = folded
    found.measurements.append(compaction)

    after, equal = _repeated_reads(
        bench, url, "cachekit read_merged after compact", max(repeats, 5), baseline_value
    )
    values_equal &= equal
    found.measurements.append(after)
    found.after_compact.measured = max(after.extra["all_requests"])
    found.correct.measured = 1.0 if values_equal else 0.0
    found.notes.append(
        f"compact folded {folded} parts; afterwards the read joined {after.extra['parts_read']} "
        f"parts (base present: {after.extra['has_base']}), requests per repeat "
        f"{after.extra['all_requests']}."
    )
    return None


def _repeated_reads(
    bench: Bench, url: str, label: str, rounds: int, expected: dict[str, Any]
) -> tuple[Measurement, bool]:
    """The median of ``rounds`` reads, each on a fresh warm store; and whether all were right."""
    runs = []
    all_equal = True
    for _ in range(rounds):
        cache = Cache(_open_warm(url))
        try:
            measurement, merged = bench.measure(label, functools.partial(_read, cache))
        finally:
            cache.store.close()
        all_equal &= merged.value == expected
        measurement.extra["parts_read"] = len(merged.parts)
        measurement.extra["has_base"] = merged.has_base
        runs.append(measurement)
    middle = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    middle.extra["all_seconds"] = [m.seconds for m in runs]
    middle.extra["all_requests"] = [m.requests for m in runs]
    return middle, all_equal


def _read(cache: Cache) -> Merged:
    return cache.read_merged(CACHE_KEY, LASTFAILED)


def _fetch_only(bench: Bench, url: str) -> Measurement:
    """The store calls `read_merged` makes, without decoding or merging: where time goes."""
    store = _open_warm(url)
    try:
        measurement, _ = bench.measure(
            "cachekit store.list + get_many only (no decode, no merge)",
            lambda: store.get_many([f"{CACHE_KEY}/{BASE}", *store.list(f"{CACHE_KEY}/{PARTS}/")]),
        )
    finally:
        store.close()
    return measurement


def _write_profile(url: str) -> None:
    store = _open_warm(url)
    try:
        _, text = profile_all_threads(lambda: Cache(store).read_merged(CACHE_KEY, LASTFAILED))
    finally:
        store.close()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "remote-profile.txt").write_text(text, encoding="utf-8")


def _join_all_values(values: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The reference join, in memory, to check what both reads return."""
    merged = LASTFAILED.empty()
    for value in values:
        merged = LASTFAILED.join(merged, value)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed cachekit reads per case")
    parser.add_argument("--profile", action="store_true", help="cProfile one cachekit read")
    parser.add_argument("--write", action="store_true", help="also write results/remote.md/.json")
    args = parser.parse_args(argv)
    report = run(repeats=args.repeats, profile=args.profile)
    print_report(report)
    if args.write:
        command = ".venv/bin/python benchmarks/bench_remote.py --write"
        paths = write_results("remote", report.name, [report], machine_info(), command)
        print("wrote", *paths)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
