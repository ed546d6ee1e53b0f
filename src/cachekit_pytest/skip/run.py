"""``--skip-passed``: skip tests that already passed on exactly the same code.

Off by default, and then nothing here touches the disk or the store. When on:

1. Where tests are collected (the pytest process, or each xdist worker), after every
   other plugin has selected items (``--lf``, ``-k``, shards: ``trylast``), each test
   file gets its key (`cachekit.skip.fingerprint.Fingerprinter.file_key`) and each test a
   `Decision`: a test may be skipped when a valid signed record says it passed with that
   very key, and it did not fail last time (pytest's ``cache/lastfailed``). Such tests
   are taken out of the run, like a deselection: pytest's per-test protocol costs as much
   as a trivial test, so a skip marker would save little. The summary line counts them
   (``N cached``), ``-v``/``-rp`` lists each with its reason, and a run where every test
   was cached exits 0.
2. Where tests are reported (the pytest process, or the xdist controller), a test counts
   as passed only when its setup, call and teardown all passed (no xfail, xpass, skip,
   rerun or failure on the way); at the end of the session the new passes are signed and
   written as this run's own part. Untrusted runs read but never write.
3. Whole files: when every test of a test file passed in one run (none failed, was
   skipped, deselected or left out), a file record says so. A later run skips such a file
   in ``pytest_ignore_collect``, before pytest imports it, when its key is unchanged and
   nothing of it failed last time; its recorded tests count as cached. A skipping run
   then costs less than collecting the suite. Not when the run selects tests itself (test
   ids or files named, ``-k``, ``-m``, ``--deselect``, ``--lf``, ``--sw``): such a run
   neither skips nor records whole files, only tests.
4. ``--skip-passed-verify`` runs everything and reports each test that would have been
   skipped but failed (false skips), whole files included.

Records live in the store ``--cache-url`` names, or without one in a `cachekit.LocalStore`
under the cache directory (``.pytest_cache/d/cachekit-skip-passed``). See
``docs/security.md`` for the security model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Collection, Generator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import cattrs
import pytest
from _pytest.pathlib import fnmatch_ex
from _pytest.reports import TestReport

import cachekit
from cachekit import CacheKitWarning, LocalStore, open_store, redact_url
from cachekit.budget import Budget
from cachekit.ci.namespace import Namespace, detect_namespace, namespaced_cache
from cachekit.errors import InvalidURL
from cachekit.skip.fingerprint import Fingerprinter, KeyInputs, normalize_name
from cachekit.skip.records import (
    FileMatch,
    PassStore,
    Secrets,
    SigningKeyError,
    Table,
    machine_key,
    run_label,
    sign_passes,
    signing_key_from_text,
)
from cachekit_pytest.options import Mode, Settings, SkipSettings
from cachekit_pytest.report import warn
from cachekit_pytest.sync.remote import SyncFailed

ENV_SIGNING_KEY = "CACHEKIT_SIGNING_KEY"
#: Under the cache directory (``config.cache.mkdir``): the local store, the generated
#: per-machine key and the fingerprinter's analysis cache.
CACHE_DIR_NAME = "cachekit-skip-passed"
#: The terminal's stats key: the summary line says ``N cached``. One word on purpose:
#: summary parsers (pytester's ``parseoutcomes`` among them) read ``(\\d+) (\\w+)``, so
#: "N passed (cached)" would be read as N passed.
STAT_KEY = "cached"
#: Keys of xdist's ``workerinput`` (controller to worker) and ``workeroutput`` (back).
WORKER_INPUT = "cachekit_skip_passed"
WORKER_OUTPUT = "cachekit_skip_passed"
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


class SkipPassedWarning(CacheKitWarning):
    """``--skip-passed`` could not do all it should: tests ran that might have been
    skipped, or passes were not recorded. Never a wrong skip."""


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
    #: A valid file record with this key and count exists already (not written again).
    recorded: bool = False
    #: Every test collected from it stayed in the run, and nothing under it failed (or
    #: was skipped) while collecting.
    complete: bool = False
    #: Something under it failed, or was skipped, while collecting.
    broken: bool = False


@attrs.frozen
class Selection:
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

    def merge(self, other: Selection) -> Selection:
        """Workers collect the same tests: the first decision per test (and file) stands."""
        return Selection(
            {**other.decisions, **self.decisions},
            max(self.bad_records, other.bad_records),
            self.key_errors or other.key_errors,
            max(self.files, other.files),
            max(self.key_seconds, other.key_seconds),
            max(self.lookup_seconds, other.lookup_seconds),
            {**other.skipped_files, **self.skipped_files},
            {**other.tallies, **self.tallies},
        )

    def skipped_tests(self, *, verify: bool) -> int:
        """How many tests the files skipped whole hold (none are skipped in verify mode)."""
        return 0 if verify else sum(skip.tests for skip in self.skipped_files.values())


@attrs.frozen
class WorkerInput:
    """What the xdist controller tells each worker: the derived keys (hex), the records
    read at start-up, whether passes will be recorded, and what decides whole files
    (every worker must skip the same ones, or their collections differ)."""

    name_key: str
    sign_key: str
    layers: list[dict[str, Any]]
    verify: bool
    recording: bool
    #: Whether whole files are recorded, and skipped (see `SkipRun`).
    whole_files: bool = False
    skip_files: bool = False
    #: The controller's ``cache/lastfailed`` (None: each worker reads its own).
    lastfailed: list[str] | None = None

    @property
    def secrets(self) -> Secrets:
        return Secrets(bytes.fromhex(self.name_key), bytes.fromhex(self.sign_key))


_wire = cattrs.Converter()


def tool_versions(config: pytest.Config) -> dict[str, str]:
    """What else decides outcomes that the fingerprint cannot see by itself: pytest's and
    cachekit's versions, the active plugins, the ini file and the options that change how
    outcomes are judged (``-W``, ``-o``, ``-p``, ``--runxfail``)."""
    plugins = sorted(
        {
            f"{normalize_name(dist.project_name)}=={dist.version}"
            for _, dist in config.pluginmanager.list_plugin_distinfo()
        }
    )
    inipath = config.inipath
    ini = hashlib.sha256(inipath.read_bytes()).hexdigest() if inipath and inipath.is_file() else ""
    options = {
        name: getattr(config.option, name, None)
        for name in ("pythonwarnings", "override_ini", "plugins", "runxfail")
    }
    return {
        "pytest": pytest.__version__,
        "pytest-cachekit": cachekit.__version__,
        "pytest plugins": " ".join(plugins),
        "pytest ini file": ini,
        "pytest options": json.dumps(options, sort_keys=True, default=str),
    }


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


class Keys:
    """The session's test file keys: one `Fingerprinter`, made when first needed, and
    each file keyed once (a file may be keyed before pytest collects it, then again)."""

    def __init__(self, factory: Callable[[], Fingerprinter]) -> None:
        self._factory = factory
        self._fingerprinter: Fingerprinter | Exception | None = None
        self._keys: dict[Path, str | Exception] = {}
        #: Time spent making the fingerprinter, keying files and saving its analysis.
        self.seconds = 0.0

    def fingerprinter(self) -> Fingerprinter:
        """The fingerprinter; raises what making it raised (every time)."""
        if self._fingerprinter is None:
            started = time.perf_counter()
            try:
                self._fingerprinter = self._factory()
            except Exception as error:  # an unreadable ini file, say: every test runs
                self._fingerprinter = error
            self.seconds += time.perf_counter() - started
        if isinstance(self._fingerprinter, Exception):
            raise self._fingerprinter
        return self._fingerprinter

    def file_key(self, path: Path) -> str:
        """The file's key; raises what keying it raised (every time)."""
        key = self._keys.get(path)
        if key is None:
            fingerprinter = self.fingerprinter()
            started = time.perf_counter()
            try:
                key = fingerprinter.file_key(path)
            except Exception as error:  # any failure: these tests simply run
                key = error
            self._keys[path] = key
            self.seconds += time.perf_counter() - started
        if isinstance(key, Exception):
            raise key
        return key

    def save(self) -> None:
        if isinstance(self._fingerprinter, Fingerprinter):
            started = time.perf_counter()
            with contextlib.suppress(OSError):  # only a hint for the next run
                self._fingerprinter.save()
            self.seconds += time.perf_counter() - started


def select(
    items: Sequence[pytest.Item],
    *,
    keys: Keys,
    secrets: Secrets,
    table: Table,
    lastfailed: Collection[str],
    save: bool,
    label: Callable[[Path], str | None] = lambda path: None,
) -> Selection:
    """Each item's `Decision`, from its file's key and the records; ``label`` names the
    files whole files are recorded for."""
    started = time.perf_counter()
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    errors: list[str] = []
    file_keys: dict[Path, str] = {}
    try:
        keys.fingerprinter()
    except Exception as error:
        return Selection(key_errors=(f"{type(error).__name__}: {error}",), files=len(by_file))
    for path in by_file:
        try:
            file_keys[path] = keys.file_key(path)
        except Exception as error:
            errors.append(f"{path}: {type(error).__name__}: {error}")
    if save:
        keys.save()
    keyed = time.perf_counter()
    decisions: dict[str, Decision] = {}
    for path, file_key in file_keys.items():
        key_hash = secrets.key_hash(file_key)
        file = label(path) or ""
        for item in by_file[path]:
            nodeid = item.nodeid
            match = (
                table.lookup(secrets, secrets.test_hash(nodeid), key_hash) if table.layers else None
            )
            reason = describe(file_key, match.run, match.at) if match else ""
            skippable = match is not None and not failed_last_time(nodeid, lastfailed)
            decisions[nodeid] = Decision(key_hash, reason, skippable, file)
    return Selection(
        decisions,
        table.bad_records,
        tuple(errors),
        len(by_file),
        keyed - started,
        time.perf_counter() - keyed,
    )


def _fingerprinter(config: pytest.Config, settings: SkipSettings) -> Fingerprinter:
    assert config.cache is not None
    inputs = KeyInputs(
        root=config.rootpath,
        env_vars=settings.env_vars,
        data_globs=settings.data_globs,
        lock_file=settings.lock_file,
        salt=settings.salt,
        tool_versions=tool_versions(config),
    )
    cache_file = config.cache.mkdir(CACHE_DIR_NAME) / "analysis.json"
    return Fingerprinter(inputs, cache_file=cache_file)


def _lastfailed(config: pytest.Config) -> set[str]:
    assert config.cache is not None
    value = config.cache.get("cache/lastfailed", {})
    return {str(nodeid) for nodeid in value} if isinstance(value, dict) else set()


def _apply(items: list[pytest.Item], selection: Selection, *, verify: bool) -> int:
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


# -- outcomes -------------------------------------------------------------------------------


class Outcomes:
    """Which tests passed cleanly: setup, call and teardown all passed, and nothing else
    (a rerun, an xfail or xpass, a skip, a failed subtest) was reported for them."""

    def __init__(self) -> None:
        self.called: set[str] = set()
        self.spoiled: set[str] = set()
        self.passed: set[str] = set()
        self.failed: set[str] = set()

    def see(self, report: TestReport) -> None:
        nodeid = report.nodeid
        if report.failed:
            self.failed.add(nodeid)
        if report.outcome != "passed" or hasattr(report, "wasxfail"):
            self.spoiled.add(nodeid)
            self.passed.discard(nodeid)
        elif nodeid in self.spoiled:
            return
        elif report.when == "call":
            self.called.add(nodeid)
        elif report.when == "teardown" and nodeid in self.called:
            self.passed.add(nodeid)


@attrs.frozen(slots=False)
class CachedReport:
    """An entry of the terminal's stats for a test skipped because it passed before.

    Never sent to ``pytest_runtest_logreport``; shaped like a passed call `TestReport`
    for plugins that walk every stats entry (Hypothesis's reads each one's ``__dict__``),
    at a fraction of its cost for 20,000 of them.
    """

    nodeid: str
    cachekit_reason: str
    when: ClassVar[str] = "call"
    outcome: ClassVar[str] = "passed"
    passed: ClassVar[bool] = True
    failed: ClassVar[bool] = False
    skipped: ClassVar[bool] = False
    longrepr: ClassVar[None] = None
    duration: ClassVar[float] = 0.0
    sections: ClassVar[tuple[()]] = ()
    user_properties: ClassVar[tuple[()]] = ()
    count_towards_summary: ClassVar[bool] = True

    @property
    def location(self) -> tuple[str, None, str]:
        return (self.nodeid.partition("::")[0], None, self.nodeid)


# -- the plugin (this module, registered by `cachekit_pytest.plugin`) -------------------------


def configure(config: pytest.Config, settings: SkipSettings) -> None:
    """Register the plugin that does the work: `SkipRun`, or `WorkerSelection` on an xdist
    worker. Called only when the feature is on (`cachekit_pytest.plugin`): otherwise this
    module is not even imported."""
    if getattr(config, "cache", None) is None:  # -p no:cacheprovider
        _warn(config, "needs pytest's cache (-p no:cacheprovider is given); running all tests")
        return
    if config.getoption("collectonly") or getattr(config.option, "cacheshow", None):
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        given = workerinput.get(WORKER_INPUT)
        if given is not None:
            selection = WorkerSelection(config, settings, _wire.structure(given, WorkerInput))
            config.pluginmanager.register(selection, "cachekit-skip-passed-worker")
        return
    run = SkipRun.start(config, settings)
    if run is not None:
        config.pluginmanager.register(run, "cachekit-skip-passed-run")


def file_id(config: pytest.Config, label: str) -> str:
    """What a file record is about: the file (relative to the root) and how it was
    collected (``--doctest-modules`` adds tests to a module)."""
    doctests = bool(config.getoption("doctestmodules", False))
    return f"{label}\0doctest-modules={int(doctests)}"


class Collecting:
    """The side that collects: `SkipRun` without xdist, `WorkerSelection` on a worker.

    It skips whole test files before pytest imports them, decides each collected test's
    fate, and notes which files it collected whole (what a file record needs). The side it
    is tells it the records, the secrets, ``cache/lastfailed`` and the mode.
    """

    config: pytest.Config
    settings: SkipSettings
    selection: Selection
    #: Tests taken out of this run as cached (in this process, or by the xdist workers).
    removed: int

    def _init_collecting(self) -> None:
        self.keys = Keys(lambda: _fingerprinter(self.config, self.settings))
        self._patterns = tuple(str(pattern) for pattern in self.config.getini("python_files"))
        self._labels: dict[Path, str | None] = {}
        self._paths: dict[str, Path] = {}
        #: Tests collected per test file, before any selection.
        self._collected: dict[str, int] = {}
        #: Paths under which something failed, or was skipped, while collecting.
        self._broken: set[str] = set()
        #: Files skipped whole (in verify mode: that would have been).
        self._skipped_files: dict[str, FileSkip] = {}
        self._file_matches: dict[str, tuple[str, FileMatch] | None] = {}
        self._failed: frozenset[str] | None = None
        self._file_lookup_seconds = 0.0

    # -- what the side provides ---------------------------------------------------------

    def _collect_table(self) -> Table | None:
        """The records; None when nothing is to be selected or recorded."""
        raise NotImplementedError

    def _collect_secrets(self) -> Secrets:
        raise NotImplementedError

    def _collect_lastfailed(self) -> Collection[str]:
        raise NotImplementedError

    def _collect_verify(self) -> bool:
        raise NotImplementedError

    def _collect_whole_files(self) -> bool:
        """Whether whole files are recorded."""
        raise NotImplementedError

    def _collect_skip_files(self) -> bool:
        """Whether whole files are skipped (in verify mode: counted as would-be)."""
        raise NotImplementedError

    def _collect_save(self) -> bool:
        raise NotImplementedError

    # -- whole files ----------------------------------------------------------------------

    def _label(self, path: Path) -> str | None:
        """A test module's path relative to the root (as node ids name it), or None for
        any other path: only what pytest collects as a test module is skipped whole."""
        if path in self._labels:
            return self._labels[path]
        label = None
        if (
            path.suffix == ".py"
            and path.name not in ("conftest.py", "__init__.py")
            and any(fnmatch_ex(pattern, path) for pattern in self._patterns)
        ):
            label = relative_label(self.config.rootpath, path)
        self._labels[path] = label
        if label is not None:
            self._paths.setdefault(label, path)
        return label

    def _failed_files(self) -> frozenset[str]:
        if self._failed is None:
            self._failed = failed_paths(self._collect_lastfailed())
        return self._failed

    def _file_match(self, label: str, table: Table) -> tuple[str, FileMatch] | None:
        """The file's key and the valid file record with that key, if any (looked up
        once: a bad record is counted once)."""
        if label not in self._file_matches:
            try:
                file_key = self.keys.file_key(self._paths[label])
            except Exception:  # reported when its tests are selected
                return None
            started = time.perf_counter()
            secrets = self._collect_secrets()
            match = (
                table.lookup_file(
                    secrets,
                    secrets.file_hash(file_id(self.config, label)),
                    secrets.key_hash(file_key),
                )
                if table.layers
                else None
            )
            self._file_lookup_seconds += time.perf_counter() - started
            self._file_matches[label] = None if match is None else (file_key, match)
        return self._file_matches[label]

    @pytest.hookimpl(trylast=True)
    def pytest_ignore_collect(self, collection_path: Path, config: pytest.Config) -> bool | None:
        """Skip a test file whole, before pytest imports it, when a valid file record has
        its current key and nothing of it failed last time. ``trylast``: a file another
        plugin ignores (``--ignore``, ``collect_ignore``) is never counted as cached. In
        verify mode, only note that it would have been skipped."""
        if not self._collect_skip_files():
            return None
        label = self._label(collection_path)
        if label is None:
            return None
        verify = self._collect_verify()
        if label in self._skipped_files:
            return None if verify else True
        table = self._collect_table()
        if table is None or file_failed_last_time(label, self._failed_files()):
            return None
        found = self._file_match(label, table)
        if found is None:
            return None
        file_key, match = found
        self._skipped_files[label] = FileSkip(match.tests, describe_file(file_key, match))
        return None if verify else True

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        label = self._label(item.path)
        if label is None:
            return
        self._collected[label] = self._collected.get(label, 0) + 1
        if item.nodeid.partition("::")[0] != label:
            self._broken.add(label)  # node ids name it otherwise: not recorded whole

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if not report.passed:
            self._broken.add(report.nodeid.partition("::")[0])

    # -- selecting ------------------------------------------------------------------------

    # A wrapper registered after every other selection plugin (in pytest_configure, after
    # cachekit's shard selection): it encloses them, so it takes cached passes out last,
    # after -k, --lf and the shard split. Shards must split the same tests whatever
    # passes other shards have recorded meanwhile.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None, None, None]:
        yield
        table = self._collect_table()
        if table is None:
            return
        whole = self._collect_whole_files()
        selection = select(
            items,
            keys=self.keys,
            secrets=self._collect_secrets(),
            table=table,
            lastfailed=self._collect_lastfailed(),
            save=self._collect_save(),
            label=self._label if whole else lambda path: None,
        )
        tallies = self._tally(selection, table) if whole else {}
        self.selection = attrs.evolve(
            selection,
            bad_records=table.bad_records,
            files=selection.files + len(self._skipped_files if not self._collect_verify() else ()),
            key_seconds=self.keys.seconds,
            lookup_seconds=selection.lookup_seconds + self._file_lookup_seconds,
            skipped_files=dict(sorted(self._skipped_files.items())),
            tallies=tallies,
        )
        self.removed = _apply(items, self.selection, verify=self._collect_verify())

    def _tally(self, selection: Selection, table: Table) -> dict[str, FileTally]:
        """The collected test files, each with its key hash and count, and whether a valid
        record of it with both exists already."""
        key_hashes = {decision.file: decision.key_hash for decision in selection.decisions.values()}
        key_hashes.pop("", None)
        tallies: dict[str, FileTally] = {}
        for label, key_hash in sorted(key_hashes.items()):
            tests = self._collected.get(label, 0)
            found = self._file_match(label, table)
            recorded = found is not None and found[1].tests == tests
            tallies[label] = FileTally(key_hash, tests, recorded)
        return tallies

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Which collected files stayed whole: each of their tests is still in the run or
        was taken out as cached, and nothing under them failed to collect. In verify
        mode, also the files that would have been skipped and were not collected whole."""
        selection = self.selection
        verify = self._collect_verify()
        if not (selection.tallies or (verify and selection.skipped_files)):
            return
        decisions = selection.decisions
        kept: dict[str, int] = {}
        for item in session.items:
            decision = decisions.get(item.nodeid)
            if decision is not None and decision.file:
                kept[decision.file] = kept.get(decision.file, 0) + 1
        if not verify:
            for decision in decisions.values():
                if decision.skippable and decision.file:
                    kept[decision.file] = kept.get(decision.file, 0) + 1
        tallies: dict[str, FileTally] = {}
        for label, tally in selection.tallies.items():
            broken = label in self._broken
            complete = not broken and kept.get(label, 0) == tally.tests > 0
            tallies[label] = attrs.evolve(tally, complete=complete, broken=broken)
        if verify:
            for label in selection.skipped_files:
                if label not in tallies:  # it failed to collect now, say
                    tests = self._collected.get(label, 0)
                    tallies[label] = FileTally("", tests, broken=label in self._broken)
        self.selection = attrs.evolve(selection, tallies=dict(sorted(tallies.items())))


class WorkerSelection(Collecting):
    """On an xdist worker: select as the controller said, and send the selection back."""

    def __init__(self, config: pytest.Config, settings: SkipSettings, given: WorkerInput) -> None:
        self.config = config
        self.settings = settings
        self.given = given
        self.selection = Selection()
        self.removed = 0
        self._table = Table(given.layers) if given.recording or any(given.layers) else None
        self._init_collecting()

    def _collect_table(self) -> Table | None:
        return self._table

    def _collect_secrets(self) -> Secrets:
        return self.given.secrets

    def _collect_lastfailed(self) -> Collection[str]:
        given = self.given.lastfailed
        return _lastfailed(self.config) if given is None else given

    def _collect_verify(self) -> bool:
        return self.given.verify

    def _collect_whole_files(self) -> bool:
        return self.given.whole_files

    def _collect_skip_files(self) -> bool:
        return self.given.skip_files

    def _collect_save(self) -> bool:
        workerid = getattr(self.config, "workerinput", {}).get("workerid", "")
        return workerid in ("gw0", "")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        output: dict[str, Any] = getattr(self.config, "workeroutput", {})
        output[WORKER_OUTPUT] = _wire.unstructure(self.selection)


class SkipRun(Collecting):
    """The pytest process (or the xdist controller): reads the records once, selects
    (unless xdist workers do), watches the reports, writes the new passes, reports."""

    def __init__(
        self,
        config: pytest.Config,
        settings: SkipSettings,
        *,
        store: PassStore,
        secrets: Secrets,
        namespace: Namespace,
    ) -> None:
        self.config = config
        self.settings = settings
        self.store = store
        self.secrets = secrets
        self.namespace = namespace
        self.verify = settings.mode is Mode.VERIFY
        self.outcomes = Outcomes()
        self.selection = Selection()
        self.removed = 0
        #: Why whole files are neither skipped nor recorded in this run (None: they are).
        self.refusal = whole_files_refusal(config)
        #: Why whole files are not skipped (None: they are). A shard records them, but
        #: skipping them would change the tests its shard selection splits: shards that
        #: read the records at different times would split differently, and a test
        #: could fall between them.
        self.skip_refusal = self.refusal or (
            f"this run is shard {namespace.shard}" if namespace.shard else None
        )
        self._table: Table | None = None
        self._read_failed = False
        self._lastfailed_ids: set[str] | None = None
        self._warned: set[str] = set()
        self._init_collecting()

    @classmethod
    def start(cls, config: pytest.Config, settings: SkipSettings) -> SkipRun | None:
        """The run side, or None (with one warning) when it cannot work: no signing key."""
        assert config.cache is not None
        shared = Settings.from_config(config)
        namespace = detect_namespace(shard=shared.shard or None)
        directory = config.cache.mkdir(CACHE_DIR_NAME)
        try:
            secrets = Secrets.derive(_signing_key(shared, namespace, directory), settings.salt)
        except SigningKeyError as error:
            _warn(config, f"{error}: nothing is skipped or recorded")
            return None
        if settings.lock_file is not None and not (config.rootpath / settings.lock_file).is_file():
            _warn(
                config,
                f"skip_passed_lock_file {settings.lock_file} does not exist: the installed "
                "distributions enter the keys instead",
            )
        if shared.remote:
            try:
                store = open_store(shared.url)
            except InvalidURL as error:
                raise pytest.UsageError(f"cachekit: {error}") from None
            display = redact_url(shared.url)
        else:
            store = LocalStore(directory / "store")
            display = "the local cache directory"
        cache = namespaced_cache(store, namespace)
        budget = Budget(shared.timeout)
        passes = PassStore(cache, budget, display=display)
        return cls(config, settings, store=passes, secrets=secrets, namespace=namespace)

    # -- the records ----------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self.namespace.trusted and not self._read_failed

    def table(self) -> Table | None:
        """The records, read once (None when the read failed: then nothing is skipped,
        and nothing written)."""
        if self._table is None and not self._read_failed:
            try:
                self._table = self.store.read()
            except SyncFailed as error:
                self._read_failed = True
                self._warn(f"could not read the records, running every test: {error}")
            finally:
                self._warn_corrupt()
        return self._table

    @property
    def cached(self) -> int:
        """Tests not run because they passed before: taken out of the run, or in files
        skipped whole (none in verify mode)."""
        return self.removed + self.selection.skipped_tests(verify=self.verify)

    # -- selecting, in this process (`Collecting`) -----------------------------------------

    def _collect_table(self) -> Table | None:
        table = self.table()
        if table is None or not (self.recording or table.layers):
            return None
        return table

    def _collect_secrets(self) -> Secrets:
        return self.secrets

    def _collect_lastfailed(self) -> Collection[str]:
        if self._lastfailed_ids is None:
            self._lastfailed_ids = _lastfailed(self.config)
        return self._lastfailed_ids

    def _collect_verify(self) -> bool:
        return self.verify

    def _collect_whole_files(self) -> bool:
        return self.refusal is None

    def _collect_skip_files(self) -> bool:
        return self.skip_refusal is None

    def _collect_save(self) -> bool:
        return True

    def pytest_report_collectionfinish(self, config: pytest.Config) -> list[str] | None:
        selection = self.selection
        if not selection.files:
            return None
        keyed = (
            f"{selection.files} test file(s) keyed in {selection.key_seconds:.2f}s, "
            f"{len(selection.decisions)} test(s) checked in {selection.lookup_seconds:.2f}s"
        )
        files = len(selection.skipped_files)
        if self.refusal:
            why_not = f" (whole files neither skipped nor recorded: {self.refusal})"
        elif self.skip_refusal:
            why_not = f" (whole files not skipped: {self.skip_refusal})"
        else:
            why_not = ""
        if self.verify:
            whole = f" ({files} whole file(s))" if files else ""
            return [
                f"cachekit skip-passed (verify): {keyed}; {self.would_skip()} would be "
                f"skipped{whole}, all run{why_not}"
            ]
        whole = f", {files} whole file(s) not collected" if files else ""
        return [
            f"cachekit skip-passed: {keyed}; {self.cached} passed before (cached){whole}{why_not}"
        ]

    # -- selecting, on xdist workers ------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        table = self.table()
        if table is None:
            return  # the workers do nothing either
        given = WorkerInput(
            self.secrets.name_key.hex(),
            self.secrets.sign_key.hex(),
            table.layers,
            self.verify,
            self.recording,
            whole_files=self.refusal is None,
            skip_files=self.skip_refusal is None,
            lastfailed=sorted(self._collect_lastfailed()),
        )
        node.workerinput[WORKER_INPUT] = _wire.unstructure(given)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        sent = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
        if sent is None:
            return
        try:
            selection = _wire.structure(sent, Selection)
        except (cattrs.BaseValidationError, TypeError, ValueError):
            return
        self.selection = self.selection.merge(selection)
        if not self.verify:
            self.removed = sum(decision.skippable for decision in self.selection.decisions.values())

    # -- the run --------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: TestReport) -> None:
        self.outcomes.see(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.cached and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            # Every test was cached: not "no tests ran" (exit code 5) but a success.
            session.exitstatus = pytest.ExitCode.OK
        selection = self.selection
        if selection.bad_records:
            self._warn(
                f"ignored {selection.bad_records} record(s) of this run's tests that are "
                f"unsigned or not signed with this {ENV_SIGNING_KEY} (tampered with, or "
                "written with another key); they skipped nothing"
            )
        if selection.key_errors:
            self._warn(
                "could not compute the keys of some test files; their tests ran and are not "
                f"recorded ({len(selection.key_errors)} problem(s); first: "
                f"{selection.key_errors[0]})"
            )
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None and self.cached:
            cached = [CachedReport(nodeid, reason) for nodeid, reason in self._cached_tests()]
            if not self.verify:
                for label, skip in selection.skipped_files.items():
                    # One entry per test: the summary line counts entries.
                    cached += [CachedReport(label, skip.reason)] * skip.tests
            terminal.stats.setdefault(STAT_KEY, []).extend(cached)
            # The terminal caches the kinds of outcome it has seen, and refreshes them only
            # once every collected test has reported (not after ``-x``, say).
            refresh = getattr(terminal, "_set_main_color", None)
            if callable(refresh):
                refresh()
        if self.recording:
            self._record()

    def _cached_tests(self) -> list[tuple[str, str]]:
        """The tests taken out of the run: (node id, reason)."""
        if self.verify:
            return []
        return [
            (nodeid, decision.reason)
            for nodeid, decision in sorted(self.selection.decisions.items())
            if decision.skippable
        ]

    def _cached(self) -> list[tuple[str, str]]:
        """The tests taken out of the run and the files skipped whole: (node id or path,
        reason)."""
        files = [] if self.verify else list(self.selection.skipped_files.items())
        return sorted(self._cached_tests() + [(label, skip.reason) for label, skip in files])

    def _record(self) -> None:
        decisions = self.selection.decisions
        passed = [
            (self.secrets.test_hash(nodeid), decisions[nodeid].key_hash)
            for nodeid in sorted(self.outcomes.passed)
            if nodeid in decisions and not decisions[nodeid].reason
        ]
        files = self._passed_files()
        if not (passed or files):
            return
        records = sign_passes(self.secrets, passed, run=run_label(self.namespace), files=files)
        threshold = Settings.from_config(self.config).compact_threshold
        try:
            self.store.write(records, part_id=self.namespace.new_part_id(), compact_at=threshold)
        except SyncFailed as error:
            self._warn(f"could not record this run's passes: {error}")
        finally:
            self._warn_corrupt()

    def _passed_files(self) -> list[tuple[str, str, int]]:
        """(file hash, key hash, tests) of each test file collected whole whose every test
        passed in this run or was taken out as a cached pass, not recorded yet."""
        decisions = self.selection.decisions
        by_file: dict[str, list[str]] = {}
        for nodeid, decision in decisions.items():
            if decision.file:
                by_file.setdefault(decision.file, []).append(nodeid)
        passed = self.outcomes.passed
        found = []
        for label, tally in self.selection.tallies.items():
            nodeids = by_file.get(label, [])
            if not tally.complete or tally.recorded or len(nodeids) != tally.tests:
                continue
            if all(
                nodeid in passed or (decisions[nodeid].skippable and not self.verify)
                for nodeid in nodeids
            ):
                file_hash = self.secrets.file_hash(file_id(self.config, label))
                found.append((file_hash, tally.key_hash, tally.tests))
        return found

    def would_skip(self) -> int:
        """Verify mode: how many of the tests that ran would have been skipped."""
        would = self.selection.skipped_files
        return sum(
            decision.skippable or decision.file in would
            for decision in self.selection.decisions.values()
        )

    def false_skips(self) -> list[tuple[str, str]]:
        """Tests that would have been skipped and failed, and files that would have been
        skipped whole and were not collected as recorded: (node id or path, reason)."""
        decisions = self.selection.decisions
        would = self.selection.skipped_files if self.verify else {}
        found = []
        for nodeid in sorted(self.outcomes.failed):
            decision = decisions.get(nodeid)
            if decision is None:
                continue
            if decision.file in would:
                found.append((nodeid, would[decision.file].reason))
            elif decision.skippable:
                found.append((nodeid, decision.reason))
        for label, skip in would.items():
            tally = self.selection.tallies.get(label)
            if tally is None or tally.broken:
                found.append((label, f"{skip.reason}; failed to collect now"))
            elif tally.tests != skip.tests:
                found.append((label, f"{skip.reason}; {tally.tests} test(s) collected now"))
        return found

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        verbose = self.config.option.verbose > 0 or "p" in terminalreporter.reportchars
        if self.cached and verbose:
            terminalreporter.write_sep("=", f"{self.cached} cached passes (skip-passed)")
            for nodeid, reason in self._cached():
                terminalreporter.write_line(f"CACHED {nodeid} - {reason}")
        if self.verify:
            false = self.false_skips()
            terminalreporter.write_sep(
                "=",
                f"cachekit skip-passed verify: {len(false)} false skip(s) "
                f"of {self.would_skip()} test(s) that would have been skipped",
                red=bool(false),
                green=not false,
            )
            for nodeid, reason in false:
                terminalreporter.write_line(f"FALSE SKIP {nodeid} - {reason}")

    def pytest_report_header(self, config: pytest.Config) -> str:
        mode = "verify (runs every test)" if self.verify else "on"
        access = "read-write" if self.namespace.trusted else "read-only"
        return f"cachekit skip-passed: {mode}, records in {self.store.display} ({access})"

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.store.close()

    # -- warnings -------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            _warn(self.config, message)

    def _warn_corrupt(self) -> None:
        corrupt = self.store.budget.corrupt_summary()
        if corrupt is not None:
            self.store.budget.warnings.clear()
            self._warn(str(corrupt).removeprefix("cachekit: "))


def _signing_key(shared: Settings, namespace: Namespace, directory: Path) -> bytes:
    """``CACHEKIT_SIGNING_KEY``; or, for a local run with no store and outside CI, this
    machine's generated key. In CI or with a store a key must be given: a generated one
    would let whoever restores the cache directory also forge its records."""
    text = os.environ.get(ENV_SIGNING_KEY, "")
    if text.strip():
        return signing_key_from_text(text, ENV_SIGNING_KEY)
    if shared.remote or namespace.provider != "local":
        where = "with a shared store" if shared.remote else f"in CI ({namespace.provider})"
        raise SigningKeyError(f"{ENV_SIGNING_KEY} is not set, and {where} it must be")
    return machine_key(directory / "signing-key")


def _warn(config: pytest.Config, message: str) -> None:
    """One `SkipPassedWarning` (`cachekit_pytest.report.warn`)."""
    warn(config, SkipPassedWarning(f"cachekit: skip-passed: {message}"), stacklevel=4)
