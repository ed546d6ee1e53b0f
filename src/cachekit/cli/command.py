"""What every command shares: exit codes, the common and namespace options, and the
store and namespace its arguments name."""

from __future__ import annotations

import argparse
import os
from typing import Any

from cachekit.ci.namespace import Namespace, detect_namespace, namespaced_cache
from cachekit.stores.base import CacheStore
from cachekit.stores.registry import open_store
from cachekit.stores.wrappers import PrefixedStore, ReadOnlyStore
from cachekit.values.cache import Cache

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

EPILOG = """\
exit codes: 0 success, 1 error (one line on stderr), 2 usage error.
Run 'cachekit COMMAND --help' for the options of a command."""


class UsageError(Exception):
    """A usage problem found after parsing (exit code 2)."""


def add_command(
    commands: Any, name: str, summary: str, description: str, *, url: bool = True
) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "--url",
        default=os.environ.get("CACHEKIT_URL") or None,
        help="the store: a directory, file://, s3://, gs://, az://... (default: $CACHEKIT_URL)"
        if url
        else argparse.SUPPRESS,
    )
    command.add_argument("--json", action="store_true", help="print JSON for scripts")
    command.add_argument(
        "--debug", action="store_true", help="show a traceback on errors (for bug reports)"
    )
    return command


def add_namespace_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group(
        "namespace",
        "Detected from the CI environment (GitHub Actions, GitLab CI, Buildkite, CircleCI, "
        "Jenkins, Azure Pipelines); these options and CACHEKIT_REF, CACHEKIT_JOB, ... "
        "override it.",
    )
    for name, help_text in (
        ("repository", "repository name, such as acme/app"),
        ("ref", "this run's branch"),
        ("base-ref", "the branch a pull request targets (read after --ref)"),
        ("default-branch", "the default branch (read last)"),
        ("job", "CI job name"),
        ("config", "configuration, such as a Python version in a matrix"),
        ("shard", "this shard, such as 2/4"),
        ("run-id", "CI run id (shared by the shards of one run)"),
    ):
        group.add_argument(f"--{name}", default=None, help=help_text)
    group.add_argument(
        "--readonly", action="store_true", help="never write (as for pull requests from forks)"
    )
    group.add_argument(
        "--namespace-prefix",
        default=None,
        metavar="PREFIX",
        help="use this key prefix as the namespace instead (no read chain)",
    )


# -- shared helpers -------------------------------------------------------------------


def _open(args: argparse.Namespace) -> CacheStore:
    if not args.url:
        raise UsageError("no store given: pass --url URL or set CACHEKIT_URL")
    return open_store(args.url)


def _namespace(args: argparse.Namespace) -> Namespace:
    return detect_namespace(
        repository=args.repository,
        ref=args.ref,
        base_ref=args.base_ref,
        default_branch=args.default_branch,
        job=args.job,
        config=args.config,
        shard=args.shard,
        run_id=args.run_id,
        trusted=False if args.readonly else None,
    )


def _cache(
    store: CacheStore, args: argparse.Namespace, namespace: Namespace, *, chain: bool = True
) -> Cache:
    """A `Cache` of the namespace: reading its whole read chain (or only its own prefix),
    writing under its own prefix, and never when the run is not trusted."""
    if chain and not args.namespace_prefix:
        return namespaced_cache(store, namespace)
    view: CacheStore = PrefixedStore(store, args.namespace_prefix or namespace.prefix)
    return Cache(view if namespace.trusted else ReadOnlyStore(view), writer=namespace.part_label)


def _where(args: argparse.Namespace, namespace: Namespace) -> str:
    return args.namespace_prefix or namespace.prefix
