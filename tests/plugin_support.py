"""Helpers shared by the plugin's test modules."""

from __future__ import annotations

import pytest

from cachekit import Cache, open_store
from cachekit.ci.namespace import detect_namespace, namespaced_cache
from cachekit.ci.signing import ENV_SIGNING_KEY


def shared(url: str) -> Cache:
    """The store as the plugin sees it from here (same namespace), for assertions."""
    return namespaced_cache(open_store(url), detect_namespace())


def signed_flaky_history(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str, key: str
) -> None:
    """Two runs on one commit, signed with ``key``, of a suite whose ``test_flaky`` passes
    unless ``CK_FLAKY=fail`` and whose ``test_broken`` always fails: ``test_flaky`` passed
    in one and failed in the other (flaky), ``test_broken`` failed in both (broken, not
    flaky). ``url`` is the ``--cache-url`` argument. Later runs are CI run 3."""
    monkeypatch.setenv(ENV_SIGNING_KEY, key)
    monkeypatch.setenv("CACHEKIT_COMMIT", "c0ffee")
    for run, flaky in (("1", "pass"), ("2", "fail")):
        monkeypatch.setenv("CACHEKIT_RUN_ID", run)
        monkeypatch.setenv("CK_FLAKY", flaky)
        pytester.runpytest(url).assert_outcomes(
            passed=1 + (flaky == "pass"), failed=1 + (flaky == "fail")
        )
    monkeypatch.setenv("CACHEKIT_RUN_ID", "3")
