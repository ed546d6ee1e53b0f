"""The cyclic garbage collector held off while cachekit does bounded work of its own."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def held_off() -> Iterator[None]:
    """The cyclic garbage collector off while a file is parsed and indexed (see
    `FileAnalyses._analyse`), on again after if it was on."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
