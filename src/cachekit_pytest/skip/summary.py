"""What the run prints: the terminal's ``cached`` entries."""

from __future__ import annotations

from typing import ClassVar

import attrs

#: The terminal's stats key: the summary line says ``N cached``. One word on purpose:
#: summary parsers (pytester's ``parseoutcomes`` among them) read ``(\\d+) (\\w+)``, so
#: "N passed (cached)" would be read as N passed.
STAT_KEY = "cached"


@attrs.frozen(slots=False)
class CachedReport:
    """An entry of the terminal's stats for a test skipped because it passed before.

    Never sent to ``pytest_runtest_logreport``; shaped like a passed call `TestReport`
    for plugins that walk every stats entry (Hypothesis's reads each one's ``__dict__``),
    at a fraction of its cost for 20,000 of them.
    """

    nodeid: str
    cachekit_reason: str
    when: ClassVar[str] = "call"
    outcome: ClassVar[str] = "passed"
    passed: ClassVar[bool] = True
    failed: ClassVar[bool] = False
    skipped: ClassVar[bool] = False
    longrepr: ClassVar[None] = None
    duration: ClassVar[float] = 0.0
    sections: ClassVar[tuple[()]] = ()
    user_properties: ClassVar[tuple[()]] = ()
    count_towards_summary: ClassVar[bool] = True

    @property
    def location(self) -> tuple[str, None, str]:
        return (self.nodeid.partition("::")[0], None, self.nodeid)
