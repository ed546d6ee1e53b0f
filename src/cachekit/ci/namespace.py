"""Namespaces, read chains and trust, detected from the CI environment.

A `Namespace` says where a run reads and writes: its repository, ref, job and config
(the key prefix, see `cachekit.ci.layout`), the refs it reads after its own (base ref, then
the default branch), its shard and run id (in the ids of the parts it writes) and
whether it may write at all.

`detect_namespace` fills it from the environment of GitHub Actions, GitLab CI,
Buildkite, CircleCI, Jenkins and Azure Pipelines. Precedence, highest first: explicit
arguments, ``CACHEKIT_*`` environment variables, what the CI system says, defaults.

Trust can only be lowered by configuration, never raised: a pull request from a fork
runs code (and often a workflow file and environment) that the fork controls, so nothing
it sets may make it trusted. ``CACHEKIT_READONLY=1`` or ``trusted=False`` make any run
read-only. Where the CI system does not say whether a pull request comes from a fork, the
run is read-only (fail closed). On GitHub Actions, events other than pull requests are
trusted only when they run nothing but the repository's own code (`GITHUB_TRUSTED_EVENTS`,
plus what ``CACHEKIT_TRUSTED_EVENTS`` vouches for); an unreadable event payload makes
any run read-only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

import cachekit.ci.layout as layout
from cachekit.stores.base import CacheStore
from cachekit.stores.wrappers import LayeredStore, PrefixedStore, ReadOnlyStore
from cachekit.values.cache import Cache
from cachekit.values.objects import new_part_id

#: ``CACHEKIT_<NAME>`` overrides the field of that name.
ENV_PREFIX = "CACHEKIT_"
_OVERRIDABLE = (
    "repository",
    "ref",
    "base_ref",
    "default_branch",
    "job",
    "config",
    "shard",
    "run_id",
    "ci_run",
)
_TRUE = {"1", "true", "yes", "on"}


@attrs.frozen
class Namespace:
    """Where one CI run reads and writes. Text fields are raw (unsanitized) names."""

    repository: str = attrs.field(default="local", validator=attrs.validators.min_len(1))
    ref: str = attrs.field(default="local", validator=attrs.validators.min_len(1))
    #: The branch a pull request targets ("" when not a pull request or unknown).
    base_ref: str = ""
    default_branch: str = ""
    job: str = ""
    config: str = ""
    #: Which shard of the job this is, such as ``2/4`` ("" when not sharded).
    shard: str = ""
    #: This run and attempt, in the ids of the parts it writes ("" when unknown).
    run_id: str = ""
    #: The CI run whatever the attempt (GitHub's run id without its attempt; elsewhere
    #: the run id, which a retry keeps): the shards of one CI run and every rerun of
    #: them share one split plan (`cachekit.stats.split_plan`). "" when unknown.
    ci_run: str = ""
    #: False for pull requests from forks and runs configured read-only.
    trusted: bool = True
    #: The CI system detected ("local" when none).
    provider: str = "local"
    #: Why the run is not trusted ("" when it is).
    untrusted_reason: str = ""

    @property
    def prefix(self) -> str:
        """The key prefix this run writes under (its own ref)."""
        return layout.namespace_prefix(self.repository, self.ref, self.job, self.config)

    @property
    def read_refs(self) -> tuple[str, ...]:
        """The refs read, nearest first: this ref, the base ref, the default branch."""
        refs: list[str] = []
        for ref in (self.ref, self.base_ref, self.default_branch):
            if ref and ref not in refs:
                refs.append(ref)
        return tuple(refs)

    @property
    def read_prefixes(self) -> tuple[str, ...]:
        """The key prefixes of `read_refs`, nearest first; distinct refs may share one
        only if they sanitize alike, which `safe_segment` rules out."""
        return tuple(
            layout.namespace_prefix(self.repository, ref, self.job, self.config)
            for ref in self.read_refs
        )

    @property
    def part_label(self) -> str:
        """The writer's label in the ids of the parts it writes (run and shard)."""
        return layout.part_label(shard=self.shard, run_id=self.run_id)

    def new_part_id(self) -> str:
        """A fresh, unique part id labelled with this run and shard."""
        return new_part_id(self.part_label)

    def describe(self) -> str:
        """One line for report headers, such as::

        github: acme/app ref feature/x (then main) job test shard 2/4 run 81-1, read-write
        """
        words = [f"{self.provider}: {self.repository} ref {self.ref}"]
        later = self.read_refs[1:]
        if later:
            words.append(f"(then {', '.join(later)})")
        for name in ("job", "config", "shard", "run"):
            value = self.run_id if name == "run" else getattr(self, name)
            if value:
                words.append(f"{name} {value}")
        access = "read-write" if self.trusted else f"read-only ({self.untrusted_reason})"
        return " ".join(words) + ", " + access


def detect_namespace(
    environ: Mapping[str, str] | None = None,
    *,
    repository: str | None = None,
    ref: str | None = None,
    base_ref: str | None = None,
    default_branch: str | None = None,
    job: str | None = None,
    config: str | None = None,
    shard: str | None = None,
    run_id: str | None = None,
    ci_run: str | None = None,
    trusted: bool | None = None,
) -> Namespace:
    """The namespace of this run: explicit arguments, then ``CACHEKIT_*`` variables
    (``CACHEKIT_REF``, ``CACHEKIT_BASE_REF``, ``CACHEKIT_JOB``, ``CACHEKIT_SHARD``, ...,
    ``CACHEKIT_READONLY=1``), then the CI system's variables, then defaults.

    ``trusted=True`` cannot make a fork's pull request trusted (see the module doc).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    fields: dict[str, Any] = {}
    for detector in _DETECTORS:
        detected = detector(env)
        if detected is not None:
            fields = detected
            break
    explicit = {
        "repository": repository,
        "ref": ref,
        "base_ref": base_ref,
        "default_branch": default_branch,
        "job": job,
        "config": config,
        "shard": shard,
        "run_id": run_id,
        "ci_run": ci_run,
    }
    for name in _OVERRIDABLE:
        from_env = env.get(ENV_PREFIX + name.upper(), "").strip()
        if explicit[name] is not None:
            fields[name] = explicit[name]
        elif from_env:
            fields[name] = from_env
    # An empty repository or ref means "not known": keep the defaults.
    fields = {
        name: value
        for name, value in fields.items()
        if value is not None and (value != "" or name not in ("repository", "ref"))
    }
    # A retry keeps the run id everywhere but on GitHub, whose detector sets its own.
    fields.setdefault("ci_run", fields.get("run_id", ""))
    reason = str(fields.pop("untrusted_reason", ""))
    if not reason and env.get(ENV_PREFIX + "READONLY", "").strip().lower() in _TRUE:
        reason = "CACHEKIT_READONLY is set"
    if not reason and trusted is False:
        reason = "configured read-only"
    return Namespace(**fields, trusted=not reason, untrusted_reason=reason)


def namespaced_cache(store: CacheStore, namespace: Namespace, **options: Any) -> Cache:
    """A `Cache` of this run's namespace: merged reads join the whole read chain (own
    ref, base ref, default branch), plain reads take the first hit, writes go under the
    run's own ref only, and never when the run is not trusted. ``options`` go to `Cache`.
    """
    layers = [PrefixedStore(store, prefix) for prefix in namespace.read_prefixes]
    own: CacheStore = layers[0] if namespace.trusted else ReadOnlyStore(layers[0])
    options.setdefault("writer", namespace.part_label)
    return Cache(own, read_also=layers[1:], **options)


def namespaced_store(store: CacheStore, namespace: Namespace) -> CacheStore:
    """``store`` as this run sees it: reads follow the namespace's read chain (own ref,
    base ref, default branch), writes go under its own ref only; read-only when the run
    is not trusted."""
    layers: list[CacheStore] = [PrefixedStore(store, prefix) for prefix in namespace.read_prefixes]
    chained: CacheStore = layers[0] if len(layers) == 1 else LayeredStore(layers)
    return chained if namespace.trusted else ReadOnlyStore(chained)


# -- CI systems ------------------------------------------------------------------------

Detected = dict[str, Any]


def _get(env: Mapping[str, str], *names: str) -> str:
    """The first non-empty variable among ``names`` ("" if none)."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def _strip_heads(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def _shard(index: str, total: str, *, zero_based: bool) -> str:
    """``"i/n"`` (1-based) when there is more than one shard, else ""."""
    try:
        position, count = int(index), int(total)
    except ValueError:
        return ""
    if count <= 1:
        return ""
    return f"{position + 1 if zero_based else position}/{count}"


def normalize_git_url(url: str) -> str:
    """``host/owner/name`` of a git remote, without scheme, credentials or ``.git``.

    ``git@github.com:acme/app.git`` and ``https://token@github.com/acme/app`` both give
    ``github.com/acme/app``.
    """
    text = url.strip()
    if "://" not in text and re.match(r"^[^/@]+@[^/:]+:", text):  # scp-like: git@host:path
        text = "ssh://" + text.replace(":", "/", 1)
    if "://" not in text:
        return text.removesuffix(".git").strip("/")
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
    except ValueError:
        return ""
    return f"{host}/{parts.path.strip('/').removesuffix('.git')}".strip("/")


#: GitHub Actions events whose runs execute only code that someone with write access to
#: the repository pushed or chose: trusted. ``pull_request*`` events are trusted only from
#: the repository itself (`_github`). Every other event (``workflow_run``,
#: ``issue_comment``, ``issues``, ``discussion``, ``check_run``, ...) is untrusted by
#: default: such workflows commonly check out or download what a fork's pull request
#: made, which cachekit cannot see. ``CACHEKIT_TRUSTED_EVENTS`` adds events to this set.
GITHUB_TRUSTED_EVENTS = frozenset(
    {"push", "schedule", "workflow_dispatch", "merge_group", "release", "create", "delete"}
)
#: Events a repository's maintainers vouch for (comma- or space-separated names).
ENV_TRUSTED_EVENTS = ENV_PREFIX + "TRUSTED_EVENTS"
#: The largest event payload read (GitHub caps webhook payloads at 25 MB).
MAX_EVENT_BYTES = 32 * 1024 * 1024


def trusted_events(env: Mapping[str, str]) -> frozenset[str]:
    """`GITHUB_TRUSTED_EVENTS` and the events ``CACHEKIT_TRUSTED_EVENTS`` adds. Names of
    ``pull_request*`` events are ignored there: a fork's pull request runs a workflow
    file (and so an environment) the fork controls, so they are judged by the payload
    only."""
    added = env.get(ENV_TRUSTED_EVENTS, "").replace(",", " ").split()
    return GITHUB_TRUSTED_EVENTS | {name for name in added if not name.startswith("pull_request")}


def _github(env: Mapping[str, str]) -> Detected | None:
    if env.get("GITHUB_ACTIONS") != "true":
        return None
    event_name = env.get("GITHUB_EVENT_NAME", "").strip()
    event, event_error = _read_event(env.get("GITHUB_EVENT_PATH", ""))
    repository = env.get("GITHUB_REPOSITORY", "") or "unknown"
    attempt = env.get("GITHUB_RUN_ATTEMPT", "")
    run_id = env.get("GITHUB_RUN_ID", "")
    reason = ""
    if event_name.startswith("pull_request"):
        if event is None:
            reason = f"pull request whose event payload is unreadable ({event_error})"
        else:
            pull = event.get("pull_request") or {}
            head = _dig(pull, "head", "repo", "full_name")
            base = _dig(pull, "base", "repo", "full_name") or repository
            if not head:
                reason = "pull request from an unknown or deleted repository"
            elif head != base:
                reason = f"pull request from fork {head}"
    elif not event_name:
        reason = "GITHUB_EVENT_NAME is not set"
    elif event_name not in trusted_events(env):
        reason = (
            f"event {event_name} can run code from forks "
            f"(add it to {ENV_TRUSTED_EVENTS} if this workflow never does)"
        )
    elif event is None and env.get("GITHUB_EVENT_PATH", ""):
        reason = f"event payload is unreadable ({event_error})"
    return {
        "provider": "github",
        "repository": repository,
        "ref": _get(env, "GITHUB_HEAD_REF", "GITHUB_REF_NAME")
        or _strip_heads(env.get("GITHUB_REF", "")),
        "base_ref": env.get("GITHUB_BASE_REF", ""),
        "default_branch": str(_dig(event or {}, "repository", "default_branch") or ""),
        "job": env.get("GITHUB_JOB", ""),
        "run_id": f"{run_id}-{attempt}" if run_id and attempt else run_id,
        "ci_run": run_id,
        "untrusted_reason": reason,
    }


def _read_event(path: str) -> tuple[dict[str, Any] | None, str]:
    """The event payload, or None and why not. Anything unexpected in it (too big, not
    JSON, nested too deep to parse) is a reason, never an exception: fail closed."""
    if not path:
        return None, "GITHUB_EVENT_PATH is not set"
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_EVENT_BYTES + 1)
        if len(data) > MAX_EVENT_BYTES:
            return None, f"larger than {MAX_EVENT_BYTES} bytes"
        event = json.loads(data.decode("utf-8"))
    except (OSError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"
    except RecursionError:
        return None, "RecursionError: nested too deep"
    if not isinstance(event, dict):
        return None, "not a JSON object"
    return event, ""


def _dig(value: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


_GITLAB_MATRIX_JOB = re.compile(r"^(?P<job>.*?): \[(?P<config>.*)\]$")
_GITLAB_PARALLEL_JOB = re.compile(r"^(?P<job>.*?) \d+/\d+$")


def _gitlab(env: Mapping[str, str]) -> Detected | None:
    if env.get("GITLAB_CI") != "true":
        return None
    job = env.get("CI_JOB_NAME", "")
    config = shard = ""
    matrix = _GITLAB_MATRIX_JOB.match(job)
    if matrix:  # parallel:matrix names jobs "test: [3.12, linux]"
        job, config = matrix["job"], matrix["config"]
    else:  # parallel: N names jobs "test 2/4"
        parallel = _GITLAB_PARALLEL_JOB.match(job)
        job = parallel["job"] if parallel else job
        shard = _shard(env.get("CI_NODE_INDEX", ""), env.get("CI_NODE_TOTAL", ""), zero_based=False)
    source = env.get("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", "")
    project = env.get("CI_PROJECT_ID", "")
    reason = ""
    if source and source != project:
        source_path = env.get("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", "") or f"project {source}"
        reason = f"merge request from fork {source_path}"
    elif env.get("CI_PIPELINE_SOURCE", "") == "external_pull_request_event":
        # A GitHub pull request run by "CI/CD for external repositories".
        head = env.get("CI_EXTERNAL_PULL_REQUEST_SOURCE_REPOSITORY", "")
        target = env.get("CI_EXTERNAL_PULL_REQUEST_TARGET_REPOSITORY", "")
        if not head or head != target:
            reason = f"external pull request from {head or 'an unknown repository'}"
    return {
        "provider": "gitlab",
        "repository": env.get("CI_PROJECT_PATH", "") or "unknown",
        "ref": _get(env, "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "CI_COMMIT_REF_NAME"),
        "base_ref": env.get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", ""),
        "default_branch": env.get("CI_DEFAULT_BRANCH", ""),
        "job": job,
        "config": config,
        "shard": shard,
        "run_id": env.get("CI_PIPELINE_ID", ""),
        "untrusted_reason": reason,
    }


def _buildkite(env: Mapping[str, str]) -> Detected | None:
    if env.get("BUILDKITE") != "true":
        return None
    reason = ""
    pull_request = env.get("BUILDKITE_PULL_REQUEST", "false")
    if pull_request not in ("", "false"):
        head = normalize_git_url(env.get("BUILDKITE_PULL_REQUEST_REPO", ""))
        base = normalize_git_url(env.get("BUILDKITE_REPO", ""))
        if not head or not base:
            reason = "pull request from an unknown repository"
        elif head != base:
            reason = f"pull request from fork {head}"
    organization = env.get("BUILDKITE_ORGANIZATION_SLUG", "")
    pipeline = env.get("BUILDKITE_PIPELINE_SLUG", "")
    return {
        "provider": "buildkite",
        "repository": "/".join(part for part in (organization, pipeline) if part) or "unknown",
        "ref": env.get("BUILDKITE_BRANCH", ""),
        "base_ref": env.get("BUILDKITE_PULL_REQUEST_BASE_BRANCH", ""),
        "default_branch": env.get("BUILDKITE_PIPELINE_DEFAULT_BRANCH", ""),
        "job": _get(env, "BUILDKITE_STEP_KEY", "BUILDKITE_LABEL"),
        "shard": _shard(
            env.get("BUILDKITE_PARALLEL_JOB", ""),
            env.get("BUILDKITE_PARALLEL_JOB_COUNT", ""),
            zero_based=True,
        ),
        "run_id": env.get("BUILDKITE_BUILD_NUMBER", ""),
        "untrusted_reason": reason,
    }


def _circleci(env: Mapping[str, str]) -> Detected | None:
    if env.get("CIRCLECI") != "true":
        return None
    owner = env.get("CIRCLE_PROJECT_USERNAME", "")
    name = env.get("CIRCLE_PROJECT_REPONAME", "")
    # CircleCI sets CIRCLE_PR_* only for pull requests from forks.
    pr_owner = env.get("CIRCLE_PR_USERNAME", "")
    pr_name = env.get("CIRCLE_PR_REPONAME", "")
    reason = ""
    if (pr_owner or pr_name or env.get("CIRCLE_PR_NUMBER")) and (pr_owner, pr_name) != (
        owner,
        name,
    ):
        reason = f"pull request from fork {pr_owner or '?'}/{pr_name or '?'}"
    return {
        "provider": "circleci",
        "repository": f"{owner}/{name}" if owner and name else "unknown",
        "ref": _get(env, "CIRCLE_BRANCH", "CIRCLE_TAG"),
        "job": env.get("CIRCLE_JOB", ""),
        "shard": _shard(
            env.get("CIRCLE_NODE_INDEX", ""), env.get("CIRCLE_NODE_TOTAL", ""), zero_based=True
        ),
        "run_id": _get(env, "CIRCLE_WORKFLOW_ID", "CIRCLE_BUILD_NUM"),
        "untrusted_reason": reason,
    }


def _jenkins(env: Mapping[str, str]) -> Detected | None:
    if not env.get("JENKINS_URL"):
        return None
    branch = env.get("BRANCH_NAME", "")
    pipeline = env.get("JOB_NAME", "")
    if branch and pipeline.endswith("/" + branch):  # multibranch: "app/PR-12"
        pipeline = pipeline[: -len(branch) - 1]
    git_branch = env.get("GIT_BRANCH", "").removeprefix("origin/")
    fork = env.get("CHANGE_FORK", "")
    return {
        "provider": "jenkins",
        "repository": normalize_git_url(env.get("GIT_URL", "")) or pipeline or "unknown",
        "ref": _get(env, "CHANGE_BRANCH") or branch or git_branch,
        "base_ref": env.get("CHANGE_TARGET", ""),
        "job": pipeline,
        "run_id": env.get("BUILD_NUMBER", ""),
        "untrusted_reason": f"pull request from fork {fork}" if fork else "",
    }


_AZURE_GENERIC_JOB = re.compile(r"^(__default|Job\d*)$")


def _azure(env: Mapping[str, str]) -> Detected | None:
    if env.get("TF_BUILD", "").lower() != "true":
        return None
    phase = env.get("SYSTEM_PHASENAME", "")
    job_name = env.get("SYSTEM_JOBNAME", "")
    # In a matrix, System.JobName is the leg's name ("py312") and System.PhaseName the job.
    config = (
        job_name if phase and job_name != phase and not _AZURE_GENERIC_JOB.match(job_name) else ""
    )
    shard = ""
    if not config:
        shard = _shard(
            env.get("SYSTEM_JOBPOSITIONINPHASE", ""),
            env.get("SYSTEM_TOTALJOBSINPHASE", ""),
            zero_based=False,
        )
    fork = env.get("SYSTEM_PULLREQUEST_ISFORK", "").lower() == "true"
    return {
        "provider": "azure",
        "repository": env.get("BUILD_REPOSITORY_NAME", "") or "unknown",
        "ref": _strip_heads(_get(env, "SYSTEM_PULLREQUEST_SOURCEBRANCH", "BUILD_SOURCEBRANCH")),
        "base_ref": _strip_heads(env.get("SYSTEM_PULLREQUEST_TARGETBRANCH", "")),
        "job": phase or job_name,
        "config": config,
        "shard": shard,
        "run_id": env.get("BUILD_BUILDID", ""),
        "untrusted_reason": "pull request from a fork" if fork else "",
    }


_DETECTORS: tuple[Callable[[Mapping[str, str]], Detected | None], ...] = (
    _github,
    _gitlab,
    _buildkite,
    _circleci,
    _jenkins,
    _azure,
)
