"""What ``--skip-passed`` prints: the header line, the line after collecting, the
terminal's ``cached`` entries (the summary line's ``N cached``), the list of cached tests
and the verify report. Pure functions of what selecting found."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar

import attrs

from cachekit_pytest.skip.selection import SkipSelection

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


def header(*, verify: bool, display: str, trusted: bool) -> str:
    """The report header's line: the mode, where the records are, and whether this run
    may write them."""
    mode = "verify (runs every test)" if verify else "on"
    access = "read-write" if trusted else "read-only"
    return f"cachekit skip-passed: {mode}, records in {display} ({access})"


def collection_finish(
    selection: SkipSelection,
    *,
    verify: bool,
    cached: int,
    refusal: str | None,
    skip_refusal: str | None,
) -> list[str] | None:
    """The line after collecting: what keying and checking cost, and what was skipped
    (in verify mode: would have been). None when no test file was keyed."""
    if not selection.files:
        return None
    keyed = (
        f"{selection.files} test file(s) keyed in {selection.key_seconds:.2f}s, "
        f"{len(selection.decisions)} test(s) checked in {selection.lookup_seconds:.2f}s"
    )
    files = len(selection.skipped_files)
    if refusal:
        why_not = f" (whole files neither skipped nor recorded: {refusal})"
    elif skip_refusal:
        why_not = f" (whole files not skipped: {skip_refusal})"
    else:
        why_not = ""
    if verify:
        whole = f" ({files} whole file(s))" if files else ""
        return [
            f"cachekit skip-passed (verify): {keyed}; {would_skip(selection)} would be "
            f"skipped{whole}, all run{why_not}"
        ]
    whole = f", {files} whole file(s) not collected" if files else ""
    return [f"cachekit skip-passed: {keyed}; {cached} passed before (cached){whole}{why_not}"]


def cached_tests(selection: SkipSelection, *, verify: bool) -> list[tuple[str, str]]:
    """The tests taken out of the run: (node id, reason)."""
    if verify:
        return []
    return [
        (nodeid, decision.reason)
        for nodeid, decision in sorted(selection.decisions.items())
        if decision.skippable
    ]


def cached_entries(selection: SkipSelection, *, verify: bool) -> list[tuple[str, str]]:
    """The tests taken out of the run and the files skipped whole: (node id or path,
    reason)."""
    files = [] if verify else list(selection.skipped_files.items())
    tests = cached_tests(selection, verify=verify)
    return sorted(tests + [(label, skip.reason) for label, skip in files])


def count_cached(terminal: Any, selection: SkipSelection, *, verify: bool) -> None:
    """The cached tests as entries of the terminal's stats, so that the summary line
    counts them (``N cached``)."""
    cached = [
        CachedReport(nodeid, reason) for nodeid, reason in cached_tests(selection, verify=verify)
    ]
    if not verify:
        for label, skip in selection.skipped_files.items():
            # One entry per test: the summary line counts entries.
            cached += [CachedReport(label, skip.reason)] * skip.tests
    terminal.stats.setdefault(STAT_KEY, []).extend(cached)
    # The terminal caches the kinds of outcome it has seen, and refreshes them only
    # once every collected test has reported (not after ``-x``, say).
    refresh = getattr(terminal, "_set_main_color", None)
    if callable(refresh):
        refresh()


def would_skip(selection: SkipSelection) -> int:
    """Verify mode: how many of the tests that ran would have been skipped."""
    would = selection.skipped_files
    return sum(
        decision.skippable or decision.file in would for decision in selection.decisions.values()
    )


def false_skips(
    selection: SkipSelection, failed: Collection[str], *, verify: bool
) -> list[tuple[str, str]]:
    """Tests that would have been skipped and failed, and files that would have been
    skipped whole and were not collected as recorded: (node id or path, reason)."""
    decisions = selection.decisions
    would = selection.skipped_files if verify else {}
    found = []
    for nodeid in sorted(failed):
        decision = decisions.get(nodeid)
        if decision is None:
            continue
        if decision.file in would:
            found.append((nodeid, would[decision.file].reason))
        elif decision.skippable:
            found.append((nodeid, decision.reason))
    for label, skip in would.items():
        tally = selection.tallies.get(label)
        if tally is None or tally.broken:
            found.append((label, f"{skip.reason}; failed to collect now"))
        elif tally.tests != skip.tests:
            found.append((label, f"{skip.reason}; {tally.tests} test(s) collected now"))
    return found


#: How many reasons the summary's line counts.
TOP_REASONS = 3


def why_ran(selection: SkipSelection, ran: Collection[str]) -> list[tuple[str, str]]:
    """(node id, why) of each test that ran and has a decision."""
    decisions = selection.decisions
    return [
        (nodeid, decisions[nodeid].why or "its record did not match")
        for nodeid in sorted(ran)
        if nodeid in decisions
    ]


def explain(terminalreporter: Any, selection: SkipSelection, ran: Collection[str]) -> None:
    """``--skip-passed-explain`` (or ``-v``): each test that ran, and why; then the top
    reasons, counted."""
    reasons = why_ran(selection, ran)
    if not reasons:
        return
    terminalreporter.write_sep("=", f"{len(reasons)} test(s) ran (skip-passed): why")
    for nodeid, why in reasons:
        terminalreporter.write_line(f"RAN {nodeid} - {why}")
    counts: dict[str, int] = {}
    for _, why in reasons:
        counts[why] = counts.get(why, 0) + 1
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
    others = len(reasons) - sum(count for _, count in top)
    words = [f"{count} {why}" for why, count in top] + ([f"{others} other"] if others else [])
    terminalreporter.write_line(f"cachekit skip-passed: {len(reasons)} ran: " + "; ".join(words))


def terminal_summary(
    terminalreporter: Any,
    selection: SkipSelection,
    *,
    failed: Collection[str],
    verify: bool,
    cached: int,
    verbose: bool,
) -> None:
    """With ``-v`` (or ``-rp``) every cached test and file with its reason; in verify
    mode, the false skips."""
    if cached and verbose:
        terminalreporter.write_sep("=", f"{cached} cached passes (skip-passed)")
        for nodeid, reason in cached_entries(selection, verify=verify):
            terminalreporter.write_line(f"CACHED {nodeid} - {reason}")
    if verify:
        false = false_skips(selection, failed, verify=verify)
        terminalreporter.write_sep(
            "=",
            f"cachekit skip-passed verify: {len(false)} false skip(s) "
            f"of {would_skip(selection)} test(s) that would have been skipped",
            red=bool(false),
            green=not false,
        )
        for nodeid, reason in false:
            terminalreporter.write_line(f"FALSE SKIP {nodeid} - {reason}")
