"""Third-party backends plug into ``open_store`` through the ``cachekit.stores`` group."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachekit import MemoryStore, open_store

BACKEND = """
from cachekit import MemoryStore

OPENED = []


def open_fancy(url):
    OPENED.append(url)
    return MemoryStore.named("fancy:" + url)
"""


@pytest.fixture
def installed_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution, as pip would install it, that registers the scheme ``fancy``."""
    (tmp_path / "fancy_backend.py").write_text(BACKEND)
    info = tmp_path / "fancy_backend-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cachekit.stores]\nfancy = fancy_backend:open_fancy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("fancy_backend", None)


def test_a_registered_scheme_opens_the_third_party_store(installed_backend: Path) -> None:
    store = open_store("fancy://bucket/prefix")
    assert isinstance(store, MemoryStore)
    backend = sys.modules["fancy_backend"]
    assert backend.OPENED == ["fancy://bucket/prefix"]


def test_unregistered_backends_are_not_imported(installed_backend: Path) -> None:
    open_store("memory://entry-points")
    assert "fancy_backend" not in sys.modules
