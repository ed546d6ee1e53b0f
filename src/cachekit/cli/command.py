"""What every command is made of: the options every command has, the namespace options,
the exit codes, and the store session its arguments name.

Command groups, built in or plugged in through the ``cachekit.commands`` entry-point
group (`cachekit.cli.app.PLUGIN_GROUP`), add their commands to a `CommandGroup`; a
command's handler gets an `Invocation` and returns the exit code. A plugged-in group
needs nothing else of this package at run time (it may import these classes for type
checking only), so the pytest adapter's ``pull`` and ``push`` do not make the command
depend on the adapter, nor the adapter on the command.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import attrs

from cachekit.budget import BudgetCallFailed
from cachekit.ci.namespace import Namespace, detect_namespace
from cachekit.cli.output import note, print_json
from cachekit.errors import StoreUnavailable
from cachekit.session import Session, print_warning
from cachekit.urls import redact_text, redact_url
from cachekit.values.cache import Cache

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

EPILOG = """\
exit codes: 0 success, 1 error (one line on stderr), 2 usage error.
Run 'cachekit COMMAND --help' for the options of a command."""

#: Seconds a command's store calls may take together, unless --timeout or
#: CACHEKIT_TIMEOUT says otherwise: a hung server must not hold a CI step for good.
DEFAULT_TIMEOUT = 60.0


class UsageError(Exception):
    """A usage problem found after parsing (exit code 2)."""


class StoreTimeout(StoreUnavailable):
    """The store did not answer within the command's ``--timeout``."""


def parse_timeout(text: str) -> float:
    """``--timeout`` and ``CACHEKIT_TIMEOUT``: a positive, finite number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(
            f"not a timeout: {text!r} (a positive number of seconds, from --timeout or "
            "CACHEKIT_TIMEOUT)"
        )
    return seconds


Handler = Callable[["Invocation"], int]


@attrs.frozen
class CommandGroup:
    """Where a command group adds its commands: one level of ``cachekit``'s commands."""

    subparsers: Any  # argparse's _SubParsersAction, a private class

    def add(
        self,
        name: str,
        summary: str,
        description: str,
        handler: Handler,
        *,
        url: bool = True,
    ) -> argparse.ArgumentParser:
        """A command with the options every command has (``--url``, ``--timeout``,
        ``--json``, ``--debug``); ``handler`` runs it. ``url=False`` hides ``--url`` and
        leaves out ``--timeout`` (a command that opens no store)."""
        command: argparse.ArgumentParser = self.subparsers.add_parser(
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
        if url:
            command.add_argument(
                "--timeout",
                # A string default goes through `type` too: a bad CACHEKIT_TIMEOUT is a
                # usage error naming it.
                default=os.environ.get("CACHEKIT_TIMEOUT") or str(DEFAULT_TIMEOUT),
                type=parse_timeout,
                metavar="SECONDS",
                help="most seconds the store may take in all; past it the command stops "
                f"with an error (default {DEFAULT_TIMEOUT:g}, or $CACHEKIT_TIMEOUT)",
            )
        command.add_argument("--json", action="store_true", help="print JSON for scripts")
        command.add_argument(
            "--debug", action="store_true", help="show a traceback on errors (for bug reports)"
        )
        command.set_defaults(handler=handler)
        return command

    def add_group(self, name: str, summary: str, description: str) -> CommandGroup:
        """A command of commands, such as ``cachekit stats``; alone it prints its help."""
        group: argparse.ArgumentParser = self.subparsers.add_parser(
            name, help=summary, description=description
        )
        subparsers = group.add_subparsers(title="commands", metavar="COMMAND")
        group.set_defaults(handler=None, help_parser=group)
        return CommandGroup(subparsers)

    @staticmethod
    def add_fail_open_option(command: argparse.ArgumentParser) -> None:
        """``--fail-open``, for the steps a CI workflow runs around its tests (``pull``,
        ``push``, ``merge``, ``compact``, ``gc``): a store that cannot be reached or does
        not answer within ``--timeout`` makes a warning and exit code 0, not a failed CI
        step. Usage and configuration errors still fail."""
        command.add_argument(
            "--fail-open",
            action="store_true",
            help="if the store cannot be reached or times out, warn and exit 0 "
            "(usage and configuration errors still fail)",
        )
        command.set_defaults(handler=_failing_open(command.get_default("handler")))

    @staticmethod
    def add_namespace_options(command: argparse.ArgumentParser) -> None:
        """The options that override the detected namespace (see `Invocation.namespace`)."""
        group = command.add_argument_group(
            "namespace",
            "Detected from the CI environment (GitHub Actions, GitLab CI, Buildkite, "
            "CircleCI, Jenkins, Azure Pipelines); these options and CACHEKIT_REF, "
            "CACHEKIT_JOB, ... override it.",
        )
        for name, help_text in _NAMESPACE_OPTIONS:
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


def _failing_open(handler: Handler) -> Handler:
    """``handler``, under which an unreachable store is a warning when ``--fail-open``."""

    @functools.wraps(handler)
    def run(invocation: Invocation) -> int:
        try:
            return handler(invocation)
        except StoreUnavailable as error:
            if not invocation.args.fail_open:
                raise
            url: str = invocation.args.url or ""
            reason = " ".join(str(error).split()) or type(error).__name__
            warning = f"warning: {redact_url(url)}: {reason} (--fail-open: exit code 0)"
            invocation.note(redact_text(warning, url))
            return EXIT_OK

    return run


_NAMESPACE_OPTIONS = (
    ("repository", "repository name, such as acme/app"),
    ("ref", "this run's branch"),
    ("base-ref", "the branch a pull request targets (read after --ref)"),
    ("default-branch", "the default branch (read last)"),
    ("job", "CI job name"),
    ("config", "configuration, such as a Python version in a matrix"),
    ("shard", "this shard, such as 2/4"),
    ("run-id", "CI run id (shared by the shards of one run)"),
    ("ci-run", "the CI run whatever the attempt, for its split plan (default: the run id)"),
)


@attrs.frozen
class Invocation:
    """One run of a command: its arguments, where it prints, and the store and namespace
    they name (through `cachekit.session.Session`, as every tool reaches a store)."""

    args: argparse.Namespace
    out: TextIO

    def namespace(self) -> Namespace:
        """The run's namespace: detected from the CI environment and ``CACHEKIT_*``
        variables, the namespace options over them (a command without those options gets
        what was detected)."""
        destinations = [option.replace("-", "_") for option, _help in _NAMESPACE_OPTIONS]
        overrides = {dest: getattr(self.args, dest, None) for dest in destinations}
        readonly = getattr(self.args, "readonly", False)
        return detect_namespace(**overrides, trusted=False if readonly else None)

    def session(self, namespace: Namespace | None = None) -> Session:
        """A session on the store of ``--url`` or ``$CACHEKIT_URL`` (opened on first use) in
        ``namespace``, `namespace` by default; a usage error when no store is given."""
        url: str | None = self.args.url
        if not url:
            raise UsageError("no store given: pass --url URL or set CACHEKIT_URL")
        return Session(
            url,
            namespace=self.namespace() if namespace is None else namespace,
            timeout=self.args.timeout,
            warn=print_warning,
        )

    def run(self, session: Session, function: Callable[[], T], what: str) -> T:
        """``function()`` (the command's store work) within the session's budget of
        ``--timeout`` seconds. An error it raises is raised as it was; a store that does
        not answer in time is a `StoreTimeout`. Corrupt values met make one warning."""
        try:
            return session.run(function, what)
        except BudgetCallFailed as failure:
            cause = _original(failure)
            if cause is not None:
                raise cause from None
            raise StoreTimeout(
                f"{what}: no answer from the store within --timeout {self.args.timeout:g} s "
                "(is it reachable? raise --timeout or CACHEKIT_TIMEOUT for a large store)"
            ) from None
        finally:
            session.warn_corrupt()

    def cache(self, session: Session, *, read_chain: bool = True) -> Cache:
        """The run's `Cache`: its namespace with the whole read chain, or (``read_chain``
        false) its own prefix only; ``--namespace-prefix`` names a prefix instead."""
        if self.args.namespace_prefix:
            return session.cache_under(self.args.namespace_prefix)
        if read_chain:
            return session.cache
        return session.cache_under(session.namespace.prefix)

    def prefix(self, session: Session) -> str:
        """The key prefix the run writes under (see `cache`)."""
        prefix: str = self.args.namespace_prefix or session.namespace.prefix
        return prefix

    def print_json(self, value: Any) -> None:
        """``value`` as indented JSON with sorted keys, for ``--json``."""
        print_json(self.out, value)

    def note(self, message: str) -> None:
        """One line on stderr, for what the user should know but a script not parse."""
        note(message)


def _original(failure: BudgetCallFailed) -> BaseException | None:
    """The exception a budgeted call raised, or None when it ran out of time."""
    cause: BaseException | None = failure.__cause__
    while isinstance(cause, BudgetCallFailed):
        cause = cause.__cause__
    return cause
