"""Shards that respect scoped fixtures (issue 16): real pytest shards, and a large model.

Why: split per test, the tests of a module with an expensive module-scoped fixture land
on every shard, and every shard pays the setup (pytest-split's issues #106 and #25).
cachekit records scoped setups apart from the tests and keeps such a module on one
shard (`cachekit.stats.sharding`).

(a) Real runs. A generated suite: 4 modules with a 1 s module-scoped fixture and 20 tiny
tests each, and 8 plain modules of 10 tests of 50 ms; ideal shard time
``(4 x 1 s + 80 x 50 ms) / 4 = 2 s`` (each setup once). Each tool records durations
with one whole run, then each of 4 shards runs as its own pytest process, one after the
other; a shard's time is that of its tests, from the end of collection to the end of the
session (a conftest hook in the suite: collection and start-up cost every shard the same
whatever the split; the session time pytest prints and the process's wall are reported
beside). Target: cachekit's slowest shard within 1.15x of the ideal (median of the
rounds), every test on exactly one shard.
Beside it, pytest-split 0.11.0's ``least_duration`` on the same suite (its own
``--store-durations`` file), installed for this benchmark alone into
``benchmarks/.work/pytest-split`` (``pip install --target``) and loaded only in its runs.

(b) A model, no pytest: 10,000 synthetic tests in 500 modules of 10 packages, a third of
the modules with a module-scoped fixture (0.5-5 s), a fifth with a class of 10 tests with
a class-scoped one (0.2-2 s), each package with a package-scoped one (0.2-1 s), test
durations lognormal. The split's planned slowest shard (`sharding.loads`: each scope's
setup once per shard that runs one of its tests) against the ideal (every test and every
setup once, over the shards), for 4, 16 and 64 shards. Target: within 5%. Beside it,
per-test longest-first (what pytest-split's ``least_duration`` does, the setups counted
in each scope's first test as it records them), judged the same way.

Run alone: ``python benchmarks/bench_sharding.py`` (``--write`` saves
``results/sharding.md`` and ``sharding.json``; ``--rounds N``), or ``python -m
benchmarks --only sharding``. Exits non-zero if a target fails.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    WORK_DIR,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    run_alone,
    run_process,
)
from cachekit.stats.sharding import loads, scopes_of, split
from cachekit.values.durations import SCOPED_SETUP_PREFIX as SETUP_PREFIX
from cachekit.values.durations import scoped_setup_key

SCRIPT_COMMAND = ".venv/bin/python benchmarks/bench_sharding.py --write"
DIRECTORY = WORK_DIR / "sharding"
PYTEST_SPLIT = "pytest-split==0.11.0"
PYTEST_SPLIT_DIR = WORK_DIR / "pytest-split"
SHARDS = 4
ROUNDS = 3
FIXTURE_MODULES, TINY_TESTS, SETUP = 4, 20, 1.0
PLAIN_MODULES, PLAIN_TESTS, PLAIN_SECONDS = 8, 10, 0.05
IDEAL = (FIXTURE_MODULES * SETUP + PLAIN_MODULES * PLAIN_TESTS * PLAIN_SECONDS) / SHARDS
TESTS = FIXTURE_MODULES * TINY_TESTS + PLAIN_MODULES * PLAIN_TESTS
RATIO_LIMIT = 1.15
MODEL_SHARDS = (4, 16, 64)
MODEL_LIMIT = 1.05

FIXTURE_MODULE = f"""
import time, pytest

@pytest.fixture(scope="module")
def expensive():
    time.sleep({SETUP})
    yield

@pytest.mark.parametrize("n", range({TINY_TESTS}))
def test_tiny(expensive, n):
    pass
"""

PLAIN_MODULE = f"""
import time, pytest

@pytest.mark.parametrize("n", range({PLAIN_TESTS}))
def test_plain(n):
    time.sleep({PLAIN_SECONDS})
"""

#: Times the tests of a run, from the end of collection to the end of the session (the
#: split's business; collection and start-up are the same whatever the split).
CONFTEST = """
import os, time

def pytest_collection_finish(session):
    session.config.bench_started = time.perf_counter()

def pytest_sessionfinish(session):
    started = getattr(session.config, "bench_started", None)
    if started is not None:
        with open(os.environ["BENCH_TIMES"], "a") as out:
            out.write(f"{time.perf_counter() - started}\\n")
"""

_RAN = re.compile(r"^(\S+::\S+) PASSED")
_SESSION = re.compile(r" in ([0-9.]+)s")


# -- (a) real pytest shards -----------------------------------------------------------


def generate(suite: Path) -> None:
    shutil.rmtree(suite, ignore_errors=True)
    suite.mkdir(parents=True)
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "conftest.py").write_text(CONFTEST)
    for module in range(FIXTURE_MODULES):
        (suite / f"test_fixture{module}.py").write_text(FIXTURE_MODULE)
    for module in range(PLAIN_MODULES):
        (suite / f"test_plain{module}.py").write_text(PLAIN_MODULE)


def install_pytest_split() -> None:
    """pytest-split in a directory of its own, on the path of its runs only."""
    if (PYTEST_SPLIT_DIR / "pytest_split").is_dir():
        return
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*command, "--target", str(PYTEST_SPLIT_DIR), PYTEST_SPLIT], check=True)


def pytest_run(suite: Path, log: Path, args: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """One pytest process in ``suite``: its wall, session time and the tests it passed."""
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:randomly", "-p", "no:xdist"]
    times = log.with_suffix(".times")
    times.unlink(missing_ok=True)
    finished = run_process(
        [*command, *args],
        log=log,
        env={**env, "BENCH_TIMES": str(times)},
        timeout=300,
        cwd=suite,
        capture=True,
    )
    lines = finished.output.splitlines()
    if finished.exit_code not in (0, 5):
        raise RuntimeError(f"pytest exited {finished.exit_code}: see {log}\n{finished.output}")
    session = next((m for line in reversed(lines) if (m := _SESSION.search(line))), None)
    return {
        "wall": finished.seconds,
        "session": float(session[1]) if session else finished.seconds,
        "tests": float(times.read_text().split()[-1]),
        "ran": sorted(m[1] for line in lines if (m := _RAN.match(line))),
    }


def base_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CACHEKIT_")}
    env.pop("PYTHONPATH", None)
    return env


def cachekit_round(suite: Path, number: int) -> list[dict[str, Any]]:
    """Record with one whole run, then the 4 shards of one CI run (its split plan)."""
    store = DIRECTORY / f"store-{number}"
    shutil.rmtree(store, ignore_errors=True)
    env = base_env()
    url = f"--cache-url={store}"
    logs = DIRECTORY / "logs"
    pytest_run(suite, logs / "cachekit-record.log", [url], {**env, "CACHEKIT_RUN_ID": "record"})
    shard_env = {**env, "CACHEKIT_RUN_ID": f"shards-{number}"}
    return [
        pytest_run(
            suite,
            logs / f"cachekit-shard{index}.log",
            [url, f"--num-shards={SHARDS}", f"--shard-id={index}"],
            shard_env,
        )
        for index in range(SHARDS)
    ]


def pytest_split_round(suite: Path, number: int) -> list[dict[str, Any]]:
    """pytest-split: ``--store-durations`` once, then ``--splits 4 --group i``."""
    durations = DIRECTORY / f"pytest-split-durations-{number}.json"
    durations.unlink(missing_ok=True)
    env = {**base_env(), "PYTHONPATH": str(PYTEST_SPLIT_DIR)}
    common = ["-p", "no:cachekit", f"--durations-path={durations}"]
    logs = DIRECTORY / "logs"
    pytest_run(suite, logs / "split-record.log", [*common, "--store-durations"], env)
    split_args = [*common, f"--splits={SHARDS}", "--splitting-algorithm=least_duration"]
    return [
        pytest_run(suite, logs / f"split-group{group}.log", [*split_args, f"--group={group}"], env)
        for group in range(1, SHARDS + 1)
    ]


def judge_shards(shards: list[dict[str, Any]]) -> dict[str, Any]:
    ran = [test_id for shard in shards for test_id in shard["ran"]]
    return {
        "slowest_tests": max(shard["tests"] for shard in shards),
        "slowest_session": max(shard["session"] for shard in shards),
        "slowest_wall": max(shard["wall"] for shard in shards),
        "shard_tests": [shard["tests"] for shard in shards],
        "tests": [len(shard["ran"]) for shard in shards],
        "wrong": abs(len(ran) - TESTS) + len(ran) - len(set(ran)),
        "fixture_modules_per_shard": [
            len({t.split("::")[0] for t in shard["ran"] if "fixture" in t}) for shard in shards
        ],
    }


def real_runs(rounds: int) -> tuple[Section, list[Target]]:
    suite = DIRECTORY / "suite"
    (DIRECTORY / "logs").mkdir(parents=True, exist_ok=True)
    generate(suite)
    install_pytest_split()
    results: dict[str, list[dict[str, Any]]] = {"cachekit": [], "pytest-split": []}
    for number in range(rounds):
        print(f"round {number + 1} of {rounds}", file=sys.stderr, flush=True)
        results["cachekit"].append(judge_shards(cachekit_round(suite, number)))
        results["pytest-split"].append(judge_shards(pytest_split_round(suite, number)))
    section = Section(
        f"(a) {FIXTURE_MODULES} modules with a {SETUP:g} s module-scoped fixture and "
        f"{TINY_TESTS} tiny tests each, {PLAIN_MODULES} modules of {PLAIN_TESTS} tests of "
        f"{PLAIN_SECONDS * 1000:g} ms; {SHARDS} shards, each its own pytest process",
        [
            "tool",
            "slowest shard's tests",
            "/ ideal",
            "its session",
            "its process",
            "shards' tests (last round)",
            "tests per shard",
            "fixture modules per shard",
            "tests run twice or never",
        ],
    )
    ratios = {}
    for tool, judged in results.items():
        slowest = statistics.median(round_["slowest_tests"] for round_ in judged)
        ratios[tool] = slowest / IDEAL
        last = judged[-1]
        section.rows.append(
            [
                tool,
                fmt_seconds(slowest),
                f"{ratios[tool]:.3f}x",
                fmt_seconds(statistics.median(round_["slowest_session"] for round_ in judged)),
                fmt_seconds(statistics.median(round_["slowest_wall"] for round_ in judged)),
                ", ".join(f"{seconds:.2f} s" for seconds in last["shard_tests"]),
                ", ".join(map(str, last["tests"])),
                ", ".join(map(str, last["fixture_modules_per_shard"])),
                str(max(round_["wrong"] for round_ in judged)),
            ]
        )
    section.notes.append(
        f"ideal: {IDEAL:g} s per shard (every test and each setup once, over {SHARDS} "
        f"shards); medians of {rounds} rounds, each recording afresh. A shard's tests: from "
        "the end of collection to the end of the session (a conftest hook), what the split "
        "decides; its session: what pytest prints (collection too, about 0.6 s here for "
        "either tool); its process: interpreter start-up too"
    )
    section.notes.append(
        "cachekit: recorded by one `pytest --cache-url=DIR` run (the setups apart from the "
        "tests), shards `--num-shards=4 --shard-id=I` of one CI run (`CACHEKIT_RUN_ID`: the "
        "first shard stores the split plan); pytest-split 0.11.0: `--store-durations`, "
        "then `--splits 4 --group I --splitting-algorithm least_duration`"
    )
    section.data = {"ideal": IDEAL, "rounds": results, "ratios": ratios}
    targets = [
        Target(
            f"(a) cachekit: slowest of {SHARDS} shards / ideal (each setup once)",
            RATIO_LIMIT,
            "<=",
            "x",
            ratios["cachekit"],
        ),
        Target(
            "(a) cachekit: tests run twice or never over the shards, every round",
            0,
            "<=",
            "",
            float(max(round_["wrong"] for round_ in results["cachekit"])),
        ),
    ]
    return section, targets


# -- (b) a model of 10,000 tests -------------------------------------------------------


def model_suite(seed: int = 16) -> tuple[list[str], dict[str, float]]:
    """Test ids and durations (scoped setups included) of the synthetic suite."""
    rng = random.Random(seed)
    durations: dict[str, float] = {}
    for module in range(500):
        package = f"tests/pkg{module // 50}"
        path = f"{package}/test_{module}.py"
        if module % 50 == 0:
            durations[scoped_setup_key(package)] = rng.uniform(0.2, 1.0)
        if module % 3 == 0:
            durations[scoped_setup_key(path)] = rng.uniform(0.5, 5.0)
        for n in range(20):
            if module % 5 == 1 and n < 10:
                if n == 0:
                    durations[scoped_setup_key(f"{path}::TestClass")] = rng.uniform(0.2, 2.0)
                durations[f"{path}::TestClass::test_{n}"] = rng.lognormvariate(-1.5, 1.0)
            else:
                durations[f"{path}::test_{n}"] = rng.lognormvariate(-1.5, 1.0)
    return [test_id for test_id in durations if not test_id.startswith(SETUP_PREFIX)], durations


def as_recorded_per_test(ids: list[str], durations: dict[str, float]) -> dict[str, float]:
    """What a per-test recorder stores: each scope's setup in its first test's time."""
    per_test = {test_id: durations[test_id] for test_id in ids}
    for test_id in sorted(ids):
        for scope in scopes_of(test_id):
            key = scoped_setup_key(scope)
            if key in durations:
                per_test[test_id] += durations.pop(key)
    return per_test


def model(counts: Sequence[int]) -> tuple[Section, list[Target]]:
    ids, durations = model_suite()
    setups = sum(seconds for key, seconds in durations.items() if key.startswith(SETUP_PREFIX))
    section = Section(
        f"(b) {len(ids):,} synthetic tests with scoped fixtures (planned, no pytest)",
        [
            "shards",
            "ideal",
            "cachekit slowest",
            "/ ideal",
            "per-test LPT slowest",
            "/ ideal",
            "split time",
        ],
    )
    targets = []
    data: dict[str, Any] = {}
    for count in counts:
        ideal = (sum(durations[t] for t in ids) + setups) / count
        started = time.perf_counter()
        shards = split(ids, durations, count)
        seconds = time.perf_counter() - started
        slowest = max(loads(shards, durations))
        per_test = split(ids, as_recorded_per_test(ids, dict(durations)), count)
        naive = max(loads(per_test, durations))
        section.rows.append(
            [
                str(count),
                fmt_seconds(ideal),
                fmt_seconds(slowest),
                f"{slowest / ideal:.4f}x",
                fmt_seconds(naive),
                f"{naive / ideal:.3f}x",
                fmt_seconds(seconds),
            ]
        )
        data[str(count)] = {
            "ideal": ideal,
            "slowest": slowest,
            "per_test_slowest": naive,
            "split_seconds": seconds,
        }
        targets.append(
            Target(
                f"(b) {count} shards: planned slowest / ideal",
                MODEL_LIMIT,
                "<=",
                "x",
                slowest / ideal,
            )
        )
    section.notes.append(
        f"{len(ids):,} tests, {len(durations) - len(ids)} scoped setups "
        f"({setups:.0f} s of {sum(durations.values()):.0f} s); a shard pays each setup once "
        "if it runs any test of its scope; the per-test column counts what its shards pay"
    )
    section.data = data
    return section, targets


def run(*, rounds: int = ROUNDS, counts: Sequence[int] = MODEL_SHARDS) -> Report:
    report = Report("Shards that respect scoped fixtures")
    if rounds > 0:
        section, targets = real_runs(rounds)
        report.sections.append(section)
        report.targets.extend(targets)
    section, targets = model(counts)
    report.sections.append(section)
    report.targets.extend(targets)
    warning = busy_warning()
    if warning:
        report.sections[0].notes.append(warning)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of (a) ({ROUNDS})")
    parser.add_argument("--write", action="store_true", help="also write results/sharding.*")
    args = parser.parse_args(argv)
    command = SCRIPT_COMMAND + (f" --rounds {args.rounds}" if args.rounds != ROUNDS else "")
    report = run_alone("sharding", lambda: run(rounds=args.rounds), command, write=args.write)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
