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

import os
import time
from pathlib import Path
from typing import Any

import cattrs
import pytest
from _pytest.reports import TestReport

from cachekit import CacheKitWarning, LocalStore
from cachekit.ci.namespace import Namespace, detect_namespace
from cachekit.ci.signing import ENV_SIGNING_KEY, SigningKeyError, signing_key_from_text
from cachekit.errors import InvalidURL
from cachekit.session import Session
from cachekit.skip.dependencies import set_id
from cachekit.skip.records import (
    Secrets,
    Table,
    machine_key,
    run_label,
    sign_outcomes,
)
from cachekit.skip.snapshots import make_snapshot
from cachekit_pytest.options import Mode, Settings, SkipSettings
from cachekit_pytest.recording import RUN_PLUGIN
from cachekit_pytest.report import warn
from cachekit_pytest.skip.attribution import Pairs
from cachekit_pytest.skip.collect import Collecting, CollectPlan
from cachekit_pytest.skip.keys import CACHE_DIR_NAME
from cachekit_pytest.skip.selection import (
    SkipSelection,
    doctest_modules,
    file_id,
    read_lastfailed,
    whole_files_refusal,
)
from cachekit_pytest.skip.store import PassStore
from cachekit_pytest.skip.summary import (
    collection_finish,
    count_cached,
    explain,
    header,
    terminal_summary,
)
from cachekit_pytest.skip.wire import WIRE, WORKER_INPUT, WORKER_OUTPUT, WorkerInput
from cachekit_pytest.skip.worker import start_worker

#: How the header names the local store under the cache directory (no URL).
LOCAL_STORE_NAME = "the local cache directory"


class SkipPassedWarning(CacheKitWarning):
    """``--skip-passed`` could not do all it should: tests ran that might have been
    skipped, or passes were not recorded. Never a wrong skip."""


# -- outcomes -------------------------------------------------------------------------------


class Outcomes:
    """Which tests passed cleanly: setup, call and teardown all passed, and nothing else
    (a rerun, an xfail or xpass, a skip, a failed subtest) was reported for them."""

    def __init__(self) -> None:
        #: Tests that ran (a report of any phase).
        self.ran: set[str] = set()
        self.called: set[str] = set()
        self.spoiled: set[str] = set()
        self.passed: set[str] = set()
        self.failed: set[str] = set()

    def see(self, report: TestReport) -> None:
        nodeid = report.nodeid
        self.ran.add(nodeid)
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


# -- the plugin (this module, registered by `cachekit_pytest.plugin`) -------------------------


def configure(config: pytest.Config, settings: SkipSettings) -> None:
    """Register the plugins that do the work: `SkipRun` and its `Collecting`, or on an
    xdist worker the `Collecting` the controller planned (`start_worker`). Called only
    when the feature is on (`cachekit_pytest.plugin`): otherwise this module is not even
    imported."""
    if getattr(config, "cache", None) is None:  # -p no:cacheprovider
        _warn(config, "needs pytest's cache (-p no:cacheprovider is given); running all tests")
        return
    if config.getoption("collectonly") or getattr(config.option, "cacheshow", None):
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        given = workerinput.get(WORKER_INPUT)
        if given is not None:
            start_worker(config, settings, WIRE.structure(given, WorkerInput))
        return
    run = SkipRun.start(config, settings)
    if run is not None:
        config.pluginmanager.register(run, RUN_PLUGIN)
        config.pluginmanager.register(run.collecting, "cachekit-skip-passed-collect")
        run.collecting.start_recording()


class SkipRun:
    """The pytest process (or the xdist controller): reads the records once, plans the
    selection (its `Collecting` selects, or the xdist workers do), watches the reports,
    writes the new passes, reports."""

    def __init__(
        self,
        config: pytest.Config,
        settings: SkipSettings,
        *,
        session: Session,
        secrets: Secrets,
    ) -> None:
        self.config = config
        self.settings = settings
        self.session = session
        self.store = PassStore(session)
        self.secrets = secrets
        namespace = self.namespace
        self.verify = settings.mode is Mode.VERIFY
        self.outcomes = Outcomes()
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
        self._lastfailed_ids: set[str] | None = None
        #: What the xdist workers found, merged (None: this process collects).
        self._from_workers: SkipSelection | None = None
        #: The collection hooks in this process (they see nothing on an xdist controller).
        self.collecting = Collecting(
            config,
            settings,
            CollectPlan(
                secrets=secrets,
                verify=self.verify,
                whole_files=self.refusal is None,
                skip_files=self.skip_refusal is None,
                save=True,
                table=self.collect_table,
                lastfailed=self.lastfailed_ids,
                # An xdist controller runs no test: its workers record.
                record=self.recording and getattr(config.option, "dist", "no") == "no",
            ),
        )

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
        session = _session(config, shared, namespace, directory)
        return cls(config, settings, session=session, secrets=secrets)

    # -- the records ----------------------------------------------------------------------

    @property
    def namespace(self) -> Namespace:
        return self.session.namespace

    @property
    def recording(self) -> bool:
        """Whether this run's passes are written: a trusted run whose store still works."""
        return self.namespace.trusted and not self.session.degraded

    def table(self) -> Table | None:
        """The records, read once (None when the read failed: then nothing is skipped,
        and nothing written)."""
        if self._table is None and not self.session.degraded:
            self._table = self.store.read()
        return self._table

    def collect_table(self) -> Table | None:
        """The records, for selecting; None when there is nothing to select or record."""
        table = self.table()
        if table is None or not (self.recording or table.layers):
            return None
        return table

    def lastfailed_ids(self) -> set[str]:
        """The node ids in ``cache/lastfailed``, read once."""
        if self._lastfailed_ids is None:
            self._lastfailed_ids = read_lastfailed(self.config)
        return self._lastfailed_ids

    @property
    def selection(self) -> SkipSelection:
        """What selecting found: in this process, or on the xdist workers."""
        if self._from_workers is None:
            return self.collecting.selection
        return self._from_workers

    @property
    def removed(self) -> int:
        """Tests taken out of the run as cached, here or by the xdist workers."""
        if self._from_workers is None:
            return self.collecting.removed
        if self.verify:
            return 0
        return sum(decision.skippable for decision in self._from_workers.decisions.values())

    @property
    def cached(self) -> int:
        """Tests not run because they passed before: taken out of the run, or in files
        skipped whole (none in verify mode)."""
        return self.removed + self.selection.skipped_tests(verify=self.verify)

    def pytest_report_collectionfinish(self, config: pytest.Config) -> list[str] | None:
        return collection_finish(
            self.selection,
            verify=self.verify,
            cached=self.cached,
            refusal=self.refusal,
            skip_refusal=self.skip_refusal,
        )

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
            lastfailed=sorted(self.lastfailed_ids()),
            namespaces=table.namespaces,
            sets=table.sets,
        )
        node.workerinput[WORKER_INPUT] = WIRE.unstructure(given)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        sent = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
        if sent is None:
            return
        try:
            selection = WIRE.structure(sent, SkipSelection)
        except (cattrs.BaseValidationError, TypeError, ValueError):
            return
        self._from_workers = (self._from_workers or SkipSelection()).merge(selection)

    # -- the run --------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: TestReport) -> None:
        self.outcomes.see(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.collecting.assemble()
        if self.cached and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            # Every test was cached: not "no tests ran" (exit code 5) but a success.
            session.exitstatus = pytest.ExitCode.OK
        selection = self.selection
        if selection.bad_records:
            _warn(
                self.config,
                f"ignored {selection.bad_records} record(s) of this run's tests that are "
                f"unsigned or not signed with this {ENV_SIGNING_KEY} for this namespace, "
                "or dated in the future (tampered with, copied from another namespace, or "
                "written with another key); they skipped nothing",
            )
        if selection.older_format:
            _warn(
                self.config,
                f"{selection.older_format} test(s) or file(s) had only records of an older "
                "format (without the functions they executed): they ran, and are recorded "
                "again",
            )
        if selection.key_errors:
            _warn(
                self.config,
                "could not compute the keys of some test files; their tests ran and are not "
                f"recorded ({len(selection.key_errors)} problem(s); first: "
                f"{selection.key_errors[0]})",
            )
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None and self.cached:
            count_cached(terminal, selection, verify=self.verify)
        if self.recording:
            self._record()

    def _record(self) -> None:
        """Sign what this run saw: the clean passes (each with the dependency set of what
        it executed), the failures (they veto older passes, here and in every namespace
        that reads this one) and the files whole; store the new dependency sets."""
        decisions = self.selection.decisions
        keys = self.selection.keys
        passed = [
            (self.secrets.test_hash(nodeid), keys[nodeid].key_hash, keys[nodeid].deps)
            for nodeid in sorted(self.outcomes.passed)
            if nodeid in decisions and nodeid in keys and not decisions[nodeid].reason
        ]
        failed = sorted(nodeid for nodeid in self.outcomes.failed if nodeid in decisions)
        files, unions = self._passed_files()
        if not (passed or failed or files):
            return
        stamp = time.time()
        run = run_label(self.namespace)
        records = sign_outcomes(
            self.secrets,
            self.namespace.prefix,
            run=run,
            passed=passed,
            failed=[(self.secrets.test_hash(n), decisions[n].key_hash) for n in failed],
            files=files,
            failed_files=self._failed_files(failed),
            at=stamp,
        )
        named = {deps for _, _, deps in passed} | {file[3] for file in files}
        table = self.table()
        known = table.sets if table is not None else {}
        pairs = {**self.selection.sets, **unions}
        sets = {
            deps: sorted(member for member, _ in pairs[deps])
            for deps in sorted(named)
            if deps and deps not in known and deps in pairs
        }
        if passed:
            snapshot = self._snapshot(run, stamp)
            if snapshot is not None:
                sets[snapshot[0]] = snapshot[1]
        threshold = Settings.from_config(self.config).compact_threshold
        self.store.write(records, sets, secrets=self.secrets, compact_at=threshold)

    def _snapshot(self, run: str, at: float) -> tuple[str, list[str]] | None:
        """This run's snapshot of what the keys of the passes it records covered
        (`cachekit.skip.snapshots`), for explaining later runs; None when it cannot be
        made (it is advisory: the passes are recorded all the same)."""
        keys, sets, decisions = self.selection.keys, self.selection.sets, self.selection.decisions
        tests = {}
        for nodeid in self.outcomes.passed:
            key = keys.get(nodeid)
            if key is None or not key.deps or not key.path or key.deps not in sets:
                continue
            if nodeid in decisions and not decisions[nodeid].reason:
                tests[key.path, key.doctest, key.deps] = sets[key.deps]
        if not tests:
            return None
        try:
            attribution = self.collecting.attribution()
            components = attribution.recorded_components(
                (Path(path), doctest, pairs) for (path, doctest, _), pairs in tests.items()
            )
            return make_snapshot(attribution.hashes, self.namespace.prefix, run, at, components)
        except Exception:  # advisory: explanations get less precise, nothing else
            return None

    def _failed_files(self, failed: list[str]) -> list[tuple[str, str]]:
        """(file hash, key hash) of the test file of each failed test, as collected with
        and without ``--doctest-modules`` (a failure vetoes the file's records of both)."""
        found = set()
        for nodeid in failed:
            label = nodeid.partition("::")[0]
            for doctests in (False, True):
                name = self.secrets.file_hash(file_id(label, doctests=doctests))
                found.add((name, self.selection.decisions[nodeid].key_hash))
        return sorted(found)

    def _passed_files(self) -> tuple[list[tuple[str, str, int, str]], dict[str, Pairs]]:
        """(file hash, key hash, tests, dependency set) of each test file collected whole
        whose every test passed in this run or was taken out as a cached pass, not
        recorded yet; and the new sets (the union of its tests' sets), with hashes. Not a
        file one of whose tests has no dependency set (it fell back to its full key)."""
        decisions = self.selection.decisions
        by_file: dict[str, list[str]] = {}
        for nodeid, decision in decisions.items():
            if decision.file:
                by_file.setdefault(decision.file, []).append(nodeid)
        passed = self.outcomes.passed
        found = []
        unions: dict[str, Pairs] = {}
        for label, tally in self.selection.tallies.items():
            nodeids = by_file.get(label, [])
            if not tally.complete or tally.recorded or len(nodeids) != tally.tests:
                continue
            if all(
                nodeid in passed or (decisions[nodeid].skippable and not self.verify)
                for nodeid in nodeids
            ):
                union = self._union(nodeids)
                if union is None:
                    continue
                deps = set_id(member for member, _ in union)
                unions[deps] = union
                file_hash = self.secrets.file_hash(
                    file_id(label, doctests=doctest_modules(self.config))
                )
                try:
                    key_hash = self.collecting.attribution().key(
                        self.config.rootpath / label, tally.static_hash, union
                    )
                except Exception:  # no file record: its tests stay recorded one by one
                    continue
                found.append((file_hash, key_hash, tally.tests, deps))
        return found, unions

    def _union(self, nodeids: list[str]) -> Pairs | None:
        """The union of the dependency sets the tests ran with now (or, cached, were
        recorded with), with hashes; None when one has none."""
        keys, sets, decisions = self.selection.keys, self.selection.sets, self.selection.decisions
        union: dict[str, str] = {}
        for nodeid in nodeids:
            if nodeid in self.outcomes.passed:
                deps = keys[nodeid].deps if nodeid in keys else ""
            else:
                deps = decisions[nodeid].deps
            if not deps or deps not in sets:
                return None
            union.update(sets[deps])
        return sorted(union.items())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        option = self.config.option
        if getattr(option, "cachekit_skip_passed_explain", False) or option.verbose > 0:
            explain(terminalreporter, self.selection, self.outcomes.ran)
        terminal_summary(
            terminalreporter,
            self.selection,
            failed=self.outcomes.failed,
            verify=self.verify,
            cached=self.cached,
            verbose=self.config.option.verbose > 0 or "p" in terminalreporter.reportchars,
        )

    def pytest_report_header(self, config: pytest.Config) -> str:
        return header(
            verify=self.verify, display=self.store.display, trusted=self.namespace.trusted
        )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.store.close()


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


def _session(
    config: pytest.Config, shared: Settings, namespace: Namespace, directory: Path
) -> Session:
    """The run's one way to its store: the store ``cache_url`` names, or without one a
    local store under the cache directory. It warns through `SkipPassedWarning`."""

    def send(warning: Warning) -> None:
        _warn(config, str(warning).removeprefix("cachekit: "))

    if not shared.remote:
        store = LocalStore(directory / "store")
        return Session(
            LOCAL_STORE_NAME, namespace=namespace, timeout=shared.timeout, warn=send, store=store
        )
    session = Session(shared.url, namespace=namespace, timeout=shared.timeout, warn=send)
    try:
        _ = session.store  # opened now: a URL that names no store is a usage error
    except InvalidURL as error:
        raise pytest.UsageError(f"cachekit: {error}") from None
    return session


def _warn(config: pytest.Config, message: str) -> None:
    """One `SkipPassedWarning` (`cachekit_pytest.report.warn`)."""
    warn(config, SkipPassedWarning(f"cachekit: skip-passed: {message}"))
