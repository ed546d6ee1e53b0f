"""A simulated CI history with known flaky, broken and fixed tests (issue 16's target).

Shared by ``bench_flaky.py`` and ``tests/test_stats_flaky.py``, so the benchmark's
committed result and the test judge one history. Deterministic for a seed. By default:
50 CI runs of 500 tests in 10 files, each run two shards, 5 runs per commit (pushes,
retries, schedules on one commit), every run after its predecessor:

- 5 flaky tests fail now and then (30%), sometimes pass only on a rerun; each is forced
  to fail and to pass on one commit at least, so the history shows it;
- 5 broken tests: 3 fail every time, 2 pass until a commit breaks them and fail since;
- 5 fixed tests fail every time until a commit fixes them and pass since;
- 10 tests are always skipped; the rest always pass.

A shard where a test failed is retried (same run id, shard and commit, a few minutes
later) half the time, as a CI's "rerun failed jobs": its flaky tests roll again, its
broken ones fail again.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import attrs

from cachekit.stats.junit import CaseOutcome, TestCase
from cachekit.stats.runs import Run

#: Test files, each of consecutive tests.
FILES = 10
FAIL_RATE = 0.3
RERUN_RATE = 0.3


@attrs.frozen
class History:
    """Which tests are which, and the runs (`runs`: generated again on each call, oldest
    first, so a large history need not be held)."""

    flaky: frozenset[str]
    broken: frozenset[str]
    fixed: frozenset[str]
    commits: int
    ci_runs: int
    tests: int
    seed: int
    runs_per_commit: int
    start: float

    def runs(self) -> Iterator[Run]:
        """The stored runs (one per shard and attempt), oldest first."""
        return _runs(self)


def simulate(
    *,
    runs: int = 50,
    tests: int = 500,
    per_kind: int = 5,
    runs_per_commit: int = 5,
    start: float = 1.7e9,
    seed: int = 16,
) -> History:
    """The history (see the module's docstring); ``start`` is the first run's time."""
    _ids, kinds, _skipped = _plan(tests, per_kind, seed)
    return History(
        flaky=frozenset(_test_id(tests, n) for n in kinds[0]),
        broken=frozenset(_test_id(tests, n) for n in kinds[1]),
        fixed=frozenset(_test_id(tests, n) for n in kinds[2]),
        commits=max(1, -(-runs // runs_per_commit)),
        ci_runs=runs,
        tests=tests,
        seed=seed,
        runs_per_commit=runs_per_commit,
        start=start,
    )


def _plan(tests: int, per_kind: int, seed: int) -> tuple[random.Random, list[set[int]], set[int]]:
    rng = random.Random(seed)
    order = list(range(tests))
    rng.shuffle(order)
    kinds = [set(order[k * per_kind : (k + 1) * per_kind]) for k in range(3)]
    skipped = set(order[3 * per_kind : 3 * per_kind + 10])
    return rng, kinds, skipped


def _runs(history: History) -> Iterator[Run]:
    tests, runs, runs_per_commit = history.tests, history.ci_runs, history.runs_per_commit
    per_kind = len(history.flaky)
    rng, (flaky, broken, fixed), skipped = _plan(tests, per_kind, history.seed)
    commits = history.commits
    # When each broken test starts failing (0: always) and each fixed one stops.
    broken_from = {
        n: (0 if k < 3 else rng.randrange(1, commits)) for k, n in enumerate(sorted(broken))
    }
    fixed_at = {n: rng.randrange(1, commits) for n in sorted(fixed)}
    # Each flaky test fails on one run of some commit and passes on another of it.
    forced: dict[tuple[int, int], CaseOutcome] = {}
    for n in sorted(flaky):
        commit = rng.randrange(commits)
        first = commit * runs_per_commit
        last = min(runs, first + runs_per_commit) - 1
        fail_run, pass_run = rng.sample(range(first, last + 1), 2)
        forced[(fail_run, n)], forced[(pass_run, n)] = "failed", "passed"
    unusual = flaky | broken | fixed | skipped

    def outcome(run: int, commit: int, n: int, retry: bool) -> tuple[CaseOutcome, int]:
        if n in skipped:
            return "skipped", 0
        if n in broken:
            return ("failed" if commit >= broken_from[n] else "passed"), 0
        if n in fixed:
            return ("failed" if commit < fixed_at[n] else "passed"), 0
        if not retry and (run, n) in forced:
            return forced[(run, n)], 0
        if rng.random() < FAIL_RATE:
            if rng.random() < RERUN_RATE:
                return "passed", 1  # failed, then passed on a rerun
            return "failed", 0
        return "passed", 0

    for run in range(runs):
        commit = run // runs_per_commit
        sha = f"{commit:04x}" + "c0ffee" * 6
        for shard, members in _shards(tests):
            retried = rng.random() < 0.5
            failed = False
            for retry in (False, True):
                if retry and not (retried and failed):
                    break  # nothing failed, or no one retried the job
                cases = []
                for n in members:
                    result, reruns = outcome(run, commit, n, retry) if n in unusual else _PASS
                    file, name = _file_name(tests, n)
                    cases.append(
                        TestCase(
                            file=file,
                            classname=file[:-3].replace("/", "."),
                            name=name,
                            outcome=result,
                            duration=0.001 * (1 + n % 7),
                            reruns=reruns,
                            message=f"assert {name} failed (run {run})"
                            if result == "failed"
                            else "",
                        )
                    )
                    failed = failed or result == "failed"
                yield Run(
                    id=f"run-{run}-{shard}-{int(retry)}",
                    at=history.start + run * 3600 + (600 if retry else 0),
                    run_id=f"ci-{run}",
                    source="simulated",
                    label="simulated",
                    cases=tuple(cases),
                    shard=f"{shard}/2",
                    commit=sha,
                )


_PASS: tuple[CaseOutcome, int] = ("passed", 0)


def _shards(tests: int) -> Iterator[tuple[int, range]]:
    yield 1, range(0, tests, 2)
    yield 2, range(1, tests, 2)


def _file_name(tests: int, n: int) -> tuple[str, str]:
    return f"tests/test_m{n * FILES // tests}.py", f"test_{n}"  # a file's tests together


def _test_id(tests: int, n: int) -> str:
    file, name = _file_name(tests, n)
    return f"{file}::{name}"
