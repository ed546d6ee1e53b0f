"""Printing for the commands: JSON, tables, sizes, ages, notes and progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def print_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, indent=2, sort_keys=True, ensure_ascii=False)
    out.write("\n")


def note(message: str) -> None:
    print(f"cachekit: {message}", file=sys.stderr)


class Progress:
    """``label i/n`` on one line of stderr, only when stderr is a terminal and there is
    more than one step."""

    def __init__(self, label: str, total: int = 0) -> None:
        self.label = label
        self.total = total
        self._terminal = sys.stderr.isatty()
        self._shown = False

    def step(self, done: int, total: int | None = None) -> None:
        """``done`` steps of ``total``, or of the total given before (`Cache.inventory`
        reports both: it knows the total only once it has listed)."""
        if total is not None:
            self.total = total
        if self._terminal and self.total > 1:
            sys.stderr.write(f"\r{self.label} {done}/{self.total}")
            sys.stderr.flush()
            self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * (len(self.label) + 24) + "\r")
            sys.stderr.flush()


def print_table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(title) for title in header]
    for row in text_rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for row in [list(header), *text_rows]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
