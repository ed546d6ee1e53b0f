"""CI namespaces: where a run reads and writes (`layout`), detected from the CI system
(`namespace`, `providers`), and whether it is trusted to write."""

from cachekit.ci.namespace import Namespace, detect_namespace, namespaced_cache, namespaced_store

__all__ = ["Namespace", "detect_namespace", "namespaced_cache", "namespaced_store"]
