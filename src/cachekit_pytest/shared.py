"""The shared cache of one pytest run with a backend: the start-up read of the shared
keys (now, or alongside collection and the tests), folded into the working copy and into
``LFPlugin`` and ``NFPlugin``; and, at the end, what the run learnt as its own part.

`cachekit_pytest.provider.CacheProvider` owns one `SharedRun` when ``cache_url`` names a
store, and calls it from its hooks.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Sequence
from pprint import pformat
from typing import Any

import pytest
from _pytest._io import TerminalWriter
from _pytest.cacheprovider import Cache, LFPlugin, NFPlugin

import cachekit.collector as collector
from cachekit.ci.layout import DURATIONS_KEY, LASTFAILED_KEY, NODEIDS_KEY
from cachekit.ci.namespace import detect_namespace
from cachekit.session import Session
from cachekit.values.codec import JSON
from cachekit.values.compaction import compaction_due
from cachekit.values.digests import NODEIDS, DigestSet
from cachekit_pytest.lastfailed import Recorder
from cachekit_pytest.options import Settings
from cachekit_pytest.recording import TestStats, code_keys
from cachekit_pytest.report import warn
from cachekit_pytest.sync import open_sync
from cachekit_pytest.sync.keys import (
    BUILTIN_SHARED_KEYS,
    DURATIONS_READ,
    Found,
    Shared,
    known_nodeids,
    shared_keys,
)
from cachekit_pytest.sync.records import Write
from cachekit_pytest.sync.remote import InProcessSync, InvalidBackend, Sync, SyncFailed

try:  # pytest >= 9.1 keys LFPlugin and NFPlugin by structured node ids
    from _pytest.nodeid import NodeId

    def _node_key(nodeid: str) -> Any:
        return NodeId.parse(nodeid)

except ImportError:  # pragma: no cover (older pytest: plain strings)

    def _node_key(nodeid: str) -> Any:
        return nodeid


_MISSING: Any = object()


class SharedRun:
    """The shared keys of one run: read, folded in, and written back as its part."""

    def __init__(
        self, config: pytest.Config, settings: Settings, session: Session, sync: Sync
    ) -> None:
        assert config.cache is not None
        self.settings = settings
        self.session = session
        self.sync = sync
        self.run_start = time.time()
        self.shared: dict[str, Shared] = shared_keys(settings.shared_keys)
        #: What the start-up read found, by key (empty when it did not happen).
        self.found: dict[str, Found] = {}
        #: Every test id the store knows (`NodeIdsKey`), once the start-up read is in.
        self.known_nodeids = DigestSet()
        #: Whether the start-up read fetches that set: only ``--nf`` and ``--cache-show``
        #: use it (`needs_known_nodeids`).
        self.nodeids_read = False
        #: The ids this session collected (here, or on its xdist workers).
        self.collected_ids: set[str] = set()
        #: The working copy's value of each shared key right after the start-up sync.
        self.start: dict[str, JSON] = {key: config.cache.get(key, None) for key in self.shared}
        #: Whether the run read the store at its start (not under ``--cache-clear``).
        self.read_at_start = True
        #: True while the start-up read runs alongside the session, not yet folded in.
        self.pending = False
        #: True while the end-of-run write goes on (`Sync.written` not yet called).
        self.writing = False
        #: The Ctrl-C that ended a wait for the store, for pytest to report (`interrupted`).
        self.interrupt: KeyboardInterrupt | None = None
        #: Per-test statistics, when the run records them (a trusted run).
        self.test_stats = TestStats() if settings.stats and session.namespace.trusted else None
        self.recorder = Recorder(self.test_stats)

    @classmethod
    def begin(cls, config: pytest.Config, settings: Settings) -> SharedRun:
        """Open the store and start reading the shared keys; wait for them here if the
        run needs them now. A URL that names no store is a usage error."""
        session = Session(
            settings.url,
            namespace=detect_namespace(shard=settings.shard or None),
            timeout=settings.timeout,
            timeout_setting="--cache-timeout",
            warn=lambda warning: warn(config, warning),
        )
        keys = settings.shared_keys + ((DURATIONS_READ,) if settings.num_shards else ())
        sync = open_sync(session, keys)
        reading = not config.getoption("cacheclear")
        nodeids_read = reading and needs_known_nodeids(config)
        try:
            sync.start(read=reading, count_only=() if nodeids_read else (NODEIDS_KEY,))
        except InvalidBackend as error:
            raise pytest.UsageError(f"cachekit: {error}") from None
        run = cls(config, settings, session, sync)
        run.read_at_start = reading
        run.nodeids_read = nodeids_read
        if reading:
            run.pending = True
            if run.needs_values_now(config):
                run.finish_read(config)
        return run

    def opened(self, config: pytest.Config) -> None:
        """A store URL that cannot be opened is a usage error, even when the start-up
        read runs alongside: find out before the tests run. Where the URL was checked
        here already (`Sync.checked_here`), the tests do not wait for the sync agent to
        import the store's client library: until it has, `OpenWatch` looks before each
        test whether opening failed after all."""
        if self.pending and not self.open_settled(wait=not self.sync.checked_here):
            config.pluginmanager.register(OpenWatch(self, config), "cachekit-open-watch")

    def open_settled(self, *, wait: bool) -> bool:
        """Whether the store opened, or failed to open (then this run reads and writes
        nothing); waits for that unless not ``wait``."""
        try:
            return self.sync.opened(wait=wait)
        except InvalidBackend as error:
            # The usage error is the one message: no "running as with an empty one".
            self.pending, self.session.degraded = False, True
            raise pytest.UsageError(f"cachekit: {error}") from None
        except SyncFailed as error:
            self.read_failed(error)
            return True

    def needs_values_now(self, config: pytest.Config) -> bool:
        """Whether ``LFPlugin`` or ``NFPlugin`` use the shared values from the start, or
        the read costs as little now as later (a store on this machine).

        Otherwise the read of a remote store runs alongside collection and the tests;
        the first read of a shared key through ``config.cache`` (a conftest, the
        ``cache`` fixture) or the end of the session waits for it (`SharedCache`).
        """
        return (
            isinstance(self.sync, InProcessSync)
            or bool(self.settings.num_shards)  # the split needs durations
            or any(config.getoption(name) for name in ("lf", "failedfirst", "newfirst"))
            or bool(config.option.cacheshow)
        )

    @collector.held_off()
    def finish_read(self, config: pytest.Config) -> None:
        """Wait for the start-up read, then bring the working copy, and the state of
        ``LFPlugin`` and ``NFPlugin`` if they run already, up to date: what they hold is
        what they would hold had the read finished before they started."""
        assert config.cache is not None
        self.pending = False
        if self.session.degraded:  # a usage error or Ctrl-C ended the run already
            return
        try:
            self.found = self.sync.result()
        except InvalidBackend as error:
            if not config.pluginmanager.get_plugin("lfplugin"):
                raise pytest.UsageError(f"cachekit: {error}") from None
            self.read_failed(error)  # mid-run: report, never fail the run
            return
        except SyncFailed as error:
            self.read_failed(error)
            return
        finally:
            self.session.warn_corrupt()
        if config.option.cacheshow:
            return
        try:
            self.start = self._update_working_copy(config.cache)
        except Exception as error:  # pytest's Cache.set failed: a store fault, not the run's
            self.found = {}
            self.session.fail(
                "could not bring the working copy up to date, running as with an empty "
                f"cache and writing nothing back: {type(error).__name__}: {error}"
            )
            return
        self.known_nodeids = known_nodeids(self.found.get(NODEIDS_KEY))
        self.fold_into_plugins(config)

    def fold_into_plugins(self, config: pytest.Config) -> None:
        """Bring ``LFPlugin`` and ``NFPlugin``, where they run already, up to date with
        the start-up read (`CacheProvider` calls it again once they run)."""
        lfplugin = config.pluginmanager.get_plugin("lfplugin")
        if isinstance(lfplugin, LFPlugin):
            failing = self.recorder.replay(_strings(self.start[LASTFAILED_KEY])).failing
            lfplugin.lastfailed = {_node_key(nodeid): True for nodeid in failing}
        nfplugin = config.pluginmanager.get_plugin("nfplugin")
        if isinstance(nfplugin, NFPlugin) and not isinstance(nfplugin.cached_nodeids, KnownNodeIds):
            nfplugin.cached_nodeids = KnownNodeIds(nfplugin.cached_nodeids, self.known_nodeids)

    def collected(self, config: pytest.Config, items: Sequence[pytest.Item]) -> None:
        """Before ``NFPlugin`` writes the working copy: under ``--nf`` it adds only the
        ids it found new, and those the store knew were not; add every id this machine
        collected, as pytest alone would have (all were new to it)."""
        self.collected_ids.update(item.nodeid for item in items)
        nfplugin = config.pluginmanager.get_plugin("nfplugin")
        if (
            isinstance(nfplugin, NFPlugin)
            and nfplugin.active  # otherwise NFPlugin adds every collected id itself
            and isinstance(nfplugin.cached_nodeids, KnownNodeIds)
        ):
            set.update(nfplugin.cached_nodeids, (_node_key(item.nodeid) for item in items))

    def read_failed(self, error: Exception) -> None:
        self.pending = False  # the session is degraded now: the run never writes
        self.session.fail(
            f"could not read the shared cache, running as with an empty one "
            f"and writing nothing back: {error}",
        )

    def _synced_value(self, key: str, current: JSON) -> JSON:
        """The value the working copy gets from the start-up read: the store's where it
        has one (for pytest's own keys, also where it has none but the copy does)."""
        found = self.found[key]
        if found.has_data or (key in BUILTIN_SHARED_KEYS and current is not None):
            value: JSON = found.value
            return value
        return current

    def _update_working_copy(self, cache: Cache) -> dict[str, JSON]:
        """The merged values replace the working copy's, which is written only if that
        changes it (an empty value does not create a file): where the store knows nothing
        new, the working copy stays byte for byte what pytest left. Returns what the
        working copy now holds, by key (None where nothing)."""
        now: dict[str, JSON] = {}
        for key, shared in self.shared.items():
            current = cache.get(key, _MISSING)
            if not shared.in_working_copy:
                now[key] = None if current is _MISSING else current
                continue
            value = self._synced_value(key, None if current is _MISSING else current)
            if value != current and (value or current is not _MISSING):
                cache.set(key, value)
                now[key] = value
            else:
                now[key] = None if current is _MISSING else current
        return now

    def write_out(self, config: pytest.Config) -> None:
        if self.session.degraded or config.option.cacheshow or not self.session.namespace.trusted:
            return
        try:
            self.writing = self._sync_out(config)
        except KeyboardInterrupt as interrupt:
            self.interrupted(interrupt)
        except Exception as error:  # SyncFailed, or anything else: never fail the run
            self._write_failed(error)
        self.session.warn_corrupt()

    def finish_write(self) -> None:
        if not self.writing:
            return
        self.writing = False
        try:
            self.sync.written()
        except KeyboardInterrupt as interrupt:
            self.interrupted(interrupt)
        except Exception as error:  # as in write_out
            self._write_failed(error)
        self.session.warn_corrupt()

    @collector.held_off()
    def _sync_out(self, config: pytest.Config) -> bool:
        """Write what this run learnt as its own part of each shared key, and compact;
        returns whether a write began (`Sync.written` waits for it)."""
        assert config.cache is not None
        parts: dict[str, JSON] = {}
        replayed = self.recorder.replay(_strings(self.start[LASTFAILED_KEY]))
        observed = replayed.observations(self.run_start, every_pass=not self.read_at_start)
        if not config.getoption("collectonly"):
            nodeids = self._nodeids_part(config)
            if nodeids:
                parts[NODEIDS_KEY] = nodeids
        now = time.time()
        for key, shared in self.shared.items():
            if key not in (LASTFAILED_KEY, NODEIDS_KEY):
                value = shared.part(self.start[key], config.cache.get(key, None), now)
                if value is not None:
                    parts[key] = value
        threshold = self.settings.compact_threshold
        adds_part = {*parts, *([LASTFAILED_KEY] if observed else [])}
        compact = [
            key
            for key, found in self.found.items()
            if compaction_due(
                len(found.parts) + (key in adds_part),
                threshold,
                read=key != NODEIDS_KEY or self.nodeids_read,
            )
        ]
        stats = None
        if self.test_stats is not None and self.test_stats.seconds:
            namespace = self.session.namespace
            stats = self.test_stats.record(
                at=self.run_start,
                run_id=namespace.run_id,
                label=namespace.describe(),
                shard=namespace.shard,
                codes=code_keys(config, self.test_stats.seconds),
            )
        if not (parts or observed or compact or stats):
            return False
        self.sync.write(Write(parts, tuple(compact), threshold, observed, stats))
        return True

    def _nodeids_part(self, config: pytest.Config) -> JSON:
        """This run's part of ``cache/nodeids``. Where the start-up read fetched the
        store's set: the ids this machine knows and collected that the store did not.
        Otherwise (4 MB at 500,000 tests, read only for ``--nf``): every id this session
        collected, as 8-byte digests; the union leaves those the store knew as they were.
        """
        nfplugin = config.pluginmanager.get_plugin("nfplugin")
        if not isinstance(nfplugin, NFPlugin):
            return None
        if not self.nodeids_read:
            collected = DigestSet(frozenset(self.collected_ids))
            return NODEIDS.stored(collected) if self.collected_ids else None
        known = self.known_nodeids
        ids = {str(nodeid) for nodeid in nfplugin.cached_nodeids}
        added: list[JSON] = [nodeid for nodeid in sorted(ids) if nodeid not in known]
        return added or None

    def durations(self) -> tuple[dict[str, float], str]:
        """Recorded durations per test id, for the shard split, and where they came from
        (the CI run's split plan, `cachekit.stats.split_plan`; "" when not read)."""
        found = self.found.get(DURATIONS_KEY)
        return (found.value, found.note) if found is not None else ({}, "")

    def workers_collected(self, config: pytest.Config, ids: Sequence[str]) -> None:
        """Under xdist the controller never collects: learn the ids from the workers."""
        self.collected_ids.update(ids)
        nfplugin = config.pluginmanager.get_plugin("nfplugin")
        if isinstance(nfplugin, NFPlugin):
            nfplugin.cached_nodeids.update(_node_key(nodeid) for nodeid in ids)
        collected = self.recorder.workers_collected(ids)
        lfplugin = config.pluginmanager.get_plugin("lfplugin")
        if isinstance(lfplugin, LFPlugin):
            failing = [str(nodeid) for nodeid in lfplugin.lastfailed]
            for collector in collected.fixed_collectors(failing):
                lfplugin.lastfailed.pop(_node_key(collector), None)

    def show(self, config: pytest.Config) -> None:
        """``--cache-show``: the merged shared values, after pytest's own listing."""
        if self.session.degraded:
            return
        glob = config.option.cacheshow[0] or "*"
        tw = TerminalWriter()
        tw.sep("-", f"cachekit: shared values for {glob!r} in {self.session.describe()}")
        for key in self.shared:
            found = self.found.get(key)
            if found is None or not found.has_data or not _glob_matches(key, glob):
                continue
            sources = (["the base"] if found.has_base else []) + (
                [f"{len(found.parts)} part(s)"] if found.parts else []
            )
            value = found.value
            if key == NODEIDS_KEY:  # digests have no names: count them, list the names
                known = known_nodeids(found)
                tw.line(f"{key} holds {len(known)} test id(s), as 8-byte digests")
                value = sorted(known.names)
            tw.line(f"{key} contains (merged from {' and '.join(sources)}):")
            for line in pformat(value).splitlines():
                tw.line("  " + line)
            for part in found.parts:
                tw.line(f"  part {part}")

    def interrupted(self, interrupt: KeyboardInterrupt) -> None:
        """Ctrl-C while the run waited for the store at its end: stop waiting at once and
        leave the store alone from now on (the agent is killed as it closes). What it
        stored stays: parts are stored whole or not at all. `CacheProvider` has pytest
        report the interrupt as its own, exit code 2."""
        self.pending = self.writing = False
        self.interrupt = interrupt
        self.session.degraded = True
        self.session.budget.remaining = 0.0

    def _write_failed(self, error: Exception) -> None:
        self.session.fail(f"could not write this run's results: {error}")

    def close(self) -> None:
        self.sync.close()


def _glob_matches(key: str, glob: str) -> bool:
    """Like the ``rglob`` of ``--cache-show``: the glob may match any tail of the key."""
    segments = key.split("/")
    return any(
        fnmatch.fnmatchcase("/".join(segments[start:]), glob) for start in range(len(segments))
    )


class OpenWatch:
    """Registered while the store opens alongside the tests (`SharedRun.opened`): before
    each test, a URL that could not be opened after all is the usage error the tests
    did not wait for. Once the store is open, or the read is in, it unregisters."""

    def __init__(self, run: SharedRun, config: pytest.Config) -> None:
        self.run = run
        self.config = config

    def pytest_runtest_logstart(self) -> None:
        # logstart, not runtest_protocol: under xdist the controller sees only this.
        if not self.run.pending or self.run.open_settled(wait=False):
            self.config.pluginmanager.unregister(self)


class SharedCache(Cache):  # type: ignore[misc]  # pytest marks it final for its users
    """pytest's `Cache`, whose first read or write of a shared key waits for the start-up
    read when that runs alongside the session (`SharedRun.needs_values_now`)."""

    _shared: frozenset[str] = frozenset()
    _before_shared_access: Callable[[], None] | None = None

    def wait_for_shared(self, keys: frozenset[str], finish: Callable[[], None]) -> None:
        self._shared = keys
        self._before_shared_access = finish

    def _wait(self, key: str) -> None:
        if self._before_shared_access is not None and key in self._shared:
            finish, self._before_shared_access = self._before_shared_access, None
            finish()

    def get(self, key: str, default: Any) -> Any:
        self._wait(key)
        return super().get(key, default)

    def set(self, key: str, value: object) -> None:
        self._wait(key)
        super().set(key, value)


class KnownNodeIds(set[Any]):
    """``NFPlugin``'s ``cached_nodeids`` with a backend: the ids this machine knows, as
    pytest alone keeps them (iterated, and written to the working copy at the end), and
    for ``in`` also every id the store knows, kept as digests: a test any shard ran is
    not new."""

    def __init__(self, local: Iterable[Any], store: DigestSet) -> None:
        super().__init__(local)
        self.store = store

    def __contains__(self, nodeid: object) -> bool:
        return super().__contains__(nodeid) or str(nodeid) in self.store


def needs_known_nodeids(config: pytest.Config) -> bool:
    """Whether the run uses every test id the store knows: ``--nf`` orders the tests it
    never saw first, ``--cache-show`` shows how many there are."""
    return bool(config.getoption("newfirst") or config.option.cacheshow)


def _strings(value: JSON) -> list[str]:
    """The node ids of a ``cache/lastfailed`` mapping or a ``cache/nodeids`` list."""
    if isinstance(value, dict | list):
        return [item for item in value if isinstance(item, str)]
    return []


#: Where the xdist controller hands its workers the store's test ids (under ``--nf``:
#: workers collect, and their ``NFPlugin`` orders the new tests first).
KNOWN_NODEIDS_WORKERINPUT_KEY = "cachekit_known_nodeids"


class XdistCollection:
    """Registered on the xdist controller only when xdist is installed."""

    def __init__(self, run: SharedRun, config: pytest.Config) -> None:
        self.run = run
        self.config = config

    def pytest_xdist_node_collection_finished(self, node: object, ids: Sequence[str]) -> None:
        self.run.workers_collected(self.config, ids)

    def pytest_configure_node(self, node: object) -> None:
        workerinput = getattr(node, "workerinput", None)
        if isinstance(workerinput, dict) and self.config.getoption("newfirst"):
            workerinput[KNOWN_NODEIDS_WORKERINPUT_KEY] = self.run.known_nodeids.to_json()


def known_to_worker(config: pytest.Config) -> None:
    """On an xdist worker: ``NFPlugin`` also asks the store's set the controller read
    whether a test is new (`XdistCollection.pytest_configure_node`)."""
    workerinput = getattr(config, "workerinput", None)  # pytest's own tests set True
    nfplugin = config.pluginmanager.get_plugin("nfplugin")
    if (
        isinstance(workerinput, dict)
        and KNOWN_NODEIDS_WORKERINPUT_KEY in workerinput
        and isinstance(nfplugin, NFPlugin)
    ):
        known = DigestSet.from_json(workerinput[KNOWN_NODEIDS_WORKERINPUT_KEY])
        nfplugin.cached_nodeids = KnownNodeIds(nfplugin.cached_nodeids, known)
