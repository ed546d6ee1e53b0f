"""The benchmarks' own small timing harness: plain Python and ``time.perf_counter``.

Why not an external benchmarking service or package: the targets here are *ratios*
between two ways of doing one thing on the same machine in the same minute, and request
counts; neither needs statistics beyond medians, and a committed result must be
reproducible with nothing but the project's own environment.

What the helpers guarantee:

- `interleave` runs A and B alternately in one process (A B, B A, A B, ...), so drift in
  the machine (page cache, CPU frequency, a noisy neighbour) hits both sides alike. Each
  round flips which side goes first, so neither always runs right after the other.
- A sample times a batch of operations and divides, so microsecond operations are not
  swamped by the timer's own resolution and overhead.
- The garbage collector is paused while sampling (as `timeit` does): a collection
  triggered by one side's allocations must not be billed to the other side.
- Results are medians (robust to the odd slow sample), and the ratio reported is the
  median of the per-round ratios A/B, the statistic interleaving makes meaningful; the
  ratio of the two medians is reported beside it.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

BENCHMARKS_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
#: Scratch space on the project's own disk (git-ignored), where a CI cache would live.
WORK_DIR = BENCHMARKS_DIR / ".work"


# -- timing ---------------------------------------------------------------------------------


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect once, then keep the collector off for the duration (as `timeit` does)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_once(function: Callable[[], object]) -> tuple[float, Any]:
    """Seconds one call takes, and what it returned."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


@dataclass(frozen=True)
class Finished:
    """A process `run_process` timed: from spawn to exit, its CPU and peak RSS as the
    kernel accounted them (``os.wait4``: the process and the children it waited for)."""

    seconds: float
    exit_code: int
    cpu_seconds: float
    peak_rss_kib: int
    #: What it printed on stdout, when ``capture`` asked for it ("" otherwise).
    output: str


def run_process(
    command: Sequence[str],
    *,
    log: Path,
    env: dict[str, str],
    timeout: float,
    cwd: Path | None = None,
    capture: bool = False,
) -> Finished:
    """Run ``command`` to its end, killed past ``timeout`` seconds. Output goes to ``log``
    (stdout and stderr), or with ``capture`` stdout is returned and stderr goes to ``log``."""
    import threading  # noqa: PLC0415 (only the process benchmarks need it)

    with open(log, "wb") as logged:
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE if capture else logged,
            stderr=logged if capture else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            output = ""
            if capture:
                assert process.stdout is not None
                output = process.stdout.read().decode("utf-8", "replace")
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        seconds,
        process.returncode,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss,
        output,
    )


@dataclass
class Comparison:
    """A versus B, interleaved: seconds per operation for each sample, and their ratios."""

    name: str
    a_label: str
    b_label: str
    ops_per_sample: int
    a_seconds: list[float] = field(default_factory=list)
    b_seconds: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.a_seconds, self.b_seconds, strict=True)]

    @property
    def a_median(self) -> float:
        return statistics.median(self.a_seconds)

    @property
    def b_median(self) -> float:
        return statistics.median(self.b_seconds)

    @property
    def median_ratio(self) -> float:
        """Median of the per-round ratios A/B: the figure the targets are checked on."""
        return statistics.median(self.ratios)

    @property
    def ratio_of_medians(self) -> float:
        return self.a_median / self.b_median

    def median_ratio_interval(self, confidence: float = 0.9) -> MedianInterval:
        """Where the true median ratio lies, from the pairs alone (`median_interval`)."""
        return median_interval(self.ratios, confidence)

    def summary(self) -> dict[str, Any]:
        ratios = sorted(self.ratios)
        return {
            "name": self.name,
            "a": self.a_label,
            "b": self.b_label,
            "rounds": len(self.a_seconds),
            "ops_per_sample": self.ops_per_sample,
            "a_median_us": self.a_median * 1e6,
            "b_median_us": self.b_median * 1e6,
            "median_ratio": self.median_ratio,
            "ratio_of_medians": self.ratio_of_medians,
            "ratio_p10": _quantile(ratios, 0.10),
            "ratio_p90": _quantile(ratios, 0.90),
        }


def interleave(
    name: str,
    a: Callable[[], object],
    b: Callable[[], object],
    *,
    a_label: str,
    b_label: str,
    rounds: int,
    ops_per_sample: int,
    warmup_rounds: int = 3,
) -> Comparison:
    """Time ``a`` and ``b`` alternately for ``rounds`` rounds.

    Each call of ``a`` or ``b`` must perform ``ops_per_sample`` operations; a sample is
    its duration divided by that, so the results are seconds per operation. Warm-up
    rounds (imports, first-touch of files, lazily built caches) are run and discarded.
    """
    comparison = Comparison(name, a_label, b_label, ops_per_sample)
    with gc_paused():
        for _ in range(warmup_rounds):
            a()
            b()
        for round_number in range(rounds):
            a_first = round_number % 2 == 0
            first, second = (a, b) if a_first else (b, a)
            start = time.perf_counter()
            first()
            middle = time.perf_counter()
            second()
            end = time.perf_counter()
            first_seconds = (middle - start) / ops_per_sample
            second_seconds = (end - middle) / ops_per_sample
            comparison.a_seconds.append(first_seconds if a_first else second_seconds)
            comparison.b_seconds.append(second_seconds if a_first else first_seconds)
    return comparison


@dataclass(frozen=True)
class MedianInterval:
    low: float
    high: float
    #: The chance that the interval holds the true median (at least ``confidence``,
    #: unless there are too few samples: then the whole range, and less).
    coverage: float
    #: Its ends are the ``rank``-th smallest and largest samples (1 = min and max).
    rank: int


def median_interval(samples: Sequence[float], confidence: float = 0.9) -> MedianInterval:
    """A distribution-free confidence interval for the median of independent samples:
    the order statistics ``x(k)`` and ``x(n+1-k)`` for the largest ``k`` that keeps the
    chance of the median falling outside, ``2 P(Binomial(n, 1/2) < k)``, within
    ``1 - confidence``. A noisy machine shows as a wide interval instead of a lucky
    median."""
    ordered = sorted(samples)
    n = len(ordered)
    if n == 0:
        return MedianInterval(math.nan, math.nan, 0.0, 0)

    def outside(rank: int) -> float:
        """The chance that the median lies outside ``[x(rank), x(n+1-rank)]``."""
        return 2 * sum(math.comb(n, below) for below in range(rank)) / (1 << n)

    rank = 1
    while 2 * (rank + 1) <= n + 1 and outside(rank + 1) <= 1 - confidence:
        rank += 1
    return MedianInterval(ordered[rank - 1], ordered[n - rank], 1 - outside(rank), rank)


def _quantile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- targets and results ----------------------------------------------------------------------


Status = Literal["PASS", "FAIL", "NOT RUN"]


@dataclass
class Target:
    """One requirement: a measured value against a limit (``<=`` or ``>=``)."""

    name: str
    limit: float
    comparator: Literal["<=", ">="]
    unit: str = ""
    measured: float | None = None
    #: Why a target was not measured (a missing backend, say).
    note: str = ""

    @property
    def status(self) -> Status:
        if self.measured is None:
            return "NOT RUN"
        ok = self.measured <= self.limit if self.comparator == "<=" else self.measured >= self.limit
        return "PASS" if ok else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass
class Section:
    """A titled part of a report: a table of rows and free-form notes."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Raw numbers for the JSON file.
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """What one benchmark script found: sections of numbers and the targets they meet."""

    name: str
    sections: list[Section] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(target.status == "PASS" for target in self.targets)


def fmt_seconds(seconds: float) -> str:
    """A duration with a unit a reader takes in at a glance."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return fmt_seconds(value)
    if unit == "requests":
        return f"{value:.0f}"
    if unit == "ratio":  # close calls against limits such as 1.02 need three decimals
        return f"{value:.3f}"
    return f"{value:.2f}{unit}"


def machine_info(local_dir: Path | None = None) -> dict[str, Any]:
    """Enough about the machine and the code to judge whether two results compare."""
    info: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory": _memory_total(),
        "load_average_1_5_15_min": _load_average(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(_git("status", "--porcelain", "--", "src")),
        "packages": {
            name: _version(name)
            for name in (
                "pytest-cachekit",
                "fsspec",
                "s3fs",
                "aiobotocore",
                "botocore",
                "boto3",
                "moto",
            )
        },
    }
    if local_dir is not None:
        info["local_dir_filesystem"] = _filesystem_of(local_dir)
    return info


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _load_average() -> str | None:
    """Other work on the machine skews every number here; record how busy it was."""
    try:
        return " ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return None


def busy_warning() -> str | None:
    """A warning when the machine was running more than it has CPUs for, else None."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cpus and load > cpus:
        return (
            f"The machine was busy (1-minute load average {load:.1f} on {cpus} CPUs): other "
            "processes competed for CPU, so times are inflated and noisy. Rerun on an idle "
            "machine before trusting a close call."
        )
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return None


def _filesystem_of(path: Path) -> str:
    """The mount type under ``path`` (fsync costs differ by orders of magnitude)."""
    try:
        best = ("", "unknown")
        real = os.path.realpath(path)
        for line in Path("/proc/mounts").read_text().splitlines():
            _device, mount_point, fs_type, *_ = line.split()
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, fs_type)
        return f"{best[1]} (mounted at {best[0]})"
    except OSError:
        return "unknown"


def _git(*args: str) -> str:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return completed.stdout.strip()


def render_markdown(
    title: str, reports: Sequence[Report], machine: dict[str, Any], command: str
) -> str:
    """The human-readable result file: targets first, then numbers, then the machine."""
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Reproduce from the project root: `{command}`", ""]
    lines += ["## Targets", "", "| target | measured | limit | result |", "|---|---|---|---|"]
    for report in reports:
        for target in report.targets:
            measured = fmt_value(target.measured, target.unit)
            limit = f"{target.comparator} {fmt_value(target.limit, target.unit)}"
            status = target.status + (f" ({target.note})" if target.note else "")
            lines.append(f"| {target.name} | {measured} | {limit} | {status} |")
    lines.append("")
    for report in reports:
        for section in report.sections:
            lines += [f"## {section.title}", ""]
            if section.rows:
                lines.append("| " + " | ".join(section.columns) + " |")
                lines.append("|" + "---|" * len(section.columns))
                lines += ["| " + " | ".join(row) + " |" for row in section.rows]
                lines.append("")
            lines += [f"- {note}" for note in section.notes]
            if section.notes:
                lines.append("")
    lines += ["## Machine", ""]
    for key, value in machine.items():
        shown = value
        if isinstance(value, dict):
            shown = ", ".join(f"{name} {version}" for name, version in value.items())
        lines.append(f"- {key}: {shown}")
    lines.append("")
    return "\n".join(lines)


def write_results(
    stem: str, title: str, reports: Sequence[Report], machine: dict[str, Any], command: str
) -> tuple[Path, Path]:
    """Write ``results/<stem>.md`` and ``results/<stem>.json``; return both paths."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    markdown_path = RESULTS_DIR / f"{stem}.md"
    json_path = RESULTS_DIR / f"{stem}.json"
    markdown_path.write_text(render_markdown(title, reports, machine, command), encoding="utf-8")
    payload = {
        "title": title,
        "command": command,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "passed": all(report.passed for report in reports),
        "reports": [
            {
                "name": report.name,
                "targets": [target.as_dict() for target in report.targets],
                "sections": [
                    {"title": section.title, "notes": section.notes, "data": section.data}
                    for section in report.sections
                ],
            }
            for report in reports
        ],
    }
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return markdown_path, json_path


def print_report(report: Report) -> None:
    """The same tables as the markdown file, on stdout, for a run by hand."""
    print(render_markdown(report.name, [report], {}, "").split("## Machine")[0].rstrip())
    print()


def run_alone(stem: str, run: Callable[[], Report], command: str, *, write: bool) -> Report:
    """Run one benchmark that has a result file of its own (``results/<stem>.*``), print
    its report and, if ``write``, save it with the machine and the total runtime."""
    started = time.perf_counter()
    report = run()
    print_report(report)
    if write:
        machine = machine_info(WORK_DIR)
        machine["total_runtime"] = f"{time.perf_counter() - started:.0f} s"
        paths = write_results(stem, report.name, [report], machine, command)
        print("wrote", *(str(path) for path in paths))
    return report
