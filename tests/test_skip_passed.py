"""``--skip-passed``: skipping tests that already passed on exactly the same code.

Most tests run a sample project (packages, relative imports, conftests at three levels,
a data file, a third-party dependency on its own ``site-packages``) in-process with
pytester, and read which tests really ran from a log the project's root conftest writes.
The xdist tests run pytest in a subprocess.

What cannot be changed for real here is simulated, and the test names say so: the
interpreter's version (the fingerprint is shown another ``sys.version_info``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

import cachekit.skip.fingerprint
from cachekit import Cache, CacheStore, LocalStore, cli, open_store
from cachekit.ci.layout import SKIP_PASSED, SKIP_PASSED_KEY
from cachekit.ci.namespace import detect_namespace, namespaced_cache
from cachekit.ci.signing import ENV_SIGNING_KEY
from cachekit.values import codec
from cachekit_pytest.skip.keys import CACHE_DIR_NAME
from skip_support import SkipProject

SIGNING_KEY = "test-signing-key-" + "0123456789abcdef" * 2
OTHER_KEY = "another-signing-key-" + "fedcba9876543210" * 2

#: The sample project: file -> source. ``tests`` is a package (relative imports between
#: test modules); ``shop`` lives in ``src``; ``fakedep`` is a third-party distribution
#: on its own site directory (the name keeps it out of the project's import roots).
SAMPLE: dict[str, str] = {
    "pytest.ini": """\
[pytest]
pythonpath = src .deps/site-packages
skip_passed_env = SAMPLE_MODE
skip_passed_data = data/*.json
""",
    "conftest.py": """\
import os

import pytest


def pytest_runtest_setup(item):
    log = os.environ.get("SAMPLE_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as file:
            file.write(item.nodeid + "\\n")


@pytest.fixture
def currency():
    return "EUR"
""",
    "data/limits.json": '{"max_quantity": 50}\n',
    "src/shop/__init__.py": '"""A sample shop."""\n',
    "src/shop/util.py": """\
def round_money(value):
    return round(value + 1e-9, 2)


def clamp(value, low, high):
    return max(low, min(high, value))
""",
    "src/shop/pricing/__init__.py": '"""Pricing."""\n',
    "src/shop/pricing/discount.py": """\
from ..util import clamp, round_money


def apply_discount(price, percent):
    percent = clamp(percent, 0, 100)
    return round_money(price * (100 - percent) / 100)


def bulk_discount(quantity):
    if quantity >= 100:
        return 10
    return 0
""",
    "src/shop/pricing/rates.py": 'RATES = {"standard": 20, "reduced": 5}\n',
    "src/shop/pricing/tax.py": """\
from .rates import RATES


def with_tax(price, kind="standard"):
    return price + price * RATES[kind] / 100
""",
    "src/shop/inventory.py": """\
import fakedep


def stock_label(count):
    return fakedep.label(count)


def restock(count, amount):
    return count + amount
""",
    "src/shop/limits.py": """\
import json
from pathlib import Path

LIMITS_FILE = Path(__file__).resolve().parents[2] / "data" / "limits.json"


def max_quantity():
    return json.loads(LIMITS_FILE.read_text())["max_quantity"]
""",
    ".deps/site-packages/fakedep/__init__.py": """\
def label(count):
    return "none" if count == 0 else f"{count} left"
""",
    ".deps/site-packages/fakedep-1.0.dist-info/METADATA": (
        "Metadata-Version: 2.1\nName: fakedep\nVersion: 1.0\n"
    ),
    ".deps/site-packages/fakedep-1.0.dist-info/top_level.txt": "fakedep\n",
    # Installed, imported by nothing (a linter, say).
    ".deps/site-packages/toolbox/__init__.py": "",
    ".deps/site-packages/toolbox-1.0.dist-info/METADATA": (
        "Metadata-Version: 2.1\nName: toolbox\nVersion: 1.0\n"
    ),
    ".deps/site-packages/toolbox-1.0.dist-info/top_level.txt": "toolbox\n",
    "tests/__init__.py": "",
    "tests/helpers.py": """\
def cents(value):
    return int(round(value * 100))
""",
    "tests/conftest.py": """\
import pytest


@pytest.fixture
def basket():
    return [10.0, 20.0]
""",
    "tests/pricing/__init__.py": "",
    "tests/pricing/conftest.py": """\
import pytest


@pytest.fixture
def base_price():
    return 100.0
""",
    "tests/pricing/test_discount.py": """\
from shop.pricing.discount import apply_discount, bulk_discount

from ..helpers import cents


def test_discount(base_price):
    assert apply_discount(base_price, 10) == 90.0


def test_discount_clamped(base_price):
    assert apply_discount(base_price, 150) == 0.0


def test_bulk():
    assert bulk_discount(100) == 10
    assert bulk_discount(99) == 0


def test_cents(base_price):
    assert cents(apply_discount(base_price, 33)) == 6700
""",
    "tests/pricing/test_tax.py": """\
from shop.pricing.tax import with_tax


def test_standard(base_price):
    assert with_tax(base_price) == 120.0


def test_reduced(base_price):
    assert with_tax(base_price, "reduced") == 105.0
""",
    "tests/test_util.py": """\
from shop.util import clamp, round_money


def test_round():
    assert round_money(2.675) == 2.68


def test_clamp():
    assert clamp(5, 0, 3) == 3
    assert clamp(-1, 0, 3) == 0
""",
    "tests/test_inventory.py": """\
from shop.inventory import restock, stock_label


def test_label():
    assert stock_label(0) == "none"
    assert stock_label(3) == "3 left"


def test_restock(basket):
    assert restock(len(basket), 3) == 5
""",
    "tests/test_limits.py": """\
from shop.limits import max_quantity


def test_max_quantity():
    assert max_quantity() == 50
""",
    "tests/test_env.py": """\
import os


def test_mode():
    assert os.environ.get("SAMPLE_MODE", "fast") in ("fast", "slow")


def test_currency(currency):
    assert currency == "EUR"
""",
}

DISCOUNT = {
    f"tests/pricing/test_discount.py::{name}"
    for name in ("test_discount", "test_discount_clamped", "test_bulk", "test_cents")
}
TAX = {f"tests/pricing/test_tax.py::{name}" for name in ("test_standard", "test_reduced")}
UTIL = {f"tests/test_util.py::{name}" for name in ("test_round", "test_clamp")}
INVENTORY = {f"tests/test_inventory.py::{name}" for name in ("test_label", "test_restock")}
LIMITS = {"tests/test_limits.py::test_max_quantity"}
ENV = {f"tests/test_env.py::{name}" for name in ("test_mode", "test_currency")}
EVERY_TEST = DISCOUNT | TAX | UTIL | INVENTORY | LIMITS | ENV
#: The tests that execute ``shop.util.clamp`` (``apply_discount`` calls it): what a change
#: of its body reruns.
CLAMP_USERS = {
    "tests/pricing/test_discount.py::test_discount",
    "tests/pricing/test_discount.py::test_discount_clamped",
    "tests/pricing/test_discount.py::test_cents",
    "tests/test_util.py::test_clamp",
}


class Sample(SkipProject):
    """The sample project in pytester's directory, and its runs: plain pytest runs, each
    test saying which options it passes (``--skip-passed`` among them)."""

    def __init__(self, pytester: pytest.Pytester, log: Path) -> None:
        super().__init__(pytester, log, SAMPLE)

    def run(self, *args: str, **kwargs: Any) -> pytest.RunResult:
        """One in-process pytest run; what ran is in `ran` afterwards."""
        self.log.write_text("")
        return self.pytester.runpytest(*args, **kwargs)

    def run_subprocess(self, *args: str) -> pytest.RunResult:
        self.log.write_text("")
        return self.pytester.runpytest_subprocess(*args)

    def fresh_runner(self) -> None:
        """A new CI machine: no local cache directory."""
        shutil.rmtree(self.root / ".pytest_cache", ignore_errors=True)


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signing key; no CI system, no read-only switch, no skip settings from outside;
    no bytecode files (a source changed twice within a second must be read again)."""
    for name in list(os.environ):
        if name.startswith("CACHEKIT_") or name in (
            "GITHUB_ACTIONS",
            "GITLAB_CI",
            "BUILDKITE",
            "CIRCLECI",
            "JENKINS_URL",
            "TF_BUILD",
            "SAMPLE_MODE",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv(ENV_SIGNING_KEY, SIGNING_KEY)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


@pytest.fixture
def sample(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sample:
    log = tmp_path / "ran.log"
    monkeypatch.setenv("SAMPLE_RUN_LOG", str(log))
    return Sample(pytester, log)


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return result.parseoutcomes()


def local_store(sample: Sample) -> LocalStore:
    return LocalStore(sample.root / ".pytest_cache" / "d" / CACHE_DIR_NAME / "store")


def records(store: CacheStore) -> dict[str, Any]:
    """The merged ``skip/passed`` value of the namespace the runs write to."""
    cache = namespaced_cache(store, detect_namespace())
    value: dict[str, Any] = cache.read_merged(SKIP_PASSED_KEY, SKIP_PASSED).value
    return value


def warnings_text(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


# -- the basics ---------------------------------------------------------------------------


def test_second_run_skips_everything_and_exits_zero(sample: Sample) -> None:
    first = sample.run("--skip-passed")
    first.assert_outcomes(passed=len(EVERY_TEST))
    assert sample.ran == EVERY_TEST
    second = sample.run("--skip-passed")
    assert second.ret == pytest.ExitCode.OK
    assert sample.ran == set()
    assert outcomes(second) == {"cached": len(EVERY_TEST)}
    second.stdout.fnmatch_lines(
        [
            "cachekit skip-passed: on, records in the local cache directory (read-write)",
            f"cachekit skip-passed: 6 test file(s) keyed in *; {len(EVERY_TEST)} passed before*",
            f"*= {len(EVERY_TEST)} cached in *",
        ]
    )


def test_each_skip_says_why_with_verbose(sample: Sample) -> None:
    """Files skipped whole are listed as files (their tests were never collected); a run
    that names a test lists each cached test."""
    sample.run("--skip-passed")
    result = sample.run("--skip-passed", "-v")
    result.stdout.fnmatch_lines(
        [
            f"*= {len(EVERY_TEST)} cached passes (skip-passed) =*",
            "CACHED tests/pricing/test_discount.py - cached pass: key ????????????, "
            "recorded by local at ????-??-?? ??:??:?? UTC (whole file: 4 test(s))",
        ]
    )
    quiet = sample.run("--skip-passed", "-q")
    quiet.stdout.no_fnmatch_line("CACHED *")
    listed = sample.run("--skip-passed", "-rA")
    listed.stdout.fnmatch_lines(["CACHED tests/test_env.py - cached pass: *"])
    named = sample.run("--skip-passed", "-v", "tests/pricing/test_discount.py::test_bulk")
    named.stdout.fnmatch_lines(
        [
            "cachekit skip-passed: 1 test file(s) keyed in *; 1 passed before (cached) "
            "(whole files neither skipped nor recorded: a test id is named)",
            "CACHED tests/pricing/test_discount.py::test_bulk - cached pass: key ????????????, "
            "recorded by local at ????-??-?? ??:??:?? UTC",
        ]
    )


def test_summary_counts_cached_beside_real_outcomes(sample: Sample) -> None:
    sample.run("--skip-passed")
    sample.replace("src/shop/pricing/rates.py", '"standard": 20', '"standard": 21')
    result = sample.run("--skip-passed")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(result) == {"failed": 1, "passed": 1, "cached": len(EVERY_TEST) - 2}
    assert sample.ran == TAX
    # -x stops early: the summary still counts what was cached (test_reduced now too)
    result = sample.run("--skip-passed", "-x")
    assert outcomes(result) == {"failed": 1, "cached": len(EVERY_TEST) - 1}


def test_off_by_default_and_cache_dir_is_pytests_own(sample: Sample) -> None:
    """Installed but off: no record, no key file, no analysis: byte for byte what pytest
    writes without cachekit."""
    trees = []
    for plugin_args in ([], ["-p", "no:cachekit"]):
        sample.fresh_runner()
        result = sample.run(*plugin_args)
        result.assert_outcomes(passed=len(EVERY_TEST))
        cache_dir = sample.root / ".pytest_cache"
        trees.append(
            {
                str(path.relative_to(cache_dir)): path.read_bytes()
                for path in sorted(cache_dir.rglob("*"))
                if path.is_file()
            }
        )
    assert trees[0] == trees[1]
    sample.run()
    assert sample.ran == EVERY_TEST  # nothing was recorded, nothing is skipped


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({"env": "1"}, "on"),
        ({"env": "verify"}, "verify"),
        ({"ini": "true"}, "on"),
        ({"ini": "on", "env": "0"}, "off"),
        ({"ini": "on", "args": ["--no-skip-passed"]}, "off"),
        ({"env": "0", "args": ["--skip-passed"]}, "on"),
        ({"args": ["--skip-passed-verify"]}, "verify"),
    ],
)
def test_switch_precedence(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    how: dict[str, Any],
    expected: str,
) -> None:
    ini = f"[pytest]\nskip_passed = {how['ini']}\n" if "ini" in how else "[pytest]\n"
    pytester.makeini(ini)
    pytester.makepyfile(test_a="def test_a(): pass")
    if "env" in how:
        monkeypatch.setenv("CACHEKIT_SKIP_PASSED", how["env"])
    result = pytester.runpytest(*how.get("args", []))
    assert result.ret == 0
    header = [line for line in result.outlines if line.startswith("cachekit skip-passed: ")]
    if expected == "off":
        assert header == []
    else:
        mode = "verify (runs every test)" if expected == "verify" else "on"
        assert header[0].startswith(f"cachekit skip-passed: {mode}, ")


def test_bad_switch_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_a="def test_a(): pass")
    monkeypatch.setenv("CACHEKIT_SKIP_PASSED", "maybe")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cachekit: CACHEKIT_SKIP_PASSED: expected one of *'maybe'*"])


def test_collect_only_and_cache_show_do_nothing(sample: Sample) -> None:
    sample.run("--skip-passed")
    records_before = sorted(local_store(sample).list())
    result = sample.run("--skip-passed", "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"{len(EVERY_TEST)} tests collected*"])
    assert sample.run("--skip-passed", "--cache-show").ret == 0
    assert sorted(local_store(sample).list()) == records_before


# -- what counts as passed ---------------------------------------------------------------

OUTCOMES = """
import os
import pytest


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown failed")


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup failed")


def test_teardown_raises(broken_teardown):
    pass


def test_setup_raises(broken_setup):
    pass


def test_fails():
    assert os.environ.get("FLAKY") != "1"


@pytest.mark.xfail(reason="known")
def test_xfail():
    assert 0


@pytest.mark.xfail(reason="fixed?")
def test_xpass():
    pass


@pytest.mark.skip(reason="not here")
def test_skip():
    pass


def test_skip_inside():
    pytest.skip("at runtime")


def test_plain():
    pass
"""


def ran_in(result: pytest.RunResult) -> set[str]:
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    return {report.nodeid.split("::")[1] for report in reports if report.when == "setup"}


def test_only_clean_passes_are_recorded(pytester: pytest.Pytester) -> None:
    """A test whose teardown raised, failures, errors, xfail, xpass and skips are never
    recorded: they all run again; only the plain pass is skipped."""
    pytester.makepyfile(test_outcomes=OUTCOMES)
    first = pytester.runpytest("--skip-passed")
    first.assert_outcomes(passed=3, errors=2, xfailed=1, xpassed=1, skipped=2)
    second = pytester.runpytest("--skip-passed")
    assert ran_in(second) == {
        "test_teardown_raises",
        "test_setup_raises",
        "test_xfail",
        "test_xpass",
        "test_skip",
        "test_skip_inside",
    }
    assert outcomes(second)["cached"] == 2
    store = LocalStore(pytester.path / ".pytest_cache" / "d" / CACHE_DIR_NAME / "store")
    passes = [r for r in records(store).values() if r["value"]["outcome"] == "passed"]
    assert len(passes) == 2  # test_plain and test_fails; the errors are signed failures


def test_failed_last_time_always_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test with a valid record that failed since (here for a reason outside the key)
    runs until it passes again."""
    pytester.makepyfile(test_outcomes=OUTCOMES)
    pytester.runpytest("--skip-passed")
    monkeypatch.setenv("FLAKY", "1")
    failing = pytester.runpytest("--no-skip-passed", "-k", "test_fails")
    failing.assert_outcomes(failed=1, deselected=7)
    monkeypatch.delenv("FLAKY")
    again = pytester.runpytest("--skip-passed")
    assert "test_fails" in ran_in(again)
    assert "test_plain" not in ran_in(again)
    last = pytester.runpytest("--skip-passed")
    assert "test_fails" not in ran_in(last)


SUBTESTS = """
import os
import unittest


class Numbers(unittest.TestCase):
    def test_each(self):
        for number in range(3):
            with self.subTest(number=number):
                self.assertNotEqual(number, int(os.environ.get("BAD_NUMBER", "-1")))


def test_each_with_the_fixture(subtests):
    for number in range(3):
        with subtests.test(number=number):
            assert number != int(os.environ.get("BAD_NUMBER", "-1"))
"""


def test_a_test_with_a_failed_subtest_is_not_recorded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed subtest is a failed test, even where pytest reports the test itself as
    passed (unittest's ``subTest``): it runs again until all its subtests pass."""
    pytester.makepyfile(test_subtests=SUBTESTS)
    monkeypatch.setenv("BAD_NUMBER", "1")
    first = pytester.runpytest("--skip-passed", "-rA")
    # pytest reports the unittest test itself as passed, beside its failed subtest:
    first.stdout.fnmatch_lines(["PASSED test_subtests.py::Numbers::test_each"])
    second = pytester.runpytest("--skip-passed")
    assert ran_in(second) == {"Numbers", "test_each_with_the_fixture"}
    monkeypatch.delenv("BAD_NUMBER")
    pytester.runpytest("--skip-passed")
    assert ran_in(pytester.runpytest("--skip-passed")) == set()


def test_a_test_that_needed_a_rerun_is_not_recorded(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest-rerunfailures: failed, then passed on a rerun: flaky, so it runs again."""
    monkeypatch.setenv("FLAKY_MARKER", str(tmp_path / "failed-once"))
    pytester.makepyfile(
        test_flaky="""
        import os, pathlib

        def test_flaky():
            marker = pathlib.Path(os.environ["FLAKY_MARKER"])
            if not marker.exists():
                marker.write_text("failed once")
                assert 0

        def test_steady():
            pass
        """
    )
    first = pytester.runpytest("--skip-passed", "--reruns", "1")
    assert outcomes(first) == {"passed": 2, "rerun": 1}
    second = pytester.runpytest("--skip-passed", "--reruns", "1")
    assert ran_in(second) == {"test_flaky"}
    third = pytester.runpytest("--skip-passed", "--reruns", "1")
    assert ran_in(third) == set()


def test_teardown_error_in_a_class_scoped_fixture_spoils_the_last_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_scope="""
        import pytest

        @pytest.fixture(scope="module")
        def shared():
            yield
            raise RuntimeError("module teardown failed")

        def test_first(shared):
            pass

        def test_last(shared):
            pass
        """
    )
    first = pytester.runpytest("--skip-passed")
    first.assert_outcomes(passed=2, errors=1)
    second = pytester.runpytest("--skip-passed")
    assert ran_in(second) == {"test_last"}  # its teardown raised: never recorded


def test_a_file_whose_key_cannot_be_computed_always_runs(sample: Sample, tmp_path: Path) -> None:
    """A test file that is a link to a file outside the project has no key: its tests
    run every time, with one warning, and the others are skipped as usual."""
    outside = tmp_path / "elsewhere" / "test_linked.py"
    outside.parent.mkdir()
    outside.write_text("def test_linked():\n    pass\n")
    (sample.root / "tests" / "test_linked.py").symlink_to(outside)
    sample.run("--skip-passed")
    result = sample.run("--skip-passed")
    assert sample.ran == {"tests/test_linked.py::test_linked"}
    text = warnings_text(result)
    assert text.count("could not compute the keys of some test files") == 1, text
    assert "(1 problem(s); first: " in text
    assert "not a project file" in text


# -- what the key covers: each kind of change reruns exactly the dependent tests ---------


def test_no_change_reruns_nothing(sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    sample.run("--skip-passed")
    monkeypatch.setenv("UNRELATED_VARIABLE", "changed")  # not named in skip_passed_env
    sample.run("--skip-passed")
    assert sample.ran == set()


def test_change_behind_a_relative_import(sample: Sample) -> None:
    """``discount`` imports ``clamp`` with ``from ..util import``: changing its body
    reruns the tests that executed it (through ``apply_discount`` or directly), nothing
    else: not ``test_bulk`` nor ``test_round``, in the same files."""
    sample.run("--skip-passed")
    sample.replace(
        "src/shop/util.py",
        "return max(low, min(high, value))",
        "return min(max(value, low), high)",
    )
    result = sample.run("--skip-passed")
    result.assert_outcomes(passed=len(CLAMP_USERS))
    assert sample.ran == CLAMP_USERS


def test_change_in_a_module_a_test_helper_imports_relatively(sample: Sample) -> None:
    sample.run("--skip-passed")
    sample.replace(
        "tests/helpers.py", "return int(round(value * 100))", "return round(value * 100)"
    )
    sample.run("--skip-passed")
    assert sample.ran == {"tests/pricing/test_discount.py::test_cents"}  # the one caller


def test_change_in_a_relatively_imported_data_module(sample: Sample) -> None:
    sample.run("--skip-passed")
    sample.replace("src/shop/pricing/rates.py", '"reduced": 5}', '"reduced": 5, "zero": 0}')
    sample.run("--skip-passed")
    assert sample.ran == TAX


@pytest.mark.parametrize(
    ("conftest", "dependent"),
    [
        ("tests/pricing/conftest.py", DISCOUNT | TAX),
        ("tests/conftest.py", EVERY_TEST),
        ("conftest.py", EVERY_TEST),
    ],
)
def test_change_in_a_conftest(sample: Sample, conftest: str, dependent: set[str]) -> None:
    sample.run("--skip-passed")
    sample.write(conftest, sample.read(conftest) + "\n# changed\n")
    sample.run("--skip-passed")
    assert sample.ran == dependent


def test_change_in_a_declared_data_file_reruns_everything(sample: Sample) -> None:
    """Data files enter every key (which test reads which file cannot be seen)."""
    sample.run("--skip-passed")
    sample.write("data/limits.json", '{"max_quantity": 50, "note": "same limit"}\n')
    sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST
    sample.write("data/undeclared.txt", "not matched by skip_passed_data\n")
    sample.run("--skip-passed")
    assert sample.ran == set()


def upgrade(sample: Sample, name: str, old: str, new: str) -> None:
    """A new version of a distribution on the sample's site directory, as an upgrade
    leaves it: its ``.dist-info`` renamed, its metadata rewritten."""
    site = sample.root / ".deps" / "site-packages"
    (site / f"{name}-{old}.dist-info").rename(site / f"{name}-{new}.dist-info")
    sample.write(
        f".deps/site-packages/{name}-{new}.dist-info/METADATA",
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {new}\n",
    )


def test_change_of_a_dependencys_version_reruns_its_importers(sample: Sample) -> None:
    """A real distribution on a site directory the inner pytest sees: a new version
    changes the keys of the test files whose imports reach it (``shop.inventory``
    imports ``fakedep``), not the others'."""
    sample.run("--skip-passed")
    upgrade(sample, "fakedep", "1.0", "1.1")
    sample.run("--skip-passed")
    assert sample.ran == INVENTORY
    sample.run("--skip-passed")
    assert sample.ran == set()


def test_a_bump_of_a_distribution_nothing_imports_reruns_nothing(sample: Sample) -> None:
    sample.run("--skip-passed")
    upgrade(sample, "toolbox", "1.0", "2.0")
    sample.run("--skip-passed", "-v", "--skip-passed-explain")
    assert sample.ran == set()


def test_lock_file_stands_for_the_installed_distributions(sample: Sample) -> None:
    sample.write("pytest.ini", SAMPLE["pytest.ini"] + "skip_passed_lock_file = requirements.lock\n")
    sample.write("requirements.lock", "fakedep==1.0\n")
    sample.run("--skip-passed")
    site = sample.root / ".deps" / "site-packages"
    (site / "fakedep-1.0.dist-info").rename(site / "fakedep-1.1.dist-info")
    sample.run("--skip-passed")
    assert sample.ran == set()  # the lock file, not the installed versions, counts
    sample.write("requirements.lock", "fakedep==1.1\n")
    sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST


class _OtherInterpreter:
    """``sys`` as seen by the fingerprint, except for the interpreter's version."""

    version_info = (3, 99, 0, "final", 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(sys, name)


def test_interpreter_version_change_reruns_everything_simulated(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated: only this Python is installed, so the fingerprint is shown another
    ``sys.version_info``; the key must change with it."""
    sample.run("--skip-passed")
    monkeypatch.setattr(cachekit.skip.fingerprint, "sys", _OtherInterpreter())
    sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST
    sample.run("--skip-passed")
    assert sample.ran == set()


def test_named_environment_variable_reruns_everything(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample.run("--skip-passed")
    monkeypatch.setenv("SAMPLE_MODE", "slow")  # named in skip_passed_env
    sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST
    monkeypatch.setenv("SAMPLE_MODE", "fast")  # set, where it was unset: another key
    sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST
    sample.run("--skip-passed")
    assert sample.ran == set()


def test_salt_change_reruns_everything(sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    sample.run("--skip-passed")
    monkeypatch.setenv("CACHEKIT_SKIP_PASSED_SALT", "fresh start")
    sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST


def test_new_test_file_runs_alone(sample: Sample) -> None:
    sample.run("--skip-passed")
    sample.write("tests/test_new.py", "def test_new():\n    pass\n")
    sample.run("--skip-passed")
    assert sample.ran == {"tests/test_new.py::test_new"}


# -- no breaking change is hidden by a skip ----------------------------------------------

#: Twenty single-line breaking changes spread over the sample: (file, old, new).
MUTATIONS = [
    ("src/shop/util.py", "return round(value + 1e-9, 2)", "return round(value, 1)"),
    ("src/shop/util.py", "return max(low, min(high, value))", "return min(low, max(high, value))"),
    ("src/shop/pricing/discount.py", "clamp(percent, 0, 100)", "clamp(percent, 0, 200)"),
    ("src/shop/pricing/discount.py", "(100 - percent) / 100)", "(100 - percent) / 10)"),
    ("src/shop/pricing/discount.py", "if quantity >= 100:", "if quantity > 100:"),
    ("src/shop/pricing/discount.py", "return 10", "return 11"),
    ("src/shop/pricing/rates.py", '"standard": 20', '"standard": 21'),
    ("src/shop/pricing/tax.py", "return price + price *", "return price *"),
    ("src/shop/pricing/__init__.py", '"""Pricing."""', 'raise ImportError("broken")'),
    ("src/shop/__init__.py", '"""A sample shop."""', "VERSION = 1 / 0"),
    ("src/shop/inventory.py", "return count + amount", "return count - amount"),
    ("src/shop/inventory.py", "fakedep.label(count)", "fakedep.label(count + 1)"),
    ("src/shop/limits.py", '["max_quantity"]', '["max_quantity"] + 1'),
    ("data/limits.json", '"max_quantity": 50', '"max_quantity": 51'),
    ("conftest.py", 'return "EUR"', 'return "USD"'),
    ("tests/conftest.py", "return [10.0, 20.0]", "return [10.0]"),
    ("tests/pricing/conftest.py", "return 100.0", "return 200.0"),
    ("tests/helpers.py", "int(round(value * 100))", "int(value * 10)"),
    ("tests/test_util.py", "assert clamp(5, 0, 3) == 3", "assert clamp(5, 0, 3) == 4"),
    ("tests/pricing/test_tax.py", '"reduced") == 105.0', '"reduced") == 106.0'),
]


def failures(result: pytest.RunResult) -> set[str]:
    reprec = result.reprec  # type: ignore[attr-defined]
    reports = [
        *reprec.getreports("pytest_runtest_logreport"),
        *reprec.getreports("pytest_collectreport"),
    ]
    return {report.nodeid for report in reports if report.failed}


@pytest.mark.slow
def test_no_breaking_change_is_hidden_by_a_skip(sample: Sample) -> None:
    """Each mutation: a run with ``--skip-passed`` (nothing failed last time, so only the
    keys can make the broken tests run) fails exactly where a run of everything fails,
    and verify mode finds no false skip."""
    assert len(MUTATIONS) == 20
    assert len({name for name, _, _ in MUTATIONS}) >= 12
    sample.run("--skip-passed").assert_outcomes(passed=len(EVERY_TEST))
    for name, old, new in MUTATIONS:
        original = sample.read(name)
        sample.replace(name, old, new)
        skipping = sample.run("--skip-passed")
        everything = sample.run("--skip-passed-verify")
        assert failures(everything), f"not a breaking change: {name}: {new}"
        assert failures(skipping) == failures(everything), (name, new)
        everything.stdout.fnmatch_lines(["*cachekit skip-passed verify: 0 false skip(s)*"])
        sample.write(name, original)
        restored = sample.run("--skip-passed")
        assert restored.ret == pytest.ExitCode.OK, (name, restored.stdout.str())
        assert failures(restored) == set()


# -- verify mode ----------------------------------------------------------------------------


def test_verify_mode_reports_false_skips(sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment variable the key does not name breaks a test: ``--skip-passed``
    cannot see it (the documented limit); verify mode runs everything and says so."""
    sample.replace(
        "tests/test_env.py",
        'os.environ.get("SAMPLE_MODE", "fast")',
        'os.environ.get("UNNAMED", "fast")',
    )
    sample.run("--skip-passed")
    monkeypatch.setenv("UNNAMED", "broken")
    hidden = sample.run("--skip-passed")
    assert hidden.ret == pytest.ExitCode.OK  # the limit: an unnamed variable is not seen
    verify = sample.run("--skip-passed-verify")
    assert verify.ret == pytest.ExitCode.TESTS_FAILED
    assert sample.ran == EVERY_TEST
    verify.stdout.fnmatch_lines(
        [
            f"*cachekit skip-passed verify: 1 false skip(s) of {len(EVERY_TEST)} test(s) "
            "that would have been skipped*",
            "FALSE SKIP tests/test_env.py::test_mode - cached pass: key *",
        ]
    )
    monkeypatch.delenv("UNNAMED")
    clean = sample.run("--skip-passed-verify")
    clean.stdout.fnmatch_lines(["*cachekit skip-passed verify: 0 false skip(s) of *"])


def test_verify_mode_records_new_passes(sample: Sample) -> None:
    sample.run("--skip-passed-verify")
    assert sample.ran == EVERY_TEST
    sample.run("--skip-passed")
    assert sample.ran == set()


# -- integrity and trust ---------------------------------------------------------------------


def _edit_records(store: CacheStore, edit: Any) -> None:
    """Apply ``edit(records)`` to every stored part and base of ``skip/passed``."""
    for key in store.list():
        if "/skip/passed/" not in key:
            continue
        entry = store.get(key)
        assert entry is not None
        envelope = codec.decode(entry.data)
        assert isinstance(envelope, dict)
        edit(envelope["value"])
        store.put(key, codec.encode(envelope))


def is_file_record(record: Any) -> bool:
    return isinstance(record, dict) and "count" in record.get("value", {})


def test_tampered_records_are_ignored_with_one_warning(sample: Sample) -> None:
    """Test records; the file records are removed, so that every file is collected."""
    sample.run("--skip-passed")
    store = local_store(sample)
    stored = records(store)
    hashes = sorted(name for name, record in stored.items() if not is_file_record(record))

    def tamper(value: dict[str, Any]) -> None:
        for name in [name for name, record in value.items() if is_file_record(record)]:
            del value[name]
        if hashes[0] in value:  # a changed run label: the signature no longer matches
            value[hashes[0]]["value"]["run"] = "github run 1"
        if hashes[1] in value:  # no signature at all
            value[hashes[1]]["value"]["sig"] = ""
        if hashes[2] in value:  # another test's valid record copied over this one
            value[hashes[2]] = stored[hashes[3]]
        if hashes[4] in value:  # not a record
            value[hashes[4]]["value"] = "passed, trust me"

    _edit_records(store, tamper)
    result = sample.run("--skip-passed")
    assert len(sample.ran) == 4
    assert outcomes(result)["cached"] == len(EVERY_TEST) - 4
    text = warnings_text(result)
    assert text.count("SkipPassedWarning") == 1, text
    assert "ignored 4 record(s) of this run's tests that are unsigned or not signed" in text
    quiet = sample.run("--skip-passed")  # the runs rewrote their records
    assert "SkipPassedWarning" not in warnings_text(quiet)
    assert sample.ran == set()


def test_records_signed_with_another_key_are_never_trusted(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample.run("--skip-passed")
    monkeypatch.setenv(ENV_SIGNING_KEY, OTHER_KEY)
    result = sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST
    assert "SkipPassedWarning" not in warnings_text(result)  # other hashes: never looked at
    monkeypatch.setenv(ENV_SIGNING_KEY, SIGNING_KEY)
    sample.run("--skip-passed")
    assert sample.ran == set()


def test_forged_records_from_a_store_writer_without_the_key(sample: Sample) -> None:
    """Someone who can write the store but lacks the key re-signs nothing: records
    re-pointed at a new key (say, after they changed the code) are ignored."""
    sample.run("--skip-passed")
    sample.replace("src/shop/pricing/rates.py", '"standard": 20', '"standard": 21')
    store = local_store(sample)

    def forge(value: dict[str, Any]) -> None:
        for record in value.values():
            record["value"]["key"] = "0" * 32
            record["at"] = record["at"] + 1000.0

    _edit_records(store, forge)
    result = sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST
    assert TAX & failures(result)


def test_untrusted_run_reads_but_never_writes(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample.run("--skip-passed")
    sample.replace("src/shop/pricing/rates.py", '"reduced": 5}', '"reduced": 5, "zero": 0}')
    monkeypatch.setenv("CACHEKIT_READONLY", "1")
    store = local_store(sample)
    before = {key: store.get(key) for key in store.list()}
    result = sample.run("--skip-passed")
    result.stdout.fnmatch_lines(["cachekit skip-passed: on, records in * (read-only)"])
    assert sample.ran == TAX  # read: the rest was skipped
    sample.run("--skip-passed")
    assert sample.ran == TAX  # and never written
    assert {key: store.get(key) for key in store.list()} == before


def test_without_a_signing_key_locally_a_machine_key_is_generated(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_SIGNING_KEY)
    sample.run("--skip-passed")
    key_file = sample.root / ".pytest_cache" / "d" / CACHE_DIR_NAME / "signing-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    sample.run("--skip-passed")
    assert sample.ran == set()
    key_file.chmod(0o644)
    result = sample.run("--skip-passed")
    assert sample.ran == EVERY_TEST
    assert "is readable or writable by others" in warnings_text(result)


@pytest.mark.parametrize("where", ["ci", "store"])
def test_without_a_signing_key_in_ci_or_with_a_store_nothing_is_skipped(
    sample: Sample, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    sample.run("--skip-passed")  # records, with the key
    monkeypatch.delenv(ENV_SIGNING_KEY)
    args = ["--skip-passed"]
    if where == "ci":
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
    else:
        args.append(f"--cache-url={tmp_path / 'remote'}")
    result = sample.run(*args)
    assert sample.ran == EVERY_TEST
    text = warnings_text(result)
    assert text.count("CACHEKIT_SIGNING_KEY is not set") == 1, text
    assert "nothing is skipped or recorded" in text
    assert not (
        tmp_path / "remote" / "v1" / "local" / "local" / "default" / "default" / "skip"
    ).exists()


def test_short_signing_key_is_refused_with_a_warning(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SIGNING_KEY, "short")
    result = sample.run("--skip-passed")
    assert result.ret == pytest.ExitCode.OK
    assert "CACHEKIT_SIGNING_KEY is too short (5 bytes" in warnings_text(result)


def _secret_free(text: str, secrets: set[str]) -> list[str]:
    return sorted(secret for secret in secrets if secret in text)


def _names_and_paths(sample: Sample) -> set[str]:
    """Every test name, module, directory and file name of the sample, and its paths."""
    found = {str(sample.root), sample.root.name}
    for nodeid in EVERY_TEST:
        found.add(nodeid)
        for piece in re.split(r"/|::|\.py", nodeid):
            if len(piece) >= 4:
                found.add(piece)
                found.add(piece.removeprefix("test_"))
    return {name for name in found if len(name) >= 4}


def test_store_sees_no_test_name_or_path(sample: Sample) -> None:
    sample.run("--skip-passed")
    sample.replace("src/shop/pricing/rates.py", '"standard": 20', '"standard": 21')
    sample.run("--skip-passed")
    store = local_store(sample)
    keys = store.list()
    assert keys
    names = _names_and_paths(sample)
    for key in keys:
        entry = store.get(key)
        assert entry is not None
        text = json.dumps(codec.decode(entry.data))
        assert _secret_free(key + text, names) == [], key


# -- stores ---------------------------------------------------------------------------------


def test_s3_store_between_machines(sample: Sample, s3_url: str) -> None:
    """Records on S3 (moto on loopback): a fresh machine skips what another recorded,
    and the skip records show no name or path."""
    first = sample.run("--skip-passed", f"--cache-url={s3_url}")
    first.assert_outcomes(passed=len(EVERY_TEST))
    first.stdout.fnmatch_lines(["cachekit skip-passed: on, records in s3://*(read-write)"])
    sample.fresh_runner()
    sample.replace("src/shop/pricing/rates.py", '"reduced": 5}', '"reduced": 5, "zero": 0}')
    second = sample.run("--skip-passed", f"--cache-url={s3_url}")
    assert second.ret == pytest.ExitCode.OK
    assert sample.ran == TAX
    sample.fresh_runner()
    sample.run("--skip-passed", f"--cache-url={s3_url}")
    assert sample.ran == set()
    store = open_store(s3_url)
    names = _names_and_paths(sample)
    skip_keys = [key for key in store.list() if "/skip/passed/" in key]
    assert len(skip_keys) == 2  # two runs recorded passes, the third had none to add
    for key in skip_keys:
        entry = store.get(key)
        assert entry is not None
        assert _secret_free(key + json.dumps(codec.decode(entry.data)), names) == []


def test_failing_store_is_one_warning_and_everything_runs(sample: Sample) -> None:
    url = "s3://nowhere/cache?endpoint_url=http://127.0.0.1:9"
    result = sample.run("--skip-passed", f"--cache-url={url}", "--cache-timeout=3")
    assert result.ret == pytest.ExitCode.OK
    assert sample.ran == EVERY_TEST
    text = warnings_text(result)
    assert text.count("skip-passed: could not read the records, running every test") == 1, text


def test_compaction_folds_parts(sample: Sample) -> None:
    sample.write("pytest.ini", SAMPLE["pytest.ini"] + "cache_compact_threshold = 2\n")
    for standard in ("20", "21", "22"):
        sample.write(
            "src/shop/pricing/rates.py", f'RATES = {{"standard": {standard}, "reduced": 5}}\n'
        )
        sample.run("--skip-passed", "-k", "reduced")
    cache = Cache(namespaced_cache(local_store(sample), detect_namespace()).store)
    merged = cache.read_merged(SKIP_PASSED_KEY, SKIP_PASSED)
    assert merged.has_base
    assert len(merged.parts) < 2
    sample.run("--skip-passed", "-k", "reduced")
    assert sample.ran == set()


def test_cachekit_compact_leaves_the_records_to_the_runs(
    sample: Sample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cachekit compact`` holds no signing key: it folds the other keys and leaves the
    signed records as they are, which a fresh runner still reads."""
    url = str(tmp_path / "remote")
    sample.run("--skip-passed", f"--cache-url={url}")
    sample.replace("src/shop/pricing/rates.py", '"standard": 20', '"standard": 20 + 0')
    sample.run("--skip-passed", f"--cache-url={url}")
    assert sample.ran == TAX
    capsys.readouterr()
    assert cli.main(["compact", "--url", url]) == 0
    output = capsys.readouterr().out
    assert re.search(r"/cache/nodeids: folded \d+ part\(s\)", output)  # all passed
    assert re.search(r"/skip/passed: skipped \(signed records", output)
    sample.fresh_runner()
    sample.run("--skip-passed", f"--cache-url={url}")
    assert sample.ran == set()


def test_without_pytests_cache_it_warns_and_runs_everything(sample: Sample) -> None:
    result = sample.run("--skip-passed", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    assert sample.ran == EVERY_TEST
    assert "needs pytest's cache (-p no:cacheprovider is given)" in warnings_text(result)


class Shard:
    """A shard-selection plugin: keeps every other test (by position)."""

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        keep = [item for position, item in enumerate(items) if position % self.count == self.index]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


def test_shards_share_their_records(sample: Sample, tmp_path: Path) -> None:
    url = str(tmp_path / "remote")
    for index in range(2):
        sample.fresh_runner()
        result = sample.run(
            "--skip-passed", f"--cache-url={url}", f"--cache-shard={index + 1}/2",
            plugins=[Shard(index, 2)],
        )  # fmt: skip
        assert 0 < len(sample.ran) < len(EVERY_TEST)
        assert result.ret == pytest.ExitCode.OK
    parts = Cache(namespaced_cache(open_store(url), detect_namespace()).store).parts(
        SKIP_PASSED_KEY
    )
    assert len(parts) == 2
    assert any("-1of2-" in part for part in parts)
    sample.fresh_runner()
    whole = sample.run("--skip-passed", f"--cache-url={url}")
    assert whole.ret == pytest.ExitCode.OK
    assert sample.ran == set()
    # a shard that is all cached exits 0 as well, with its deselections counted (a shard
    # does not skip whole files: they would change what its selection splits)
    sample.fresh_runner()
    shard = sample.run(
        "--skip-passed", f"--cache-url={url}", "--cache-shard=1/2", plugins=[Shard(0, 2)]
    )
    assert shard.ret == pytest.ExitCode.OK
    assert outcomes(shard)["deselected"] + outcomes(shard)["cached"] == len(EVERY_TEST)
    shard.stdout.fnmatch_lines(["*(whole files not skipped: this run is shard 1/2)"])


def test_branch_reads_what_main_recorded_and_writes_its_own(
    sample: Sample, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = str(tmp_path / "remote")
    monkeypatch.setenv("CACHEKIT_REPOSITORY", "acme/shop")
    monkeypatch.setenv("CACHEKIT_REF", "main")
    sample.run("--skip-passed", f"--cache-url={url}")
    main_before = records(namespaced_cache(open_store(url), detect_namespace()).store)
    sample.fresh_runner()
    monkeypatch.setenv("CACHEKIT_REF", "feature/x")
    monkeypatch.setenv("CACHEKIT_BASE_REF", "main")
    sample.replace("src/shop/pricing/rates.py", '"reduced": 5}', '"reduced": 5, "zero": 0}')
    sample.run("--skip-passed", f"--cache-url={url}")
    assert sample.ran == TAX
    monkeypatch.delenv("CACHEKIT_BASE_REF")
    monkeypatch.setenv("CACHEKIT_REF", "main")
    assert records(namespaced_cache(open_store(url), detect_namespace()).store) == main_before


# -- xdist ----------------------------------------------------------------------------------


def test_xdist_controller_records_and_workers_skip(sample: Sample) -> None:
    first = sample.run_subprocess("-n", "2", "--skip-passed")
    first.assert_outcomes(passed=len(EVERY_TEST))
    parts = Cache(namespaced_cache(local_store(sample), detect_namespace()).store).parts(
        SKIP_PASSED_KEY
    )
    assert len(parts) == 1  # the controller wrote; the workers did not
    second = sample.run_subprocess("-n", "2", "--skip-passed")
    assert second.ret == pytest.ExitCode.OK
    assert sample.ran == set()
    assert outcomes(second) == {"cached": len(EVERY_TEST)}
    sample.replace(
        "src/shop/util.py", "return max(low, min(high, value))", "return min(max(value, low), high)"
    )
    third = sample.run_subprocess("-n", "2", "--skip-passed", "-v")
    assert sample.ran == CLAMP_USERS
    assert outcomes(third) == {
        "passed": len(CLAMP_USERS),
        "cached": len(EVERY_TEST - CLAMP_USERS),
    }
    third.stdout.fnmatch_lines(["CACHED tests/test_env.py - cached pass: key *"])


def test_xdist_verify_mode(sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    sample.replace(
        "tests/test_env.py",
        'os.environ.get("SAMPLE_MODE", "fast")',
        'os.environ.get("UNNAMED", "fast")',
    )
    sample.run_subprocess("-n", "2", "--skip-passed")
    monkeypatch.setenv("UNNAMED", "broken")
    result = sample.run_subprocess("-n", "2", "--skip-passed-verify")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert sample.ran == EVERY_TEST
    result.stdout.fnmatch_lines(
        [
            "*cachekit skip-passed verify: 1 false skip(s) of *",
            "FALSE SKIP tests/test_env.py::test_mode - *",
        ]
    )


# -- whole files ----------------------------------------------------------------------------

#: A test file that logs each import of itself (to the file ``IMPORT_LOG`` names).
IMPORTED = """\
import os

with open(os.environ["IMPORT_LOG"], "a", encoding="utf-8") as log:
    log.write(__name__ + "\\n")


def test_one():
    pass


def test_two():
    assert os.environ.get("BREAK_TWO") != "1"


def test_three():
    pass
"""
IMPORTED_TESTS = {f"tests/test_imported.py::test_{name}" for name in ("one", "two", "three")}


@pytest.fixture
def imports(sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample with ``tests/test_imported.py``; the log of its imports."""
    log = tmp_path / "imports.log"
    log.write_text("")
    monkeypatch.setenv("IMPORT_LOG", str(log))
    sample.write("tests/test_imported.py", IMPORTED)
    return log


def imported(log: Path) -> int:
    """How many times the test module was imported since the last call."""
    count = len(log.read_text().split())
    log.write_text("")
    return count


def collected_files(result: pytest.RunResult) -> set[str]:
    """The test files pytest collected (imported) in an in-process run."""
    reports = result.reprec.getreports("pytest_collectreport")  # type: ignore[attr-defined]
    return {report.nodeid for report in reports if report.nodeid.endswith(".py")}


def file_records(store: CacheStore) -> dict[str, Any]:
    return {name: record for name, record in records(store).items() if is_file_record(record)}


SAMPLE_FILES = {nodeid.partition("::")[0] for nodeid in EVERY_TEST}


def test_a_conftest_ignore_collect_returning_false_does_not_turn_whole_files_off(
    sample: Sample, imports: Path
) -> None:
    """A common spelling: a conftest's ``pytest_ignore_collect`` answers False for every
    file it keeps. pytest takes the first answer that is not None, so a plain (even
    ``trylast``) implementation never ran for those files; cachekit's wraps the others,
    and still skips whole files. A file the conftest ignores is not counted as cached."""
    sample.write(
        "conftest.py",
        sample.read("conftest.py")
        + "\n\ndef pytest_ignore_collect(collection_path, config):\n"
        + "    if collection_path.is_file():\n"
        + '        return collection_path.name == "test_ignored.py"\n',
    )
    sample.write("tests/test_ignored.py", "def test_never():\n    raise AssertionError\n")
    first = sample.run("--skip-passed")
    first.assert_outcomes(passed=len(EVERY_TEST) + 3)
    assert imported(imports) == 1
    second = sample.run("--skip-passed")
    assert imported(imports) == 0
    assert collected_files(second) == set()
    assert outcomes(second) == {"cached": len(EVERY_TEST) + 3}


def test_a_file_whose_tests_all_passed_is_not_imported(sample: Sample, imports: Path) -> None:
    first = sample.run("--skip-passed")
    first.assert_outcomes(passed=len(EVERY_TEST) + 3)
    assert imported(imports) == 1
    assert len(file_records(local_store(sample))) == len(SAMPLE_FILES) + 1
    second = sample.run("--skip-passed", "-v")
    assert second.ret == pytest.ExitCode.OK
    assert imported(imports) == 0  # skipped before pytest imported it
    assert collected_files(second) == set()
    assert sample.ran == set()
    assert outcomes(second) == {"cached": len(EVERY_TEST) + 3}
    second.stdout.fnmatch_lines(
        [
            "*collected 0 items",
            "cachekit skip-passed: 7 test file(s) keyed in *, 0 test(s) checked in *; "
            f"{len(EVERY_TEST) + 3} passed before (cached), 7 whole file(s) not collected",
            "CACHED tests/test_imported.py - cached pass: key ????????????, recorded by local "
            "at ????-??-?? ??:??:?? UTC (whole file: 3 test(s))",
        ]
    )


def test_a_file_with_a_failing_test_is_collected_and_its_passes_skipped_one_by_one(
    sample: Sample, imports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not recorded whole while a test of it fails; its passes are skipped as tests. Once
    the failing test passes (and the others were cached), the file is recorded whole."""
    monkeypatch.setenv("BREAK_TWO", "1")  # not named in skip_passed_env: the key stays
    first = sample.run("--skip-passed")
    assert outcomes(first) == {"failed": 1, "passed": len(EVERY_TEST) + 2}
    assert imported(imports) == 1
    again = sample.run("--skip-passed", "-v")
    assert imported(imports) == 1
    assert collected_files(again) == {"tests/test_imported.py"}
    assert sample.ran == {"tests/test_imported.py::test_two"}
    assert outcomes(again) == {"failed": 1, "cached": len(EVERY_TEST) + 2}
    again.stdout.fnmatch_lines(["CACHED tests/test_imported.py::test_one - cached pass: *"])
    monkeypatch.delenv("BREAK_TWO")
    fixed = sample.run("--skip-passed")
    assert sample.ran == {"tests/test_imported.py::test_two"}  # it failed last time
    assert outcomes(fixed) == {"passed": 1, "cached": len(EVERY_TEST) + 2}
    assert imported(imports) == 1
    whole = sample.run("--skip-passed")
    assert imported(imports) == 0
    assert outcomes(whole) == {"cached": len(EVERY_TEST) + 3}


def test_a_change_behind_a_relative_import_collects_the_dependent_files(sample: Sample) -> None:
    """``discount`` imports ``clamp`` with ``from ..util import``: changing it collects
    the discount and util test files again, and no other."""
    sample.run("--skip-passed")
    sample.replace(
        "src/shop/util.py",
        "return max(low, min(high, value))",
        "return min(max(value, low), high)",
    )
    result = sample.run("--skip-passed")
    assert collected_files(result) == {"tests/pricing/test_discount.py", "tests/test_util.py"}
    assert sample.ran == CLAMP_USERS
    assert outcomes(result) == {
        "passed": len(CLAMP_USERS),
        "cached": len(EVERY_TEST - CLAMP_USERS),
    }
    again = sample.run("--skip-passed")
    assert collected_files(again) == set()


class DeselectOne:
    """A plugin that deselects one test, as a shard selection cachekit cannot see would."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid == self.nodeid])
        items[:] = [item for item in items if item.nodeid != self.nodeid]


def test_a_file_partly_deselected_is_not_recorded_whole(sample: Sample) -> None:
    bulk = "tests/pricing/test_discount.py::test_bulk"
    sample.run("--skip-passed", "-k", "not test_bulk")
    assert file_records(local_store(sample)) == {}  # -k: no file is recorded whole
    result = sample.run("--skip-passed")
    assert collected_files(result) == SAMPLE_FILES
    assert sample.ran == {bulk}
    assert len(file_records(local_store(sample))) == len(SAMPLE_FILES)

    sample.fresh_runner()
    result = sample.run("--skip-passed", plugins=[DeselectOne(bulk)])
    assert outcomes(result) == {"passed": len(EVERY_TEST) - 1, "deselected": 1}
    assert len(file_records(local_store(sample))) == len(SAMPLE_FILES) - 1
    result = sample.run("--skip-passed")
    assert collected_files(result) == {"tests/pricing/test_discount.py"}
    assert sample.ran == {bulk}


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["tests/test_util.py"], "a file is named"),
        (["tests/test_util.py::test_round"], "a test id is named"),
        (["-k", "round"], "-k is given"),
        (["-m", "not slow"], "-m is given"),
        (["--deselect", "tests/test_util.py::test_clamp"], "--deselect is given"),
        (["--lf"], "--lf is given"),
        (["--sw"], "--sw is given"),
    ],
)
def test_a_run_that_selects_tests_skips_them_one_by_one(
    sample: Sample, args: list[str], why: str
) -> None:
    """The user asked for some tests: whole files' counts would not say what they asked
    for, and ``--lf`` and test ids drop tests while collecting, so such a run neither
    skips nor records whole files."""
    sample.run("--skip-passed")
    records_before = file_records(local_store(sample))
    result = sample.run("--skip-passed", *args)
    assert sample.ran == set()
    assert outcomes(result)["cached"] >= 1
    result.stdout.fnmatch_lines(
        [f"cachekit skip-passed: * passed before (cached) (whole files neither *: {why})"]
    )
    assert file_records(local_store(sample)) == records_before


def test_an_ignored_file_is_not_counted_as_cached(sample: Sample) -> None:
    sample.run("--skip-passed")
    result = sample.run("--skip-passed", "--ignore=tests/test_env.py")
    assert outcomes(result) == {"cached": len(EVERY_TEST - ENV)}


def test_doctest_modules_keep_their_own_file_records(sample: Sample) -> None:
    """``--doctest-modules`` adds tests to a module: files recorded without it are
    collected with it (their tests skipped one by one), and recorded apart."""
    sample.write("tests/test_util.py", '"""\n>>> 1 + 1\n2\n"""\n' + SAMPLE["tests/test_util.py"])
    sample.run("--skip-passed")
    with_doctests = sample.run("--skip-passed", "--doctest-modules", "tests")
    assert "tests/test_util.py" in collected_files(with_doctests)
    assert sample.ran == {"tests/test_util.py::tests.test_util"}
    again = sample.run("--skip-passed", "--doctest-modules", "tests")
    assert collected_files(again) & SAMPLE_FILES == set()
    assert outcomes(again) == {"cached": len(EVERY_TEST) + 1}
    plain = sample.run("--skip-passed")
    assert collected_files(plain) == set()
    assert outcomes(plain) == {"cached": len(EVERY_TEST)}


def test_no_tests_at_all_still_exits_5(pytester: pytest.Pytester) -> None:
    """Exit code 5 becomes 0 only when tests were cached."""
    pytester.makepyfile(helper="VALUE = 1\n")
    assert pytester.runpytest("--skip-passed").ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert pytester.runpytest("--skip-passed").ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_tampered_file_records_are_ignored_with_one_warning(sample: Sample) -> None:
    """A file whose record is tampered with is collected; its tests' own records still
    skip them. The run records the file again."""
    sample.run("--skip-passed")
    store = local_store(sample)
    stored = records(store)
    files = sorted(name for name, record in stored.items() if is_file_record(record))
    tests = sorted(name for name, record in stored.items() if not is_file_record(record))
    assert len(files) == len(SAMPLE_FILES)

    def tamper(value: dict[str, Any]) -> None:
        if files[0] in value:  # a count changed: the signature no longer matches
            value[files[0]]["value"]["count"] = 50
        if files[1] in value:  # no signature at all
            value[files[1]]["value"]["sig"] = ""
        if files[2] in value:  # another file's valid record copied over this one
            value[files[2]] = stored[files[3]]
        if files[4] in value:  # a test's valid record where a file's belongs
            value[files[4]] = stored[tests[0]]

    _edit_records(store, tamper)
    result = sample.run("--skip-passed")
    assert len(collected_files(result)) == 4
    assert sample.ran == set()
    assert outcomes(result) == {"cached": len(EVERY_TEST), "warnings": 1}
    text = warnings_text(result)
    assert text.count("SkipPassedWarning") == 1, text
    assert "ignored 4 record(s) of this run's tests that are unsigned or not signed" in text
    quiet = sample.run("--skip-passed")  # the run recorded those files again
    assert "SkipPassedWarning" not in warnings_text(quiet)
    assert collected_files(quiet) == set()


def test_store_sees_no_file_name_or_path(sample: Sample) -> None:
    sample.run("--skip-passed")
    store = local_store(sample)
    found = file_records(store)
    assert len(found) == len(SAMPLE_FILES)
    assert sorted(record["value"]["count"] for record in found.values()) == [1, 2, 2, 2, 2, 4]
    names = _names_and_paths(sample) | SAMPLE_FILES | {str(sample.root / "tests")}
    for key in store.list():
        entry = store.get(key)
        assert entry is not None
        text = json.dumps(codec.decode(entry.data))
        assert _secret_free(key + text, names) == [], key


def test_xdist_skips_the_same_files_as_a_single_process(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker skips the same files (or their collections would differ), and the
    controller counts them. Read-only runs, so both see the same records."""
    first = sample.run_subprocess("-n", "2", "--skip-passed")
    first.assert_outcomes(passed=len(EVERY_TEST))
    assert len(file_records(local_store(sample))) == len(SAMPLE_FILES)
    sample.replace(
        "src/shop/util.py", "return max(low, min(high, value))", "return min(max(value, low), high)"
    )
    monkeypatch.setenv("CACHEKIT_READONLY", "1")
    results = {}
    for args in (["-n", "2"], ["-n", "0"]):
        result = sample.run_subprocess(*args, "--skip-passed", "-v")
        assert result.ret == pytest.ExitCode.OK
        assert sample.ran == CLAMP_USERS
        assert outcomes(result) == {
            "passed": len(CLAMP_USERS),
            "cached": len(EVERY_TEST - CLAMP_USERS),
        }
        results[args[1]] = sorted(line for line in result.outlines if line.startswith("CACHED "))
    assert results["2"] == results["0"]
    # The two files collected hold a cached test each (they do not execute clamp).
    assert results["2"][0].startswith("CACHED tests/pricing/test_discount.py::test_bulk - ")
    assert results["2"][1].startswith("CACHED tests/pricing/test_tax.py - cached pass: key ")
    assert len(results["2"]) == len(SAMPLE_FILES) - 2 + 2
    monkeypatch.delenv("CACHEKIT_READONLY")
    sample.run_subprocess("-n", "2", "--skip-passed")
    every = sample.run_subprocess("-n", "2", "--skip-passed")
    assert every.ret == pytest.ExitCode.OK  # no test collected, all cached: not exit 5
    assert outcomes(every) == {"cached": len(EVERY_TEST)}
    assert sample.ran == set()


def test_verify_mode_reports_a_false_skip_of_a_whole_file(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment variable the key does not name breaks a test of a file skipped
    whole; verify mode collects and runs it, and names the file record that would have
    skipped it."""
    sample.replace(
        "tests/test_env.py",
        'os.environ.get("SAMPLE_MODE", "fast")',
        'os.environ.get("UNNAMED", "fast")',
    )
    sample.run("--skip-passed")
    monkeypatch.setenv("UNNAMED", "broken")
    hidden = sample.run("--skip-passed")
    assert hidden.ret == pytest.ExitCode.OK  # the limit: an unnamed variable is not seen
    assert collected_files(hidden) == set()
    verify = sample.run("--skip-passed-verify")
    assert verify.ret == pytest.ExitCode.TESTS_FAILED
    assert collected_files(verify) == SAMPLE_FILES
    assert sample.ran == EVERY_TEST
    verify.stdout.fnmatch_lines(
        [
            f"cachekit skip-passed (verify): *; {len(EVERY_TEST)} would be skipped "
            f"({len(SAMPLE_FILES)} whole file(s)), all run",
            f"*cachekit skip-passed verify: 1 false skip(s) of {len(EVERY_TEST)} test(s) "
            "that would have been skipped*",
            "FALSE SKIP tests/test_env.py::test_mode - cached pass: key ????????????, recorded "
            "by local at * (whole file: 2 test(s))",
        ]
    )


def test_verify_mode_reports_a_file_with_tests_its_record_does_not_count(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that exists only when an unnamed variable is set: its file is skipped whole
    with it (the limit of whole files); verify mode sees the count differ."""
    sample.write(
        "tests/test_optional.py",
        "import os\n\n\ndef test_always():\n    pass\n\n\n"
        'if os.environ.get("EXTRA"):\n\n    def test_extra():\n        pass\n',
    )
    sample.run("--skip-passed")
    monkeypatch.setenv("EXTRA", "1")
    hidden = sample.run("--skip-passed")
    assert outcomes(hidden) == {"cached": len(EVERY_TEST) + 1}  # test_extra did not run
    verify = sample.run("--skip-passed-verify")
    assert verify.ret == pytest.ExitCode.OK
    verify.stdout.fnmatch_lines(
        [
            "*cachekit skip-passed verify: 1 false skip(s) of *",
            "FALSE SKIP tests/test_optional.py - cached pass: key * (whole file: 1 test(s)); "
            "2 test(s) collected now",
        ]
    )


def test_without_the_option_its_modules_are_never_imported(pytester: pytest.Pytester) -> None:
    """A run without --skip-passed pays nothing for it: not even importing its code."""
    pytester.makepyfile(
        """
        import sys

        def test_not_loaded():
            loaded = {
                "cachekit_pytest.skip",
                "cachekit_pytest.skip.collect",
                "cachekit_pytest.skip.keys",
                "cachekit_pytest.skip.run",
                "cachekit_pytest.skip.selection",
                "cachekit_pytest.skip.store",
                "cachekit_pytest.skip.summary",
                "cachekit_pytest.skip.wire",
                "cachekit_pytest.skip.worker",
                "cachekit.skip.records",
            }
            assert not loaded & set(sys.modules)
            assert "cachekit.skip.fingerprint" not in sys.modules
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("--skip-passed", "-p", "no:randomly")
    result.assert_outcomes(failed=1)  # and with it, they are
