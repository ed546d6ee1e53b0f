"""What a run's keys covered, for explaining later what changed (``--skip-passed-explain``).

A record keeps the hashes of what its key covers only inside its key, so a later run
whose key differs cannot tell what changed. A run that records passes therefore stores,
beside them, one *snapshot*: for each *component* of the keys it signed (a function body,
a file's module-level code, a module-level name, an installed distribution, an
environment variable, a data file, the pytest config, ...), a short keyed hash of its
name and one of its value. A later run that reruns a test compares the snapshot of the
run that recorded its latest pass with the components of the test's key now, and names
the ones that differ.

- It is stored in ``skip/dependencies`` beside the sets (the start-up read already reads
  it: no request more), under a name made from the run's namespace, label and time, the
  ones its records are signed with, so a record finds its run's snapshot, and a run that
  compacts drops a snapshot no record names (`named_snapshots`). Readers of the older
  format drop it as a set that does not hash to its name.
- One per run (or shard) that recorded passes, of the components of the passes it
  recorded: it grows with what ran, never per test. Decoded only when a test of that
  run's records runs again (`Snapshot.read`).
- Advisory: it never decides a skip (the signed record's key does). It is signed with the
  signing key for its namespace, so that nobody without the key can make an explanation
  name what did not change; a snapshot that does not verify, is malformed or is missing
  only makes the explanation less precise. Names and values are keyed hashes
  (`cachekit.skip.records.Secrets.explain_hash`): the store sees no label, path or
  function name, and nobody without the key can confirm a guess against them.
- Short hashes (`ID_HEX`, `DIGEST_HEX`) keep it small: two components of one snapshot
  under one id are both dropped (unknown), and a changed value whose short hash is
  unchanged is not named (the explanation is then less precise, never wrong).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from cachekit.skip.records import SIGNATURE_HEX, Secrets

#: How a snapshot's name starts, in ``skip/dependencies`` (a set's name is bare hex).
SNAPSHOT_PREFIX = "explain:"
#: Hex digits of a snapshot's name (after the prefix), of a component's id and of the
#: hash of its value.
NAME_HEX = 32
ID_HEX = 10
DIGEST_HEX = 6
_ENTRY = ID_HEX + DIGEST_HEX

_NAME = re.compile(f"{re.escape(SNAPSHOT_PREFIX)}[0-9a-f]{{{NAME_HEX}}}")
_SIGNATURE = re.compile(f"[0-9a-f]{{{SIGNATURE_HEX}}}")
_PAYLOAD = re.compile("[0-9a-f]*")

#: How a component compares with a snapshot: the same value, another one, or none.
SAME = "same"
CHANGED = "changed"
NEW = "new"


def snapshot_name(namespace: str, run: str, at: float) -> str:
    """The name of the snapshot of the run ``run`` that signed its records at ``at`` in
    ``namespace`` (all visible in those records already)."""
    text = f"{namespace}\0{run}\0{float(at)!r}"
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return SNAPSHOT_PREFIX + digest[:NAME_HEX]


def is_snapshot(name: str, value: Any) -> bool:
    """Whether ``value`` under ``name`` is shaped like a snapshot (cheap: the payload is
    checked when read, `Snapshot.read`)."""
    return (
        _NAME.fullmatch(name) is not None
        and isinstance(value, list)
        and len(value) == 2
        and all(type(item) is str for item in value)
        and _SIGNATURE.fullmatch(value[0]) is not None
        and len(value[1]) % _ENTRY == 0
    )


def named_snapshots(records: Mapping[str, Any], namespace: str) -> set[str]:
    """The snapshots the records of one ``skip/passed`` value read in ``namespace`` name
    (a record or a list of candidates per hash), verified or not, as `cachekit.skip
    .records.named_sets` does for sets."""
    found = set()
    for stored in records.values():
        for raw in stored if isinstance(stored, list) else [stored]:
            fields = raw.get("value") if isinstance(raw, dict) else None
            at = raw.get("at") if isinstance(raw, dict) else None
            run = fields.get("run") if isinstance(fields, dict) else None
            if isinstance(run, str) and (type(at) is int or type(at) is float):
                found.add(snapshot_name(namespace, run, at))
    return found


class Hashes:
    """Component ids and value hashes under one secret, computed once each."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets
        self._ids: dict[str, str] = {}
        self._digests: dict[tuple[str, str], str] = {}

    def id(self, component: str) -> str:
        found = self._ids.get(component)
        if found is None:
            found = self._ids[component] = self.secrets.explain_hash("id\0" + component, ID_HEX)
        return found

    def digest(self, component: str, value: str) -> str:
        found = self._digests.get((component, value))
        if found is None:
            text = f"value\0{component}\0{value}"
            found = self._digests[component, value] = self.secrets.explain_hash(text, DIGEST_HEX)
        return found


def _signed_text(namespace: str, run: str, at: float, payload: str) -> str:
    return f"{namespace}\n{run}\n{float(at)!r}\n{payload}"


def make_snapshot(
    hashes: Hashes, namespace: str, run: str, at: float, components: Mapping[str, str]
) -> tuple[str, list[str]]:
    """The name and stored value (signature, payload) of a run's snapshot of
    ``components`` (name to value)."""
    entries: dict[str, str] = {}
    clashes: set[str] = set()
    for component, value in components.items():
        ident = hashes.id(component)
        if ident in entries:
            clashes.add(ident)
        entries[ident] = hashes.digest(component, value)
    payload = "".join(i + d for i, d in sorted(entries.items()) if i not in clashes)
    signature = hashes.secrets.sign_snapshot(_signed_text(namespace, run, at, payload))
    return snapshot_name(namespace, run, at), [signature, payload]


@attrs.frozen
class Snapshot:
    """A verified snapshot: component id to the hash of its value then."""

    digests: dict[str, str]

    @classmethod
    def read(
        cls, secrets: Secrets, sets: Mapping[str, Any], namespace: str, run: str, at: float
    ) -> Snapshot | None:
        """The snapshot of the run that signed a record (``namespace``, ``run``, ``at``)
        found in ``sets``, if well formed and signed with this key for that namespace."""
        name = snapshot_name(namespace, run, at)
        value = sets.get(name)
        if value is None or not is_snapshot(name, value):
            return None
        signature, payload = value
        if _PAYLOAD.fullmatch(payload) is None:
            return None
        expected = secrets.sign_snapshot(_signed_text(namespace, run, at, payload))
        if not hmac.compare_digest(expected, signature):
            return None
        digests: dict[str, str] = {}
        twice: set[str] = set()
        for start in range(0, len(payload), _ENTRY):
            ident = payload[start : start + ID_HEX]
            if ident in digests:
                twice.add(ident)
            digests[ident] = payload[start + ID_HEX : start + _ENTRY]
        for ident in twice:
            del digests[ident]
        return cls(digests)

    def compare(self, hashes: Hashes, component: str, value: str) -> str:
        """`SAME`, `CHANGED` or `NEW` (not in the snapshot)."""
        then = self.digests.get(hashes.id(component))
        if then is None:
            return NEW
        return SAME if then == hashes.digest(component, value) else CHANGED

    def differences(
        self, hashes: Hashes, components: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """(component, `CHANGED` or `NEW`) of each of ``components`` (name, value now)
        that is not as it was."""
        found = []
        for component, value in components:
            state = self.compare(hashes, component, value)
            if state != SAME:
                found.append((component, state))
        return found
