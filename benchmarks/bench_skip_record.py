"""What recording ``--skip-passed``'s per-test dependencies costs (issue 14: the run that
records at most 1.25x a plain pytest run, a run that reruns everything at most 1.10x).

Five kinds of whole pytest process on one project, for ``--rounds`` rounds after one
uncounted warm-up round, their order rotating from round to round: plain
(``-p no:cachekit``); a recording run (``--skip-passed`` with a fresh store, so every test
runs and is recorded); a read-only run (``CACHEKIT_READONLY=1``, fresh store: every test
runs, its file is keyed, nothing is recorded), which is what a run that reruns
everything pays, and separates what keying costs from what recording costs; and both
again "restored": in a second checkout of the same files (another path, so no file's
stat matches the cache, as on another runner), with the analysis cache the last
recording run wrote restored into its cache directory, as a CI cache step restores it.
Reported: per kind the median wall and CPU seconds and peak RSS, and the medians of the
per-round ratios to plain (the targets).

Every run starts as on a fresh CI runner: no ``.pytest_cache`` (so, but for the restored
kinds, no analysis cache: every file is parsed and keyed) and a new empty store;
Python's bytecode is kept between runs under a private prefix (``PYTHONPYCACHEPREFIX``),
as a user's second run finds it.

The project is ``--repo`` (a clone, its tests under ``--tests``), or by default a
generated call-heavy one: 400 tests each making 8,000 calls of project functions.

    .venv/bin/python benchmarks/bench_skip_record.py --repo benchmarks/.work/boltons --write
    .venv/bin/python benchmarks/bench_skip_record.py --repo benchmarks/.work/boltons \\
        --python .nox/tests_skip_pythons-3-13/bin/python --write skip-record-3.13

``--python`` must have pytest and this project installed (the nox session
``tests_skip_pythons`` makes such environments).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    WORK_DIR,
    Finished,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    machine_info,
    print_report,
    run_process,
    write_results,
)

RECORD_LIMIT = 1.25
RERUN_LIMIT = 1.10
SCRIPT_COMMAND = ".venv/bin/python benchmarks/bench_skip_record.py"
SIGNING_KEY = "bench-skip-record-key-0123456789"
_SUMMARY = re.compile(r"(\d+) passed")

LIB = """\
def add(a, b):
    return a + b


def mul(a, b):
    return a * b


def combo(a, b):
    return add(mul(a, b), b)


class Acc:
    def __init__(self):
        self.total = 0

    def push(self, value):
        self.total = add(self.total, value)
        return self
"""
TEST = """\
import pytest

from proj.lib import Acc, combo


@pytest.mark.parametrize("n", range(20))
def test_loop(n):
    acc = Acc()
    for i in range(2000):
        acc.push(combo(i, n))
    assert acc.total >= 0
"""
KINDS = ("plain", "record", "read-only", "record, restored", "read-only, restored")
#: What each kind adds to ``pytest -q -p no:randomly -p no:xdist <tests>``.
OPTIONS = {
    "plain": "-p no:cachekit",
    "record": "--skip-passed --cache-url=<fresh store>",
    "read-only": "--skip-passed --cache-url=<fresh store>, CACHEKIT_READONLY=1",
    "record, restored": "as record, in a second checkout, the analysis cache restored",
    "read-only, restored": "as read-only, in a second checkout, the analysis cache restored",
}
#: Where a run keeps its analysis cache, under the project's root.
ANALYSIS_DIR = Path(".pytest_cache/d/cachekit-skip-passed")


@dataclass(frozen=True)
class Config:
    python: str
    repo: Path | None
    tests: tuple[str, ...]
    rounds: int


def make_suite(root: Path) -> None:
    """20 test files of 20 tests, each test 2,000 rounds of 4 calls of project code."""
    (root / "proj").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (root / "proj" / "__init__.py").write_text("")
    (root / "proj" / "lib.py").write_text(LIB)
    (root / "tests" / "__init__.py").write_text("")
    for index in range(20):
        (root / "tests" / f"test_m{index}.py").write_text(TEST)


def run_one(kind: str, config: Config, checkouts: tuple[Path, Path], scratch: Path) -> Finished:
    """One whole pytest process of ``kind``, as on a fresh runner (see the docstring).

    A "restored" kind runs in the second checkout (the same files under another path, as
    on another runner: no stat the cache holds matches), its cache directory holding only
    the analysis cache the last recording run in the first checkout wrote, as a CI cache
    step would restore it."""
    restored = kind.endswith(", restored")
    root = checkouts[1] if restored else checkouts[0]
    store = Path(tempfile.mkdtemp(dir=scratch))
    shutil.rmtree(root / ".pytest_cache", ignore_errors=True)
    if restored:
        shutil.copytree(scratch / "analysis", root / ANALYSIS_DIR)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CACHEKIT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    env["CACHEKIT_SIGNING_KEY"] = SIGNING_KEY
    args = [config.python, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist"]
    args += config.tests
    if kind == "plain":
        args += ["-p", "no:cachekit"]
    else:
        args += ["--skip-passed", f"--cache-url=file://{store}"]
    if kind.startswith("read-only"):
        env["CACHEKIT_READONLY"] = "1"
    log = scratch / f"{kind}.log"
    finished = run_process(args, log=log, env=env, timeout=600, cwd=root)
    if finished.exit_code not in (0, 1):
        raise SystemExit(f"{kind} run failed ({finished.exit_code}): see {log}")
    if kind == "record":  # what the restored kinds start from
        shutil.rmtree(scratch / "analysis", ignore_errors=True)
        shutil.copytree(root / ANALYSIS_DIR, scratch / "analysis", ignore=_only_analysis)
    shutil.rmtree(store, ignore_errors=True)
    return finished


def _only_analysis(directory: str, names: list[str]) -> list[str]:
    """`shutil.copytree`'s ignore: all but the analysis cache files (not the store or a
    local signing key)."""
    return [name for name in names if not name.startswith("analysis")]


def round_order(number: int) -> tuple[str, ...]:
    """The kinds in the order round ``number`` runs them: rotated by one each round, so
    that each kind goes first in turn (a drift over a round does not always weigh on the
    same kind)."""
    shift = number % len(KINDS)
    return KINDS[shift:] + KINDS[:shift]


def measure(config: Config) -> tuple[dict[str, list[Finished]], int]:
    """Each kind's runs (the warm-up round left out), and how many tests passed in the
    last plain run."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-skip-record-"))
    try:
        root = scratch / "project"
        if config.repo is None:
            make_suite(root)
        else:  # a scratch copy: runs write caches into the project
            shutil.copytree(config.repo, root, ignore=shutil.ignore_patterns(".git"))
        checkouts = (root, scratch / "checkout")
        shutil.copytree(root, checkouts[1])
        runs: dict[str, list[Finished]] = {kind: [] for kind in KINDS}
        for number in range(config.rounds + 1):  # the first round warms up, uncounted
            # Round 0 runs "record" before the kinds that restore what it wrote.
            order = round_order(number)
            done = {kind: run_one(kind, config, checkouts, scratch) for kind in order}
            line = ", ".join(f"{kind} {done[kind].seconds:.2f} s" for kind in KINDS)
            print(f"  round {number}{' (warm-up)' if number == 0 else ''}: {line}", flush=True)
            if number:
                for kind in KINDS:
                    runs[kind].append(done[kind])
        found = _SUMMARY.findall((scratch / "plain.log").read_text(errors="replace"))
        return runs, int(found[-1]) if found else 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def interpreter(python: str) -> str:
    """The measured interpreter and its pytest (the harness may run on another)."""
    script = (
        "import platform, pytest; "
        "print(platform.python_implementation(), platform.python_version(), "
        "'pytest', pytest.__version__)"
    )
    completed = subprocess.run([python, "-c", script], capture_output=True, text=True, check=False)
    return completed.stdout.strip() or completed.stderr.strip()[-200:]


def build_report(
    config: Config, runs: dict[str, list[Finished]], tests: int, measured: str
) -> Report:
    """The targets and the table; ``measured`` names the interpreter (`interpreter`)."""
    plain = runs["plain"]

    def ratio(kind: str, *, cpu: bool = False) -> float:
        """The median of the per-round ratios of ``kind``'s runs to plain's."""
        pairs = zip(runs[kind], plain, strict=True)
        if cpu:
            return statistics.median(run.cpu_seconds / base.cpu_seconds for run, base in pairs)
        return statistics.median(run.seconds / base.seconds for run, base in pairs)

    project = "a generated call-heavy suite" if config.repo is None else str(config.repo)
    report = Report(f"skip-passed recording cost: {project}, {measured}")
    limits = {"record": RECORD_LIMIT, "read-only": RERUN_LIMIT}
    report.targets = [
        Target(
            f"{kind} / plain: median wall ratio, {config.rounds} rounds",
            limits[kind.partition(",")[0]],
            "<=",
            "ratio",
            ratio(kind),
        )
        for kind in KINDS[1:]
    ]
    section = Section(
        f"Whole pytest runs ({tests} tests), {config.rounds} rounds",
        [
            "kind", "options", "median wall", "wall min-max", "vs plain: median wall ratio",
            "median CPU", "vs plain: median CPU ratio", "peak RSS (median, max)",
        ],
    )  # fmt: skip
    for kind in KINDS:
        done = runs[kind]
        walls = [run.seconds for run in done]
        rss = [run.peak_rss_kib / 1024 for run in done]
        baseline = kind == "plain"
        section.rows.append(
            [
                kind,
                f"`{OPTIONS[kind]}`",
                fmt_seconds(statistics.median(walls)),
                f"{fmt_seconds(min(walls))}-{fmt_seconds(max(walls))}",
                "1 (baseline)" if baseline else f"{ratio(kind):.3f}",
                fmt_seconds(statistics.median(run.cpu_seconds for run in done)),
                "1 (baseline)" if baseline else f"{ratio(kind, cpu=True):.3f}",
                f"{statistics.median(rss):.0f} MiB, {max(rss):.0f} MiB",
            ]
        )
        section.data[kind] = [
            {
                "seconds": run.seconds,
                "cpu_seconds": run.cpu_seconds,
                "peak_rss_kib": run.peak_rss_kib,
            }
            for run in done
        ]
    section.notes += [
        f"Each kind is `{config.python} -m pytest -q -p no:randomly -p no:xdist "
        f"{' '.join(config.tests)}` plus its options, in {project}. One uncounted warm-up "
        "round first; the kinds' order rotates from round to round; ratios are per round.",
        "Every run starts as on a fresh CI runner: no .pytest_cache (no analysis cache: "
        "every file is parsed and keyed) and an empty store; bytecode is kept between runs "
        "under a private PYTHONPYCACHEPREFIX. A restored kind runs in a second checkout "
        "(another path: no file's stat matches the cache) whose cache directory holds "
        "only the signed analysis cache of the last recording run (the same signing key), "
        "as a CI cache step restores it.",
        "Wall time from spawn to exit; CPU and peak RSS from os.wait4.",
    ]
    warning = busy_warning()
    if warning:
        section.notes.append(warning)
    report.sections.append(section)
    return report


def parse(argv: Sequence[str] | None) -> tuple[Config, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="a project to run (default: generated)")
    parser.add_argument("--tests", nargs="*", default=["tests"], help="its test paths")
    parser.add_argument("--python", default=sys.executable, help="the interpreter measured")
    parser.add_argument("--rounds", type=int, default=9, help="counted rounds")
    parser.add_argument(
        "--write", nargs="?", const="skip-record", metavar="NAME",
        help="write results/NAME.md and .json (default NAME: skip-record)",
    )  # fmt: skip
    options = parser.parse_args(argv)
    python = shutil.which(options.python) or options.python
    config = Config(os.path.abspath(python), options.repo, tuple(options.tests), options.rounds)
    return config, options.write


def main(argv: Sequence[str] | None = None) -> int:
    config, write = parse(argv)
    started = time.perf_counter()
    runs, tests = measure(config)
    measured = interpreter(config.python)
    report = build_report(config, runs, tests, measured)
    print_report(report)
    if write:
        machine = machine_info(WORK_DIR)
        machine["measured_python"] = measured
        machine["total_runtime"] = f"{time.perf_counter() - started:.0f} s"
        given = sys.argv[1:] if argv is None else list(argv)
        command = shlex.join([*SCRIPT_COMMAND.split(), *given])
        paths = write_results(write, report.name, [report], machine, command)
        print("wrote", *(str(path) for path in paths))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
