"""Signed records of tests that passed: what they hold, how they are signed and checked.

What the store sees, per test (``skip/passed``, merged with `cachekit.ci.layout.SKIP_PASSED`,
the latest record per test winning)::

    {test hash: {"at": seconds, "value": {"key": key hash, "run": label, "sig": signature}}}

and per test file whose every test passed in one run (so that a later run can skip the
file without importing it), under the same key, with the number of its tests::

    {file hash: {"at": seconds, "value": {"key": ..., "run": ..., "sig": ..., "count": n}}}

- The test hash, the file hash and the key hash are HMACs keyed by a secret derived from
  the signing key and the salt: the store never sees a test id, a path or a raw key, and
  without the secret nobody can tell which test or file a record is about or confirm a
  guess. Test and file hashes are computed from distinct messages, so they never collide.
- The signature is an HMAC-SHA256 (another key derived from the signing key) over the
  test (or file) hash, the key hash, the time and the run label, and a file's test count;
  test and file records are signed as distinct messages. A record that lacks one or
  whose signature does not match is ignored: whoever can write to the store but does not
  hold the key can delete records (tests then run) but never make a test be skipped.
- The run label says which CI run (provider, run id, shard) recorded the pass: no names.

Nothing here touches a store: the pytest plugin reads the records once per run and writes
them once, as the run's own part, through its session (`cachekit_pytest.skip.store`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs

from cachekit.ci.namespace import Namespace
from cachekit.values.codec import JSON

#: Bumped if what is hashed or signed ever changes: older records then stop matching.
SCHEME = "cachekit-skip-passed-1"
#: Hex digits kept of the test and key hashes (128 bits) and of the signature (128 bits,
#: HMAC-SHA256 truncated as RFC 2104 allows): records stay small for large suites.
HASH_HEX = 32
SIGNATURE_HEX = 32
#: Shortest signing key accepted, in bytes.
MIN_SIGNING_KEY = 16
#: The per-machine key generated for local use (hex of this many random bytes).
GENERATED_KEY_BYTES = 32

_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=False)


class SigningKeyError(Exception):
    """No usable signing key; the message says why and what to do."""


_HEX_HASH = re.compile(f"[0-9a-f]{{{HASH_HEX}}}")
_HEX_SIGNATURE = re.compile(f"[0-9a-f]{{{SIGNATURE_HEX}}}")
#: A run label: printable, one line, short.
_RUN_LABEL = re.compile(r"[^\x00-\x1f\x7f]{0,200}")


@attrs.frozen
class PassRecord:
    """One test's record, inside `cachekit.LatestWins`'s ``{"at": ..., "value": ...}``.

    The fields' shapes are checked, so the signed message (their lines) is unambiguous.
    """

    #: Keyed hash of the test file's key (`cachekit.skip.fingerprint.Fingerprinter.file_key`).
    key: str = attrs.field(validator=attrs.validators.matches_re(_HEX_HASH))
    #: Which run recorded the pass (`run_label`).
    run: str = attrs.field(validator=attrs.validators.matches_re(_RUN_LABEL))
    sig: str = attrs.field(validator=attrs.validators.matches_re(_HEX_SIGNATURE))


@attrs.frozen
class FilePassRecord:
    """One test file's record: every one of its ``count`` tests passed in the run ``run``."""

    key: str = attrs.field(validator=attrs.validators.matches_re(_HEX_HASH))
    run: str = attrs.field(validator=attrs.validators.matches_re(_RUN_LABEL))
    sig: str = attrs.field(validator=attrs.validators.matches_re(_HEX_SIGNATURE))
    count: int = attrs.field(validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)])


@attrs.frozen
class Match:
    """A valid record whose key is the test's current key: the test may be skipped."""

    run: str
    at: float


@attrs.frozen
class FileMatch:
    """A valid file record whose key is the file's current key: the file may be skipped
    whole, and its ``tests`` counted as cached."""

    run: str
    at: float
    tests: int


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

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_namer", hmac.new(self.name_key, digestmod=hashlib.sha256))
        object.__setattr__(self, "_signer", hmac.new(self.sign_key, digestmod=hashlib.sha256))

    @classmethod
    def derive(cls, signing_key: bytes, salt: str) -> Secrets:
        names = hmac.new(signing_key, f"{SCHEME} names\0{salt}".encode(), hashlib.sha256)
        signs = hmac.new(signing_key, f"{SCHEME} signs".encode(), hashlib.sha256)
        return cls(names.digest(), signs.digest())

    def test_hash(self, nodeid: str) -> str:
        return _mac(self._namer, "test\0" + nodeid, HASH_HEX)

    def key_hash(self, file_key: str) -> str:
        return _mac(self._namer, "key\0" + file_key, HASH_HEX)

    def file_hash(self, file_id: str) -> str:
        """The hash of a test file (its path relative to the root, and how it was
        collected): never equal to a test hash, whose message starts otherwise."""
        return _mac(self._namer, "file\0" + file_id, HASH_HEX)

    def signature(self, test_hash: str, key_hash: str, at: float, run: str) -> str:
        # One field a line: the hashes are hex, a float's repr round-trips through JSON
        # exactly (an int where a float was signed does not verify), and a run label has
        # no line breaks (`PassRecord`), so no two records share a message.
        message = f"{SCHEME}\n{test_hash}\n{key_hash}\n{at!r}\n{run}"
        return _mac(self._signer, message, SIGNATURE_HEX)

    def record(self, test_hash: str, key_hash: str, at: float, run: str) -> JSON:
        """A signed record, as stored."""
        signed = PassRecord(key_hash, run, self.signature(test_hash, key_hash, at, run))
        value: JSON = {"at": at, "value": _converter.unstructure(signed)}
        return value

    def file_signature(self, file_hash: str, key_hash: str, tests: int, at: float, run: str) -> str:
        # A first line of its own: no file record's message is a test record's.
        message = f"{SCHEME} file\n{file_hash}\n{key_hash}\n{tests}\n{at!r}\n{run}"
        return _mac(self._signer, message, SIGNATURE_HEX)

    def file_record(self, file_hash: str, key_hash: str, tests: int, at: float, run: str) -> JSON:
        """A signed file record, as stored."""
        signature = self.file_signature(file_hash, key_hash, tests, at, run)
        signed = FilePassRecord(key_hash, run, signature, tests)
        value: JSON = {"at": at, "value": _converter.unstructure(signed)}
        return value

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


def _mac(keyed: hmac.HMAC, message: str, length: int) -> str:
    mac = keyed.copy()
    mac.update(message.encode("utf-8", "surrogateescape"))
    return mac.hexdigest()[:length]


# -- the signing key ----------------------------------------------------------------------


def signing_key_from_text(text: str, origin: str) -> bytes:
    key = text.strip().encode("utf-8")
    if len(key) < MIN_SIGNING_KEY:
        raise SigningKeyError(
            f"{origin} is too short ({len(key)} bytes; at least {MIN_SIGNING_KEY} needed, "
            "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return key


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


# -- who recorded a pass ------------------------------------------------------------------


def run_label(namespace: Namespace) -> str:
    """Which run records passes: the CI system, its run id and shard. No names or paths
    (the repository, ref and job are in the namespace's prefix already)."""
    words = [namespace.provider]
    if namespace.run_id:
        words.append(f"run {namespace.run_id}")
    if namespace.shard:
        words.append(f"shard {namespace.shard}")
    return " ".join(words)


# -- looking records up -------------------------------------------------------------------


@attrs.define
class Table:
    """The records every store of the read chain holds, nearest namespace first.

    A test may be skipped when the record of *any* namespace matches its key: a branch
    keeps skipping what it recorded even after its base branch recorded a newer key for
    the same test, and the other way round.
    """

    layers: list[dict[str, Any]] = attrs.field(factory=list)
    #: Records looked up that were unsigned, malformed or wrongly signed.
    bad_records: int = 0

    def lookup(self, secrets: Secrets, test_hash: str, key_hash: str) -> Match | None:
        """The nearest valid record of ``test_hash`` with ``key_hash``, else None.

        Only records of tests being looked up are verified: a record written with another
        signing key or salt sits under another test hash and is never looked at.
        """
        for layer in self.layers:
            raw = layer.get(test_hash)
            if raw is None:
                continue
            record = _structure_record(raw)
            if record is None:
                self.bad_records += 1
                continue
            at = raw["at"]  # a finite number: shape-checked by LatestWins on read
            expected = secrets.signature(test_hash, record.key, at, record.run)
            if not hmac.compare_digest(expected, record.sig):
                self.bad_records += 1
                continue
            if record.key == key_hash:
                return Match(record.run, float(at))
        return None

    def lookup_file(self, secrets: Secrets, file_hash: str, key_hash: str) -> FileMatch | None:
        """The nearest valid file record of ``file_hash`` with ``key_hash``, else None
        (as `lookup`, for a whole test file)."""
        for layer in self.layers:
            raw = layer.get(file_hash)
            if raw is None:
                continue
            record = _structure_file_record(raw)
            if record is None:
                self.bad_records += 1
                continue
            at = raw["at"]
            expected = secrets.file_signature(file_hash, record.key, record.count, at, record.run)
            if not hmac.compare_digest(expected, record.sig):
                self.bad_records += 1
                continue
            if record.key == key_hash:
                return FileMatch(record.run, float(at), record.count)
        return None


def _structure_record(raw: Any) -> PassRecord | None:
    """The record in a stored ``{"at": ..., "value": ...}``, or None if it is not one."""
    value = raw.get("value") if isinstance(raw, dict) else None
    if not isinstance(value, dict) or not all(type(item) is str for item in value.values()):
        return None  # cattrs would turn a number into a string
    try:
        return _converter.structure(value, PassRecord)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError):
        return None


def _structure_file_record(raw: Any) -> FilePassRecord | None:
    """The file record in a stored ``{"at": ..., "value": ...}``, or None if it is not
    one (a test record under a file hash is not one either)."""
    value = raw.get("value") if isinstance(raw, dict) else None
    if not isinstance(value, dict) or type(value.get("count")) is not int:
        return None  # a bool or a float is not a count
    if not all(type(item) is str for name, item in value.items() if name != "count"):
        return None
    try:
        return _converter.structure(value, FilePassRecord)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError):
        return None


def sign_passes(
    secrets: Secrets,
    passed: Sequence[tuple[str, str]],
    *,
    run: str,
    at: float | None = None,
    files: Sequence[tuple[str, str, int]] = (),
) -> dict[str, JSON]:
    """Signed records for ``(test hash, key hash)`` pairs and ``(file hash, key hash,
    tests)`` triples, all stamped ``at`` (now)."""
    stamp = time.time() if at is None else at
    records = {
        test_hash: secrets.record(test_hash, key_hash, stamp, run)
        for test_hash, key_hash in sorted(passed)
    }
    for file_hash, key_hash, tests in sorted(files):
        records[file_hash] = secrets.file_record(file_hash, key_hash, tests, stamp, run)
    return dict(sorted(records.items()))
