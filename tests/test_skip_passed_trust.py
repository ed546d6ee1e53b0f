"""``--skip-passed`` against a store writer without the signing key: what decides a skip
is signed, names the namespace it was made for, and is never dated in the future.

Every test drives real pytest runs (pytester) against a real store (a directory), and
plants or copies objects with the store API, as someone with write access would.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from cachekit import Cache, CacheStore, open_store
from cachekit.ci.layout import LASTFAILED_KEY, SKIP_PASSED, SKIP_PASSED_KEY, namespace_prefix
from cachekit.ci.namespace import detect_namespace, namespaced_cache
from cachekit.skip.dependencies import DEPENDENCIES_KEY, DependencySets
from cachekit.stores.wrappers import PrefixedStore
from test_fingerprint import age, forge_stale_entry
from test_skip_passed import _environment, ran_in  # the autouse environment: a key, no CI

__all__ = ["_environment"]

MODULE = """
import os


def test_flaky():
    assert os.environ.get("FLAKY") != "1"


def test_db():
    assert os.environ.get("CACHEKIT_CONFIG") != "postgres"


def test_plain():
    pass
"""
FLAKY = "test_module.py::test_flaky"


def _url(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def _run(pytester: pytest.Pytester, url: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--cache-url={url}", "-p", "no:randomly", *args)


def _plant_part(store: CacheStore, key: str, part: str, value: Any) -> None:
    """An unsigned part, written as any store writer could (create-only, like a run)."""
    Cache(namespaced_cache(store, detect_namespace()).store).write_part(key, part, value)


def _fails_then_flaky(pytester: pytest.Pytester, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """test_flaky passes (a signed pass is recorded), then fails with the same key (a
    reason outside the key): the run that sees the failure runs it (verify mode)."""
    pytester.makepyfile(test_module=MODULE)
    _run(pytester, url, "--skip-passed")
    monkeypatch.setenv("FLAKY", "1")
    seen = _run(pytester, url, "--skip-passed-verify")
    assert seen.ret == pytest.ExitCode.TESTS_FAILED
    assert "test_flaky" in ran_in(seen)


def test_an_unsigned_lastfailed_part_cannot_unveto_a_stale_pass(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack of issue 15 (2): a planted ``cache/lastfailed`` part dated far in the
    future says test_flaky passed. It still fails: the run must run it and exit 1."""
    url = _url(tmp_path)
    _fails_then_flaky(pytester, url, monkeypatch)
    _plant_part(open_store(url), LASTFAILED_KEY, "planted", {FLAKY: {"at": 1e300, "failed": False}})
    result = _run(pytester, url, "--skip-passed")
    assert "test_flaky" in ran_in(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    again = _run(pytester, url, "--skip-passed")  # and after that run, still
    assert "test_flaky" in ran_in(again)
    assert again.ret == pytest.ExitCode.TESTS_FAILED


def test_an_unsigned_skip_record_cannot_hide_a_signed_failure(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Garbage planted under every test hash of ``skip/passed``, dated in the future,
    neither wins over the signed failure nor lets the older signed pass count again."""
    url = _url(tmp_path)
    _fails_then_flaky(pytester, url, monkeypatch)
    store = open_store(url)
    stored = namespaced_cache(store, detect_namespace()).read_merged(SKIP_PASSED_KEY, SKIP_PASSED)
    planted = {name: {"at": 1e300, "value": {"outcome": "passed"}} for name in stored.value}
    _plant_part(store, SKIP_PASSED_KEY, "planted", planted)
    _plant_part(
        store, LASTFAILED_KEY, "planted", {FLAKY: {"at": time.time() + 60, "failed": False}}
    )
    result = _run(pytester, url, "--skip-passed")
    assert "test_flaky" in ran_in(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_signed_record_dated_in_the_future_is_refused(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed by a run whose clock was an hour ahead: refused (and counted), beyond the
    5 minutes of clock skew allowed."""
    url = _url(tmp_path)
    pytester.makepyfile(test_module=MODULE)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    _run(pytester, url, "--skip-passed")
    monkeypatch.setattr(time, "time", real_time)
    result = _run(pytester, url, "--skip-passed")
    assert {"test_flaky", "test_plain"} <= ran_in(result)
    # Refused where values are read (cachekit.values.merge.CLOCK_SKEW): the part reads as
    # unreadable, so none of its records counts.
    assert "a time in the future" in result.stdout.str() + result.stderr.str()
    monkeypatch.setattr(time, "time", lambda: real_time() + 120)  # within the skew
    _run(pytester, url, "--skip-passed")
    monkeypatch.setattr(time, "time", real_time)
    assert "test_plain" not in ran_in(_run(pytester, url, "--skip-passed"))


def _copy_records(store: CacheStore, source: str, target: str) -> int:
    """Every ``skip/passed`` object of the namespace ``source`` into ``target``."""
    copied = 0
    for key in PrefixedStore(store, source).list(SKIP_PASSED_KEY):
        entry = PrefixedStore(store, source).get(key)
        assert entry is not None
        PrefixedStore(store, target).put(key, entry.data)
        copied += 1
    return copied


def test_records_copied_into_another_config_do_not_verify(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 (3): passes recorded under ``sqlite`` copied into ``postgres``, where
    test_db fails (and never passed): it still runs there, and the copies are counted."""
    url = _url(tmp_path)
    pytester.makepyfile(test_module=MODULE)
    monkeypatch.setenv("CACHEKIT_CONFIG", "sqlite")
    assert _run(pytester, url, "--skip-passed").ret == pytest.ExitCode.OK
    store = open_store(url)
    sqlite = namespace_prefix("local", "local", "", "sqlite")
    postgres = namespace_prefix("local", "local", "", "postgres")
    assert _copy_records(store, sqlite, postgres) >= 1
    monkeypatch.setenv("CACHEKIT_CONFIG", "postgres")
    result = _run(pytester, url, "--skip-passed")
    assert ran_in(result) == {"test_flaky", "test_db", "test_plain"}
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "ignored 4 record(s)" in result.stdout.str() + result.stderr.str()
    monkeypatch.setenv("CACHEKIT_CONFIG", "sqlite")  # where they were made, they still count
    assert ran_in(_run(pytester, url, "--skip-passed")) == set()


def test_records_copied_into_another_branch_do_not_verify_but_the_base_still_counts(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A branch reads main's records through the read chain (they verify as main's);
    main's records copied under the branch's own ref do not verify there."""
    url = _url(tmp_path)
    pytester.makepyfile(test_module=MODULE)
    monkeypatch.setenv("CACHEKIT_REF", "main")
    _run(pytester, url, "--skip-passed")
    monkeypatch.setenv("CACHEKIT_REF", "feature/x")
    monkeypatch.setenv("CACHEKIT_BASE_REF", "main")
    through_chain = _run(pytester, url, "--skip-passed")
    assert "test_plain" not in ran_in(through_chain)
    monkeypatch.delenv("CACHEKIT_BASE_REF")
    monkeypatch.setenv("CACHEKIT_REF", "other")
    store = open_store(url)
    main = namespace_prefix("local", "main")
    assert _copy_records(store, main, namespace_prefix("local", "other")) >= 1
    copied = _run(pytester, url, "--skip-passed")
    assert "test_plain" in ran_in(copied)
    assert "ignored 4 record(s)" in copied.stdout.str() + copied.stderr.str()


# -- user-controlled labels (issue 15, 9) ---------------------------------------------------

LONG = "shard-" + "x" * 250
CONTROL = "shard\x1b[31m\nred"


@pytest.mark.parametrize("label", [LONG, CONTROL], ids=["long", "control-character"])
@pytest.mark.parametrize("where", ["--cache-shard", "CACHEKIT_SHARD", "CACHEKIT_RUN_ID"])
def test_a_shard_or_run_label_of_any_text_is_recorded(
    pytester: pytest.Pytester,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    label: str,
) -> None:
    """A label over 200 characters or with control characters used to raise in the
    record validator at session finish (an all-passing suite exited 1): now the run
    label holds a readable stem and a hash, and the next run skips what this one passed."""
    url = _url(tmp_path)
    pytester.makepyfile(test_module="def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    args = ["--skip-passed"]
    if where == "--cache-shard":
        args.append(f"--cache-shard={label}")
    else:
        monkeypatch.setenv(where, label)
    first = _run(pytester, url, *args)
    assert first.ret == pytest.ExitCode.OK, first.stdout.str()
    assert "Traceback" not in first.stdout.str() + first.stderr.str()
    second = _run(pytester, url, *args)
    assert second.ret == pytest.ExitCode.OK
    assert ran_in(second) == set()
    assert second.parseoutcomes() == {"cached": 2}


def test_deleting_a_signed_failure_rolls_back_to_the_pass_before_it(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the model does NOT prevent (docs/security.md, "Can"): a store writer who
    deletes the part holding the signed failure, and the unsigned lastfailed, rolls the
    namespace back to the state before it; the earlier signed pass (same test, same key,
    same namespace) counts again. Nothing else in the store could have made it skip."""
    url = _url(tmp_path)
    _fails_then_flaky(pytester, url, monkeypatch)
    store = namespaced_cache(open_store(url), detect_namespace()).store
    parts = sorted(store.list(f"{SKIP_PASSED_KEY}/@parts/"))
    assert len(parts) == 2  # the first run's passes, then the failure
    store.delete(parts[-1])
    for key in store.list(LASTFAILED_KEY):
        store.delete(key)
    shutil.rmtree(pytester.path / ".pytest_cache")
    rolled_back = _run(pytester, url, "--skip-passed")
    assert "test_flaky" not in ran_in(rolled_back)
    assert rolled_back.ret == pytest.ExitCode.OK


HELPER = """
def scale(value):
    return value * 2


def offset(value):
    return value + 1
"""


def test_a_planted_dependency_set_cannot_cause_a_skip(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """A store writer replaces every dependency set with one that leaves out what changed
    (``scale``), under the same ids: such a set does not hash to its id and is dropped, so
    the test that executed ``scale`` runs; the other one stays skipped."""
    url = _url(tmp_path)
    pytester.makepyfile(
        helper=HELPER,
        test_module="from helper import offset, scale\n\n\n"
        "def test_scale():\n    assert scale(2) == 4\n\n\n"
        "def test_offset():\n    assert offset(2) == 3\n",
    )
    pytester.makeini("[pytest]\npythonpath = .\n")
    _run(pytester, url, "--skip-passed")
    store = open_store(url)
    sets = namespaced_cache(store, detect_namespace()).read_merged(
        DEPENDENCIES_KEY, DependencySets()
    )
    assert sets.value
    without_scale = {name: sorted(members)[:1] for name, members in sets.value.items()}
    _plant_part(store, DEPENDENCIES_KEY, "planted", without_scale)
    pytester.makepyfile(helper=HELPER.replace("value * 2", "value + value"))
    result = _run(pytester, url, "--skip-passed")
    assert "test_scale" in ran_in(result)
    assert "test_offset" not in ran_in(result)


def test_a_forged_analysis_cache_cannot_cause_a_skip(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """Whoever can write the cache directory (a CI cache restored into it) but holds no
    key points the analysis of an edited module back at its old content: the cache file
    no longer verifies and is ignored, so the test that calls the edit runs and fails."""
    url = _url(tmp_path)
    pytester.makepyfile(
        app="def value():\n    return 1\n",
        test_app="from app import value\n\n\ndef test_value():\n    assert value() == 1\n",
    )
    pytester.makeini("[pytest]\npythonpath = .\n")
    age(pytester.path)  # out of the window where fresh analyses are not saved
    assert _run(pytester, url, "--skip-passed").ret == pytest.ExitCode.OK
    (pytester.path / "app.py").write_text("def value():\n    return 2\n")
    cache_file = pytester.path / ".pytest_cache/d/cachekit-skip-passed/analysis.json"
    signature = cache_file.read_bytes().partition(b"\n")[0]
    forge_stale_entry(cache_file, pytester.path, "app.py")
    cache_file.write_bytes(signature + b"\n" + cache_file.read_bytes())
    result = _run(pytester, url, "--skip-passed")
    assert "test_value" in ran_in(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
