"""``cachekit show``, ``merge``, ``compact`` and ``gc``: the store as a whole."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import attrs
import cattrs

from cachekit.ci import layout
from cachekit.cli.command import EXIT_OK, _open, add_command
from cachekit.cli.output import Progress, format_age, format_size, print_json, print_table
from cachekit.errors import CacheError, CorruptData
from cachekit.stores.base import CacheStore, Entry
from cachekit.values import codec
from cachekit.values.cache import BASE, PARTS, Cache, Envelope, Merged, join_balanced, new_part_id
from cachekit.values.merge import join_all, still_failing

_envelopes = cattrs.Converter(forbid_extra_keys=True)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_commands(commands: Any) -> None:
    show = add_command(
        commands,
        "show",
        "list keys, parts, sizes, ages and merged values",
        "Show what a store holds: each logical key with its base and parts, their total "
        "size, the age of the newest write, and the merged value.",
    )
    _prefix_option(show)
    show.add_argument(
        "--values", action="store_true", help="print every merged value in full (JSON)"
    )
    show.set_defaults(handler=cmd_show)

    merge = add_command(
        commands,
        "merge",
        "fold the data of several namespaces into one",
        "Join every namespace found under each --from prefix (for example every shard and "
        "config of a pull request) and write the result as one part into --into, for the "
        "next run to read. Joins are order-independent, so merging twice is harmless.",
    )
    merge.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="PREFIX",
        help="a key prefix to read namespaces from (repeatable); see 'cachekit show'",
    )
    merge.add_argument("--into", required=True, metavar="PREFIX", help="the namespace to write")
    merge.add_argument("--compact", action="store_true", help="compact the destination afterwards")
    merge.set_defaults(handler=cmd_merge)

    compact = add_command(
        commands,
        "compact",
        "fold parts into their base, so reads stay cheap",
        "Fold the parts of every known key under --prefix into its base "
        "(compare-and-swap, safe while other jobs write) and delete the folded parts.",
    )
    _prefix_option(compact)
    compact.add_argument(
        "--min-parts",
        type=int,
        default=1,
        metavar="N",
        help="only compact keys with at least N parts (default 1)",
    )
    compact.set_defaults(handler=cmd_compact)

    gc = add_command(
        commands,
        "gc",
        "delete values older than a duration",
        "Delete every base and part under --prefix last written before now minus "
        "--older-than. Objects cachekit did not write are left alone.",
    )
    _prefix_option(gc)
    gc.add_argument(
        "--older-than",
        required=True,
        type=parse_duration,
        metavar="DURATION",
        help="such as 30d, 12h, 90m, 1w2d (units s, m, h, d, w)",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    gc.set_defaults(handler=cmd_gc)


def _prefix_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--prefix",
        default="",
        metavar="PREFIX",
        help="only keys under this prefix, such as v1/acme-app-1a2b3c/main (default: all)",
    )


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``1w2d``, ``90m``, ``3600s`` (or plain seconds) -> seconds."""
    stripped = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", stripped):
        seconds = float(stripped)
    elif re.fullmatch(r"(\d+(\.\d+)?[smhdw])+", stripped):
        seconds = sum(
            float(number) * _DURATION_UNITS[unit]
            for number, _fraction, unit in re.findall(r"(\d+(\.\d+)?)([smhdw])", stripped)
        )
    else:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use a number with a unit, such as 30d, 12h or 1w2d)"
        )
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive, not {text!r}")
    return seconds


@attrs.define
class _Key:
    """A logical `Cache` key as found in a listing."""

    name: str
    base: str | None = None
    parts: list[str] = attrs.Factory(list)

    @property
    def store_keys(self) -> list[str]:
        return ([self.base] if self.base else []) + self.parts


def _group(keys: Iterable[str]) -> tuple[dict[str, _Key], list[str]]:
    """Logical keys (with base and parts) and the raw keys cachekit did not write."""
    logical: dict[str, _Key] = {}
    raw: list[str] = []
    for key in keys:
        if key.endswith("/" + BASE):
            name = key[: -len(BASE) - 1]
            logical.setdefault(name, _Key(name)).base = key
            continue
        name, marker, part = key.rpartition(f"/{PARTS}/")
        if marker and part and "/" not in part:
            logical.setdefault(name, _Key(name)).parts.append(key)
        else:
            raw.append(key)
    return dict(sorted(logical.items())), raw


def _envelope(entry: Entry | None) -> Envelope | None:
    if entry is None:
        return None
    try:
        return _envelopes.structure(codec.decode(entry.data), Envelope)
    except (CorruptData, cattrs.BaseValidationError, TypeError, ValueError):
        return None


def _fetch(store: CacheStore, keys: Sequence[str], label: str) -> dict[str, Entry]:
    """``get_many`` in batches, with progress on a terminal."""
    fetched: dict[str, Entry] = {}
    progress = Progress(label, len(keys))
    batch = 256
    for start in range(0, len(keys), batch):
        fetched.update(store.get_many(keys[start : start + batch]))
        progress.step(min(start + batch, len(keys)))
    progress.close()
    return fetched


# -- show -----------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    listed = store.list(args.prefix)
    logical, raw = _group(listed)
    fetched = _fetch(store, listed, "reading")
    now = time.time()
    rows: list[dict[str, Any]] = []
    for name, key in logical.items():
        envelopes = {k: _envelope(fetched.get(k)) for k in key.store_keys}
        written = [e.written_at for e in envelopes.values() if e is not None]
        strategy = layout.strategy_for(name)
        value: Any
        if strategy is not None:
            checked = []
            for envelope in envelopes.values():
                if envelope is None:
                    continue
                try:
                    checked.append(strategy.check(envelope.value))
                except CorruptData:
                    continue
            value = join_all(strategy, checked)
        else:
            base = envelopes.get(key.base) if key.base else None
            value = base.value if base is not None else None
        rows.append(
            {
                "key": name,
                "base": key.base is not None,
                "parts": [k.rpartition("/")[2] for k in key.parts],
                "size": sum(len(fetched[k].data) for k in key.store_keys if k in fetched),
                "written_at": max(written) if written else None,
                "unreadable": sorted(k for k, e in envelopes.items() if e is None),
                "merge": type(strategy).__name__ if strategy is not None else None,
                "value": value,
            }
        )
    raw_rows = [
        {"key": key, "size": len(fetched[key].data) if key in fetched else None} for key in raw
    ]
    if args.json:
        print_json(out, {"keys": rows, "raw": raw_rows})
        return EXIT_OK
    if not rows and not raw_rows:
        out.write(f"no keys under {args.prefix or 'the store root'!r}\n")
        return EXIT_OK
    print_table(
        out,
        ("KEY", "BASE", "PARTS", "SIZE", "AGE", "VALUE"),
        (
            (
                row["key"],
                "yes" if row["base"] else "no",
                len(row["parts"]),
                format_size(row["size"]),
                format_age(now - row["written_at"] if row["written_at"] is not None else None),
                _brief(row["key"], row["value"]),
            )
            for row in rows
        ),
    )
    for raw_row in raw_rows:
        out.write(f"(not written by cachekit) {raw_row['key']}\n")
    for row in rows:
        for unreadable in row["unreadable"]:
            out.write(f"(unreadable) {unreadable}\n")
    if args.values:
        for row in rows:
            out.write(f"\n{row['key']}:\n")
            print_json(out, row["value"])
    return EXIT_OK


def _brief(key: str, value: Any) -> str:
    """A one-line description of a merged value."""
    tail = "/".join(key.split("/")[-2:])
    if tail == layout.LASTFAILED_KEY and isinstance(value, dict):
        return f"{len(still_failing(value))} failing of {len(value)} observed"
    if tail == layout.NODEIDS_KEY and isinstance(value, list):
        return f"{len(value)} test ids"
    if tail == layout.STATS_RUNS_KEY and isinstance(value, dict):
        return f"{len(value)} reports"
    if tail == layout.DURATIONS_KEY and isinstance(value, dict):
        return f"{len(value)} durations"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# -- merge, compact, gc ---------------------------------------------------------------


def _namespaces_under(listed: Iterable[str]) -> list[str]:
    """Namespace prefixes in a listing: those holding a key of `layout.STRATEGIES`."""
    logical, _raw = _group(listed)
    found = set()
    for name in logical:
        for tail in layout.STRATEGIES:
            if name == tail or name.endswith("/" + tail):
                found.add(name[: -len(tail)].rstrip("/"))
    return sorted(found)


def cmd_merge(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    cache = Cache(store, writer="cachekit merge")
    into = args.into.strip("/")
    sources: list[str] = []
    # Every key of every namespace under a --from prefix is read with the one listing
    # that found the namespaces and one concurrent, batched fetch: not a listing and a
    # fetch, one round trip after another, per namespace and key.
    reads: dict[str, Merged] = {}
    for prefix in args.sources:
        listed = store.list(prefix)
        found = _namespaces_under(listed)
        if not found:
            raise CacheError(f"no cachekit namespace under {prefix!r}")
        new = [ns for ns in found if ns not in sources]
        sources.extend(new)
        strategies = {
            _join_key(source, tail): strategy
            for source in new
            for tail, strategy in layout.STRATEGIES.items()
        }
        if strategies:
            reads.update(cache.read_merged_many(strategies, list_prefix=prefix, listed=listed))
    written: dict[str, str] = {}
    compacted: dict[str, int] = {}
    part_id = new_part_id("merge")
    progress = Progress("merging", len(layout.STRATEGIES))
    for done, (tail, strategy) in enumerate(layout.STRATEGIES.items(), 1):
        values = [reads[_join_key(source, tail)].value for source in sources]
        value = join_balanced(strategy, values)
        progress.step(done)
        if value == strategy.empty():
            continue
        destination = _join_key(into, tail)
        written[tail] = cache.write_part(destination, part_id, value)
        if args.compact:
            compacted[tail] = cache.compact(destination, strategy)
    progress.close()
    if args.json:
        print_json(
            out, {"into": into, "sources": sources, "written": written, "compacted": compacted}
        )
    else:
        out.write(f"merged {len(sources)} namespace(s) into {into or '(root)'}:\n")
        for source in sources:
            out.write(f"  from {source or '(root)'}\n")
        for part_key in written.values():
            out.write(f"  wrote {part_key}\n")
    return EXIT_OK


def _join_key(namespace: str, tail: str) -> str:
    """The key ``tail`` of a namespace prefix ('' is the store root)."""
    return f"{namespace}/{tail}" if namespace else tail


def cmd_compact(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    cache = Cache(store, writer="cachekit compact")
    logical, _raw = _group(store.list(args.prefix))
    folded: dict[str, int] = {}
    skipped: list[str] = []
    candidates = [key for key in logical.values() if key.parts]
    progress = Progress("compacting", len(candidates))
    for done, key in enumerate(candidates, 1):
        strategy = layout.strategy_for(key.name)
        if strategy is None:
            skipped.append(key.name)
        elif len(key.parts) >= args.min_parts:
            folded[key.name] = cache.compact(key.name, strategy, min_parts=args.min_parts)
        progress.step(done)
    progress.close()
    if args.json:
        print_json(out, {"compacted": folded, "skipped_unknown": skipped})
        return EXIT_OK
    for name, count in folded.items():
        out.write(f"{name}: folded {count} part(s)\n")
    for name in skipped:
        out.write(f"{name}: skipped (no known merge strategy for this key)\n")
    if not folded and not skipped:
        out.write("nothing to compact\n")
    return EXIT_OK


def _part_time(part_key: str) -> float | None:
    """When a part was written, from its id (``new_part_id`` starts with nanoseconds)."""
    stamp = part_key.rpartition("/")[2].split("-", 1)[0]
    return int(stamp) / 1e9 if len(stamp) == 20 and stamp.isdigit() else None


def cmd_gc(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    cutoff = time.time() - args.older_than
    logical, _raw = _group(store.list(args.prefix))
    written_at: dict[str, float | None] = {}
    unknown: list[str] = []
    for key in logical.values():
        for part in key.parts:
            written_at[part] = _part_time(part)
            if written_at[part] is None:
                unknown.append(part)
        if key.base:
            unknown.append(key.base)
    fetched = _fetch(store, unknown, "reading")
    for store_key in unknown:
        envelope = _envelope(fetched.get(store_key))
        written_at[store_key] = envelope.written_at if envelope is not None else None
    old = sorted(k for k, at in written_at.items() if at is not None and at < cutoff)
    if not args.dry_run:
        progress = Progress("deleting", len(old))
        for start in range(0, len(old), 256):
            store.delete_many(old[start : start + 256])
            progress.step(min(start + 256, len(old)))
        progress.close()
    if args.json:
        print_json(out, {"deleted": old, "dry_run": args.dry_run})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for old_key in old:
            out.write(f"{verb} {old_key}\n")
        out.write(f"{verb} {len(old)} object(s) written before {time.ctime(cutoff)}\n")
    return EXIT_OK
