"""The collection hooks: skipping whole test files before pytest imports them, deciding
each collected test's fate, and noting which files were collected whole.

They run where the tests are collected: the pytest process, or each xdist worker. Either
side hands them a `CollectPlan`; nothing here knows which side it is on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Generator
from pathlib import Path

import attrs
import pytest
from _pytest.pathlib import fnmatch_ex

from cachekit.skip.records import FileMatch, Secrets, Table
from cachekit_pytest.options import SkipSettings
from cachekit_pytest.skip.attribution import Assembled, Attribution, TestKey
from cachekit_pytest.skip.keys import Keys, make_fingerprinter
from cachekit_pytest.skip.selection import (
    FileSkip,
    FileTally,
    SkipSelection,
    apply_selection,
    describe_file,
    doctest_modules,
    failed_paths,
    file_failed_last_time,
    file_id,
    relative_label,
    select,
)
from cachekit_pytest.skip.tracing import Recorder, project_file_test


@attrs.frozen
class CollectPlan:
    """What the collection hooks need from the side they run on: `SkipRun` in the pytest
    process, or the `WorkerInput` the xdist controller sent.

    The records and ``cache/lastfailed`` come as functions, each called once, when
    collection first needs it (as the records were always read): a run that collects
    nothing reads neither, and with a backend reading ``cache/lastfailed`` waits for the
    start-up read that otherwise overlaps collection.
    """

    secrets: Secrets
    #: Verify mode: every test runs; what would have been skipped is only noted.
    verify: bool
    #: Whether whole files are recorded (`whole_files_refusal`).
    whole_files: bool
    #: Whether whole files are skipped (in verify mode: noted as would-be skipped).
    skip_files: bool
    #: Whether this process saves the fingerprinter's analysis (one xdist worker does).
    save: bool
    #: The records; None when nothing is to be selected or recorded.
    table: Callable[[], Table | None]
    #: The node ids in pytest's ``cache/lastfailed``.
    lastfailed: Callable[[], Collection[str]]
    #: Whether this run's passes are recorded: then the code each test executes is
    #: (`cachekit_pytest.skip.tracing`).
    record: bool = False


class Collecting:
    """The collection hooks, for one session.

    They skip whole test files before pytest imports them, decide each collected test's
    fate, and note which files were collected whole (what a file record needs).
    ``selection`` and ``removed`` are what they found, for the side that reports.
    """

    def __init__(self, config: pytest.Config, settings: SkipSettings, plan: CollectPlan) -> None:
        self.config = config
        self.plan = plan
        self.selection = SkipSelection()
        #: Tests taken out of this run as cached.
        self.removed = 0
        self.keys = Keys(lambda: make_fingerprinter(config, settings, plan.secrets))
        self._attribution: Attribution | None = None
        #: What each test executes, when this run records (`start_recording`).
        self.recorder = Recorder(project_file_test(str(config.rootpath))) if plan.record else None
        self._patterns = tuple(str(pattern) for pattern in config.getini("python_files"))
        self._labels: dict[Path, str | None] = {}
        self._paths: dict[str, Path] = {}
        #: Tests collected per test file, before any selection.
        self._collected: dict[str, int] = {}
        #: Paths under which something failed, or was skipped, while collecting.
        self._broken: set[str] = set()
        #: Files skipped whole (in verify mode: that would have been).
        self._skipped_files: dict[str, FileSkip] = {}
        self._file_matches: dict[str, tuple[str, FileMatch] | None] = {}
        self._lastfailed: Collection[str] | None = None
        self._failed: frozenset[str] | None = None
        self._file_lookup_seconds = 0.0

    def start_recording(self) -> None:
        """Register and start the recorder (when this run records): from now on, the
        code each collector, fixture and test executes is recorded."""
        if self.recorder is not None:
            self.config.pluginmanager.register(self.recorder, "cachekit-skip-passed-recorder")
            self.recorder.start()

    def assemble(self) -> None:
        """Stop recording, and add the key and dependency set of each test that ran to
        the selection (at the end of the session)."""
        recorder = self.recorder
        if recorder is None:
            return
        recorder.stop()
        decisions = self.selection.decisions
        try:
            attribution = self.attribution()
        except Exception:  # no fingerprinter: no test had a key, none is recorded
            return
        full = {nodeid: d.key_hash for nodeid, d in decisions.items()}
        try:
            assembled = attribution.assemble(
                recorder,
                {nodeid: d.static_hash for nodeid, d in decisions.items() if d.static_hash},
                full,
            )
        except Exception:  # any failure: the tests that ran fall back to their full keys
            assembled = Assembled(
                {nodeid: TestKey(full[nodeid], "") for nodeid in recorder.tests if nodeid in full}
            )
        self.selection = attrs.evolve(
            self.selection,
            keys=assembled.keys,
            sets={**assembled.sets, **self.selection.sets},
        )

    def attribution(self) -> Attribution:
        """The session's dependency sets and keys, on its fingerprinter (made once)."""
        if self._attribution is None:
            self._attribution = Attribution(
                self.keys.fingerprinter(), self.plan.secrets, self.config.rootpath
            )
        return self._attribution

    def _lastfailed_ids(self) -> Collection[str]:
        if self._lastfailed is None:
            self._lastfailed = self.plan.lastfailed()
        return self._lastfailed

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
            self._failed = failed_paths(self._lastfailed_ids())
        return self._failed

    def _file_match(self, label: str, table: Table) -> tuple[str, FileMatch] | None:
        """The file's key and the valid file record with that key, if any (looked up
        once: a bad record is counted once)."""
        if label not in self._file_matches:
            path = self._paths[label]
            try:
                file_key = self.keys.file_key(path)
                static_key = self.attribution().static_key(
                    path, docstrings=doctest_modules(self.config)
                )
            except Exception:  # reported when its tests are selected
                return None
            started = time.perf_counter()
            secrets = self.plan.secrets
            key_of = self.attribution().key_of(
                path, secrets.key_hash(static_key), secrets.key_hash(file_key), table.sets
            )
            match = (
                table.lookup_file(
                    secrets,
                    secrets.file_hash(file_id(label, doctests=doctest_modules(self.config))),
                    key_of,
                )
                if table.layers
                else None
            )
            self._file_lookup_seconds += time.perf_counter() - started
            self._file_matches[label] = None if match is None else (file_key, match)
        return self._file_matches[label]

    @pytest.hookimpl(wrapper=True)
    def pytest_ignore_collect(
        self, collection_path: Path, config: pytest.Config
    ) -> Generator[None, bool | None, bool | None]:
        """Skip a test file whole, before pytest imports it, when a valid file record has
        its current key and nothing of it failed last time. A wrapper, that decides after
        every other implementation: a file another one ignores (``--ignore``,
        ``collect_ignore``, a conftest's True) is never counted as cached, and a
        conftest's False for the files it keeps (the hook takes the first answer that is
        not None) cannot turn whole-file skipping off. In verify mode, only note that it
        would have been skipped."""
        ignored = yield
        if ignored:
            return ignored
        return True if self._skips_whole(collection_path) else ignored

    def _skips_whole(self, collection_path: Path) -> bool:
        """Whether the file is skipped whole (never in verify mode, where it is noted)."""
        if not self.plan.skip_files:
            return False
        label = self._label(collection_path)
        if label is None:
            return False
        verify = self.plan.verify
        if label in self._skipped_files:
            return not verify
        table = self.plan.table()
        if table is None or file_failed_last_time(label, self._failed_files()):
            return False
        found = self._file_match(label, table)
        if found is None:
            return False
        file_key, match = found
        self._skipped_files[label] = FileSkip(match.tests, describe_file(file_key, match))
        return not verify

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
        table = self.plan.table()
        if table is None:
            return
        whole = self.plan.whole_files
        # Keying (files not keyed whole before: a run that names them) and selecting run
        # no project code: not under the recorder's tracer, which would slow them down.
        with self.recorder.paused() if self.recorder is not None else contextlib.nullcontext():
            selection = select(
                items,
                keys=self.keys,
                attribution=self.attribution,
                secrets=self.plan.secrets,
                table=table,
                lastfailed=self._lastfailed_ids(),
                save=self.plan.save,
                label=self._label if whole else lambda path: None,
            )
            tallies = self._tally(selection, table) if whole else {}
        self.selection = attrs.evolve(
            selection,
            bad_records=table.bad_records,
            older_format=table.older_format,
            files=selection.files + len(self._skipped_files if not self.plan.verify else ()),
            key_seconds=self.keys.seconds,
            lookup_seconds=selection.lookup_seconds + self._file_lookup_seconds,
            skipped_files=dict(sorted(self._skipped_files.items())),
            tallies=tallies,
        )
        self.removed = apply_selection(items, self.selection, verify=self.plan.verify)

    def _tally(self, selection: SkipSelection, table: Table) -> dict[str, FileTally]:
        """The collected test files, each with its key hash and count, and whether a valid
        record of it with both exists already."""
        key_hashes = {decision.file: decision.key_hash for decision in selection.decisions.values()}
        key_hashes.pop("", None)
        tallies: dict[str, FileTally] = {}
        doctests = doctest_modules(self.config)
        for label, key_hash in sorted(key_hashes.items()):
            tests = self._collected.get(label, 0)
            found = self._file_match(label, table)
            recorded = found is not None and found[1].tests == tests
            try:
                static_key = self.attribution().static_key(self._paths[label], docstrings=doctests)
            except Exception:  # its tests ran and are not recorded
                continue
            static_hash = self.plan.secrets.key_hash(static_key)
            tallies[label] = FileTally(key_hash, tests, static_hash, recorded)
        return tallies

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Which collected files stayed whole: each of their tests is still in the run or
        was taken out as cached, and nothing under them failed to collect. In verify
        mode, also the files that would have been skipped and were not collected whole."""
        selection = self.selection
        verify = self.plan.verify
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
