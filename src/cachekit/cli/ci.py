"""``cachekit namespace`` and ``shard``: the run's CI namespace."""

from __future__ import annotations

import sys
from collections.abc import Callable

import attrs

import cachekit.ci.layout as layout
from cachekit.ci.namespace import Namespace
from cachekit.cli.command import EXIT_OK, CommandGroup, Invocation, UsageError
from cachekit.stats.sharding import parse_shard, select
from cachekit.stats.split_plan import agree_on_durations


def add_commands(commands: CommandGroup) -> None:
    shard = commands.add(
        "shard",
        "print the test ids of one duration-balanced shard",
        "Read test ids (one per line) from standard input and print those of shard "
        "INDEX/COUNT (1-based), balanced by the recorded durations of this namespace. Every shard "
        "of one CI run, and every rerun of one, computes the same split: the first stores the "
        "durations it split by as the run's split plan, and the others read them.",
        cmd_shard,
    )
    shard.add_argument("which", metavar="INDEX/COUNT", help="the shard to print, such as 2/4")
    commands.add_namespace_options(shard)

    namespace = commands.add(
        "namespace",
        "print the namespace detected for this run",
        "Print where this run reads and writes: its description, key prefix, the prefix "
        "of its ref (every job and config) and its read chain. --get prints one field, "
        'for scripts: cachekit compact --prefix "$(cachekit namespace --get ref_prefix)"',
        cmd_namespace,
        url=False,
    )
    namespace.add_argument(
        "--get",
        choices=sorted(_NAMESPACE_FIELDS),
        metavar="FIELD",
        help=f"print only this field ({', '.join(sorted(_NAMESPACE_FIELDS))})",
    )
    commands.add_namespace_options(namespace)


# -- namespace ------------------------------------------------------------------------

_NAMESPACE_FIELDS: dict[str, Callable[[Namespace], str]] = {
    "describe": lambda ns: ns.describe(),
    "prefix": lambda ns: ns.prefix,
    "ref_prefix": lambda ns: layout.ref_prefix(ns.repository, ns.ref),
    "trusted": lambda ns: "true" if ns.trusted else "false",
    "read_prefixes": lambda ns: " ".join(ns.read_prefixes),
}


def cmd_namespace(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    namespace = invocation.namespace()
    if args.get:
        out.write(f"{_NAMESPACE_FIELDS[args.get](namespace)}\n")
        return EXIT_OK
    data = {
        **attrs.asdict(namespace),
        "description": namespace.describe(),
        "prefix": namespace.prefix,
        "ref_prefix": layout.ref_prefix(namespace.repository, namespace.ref),
        "read_prefixes": list(namespace.read_prefixes),
    }
    if args.json:
        invocation.print_json(data)
    else:
        out.write(f"{namespace.describe()}\n")
        out.write(f"writes under: {namespace.prefix}\n")
        out.write(f"reads from:   {', '.join(namespace.read_prefixes)}\n")
    return EXIT_OK


# -- shard ----------------------------------------------------------------------------


def cmd_shard(invocation: Invocation) -> int:
    args, out = invocation.args, invocation.out
    try:
        index, count = parse_shard(args.which)
    except ValueError as error:
        raise UsageError(str(error)) from None
    session = invocation.session()
    test_ids = [line.strip() for line in sys.stdin if line.strip()]
    plan = invocation.run(
        session,
        lambda: agree_on_durations(invocation.cache(session), session.namespace),
        "reading the store",
    )
    chosen = select(test_ids, plan.durations, index, count)
    if args.json:
        invocation.print_json(
            {"shard": f"{index}/{count}", "tests": chosen, "split_by": plan.source}
        )
    else:
        out.writelines(f"{test_id}\n" for test_id in chosen)
    return EXIT_OK
