"""The ``cachekit`` command: look into a store, fold and clean it, move pytest's cache in
and out of it, and keep test statistics.

Run ``cachekit --help`` or ``cachekit COMMAND --help``. Exit codes: 0 success, 1 error
(one line on stderr, with any URL redacted), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

import cachekit.cli.ci as ci
import cachekit.cli.stats as stats
import cachekit.cli.store as store
from cachekit.cli.command import (
    EPILOG,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CommandGroup,
    Handler,
    Invocation,
    UsageError,
)
from cachekit.errors import CacheError
from cachekit.session import with_hints
from cachekit.stats.junit import JUnitError
from cachekit.stores.extras import install_hint
from cachekit.urls import redact_text

#: The entry-point group through which a distribution adds commands (this one's pytest
#: adapter adds ``pull`` and ``push``): ``name = "package.module:function"``, a function
#: taking a `cachekit.cli.command.CommandGroup`. Loaded only when the parser is built.
PLUGIN_GROUP = "cachekit.commands"

DESCRIPTION = """\
cachekit keeps pytest's cache (and test statistics) in a shared store, such as a
directory or an s3://, gs:// or az:// URL, merged correctly across CI shards and runs.

The store URL comes from --url or the CACHEKIT_URL environment variable. In CI, the
namespace (repository, ref, job, shard, trust) is detected from the environment; the
--ref, --job, ... options and CACHEKIT_* variables override it.

typical CI steps:
  cachekit pull  --url s3://bucket/ci     before pytest: fill .pytest_cache (--lf works)
  cachekit push  --url s3://bucket/ci     after pytest: share this shard's results
  cachekit stats ingest --url s3://bucket/ci report.xml
  cachekit compact --url s3://bucket/ci   in a final job: fold every shard's parts
"""


# -- entry point ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        getattr(args, "help_parser", parser).print_help(sys.stderr)
        return EXIT_USAGE
    url: str = getattr(args, "url", None) or ""
    try:
        handler: Handler = args.handler
        return handler(Invocation(args, sys.stdout))
    except UsageError as error:
        print(f"cachekit: usage error: {redact_text(str(error), url)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cachekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cachekit show | head`: the reader has seen enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silence the flush at exit)
        return EXIT_OK
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        print(f"cachekit: error: {_describe_error(error, url)}", file=sys.stderr)
        return EXIT_ERROR


def _describe_error(error: Exception, url: str) -> str:
    """One line saying what went wrong and, where it can, what to do, without the
    credentials of the store's URL (or of any other URL it quotes)."""
    text = str(error) or type(error).__name__
    if isinstance(error, ImportError):
        text = f"{text} (install the optional dependencies: {install_hint(url)})"
    elif not isinstance(error, (CacheError, OSError, ValueError)):
        text = f"{type(error).__name__}: {text}"
    text = with_hints(text, error)
    if url and not isinstance(error, JUnitError):
        text = f"{url}: {text}"
    text = " ".join(text.split())  # one line
    return redact_text(text, url)


# -- argument parsing -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachekit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = CommandGroup(parser.add_subparsers(title="commands", metavar="COMMAND"))
    store.add_commands(commands)
    _add_plugged_in_commands(commands)
    ci.add_commands(commands)
    stats.add_commands(commands)
    return parser


def _add_plugged_in_commands(commands: CommandGroup) -> None:
    """The commands of every distribution registered under `PLUGIN_GROUP`, in the order
    of their names. One that fails to load is left out with a note: a broken plugin must
    not take ``cachekit show`` down with it."""
    for point in sorted(entry_points(group=PLUGIN_GROUP), key=lambda point: point.name):
        try:
            add_commands: Callable[[CommandGroup], None] = point.load()
            add_commands(commands)
        except Exception as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            print(
                f"cachekit: left out the commands of {point.name} ({point.value}): {reason}",
                file=sys.stderr,
            )


def _version() -> str:
    from cachekit import __version__  # noqa: PLC0415 (avoid a cycle at import time)

    return f"cachekit {__version__}"
