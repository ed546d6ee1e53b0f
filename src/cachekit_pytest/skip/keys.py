"""The keys of the session's test files (`cachekit.skip.fingerprint`), and what else
decides outcomes that a fingerprint cannot see by itself."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import cachekit
from cachekit.skip.fingerprint import Fingerprinter, KeyInputs, normalize_name
from cachekit_pytest.options import SkipSettings

#: Under the cache directory (``config.cache.mkdir``): the local store, the generated
#: per-machine key and the fingerprinter's analysis cache.
CACHE_DIR_NAME = "cachekit-skip-passed"


def tool_versions(config: pytest.Config) -> dict[str, str]:
    """What else decides outcomes that the fingerprint cannot see by itself: pytest's and
    cachekit's versions, the active plugins, the ini file and the options that change how
    outcomes are judged (``-W``, ``-o``, ``-p``, ``--runxfail``)."""
    plugins = sorted(
        {
            f"{normalize_name(dist.project_name)}=={dist.version}"
            for _, dist in config.pluginmanager.list_plugin_distinfo()
        }
    )
    inipath = config.inipath
    ini = hashlib.sha256(inipath.read_bytes()).hexdigest() if inipath and inipath.is_file() else ""
    options = {
        name: getattr(config.option, name, None)
        for name in ("pythonwarnings", "override_ini", "plugins", "runxfail")
    }
    return {
        "pytest": pytest.__version__,
        "pytest-cachekit": cachekit.__version__,
        "pytest plugins": " ".join(plugins),
        "pytest ini file": ini,
        "pytest options": json.dumps(options, sort_keys=True, default=str),
    }


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


def make_fingerprinter(config: pytest.Config, settings: SkipSettings) -> Fingerprinter:
    # Imported here: selection imports this module.
    from cachekit_pytest.skip.selection import doctest_modules  # noqa: PLC0415

    assert config.cache is not None
    inputs = KeyInputs(
        root=config.rootpath,
        env_vars=settings.env_vars,
        data_globs=settings.data_globs,
        lock_file=settings.lock_file,
        salt=settings.salt,
        tool_versions=tool_versions(config),
        # Doctests run docstrings: then a docstring's change must rerun them.
        docstrings=doctest_modules(config),
    )
    cache_file = config.cache.mkdir(CACHE_DIR_NAME) / "analysis.json"
    return Fingerprinter(inputs, cache_file=cache_file)
