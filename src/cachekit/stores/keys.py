"""Key validation and sanitizing, shared by every backend.

Keys are ``/``-separated strings. Validation happens at the store boundary so that no
key can ever name a path outside the store's root, whatever the backend does with it.
"""

from __future__ import annotations

import hashlib
import re

from cachekit.errors import InvalidKey

MAX_KEY_LENGTH = 1024
MAX_SEGMENT_LENGTH = 255
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\]")
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
#: Segments of safe characters that are neither "." nor "..", joined by single slashes.
_PLAINLY_VALID = re.compile(
    r"(?:(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f\\]+/)*"  # segments followed by a slash
    r"(?!\.\.?$)[^/\x00-\x1f\x7f\\]+"  # the last segment
)


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid store key, else raise `InvalidKey`."""
    if not isinstance(key, str):
        raise InvalidKey(f"a key must be a str, not {type(key).__name__}")
    if _PLAINLY_VALID.fullmatch(key) and len(key) <= MAX_SEGMENT_LENGTH:
        return key  # the common case, in one regex (reads are hot)
    if not key:
        raise InvalidKey("a key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"a key must be at most {MAX_KEY_LENGTH} characters: {key[:40]!r}...")
    if _FORBIDDEN_CHARACTERS.search(key):
        raise InvalidKey(f"a key must not contain control characters or backslashes: {key!r}")
    if key.startswith("/"):
        raise InvalidKey(f"a key must be relative, not start with '/': {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"a key must not contain empty, '.' or '..' segments: {key!r}")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise InvalidKey(f"a key segment must be at most {MAX_SEGMENT_LENGTH} characters")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix is empty or a valid key with an optional trailing ``/``."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix


def safe_segment(text: str, *, max_length: int = 64) -> str:
    """Turn user-controlled text (a branch or job name) into one safe key segment.

    Readable text stays readable; anything else, or anything long, is replaced by a
    readable stem plus a short hash, so two different inputs never share a segment.
    """
    if _SAFE_SEGMENT.fullmatch(text) and text not in (".", "..") and len(text) <= max_length:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[: max_length - 13]
    return f"{stem}-{digest}" if stem else digest
