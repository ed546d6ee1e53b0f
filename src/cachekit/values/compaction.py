"""When a writer of parts also compacts a key: once its part makes the threshold, and,
when compacting would mean reading a value it has not read, as one of about
``threshold`` of the writers that list as many parts.

A run that adds a part compacts the key once the parts it listed, plus its own, reach the
threshold: on one machine, every ``threshold``-th run. A run that read the key's value at
its start has fetched those parts already, so compacting costs it little more, and it
always compacts. A run that only counted the key's parts (`Cache.read_merged_many`'s
``count_only``: ``cache/nodeids``, 4 MB of test ids at 500,000 tests, read only under
``--nf``) would read the whole value to compact it; and the shards of a CI run start
together and list the same parts, so when a namespace holds the parts of an earlier CI
run of 200 shards, every one of them would. Past the threshold such a run compacts with
probability ``threshold / parts``: about ``threshold`` compactions however many shards,
and a run that lists exactly the threshold always compacts.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: The writers' lots, apart from the ``random`` module's shared state (which a test
#: process may have seeded: the pytest plugin draws at the end of every run).
_LOTS = random.Random()


def compaction_due(
    parts: int, threshold: int, *, read: bool, draw: Callable[[], float] = _LOTS.random
) -> bool:
    """Whether a writer whose part makes ``parts`` parts of a key compacts it; ``read``:
    whether it read the key's value (and so its parts) already.

    ``draw``: a number in [0, 1), uniformly (the writer's lot).
    """
    if parts < threshold:
        return False
    return read or draw() * parts < threshold
