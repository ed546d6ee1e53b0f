"""Selecting: which collected tests (and which whole test files) passed before with
their current key and did not fail last time. Pure decisions; the hooks that feed them
are in `cachekit_pytest.skip.collect`."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import attrs
import pytest
from _pytest.doctest import DoctestItem

from cachekit.skip.records import MISS_CHANGED, FileMatch, Match, Secrets, Table
from cachekit_pytest.skip.attribution import Attribution, Pairs, TestKey, own_bindings
from cachekit_pytest.skip.changes import ini_words
from cachekit_pytest.skip.keys import Keys

#: How many characters of a file key a reason shows.
KEY_SHOWN = 12
#: Options that select tests: a run given one neither skips nor records whole files.
SELECTING_OPTIONS = (
    ("keyword", "-k"),
    ("markexpr", "-m"),
    ("deselect", "--deselect"),
    ("lf", "--lf"),
    ("stepwise", "--sw"),
    ("stepwise_skip", "--sw-skip"),
    ("pyargs", "--pyargs"),
)


# -- what each test's fate is ---------------------------------------------------------------


@attrs.frozen
class Decision:
    """What a collected test's key and records say about it."""

    #: Keyed hash of the test file's key: what a record of this run holds.
    key_hash: str
    #: Why the test may be skipped ("" when no valid record matches its key).
    reason: str
    #: A valid record matches and the test did not fail last time: skipped, or in verify
    #: mode, run and checked.
    skippable: bool
    #: The test file's path relative to the root, when it is one whole files are
    #: recorded for ("" otherwise).
    file: str = ""
    #: Keyed hash of the test file's static key (function bodies left out).
    static_hash: str = ""
    #: The dependency set of the record that matched ("" for none, or the full key).
    deps: str = ""
    #: Why the test runs, when it does (``--skip-passed-explain``).
    why: str = ""


@attrs.frozen
class FileSkip:
    """A test file skipped whole, before pytest imported it (in verify mode: one that
    would have been)."""

    #: How many tests its record counts.
    tests: int
    reason: str


@attrs.frozen
class FileTally:
    """A test file as this run collected it: what its file record needs."""

    key_hash: str
    #: Tests collected from it, before any selection.
    tests: int
    #: Keyed hash of its static key.
    static_hash: str = ""
    #: A valid file record with this key and count exists already (not written again).
    recorded: bool = False
    #: Every test collected from it stayed in the run, and nothing under it failed (or
    #: was skipped) while collecting.
    complete: bool = False
    #: Something under it failed, or was skipped, while collecting.
    broken: bool = False


@attrs.frozen
class SkipSelection:
    """What selecting found where the tests were collected (a worker sends it back)."""

    decisions: dict[str, Decision] = attrs.field(factory=dict)
    #: Records looked up that were unsigned, malformed or wrongly signed.
    bad_records: int = 0
    #: Files whose key could not be computed (their tests run and are not recorded).
    key_errors: tuple[str, ...] = ()
    #: Test files keyed: those collected and those skipped whole.
    files: int = 0
    #: Time spent computing the test files' keys, and checking the records.
    key_seconds: float = 0.0
    lookup_seconds: float = 0.0
    #: Test files skipped whole (in verify mode: that would have been), by relative path.
    skipped_files: dict[str, FileSkip] = attrs.field(factory=dict)
    #: Test files collected, by relative path (only in runs that record whole files).
    tallies: dict[str, FileTally] = attrs.field(factory=dict)
    #: The key and dependency set of each test that ran while recording.
    keys: dict[str, TestKey] = attrs.field(factory=dict)
    #: The dependency sets those keys and the matched records name, with hashes.
    sets: dict[str, Pairs] = attrs.field(factory=dict)
    #: Tests looked up whose only valid passes are of the older format.
    older_format: int = 0

    def merge(self, other: SkipSelection) -> SkipSelection:
        """Workers collect the same tests: the first decision per test (and file) stands;
        each worker ran its own tests."""
        return SkipSelection(
            {**other.decisions, **self.decisions},
            max(self.bad_records, other.bad_records),
            self.key_errors or other.key_errors,
            max(self.files, other.files),
            max(self.key_seconds, other.key_seconds),
            max(self.lookup_seconds, other.lookup_seconds),
            {**other.skipped_files, **self.skipped_files},
            {**other.tallies, **self.tallies},
            {**other.keys, **self.keys},
            {**other.sets, **self.sets},
            max(self.older_format, other.older_format),
        )

    def skipped_tests(self, *, verify: bool) -> int:
        """How many tests the files skipped whole hold (none are skipped in verify mode)."""
        return 0 if verify else sum(skip.tests for skip in self.skipped_files.values())


def failed_last_time(nodeid: str, lastfailed: Collection[str]) -> bool:
    """The test, or a collector above it (its class, module or a directory), is in
    pytest's ``cache/lastfailed``."""
    if not lastfailed:
        return False
    if nodeid in lastfailed:
        return True
    parts = nodeid.split("::")
    for end in range(1, len(parts)):
        if "::".join(parts[:end]) in lastfailed:
            return True
    path = parts[0]
    while "/" in path:
        path = path.rpartition("/")[0]
        if path in lastfailed:
            return True
    return False


def describe(file_key: str, run: str, at: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    return f"cached pass: key {file_key[:KEY_SHOWN]}, recorded by {run} at {when}"


def describe_file(file_key: str, match: FileMatch) -> str:
    return f"{describe(file_key, match.run, match.at)} (whole file: {match.tests} test(s))"


def whole_files_refusal(config: pytest.Config) -> str | None:
    """Why this run may neither skip nor record whole test files, or None when it may.

    A run that selects tests itself (``-k``, ``-m``, ``--deselect``, ``--lf``, ``--sw``,
    a test id or a file named) asked for something a file's recorded count does not
    describe; and ``--lf`` and test ids drop tests while collecting, so such a run could
    not tell a file it saw whole from one it saw in part.
    """
    option = config.option
    for dest, flag in SELECTING_OPTIONS:
        if getattr(option, dest, None):
            return f"{flag} is given"
    named = config.args_source is pytest.Config.ArgsSource.ARGS
    for arg in config.args:
        if "::" in arg:
            return "a test id is named"
        if named and (config.invocation_params.dir / arg).is_file():
            return "a file is named"
    return None


def failed_paths(lastfailed: Collection[str]) -> frozenset[str]:
    """The paths (files and directories) in ``cache/lastfailed``'s node ids."""
    return frozenset(nodeid.partition("::")[0] for nodeid in lastfailed)


def file_failed_last_time(label: str, paths: Collection[str]) -> bool:
    """A test of the file, the file itself or a directory above it is in
    ``cache/lastfailed`` (``paths`` from `failed_paths`)."""
    if not paths:
        return False
    path = label
    while True:
        if path in paths:
            return True
        if "/" not in path:
            return False
        path = path.rpartition("/")[0]


def relative_label(root: Path, path: Path) -> str | None:
    """``path`` relative to the root, ``/``-separated (how node ids name files), or None
    outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def select(
    items: Sequence[pytest.Item],
    *,
    keys: Keys,
    attribution: Callable[[], Attribution],
    secrets: Secrets,
    table: Table,
    lastfailed: Collection[str],
    save: bool,
    label: Callable[[Path], str | None] = lambda path: None,
) -> SkipSelection:
    """Each item's `Decision`, from its file's keys and the records (each candidate
    record's dependency set resolved to what its members are now); ``label`` names the
    files whole files are recorded for."""
    started = time.perf_counter()
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    errors: list[str] = []
    file_keys: dict[Path, tuple[str, str, str]] = {}
    try:
        keys.fingerprinter()
        functions = attribution()
    except Exception as error:
        return SkipSelection(key_errors=(f"{type(error).__name__}: {error}",), files=len(by_file))
    for path, in_file in by_file.items():
        try:
            static_key = functions.static_key(path)
            # A doctest runs a docstring: its key counts them.
            doctests = any(isinstance(item, DoctestItem) for item in in_file)
            with_docstrings = functions.static_key(path, docstrings=True) if doctests else ""
            file_keys[path] = (keys.file_key(path), static_key, with_docstrings)
        except Exception as error:
            errors.append(f"{path}: {type(error).__name__}: {error}")
    if save:
        keys.save()
    keyed = time.perf_counter()
    decisions: dict[str, Decision] = {}
    sets: dict[str, Pairs] = {}
    ini = _explaining(items)
    for path, (file_key, static_key, with_docstrings) in file_keys.items():
        key_hash = secrets.key_hash(file_key)
        file = label(path) or ""
        static_hashes = {False: secrets.key_hash(static_key)}
        if with_docstrings:
            static_hashes[True] = secrets.key_hash(with_docstrings)
        for item in by_file[path]:
            nodeid = item.nodeid
            doctest = isinstance(item, DoctestItem)
            static_hash = static_hashes[doctest]
            own = own_bindings(item)
            key_of = functions.key_of(path, static_hash, key_hash, table.sets, own=own)
            found = table.lookup_why(secrets, secrets.test_hash(nodeid), key_of)
            match = found if isinstance(found, Match) else None
            reason = describe(static_key, match.run, match.at) if match else ""
            failed = failed_last_time(nodeid, lastfailed)
            skippable = match is not None and not failed
            deps = match.deps if match else ""
            if deps and deps in functions.resolved:
                sets[deps] = functions.resolved[deps]
            why = "failed last time" if failed else ""
            if not failed and not isinstance(found, Match):
                why = found.reason
                if found.reason == MISS_CHANGED:
                    why = functions.why_changed(
                        path, found, table.sets, doctest=doctest, ini=ini, own=own
                    )
            decisions[nodeid] = Decision(key_hash, reason, skippable, file, static_hash, deps, why)
    return SkipSelection(
        decisions,
        table.bad_records,
        tuple(errors),
        len(by_file),
        keyed - started,
        time.perf_counter() - keyed,
        sets=sets,
        older_format=table.older_format,
    )


def _explaining(items: Sequence[pytest.Item]) -> str | None:
    """How the pytest config is named when this run explains why tests ran
    (``--skip-passed-explain`` or ``-v``: then what changed is worked out), else None."""
    if not items:
        return None
    config = items[0].config
    if config.getoption("cachekit_skip_passed_explain", False) or config.option.verbose > 0:
        return ini_words(config.inipath)
    return None


def read_lastfailed(config: pytest.Config) -> set[str]:
    assert config.cache is not None
    value = config.cache.get("cache/lastfailed", {})
    return {str(nodeid) for nodeid in value} if isinstance(value, dict) else set()


def apply_selection(items: list[pytest.Item], selection: SkipSelection, *, verify: bool) -> int:
    """Take the skippable tests out of ``items`` (not in verify mode); how many."""
    if verify:
        return 0
    decisions = selection.decisions
    kept = [
        item
        for item in items
        if not (item.nodeid in decisions and decisions[item.nodeid].skippable)
    ]
    removed = len(items) - len(kept)
    items[:] = kept
    return removed


def doctest_modules(config: pytest.Config) -> bool:
    return bool(config.getoption("doctestmodules", False))


def file_id(label: str, *, doctests: bool) -> str:
    """What a file record is about: the file (relative to the root) and how it was
    collected (``--doctest-modules`` adds tests to a module)."""
    return f"{label}\0doctest-modules={int(doctests)}"
