"""LocalStore against the bare file-system recipes it wraps, 1 KiB values.

Why these baselines: the local directory is the default backend, used on every
developer's machine, so what it adds over doing the same thing by hand (key validation,
the root check, the directory lock, the version token) must stay small. The baselines are
the minimum any correct implementation must do:

- write: temp file in the same directory, write, flush, fsync, ``os.replace``, fsync the
  directory (the atomic, durable recipe from DESIGN.md);
- read: open, read, close.

Targets (from the issue): ``LocalStore.put`` within 1.5x of the write recipe, and
``LocalStore.get`` within 1.5x of the bare read, as the median of interleaved rounds.

Run alone: ``python benchmarks/bench_local.py`` (``--write`` also saves
``results/local.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    WORK_DIR,
    Comparison,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    interleave,
    machine_info,
    print_report,
    write_results,
)
from cachekit import LocalStore

VALUE_SIZE = 1024
RATIO_LIMIT = 1.5
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


def bare_atomic_write(path: str, data: bytes, temp_name: str, *, durable: bool = True) -> None:
    """The recipe LocalStore.put implements, with nothing else around it."""
    directory = os.path.dirname(path)
    temp = os.path.join(directory, temp_name)
    with open(temp, "xb") as file:
        file.write(data)
        file.flush()
        if durable:
            os.fsync(file.fileno())
    os.replace(temp, path)
    if durable:
        fd = os.open(directory, _DIRECTORY_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def bare_read(path: str) -> bytes:
    """Open, read, close: the least a read can do."""
    with open(path, "rb") as file:
        return file.read()


def compare_put(root: Path, *, durable: bool, rounds: int, ops: int) -> Comparison:
    """LocalStore.put versus the recipe, each overwriting its own ``ops`` existing files.

    Both sides overwrite files that already exist in a directory that already exists,
    the steady state of a cache; the warm-up rounds create them.
    """
    store = LocalStore(root / "store", durable=durable)
    keys = [f"bench/put/k{i:03d}" for i in range(ops)]
    bare_directory = root / "bare" / "bench" / "put"
    bare_directory.mkdir(parents=True)
    bare_paths = [str(bare_directory / f"k{i:03d}") for i in range(ops)]
    data = os.urandom(VALUE_SIZE)
    counter = itertools.count()

    def with_store() -> None:
        for key in keys:
            store.put(key, data)

    def by_hand() -> None:
        for path in bare_paths:
            bare_atomic_write(path, data, f".tmp-{next(counter)}", durable=durable)

    label = "" if durable else " (durable=False, no fsync)"
    return interleave(
        f"put 1 KiB{label}",
        with_store,
        by_hand,
        a_label="LocalStore.put",
        b_label="temp+write+flush+fsync+replace+fsync(dir)" if durable else "temp+write+replace",
        rounds=rounds,
        ops_per_sample=ops,
    )


def compare_get(root: Path, *, rounds: int, ops: int) -> Comparison:
    """LocalStore.get versus open/read/close of the very same files (same page cache)."""
    store = LocalStore(root / "store")
    keys = [f"bench/get/k{i:03d}" for i in range(ops)]
    for key in keys:
        store.put(key, os.urandom(VALUE_SIZE))
    paths = [str(root / "store" / key) for key in keys]

    def with_store() -> None:
        for key in keys:
            store.get(key)

    def by_hand() -> None:
        for path in paths:
            bare_read(path)

    return interleave(
        "get 1 KiB",
        with_store,
        by_hand,
        a_label="LocalStore.get",
        b_label="open+read+close",
        rounds=rounds,
        ops_per_sample=ops,
    )


def run(directory: Path | None = None, *, scale: float = 1.0) -> Report:
    """Run the local comparisons in a fresh scratch directory under ``directory``."""
    parent = directory or WORK_DIR
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="local-", dir=parent))
    try:
        put = compare_put(root / "durable", durable=True, rounds=int(150 * scale), ops=10)
        put_fast = compare_put(root / "fast", durable=False, rounds=int(150 * scale), ops=20)
        get = compare_get(root / "get", rounds=int(300 * scale), ops=100)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report = Report("Local directory, 1 KiB values")
    section = Section(
        "Local directory: LocalStore vs bare file-system calls (1 KiB, interleaved)",
        ["operation", "A", "B", "A median", "B median", "median A/B", "A/B p10-p90", "n"],
    )
    for comparison in (put, get, put_fast):
        summary = comparison.summary()
        section.rows.append(
            [
                comparison.name,
                comparison.a_label,
                comparison.b_label,
                fmt_seconds(comparison.a_median),
                fmt_seconds(comparison.b_median),
                f"{comparison.median_ratio:.2f}x",
                f"{summary['ratio_p10']:.2f}-{summary['ratio_p90']:.2f}",
                f"{summary['rounds']} rounds x {summary['ops_per_sample']}",
            ]
        )
        section.data[comparison.name] = summary
    section.notes += [
        f"Scratch directory on {machine_info(parent)['local_dir_filesystem']}.",
        "The ratio is the median of per-round ratios; rounds alternate which side runs "
        "first. The durable=False row is for information (no target): it shows the "
        "Python-level overhead that the fsyncs otherwise hide.",
    ]
    warning = busy_warning()
    if warning:
        section.notes.append(warning)
    report.sections.append(section)
    report.targets += [
        Target("local put ≤ 1.5x atomic-write recipe", RATIO_LIMIT, "<=", "x", put.median_ratio),
        Target("local get ≤ 1.5x bare read", RATIO_LIMIT, "<=", "x", get.median_ratio),
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"scratch parent (default {WORK_DIR})"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of rounds")
    parser.add_argument("--write", action="store_true", help="also write results/local.md/.json")
    args = parser.parse_args(argv)
    report = run(args.dir, scale=args.scale)
    print_report(report)
    if args.write:
        command = ".venv/bin/python benchmarks/bench_local.py --write"
        machine = machine_info(args.dir or WORK_DIR)
        paths = write_results("local", report.name, [report], machine, command)
        print("wrote", *paths)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
