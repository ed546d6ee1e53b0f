"""The shared keys read at the start of a run and written at its end, from the pytest
process or from the sync agent (a helper process for remote stores)."""

from __future__ import annotations

import os

from cachekit.budget import Budget
from cachekit.ci.namespace import Namespace
from cachekit.stores.registry import is_in_process
from cachekit_pytest.options import SharedKey
from cachekit_pytest.sync.keys import shared_keys
from cachekit_pytest.sync.remote import InProcessSync, Sync


def open_sync(
    url: str, *, namespace: Namespace, keys: tuple[SharedKey, ...], budget: Budget
) -> Sync:
    """In the pytest process for a store on this machine; in the sync agent for a remote
    one, so that its client libraries (botocore: imports, threads, loggers, garbage)
    never load into the test process and its start-up read overlaps the run."""
    if is_in_process(url) or os.environ.get("CACHEKIT_IN_PROCESS", "") not in ("", "0"):
        return InProcessSync(url, namespace=namespace, keys=shared_keys(keys), budget=budget)
    from cachekit_pytest.sync.agent import AgentSync  # noqa: PLC0415 (a cycle otherwise)

    return AgentSync(url, namespace=namespace, keys=keys, budget=budget)
