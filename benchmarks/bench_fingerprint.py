"""Test-file keys (`cachekit.skip.fingerprint`) on a generated 2,000-module project.

Why: the pytest plugin computes a key for every test file before it can skip anything,
on every run. A warm run (unchanged code, the analysis cache file from the previous
run) must cost well under a second, or skipping tests that already passed stops paying
for itself on small suites. The cold run (no cache file: every file read, hashed and
parsed) happens once per checkout and is reported for information.

Workload (generated once per run, seeded, under ``benchmarks/.work/fingerprint-project``):
``src/bench/`` holds 20 packages of 10 subpackages of 10 modules (2,000 modules, plus 221
``__init__.py`` files), each module 40 to 80 lines with 5 to 10 imports: mostly from its
own subpackage (``from . import m``, ``from .m import f``), some from sibling
subpackages (``from ..sub import m``) and other packages (absolute ``import`` and
``from ... import``), about 3% against the layering (so the graph has cycles), plus
standard-library and third-party imports, some inside functions or ``if TYPE_CHECKING``.
``tests/`` holds 200 test files (one per subpackage, 2 to 5 imports each) under a
conftest per package and one at the top. File times are set an hour back, as in a
checkout that is not brand new (files modified in the last 2 seconds are not trusted
from the cache file).

Phases, each with a new `Fingerprinter` (as a new pytest process would create), timing
``environment_key()`` plus ``file_key()`` of every test file (the installed
distributions are scanned inside that time):

- cold: no cache file; then ``save()`` (timed separately);
- warm: the cache file from the cold run, ``--rounds`` times (default 5); the target is
  on the median, the slowest is shown beside it;
- one edit: a module at the top of the layering (the last one generated) gains a
  statement, then a warm run: shows that exactly one file is read again and how many
  keys change;
- warm in a new process: the same as warm, timed inside a fresh interpreter (imports of
  cachekit and of the plugin's dependencies excluded), for information.

Every warm run must read no file and give the cold run's keys.

Run alone: ``python benchmarks/bench_fingerprint.py`` (``--rounds N``, ``--write`` also
saves ``results/fingerprint.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    PROJECT_DIR,
    WORK_DIR,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    gc_paused,
    machine_info,
    print_report,
    write_results,
)
from cachekit.skip.fingerprint import Fingerprinter, KeyInputs

PACKAGES = 20
SUBPACKAGES = 10
MODULES = 10
#: The first packages, which the others import most.
CORE = 4
WARM_LIMIT = 1.0
SEED = 20260101
HOUR_AGO = time.time() - 3600


# -- the generated project ----------------------------------------------------------------


def module_name(package: int, sub: int, module: int) -> str:
    return f"bench.pkg{package:02d}.sub{sub}.mod{module}"


def generate(root: Path) -> list[Path]:
    """Write the project under ``root`` (replacing it); return the test files."""
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(SEED)
    files: dict[str, str] = {
        "pyproject.toml": '[project]\nname = "bench"\nversion = "0"\n',
        "conftest.py": "import pytest\n\n\n@pytest.fixture\ndef top():\n    return 1\n",
        "src/bench/__init__.py": '"""The generated project."""\n\nVERSION = "0"\n',
        "tests/conftest.py": "import pytest\n\nfrom bench import VERSION\n",
    }
    for package in range(PACKAGES):
        package_dir = f"src/bench/pkg{package:02d}"
        files[f"{package_dir}/__init__.py"] = f'"""Package {package}."""\n'
        files[f"tests/pkg{package:02d}/conftest.py"] = (
            f"import pytest\n\nfrom bench.pkg{package:02d} import sub0\n"
        )
        for sub in range(SUBPACKAGES):
            init = "from . import mod0\n" if sub % 3 == 0 else ""
            files[f"{package_dir}/sub{sub}/__init__.py"] = f'"""Subpackage {sub}."""\n{init}'
            for module in range(MODULES):
                name = f"{package_dir}/sub{sub}/mod{module}.py"
                files[name] = module_source(rng, package, sub, module)
            files[f"tests/pkg{package:02d}/test_sub{sub}.py"] = source_of_test(rng, package, sub)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in root.rglob("*"):
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    return sorted(root.glob("tests/pkg*/test_*.py"))


def module_source(rng: random.Random, package: int, sub: int, module: int) -> str:
    imports = ["from __future__ import annotations", "", "import os", "import json"]
    lazy = []
    for _ in range(rng.randint(5, 10)):
        roll = rng.random()
        if roll < 0.03:  # against the layering, within the subpackage: cycles
            target = (package, sub, rng.randrange(MODULES))
        elif roll < 0.6 and module > 0:
            target = (package, sub, rng.randrange(module))
        elif roll < 0.85 and sub > 0:
            target = (package, rng.randrange(sub), rng.randrange(MODULES))
        elif package > 0:  # lower packages, the core ones (the first four) most
            lower = rng.randrange(min(package, CORE) if rng.random() < 0.7 else package)
            target = (lower, rng.randrange(SUBPACKAGES), rng.randrange(MODULES))
        else:
            continue
        if target == (package, sub, module):
            continue
        imports.append(import_line(rng, (package, sub, module), target))
    if rng.random() < 0.3:
        lazy.append("    import attrs  # third party, inside a function")
    if rng.random() < 0.2:
        imports += ["from typing import TYPE_CHECKING", "", "if TYPE_CHECKING:"]
        imports.append("    from collections.abc import Sequence")
    body = []
    for index in range(rng.randint(6, 12)):
        body += [
            "",
            "",
            f"def function_{index}(value: int) -> int:",
            f'    """Function {index} of module {module}."""',
            *lazy,
            f"    total = value * {index + 1}",
            "    for step in range(3):",
            "        total += step",
            "    return total",
        ]
    return "\n".join(imports + body) + "\n"


def import_line(rng: random.Random, here: tuple[int, int, int], target: tuple[int, ...]) -> str:
    package, sub, module = target
    if target[:2] == here[:2]:
        return rng.choice([f"from . import mod{module}", f"from .mod{module} import function_0"])
    if target[0] == here[0]:
        return rng.choice(
            [
                f"from ..sub{sub} import mod{module}",
                f"from ..sub{sub}.mod{module} import function_1",
            ]
        )
    name = module_name(package, sub, module)
    parent, _, leaf = name.rpartition(".")
    return rng.choice([f"import {name}", f"from {parent} import {leaf}"])


def source_of_test(rng: random.Random, package: int, sub: int) -> str:
    lines = ["import pytest", ""]
    for _ in range(rng.randint(2, 5)):
        target_package = package if rng.random() < 0.8 else rng.randrange(PACKAGES)
        name = module_name(target_package, rng.randrange(SUBPACKAGES), rng.randrange(MODULES))
        lines.append(f"import {name}")
    lines += ["", "", "def test_it():", "    assert True", ""]
    return "\n".join(lines)


# -- timing ---------------------------------------------------------------------------------


class CountingFingerprinter(Fingerprinter):
    """Counts the files it reads (every warm run must read none)."""

    reads = 0

    def read(self, path: str) -> bytes:
        self.reads += 1
        return super().read(path)


def compute(root: Path, cache_file: Path, tests: list[Path]) -> tuple[float, dict[str, str], int]:
    """Seconds for a new fingerprinter's environment key and every test file's key."""
    with gc_paused():
        start = time.perf_counter()
        fingerprinter = CountingFingerprinter(KeyInputs(root=root), cache_file=cache_file)
        fingerprinter.environment_key()
        keys = {str(test): fingerprinter.file_key(test) for test in tests}
        seconds = time.perf_counter() - start
    return seconds, keys, fingerprinter.reads


def closure_sizes(root: Path, tests: list[Path]) -> list[int]:
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    return [len(fingerprinter.members(test)) for test in tests]


_CHILD = """
import json, sys, time
from pathlib import Path
from cachekit.skip.fingerprint import Fingerprinter, KeyInputs
root, cache_file, tests = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
start = time.perf_counter()
fingerprinter = Fingerprinter(KeyInputs(root=root), cache_file=cache_file)
fingerprinter.environment_key()
keys = {test: fingerprinter.file_key(Path(test)) for test in tests}
print(json.dumps({"seconds": time.perf_counter() - start, "keys": keys}))
"""


def warm_in_new_process(root: Path, cache_file: Path, tests: list[Path]) -> tuple[float, float]:
    """(seconds inside the process, wall seconds of the whole process)."""
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), str(cache_file), *map(str, tests)],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_DIR,
    )
    wall = time.perf_counter() - start
    return json.loads(completed.stdout)["seconds"], wall


def run(directory: Path | None = None, *, rounds: int = 5) -> Report:
    parent = directory or WORK_DIR
    root = parent / "fingerprint-project"
    cache_file = parent / "fingerprint-cache.json"
    cache_file.unlink(missing_ok=True)
    generated = time.perf_counter()
    tests = generate(root)
    generated = time.perf_counter() - generated
    modules = len(list((root / "src").rglob("*.py")))
    sizes = closure_sizes(root, tests)

    cold, cold_keys, cold_reads = compute(root, cache_file, tests)
    fingerprinter = Fingerprinter(KeyInputs(root=root), cache_file=cache_file)
    for test in tests:
        fingerprinter.file_key(test)
    save = time.perf_counter()
    fingerprinter.save()
    save = time.perf_counter() - save

    warm: list[float] = []
    correct = True
    for _ in range(rounds):
        seconds, keys, reads = compute(root, cache_file, tests)
        warm.append(seconds)
        correct = correct and keys == cold_keys and reads == 0
    process_inner, process_wall = warm_in_new_process(root, cache_file, tests)

    edited = root / f"src/bench/pkg{PACKAGES - 1:02d}/sub{SUBPACKAGES - 1}/mod{MODULES - 1}.py"
    # A statement, not a comment: keys ignore comments, docstrings and formatting.
    edited.write_text(edited.read_text() + "\nEDITED = True\n")
    edit, edit_keys, edit_reads = compute(root, cache_file, tests)
    edit_changed = sum(edit_keys[name] != cold_keys[name] for name in cold_keys)
    correct = correct and edit_reads == 1 and 0 < edit_changed < len(tests)

    report = Report("Test-file keys on a 2,000-module project")
    section = Section(
        f"Keys of {len(tests)} test files over {modules} project files (new Fingerprinter each)",
        ["phase", "time", "files read", "notes"],
    )
    section.rows += [
        ["cold (no cache file)", fmt_seconds(cold), str(cold_reads), "read, hash, parse all"],
        ["save the cache file", fmt_seconds(save), "", f"{cache_file.stat().st_size:,} bytes"],
        [
            f"warm, median of {rounds}",
            fmt_seconds(statistics.median(warm)),
            "0" if correct else "?",
            f"slowest {fmt_seconds(max(warm))}, fastest {fmt_seconds(min(warm))}",
        ],
        [
            "warm after editing one module",
            fmt_seconds(edit),
            str(edit_reads),
            f"{edit_changed} of {len(tests)} keys changed",
        ],
        [
            "warm in a new process",
            fmt_seconds(process_inner),
            "",
            f"whole process {fmt_seconds(process_wall)} (interpreter start and imports)",
        ],
    ]
    section.notes += [
        f"Project generated in {fmt_seconds(generated)}; closure of a test file and its "
        f"conftests: median {statistics.median(sizes):.0f} files, "
        f"min {min(sizes)}, max {max(sizes)}.",
        "Times include the environment key (installed distributions scanned once per "
        "Fingerprinter) and the stat of every file in the closures. The cold run reads "
        "files the operating system has cached (they were just generated).",
    ]
    warning = busy_warning()
    if warning:
        section.notes.append(warning)
    section.data = {
        "modules": modules,
        "test_files": len(tests),
        "closure_sizes": {"median": statistics.median(sizes), "min": min(sizes), "max": max(sizes)},
        "cold_seconds": cold,
        "cold_reads": cold_reads,
        "save_seconds": save,
        "warm_seconds": warm,
        "warm_new_process_seconds": process_inner,
        "warm_new_process_wall_seconds": process_wall,
        "edit_seconds": edit,
        "edit_reads": edit_reads,
        "edit_changed_keys": edit_changed,
    }
    report.sections.append(section)
    report.targets += [
        Target(
            f"warm keys, {len(tests)} test files over {modules} files (median of {rounds})",
            WARM_LIMIT,
            "<=",
            "s",
            statistics.median(warm),
        ),
        Target(
            "warm runs read nothing and give the cold keys; one edit reads one file (1 = yes)",
            1,
            ">=",
            "",
            1 if correct else 0,
        ),
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"scratch parent (default {WORK_DIR})"
    )
    parser.add_argument("--rounds", type=int, default=5, help="warm runs to time")
    parser.add_argument(
        "--write", action="store_true", help="also write results/fingerprint.md/.json"
    )
    args = parser.parse_args(argv)
    report = run(args.dir, rounds=args.rounds)
    print_report(report)
    for target in report.targets:
        print(f"{target.status:8} {target.name}")
    if args.write:
        command = ".venv/bin/python benchmarks/bench_fingerprint.py --write"
        machine = machine_info(args.dir or WORK_DIR)
        paths = write_results("fingerprint", report.name, [report], machine, command)
        print("wrote", *paths)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
