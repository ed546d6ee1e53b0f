"""The keys of the session's test files (`cachekit.skip.fingerprint`), and what else
decides outcomes that a fingerprint cannot see by itself."""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10, where pytest depends on tomli
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

import cachekit
from cachekit.skip.distributions import name_and_version
from cachekit.skip.fingerprint import Fingerprinter, KeyInputs
from cachekit.skip.records import Secrets
from cachekit_pytest.options import SkipSettings

#: Under the cache directory (``config.cache.mkdir``): the local store, the generated
#: per-machine key and the fingerprinter's analysis cache.
CACHE_DIR_NAME = "cachekit-skip-passed"


def plugin_distributions(config: pytest.Config) -> list[tuple[str, str]]:
    """``(normalized name, version)`` of every plugin pytest loaded from a distribution,
    sorted."""
    return sorted(
        {name_and_version(dist) for _, dist in config.pluginmanager.list_plugin_distinfo()}
    )


def tool_versions(
    config: pytest.Config, plugins: list[tuple[str, str]] | None = None
) -> dict[str, str]:
    """What else decides outcomes that the fingerprint cannot see by itself: pytest's and
    cachekit's versions, the active plugins (``plugins``: `plugin_distributions`), the
    pytest sections of the ini file (`ini_digest`) and the options that change how
    outcomes are judged (``-W``, ``-o``, ``-p``, ``--runxfail``)."""
    if plugins is None:
        plugins = plugin_distributions(config)
    ini = ini_digest(config.inipath)
    options = {
        name: getattr(config.option, name, None)
        for name in ("pythonwarnings", "override_ini", "plugins", "runxfail")
    }
    return {
        "pytest": pytest.__version__,
        "pytest-cachekit": cachekit.__version__,
        "pytest plugins": " ".join(f"{name}=={version}" for name, version in plugins),
        "pytest ini file": ini,
        "pytest options": json.dumps(options, sort_keys=True, default=str),
    }


def ini_digest(inipath: Path | None) -> str:
    """Hash of what pytest and its plugins read of the ini file: its pytest sections
    (`pytest_sections`), so that an edit elsewhere in ``pyproject.toml`` or ``setup.cfg``
    reruns nothing; the whole file when it does not parse; "" without one."""
    if inipath is None or not inipath.is_file():
        return ""
    data = inipath.read_bytes()
    try:
        sections = pytest_sections(inipath.name, data)
    except (ValueError, configparser.Error, tomllib.TOMLDecodeError):
        return "file " + hashlib.sha256(data).hexdigest()
    encoded = json.dumps(sections, sort_keys=True, default=repr, separators=(",", ":"))
    return "sections " + hashlib.sha256(encoded.encode()).hexdigest()


def pytest_sections(name: str, data: bytes) -> dict[str, Any]:
    """The sections of an ini file that pytest reads, as pytest picks them by the file's
    name: ``[tool.pytest]`` of a ``.toml`` file (its ``ini_options`` table, and pytest
    9's native keys), ``[tool:pytest]`` (and a stray ``[pytest]``) of a ``.cfg`` file,
    ``[pytest]`` of any other (``pytest.ini``, ``tox.ini``, ``-c`` files). Raises
    ValueError, `configparser.Error` or `tomllib.TOMLDecodeError` if it does not parse."""
    text = data.decode("utf-8")
    if name.endswith(".toml"):
        document = tomllib.loads(text)
        tool = document.get("tool", {})
        if not isinstance(tool, dict):
            raise ValueError("[tool] is not a table")
        return {"tool.pytest": tool.get("pytest")}
    # Option names keep their case; values are not interpolated (pytest's own parser,
    # iniconfig, does neither); duplicates do not parse (then the whole file counts).
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    wanted = ("tool:pytest", "pytest") if name.endswith(".cfg") else ("pytest",)
    return {
        section: dict(parser.items(section, raw=True)) if parser.has_section(section) else None
        for section in wanted
    }


def plugin_modules(config: pytest.Config) -> tuple[str, ...]:
    """Modules pytest imports as plugins for every test besides the test files' imports:
    ``-p name`` (not ``-p no:name``) and ``PYTEST_PLUGINS``."""
    names = [
        name
        for name in getattr(config.option, "plugins", None) or ()
        if isinstance(name, str) and not name.startswith("no:")
    ]
    names += os.environ.get("PYTEST_PLUGINS", "").split(",")
    return tuple(sorted({name.strip() for name in names if name.strip()}))


class Keys:
    """The session's test file keys: one `Fingerprinter`, made when first needed, and
    each file keyed once (a file may be keyed before pytest collects it, then again)."""

    def __init__(self, factory: Callable[[], Fingerprinter]) -> None:
        self._factory = factory
        self._fingerprinter: Fingerprinter | Exception | None = None
        self._keys: dict[Path, str | Exception] = {}
        #: Time spent making the fingerprinter, keying files and saving its analysis.
        self.seconds = 0.0

    def fingerprinter(self) -> Fingerprinter:
        """The fingerprinter; raises what making it raised (every time)."""
        if self._fingerprinter is None:
            started = time.perf_counter()
            try:
                self._fingerprinter = self._factory()
            except Exception as error:  # an unreadable ini file, say: every test runs
                self._fingerprinter = error
            self.seconds += time.perf_counter() - started
        if isinstance(self._fingerprinter, Exception):
            raise self._fingerprinter
        return self._fingerprinter

    def file_key(self, path: Path) -> str:
        """The file's key; raises what keying it raised (every time)."""
        key = self._keys.get(path)
        if key is None:
            fingerprinter = self.fingerprinter()
            started = time.perf_counter()
            try:
                key = fingerprinter.file_key(path)
            except Exception as error:  # any failure: these tests simply run
                key = error
            self._keys[path] = key
            self.seconds += time.perf_counter() - started
        if isinstance(key, Exception):
            raise key
        return key

    def save(self) -> None:
        if isinstance(self._fingerprinter, Fingerprinter):
            started = time.perf_counter()
            with contextlib.suppress(OSError):  # only a hint for the next run
                self._fingerprinter.save()
            self.seconds += time.perf_counter() - started


def make_fingerprinter(
    config: pytest.Config, settings: SkipSettings, secrets: Secrets
) -> Fingerprinter:
    """The session's fingerprinter; its analysis cache is signed with ``secrets``: a
    cache directory restored from a CI cache is trusted only if its signature verifies."""
    assert config.cache is not None
    plugins = plugin_distributions(config)
    inputs = KeyInputs(
        root=config.rootpath,
        env_vars=settings.env_vars,
        data_globs=settings.data_globs,
        lock_file=settings.lock_file,
        salt=settings.salt,
        tool_versions=tool_versions(config, plugins),
        # Installed distributions count where each test file's imports reach them.
        narrow_distributions=True,
        # Pytest, pluggy and the plugins decide every test's outcome.
        always_distributions=("pytest", "pluggy", *(name for name, _ in plugins)),
        plugin_modules=plugin_modules(config),
    )
    cache_file = config.cache.mkdir(CACHE_DIR_NAME) / "analysis.json"
    return Fingerprinter(inputs, cache_file=cache_file, cache_signer=secrets.sign_analysis)
