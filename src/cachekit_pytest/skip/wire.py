"""The xdist wire format: what the controller sends each worker (`WorkerInput`), and the
converter for it and for the `SkipSelection` a worker sends back."""

from __future__ import annotations

from typing import Any

import attrs
import cattrs

from cachekit.skip.records import Secrets

#: Keys of xdist's ``workerinput`` (controller to worker) and ``workeroutput`` (back).
WORKER_INPUT = "cachekit_skip_passed"
WORKER_OUTPUT = "cachekit_skip_passed"


@attrs.frozen
class WorkerInput:
    """What the xdist controller tells each worker: the derived keys (hex), the records
    read at start-up and the namespace each layer was read from, whether passes will be
    recorded, and what decides whole files
    (every worker must skip the same ones, or their collections differ)."""

    name_key: str
    sign_key: str
    layers: list[dict[str, Any]]
    verify: bool
    recording: bool
    #: Whether whole files are recorded, and skipped (see `SkipRun`).
    whole_files: bool = False
    skip_files: bool = False
    #: The controller's ``cache/lastfailed`` (None: each worker reads its own).
    lastfailed: list[str] | None = None
    #: The key prefix of each of ``layers`` (a record verifies only there).
    namespaces: list[str] = attrs.field(factory=list)
    #: The dependency sets read (`cachekit.skip.dependencies`).
    sets: dict[str, list[str]] = attrs.field(factory=dict)

    @property
    def secrets(self) -> Secrets:
        return Secrets(bytes.fromhex(self.name_key), bytes.fromhex(self.sign_key))


WIRE = cattrs.Converter()
