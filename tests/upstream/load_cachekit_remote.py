"""``-p load_cachekit_remote``: as ``load_cachekit``, with a fresh remote store (a
directory store, the same code path as any backend) for each of pytest's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _cachekit_remote_in_inner_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("PYTEST_PLUGINS", "cachekit_inner")
    monkeypatch.setenv("CACHEKIT_URL", str(tmp_path_factory.mktemp("cachekit-store")))
