"""cachekit's own bulk work holds the cyclic garbage collector off (`cachekit.collector`):
in a test run, a collection it started would traverse the suite's whole heap to free
nothing of ours."""

from __future__ import annotations

import gc

import pytest

from cachekit.collector import held_off


def test_held_off_restores_the_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    with held_off():
        assert not gc.isenabled()
        with held_off():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block found it off: it stays off
    assert gc.isenabled()
    gc.disable()
    try:
        with held_off():
            pass
        assert not gc.isenabled()  # someone else's choice is kept
    finally:
        gc.enable()


def test_held_off_as_a_decorator_and_through_an_exception() -> None:
    @held_off()
    def fails() -> None:
        assert not gc.isenabled()
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fails()
    assert gc.isenabled()


#: A conftest that makes the collector run after every 20 allocations, and counts the
#: collections that start while the main thread loads cachekit's modules, or is in the
#: shared cache's start-up read or its end-of-run write. A store on this machine
#: writes from a worker thread: the main thread's stack tells whose work it is.
COUNTING_CONFTEST = """
import gc, os, sys, threading
import cachekit, cachekit_pytest

MAIN = threading.main_thread().ident
HELD = {"begin", "finish_read", "_sync_out"}
OURS = (cachekit.__path__[0] + os.sep, cachekit_pytest.__path__[0] + os.sep)
counts = {"ours": 0, "all": 0}

def _ours():
    frame = sys._current_frames().get(MAIN)
    while frame is not None:
        code = frame.f_code
        if code.co_filename.endswith("shared.py") and code.co_name in HELD:
            return True
        if code.co_name == "<module>" and code.co_filename.startswith(OURS):
            return True  # the store's modules, loaded by the first store run
        frame = frame.f_back
    return False

def count(phase, info):
    if phase == "start":
        counts["all"] += 1
        counts["ours"] += _ours()

gc.set_threshold(20, 2, 2)
gc.callbacks.append(count)

def pytest_unconfigure(config):
    gc.callbacks.remove(count)
    print("COLLECTIONS", counts["ours"], counts["all"])
"""


def test_the_shared_cache_read_and_write_start_no_collection(
    pytester: pytest.Pytester, remote_url: str
) -> None:
    """A store holding a few thousand tests' state is read and written twice (the second
    run reads what the first wrote): with a collector this eager, any of that work left
    to it would start collections."""
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(3000))\n"
        "def test_many(n):\n"
        "    assert n % 1000 != 7\n"
    )
    for _ in range(2):
        result = pytester.runpytest_subprocess(
            f"--cache-url={remote_url}", "--lf", "-p", "no:randomly", "-q"
        )
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        line = next(line for line in result.outlines if line.startswith("COLLECTIONS "))
        ours, every = map(int, line.split()[1:])
        assert every > 100  # the collector was busy around our work
        assert ours == 0
