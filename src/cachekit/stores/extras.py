"""Which extra of the ``pytest-cachekit`` distribution brings the client library a URL's
scheme needs: the one table behind every "pip install ..." hint (`cachekit.stores.fsspec`
when fsspec cannot load a protocol, the ``cachekit`` command when an import fails), and
behind the pytest plugin's check that the library is there before its sync agent imports
it (`needs_library`).

A module of its own, not part of `cachekit.stores.registry`: the fsspec store uses it,
and the registry imports the fsspec store.
"""

from __future__ import annotations

import importlib.util

from cachekit.errors import InvalidURL
from cachekit.urls import redact_url

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
#: The package each extra's client library installs, by extra.
LIBRARIES: dict[str, str] = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}
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


def missing_library(url: str) -> InvalidURL:
    """The error for ``url`` when the client library its scheme needs is not installed."""
    return InvalidURL(f"cannot open {redact_url(url)}: {install_hint(url)}")


def needs_library(url: str) -> bool:
    """Whether ``url``'s scheme needs the client library of one of the extras, raising
    `missing_library` if it is not installed. The library is looked up, not imported:
    importing botocore and friends takes most of a second."""
    extra = extra_for(url)
    if extra is None:
        return False
    if importlib.util.find_spec(LIBRARIES[extra]) is None:
        raise missing_library(url)
    return True
