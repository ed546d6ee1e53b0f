"""Backends and wrappers. Remote backends import their fsspec filesystem lazily."""

from cachekit.stores.base import CacheStore, Capabilities, Entry
from cachekit.stores.local import LocalStore
from cachekit.stores.memory import MemoryStore
from cachekit.stores.registry import open_store
from cachekit.stores.wrappers import LayeredStore, PrefixedStore, ReadOnlyStore

__all__ = [
    "CacheStore",
    "Capabilities",
    "Entry",
    "LayeredStore",
    "LocalStore",
    "MemoryStore",
    "PrefixedStore",
    "ReadOnlyStore",
    "open_store",
]
