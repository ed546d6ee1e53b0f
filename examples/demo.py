"""An end-to-end demo: a small project tested as a sharded CI over several runs.

Every run of every shard starts on a fresh runner (an empty ``.pytest_cache``), as in CI;
a local directory plays the shared bucket. Watch ``--lf`` see failures that other shards
recorded, and a fix on one shard clear a failure for all of them.

    python3 examples/demo.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from cachekit import open_store
from cachekit.ci import detect_namespace, namespaced_cache
from cachekit.layout import LASTFAILED_KEY, NODEIDS_KEY, PYTEST_SHARED_KEYS
from cachekit.merge import still_failing

TEST_FILES = {
    "test_cart.py": ["total", "discount", "empty", "remove"],
    "test_prices.py": ["rounding", "currency", "tax"],
    "test_users.py": ["signup", "login", "logout"],
    "test_search.py": ["exact", "fuzzy", "paging", "ranking"],
}
CONFTEST = '''
import pathlib
import pytest

@pytest.fixture
def bugs():
    """The demo's "code": a file listing the behaviours that are broken in this commit."""
    return pathlib.Path(__file__).with_name("bugs.txt").read_text().split()
'''


def write_project(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (root / "pytest.ini").write_text("[pytest]\n")  # the project's root, for every runner
    for filename, behaviours in TEST_FILES.items():
        tests = "".join(
            f"\ndef test_{name}(bugs):\n    assert {name!r} not in bugs\n" for name in behaviours
        )
        (root / filename).write_text(tests)


def run_shard(ci: CI, shard: str, files: list[str], *extra: str) -> None:
    """Run one shard on a fresh runner: a copy of the project with no .pytest_cache."""
    runner = ci.workdir / f"runner-{shard}"
    shutil.rmtree(runner, ignore_errors=True)
    shutil.copytree(ci.project, runner)
    (runner / "bugs.txt").write_text("\n".join(ci.bugs))
    command = [
        sys.executable, "-m", "pytest", "-q",
        f"--cache-url={ci.store_url}", f"--cache-shard={shard}", *extra, *files,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=runner, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else result.stderr.strip()
    print(f"    shard {shard} ({' '.join([*extra, *files])}): {summary}")


@dataclasses.dataclass
class CI:
    """Where the demo's CI lives, and which behaviours the current commit breaks."""

    workdir: Path
    project: Path
    store_url: str
    bugs: list[str]


def show_store(store_url: str) -> None:
    """What every shard will read next: the merged values, as the plugin reads them."""
    store = open_store(store_url)
    namespace = detect_namespace()  # the same on every shard of this demo
    merged = namespaced_cache(store, namespace).read_merged_many(PYTEST_SHARED_KEYS)
    lastfailed, nodeids = merged[LASTFAILED_KEY], merged[NODEIDS_KEY]
    print(f"    The store holds {len(store.list())} objects under {namespace.prefix}/.")
    print(f"    Merged from {len(lastfailed.parts)} parts: {len(nodeids.value)} known tests,")
    print(f"    still failing: {sorted(still_failing(lastfailed.value))}")


def step(title: str, explanation: str) -> None:
    print(f"\n== {title}\n" + textwrap.indent(textwrap.fill(explanation, 88), "   "))


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
    shutil.rmtree(project, ignore_errors=True)
    write_project(project)
    # A local directory plays the shared bucket: the default backend, no account needed.
    ci = CI(workdir, project, str(workdir / "shared-store"), bugs=["total", "fuzzy"])
    shard_a = ["test_cart.py", "test_prices.py"]
    shard_b = ["test_users.py", "test_search.py"]

    step(
        "Run 1: two shards, two bugs",
        "Shard A runs the cart and price tests, shard B the user and search tests. "
        "Two behaviours are broken: the cart total and fuzzy search. Each shard writes "
        "what it saw as its own immutable part of the shared store.",
    )
    run_shard(ci, "A", shard_a)
    run_shard(ci, "B", shard_b)
    show_store(ci.store_url)

    step(
        "Run 2: fresh runners, files moved between shards, --lf",
        "The shards swapped their files, and each runner starts with an empty "
        ".pytest_cache. With --lf each shard still runs exactly the failures recorded "
        "by the OTHER shard in run 1: the cache came from the store, merged.",
    )
    run_shard(ci, "A", shard_b, "--lf")
    run_shard(ci, "B", shard_a, "--lf")

    step(
        "Run 3: the cart total is fixed",
        "A commit fixes the cart total. Shard B runs the cart tests and sees it pass; "
        "fuzzy search still fails on shard A. The pass on one shard clears the failure "
        "for every shard, while the failure seen in the latest run that ran it stays.",
    )
    ci.bugs = ["fuzzy"]
    run_shard(ci, "A", shard_b)
    run_shard(ci, "B", shard_a)
    show_store(ci.store_url)

    step(
        "Run 4: --lf again",
        "Only fuzzy search is left. Shard B reruns just that test. Shard A has no recorded "
        "failure among its files, so pytest runs them all (its --lfnf=all default).",
    )
    run_shard(ci, "A", shard_a, "--lf")
    run_shard(ci, "B", shard_b, "--lf")

    print(f"\nThe shared store is a plain directory: {ci.store_url}")
    if not args.keep:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
