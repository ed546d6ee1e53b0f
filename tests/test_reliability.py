"""Reliability of the core under real concurrency and real failures: racing processes,
SIGKILLed writers, concurrent readers, keys and symlinks that try to escape the root.

No mocks: children are real processes (spawned, or forked where a test needs hundreds of
them), killed with real signals, writing to real directories or real emulated servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import queue
import random
import signal
import struct
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from cachekit import (
    Cache,
    LayeredStore,
    LocalStore,
    MemoryStore,
    PrefixedStore,
    new_part_id,
    open_store,
)
from cachekit.errors import CacheError, CorruptData, InvalidKey, PreconditionFailed
from cachekit.stores.local import TEMP_PREFIX
from cachekit.values.codec import decode
from cachekit.values.merge import SortedUnion

#: A join of lists of strings, for tests of parts and compaction.
UNION = SortedUnion()

SPAWN = multiprocessing.get_context("spawn")
#: Longest a group of child processes may take before the test fails (not hangs).
CHILD_TIMEOUT = 240.0
REMOTE_FIXTURES = {"s3": "s3_url", "azure": "azure_url"}


@pytest.fixture(params=["local", "s3", "azure"])
def store_url(request, tmp_path):
    """A URL any process can open: a local directory, or (when tests/conftest.py provides
    the fixtures) a fresh bucket on moto's S3 server or a fresh container on Azurite."""
    if request.param == "local":
        return str(tmp_path / "store")
    name = REMOTE_FIXTURES[request.param]
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        pytest.skip(f"fixture {name!r} is not defined (tests/conftest.py)")


# -- helpers that run in child processes ------------------------------------------------------


class RecordingStore:
    """Delegates to a store; records every successful put as (key, precondition, version),
    so a lost update can be traced to two writes that both won from one previous version."""

    def __init__(self, store) -> None:
        self.store = store
        self.puts: list[tuple[str, str | None, str]] = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    @property
    def capabilities(self):
        return self.store.capabilities

    def put(self, key, data, *, if_absent=False, if_version=None):
        version = self.store.put(key, data, if_absent=if_absent, if_version=if_version)
        precondition = "<absent>" if if_absent else if_version
        self.puts.append((key, precondition, version))
        return version


def _increment_worker(url, key, count, barrier, results):
    store = None
    calls = []

    def increment(n):
        calls.append(n)
        return n + 1

    try:
        store = RecordingStore(open_store(url))
        # Contention is the point: never give up on a retry, so a missing increment can
        # only be a lost update.
        cache = Cache(store, update_attempts=100_000)
        barrier.wait(timeout=60)
        for _ in range(count):
            cache.update(key, increment, default=0)
        results.put(("ok", os.getpid(), {"puts": store.puts, "calls": len(calls)}))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))
    finally:
        if store is not None:
            store.close()


def _create_only_worker(url, rounds, barrier, results):
    try:
        store = open_store(url)
        wins = []
        for round_ in range(rounds):
            barrier.wait(timeout=60)
            try:
                store.put(f"race/{round_}", str(os.getpid()).encode(), if_absent=True)
            except PreconditionFailed:
                continue
            wins.append(round_)
        store.close()
        results.put(("ok", os.getpid(), {"pid": os.getpid(), "wins": wins}))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))


def _part_writer(url, name, count, barrier, results):
    try:
        cache = Cache(open_store(url))
        barrier.wait(timeout=60)
        for index in range(count):
            cache.write_part("nodeids", new_part_id(name), [f"{name}-{index}"])
        cache.store.close()
        results.put(("ok", os.getpid(), count))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))


def _compactor(url, stop, barrier, results):
    store = None
    try:
        store = RecordingStore(open_store(url))
        cache = Cache(store)
        barrier.wait(timeout=60)
        rounds = folded = 0
        while True:
            stopping = stop.is_set()
            folded += cache.compact("nodeids", UNION)
            rounds += 1
            if stopping:
                break
        results.put(("ok", os.getpid(), {"rounds": rounds, "folded": folded, "puts": store.puts}))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))
    finally:
        if store is not None:
            store.close()


def _blob(size: int, rng: random.Random) -> bytes:
    """Self-describing bytes: length and SHA-256 of the body, then the body."""
    body = rng.randbytes(size // 2).hex().encode()[:size]
    return struct.pack(">Q", len(body)) + hashlib.sha256(body).digest() + body


def _check_blob(data: bytes) -> None:
    length = struct.unpack_from(">Q", data)[0]
    body = data[40:]
    assert len(body) == length, f"torn raw value: {len(body)} of {length} bytes"
    assert hashlib.sha256(body).digest() == data[8:40], "raw value does not match its hash"


def _document(size: int, rng: random.Random, serial: int) -> dict:
    """A self-describing JSON value; large ones are compressed by the codec."""
    text = rng.randbytes(size // 2).hex()[:size]
    return {
        "serial": serial,
        "n": len(text),
        "sha": hashlib.sha256(text.encode()).hexdigest(),
        "s": text,
    }


def _check_document(value) -> None:
    assert isinstance(value, dict), value
    assert len(value["s"]) == value["n"], "torn document"
    assert hashlib.sha256(value["s"].encode()).hexdigest() == value["sha"], "document hash"


SIZES = [0, 10, 300, 4000, 5000, 40_000, 300_000]


def _writer_loop(root: str, seed: int, ready_fd: int) -> None:
    """Write forever (until killed): Cache.set, LocalStore.put, update() and new parts."""
    rng = random.Random(seed)
    store = LocalStore(root)
    cache = Cache(store)
    serial = 0
    signalled = False
    while True:
        serial += 1
        size = rng.choice(SIZES)
        slot = rng.randrange(4)
        action = rng.randrange(4)
        if action == 0:
            cache.set(f"values/k{slot}", _document(size, rng, serial))
        elif action == 1:
            store.put(f"raw/k{slot}", _blob(size, rng))
        elif action == 2:
            cache.update("counter", lambda n: n + 1, default=0)
        else:
            cache.write_part("parts", new_part_id(f"s{seed}"), _document(size // 10, rng, serial))
        if not signalled:
            os.write(ready_fd, b"1")
            signalled = True


def _reader_checks(store: LocalStore) -> dict[str, int]:
    """Read every key: each must be a complete, valid value. Returns what was seen."""
    cache = Cache(store)
    seen: Counter[str] = Counter()
    for key in store.list():
        assert not any(segment.startswith(TEMP_PREFIX) for segment in key.split("/")), key
        entry = store.get(key)
        assert entry is not None, f"listed but unreadable: {key}"
        if key.startswith("raw/"):
            _check_blob(entry.data)
            seen["raw"] += 1
            continue
        try:
            envelope = decode(entry.data)
        except CorruptData as error:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{key} is corrupt after a SIGKILL: {error}")
        if key == "counter/@base":
            assert isinstance(envelope["value"], int)
            seen["counter"] = envelope["value"]
        else:
            _check_document(envelope["value"])
            seen["parts" if "/@parts/" in key else "values"] += 1
    # Through Cache too (a CorruptValueWarning is an error under this project's config).
    for slot in range(4):
        value = cache.get(f"values/k{slot}")
        if value is not None:
            _check_document(value)
    return dict(seen)


def _write_loop(root: str, seed: int, count: int, results) -> None:
    try:
        rng = random.Random(seed)
        store = LocalStore(root)
        cache = Cache(store)
        for serial in range(count):
            size = rng.choice(SIZES[:-1])
            if serial % 2:
                store.put(f"raw/k{serial % 3}", _blob(size, rng))
            else:
                cache.set(f"values/k{serial % 3}", _document(size, rng, serial))
        results.put(("ok", os.getpid(), count))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))


# -- running groups of children -------------------------------------------------------------


def _run(target, argument_lists, *, barrier: bool = True, extra=(), timeout=CHILD_TIMEOUT):
    """Start one spawned child per argument list, wait for each to report, return reports.

    Children get (*arguments, [barrier,] *extra, results_queue)."""
    results = SPAWN.Queue()
    start = SPAWN.Barrier(len(argument_lists)) if barrier else None
    processes = []
    for arguments in argument_lists:
        args = (*arguments, *((start,) if barrier else ()), *extra, results)
        processes.append(SPAWN.Process(target=target, args=args, daemon=True))
    for process in processes:
        process.start()
    # The collector keeps the barrier alive: were it garbage-collected here, its named
    # semaphores would be unlinked before the children attach to them.
    return processes, results, _collector(processes, results, timeout, keep=start)


def _collector(processes, results, timeout, keep=None):
    def collect(count=None):
        assert keep is None or keep.parties == len(processes)
        count = len(processes) if count is None else count
        reports = []
        deadline = time.monotonic() + timeout
        try:
            while len(reports) < count:
                try:
                    reports.append(results.get(timeout=1.0))
                except queue.Empty:
                    dead = [p for p in processes if p.exitcode not in (None, 0)]
                    if dead:
                        pytest.fail(
                            f"child died without reporting: exit codes {[p.exitcode for p in dead]}"
                        )
                    if time.monotonic() > deadline:
                        pytest.fail(f"children did not finish within {timeout} s")
        finally:
            if len(reports) < count:
                for process in processes:
                    process.kill()
        errors = [report for report in reports if report[0] != "ok"]
        assert not errors, errors
        return [report[2] for report in reports]

    return collect


def _join(processes):
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():  # pragma: no cover
            process.kill()
            pytest.fail("a child did not exit")


def _check_preconditions_sequentially(url: str) -> None:
    """Preconditions are honoured one request at a time: so two conditional writes that
    both won from one version can only come from the store racing, not from cachekit
    dropping the precondition."""
    store = open_store(url)
    try:
        first = store.put("probe/sequential", b"1", if_absent=True)
        with pytest.raises(PreconditionFailed):
            store.put("probe/sequential", b"x", if_absent=True)
        second = store.put("probe/sequential", b"2", if_version=first)
        with pytest.raises(PreconditionFailed):
            store.put("probe/sequential", b"3", if_version=first)
        assert store.get("probe/sequential").data == b"2"
        assert store.get("probe/sequential").version == second
        store.delete("probe/sequential")
    finally:
        store.close()


def _same_version_races(puts) -> dict[tuple[str, str], list[str]]:
    """Successful conditional writes grouped by (key, precondition): more than one success
    from the same previous version means one overwrote the other."""
    winners: dict[tuple[str, str], list[str]] = defaultdict(list)
    for key, precondition, version in puts:
        if precondition is not None:
            winners[(key, precondition)].append(version)
    return {group: versions for group, versions in winners.items() if len(versions) > 1}


def _explain_races(url: str, races: dict, lost: str) -> str:
    sample = dict(list(races.items())[:5])
    server = url.split("://", 1)[0] if "://" in url else "local"
    text = (
        f"{lost}. {len(races)} previous version(s) had more than one successful conditional "
        f"write: {sample}. Preconditions are honoured sequentially on this store, so the "
        f"{server} store accepted concurrent conditional writes from the same version: a "
        "server-side precondition race"
    )
    if server == "s3":
        text += " (moto checks If-Match/If-None-Match, then writes, without a per-key lock)"
    return text


def _handle_races(url: str, races: dict, lost: str) -> None:
    if not races:
        return
    message = _explain_races(url, races, lost)
    print(message)
    if "://" in url and not url.startswith("file://"):
        # An emulator's race, proven above, not cachekit's: say so instead of failing CI.
        pytest.xfail(message)
    pytest.fail(message)


# -- 1. racing updates and create-only writes ----------------------------------------------


@pytest.mark.slow
def test_racing_updates_lose_nothing(store_url):
    processes_count, increments = 8, 100
    _check_preconditions_sequentially(store_url)
    started = time.monotonic()
    processes, _, collect = _run(
        _increment_worker, [(store_url, "counter", increments)] * processes_count
    )
    reports = collect()
    _join(processes)
    elapsed = time.monotonic() - started
    puts = [put for report in reports for put in report["puts"]]
    attempts = sum(report["calls"] for report in reports)
    final = Cache(open_store(store_url)).get("counter")
    print(
        f"{store_url.split('://')[0] if '://' in store_url else 'local'}: final={final} "
        f"successful writes={len(puts)} attempts={attempts} in {elapsed:.1f}s"
    )
    assert len(puts) == processes_count * increments  # one successful write per update
    races = _same_version_races(puts)
    lost = f"final value {final}, expected {processes_count * increments}"
    _handle_races(store_url, races, lost)
    assert final == processes_count * increments, lost
    # Every write built on the previous one: the versions form a single chain.
    versions = [version for _, _, version in puts]
    assert len(set(versions)) == len(versions), "a version token was handed out twice"


@pytest.mark.slow
def test_racing_create_only_has_exactly_one_winner(store_url):
    processes_count, rounds = 8, 40
    processes, _, collect = _run(_create_only_worker, [(store_url, rounds)] * processes_count)
    reports = collect()
    _join(processes)
    winners = defaultdict(list)
    for report in reports:
        for round_ in report["wins"]:
            winners[round_].append(report["pid"])
    multiple = {round_: pids for round_, pids in winners.items() if len(pids) != 1}
    if multiple:
        _check_preconditions_sequentially(store_url)
        _handle_races(
            store_url,
            {(f"race/{round_}", "<absent>"): pids for round_, pids in multiple.items()},
            f"rounds with several create-only winners: {multiple}",
        )
    assert sorted(winners) == list(range(rounds)), "a round had no winner"
    store = open_store(store_url)
    for round_, (pid,) in winners.items():
        assert store.get(f"race/{round_}").data == str(pid).encode(), "the winner's value"
    print(
        f"create-only: wins per process {sorted(Counter(p for (p,) in winners.values()).values())}"
    )


# -- 2. a writer killed at random points never leaves a torn value -----------------------------


def _fork_writer(root: str, seed: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns to pytest
        try:
            os.close(read_fd)
            _writer_loop(root, seed, write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, read_fd


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkilled_writer_never_leaves_a_torn_value(tmp_path):
    """200 writers killed with SIGKILL at random moments; after each, every key is absent
    or a complete, valid value, and temporary files never show in listings."""
    root = tmp_path / "store"
    rng = random.Random(20260601)
    trials = 200
    counter = 0
    started = time.monotonic()
    seen_total: Counter[str] = Counter()
    for trial in range(trials):
        pid, ready = _fork_writer(str(root), seed=trial)
        try:
            assert os.read(ready, 1) == b"1", "writer failed before its first write"
            time.sleep(rng.uniform(0, 0.03))
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            os.close(ready)
        assert os.WIFSIGNALED(status), status
        assert os.WTERMSIG(status) == signal.SIGKILL, status
        seen = _reader_checks(LocalStore(root))
        assert seen.get("counter", 0) >= counter, "the counter went backwards"
        counter = seen.get("counter", 0)
        seen_total.update({key: 1 for key in seen})
    elapsed = time.monotonic() - started
    temporaries = [
        name for _, _, names in os.walk(root) for name in names if name.startswith(TEMP_PREFIX)
    ]
    print(
        f"{trials} SIGKILLs in {elapsed:.1f}s; counter={counter}; stray temporary files left: "
        f"{len(temporaries)}; trials that saw each kind: {dict(seen_total)}"
    )
    # The kills did land in the middle of writes (a temporary file was left behind) and
    # the writers made progress: otherwise this test proved nothing.
    assert temporaries, "no kill landed during a write"
    assert counter > 0
    assert {"raw", "values", "parts"} <= set(seen_total)
    # Stray temporaries do not break the store: listings hide them, writes go on.
    store = LocalStore(root)
    listed = store.list()
    assert not [key for key in listed if TEMP_PREFIX in key]
    store.put("raw/k0", _blob(100, rng))
    assert "raw/k0" in store.list("raw/")
    _reader_checks(store)


# -- 3. keys that try to escape ------------------------------------------------------------

BAD_KEYS = [
    "",
    ".",
    "..",
    "../x",
    "/abs",
    "/",
    "a/../../b",
    "a/./b",
    "./a",
    "a/..",
    "a//b",
    "a/",
    "a\x00b",
    "a\\b",
    "..\\x",
    "a\nb",
    "a\rb",
    "a\tb",
    "\x7f",
    "x" * 1025,
    "a/" + "y" * 256,
]
BAD_KEY_IDS = [repr(key)[:24] for key in BAD_KEYS]
BAD_PREFIXES = [key for key in BAD_KEYS if key not in ("", "a/")]


@pytest.fixture(params=["memory", "local", "prefixed-memory", "prefixed-local", "layered"])
def any_store(request, tmp_path):
    root = tmp_path / "root"
    if request.param == "memory":
        return MemoryStore()
    if request.param == "local":
        return LocalStore(root)
    if request.param == "prefixed-memory":
        return PrefixedStore(MemoryStore(), "ns")
    if request.param == "prefixed-local":
        return PrefixedStore(LocalStore(root), "ns")
    return LayeredStore([LocalStore(root), MemoryStore()])


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("key", BAD_KEYS, ids=BAD_KEY_IDS)
def test_escaping_keys_are_refused(any_store, key, tmp_path):
    before = _tree(tmp_path)
    operations = {
        "get": lambda: any_store.get(key),
        "get_many": lambda: any_store.get_many(["fine", key]),
        "put": lambda: any_store.put(key, b"x"),
        "put-if-absent": lambda: any_store.put(key, b"x", if_absent=True),
        "put-if-version": lambda: any_store.put(key, b"x", if_version="1"),
        "delete": lambda: any_store.delete(key),
        "delete_many": lambda: any_store.delete_many([key]),
    }
    if key in BAD_PREFIXES:
        operations["list"] = lambda: any_store.list(key)
    accepted = []
    for name, operation in operations.items():
        try:
            operation()
        except InvalidKey:
            continue
        accepted.append(name)
    assert not accepted, f"{accepted} accepted {key!r}"
    assert any_store.list() == []
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("key", [TEMP_PREFIX + "x", f"a/{TEMP_PREFIX}y/b"])
def test_local_store_refuses_its_temporary_names(tmp_path, key):
    store = LocalStore(tmp_path)
    with pytest.raises(InvalidKey):
        store.put(key, b"x")
    with pytest.raises(InvalidKey):
        store.get(key)


def test_valid_prefixes_are_accepted(any_store):
    any_store.put("a/b", b"1")
    assert any_store.list("") == ["a/b"]
    assert any_store.list("a/") == ["a/b"]
    assert any_store.list("a") == ["a/b"]


@pytest.fixture
def planted(tmp_path):
    """A LocalStore whose root holds symlinks pointing outside it."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"outside data")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file-link").symlink_to(outside / "secret")
    return LocalStore(root), outside


@pytest.mark.parametrize("key", ["link/x", "link/secret", "link/sub/x", "link/sub/deeper/x"])
def test_put_through_a_planted_symlink_writes_nothing_outside(planted, key):
    store, outside = planted
    before = _tree(outside)
    with pytest.raises(CacheError):
        store.put(key, b"written through a symlink")
    with pytest.raises(CacheError):
        store.put(key, b"written through a symlink", if_absent=True)
    assert _tree(outside) == before, "the store created files or directories outside its root"
    assert (outside / "secret").read_bytes() == b"outside data"


def test_get_through_a_planted_symlink_reads_nothing_outside(planted):
    store, _ = planted
    with contextlib.suppress(CacheError):
        entry = store.get("link/secret")
        assert entry is None, "read a file outside the store's root through a symlink"
    with contextlib.suppress(CacheError):
        assert "link/secret" not in store.get_many(["link/secret"])


def test_list_does_not_follow_a_planted_symlink(planted):
    store, _ = planted
    assert store.list() == []
    with contextlib.suppress(CacheError):
        assert store.list("link/") == [], "listed files outside the store's root"


def test_delete_through_a_planted_symlink_removes_nothing_outside(planted):
    store, outside = planted
    with contextlib.suppress(CacheError):
        store.delete("link/secret")
    with contextlib.suppress(CacheError):
        store.delete_many(["link/secret"])
    assert (outside / "secret").read_bytes() == b"outside data", "deleted a file outside the root"


def test_a_symlink_in_place_of_a_value_is_not_followed(planted):
    store, outside = planted
    with contextlib.suppress(CacheError):
        entry = store.get("file-link")
        assert entry is None or entry.data != b"outside data"
    store.put("file-link", b"inside")  # replaces the link, not its target
    assert (outside / "secret").read_bytes() == b"outside data"
    assert store.get("file-link").data == b"inside"
    store.delete("file-link")
    assert (outside / "secret").read_bytes() == b"outside data"


def test_a_root_that_is_itself_a_symlink_works(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    store = LocalStore(tmp_path / "alias")
    store.put("a/b", b"1")
    assert store.get("a/b").data == b"1"
    assert (real / "a" / "b").read_bytes() == b"1"


# -- 4. local versions ---------------------------------------------------------------------------


def test_local_versions_never_repeat_for_same_size_writes(tmp_path):
    """The local version is (inode, mtime, size); ext4 reuses a freed inode at once, so
    uniqueness rests on the timestamp. Same-size writes in quick succession must still get
    distinct versions, or a stale compare-and-swap succeeds (ABA)."""
    store = LocalStore(tmp_path, durable=False)
    stale = store.put("k", b"v0000")
    versions = [stale]
    for index in range(1, 1500):
        versions.append(store.put("k", f"v{index % 10000:04d}".encode()))
    inodes = {version.split("-")[0] for version in versions}
    repeated = [version for version, count in Counter(versions).items() if count > 1]
    assert not repeated, f"{len(repeated)} versions repeated ({len(inodes)} distinct inodes)"
    with pytest.raises(PreconditionFailed):
        store.put("k", b"stale", if_version=stale)


# -- 5. readers during writes ---------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_readers_never_see_a_torn_value(tmp_path):
    root = str(tmp_path / "store")
    writers, writes = 2, 250
    processes, _, collect = _run(
        _write_loop, [(root, seed, writes) for seed in range(writers)], barrier=False
    )
    store = LocalStore(root)
    cache = Cache(store)
    done = threading.Event()
    verified: Counter[str] = Counter()
    failures: list[str] = []

    def read_until_done():
        while not done.is_set():
            try:
                for slot in range(3):
                    entry = store.get(f"raw/k{slot}")
                    if entry is not None:
                        _check_blob(entry.data)
                        verified["raw"] += 1
                    value = cache.get(f"values/k{slot}")
                    if value is not None:
                        _check_document(value)
                        verified["values"] += 1
            except BaseException as error:  # the test fails below with every failure
                failures.append(repr(error))
                return

    readers = [threading.Thread(target=read_until_done) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        collect()
        _join(processes)
    finally:
        done.set()
        for reader in readers:
            reader.join(timeout=30)
    assert not failures, failures[:5]
    print(f"verified reads during writes: {dict(verified)}")
    assert verified["raw"] > 20, verified
    assert verified["values"] > 20, verified


# -- 6. compaction racing with writers ----------------------------------------------------------


@pytest.mark.slow
def test_compaction_racing_with_writers_loses_no_part(store_url):
    writers, parts_each, compactors = 3, 30, 2
    stop = SPAWN.Event()
    results = SPAWN.Queue()
    barrier = SPAWN.Barrier(writers + compactors)
    processes = [
        SPAWN.Process(
            target=_part_writer,
            args=(store_url, f"w{index}", parts_each, barrier, results),
            daemon=True,
        )
        for index in range(writers)
    ] + [
        SPAWN.Process(target=_compactor, args=(store_url, stop, barrier, results), daemon=True)
        for _ in range(compactors)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    collect = _collector(processes, results, CHILD_TIMEOUT)
    try:
        written = collect(writers)  # writers report first; compactors loop until stopped
    finally:
        stop.set()
    compacted = collect(compactors)
    _join(processes)
    elapsed = time.monotonic() - started
    assert written == [parts_each] * writers

    expected = sorted(f"w{w}-{i}" for w in range(writers) for i in range(parts_each))
    cache = Cache(open_store(store_url))
    merged = cache.read_merged("nodeids", UNION)
    folded = sum(report["folded"] for report in compacted)
    rounds = sum(report["rounds"] for report in compacted)
    puts = [put for report in compacted for put in report["puts"]]
    print(
        f"compaction race: {rounds} compaction rounds folded {folded} parts with "
        f"{len(puts)} base writes; {len(merged.parts)} parts left; {elapsed:.1f}s"
    )
    missing = sorted(set(expected) - set(merged.value))
    lost = f"{len(missing)} parts lost: {missing[:10]}"
    _handle_races(store_url, _same_version_races(puts), lost)
    assert merged.value == expected, lost
    assert folded > 0, "the compactors never folded anything: the race was not exercised"
    # A last compaction folds the rest, and nothing is lost either.
    cache.compact("nodeids", UNION)
    final = cache.read_merged("nodeids", UNION)
    assert final.value == expected
    assert final.has_base
    assert final.parts == ()
