"""Printing store URLs safely: credentials never reach a log, a header or an error."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_QUERY_NAMES = re.compile(
    r"(key|secret|token|password|passwd|pwd|sig|signature|sas|credential|connection_string)",
    re.IGNORECASE,
)
REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with any password, user name and secret-looking query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [
                (name, REDACTED if _SECRET_QUERY_NAMES.search(name) else value)
                for name, value in pairs
            ],
            safe="*/:",
        )
    if not parts.scheme or "://" not in url:
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    # Spelled out: urlunsplit drops the "//" of a URL with an empty host ("memory://").
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"
