"""Signed records of test outcomes: what they hold, how they are signed and checked.

What the store sees, per test (``skip/passed``; see `read_strategy` and `SignedLatest`)::

    {test hash: {"at": seconds, "value": {"key": key hash, "outcome": "passed" or
                                         "failed", "run": label, "sig": signature}}}

and per test file (so that a later run can skip a file whose every test passed in one run
without importing it, or knows that one of its tests failed since), the same with the
number of its tests, ``"count"`` (0 in a failure)::

    {file hash: {"at": seconds, "value": {"count": n, "key": ..., "outcome": ..., ...}}}

- The test hash, the file hash and the key hash are HMACs keyed by a secret derived from
  the signing key and the salt: the store never sees a test id, a path or a raw key, and
  without the secret nobody can tell which test or file a record is about or confirm a
  guess. Test and file hashes are computed from distinct messages, so they never collide.
- The signature is an HMAC-SHA256 (another key derived from the signing key) over the
  key's id, the namespace the record was written in (its key prefix: repository, ref,
  job and config), the outcome, the test (or file) hash, the key hash, the time, the
  run label and a file's test count. A record that lacks one, whose signature does not
  match, that was copied from another namespace, or that is dated more than `CLOCK_SKEW`
  in the future is ignored: whoever can write to the store but does not hold the key can
  delete records (tests then run) but never make a test be skipped.
- A failure is signed too, by the run that saw it: it supersedes the passes signed
  before it, in every namespace of the read chain (`Table.lookup`). Unsigned data (pytest's
  ``cache/lastfailed``) may add vetoes, never remove one.
- The run label says which CI run (provider, run id, shard) recorded it: no names.

Nothing here touches a store: the pytest plugin reads the records once per run and writes
them once, as the run's own part, through its session (`cachekit_pytest.skip.store`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs

from cachekit.ci.namespace import Namespace
from cachekit.ci.signing import SigningKeyError, signing_key_from_text
from cachekit.values.codec import JSON
from cachekit.values.merge import LatestWins, MappingUnion

#: Bumped if what is hashed or signed ever changes: older records then stop matching (their
#: tests sit under other hashes, and read as a miss).
SCHEME = "cachekit-skip-passed-2"
#: Records with a dependency set: signed with this word in their first line.
DEPS_FORMAT = "deps-1"
#: Hex digits kept of the test and key hashes (128 bits) and of the signature (128 bits,
#: HMAC-SHA256 truncated as RFC 2104 allows): records stay small for large suites.
HASH_HEX = 32
SIGNATURE_HEX = 32
#: Hex digits of a signing key's id (signed into every record).
KEY_ID_HEX = 16
#: The per-machine key generated for local use (hex of this many random bytes).
GENERATED_KEY_BYTES = 32
#: How far in the future (seconds) a record may be dated: runners' clocks differ a little.
#: A later date is refused, signed or not: it would outlive every later record.
CLOCK_SKEW = 300.0
#: Longest run label, and longest piece of one (a run id, a shard) kept as it is.
RUN_LABEL_MAX = 200
_LABEL_PIECE_MAX = 64

PASSED = "passed"
FAILED = "failed"

_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=False)


_HEX_HASH = re.compile(f"[0-9a-f]{{{HASH_HEX}}}")
_HEX_SIGNATURE = re.compile(f"[0-9a-f]{{{SIGNATURE_HEX}}}")
#: A run label: printable, one line, short.
_RUN_LABEL = re.compile(f"[^\\x00-\\x1f\\x7f]{{0,{RUN_LABEL_MAX}}}")
_OUTCOME = attrs.validators.in_((PASSED, FAILED))
#: A record's dependency set: its id, or "" for a record keyed by the test file's full key
#: (every function body of its closure: the test's execution could not be recorded);
#: None in a record of the older format (no dependencies: never a match).
_DEPS = attrs.validators.optional(attrs.validators.matches_re(f"(|{_HEX_HASH.pattern})"))


@attrs.frozen
class TestRecord:
    """One test's record, inside ``{"at": ..., "value": ...}``.

    The fields' shapes are checked, so the signed message (their lines) is unambiguous.
    """

    #: Keyed hash of the test file's key (`cachekit.skip.fingerprint.Fingerprinter.file_key`).
    key: str = attrs.field(validator=attrs.validators.matches_re(_HEX_HASH))
    outcome: str = attrs.field(validator=_OUTCOME)
    #: Which run recorded it (`run_label`).
    run: str = attrs.field(validator=attrs.validators.matches_re(_RUN_LABEL))
    sig: str = attrs.field(validator=attrs.validators.matches_re(_HEX_SIGNATURE))
    #: The dependency set the key covers (`cachekit.skip.dependencies`).
    deps: str | None = attrs.field(default=None, validator=_DEPS)


@attrs.frozen
class FileRecord:
    """One test file's record: every one of its ``count`` tests passed in the run ``run``
    (or, ``count`` 0, one of them failed there)."""

    key: str = attrs.field(validator=attrs.validators.matches_re(_HEX_HASH))
    outcome: str = attrs.field(validator=_OUTCOME)
    run: str = attrs.field(validator=attrs.validators.matches_re(_RUN_LABEL))
    sig: str = attrs.field(validator=attrs.validators.matches_re(_HEX_SIGNATURE))
    count: int = attrs.field(validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)])
    #: The union of its tests' dependency sets.
    deps: str | None = attrs.field(default=None, validator=_DEPS)


@attrs.frozen
class Verified:
    """A record whose signature matched, for the namespace it was read in."""

    outcome: str
    key: str
    run: str
    at: float
    #: A file record's test count (0 for a test record).
    count: int = 0
    #: Its dependency set (None: the older format, which matches nothing).
    deps: str | None = None
    #: The namespace (key prefix) it was read and verified in.
    namespace: str = ""


@attrs.frozen
class Match:
    """A valid record whose key is the test's current key: the test may be skipped."""

    run: str
    at: float
    #: The dependency set of the record.
    deps: str = ""


@attrs.frozen
class Miss:
    """Why no record lets a test be skipped (`Table.lookup_why`): one of the ``MISS_*``
    reasons, and for `MISS_CHANGED` the dependency set of the latest pass and that pass
    (its run's snapshot says what its key covered: `cachekit.skip.snapshots`)."""

    reason: str
    deps: str = ""
    record: Verified | None = None


#: `Miss` reasons: no valid record; a signed failure since the latest matching pass;
#: only passes of the older format; passes whose key is not the test's key now.
MISS_NEVER = "never recorded"
MISS_FAILED = "failed since it last passed"
MISS_OLDER = "recorded in an older format"
MISS_CHANGED = "changed"


@attrs.frozen
class FileMatch:
    """A valid file record whose key is the file's current key: the file may be skipped
    whole, and its ``tests`` counted as cached."""

    run: str
    at: float
    tests: int
    deps: str = ""


@attrs.frozen
class Message:
    """What a record's signature covers: the signing key's id (given at signing), the
    namespace it was written in (its key prefix: repository, ref, job, config), the
    outcome, the test or file hash, the key hash, the time, the run label, for a file
    record its test count (None: a test record), and its dependency set (None: a record
    of the older format, still checked: its failures veto)."""

    namespace: str
    outcome: str
    name: str
    key: str
    at: float
    run: str
    count: int | None = None
    deps: str | None = None

    def text(self, key_id: str) -> str:
        # One field a line: the prefix is made of safe segments, the hashes are hex, a
        # float's repr round-trips through JSON exactly (an int where a float was signed
        # does not verify), and a run label has no line breaks, so no two records share a
        # message. A file record's first line differs from a test record's.
        kind = "test" if self.count is None else f"file {self.count}"
        if self.deps is not None:  # the format with dependencies: a first line of its own
            kind += f" {DEPS_FORMAT}"
        text = (
            f"{SCHEME} {kind}\n{key_id}\n{self.namespace}\n{self.outcome}\n{self.name}\n"
            f"{self.key}\n{self.at!r}\n{self.run}"
        )
        return text if self.deps is None else f"{text}\n{self.deps}"


@attrs.frozen(repr=False)
class Secrets:
    """The keys derived from the signing key: one names (hashes test ids and keys), one
    signs. Deriving both means one secret to hold, and a hash can never pass for a
    signature."""

    name_key: bytes
    sign_key: bytes
    #: Keyed HMAC states, copied for each message (the key is set up once, not per test).
    _namer: hmac.HMAC = attrs.field(init=False, eq=False)
    _signer: hmac.HMAC = attrs.field(init=False, eq=False)
    #: The signing key's public id: signed into every record, so a record names its key.
    key_id: str = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_namer", hmac.new(self.name_key, digestmod=hashlib.sha256))
        object.__setattr__(self, "_signer", hmac.new(self.sign_key, digestmod=hashlib.sha256))
        key_id = hashlib.sha256(b"cachekit key id\0" + self.sign_key).hexdigest()[:KEY_ID_HEX]
        object.__setattr__(self, "key_id", key_id)

    @classmethod
    def derive(cls, signing_key: bytes, salt: str) -> Secrets:
        names = hmac.new(signing_key, f"{SCHEME} names\0{salt}".encode(), hashlib.sha256)
        signs = hmac.new(signing_key, f"{SCHEME} signs".encode(), hashlib.sha256)
        return cls(names.digest(), signs.digest())

    def test_hash(self, nodeid: str) -> str:
        return _mac(self._namer, "test\0" + nodeid, HASH_HEX)

    def key_hash(self, file_key: str) -> str:
        return _mac(self._namer, "key\0" + file_key, HASH_HEX)

    def dependency_hash(self, text: str) -> str:
        """The id of a dependency (`cachekit.skip.dependencies.Dependency.text`)."""
        return _mac(self._namer, "dep\0" + text, HASH_HEX)

    def file_hash(self, file_id: str) -> str:
        """The hash of a test file (its path relative to the root, and how it was
        collected): never equal to a test hash, whose message starts otherwise."""
        return _mac(self._namer, "file\0" + file_id, HASH_HEX)

    def sign(self, message: Message) -> str:
        """The signature of a record; see `Message` for what it covers."""
        return _mac(self._signer, message.text(self.key_id), SIGNATURE_HEX)

    def explain_hash(self, text: str, length: int) -> str:
        """A keyed hash for explaining what changed (`cachekit.skip.snapshots`): never
        equal to a test, key, dependency or file hash, whose messages start otherwise."""
        return _mac(self._namer, "explain\0" + text, length)

    def sign_snapshot(self, text: str) -> str:
        """The signature of a run's snapshot (`cachekit.skip.snapshots`): its first line
        is no record's (`Message.text`)."""
        return _mac(self._signer, f"{SCHEME} snapshot\n{self.key_id}\n{text}", SIGNATURE_HEX)

    def sign_analysis(self, data: bytes) -> str:
        """The signature of an analysis cache file's JSON (`cachekit.skip.analysis`): its
        first line is no record's or snapshot's."""
        mac = self._signer.copy()
        mac.update(f"{SCHEME} analysis\n{self.key_id}\n".encode())
        mac.update(data)
        return mac.hexdigest()

    def stored(self, message: Message) -> JSON:
        """The signed record, as stored."""
        signature = self.sign(message)
        record: TestRecord | FileRecord
        if message.count is None:
            record = TestRecord(message.key, message.outcome, message.run, signature, message.deps)
        else:
            record = FileRecord(
                message.key, message.outcome, message.run, signature, message.count, message.deps
            )
        fields = _converter.unstructure(record)
        if message.deps is None:
            del fields["deps"]
        value: JSON = {"at": message.at, "value": fields}
        return value

    def verify(self, namespace: str, name: str, raw: Any, *, now: float) -> Verified | None:
        """The record ``raw`` stored under the test or file hash ``name`` in ``namespace``,
        if it is well formed, signed with this key for this namespace, and not dated
        after ``now`` plus `CLOCK_SKEW`; else None."""
        if not isinstance(raw, dict):
            return None
        at, value = raw.get("at"), raw.get("value")
        if not (type(at) is float or type(at) is int) or not isinstance(value, dict):
            return None
        if not math.isfinite(at) or at > now + CLOCK_SKEW:
            return None
        record = _structure(value, FileRecord if "count" in value else TestRecord)
        if record is None:
            return None
        count = record.count if isinstance(record, FileRecord) else None
        message = Message(
            namespace, record.outcome, name, record.key, at, record.run, count, record.deps
        )
        if not hmac.compare_digest(self.sign(message), record.sig):
            return None
        return Verified(
            record.outcome, record.key, record.run, float(at), count or 0, record.deps, namespace
        )

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


def _mac(keyed: hmac.HMAC, message: str, length: int) -> str:
    mac = keyed.copy()
    mac.update(message.encode("utf-8", "surrogateescape"))
    return mac.hexdigest()[:length]


def _structure(value: dict[str, Any], kind: type[Any]) -> Any:
    """``value`` as a ``kind`` record, or None. Strings must be strings and a count an
    int (cattrs would turn a number into a string, or a bool into a count)."""
    if not all(type(item) is (int if name == "count" else str) for name, item in value.items()):
        return None
    try:
        return _converter.structure(value, kind)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError):
        return None


# -- the signing key ----------------------------------------------------------------------


def machine_key(path: Path) -> bytes:
    """This machine's generated signing key in ``path`` (created, mode 0600, if missing).

    For local runs without a store and without ``CACHEKIT_SIGNING_KEY``: whoever can
    write the cache directory could as well edit the records, so the key protects
    nothing there, but it keeps one code path and never travels anywhere.
    """
    try:
        return _read_machine_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_hex(GENERATED_KEY_BYTES) + "\n")
        with contextlib.suppress(FileExistsError):  # create-only: a concurrent one wins
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return _read_machine_key(path)


def _read_machine_key(path: Path) -> bytes:
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if status.st_mode & 0o077 or not stat.S_ISREG(status.st_mode):
            raise SigningKeyError(
                f"{path} is readable or writable by others (mode "
                f"{stat.filemode(status.st_mode)}); remove it to get a new key"
            )
        if hasattr(os, "getuid") and status.st_uid != os.getuid():
            raise SigningKeyError(f"{path} belongs to another user; remove it")
        return signing_key_from_text(file.read().decode("ascii", "replace"), str(path))


# -- who recorded it ----------------------------------------------------------------------


def run_label(namespace: Namespace) -> str:
    """Which run records outcomes: the CI system, its run id and shard. No names or paths
    (the repository, ref and job are in the namespace's prefix already). The run id and
    shard are user-controlled (``CACHEKIT_RUN_ID``, ``--cache-shard``): a piece that is
    long or not printable becomes a readable stem and a hash, as key segments do."""
    words = [_label_piece(namespace.provider)]
    if namespace.run_id:
        words.append(f"run {_label_piece(namespace.run_id)}")
    if namespace.shard:
        words.append(f"shard {_label_piece(namespace.shard)}")
    return " ".join(words)


def _label_piece(text: str) -> str:
    if text.isprintable() and len(text) <= _LABEL_PIECE_MAX:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    stem = "".join(char if char.isprintable() else "?" for char in text)
    return f"{stem[: _LABEL_PIECE_MAX - 13]}~{digest}"


# -- reading and folding records ----------------------------------------------------------

_LATEST = LatestWins()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Candidates:
    """Every distinct record stored under one hash, unverified: one record, or a sorted
    list of them. Reads keep them all, so that no record (planted, dated in the future)
    can hide another before the reader, who holds the key, has checked each."""

    def empty(self) -> Any:
        return None

    def join(self, left: Any, right: Any) -> Any:
        if left is None or left == right:
            return right if left is None else left
        if right is None:
            return left
        found = {_canonical(item): item for side in (left, right) for item in _listed(side)}
        ordered = [found[text] for text in sorted(found)]
        return ordered[0] if len(ordered) == 1 else ordered

    def check(self, value: JSON) -> Any:
        return _LATEST.check(value)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


#: How the plugin reads ``skip/passed``: every candidate record per hash (`Candidates`).
READ_STRATEGY = MappingUnion(Candidates())


def named_sets(records: Mapping[str, Any]) -> set[str]:
    """The dependency set ids the records of one ``skip/passed`` value name (a record or
    a list of candidates per hash), verified or not: keeping a set too long costs room,
    dropping one too early a rerun, so anything that names one keeps it."""
    found = set()
    for stored in records.values():
        for raw in _listed(stored):
            fields = raw.get("value") if isinstance(raw, dict) else None
            deps = fields.get("deps") if isinstance(fields, dict) else None
            if isinstance(deps, str):
                found.add(deps)
    return found


class SignedLatest:
    """How the run that holds the key folds ``skip/passed`` parts of its own namespace
    into the base: per hash, a record that verifies beats one that does not, then the
    latest wins (a failure in a tie). A join (the maximum of a total order), so parts
    fold alike in any order; a planted record never replaces a signed one."""

    def __init__(self, secrets: Secrets, namespace: str, *, now: float | None = None) -> None:
        self.secrets = secrets
        self.namespace = namespace
        self.now = time.time() if now is None else now

    def empty(self) -> dict[str, Any]:
        return {}

    def check(self, value: JSON) -> dict[str, Any]:
        return dict(SKIP_RECORDS.check(value))

    def join(self, left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
        merged = dict(left)
        for name, record in right.items():
            mine = merged.get(name)
            if mine is None:
                merged[name] = record
            else:
                merged[name] = max(mine, record, key=functools.partial(self._rank, name))
        return dict(sorted(merged.items()))

    def _rank(self, name: str, raw: dict[str, Any]) -> tuple[bool, float, bool, str]:
        verified = self.secrets.verify(self.namespace, name, raw, now=self.now)
        failed = verified is not None and verified.outcome == FAILED
        return verified is not None, float(raw["at"]), failed, _canonical(raw)


def _order(record: Verified) -> tuple[float, bool]:
    """Later first; at the same time a failure before a pass."""
    return record.at, record.outcome == FAILED


#: A record's key hash now, for its dependency set id (None: cannot be computed).
KeyOf = Callable[[str], "str | None"]


def _dated_before(raw: Any, at: float) -> bool:
    stamp = raw.get("at") if isinstance(raw, dict) else None
    return isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and stamp < at


@attrs.define
class Table:
    """The records every store of the read chain holds, nearest namespace first, each
    with the namespace (key prefix) it was read from: a record verifies only there.

    Per namespace, the latest valid record of a test stands (`latest`). A test may be
    skipped when some namespace's stands for a pass with the test's current key, and no
    namespace's stands for a failure at or after that pass: a branch keeps skipping what
    it recorded after its base branch recorded a newer key for the same test, and the
    other way round, but a failure signed anywhere in the chain vetoes older passes.
    """

    layers: list[dict[str, Any]] = attrs.field(factory=list)
    #: The key prefix of each layer (`cachekit.ci.namespace.Namespace.read_prefixes`).
    namespaces: list[str] = attrs.field(factory=list)
    #: The reader's clock, for records dated in the future.
    now: float = attrs.field(factory=time.time)
    #: Records looked up that were unsigned, malformed, wrongly signed, signed for
    #: another namespace, or dated in the future.
    bad_records: int = 0
    #: Tests and files looked up whose only valid passes are of the older format
    #: (without dependencies): they run, and are recorded again.
    older_format: int = 0
    #: The dependency sets read beside the records (`cachekit.skip.dependencies`), and
    #: the runs' snapshots (`cachekit.skip.snapshots`).
    sets: dict[str, list[str]] = attrs.field(factory=dict)

    def latest(self, secrets: Secrets, name: str) -> list[Verified]:
        """Per namespace, the latest valid record under ``name`` (none for a namespace
        without one). Only records of tests being looked up are verified: a record
        written with another signing key or salt sits under another hash."""
        found = []
        for layer, namespace in zip(self.layers, self.namespaces, strict=True):
            stored = layer.get(name)
            if stored is None:
                continue
            valid, refused = [], []
            for raw in _listed(stored):
                verified = secrets.verify(namespace, name, raw, now=self.now)
                if verified is None:
                    refused.append(raw)
                else:
                    valid.append(verified)
            standing = max(valid, key=_order) if valid else None
            # Counted: what would stand but for its signature or date. A refused record
            # older than a valid one (the valid one replaced it) changes nothing.
            self.bad_records += sum(
                standing is None or not _dated_before(raw, standing.at) for raw in refused
            )
            if standing is not None:
                found.append(standing)
        return found

    def _standing_pass(self, records: list[Verified], key_of: KeyOf) -> Verified | None:
        """The latest pass whose key is what ``key_of`` computes now for its dependency
        set, unless a failure at or after it vetoes it."""
        passes = [
            r
            for r in records
            if r.outcome == PASSED and r.deps is not None and key_of(r.deps) == r.key
        ]
        if not passes:
            self.older_format += any(r.outcome == PASSED and r.deps is None for r in records)
            return None
        best = max(passes, key=lambda record: record.at)
        if any(r.outcome == FAILED and r.at >= best.at for r in records):
            return None
        return best

    def lookup(self, secrets: Secrets, test_hash: str, key_of: KeyOf) -> Match | None:
        """The pass that lets ``test_hash`` be skipped, else None. ``key_of(deps)`` is the
        test's key hash now for a record of that dependency set (None: it cannot be
        computed, a member of the set changed or is unknown)."""
        found = self.lookup_why(secrets, test_hash, key_of)
        return found if isinstance(found, Match) else None

    def lookup_why(self, secrets: Secrets, test_hash: str, key_of: KeyOf) -> Match | Miss:
        """`lookup`, saying why when no record matches."""
        records = [r for r in self.latest(secrets, test_hash) if r.count == 0]
        best = self._standing_pass(records, key_of)
        if best is not None:
            return Match(best.run, best.at, best.deps or "")
        passes = [r for r in records if r.outcome == PASSED]
        if not passes:
            return Miss(MISS_FAILED if records else MISS_NEVER)
        current = [r for r in passes if r.deps is not None]
        if not current:
            return Miss(MISS_OLDER)
        if any(key_of(r.deps or "") == r.key for r in current):
            return Miss(MISS_FAILED)  # a pass matches, a failure since vetoes it
        latest = max(current, key=lambda record: record.at)
        return Miss(MISS_CHANGED, latest.deps or "", latest)

    def lookup_file(self, secrets: Secrets, file_hash: str, key_of: KeyOf) -> FileMatch | None:
        """The file record that lets the file be skipped whole, else None (as `lookup`;
        a failure of any of its tests, signed since, vetoes it)."""
        records = self.latest(secrets, file_hash)
        best = self._standing_pass(records, key_of)
        if best is None or best.count < 1:
            return None
        return FileMatch(best.run, best.at, best.count, best.deps or "")


#: The stored shape of ``skip/passed``, checked on read: ``{hash: {"at": t, "value": v}}``.
SKIP_RECORDS = MappingUnion(LatestWins())


def sign_outcomes(
    secrets: Secrets,
    namespace: str,
    *,
    run: str,
    passed: Sequence[tuple[str, str, str]] = (),
    failed: Sequence[tuple[str, str]] = (),
    files: Sequence[tuple[str, str, int, str]] = (),
    failed_files: Sequence[tuple[str, str]] = (),
    at: float | None = None,
) -> dict[str, JSON]:
    """Signed records for the namespace ``namespace`` (a key prefix), all stamped ``at``
    (now): passes of ``(test hash, key hash, dependency set id)``, failures of
    ``(test hash, key hash)``, passes of whole files ``(file hash, key hash, tests,
    dependency set id)`` and failures in files ``(file hash, key hash)``. A failure wins
    over a pass of the same hash."""
    stamp = time.time() if at is None else at
    messages = [
        *(
            Message(namespace, PASSED, name, key, stamp, run, tests, deps)
            for name, key, tests, deps in files
        ),
        *(Message(namespace, FAILED, name, key, stamp, run, 0, "") for name, key in failed_files),
        *(
            Message(namespace, PASSED, name, key, stamp, run, None, deps)
            for name, key, deps in passed
        ),
        *(Message(namespace, FAILED, name, key, stamp, run, None, "") for name, key in failed),
    ]
    records = {message.name: secrets.stored(message) for message in messages}
    return dict(sorted(records.items()))
