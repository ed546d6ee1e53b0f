"""The value layer: JSON values on a `cachekit.stores.CacheStore` (codec), shard parts
merged on read (merge strategies) and compare-and-swap updates (`Cache`)."""
