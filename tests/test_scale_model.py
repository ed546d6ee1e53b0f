"""The stored model that makes shared state cost what changed (issue: PyTorch-sized
suites): ``cache/nodeids`` kept as digests, and ``cache/lastfailed`` parts holding only
failures and fixes.

Both are joins like every other strategy, and give the answers of the model they
replace: a set of every id, and the latest observation of every test.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachekit import Cache, MemoryStore, PrefixedStore, open_store
from cachekit.ci.layout import NODEIDS_KEY
from cachekit.ci.namespace import detect_namespace
from cachekit.errors import CorruptData
from cachekit.session import Session
from cachekit.values import codec
from cachekit.values.compaction import compaction_due
from cachekit.values.digests import DigestSet, DigestUnion, digest
from cachekit.values.merge import LASTFAILED, MappingUnion, Outcome, join_all, still_failing
from cachekit_pytest.lastfailed import Failed, Recorder
from cachekit_pytest.options import DEFAULT_COMPACT_THRESHOLD
from cachekit_pytest.sync.keys import ObservedOutcomes, shared_keys
from cachekit_pytest.sync.records import Write
from cachekit_pytest.sync.remote import Remote

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NODEIDS = DigestUnion()

ids = st.sampled_from([f"t.py::test_{index}" for index in range(12)]) | st.text(max_size=5)
id_lists = st.lists(ids, max_size=8)


@st.composite
def digest_sets(draw: st.DrawFn) -> DigestSet:
    """A value as a read meets it: a part (names) or a base (digests), or a join."""
    names = draw(id_lists)
    as_base = draw(st.booleans())
    value = NODEIDS.check(names)
    return NODEIDS.check(NODEIDS.stored(value)) if as_base else value


def members(value: DigestSet, universe: list[str]) -> set[str]:
    return {name for name in universe if name in value}


# -- cache/nodeids as digests ---------------------------------------------------------------


@SETTINGS
@given(digest_sets(), digest_sets(), digest_sets())
def test_digest_union_is_a_join(a: DigestSet, b: DigestSet, c: DigestSet) -> None:
    join = NODEIDS.join
    assert join(join(a, b), c) == join(a, join(b, c))
    assert join(a, b) == join(b, a)
    assert join(a, a) == a
    assert join(NODEIDS.empty(), a) == a


@SETTINGS
@given(st.lists(id_lists, max_size=5), st.lists(ids, max_size=10), st.data())
def test_digest_union_holds_exactly_the_union(
    parts: list[list[str]], probes: list[str], data: st.DataObject
) -> None:
    """Whatever is compacted when, membership is that of the plain set of every id."""
    expected = {name for part in parts for name in part}
    values = [NODEIDS.check(part) for part in parts]
    # Compact a random prefix into a base, as a run or ``cachekit compact`` would.
    cut = data.draw(st.integers(0, len(values)))
    base = NODEIDS.check(NODEIDS.stored(join_all(NODEIDS, values[:cut])))
    merged = join_all(NODEIDS, [base, *values[cut:]])
    universe = sorted(expected | set(probes))
    assert members(merged, universe) == expected
    assert len(merged) == len(expected)
    stored = NODEIDS.check(json.loads(json.dumps(NODEIDS.stored(merged))))
    assert members(stored, universe) == expected
    assert DigestSet.from_json(merged.to_json()) == merged


def test_digests_are_the_same_on_every_machine() -> None:
    # blake2b-64 of the UTF-8 bytes, little-endian: a stored base reads the same anywhere.
    expected = hashlib.blake2b(b"t.py::test_a", digest_size=8).digest()
    assert digest("t.py::test_a") == int.from_bytes(expected, "little")
    assert NODEIDS.stored(NODEIDS.check([])) == {"digests": ""}


@pytest.mark.parametrize(
    "value",
    [
        {"digests": "not base64!"},
        {"digests": "AAAA"},  # 3 bytes: not whole digests
        {"digests": 5},
        {"digests": "", "more": 1},
        ["a", 1],
        "a",
        None,
    ],
)
def test_a_digest_base_of_the_wrong_shape_is_corrupt(value: Any) -> None:
    with pytest.raises(CorruptData):
        NODEIDS.check(value)


def test_a_base_of_500_000_ids_is_4_mb_and_searched_in_place() -> None:
    names = [f"test/test_{index // 2500}.py::test_{index}" for index in range(500_000)]
    stored = NODEIDS.stored(NODEIDS.check(names))
    assert isinstance(stored, dict)
    assert len(stored["digests"]) == (500_000 * 8 + 2) // 3 * 4  # base64 of 8 bytes an id
    base = NODEIDS.check(stored)
    assert not base.names  # nothing held by name: no string per test once compacted
    assert all(name in base for name in names[::997])
    assert "test/test_0.py::test_new" not in base


# -- cache/lastfailed: failures and fixes only ----------------------------------------------


def run_part(failing_at_start: list[str], outcomes: dict[str, bool], at: float) -> Any:
    """A shard's ``cache/lastfailed`` part, made as the plugin makes it."""
    recorder = Recorder()
    for nodeid, failed in outcomes.items():
        recorder.events.append(Failed(nodeid) if failed else nodeid)
    observed = recorder.replay(failing_at_start).observations(at)
    return None if observed is None else observed.part()


OLD = MappingUnion(Outcome())  # 0.1.0: every observation, passes included

tests = st.sampled_from([f"t.py::test_{index}" for index in range(8)])
shard_outcomes = st.dictionaries(tests, st.booleans(), max_size=6)


def replay_history(
    runs: list[list[dict[str, bool]]], *, compact_after: set[int], disjoint: bool
) -> tuple[dict[str, bool], dict[str, bool]]:
    """Runs one after another, each of shards that start from the same view: the new
    model through a store (compacting after some runs) and 0.1.0's, projected onto
    pytest's ``{nodeid: True}``."""
    cache = Cache(MemoryStore())
    old: dict[str, Any] = {}
    start = time.time() - 3600
    for index, shards in enumerate(runs):
        view = list(still_failing(cache.read_merged("lf", LASTFAILED).value))
        seen: set[str] = set()
        for number, drawn in enumerate(shards):
            outcomes = drawn
            if disjoint:  # real shards split the tests: each test on one shard
                outcomes = {t: f for t, f in drawn.items() if t not in seen}
                seen |= set(outcomes)
            at = start + index + number / 100  # shards of a run start a moment apart
            part = run_part(view, outcomes, at)
            if part is not None:
                cache.write_part("lf", f"r{index}s{number}", part)
            everything = {t: {"at": at, "failed": f} for t, f in outcomes.items()}
            old = OLD.join(old, OLD.check(everything))
        if index in compact_after:
            cache.compact("lf", LASTFAILED)
    return still_failing(cache.read_merged("lf", LASTFAILED).value), still_failing(old)


histories = st.lists(st.lists(shard_outcomes, min_size=1, max_size=3), max_size=6)


@SETTINGS
@given(histories, st.sets(st.integers(0, 5)))
def test_lastfailed_agrees_with_every_observation_kept(runs: Any, compact_after: set[int]) -> None:
    """Shards that split the tests, runs one after another: exactly 0.1.0's answers,
    though parts hold only failures and the passes that fixed them."""
    new, old = replay_history(runs, compact_after=compact_after, disjoint=True)
    assert new == old


@SETTINGS
@given(histories, st.sets(st.integers(0, 5)))
def test_overlapping_shards_only_ever_keep_a_failure_longer(
    runs: Any, compact_after: set[int]
) -> None:
    """Two shards of one run that ran the same test, one failing it and one passing it
    a moment later: the pass of a test that was not failing when the run started is not
    stored, so the failure stays (0.1.0 let the later pass win). That is the only
    difference, and it is on the safe side: ``--lf`` reruns the test."""
    new, old = replay_history(runs, compact_after=compact_after, disjoint=False)
    assert set(old) <= set(new)
    for nodeid in set(new) - set(old):
        last_run = [shard for shard in runs if any(nodeid in outcomes for outcomes in shard)][-1]
        assert any(outcomes.get(nodeid) is True for outcomes in last_run)


def test_a_pass_is_stored_only_for_a_test_failing_at_the_start() -> None:
    part = run_part(["t.py::fixed"], {"t.py::fixed": False, "t.py::ok": False}, at=1.0)
    assert part == {"t.py::fixed": {"at": 1.0, "failed": False}}
    assert run_part([], {"t.py::ok": False}, at=1.0) is None


def test_compaction_keeps_failures_and_recent_fixes_only() -> None:
    now = 1e9  # counted back from the latest observation, not from the clock
    old_fix = now - LASTFAILED.PASS_WINDOW - 3600
    stored = LASTFAILED.stored(
        {
            "t.py::failing": {"at": old_fix, "failed": True},
            "t.py::fixed_long_ago": {"at": old_fix, "failed": False},
            "t.py::fixed_today": {"at": now - 60, "failed": False},
        }
    )
    assert sorted(stored) == ["t.py::failing", "t.py::fixed_today"]  # type: ignore[arg-type]


# -- what a shard's start-up read costs ------------------------------------------------------


def json_nodes(value: Any) -> int:
    """Python objects a decoded JSON value is made of (each string, number, list...)."""
    if isinstance(value, dict):
        return 1 + sum(1 + json_nodes(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(json_nodes(item) for item in value)
    return 1


def fill_namespace(url: str, shards: int, per_shard: int, failing: set[str]) -> None:
    """Every shard's part, written as the plugin writes it (names of the new ids), and
    compacted as the plugin compacts."""
    for shard in range(shards):
        namespace = detect_namespace({}, shard=str(shard))
        remote = Remote(Session(url, namespace=namespace), shared_keys(()))
        found = remote.read()
        collected = [f"shard_{shard}/test_x.py::test[{i}]" for i in range(per_shard)]
        compact = [
            key for key, value in found.items() if len(value.parts) + 1 >= DEFAULT_COMPACT_THRESHOLD
        ]
        observed = ObservedOutcomes(
            time.time(), failed=[n for n in collected if n in failing], passed=[]
        )
        remote.write(
            Write({NODEIDS_KEY: collected}, tuple(compact), DEFAULT_COMPACT_THRESHOLD, observed)
        )


def decoded_values(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every value `codec.decode` returns from now on."""
    decoded: list[Any] = []
    real_decode = codec.decode

    def counting_decode(data: bytes, **options: Any) -> Any:
        value = real_decode(data, **options)
        decoded.append(value)
        return value

    monkeypatch.setattr(codec, "decode", counting_decode)
    return decoded


SHARDS, PER_SHARD = 100, 1_000
FAILING = {f"shard_{s}/test_x.py::test[{i}]" for s in range(SHARDS) for i in (7, 500)}


@pytest.fixture(scope="module")
def filled_namespace(tmp_path_factory: pytest.TempPathFactory) -> str:
    """100 shards of 1,000 tests each wrote their part (0.2% failing)."""
    url = str(tmp_path_factory.mktemp("scale") / "store")
    fill_namespace(url, SHARDS, PER_SHARD, FAILING)
    return url


def test_a_shard_start_up_read_grows_with_failures_not_with_the_suite(
    filled_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh runner's start-up read that needs the store's test ids (``--nf``) decodes
    about 8 bytes a test (the digests) and a few objects a failure: not an object per
    test, as 0.1.0's 100,000 observations and 100,000 names were (counted, not timed: CI
    machines differ)."""
    decoded = decoded_values(monkeypatch)
    namespace = detect_namespace({}, shard="fresh")
    remote = Remote(Session(filled_namespace, namespace=namespace), shared_keys(()))
    found = remote.read()
    assert len(found["cache/lastfailed"].value) == len(FAILING)
    text = sum(len(json.dumps(value)) for value in decoded)
    objects = sum(json_nodes(value) for value in decoded)
    tests = SHARDS * PER_SHARD
    assert text < 12 * tests  # the digests' base64: 10.7 bytes a test
    # Failures, and the names of the few parts written since the last compaction.
    threshold = DEFAULT_COMPACT_THRESHOLD
    assert objects < 20 * len(FAILING) + PER_SHARD * (threshold - 1) + 100


def test_a_run_that_needs_no_test_ids_reads_only_the_failures(
    filled_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--nf`` the start-up read lists ``cache/nodeids`` but fetches none of it
    (4 MB at 500,000 tests): it decodes some bytes a failure, nothing a test, and still
    knows how many parts the end of the run may compact."""
    decoded = decoded_values(monkeypatch)
    namespace = detect_namespace({}, shard="fresh")
    session = Session(filled_namespace, namespace=namespace)
    remote = Remote(session, shared_keys(()), count_only=[NODEIDS_KEY])
    found = remote.read()
    assert len(found["cache/lastfailed"].value) == len(FAILING)
    assert not found[NODEIDS_KEY].value
    listed = session.cache.parts(NODEIDS_KEY)
    assert found[NODEIDS_KEY].parts == tuple(key.rpartition("/")[2] for key in listed)
    assert found[NODEIDS_KEY].has_base
    text = sum(len(json.dumps(value)) for value in decoded)
    assert text < 200 * len(FAILING)


# -- how many writers compact ----------------------------------------------------------------


@pytest.mark.parametrize("read", [True, False])
def test_one_machine_compacts_every_threshold_runs(read: bool) -> None:
    """A writer that lists fewer parts than the threshold never compacts; one whose part
    makes exactly the threshold always does, whatever its lot."""
    assert not any(compaction_due(parts, 10, read=read, draw=lambda: 0.0) for parts in range(10))
    assert compaction_due(10, 10, read=read, draw=lambda: 0.999_999)


def test_a_writer_that_read_the_parts_compacts_them_however_many() -> None:
    """Its start-up read fetched them already: a run that finds a backlog folds it."""
    assert compaction_due(201, 10, read=True, draw=lambda: 0.999_999)


def test_shards_that_list_many_parts_compact_about_threshold_times() -> None:
    """200 shards that start together list the 200 parts of the previous CI run of a key
    they did not read: about ten of them compact, not all 200 (each would read the whole
    value)."""
    lot = random.Random(12)
    compactors = [
        sum(compaction_due(200 + 1, 10, read=False, draw=lot.random) for _shard in range(200))
        for _run in range(300)
    ]
    assert 9 <= statistics.mean(compactors) <= 11
    assert min(compactors) >= 1
    assert max(compactors) <= 25


# -- the layout is versioned ------------------------------------------------------------------


def test_a_namespace_of_the_old_layout_reads_as_empty_with_one_warning(
    pytester: pytest.Pytester, tmp_path: Any
) -> None:
    """0.1.0 wrote ``v1/...`` with an observation per test; this version reads none of
    it: the run goes on as with an empty cache, says why once, and writes ``v2/``."""
    url = str(tmp_path / "store")
    namespace = detect_namespace()
    old_prefix = namespace.prefix.replace("v2/", "v1/", 1)
    old = Cache(PrefixedStore(open_store(url), old_prefix))
    old.write_part("cache/lastfailed", "p1", {"test_old.py::test_a": {"at": 1.0, "failed": True}})
    old.write_part("cache/nodeids", "p1", ["test_old.py::test_a"])
    pytester.makepyfile(test_old="def test_a(): assert 0")
    result = pytester.runpytest(f"--cache-url={url}", "--lf", "-W", "error")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the test's own outcome, nothing else
    result.stdout.fnmatch_lines(["*no previously failed tests*"])
    text = result.stdout.str() + result.stderr.str()  # the first write looks: at the end
    assert text.count("holds data of an older cachekit") == 1
    assert f"{old_prefix}/ holds data" in text
    new = Cache(PrefixedStore(open_store(url), namespace.prefix))
    assert still_failing(new.read_merged("cache/lastfailed", LASTFAILED).value) == {
        "test_old.py::test_a": True
    }
    again = pytester.runpytest(f"--cache-url={url}", "--lf")
    assert "older cachekit" not in again.stdout.str() + again.stderr.str()  # data now
