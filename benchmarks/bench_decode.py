"""How long ``json.loads`` takes against `cachekit.values.codec.worst_decode_seconds`.

Why: a thread inside ``json.loads`` holds the GIL, so a time budget cannot stop an
in-process read that is decoding; instead `codec.decode` does not start a value whose
worst-case decode time is beyond what is left of the budget (plus `codec.OVERRUN`). The
estimate counts colons, commas, ``[`` and ``{``, digits and bytes, at costs measured on
the slowest shapes. This benchmark is that measurement: each shape, hostile ones first (what a
writer of the store could plant: flat objects, nested lists, numbers slow to parse) and
then the values cachekit writes for 500,000 tests (by its own writers), hostile ones
built as JSON text of about ``--size`` MiB (default 100: near the 128 MiB cap, where a
value costs most per character), each decoded ``--repeats`` times (the median) with the
garbage collector running, as in a real run: its passes over the objects being built
make a large decode up to 4 times slower than with it paused.

Targets: the estimate is at least the measured time for every shape (an upper bound: a
value it lets start cannot overrun by more than `codec.OVERRUN` beyond the deadline);
the estimate for the values a run's start-up read decodes in a namespace of 500,000
tests (the ``stats/durations`` and ``cache/nodeids`` bases, 5,000 failing tests in
``cache/lastfailed``) is within the default time budget, so that read is never refused
for want of time (the estimate counts characters: it does not depend on the machine).

Run alone: ``python benchmarks/bench_decode.py`` (``--size MIB``, ``--repeats N``,
``--write`` also saves ``results/decode.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Report, Section, Target, busy_warning, run_alone
from cachekit.session import DEFAULT_TIMEOUT
from cachekit.values.codec import worst_decode_seconds
from cachekit.values.digests import NODEIDS
from cachekit.values.durations import durations_part
from cachekit.values.merge import stored_form

MIB = 1024 * 1024
TESTS = 500_000
SEED = 20261206
#: The values of a start-up read (`own_values`), the rest only shown.
START_UP = ("cache/lastfailed base, 1% failing", "stats/durations base", "cache/nodeids base")


def _repeat(item: str, size: int, opening: str = "[", closing: str = "]") -> str:
    """``item`` repeated, comma-separated, in one container, about ``size`` bytes."""
    return opening + ",".join([item] * max(1, size // (len(item) + 1))) + closing


def _flat_object(size: int) -> str:
    return "{" + ",".join(f'"k{index}":0' for index in range(size // 11)) + "}"


def _nested(depth: int, size: int) -> str:
    return _repeat("[" * depth + "0" + "]" * depth, size)


def hostile_shapes(size: int) -> dict[str, Callable[[], str]]:
    """What a writer of the store could plant, slowest per character first."""
    return {
        "flat object": lambda: _flat_object(size),
        "object of empty objects": lambda: (
            "{" + ",".join(f'"k{index}":{{}}' for index in range(size // 12)) + "}"
        ),
        "list of empty lists": lambda: _repeat("[]", size),
        "lists nested 3 deep": lambda: _nested(3, size),
        "lists nested 100 deep": lambda: _nested(100, size),
        "list of empty objects": lambda: _repeat("{}", size),
        "list of small objects": lambda: _repeat('{"a":{"b":0}}', size),
        "list of zeros": lambda: _repeat("0", size),
        "list of floats": lambda: _repeat("1.5", size),
        "list of subnormal floats": lambda: _repeat("1e-320", size),
        "list of 4,000-digit integers": lambda: _repeat("9" * 4000, size),
        "list of escaped strings": lambda: _repeat('"\\u0000"', size),
        "one escaped string": lambda: '"' + "\\u00e9" * (size // 6) + '"',
    }


def own_values() -> dict[str, Callable[[], str]]:
    """What cachekit writes for a namespace of `TESTS` tests (DESIGN.md's scale): the
    largest value of each shared key, by cachekit's own writers."""
    ids = [f"tests/test_module_{i // 1000}.py::test_case[{i % 1000}]" for i in range(TESTS)]
    rng = random.Random(SEED)
    return {
        START_UP[0]: lambda: json.dumps(
            {nodeid: {"at": 1712345678.25, "failed": True} for nodeid in ids[::100]}
        ),
        START_UP[1]: lambda: json.dumps(
            durations_part(1712345678.25, {nodeid: rng.uniform(0.001, 3) for nodeid in ids})
        ),
        START_UP[2]: lambda: json.dumps(stored_form(NODEIDS, NODEIDS.check(list(ids)))),
        "cache/nodeids part, every test new": lambda: json.dumps(ids),
        "cache/lastfailed part, every test observed": lambda: json.dumps(
            {nodeid: {"at": 1712345678.25, "failed": rng.random() < 0.01} for nodeid in ids}
        ),
    }


def decode_seconds(text: str, repeats: int) -> float:
    """The median time of ``json.loads(text)``, the collector on (collected before)."""
    samples = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        value = json.loads(text)
        samples.append(time.perf_counter() - started)
        del value
    return statistics.median(samples)


def run(size: int, repeats: int) -> Report:
    report = Report("Decoding time against its worst-case estimate")
    columns = ["shape", "MiB", "measured", "estimated", "estimate / measured"]
    hostile = Section("Shapes a store writer could plant", columns)
    own = Section("Values cachekit writes", columns)
    lowest = float("inf")
    start_up = 0.0
    for section, shapes in ((hostile, hostile_shapes(size)), (own, own_values())):
        for name, build in shapes.items():
            text = build()
            measured = decode_seconds(text, repeats)
            estimated = worst_decode_seconds(text.encode())
            ratio = estimated / measured
            lowest = min(lowest, ratio)
            if name in START_UP:
                start_up += estimated
            section.rows.append(
                [
                    name,
                    f"{len(text) / MIB:.1f}",
                    f"{measured:.3f} s",
                    f"{estimated:.3f} s",
                    f"{ratio:.2f}",
                ]
            )
            section.data[name] = {
                "characters": len(text),
                "measured_s": measured,
                "estimated_s": estimated,
            }
            print(f"{name}: {measured:.3f} s, estimated {estimated:.3f} s", file=sys.stderr)
            del text
    hostile.notes.append(
        f"Each about {size // MIB} MiB of JSON text (--size), median of {repeats} decodes."
    )
    warning = busy_warning()
    if warning:
        hostile.notes.append(warning)
    report.sections += [hostile, own]
    report.targets += [
        Target("lowest estimate / measured, every shape", 1.0, ">=", "ratio", lowest),
        Target(
            "estimated decode of a 500,000-test start-up read",
            DEFAULT_TIMEOUT,
            "<=",
            "s",
            start_up,
        ),
    ]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100, help="MiB of JSON per shape")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="save results/decode.*")
    args = parser.parse_args()
    command = f"python benchmarks/bench_decode.py --size {args.size} --repeats {args.repeats}"
    report = run_alone(
        "decode", lambda: run(args.size * MIB, args.repeats), command, write=args.write
    )
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
