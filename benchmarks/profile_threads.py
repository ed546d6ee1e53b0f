"""Run the ``cachekit`` command under cProfile in every thread, one profile for them all.

Why: ``python -m cProfile`` profiles the main thread only, and a CLI command does its
store work in other threads (the time budget's, the copies', fsspec's event loop), so
its profile shows a thread waiting. This starts a profiler in each thread as it starts
(`threading.setprofile`) and adds them up. Times are wall times per thread: a call that
waits for the GIL counts the wait.

``python benchmarks/profile_threads.py OUT.prof merge --url=... --from=... --into=...``
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
from typing import Any


def main(argv: list[str]) -> int:
    out, command = argv[0], argv[1:]
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(*_: Any) -> None:  # the first profile event of a new thread
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook for the thread

    from cachekit.cli import main as cachekit_main  # noqa: PLC0415 (profiled from here)

    threading.setprofile(start)
    main_profile = cProfile.Profile()
    main_profile.enable()
    try:
        code = cachekit_main(command)
    finally:
        main_profile.disable()
        threading.setprofile(None)  # None removes the hook
        stats = pstats.Stats(main_profile)
        with lock:
            for profile in profiles:
                profile.disable()
                stats.add(profile)
        stats.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
