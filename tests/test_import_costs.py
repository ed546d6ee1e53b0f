"""What loads, and where: a run pays only for the modules its features use (issue 12).

Each check runs in a fresh interpreter, where ``sys.modules`` shows what an import
really loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cachekit


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(json.loads(completed.stdout.splitlines()[-1]))


def test_a_submodule_does_not_load_the_whole_public_api() -> None:
    loaded = loaded_after("import cachekit.errors")
    assert "cachekit.errors" in loaded
    assert not {"cachekit.values.cache", "cachekit.stores", "cattrs"} & loaded


def test_every_public_name_is_the_one_its_module_defines() -> None:
    for name in cachekit.__all__:
        value = getattr(cachekit, name)
        module = __import__(cachekit._SOURCES[name], fromlist=[name])
        assert value is getattr(module, name), name
    assert set(cachekit.__all__) <= set(dir(cachekit))
    namespace: dict[str, object] = {}
    exec("from cachekit import *", namespace)
    assert set(cachekit.__all__) <= set(namespace)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchName"):
        cachekit.NoSuchName  # noqa: B018


def test_the_plugin_without_a_store_does_not_load_the_store_machinery() -> None:
    loaded = loaded_after("import pytest, cachekit_pytest.plugin")
    assert "cachekit_pytest.provider" in loaded
    unused = {
        "cachekit_pytest.shared",
        "cachekit_pytest.sync",
        "cachekit_pytest.split",
        "cachekit_pytest.quarantine",
        "cachekit_pytest.rerun",
        "cachekit.session",
        "cachekit.values.cache",
        "cachekit.stats.runs",
        "cachekit.stats.flaky",
        "cattrs",
    }
    assert not unused & loaded


def test_a_run_without_a_store_or_features_loads_no_store_machinery(
    pytester: pytest.Pytester,
) -> None:
    """What a user pays for installing the plugin and not configuring a store: pytest's
    own cache, and the options. Checked in a subprocess, whose ``sys.modules`` is its own."""
    pytester.makeconftest(
        "import sys\n"
        "def pytest_unconfigure(config):\n"
        "    print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    pytester.makepyfile("def test_one(cache):\n    cache.set('x/y', 1)\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    line = next(line for line in result.outlines if line.startswith("MODULES "))
    loaded = set(line.split()[1:])
    assert "cachekit_pytest.provider" in loaded
    unused = {
        "cachekit_pytest.shared",
        "cachekit_pytest.quarantine",
        "cachekit_pytest.rerun",
        "cachekit_pytest.skip",
        "cachekit.session",
        "cachekit.values.cache",
        "cachekit.stats.flaky",
        "cattrs",
    }
    assert not unused & loaded


def test_a_run_with_a_local_store_does_not_load_cattrs(pytester: pytest.Pytester) -> None:
    """Every shard of a big suite pays for what a run with a store loads: the envelopes
    it reads are checked without cattrs (cattrs alone took longer to load than the
    whole start-up read of a 500,000-test namespace)."""
    pytester.makeconftest(
        "import sys\n"
        "def pytest_unconfigure(config):\n"
        "    print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    pytester.makepyfile("def test_one():\n    pass\ndef test_two():\n    assert 0\n")
    store = pytester.path / "store"
    for _ in range(2):  # the second run reads what the first wrote
        result = pytester.runpytest_subprocess("-p", "no:randomly", f"--cache-url={store}")
        result.assert_outcomes(passed=1, failed=1)
    assert any(store.rglob("@parts/*"))
    line = next(line for line in result.outlines if line.startswith("MODULES "))
    loaded = set(line.split()[1:])
    assert {"cachekit_pytest.shared", "cachekit.values.cache"} <= loaded
    assert "cattrs" not in loaded


def test_the_sync_agent_never_imports_pytest() -> None:
    loaded = loaded_after("import cachekit_pytest.sync.agent")
    assert "cachekit_pytest.sync.remote" in loaded
    assert not {name for name in loaded if name.split(".")[0] in ("pytest", "_pytest", "pluggy")}


def test_in_process_pytester_runs_with_a_store_read_it_each_time(pytester: pytest.Pytester) -> None:
    """A plugin author's suite: pytester's in-process runs, each with the store and the
    features on, while the outer run has no store and so loaded none of their modules.
    Each inner run drops the modules first imported inside it, and later runs still hold
    references to them (from the packages the outer run kept): every read must still
    work, with no warning, and a URL that cannot be opened is still a usage error."""
    pytester.makepyfile(
        test_inner="""
        import pytest

        @pytest.mark.parametrize("round", [1, 2])
        def test_inner_runs(pytester, monkeypatch, tmp_path_factory, round):
            monkeypatch.setenv("CACHEKIT_URL", str(tmp_path_factory.getbasetemp() / "store"))
            monkeypatch.setenv("CACHEKIT_SIGNING_KEY", "k" * 32)
            pytester.makepyfile("def test_fails(): assert 0\\ndef test_passes(): pass")
            for args in (["--lf"], ["--quarantine-flaky", "--rerun-flaky=1"], ["--skip-passed"]):
                result = pytester.runpytest(*args)
                assert result.parseoutcomes()["failed"] == 1, args
                assert "Warning" not in result.stdout.str(), args
            result = pytester.runpytest("--cache-url=nosuchscheme://bucket/x")
            assert result.ret == pytest.ExitCode.USAGE_ERROR
        """
    )
    result = pytester.runpytest_subprocess("-p", "pytester", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_our_modules_are_imported_through_sys_modules() -> None:
    """``from package import module`` takes the package's attribute when it has one, and
    pytester's in-process runs leave one behind: they drop the modules first imported
    inside them from ``sys.modules``, but not from the packages the outer run holds. A
    later run would then mix that old module with new ones (its classes and exceptions
    are other objects). Which packages an outer run holds depends on its options, so
    none of cachekit's modules is imported that way: ``import package.module as module``
    (or names from the module) finds what this run imported."""
    source = Path(cachekit.__file__).parent.parent
    from_imports = []
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            for alias in node.names:
                module = source.joinpath(*node.module.split("."), alias.name)
                if module.with_suffix(".py").exists() or module.is_dir():
                    from_imports.append(f"{path.relative_to(source)}:{node.lineno} {alias.name}")
    assert not from_imports
