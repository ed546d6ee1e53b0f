"""A read stops at its time budget's deadline, in the process too (issue 15, item 4).

A thread inside ``json.loads`` holds the GIL: the budget's main thread cannot give up on it
at the deadline, and an abandoned reader went on decoding value after value. Values
planted near the per-value cap in a local store held a pytest run 3 to 24 s past
``--cache-timeout=1`` (measured before the fix). Now a reader decodes nothing past the
deadline (`codec.decoding_until`, set by `Budget` in its threads) and never starts on a
value that cannot be decoded before it.

Real stores (local directories), real strategies, a real pytest subprocess.
"""

from __future__ import annotations

import math
import re
import threading
import time
import warnings
from pathlib import Path

import pytest

from cachekit import Cache, LocalStore
from cachekit.budget import Budget, BudgetCallFailed, side_by_side
from cachekit.ci.layout import DURATIONS_KEY, LASTFAILED_KEY, NODEIDS_KEY, SKIP_PASSED_KEY
from cachekit.errors import CorruptValueWarning
from cachekit.values import codec
from cachekit.values.codec import OutOfTime, decoding_until, encode
from cachekit.values.merge import SortedUnion
from plugin_support import shared
from test_codec import frame

MIB = 1024 * 1024
KEY = "cache/nodeids"


def flat_object(size: int) -> bytes:
    """An uncompressed cachekit value of about ``size`` bytes: an envelope around a flat
    JSON object, the slowest shape ``json.loads`` decodes (1-2 us an entry; 40 MiB take
    4-5 s on the machine the fix was measured on)."""
    entries = b",".join(b'"k%d":0' % index for index in range(size // 10))
    return frame(b'{"value": {' + entries + b'}, "written_at": 1.0}')


class RecordingUnion(SortedUnion):
    """`SortedUnion` that records each value it checks (so, each value decoded and
    used), and holds the read at its first check until ``pause_until``."""

    def __init__(self, pause_until: float = -math.inf) -> None:
        self.checked: list[list[str]] = []
        self.pause_until = pause_until

    def check(self, value: codec.JSON) -> list[str]:
        checked = super().check(value)
        self.checked.append(checked)
        while time.monotonic() < self.pause_until:
            time.sleep(0.01)
        return checked


def store_with_parts(root: Path, count: int = 4) -> Cache:
    """A cache whose ``KEY`` has a base, ``count`` good parts and one corrupt part (which
    a read that decodes it reports with a warning)."""
    store = LocalStore(root)
    cache = Cache(store)
    cache.set(KEY, ["base"])
    for index in range(count):
        cache.write_part(KEY, f"p{index}", [f"t{index}"])
    store.put(f"{KEY}/@parts/p9-corrupt", frame(b'{"value": 1, "written_at": 1.0}'))
    return cache


def test_past_the_deadline_nothing_is_decoded_checked_or_warned_about(tmp_path: Path) -> None:
    cache = store_with_parts(tmp_path / "store")
    strategy = RecordingUnion()
    with warnings.catch_warnings(record=True) as caught, decoding_until(time.monotonic()):
        warnings.simplefilter("always")
        for read in (
            lambda: cache.read_merged(KEY, strategy),
            lambda: cache.get(KEY),
            lambda: list(cache.read_each(KEY, strategy)),
            lambda: cache.compact(KEY, strategy),
        ):
            with pytest.raises(OutOfTime):
                read()
    assert strategy.checked == []
    assert caught == []
    # The compaction stopped before it wrote or deleted anything; without a deadline
    # every value reads again (the corrupt part with its warning).
    assert len(cache.parts(KEY)) == 5
    with pytest.warns(CorruptValueWarning, match="p9-corrupt"):
        assert cache.read_merged(KEY, SortedUnion()).value == ["base", "t0", "t1", "t2", "t3"]


def test_a_read_stops_at_the_first_value_after_the_deadline(tmp_path: Path) -> None:
    """The first value is checked until past the deadline: the values after it (the
    corrupt one included) are neither decoded nor reported."""
    cache = store_with_parts(tmp_path / "store")
    deadline = time.monotonic() + 0.2
    strategy = RecordingUnion(pause_until=deadline)
    with warnings.catch_warnings(record=True) as caught, decoding_until(deadline):
        warnings.simplefilter("always")
        with pytest.raises(OutOfTime):
            cache.read_merged(KEY, strategy)
    assert strategy.checked == [["base"]]
    assert caught == []


def test_the_deadline_holds_in_the_threads_of_a_read_chain(tmp_path: Path) -> None:
    """A read chain reads its stores side by side, in a pool: the deadline of the
    thread that reads holds in the pool's threads too."""
    near = store_with_parts(tmp_path / "near")
    far = store_with_parts(tmp_path / "far")
    chained = Cache(near.store, read_also=[far.store])
    strategy = RecordingUnion()
    with decoding_until(time.monotonic()), pytest.raises(OutOfTime):
        chained.read_merged_many({KEY: strategy})
    assert strategy.checked == []


def test_a_value_that_cannot_be_decoded_in_time_is_not_started(tmp_path: Path) -> None:
    """A flat object of 40 MiB (4-5 s to decode) with half a second left: refused at
    once, from a count of its characters, while one that fits decodes."""
    store = LocalStore(tmp_path / "store")
    store.put(f"{LASTFAILED_KEY}/@base", flat_object(40 * MIB))
    cache = Cache(store)
    started = time.monotonic()
    with decoding_until(started + 0.5), pytest.raises(OutOfTime, match="may take up to"):
        cache.get(LASTFAILED_KEY)
    # Reading 40 MiB and counting characters, on a loaded machine: not decoding them.
    assert time.monotonic() - started < 2
    # What the layout holds for a large suite (100,000 failed tests, 8 MB) is no bomb:
    # it decodes with a few seconds left (in about 0.2 s; estimated under 1 s).
    outcomes: codec.JSON = {
        f"tests/test_{i // 100}.py::test_{i}": {"at": 1.5, "failed": True} for i in range(100_000)
    }
    cache.set(LASTFAILED_KEY, outcomes)
    with decoding_until(time.monotonic() + 3):
        assert cache.get(LASTFAILED_KEY) == outcomes


def test_the_estimate_cannot_be_lowered_by_spelling() -> None:
    """Whitespace, or colons inside strings, do not hide what a value costs; a ``::``
    (every test id has one) is never taken for an object's entry."""
    compact = b'{"a":[1,2],"b":{"c":0}}'
    spaced = b'{ "a" :\n[ 1 , 2 ] ,\t"b" : { "c" : 0 } }'
    assert codec.worst_decode_seconds(spaced) > codec.worst_decode_seconds(compact)
    one_entry = codec.worst_decode_seconds(b'{"t":0}')
    for key in (b"t::", b"t:::", b":t::t:", b"::::"):
        assert codec.worst_decode_seconds(b'{"' + key + b'":0}') >= one_entry, key
    list_of_ids = codec.worst_decode_seconds(b'["a.py::t","a.py::u"]')
    assert list_of_ids == codec.worst_decode_seconds(b'["a.pyxxt","a.pyxxu"]')


def test_budget_calls_decode_until_the_budgets_deadline() -> None:
    """A call abandoned at the deadline stops decoding (in the threads it starts too),
    and a call that stopped for want of time fails as one that ran out of it."""
    value = encode(["a"])
    finished = threading.Event()
    seen: list[str] = []

    def late_read() -> None:
        time.sleep(0.5)  # past the budget: abandoned by then

        def decode() -> str:
            try:
                codec.decode(value)
            except OutOfTime:
                return "stopped"
            return "decoded"

        seen.extend(side_by_side([decode, decode]))
        finished.set()

    budget = Budget(0.2, setting="--cache-timeout")
    with pytest.raises(BudgetCallFailed, match=r"no answer within the time budget \(0\.2 s"):
        budget.run(late_read, "reading")
    assert finished.wait(10)
    assert seen == ["stopped", "stopped"]
    # Outside a budget's calls there is no deadline.
    assert codec.decode(value) == ["a"]

    def refused() -> None:
        with decoding_until(time.monotonic()):
            codec.decode(value)

    with pytest.raises(
        BudgetCallFailed, match=r"^reading: no answer within the time budget \(5 s\)$"
    ) as failure:
        Budget(5).run(refused, "reading")
    assert failure.value.__cause__ is None  # as a timeout: no error of the store to show


TESTS = """
def test_a():
    pass

def test_b():
    pass

def test_c():
    assert 0
"""


def test_planted_values_keep_a_pytest_run_within_its_budget(pytester: pytest.Pytester) -> None:
    """Flat objects of 40 MiB under four shared keys of a local store: before the fix,
    a run with ``--cache-timeout=1`` ended 15-25 s later than one without a cache (each
    decoded in turn, holding the GIL). Now it ends about when the budget does, as on
    any timeout: one warning, tests run as with an empty cache, their exit code kept."""
    pytester.makepyfile(test_three=TESTS)
    started = time.monotonic()
    baseline = pytester.runpytest_subprocess("-p", "no:randomly", timeout=120)
    base_time = time.monotonic() - started
    assert baseline.ret == pytest.ExitCode.TESTS_FAILED
    url = str(pytester.path / "store")
    store = shared(url).store
    planted = flat_object(40 * MIB)
    for key in (LASTFAILED_KEY, NODEIDS_KEY, DURATIONS_KEY, SKIP_PASSED_KEY):
        store.put(f"{key}/@base", planted)
    del planted
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", f"--cache-url={url}", "--cache-timeout=1", timeout=120
    )
    elapsed = time.monotonic() - started
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=1)
    output = result.stdout.str() + result.stderr.str()
    [warning] = re.findall(r"\w+Warning: cachekit: .*", output)
    assert warning.startswith("StoreUnavailableWarning: cachekit: could not read the shared")
    assert warning.endswith("no answer within the time budget (1 s, set by --cache-timeout)")
    assert elapsed - base_time < 1 + 3, (elapsed, base_time)
