"""A pytest plugin that times each hook of a run, for `scale_phases`: where a run with the
plugin spends what a run with pytest's built-in cache does not.

Why hooks: every cost the plugin adds to a run is paid inside one (its start-up read in
``pytest_configure``, the write in ``pytest_sessionfinish``, its report hooks), and
pluggy times a hook call from outside without touching the plugin's code
(``add_hookcall_monitoring``). A hook's time excludes the hooks called inside it. The
cyclic garbage collector's time is kept apart (``gc.callbacks``), as is the process's
from this module's import to its exit.

Load it with ``-p benchmarks.hook_timer`` (the project root on ``PYTHONPATH``); it writes
``{"hooks": {name: [seconds, calls]}, "gc": [seconds, collections], "process": seconds}``
as JSON to the file ``BENCH_HOOK_TIMES`` names, at exit.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import time
from typing import Any

import pytest

OUTPUT_VARIABLE = "BENCH_HOOK_TIMES"

_started = time.perf_counter()
#: hook name -> [seconds outside the hooks it called, calls]
_hooks: dict[str, list[float]] = {}
#: One entry per hook call under way: [name, start, seconds in the hooks it called].
_stack: list[list[Any]] = []
_collector = {"seconds": 0.0, "collections": 0, "start": 0.0}


def _before(name: str, implementations: object, arguments: object) -> None:
    _stack.append([name, time.perf_counter(), 0.0])


def _after(outcome: object, name: str, implementations: object, arguments: object) -> None:
    _, start, inner = _stack.pop()
    seconds = time.perf_counter() - start
    spent = _hooks.setdefault(name, [0.0, 0])
    spent[0] += seconds - inner
    spent[1] += 1
    if _stack:
        _stack[-1][2] += seconds


def _collecting(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _collector["start"] = time.perf_counter()
    else:
        _collector["seconds"] += time.perf_counter() - _collector["start"]
        _collector["collections"] += 1


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """As early as a plugin given with ``-p`` can reach the plugin manager."""
    early_config.pluginmanager.add_hookcall_monitoring(_before, _after)


def _write() -> None:
    path = os.environ.get(OUTPUT_VARIABLE)
    if path:
        times = {
            "hooks": _hooks,
            "gc": [_collector["seconds"], _collector["collections"]],
            "process": time.perf_counter() - _started,
        }
        with open(path, "w", encoding="utf-8") as file:
            json.dump(times, file)


gc.callbacks.append(_collecting)
atexit.register(_write)
