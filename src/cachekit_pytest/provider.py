"""The stand-in for pytest's ``cacheprovider`` plugin.

Registered under the name ``cacheprovider``, it provides the same hooks and the ``cache``
fixture, and reuses pytest's own ``Cache``, ``LFPlugin`` and ``NFPlugin``: without a
backend it *is* pytest's cache provider, byte for byte. With a backend, the local
``cache_dir`` stays the working copy; the shared keys are read from the store, merged,
before ``LFPlugin``/``NFPlugin`` read them, and this run's changes are written back as
its own part at the end of the session.
"""

from __future__ import annotations

import fnmatch
import sys
import time
from collections.abc import Iterable, Sequence
from pprint import pformat
from typing import Any

import pytest
from _pytest import cacheprovider as builtin
from _pytest._io import TerminalWriter
from _pytest.cacheprovider import Cache, LFPlugin, NFPlugin
from _pytest.reports import CollectReport, TestReport

from cachekit import Merged, StoreUnavailableWarning
from cachekit.ci import detect_namespace
from cachekit.codec import JSON
from cachekit.layout import LASTFAILED_KEY, NODEIDS_KEY
from cachekit_pytest.options import BUILTIN_SHARED_KEYS, Settings
from cachekit_pytest.sync import (
    Budget,
    InvalidBackend,
    Remote,
    Shared,
    SyncFailed,
    has_data,
    shared_keys,
)

try:  # pytest >= 9.1 keys LFPlugin and NFPlugin by structured node ids
    from _pytest.nodeid import NodeId

    def _node_key(nodeid: str) -> Any:
        return NodeId.parse(nodeid)

except ImportError:  # pragma: no cover (older pytest: plain strings)

    def _node_key(nodeid: str) -> Any:
        return nodeid


_MISSING: Any = object()


class CacheProvider:
    """pytest's cache provider, plus the shared cache when a backend is chosen."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.remote: Remote | None = None
        self.shared: dict[str, Shared] = {}
        #: What the start-up read found, by key (empty when it did not happen).
        self.merged: dict[str, Merged] = {}
        #: The working copy's value of each shared key right after the start-up sync.
        self.start: dict[str, JSON] = {}
        #: True once the start-up read failed: the run then never writes to the store.
        self.degraded = False
        self.recorder: Recorder | None = None
        self.run_start = 0.0
        self._warned = False
        self._warned_corrupt = False

    # -- pytest's cacheprovider hooks --------------------------------------------------------

    def pytest_cmdline_main(self, config: pytest.Config) -> int | pytest.ExitCode | None:
        if config.option.cacheshow and not config.option.help:
            from _pytest.main import wrap_session  # noqa: PLC0415 (as pytest does)

            return wrap_session(config, self._cacheshow)
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        config.cache = Cache.for_config(config, _ispytest=True)
        self._sync_in(config)
        config.pluginmanager.register(LFPlugin(config), "lfplugin")
        config.pluginmanager.register(NFPlugin(config), "nfplugin")
        if self.recorder is not None:
            config.pluginmanager.register(self.recorder, "cachekit-recorder")
            if config.pluginmanager.hasplugin("xdist"):
                config.pluginmanager.register(XdistCollection(self, config), "cachekit-xdist")

    @pytest.fixture
    def cache(self, request: pytest.FixtureRequest) -> Cache:
        """pytest's cache (``config.cache``): JSON values kept between test sessions.

        ``cache.get(key, default)`` and ``cache.set(key, value)``, with ``/``-separated
        keys that start with your plugin's or project's name.
        """
        assert request.config.cache is not None
        return request.config.cache

    def pytest_report_header(self, config: pytest.Config) -> list[str] | None:
        lines = []
        cachedir = builtin.pytest_report_header(config)
        if cachedir:
            lines.append(cachedir)
        if self.remote is not None:
            lines.append(f"cachekit: {self._describe()}")
        return lines or None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if self.remote is None or self.recorder is None or self.degraded:
            return
        if config.option.cacheshow or not self.remote.writable:
            return
        try:
            self._sync_out(config)
        except Exception as error:  # SyncFailed, or anything else: never fail the run
            self._warn_unavailable(config, f"could not write this run's results: {error}")
        self._warn_corrupt(config)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.remote is not None:
            self.remote.close()

    # -- the shared cache ---------------------------------------------------------------------

    def _describe(self) -> str:
        assert self.remote is not None
        return f"{self.remote.display} ({self.remote.namespace.describe()})"

    def _sync_in(self, config: pytest.Config) -> None:
        """Read the shared keys into the working copy, before LFPlugin and NFPlugin do."""
        settings = self.settings = Settings.from_config(config)
        if not settings.remote or hasattr(config, "workerinput"):
            return  # no backend: pytest's own behaviour. Workers read the working copy.
        assert config.cache is not None
        self.run_start = time.time()
        self.shared = shared_keys(settings.shared_keys)
        namespace = detect_namespace(shard=settings.shard or None)
        self.remote = Remote(settings.url, namespace=namespace, budget=Budget(settings.timeout))
        if not config.getoption("cacheclear"):
            try:
                self.merged = self.remote.read(self.shared)
            except InvalidBackend as error:
                raise pytest.UsageError(f"cachekit: {error}") from None
            except SyncFailed as error:
                self.degraded = True
                self._warn_unavailable(
                    config,
                    f"could not read the shared cache, running as with an empty one "
                    f"and writing nothing back: {error}",
                )
                return
            finally:
                self._warn_corrupt(config)
            if not config.option.cacheshow:
                self._update_working_copy(config.cache)
        self.start = {key: config.cache.get(key, None) for key in self.shared}
        failing = self.start[LASTFAILED_KEY]
        self.recorder = Recorder(failing if isinstance(failing, dict) else {})

    def _update_working_copy(self, cache: Cache) -> None:
        """The merged values replace the working copy's, which is written only if that
        changes it (an empty value does not create a file): where the store knows nothing
        new, the working copy stays byte for byte what pytest left."""
        for key, shared in self.shared.items():
            merged = self.merged[key]
            current = cache.get(key, _MISSING)
            if has_data(merged) or (key in BUILTIN_SHARED_KEYS and current is not _MISSING):
                value = shared.local(merged.value)
                if value != current and (value or current is not _MISSING):
                    cache.set(key, value)

    def _sync_out(self, config: pytest.Config) -> None:
        """Write what this run learnt as its own part of each shared key; compact."""
        assert self.remote is not None
        assert self.recorder is not None
        assert self.settings is not None
        assert config.cache is not None
        if hasattr(config, "workerinput"):
            return
        parts: dict[str, JSON] = {}
        observed = self.recorder.observations(self.run_start)
        if observed:
            parts[LASTFAILED_KEY] = observed
        if not config.getoption("collectonly"):
            nfplugin = config.pluginmanager.get_plugin("nfplugin")
            if isinstance(nfplugin, NFPlugin):
                collected: list[JSON] = [str(nodeid) for nodeid in nfplugin.cached_nodeids]
                added = self.shared[NODEIDS_KEY].part(self.start[NODEIDS_KEY], collected, 0.0)
                if added:
                    parts[NODEIDS_KEY] = added
        now = time.time()
        for key, shared in self.shared.items():
            if key not in (LASTFAILED_KEY, NODEIDS_KEY):
                value = shared.part(self.start[key], config.cache.get(key, None), now)
                if value is not None:
                    parts[key] = value
        threshold = self.settings.compact_threshold
        compact = {
            key: shared.strategy
            for key, shared in self.shared.items()
            if key in self.merged and len(self.merged[key].parts) + (key in parts) >= threshold
        }
        if parts or compact:
            self.remote.write(parts, compact=compact, min_parts=threshold)

    def workers_collected(self, config: pytest.Config, ids: Sequence[str]) -> None:
        """Under xdist the controller never collects: learn the ids from the workers."""
        nfplugin = config.pluginmanager.get_plugin("nfplugin")
        if isinstance(nfplugin, NFPlugin):
            nfplugin.cached_nodeids.update(_node_key(nodeid) for nodeid in ids)
        lfplugin = config.pluginmanager.get_plugin("lfplugin")
        if self.recorder is not None:
            for collector in self.recorder.collected_fine(ids):
                if isinstance(lfplugin, LFPlugin):
                    lfplugin.lastfailed.pop(_node_key(collector), None)

    def _cacheshow(self, config: pytest.Config, session: pytest.Session) -> int:
        code = builtin.cacheshow(config, session)
        if self.remote is None or self.degraded:
            return code
        glob = config.option.cacheshow[0] or "*"
        tw = TerminalWriter()
        tw.sep("-", f"cachekit: shared values for {glob!r} in {self._describe()}")
        for key, shared in self.shared.items():
            merged = self.merged.get(key)
            if merged is None or not has_data(merged) or not _glob_matches(key, glob):
                continue
            sources = (["the base"] if merged.has_base else []) + (
                [f"{len(merged.parts)} part(s)"] if merged.parts else []
            )
            tw.line(f"{key} contains (merged from {' and '.join(sources)}):")
            for line in pformat(shared.local(merged.value)).splitlines():
                tw.line("  " + line)
            for part in merged.parts:
                tw.line(f"  part {part}")
        return code

    # -- reporting, never failing ------------------------------------------------------------

    def _warn_unavailable(self, config: pytest.Config, message: str) -> None:
        if not self._warned:  # one warning per run, however many calls failed
            self._warned = True
            _warn(config, StoreUnavailableWarning(f"cachekit: {message}"))

    def _warn_corrupt(self, config: pytest.Config) -> None:
        if self.remote is not None and not self._warned_corrupt:
            warning = self.remote.budget.corrupt_summary()
            if warning is not None:  # one per run, for the first values found unreadable
                self._warned_corrupt = True
                _warn(config, warning)


def _warn(config: pytest.Config, warning: Warning) -> None:
    """A pytest warning; a plain line on stderr if the filters make warnings errors: the
    cache never changes a run's outcome."""
    try:
        if not config.pluginmanager.is_blocked("warnings"):
            config.issue_config_time_warning(warning, stacklevel=3)
            return
    except Exception:  # filterwarnings made it an error: fall back to a line
        pass
    sys.stderr.write(f"{type(warning).__name__}: {warning}\n")


def _glob_matches(key: str, glob: str) -> bool:
    """Like the ``rglob`` of ``--cache-show``: the glob may match any tail of the key."""
    segments = key.split("/")
    return any(
        fnmatch.fnmatchcase("/".join(segments[start:]), glob) for start in range(len(segments))
    )


class Recorder:
    """What this run saw fail and pass, per node id: the run's ``cache/lastfailed`` part.

    Mirrors ``LFPlugin``'s bookkeeping exactly, so the merged value a later run reads
    agrees with what pytest alone would have written on one machine.
    """

    def __init__(self, failing: Iterable[str]) -> None:
        self.failing = set(failing)
        self.outcomes: dict[str, bool] = {}

    def _see(self, nodeid: str, failed: bool) -> None:
        self.outcomes[nodeid] = failed
        if failed:
            self.failing.add(nodeid)
        else:
            self.failing.discard(nodeid)

    def pytest_runtest_logreport(self, report: TestReport) -> None:
        if (report.when == "call" and report.passed) or report.skipped:
            self._see(report.nodeid, False)
        elif report.failed:
            self._see(report.nodeid, True)

    def pytest_collectreport(self, report: CollectReport) -> None:
        if report.outcome in ("passed", "skipped"):
            if report.nodeid in self.failing:
                self._see(report.nodeid, False)
                for item in report.result:
                    self._see(item.nodeid, True)
        else:
            self._see(report.nodeid, True)

    def collected_fine(self, ids: Sequence[str]) -> list[str]:
        """Failing collectors that have collected items now; they are no longer failing."""
        collected = set(ids)
        fixed = [
            collector
            for collector in sorted(self.failing)
            if collector not in collected
            and any(_is_inside(nodeid, collector) for nodeid in collected)
        ]
        for collector in fixed:
            self._see(collector, False)
        return fixed

    def observations(self, at: float) -> dict[str, JSON]:
        return {
            nodeid: {"at": at, "failed": failed} for nodeid, failed in sorted(self.outcomes.items())
        }


def _is_inside(nodeid: str, collector: str) -> bool:
    return nodeid.startswith((collector + "::", collector.rstrip("/") + "/"))


class XdistCollection:
    """Registered on the xdist controller only when xdist is installed."""

    def __init__(self, provider: CacheProvider, config: pytest.Config) -> None:
        self.provider = provider
        self.config = config

    def pytest_xdist_node_collection_finished(self, node: object, ids: Sequence[str]) -> None:
        self.provider.workers_collected(self.config, ids)
