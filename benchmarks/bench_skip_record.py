"""What recording ``--skip-passed``'s per-test dependencies costs (issue 14: the run that
records at most 1.25x a plain pytest run, a run that reruns everything at most 1.10x).

Three kinds of whole pytest process on one project, in turn for ``--rounds`` rounds:
plain (``-p no:cachekit``); a recording run (``--skip-passed`` with a fresh store, so
every test runs and is recorded); a read-only run (``CACHEKIT_READONLY=1``, fresh store:
every test runs, its file is keyed, nothing is recorded). Reported: the median wall and
CPU seconds of each, and the medians of the per-round ratios to plain. The read-only
run separates what keying costs from what recording costs.

The project is ``--repo`` (a clone, its tests under ``--tests``), or by default a
generated call-heavy one: 400 tests each making 8,000 calls of project functions.

    .venv/bin/python benchmarks/bench_skip_record.py --repo benchmarks/.work/boltons
    .venv/bin/python benchmarks/bench_skip_record.py --python ~/.pyenv/versions/3.12.1/bin/python

Bytecode files are written under a private prefix (``PYTHONPYCACHEPREFIX``), as in a
user's second run; ``--python`` must have pytest and this project installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import run_process

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
KINDS = ("plain", "record", "read-only")


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


def run(kind: str, python: str, root: Path, tests: list[str], scratch: Path) -> tuple[float, float]:
    store = Path(tempfile.mkdtemp(dir=scratch))
    shutil.rmtree(root / ".pytest_cache", ignore_errors=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CACHEKIT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    env["CACHEKIT_SIGNING_KEY"] = "bench-skip-record-key-0123456789"
    args = [python, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist", *tests]
    if kind == "plain":
        args += ["-p", "no:cachekit"]
    else:
        args += ["--skip-passed", f"--cache-url=file://{store}"]
    if kind == "read-only":
        env["CACHEKIT_READONLY"] = "1"
    finished = run_process(args, log=scratch / f"{kind}.log", env=env, timeout=600, cwd=root)
    if finished.exit_code not in (0, 1):
        raise SystemExit(f"{kind} run failed ({finished.exit_code}): see {scratch / kind}.log")
    shutil.rmtree(store, ignore_errors=True)
    return finished.seconds, finished.cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="a project to run (default: generated)")
    parser.add_argument("--tests", nargs="*", default=["tests"], help="its test paths")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-skip-record-"))
    try:
        root = scratch / "project"
        if options.repo is None:
            make_suite(root)
        else:  # a scratch copy: runs write caches into the project
            shutil.copytree(options.repo, root, ignore=shutil.ignore_patterns(".git"))
        seconds: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
        for _ in range(options.rounds + 1):  # the first round warms up, uncounted
            for kind in KINDS:
                seconds[kind].append(run(kind, options.python, root, options.tests, scratch))
        report(seconds, options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(seconds: dict[str, list[tuple[float, float]]], options: argparse.Namespace) -> None:
    print(f"{options.repo or 'generated call-heavy suite'} on {options.python}")
    plain = seconds["plain"][1:]
    for kind in KINDS:
        counted = seconds[kind][1:]
        wall = statistics.median(s for s, _ in counted)
        cpu = statistics.median(c for _, c in counted)
        line = f"{kind:10s} wall {wall:6.2f} s  cpu {cpu:6.2f} s"
        if kind != "plain":
            wall_ratio = statistics.median(a[0] / b[0] for a, b in zip(counted, plain, strict=True))
            cpu_ratio = statistics.median(a[1] / b[1] for a, b in zip(counted, plain, strict=True))
            line += f"  / plain: wall {wall_ratio:.2f}x  cpu {cpu_ratio:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
