"""What a writer of the store without the signing key can plant, and what it costs a run
(issue 15): strings that are not Unicode, decompression bombs, FIFOs, names that are not
UTF-8, absurd numbers, and the temporary files of killed writers.

Each is planted through a real store (a local directory), read through `Cache` or the
``cachekit`` command in a subprocess with a timeout (a regression fails, never hangs).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import zstandard

import cachekit
from cachekit import Cache, LocalStore
from cachekit.errors import CorruptData
from cachekit.stores.local import STALE_TEMPORARY_AGE, TEMP_PREFIX
from cachekit.values import codec
from cachekit.values.codec import Codec, decode, encode
from cachekit.values.digests import NODEIDS
from cachekit.values.durations import DURATIONS, durations_part
from cachekit.values.merge import LASTFAILED, SortedUnion
from test_cli import clean_env
from test_codec import frame

MIB = 1024 * 1024

#: A join of lists of strings, for tests of parts and reads.
UNION = SortedUnion()


def envelope(value_json: str) -> bytes:
    """A cachekit value holding an envelope around JSON text written by hand."""
    return frame(f'{{"value": {value_json}, "written_at": 1.0}}'.encode())


def corrupt_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, cachekit.CorruptValueWarning)]


# -- strings that are not Unicode ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        r'"\ud800"',
        r'["a", "b\udfff"]',
        r'{"\ud800": true}',  # a key of an object
        r'{"a": {"b": [1, {"c\uDBFFd": null}]}}',
        r'"\ude00\ud83d"',  # a pair in the wrong order is two lone halves
    ],
)
def test_a_lone_surrogate_is_corrupt(text):
    """Valid JSON, valid UTF-8, but the str it makes cannot be encoded again (pytest's
    Cache.set raised on it: every run exited 3)."""
    assert json.loads(text) is not None  # the stdlib accepts it
    with pytest.raises(CorruptData, match="not valid Unicode"):
        decode(frame(text.encode()))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'"\ud83d\ude00"', "\U0001f600"),  # an escaped pair is one character
        (r'"\\ud800"', "\\ud800"),  # an escaped backslash, then text
        (r'{"a\\udc00": 1}', {"a\\udc00": 1}),
        ('"\U0001f600"', "\U0001f600"),
    ],
)
def test_valid_unicode_that_looks_like_a_surrogate_decodes(text, value):
    assert decode(frame(text.encode())) == value


def test_a_part_with_a_lone_surrogate_is_a_miss_with_one_warning(tmp_path):
    store = LocalStore(tmp_path / "store")
    cache = Cache(store)
    cache.write_part("cache/lastfailed", "good", {"a.py::t": {"at": 1, "failed": True}})
    store.put("cache/lastfailed/@parts/planted", envelope(r'{"\ud800": {"at": 2, "failed": true}}'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = cache.read_merged("cache/lastfailed", LASTFAILED)
    assert merged.value == {"a.py::t": {"at": 1, "failed": True}}
    assert merged.parts == ("good",)
    [message] = corrupt_warnings(caught)
    assert "planted" in message
    assert "Unicode" in message


# -- decompression bombs ------------------------------------------------------------------


def _bomb(size: int, *, declare_size: bool) -> bytes:
    """``size`` bytes of ``0,`` (a list of zeros, nearly), zstd-compressed: tiny."""
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=declare_size)
    chunk = b"0," * (MIB // 2)
    if declare_size:
        writer = compressor.chunker(size=size, chunk_size=MIB)
    else:
        writer = compressor.chunker(chunk_size=MIB)
    out = []
    for _ in range(size // MIB):
        out.extend(writer.compress(chunk))
    out.extend(writer.finish())
    return b"".join(out)


@pytest.mark.parametrize("declare_size", [True, False], ids=["declared", "undeclared"])
def test_a_500_mib_bomb_is_refused_before_it_is_materialized(declare_size):
    """The issue's bomb: ~50 KB inflating to 500 MiB. Refused from its header, or as soon
    as it passes MAX_EXPANSION times its size: little time, little memory."""
    bomb = frame(_bomb(500 * MIB, declare_size=declare_size), codec_byte=Codec.JSON_ZSTD)
    assert len(bomb) < 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(CorruptData, match="inflate"):
        decode(bomb)
    assert time.perf_counter() - started < 1.0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200 * 1024  # at most MAX_EXPANSION times 50 KB, not 500 MiB


def test_a_frame_inflating_past_the_ratio_is_refused_even_under_the_value_cap():
    """4 MiB from a few hundred bytes: over MAX_EXPANSION (and over its 1 MiB floor)."""
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(
        b'"' + b"a" * (4 * MIB) + b'"'
    )
    assert len(bomb) * codec.MAX_EXPANSION < 4 * MIB
    with pytest.raises(CorruptData, match="inflate"):
        decode(frame(bomb, codec_byte=Codec.JSON_ZSTD))


def test_what_cachekit_writes_stays_within_the_ratio():
    """Values as large as the layout holds, as repetitive as test ids get, decode."""
    nodeids = sorted(
        f"tests/test_mod_{i // 1000}.py::test_case[{i % 1000}]" for i in range(200_000)
    )
    outcomes = {nodeid: {"at": 1712345678.25, "failed": False} for nodeid in nodeids}
    for value in (nodeids, outcomes):
        assert decode(encode(value)) == value


def test_a_value_over_the_per_value_cap_is_refused(monkeypatch):
    monkeypatch.setattr(codec, "MAX_DECODED_SIZE", 1000)
    assert decode(frame(b'"' + b"a" * 998 + b'"')) == "a" * 998
    with pytest.raises(CorruptData, match="over the 1000"):
        decode(frame(b'"' + b"a" * 999 + b'"'))


def test_one_read_decodes_no_more_than_its_allowance(tmp_path):
    """Many values each under the per-value cap: the read stops at its total, and every
    value past it is a miss with a warning (the run's read stays bounded)."""
    store = LocalStore(tmp_path / "store")
    cache = Cache(store, read_size=50_000)
    for index in range(10):
        cache.write_part("cache/nodeids", f"p{index}", [f"t{index}-{n:05d}" for n in range(1000)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = cache.read_merged("cache/nodeids", UNION)
    read = len(merged.parts)
    assert 0 < read < 10
    assert len(merged.value) == read * 1000
    refused = corrupt_warnings(caught)
    assert len(refused) == 10 - read
    assert all("beyond" in message for message in refused)
    # The allowance is per read: the next read starts afresh.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(cache.read_merged("cache/nodeids", UNION).parts) == read


# -- non-regular files and names that are not UTF-8 ----------------------------------------


def run_cachekit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``cachekit`` command in a subprocess; a hang fails the test after 60 s."""
    return subprocess.run(
        [sys.executable, "-m", "cachekit", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


READ_AND_COMPACT = """
import sys, warnings
from cachekit import Cache, LocalStore
from cachekit.values.merge import SortedUnion
warnings.simplefilter("ignore")
store = LocalStore(sys.argv[1])
print(store.get(sys.argv[2]) if sys.argv[2].endswith("fifo") else None)
print(sys.argv[2] in store.list())
cache = Cache(store)
print(cache.read_merged("k", SortedUnion()).value)
print(cache.compact("k", SortedUnion()))
print(cache.read_merged("k", SortedUnion()).value)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("where", ["k/@parts/fifo", "k/@base"])
def test_a_fifo_in_a_local_store_never_blocks(tmp_path, where):
    """Opening a FIFO for reading waits for a writer: before the fix, a read or
    ``cachekit compact`` hung forever (holding the directory lock)."""
    root = tmp_path / "store"
    Cache(LocalStore(root)).write_part("k", "p1", ["a"])
    (root / where).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(root / where)
    read = subprocess.run(
        [sys.executable, "-c", READ_AND_COMPACT, str(root), where],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.split("\n") == ["None", "False", "['a']", "1", "['a']", ""]
    Cache(LocalStore(root)).write_part("k", "p2", ["b"])
    result = run_cachekit("compact", "--url", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_name_that_is_not_utf8_is_left_out_and_compaction_goes_on(tmp_path):
    """A file named with bytes that are not UTF-8 under ``@parts`` made ``cachekit
    compact`` exit 1 every time."""
    root = tmp_path / "store"
    cache = Cache(LocalStore(root))
    cache.write_part("cache/nodeids", "p1", ["a"])
    parts = os.fsencode(root / "cache" / "nodeids" / "@parts")
    for name in (b"\xff\xfe", b"bad\nname", b"back\\slash"):
        fd = os.open(parts + b"/" + name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, encode({"value": ["planted"], "written_at": 1.0}))
        os.close(fd)
    store = LocalStore(root)
    assert store.list() == ["cache/nodeids/@parts/p1"]
    assert cache.read_merged("cache/nodeids", UNION).value == ["a"]
    result = run_cachekit("compact", "--url", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "a" in NODEIDS.check(cache.get("cache/nodeids"))  # compacted into digests
    # The foreign files are left alone, not deleted.
    assert len(os.listdir(parts)) == 3


# -- absurd numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["1" + "0" * 400, "1e300", "-1", "1e12", '"2.5"'])
def test_an_absurd_duration_is_corrupt_for_its_key_only(tmp_path, seconds):
    """A ``stats/durations`` base holding 10**400 made every start-up read fail with
    OverflowError ("store unavailable"), and compaction kept it."""
    store = LocalStore(tmp_path / "store")
    cache = Cache(store)
    store.put("stats/durations/@base", envelope(f'{{"5.0": {{"a.py::t": {seconds}}}}}'))
    cache.write_part("stats/durations", "p1", durations_part(6, {"b.py::t": 1.5}))
    cache.write_part("cache/nodeids", "p1", ["a.py::t", "b.py::t"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = cache.read_merged_many({"stats/durations": DURATIONS, "cache/nodeids": UNION})
    assert merged["stats/durations"].value == durations_part(6, {"b.py::t": 1.5})
    assert merged["cache/nodeids"].value == ["a.py::t", "b.py::t"]
    [message] = corrupt_warnings(caught)
    assert "stats/durations/@base" in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cache.compact("stats/durations", DURATIONS) == 1
    assert cache.get("stats/durations") == durations_part(6, {"b.py::t": 1.5})


# -- temporary files of killed writers -------------------------------------------------------

KILLED_WRITER = """
import sys
from cachekit import LocalStore
LocalStore(sys.argv[1]).put("k/@base", b"x" * (512 * 1024 * 1024))
"""


def _temporaries(root: Path) -> list[Path]:
    return [path for path in root.rglob(f"{TEMP_PREFIX}*")]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_gc_removes_the_temporary_files_of_a_killed_writer(tmp_path):
    root = tmp_path / "store"
    LocalStore(root).put("k/@base", b"old")
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(root)])
    try:
        deadline = time.monotonic() + 60
        while not _temporaries(root) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    [left] = _temporaries(root)
    assert LocalStore(root).get("k/@base").data == b"old"  # the kill lost nothing
    # Young temporaries may be a live writer's: gc leaves them.
    result = run_cachekit("gc", "--url", str(root), "--older-than", "30d", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert left.exists()
    old = time.time() - STALE_TEMPORARY_AGE - 60
    os.utime(left, (old, old))
    dry = run_cachekit("gc", "--url", str(root), "--older-than", "30d", "--dry-run", cwd=tmp_path)
    assert f"would delete k/{left.name}" in dry.stdout
    assert left.exists()
    result = run_cachekit("gc", "--url", str(root), "--older-than", "30d", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"deleted k/{left.name}" in result.stdout
    assert _temporaries(root) == []
    assert LocalStore(root).get("k/@base").data == b"old"


def test_remove_stale_temporaries_keeps_to_its_prefix(tmp_path):
    root = tmp_path / "store"
    store = LocalStore(root)
    store.put("a/b/@base", b"1")
    store.put("a/bc/@base", b"2")
    old = time.time() - STALE_TEMPORARY_AGE - 60
    for directory in ("a/b", "a/bc"):
        path = root / directory / f"{TEMP_PREFIX}0123456789abcdef"
        path.write_bytes(b"partial")
        os.utime(path, (old, old))
    assert store.remove_stale_temporaries("a/b/") == (f"a/b/{TEMP_PREFIX}0123456789abcdef",)
    assert len(_temporaries(root)) == 1
    assert store.remove_stale_temporaries() == (f"a/bc/{TEMP_PREFIX}0123456789abcdef",)
    assert store.get("a/b/@base").data == b"1"
