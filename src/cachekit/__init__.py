"""cachekit: a test cache on any storage, merged correctly across CI shards and runs."""

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
