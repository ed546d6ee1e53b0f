"""`cachekit.hypothesis`: a Hypothesis example database on any store, shared by processes."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit import StoreUnavailableWarning, open_store
from cachekit.hypothesis import CacheStoreExampleDatabase, example_database
from servers import free_port
from test_plugin_faults import s3_url_at


@pytest.fixture(params=["dir", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "dir":
        return str(tmp_path / "store")
    s3: str = request.getfixturevalue("s3_url")
    return s3


def test_save_fetch_delete_round_trip(url: str) -> None:
    db = example_database(url)
    assert list(db.fetch(b"k")) == []
    db.save(b"k", b"v1")
    db.save(b"k", b"v1")  # a duplicate is stored once
    db.save(b"k", b"v2")
    db.save(b"other", b"v3")
    assert sorted(db.fetch(b"k")) == [b"v1", b"v2"]
    assert list(db.fetch(b"other")) == [b"v3"]
    db.delete(b"k", b"v1")
    db.delete(b"k", b"missing")  # deleting an absent value is fine
    db.delete(b"absent-key", b"v1")
    assert list(db.fetch(b"k")) == [b"v2"]
    # Another process (another database on the same store) sees the same values.
    assert sorted(example_database(url).fetch(b"other")) == [b"v3"]


def test_move(url: str) -> None:
    db = example_database(url)
    db.save(b"a", b"x")
    db.move(b"a", b"b", b"x")
    assert list(db.fetch(b"a")) == []
    assert list(db.fetch(b"b")) == [b"x"]
    db.move(b"a", b"c", b"y")  # inserted at dest even when absent at src
    assert list(db.fetch(b"c")) == [b"y"]
    db.move(b"c", b"c", b"y")
    assert list(db.fetch(b"c")) == [b"y"]


def test_keys_and_values_of_any_bytes(tmp_path: Path) -> None:
    db = example_database(tmp_path)
    values = [b"", b"\x00/..\\", bytes(range(256)) * 10]
    for value in values:
        db.save(b"/../\x00", value)
    assert sorted(db.fetch(b"/../\x00")) == sorted(values)


def test_foreign_and_tampered_objects_are_skipped(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    db = CacheStoreExampleDatabase(store, prefix="hyp")
    db.save(b"k", b"good")
    folder = db._folder(b"k")
    store.put(folder + "README", b"not an example")
    store.put(folder + "0" * 64, b"bytes whose hash is not their name")
    assert list(db.fetch(b"k")) == [b"good"]
    assert all(name.startswith("hyp/") for name in store.list())


def test_many_values_are_fetched_in_batches(tmp_path: Path) -> None:
    db = example_database(tmp_path)
    values = {str(i).encode() for i in range(250)}
    for value in values:
        db.save(b"k", value)
    assert set(db.fetch(b"k")) == values


def test_a_read_only_store_saves_nothing_and_warns_nothing(tmp_path: Path) -> None:
    from cachekit import ReadOnlyStore  # noqa: PLC0415

    example_database(tmp_path).save(b"k", b"v")
    db = CacheStoreExampleDatabase(ReadOnlyStore(open_store(tmp_path)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        db.save(b"k", b"w")
        db.delete(b"k", b"v")
        assert list(db.fetch(b"k")) == [b"v"]


def test_a_down_store_never_fails_a_hypothesis_run() -> None:
    url = s3_url_at(f"http://127.0.0.1:{free_port()}")
    db = example_database(url)
    calls = 0

    @settings(database=db, max_examples=20)
    @given(st.integers())
    def passes(x: int) -> None:
        nonlocal calls
        calls += 1

    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        passes()
        db.save(b"k", b"v")
        db.delete(b"k", b"v")
        assert list(db.fetch(b"k")) == []
    assert calls >= 20
    ours = [w for w in caught if issubclass(w.category, StoreUnavailableWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert time.monotonic() - started < 60


FAILING = """
import os

from hypothesis import Phase, given, settings, strategies as st

from cachekit.hypothesis import example_database

PHASES = [Phase.reuse] if os.environ.get("REPLAY_ONLY") else list(Phase)


@settings(database=example_database({url!r}), derandomize=False, phases=PHASES)
@given(st.integers())
def test_small(x):
    assert x < 1000
"""


def assert_reports_the_minimal_example(result: pytest.RunResult) -> None:
    # Hypothesis says "Falsifying example" before 6.16x, "Failing test case" since.
    result.stdout.re_match_lines([r".*(Falsifying example|Failing test case)", r".*\bx=1000,?$"])


def test_a_failure_found_in_one_process_replays_in_another(
    url: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FAILING.format(url=url)
    args = ("-p", "no:cacheprovider", "-p", "no:randomly", "-q")

    first = pytester.mkdir("first")
    (first / "test_prop.py").write_text(source)
    monkeypatch.chdir(first)
    result = pytester.runpytest_subprocess(*args, "test_prop.py", timeout=300)
    result.assert_outcomes(failed=1)
    assert_reports_the_minimal_example(result)
    stored = open_store(url).list("hypothesis/")
    assert stored

    # A fresh checkout: no .hypothesis folder, and only the replay phase, so the
    # failure can only come from the shared store.
    second = pytester.mkdir("second")
    (second / "test_prop.py").write_text(source)
    monkeypatch.chdir(second)
    monkeypatch.setenv("REPLAY_ONLY", "1")
    assert not (second / ".hypothesis").exists()
    result = pytester.runpytest_subprocess(*args, "test_prop.py", timeout=300)
    result.assert_outcomes(failed=1)
    assert_reports_the_minimal_example(result)
    assert open_store(url).list("hypothesis/") == stored
