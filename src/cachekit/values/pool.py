"""Store calls side by side in a thread pool, within the caller's time budget."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def side_by_side(function: Callable[[T], R], items: Sequence[T], name: str) -> list[R]:
    """``function(item)`` for each item, concurrently (store calls), in order.

    Each runs in a copy of the caller's context, so the deadline of a time budget
    (`codec.decoding_until`) holds in the pool's threads too: past it they stop
    decoding, and the pool does not hold the process at exit for long.
    `concurrent.futures` is imported here, not at the top: importing it creates a
    logger, and pytest's log capture walks every logger on each phase of each test, so a
    logger the plugin brings costs every pytest run.
    """
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 (see above)

    contexts = [contextvars.copy_context() for _ in items]
    with ThreadPoolExecutor(len(items), thread_name_prefix=name) as pool:
        return list(pool.map(lambda context, item: context.run(function, item), contexts, items))
