"""Last-failed-first for ``python -m unittest``, shared across CI shards and runs::

    python -m cachekit.unittest [--cache-url URL] [--cache-shard NAME] [--lf | --ff]
                                [any python -m unittest arguments]

runs what ``python -m unittest`` runs with the same arguments, with the same output and
exit code, and records what each test did in a store (by default the directory
``.cachekit/unittest``). ``--ff`` runs the tests that failed last time first, ``--lf``
only those. "Last time" is every shard and run of the CI namespace (`cachekit.ci.namespace`): each
run writes what it observed as its own immutable part of
`cachekit.ci.layout.UNITTEST_LASTFAILED_KEY`, and reads join the parts with
`cachekit.values.merge.LASTFAILED`, as the pytest plugin does for ``cache/lastfailed``: a test
fixed on one shard drops out everywhere; a failure stays until a later run passes it.

Ids are unittest's ``test.id()`` (``pkg.mod.Class.test_method``). What fails outside a test
is recorded under what holds it, so that ``--lf`` reruns that: a module that fails to
import under the module's name (``pkg.mod``), a failing ``setUpClass``/``tearDownClass``
under the class, ``setUpModule``/``tearDownModule`` under the module. A failing subTest
fails its test; skips and expected failures are not failures, unexpected successes are.

The store never changes a run's exit code: one that is down, slow or holds garbage costs
at most ``--cache-timeout`` seconds, prints one warning on stderr, and the run proceeds as
with an empty cache. Only a URL that cannot be opened at all (a typo, a missing extra) is
a usage error, as with the pytest plugin.

For your own runner: `prioritize_failures` orders or filters a suite, `RecordingResult`
collects a run's `Observations`, and `SharedFailures` reads and records them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import unittest
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import attrs

from cachekit.budget import DEFAULT_TIMEOUT
from cachekit.ci.layout import UNITTEST_LASTFAILED_KEY
from cachekit.ci.namespace import Namespace, detect_namespace
from cachekit.errors import InvalidURL
from cachekit.session import Session, print_warning
from cachekit.values.codec import JSON
from cachekit.values.merge import LASTFAILED, observe_outcomes, still_failing

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "Observations",
    "RecordingResult",
    "RecordingTextTestResult",
    "Selection",
    "SharedFailures",
    "id_of",
    "main",
    "prioritize_failures",
]

#: The store when neither ``--cache-url`` nor ``CACHEKIT_URL`` names one: a directory
#: below the working directory, as pytest keeps ``.pytest_cache``.
DEFAULT_URL = os.path.join(".cachekit", "unittest")
#: Parts are folded into one object once there are this many (as the pytest plugin does).
COMPACT_THRESHOLD = 10
URL_VARIABLE = "CACHEKIT_URL"
TIMEOUT_VARIABLE = "CACHEKIT_TIMEOUT"
PROGRAM = "cachekit.unittest"

#: unittest's stand-ins for what did not load (``_FailedTest``, ``ModuleSkipped``) live
#: here; their method name is the module, class or name that failed.
_LOADER_MODULE = "unittest.loader"
#: How unittest names a failing class or module fixture: ``setUpClass (pkg.mod.Class)``.
_FIXTURE_ERROR = re.compile(
    r"(?:setUpClass|tearDownClass|setUpModule|tearDownModule) \((?P<holder>[^()\s]+)\)"
)
_GITIGNORE = "# Created by cachekit automatically.\n*\n"


# -- test ids -------------------------------------------------------------------------------


def id_of(test: unittest.TestCase) -> str:
    """The id a test's outcome is recorded under: ``test.id()``, except for what unittest
    reports in a test's stead. A subTest is its test; a module that failed to import or
    load is the module (``pkg.mod``); a failing class or module fixture (unittest reports
    ``setUpClass (pkg.mod.Class)``) is the class or module."""
    parent = getattr(test, "test_case", None)
    if isinstance(parent, unittest.TestCase):  # a subTest
        return parent.id()
    if isinstance(test, unittest.TestCase) and _stands_in_for_a_module(test):
        return test._testMethodName
    identifier = test.id()
    fixture = _FIXTURE_ERROR.fullmatch(identifier)
    return fixture["holder"] if fixture else identifier


def _lineage(identifier: str) -> Iterator[str]:
    """``a.b.C.t``, ``a.b.C``, ``a.b``, ``a``: an id, then the classes, modules and
    packages holding it."""
    while identifier:
        yield identifier
        identifier = identifier.rpartition(".")[0]


def _stands_in_for_a_module(test: unittest.TestCase) -> bool:
    """Whether ``test`` is unittest's stand-in for a module that did not load."""
    return type(test).__module__ == _LOADER_MODULE


# -- observing a run -------------------------------------------------------------------------


@attrs.define
class Observations:
    """What one run saw, per id: whether it failed. A failure is final for the run (a test
    with one failing subTest failed, whatever the others did)."""

    outcomes: dict[str, bool] = attrs.field(factory=dict)

    def see(self, identifier: str, *, failed: bool) -> None:
        self.outcomes[identifier] = failed or self.outcomes.get(identifier, False)

    def started(self, identifier: str) -> None:
        """A test started: the modules and classes holding it loaded and set up fine (so
        a module that failed to import last time, or a class whose ``setUpClass`` failed,
        drops out), unless this run sees them fail (``tearDownClass``)."""
        for holder in list(_lineage(identifier))[1:]:
            self.outcomes.setdefault(holder, False)

    @property
    def failed(self) -> list[str]:
        return sorted(name for name, failed in self.outcomes.items() if failed)

    @property
    def passed(self) -> list[str]:
        """Ids seen passing, skipped or failing as expected: no longer failures."""
        return sorted(name for name, failed in self.outcomes.items() if not failed)

    def part(self, at: float, *, failing: Collection[str]) -> dict[str, JSON]:
        """This run's part of the shared failures (`cachekit.values.merge.observe_outcomes`):
        its failures, and its passes of tests in ``failing`` (what was failing when it
        started). A pass of any other test changes nothing, so it is not stored: the part
        grows with failures and fixes, not with the suite."""
        passed = [name for name in self.passed if name in failing]
        return observe_outcomes(failed=self.failed, passed=passed, at=at)


class RecordingResult(unittest.TestResult):
    """A `unittest.TestResult` that also keeps the run's `Observations`.

    A mixin: put it first among the bases of your result class, as in
    ``class MyResult(RecordingResult, unittest.TextTestResult)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observations = Observations()

    def startTest(self, test: unittest.TestCase) -> None:
        self.observations.started(id_of(test))
        super().startTest(test)

    def addSuccess(self, test: unittest.TestCase) -> None:
        self.observations.see(id_of(test), failed=False)
        super().addSuccess(test)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        self.observations.see(id_of(test), failed=False)
        super().addSkip(test, reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        self.observations.see(id_of(test), failed=False)
        super().addExpectedFailure(test, err)

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        self.observations.see(id_of(test), failed=True)
        super().addFailure(test, err)

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        self.observations.see(id_of(test), failed=True)
        super().addError(test, err)

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        self.observations.see(id_of(test), failed=True)
        super().addUnexpectedSuccess(test)

    def addSubTest(
        self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any | None
    ) -> None:
        if err is not None:
            self.observations.see(id_of(test), failed=True)
        super().addSubTest(test, subtest, err)


class RecordingTextTestResult(RecordingResult, unittest.TextTestResult):
    """`unittest.TextTestResult` (what ``python -m unittest`` prints) that also keeps the
    run's `Observations`: ``unittest.TextTestRunner(resultclass=RecordingTextTestResult)``."""


# -- ordering and filtering a suite ----------------------------------------------------------


@attrs.frozen
class Selection:
    """What `prioritize_failures` made of a suite."""

    suite: unittest.TestSuite
    #: Tests of the suite that failed last time: first in `suite`, or all of it.
    rerun: int
    #: Tests left out (``only_failed``).
    deselected: int
    #: How many ids were failing last time, in the suite or not.
    known: int
    only_failed: bool

    def status(self) -> str:
        """One line saying what was done, in pytest's ``run-last-failure:`` words."""
        if not self.known:
            return "no previously failed tests, not deselecting items."
        if not self.rerun:
            return f"{self.known} known failures not in selected tests"
        noun = "failure" if self.rerun == 1 else "failures"
        if self.only_failed:
            return f"rerun previous {self.rerun} {noun} ({self.deselected} deselected)"
        return f"rerun previous {self.rerun} {noun} first"


def prioritize_failures(
    suite: unittest.TestSuite, failed: Iterable[str], *, only_failed: bool = False
) -> Selection:
    """``suite`` with the tests that failed (ids as `id_of` gives them) first, then the
    others in their usual order; with ``only_failed``, only the failed ones.

    A failed module or class (a fixture or import failure) selects every test it holds;
    a module that still does not load is selected when anything inside it failed. When
    nothing in ``suite`` failed, it is returned unchanged (like pytest, ``--lf`` then runs
    everything); otherwise the result is one flat `unittest.TestSuite`, whose class and
    module fixtures unittest still sets up around each run of neighbouring tests.
    """
    known = frozenset(failed)
    holding_failures = frozenset(holder for name in known for holder in list(_lineage(name))[1:])
    tests = list(_leaves(suite))
    first = [_failed_before(test, known, holding_failures) for test in tests]
    rerun = sum(first)
    if not rerun:
        return Selection(suite, 0, 0, len(known), only_failed)
    ordered = [test for test, is_first in zip(tests, first, strict=True) if is_first]
    if not only_failed:
        ordered += [test for test, is_first in zip(tests, first, strict=True) if not is_first]
    return Selection(
        unittest.TestSuite(ordered), rerun, len(tests) - len(ordered), len(known), only_failed
    )


def _leaves(
    suite: unittest.suite.BaseTestSuite | unittest.TestCase,
) -> Iterator[unittest.TestCase]:
    if isinstance(suite, unittest.suite.BaseTestSuite):
        for test in suite:
            yield from _leaves(test)
    else:
        yield suite


def _failed_before(
    test: unittest.TestCase, failed: frozenset[str], holding_failures: frozenset[str]
) -> bool:
    identifier = id_of(test)
    if any(name in failed for name in _lineage(identifier)):
        return True
    return _stands_in_for_a_module(test) and identifier in holding_failures


# -- the store -------------------------------------------------------------------------------


class SharedFailures:
    """The unittest failures of this run's CI namespace in a store: read merged across
    every shard and run (`failed`), recorded as one immutable part per run (`record`).

    ``url`` defaults to ``CACHEKIT_URL``, then `DEFAULT_URL`; the namespace and shard come
    from `cachekit.ci.namespace.detect_namespace` (``CACHEKIT_SHARD`` and friends). Opening a URL
    that names no store raises `cachekit.InvalidURL`. Past that, nothing raises because
    the store failed: the first failure is reported to ``warn`` (default: one line on
    stderr) and the object then acts as an empty cache that records nothing. Every call
    together may take at most ``timeout`` seconds.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        shard: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
        warn: Callable[[Warning], None] = print_warning,
    ) -> None:
        env = os.environ if environ is None else environ
        #: When the run started, as far as this object knows: when it was made.
        self.started = time.time()
        self.url: str = url or env.get(URL_VARIABLE, "") or DEFAULT_URL
        self.session = Session(
            self.url, namespace=detect_namespace(env, shard=shard), timeout=timeout, warn=warn
        )
        self.namespace: Namespace = self.session.namespace
        self.session.store  # noqa: B018 (opens it now: a URL that names no store is an error)
        #: What `failed` read, once it has.
        self._failing: frozenset[str] | None = None

    @property
    def degraded(self) -> bool:
        """True once the store failed: the rest of the run leaves it alone."""
        return self.session.degraded

    def describe(self) -> str:
        """The store (credentials redacted) and the namespace, for a report line."""
        return self.session.describe()

    def failed(self) -> frozenset[str]:
        """The ids failing in the latest run that ran them, on any shard.

        Joins every namespace of the read chain (this ref, the base ref, the default
        branch), read side by side."""
        value = self.session.attempt(
            lambda: self.session.read_joined(UNITTEST_LASTFAILED_KEY, LASTFAILED),
            f"could not read the failures from {self.session.display}, "
            "running as with an empty cache",
        )
        self._failing = frozenset(still_failing(value or {}))
        return self._failing

    def record(self, observations: Observations, *, at: float | None = None) -> None:
        """Write what a run observed as its own part. ``at``: when the run started
        (default: when this object was made); a later observation of a test wins.

        Nothing is written by a read-only run (a fork's pull request, ``CACHEKIT_READONLY``),
        after the store failed, or when nothing was observed."""
        if self.degraded or not self.namespace.trusted or not observations.outcomes:
            return
        failing = self._failing if self._failing is not None else self.failed()
        if self.degraded:
            return
        part = observations.part(self.started if at is None else at, failing=failing)
        if not part:
            return
        self.session.attempt(
            lambda: self._write(part),
            f"could not record this run's outcomes in {self.session.display}",
        )

    def close(self) -> None:
        self.session.close()

    def _write(self, part: dict[str, JSON]) -> None:
        if self.url == DEFAULT_URL:
            _ignore_in_git(Path(DEFAULT_URL).parent)
        self.session.write_parts(
            self.namespace.new_part_id(),
            {UNITTEST_LASTFAILED_KEY: part},
            compact={UNITTEST_LASTFAILED_KEY: LASTFAILED},
            min_parts=COMPACT_THRESHOLD,
        )


def _ignore_in_git(directory: Path) -> None:
    """Make the default store's directory ignore itself, as ``.pytest_cache`` does."""
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        directory.mkdir(parents=True, exist_ok=True)
        gitignore.write_text(_GITIGNORE, encoding="utf-8")


# -- the command -----------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rules out nan
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}")
    return value


def _add_options(parser: argparse.ArgumentParser) -> None:
    """cachekit's options. Their defaults live on `_Program`."""
    group = parser.add_argument_group("cachekit (docs/unittest.md)")
    group.add_argument(
        "--lf",
        "--last-failed",
        dest="last_failed",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Run only the tests that failed last time, on any shard (all tests when none)",
    )
    group.add_argument(
        "--ff",
        "--failed-first",
        dest="failed_first",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Run the tests that failed last time first, then the rest",
    )
    group.add_argument(
        "--cache-url",
        dest="cache_url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"The store: a directory or a URL such as s3://bucket/prefix. Also "
        f"{URL_VARIABLE}; default {DEFAULT_URL}",
    )
    group.add_argument(
        "--cache-shard",
        dest="cache_shard",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="This shard's name, in the ids of the parts it writes. Also CACHEKIT_SHARD",
    )
    group.add_argument(
        "--cache-timeout",
        dest="cache_timeout",
        metavar="SECONDS",
        type=_seconds,
        default=argparse.SUPPRESS,
        help=f"The most the store may cost the run; then it runs as with an empty cache. "
        f"Also {TIMEOUT_VARIABLE}; default {DEFAULT_TIMEOUT:g}",
    )


class _Program(unittest.TestProgram):
    """``python -m unittest`` (`unittest.TestProgram` with ``module=None``), plus the
    shared failures: the loaded suite is reordered or filtered, and the runner's result
    records what ran."""

    # Set by unittest (typeshed does not declare it).
    test: unittest.TestSuite
    # Our options' values when not given (argparse sets only what is given).
    cache_url: str | None = None
    cache_shard: str | None = None
    cache_timeout: float | None = None
    last_failed: bool = False
    failed_first: bool = False

    def __init__(self, program: str, arguments: Sequence[str]) -> None:
        self.started = time.time()
        self.shared: SharedFailures | None = None
        # Our options are taken out first, wherever they are: unittest wants ``discover``
        # first, and ``python -m cachekit.unittest --lf discover -s tests`` should work.
        options = argparse.ArgumentParser(prog=program, add_help=False, allow_abbrev=False)
        _add_options(options)
        _, rest = options.parse_known_args(arguments, namespace=self)
        super().__init__(module=None, argv=[program, *rest], testRunner=_recording_runner(self))

    def _getParentArgParser(self) -> argparse.ArgumentParser:
        """unittest's options and ours, for ``-h``. Private in unittest (every version
        since 3.4) and absent from typeshed."""
        parser: argparse.ArgumentParser = cast("Any", super())._getParentArgParser()
        _add_options(parser)
        return parser

    def createTests(
        self, from_discovery: bool = False, Loader: unittest.TestLoader | None = None
    ) -> None:
        super().createTests(from_discovery, Loader)
        self.shared = self._open()
        if not (self.last_failed or self.failed_first):
            return
        selection = prioritize_failures(
            self.test, self.shared.failed(), only_failed=self.last_failed
        )
        self.test = selection.suite
        if self.verbosity >= 2:
            _note(f"cachekit: {self.shared.describe()}")
        if self.verbosity >= 1:
            _note(f"run-last-failure: {selection.status()}")

    def _open(self) -> SharedFailures:
        try:
            timeout = self.cache_timeout
            if timeout is None:
                text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
                try:
                    timeout = _seconds(text) if text else DEFAULT_TIMEOUT
                except argparse.ArgumentTypeError as error:
                    raise InvalidURL(f"{TIMEOUT_VARIABLE}: {error}") from None
            return SharedFailures(self.cache_url, shard=self.cache_shard, timeout=timeout)
        except InvalidURL as error:  # configuration, not a fault: a usage error
            _note(f"{self.progName}: error: cachekit: {error}")
            sys.exit(2)

    def finish(self, result: unittest.TestResult) -> None:
        """After the run, before unittest exits: record what ran."""
        if self.shared is not None and isinstance(result, RecordingResult):
            self.shared.record(result.observations, at=self.started)
            self.shared.close()


def _recording_runner(program: _Program) -> type[unittest.TextTestRunner]:
    """unittest's runner, with a result that records, reporting to ``program``."""

    class RecordingRunner(unittest.TextTestRunner):
        resultclass = RecordingTextTestResult

        def run(self, test: unittest.TestSuite | unittest.TestCase) -> unittest.TextTestResult:
            result = super().run(test)
            program.finish(result)
            return result

    return RecordingRunner


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m cachekit.unittest ARGS``: exits as ``python -m unittest ARGS`` would."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    _Program(f"{os.path.basename(sys.executable)} -m {PROGRAM}", arguments)


if __name__ == "__main__":
    main()
