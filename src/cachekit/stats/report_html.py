"""``cachekit stats report``: the page, drawn from a `cachekit.stats.report.StatsReport`.

One HTML file with inline CSS and inline SVG drawn here. The page loads nothing at view time
(no scripts, fonts, images or styles from anywhere), and a Content-Security-Policy says
so to the browser too, so it can be published as a CI artifact and opened offline.

Every text that comes from the store (test ids, messages, labels, run ids) is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import attrs

from cachekit.files import write_atomically
from cachekit.stats.flaky import FlakyTest, Seen
from cachekit.stats.report import RunOutcomes, StatsReport, UnstableTest, format_utc

# -- writing --------------------------------------------------------------------------


def write_report(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a reader sees the old page or the new one,
    never half of one."""
    write_atomically(path, text.encode("utf-8"))


# -- rendering ------------------------------------------------------------------------

_WIDTH = 960
_FONT = 12
#: Test ids are drawn in a monospace font: each character is 0.6 em wide.
_CHAR = 0.6 * _FONT
_LABEL_CHARS = 64
#: Run names under the history plot are cut to this many characters.
_RUN_CHARS = 18
#: At most this many run names stand under the history plot (every k-th run).
_RUN_LABELS = 36
_BAR = 18
_GAP = 6
_COLORS = {
    "bar": "#4c78a8",
    "failed": "#d1495b",
    "flaky": "#edae49",
    "passed": "#59a14f",
    "skipped": "#b7b7b7",
    "mean": "#333333",
}

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
       Arial, sans-serif; color: #1f2328; background: #f6f8fa; margin: 0; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 2px; }
.meta, .note { color: #59636e; margin: 0 0 12px; font-size: 14px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 8px; }
.card { background: #fff; border: 1px solid #d1d9e0; border-radius: 8px;
        padding: 10px 16px; min-width: 120px; }
.card b { display: block; font-size: 24px; }
.card span { color: #59636e; font-size: 13px; }
.card.bad b { color: #b3263a; }
.card.warn b { color: #a0620a; }
section { background: #fff; border: 1px solid #d1d9e0; border-radius: 8px;
          padding: 16px 20px; margin: 16px 0; }
svg { display: block; width: 100%; max-width: 960px; height: auto; }
svg text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
           font-size: 12px; fill: #1f2328; }
svg .axis text, svg text.small { font-size: 11px; fill: #59636e; }
svg .axis line, svg line.grid { stroke: #d8dee4; }
svg text.group { font-weight: bold; }
svg text.value { fill: #59636e; }
svg .bar:hover { opacity: 0.8; }
.legend { display: flex; gap: 16px; font-size: 13px; margin: 4px 0 8px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
            margin-right: 5px; vertical-align: -1px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin-top: 12px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #d8dee4;
         vertical-align: top; }
th { color: #59636e; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td code { font: 12px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
          overflow-wrap: anywhere; }
td:first-child { width: 45%; }
.empty { font-size: 17px; padding: 32px 20px; text-align: center; }
"""

#: Nothing may load at view time: no scripts at all, styles only inline.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"


def render_html(report: StatsReport) -> str:
    """The whole page: one HTML document that needs nothing else."""
    title = "Test statistics"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="cachekit stats report">',
        f"<title>{_e(title)}{' — ' + _e(report.scope) if report.scope else ''}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(report.scope) + " · " if report.scope else ""}'
        f"generated {_e(format_utc(report.generated_at))}</p>",
    ]
    if report.empty:
        parts.append(
            '<section class="empty" id="nothing-recorded">Nothing recorded yet. Run the '
            "tests with the cachekit pytest plugin and a store (<code>pytest "
            "--cache-url=URL</code>), or store JUnit XML reports with <code>cachekit "
            "stats ingest</code>, then build this report again.</section>"
        )
    else:
        parts += [
            _cards(report),
            _slowest_section(report),
            _files_section(report),
            _shards_section(report),
            _history_section(report),
            _flaky_section(report),
        ]
    parts += ["</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _cards(report: StatsReport) -> str:
    latest = report.outcomes[-1]
    items = [
        ("", f"{len(report.runs)}", f"CI runs ({report.reports} reports)"),
        ("", f"{report.tests}", "tests seen"),
        ("bad" if latest.failed else "", f"{latest.failed}", "failed in the latest run"),
        ("warn" if latest.flaky else "", f"{latest.flaky}", "flaky in the latest run"),
        ("warn" if report.flaky_total else "", f"{report.flaky_total}", "flaky tests"),
        ("", _seconds(sum(s.seconds for s in report.shards[-1].shards)), "test time, latest run"),
    ]
    cards = "".join(
        f'<div class="card {kind}"><b>{_e(value)}</b><span>{_e(text)}</span></div>'
        for kind, value, text in items
    )
    first, last = report.runs[0], report.runs[-1]
    span = f"from {format_utc(first.at)} to {format_utc(last.at)}" if len(report.runs) > 1 else ""
    return f'<div class="cards">{cards}</div><p class="note">{_e(span)}</p>'


def _section(plot: str, title: str, note: str, body: str) -> str:
    return (
        f'<section id="plot-{plot}" data-plot="{plot}">'
        f"<h2>{_e(title)}</h2>"
        f'<p class="note">{_e(note)}</p>{body}</section>'
    )


def _slowest_section(report: StatsReport) -> str:
    bars = [
        _Bar(
            label=item.test_id,
            value=item.seconds,
            tooltip=f"{item.test_id}\n{_seconds(item.seconds)}, {item.outcome}",
            color=_COLORS["failed"] if item.outcome == "failed" else _COLORS["bar"],
        )
        for item in report.slowest
    ]
    note = (
        f"The {len(bars)} slowest of {report.tests} tests, by the duration of each test's "
        "latest run. Failed runs are drawn in red."
    )
    return _section("slowest", "Slowest tests", note, _hbars(bars, "duration"))


def _files_section(report: StatsReport) -> str:
    bars = [
        _Bar(
            label=item.file,
            value=item.seconds,
            tooltip=f"{item.file}\n{_seconds(item.seconds)} over {item.tests} test(s)",
            color=_COLORS["bar"],
        )
        for item in report.files
    ]
    shown = (
        f"the {len(bars)} slowest of {report.files_total}"
        if len(bars) < report.files_total
        else f"all {report.files_total}"
    )
    note = (
        f"Summed latest durations of the tests of each file ({shown} files)."
        if report.files_total
        else "No test file recorded."
    )
    return _section("files", "Duration by test file", note, _hbars(bars, "summed duration"))


def _shards_section(report: StatsReport) -> str:
    groups = [
        (
            f"run {balance.run}: {len(balance.shards)} shard(s), slowest "
            f"{balance.imbalance:.2f}x the mean",
            [
                _Bar(
                    label=shard.shard,
                    value=shard.seconds,
                    tooltip=f"run {balance.run}, shard {shard.shard}\n"
                    f"{_seconds(shard.seconds)} over {shard.tests} test(s)",
                    color=_COLORS["bar"],
                )
                for shard in balance.shards
            ],
            sum(shard.seconds for shard in balance.shards) / len(balance.shards),
        )
        for balance in reversed(report.shards)
    ]
    note = (
        f"Summed test time of each shard in the {len(groups)} most recent CI runs, newest "
        "first. The dark tick marks the mean; a long bar past it is the shard the run "
        "waited for. Shards count from 1: 1/4 is the first of four (the plugin's "
        "--shard-id=0)."
    )
    return _section("shards", "Shard balance", note, _grouped_hbars(groups, "summed duration"))


def _history_section(report: StatsReport) -> str:
    legend = "".join(
        f'<span><i style="background:{_COLORS[kind]}"></i>{_e(text)}</span>'
        for kind, text in (
            ("failed", "failed or errored"),
            ("flaky", "flaky (passed after reruns)"),
            ("passed", "passed"),
        )
    )
    note = (
        f"Per CI run, oldest first ({len(report.outcomes)} runs): failed and flaky tests "
        "above, tests that passed below."
    )
    body = f'<div class="legend">{legend}</div>{_history_svg(report.outcomes)}'
    body += _unstable_table(report.unstable)
    return _section("history", "Failures and flakes over runs", note, body)


def _unstable_table(tests: Sequence[UnstableTest]) -> str:
    if not tests:
        return '<p class="note">No test failed or needed a rerun in these runs.</p>'
    rows = "".join(
        "<tr>"
        f"<td><code>{_e(test.test_id)}</code></td>"
        f'<td class="num">{test.failed}</td>'
        f'<td class="num">{test.flaky}</td>'
        f'<td class="num">{test.runs}</td>'
        f'<td title="{_e(test.last_message)}">{_e(_shorten_end(test.last_message, 120))}'
        f"{_where_failed(test)}</td></tr>"
        for test in tests
    )
    return (
        '<table id="unstable-tests"><thead><tr><th>Most often failing or flaky</th>'
        '<th class="num">failed</th><th class="num">flaky</th><th class="num">runs</th>'
        "<th>last failure</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _flaky_section(report: StatsReport) -> str:
    note = (
        f"Tests that passed and failed on the same commit (or, without one, in the same CI "
        f"run), or passed only after reruns, over these {len(report.runs)} CI runs, most "
        "recently seen first. A test that always fails, or failed until its code changed, "
        "is not here."
    )
    if report.flaky_total > len(report.flaky):
        note += f" The first {len(report.flaky)} of {report.flaky_total}."
    if not report.flaky:
        body = '<p class="note">No flaky test in these runs.</p>'
    else:
        rows = "".join(_flaky_row(test) for test in report.flaky)
        body = (
            '<table id="flaky-tests"><thead><tr><th>Flaky test</th>'
            '<th class="num">passed</th><th class="num">failed</th><th>on</th>'
            "<th>last seen</th><th>last failure</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return _section("flaky", f"Flaky tests ({report.flaky_total})", note, body)


def _flaky_row(test: FlakyTest) -> str:
    code = ", ".join(_shorten_end(key, 12) for key in test.code[:3])
    code += f" (+{len(test.code) - 3})" if len(test.code) > 3 else ""
    where = "\n".join(_where(seen) for seen in (*test.failures, *test.passes)[:12])
    return (
        f'<tr data-test-id="{_e(test.test_id)}">'
        f'<td><code title="{_e(where)}">{_e(test.test_id)}</code></td>'
        f'<td class="num">{len(test.passes)}</td>'
        f'<td class="num">{len(test.failures)}</td>'
        f'<td title="{_e(", ".join(test.code))}"><code>{_e(code)}</code></td>'
        f"<td>{_e(format_utc(test.last_seen))}</td>"
        f'<td title="{_e(test.last_message)}">{_e(_shorten_end(test.last_message, 80))}</td>'
        "</tr>"
    )


def _where(seen: Seen) -> str:
    """One piece of evidence, for a tooltip."""
    how = seen.outcome + (f" after {seen.reruns} rerun(s)" if seen.reruns else "")
    run = f"run {seen.run_id}" if seen.run_id else "a report"
    shard = f" shard {seen.shard}" if seen.shard else ""
    return f"{how}: {run}{shard}, {format_utc(seen.at)}"


def _where_failed(test: UnstableTest) -> str:
    return f" <small>(run {_e(test.last_failed_run)})</small>" if test.last_failed_run else ""


# -- SVG ------------------------------------------------------------------------------


@attrs.frozen
class _Bar:
    label: str
    value: float
    tooltip: str
    color: str


def _hbars(bars: Sequence[_Bar], axis_label: str) -> str:
    """Horizontal bars, one row each, with a value axis at the bottom."""
    if not bars:
        return '<p class="note">Nothing to draw.</p>'
    return _grouped_hbars([("", list(bars), None)], axis_label)


def _grouped_hbars(
    groups: Sequence[tuple[str, Sequence[_Bar], float | None]], axis_label: str
) -> str:
    """Horizontal bars in titled groups (a group title of "" draws none), sharing one
    value axis; a group's mean, if given, is drawn as a tick across its bars."""
    labels = [bar.label for _title, bars, _mean in groups for bar in bars]
    label_width = min(_LABEL_CHARS, max(len(label) for label in labels)) * _CHAR + 12
    value_width = 10 * _CHAR  # values stand in a column of their own at the right
    left, right = label_width, _WIDTH - value_width
    top = 8
    highest = max((bar.value for _t, bars, _m in groups for bar in bars), default=0.0)
    ticks = _time_ticks(highest)
    scale = (right - left) / ticks[-1][0]
    rows: list[str] = []
    y = top
    for title, bars, mean in groups:
        if title:
            y += 16
            rows.append(f'<text class="group" x="0" y="{y}">{_e(title)}</text>')
            y += 8
        start = y
        for bar in bars:
            width = max(bar.value * scale, 1.0 if bar.value > 0 else 0.0)
            rows.append(
                f'<g class="row"><text x="{left - 8}" y="{y + _BAR * 0.72:.1f}" '
                f'text-anchor="end">{_e(_shorten_start(bar.label, _LABEL_CHARS))}</text>'
                f'<rect class="bar" x="{left}" y="{y}" width="{width:.1f}" height="{_BAR}" '
                f'fill="{bar.color}" data-value="{bar.value:.6g}"><title>{_e(bar.tooltip)}'
                "</title></rect>"
                f'<text class="value" x="{_WIDTH - 2}" y="{y + _BAR * 0.72:.1f}" '
                f'text-anchor="end">{_e(_seconds(bar.value))}</text></g>'
            )
            y += _BAR + _GAP
        if mean is not None and len(bars) > 1:
            x = left + mean * scale
            rows.append(
                f'<line class="mean" x1="{x:.1f}" x2="{x:.1f}" y1="{start - 3}" '
                f'y2="{y - _GAP + 3}" stroke="{_COLORS["mean"]}" stroke-width="2" '
                f'stroke-dasharray="4 3"><title>mean {_e(_seconds(mean))}</title></line>'
            )
        y += 4
    bottom = y
    axis = [f'<g class="axis"><line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>']
    grid = []
    for tick, tick_label in ticks:
        x = left + tick * scale
        grid.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>')
        axis.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{_e(tick_label)}</text>'
        )
    axis.append(
        f'<text x="{(left + right) / 2:.1f}" y="{bottom + 34}" text-anchor="middle">'
        f"{_e(axis_label)}</text></g>"
    )
    height = bottom + 42
    return _svg(height, [*grid, *rows, *axis], f"bar chart: {axis_label}")


def _history_svg(history: Sequence[RunOutcomes]) -> str:
    """Stacked columns of failed and flaky tests per run, and under them a line of
    the passed tests, sharing the run axis."""
    left, right = 64, _WIDTH - 16
    top_height, bottom_height, gap = 180, 110, 44
    top_y, bottom_y = 12, 12 + top_height + gap
    step = (right - left) / len(history)
    column = min(36.0, step * 0.7)
    bad_ticks = _ticks(max((r.failed + r.flaky for r in history), default=0), integer=True)
    good_ticks = _ticks(max((r.passed for r in history), default=0), integer=True)
    bad_scale = top_height / bad_ticks[-1]
    good_scale = bottom_height / good_ticks[-1]
    items: list[str] = []
    for ticks, scale, zero in (
        (bad_ticks, bad_scale, top_y + top_height),
        (good_ticks, good_scale, bottom_y + bottom_height),
    ):
        for tick in ticks:
            y = zero - tick * scale
            items.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
            items.append(
                f'<g class="axis"><text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">'
                f"{tick:g}</text></g>"
            )
    points: list[tuple[float, float]] = []
    label_every = math.ceil(len(history) / _RUN_LABELS)  # run names must not overlap
    for index, run in enumerate(history):
        center = left + step * (index + 0.5)
        tooltip = (
            f"run {run.run} ({format_utc(run.at)})\n{run.failed} failed, {run.flaky} flaky, "
            f"{run.passed} passed, {run.skipped} skipped"
        )
        stack_top = float(top_y + top_height)
        for kind, count in (("failed", run.failed), ("flaky", run.flaky)):
            if count:
                height = count * bad_scale
                stack_top -= height
                items.append(
                    f'<rect class="bar" data-series="{kind}" data-value="{count}" '
                    f'x="{center - column / 2:.1f}" y="{stack_top:.1f}" width="{column:.1f}" '
                    f'height="{height:.1f}" fill="{_COLORS[kind]}"><title>{_e(tooltip)}'
                    "</title></rect>"
                )
        points.append((center, bottom_y + bottom_height - run.passed * good_scale))
        if index % label_every:
            continue
        label_y = bottom_y + bottom_height + 14
        items.append(
            f'<g class="axis"><text x="{center:.1f}" y="{label_y}" text-anchor="end" '
            f'transform="rotate(-35 {center:.1f} {label_y})">'
            f"{_e(_shorten_start(run.run, _RUN_CHARS))}<title>{_e(tooltip)}</title></text></g>"
        )
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    items.append(
        f'<polyline points="{path}" fill="none" stroke="{_COLORS["passed"]}" stroke-width="2"/>'
    )
    for (x, y), run in zip(points, history, strict=True):
        items.append(
            f'<circle class="point" data-series="passed" data-value="{run.passed}" '
            f'cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{_COLORS["passed"]}"><title>'
            f"{_e(f'run {run.run}: {run.passed} passed')}</title></circle>"
        )
    axis_bottom = bottom_y + bottom_height
    # Run names are drawn at -35 degrees: each character drops by about sin(35) * 0.6 em.
    longest = max(len(_shorten_start(run.run, _RUN_CHARS)) for run in history)
    title_y = axis_bottom + 14 + longest * 0.57 * 0.6 * 11 + 24
    items += [
        f'<g class="axis"><line x1="{left}" x2="{right}" y1="{top_y + top_height}" '
        f'y2="{top_y + top_height}"/>',
        f'<line x1="{left}" x2="{right}" y1="{axis_bottom}" y2="{axis_bottom}"/>',
        _vertical_label(16, top_y + top_height / 2, "failed + flaky tests"),
        _vertical_label(16, bottom_y + bottom_height / 2, "passed tests"),
        f'<text x="{(left + right) / 2:.1f}" y="{title_y:.0f}" text-anchor="middle">'
        "CI run (oldest to newest)</text></g>",
    ]
    return _svg(title_y + 8, items, "failures, flakes and passes per CI run")


def _vertical_label(x: float, y: float, text: str) -> str:
    return (
        f'<text x="{x}" y="{y:.1f}" text-anchor="middle" transform="rotate(-90 {x} {y:.1f})">'
        f"{_e(text)}</text>"
    )


def _svg(height: float, items: Sequence[str], label: str) -> str:
    return (
        f'<svg viewBox="0 0 {_WIDTH} {height:.0f}" width="{_WIDTH}" height="{height:.0f}" '
        f'role="img" aria-label="{_e(label)}">{"".join(items)}</svg>'
    )


def _ticks(highest: float, *, integer: bool = False) -> list[float]:
    """Round tick values from 0 to at least ``highest`` (steps of 1, 2 or 5 times 10^k)."""
    if highest <= 0:
        return [0.0, 1.0]
    rough = highest / 5
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough)
    if integer:
        step = max(1.0, math.ceil(step))
    count = math.ceil(highest / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def _time_ticks(highest: float) -> list[tuple[float, str]]:
    """Ticks in seconds, each with its label: round numbers in the unit `_seconds`
    would show for ``highest``."""
    unit, name = (
        (3600.0, "h") if highest >= 2 * 3600 else (60.0, "min") if highest >= 120 else (1.0, "s")
    )
    return [(tick * unit, f"{tick:g} {name}") for tick in _ticks(highest / unit)]


def _seconds(value: float) -> str:
    if value == 0:
        return "0 s"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    if value < 2 * 3600:
        return f"{_one_decimal(value / 60)} min"
    return f"{_one_decimal(value / 3600)} h"


def _one_decimal(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _shorten_start(text: str, limit: int) -> str:
    """Keep the end of a long id (the test name), where it differs from its neighbours."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _shorten_end(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
