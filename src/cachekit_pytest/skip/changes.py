"""The components of a test's key, by name (for a run's snapshot, `cachekit.skip.snapshots`),
and how a changed one reads (``--skip-passed-explain``).

A component's name is a kind letter and its parts, NUL-separated; its value is what the
key hashes for it. Both stay in this process: the store sees keyed hashes of them.

- ``m`` member id: a dependency (function body, module-level code, whole file) or a
  module-level name the test reads (`cachekit.skip.dependencies`);
- ``f`` label, docstrings: a file of the static key's closure (its skeleton, or bytes);
- ``c`` test file: which files the closure holds;
- ``d`` name: an installed distribution's version; ``D`` test file: those that count;
- ``l``: the lock file; ``t`` name: a tool (pytest, cachekit, plugins, the ini sections,
  options); ``e`` name: an environment variable; ``a`` label: a data file;
- ``p``, ``o``, ``s``, ``k``: the Python, the platform, the salt, the key format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cachekit.skip.dependencies import BINDING, BODY, SET_FORMAT, SKELETON, Dependency
from cachekit.skip.fingerprint import Fingerprinter
from cachekit.skip.snapshots import NEW

#: How many changed components an explanation names (then "and N more").
SHOWN = 3


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def static_components(fingerprinter: Fingerprinter, path: Path, *, doctest: bool) -> dict[str, str]:
    """The components of a test file's static key (as keyed with docstrings when
    ``doctest``): the environment, its distributions and its closure's files."""
    environment = fingerprinter.environment()
    found = {
        "p": _text(environment.get("python")),
        "o": _text(environment.get("platform")),
        "s": _text(environment.get("salt")),
        "k": f"{environment.get('format')} {SET_FORMAT}",
    }
    for name, value in dict(environment.get("tools") or {}).items():
        found[f"t\0{name}"] = _text(value)
    for name, value in dict(environment.get("env") or {}).items():
        found[f"e\0{name}"] = _text(value)
    for label, digest in environment.get("data") or ():
        found[f"a\0{label}"] = _text(digest)
    distributions = environment.get("distributions") or {}
    if "lock_file" in distributions:
        found["l"] = _text(distributions["lock_file"])
    label = fingerprinter.project_file_label(path) or os.path.realpath(path)
    counted = fingerprinter.distributions(path)
    if counted is not None:
        for name, version in counted:
            found[f"d\0{name}"] = version
        found[f"D\0{label}"] = _text([list(item) for item in counted])
    members = fingerprinter.members(path, function_bodies=False, keep_docstrings=doctest)
    for member, digest in members:
        found[f"f\0{member}\0{int(doctest or member == label)}"] = digest
    found[f"c\0{label}\0{int(doctest)}"] = _text([member for member, _ in members])
    return found


def ini_words(inipath: Path | None) -> str:
    """How an explanation names the pytest sections of the ini file."""
    if inipath is None:
        return "the pytest config"
    if inipath.name.endswith(".toml"):
        return f"the [tool.pytest] config in {inipath.name}"
    if inipath.name.endswith(".cfg"):
        return f"the [tool:pytest] config in {inipath.name}"
    return f"the [pytest] config in {inipath.name}"


_TOOLS = {
    "pytest": "pytest",
    "pytest-cachekit": "cachekit",
    "pytest plugins": "the pytest plugins",
    "pytest options": "the pytest options (-W, -o, -p, --runxfail)",
}
_FIXED = {
    "p": "the Python version changed",
    "o": "the platform changed",
    "s": "the skip_passed_salt changed",
    "k": "cachekit's key format changed",
    "l": "the lock file changed",
}
_MODULE_LEVEL = "module-level code of "
#: The order kinds are named in: the most specific first.
_ORDER = "mfadtelcDpoks"


def describe(
    changes: list[tuple[str, str]],
    *,
    values: dict[str, str],
    named: Any,
    ini: str,
) -> list[str]:
    """How each changed component reads, the most specific first; ``values`` are the
    components now, ``named(member id)`` a member's `Dependency` (or None)."""
    kinds = {component[0] for component, _ in changes}
    new_files = any(c[0] == "f" and state == NEW for c, state in changes)
    found = []
    for component, state in changes:
        kind, *parts = component.split("\0")
        if (kind == "c" and new_files) or (kind == "D" and "d" in kinds):
            continue  # said more precisely by another
        words = _words(kind, parts, state, now=values.get(component, ""), named=named, ini=ini)
        if words:
            found.append((_ORDER.find(kind), words))
    ordered = list(dict.fromkeys(words for _, words in sorted(found)))
    # A file changed whole says its module-level code changed too.
    return [
        words
        for words in ordered
        if not (
            words.startswith(_MODULE_LEVEL)
            and f"{words[len(_MODULE_LEVEL) : -len(' changed')]} changed" in ordered
        )
    ]


def _words(kind: str, parts: list[str], state: str, *, now: str, named: Any, ini: str) -> str:
    new = state == NEW
    if kind == "m":
        dependency: Dependency | None = named(parts[0])
        if dependency is None:
            return ""
        label, function = dependency.label, dependency.function
        if dependency.kind == BODY:
            return f"function {label}::{function} changed"
        if dependency.kind == BINDING:
            return f"name {label}::{function} {'added' if new else 'changed'}"
        if dependency.kind == SKELETON:
            return f"module-level code of {label} changed"
        return f"{label} changed"
    if kind == "f":
        label = parts[0]
        if new:
            return f"{label} {'added' if Path(label).name == 'conftest.py' else 'newly imported'}"
        if now.startswith("bytes:"):
            return f"{label} changed"
        return f"module-level code of {label} changed"
    if kind == "c":
        return "the files it imports changed"
    if kind == "d":
        return _distribution(parts[0], now, new=new)
    if kind == "D":
        return "installed distributions changed"
    if kind == "a":
        return f"{parts[0]} {'added' if new else 'changed'}"
    if kind == "e":
        return f"environment variable {parts[0]} changed"
    if kind == "t":
        name = parts[0]
        if name == "pytest ini file":
            return f"{ini} changed"
        if name in ("pytest", "pytest-cachekit"):
            return f"{_TOOLS[name]} changed (now {now})"
        return f"{_TOOLS.get(name, name)} changed"
    return _FIXED.get(kind, "")


def _distribution(name: str, version: str, *, new: bool) -> str:
    if name == "<unattributed module>":  # every distribution counts for such a file
        return f"it imports {version}, which no installed distribution provides"
    if name.startswith("<module "):  # an import that finds nothing
        return f"module {name[len('<module ') : -1]} is not installed"
    return (
        f"distribution {name} added ({version})"
        if new
        else (f"distribution {name} changed (now {version})")
    )


def summarize(words: list[str]) -> str:
    """The first `SHOWN` of ``words``, and how many more."""
    shown = "; ".join(words[:SHOWN])
    more = len(words) - SHOWN
    return f"{shown} (and {more} more)" if more > 0 else shown
