"""Command groups plug into the ``cachekit`` command through the ``cachekit.commands``
entry-point group: this distribution's ``pull`` and ``push`` do, and so can others."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachekit import Cache, PrefixedStore, open_store
from cachekit.ci.layout import namespace_prefix
from cachekit.cli.app import main

PLUGIN = """
def add_commands(commands):
    hello = commands.add("hello", "greet the store", "Write a greeting.", hello_command)
    hello.add_argument("--name", default="world")
    commands.add_namespace_options(hello)


def hello_command(invocation):
    session = invocation.session()
    invocation.cache(session, read_chain=False).set("greeting", invocation.args.name)
    invocation.print_json({"prefix": invocation.prefix(session)})
    return 0


def broken(commands):
    raise RuntimeError("cannot\\nload")
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution, as pip would install it, with one working and one broken group."""
    (tmp_path / "hello_plugin.py").write_text(PLUGIN)
    info = tmp_path / "hello_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[cachekit.commands]\nhello = hello_plugin:add_commands\nbroken = hello_plugin:broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    for name in list(os.environ):  # the namespace comes from the options alone
        if name.startswith(("CI", "GITHUB_", "GITLAB_", "BUILDKITE", "JENKINS_", "CACHEKIT_")):
            monkeypatch.delenv(name)
    yield tmp_path
    sys.modules.pop("hello_plugin", None)


def test_a_plugged_in_command_runs_on_the_session(
    installed_plugin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(installed_plugin / "store")
    namespace = ["--repository", "acme/app", "--ref", "main"]
    assert main(["hello", "--url", url, *namespace, "--name", "you", "--json"]) == 0
    out, err = capsys.readouterr()
    prefix = namespace_prefix("acme/app", "main")
    assert json.loads(out) == {"prefix": prefix}
    assert Cache(PrefixedStore(open_store(url), prefix)).get("greeting") == "you"
    # The broken group is left out with one line, and every other command still works.
    assert err.splitlines() == [
        "cachekit: left out the commands of broken (hello_plugin:broken): cannot load"
    ]
    assert main(["hello", *namespace]) == 2  # no store given: a usage error, as for any
    assert "no store given" in capsys.readouterr().err


def test_pull_and_push_come_from_the_pytest_adapter_only_when_the_parser_is_built() -> None:
    code = (
        "import sys\n"
        "from cachekit.cli.app import build_parser\n"
        "assert 'cachekit_pytest' not in sys.modules, 'imported with the command'\n"
        "commands = build_parser()._subparsers._group_actions[0].choices\n"
        "assert {'pull', 'push'} <= set(commands), sorted(commands)\n"
        "assert 'cachekit_pytest.cachedir' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
