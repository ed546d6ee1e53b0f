"""The collection hooks: skipping whole test files before pytest imports them, deciding
each collected test's fate, and noting which files were collected whole."""

from __future__ import annotations

import time
from collections.abc import Collection, Generator
from pathlib import Path
from typing import Any

import attrs
import pytest
from _pytest.pathlib import fnmatch_ex

from cachekit.skip.records import FileMatch, Secrets, Table
from cachekit_pytest.options import SkipSettings
from cachekit_pytest.skip.keys import Keys, make_fingerprinter
from cachekit_pytest.skip.selection import (
    FileSkip,
    FileTally,
    SkipSelection,
    apply_selection,
    describe_file,
    failed_paths,
    file_failed_last_time,
    file_id,
    read_lastfailed,
    relative_label,
    select,
)
from cachekit_pytest.skip.wire import WIRE, WORKER_OUTPUT, WorkerInput


class Collecting:
    """The side that collects: `SkipRun` without xdist, `WorkerSelection` on a worker.

    It skips whole test files before pytest imports them, decides each collected test's
    fate, and notes which files it collected whole (what a file record needs). The side it
    is tells it the records, the secrets, ``cache/lastfailed`` and the mode.
    """

    config: pytest.Config
    settings: SkipSettings
    selection: SkipSelection
    #: Tests taken out of this run as cached (in this process, or by the xdist workers).
    removed: int

    def _init_collecting(self) -> None:
        self.keys = Keys(lambda: make_fingerprinter(self.config, self.settings))
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
        self.removed = apply_selection(items, self.selection, verify=self._collect_verify())

    def _tally(self, selection: SkipSelection, table: Table) -> dict[str, FileTally]:
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
        self.selection = SkipSelection()
        self.removed = 0
        self._table = Table(given.layers) if given.recording or any(given.layers) else None
        self._init_collecting()

    def _collect_table(self) -> Table | None:
        return self._table

    def _collect_secrets(self) -> Secrets:
        return self.given.secrets

    def _collect_lastfailed(self) -> Collection[str]:
        given = self.given.lastfailed
        return read_lastfailed(self.config) if given is None else given

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
        output[WORKER_OUTPUT] = WIRE.unstructure(self.selection)
