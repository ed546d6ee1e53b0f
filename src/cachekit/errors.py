"""One small exception hierarchy, whatever the backend.

Backends raise these and never print or swallow; callers (the value layer, the pytest
adapter) decide whether to degrade. Warnings are for callers that chose to degrade.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base class of every error cachekit raises."""


class StoreUnavailable(CacheError):
    """The storage could not be reached, timed out, or refused the credentials."""


class PreconditionFailed(CacheError):
    """A conditional write lost: the key exists (``if_absent``) or changed (``if_version``)."""


class UnsupportedOperation(CacheError):
    """The store cannot honour what was asked (a precondition, a write on a read-only store).

    Raised instead of silently doing something weaker, such as overwriting.
    """


class InvalidKey(CacheError, ValueError):
    """A key that is empty, malformed, or could resolve outside the store's root."""


class CorruptData(CacheError):
    """Stored bytes that are not a value cachekit wrote: foreign, truncated or tampered."""


class InvalidURL(CacheError, ValueError):
    """A store URL that cannot be opened; the message says what to fix or install."""


class CacheKitWarning(UserWarning):
    """Base class of cachekit's warnings: something was degraded, nothing was lost."""


class CorruptValueWarning(CacheKitWarning):
    """A stored value could not be decoded and was read as a miss."""


class StoreUnavailableWarning(CacheKitWarning):
    """The store failed and the caller continued as if the cache were empty."""
