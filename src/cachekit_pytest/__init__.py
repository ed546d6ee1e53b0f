"""cachekit_pytest: pytest's cache on any cachekit store."""
