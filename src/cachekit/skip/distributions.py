"""The installed distributions, which stand for every import that is no project file, and
which of them a test file's imports reach (`DistributionIndex`)."""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from cachekit.skip.imports import EVERY_DISTRIBUTION

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
    for metadata in _metadata_on(paths):
        named = _named_by_directory(metadata)
        if named is not None:
            found.add(named)
        else:
            _add_distribution(found, _as_distribution(metadata))
    return sorted(found)


def name_and_version(distribution: Any) -> tuple[str, str]:
    """``(normalized name, version)`` of one distribution (`importlib.metadata`'s, or
    pluggy's facade of one): from its ``.dist-info`` directory's name where it has one,
    as `installed_distributions` reads them, for its ``metadata`` parses ``METADATA``
    again on every access."""
    # PathDistribution keeps its directory as ``_path``; other kinds have none.
    named = _named_by_directory(getattr(distribution, "_path", None))
    if named is not None:
        return named
    metadata = distribution.metadata
    return normalize_name(metadata["Name"] or ""), str(metadata["Version"])


def _named_by_directory(metadata: object) -> tuple[str, str] | None:
    """``(normalized name, version)`` from a wheel's ``{name}-{version}.dist-info``
    directory name; None for anything else."""
    match = isinstance(metadata, Path) and _DIST_INFO_NAME.fullmatch(metadata.name)
    return (normalize_name(match[1]), match[2]) if match else None


def _metadata_on(
    paths: Iterable[str] | None,
) -> Iterator[Path | importlib.metadata.Distribution]:
    """Each ``.dist-info`` and ``.egg-info`` directory on ``paths`` (default ``sys.path``),
    and the distributions of the zip files on them (through `importlib.metadata`)."""
    for entry in sys.path if paths is None else paths:
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except OSError:
            if os.path.isfile(directory):  # a zip file on sys.path
                yield from importlib.metadata.distributions(path=[directory])
            continue
        for name in names:
            if name.lower().endswith((".dist-info", ".egg-info")):
                yield Path(directory, name)


def _as_distribution(
    metadata: Path | importlib.metadata.Distribution,
) -> importlib.metadata.Distribution:
    if isinstance(metadata, Path):
        return importlib.metadata.PathDistribution(metadata)
    return metadata


def _add_distribution(found: set[tuple[str, str]], distribution: Any) -> None:
    name = distribution.metadata["Name"] if distribution.metadata else None
    if name:
        found.add((normalize_name(name), str(distribution.version)))


def normalize_name(name: str) -> str:
    """A distribution name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


#: A requirement's distribution name (PEP 508): what comes before any version,
#: extras, marker or URL.
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
#: A requirement of an extra: its marker tests ``extra``.
_EXTRA_MARKER = re.compile(r"\bextra\s*==")


@attrs.frozen
class DistributionIndex:
    """Which installed distribution provides which top-level module, and what each
    requires: read once per set of installed distributions (reading every distribution's
    metadata takes a few hundred milliseconds), then kept in the analysis cache."""

    #: What it was read from: `installed_distributions` at the time.
    installed: tuple[tuple[str, str], ...]
    #: Top-level module name -> the distributions that provide it (normalized names).
    modules: dict[str, tuple[str, ...]]
    #: Distribution -> the distributions it requires (``Requires-Dist`` names, whatever
    #: their environment markers say: counting too many only costs a rerun). Not those
    #: of its extras: which extras were installed is not recorded, and counting them all
    #: would count nearly every distribution of a development environment (pytest's
    #: ``dev`` extra alone reaches a third of them).
    requires: dict[str, tuple[str, ...]]

    def with_requirements(self, names: Iterable[str]) -> set[str]:
        """``names`` and every distribution they require, transitively."""
        found: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name not in found:
                found.add(name)
                stack.extend(self.requires.get(name, ()))
        return found


def distribution_index(
    installed: Sequence[tuple[str, str]], paths: Iterable[str] | None = None
) -> DistributionIndex:
    """The `DistributionIndex` of the distributions on ``paths`` (default ``sys.path``;
    ``installed`` is their `installed_distributions`).

    Why not `importlib.metadata.packages_distributions` and ``Distribution.requires``:
    they parse every ``METADATA`` file with the e-mail parser, about half a second for
    150 distributions, on every run of a fresh CI machine. A wheel's ``.dist-info``
    holds what is needed as plain lines: ``top_level.txt`` (else the paths in
    ``RECORD``) and the ``Requires-Dist:`` headers of ``METADATA``. Anything else is read
    through `importlib.metadata` as `installed_distributions` does.
    """
    modules: dict[str, set[str]] = {}
    requires: dict[str, set[str]] = {}
    for metadata in _metadata_on(paths):
        named = _named_by_directory(metadata)
        if named is not None and isinstance(metadata, Path) and metadata.is_dir():  # a wheel's
            _index_wheel(metadata, named[0], modules, requires)
        else:
            _index_distribution(_as_distribution(metadata), modules, requires)
    return DistributionIndex(
        installed=tuple(installed),
        modules={module: tuple(sorted(names)) for module, names in sorted(modules.items())},
        requires={name: tuple(sorted(names)) for name, names in sorted(requires.items())},
    )


def _index_wheel(
    path: Path, name: str, modules: dict[str, set[str]], requires: dict[str, set[str]]
) -> None:
    """Add a ``.dist-info`` directory's top-level modules and requirements."""
    found = requires.setdefault(name, set())
    try:
        metadata = (path / "METADATA").read_text(encoding="utf-8", errors="replace")
    except OSError:
        metadata = ""
    # The headers end at the first blank line (the description follows, maybe long).
    for line in metadata.partition("\n\n")[0].splitlines():
        if not line.strip():
            break
        header, _, value = line.partition(":")
        if header.strip().lower() == "requires-dist":
            _add_requirement(found, value)
    for module in _top_level_names(path):
        modules.setdefault(module, set()).add(name)


def _top_level_names(path: Path) -> set[str]:
    """A ``.dist-info`` directory's top-level modules, as `packages_distributions` finds
    them: ``top_level.txt``, else the first part of every path ``RECORD`` lists."""
    try:
        declared = (path / "top_level.txt").read_text(encoding="utf-8").split()
    except OSError:
        declared = []
    if declared:
        return set(declared)
    try:
        with open(path / "RECORD", encoding="utf-8", newline="") as record:
            files = [row[0] for row in csv.reader(record) if row]
    except (OSError, csv.Error, UnicodeDecodeError):
        return set()
    return {name for name in map(_top_level_name, files) if "." not in name}


def _top_level_name(file: str) -> str:
    """The top-level name a path of ``RECORD`` provides (importlib.metadata's rule)."""
    if not file.startswith("/"):
        # A relative path's parts as `PurePosixPath` has them, without making one (a
        # few microseconds each, for thousands of lines).
        segments = [segment for segment in file.split("/") if segment and segment != "."]
        if len(segments) > 1:
            return segments[0]
    parts = PurePosixPath(file).parts
    if len(parts) > 1:
        return parts[0]
    return inspect.getmodulename(file) or file


def _index_distribution(
    distribution: importlib.metadata.Distribution,
    modules: dict[str, set[str]],
    requires: dict[str, set[str]],
) -> None:
    """Add any other distribution's top-level modules and requirements (slower)."""
    name = distribution.metadata["Name"] if distribution.metadata else None
    if not name:
        return
    name = normalize_name(name)
    found = requires.setdefault(name, set())
    for requirement in distribution.requires or ():
        _add_requirement(found, requirement)
    declared = (distribution.read_text("top_level.txt") or "").split()
    tops = set(declared) or {
        module
        for module in (_top_level_name(str(file)) for file in distribution.files or ())
        if "." not in module
    }
    for module in tops:
        modules.setdefault(module, set()).add(name)


def _add_requirement(found: set[str], requirement: str) -> None:
    """Add a ``Requires-Dist`` value's distribution name, unless it is an extra's."""
    match = _REQUIREMENT_NAME.match(requirement)
    _, _, marker = requirement.partition(";")
    if match and not _EXTRA_MARKER.search(marker):
        found.add(normalize_name(match[1]))


#: Modules that come with the interpreter: the interpreter's version stands for them.
_STANDARD_MODULES = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)


class ReachedDistributions:
    """Which installed distributions count for a test file, by the top-level modules its
    import closure names outside the project (`ImportResolver.closure_and_names`).

    Counted: the distributions that provide those modules, the ``always`` ones (pytest,
    pluggy and the plugins: they decide every outcome), and everything these require,
    transitively (a bump of a dependency's dependency changes behaviour too; not what
    their extras require), by name and version ("" when a required one is not
    installed: installing it counts). Modules of
    the standard library count nothing. A module that is not importable counts as absent
    (once installed, it is mapped or unknown). Any other module that no distribution
    claims (a path added outside the project, an editable install's import hook), and
    `EVERY_DISTRIBUTION` (a module imported by a computed name, distributions read as
    data), make the file count every installed distribution, as if nothing were narrowed.
    """

    def __init__(
        self,
        *,
        index_of: Callable[[Sequence[tuple[str, str]]], DistributionIndex],
        always: Iterable[str] = (),
    ) -> None:
        """``index_of(installed)`` gives the `DistributionIndex` (kept in the analysis
        cache); ``always`` names distributions that count for every file."""
        self._index_of = index_of
        self._always = frozenset(normalize_name(name) for name in always)
        self._installed: list[tuple[str, str]] | None = None
        self._index: DistributionIndex | None = None
        self._counted: dict[frozenset[str], list[tuple[str, str]]] = {}
        self._importable: dict[str, bool] = {}

    def installed(self) -> list[tuple[str, str]]:
        """`installed_distributions`, scanned once."""
        if self._installed is None:
            self._installed = installed_distributions()
        return self._installed

    def counted(self, modules: frozenset[str]) -> list[tuple[str, str]]:
        """``(name, version)`` of the distributions that count for a closure that
        imports ``modules`` (top-level names outside the project), sorted."""
        counted = self._counted.get(modules)
        if counted is None:
            counted = self._counted[modules] = self._count(modules)
        return counted

    def _count(self, modules: frozenset[str]) -> list[tuple[str, str]]:
        installed = self.installed()
        if self._index is None:
            self._index = self._index_of(installed)
        index = self._index
        if EVERY_DISTRIBUTION in modules:
            return [(EVERY_DISTRIBUTION, ""), *installed]
        seeds = set(self._always)
        absent = []
        for module in modules:
            providers = index.modules.get(module)
            if providers:
                seeds.update(providers)
            elif module in _STANDARD_MODULES:
                continue
            elif not self._is_importable(module):
                absent.append((f"<module {module}>", "absent"))
            else:
                return [("<unattributed module>", module), *installed]
        versions: dict[str, list[str]] = {}
        for name, version in installed:
            versions.setdefault(name, []).append(version)
        return sorted(
            [
                (name, " ".join(sorted(versions.get(name, []))))
                for name in index.with_requirements(seeds)
            ]
            + absent
        )

    def _is_importable(self, module: str) -> bool:
        """Whether a top-level module can be found (without importing it: finding a
        top-level module runs no code of its own)."""
        found = self._importable.get(module)
        if found is None:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = True  # cannot tell: count as unattributed
            self._importable[module] = found
        return found
