"""``--skip-passed-explain`` names what changed: each test that ran again says which
function, file, module-level name, distribution, environment variable, data file or
config section changed since its pass was recorded (from the recording run's signed
snapshot, `cachekit.skip.snapshots`); a snapshot that is missing or tampered with leaves
skipping as it was and the explanation generic.

Runs the small project of ``test_skip_functions`` in-process with pytester.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

from cachekit.skip.snapshots import SNAPSHOT_PREFIX
from cachekit.values.codec import JSON, decode, encode
from test_skip_functions import (
    ADD,
    EVERY_TEST,
    PROJECT,
    REGISTRY,
    Project,
    _environment,
    _stored,
    project,
)

__all__ = ["_environment", "project"]

GENERIC = "its file's static key, a function it executed or a module-level name it reads changed"


def _why(result: pytest.RunResult) -> dict[str, str]:
    """The explanation of each test that ran: ``RAN <node id> - <why>``."""
    found = {}
    for line in result.outlines:
        if line.startswith("RAN "):
            nodeid, _, why = line[len("RAN ") :].partition(" - ")
            found[nodeid] = why
    return found


def _explain(project: Project) -> dict[str, str]:
    result = project.run("--skip-passed-explain")
    why = _why(result)
    assert set(why) == project.ran, result.stdout.str()
    return why


def test_a_function_body_change_names_the_function(project: Project) -> None:
    project.replace("lib/calc.py", "return a * b", "return b * a")
    why = _explain(project)
    assert set(why) == {"test_mul.py::test_mul", "test_mul.py::test_mix"} | {
        "test_fixture.py::test_first",
        "test_fixture.py::test_second",
    }
    assert set(why.values()) == {"function lib/calc.py::mul changed"}


def test_a_module_level_change_names_the_file(project: Project) -> None:
    project.replace("lib/registry.py", 'make_sentinel("missing")', 'make_sentinel("absent")')
    why = _explain(project)
    assert why == dict.fromkeys(REGISTRY, "module-level code of lib/registry.py changed")


def test_a_constant_change_names_the_name(project: Project) -> None:
    """A constant binding (``__version__``, an undecorated ``def``) is outside the
    module's skeleton: only the tests whose code reads it run, and say which name."""
    project.replace("lib/calc.py", "def add(a, b):", '__version__ = "1.0"\n\n\ndef add(a, b):')
    project.write(
        "test_version.py",
        "from lib import calc\n\n\ndef test_version():\n    assert calc.__version__\n",
    )
    project.run()
    project.replace("lib/calc.py", '__version__ = "1.0"', '__version__ = "1.1"')
    why = _explain(project)
    assert why == {"test_version.py::test_version": "name lib/calc.py::__version__ changed"}


def test_a_data_file_change_names_the_file(project: Project) -> None:
    project.write("pytest.ini", PROJECT["pytest.ini"] + "skip_passed_data = data/*.json\n")
    project.write("data/limits.json", '{"limit": 1}\n')
    project.run()
    project.write("data/limits.json", '{"limit": 2}\n')
    why = _explain(project)
    assert why == dict.fromkeys(EVERY_TEST, "data/limits.json changed")


def test_a_conftest_change_names_the_conftest(project: Project) -> None:
    project.write("conftest.py", PROJECT["conftest.py"] + "\nMARK = 1\n")
    why = _explain(project)
    assert why == dict.fromkeys(EVERY_TEST, "conftest.py changed")


def test_a_config_change_names_the_section(project: Project) -> None:
    project.write("pytest.ini", PROJECT["pytest.ini"] + "markers =\n    slow: slow tests\n")
    why = _explain(project)
    assert why == dict.fromkeys(EVERY_TEST, "the [pytest] config in pytest.ini changed")


def test_an_environment_variable_change_names_it(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write("pytest.ini", PROJECT["pytest.ini"] + "skip_passed_env = DATABASE_URL\n")
    monkeypatch.setenv("DATABASE_URL", "sqlite://one")
    project.run()
    monkeypatch.setenv("DATABASE_URL", "sqlite://two")
    why = _explain(project)
    assert why == dict.fromkeys(EVERY_TEST, "environment variable DATABASE_URL changed")


def test_a_new_import_names_the_file(project: Project) -> None:
    project.write("lib/extra.py", "def triple(x):\n    return 3 * x\n")
    project.replace(
        "test_add.py",
        "from lib.calc import add\n",
        "from lib.calc import add\nfrom lib.extra import triple\n",
    )
    why = _explain(project)
    assert why == dict.fromkeys(
        ADD,
        "module-level code of test_add.py changed; name lib/extra.py::triple added; "
        "lib/extra.py newly imported",
    )


def test_a_distribution_upgrade_names_it(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny distribution on ``sys.path`` that a test file imports: installing it and
    upgrading it rerun the tests it counts for, which name it and its version."""
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    _install(site, "alpha-lib", "1.0", "alpha")
    project.write("test_alpha.py", "import alpha\n\n\ndef test_alpha():\n    assert alpha\n")
    why = _explain(project)
    # A distribution counts for the test files whose imports reach it: only the new one.
    assert why == {"test_alpha.py::test_alpha": "never recorded"}
    _install(site, "alpha-lib", "1.1", "alpha")
    why = _explain(project)
    assert why == {"test_alpha.py::test_alpha": "distribution alpha-lib changed (now 1.1)"}


def _install(site: Path, name: str, version: str, module: str) -> None:
    for old in site.glob(f"{name}-*.dist-info"):
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    (site / module).mkdir(exist_ok=True)
    (site / module / "__init__.py").write_text(f"VERSION = {version!r}\n")
    importlib.invalidate_caches()


def _flip(payload: str) -> str:
    return payload[:-1] + ("1" if payload[-1] == "0" else "0")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda signature, payload: [signature, _flip(payload)], id="digit"),
        pytest.param(lambda signature, payload: [f"{1:032x}", payload], id="signature"),
        pytest.param(lambda signature, payload: [signature, "z" * len(payload)], id="not-hex"),
        pytest.param(lambda signature, payload: {"not": "a snapshot"}, id="shape"),
    ],
)
def test_a_tampered_snapshot_changes_no_skip_and_explains_generically(
    project: Project, tamper: Callable[[str, str], JSON]
) -> None:
    """Every stored snapshot rewritten as anyone who can write the store could: the same
    tests skip and run as without it, and those that run say the generic reason."""
    tampered = 0
    for key in project.store.list(""):
        found = project.store.get(key) if "/skip/dependencies/" in key else None
        part = decode(found.data) if found is not None else None
        if not isinstance(part, dict) or not isinstance(part.get("value"), dict):
            continue
        value = part["value"]
        assert isinstance(value, dict)
        for name, stored in value.items():
            if name.startswith(SNAPSHOT_PREFIX):
                assert isinstance(stored, list)
                value[name] = tamper(str(stored[0]), str(stored[1]))
                tampered += 1
        project.store.put(key, encode(part))
    assert tampered
    project.replace("lib/calc.py", "return a + b", "return b + a")
    why = _explain(project)
    assert project.ran == ADD | {"test_mul.py::test_mix"}
    assert set(why.values()) == {GENERIC}


def _snapshot_names(project: Project) -> set[str]:
    return {name for name in _stored(project) if name.startswith(SNAPSHOT_PREFIX)}


def test_a_snapshot_no_record_names_is_dropped_when_a_run_compacts(project: Project) -> None:
    """One snapshot per recording run. Once every record of a run has been replaced, the
    next run that compacts drops its snapshot (the store grows with what ran, not with
    the number of runs); the snapshots still named keep explaining."""
    first = _snapshot_names(project)
    assert len(first) == 1
    project.write("pytest.ini", PROJECT["pytest.ini"] + "cache_compact_threshold = 1\n")
    project.run()
    assert project.ran == EVERY_TEST  # the config changed: every record is replaced
    replaced = _snapshot_names(project)
    assert first < replaced  # still named by the records this run read
    assert len(replaced) == 2
    project.write("test_new.py", "def test_new():\n    pass\n")
    project.run()
    assert project.ran == {"test_new.py::test_new"}
    kept = _snapshot_names(project)
    assert not first & kept
    assert len(kept) == 2
    project.replace("lib/calc.py", "return a + b", "return b + a")
    why = _explain(project)
    assert set(why.values()) == {"function lib/calc.py::add changed"}
