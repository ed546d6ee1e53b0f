"""``cachekit pull`` and ``push``: pytest's ``.pytest_cache`` in and out of the store.

The ``cachekit`` command knows no test runner: it finds these two commands through the
``cachekit.commands`` entry-point group (see pyproject.toml), and hands `add_commands`
what they need to reach the store, so nothing here imports the command's own modules.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cachekit.ci.layout as layout
from cachekit.errors import CacheError
from cachekit.files import write_atomically
from cachekit.values.codec import JSON
from cachekit.values.digests import NODEIDS
from cachekit.values.merge import LASTFAILED, observe_outcomes, still_failing

if TYPE_CHECKING:
    from cachekit.cli.command import CommandGroup, Invocation

#: Where ``pull`` records what it wrote, so ``push`` can tell what this run changed.
PULLED_KEY = "cachekit/pulled"


def add_commands(commands: CommandGroup) -> None:
    """The ``cachekit.commands`` entry point: adds ``pull`` and ``push``."""
    pull = commands.add(
        "pull",
        "fill a local .pytest_cache from the store",
        "Write the merged cache/lastfailed and cache/nodeids of this run's read chain "
        "(own ref, base ref, default branch) into pytest's cache directory, in pytest's "
        "own layout, so plain 'pytest --lf' sees them. Local values are replaced. "
        "cache/nodeids gets the ids written since the store's last compaction: "
        "compacted ids are kept as digests, without names.",
        cmd_pull,
    )
    _cache_dir_option(pull)
    commands.add_fail_open_option(pull)
    commands.add_namespace_options(pull)

    push = commands.add(
        "push",
        "share a local .pytest_cache through the store",
        "Write what this run changed in pytest's cache directory (new failures, fixed "
        "tests, test ids) as a new part under this run's namespace. Read-only runs (forks) "
        "push nothing and exit 0.",
        cmd_push,
    )
    _cache_dir_option(push)
    commands.add_fail_open_option(push)
    commands.add_namespace_options(push)


def _cache_dir_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".pytest_cache"),
        help="pytest's cache directory (default: .pytest_cache)",
    )


def _value_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "v" / key


def _read_local(cache_dir: Path, key: str, default: Any) -> Any:
    path = _value_path(cache_dir, key)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except ValueError as error:
        raise CacheError(f"{path} is not valid JSON: {error}") from None


def _write_local(cache_dir: Path, key: str, value: Any) -> None:
    if not cache_dir.is_dir():
        cache_dir.mkdir(parents=True)
        for name, content in _pytest_support_files().items():
            (cache_dir / name).write_bytes(content)
    path = _value_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The bytes pytest's Cache.set writes (in text mode: os.linesep line ends), and not
    # fsynced either.
    text = json.dumps(value, ensure_ascii=False, indent=2).replace("\n", os.linesep)
    write_atomically(path, text.encode("utf-8"), durable=False)


def _pytest_support_files() -> dict[str, bytes]:
    """What pytest writes beside its values when it creates a cache directory, taken from
    pytest itself so a pulled ``.pytest_cache`` is what pytest would have made."""
    try:  # pytest >= 9
        from _pytest.cacheprovider import CACHEDIR_FILES  # noqa: PLC0415

        return dict(CACHEDIR_FILES)
    except ImportError:  # pytest 8 spells out the same three files
        from _pytest import cacheprovider  # noqa: PLC0415

        return {
            "README.md": cacheprovider.README_CONTENT.encode(),  # type: ignore[attr-defined]
            ".gitignore": b"# Created by pytest automatically.\n*\n",
            "CACHEDIR.TAG": cacheprovider.CACHEDIR_TAG_CONTENT,  # type: ignore[attr-defined]
        }


def cmd_pull(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    session = invocation.session()
    namespace = session.namespace
    merged = invocation.run(
        session,
        lambda: invocation.cache(session).read_merged_many(
            {layout.LASTFAILED_KEY: LASTFAILED, layout.NODEIDS_KEY: NODEIDS}
        ),
        "reading the store",
    )
    failing = still_failing(merged[layout.LASTFAILED_KEY].value)
    # Ids compacted into digests have no names to write: those of newer parts only.
    nodeids = sorted(merged[layout.NODEIDS_KEY].value.names)
    _write_local(args.cache_dir, layout.LASTFAILED_KEY, failing)
    _write_local(args.cache_dir, layout.NODEIDS_KEY, nodeids)
    _write_local(args.cache_dir, PULLED_KEY, {"lastfailed": sorted(failing), "at": time.time()})
    result = {
        "namespace": namespace.describe(),
        "prefix": invocation.prefix(session),
        "failing": len(failing),
        "nodeids": len(nodeids),
        "cache_dir": str(args.cache_dir),
    }
    if args.json:
        invocation.print_json(result)
    else:
        out.write(
            f"pulled {len(failing)} failing test(s) and {len(nodeids)} test id(s) "
            f"into {args.cache_dir}\n  {namespace.describe()}\n"
        )
    return 0


def cmd_push(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    namespace = invocation.namespace()
    if not namespace.trusted:
        invocation.note(f"read-only run, nothing pushed: {namespace.untrusted_reason}")
        if args.json:
            invocation.print_json({"pushed": False, "reason": namespace.untrusted_reason})
        return 0
    session = invocation.session(namespace)
    local_failed = _read_local(args.cache_dir, layout.LASTFAILED_KEY, {})
    local_nodeids = _read_local(args.cache_dir, layout.NODEIDS_KEY, [])
    pulled = _read_local(args.cache_dir, PULLED_KEY, {}).get("lastfailed", [])
    if not isinstance(local_failed, dict) or not isinstance(local_nodeids, list):
        raise CacheError(f"{args.cache_dir} does not hold pytest's cache/lastfailed or nodeids")
    failed = set(local_failed)
    before = set(pulled)
    # New failures ran and failed; failures that disappeared ran and passed. Failures
    # carried over from the pull say nothing about this run and are not re-asserted, so
    # they cannot hide a pass another shard recorded meanwhile.
    observed = observe_outcomes(failed=failed - before, passed=before - failed, at=time.time())
    part_id = namespace.new_part_id()
    nodeids: list[JSON] = []
    nodeids.extend(sorted({str(nodeid) for nodeid in local_nodeids}))
    values: dict[str, JSON] = {}
    if observed:
        values[layout.LASTFAILED_KEY] = observed
    if nodeids:
        values[layout.NODEIDS_KEY] = nodeids

    def write() -> list[str]:
        cache = invocation.cache(session, read_chain=False)
        return [cache.write_part(key, part_id, value) for key, value in values.items()]

    written = invocation.run(session, write, "writing to the store")
    if args.json:
        invocation.print_json(
            {"pushed": True, "prefix": invocation.prefix(session), "written": written}
        )
    else:
        out.write(
            f"pushed {len(failed - before)} new failure(s), {len(before - failed)} fix(es) and "
            f"{len(nodeids)} test id(s)\n  {namespace.describe()}\n"
        )
    return 0
