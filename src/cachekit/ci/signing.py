"""The signing key: what only trusted CI holds.

``CACHEKIT_SIGNING_KEY`` is given to trusted jobs only (never to pull requests from
forks). What it signs cannot be forged by whoever can write the store: the
``--skip-passed`` records (`cachekit.skip.records`) and the runs whose history may
quarantine a flaky test (`cachekit.stats.signatures`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Where runs find the signing key.
ENV_SIGNING_KEY = "CACHEKIT_SIGNING_KEY"
#: Shortest signing key accepted, in bytes.
MIN_SIGNING_KEY = 16


class SigningKeyError(Exception):
    """No usable signing key; the message says why and what to do."""


def signing_key_from_text(text: str, origin: str) -> bytes:
    key = text.strip().encode("utf-8")
    if len(key) < MIN_SIGNING_KEY:
        raise SigningKeyError(
            f"{origin} is too short ({len(key)} bytes; at least {MIN_SIGNING_KEY} needed, "
            "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return key


def signing_key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key `ENV_SIGNING_KEY` holds, or None when it is not set; `SigningKeyError` if
    it is too short to use."""
    text = (os.environ if environ is None else environ).get(ENV_SIGNING_KEY, "")
    return signing_key_from_text(text, ENV_SIGNING_KEY) if text.strip() else None
