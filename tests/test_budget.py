"""`cachekit.budget.Budget`: every store call of a run, within one budget of seconds."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from cachekit.budget import Budget, BudgetCallFailed
from cachekit.errors import CorruptValueWarning


def test_calls_run_side_by_side_and_return_in_order() -> None:
    barrier = threading.Barrier(3, timeout=5)  # passes only if all three wait at once

    def call(value: int) -> int:
        barrier.wait()
        return value

    budget = Budget(10)
    assert budget.run_all([lambda: call(1), lambda: call(2), lambda: call(3)], "reading") == [
        1,
        2,
        3,
    ]
    assert 0 < budget.remaining <= 10


def test_a_hung_call_costs_at_most_the_budget_and_spends_it() -> None:
    release = threading.Event()
    budget = Budget(0.3)
    started = time.monotonic()
    with pytest.raises(
        BudgetCallFailed, match=r"^reading: no answer within the time budget \(0\.3 s\)$"
    ):
        budget.run(release.wait, "reading")
    assert time.monotonic() - started < 2
    assert budget.remaining == 0
    with pytest.raises(BudgetCallFailed, match=r"^writing: no time left of the budget \(0\.3 s\)$"):
        budget.run(lambda: None, "writing")
    release.set()


def test_a_failing_call_names_the_call_and_the_error() -> None:
    def refuse() -> None:
        raise ConnectionRefusedError("refused")

    budget = Budget(5)
    with pytest.raises(BudgetCallFailed, match=r"^writing: ConnectionRefusedError: refused$"):
        budget.run_all([lambda: 1, refuse], "writing")
    assert budget.remaining == 0


def test_warnings_of_the_calls_are_kept_and_summarised_once() -> None:
    def corrupt(name: str) -> None:
        warnings.warn(
            CorruptValueWarning(f"cachekit: {name} is not a cachekit value"), stacklevel=1
        )

    budget = Budget(5)
    assert budget.corrupt_summary() is None
    budget.run_all([lambda n=n: corrupt(f"k{n}") for n in range(5)], "reading")
    summary = budget.corrupt_summary()
    assert summary is not None
    assert str(summary).startswith("cachekit: ignored 5 unreadable value(s): k")
    assert str(summary).endswith("; and 2 more")
