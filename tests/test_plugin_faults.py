"""The pytest plugin when the backend is down, hangs, or returns garbage.

Whatever the store does, a run costs at most the time budget, prints one warning, proceeds
as with an empty cache, keeps its exit code, and overwrites nothing in the store.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

import cachekit.session
from cachekit import (
    LASTFAILED,
    Cache,
    CacheStore,
    Capabilities,
    CorruptValueWarning,
    Entry,
    StoreUnavailable,
    open_store,
)
from cachekit.budget import Budget
from cachekit.ci.namespace import detect_namespace, namespaced_store
from cachekit.values.merge import still_failing
from plugin_support import shared
from servers import free_port

TESTS = """
def test_pass():
    pass

def test_fail():
    assert 0
"""


def s3_url_at(endpoint: str) -> str:
    return f"s3://ck-bucket/cache?{urlencode({'endpoint_url': endpoint})}"


def run_timed(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, float]:
    started = time.monotonic()
    result = pytester.runpytest(*args)
    return result, time.monotonic() - started


#: Wall-clock slack for whole runs on a loaded machine; the budget itself is checked
#: precisely through `spent`.
SLACK = 30.0


@pytest.fixture
def spent(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Seconds each remote call of the runs in this test took, measured around the call."""
    durations: list[float] = []
    original = Budget.run

    def timed(self: Budget, function: Any, what: str) -> Any:
        started = time.monotonic()
        try:
            return original(self, function, what)
        finally:
            durations.append(time.monotonic() - started)

    monkeypatch.setattr(Budget, "run", timed)
    return durations


def assert_within_budget(spent: list[float], budget: float) -> None:
    # Waiting ends on time, but on a loaded machine the main thread may wait a moment more
    # for the GIL (the worker may be inside a long C call, such as botocore parsing its
    # service model): allow that, never a second timeout or a retry loop.
    assert sum(spent) < budget + 1.5, spent


def assert_one_unavailable_warning(result: pytest.RunResult) -> None:
    output = result.stdout.str() + result.stderr.str()
    assert output.count("StoreUnavailableWarning: cachekit") == 1, output
    assert "could not read the shared cache, running as with an empty one" in output


# -- a dead endpoint and a hanging server (real sockets, s3fs) --------------------------------


def test_dead_endpoint(pytester: pytest.Pytester, spent: list[float]) -> None:
    pytester.makepyfile(TESTS)
    baseline, base_time = run_timed(pytester)
    url = s3_url_at(f"http://127.0.0.1:{free_port()}")
    result, elapsed = run_timed(pytester, f"--cache-url={url}", "--cache-timeout=2")
    assert result.ret == baseline.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    assert_one_unavailable_warning(result)
    assert_within_budget(spent, 2)
    assert elapsed - base_time < 2 + SLACK, (elapsed, base_time)
    # --lf proceeds as with an empty cache (the working copy is pytest's own)
    result = pytester.runpytest(f"--cache-url={url}", "--cache-timeout=1", "--lf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_hanging_server_costs_at_most_the_budget(
    pytester: pytest.Pytester, hanging_endpoint: str, spent: list[float]
) -> None:
    pytester.makepyfile(TESTS)
    _, base_time = run_timed(pytester)
    url = s3_url_at(hanging_endpoint)
    result, elapsed = run_timed(pytester, f"--cache-url={url}", "--cache-timeout=1.5")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    assert_one_unavailable_warning(result)
    result.stdout.fnmatch_lines(["*no answer within the time budget*"])
    assert_within_budget(spent, 1.5)
    assert elapsed - base_time < 1.5 + SLACK, (elapsed, base_time)


def test_hanging_server_in_a_subprocess_exits_promptly(
    pytester: pytest.Pytester, hanging_endpoint: str
) -> None:
    """An abandoned call must not keep the interpreter from exiting."""
    pytester.makepyfile(TESTS)
    url = s3_url_at(hanging_endpoint)
    started = time.monotonic()
    result = pytester.runpytest_subprocess(f"--cache-url={url}", "--cache-timeout=1", timeout=120)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert_one_unavailable_warning(result)
    assert time.monotonic() - started < 60


def test_warning_as_error_never_changes_the_exit_code(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_ok(): pass")
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    url = s3_url_at(f"http://127.0.0.1:{free_port()}")
    result = pytester.runpytest(f"--cache-url={url}", "--cache-timeout=1")
    assert result.ret == pytest.ExitCode.OK
    result.stderr.fnmatch_lines(["StoreUnavailableWarning: cachekit: could not read*"])


# -- faults injected into a real store ----------------------------------------------------------


class FaultyStore:
    """A real store behind switchable faults: failing, hanging or slow calls."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.fail_reads = False
        self.hang_writes = False
        self.release = threading.Event()
        self.puts: list[str] = []

    @property
    def capabilities(self) -> Capabilities:
        return self.store.capabilities

    def _read(self) -> None:
        if self.fail_reads:
            raise StoreUnavailable("injected: connection refused")

    def get(self, key: str) -> Entry | None:
        self._read()
        return self.store.get(key)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        self._read()
        return self.store.get_many(keys)

    def list(self, prefix: str = "") -> list[str]:
        self._read()
        return self.store.list(prefix)

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        if self.hang_writes:
            self.release.wait()
        self.puts.append(key)
        return self.store.put(key, data, if_absent=if_absent, if_version=if_version)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def delete_many(self, keys: Iterable[str]) -> None:
        self.store.delete_many(keys)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FaultyStore]:
    store = FaultyStore(open_store(tmp_path / "remote"))
    monkeypatch.setattr(cachekit.session, "open_store", lambda url: store)
    yield store
    store.release.set()


def test_degraded_run_writes_nothing(pytester: pytest.Pytester, faulty: FaultyStore) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("--cache-url=faulty")
    assert faulty.puts  # a healthy run writes its part
    faulty.puts.clear()
    faulty.fail_reads = True
    result = pytester.runpytest("--cache-url=faulty", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert_one_unavailable_warning(result)
    result.stdout.fnmatch_lines(["*StoreUnavailable: injected: connection refused*"])
    assert faulty.puts == []


def test_write_that_hangs_costs_at_most_the_budget(
    pytester: pytest.Pytester, faulty: FaultyStore, spent: list[float]
) -> None:
    pytester.makepyfile(TESTS)
    _, base_time = run_timed(pytester)
    faulty.hang_writes = True
    result, elapsed = run_timed(pytester, "--cache-url=faulty", "--cache-timeout=1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    assert output.count("StoreUnavailableWarning: cachekit") == 1
    assert "could not write this run's results" in output
    assert_within_budget(spent, 1)
    assert elapsed - base_time < 1 + SLACK


def test_budget_is_shared_by_the_whole_run(
    pytester: pytest.Pytester,
    faulty: FaultyStore,
    monkeypatch: pytest.MonkeyPatch,
    spent: list[float],
) -> None:
    """A slow read spends the budget; the write then gets only what is left."""
    original = faulty.list

    def slow_list(prefix: str = "") -> list[str]:
        time.sleep(0.8)
        return original(prefix)

    monkeypatch.setattr(faulty, "list", slow_list)
    faulty.hang_writes = True
    pytester.makepyfile(TESTS)
    _, base_time = run_timed(pytester)
    result, elapsed = run_timed(pytester, "--cache-url=faulty", "--cache-timeout=1.2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.stdout.str().count("StoreUnavailableWarning: cachekit") == 1
    assert "could not write this run's results" in result.stdout.str()
    assert len(spent) == 2
    assert spent[0] >= 0.8
    assert_within_budget(spent, 1.2)
    assert elapsed - base_time < 1.2 + SLACK


def test_corrupt_objects_are_ignored(pytester: pytest.Pytester, tmp_path: Path) -> None:
    url = str(tmp_path / "remote")
    store = namespaced_store(open_store(url), detect_namespace())
    cache = Cache(store)
    cache.write_part(
        "cache/lastfailed",
        "0001-good",
        {"test_corrupt_objects_are_ignored.py::test_fail": {"at": 1.0, "failed": True}},
    )
    good = store.get("cache/lastfailed/@parts/0001-good")
    assert good is not None
    store.put("cache/lastfailed/@parts/0002-garbage", b"\x00\xffnot a cachekit value")
    store.put("cache/lastfailed/@parts/0003-truncated", good.data[:-3])
    store.put("cache/nodeids/@base", b"CK" + b"\x01" * 20)
    pytester.makepyfile(TESTS)
    # --nf: the store's test ids are read only by runs that use them.
    result = pytester.runpytest(f"--cache-url={url}", "--lf", "--nf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)  # the good part still counts
    output = result.stdout.str()
    assert output.count("CorruptValueWarning: cachekit") == 1
    assert "ignored 3 unreadable value(s)" in output
    assert "StoreUnavailableWarning" not in output
    # not degraded: the run wrote its own part, and the garbage is left for compaction
    with pytest.warns(CorruptValueWarning):
        merged = cache.read_merged("cache/lastfailed", LASTFAILED)
    assert len(merged.parts) == 2
    assert still_failing(merged.value) == {"test_corrupt_objects_are_ignored.py::test_fail": True}


def test_a_working_copy_that_cannot_take_the_merged_values_degrades(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    """pytest's `Cache.set` failing while the start-up read is folded in (here: the
    value's path is a directory, and the run makes pytest's cache warnings errors) is a
    store fault: one warning, the run goes on as with an empty cache, nothing written."""
    pytester.makeini("[pytest]\ncache_shared_keys =\n    demo/seen = latest\n")
    pytester.makepyfile(test_it="def test_a(cache):\n    cache.set('demo/seen', 'shared')\n")
    assert pytester.runpytest(f"--cache-url={remote_url}").ret == pytest.ExitCode.OK
    store = shared(remote_url).store
    before = sorted(store.list())
    assert any(key.startswith("demo/seen/") for key in before), before
    shutil.rmtree(pytester.path / ".pytest_cache")
    (pytester.path / ".pytest_cache" / "v" / "demo" / "seen").mkdir(parents=True)
    pytester.makepyfile(test_it="def test_a():\n    pass\n")
    result = pytester.runpytest(
        f"--cache-url={remote_url}", "--ff", "-W", "error::pytest.PytestCacheWarning"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1)
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output, output
    assert "Traceback" not in output, output
    assert output.count("StoreUnavailableWarning: cachekit") == 1, output
    assert "could not bring the working copy up to date, running as with an empty" in output
    assert sorted(store.list()) == before  # the degraded run wrote nothing back
