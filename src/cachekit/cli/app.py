"""The ``cachekit`` command: look into a store, fold and clean it, move pytest's cache in
and out of it, and keep test statistics.

Run ``cachekit --help`` or ``cachekit COMMAND --help``. Exit codes: 0 success, 1 error
(one line on stderr, with any URL redacted), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TextIO
from urllib.parse import parse_qsl, urlsplit

from cachekit.cli import cachedir, ci, stats, store
from cachekit.cli.command import EPILOG, EXIT_ERROR, EXIT_OK, EXIT_USAGE, UsageError
from cachekit.errors import CacheError
from cachekit.stats.junit import JUnitError
from cachekit.urls import redact_url

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
    try:
        handler: Callable[[argparse.Namespace, TextIO], int] = args.handler
        return handler(args, sys.stdout)
    except UsageError as error:
        print(f"cachekit: usage error: {_redact(str(error), args)}", file=sys.stderr)
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
        print(f"cachekit: error: {_describe_error(error, args)}", file=sys.stderr)
        return EXIT_ERROR


def _describe_error(error: Exception, args: argparse.Namespace) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, ImportError):
        url = getattr(args, "url", "") or ""
        scheme = url.split("://", 1)[0] if "://" in url else ""
        extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}.get(
            scheme, "all"
        )
        text = f"{text} (install the optional dependencies: pip install 'pytest-cachekit[{extra}]')"
    elif not isinstance(error, (CacheError, OSError, ValueError)):
        text = f"{type(error).__name__}: {text}"
    if "credential" in type(error).__name__.lower() or "credentials" in text.lower():
        text += (
            " (configure the storage credentials the usual way for this provider, such as "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://)"
        )
    url = getattr(args, "url", None)
    if url and not isinstance(error, JUnitError):
        text = f"{url}: {text}"
    text = " ".join(text.split())  # one line
    return _redact(text, args)


def _redact(text: str, args: argparse.Namespace) -> str:
    """``text`` without the credentials of the store URL (or of any other URL)."""
    url = getattr(args, "url", None)
    if url and "***" in redact_url(url):
        text = text.replace(url, redact_url(url))
        try:
            parts = urlsplit(url)
            secrets = [parts.netloc.rpartition("@")[0], parts.password, parts.username]
        except ValueError:
            secrets = []
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        for _name, value in parse_qsl(_query(url)):
            if value and value in text and value != redact_url(url):
                secret_names = redact_url(f"x://h/?{_name}={value}")
                if "***" in secret_names:
                    text = text.replace(value, "***")
    # Credentials in any other URL, with or without its scheme.
    return re.sub(r"(?<![\w.-])[^\s/@'\"]+:[^\s/@'\"]*@", "***@", text)


def _query(url: str) -> str:
    try:
        return urlsplit(url).query
    except ValueError:
        return ""


# -- argument parsing -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachekit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    store.add_commands(commands)
    cachedir.add_commands(commands)
    ci.add_commands(commands)
    stats.add_commands(commands)
    return parser


def _version() -> str:
    from cachekit import __version__  # noqa: PLC0415 (avoid a cycle at import time)

    return f"cachekit {__version__}"
