"""What loads, and where: a run pays only for the modules its features use (issue 12).

Each check runs in a fresh interpreter, where ``sys.modules`` shows what an import
really loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

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
        "cachekit.stats.runs",
    }
    assert not unused & loaded


def test_the_sync_agent_never_imports_pytest() -> None:
    loaded = loaded_after("import cachekit_pytest.sync.agent")
    assert "cachekit_pytest.sync.remote" in loaded
    assert not {name for name in loaded if name.split(".")[0] in ("pytest", "_pytest", "pluggy")}
