"""Helpers shared by the plugin's test modules."""

from __future__ import annotations

from cachekit import Cache, open_store
from cachekit.ci.namespace import detect_namespace, namespaced_cache


def shared(url: str) -> Cache:
    """The store as the plugin sees it from here (same namespace), for assertions."""
    return namespaced_cache(open_store(url), detect_namespace())
