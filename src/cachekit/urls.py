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
            [(name, _redact_query_value(name, value)) for name, value in pairs],
            safe="*/:@",
        )
    if not parts.scheme or "://" not in url:
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    # Spelled out: urlunsplit drops the "//" of a URL with an empty host ("memory://").
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"


def _redact_query_value(name: str, value: str) -> str:
    """A query value as it may be printed: hidden under a secret-looking name, and, when
    it is a URL itself (``endpoint_url=http://user:secret@host``), redacted as one."""
    if _SECRET_QUERY_NAMES.search(name):
        return REDACTED
    if "://" in value:
        return redact_url(value)
    if "@" in value:  # user info without a scheme: "user:secret@host"
        return f"{REDACTED}@{value.rpartition('@')[2]}"
    return value


#: Credentials in any URL a text quotes, with or without its scheme (``user:secret@``),
#: its ``@`` perhaps percent-encoded (a URL quoted inside another URL's query).
_USERINFO = re.compile(r"(?<![\w.-])[^\s/@'\"]+:[^\s/@'\"]*?(@|%40)")
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
    return _USERINFO.sub(rf"{REDACTED}\1", text)


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
    for (_, value), (_, hidden) in pairs:
        if hidden == value:
            continue
        # A URL in the query (an endpoint): only its own secrets, not the whole of it.
        if hidden == REDACTED:
            found.append(value)
        elif "://" in value:
            found += _secrets_of(value)
        else:
            userinfo = value.rpartition("@")[0]
            found += [userinfo, userinfo.partition(":")[2]]
    return sorted((s for s in set(found) if len(s) >= _MIN_SECRET), key=len, reverse=True)
