"""CI namespaces: where a run reads and writes (`layout`), detected from the CI system
(`namespace`, `providers`), and whether it is trusted to write.

The names below load on first use (PEP 562 ``__getattr__``): `layout` and `signing` are
imported by every pytest run with the plugin, which should not pay for `namespace` (and
the value formats it brings) unless it uses a store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cachekit.ci.namespace import (
        Namespace,
        detect_namespace,
        namespaced_cache,
        namespaced_store,
    )

__all__ = ["Namespace", "detect_namespace", "namespaced_cache", "namespaced_store"]


def __getattr__(name: str) -> Any:
    """A public name, imported from `cachekit.ci.namespace` on first use."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("cachekit.ci.namespace"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
