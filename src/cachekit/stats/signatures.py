"""Signed runs: which stored runs were written by a run that held the signing key.

Statistics are unsigned: whoever can write the store can plant a run, and so change what
``cachekit stats`` shows, and nothing more. Quarantining a flaky test changes a run's exit
code, so the evidence for it must come from trusted runs: a run recorded with
``CACHEKIT_SIGNING_KEY`` carries ``sig``, an HMAC over the repository, job and config it
belongs to, its report id and its stored form (canonical JSON). A run copied into another
job or config, edited, or written without the key does not verify.

The ref is left out on purpose: a pull request's run may count a trusted run of its base
branch, which tested the same job and config (the commit in the run says which code).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import attrs

from cachekit.ci.namespace import Namespace
from cachekit.ci.signing import SigningKeyError, signing_key_from_env

#: The field of a stored run that holds its signature.
SIGNATURE = "sig"
#: Keeps a run signature from ever equalling another use's MAC under the same key.
_PURPOSE = b"cachekit signed runs v1"


@attrs.frozen(repr=False)
class RunSigner:
    """Signs and verifies stored runs of one repository, job and config."""

    key: bytes
    scope: str

    @classmethod
    def derive(cls, signing_key: bytes, namespace: Namespace) -> RunSigner:
        key = hmac.new(signing_key, _PURPOSE, hashlib.sha256).digest()
        scope = "\0".join((namespace.repository, namespace.job, namespace.config))
        return cls(key, scope)

    def sign(self, report_id: str, stored: Mapping[str, Any]) -> dict[str, Any]:
        """``stored`` (a run as `cachekit.stats.runs.stored` makes it) with its signature."""
        unsigned = {name: value for name, value in stored.items() if name != SIGNATURE}
        return {**unsigned, SIGNATURE: self._mac(report_id, unsigned)}

    def verified(self, report_id: str, stored: Any) -> bool:
        """Whether ``stored`` is the run ``report_id`` as a holder of the key signed it."""
        signature = stored.get(SIGNATURE) if isinstance(stored, dict) else None
        if not isinstance(signature, str):
            return False
        unsigned = {name: value for name, value in stored.items() if name != SIGNATURE}
        try:
            expected = self._mac(report_id, unsigned)
        except ValueError:  # NaN or infinity, which no signed run holds
            return False
        return hmac.compare_digest(signature, expected)

    def _mac(self, report_id: str, unsigned: Mapping[str, Any]) -> str:
        text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), allow_nan=False)
        message = f"{self.scope}\0{report_id}\0{text}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never the key
        return f"RunSigner(scope={self.scope!r})"


def run_signer(namespace: Namespace) -> RunSigner | None:
    """The signer of this run's namespace, from ``CACHEKIT_SIGNING_KEY``; None when the key
    is not set or too short (`cachekit.ci.signing`; ``--skip-passed`` reports that)."""
    try:
        key = signing_key_from_env()
    except SigningKeyError:
        return None
    return None if key is None else RunSigner.derive(key, namespace)


def sign_runs(signer: RunSigner, runs: Mapping[str, Any]) -> dict[str, Any]:
    """A ``stats/runs`` part (report id -> stored run) with every run signed."""
    return {report_id: signer.sign(report_id, stored) for report_id, stored in runs.items()}
