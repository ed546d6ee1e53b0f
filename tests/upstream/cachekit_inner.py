"""PYTEST_DONT_REWRITE

Loads cachekit's plugin into pytest's own inner test runs, as entry-point autoload would
(pytest's testing/conftest.py turns autoload off for every pytester run): registered
under its entry-point name, once.
"""

from __future__ import annotations

import pytest

import cachekit_pytest.plugin


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if pluginmanager.get_plugin("cachekit") is None and not pluginmanager.is_blocked("cachekit"):
        pluginmanager.register(cachekit_pytest.plugin, "cachekit")
