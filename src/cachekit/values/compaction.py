"""When a writer of parts also compacts: at the threshold, and past it, as one of about
``threshold`` of the writers that list as many parts.

A run that adds a part compacts the key once the parts it listed, plus its own, reach the
threshold: on one machine, every ``threshold``-th run. The shards of a CI run, though,
start together and list the same parts; when a namespace holds the parts of an earlier CI
run of 200 shards, every one of them would compact, each reading the whole value (4 MB of
test ids at 500,000 tests) for one compare-and-swap to win. Past the threshold a writer
compacts with probability ``threshold / parts``: about ``threshold`` compactions however
many shards, and a writer that lists exactly the threshold always compacts.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def compaction_due(
    parts: int, threshold: int, *, draw: Callable[[], float] = random.random
) -> bool:
    """Whether a writer whose part makes ``parts`` parts of a key compacts it.

    ``draw``: a number in [0, 1), uniformly (the writer's lot).
    """
    if parts < threshold:
        return False
    return draw() * parts < threshold
