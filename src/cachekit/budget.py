"""A time budget for the store calls of one run of a tool (a pytest or unittest run).

A cache must never cost a run more than it saves: every call to the store is spent from
one budget of seconds, and a call that fails or runs past it turns into one
`BudgetCallFailed`, after which the caller leaves the store alone and runs as with an
empty cache.

A worker thread that runs past the budget is abandoned, but it cannot be stopped, and a
thread inside ``json.loads`` holds the GIL: the calls run under the budget's deadline
(`codec.decoding_until`), so they stop decoding values once it has passed, and never
start on a value that cannot be decoded before it.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import cachekit.values.codec as codec
from cachekit.errors import CacheKitWarning, CorruptValueWarning

T = TypeVar("T")

#: Seconds every store call of a run may take together, unless the tool says otherwise.
DEFAULT_TIMEOUT = 5.0


class BudgetCallFailed(Exception):
    """A store call failed or ran past the budget; the message says which and why."""


class Budget:
    """Seconds the store may still cost this run, spent by `run` and `run_all`."""

    def __init__(self, seconds: float, *, setting: str = "") -> None:
        self.remaining = seconds
        #: The budget as its messages name it: its seconds, and the setting that sets them.
        self.described = f"{seconds:g} s" + (f", set by {setting}" if setting else "")
        #: cachekit warnings (corrupt values) raised by the calls, in order.
        self.warnings: list[CacheKitWarning] = []

    def run(self, function: Callable[[], T], what: str) -> T:
        """``function()`` in a worker thread; `BudgetCallFailed` if it fails or runs out
        of time. ``what`` names the call in the message."""
        return self.run_all([function], what)[0]

    def run_all(self, calls: Sequence[Callable[[], T]], what: str) -> list[T]:
        """Each call's result, the calls run side by side; `BudgetCallFailed` if one
        raises or they run out of time.

        Each runs in a daemon thread of its own, abandoned past the deadline: a hung
        server costs no more than the budget, and nothing waits for it at exit (as the
        workers of a `concurrent.futures` pool would be waited for). Values are decoded
        only until the deadline (`codec.decoding_until`): a read that could not finish
        in time ends as one that ran past it.
        """
        if self.remaining <= 0:
            raise BudgetCallFailed(f"{what}: no time left of the budget ({self.described})")
        started = time.monotonic()
        deadline = started + self.remaining
        threads, outcomes = _daemon_threads(calls, deadline)
        # Warnings from the workers go through the process-wide filters: catch them here,
        # in the main thread, while it waits, so no worker touches that state.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CacheKitWarning)
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    # An unlimited budget (math.inf) waits as long as the calls take.
                    left = deadline - time.monotonic()
                    thread.join(None if math.isinf(left) else max(0.0, left))
            except KeyboardInterrupt:  # Ctrl-C: the calls are abandoned, and so is the store
                self.remaining = 0.0
                raise
        self.remaining = max(0.0, self.remaining - (time.monotonic() - started))
        self.warnings += [w.message for w in caught if isinstance(w.message, CacheKitWarning)]
        results: list[T] = []
        for outcome in outcomes:
            # A read that stopped for want of time (`codec.OutOfTime`) ran out of it too.
            stopped = bool(outcome) and _ran_out_of_time(outcome[0])
            if not outcome or stopped:
                self.remaining = 0.0
                raise BudgetCallFailed(
                    f"{what}: no answer within the time budget ({self.described})"
                )
            succeeded, value = outcome[0]
            if not succeeded:
                self.remaining = 0.0
                raise BudgetCallFailed(f"{what}: {type(value).__name__}: {value}") from value
            results.append(value)
        return results

    def corrupt_summary(self) -> CorruptValueWarning | None:
        """One warning for every corrupt or foreign value met, or None."""
        corrupt = [
            str(w).removeprefix("cachekit: ")
            for w in self.warnings
            if isinstance(w, CorruptValueWarning)
        ]
        if not corrupt:
            return None
        shown = "; ".join(corrupt[:3])
        if len(corrupt) > 3:
            shown += f"; and {len(corrupt) - 3} more"
        return CorruptValueWarning(f"cachekit: ignored {len(corrupt)} unreadable value(s): {shown}")


def side_by_side(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Each call's result, the calls run in daemon threads of their own and waited for;
    the first exception raised is raised again.

    For calls made inside a `Budget` call: when the budget abandons the outer call, these
    threads never hold the process at exit (the workers of a `concurrent.futures` pool
    would be waited for), and its deadline holds in them too.
    """
    threads, outcomes = _daemon_threads(calls, math.inf)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results: list[T] = []
    for (succeeded, value), *_ in outcomes:
        if not succeeded:
            raise value
        results.append(value)
    return results


def _daemon_threads(
    calls: Sequence[Callable[[], Any]], deadline: float
) -> tuple[list[threading.Thread], list[list[tuple[bool, Any]]]]:
    """A daemon thread per call, not started, and the list each puts its outcome in.

    Each runs in a copy of this thread's context (as an enclosing budget's deadline is
    kept), decoding values until ``deadline`` (`time.monotonic`) at the latest.
    """
    outcomes: list[list[tuple[bool, Any]]] = [[] for _ in calls]
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(_capture, call, outcome, deadline),
            daemon=True,
        )
        for call, outcome in zip(calls, outcomes, strict=True)
    ]
    return threads, outcomes


def _ran_out_of_time(outcome: tuple[bool, Any]) -> bool:
    succeeded, value = outcome
    return not succeeded and isinstance(value, codec.OutOfTime)


def _capture(call: Callable[[], Any], outcome: list[tuple[bool, Any]], deadline: float) -> None:
    try:
        with codec.decoding_until(deadline):
            outcome.append((True, call()))
    except BaseException as error:  # reported by `Budget.run_all`
        outcome.append((False, error))
