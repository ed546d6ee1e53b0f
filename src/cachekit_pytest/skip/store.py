"""Where the records are kept: ``skip/passed`` in the run's namespace and its read chain,
reached through the run's `cachekit.session.Session`, so that every call is spent from
its time budget, the first failure turns the store off for the rest of the run with one
warning, and corrupt values cost one more.

The stored shape is `cachekit.skip.records`'s. Reads keep every candidate record per hash
(`cachekit.skip.records.READ_STRATEGY`), so that the reader checks each; this run's own
compaction keeps, per hash, the latest record that verifies (`SignedLatest`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cachekit.ci.layout import SKIP_PASSED_KEY
from cachekit.session import Session
from cachekit.skip.dependencies import DEPENDENCIES_KEY, DependencySets, NamedSets
from cachekit.skip.records import READ_STRATEGY, Secrets, SignedLatest, Table, named_sets
from cachekit.skip.snapshots import named_snapshots
from cachekit.values.codec import JSON
from cachekit.values.merge import MergeStrategy

#: How the dependency sets are read and folded (`cachekit.skip.dependencies`).
_SETS = DependencySets()


class PassStore:
    """The records of one run: read once, written once as the run's own part."""

    def __init__(self, session: Session) -> None:
        self.session = session
        #: Parts of the run's own namespace found by `read` (for compaction).
        self.own_parts = 0
        #: The dependency sets `read` found, and the records it found (any namespace).
        self.sets: frozenset[str] = frozenset()
        self._records: list[dict[str, Any]] = []
        self._namespaces: list[str] = []

    @property
    def display(self) -> str:
        """The store as the header names it (credentials redacted)."""
        return self.session.display

    def read(self) -> Table | None:
        """Every namespace of the read chain, read side by side (one listing and one
        batched fetch each), and the dependency sets of all of them; None once the store
        has failed."""
        # The session's warning is this call's description followed by the error.
        merged = self.session.attempt(
            lambda: self.session.read_layers(SKIP_PASSED_KEY, READ_STRATEGY),
            "could not read the records, running every test: "
            f"reading passed tests from {self.display}",
        )
        if merged is None:
            return None
        sets = self.session.attempt(
            lambda: self.session.read_layers(DEPENDENCIES_KEY, _SETS),
            "could not read the records, running every test: "
            f"reading dependency sets from {self.display}",
        )
        if sets is None:
            return None
        self.own_parts = len(merged[0].parts)
        namespaces = list(self.session.namespace.read_prefixes)
        joined: dict[str, list[str]] = {}
        for layer in sets:
            joined = _SETS.join(joined, layer.value)
        self.sets = frozenset(joined)
        table = Table([dict(layer.value) for layer in merged], namespaces, sets=joined)
        self._records = table.layers  # the table's own (no second copy)
        self._namespaces = namespaces
        return table

    def write(
        self,
        records: Mapping[str, JSON],
        sets: Mapping[str, list[str]],
        *,
        secrets: Secrets,
        compact_at: int,
    ) -> None:
        """``records`` and the new dependency ``sets`` as this run's own parts; then, once
        the namespace has ``compact_at`` parts (counting the ones `read` found), fold them
        into its base (where the store can), keeping what ``secrets`` verify over
        anything else, and the sets whose members hash to their ids that a record
        names."""
        namespace = self.session.namespace
        part_id = namespace.new_part_id()
        compact: dict[str, MergeStrategy[Any]] | None = None
        if self.own_parts + 1 >= compact_at:
            # The sets and snapshots read that no record names, read or written now, are
            # dropped. Only a run that compacts walks the records for them.
            named = frozenset(
                named_sets(records).union(
                    named_snapshots(records, namespace.prefix),
                    *map(named_sets, self._records),
                    *map(named_snapshots, self._records, self._namespaces),
                )
            )
            compact = {
                SKIP_PASSED_KEY: SignedLatest(secrets, namespace.prefix),
                DEPENDENCIES_KEY: NamedSets(named, self.sets),
            }
        values: dict[str, JSON] = {SKIP_PASSED_KEY: dict(records)}
        if sets:
            # Written side by side with the records: a reader that sees a record before
            # its set resolves nothing, and runs the test.
            values[DEPENDENCIES_KEY] = {name: list(members) for name, members in sets.items()}
        self.session.attempt(
            lambda: self.session.write_parts(
                part_id, values, compact=compact, min_parts=compact_at
            ),
            f"could not record this run's passes: writing passed tests to {self.display}",
        )

    def close(self) -> None:
        self.session.close()
