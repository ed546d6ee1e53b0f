"""The pytest plugin with a remote backend: sync, shards, options, --cache-show, compaction.

Each test runs against a directory store named by a plain path (the same code path as any
remote) and against S3 on a loopback moto server.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import cachekit.session
from cachekit import (
    LASTFAILED,
    NODEIDS,
    CacheStore,
    Capabilities,
    Entry,
    open_store,
)
from cachekit.values.digests import DigestSet
from cachekit.values.merge import still_failing
from plugin_support import shared


def remote_lastfailed(url: str) -> dict[str, bool]:
    return still_failing(shared(url).read_merged("cache/lastfailed", LASTFAILED).value)


def remote_nodeids(url: str) -> DigestSet:
    """The ids the store knows: by name, or as digests (ask ``in``, and ``len``)."""
    value: DigestSet = shared(url).read_merged("cache/nodeids", NODEIDS).value
    return value


def fresh_runner(pytester: pytest.Pytester) -> None:
    """A new CI machine: no local cache directory."""
    shutil.rmtree(pytester.path / ".pytest_cache", ignore_errors=True)


def local_value(pytester: pytest.Pytester, key: str) -> Any:
    path = pytester.path / ".pytest_cache" / "v" / key
    return json.loads(path.read_text()) if path.exists() else None


CONTROLLED = """
import os, pytest

FAIL = set(filter(None, os.environ.get("CK_FAIL", "").split(",")))

@pytest.mark.parametrize("n", range({count}))
def test_t(n):
    assert f"t{{n}}" not in FAIL
"""


def controlled_tests(pytester: pytest.Pytester, count: int = 6) -> None:
    pytester.makepyfile(test_ctl=CONTROLLED.format(count=count))


def ids(*numbers: int) -> dict[str, bool]:
    return {f"test_ctl.py::test_t[{n}]": True for n in sorted(numbers, key=str)}


# -- sync -----------------------------------------------------------------------------------


def test_round_trip_between_machines(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    controlled_tests(pytester)
    monkeypatch.setenv("CK_FAIL", "t1,t4")
    result = pytester.runpytest(f"--cache-url={remote_url}")
    result.assert_outcomes(passed=4, failed=2)
    assert remote_lastfailed(remote_url) == ids(1, 4)
    assert len(remote_nodeids(remote_url)) == 6

    fresh_runner(pytester)
    monkeypatch.setenv("CK_FAIL", "t4")
    result = pytester.runpytest(f"--cache-url={remote_url}", "--lf", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*run-last-failure: rerun previous 2 failures*"])
    assert remote_lastfailed(remote_url) == ids(4)
    assert local_value(pytester, "cache/lastfailed") == ids(4)

    fresh_runner(pytester)
    monkeypatch.setenv("CK_FAIL", "")
    result = pytester.runpytest(f"--cache-url={remote_url}", "--ff", "-v")
    result.stdout.fnmatch_lines(["*test_t?4? PASSED*", "*test_t?0? PASSED*"])
    assert remote_lastfailed(remote_url) == {}
    fresh_runner(pytester)
    result = pytester.runpytest(f"--cache-url={remote_url}", "--lf", "--lfnf", "none")
    result.stdout.fnmatch_lines(["*no previously failed tests, deselecting all items*"])


def test_collection_errors_are_shared(pytester: pytest.Pytester, remote_url: str) -> None:
    pytester.makepyfile(test_broken="import nonexistent_module_xyz", test_ok="def test_ok(): pass")
    pytester.runpytest(f"--cache-url={remote_url}")
    assert remote_lastfailed(remote_url) == {"test_broken.py": True}
    fresh_runner(pytester)
    pytester.makepyfile(test_broken="def test_fixed(): pass\ndef test_also(): pass")
    result = pytester.runpytest(f"--cache-url={remote_url}", "--lf", "-v")
    result.assert_outcomes(passed=2)
    assert remote_lastfailed(remote_url) == {}


def test_working_copy_keeps_mkdir_stepwise_and_local_values(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    pytester.makepyfile(
        """
        def test_a(cache):
            cache.set("mine/local", 1)
            assert cache.mkdir("scratch").is_dir()
        def test_b():
            assert 0
        def test_c():
            pass
        """
    )
    result = pytester.runpytest(f"--cache-url={remote_url}", "--sw")
    result.assert_outcomes(passed=1, failed=1)
    result = pytester.runpytest(f"--cache-url={remote_url}", "--sw", "-v")
    result.stdout.fnmatch_lines(["*stepwise: skipping 1 already passed items*"])
    assert (pytester.path / ".pytest_cache/d/scratch").is_dir()
    assert local_value(pytester, "mine/local") == 1
    assert (
        local_value(pytester, "cache/stepwise")["last_failed"]
        == "test_working_copy_keeps_mkdir_stepwise_and_local_values.py::test_b"
    )
    result = pytester.runpytest(f"--cache-url={remote_url}", "--sw-skip")
    result.assert_outcomes(passed=1, failed=1)  # skips test_b's failure, runs on to test_c
    assert local_value(pytester, "cache/stepwise")["last_failed"] is None
    keys = shared(remote_url).store.list()
    assert keys
    # pytest's shared keys, and the runs' test statistics: nothing from mkdir or stepwise
    assert all(key.startswith(("cache/lastfailed/", "cache/nodeids/", "stats/")) for key in keys)


def test_nodeids_are_the_union_of_every_run(pytester: pytest.Pytester, remote_url: str) -> None:
    pytester.makepyfile(test_a="def test_a(): pass")
    pytester.runpytest(f"--cache-url={remote_url}", "test_a.py")
    fresh_runner(pytester)
    pytester.makepyfile(test_b="def test_b(): pass")
    pytester.runpytest(f"--cache-url={remote_url}", "test_b.py")
    known = remote_nodeids(remote_url)
    assert len(known) == 2
    assert "test_a.py::test_a" in known
    assert "test_b.py::test_b" in known
    fresh_runner(pytester)
    pytester.makepyfile(test_c="def test_c(): pass")
    result = pytester.runpytest(f"--cache-url={remote_url}", "--nf", "-v")
    result.stdout.fnmatch_lines(["*test_c.py::test_c PASSED*", "*test_b*", "*test_a*"])
    assert local_value(pytester, "cache/nodeids") == [
        "test_a.py::test_a",
        "test_b.py::test_b",
        "test_c.py::test_c",
    ]


def test_collect_only_shares_failures_not_nodeids(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    pytester.makepyfile(test_a="def test_a(): pass", test_bad="raise ImportError('x')")
    pytester.runpytest(f"--cache-url={remote_url}", "--collect-only")
    assert remote_lastfailed(remote_url) == {"test_bad.py": True}
    assert not remote_nodeids(remote_url)


# -- options --------------------------------------------------------------------------------


def test_precedence_option_env_ini(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = {name: tmp_path / name for name in ("ini", "env", "option")}
    pytester.makeini(f"[pytest]\ncache_url = {stores['ini']}\ncache_shard = from-ini\n")
    pytester.makepyfile(test_a="def test_a(): assert 0")

    def written() -> set[str]:
        return {name for name, path in stores.items() if path.exists()}

    result = pytester.runpytest()
    result.stdout.fnmatch_lines([f"cachekit: {stores['ini']} (local: *shard from-ini, read-write)"])
    assert written() == {"ini"}
    monkeypatch.setenv("CACHEKIT_URL", str(stores["env"]))
    monkeypatch.setenv("CACHEKIT_SHARD", "from-env")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines([f"cachekit: {stores['env']} (*shard from-env*"])
    assert written() == {"ini", "env"}
    result = pytester.runpytest(f"--cache-url={stores['option']}", "--cache-shard=opt")
    result.stdout.fnmatch_lines([f"cachekit: {stores['option']} (*shard opt*"])
    assert written() == {"ini", "env", "option"}
    parts = shared(str(stores["option"])).parts("cache/lastfailed")
    assert len(parts) == 1
    assert "-opt-" in parts[0]
    assert any("-from-env-" in key for key in shared(str(stores["env"])).parts("cache/lastfailed"))


def test_header_redacts_credentials(pytester: pytest.Pytester, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/remote?token=hunter2&region=x"
    pytester.makepyfile(test_a="def test_a(): assert 0")
    result = pytester.runpytest(f"--cache-url={url}")
    result.stdout.fnmatch_lines([f"cachekit: file://{tmp_path}/remote?token=[*][*][*]&region=x (*"])
    assert "hunter2" not in result.stdout.str() + result.stderr.str()
    result = pytester.runpytest(f"--cache-url={url}", "--cache-show")
    assert "hunter2" not in result.stdout.str() + result.stderr.str()
    assert (tmp_path / "remote").is_dir()


def test_invalid_url_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_a(): pass")
    result = pytester.runpytest("--cache-url=memory://")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cachekit: *memory:// needs a name*"])


def test_cache_show_shows_merged_values_and_parts(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    controlled_tests(pytester, 3)
    monkeypatch.setenv("CK_FAIL", "t0")
    pytester.runpytest(f"--cache-url={remote_url}", "--cache-shard=one")
    fresh_runner(pytester)
    monkeypatch.setenv("CK_FAIL", "t2")
    pytester.runpytest(f"--cache-url={remote_url}", "--cache-shard=two", "test_ctl.py::test_t[2]")
    fresh_runner(pytester)
    before = sorted(shared(remote_url).store.list())
    result = pytester.runpytest(f"--cache-url={remote_url}", "--cache-show")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "cache is empty",
            "*cachekit: shared values for '[*]' in *",
            "cache/lastfailed contains (merged from 2 part(s)):",
            "  {'test_ctl.py::test_t[[]0[]]': True, 'test_ctl.py::test_t[[]2[]]': True}",
            "  part *-one-*",
            "  part *-two-*",
            "cache/nodeids holds 3 test id(s), as 8-byte digests",
            "cache/nodeids contains (merged from 2 part(s)):",
        ]
    )
    result = pytester.runpytest(f"--cache-url={remote_url}", "--cache-show", "nodeids")
    result.stdout.no_fnmatch_line("cache/lastfailed contains*")
    result.stdout.fnmatch_lines(["cache/nodeids contains*"])
    assert sorted(shared(remote_url).store.list()) == before  # --cache-show never writes
    assert not (pytester.path / ".pytest_cache").exists()


def test_cache_clear_starts_empty_and_still_writes(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    controlled_tests(pytester, 3)
    monkeypatch.setenv("CK_FAIL", "t0")
    pytester.runpytest(f"--cache-url={remote_url}")
    monkeypatch.setenv("CK_FAIL", "t1")
    result = pytester.runpytest(f"--cache-url={remote_url}", "--cache-clear", "--lf", "-v")
    # an empty cache: --lf finds no failures and runs everything
    result.stdout.fnmatch_lines(["*no previously failed tests, not deselecting items*"])
    result.assert_outcomes(passed=2, failed=1)
    assert remote_lastfailed(remote_url) == ids(1)


def test_disabled_cacheprovider_never_touches_the_store(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEKIT_URL", str(tmp_path / "remote"))
    pytester.makepyfile(test_a="def test_a(): assert 0")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 1
    assert not (tmp_path / "remote").exists()


def test_read_chain_and_read_only_runs(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull request reads what main knows and writes under its own ref only; an
    untrusted run reads and never writes."""
    controlled_tests(pytester, 3)
    monkeypatch.setenv("CACHEKIT_REPOSITORY", "acme/app")
    monkeypatch.setenv("CACHEKIT_REF", "main")
    monkeypatch.setenv("CK_FAIL", "t0")
    pytester.runpytest(f"--cache-url={remote_url}")
    main = remote_lastfailed(remote_url)
    assert main == ids(0)

    fresh_runner(pytester)
    monkeypatch.setenv("CACHEKIT_REF", "feature/x")
    monkeypatch.setenv("CACHEKIT_BASE_REF", "main")
    monkeypatch.setenv("CK_FAIL", "t0,t1")
    result = pytester.runpytest(f"--cache-url={remote_url}", "--lf", "-v")
    result.stdout.fnmatch_lines(["cachekit: * ref feature/x (then main)*read-write)"])
    result.assert_outcomes(failed=1)  # main's failure, seen from the branch
    monkeypatch.delenv("CACHEKIT_BASE_REF")
    monkeypatch.setenv("CACHEKIT_REF", "main")
    assert remote_lastfailed(remote_url) == main  # the branch wrote under its own ref only

    fresh_runner(pytester)
    monkeypatch.setenv("CACHEKIT_READONLY", "1")
    before = sorted(open_store(remote_url).list())
    result = pytester.runpytest(f"--cache-url={remote_url}", "--lf")
    result.stdout.fnmatch_lines(["cachekit: *read-only (CACHEKIT_READONLY is set))"])
    result.assert_outcomes(failed=1)
    assert sorted(open_store(remote_url).list()) == before


# -- extra shared keys ----------------------------------------------------------------------

EXTRA_KEYS_INI = """
[pytest]
cache_shared_keys =
    demo/latest
    demo/union = union
    demo/mapping = mapping
"""


def test_extra_shared_keys(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(EXTRA_KEYS_INI)
    pytester.makepyfile(
        """
        import json, os

        def test_write(cache):
            data = json.loads(os.environ["CK_DATA"])
            print("SEEN", json.dumps({key: cache.get(key, None) for key in data}, sort_keys=True))
            for key, value in data.items():
                cache.set(key, value)
        """
    )
    runs = [
        {"demo/latest": "first", "demo/union": ["a", "b"], "demo/mapping": {"x": 1, "y": 1}},
        {"demo/latest": "second", "demo/union": ["c"], "demo/mapping": {"y": 2}},
    ]
    for index, data in enumerate(runs):
        fresh_runner(pytester)
        monkeypatch.setenv("CK_DATA", json.dumps(data))
        result = pytester.runpytest(f"--cache-url={remote_url}", "-s", f"--cache-shard=m{index}")
        assert result.ret == 0
    fresh_runner(pytester)
    monkeypatch.setenv("CK_DATA", json.dumps(dict.fromkeys(runs[0])))
    result = pytester.runpytest(f"--cache-url={remote_url}", "-s")
    seen = json.loads(result.stdout.str().split("SEEN ", 1)[1].splitlines()[0])
    assert seen == {
        "demo/latest": "second",
        "demo/union": ["a", "b", "c"],
        "demo/mapping": {"x": 1, "y": 2},
    }
    # a key nobody listed stays on the machine that wrote it
    assert all(
        key.split("/")[0] in ("cache", "demo", "stats") for key in shared(remote_url).store.list()
    )


def test_foreign_shapes_are_ignored_with_a_warning(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    controlled_tests(pytester, 2)
    monkeypatch.setenv("CK_FAIL", "t1")
    pytester.runpytest(f"--cache-url={remote_url}")
    cache = shared(remote_url)
    cache.write_part("cache/lastfailed", "0-evil", ["not", "a", "mapping"])
    cache.write_part("cache/nodeids", "0-evil", {"not": "a list"})
    cache.write_part("cache/lastfailed", "1-evil", {"test_ctl.py::test_t[0]": True})
    fresh_runner(pytester)
    # --nf: the store's test ids are read only by runs that use them.
    result = pytester.runpytest(f"--cache-url={remote_url}", "--lf", "--nf", "-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*CorruptValueWarning: cachekit: ignored 3 unreadable value(s)*", "*1 failed*"]
    )
    assert local_value(pytester, "cache/lastfailed") == ids(1)


# -- shards -----------------------------------------------------------------------------------

SHARD_CONFTEST = """
import json, os

def pytest_configure(config):
    seen = os.environ.get("CK_SEEN")
    if seen:
        with open(seen, "w") as file:
            json.dump(config.cache.get("cache/lastfailed", {}), file)

def pytest_collection_modifyitems(config, items):
    shard, run = int(os.environ["CK_SHARD"]), int(os.environ["CK_RUN"])
    keep = [item for index, item in enumerate(items) if (index + run) % 4 == shard]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep
"""

#: Which of the 12 tests fail in each CI run: failures move between shards, fixes land.
FAILING_BY_RUN = [{0, 5, 10}, {0, 7}, {7, 11}]


def test_ci_four_shards_three_runs(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    controlled_tests(pytester, 12)
    pytester.makeconftest(SHARD_CONFTEST)
    latest: dict[int, bool] = {}  # the model: each test's latest outcome, in run order
    for run, failing in enumerate(FAILING_BY_RUN):
        for shard in range(4):
            fresh_runner(pytester)
            seen_file = tmp_path / f"seen-{run}-{shard}.json"
            monkeypatch.setenv("CK_SEEN", str(seen_file))
            monkeypatch.setenv("CK_SHARD", str(shard))
            monkeypatch.setenv("CK_RUN", str(run))
            monkeypatch.setenv("CK_FAIL", ",".join(f"t{n}" for n in failing))
            mine = [n for n in range(12) if (n + run) % 4 == shard]
            expected_failures = [n for n in mine if n in failing]
            result = pytester.runpytest(f"--cache-url={remote_url}", f"--cache-shard=s{shard}")
            result.assert_outcomes(
                passed=len(mine) - len(expected_failures),
                failed=len(expected_failures),
                deselected=12 - len(mine),
            )
            seen = json.loads(seen_file.read_text())
            assert seen == ids(*(n for n, failed in latest.items() if failed)), (run, shard)
            latest.update({n: n in failing for n in mine})
    assert remote_lastfailed(remote_url) == ids(7, 11)

    # any machine's --lf now reruns exactly the failures every shard recorded
    fresh_runner(pytester)
    monkeypatch.setenv("CK_SHARD", "0")
    monkeypatch.setenv("CK_RUN", "0")
    pytester.makeconftest("")
    result = pytester.runpytest(f"--cache-url={remote_url}", "--lf", "-v")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*test_t?7? FAILED*", "*test_t?11? FAILED*"])
    # and --nf knows every test any shard collected
    assert len(remote_nodeids(remote_url)) == 12


# -- compaction -------------------------------------------------------------------------------


class CountingStore:
    """Counts the requests a store wrapper passes on: listings, fetched keys, writes."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.lists = 0
        self.fetches = 0
        self.puts = 0
        self.lock = threading.Lock()

    @property
    def capabilities(self) -> Capabilities:
        return self.store.capabilities

    def get(self, key: str) -> Entry | None:
        with self.lock:
            self.fetches += 1
        return self.store.get(key)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        with self.lock:
            self.fetches += len(keys)
        return self.store.get_many(keys)

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        with self.lock:
            self.puts += 1
        return self.store.put(key, data, if_absent=if_absent, if_version=if_version)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def delete_many(self, keys: Iterable[str]) -> None:
        self.store.delete_many(keys)

    def list(self, prefix: str = "") -> list[str]:
        with self.lock:
            self.lists += 1
        return self.store.list(prefix)

    def close(self) -> None:
        """Kept open: the test's runs share this one store (each run closes its own)."""

    def reset(self) -> None:
        self.lists = self.fetches = self.puts = 0


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch, remote_url: str) -> CountingStore:
    counter = CountingStore(open_store(remote_url))
    monkeypatch.setattr(cachekit.session, "open_store", lambda url: counter)
    monkeypatch.setenv("CACHEKIT_IN_PROCESS", "1")  # the agent would not see this store
    return counter


RUNS = int(os.environ.get("CK_RUNS", "100"))


@pytest.mark.slow
def test_startup_read_stays_bounded_after_many_runs(
    pytester: pytest.Pytester,
    counting: CountingStore,
    remote_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threshold = 8
    pytester.makeini(f"[pytest]\ncache_compact_threshold = {threshold}\n")
    controlled_tests(pytester, 4)
    for run in range(RUNS):
        fresh_runner(pytester)
        monkeypatch.setenv("CK_FAIL", f"t{run % 4}")
        counting.reset()
        # In-process runs re-import every plugin module, and the outer session rewrites
        # the asserts of Hypothesis's plugin package each time: most of this test's time.
        result = pytester.runpytest(f"--cache-url={remote_url}", "-q", "-p", "no:hypothesispytest")
        assert result.ret == 1
        assert "Warning" not in result.stdout.str(), result.stdout.str()
        # start-up: one listing and at most base + parts below the threshold, per key
        # the start-up listing, plus one per key compacted (lastfailed, nodeids: every run
        # writes a part of each, and both reach the threshold together)
        assert counting.lists <= 3, run
        assert counting.fetches <= 2 * (threshold + 1) + 2 * (threshold + 1), run
    counting.reset()
    merged = shared(remote_url).read_merged_many(
        {"cache/lastfailed": LASTFAILED, "cache/nodeids": NODEIDS}
    )
    assert still_failing(merged["cache/lastfailed"].value) == ids((RUNS - 1) % 4)
    assert merged["cache/lastfailed"].has_base
    assert len(merged["cache/lastfailed"].parts) < threshold
    # (test statistics add a part per run too: the CLI compacts and collects those)
    assert len(shared(remote_url).store.list("cache/")) <= 2 * threshold
    fresh_runner(pytester)
    counting.reset()
    pytester.runpytest(f"--cache-url={remote_url}", "--collect-only", "-p", "no:terminal")
    assert counting.lists == 1
    assert counting.fetches <= 2 * threshold


def test_compaction_keeps_the_merged_value(
    pytester: pytest.Pytester, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\ncache_compact_threshold = 2\n")
    controlled_tests(pytester, 3)
    for failing in ("t0", "t1", "t0,t2", "t2"):
        fresh_runner(pytester)
        monkeypatch.setenv("CK_FAIL", failing)
        selected = [f"test_ctl.py::test_t[{name[1:]}]" for name in failing.split(",")]
        pytester.runpytest(f"--cache-url={remote_url}", *selected)
    merged = shared(remote_url).read_merged("cache/lastfailed", LASTFAILED)
    assert merged.has_base
    assert len(merged.parts) < 2
    assert still_failing(merged.value) == ids(0, 1, 2)
