"""The ``cachekit`` command: look into a store, fold and clean it, move pytest's cache in
and out of it, and keep test statistics.

Run ``cachekit --help`` or ``cachekit COMMAND --help``. Exit codes: 0 success, 1 error
(one line on stderr, with any URL redacted), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

import attrs
import cattrs

from cachekit.ci import layout
from cachekit.ci.namespace import Namespace, detect_namespace, namespaced_cache
from cachekit.errors import CacheError, CorruptData
from cachekit.stats import report as stats_report
from cachekit.stats import report_html
from cachekit.stats.junit import JUnitError, parse_junit_file
from cachekit.stats.runs import (
    latest_per_test,
    latest_run,
    load_durations,
    load_runs,
    make_run,
    record_runs,
    summarize,
    summary_to_json,
)
from cachekit.stats.sharding import parse_shard, select
from cachekit.stores.base import CacheStore, Entry
from cachekit.stores.registry import open_store
from cachekit.stores.wrappers import PrefixedStore, ReadOnlyStore
from cachekit.urls import redact_url
from cachekit.values import codec
from cachekit.values.cache import BASE, PARTS, Cache, Envelope, Merged, join_balanced, new_part_id
from cachekit.values.codec import JSON
from cachekit.values.merge import LASTFAILED, NODEIDS, join_all, observe_outcomes, still_failing


def _pytest_support_files() -> dict[str, bytes]:
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


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

#: Where ``pull`` records what it wrote, so ``push`` can tell what this run changed.
PULLED_KEY = "cachekit/pulled"
#: What pytest writes beside its values when it creates a cache directory, taken from
#: pytest itself so a pulled ``.pytest_cache`` is what pytest would have made.
_PYTEST_SUPPORT_FILES: dict[str, bytes] = _pytest_support_files()

_envelopes = cattrs.Converter(forbid_extra_keys=True)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

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

EPILOG = """\
exit codes: 0 success, 1 error (one line on stderr), 2 usage error.
Run 'cachekit COMMAND --help' for the options of a command."""


class UsageError(Exception):
    """A usage problem found after parsing (exit code 2)."""


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

    show = _command(
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

    merge = _command(
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

    compact = _command(
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

    gc = _command(
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

    pull = _command(
        commands,
        "pull",
        "fill a local .pytest_cache from the store",
        "Write the merged cache/lastfailed and cache/nodeids of this run's read chain "
        "(own ref, base ref, default branch) into pytest's cache directory, in pytest's "
        "own layout, so plain 'pytest --lf' sees them. Local values are replaced.",
    )
    _cache_dir_option(pull)
    _namespace_options(pull)
    pull.set_defaults(handler=cmd_pull)

    push = _command(
        commands,
        "push",
        "share a local .pytest_cache through the store",
        "Write what this run changed in pytest's cache directory (new failures, fixed "
        "tests, test ids) as a new part under this run's namespace. Read-only runs (forks) "
        "push nothing and exit 0.",
    )
    _cache_dir_option(push)
    _namespace_options(push)
    push.set_defaults(handler=cmd_push)

    shard = _command(
        commands,
        "shard",
        "print the test ids of one duration-balanced shard",
        "Read test ids (one per line) from standard input and print those of shard "
        "INDEX/COUNT (1-based), balanced by the recorded durations of this namespace. Every shard "
        "computes the same split.",
    )
    shard.add_argument("which", metavar="INDEX/COUNT", help="the shard to print, such as 2/4")
    _namespace_options(shard)
    shard.set_defaults(handler=cmd_shard)

    namespace = _command(
        commands,
        "namespace",
        "print the namespace detected for this run",
        "Print where this run reads and writes: its description, key prefix, the prefix "
        "of its ref (every job and config) and its read chain. --get prints one field, "
        'for scripts: cachekit compact --prefix "$(cachekit namespace --get ref_prefix)"',
        url=False,
    )
    namespace.add_argument(
        "--get",
        choices=sorted(_NAMESPACE_FIELDS),
        metavar="FIELD",
        help=f"print only this field ({', '.join(sorted(_NAMESPACE_FIELDS))})",
    )
    _namespace_options(namespace)
    namespace.set_defaults(handler=cmd_namespace)

    _add_stats_commands(commands)
    return parser


def _add_stats_commands(commands: Any) -> None:
    stats = commands.add_parser(
        "stats",
        help="test statistics from JUnit XML reports",
        description="Ingest JUnit XML reports and summarize them.",
    )
    stats_commands = stats.add_subparsers(title="commands", metavar="COMMAND")
    stats.set_defaults(handler=None, help_parser=stats)
    ingest = _command(
        stats_commands,
        "ingest",
        "store JUnit XML reports",
        "Parse each report (pytest, unittest-xml-reporting, PyTorch, Surefire...) and store "
        "one part per report under this run's namespace. If any report is malformed, "
        "nothing is written. Read-only runs store nothing and exit 0.",
    )
    ingest.add_argument("reports", nargs="+", metavar="REPORT.xml", help="JUnit XML files")
    _namespace_options(ingest)
    ingest.set_defaults(handler=cmd_stats_ingest)

    summary = _command(
        stats_commands,
        "summary",
        "summarize stored reports",
        "Totals per file and class, failed, flaky and slowest tests. By default the "
        "latest run (all its shards) of this namespace.",
    )
    which = summary.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN_ID", help="summarize this run id")
    which.add_argument(
        "--all-runs",
        action="store_true",
        help="summarize the latest result of every test seen in any run",
    )
    summary.add_argument(
        "--top", type=int, default=10, metavar="N", help="how many slowest tests (default 10)"
    )
    _namespace_options(summary)
    summary.set_defaults(handler=cmd_stats_summary)

    report = _command(
        stats_commands,
        "report",
        "write an HTML page of plots over the stored runs",
        "Write one self-contained HTML page (it loads nothing when viewed) with the "
        "slowest tests, the duration per test file, the balance of each run's shards, and "
        "failures and flaky tests over the recent CI runs of this namespace.",
    )
    report.add_argument(
        "--html", required=True, type=Path, metavar="OUT", help="the HTML file to write"
    )
    report.add_argument(
        "--top",
        type=int,
        default=stats_report.DEFAULT_TOP,
        metavar="N",
        help="bars per ranking and rows of the unstable tests "
        f"(default {stats_report.DEFAULT_TOP})",
    )
    report.add_argument(
        "--runs",
        type=int,
        default=stats_report.DEFAULT_RUNS,
        metavar="N",
        help=f"cover the N most recent CI runs (default {stats_report.DEFAULT_RUNS})",
    )
    _namespace_options(report)
    report.set_defaults(handler=cmd_stats_report)


def _command(
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


def _prefix_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--prefix",
        default="",
        metavar="PREFIX",
        help="only keys under this prefix, such as v1/acme-app-1a2b3c/main (default: all)",
    )


def _cache_dir_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".pytest_cache"),
        help="pytest's cache directory (default: .pytest_cache)",
    )


def _namespace_options(command: argparse.ArgumentParser) -> None:
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


def _version() -> str:
    from cachekit import __version__  # noqa: PLC0415 (avoid a cycle at import time)

    return f"cachekit {__version__}"


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


def _print_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, indent=2, sort_keys=True, ensure_ascii=False)
    out.write("\n")


def _note(message: str) -> None:
    print(f"cachekit: {message}", file=sys.stderr)


class Progress:
    """``label i/n`` on one line of stderr, only when stderr is a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.enabled = total > 1 and sys.stderr.isatty()

    def step(self, done: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{self.label} {done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * (len(self.label) + 24) + "\r")
            sys.stderr.flush()


def _table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(title) for title in header]
    for row in text_rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for row in [list(header), *text_rows]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


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
        _print_json(out, {"keys": rows, "raw": raw_rows})
        return EXIT_OK
    if not rows and not raw_rows:
        out.write(f"no keys under {args.prefix or 'the store root'!r}\n")
        return EXIT_OK
    _table(
        out,
        ("KEY", "BASE", "PARTS", "SIZE", "AGE", "VALUE"),
        (
            (
                row["key"],
                "yes" if row["base"] else "no",
                len(row["parts"]),
                _size(row["size"]),
                _age(now - row["written_at"] if row["written_at"] is not None else None),
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
            _print_json(out, row["value"])
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
        _print_json(
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
        _print_json(out, {"compacted": folded, "skipped_unknown": skipped})
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
        _print_json(out, {"deleted": old, "dry_run": args.dry_run})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for old_key in old:
            out.write(f"{verb} {old_key}\n")
        out.write(f"{verb} {len(old)} object(s) written before {time.ctime(cutoff)}\n")
    return EXIT_OK


# -- pull and push --------------------------------------------------------------------


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
        for name, content in _PYTEST_SUPPORT_FILES.items():
            (cache_dir / name).write_bytes(content)
    path = _value_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".cachekit-tmp")
    # The bytes pytest's Cache.set writes.
    temporary.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(temporary, path)


def cmd_pull(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    namespace = _namespace(args)
    cache = _cache(store, args, namespace)
    merged = cache.read_merged_many(
        {layout.LASTFAILED_KEY: LASTFAILED, layout.NODEIDS_KEY: NODEIDS}
    )
    failing = still_failing(merged[layout.LASTFAILED_KEY].value)
    nodeids: list[str] = merged[layout.NODEIDS_KEY].value
    _write_local(args.cache_dir, layout.LASTFAILED_KEY, failing)
    _write_local(args.cache_dir, layout.NODEIDS_KEY, nodeids)
    _write_local(args.cache_dir, PULLED_KEY, {"lastfailed": sorted(failing), "at": time.time()})
    result = {
        "namespace": namespace.describe(),
        "prefix": _where(args, namespace),
        "failing": len(failing),
        "nodeids": len(nodeids),
        "cache_dir": str(args.cache_dir),
    }
    if args.json:
        _print_json(out, result)
    else:
        out.write(
            f"pulled {len(failing)} failing test(s) and {len(nodeids)} test id(s) "
            f"into {args.cache_dir}\n  {namespace.describe()}\n"
        )
    return EXIT_OK


def cmd_push(args: argparse.Namespace, out: TextIO) -> int:
    namespace = _namespace(args)
    if not namespace.trusted:
        _note(f"read-only run, nothing pushed: {namespace.untrusted_reason}")
        if args.json:
            _print_json(out, {"pushed": False, "reason": namespace.untrusted_reason})
        return EXIT_OK
    store = _open(args)
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
    cache = _cache(store, args, namespace, chain=False)
    part_id = namespace.new_part_id()
    written = []
    if observed:
        written.append(cache.write_part(layout.LASTFAILED_KEY, part_id, observed))
    nodeids: list[JSON] = []
    nodeids.extend(sorted({str(nodeid) for nodeid in local_nodeids}))
    if nodeids:
        written.append(cache.write_part(layout.NODEIDS_KEY, part_id, nodeids))
    if args.json:
        _print_json(out, {"pushed": True, "prefix": _where(args, namespace), "written": written})
    else:
        out.write(
            f"pushed {len(failed - before)} new failure(s), {len(before - failed)} fix(es) and "
            f"{len(nodeids)} test id(s)\n  {namespace.describe()}\n"
        )
    return EXIT_OK


# -- namespace ------------------------------------------------------------------------

_NAMESPACE_FIELDS: dict[str, Callable[[Namespace], str]] = {
    "describe": lambda ns: ns.describe(),
    "prefix": lambda ns: ns.prefix,
    "ref_prefix": lambda ns: layout.ref_prefix(ns.repository, ns.ref),
    "trusted": lambda ns: "true" if ns.trusted else "false",
    "read_prefixes": lambda ns: " ".join(ns.read_prefixes),
}


def cmd_namespace(args: argparse.Namespace, out: TextIO) -> int:
    namespace = _namespace(args)
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
        _print_json(out, data)
    else:
        out.write(f"{namespace.describe()}\n")
        out.write(f"writes under: {namespace.prefix}\n")
        out.write(f"reads from:   {', '.join(namespace.read_prefixes)}\n")
    return EXIT_OK


# -- shard ----------------------------------------------------------------------------


def cmd_shard(args: argparse.Namespace, out: TextIO) -> int:
    try:
        index, count = parse_shard(args.which)
    except ValueError as error:
        raise UsageError(str(error)) from None
    store = _open(args)
    namespace = _namespace(args)
    durations = load_durations(_cache(store, args, namespace))
    test_ids = [line.strip() for line in sys.stdin if line.strip()]
    chosen = select(test_ids, durations, index, count)
    if args.json:
        _print_json(out, {"shard": f"{index}/{count}", "tests": chosen})
    else:
        out.writelines(f"{test_id}\n" for test_id in chosen)
    return EXIT_OK


# -- stats ----------------------------------------------------------------------------


def cmd_stats_ingest(args: argparse.Namespace, out: TextIO) -> int:
    namespace = _namespace(args)
    progress = Progress("parsing", len(args.reports))
    reports = []
    for done, path in enumerate(args.reports, 1):
        reports.append(parse_junit_file(path))  # any error: nothing is written
        progress.step(done)
    progress.close()
    if not namespace.trusted:
        _note(f"read-only run, nothing ingested: {namespace.untrusted_reason}")
        if args.json:
            _print_json(out, {"ingested": 0, "reason": namespace.untrusted_reason})
        return EXIT_OK
    store = _open(args)
    cache = _cache(store, args, namespace, chain=False)
    runs = [
        make_run(report, run_id=namespace.run_id, label=namespace.describe()) for report in reports
    ]
    record_runs(cache, runs)
    cases = [case for run in runs for case in run.cases]
    failed = sum(1 for case in cases if case.failed)
    if args.json:
        _print_json(
            out,
            {
                "ingested": len(runs),
                "reports": [run.id for run in runs],
                "tests": len(cases),
                "failed": failed,
                "prefix": _where(args, namespace),
            },
        )
    else:
        out.write(
            f"ingested {len(runs)} report(s): {len(cases)} test(s), {failed} failed\n"
            f"  {namespace.describe()}\n"
        )
    return EXIT_OK


def cmd_stats_summary(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    namespace = _namespace(args)
    runs = load_runs(_cache(store, args, namespace, chain=False))
    if args.all_runs:
        cases = latest_per_test(runs)
        scope = f"latest result of each test over {len(runs)} report(s)"
    else:
        cases = latest_run(runs, args.run)
        run_id = args.run if args.run is not None else (runs[-1].run_id if runs else "")
        scope = f"run {run_id or '(no id)'}" if runs else "no reports"
    summary = summarize(cases, slowest=max(0, args.top))
    if args.json:
        _print_json(
            out,
            {
                "namespace": namespace.describe(),
                "prefix": _where(args, namespace),
                "scope": scope,
                **summary_to_json(summary),
            },
        )
        return EXIT_OK
    out.write(f"{namespace.describe()}\n{scope}\n\n")
    if not cases:
        out.write("no test results stored yet (run 'cachekit stats ingest' first)\n")
        return EXIT_OK
    header = ("TESTS", "FAILURES", "ERRORS", "SKIPPED", "SUCCESSES", "TIME")

    def counts(name: str, totals: Any) -> tuple[object, ...]:
        return (
            name,
            totals.tests,
            totals.failures,
            totals.errors,
            totals.skipped,
            totals.successes,
            f"{totals.time:.2f}s",
        )

    _table(
        out,
        ("FILE", *header),
        [
            *(counts(name, totals) for name, totals in summary.files.items()),
            counts("total", summary.totals),
        ],
    )
    out.write("\n")
    _table(out, ("CLASS", *header), (counts(n, t) for n, t in summary.classes.items()))
    _section(out, "failed", ((c.test_id, f"{c.outcome}: {c.message}") for c in summary.failed))
    _section(out, "flaky", ((c.test_id, f"{c.reruns} rerun(s)") for c in summary.flaky))
    _section(out, "slowest", ((c.test_id, f"{c.duration:.2f}s") for c in summary.slowest))
    return EXIT_OK


def cmd_stats_report(args: argparse.Namespace, out: TextIO) -> int:
    if args.top < 1 or args.runs < 1:
        raise UsageError("--top and --runs must be at least 1")
    path: Path = args.html
    if path.is_dir():
        raise UsageError(f"--html {path} is a directory; name the file to write")
    if not path.parent.is_dir():
        raise UsageError(f"--html {path}: the directory {path.parent} does not exist")
    store = _open(args)
    namespace = _namespace(args)
    runs = load_runs(_cache(store, args, namespace, chain=False))
    report = stats_report.build_report(
        runs, scope=namespace.describe(), top=args.top, max_runs=args.runs
    )
    report_html.write_report(path, report_html.render_html(report))
    latest = report.outcomes[-1] if report.outcomes else None
    if args.json:
        _print_json(
            out,
            {
                "path": str(path),
                "prefix": _where(args, namespace),
                "runs": len(report.runs),
                "reports": report.reports,
                "tests": report.tests,
                "failed": latest.failed if latest else 0,
                "flaky": latest.flaky if latest else 0,
            },
        )
    elif latest is None:
        out.write(f"wrote {path}\n  nothing recorded yet for {namespace.describe()}\n")
    else:
        out.write(
            f"wrote {path}\n  {len(report.runs)} CI run(s), {report.reports} report(s), "
            f"{report.tests} test(s); latest run {latest.run}: {latest.failed} failed, "
            f"{latest.flaky} flaky\n"
        )
    return EXIT_OK


def _section(out: TextIO, title: str, lines: Iterable[tuple[str, str]]) -> None:
    items = list(lines)
    out.write(f"\n{title} ({len(items)}):\n")
    for test_id, detail in items:
        out.write(f"  {test_id}  {detail}\n")
