"""How the plugin tells the user something: warnings that never change a run's outcome.

A warning is located at the setting the user can change (``--cache-url``, the
``CACHEKIT_URL`` variable or the ini file's ``cache_url`` line), not at cachekit's source
lines, which say nothing to a user: pytest's warnings summary shows that location.
"""

from __future__ import annotations

import os
import sys
import warnings

import pytest
from _pytest.config import apply_warning_filters


def warn(config: pytest.Config, warning: Warning) -> None:
    """A pytest warning at the setting (`setting_location`), not at a stack frame; a
    plain line on stderr if the filters make warnings errors: the cache never changes a
    run's outcome."""
    try:
        if not config.pluginmanager.is_blocked("warnings"):
            _issue(config, warning)
            return
    except Exception:  # filterwarnings made it an error: fall back to a line
        pass
    sys.stderr.write(f"{type(warning).__name__}: {warning}\n")


def _issue(config: pytest.Config, warning: Warning) -> None:
    """As `pytest.Config.issue_config_time_warning`, at `setting_location`."""
    filename, lineno = setting_location(config)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", type(warning))
        apply_warning_filters(
            config.getini("filterwarnings"), config.known_args_namespace.pythonwarnings or []
        )
        warnings.warn_explicit(warning, type(warning), filename, lineno, module="cachekit")
    if records:
        records[0].line = ""  # never the ini file's line itself: it may hold credentials
        config.hook.pytest_warning_recorded.call_historic(
            kwargs={
                "warning_message": records[0],
                "when": "config",
                "nodeid": "",
                "location": (filename, lineno, "cachekit"),
            }
        )


def setting_location(config: pytest.Config) -> tuple[str, int]:
    """Where the user chose the store: the command line wins over the environment, which
    wins over the ini file (as `cachekit_pytest.options.Settings` reads them)."""
    if config.getoption("cachekit_url", None) is not None:
        return "--cache-url", 0
    if os.environ.get("CACHEKIT_URL"):
        return "CACHEKIT_URL", 0
    inipath = config.inipath
    if inipath is not None:
        try:
            lines = inipath.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        found = (number for number, line in enumerate(lines, 1) if "cache_url" in line)
        return str(inipath), next(found, 0)
    return "cachekit", 0
