"""``--skip-passed`` on the plugin benchmark's 20,000-test suite: whole pytest runs.

Why: skipping is only worth having if a run of unchanged code costs about what
collecting the suite costs. The issue's targets, on the suite `bench_plugin` generates
(200 files, 20,000 one-line tests, 20 failing), as wall time of the whole ``pytest``
process:

- the second run of unchanged code with ``--skip-passed`` (S) takes at most 1.5x
  ``pytest --collect-only`` on the same suite (C): median per-round ratio S/C <= 1.5;
- and is at least 5x faster than the full run (F, the plugin loaded, skipping off):
  median per-round ratio F/S >= 5.

The time spent computing the test files' keys (`cachekit.skip.fingerprint`) is reported on its
own, from the line every skipping run prints ("N test file(s) keyed in X s, M test(s)
checked in Y s; ... K whole file(s) not collected"): cold (the first run, no analysis
cache) and warm (the timed runs); the time spent checking the signed records (of the
files skipped whole, and of the tests collected) is reported beside it.

What S does: the 20 tests that failed are in ``cache/lastfailed``, so they run (and fail)
every time. Each sits in its own file (every tenth file has one), so the 180 files
without a failure are skipped whole, before pytest imports them (their file records say
all their tests passed with the same key), and the 20 others are collected, their
other tests skipped one by one: 19,980 cached passes in all. F/C, the full run
over collecting alone, is reported too: it bounded any skipping run that still
collected every test (as cachekit's did before it skipped whole files). Every run is a
whole ``python -m pytest -q -p no:randomly -p no:hypothesispytest ...`` subprocess in the
suite's directory, with the local default store (no ``--cache-url``) and its own
``cache_dir``, and a fixed ``CACHEKIT_SIGNING_KEY``.

Timing: the first skipping run records (it is the full run that fills the store), then
one warm-up round and ``--rounds`` rounds (default 5) of C, S and F, rotating which goes
first.

Run alone: ``python benchmarks/bench_skip.py`` (``--write`` saves ``results/skip.md`` and
``skip.json``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_plugin import (
    FILES,
    SUITE_DIR,
    TOTAL_FAILING,
    TOTAL_TESTS,
    Run,
    environment,
    generate_suite,
    run_pytest,
)
from benchmarks.harness import (
    PROJECT_DIR,
    WORK_DIR,
    Comparison,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    run_alone,
)

COMMAND = ".venv/bin/python -m benchmarks --only skip"
SCRIPT_COMMAND = ".venv/bin/python benchmarks/bench_skip.py --write"

COLLECT_LIMIT = 1.5
SPEEDUP_LIMIT = 5.0
#: A fixed key: the benchmark's records are its own, in its own cache_dir.
SIGNING_KEY = "cachekit-benchmark-signing-key-0123456789abcdef"
CACHE_DIR = ".cache/skip"

ORDER = ("C", "S", "F")
LABELS = {
    "C": "pytest --collect-only",
    "S": "second run, --skip-passed (unchanged code)",
    "F": "full run (plugin loaded, skipping off)",
}
VARIANT_ARGS = {
    "C": ["--collect-only", "-o", f"cache_dir={CACHE_DIR}"],
    "S": ["--skip-passed", "-o", f"cache_dir={CACHE_DIR}"],
    "F": ["-o", f"cache_dir={CACHE_DIR}"],
}
_KEYED = re.compile(
    r"cachekit skip-passed: (\d+) test file\(s\) keyed in ([0-9.]+)s, "
    r"(\d+) test\(s\) checked in ([0-9.]+)s; (\d+) passed before \(cached\)"
    r"(?:, (\d+) whole file\(s\) not collected)?"
)
#: Files the S run skips whole: every file but those with a failing test.
WHOLE_FILES = FILES - TOTAL_FAILING
_COUNT = re.compile(r"(\d+) (passed|failed|cached|errors?|tests collected)\b")


@dataclass
class Timed:
    """One pytest process, with what its output said."""

    run: Run
    counts: dict[str, int]
    #: From the run's own line: computing the files' keys, checking the tests' records.
    key_seconds: float | None = None
    lookup_seconds: float | None = None
    files_keyed: int | None = None
    #: Test files skipped whole, before pytest imported them.
    whole_files: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.run.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.run.as_dict(),
            "counts": self.counts,
            "key_seconds": self.key_seconds,
            "lookup_seconds": self.lookup_seconds,
            "files_keyed": self.files_keyed,
            "whole_files": self.whole_files,
            "problems": self.problems,
        }


def _timed(variant: str, log: Path, env: dict[str, str], *, kind: str | None = None) -> Timed:
    """One run of ``variant`` (``kind`` says which outcome to expect: the recording run
    is S's command with F's outcome)."""
    one = run_pytest(variant, VARIANT_ARGS[variant], env=env, log=log)
    text = log.read_text(encoding="utf-8", errors="replace")
    last = text.strip().splitlines()[-1] if text.strip() else ""
    timed = Timed(one, {noun.split()[-1]: int(n) for n, noun in _COUNT.findall(last)})
    keyed = _KEYED.search(text)
    if keyed:
        timed.files_keyed = int(keyed[1])
        timed.key_seconds = float(keyed[2])
        timed.lookup_seconds = float(keyed[4])
        timed.whole_files = int(keyed[6] or 0)
    _check(kind or variant, timed, text)
    return timed


def _check(variant: str, timed: Timed, text: str) -> None:
    """Each kind of run must report exactly what the suite is."""
    passing = TOTAL_TESTS - TOTAL_FAILING
    code = timed.run.exit_code
    if variant == "C":
        ok = timed.counts.get("collected") == TOTAL_TESTS and code == 0
    elif variant == "S":
        ok = timed.counts == {"failed": TOTAL_FAILING, "cached": passing} and code == 1
        ok = ok and timed.files_keyed == FILES and timed.whole_files == WHOLE_FILES
    else:  # F, and the recording run
        ok = timed.counts == {"failed": TOTAL_FAILING, "passed": passing} and code == 1
    if not ok:
        timed.problems.append(f"{variant}: exit code {code}, summary {timed.counts}")
    if "Warning" in text:
        timed.problems.append(f"{variant}: a warning in the output")


def environment_with_key() -> dict[str, str]:
    return {**environment(), "CACHEKIT_SIGNING_KEY": SIGNING_KEY}


@dataclass
class Timings:
    recording: Timed | None = None
    warm_up: list[Timed] = field(default_factory=list)
    runs: dict[str, list[Timed]] = field(default_factory=lambda: {key: [] for key in ORDER})
    orders: list[list[str]] = field(default_factory=list)

    def comparison(self, a: str, b: str) -> Comparison:
        return Comparison(
            f"{a}/{b}",
            LABELS[a],
            LABELS[b],
            1,
            [one.seconds for one in self.runs[a]],
            [one.seconds for one in self.runs[b]],
        )

    @property
    def all(self) -> list[Timed]:
        first = [self.recording] if self.recording else []
        return first + self.warm_up + [one for runs in self.runs.values() for one in runs]


def run(*, rounds: int = 5) -> Report:
    """Generate (or reuse) the suite, record once, time the rounds, report."""
    started = time.perf_counter()
    report = Report(f"--skip-passed: whole runs of a {TOTAL_TESTS:,}-test suite")
    collect = Target(
        f"second run with --skip-passed (S) / pytest --collect-only (C): median wall ratio, "
        f"{rounds} rounds",
        COLLECT_LIMIT,
        "<=",
        "ratio",
    )
    speedup = Target(
        f"full run (F) / second run with --skip-passed (S): median wall ratio, {rounds} rounds",
        SPEEDUP_LIMIT,
        ">=",
        "ratio",
    )
    valid = Target("every run reported the suite's outcome, without warnings (1 = yes)", 1, ">=")
    report.targets += [collect, speedup, valid]
    generated = generate_suite()
    shutil.rmtree(SUITE_DIR / CACHE_DIR, ignore_errors=True)
    logs = WORK_DIR / "skip-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    env = environment_with_key()

    timings = Timings()
    timings.recording = _timed_recording(logs, env)
    for round_number in range(-1, rounds):  # round -1 is the warm-up
        shift = round_number % len(ORDER)
        order = list(ORDER[shift:] + ORDER[:shift])
        title = "warm-up" if round_number < 0 else f"round {round_number + 1}"
        done = [_timed(v, logs / f"{title.replace(' ', '')}-{v}.log", env) for v in order]
        if round_number < 0:
            timings.warm_up += done
        else:
            timings.orders.append(order)
            for variant, one in zip(order, done, strict=True):
                timings.runs[variant].append(one)
        shown = (f"{v} {o.seconds:.2f} s" for v, o in zip(order, done, strict=True))
        print(f"  {title}: " + ", ".join(shown))

    collect.measured = timings.comparison("S", "C").median_ratio
    speedup.measured = timings.comparison("F", "S").median_ratio
    problems = [problem for one in timings.all for problem in one.problems]
    valid.measured = 0.0 if problems else 1.0
    if problems:
        valid.note = "; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
    _add_sections(report, timings, rounds)
    notes = report.sections[0].notes
    where = SUITE_DIR.relative_to(PROJECT_DIR)
    total = fmt_seconds(time.perf_counter() - started)
    notes.append(
        f"Suite {'generated' if generated else 'reused'} in {where} (bench_plugin's "
        f"generator); total benchmark time {total}."
    )
    warning = busy_warning()
    if warning:
        notes.append(warning)
    return report


def _timed_recording(logs: Path, env: dict[str, str]) -> Timed:
    """The first run with --skip-passed: runs everything, keys cold, records the passes."""
    timed = _timed("S", logs / "recording.log", env, kind="F")
    print(f"  recording run: {timed.seconds:.2f} s, keys {timed.key_seconds} s (cold)")
    return timed


def _add_sections(report: Report, timings: Timings, rounds: int) -> None:
    summary = Section(
        f"Whole pytest runs, {TOTAL_TESTS:,} tests ({TOTAL_FAILING} failing), {rounds} rounds",
        ["variant", "options (besides -q -p no:randomly -p no:hypothesispytest)", "median wall",
         "wall min-max", "median CPU", "peak RSS (median)", "keys (median)",
         "records checked (median)", "files skipped whole (median)"],
    )  # fmt: skip
    data: dict[str, Any] = {"variants": {}, "rounds": []}
    for variant in ORDER:
        runs = timings.runs[variant]
        walls = [one.seconds for one in runs]
        keys = [one.key_seconds for one in runs if one.key_seconds is not None]
        checks = [one.lookup_seconds for one in runs if one.lookup_seconds is not None]
        whole = [one.whole_files for one in runs if one.whole_files is not None]
        summary.rows.append(
            [
                f"{variant}: {LABELS[variant]}",
                " ".join(VARIANT_ARGS[variant]),
                fmt_seconds(statistics.median(walls)),
                f"{min(walls):.2f}-{max(walls):.2f} s",
                fmt_seconds(statistics.median(one.run.cpu_seconds for one in runs)),
                f"{statistics.median(one.run.max_rss_kib for one in runs) / 1024:.0f} MiB",
                fmt_seconds(statistics.median(keys)) if keys else "—",
                fmt_seconds(statistics.median(checks)) if checks else "—",
                f"{statistics.median(whole):.0f} of {FILES}" if whole else "—",
            ]
        )
        data["variants"][variant] = {
            "label": LABELS[variant],
            "median_key_seconds": statistics.median(keys) if keys else None,
            "median_lookup_seconds": statistics.median(checks) if checks else None,
            "median_whole_files": statistics.median(whole) if whole else None,
            "args": VARIANT_ARGS[variant],
            "median_seconds": statistics.median(walls),
            "runs": [one.as_dict() for one in runs],
        }
    s_over_c = timings.comparison("S", "C")
    f_over_s = timings.comparison("F", "S")
    ceiling = timings.comparison("F", "C").median_ratio
    recording = timings.recording
    summary.notes += [
        f"S / C: median per-round ratio {s_over_c.median_ratio:.3f} "
        f"(min-max {min(s_over_c.ratios):.3f}-{max(s_over_c.ratios):.3f}); "
        f"F / S: {f_over_s.median_ratio:.2f}x (min-max {min(f_over_s.ratios):.2f}-"
        f"{max(f_over_s.ratios):.2f}).",
        f"F / C (full run over collecting alone), median per round {ceiling:.2f}: the most "
        "a skipping run that still collected every test could gain. S beats it by not "
        f"importing the {WHOLE_FILES} files whose every test passed (S is "
        f"{s_over_c.median_ratio:.2f}x collecting alone).",
        f"S runs the {TOTAL_FAILING} tests that failed last time (pytest's cache/lastfailed: "
        f"they always run), skips {WHOLE_FILES} of the {FILES} files whole, before pytest "
        f"imports them, and skips the other passing tests of the {FILES - WHOLE_FILES} files "
        "it collects one by one: the summary line says "
        f"'{TOTAL_FAILING} failed, {TOTAL_TESTS - TOTAL_FAILING:,} cached'.",
    ]
    if recording is not None:
        summary.notes.append(
            f"Key computation on its own (from each run's 'keyed in' line): cold, the first "
            f"run with no analysis cache, {fmt_seconds(recording.key_seconds or 0.0)} for "
            f"{recording.files_keyed} files (that run took {fmt_seconds(recording.seconds)} and "
            f"recorded {TOTAL_TESTS - TOTAL_FAILING:,} passes); warm, in the timed S runs, the "
            "median in the table. Checking the records (an HMAC of each file's path and key, "
            "of each collected test id, and each record's signature) is the next column."
        )
        data["recording"] = recording.as_dict()
    for index, order in enumerate(timings.orders):
        by_variant = {variant: timings.runs[variant][index] for variant in ORDER}
        data["rounds"].append(
            {
                "order": order,
                "seconds": {variant: one.seconds for variant, one in by_variant.items()},
                "S/C": by_variant["S"].seconds / by_variant["C"].seconds,
                "F/S": by_variant["F"].seconds / by_variant["S"].seconds,
            }
        )
    data["ceiling_full_over_collect"] = ceiling
    data["warm_up"] = [one.as_dict() for one in timings.warm_up]
    summary.data = data
    report.sections.append(summary)

    per_round = Section(
        "Per round (wall time; order as run)", ["round", "order", "C", "S", "F", "S/C", "F/S"]
    )
    for index, entry in enumerate(data["rounds"]):
        seconds = entry["seconds"]
        per_round.rows.append(
            [
                str(index + 1),
                " ".join(entry["order"]),
                *(f"{seconds[v]:.2f} s" for v in ORDER),
                f"{entry['S/C']:.3f}",
                f"{entry['F/S']:.2f}",
            ]
        )
    report.sections.append(per_round)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--write", action="store_true", help="also write results/skip.md/.json")
    args = parser.parse_args(argv)
    report = run_alone("skip", lambda: run(rounds=args.rounds), SCRIPT_COMMAND, write=args.write)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
