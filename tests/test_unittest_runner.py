"""``python -m cachekit.unittest``: last-failed-first for unittest, shared through a store.

Real runs of ``python -m cachekit.unittest`` (and of ``python -m unittest``, to compare
with) in a small project written to a temporary directory; the suite-ordering API and the
result mixin in this process.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import unittest
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlencode

import pytest

from cachekit.ci.layout import UNITTEST_LASTFAILED_KEY
from cachekit.ci.namespace import detect_namespace
from cachekit.stores import LocalStore
from cachekit.unittest import (
    COMPACT_THRESHOLD,
    DEFAULT_URL,
    Observations,
    RecordingTextTestResult,
    SharedFailures,
    id_of,
    prioritize_failures,
)
from servers import free_port

#: A test module whose tests fail when their id is listed in ``CK_FAIL``.
MODULE = """\
import os
import unittest

FAIL = set(os.environ.get("CK_FAIL", "").split(","))


class {cls}(unittest.TestCase):
{methods}
"""
METHOD = """\
    def {name}(self):
        self.assertNotIn(self.id(), FAIL)
"""
#: Fixtures that fail on demand.
FIXTURES = """\
import os
import unittest

FAIL = set(os.environ.get("CK_FAIL", "").split(","))


def setUpModule():
    if "setUpModule" in FAIL:
        raise RuntimeError("setUpModule failed")


class Held(unittest.TestCase):
    def test_one(self):
        pass

    def test_two(self):
        pass
"""
CLASS_FIXTURES = """\
import os
import unittest

FAIL = set(os.environ.get("CK_FAIL", "").split(","))


class Guarded(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if "setUpClass" in FAIL:
            raise RuntimeError("setUpClass failed")

    def test_one(self):
        pass

    def test_two(self):
        pass


class Beside(unittest.TestCase):
    def test_one(self):
        pass
"""
MIXED = """\
import os
import unittest

FAIL = set(os.environ.get("CK_FAIL", "").split(","))


class Mixed(unittest.TestCase):
    def test_sub(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotIn(f"sub{i}", FAIL)

    @unittest.skip("never runs")
    def test_skipped(self):
        raise AssertionError

    def test_skips_itself(self):
        self.skipTest("not today")

    @unittest.expectedFailure
    def test_expected(self):
        raise AssertionError

    @unittest.expectedFailure
    def test_unexpected(self):
        pass

    def test_ok(self):
        pass
"""

#: The tests of the two modules of `project`, in the order unittest runs them.
ALPHA = ["test_alpha.Alpha.test_a", "test_alpha.Alpha.test_b", "test_alpha.Alpha.test_c"]
BETA = ["test_beta.Beta.test_a", "test_beta.Beta.test_b"]
#: Slack for whole runs on a loaded machine.
SLACK = 25.0


def module_source(cls: str, *methods: str) -> str:
    return MODULE.format(cls=cls, methods="\n".join(METHOD.format(name=m) for m in methods))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two test modules: ``test_alpha`` (three tests) and ``test_beta`` (two)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "test_alpha.py").write_text(module_source("Alpha", "test_a", "test_b", "test_c"))
    (root / "test_beta.py").write_text(module_source("Beta", "test_a", "test_b"))
    return root


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A directory store shared by the runs of a test (as a CI's bucket would be)."""
    return str(tmp_path / "store")


def run(
    project: Path,
    *args: str,
    fail: Sequence[str] = (),
    module: str = "cachekit.unittest",
    python_options: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "CK_FAIL": ",".join(fail), **(env or {})}
    return subprocess.run(
        [sys.executable, *python_options, "-m", module, *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def unittest_run(project: Path, *args: str, **options: object) -> subprocess.CompletedProcess[str]:
    return run(project, *args, module="unittest", **options)  # type: ignore[arg-type]


_VERBOSE_LINE = re.compile(r"^(\w+) \(([^()\s]+)\)(?: \([^)]*\))? \.\.\. ", re.MULTILINE)


def ran(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Ids of the tests a ``-v`` run reported, in order (once each)."""
    ids: list[str] = []
    for name, where in _VERBOSE_LINE.findall(result.stderr):
        # Python 3.11 prints "test_x (mod.Class.test_x)", earlier "test_x (mod.Class)".
        test = where if where.endswith("." + name) else f"{where}.{name}"
        if test not in ids:
            ids.append(test)
    return ids


def status(result: subprocess.CompletedProcess[str]) -> str:
    found = re.findall(r"^run-last-failure: (.*)$", result.stderr, re.MULTILINE)
    assert len(found) == 1, result.stderr
    return str(found[0])


def normalized(output: str) -> str:
    """Output without what differs between two identical runs (timings)."""
    return re.sub(r"in \d+\.\d+s", "in Xs", output)


def failing(url: str) -> frozenset[str]:
    """The merged failures, read as the runs' namespace sees them."""
    return SharedFailures(url).failed()


def summary(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """unittest's "Ran N tests" line and its verdict ("OK", "FAILED (failures=1)")."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    [ran_line] = [line for line in lines if re.match(r"Ran \d+ tests? in ", line)]
    [verdict] = [line for line in lines if re.match(r"(OK|FAILED|NO TESTS RAN)\b", line)]
    return normalized(ran_line), verdict


def warnings_in(result: subprocess.CompletedProcess[str], kind: str) -> list[str]:
    return re.findall(rf"^{kind}: cachekit: .*$", result.stderr + result.stdout, re.MULTILINE)


# -- the same as python -m unittest -------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-v"],
        ["test_alpha"],
        ["test_beta.Beta.test_b", "-v"],
        ["discover", "-p", "test_a*.py", "-v"],
        ["-k", "test_b"],
        ["-k", "nothing_matches"],
        ["no_such_module"],
        ["-f"],
    ],
)
@pytest.mark.parametrize("fail", [[], ["test_alpha.Alpha.test_b"]])
def test_output_and_exit_code_are_unittests(
    project: Path, store: str, args: list[str], fail: list[str]
) -> None:
    expected = unittest_run(project, *args, fail=fail)
    result = run(project, "--cache-url", store, *args, fail=fail)
    assert result.returncode == expected.returncode
    assert normalized(result.stderr) == normalized(expected.stderr)
    assert result.stdout == expected.stdout


def test_default_store_is_a_directory_that_git_ignores(project: Path) -> None:
    result = run(project, fail=[ALPHA[1]])
    assert result.returncode == 1
    default = project / DEFAULT_URL
    assert failing(str(default)) == {ALPHA[1]}
    assert (default.parent / ".gitignore").read_text().splitlines()[-1] == "*"
    result = run(project, "--lf", "-v")
    assert ran(result) == [ALPHA[1]]


def test_url_from_the_environment(project: Path, store: str) -> None:
    run(project, fail=[BETA[0]], env={"CACHEKIT_URL": store})
    assert failing(store) == {BETA[0]}
    assert not (project / ".cachekit").exists()


# -- --lf and --ff ---------------------------------------------------------------------------


def test_lf_reruns_only_the_failures_and_fixed_tests_drop_out(project: Path, store: str) -> None:
    first = run(project, "--cache-url", store, fail=[ALPHA[1], BETA[0]])
    assert first.returncode == 1
    assert failing(store) == {ALPHA[1], BETA[0]}

    # One fixed, one still failing: only the two run.
    result = run(project, "--cache-url", store, "--lf", "-v", fail=[BETA[0]])
    assert ran(result) == [ALPHA[1], BETA[0]]
    assert status(result) == "rerun previous 2 failures (3 deselected)"
    assert result.returncode == 1
    assert failing(store) == {BETA[0]}

    result = run(project, "--cache-url", store, "--lf", "-v")
    assert ran(result) == [BETA[0]]
    assert result.returncode == 0
    assert failing(store) == frozenset()

    # Nothing failing: --lf runs everything, as pytest does, and says so.
    result = run(project, "--cache-url", store, "--lf", "-v")
    assert ran(result) == ALPHA + BETA
    assert status(result) == "no previously failed tests, not deselecting items."


def test_ff_runs_the_failures_first_then_the_rest_in_order(project: Path, store: str) -> None:
    usual = ran(run(project, "--cache-url", store, "-v", fail=[ALPHA[2], BETA[0]]))
    assert usual == ALPHA + BETA

    result = run(project, "--cache-url", store, "--ff", "-v", fail=[BETA[0]])
    assert ran(result) == [ALPHA[2], BETA[0], ALPHA[0], ALPHA[1], BETA[1]]
    assert status(result) == "rerun previous 2 failures first"
    assert result.returncode == 1

    result = run(project, "--cache-url", store, "--failed-first", "-v")
    assert ran(result) == [BETA[0], *ALPHA, BETA[1]]


def test_lf_keeps_unittest_selection_and_exit_codes(project: Path, store: str) -> None:
    run(project, "--cache-url", store, fail=[ALPHA[0], ALPHA[2], BETA[1]])
    # -k and test names select first; --lf filters what they selected.
    result = run(project, "--cache-url", store, "--lf", "-v", "-k", "test_c", fail=[ALPHA[2]])
    assert ran(result) == [ALPHA[2]]
    assert result.returncode == unittest_run(project, "-k", "test_c", fail=[ALPHA[2]]).returncode
    result = run(project, "--cache-url", store, "test_beta", "--lf", "-v")
    assert ran(result) == [BETA[1]]
    assert result.returncode == 0
    # -q: no status line, unittest's own quiet output.
    quiet = run(project, "--cache-url", store, "--lf", "-q", "test_alpha")
    assert "run-last-failure" not in quiet.stderr
    expected = unittest_run(project, "-q", ALPHA[0], ALPHA[2])
    assert normalized(quiet.stderr) == normalized(expected.stderr)


def test_two_shards_share_one_store(project: Path, store: str) -> None:
    """Shards run side by side, each its own modules; either sees the other's failures,
    and a fix seen on one clears the failure for both."""
    shard = {"1": ["test_alpha"], "2": ["test_beta"]}
    environ = {**os.environ, "CK_FAIL": f"{ALPHA[0]},{BETA[1]}"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cachekit.unittest", f"--cache-shard={name}/2", *modules],
            cwd=project,
            env={**environ, "CACHEKIT_URL": store},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, modules in shard.items()
    ]
    assert [process.wait(timeout=120) for process in processes] == [1, 1]
    assert failing(store) == {ALPHA[0], BETA[1]}
    parts = LocalStore(store).list()
    assert len(parts) == 2
    assert any("shard-1of2" in part for part in parts)
    assert any("shard-2of2" in part for part in parts)

    # Shard 2, given every module, reruns shard 1's failure too.
    result = run(
        project, "--cache-url", store, "--cache-shard", "2/2", "--lf", "-v", fail=[BETA[1]]
    )
    assert ran(result) == [ALPHA[0], BETA[1]]
    assert failing(store) == {BETA[1]}  # its pass of shard 1's test counts for shard 1 too

    # Shard 1 fixes nothing of its own but passes shard 2's test: cleared for both.
    result = run(project, "--cache-url", store, "--cache-shard", "1/2", "--lf", "-v", "test_beta")
    assert ran(result) == [BETA[1]]
    assert failing(store) == frozenset()
    for name in shard:
        result = run(project, "--cache-url", store, "--cache-shard", f"{name}/2", "--lf", "-v")
        assert status(result) == "no previously failed tests, not deselecting items."


def test_failures_outside_the_selection_leave_it_whole(project: Path, store: str) -> None:
    run(project, "--cache-url", store, "test_beta", fail=[BETA[0]])
    result = run(project, "--cache-url", store, "--lf", "-v", "test_alpha")
    assert ran(result) == ALPHA
    assert status(result) == "1 known failures not in selected tests"
    assert failing(store) == {BETA[0]}  # not run, so not forgotten


# -- what fails outside a test -----------------------------------------------------------


def test_module_that_fails_to_import_is_rerun_until_it_loads(project: Path, store: str) -> None:
    (project / "test_broken.py").write_text("import no_such_dependency_xyz\n")
    expected = unittest_run(project)
    result = run(project, "--cache-url", store)
    assert result.returncode == expected.returncode == 1
    assert "ModuleNotFoundError" in result.stderr
    assert failing(store) == {"test_broken"}

    result = run(project, "--cache-url", store, "--lf", "-v")
    assert ran(result) == ["unittest.loader._FailedTest.test_broken"]
    assert status(result) == "rerun previous 1 failure (5 deselected)"

    # Fixed: --lf runs what the module holds now, and the module drops out.
    (project / "test_broken.py").write_text(module_source("Mended", "test_a", "test_b"))
    result = run(project, "--cache-url", store, "--lf", "-v")
    assert ran(result) == ["test_broken.Mended.test_a", "test_broken.Mended.test_b"]
    assert result.returncode == 0
    assert failing(store) == frozenset()


def test_failing_test_in_a_module_that_stops_importing(project: Path, store: str) -> None:
    run(project, "--cache-url", store, fail=[ALPHA[1]])
    (project / "test_alpha.py").write_text("raise ImportError('broken now')\n")
    result = run(project, "--cache-url", store, "--lf", "-v")
    assert ran(result) == ["unittest.loader._FailedTest.test_alpha"]
    assert failing(store) == {ALPHA[1], "test_alpha"}


def test_class_and_module_fixture_failures_rerun_their_class_and_module(
    project: Path, store: str
) -> None:
    (project / "test_fixtures.py").write_text(FIXTURES)
    (project / "test_guarded.py").write_text(CLASS_FIXTURES)
    fixture_failures = ["setUpModule", "setUpClass"]
    expected = unittest_run(project, fail=fixture_failures)
    result = run(project, "--cache-url", store, fail=fixture_failures)
    assert result.returncode == expected.returncode == 1
    assert "setUpClass (test_guarded.Guarded)" in result.stderr
    assert failing(store) == {"test_fixtures", "test_guarded.Guarded"}

    result = run(project, "--cache-url", store, "--lf", "-v")
    assert ran(result) == [
        "test_fixtures.Held.test_one",
        "test_fixtures.Held.test_two",
        "test_guarded.Guarded.test_one",
        "test_guarded.Guarded.test_two",
    ]
    assert result.returncode == 0
    assert failing(store) == frozenset()


def test_subtests_skips_and_expected_failures(project: Path, store: str) -> None:
    (project / "test_mixed.py").write_text(MIXED)
    result = run(project, "--cache-url", store, "test_mixed", fail=["sub1"])
    assert result.returncode == unittest_run(project, "test_mixed", fail=["sub1"]).returncode == 1
    # A failing subTest fails its test; an unexpected success is a failure; skips and
    # expected failures are not.
    assert failing(store) == {"test_mixed.Mixed.test_sub", "test_mixed.Mixed.test_unexpected"}
    result = run(project, "--cache-url", store, "--lf", "-v", "test_mixed")
    assert ran(result) == ["test_mixed.Mixed.test_sub", "test_mixed.Mixed.test_unexpected"]
    assert failing(store) == {"test_mixed.Mixed.test_unexpected"}


# -- trust, faults and configuration -------------------------------------------------------


def test_read_only_run_records_nothing(project: Path, store: str) -> None:
    run(project, "--cache-url", store, fail=[ALPHA[0]], env={"CACHEKIT_READONLY": "1"})
    assert LocalStore(store).list() == []


SECRET = "hunter2-do-not-print"


def dead_s3(tmp_path: Path) -> str:
    endpoint = f"http://127.0.0.1:{free_port()}"
    return "s3://ck-bucket/cache?" + urlencode(
        {"endpoint_url": endpoint, "key": "AKIAEXAMPLE", "secret": SECRET}
    )


def under_a_file(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("not a directory")
    return str(tmp_path / "a-file" / "store")


@pytest.mark.parametrize("broken", [dead_s3, under_a_file])
@pytest.mark.parametrize("mode", [[], ["--lf"], ["--ff", "-v"]])
def test_store_down_warns_once_and_the_run_goes_on(
    project: Path, tmp_path: Path, broken: Callable[[Path], str], mode: list[str]
) -> None:
    url = broken(tmp_path)
    expected = unittest_run(project, *mode[1:], fail=[ALPHA[0]])
    result = run(project, "--cache-url", url, *mode, fail=[ALPHA[0]])
    assert result.returncode == expected.returncode == 1
    assert len(warnings_in(result, "StoreUnavailableWarning")) == 1, result.stderr
    assert SECRET not in result.stderr + result.stdout
    # Everything ran, as with an empty cache.
    assert summary(result) == summary(expected)


def test_warnings_as_errors_never_change_the_exit_code(project: Path, tmp_path: Path) -> None:
    url = dead_s3(tmp_path)
    for fail in ([], [BETA[0]]):
        expected = unittest_run(project, python_options=["-W", "error"], fail=fail)
        result = run(project, "--cache-url", url, "--lf", python_options=["-W", "error"], fail=fail)
        assert result.returncode == expected.returncode
        assert len(warnings_in(result, "StoreUnavailableWarning")) == 1, result.stderr


def test_hanging_store_costs_at_most_the_timeout(project: Path, hanging_endpoint: str) -> None:
    url = f"s3://ck-bucket/cache?{urlencode({'endpoint_url': hanging_endpoint})}"
    baseline_start = time.monotonic()
    unittest_run(project)
    baseline = time.monotonic() - baseline_start
    started = time.monotonic()
    # A base ref: the read chain has two namespaces, read side by side.
    result = run(
        project,
        *("--cache-url", url, "--cache-timeout", "1", "--lf", "-v"),
        env={"CACHEKIT_REF": "feature", "CACHEKIT_BASE_REF": "main"},
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    assert ran(result) == ALPHA + BETA
    [warning] = warnings_in(result, "StoreUnavailableWarning")
    assert "no answer within the time budget" in warning
    # A store client's pending requests must not hold the process at exit either.
    assert elapsed < baseline + 1 + SLACK, (elapsed, baseline)


def test_corrupt_data_is_a_miss_with_one_warning(project: Path, store: str) -> None:
    run(project, "--cache-url", store, fail=[ALPHA[1]])
    prefix = detect_namespace().prefix
    parts = f"{prefix}/{UNITTEST_LASTFAILED_KEY}/@parts"
    for name in ("garbage-1", "garbage-2"):
        LocalStore(store).put(f"{parts}/{name}", b"\x00 not cachekit's bytes")
    result = run(project, "--cache-url", store, "--lf", "-v")
    assert ran(result) == [ALPHA[1]]  # the readable part still counts
    assert result.returncode == 0
    [warning] = warnings_in(result, "CorruptValueWarning")
    assert "ignored 2 unreadable value(s)" in warning
    assert not warnings_in(result, "StoreUnavailableWarning")


def test_unusable_url_or_timeout_is_a_usage_error(project: Path) -> None:
    result = run(project, "--cache-url", "no-such-protocol-xyz://bucket/x")
    assert result.returncode == 2
    assert "error: cachekit: cannot open no-such-protocol-xyz://bucket/x" in result.stderr
    result = run(project, "--cache-timeout", "soon")
    assert result.returncode == 2
    assert "--cache-timeout" in result.stderr
    result = run(project, env={"CACHEKIT_TIMEOUT": "-1"})
    assert result.returncode == 2
    assert "CACHEKIT_TIMEOUT: expected a number of seconds, not '-1'" in result.stderr


def test_help_lists_the_options(project: Path) -> None:
    result = run(project, "-h")
    assert result.returncode == 0
    for option in ("--lf", "--ff", "--cache-url URL", "--cache-shard NAME", "--cache-timeout"):
        assert option in result.stdout
    assert f"usage: {os.path.basename(sys.executable)} -m cachekit.unittest" in result.stdout


def test_on_s3(project: Path, s3_url: str) -> None:
    result = run(project, "--cache-url", s3_url, "-v", fail=[ALPHA[2]])
    assert result.returncode == 1
    assert not warnings_in(result, "StoreUnavailableWarning")
    assert failing(s3_url) == {ALPHA[2]}
    result = run(project, "--cache-url", s3_url, "--lf", "-v")
    assert ran(result) == [ALPHA[2]]
    assert result.returncode == 0
    assert failing(s3_url) == frozenset()
    assert not warnings_in(result, "StoreUnavailableWarning")


# -- the Python API -----------------------------------------------------------------------


def case_class(module: str, name: str, *methods: str) -> type[unittest.TestCase]:
    """A TestCase class whose tests' ids are ``module.name.method`` (made here, not at
    module level, so that pytest does not collect it)."""

    def passing(self: unittest.TestCase) -> None:
        pass

    namespace: dict[str, object] = {method: passing for method in methods}
    cls = type(name, (unittest.TestCase,), namespace)
    cls.__module__ = module
    cls.__qualname__ = name
    return cls


def suite() -> unittest.TestSuite:
    loader = unittest.TestLoader()
    return unittest.TestSuite(
        [
            unittest.TestSuite(
                [
                    loader.loadTestsFromTestCase(case_class("pkg.mod", "A", "test_1", "test_2")),
                    loader.loadTestsFromTestCase(case_class("pkg.mod", "B", "test_1", "test_2")),
                ]
            ),
            loader.loadTestsFromTestCase(case_class("pkg.other", "C", "test_1")),
        ]
    )


def ids(tests: unittest.TestSuite) -> list[str]:
    found: list[str] = []
    for test in tests:
        if isinstance(test, unittest.TestSuite):
            found += ids(test)
        else:
            found.append(id_of(test))
    return found


EVERY = ["pkg.mod.A.test_1", "pkg.mod.A.test_2", "pkg.mod.B.test_1", "pkg.mod.B.test_2"]
EVERY += ["pkg.other.C.test_1"]


def test_failures_first_keeps_the_rest_in_order() -> None:
    selection = prioritize_failures(suite(), ["pkg.other.C.test_1", "pkg.mod.A.test_2"])
    assert ids(selection.suite) == [
        "pkg.mod.A.test_2",
        "pkg.other.C.test_1",
        "pkg.mod.A.test_1",
        "pkg.mod.B.test_1",
        "pkg.mod.B.test_2",
    ]
    assert (selection.rerun, selection.deselected) == (2, 0)
    assert selection.status() == "rerun previous 2 failures first"


def test_only_failed_filters_and_holders_select_what_they_hold() -> None:
    selection = prioritize_failures(suite(), ["pkg.mod.B", "gone.Test.test"], only_failed=True)
    assert ids(selection.suite) == ["pkg.mod.B.test_1", "pkg.mod.B.test_2"]
    assert (selection.rerun, selection.deselected, selection.known) == (2, 3, 2)
    assert selection.status() == "rerun previous 2 failures (3 deselected)"
    module = prioritize_failures(suite(), ["pkg.other"], only_failed=True)
    assert ids(module.suite) == ["pkg.other.C.test_1"]
    package = prioritize_failures(suite(), ["pkg"], only_failed=True)
    assert ids(package.suite) == EVERY


def test_nothing_failed_in_the_suite_leaves_it_as_it_was() -> None:
    original = suite()
    for failed in ([], ["elsewhere.T.test"], ["pkg.mod.A.test_1x", "pkg.mo"]):
        selection = prioritize_failures(original, failed, only_failed=True)
        assert selection.suite is original
        assert selection.rerun == 0
    assert prioritize_failures(original, []).status() == (
        "no previously failed tests, not deselecting items."
    )
    assert prioritize_failures(original, ["x.Y.z", "a.B.c"]).status() == (
        "2 known failures not in selected tests"
    )


def test_a_module_that_does_not_load_stands_in_for_its_failures() -> None:
    broken = unittest.TestLoader().loadTestsFromName("no_such_module_for_cachekit_tests")
    tests = unittest.TestSuite([suite(), broken])
    assert ids(broken) == ["no_such_module_for_cachekit_tests"]
    failed = ["no_such_module_for_cachekit_tests.Old.test_gone"]
    selection = prioritize_failures(tests, failed, only_failed=True)
    assert ids(selection.suite) == ["no_such_module_for_cachekit_tests"]


def test_recording_result_observes_a_run() -> None:
    def failing(self: unittest.TestCase) -> None:
        self.fail("no")

    def failing_subtest(self: unittest.TestCase) -> None:
        for i in range(2):
            with self.subTest(i=i):
                self.assertLess(i, 1)  # noqa: PT009 (a unittest test, run by unittest)

    def skipping(self: unittest.TestCase) -> None:
        self.skipTest("later")

    cls = case_class("pkg.mod", "R", "test_ok")
    cls.test_fail = failing  # type: ignore[attr-defined]
    cls.test_sub = failing_subtest  # type: ignore[attr-defined]
    cls.test_skip = skipping  # type: ignore[attr-defined]
    tests = unittest.TestLoader().loadTestsFromTestCase(cls)
    runner = unittest.TextTestRunner(stream=io.StringIO(), resultclass=RecordingTextTestResult)
    result = runner.run(tests)
    assert isinstance(result, RecordingTextTestResult)
    observations = result.observations
    assert observations.failed == ["pkg.mod.R.test_fail", "pkg.mod.R.test_sub"]
    holders = ["pkg", "pkg.mod", "pkg.mod.R"]
    assert observations.passed == [*holders, "pkg.mod.R.test_ok", "pkg.mod.R.test_skip"]
    part = observations.part(at=12.0, failing={"pkg.mod.R.test_ok", "pkg.mod.R.test_gone"})
    assert part["pkg.mod.R.test_sub"] == {"at": 12.0, "failed": True}
    # Passes only of what was failing at the start: the part grows with fixes.
    assert part["pkg.mod.R.test_ok"] == {"at": 12.0, "failed": False}
    assert sorted(part) == ["pkg.mod.R.test_fail", "pkg.mod.R.test_ok", "pkg.mod.R.test_sub"]


def test_shared_failures_round_trip(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    first = SharedFailures(url, shard="a")
    first.record(Observations({"m.T.test_x": True, "m.T.test_y": True}), at=1.0)
    second = SharedFailures(url, shard="b")
    second.record(Observations({"m.T.test_x": False}), at=2.0)
    assert SharedFailures(url).failed() == {"m.T.test_y"}
    shown = SharedFailures("s3://user:pass@bucket/x?endpoint_url=http://127.0.0.1:9").describe()
    assert "pass" not in shown


def test_parts_are_folded_once_there_are_enough(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    for run_number in range(COMPACT_THRESHOLD):
        outcomes = {f"m.T.test_{n}": n == run_number for n in range(COMPACT_THRESHOLD)}
        SharedFailures(url, shard=str(run_number)).record(Observations(outcomes), at=run_number)
    keys = LocalStore(url).list()
    assert [key.rpartition("/")[2] for key in keys] == ["@base"]
    # The last run saw only its own test fail; every earlier failure was passed later.
    assert SharedFailures(url).failed() == {f"m.T.test_{COMPACT_THRESHOLD - 1}"}


DOCS = Path(__file__).parent.parent / "docs" / "unittest.md"


def test_docs_runner_example_runs_failures_first(project: Path) -> None:
    [example] = re.findall(r"```python\n# file: runner.py\n(.*?)```", DOCS.read_text(), re.DOTALL)
    tests = project / "tests"
    tests.mkdir()
    (tests / "__init__.py").write_text("")
    for module in ("test_alpha.py", "test_beta.py"):
        (project / module).rename(tests / module)
    (project / "runner.py").write_text(example)
    first = run(project, module="runner", fail=["tests.test_beta.Beta.test_a"])
    assert first.returncode == 1
    result = run(project, module="runner")
    assert result.returncode == 0
    assert status(result) == "rerun previous 1 failure first"
    assert ran(result)[:2] == ["tests.test_beta.Beta.test_a", "tests.test_alpha.Alpha.test_a"]
