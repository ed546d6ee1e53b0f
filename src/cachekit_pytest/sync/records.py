"""A run's test statistics as the pytest process hands them over (`RunRecord`), and
the parts they become in the store. Here, apart from the tallying
(`cachekit_pytest.recording`): the sync agent builds the parts, and never imports pytest.
"""

from __future__ import annotations

from typing import Any

import attrs

from cachekit.ci.layout import DURATIONS_KEY, STATS_RUNS_KEY
from cachekit.stats.cases import CODES, TIMED_OUTCOMES, stored_columns
from cachekit.values.codec import JSON
from cachekit.values.durations import durations_part, scoped_setup_key
from cachekit_pytest.sync.keys import ObservedOutcomes


@attrs.frozen
class RunRecord:
    """A run's tallies, as the pytest process hands them to whoever writes the parts."""

    at: float
    #: The CI run (`cachekit.ci.namespace.Namespace.run_id`) and the namespace, for people.
    run_id: str
    label: str
    #: Which shard of the CI run this is (`cachekit.ci.namespace.Namespace.shard`).
    shard: str
    #: The commit the run tested ("" if unknown; `cachekit.ci.commit`).
    commit: str
    #: node id -> duration in whole microseconds, for every test that reported.
    microseconds: dict[str, int]
    #: node id -> [outcome, reruns, message] where not [passed, 0, ""] (typed Any: passed
    #: through as JSON).
    unusual: dict[str, Any]
    #: scope node id -> setup and teardown of its scoped fixtures, in whole microseconds.
    scoped_microseconds: dict[str, int] = attrs.field(factory=dict)
    #: Test file -> its code key (`cachekit.stats.runs.Run.codes`).
    codes: dict[str, str] = attrs.field(factory=dict)

    def parts(self, part_id: str) -> dict[str, JSON]:
        """The parts that record this run, by key, the run named by its part id: what
        `cachekit.stats.runs.run_parts` makes of the same run as a `Run` (the test ids
        are the node ids), built from the columns without a `TestCase` per test."""
        meta = {
            "at": self.at,
            "run_id": self.run_id,
            "source": "pytest",
            "label": self.label,
            "shard": self.shard,
            "commit": self.commit,
        }
        files: list[str] = []
        classnames: list[str] = []
        names: list[str] = []
        outcomes: list[str] = []
        reruns: dict[int, int] = {}
        messages: dict[int, str] = {}
        durations: dict[str, float] = {}
        modules: dict[str, str] = {}
        unusual = self.unusual
        for index, (nodeid, microseconds) in enumerate(self.microseconds.items()):
            head, _, parameters = nodeid.partition("[")
            path, *classes, name = head.split("::")
            module = modules.get(path)
            if module is None:
                module = modules[path] = path[:-3].replace("/", ".") if path.endswith(".py") else ""
            files.append(path)
            classnames.append(
                ".".join(part for part in (module, *classes) if part) if classes else module
            )
            names.append(f"{name}[{parameters}" if parameters else name)
            outcome, rerun_count, message = unusual.get(nodeid, _PASSED)
            outcomes.append(CODES[outcome])
            if rerun_count:
                reruns[index] = rerun_count
            if message:
                messages[index] = message
            if outcome in TIMED_OUTCOMES:  # as `cachekit.stats.runs.durations_of`
                durations[nodeid] = microseconds / 1e6
        stored = stored_columns(
            meta,
            files=files,
            classnames=classnames,
            names=names,
            outcomes="".join(outcomes),
            microseconds=list(self.microseconds.values()),
            reruns=reruns,
            messages=messages,
            codes=self.codes,
        )
        parts: dict[str, JSON] = {STATS_RUNS_KEY: {part_id: stored}}
        scoped = {
            scoped_setup_key(scope): us / 1e6 for scope, us in self.scoped_microseconds.items()
        }
        # In the run's group of ``stats/durations``, the scopes beside its tests.
        observed = durations_part(self.at, {**durations, **scoped})
        if observed:
            parts[DURATIONS_KEY] = observed  # type: ignore[assignment]  # JSON
        return parts


#: A test that simply passed: its `RunRecord.unusual` entry, had it one.
_PASSED = ("passed", 0, "")


@attrs.frozen
class Write:
    """What the end of a run writes (`cachekit_pytest.sync.remote.Remote.write`): its
    parts of the shared keys, its observations and test statistics as parts of their
    own, and the keys to compact once they have ``min_parts`` parts. One record from the
    pytest side to whichever process writes (the sync agent's pipe carries it as is)."""

    #: Key to JSON value, typed Any so cattrs passes it through.
    parts: dict[str, Any]
    compact: tuple[str, ...]
    min_parts: int
    observed: ObservedOutcomes | None = None
    stats: RunRecord | None = None
