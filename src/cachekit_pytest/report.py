"""How the plugin tells the user something: warnings that never change a run's outcome."""

from __future__ import annotations

import sys

import pytest


def warn(config: pytest.Config, warning: Warning, *, stacklevel: int = 3) -> None:
    """A pytest warning; a plain line on stderr if the filters make warnings errors: the
    cache never changes a run's outcome. ``stacklevel`` as for `warnings.warn`, counted
    from the caller of this function's caller."""
    try:
        if not config.pluginmanager.is_blocked("warnings"):
            config.issue_config_time_warning(warning, stacklevel=stacklevel)
            return
    except Exception:  # filterwarnings made it an error: fall back to a line
        pass
    sys.stderr.write(f"{type(warning).__name__}: {warning}\n")
