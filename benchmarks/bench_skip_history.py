"""``--skip-passed`` against pytest-testmon on a real project's history and mutations
(issue 14's targets).

Why: a skipping tool is judged by two numbers pulling against each other: how many test
executions it leaves out when code changes the way a project's code really changes (its
own commits), and whether it ever leaves out a test that would have failed (single-line
mutations of its source that fail tests). pytest-testmon 2.2.0 selects tests by coverage;
cachekit keys them by what they import. Both run on the same commits and mutants.

The project is a local clone given by ``--repo`` (default use: boltons, a pure-Python
library with a quick suite; ``git clone https://github.com/mahmoud/boltons
benchmarks/.work/boltons``); ``--tests`` names its test paths and ``--package`` its
source directory (what is mutated, never the tests), so the same script runs on any
project whose tests run from its root. The project is not installed: every run imports
its clone's code, the directory holding each ``--package`` being on ``PYTHONPATH``
(``--package src/cachetools`` in a src layout).

Setup (``benchmarks/.work/skip-history/``, git-ignored): a venv of its own with the
project's test requirements (its pyproject's ``dev``/``test`` dependency group or extra,
or ``--requirement``), ``pytest-testmon==2.2.0`` and cachekit built from this checkout's
HEAD (``git archive``: the committed code; ``--cachekit-worktree`` installs the working
tree instead). Three fresh clones of the project: ``plain`` for the reference runs,
``cachekit`` and ``testmon``, each tool's state in its own (cachekit's default local
store under ``.pytest_cache``, ``CACHEKIT_SIGNING_KEY`` fixed; testmon's
``.testmondata``). Every run is one ``python -m pytest -q -p no:randomly
--continue-on-collection-errors --junitxml=... TESTS`` process, timed from spawn to exit:

- plain: ``-p no:cachekit -p no:testmon``;
- cachekit: ``--skip-passed -p no:testmon``;
- testmon: ``--testmon -p no:cachekit``.

A test counts as executed when it is in the run's junit report and is neither a cached
pass (cachekit leaves cached tests out of junit; testmon leaves out what it deselects or
does not collect) nor skipped by a mark, unittest or ``pytest.skip()`` (its body did not
run, in the plain run either; an xfail's did, and counts). A collection error counts as
a failing test of its file.

History: the last ``--commits`` commits (first parent), oldest first. On the oldest, each
tool records (every test runs). On each later commit, all three clones check it out and
run. Per commit and in total: executions left out (1 - executed / collected, collected
being the plain run's tests), wall time against the plain run, and failing tests hidden:
tests that fail in the plain run and that the tool did not run. A failing test the tool
ran and saw pass is counted apart ("passed when run"): its outcome differs from run to
run (cachetools' random-replacement cache), which no selection decides. A commit whose
plain run errors while collecting or does not finish is reported and skipped (no tool
runs on it).

Mutations: at the newest commit, each tool runs once more (its state settles on the
unmutated code) and its state is saved. Mutants (`benchmarks.mutations`, seeded) are
tried in the plain clone until ``--mutations`` are found whose plain run fails a test
that passes unmutated (at most ``--max-tries`` tries, default 10 per mutant wanted); at
least a fifth of them in import-time code (module level, class bodies, default
arguments, decorators), as long as 8 tries per such mutant find them. For each, each
tool's state is restored, the mutant written into its clone, and it runs once.

Targets (issue 14): no failing test hidden by cachekit (history and mutations); tests
executed on the mutations by cachekit at most 1.25x testmon's; at least 92% of
executions left out by cachekit over the history.

Run alone: ``python benchmarks/bench_skip_history.py --repo benchmarks/.work/boltons``
(``--write`` saves ``results/skip-history.md`` and ``.json``, ``--write NAME``
``results/NAME.*``, with the command as given; ``--quick`` for a small run). Exits
non-zero if a target fails.
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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_skip import environment_with_key
from benchmarks.harness import (
    PROJECT_DIR,
    WORK_DIR,
    Report,
    Section,
    Target,
    busy_warning,
    fmt_seconds,
    machine_info,
    print_report,
    write_results,
)
from benchmarks.history_runs import TOOLS, Clone, Measured, PytestRun, Total, totals
from benchmarks.mutations import Mutant, candidates

SCRIPT_COMMAND = ".venv/bin/python benchmarks/bench_skip_history.py"
TESTMON = "pytest-testmon==2.2.0"
DIRECTORY = WORK_DIR / "skip-history"
VENV = DIRECTORY / "venv"

HIDDEN_LIMIT = 0.0
MUTATION_RATIO_LIMIT = 1.25
LEFT_OUT_LIMIT = 92.0
#: The share of mutants asked for in import-time code, and how many tries it may cost.
IMPORT_TIME_SHARE = 5
IMPORT_TIME_TRIES_PER_MUTANT = 8


@dataclass
class Settings:
    repo: Path
    tests: list[str]
    package: list[str]
    commits: int
    mutations: int
    seed: int
    timeout: float
    requirements: list[str]
    cachekit_worktree: bool
    ref: str
    #: Mutants tried at most (each try is a plain run of the whole suite).
    max_tries: int


#: Rounds of recording runs on the oldest commit (see `record_again`).
RECORDING_ROUNDS = 3


@dataclass
class Found:
    """What the benchmark measured, for the report."""

    settings: Settings
    cachekit_commit: str
    history: list[Measured] = field(default_factory=list)
    skipped_commits: list[dict[str, Any]] = field(default_factory=list)
    #: Rounds of the recording runs on the oldest commit: kind of run -> its run.
    recording: list[dict[str, PytestRun]] = field(default_factory=list)
    settling: dict[str, PytestRun] = field(default_factory=dict)
    mutants: list[tuple[Mutant, Measured]] = field(default_factory=list)
    mutants_tried: int = 0
    mutants_discarded: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


# -- the environment ------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=120
    )
    return completed.stdout.strip()


def project_requirements(repo: Path) -> list[str]:
    """The project's test requirements from its pyproject: a ``dev``/``test`` dependency
    group (strings only; included groups are not followed) or optional extra."""
    pyproject = repo / "pyproject.toml"
    if not pyproject.is_file():
        return ["pytest"]
    if sys.version_info < (3, 11):  # no tomllib: give --requirement
        return ["pytest"]
    import tomllib  # noqa: PLC0415

    data = tomllib.loads(pyproject.read_text("utf-8"))
    groups = data.get("dependency-groups", {})
    extras = data.get("project", {}).get("optional-dependencies", {})
    for table in (groups, extras):
        for name in ("test", "tests", "testing", "dev"):
            if name in table:
                return [item for item in table[name] if isinstance(item, str)] or ["pytest"]
    return ["pytest"]


def prepare_venv(settings: Settings) -> tuple[Path, str]:
    """The benchmark's venv, with cachekit from this checkout; its python and the
    cachekit commit installed (``-dirty`` when the working tree was installed)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    requirements = settings.requirements or project_requirements(settings.repo)
    subprocess.run([*pip, TESTMON, *requirements], check=True)
    head = git(PROJECT_DIR, "rev-parse", "--short", "HEAD")
    if settings.cachekit_worktree:
        subprocess.run([*pip, "-e", str(PROJECT_DIR)], check=True)
        return python, f"{head}-dirty (working tree)"
    marker = DIRECTORY / "cachekit-installed"
    if not marker.exists() or marker.read_text() != head:
        source = DIRECTORY / "cachekit-source"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "archive", "HEAD"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        subprocess.run([*pip, "--force-reinstall", "--no-deps", str(source)], check=True)
        subprocess.run([*pip, str(source)], check=True)  # its dependencies
        marker.write_text(head)
    return python, head


def venv_versions(python: Path) -> str:
    """The versions that decide both tools' behaviour, in the benchmark's venv."""
    names = ("pytest", "pytest-testmon", "coverage", "pytest-cachekit")
    script = (
        "from importlib.metadata import version\n"
        f"print(', '.join(name + ' ' + version(name) for name in {names!r}))"
    )
    command = [str(python), "-c", script]
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    return completed.stdout.strip() or completed.stderr.strip()[-200:]


def environment() -> dict[str, str]:
    """bench_skip's (no PYTEST_*/CACHEKIT_*/CI markers, a fixed namespace and signing
    key), with a fixed hash seed so set orders, and so test outcomes, repeat."""
    env = environment_with_key()
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return {**env, "PYTHONHASHSEED": "0"}


def import_path(clone: Path, packages: Sequence[str]) -> str:
    """``PYTHONPATH`` for runs in ``clone``: the directory holding each source package
    (``src`` in a src layout), so that its tests import the clone's code without the
    project being installed (nor one clone's copy serving the others)."""
    roots = dict.fromkeys(str((clone / package).parent) for package in packages)
    return os.pathsep.join(roots)


# -- the benchmark --------------------------------------------------------------------------


def run(settings: Settings, python: Path, cachekit_commit: str) -> Report:
    started = time.perf_counter()
    found = Found(settings, cachekit_commit)
    commits = git(
        settings.repo, "rev-list", "--first-parent", "--reverse",
        f"--max-count={settings.commits}", settings.ref,
    ).split()  # fmt: skip
    logs = DIRECTORY / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    env = environment()
    clones = {
        name: Clone.fresh(
            name,
            settings.repo,
            DIRECTORY / name,
            python=python,
            settings=settings,
            logs=logs,
            env={**env, "PYTHONPATH": import_path(DIRECTORY / name, settings.package)},
        )
        for name in ("plain", *TOOLS)
    }
    walk_history(found, clones, commits)
    mutate(found, clones, commits[-1])
    found.seconds = time.perf_counter() - started
    return report_of(found)


def walk_history(found: Found, clones: dict[str, Clone], commits: Sequence[str]) -> None:
    """The recording runs on the oldest commit, then every later commit in turn."""
    recorded = False
    for index, commit in enumerate(commits):
        for clone in clones.values():
            clone.checkout(commit)
            if not recorded:
                clone.warm_up()
        plain = clones["plain"].pytest(f"history-{index:03d}")
        subject = git(found.settings.repo, "log", "-1", "--format=%s", commit)
        problem = plain.unusable()
        if problem:
            found.skipped_commits.append(
                {"commit": commit[:10], "subject": subject, "why": problem}
            )
            print(f"  {commit[:10]}: skipped ({problem})")
            continue
        runs = {tool: clones[tool].pytest(f"history-{index:03d}") for tool in TOOLS}
        if not recorded:
            found.recording = [{"plain": plain, **runs}, *record_again(clones, index)]
            recorded = True
            print(f"  {commit[:10]}: recording runs, {plain.collected} tests")
            continue
        previous = found.history[-1].commit if found.history else found_recorded(found, commits)
        changed = git(found.settings.repo, "diff", "--name-only", previous, commit).splitlines()
        measured = Measured(commit, subject, plain, runs, changed)
        found.history.append(measured)
        print(f"  {commit[:10]}: {measured.line()}")


def recording_note(rounds: list[dict[str, PytestRun]]) -> str:
    """The recording runs' median ratio to the plain run of the same round, per tool."""
    ratios = []
    for tool in TOOLS:
        each = [round_[tool].seconds / round_["plain"].seconds for round_ in rounds]
        shown = ", ".join(f"{ratio:.2f}" for ratio in each)
        ratios.append(f"{tool} {statistics.median(each):.2f}x ({shown})")
    plain = statistics.median(round_["plain"].seconds for round_ in rounds)
    return (
        f"The recording runs (oldest commit, every test runs, each tool from an empty state; "
        f"{len(rounds)} rounds of a plain run and each tool's, after a collection in each "
        f"clone compiled the code) against the plain run of their round (median "
        f"{fmt_seconds(plain)}): median {'; '.join(ratios)}. Not in the totals."
    )


def record_again(clones: dict[str, Clone], index: int) -> list[dict[str, PytestRun]]:
    """`RECORDING_ROUNDS` - 1 more rounds of recording runs on the same commit, each tool
    from an empty state again (a single run of each, the first after the warm-up, is at
    the mercy of the machine: one plain run took twice as long as every later one). The
    last round's state is what the history starts from, as the first one's would be."""
    rounds = []
    for number in range(1, RECORDING_ROUNDS):
        for tool in TOOLS:
            clones[tool].clear_state()
        plain = clones["plain"].pytest(f"history-{index:03d}-r{number}")
        runs = {tool: clones[tool].pytest(f"history-{index:03d}-r{number}") for tool in TOOLS}
        rounds.append({"plain": plain, **runs})
    return rounds


def found_recorded(found: Found, commits: Sequence[str]) -> str:
    """The commit the recording runs were on: the first one not skipped."""
    skipped = {entry["commit"] for entry in found.skipped_commits}
    return next(commit for commit in commits if commit[:10] not in skipped)


def mutate(found: Found, clones: dict[str, Clone], newest: str) -> None:
    """Settle each tool on the newest commit, save its state, then find and run the
    mutants."""
    settings = found.settings
    baseline = clones["plain"].pytest("mutants-baseline")
    found.settling = {"plain": baseline, **{t: clones[t].pytest("mutants-settle") for t in TOOLS}}
    for tool in TOOLS:
        clones[tool].save_state()
    root = clones["plain"].path
    tests = tuple(f"{Path(path).as_posix().rstrip('/')}/" for path in settings.tests)
    files = [
        name
        for name in git(root, "ls-files", "--", *settings.package).splitlines()
        if name.endswith(".py") and not f"{name}/".startswith(tests)  # tests inside it
    ]
    import_time, in_functions = candidates(root, files, settings.seed)
    wanted_import_time = max(3, settings.mutations // IMPORT_TIME_SHARE)
    import_time_tries = wanted_import_time * IMPORT_TIME_TRIES_PER_MUTANT
    tries = 0
    while len(found.mutants) < settings.mutations and (import_time or in_functions):
        if tries >= settings.max_tries:
            break
        kept_import_time = sum(mutant.import_time for mutant, _ in found.mutants)
        wants_import_time = kept_import_time < wanted_import_time and import_time_tries > 0
        queue = (
            import_time if (wants_import_time and import_time) or not in_functions else in_functions
        )
        mutant = queue.pop(0)
        import_time_tries -= mutant.import_time
        tries += 1
        measured = try_mutant(found, clones, mutant, baseline, tries)
        if measured is not None:
            found.mutants.append((mutant, measured))
            kept = f"  mutant {len(found.mutants)} (try {tries}): {mutant.describe()}"
            print(f"{kept}: {measured.line()}")
    found.mutants_tried = tries


def try_mutant(
    found: Found, clones: dict[str, Clone], mutant: Mutant, baseline: PytestRun, number: int
) -> Measured | None:
    """The plain run of ``mutant``; if it fails a test that passes unmutated, each tool's
    run of it from the saved state. The source is restored in every clone after."""
    plain_clone = clones["plain"]
    try:
        plain_clone.write_mutant(mutant)
        plain = plain_clone.pytest(f"mutant-{number:03d}")
    finally:
        plain_clone.restore_source(mutant)
    new_failures = plain.failed - baseline.failed
    if plain.timed_out or not new_failures:
        why = "timed out" if plain.timed_out else "no test fails"
        found.mutants_discarded.append({"mutant": mutant.describe(), "why": why})
        return None
    runs: dict[str, PytestRun] = {}
    for tool in TOOLS:
        clone = clones[tool]
        clone.restore_state()
        try:
            clone.write_mutant(mutant)
            runs[tool] = clone.pytest(f"mutant-{number:03d}")
        finally:
            clone.restore_source(mutant)
    return Measured(mutant.describe(), "", plain, runs, [mutant.path])


def report_of(found: Found) -> Report:
    settings = found.settings
    report = Report(
        f"--skip-passed against pytest-testmon: {settings.repo.name}'s last "
        f"{settings.commits} commits and {settings.mutations} mutations"
    )
    history = totals(found.history)
    mutations = totals([measured for _, measured in found.mutants])
    hidden = Target(
        "failing tests hidden by cachekit (history and mutations)", HIDDEN_LIMIT, "<=", " tests"
    )
    ratio = Target(
        "tests executed on the mutations, cachekit / testmon", MUTATION_RATIO_LIMIT, "<=", "ratio"
    )
    left_out = Target("executions left out over the history, cachekit", LEFT_OUT_LIMIT, ">=", "%")
    finished = Target("every run finished and wrote its junit report (1 = yes)", 1, ">=")
    report.targets += [hidden, ratio, left_out, finished]
    if found.history or found.mutants:
        hidden.measured = float(history["cachekit"].hidden + mutations["cachekit"].hidden)
    if len(found.mutants) < settings.mutations:
        hidden.note = f"{len(found.mutants)} of {settings.mutations} mutants found"
    if mutations["testmon"].executed:
        ratio.measured = mutations["cachekit"].executed / mutations["testmon"].executed
        ratio.note = "; ".join(
            note for note in (_where_testmon_hid_none(found), _in_function_bodies(found)) if note
        )
    else:
        ratio.note = "no mutant found" if not found.mutants else "testmon executed no test"
    if found.history:
        left_out.measured = 100 * history["cachekit"].left_out
    else:
        left_out.note = "no commit after the recording one could run"
    broken = [
        f"{label}: {tool}"
        for label, measured in [*((m.commit[:10], m) for m in found.history),
                                *((mutant.describe(), m) for mutant, m in found.mutants)]
        for tool, one in measured.runs.items()
        if one.unfinished()
    ]  # fmt: skip
    finished.measured = 0.0 if broken else 1.0
    if broken:
        finished.note = "; ".join(broken[:3]) + (
            f"; and {len(broken) - 3} more" if broken[3:] else ""
        )
    add_sections(report, found, history, mutations)
    return report


def _where_testmon_hid_none(found: Found) -> str:
    """The ratio again over the mutants on which testmon hid no failing test: where it
    hid some, it ran fewer tests by missing the ones that fail, which the ratio above
    counts in its favour."""
    honest = [measured for _, measured in found.mutants if not measured.hidden("testmon")]
    if len(honest) == len(found.mutants):
        return ""
    return _ratio_over(honest, "mutants where testmon hid no failing test")


def _in_function_bodies(found: Found) -> str:
    """The ratio again over the mutants inside function bodies on which testmon hid no
    failing test: where cachekit reruns only the tests that executed the function (or
    imported a module whose import executed it). A change to import-time code (module
    level, class body, default argument, decorator) reruns every importer by design."""
    bodies = [
        measured
        for mutant, measured in found.mutants
        if not mutant.import_time and not measured.hidden("testmon")
    ]
    if len(bodies) == len(found.mutants):
        return ""
    return _ratio_over(bodies, "mutants in function bodies where testmon hid none")


def _ratio_over(measured: list[Measured], which: str) -> str:
    """The mutation ratio over some of the mutants, as a note ("" if testmon ran none)."""
    kept = totals(measured)
    if not kept["testmon"].executed:
        return ""
    return (
        f"on the {len(measured)} {which}: "
        f"{kept['cachekit'].executed} / {kept['testmon'].executed} = "
        f"{kept['cachekit'].executed / kept['testmon'].executed:.3f}"
    )


_WHOLE_FILES = re.compile(r"(\d+) whole file\(s\) not collected")
LABELS = {"cachekit": "cachekit --skip-passed", "testmon": "pytest-testmon 2.2.0"}


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def _cell(text: str, width: int = 48) -> str:
    """Free text (a commit subject) made safe for a markdown table cell."""
    text = text.replace("|", "/").replace("`", "'")
    return text if len(text) <= width else text[: width - 1] + "…"


def add_sections(
    report: Report, found: Found, history: dict[str, Total], mutations: dict[str, Total]
) -> None:
    settings = found.settings
    count = len(found.mutants)
    summary = Section(
        "Totals (issue 14's table)", ["", *(LABELS[tool] for tool in TOOLS), "plain pytest"]
    )
    with_hidden = {tool: mutations[tool].with_hidden for tool in TOOLS}
    plain_mutation_runs = sum(measured.plain.collected for _, measured in found.mutants)
    summary.rows += [
        [f"failing tests hidden, {count} mutations",
         *(f"{mutations[t].hidden} (in {with_hidden[t]} mutations)" for t in TOOLS), "0"],
        [f"tests run across the {count} mutations",
         *(f"{mutations[t].executed:,}" for t in TOOLS), f"{plain_mutation_runs:,}"],
        [f"failing tests hidden over the history ({len(found.history)} commits)",
         *(f"{history[t].hidden} (in {history[t].with_hidden} commits)" for t in TOOLS), "0"],
        ["failing in the plain run, passed when the tool ran them (history and mutations)",
         *(f"{history[t].passed_when_run + mutations[t].passed_when_run}" for t in TOOLS),
         "—"],
        ["executions left out over the history",
         *(_percent(history[t].left_out) for t in TOOLS), "0%"],
        ["wall time saved over the history", *(_percent(history[t].saved) for t in TOOLS), "0%"],
        ["wall time over the history (sum of runs)",
         *(fmt_seconds(history[t].seconds) for t in TOOLS),
         fmt_seconds(history["cachekit"].plain_seconds)],
        ["tests executed over the history",
         *(f"{history[t].executed:,}" for t in TOOLS), f"{history['cachekit'].collected:,}"],
    ]  # fmt: skip
    summary.notes += _summary_notes(found)
    summary.data = {
        "settings": {
            "repo": settings.repo.name, "tests": settings.tests, "package": settings.package,
            "commits": settings.commits, "mutations": settings.mutations,
            "seed": settings.seed, "timeout": settings.timeout, "ref": settings.ref,
        },
        "cachekit_commit": found.cachekit_commit,
        "history_totals": {tool: total.as_dict() for tool, total in history.items()},
        "mutation_totals": {tool: total.as_dict() for tool, total in mutations.items()},
        "recording": [
            {tool: run.as_dict() for tool, run in round_.items()} for round_ in found.recording
        ],
        "settling": {tool: run.as_dict() for tool, run in found.settling.items()},
        "skipped_commits": found.skipped_commits,
        "mutants_tried": found.mutants_tried,
        "mutants_discarded": found.mutants_discarded,
        "seconds": round(found.seconds, 1),
    }  # fmt: skip
    report.sections.append(summary)
    report.sections.append(_history_section(found))
    report.sections.append(_mutation_section(found))


def _summary_notes(found: Found) -> list[str]:
    settings = found.settings
    notes = []
    if found.history:
        first, last = found.history[0], found.history[-1]
        notes.append(
            f"History: {settings.repo.name}, {len(found.history)} commits measured after the "
            f"recording one ({first.commit[:10]} .. {last.commit[:10]}, first parent), "
            f"{last.plain.collected} tests at the newest; `{' '.join(settings.tests)}` run "
            f"from the project's root; cachekit built from {found.cachekit_commit}."
        )
    if found.recording:
        notes.append(recording_note(found.recording))
    for entry in found.skipped_commits:
        notes.append(
            f"Skipped commit {entry['commit']} ({_cell(entry['subject'])}): {entry['why']}."
        )
    kept_import_time = sum(mutant.import_time for mutant, _ in found.mutants)
    notes.append(
        f"Mutations: {found.mutants_tried} mutants of `{' '.join(settings.package)}` tried in "
        f"the plain clone (seed {settings.seed}), {len(found.mutants)} kept (their plain run "
        f"fails a test that passes unmutated), {kept_import_time} of them in import-time code "
        "(module level, class body, default argument or decorator). Each tool ran each "
        "kept mutant once, from its state saved on the unmutated newest commit."
    )
    notes.append(
        "A failing test is hidden when it fails in the plain run of the same code and the "
        "tool did not run it; one the tool ran and saw pass is counted apart (passed when "
        "run: its outcome differs from run to run). Executions "
        "left out: 1 - executed / collected, summed over the commits (collected: the plain "
        "run's tests); a test skipped by a mark or `pytest.skip()` counts in neither. "
        "Wall time: each whole pytest process, spawn to exit, one run each, nice'd; "
        "the plain runs are `-p no:cachekit -p no:testmon` on every commit."
    )
    notes.append(
        "Get the project: a git clone given as `--repo` with its `--tests` and `--package` "
        "(boltons: `git clone https://github.com/mahmoud/boltons benchmarks/.work/boltons`); "
        "the command that wrote this file is at its top."
    )
    whole = [_whole_files(measured.runs["cachekit"]) for measured in found.history]
    notes.append(
        f"cachekit skipped whole test files (not imported) in {sum(n > 0 for n in whole)} of "
        f"{len(whole)} history runs ({sum(whole)} files in all): its line after collection, "
        "kept per run in the JSON file."
    )
    everything = [m for m in found.history if m.executed("cachekit") >= m.plain.collected]
    if everything:
        tool_seconds = sum(m.runs["cachekit"].seconds for m in everything)
        plain_seconds = sum(m.plain.seconds for m in everything)
        notes.append(
            f"cachekit reran every test on {len(everything)} of {len(found.history)} commits "
            f"({', '.join(m.commit[:7] for m in everything)}): {fmt_seconds(tool_seconds)} "
            f"against {fmt_seconds(plain_seconds)} for the plain runs of the same commits "
            f"({tool_seconds / plain_seconds:.2f}x; one run each)."
        )
    notes.append(f"Total benchmark time {fmt_seconds(found.seconds)}.")
    warning = busy_warning()
    if warning:
        notes.append(warning)
    return notes


def _whole_files(run: PytestRun) -> int:
    whole = _WHOLE_FILES.search(run.cachekit_line)
    return int(whole[1]) if whole else 0


def _history_section(found: Found) -> Section:
    section = Section(
        "History, per commit (executed tests / wall time / failing tests hidden)",
        ["commit", "subject", "changed files", "tests", "failing (plain)", "plain",
         "cachekit", "testmon"],
    )  # fmt: skip
    for measured in found.history:
        changed = ", ".join(measured.changed[:3]) + (
            f" +{len(measured.changed) - 3}" if len(measured.changed) > 3 else ""
        )
        section.rows.append(
            [measured.commit[:10], _cell(measured.subject), _cell(changed, 60),
             str(measured.plain.collected), str(len(measured.plain.failed)),
             fmt_seconds(measured.plain.seconds),
             *(_tool_cell(measured, tool) for tool in TOOLS)]
        )  # fmt: skip
    section.data = {"commits": [measured.as_dict() for measured in found.history]}
    return section


def _tool_cell(measured: Measured, tool: str) -> str:
    run = measured.runs[tool]
    return f"{measured.executed(tool)} / {run.seconds:.2f} s / {len(measured.hidden(tool))}"


def _mutation_section(found: Found) -> Section:
    section = Section(
        "Mutations (executed tests / wall time / failing tests hidden)",
        ["#", "mutant", "where", "failing (plain)", "cachekit", "testmon"],
    )
    for number, (mutant, measured) in enumerate(found.mutants, start=1):
        section.rows.append(
            [str(number), f"{mutant.path}:{mutant.line} `{mutant.old}` → `{mutant.new}`",
             mutant.where, str(len(measured.plain.failed)),
             *(_tool_cell(measured, tool) for tool in TOOLS)]
        )  # fmt: skip
    section.data = {
        "mutants": [
            {"mutant": mutant.describe(), "where": mutant.where, **measured.as_dict()}
            for mutant, measured in found.mutants
        ]
    }
    return section


def settings_from(args: argparse.Namespace) -> Settings:
    commits, mutations = (6, 4) if args.quick else (args.commits, args.mutations)
    return Settings(
        repo=args.repo.resolve(),
        tests=args.tests,
        package=args.package,
        commits=commits,
        mutations=mutations,
        seed=args.seed,
        timeout=args.timeout,
        requirements=args.requirement,
        cachekit_worktree=args.cachekit_worktree,
        ref=args.ref,
        max_tries=args.max_tries or 10 * mutations,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a local clone of the project")
    parser.add_argument("--tests", nargs="+", default=["tests"], help="test paths (from its root)")
    parser.add_argument(
        "--package", nargs="+", default=["boltons"], help="source directories to mutate"
    )
    parser.add_argument(
        "--commits", type=int, default=40, help="commits of history, the oldest records"
    )
    parser.add_argument("--mutations", type=int, default=25, help="mutants that fail tests")
    parser.add_argument(
        "--max-tries", type=int, default=0, help="mutants tried at most (default 10 per one wanted)"
    )
    parser.add_argument("--seed", type=int, default=14, help="the mutants' order")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per pytest run")
    parser.add_argument("--ref", default="HEAD", help="the newest commit of the history")
    parser.add_argument(
        "--requirement", action="append", default=[],
        help="the project's test requirements (default: from its pyproject), repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--cachekit-worktree", action="store_true",
        help="install cachekit from the working tree (default: this checkout's HEAD)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="6 commits and 4 mutations")
    parser.add_argument(
        "--write", nargs="?", const="skip-history", metavar="NAME",
        help="write results/NAME.md and .json (default NAME: skip-history)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.repo / ".git").exists():
        parser.error(f"{args.repo}: not a git clone (git clone https://github.com/mahmoud/boltons)")
    settings = settings_from(args)
    started = time.perf_counter()
    python, cachekit_commit = prepare_venv(settings)
    report = run(settings, python, cachekit_commit)
    print_report(report)
    if args.write:  # harness.run_alone's, plus the cachekit measured (main moves meanwhile)
        machine = machine_info(WORK_DIR)
        machine["cachekit_measured"] = cachekit_commit
        machine["benchmark_venv"] = venv_versions(python)
        machine["total_runtime"] = f"{time.perf_counter() - started:.0f} s"
        given = sys.argv[1:] if argv is None else list(argv)
        command = shlex.join([*SCRIPT_COMMAND.split(), *given])
        paths = write_results(args.write, report.name, [report], machine, command)
        print("wrote", *(str(path) for path in paths))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
