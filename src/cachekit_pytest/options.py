"""cachekit's options, and the settings a run derives from them.

Every option has a command-line form, an environment variable and (except the shard of
a split run) an ini option; the command line wins over the environment, which wins over
the ini file. pytester's inner runs see only the ini files a test writes, hence the
environment variables.
"""

from __future__ import annotations

import argparse
import enum
import itertools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import attrs
import pytest

from cachekit.budget import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from cachekit_pytest.sync.keys import SharedKey

T = TypeVar("T")

DEFAULT_COMPACT_THRESHOLD = 10
#: ``--shard-order``'s choices, the default first.
SHARD_ORDERS = ("collected", "duration")


def register(parser: pytest.Parser) -> None:
    group = parser.getgroup("cachekit", "cachekit (share the cache between runs and CI shards)")
    group.addoption(
        "--cache-url",
        dest="cachekit_url",
        default=None,
        metavar="URL",
        help="Share the cache through this store: a path or a URL such as "
        "s3://bucket/prefix. An empty value keeps the cache local. "
        "Also CACHEKIT_URL and the cache_url ini option.",
    )
    group.addoption(
        "--cache-shard",
        dest="cachekit_shard",
        default=None,
        metavar="NAME",
        help="Name of this CI shard: labels the part this run writes. "
        "Also CACHEKIT_SHARD and the cache_shard ini option.",
    )
    group.addoption(
        "--cache-timeout",
        dest="cachekit_timeout",
        default=None,
        type=_command_line(_non_negative_float),
        metavar="SECONDS",
        help="Most time the shared cache may cost a whole run; past it the run goes on "
        f"as with an empty cache (default {DEFAULT_TIMEOUT:g}). "
        "Also CACHEKIT_TIMEOUT and the cache_timeout ini option.",
    )
    group.addoption(
        "--cache-stats",
        dest="cachekit_stats",
        default=None,
        choices=("yes", "no"),
        help="Record each test's outcome, duration and reruns in the store (default yes, "
        "with a backend). Also CACHEKIT_STATS and the cache_stats ini option.",
    )
    group.addoption(
        "--num-shards",
        dest="cachekit_num_shards",
        default=None,
        type=_command_line(_positive_int),
        metavar="N",
        help="Split the selected tests into N shards of about equal run time, by the "
        "durations earlier runs recorded (as pytest-shard and pytest-split do). "
        "Also CACHEKIT_NUM_SHARDS.",
    )
    group.addoption(
        "--shard-id",
        dest="cachekit_shard_id",
        default=None,
        type=_command_line(_whole_number),
        metavar="I",
        help="Run shard I of --num-shards, counted from 0 as in pytest-shard (0 to N-1); "
        "cachekit shows it as shard I+1/N. Also CACHEKIT_SHARD_ID.",
    )
    group.addoption(
        "--shard-order",
        dest="cachekit_shard_order",
        default=None,
        choices=SHARD_ORDERS,
        help="With --num-shards: 'collected' (default) keeps pytest's order; 'duration' "
        "runs the shard's tests longest first, each module or class with a recorded "
        "scoped fixture setup as one block (one xdist_group under -n N --dist loadgroup). "
        "Also CACHEKIT_SHARD_ORDER and the shard_order ini option.",
    )
    parser.addini("cache_url", "Store that shares the cache (a path or URL)", default="")
    parser.addini(
        "shard_order",
        "Order of a shard's tests: collected or duration (longest scoped block first)",
        default="collected",
    )
    parser.addini("cache_stats", "Record test statistics in the store (yes or no)", default="yes")
    parser.addini("cache_shard", "Name of this CI shard", default="")
    parser.addini(
        "cache_timeout",
        "Most seconds the shared cache may cost a whole run",
        default=str(DEFAULT_TIMEOUT),
    )
    parser.addini(
        "cache_shared_keys",
        "Cache keys shared besides cache/lastfailed and cache/nodeids, one a line, as "
        "'KEY' or 'KEY = latest|union|mapping'",
        type="linelist",
        default=[],
    )
    parser.addini(
        "cache_compact_threshold",
        "Fold a shared key's parts into one object once it has this many",
        default=str(DEFAULT_COMPACT_THRESHOLD),
    )


@attrs.frozen
class Settings:
    #: The store URL, or "" when the cache stays local (pytest's own behaviour).
    url: str
    shard: str
    timeout: float
    shared_keys: tuple[SharedKey, ...]
    compact_threshold: int
    #: Whether runs record test statistics (`cachekit_pytest.recording`).
    stats: bool = True
    #: Duration-balanced sharding: run shard ``shard_id`` (0-based) of ``num_shards``.
    shard_id: int = 0
    num_shards: int = 0
    #: ``--shard-order``: "collected" or "duration" (`cachekit_pytest.split`).
    shard_order: str = "collected"

    @property
    def remote(self) -> bool:
        return bool(self.url)

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        _refuse_separate_url(config)
        url = _choose(config.getoption("cachekit_url"), "CACHEKIT_URL", config.getini("cache_url"))
        shard = _choose(
            config.getoption("cachekit_shard"), "CACHEKIT_SHARD", config.getini("cache_shard")
        )
        timeout_option: float | None = config.getoption("cachekit_timeout")
        if timeout_option is not None:
            timeout = timeout_option
        else:
            text = os.environ.get("CACHEKIT_TIMEOUT") or config.getini("cache_timeout")
            timeout = _parse(text, _non_negative_float, "cache_timeout / CACHEKIT_TIMEOUT")
        threshold = _parse(
            config.getini("cache_compact_threshold"), _positive_int, "cache_compact_threshold"
        )
        stats = _choose(
            config.getoption("cachekit_stats"), "CACHEKIT_STATS", config.getini("cache_stats")
        )
        shard_id, num_shards = _sharding(config)
        if num_shards and not shard:
            shard = f"{shard_id + 1}/{num_shards}"  # names this run's part, as CI would
        return cls(
            shard_id=shard_id,
            num_shards=num_shards,
            stats=_parse(stats, _yes_or_no, "cache_stats / CACHEKIT_STATS"),
            url=url.strip(),
            shard=shard.strip(),
            timeout=timeout,
            shared_keys=_shared_keys(config.getini("cache_shared_keys")),
            compact_threshold=threshold,
            shard_order=_shard_order(config),
        )


def _refuse_separate_url(config: pytest.Config) -> None:
    """``--cache-url PATH`` (no ``=``): pytest finds its root directory before plugins add
    their options, taking PATH for a test path, and the run would store test ids under
    the wrong prefix for good. A usage error, before anything is written."""
    args = [str(arg) for arg in config.invocation_params.args]
    for option, value in itertools.pairwise(args):
        if option == "--cache-url" and value == config.getoption("cachekit_url"):
            raise pytest.UsageError(
                f"cachekit: write --cache-url={value} (with '='): given as two arguments, "
                f"pytest also takes {value!r} for a test path, which changes its root "
                "directory and the test ids this run would store"
            )


def _choose(option: str | None, variable: str, ini: str) -> str:
    """Option > environment variable > ini; an explicit empty option means 'none'."""
    if option is not None:
        return option
    from_env = os.environ.get(variable)
    if from_env:
        return from_env
    return str(ini or "")


def _command_line(convert: Callable[[str], T]) -> Callable[[str], T]:
    """``convert`` for argparse: its `ValueError` becomes the option's error message
    (argparse would otherwise say "invalid _positive_int value")."""

    def converted(text: str) -> T:
        try:
            return convert(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return converted


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _sharding(config: pytest.Config) -> tuple[int, int]:
    """``(shard id, number of shards)``; ``(0, 0)`` when the run is not split. A shard
    belongs to one run, so these have no ini option."""
    count_text = _choose_optional(config.getoption("cachekit_num_shards"), "CACHEKIT_NUM_SHARDS")
    index_text = _choose_optional(config.getoption("cachekit_shard_id"), "CACHEKIT_SHARD_ID")
    if count_text is None:
        if index_text is not None:
            raise pytest.UsageError("cachekit: --shard-id needs --num-shards")
        return 0, 0
    count = _parse(count_text, _positive_int, "--num-shards / CACHEKIT_NUM_SHARDS")
    index = _parse(index_text or "0", _whole_number, "--shard-id / CACHEKIT_SHARD_ID")
    if index_text is None and count > 1:
        raise pytest.UsageError("cachekit: --num-shards needs --shard-id (0 to N-1)")
    if not 0 <= index < count:
        raise pytest.UsageError(
            f"cachekit: --shard-id {index} does not exist: shards are 0 to {count - 1}"
        )
    return index, count


def _shard_order(config: pytest.Config) -> str:
    order = _choose(
        config.getoption("cachekit_shard_order"),
        "CACHEKIT_SHARD_ORDER",
        config.getini("shard_order"),
    )
    order = order.strip().lower() or SHARD_ORDERS[0]
    if order not in SHARD_ORDERS:
        raise pytest.UsageError(
            f"cachekit: shard_order / CACHEKIT_SHARD_ORDER is {order!r}: expected "
            + " or ".join(SHARD_ORDERS)
        )
    return order


def _choose_optional(option: object, variable: str) -> str | None:
    if option is not None:
        return str(option)
    return os.environ.get(variable) or None


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise ValueError(f"expected a whole number >= 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def _yes_or_no(text: str) -> bool:
    answer = text.strip().lower()
    if answer in ("yes", "true", "1", "on"):
        return True
    if answer in ("no", "false", "0", "off"):
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


def _parse(text: str, convert: Callable[[str], T], what: str) -> T:
    try:
        return convert(text)
    except ValueError as error:
        raise pytest.UsageError(f"cachekit: invalid {what}: {error}") from None


def _shared_keys(lines: list[str]) -> tuple[SharedKey, ...]:
    if not lines:
        return ()
    # Only here: a run without a store never loads the shared keys' modules.
    from cachekit.errors import InvalidKey  # noqa: PLC0415
    from cachekit.stores.keys import validate_key  # noqa: PLC0415
    from cachekit_pytest.sync.keys import (  # noqa: PLC0415
        BUILTIN_SHARED_KEYS,
        DEFAULT_KEY_KIND,
        EXTRA_KEY_KINDS,
        SharedKey,
    )

    found: dict[str, SharedKey] = {}
    for line in lines:
        key, equals, strategy = (part.strip() for part in line.partition("="))
        strategy = strategy if equals else DEFAULT_KEY_KIND
        if strategy not in EXTRA_KEY_KINDS:
            raise pytest.UsageError(
                f"cachekit: cache_shared_keys: unknown strategy {strategy!r} for {key!r} "
                f"(choose from {', '.join(EXTRA_KEY_KINDS)})"
            )
        try:
            validate_key(key)
            if any(segment.startswith("@") for segment in key.split("/")):
                raise InvalidKey("segments must not start with '@'")
        except InvalidKey as error:
            raise pytest.UsageError(f"cachekit: cache_shared_keys: {key!r}: {error}") from None
        if key in BUILTIN_SHARED_KEYS:
            continue  # always shared, with their own strategies
        if key == "cache/stepwise":
            raise pytest.UsageError("cachekit: cache/stepwise is per machine, never shared")
        found.setdefault(key, SharedKey(key, strategy))
    return tuple(found.values())


# -- --skip-passed (the work is in `cachekit_pytest.skip.run`, imported only when it is on)

ENV_SWITCH = "CACHEKIT_SKIP_PASSED"
ENV_SALT = "CACHEKIT_SKIP_PASSED_SALT"


class Mode(enum.Enum):
    OFF = "off"
    ON = "on"
    VERIFY = "verify"


_MODE_WORDS = {
    "1": Mode.ON,
    "true": Mode.ON,
    "yes": Mode.ON,
    "on": Mode.ON,
    "0": Mode.OFF,
    "false": Mode.OFF,
    "no": Mode.OFF,
    "off": Mode.OFF,
    "verify": Mode.VERIFY,
}


def _mode(text: str, origin: str) -> Mode:
    mode = _MODE_WORDS.get(text.strip().lower())
    if mode is None:
        words = ", ".join(sorted(_MODE_WORDS))
        raise pytest.UsageError(f"cachekit: {origin}: expected one of {words}, got {text!r}")
    return mode


@attrs.frozen
class SkipSettings:
    """What ``--skip-passed`` is asked to do: command line, then environment, then ini."""

    mode: Mode
    env_vars: tuple[str, ...]
    data_globs: tuple[str, ...]
    lock_file: Path | None
    salt: str

    @classmethod
    def from_config(cls, config: pytest.Config) -> SkipSettings:
        if config.getoption("cachekit_skip_passed_verify"):
            mode = Mode.VERIFY
        elif config.getoption("cachekit_skip_passed") is not None:
            mode = Mode(config.getoption("cachekit_skip_passed"))
        elif os.environ.get(ENV_SWITCH, "").strip():
            mode = _mode(os.environ[ENV_SWITCH], ENV_SWITCH)
        else:
            mode = _mode(str(config.getini("skip_passed") or "off"), "skip_passed")
        lock_file = str(config.getini("skip_passed_lock_file") or "").strip()
        data_globs = _names(config.getini("skip_passed_data"))
        for pattern in data_globs:
            if Path(pattern).is_absolute():
                raise pytest.UsageError(
                    f"cachekit: skip_passed_data: {pattern!r} must be relative to the root "
                    "directory"
                )
        salt = os.environ.get(ENV_SALT) or str(config.getini("skip_passed_salt") or "")
        return cls(
            mode=mode,
            env_vars=_names(config.getini("skip_passed_env")),
            data_globs=data_globs,
            lock_file=Path(lock_file) if lock_file else None,
            salt=salt,
        )


def _names(lines: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(line.strip() for line in lines if line.strip()))


def register_skip_passed(parser: pytest.Parser) -> None:
    group = parser.getgroup("cachekit")
    group.addoption(
        "--skip-passed",
        dest="cachekit_skip_passed",
        action="store_const",
        const=Mode.ON.value,
        default=None,
        help="Skip tests that passed before on exactly the same code, environment and "
        "data (records signed with CACHEKIT_SIGNING_KEY). "
        "Also CACHEKIT_SKIP_PASSED=1 and the skip_passed ini option.",
    )
    group.addoption(
        "--no-skip-passed",
        dest="cachekit_skip_passed",
        action="store_const",
        const=Mode.OFF.value,
        help="Run every test even if CACHEKIT_SKIP_PASSED or skip_passed say otherwise.",
    )
    group.addoption(
        "--skip-passed-explain",
        dest="cachekit_skip_passed_explain",
        action="store_true",
        default=False,
        help="Say why each test ran under --skip-passed (also with -v), and count the top reasons.",
    )
    group.addoption(
        "--skip-passed-verify",
        dest="cachekit_skip_passed_verify",
        action="store_true",
        default=False,
        help="Run every test and report each one --skip-passed would have skipped that "
        "failed (false skips). Also CACHEKIT_SKIP_PASSED=verify.",
    )
    parser.addini(
        "skip_passed", "Skip tests that passed on the same code: off, on or verify", default="off"
    )
    parser.addini(
        "skip_passed_env",
        "Environment variables whose values enter --skip-passed's keys, one a line",
        type="linelist",
        default=[],
    )
    parser.addini(
        "skip_passed_data",
        "Globs (relative to the root directory) of data files whose contents enter "
        "--skip-passed's keys, one a line",
        type="linelist",
        default=[],
    )
    parser.addini(
        "skip_passed_lock_file",
        "A lock file (relative to the root directory) whose bytes stand for the installed "
        "distributions in --skip-passed's keys",
        default="",
    )
    parser.addini(
        "skip_passed_salt",
        "Salt of --skip-passed's keys and hashes; change it to start afresh. "
        f"{ENV_SALT} wins over it",
        default="",
    )


# -- --quarantine-flaky and --rerun-flaky (the work is in `cachekit_pytest.quarantine` and
# `cachekit_pytest.rerun`, imported only when they are on)

ENV_QUARANTINE = "CACHEKIT_QUARANTINE_FLAKY"
ENV_RERUN = "CACHEKIT_RERUN_FLAKY"


def register_quarantine(parser: pytest.Parser) -> None:
    group = parser.getgroup("cachekit")
    group.addoption(
        "--quarantine-flaky",
        dest="cachekit_quarantine_flaky",
        action="store_true",
        default=None,
        help="Failures of tests that the signed history knows to be flaky are listed "
        "apart and do not fail the run (needs --cache-url and CACHEKIT_SIGNING_KEY). "
        f"Also {ENV_QUARANTINE} and the quarantine_flaky ini option.",
    )
    parser.addini(
        "quarantine_flaky",
        "Failures of known flaky tests do not fail the run (yes or no)",
        default="no",
    )


def quarantine_wanted(config: pytest.Config) -> bool:
    if config.getoption("cachekit_quarantine_flaky"):
        return True
    text = os.environ.get(ENV_QUARANTINE) or str(config.getini("quarantine_flaky") or "no")
    return _parse(text, _yes_or_no, f"quarantine_flaky / {ENV_QUARANTINE}")


def register_rerun(parser: pytest.Parser) -> None:
    group = parser.getgroup("cachekit")
    group.addoption(
        "--rerun-flaky",
        dest="cachekit_rerun_flaky",
        type=_command_line(_non_negative_int),
        metavar="N",
        default=None,
        help="Rerun a failure of a test that the signed history knows to be flaky, up to N "
        "times (needs --cache-url and CACHEKIT_SIGNING_KEY). "
        f"Also {ENV_RERUN} and the rerun_flaky ini option.",
    )
    parser.addini("rerun_flaky", "Reruns of a known flaky test's failure (a number)", default="0")


def reruns_wanted(config: pytest.Config) -> int:
    given = config.getoption("cachekit_rerun_flaky")
    if given is not None:
        return int(given)
    text = os.environ.get(ENV_RERUN) or str(config.getini("rerun_flaky") or "0")
    return _parse(text.strip(), _non_negative_int, f"rerun_flaky / {ENV_RERUN}")
