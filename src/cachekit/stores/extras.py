"""Which extra of the ``pytest-cachekit`` distribution brings the client library a URL's
scheme needs: the one table behind every "pip install ..." hint (`cachekit.stores.fsspec`
when fsspec cannot load a protocol, the ``cachekit`` command when an import fails).

A module of its own, not part of `cachekit.stores.registry`: the fsspec store uses it,
and the registry imports the fsspec store.
"""

from __future__ import annotations

#: The extra per URL scheme (fsspec protocol) whose filesystem is an optional dependency.
EXTRAS: dict[str, str] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}
#: The extra with every optional store dependency.
ALL_EXTRAS = "all"


def extra_for(url: str) -> str | None:
    """The extra that brings the client library of ``url``'s scheme; None for a plain path
    or a scheme that needs none of them."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return EXTRAS.get(scheme)


def install_hint(url: str) -> str:
    """What to install to open ``url``, such as ``pip install 'pytest-cachekit[s3]'``;
    every optional dependency when its scheme names none."""
    return f"pip install 'pytest-cachekit[{extra_for(url) or ALL_EXTRAS}]'"
