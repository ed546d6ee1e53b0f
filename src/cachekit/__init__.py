"""cachekit: a test cache on any storage, merged correctly across CI shards and runs.

The public names below load on first use (PEP 562 ``__getattr__``): importing any
``cachekit.x`` module imports this package first, and a pytest run that only needs its
options or errors should not pay for the stores, the value formats and cattrs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cachekit.errors import (
        CacheError,
        CacheKitWarning,
        CorruptData,
        CorruptValueWarning,
        InvalidKey,
        InvalidURL,
        PreconditionFailed,
        StoreUnavailable,
        StoreUnavailableWarning,
        UnsupportedOperation,
    )
    from cachekit.stores import (
        CacheStore,
        Capabilities,
        Entry,
        LayeredStore,
        LocalStore,
        MemoryStore,
        PrefixedStore,
        ReadOnlyStore,
        open_store,
    )
    from cachekit.urls import redact_url
    from cachekit.values.cache import Cache, Merged
    from cachekit.values.digests import NODEIDS, DigestSet, DigestUnion
    from cachekit.values.durations import DURATIONS
    from cachekit.values.merge import (
        LASTFAILED,
        CanonicalMax,
        LastOutcomes,
        LatestWins,
        MappingUnion,
        Maximum,
        MergeStrategy,
        Outcome,
        SortedUnion,
        stored_form,
    )
    from cachekit.values.objects import Envelope, new_part_id

__version__ = "0.1.0"

#: Each public name, by the module that defines it.
_SOURCES: dict[str, str] = {
    **dict.fromkeys(
        (
            "CacheError",
            "CacheKitWarning",
            "CorruptData",
            "CorruptValueWarning",
            "InvalidKey",
            "InvalidURL",
            "PreconditionFailed",
            "StoreUnavailable",
            "StoreUnavailableWarning",
            "UnsupportedOperation",
        ),
        "cachekit.errors",
    ),
    **dict.fromkeys(
        (
            "CacheStore",
            "Capabilities",
            "Entry",
            "LayeredStore",
            "LocalStore",
            "MemoryStore",
            "PrefixedStore",
            "ReadOnlyStore",
            "open_store",
        ),
        "cachekit.stores",
    ),
    "redact_url": "cachekit.urls",
    "Cache": "cachekit.values.cache",
    "Merged": "cachekit.values.cache",
    **dict.fromkeys(("NODEIDS", "DigestSet", "DigestUnion"), "cachekit.values.digests"),
    "DURATIONS": "cachekit.values.durations",
    **dict.fromkeys(
        (
            "LASTFAILED",
            "CanonicalMax",
            "LastOutcomes",
            "LatestWins",
            "MappingUnion",
            "Maximum",
            "MergeStrategy",
            "Outcome",
            "SortedUnion",
            "stored_form",
        ),
        "cachekit.values.merge",
    ),
    "Envelope": "cachekit.values.objects",
    "new_part_id": "cachekit.values.objects",
}

__all__ = [
    "DURATIONS",
    "LASTFAILED",
    "NODEIDS",
    "Cache",
    "CacheError",
    "CacheKitWarning",
    "CacheStore",
    "CanonicalMax",
    "Capabilities",
    "CorruptData",
    "CorruptValueWarning",
    "DigestSet",
    "DigestUnion",
    "Entry",
    "Envelope",
    "InvalidKey",
    "InvalidURL",
    "LastOutcomes",
    "LatestWins",
    "LayeredStore",
    "LocalStore",
    "MappingUnion",
    "Maximum",
    "MemoryStore",
    "MergeStrategy",
    "Merged",
    "Outcome",
    "PreconditionFailed",
    "PrefixedStore",
    "ReadOnlyStore",
    "SortedUnion",
    "StoreUnavailable",
    "StoreUnavailableWarning",
    "UnsupportedOperation",
    "new_part_id",
    "open_store",
    "redact_url",
    "stored_form",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then kept here)."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
