"""The pytest plugin under pytest-xdist: only the controller writes, and it learns the
collected ids from the workers, so ``nodeids`` and ``lastfailed`` come out right."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest
import xdist  # noqa: F401 (a test dependency: if it is missing these tests fail, never skip)

from cachekit import LASTFAILED, NODEIDS
from cachekit.values.merge import still_failing
from plugin_support import shared

TESTS = """
import os, pytest

@pytest.mark.parametrize("n", range(6))
def test_t(n):
    assert str(n) not in os.environ.get("CK_FAIL", "").split(",")
"""


def fresh_runner(pytester: pytest.Pytester) -> None:
    shutil.rmtree(pytester.path / ".pytest_cache", ignore_errors=True)


def local_value(pytester: pytest.Pytester, key: str) -> Any:
    path = pytester.path / ".pytest_cache" / "v" / key
    return json.loads(path.read_text()) if path.exists() else None


ALL_IDS = [f"test_x.py::test_t[{n}]" for n in range(6)]


def test_xdist_round_trip(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_x=TESTS)
    monkeypatch.setenv("CK_FAIL", "1,4")
    result = pytester.runpytest_subprocess("-n", "2", f"--cache-url={remote_url}")
    result.assert_outcomes(passed=4, failed=2)
    cache = shared(remote_url)
    lastfailed = cache.read_merged("cache/lastfailed", LASTFAILED)
    assert still_failing(lastfailed.value) == {ALL_IDS[1]: True, ALL_IDS[4]: True}
    assert len(lastfailed.parts) == 1  # the controller wrote; the workers did not
    nodeids = cache.read_merged("cache/nodeids", NODEIDS)
    assert len(nodeids.value) == len(ALL_IDS)  # learnt from the workers' collection
    assert all(nodeid in nodeids.value for nodeid in ALL_IDS)
    assert local_value(pytester, "cache/nodeids") == ALL_IDS

    fresh_runner(pytester)
    monkeypatch.setenv("CK_FAIL", "4")
    result = pytester.runpytest_subprocess("-n", "2", f"--cache-url={remote_url}", "--lf")
    result.assert_outcomes(passed=1, failed=1)
    assert still_failing(cache.read_merged("cache/lastfailed", LASTFAILED).value) == {
        ALL_IDS[4]: True
    }


def test_xdist_new_first_knows_what_any_machine_ran(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    """Under xdist the workers collect, so their ``NFPlugin`` orders the tests: the
    controller hands them the store's ids (the working copy of a fresh runner has none),
    so a test another machine ran is not new, however recently its file changed."""
    pytester.makepyfile(test_x=TESTS)
    pytester.runpytest_subprocess("-n", "1", f"--cache-url={remote_url}")
    fresh_runner(pytester)
    new = pytester.makepyfile(test_new="def test_new(): pass")
    old = pytester.path / "test_x.py"
    os.utime(new, (1_000_000, 1_000_000))  # the known file is the newest: pytest alone
    os.utime(old, (2_000_000, 2_000_000))  # would run it first, all being new to it
    result = pytester.runpytest_subprocess("-n", "1", f"--cache-url={remote_url}", "--nf", "-v")
    ran = [line for line in result.outlines if "PASSED" in line or "FAILED" in line]
    assert "test_new.py::test_new" in ran[0], ran


def test_xdist_fixed_collection_error_drops_out(pytester: pytest.Pytester, remote_url: str) -> None:
    pytester.makepyfile(test_x=TESTS, test_broken="import not_a_module_xyz")
    result = pytester.runpytest_subprocess("-n", "2", f"--cache-url={remote_url}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    cache = shared(remote_url)
    assert still_failing(cache.read_merged("cache/lastfailed", LASTFAILED).value) == {
        "test_broken.py": True
    }
    fresh_runner(pytester)
    pytester.makepyfile(test_broken="def test_fixed(): pass")
    result = pytester.runpytest_subprocess("-n", "2", f"--cache-url={remote_url}")
    result.assert_outcomes(passed=7)
    assert still_failing(cache.read_merged("cache/lastfailed", LASTFAILED).value) == {}
    assert local_value(pytester, "cache/lastfailed") == {}


def test_xdist_without_backend_is_pytests_own(pytester: pytest.Pytester) -> None:
    """No backend: byte for byte what pytest writes under xdist, shortcomings included."""
    pytester.makepyfile(test_x=TESTS)
    trees = []
    for plugin_args in ([], ["-p", "no:cachekit"]):
        fresh_runner(pytester)
        result = pytester.runpytest_subprocess("-n", "2", *plugin_args)
        result.assert_outcomes(passed=6)
        cache_dir = pytester.path / ".pytest_cache"
        trees.append(
            {
                str(path.relative_to(cache_dir)): path.read_bytes()
                for path in sorted(cache_dir.rglob("*"))
                if path.is_file()
            }
        )
    assert trees[0] == trees[1]
    assert local_value(pytester, "cache/nodeids") == []  # pytest's controller never collects
