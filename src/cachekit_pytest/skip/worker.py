"""The xdist worker side: collect as the controller said (its `WorkerInput`), and send
back what selecting found. Only the controller reads the store and writes to it."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from cachekit.skip.records import Table
from cachekit_pytest.options import SkipSettings
from cachekit_pytest.skip.collect import Collecting, CollectPlan
from cachekit_pytest.skip.selection import read_lastfailed
from cachekit_pytest.skip.wire import WIRE, WORKER_OUTPUT, WorkerInput


def worker_plan(config: pytest.Config, given: WorkerInput) -> CollectPlan:
    """The plan the controller sent; the first worker saves the fingerprinter's analysis
    (one writer is enough, and they would race)."""
    table = (
        Table(given.layers, given.namespaces, sets=given.sets)
        if given.recording or any(given.layers)
        else None
    )
    sent = given.lastfailed

    def lastfailed() -> Collection[str]:
        return read_lastfailed(config) if sent is None else sent

    workerid = getattr(config, "workerinput", {}).get("workerid", "")
    return CollectPlan(
        secrets=given.secrets,
        verify=given.verify,
        whole_files=given.whole_files,
        skip_files=given.skip_files,
        save=workerid in ("gw0", ""),
        table=lambda: table,
        lastfailed=lastfailed,
        record=given.recording,
    )


class WorkerReply:
    """Sends the worker's selection to the controller at the end of the session."""

    def __init__(self, config: pytest.Config, collecting: Collecting) -> None:
        self.config = config
        self.collecting = collecting

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.collecting.assemble()
        output: dict[str, Any] = getattr(self.config, "workeroutput", {})
        output[WORKER_OUTPUT] = WIRE.unstructure(self.collecting.selection)


def start_worker(config: pytest.Config, settings: SkipSettings, given: WorkerInput) -> None:
    """Register the collection hooks and the reply on an xdist worker."""
    collecting = Collecting(config, settings, worker_plan(config, given))
    config.pluginmanager.register(collecting, "cachekit-skip-passed-worker")
    config.pluginmanager.register(WorkerReply(config, collecting), "cachekit-skip-passed-reply")
    collecting.start_recording()
