"""The stand-in for pytest's ``cacheprovider`` plugin.

Registered under the name ``cacheprovider``, it provides the same hooks and the ``cache``
fixture, and reuses pytest's own ``Cache``, ``LFPlugin`` and ``NFPlugin``: without a
backend it *is* pytest's cache provider, byte for byte. With a backend, the local
``cache_dir`` stays the working copy; the shared keys are read from the store, merged,
and this run's changes are written back as its own part at the end of the session.

When the run needs the shared values from its start (``--lf``, ``--ff``, ``--nf``,
``--num-shards``, ``--cache-show``), they are read before ``LFPlugin`` and ``NFPlugin``
start. Otherwise the read of a remote store overlaps collection and the test run, and is
folded into their state when something reads a shared key or just before they write it:
the end result is the same, byte for byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from _pytest import cacheprovider as builtin
from _pytest.cacheprovider import Cache, LFPlugin, NFPlugin

from cachekit_pytest.options import Settings
from cachekit_pytest.scoped import WORKERINPUT_KEY as TIME_SCOPED_KEY
from cachekit_pytest.scoped import ScopedSetupTimer, TimersForWorkers

if TYPE_CHECKING:
    from cachekit_pytest.shared import SharedRun

# `cachekit_pytest.shared` (the store, its values and the run's statistics) is imported
# only by a run with a store or on an xdist worker, and `cachekit_pytest.split` only by a
# split run: a run with neither pays for loading neither.


class CacheProvider:
    """pytest's cache provider, plus the shared cache when a backend is chosen."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        #: The shared cache, when ``cache_url`` names a store (not on xdist workers: they
        #: read the working copy the controller keeps).
        self.run: SharedRun | None = None
        self._session: pytest.Session | None = None

    # -- pytest's cacheprovider hooks --------------------------------------------------------

    def pytest_cmdline_main(self, config: pytest.Config) -> int | pytest.ExitCode | None:
        if config.option.cacheshow and not config.option.help:
            from _pytest.main import wrap_session  # noqa: PLC0415 (as pytest does)

            return wrap_session(config, self._cacheshow)
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        config.cache = Cache.for_config(config, _ispytest=True)
        settings = self.settings = Settings.from_config(config)
        worker = hasattr(config, "workerinput")
        if settings.remote or worker:
            import cachekit.collector as collector  # noqa: PLC0415 (see above)

            with collector.held_off():  # loading the store's modules, and the read
                import cachekit_pytest.shared as shared  # noqa: PLC0415 (see above)

                if settings.remote and not worker:
                    self.run = shared.SharedRun.begin(config, settings)
        run = self.run
        if run is not None and run.pending:  # read alongside: reading a shared key waits
            config.cache = shared.SharedCache(config.cache._cachedir, config, _ispytest=True)
        config.pluginmanager.register(LFPlugin(config), "lfplugin")
        config.pluginmanager.register(NFPlugin(config), "nfplugin")
        if run is not None and not run.pending:  # read already: what the copy cannot hold
            run.fold_into_plugins(config)
        if worker:
            shared.known_to_worker(config)
        if run is not None and isinstance(config.cache, shared.SharedCache):  # folded in later
            config.cache.wait_for_shared(frozenset(run.shared), lambda: run.finish_read(config))
        if settings.num_shards:
            self._split(config, settings)
        self._time_scoped_fixtures(config)
        if run is not None:
            config.pluginmanager.register(run.recorder, "cachekit-recorder")
            if config.pluginmanager.hasplugin("xdist"):
                xdist = shared.XdistCollection(run, config)
                config.pluginmanager.register(xdist, "cachekit-xdist")

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
        if self.run is not None:
            lines.append(f"cachekit: {self.run.session.describe()}")
        return lines or None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        """A store URL that cannot be opened is a usage error, even when the start-up read
        runs alongside: find out before the tests run (the store opened during
        collection)."""
        if self.run is not None:
            self.run.opened(session.config)

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Any:
        config = session.config
        self._session = session
        if self.run is not None and self.run.pending:  # before LFPlugin and NFPlugin write
            from cachekit.ci.layout import LASTFAILED_KEY  # noqa: PLC0415 (loaded with the run)

            assert config.cache is not None
            try:
                config.cache.get(LASTFAILED_KEY, None)  # SharedCache: finishes the read
            except KeyboardInterrupt as interrupt:
                self.run.interrupted(interrupt)
        if self.run is not None:
            self.run.collected(config, getattr(session, "items", []))
        try:
            return (yield)
        finally:
            if self.run is not None:
                self.run.write_out(config)
                self._report_interrupt(config)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, config: pytest.Config) -> None:
        """The store is written while pytest reports the failures; wait for it here, where
        a warning about it is still shown in the summary."""
        if self.run is not None:
            self.run.finish_write()
            self._report_interrupt(config)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.run is not None:
            self.run.finish_write()  # a session that ended without a terminal summary
            self._report_interrupt(config)
            self.run.close()

    # -- helpers -------------------------------------------------------------------------

    def _report_interrupt(self, config: pytest.Config) -> None:
        """Ctrl-C while the run waited for the store at its end ends the run as a Ctrl-C
        during the tests does: pytest's interrupted summary and exit code 2, no
        traceback."""
        run, session = self.run, self._session
        if run is None or run.interrupt is None or session is None:
            return
        interrupt, run.interrupt = run.interrupt, None
        session.exitstatus = pytest.ExitCode.INTERRUPTED
        excinfo = pytest.ExceptionInfo.from_exception(interrupt)
        config.hook.pytest_keyboard_interrupt(excinfo=excinfo)

    def _split(self, config: pytest.Config, settings: Settings) -> None:
        """Run one shard of the selected tests, balanced by recorded durations."""
        from cachekit_pytest.split import (  # noqa: PLC0415 (only a split run needs it)
            WORKERINPUT_KEY,
            DurationsForWorkers,
            ScopedGroups,
            ShardSelection,
        )

        workerinput = getattr(config, "workerinput", None)
        source = ""
        if workerinput is not None:
            durations = workerinput.get(WORKERINPUT_KEY, {})
        else:
            durations, source = self.run.durations() if self.run is not None else ({}, "")
            if config.pluginmanager.hasplugin("xdist"):
                plugin = DurationsForWorkers(durations)
                config.pluginmanager.register(plugin, "cachekit-durations-for-workers")
        by_duration = settings.shard_order == "duration"
        selection = ShardSelection(
            settings.shard_id, settings.num_shards, durations, source, by_duration=by_duration
        )
        config.pluginmanager.register(selection, "cachekit-shard-selection")
        if by_duration and workerinput is not None:
            config.pluginmanager.register(ScopedGroups(durations), "cachekit-scoped-groups")

    def _time_scoped_fixtures(self, config: pytest.Config) -> None:
        """Where tests run and their statistics are recorded (here, or on the workers of
        a controller that records them), time scoped fixtures apart from the tests."""
        workerinput = getattr(config, "workerinput", None)
        recording = self.run is not None and self.run.test_stats is not None
        if recording or (isinstance(workerinput, dict) and workerinput.get(TIME_SCOPED_KEY)):
            config.pluginmanager.register(ScopedSetupTimer(), "cachekit-scoped-setups")
        if recording and config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(TimersForWorkers(), "cachekit-scoped-setups-workers")

    def _cacheshow(self, config: pytest.Config, session: pytest.Session) -> int:
        code = builtin.cacheshow(config, session)
        if self.run is not None:
            self.run.show(config)
        return code
