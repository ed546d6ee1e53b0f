"""Duration-balanced sharding: split test ids into shards of about equal run time.

Longest processing time first (LPT): tests are placed longest first, each onto the
shard with the least total so far. The longest shard is at most ``4/3 - 1/(3n)`` times
the best possible, and on large suites within a hair of ``total / n``.

Every shard computes the same split independently: the order is fixed by (duration
descending, test id ascending) and load ties go to the lowest shard index, so each test
lands in exactly one shard without any coordination. Tests without a recorded duration
count at the average of the known ones (1 second when nothing is known).
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Mapping

#: Assumed duration of a test when no test has a recorded duration.
DEFAULT_DURATION = 1.0
_SHARD = re.compile(r"^\s*(\d+)\s*(?:/|of)\s*(\d+)\s*$")


def estimate(test_ids: Iterable[str], durations: Mapping[str, float]) -> dict[str, float]:
    """The duration to plan with for each test id: the recorded one, else the average of
    the recorded ones among ``test_ids`` (`DEFAULT_DURATION` if none). Negative, NaN or
    infinite records count as unknown."""
    ids = sorted(set(test_ids))
    known = {
        test_id: float(durations[test_id])
        for test_id in ids
        if test_id in durations and math.isfinite(durations[test_id]) and durations[test_id] >= 0
    }
    fallback = sum(known.values()) / len(known) if known else DEFAULT_DURATION
    return {test_id: known.get(test_id, fallback) for test_id in ids}


def split(test_ids: Iterable[str], durations: Mapping[str, float], count: int) -> list[list[str]]:
    """``count`` shards (lists of test ids, each sorted) covering every test id once."""
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, not {count}")
    planned = estimate(test_ids, durations)
    shards: list[list[str]] = [[] for _ in range(count)]
    loads = [(0.0, index) for index in range(count)]  # a heap: least loaded, lowest index
    for test_id in sorted(planned, key=lambda test_id: (-planned[test_id], test_id)):
        load, index = heapq.heappop(loads)
        shards[index].append(test_id)
        heapq.heappush(loads, (load + planned[test_id], index))
    return [sorted(shard) for shard in shards]


def select(
    test_ids: Iterable[str], durations: Mapping[str, float], index: int, count: int
) -> list[str]:
    """The test ids of shard ``index`` (1-based) of ``count``."""
    if not 1 <= index <= count:
        raise ValueError(f"shard {index} does not exist: shards are numbered 1 to {count}")
    return split(test_ids, durations, count)[index - 1]


def makespan(shards: Iterable[Iterable[str]], durations: Mapping[str, float]) -> float:
    """The planned time of the longest shard."""
    return max((sum(durations[test_id] for test_id in shard) for shard in shards), default=0.0)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` or ``"2of4"`` -> ``(2, 4)`` (1-based); raises ValueError otherwise."""
    match = _SHARD.match(text)
    if not match:
        raise ValueError(f"a shard is written INDEX/COUNT, such as 2/4, not {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count} does not exist: INDEX must be 1 to COUNT")
    return index, count
