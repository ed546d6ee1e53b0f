"""The shared keys read at the start of a run and written at its end, from the pytest
process or from the sync agent (a helper process for remote stores)."""

from __future__ import annotations

import os

from cachekit.session import Session
from cachekit.stores.registry import is_in_process
from cachekit_pytest.sync.keys import SharedKey, shared_keys
from cachekit_pytest.sync.remote import InProcessSync, Sync


def open_sync(session: Session, keys: tuple[SharedKey, ...]) -> Sync:
    """In the pytest process for a store on this machine; in the sync agent for a remote
    one, so that its client libraries (botocore: imports, threads, loggers, garbage)
    never load into the test process and its start-up read overlaps the run."""
    if is_in_process(session.url) or os.environ.get("CACHEKIT_IN_PROCESS", "") not in ("", "0"):
        return InProcessSync(session, shared_keys(keys))
    # Imported here: a run with a store on this machine never loads the agent's modules.
    from cachekit_pytest.sync.agent import AgentSync  # noqa: PLC0415

    return AgentSync(session, keys)
