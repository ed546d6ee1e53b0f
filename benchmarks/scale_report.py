"""The scale benchmark's records and report: what `bench_scale` measured, as sections.

Why a module of its own: `bench_scale` builds, folds and times; the records it fills
(`Config`, `Command`, `Findings`) and the tables made from them are kept here so that
each file stays readable.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import Comparison, Report, Section, fmt_seconds
from benchmarks.scale_suite import KeyBytes, Run, Shape, total_tests

#: Shard runs at once while building (the machine has two cores).
CONCURRENCY = 2
INTERVAL_CONFIDENCE = 0.9
#: The time budget of a build run, and the timeout of the CLI commands: generous, so the
#: namespace is complete and every time is measured, however slow the code.
BUILD_BUDGET = 300.0
LABELS = {
    "B": "built-in cache",
    "L": "plugin, local store",
    "S": "plugin, S3 via 50 ms proxy",
    "N": "plugin, no store",
}


@dataclass
class Config:
    shape: Shape
    passes: int = 2
    #: Pairs per variant. Single pairs here range over a fifth of a run: over 11 pairs,
    #: two runs of the same code gave L/B medians of 1.077 and 0.989 (limit 1.05).
    rounds: int = 31
    repeats: int = 3
    #: Start from a kept build (`bench_scale --reuse`); only part of the benchmark
    #: (``"fold"``); a file for a profiled merge. Never for a written result.
    reuse: bool = False
    only: str | None = None
    profile: Path | None = None

    @property
    def final_pass(self) -> int:
        return self.passes

    @property
    def timed_shard(self) -> int:
        return self.shape.shards // 2


@dataclass
class Command:
    """One CLI process (``cachekit merge`` or ``compact``): what it took."""

    label: str
    seconds: float
    cpu_seconds: float
    max_rss_mib: float
    exit_code: int
    output: str
    requests: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "output": self.output[-2000:]}


@dataclass
class Findings:
    """Everything measured, for the report."""

    namespace: dict[str, Any] = field(default_factory=dict)
    build: dict[int, list[Run]] = field(default_factory=dict)
    build_seconds: dict[int, float] = field(default_factory=dict)
    upload_seconds: float = 0.0
    uploaded_objects: int = 0
    merges: list[Command] = field(default_factory=list)
    compactions: list[Command] = field(default_factory=list)
    local_compaction: Command | None = None
    bytes_before: dict[str, KeyBytes] = field(default_factory=dict)
    bytes_after: dict[str, KeyBytes] = field(default_factory=dict)
    warm_up: list[Run] = field(default_factory=list)
    runs: dict[str, list[Run]] = field(default_factory=lambda: {name: [] for name in LABELS})
    pairs: dict[str, list[tuple[Run, Run]]] = field(
        default_factory=lambda: {name: [] for name in LABELS if name != "B"}
    )

    def comparison(self, variant: str, what: str = "seconds") -> Comparison:
        pairs = self.pairs[variant]
        return Comparison(
            f"{variant}/B",
            LABELS[variant],
            LABELS["B"],
            1,
            [getattr(run, what) for run, _ in pairs],
            [getattr(b, what) for _, b in pairs],
        )


# -- the report ---------------------------------------------------------------------------------


def add_sections(report: Report, config: Config, found: Findings) -> None:
    report.sections += [
        _timed_section(config, found),
        _fold_section(config, found),
        _bytes_section(found),
        _build_section(config, found),
    ]


def _timed_section(config: Config, found: Findings) -> Section:
    shape = config.shape
    section = Section(
        f"One shard's run ({shape.per_shard:,} tests) on a fresh runner, {config.rounds} rounds",
        [
            "variant",
            "median wall",
            "wall min-max",
            "vs built-in: median pair ratio",
            f"the median's {INTERVAL_CONFIDENCE:.0%} interval",
            "median CPU",
            "peak RSS (median, max)",
            "warnings",
        ],
    )
    data: dict[str, Any] = {}
    for variant, label in LABELS.items():
        runs = found.runs[variant]
        walls = [run.seconds for run in runs]
        rss = [run.max_rss_mib for run in runs]
        ratio_text = interval_text = "1 (baseline)"
        if variant != "B":
            comparison = found.comparison(variant)
            interval = comparison.median_ratio_interval(INTERVAL_CONFIDENCE)
            ratio_text = f"{comparison.median_ratio:.3f}"
            interval_text = f"{interval.low:.3f}-{interval.high:.3f}"
        section.rows.append(
            [
                f"{variant}: {label}",
                fmt_seconds(statistics.median(walls)),
                f"{min(walls):.2f}-{max(walls):.2f} s",
                ratio_text,
                interval_text,
                fmt_seconds(statistics.median(run.cpu_seconds for run in runs)),
                f"{statistics.median(rss):.0f} MiB, {max(rss):.0f} MiB",
                str(sum(len(run.warnings) for run in runs)),
            ]
        )
        data[variant] = [run.as_dict() for run in runs]
    middle = sorted(found.runs["S"], key=lambda run: run.seconds)[len(found.runs["S"]) // 2]
    kinds = middle.requests.get("by_kind", {})
    section.notes += [
        f"Shard {config.timed_shard + 1}/{shape.shards} of CI run {config.final_pass}: "
        "`python -m pytest -q --tb=line -p no:randomly -p no:hypothesispytest <options> "
        "shard_NNN` on a fresh copy of the shard's directory (no .pytest_cache, no "
        "bytecode). B: `-p no:cachekit`; L: `--cache-url=<local store> --cache-shard=...`; "
        "S: `--cache-url=s3://...?endpoint_url=<proxy>` and the same shard; N: no option "
        "(the plugin installed, no store: pytest's own cache). Default "
        "--cache-timeout (the budget a user gets). Each L or S run writes its part, as a "
        "rerun of the shard would.",
        "Ratios are per pair (each L, S and N run with the B run right next to it; the "
        "pairs' order rotates, B first in every other round), as in `bench_plugin`. "
        "Peak RSS from `os.wait4` (the pytest process, and helpers it waited for).",
        f"A median S run made {middle.requests.get('requests', '?')} requests ("
        + ", ".join(f"{kind} {count}" for kind, count in kinds.items())
        + ").",
        "Warm-up (not counted): "
        + ", ".join(f"{run.label[-1]} {run.seconds:.2f} s" for run in found.warm_up)
        + ".",
    ]
    section.data = {"runs": data, "warm_up": [run.as_dict() for run in found.warm_up]}
    return section


def _fold_section(config: Config, found: Findings) -> Section:
    section = Section(
        f"The final job: cachekit merge and compact of {config.shape.shards} shards' parts",
        ["command", "store", "wall (median; each)", "median CPU", "peak RSS (max)", "requests"],
    )
    rows: list[tuple[str, str, list[Command]]] = [
        ("cachekit merge", "S3 via 50 ms proxy", found.merges),
        ("cachekit compact", "S3 via 50 ms proxy", found.compactions),
    ]
    if found.local_compaction:
        rows.append(("cachekit compact", "local directory", [found.local_compaction]))
    for name, where, commands in rows:
        middle = sorted(commands, key=lambda one: one.seconds)[len(commands) // 2]
        section.rows.append(
            [
                name,
                where,
                fmt_seconds(statistics.median(one.seconds for one in commands))
                + " ("
                + ", ".join(f"{one.seconds:.2f}" for one in commands)
                + " s)",
                fmt_seconds(statistics.median(one.cpu_seconds for one in commands)),
                f"{max(one.max_rss_mib for one in commands):.0f} MiB",
                str(middle.requests.get("requests", "—")),
            ]
        )
    folded = _parsed(found.compactions[0].output).get("compacted", {})
    section.notes += [
        f"Each of {config.repeats} S3 copies of the store after the build (base from run 1, "
        f"and run {config.final_pass}'s parts held back from compaction): first `cachekit "
        f"merge --from {found.namespace['ref_prefix']}/ --into <fresh namespace> --json`, "
        f"then `cachekit compact --prefix {found.namespace['prefix']} --json`, both with "
        f"`--timeout={BUILD_BUDGET:g}`. The copies ({found.uploaded_objects} objects) were "
        f"put straight to moto with boto3 in {fmt_seconds(found.upload_seconds)}.",
        "Parts folded per key (first copy): "
        + (
            ", ".join(
                f"{key.rpartition('/')[0].rpartition('/')[2]}/{key.rpartition('/')[2]} {count}"
                for key, count in folded.items()
            )
            or "none"
        )
        + ".",
    ]
    section.data = {
        "merge": [one.as_dict() for one in found.merges],
        "compact": [one.as_dict() for one in found.compactions],
        "compact_local": found.local_compaction.as_dict() if found.local_compaction else None,
    }
    return section


def _parsed(output: str) -> dict[str, Any]:
    try:
        value = json.loads(output)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _bytes_section(found: Findings) -> Section:
    section = Section(
        "Bytes stored in the namespace, per logical key",
        ["key", "after the build: bases, parts, bytes", "after compaction: bases, parts, bytes"],
    )
    for key in sorted(set(found.bytes_before) | set(found.bytes_after)):
        cells = []
        for table in (found.bytes_before, found.bytes_after):
            entry = table.get(key, KeyBytes())
            cells.append(f"{entry.bases}, {entry.parts}, {_mib(entry.total)}")
        section.rows.append([key, *cells])
    totals = [
        sum(entry.total for entry in t.values()) for t in (found.bytes_before, found.bytes_after)
    ]
    section.rows.append(["total", _mib(totals[0]), _mib(totals[1])])
    section.notes.append(
        f"The local store's files under {found.namespace['prefix']} (the S3 copies hold the "
        "same bytes)."
    )
    section.data = {
        "after_build": {key: entry.__dict__ for key, entry in found.bytes_before.items()},
        "after_compaction": {key: entry.__dict__ for key, entry in found.bytes_after.items()},
    }
    return section


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"


def _build_section(config: Config, found: Findings) -> Section:
    section = Section(
        "Building the namespace: real pytest runs of every shard, "
        f"{CONCURRENCY} at a time, on fresh runners",
        [
            "CI run",
            "shards",
            "tests",
            "total time",
            "shard wall (median, max)",
            "peak RSS (max)",
            "warnings",
            "problems",
        ],
    )
    for number, runs in found.build.items():
        walls = [run.seconds for run in runs]
        compaction = "held back" if number == config.final_pass else "default threshold"
        section.rows.append(
            [
                f"{number} (compaction: {compaction})",
                str(len(runs)),
                f"{total_tests(config.shape, number):,}",
                fmt_seconds(found.build_seconds[number]),
                f"{statistics.median(walls):.2f} s, {max(walls):.2f} s",
                f"{max(run.max_rss_mib for run in runs):.0f} MiB",
                str(sum(len(run.warnings) for run in runs)),
                str(sum(len(run.problems) for run in runs)),
            ]
        )
    section.notes.append(
        f"Namespace (`cachekit namespace --json`): {found.namespace.get('description')}; "
        f"writes under {found.namespace['prefix']}. Each shard: `--cache-url=<local store> "
        f"--cache-shard=K/{config.shape.shards} --cache-timeout={BUILD_BUDGET:g} shard_NNN`, "
        "CACHEKIT_RUN_ID=runN."
    )
    section.data = {
        str(number): {
            "seconds": found.build_seconds[number],
            "runs": [run.as_dict() for run in runs],
        }
        for number, runs in found.build.items()
    }
    return section
