"""``-p load_cachekit``: every inner run of pytest's own tests loads cachekit (no backend)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _cachekit_in_inner_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_PLUGINS", "cachekit_inner")
    monkeypatch.delenv("CACHEKIT_URL", raising=False)
