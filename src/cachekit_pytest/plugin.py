"""The pytest plugin (registered under pytest11 as ``cachekit``).

It adds cachekit's options and takes over the ``cacheprovider`` plugin name: pytest's
built-in provider is unregistered before anything used it and a `CacheProvider` is
registered under its name, so ``-p no:cacheprovider``, ``--lf``, ``--sw`` and the rest
keep their meaning. Without a backend the stand-in behaves exactly as pytest's own.
"""

from __future__ import annotations

import pytest

import cachekit_pytest.options as options
from cachekit_pytest.provider import CacheProvider

PLUGIN_NAME = "cacheprovider"


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    options.register(parser)
    options.register_skip_passed(parser)
    options.register_quarantine(parser)
    options.register_rerun(parser)
    take_over(pluginmanager)


def pytest_configure(config: pytest.Config) -> None:
    """The features a run asks for, each imported only then, so that a run without them
    does not pay for loading them: ``--skip-passed`` (`cachekit_pytest.skip`:
    fingerprints, signatures, its store; `cachekit_pytest.skip.run.configure` registers
    its plugins), ``--quarantine-flaky`` (`cachekit_pytest.quarantine`) and
    ``--rerun-flaky`` (`cachekit_pytest.rerun`), with the shared cache's session if there
    is one."""
    settings = options.SkipSettings.from_config(config)
    if settings.mode is not options.Mode.OFF:
        import cachekit_pytest.skip.run as skipping  # noqa: PLC0415 (see above)

        skipping.configure(config, settings)
    provider = config.pluginmanager.get_plugin(PLUGIN_NAME)
    run = provider.run if isinstance(provider, CacheProvider) else None
    session = None if run is None else run.session
    # Not on xdist workers: the controller sees every report.
    if not hasattr(config, "workerinput") and options.quarantine_wanted(config):
        import cachekit_pytest.quarantine as quarantine  # noqa: PLC0415 (see above)

        quarantine.configure(config, session)
    reruns = options.reruns_wanted(config)
    if reruns:
        import cachekit_pytest.rerun as rerun  # noqa: PLC0415 (see above)

        rerun.configure(config, session, reruns)


def take_over(pluginmanager: pytest.PytestPluginManager) -> None:
    """Swap pytest's cacheprovider for ours, unless it is disabled or already ours.

    Runs when this plugin is registered (entry points load before pytest configures
    anything), so conftests, ``LFPlugin``, ``NFPlugin`` and stepwise only ever see ours.
    pytest's provider already added its options, so ours adds none of them again.
    """
    if pluginmanager.is_blocked(PLUGIN_NAME):
        return
    current = pluginmanager.get_plugin(PLUGIN_NAME)
    if current is None or isinstance(current, CacheProvider):
        return
    pluginmanager.unregister(current, PLUGIN_NAME)
    pluginmanager.register(CacheProvider(), PLUGIN_NAME)
