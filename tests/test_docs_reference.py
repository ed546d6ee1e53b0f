"""The reference pages (``docs/reference/``) stay complete: every option and ini key the
pytest plugin registers, every ``CACHEKIT_*`` variable read anywhere in ``src/``, every
``cachekit`` command and option, and every name the public packages export is there.

Each list comes from the real thing: pytest's own ``--help`` with and without the
plugin, a grep of the source, the argparse parser the command runs, the packages'
``__all__``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from cachekit.ci import namespace as ci
from cachekit.cli.app import build_parser

REPOSITORY = Path(__file__).resolve().parent.parent
REFERENCE = REPOSITORY / "docs" / "reference"
SOURCE = REPOSITORY / "src"
PUBLIC_PACKAGES = ("cachekit", "cachekit.stores", "cachekit.testing", "cachekit.hypothesis")
#: Modules documented whole (their names are not all in an ``__all__``).
WHOLE_MODULES = ("cachekit.values.merge", "cachekit.skip.fingerprint", "cachekit.stats.runs")

_HELP_OPTION = re.compile(r"^  (?:-\w, )?(--[a-z][\w-]*)", re.MULTILINE)
_HELP_INI_KEY = re.compile(r"^  ([a-z_][\w]*) \((\w+)\):", re.MULTILINE)
_VARIABLE = re.compile(r"\bCACHEKIT_[A-Z][A-Z0-9_]*")
_PREFIXED_VARIABLE = re.compile(r'ENV_PREFIX\s*\+\s*"([A-Z][A-Z0-9_]*)"')


def page(name: str) -> str:
    return (REFERENCE / name).read_text()


def heading(text: str, level: int) -> re.Pattern[str]:
    """A Markdown heading of ``level`` that is exactly ``text`` in backticks."""
    return re.compile(rf"^{'#' * level} `{re.escape(text)}`\s*$", re.MULTILINE)


# -- the pytest plugin ------------------------------------------------------------------


def pytest_help(directory: Path, *arguments: str) -> str:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "CACHEKIT_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *arguments, "--help"],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


@pytest.fixture(scope="module")
def plugin_help(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``pytest --help`` with the plugin, and with ``-p no:cachekit``, outside any project."""
    directory = tmp_path_factory.mktemp("help")
    return pytest_help(directory), pytest_help(directory, "-p", "no:cachekit")


def test_every_plugin_option_has_its_section(plugin_help: tuple[str, str]) -> None:
    with_plugin, without = plugin_help
    options = set(_HELP_OPTION.findall(with_plugin)) - set(_HELP_OPTION.findall(without))
    assert {"--cache-url", "--skip-passed"} <= options, "the help was not read right"
    reference = page("pytest-plugin.md")
    missing = sorted(option for option in options if not heading(option, 3).search(reference))
    assert not missing, f"options with no '### `--option`' section in pytest-plugin.md: {missing}"


def test_every_ini_key_has_its_section(plugin_help: tuple[str, str]) -> None:
    with_plugin, without = plugin_help
    keys = set(_HELP_INI_KEY.findall(with_plugin)) - set(_HELP_INI_KEY.findall(without))
    names = {name for name, _type in keys}
    assert {"cache_url", "skip_passed"} <= names, "the help was not read right"
    reference = page("pytest-plugin.md")
    missing = sorted(name for name in names if not heading(name, 3).search(reference))
    assert not missing, f"ini keys with no '### `key`' section in pytest-plugin.md: {missing}"
    for name, kind in keys:
        row = re.search(rf"^\| \[`{name}`\]\(#{name}\) \| ([^|]+) \|", reference, re.MULTILINE)
        assert row is not None, f"{name} has no row in the ini keys table"
        expected = "lines" if kind == "linelist" else "string"
        assert row[1].startswith(expected), f"{name} is a {kind}, the table says {row[1]!r}"


def variables_read_in_source() -> set[str]:
    """Every ``CACHEKIT_*`` name in ``src/``, literal or built from ``ci.ENV_PREFIX``."""
    found: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        found.update(_VARIABLE.findall(text))
        found.update(ci.ENV_PREFIX + name for name in _PREFIXED_VARIABLE.findall(text))
    # ci.detect_namespace reads ENV_PREFIX + field.upper() for each overridable field.
    found.update(ci.ENV_PREFIX + name.upper() for name in ci._OVERRIDABLE)
    return found


def test_every_environment_variable_has_its_row() -> None:
    variables = variables_read_in_source()
    assert {"CACHEKIT_URL", "CACHEKIT_READONLY", "CACHEKIT_BASE_REF"} <= variables
    reference = page("pytest-plugin.md")
    missing = sorted(
        name for name in variables if not re.search(rf"^\| `{name}` \|", reference, re.MULTILINE)
    )
    assert not missing, f"variables with no row in pytest-plugin.md's table: {missing}"


# -- the cachekit command -------------------------------------------------------------------


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(command path, parser)`` for the top level and every command and subcommand."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from commands(subparser, (*path, name))


def arguments(parser: argparse.ArgumentParser) -> list[str]:
    """The long options and positional names a command shows in its help."""
    shown: list[str] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            shown.extend(option for option in action.option_strings if option.startswith("--"))
        else:
            shown.append(str(action.metavar or action.dest))
    return shown


def sections(markdown: str) -> dict[str, str]:
    """The text under each ``## `...` `` heading, and the preamble under ``""``."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    found = {"": parts[0]}
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        found[title.strip().strip("`")] = body
    return found


def has_row(text: str, argument: str) -> bool:
    """Whether a table row's first cell shows ``argument`` (as `` `--top N` ``)."""
    cell = rf"^\|[^|\n]*`{re.escape(argument)}(?:[ =][^`]*)?`[^|\n]*\|"
    return re.search(cell, text, re.MULTILINE) is not None


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    found = sections(page("cli.md"))
    shared = found[""] + found["Options of every command"] + found["Namespace options"]
    all_commands = list(commands(build_parser()))
    assert ("stats", "ingest") in [path for path, _ in all_commands]
    missing: list[str] = []
    for path, parser in all_commands:
        name = " ".join(path)
        has_subcommands = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if path and not has_subcommands and name not in found:
            missing.append(f"cachekit {name} (no '## `{name}`' section)")
            continue
        own = found.get(name, "")
        missing.extend(
            f"cachekit {name} {argument}"
            for argument in arguments(parser)
            if not has_row(own + shared, argument)
        )
    assert not missing, f"not in docs/reference/cli.md: {missing}"


# -- the Python API -------------------------------------------------------------------------


def directives(markdown: str) -> dict[str, bool]:
    """Each ``::: identifier`` of a page and whether it shows the object's members."""
    found: dict[str, bool] = {}
    for match in re.finditer(r"^::: (\S+)\n((?:    .*\n|\n(?=    ))*)", markdown, re.MULTILINE):
        found[match[1]] = "members: false" not in match[2]
    return found


def resolve(identifier: str) -> object:
    parts = identifier.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ImportError(identifier)


def documented_objects(markdown: str) -> list[object]:
    objects: list[object] = []
    for identifier, with_members in directives(markdown).items():
        value = resolve(identifier)
        objects.append(value)
        if isinstance(value, ModuleType) and with_members:
            objects.extend(
                member
                for name, member in vars(value).items()
                if not name.startswith("_")
                and getattr(member, "__module__", value.__name__) == value.__name__
            )
    return objects


def test_every_exported_name_is_in_the_api_reference() -> None:
    markdown = page("api.md")
    documented = documented_objects(markdown)
    missing = [
        f"{package}.{name}"
        for package in PUBLIC_PACKAGES
        for name in importlib.import_module(package).__all__
        if not any(getattr(importlib.import_module(package), name) is o for o in documented)
    ]
    assert not missing, f"exported but not in docs/reference/api.md: {missing}"
    whole = directives(markdown)
    assert all(whole.get(module) for module in WHOLE_MODULES), f"{WHOLE_MODULES} documented whole"
