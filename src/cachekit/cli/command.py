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
import os
from collections.abc import Callable
from typing import Any, TextIO

import attrs

from cachekit.ci.namespace import Namespace, detect_namespace
from cachekit.cli.output import note, print_json
from cachekit.session import UNLIMITED, Session
from cachekit.values.cache import Cache

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

EPILOG = """\
exit codes: 0 success, 1 error (one line on stderr), 2 usage error.
Run 'cachekit COMMAND --help' for the options of a command."""


class UsageError(Exception):
    """A usage problem found after parsing (exit code 2)."""


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
        """A command with the options every command has (``--url``, ``--json``,
        ``--debug``); ``handler`` runs it. ``url=False`` hides ``--url`` (a command that
        opens no store)."""
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


_NAMESPACE_OPTIONS = (
    ("repository", "repository name, such as acme/app"),
    ("ref", "this run's branch"),
    ("base-ref", "the branch a pull request targets (read after --ref)"),
    ("default-branch", "the default branch (read last)"),
    ("job", "CI job name"),
    ("config", "configuration, such as a Python version in a matrix"),
    ("shard", "this shard, such as 2/4"),
    ("run-id", "CI run id (shared by the shards of one run)"),
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
            timeout=UNLIMITED,
        )

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
