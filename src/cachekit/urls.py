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


#: Credentials in any URL a text quotes, with or without its scheme (``user:secret@``).
_USERINFO = re.compile(r"(?<![\w.-])[^\s/@'\"]+:[^\s/@'\"]*@")
#: Shorter user names are left alone: replacing them would garble the text around them.
_MIN_SECRET = 3


def redact_text(text: str, *urls: str) -> str:
    """``text`` (an error message, a warning) without the credentials of ``urls``, and
    without the ``user:password@`` of any other URL it quotes.

    A client library may quote part of a URL rather than the whole of it, such as an
    S3 "bucket name" ``USER:SECRET@bucket``: each secret is removed wherever it appears.
    """
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact_url(url))
        for secret in _secrets_of(url):
            text = text.replace(secret, REDACTED)
    return _USERINFO.sub(f"{REDACTED}@", text)


def _secrets_of(url: str) -> list[str]:
    """What `redact_url` hides in ``url``: its user info (and the password and user name
    in it), and secret-looking query values; longest first."""
    try:
        parts, shown = urlsplit(url), urlsplit(redact_url(url))
        username, password = parts.username, parts.password
    except ValueError:
        return [url]
    found = [parts.netloc.rpartition("@")[0], password or "", username or ""]
    pairs = zip(
        parse_qsl(parts.query, keep_blank_values=True),
        parse_qsl(shown.query, keep_blank_values=True),
        strict=False,
    )
    found += [value for (_, value), (_, hidden) in pairs if hidden != value]
    return sorted((s for s in set(found) if len(s) >= _MIN_SECRET), key=len, reverse=True)
