"""The installed distributions, which stand for every import that is no project file."""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_DIST_INFO_NAME = re.compile(r"([^-]+)-([^-]+)\.dist-info", re.IGNORECASE)


def installed_distributions(paths: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(normalized name, version)`` of every distribution on ``paths`` (default
    ``sys.path``), sorted, duplicates once.

    Why not `importlib.metadata.distributions` alone: it parses every ``METADATA``
    file, tens of milliseconds for a hundred distributions, on every run. A wheel's
    ``.dist-info`` directory is named ``{name}-{version}`` (neither part may contain a
    ``-``), so the name gives both; anything else (egg-info, zipped entries, odd names)
    is read through `importlib.metadata` as before.
    """
    found: set[tuple[str, str]] = set()
    for entry in sys.path if paths is None else paths:
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except OSError:
            if os.path.isfile(directory):  # a zip file on sys.path
                for distribution in importlib.metadata.distributions(path=[directory]):
                    _add_distribution(found, distribution)
            continue
        for name in names:
            lowered = name.lower()
            if not lowered.endswith((".dist-info", ".egg-info")):
                continue
            match = _DIST_INFO_NAME.fullmatch(name)
            if match:
                found.add((normalize_name(match[1]), match[2]))
            else:
                distribution = importlib.metadata.PathDistribution(Path(directory, name))
                _add_distribution(found, distribution)
    return sorted(found)


def _add_distribution(found: set[tuple[str, str]], distribution: Any) -> None:
    name = distribution.metadata["Name"] if distribution.metadata else None
    if name:
        found.add((normalize_name(name), str(distribution.version)))


def normalize_name(name: str) -> str:
    """A distribution name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()
