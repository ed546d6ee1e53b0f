"""A run's test statistics as the pytest process hands them over (`RunRecord`), and
the parts they become in the store. Here, apart from the tallying
(`cachekit_pytest.recording`): the sync agent builds the parts, and never imports pytest.
"""

from __future__ import annotations

from typing import Any

import attrs

from cachekit.ci.layout import DURATIONS_KEY
from cachekit.stats.junit import CaseOutcome, TestCase
from cachekit.stats.runs import Run, run_parts
from cachekit.values.codec import JSON
from cachekit.values.durations import durations_part, scoped_setup_key


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

    def cases(self) -> tuple[TestCase, ...]:
        passed = ("passed", 0, "")
        return tuple(
            _case(nodeid, microseconds / 1e6, *self.unusual.get(nodeid, passed))
            for nodeid, microseconds in self.microseconds.items()
        )

    def parts(self, part_id: str) -> dict[str, JSON]:
        """The parts that record this run, by key, the run named by its part id."""
        run = Run(
            id=part_id,
            at=self.at,
            run_id=self.run_id,
            source="pytest",
            label=self.label,
            cases=self.cases(),
            shard=self.shard,
            commit=self.commit,
            codes=self.codes,
        )
        parts = run_parts(run)
        scoped = durations_part(
            self.at,
            {scoped_setup_key(scope): us / 1e6 for scope, us in self.scoped_microseconds.items()},
        )
        if scoped:  # in the run's group of ``stats/durations``, beside its tests
            tests: dict[str, Any] = parts.get(DURATIONS_KEY) or {}  # type: ignore[assignment]
            parts[DURATIONS_KEY] = {
                **tests,
                **{at: {**tests.get(at, {}), **group} for at, group in scoped.items()},
            }
        return parts


def _case(nodeid: str, seconds: float, outcome: CaseOutcome, reruns: int, message: str) -> TestCase:
    """A `TestCase` whose `TestCase.test_id` is ``nodeid`` again (JUnit's naming:
    ``file``, a dotted ``classname`` of module and classes, and ``name``)."""
    head, _, parameters = nodeid.partition("[")
    path, *classes, name = head.split("::")
    name += f"[{parameters}" if parameters else ""
    module = path[:-3].replace("/", ".") if path.endswith(".py") else ""
    classname = ".".join(part for part in (module, *classes) if part)
    return TestCase(
        file=path,
        classname=classname,
        name=name,
        outcome=outcome,
        duration=seconds,
        reruns=reruns,
        message=message,
    )
