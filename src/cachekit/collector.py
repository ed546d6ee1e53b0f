"""The cyclic garbage collector held off while cachekit does bounded work of its own.

What cachekit allocates in bulk (decoded values, the parts it encodes, syntax trees,
the modules a store needs) holds no reference cycles: reference counting frees it. Left
on, the collector would still count those allocations and start collections, the full
ones traversing the whole heap of the process (a test run's: pytest's and the suite's,
large for a big suite) to find nothing of ours.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def held_off() -> Iterator[None]:
    """The cyclic garbage collector off meanwhile, on again after if it was on; a
    context manager, or a decorator (a call of the function holds it off)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
