"""An end-to-end demo: a small project tested as a sharded CI over several runs.

Every run of every shard starts on a fresh runner (an empty ``.pytest_cache``), as in CI;
a local directory plays the shared bucket. Watch ``--lf`` see failures that other shards
recorded and a fix on one shard clear a failure for all of them; shards split by the
durations the runs recorded, one split per CI run, reruns included; the test statistics;
and ``--skip-passed``
taking out the tests that already passed on exactly the same code.

    python3 examples/demo.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from cachekit import open_store
from cachekit.ci.layout import LASTFAILED_KEY, NODEIDS_KEY, PYTEST_SHARED_KEYS
from cachekit.ci.namespace import detect_namespace, namespaced_cache
from cachekit.values.merge import still_failing

#: The demo's project: per area of the shop, its behaviours (one test each) and how long
#: each test sleeps. Four slow tests, ten instant ones.
AREAS: dict[str, dict[str, float]] = {
    "cart": {"total": 0.0, "discount": 0.0, "empty": 0.0, "remove": 0.0},
    "prices": {"rounding": 0.0, "currency": 0.0, "tax": 0.15},
    "users": {"signup": 0.05, "login": 0.0, "logout": 0.0},
    "search": {"exact": 0.0, "fuzzy": 0.25, "paging": 0.0, "ranking": 0.6},
}
#: Seconds each test sleeps, by pytest node id.
SLEEPS = {
    f"test_{area}.py::test_{name}": seconds
    for area, behaviours in AREAS.items()
    for name, seconds in behaviours.items()
}
#: Only trusted CI holds the real one (docs/skip-passed.md, "Security").
SIGNING_KEY = "demo-signing-key-not-a-secret"
#: Variables that would make the runners see a real CI (or a developer's settings).
CI_MARKERS = ("GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "JENKINS_URL", "TF_BUILD")
SOURCE = '''\
"""The shop's {area} code: what the tests in test_{area}.py import."""

BROKEN = {broken!r}  # the behaviours this commit breaks


def works(behaviour: str) -> bool:
    return behaviour not in BROKEN
'''
RESULT_LINE = re.compile(r"^(PASSED|FAILED|ERROR|CACHED) (\S+::\S+)")


@attrs.define
class CI:
    """Where the demo's CI lives, and which run it is at."""

    workdir: Path
    project: Path
    store_url: str
    run: int = 0

    def environment(self) -> dict[str, str]:
        """What every runner of this run gets: the CI's variables, nothing of the
        machine's own CI or cachekit settings."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("CACHEKIT_", "PYTEST_")) and name not in CI_MARKERS
        }
        env["CACHEKIT_RUN_ID"] = str(self.run)  # what a CI system tells every shard
        env["CACHEKIT_SIGNING_KEY"] = SIGNING_KEY  # a secret of trusted CI jobs
        return env

    def commit(self, bugs: Sequence[str]) -> None:
        """Write the shop's code as of a commit that breaks ``bugs``."""
        for area, behaviours in AREAS.items():
            broken = tuple(name for name in behaviours if name in bugs)
            (self.project / "shop" / f"{area}.py").write_text(
                SOURCE.format(area=area, broken=broken)
            )


@attrs.frozen
class ShardRun:
    """What one shard's pytest printed, boiled down."""

    summary: str
    #: Node id -> PASSED, FAILED, ERROR or CACHED (the project's ini asks for ``-rA``).
    results: dict[str, str]

    def ran(self) -> list[str]:
        return sorted(test for test, result in self.results.items() if result != "CACHED")

    def cached(self) -> int:
        found = re.search(r"(\d+) cached", self.summary)
        return int(found[1]) if found else 0

    def sleep(self) -> float:
        """What this shard's tests cost, by what they sleep."""
        return sum(SLEEPS[test] for test in self.ran())


def write_project(root: Path) -> None:
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "__init__.py").write_text('"""The demo\'s code under test."""\n')
    # The project's root for every runner; -rA: a line per test, which the demo reads.
    (root / "pytest.ini").write_text("[pytest]\naddopts = -q -rA\n")
    for area, behaviours in AREAS.items():
        tests = "".join(
            f"\n\ndef test_{name}():\n"
            + (f"    time.sleep({seconds})\n" if seconds else "")
            + f"    assert {area}.works({name!r}), '{name} is broken in shop/{area}.py'\n"
            for name, seconds in behaviours.items()
        )
        imports = "import time\n\n" if any(behaviours.values()) else ""
        (root / f"test_{area}.py").write_text(f"{imports}from shop import {area}\n{tests}")


def shown(ci: CI, args: Sequence[str]) -> str:
    """A command line as a user would type it."""
    return " ".join(arg.replace(ci.store_url, "$STORE") for arg in args)


def run(ci: CI, shards: Mapping[str, Sequence[str]]) -> list[ShardRun]:
    """One CI run: its shards at the same time, each on a fresh runner (a copy of the
    project with no .pytest_cache); then what each printed, in shard order."""
    started = []
    for shard, args in shards.items():
        runner = ci.workdir / f"runner-{shard}"
        shutil.rmtree(runner, ignore_errors=True)
        shutil.copytree(ci.project, runner)
        typed = ["pytest", f"--cache-url={ci.store_url}", *args]
        with (runner / "output.txt").open("w") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", *typed],
                cwd=runner,
                env=ci.environment(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        started.append((shard, typed, runner / "output.txt", process))
    shard_runs = []
    for shard, typed, output_path, process in started:
        process.wait()
        lines = [line for line in output_path.read_text().splitlines() if line.strip()]
        results = {}
        for line in lines:
            match = RESULT_LINE.match(line)
            if match:
                results[match[2]] = match[1]
        shard_run = ShardRun(summary=lines[-1] if lines else "(no output)", results=results)
        print(f"    shard {shard} $ {shown(ci, typed)}")
        for line in lines:
            if line.startswith("cachekit"):  # the plugin's report after collection
                print(textwrap.fill(line, 100, initial_indent=" " * 8, subsequent_indent=" " * 10))
        print(f"        -> {shard_run.summary}")
        shard_runs.append(shard_run)
    return shard_runs


def run_split(ci: CI, *args: str) -> list[ShardRun]:
    """A run whose two shards pick their tests with the plugin's ``--num-shards``."""
    return run(ci, {str(i): ["--num-shards=2", f"--shard-id={i}", *args] for i in (0, 1)})


def show_split(shards: Sequence[ShardRun]) -> str:
    """Each shard's tests and what they cost by the tests' sleeps."""
    for index, shard in enumerate(shards):
        print(f"    shard {index + 1}/2: {tests(len(shard.ran()))}, {shard.sleep():.2f} s of sleep")
    return " and ".join(f"{tests(len(shard.ran()))} ({shard.sleep():.2f} s)" for shard in shards)


def tests(count: int) -> str:
    return f"{count} test" if count == 1 else f"{count} tests"


def show_ran(shards: Sequence[ShardRun]) -> list[str]:
    """The tests that ran (not cached) on any shard."""
    ran = sorted(test for shard in shards for test in shard.ran())
    print(
        textwrap.fill(
            f"ran: {', '.join(ran)}", 96, initial_indent="    ", subsequent_indent="         "
        )
    )
    return ran


def cachekit(ci: CI, *args: str) -> str:
    """Run the ``cachekit`` command as a user would, and show what it printed."""
    print(f"    $ cachekit {shown(ci, args)}")
    result = subprocess.run(
        [sys.executable, "-m", "cachekit", *args],
        env=ci.environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"cachekit {args[0]} failed: {result.stderr.strip()}")
    print(textwrap.indent(result.stdout.rstrip(), "      "))
    return result.stdout


def show_store(ci: CI) -> None:
    """What every shard will read next: the merged values, as the plugin reads them."""
    store = open_store(ci.store_url)
    namespace = detect_namespace(ci.environment())  # the same on every shard of this demo
    merged = namespaced_cache(store, namespace).read_merged_many(PYTEST_SHARED_KEYS)
    lastfailed, nodeids = merged[LASTFAILED_KEY], merged[NODEIDS_KEY]
    print(f"    The store holds {len(store.list())} objects under {namespace.prefix}/.")
    print(f"    Merged from {len(lastfailed.parts)} parts: {len(nodeids.value)} known tests,")
    print(f"    still failing: {sorted(still_failing(lastfailed.value))}")


def heading(title: str, explanation: str) -> None:
    print(f"\n== {title}\n" + textwrap.indent(textwrap.fill(explanation, 88), "   "))


def step(ci: CI, title: str, explanation: str) -> None:
    """A new CI run: its heading and a few lines of why."""
    ci.run += 1
    heading(f"Run {ci.run}: {title}", explanation)


def lf_across_shards(ci: CI) -> None:
    """Runs 1-4: shards of hand-picked files, failures that move, --lf, a fix."""
    shard_a = ["test_cart.py", "test_prices.py"]
    shard_b = ["test_users.py", "test_search.py"]
    step(
        ci,
        "two shards, two bugs",
        "Shard A runs the cart and price tests, shard B the user and search tests. "
        "Two behaviours are broken: the cart total and fuzzy search. Each shard writes "
        "what it saw as its own immutable part of the shared store.",
    )
    run(ci, {"A": ["--cache-shard=A", *shard_a], "B": ["--cache-shard=B", *shard_b]})
    show_store(ci)

    step(
        ci,
        "fresh runners, files moved between shards, --lf",
        "The shards swapped their files, and each runner starts with an empty "
        ".pytest_cache. With --lf each shard still runs exactly the failures recorded "
        "by the OTHER shard in run 1: the cache came from the store, merged.",
    )
    run(
        ci, {"A": ["--cache-shard=A", "--lf", *shard_b], "B": ["--cache-shard=B", "--lf", *shard_a]}
    )

    step(
        ci,
        "the cart total is fixed",
        "A commit fixes the cart total (shop/cart.py). Shard B runs the cart tests and "
        "sees it pass; fuzzy search still fails on shard A. The pass on one shard clears "
        "the failure for every shard, while the failure seen in the latest run that ran "
        "it stays.",
    )
    ci.commit(["fuzzy"])
    run(ci, {"A": ["--cache-shard=A", *shard_b], "B": ["--cache-shard=B", *shard_a]})
    show_store(ci)

    step(
        ci,
        "--lf again",
        "Only fuzzy search is left. Shard B reruns just that test. Shard A has no recorded "
        "failure among its files, so pytest runs them all (its --lfnf=all default).",
    )
    run(
        ci, {"A": ["--cache-shard=A", "--lf", *shard_a], "B": ["--cache-shard=B", "--lf", *shard_b]}
    )


def balanced_shards(ci: CI) -> tuple[str, str, str]:
    """Runs 5-6: the plugin splits the tests by duration, one split per CI run."""
    step(
        ci,
        "the plugin picks each shard's tests: --num-shards=2 --shard-id=I",
        "Each shard asks for its part of the whole suite. The first to start stores the "
        "durations that runs 1-4 recorded as this CI run's split plan, and both split by "
        "it: longest first, each onto the shard with the least time so far. Search ranking "
        "(0.6 s) gets a shard of its own, the other 13 tests (0.45 s) the other: the run "
        "waits about 0.6 s, where a split by count would wait 1 s.",
    )
    first = show_split(run_split(ci))
    heading(
        "The workflow's final job: cachekit compact",
        "After the shards, a final job (docs/ci.md) folds every shard's parts into one "
        "base per key: the next run reads less.",
    )
    prefix = cachekit(ci, "namespace", "--get", "ref_prefix").strip()
    cachekit(ci, "compact", f"--url={ci.store_url}", f"--prefix={prefix}")
    heading(
        f"Run {ci.run} again: CI reruns the failed shard 2/2",
        "Fuzzy search failed on shard 2/2, and CI reruns that shard. The final job has "
        "changed the durations since, but the rerun belongs to the same CI run: it splits "
        "by that run's plan and runs exactly the tests its first attempt ran.",
    )
    (rerun,) = run(ci, {"1": ["--num-shards=2", "--shard-id=1"]})
    print(f"    shard 2/2 again: {tests(len(rerun.ran()))}, {rerun.sleep():.2f} s of sleep")
    step(
        ci,
        "a new CI run, its own split plan",
        "A new run stores its own plan: the compacted durations of runs 1-5.",
    )
    second = show_split(run_split(ci))
    return first, f"{tests(len(rerun.ran()))} ({rerun.sleep():.2f} s)", second


def statistics(ci: CI) -> str:
    """The statistics every run recorded, as ``cachekit stats summary`` shows them."""
    heading(
        "The statistics summary: cachekit stats summary",
        "Every run with a store also recorded each test's outcome and duration. The "
        "summary reads the runners' namespace (the local default here; CI sets it with "
        "CACHEKIT_* variables) and shows the latest run, both shards: totals per file, "
        "the failed tests with their message, the flaky ones (passed on a rerun; none "
        "here) and the slowest.",
    )
    printed = cachekit(ci, "stats", "summary", f"--url={ci.store_url}", "--top=3")
    failed = re.findall(r"^  (\S+)  failed:", printed, re.MULTILINE)
    slowest = re.findall(r"^slowest \(\d+\):\n  (\S+)", printed, re.MULTILINE)
    return f"slowest {', '.join(slowest)}; failing {', '.join(failed)}"


def skip_passed(ci: CI) -> tuple[str, str]:
    """Runs 7-9: --skip-passed records signed passes, skips them, reruns what changed."""
    step(
        ci,
        "--skip-passed records what passed",
        "With --skip-passed each test file gets a key: a hash of its code, what it "
        "imports (shop/<area>.py), the conftests, the interpreter and the packages. Each "
        "test that passes is recorded under its key, signed with CACHEKIT_SIGNING_KEY, "
        "a secret only trusted CI holds (set for every runner here). None recorded yet.",
    )
    run_split(ci, "--skip-passed")

    step(
        ci,
        "--skip-passed on unchanged code",
        "Each shard takes its part of the split, then takes out every test that passed "
        "before with the same key: counted as cached, not run. Only fuzzy search, still "
        "failing, runs. (Shards skip test by test; whole files only on unsharded runs.)",
    )
    shards = run_split(ci, "--skip-passed")
    unchanged = (
        f"{sum(shard.cached() for shard in shards)} cached, ran {', '.join(show_ran(shards))}"
    )

    step(
        ci,
        "a commit fixes fuzzy search in shop/search.py",
        "Only test_search.py imports shop/search.py, so only its four tests have a new "
        "key and run again; the ten other tests stay cached. Fuzzy search passes, and "
        "nothing is failing any more.",
    )
    ci.commit([])
    shards = run_split(ci, "--skip-passed")
    ran = show_ran(shards)
    files = sorted({test.partition("::")[0] for test in ran})
    cached = sum(shard.cached() for shard in shards)
    changed = f"{cached} cached, ran {tests(len(ran))} of {', '.join(files)}"
    show_store(ci)
    return unchanged, changed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--keep", type=Path, help="work in DIR and keep it, instead of a temporary directory"
    )
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="cachekit-demo-"))
    project = workdir / "project"
    store = workdir / "shared-store"
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    write_project(project)
    # A local directory plays the shared bucket: the default backend, no account needed.
    ci = CI(workdir, project, str(store))
    ci.commit(["total", "fuzzy"])
    heading(
        "A small shop's test suite (14 tests in 4 files), tested as a sharded CI",
        "Each run's two shards run at the same time, each on a fresh runner: a copy of "
        "the project with an empty .pytest_cache. What they share goes through a local "
        "directory that plays the bucket: $STORE below. Every command shown runs for real.",
    )
    print(f"    STORE={ci.store_url}")

    lf_across_shards(ci)
    by_duration, rerun, next_run = balanced_shards(ci)
    summary = statistics(ci)
    unchanged, changed = skip_passed(ci)

    heading(
        "Recap",
        "Runs 1-4: every fresh runner saw the failures that any shard had recorded "
        "(--lf), and a fix seen on one shard cleared the failure for all of them.",
    )
    print(f"    shards by duration (run 5): {by_duration}")
    print(f"    rerun of shard 2/2 (run 5): {rerun}")
    print(f"    shards of run 6:            {next_run}")
    print(f"    cachekit stats summary:     {summary}")
    print(f"    skip-passed, same code:     {unchanged}")
    print(f"    skip-passed, search fixed:  {changed}")
    if args.keep:
        print(f"\nThe shared store is a plain directory: {ci.store_url}")
    else:
        shutil.rmtree(workdir)
        print(f"\nRemoved {workdir}; keep everything with --keep DIR.")


if __name__ == "__main__":
    main()
