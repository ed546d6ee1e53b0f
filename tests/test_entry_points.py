"""Third-party backends plug into ``open_store`` through the ``cachekit.stores`` group."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachekit import MemoryStore, open_store
from cachekit.errors import InvalidURL
from cachekit.stores import registry

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
    install_backend(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("fancy_backend", None)


def install_backend(directory: Path) -> None:
    (directory / "fancy_backend.py").write_text(BACKEND)
    info = directory / "fancy_backend-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cachekit.stores]\nfancy = fancy_backend:open_fancy\n")
    importlib.invalidate_caches()


def test_a_registered_scheme_opens_the_third_party_store(installed_backend: Path) -> None:
    store = open_store("fancy://bucket/prefix")
    assert isinstance(store, MemoryStore)
    backend = sys.modules["fancy_backend"]
    assert backend.OPENED == ["fancy://bucket/prefix"]


def test_unregistered_backends_are_not_imported(installed_backend: Path) -> None:
    open_store("memory://entry-points")
    assert "fancy_backend" not in sys.modules


def test_the_installed_backends_are_scanned_once_while_nothing_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every distribution's entry points take 5 to 10 ms to scan; a run opens its store
    URL several times."""
    scans = []
    scan = registry.entry_points

    def counted(**selection: str) -> Any:
        scans.append(selection)
        return scan(**selection)

    monkeypatch.setattr(registry, "entry_points", counted)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))  # a sys.path no earlier test scanned
    url = f"file://{tmp_path / 'store'}"
    for _ in range(3):
        assert registry.is_in_process(url)
        open_store(url)
    assert len(scans) == 1


def test_a_backend_installed_after_a_scan_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InvalidURL):
        open_store("fancy://bucket/prefix")  # scanned: nothing registers fancy
    install_backend(tmp_path)
    try:
        assert isinstance(open_store("fancy://bucket/prefix"), MemoryStore)
    finally:
        sys.modules.pop("fancy_backend", None)
