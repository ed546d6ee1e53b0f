"""``cachekit show``, ``merge``, ``compact`` and ``gc``: the store as a whole."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from typing import Any, cast

import cachekit.ci.layout as layout
from cachekit.cli.command import EXIT_OK, CommandGroup, Invocation
from cachekit.cli.output import Progress, format_age, format_size, print_table
from cachekit.errors import CacheError, CorruptData
from cachekit.stores.base import CacheStore
from cachekit.stores.local import LocalStore
from cachekit.values.cache import Cache, Inventory, Merged, StoredKey, join_balanced
from cachekit.values.codec import JSON
from cachekit.values.digests import DigestSet
from cachekit.values.durations import SCOPED_SETUP_PREFIX
from cachekit.values.merge import still_failing, stored_form
from cachekit.values.objects import new_part_id
from cachekit.values.pool import side_by_side

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_commands(commands: CommandGroup) -> None:
    show = commands.add(
        "show",
        "list keys, parts, sizes, ages and merged values",
        "Show what a store holds: each logical key with its base and parts, their total "
        "size, the age of the newest write, and the merged value.",
        cmd_show,
    )
    _prefix_option(show)
    show.add_argument(
        "--values", action="store_true", help="print every merged value in full (JSON)"
    )

    merge = commands.add(
        "merge",
        "fold the data of several namespaces into one",
        "Join every namespace found under each --from prefix (for example every shard and "
        "config of a pull request) and write the result as one part into --into, for the "
        "next run to read. Joins are order-independent, so merging twice is harmless.",
        cmd_merge,
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
    commands.add_fail_open_option(merge)

    compact = commands.add(
        "compact",
        "fold parts into their base, so reads stay cheap",
        "Fold the parts of every known key under --prefix into its base "
        "(compare-and-swap, safe while other jobs write) and delete the folded parts.",
        cmd_compact,
    )
    _prefix_option(compact)
    compact.add_argument(
        "--min-parts",
        type=int,
        default=1,
        metavar="N",
        help="only compact keys with at least N parts (default 1)",
    )
    commands.add_fail_open_option(compact)

    gc = commands.add(
        "gc",
        "delete values older than a duration",
        "Delete every base and part under --prefix last written before now minus "
        "--older-than. Objects cachekit did not write are left alone.",
        cmd_gc,
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
    commands.add_fail_open_option(gc)


def _prefix_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--prefix",
        default="",
        metavar="PREFIX",
        help="only keys under this prefix, such as v2/acme-app-1a2b3c/main (default: all)",
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


# -- show -----------------------------------------------------------------------------


def cmd_show(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    session = invocation.session()
    progress = Progress("reading")
    try:
        inventory = invocation.run(
            session,
            lambda: Cache(session.store).inventory(args.prefix, progress=progress.step),
            "reading the store",
        )
    finally:
        progress.close()
    now = time.time()
    rows = [_show_row(key) for key in inventory.keys]
    raw_rows = [{"key": raw.key, "size": raw.size} for raw in inventory.raw]
    if args.json:
        invocation.print_json({"keys": rows, "raw": raw_rows})
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
            invocation.print_json(row["value"])
    return EXIT_OK


def _show_row(key: StoredKey) -> dict[str, Any]:
    """What ``show`` says of a logical key; its value is merged as a read would, or the
    base's value for a key of no known merge strategy."""
    envelopes = [stored.envelope for stored in key.objects if stored.envelope is not None]
    strategy = layout.strategy_for(key.name)
    value: Any
    if strategy is not None:
        checked = []
        for envelope in envelopes:
            try:
                checked.append(strategy.check(envelope.value))
            except CorruptData:
                continue
        joined = join_balanced(strategy, checked)
        value = _shown(joined) if isinstance(joined, DigestSet) else stored_form(strategy, joined)
    else:
        base = key.base.envelope if key.base is not None else None
        value = base.value if base is not None else None
    return {
        "key": key.name,
        "base": key.base is not None,
        "parts": [part.part_id for part in key.parts],
        "size": key.size,
        "written_at": max((envelope.written_at for envelope in envelopes), default=None),
        "unreadable": sorted(stored.key for stored in key.objects if stored.unreadable),
        "merge": type(strategy).__name__ if strategy is not None else None,
        "value": value,
    }


def _shown(value: DigestSet) -> dict[str, JSON]:
    """A set kept as digests, as ``show`` prints it: how many, and the names it has."""
    names: list[JSON] = [*sorted(value.names)]
    return {"count": len(value), "names": names}


def _brief(key: str, value: Any) -> str:
    """A one-line description of a merged value."""
    tail = "/".join(key.split("/")[-2:])
    if tail == layout.LASTFAILED_KEY and isinstance(value, dict):
        return f"{len(still_failing(value))} failing of {len(value)} observed"
    if tail == layout.NODEIDS_KEY and isinstance(value, dict) and "count" in value:
        return f"{value['count']} test ids"
    if tail == layout.STATS_RUNS_KEY and isinstance(value, dict):
        return f"{len(value)} reports"
    if tail == layout.DURATIONS_KEY and isinstance(value, dict):  # grouped by time
        tests = {
            test_id
            for group in value.values()
            if isinstance(group, dict)
            for test_id in group
            if not test_id.startswith(SCOPED_SETUP_PREFIX)  # a scope's fixture setup
        }
        return f"{len(tests)} durations"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# -- merge, compact, gc ---------------------------------------------------------------


def _namespaces_in(inventory: Inventory) -> list[str]:
    """The namespace prefixes holding a key of `layout.STRATEGIES`."""
    found = set()
    for key in inventory.keys:
        for tail in layout.STRATEGIES:
            if key.name == tail or key.name.endswith("/" + tail):
                found.add(key.name[: -len(tail)].rstrip("/"))
    return sorted(found)


def cmd_merge(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    session = invocation.session()
    into = args.into.strip("/")
    sources, written, compacted, copied = invocation.run(
        session, lambda: _merge(args, Cache(session.store, writer="cachekit merge")), "merging"
    )
    if args.json:
        invocation.print_json(
            {
                "into": into,
                "sources": sources,
                "written": written,
                "compacted": compacted,
                "copied": copied,
            }
        )
    else:
        out.write(f"merged {len(sources)} namespace(s) into {into or '(root)'}:\n")
        for source in sources:
            out.write(f"  from {source or '(root)'}\n")
        for part_key in written.values():
            out.write(f"  wrote {part_key}\n")
        for tail, count in copied.items():
            out.write(f"  copied {count} part(s) of {tail}\n")
    return EXIT_OK


def _merge(
    args: argparse.Namespace, cache: Cache
) -> tuple[list[str], dict[str, str], dict[str, int], dict[str, int]]:
    """The store work of ``merge``: the namespaces read, the part written per key, the
    parts compacted per key, and the parts copied per key kept as parts."""
    into = args.into.strip("/")
    sources: list[str] = []
    # One listing per --from prefix finds the namespaces and every object to read or
    # copy: not a listing per namespace and key.
    found: list[tuple[Inventory, list[str]]] = []
    listed: dict[str, None] = {}  # what the listings found, in order: for the copies
    for prefix in args.sources:
        inventory = cache.inventory(prefix, fetch="none")
        listed.update(dict.fromkeys(inventory.listed))
        namespaces = _namespaces_in(inventory)
        if not namespaces:
            raise CacheError(f"no cachekit namespace under {prefix!r}")
        new = [ns for ns in namespaces if ns not in sources]
        sources.extend(new)
        found.append((inventory, new))
    # The joins and the copies of runs touch different keys: side by side, the round
    # trips of one overlap the other's (and the joins' CPU).
    joined, copied = side_by_side(
        _call,
        [
            lambda: _join_into(args, cache, found, sources),
            lambda: _copy_parts(cache, sources, into, list(listed)),
        ],
        "cachekit-merge",
    )
    written, compacted = cast("tuple[dict[str, str], dict[str, int]]", joined)
    return sources, written, compacted, cast("dict[str, int]", copied)


def _call(task: Callable[[], object]) -> object:
    return task()


def _join_into(
    args: argparse.Namespace,
    cache: Cache,
    found: list[tuple[Inventory, list[str]]],
    sources: list[str],
) -> tuple[dict[str, str], dict[str, int]]:
    """The joined keys (`_MERGED`) of ``sources`` written into ``--into``: the part
    written per key, and the parts compacted per key."""
    # Every key of every namespace under a --from prefix is read with the one listing
    # that found the namespaces and one concurrent, batched fetch: not a listing and a
    # fetch, one round trip after another, per namespace and key.
    reads: dict[str, Merged] = {}
    for inventory, new in found:
        strategies = {
            _join_key(source, tail): strategy
            for source in new
            for tail, strategy in _MERGED.items()
        }
        if strategies:
            reads.update(
                cache.read_merged_many(
                    strategies, list_prefix=inventory.prefix, listed=inventory.listed
                )
            )
    into = args.into.strip("/")
    written: dict[str, str] = {}
    compacted: dict[str, int] = {}
    part_id = new_part_id("merge")
    progress = Progress("merging", len(_MERGED))
    for done, (tail, strategy) in enumerate(_MERGED.items(), 1):
        values = [reads[_join_key(source, tail)].value for source in sources]
        value = join_balanced(strategy, values)
        progress.step(done)
        if value == strategy.empty():
            continue
        destination = _join_key(into, tail)
        written[tail] = cache.write_part(destination, part_id, stored_form(strategy, value))
        if args.compact:
            compacted[tail] = cache.compact(destination, strategy)
    progress.close()
    return written, compacted


def _copy_parts(cache: Cache, sources: list[str], into: str, listed: list[str]) -> dict[str, int]:
    """The keys kept as parts (`layout.UNFOLDED_KEYS`: one run each, too large to join
    into one value) are merged by copying their parts, found in ``listed`` (the
    listings of the sources); a part copied by an earlier merge is there already, and
    not fetched again. Returns the parts copied per key."""
    copied: dict[str, int] = {}
    for tail in sorted(layout.UNFOLDED_KEYS):
        strategy, destination = layout.STRATEGIES[tail], _join_key(into, tail)
        keys = [_join_key(source, tail) for source in sources]
        count = cache.copy_parts(keys, destination, strategy, listed=listed, pack=True)
        if count:
            copied[tail] = count
    return copied


#: What ``merge`` joins: every key but the signed ones (`layout.SIGNED_KEYS`) and those
#: kept as parts (`layout.UNFOLDED_KEYS`, copied instead).
_MERGED = {
    tail: s
    for tail, s in layout.STRATEGIES.items()
    if tail not in layout.SIGNED_KEYS | layout.UNFOLDED_KEYS
}


def _join_key(namespace: str, tail: str) -> str:
    """The key ``tail`` of a namespace prefix ('' is the store root)."""
    return f"{namespace}/{tail}" if namespace else tail


def cmd_compact(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    session = invocation.session()
    folded, skipped, signed, kept = invocation.run(
        session,
        lambda: _compact(args, Cache(session.store, writer="cachekit compact")),
        "compacting",
    )
    if args.json:
        invocation.print_json(
            {
                "compacted": folded,
                "skipped_unknown": skipped,
                "skipped_signed": signed,
                "kept_as_parts": kept,
            }
        )
        return EXIT_OK
    for name, count in folded.items():
        out.write(f"{name}: folded {count} part(s)\n")
    for name in kept:
        out.write(f"{name}: kept as parts (one per run; cachekit gc retires old runs)\n")
    for name in skipped:
        out.write(f"{name}: skipped (no known merge strategy for this key)\n")
    for name in signed:
        out.write(f"{name}: skipped (signed records: runs holding the key compact them)\n")
    if not folded and not skipped and not signed and not kept:
        out.write("nothing to compact\n")
    return EXIT_OK


def _compact(
    args: argparse.Namespace, cache: Cache
) -> tuple[dict[str, int], list[str], list[str], list[str]]:
    """The store work of ``compact``: parts folded per key, keys of no known strategy,
    keys of signed records (left to the runs that hold the key), keys kept as parts."""
    inventory = cache.inventory(args.prefix, fetch="none")
    folded: dict[str, int] = {}
    skipped: list[str] = []
    signed: list[str] = []
    kept: list[str] = []
    candidates = [key for key in inventory.keys if key.parts]
    progress = Progress("compacting", len(candidates))
    for done, key in enumerate(candidates, 1):
        strategy = layout.strategy_for(key.name)
        if layout.is_signed(key.name):
            signed.append(key.name)
        elif layout.is_unfolded(key.name):
            kept.append(key.name)
        elif strategy is None:
            skipped.append(key.name)
        elif len(key.parts) >= args.min_parts:
            folded[key.name] = cache.compact(key.name, strategy, min_parts=args.min_parts)
        progress.step(done)
    progress.close()
    return folded, skipped, signed, kept


def cmd_gc(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    session = invocation.session()
    cutoff = time.time() - args.older_than
    old = invocation.run(session, lambda: _collect(args, session.store, cutoff), "collecting")
    if args.json:
        invocation.print_json({"deleted": old, "dry_run": args.dry_run})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for old_key in old:
            out.write(f"{verb} {old_key}\n")
        out.write(f"{verb} {len(old)} object(s) written before {time.ctime(cutoff)}\n")
    return EXIT_OK


def _collect(args: argparse.Namespace, store: CacheStore, cutoff: float) -> list[str]:
    """The store work of ``gc``: the keys written before ``cutoff``, deleted unless
    ``--dry-run``."""
    progress = Progress("reading")
    inventory = Cache(store).inventory(args.prefix, fetch="undated", progress=progress.step)
    progress.close()
    old = sorted(
        stored.key
        for key in inventory.keys
        for stored in key.objects
        if stored.written_at is not None and stored.written_at < cutoff
    )
    if not args.dry_run:
        progress = Progress("deleting", len(old))
        for start in range(0, len(old), 256):
            store.delete_many(old[start : start + 256])
            progress.step(min(start + 256, len(old)))
        progress.close()
    if isinstance(store, LocalStore):  # temporary files of writers killed mid-write
        old += store.remove_stale_temporaries(args.prefix, dry_run=args.dry_run)
    return old
