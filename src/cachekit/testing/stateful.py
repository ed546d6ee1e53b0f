"""A Hypothesis state machine that drives a store against a plain dict.

Needs ``hypothesis`` (a test dependency, not a runtime one).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cachekit.errors import PreconditionFailed, UnsupportedOperation
from cachekit.stores.base import CacheStore

# No key is a directory of another: that is not portable (see the protocol).
_KEYS = st.sampled_from(["a/1", "a/2", "b/1", "c", "d/e/f"])
_DATA = st.binary(max_size=64)
_PREFIXES = st.sampled_from(["", "a", "a/", "b/", "d/e/", "x/"])


def run_against_model(store: CacheStore, *, honours_preconditions: bool = True) -> None:
    """Run random sequences of operations on ``store`` and compare with a dict."""

    class StoreMatchesDict(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            store.delete_many(store.list())
            self.model: dict[str, bytes] = {}
            self.versions: dict[str, str] = {}
            self.old_versions: list[str] = []
            self.capabilities = store.capabilities

        def _record(self, key: str, data: bytes, version: str) -> None:
            self.model[key] = data
            if key in self.versions:
                self.old_versions.append(self.versions[key])
            self.versions[key] = version

        @rule(key=_KEYS, data=_DATA)
        def put(self, key: str, data: bytes) -> None:
            self._record(key, data, store.put(key, data))

        @precondition(lambda self: honours_preconditions)
        @rule(key=_KEYS, data=_DATA)
        def put_if_absent(self, key: str, data: bytes) -> None:
            if not self.capabilities.create_only:
                try:
                    store.put(key, data, if_absent=True)
                except UnsupportedOperation:
                    return
                raise AssertionError("a store without create_only accepted if_absent")
            try:
                version = store.put(key, data, if_absent=True)
            except PreconditionFailed:
                assert key in self.model
                return
            assert key not in self.model
            self._record(key, data, version)

        @precondition(lambda self: honours_preconditions)
        @rule(key=_KEYS, data=_DATA, stale=st.booleans(), pick=st.integers(min_value=0))
        def put_if_version(self, key: str, data: bytes, stale: bool, pick: int) -> None:
            candidates = self.old_versions if stale or key not in self.versions else []
            expected = candidates[pick % len(candidates)] if candidates else self.versions.get(key)
            if expected is None:
                return
            if not self.capabilities.compare_and_swap:
                try:
                    store.put(key, data, if_version=expected)
                except UnsupportedOperation:
                    return
                raise AssertionError("a store without compare_and_swap accepted if_version")
            try:
                version = store.put(key, data, if_version=expected)
            except PreconditionFailed:
                assert self.versions.get(key) != expected
                return
            assert self.versions.get(key) == expected
            self._record(key, data, version)

        @rule(key=_KEYS)
        def delete(self, key: str) -> None:
            store.delete(key)
            self.model.pop(key, None)
            if key in self.versions:
                self.old_versions.append(self.versions.pop(key))

        @rule(key=_KEYS)
        def get(self, key: str) -> None:
            entry = store.get(key)
            if key not in self.model:
                assert entry is None
                return
            assert entry is not None
            assert (entry.data, entry.version) == (self.model[key], self.versions[key])

        @rule(keys=st.lists(_KEYS, max_size=4))
        def get_many(self, keys: list[str]) -> None:
            found = store.get_many(keys)
            assert {key: entry.data for key, entry in found.items()} == {
                key: self.model[key] for key in keys if key in self.model
            }

        @rule(prefix=_PREFIXES)
        def list_keys(self, prefix: str) -> None:
            assert store.list(prefix) == sorted(k for k in self.model if k.startswith(prefix))

        @invariant()
        def listing_matches(self) -> None:
            assert store.list() == sorted(self.model)

    run_state_machine_as_test(
        StoreMatchesDict,
        settings=settings(
            max_examples=20,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
