"""Namespace detection from recorded CI environments, read chains and trust."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from cachekit import LASTFAILED, MemoryStore, UnsupportedOperation
from cachekit.ci.layout import LASTFAILED_KEY, namespace_prefix
from cachekit.ci.namespace import (
    Namespace,
    detect_namespace,
    namespaced_cache,
    namespaced_store,
    normalize_git_url,
)
from cachekit.stores.keys import validate_key
from cachekit.values.merge import observe_outcomes, still_failing

# -- recorded environments ------------------------------------------------------------


def github_env(tmp_path: Path, event_name: str, event: dict[str, Any]) -> dict[str, str]:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    env = {
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "acme/app",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_JOB": "test",
        "GITHUB_RUN_ID": "9001",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_REF_NAME": "main",
        "GITHUB_HEAD_REF": "",
        "GITHUB_BASE_REF": "",
    }
    if event_name.startswith("pull_request"):
        env |= {
            "GITHUB_REF": "refs/pull/12/merge",
            "GITHUB_REF_NAME": "12/merge",
            "GITHUB_HEAD_REF": "feature/login",
            "GITHUB_BASE_REF": "release/1.x",
        }
    return env


def pull_request_event(head: str | None, base: str = "acme/app") -> dict[str, Any]:
    return {
        "repository": {"full_name": base, "default_branch": "main"},
        "pull_request": {
            "head": {"repo": {"full_name": head} if head else None, "ref": "feature/login"},
            "base": {"repo": {"full_name": base}, "ref": "release/1.x"},
        },
    }


def test_github_push(tmp_path: Path) -> None:
    event = {"repository": {"full_name": "acme/app", "default_branch": "trunk"}}
    ns = detect_namespace(github_env(tmp_path, "push", event))
    assert ns == Namespace(
        repository="acme/app",
        ref="main",
        default_branch="trunk",
        job="test",
        run_id="9001-2",
        ci_run="9001",
        provider="github",
    )
    assert ns.read_refs == ("main", "trunk")
    assert ns.trusted


def test_every_attempt_of_a_ci_run_is_the_same_ci_run(tmp_path: Path) -> None:
    """A rerun of a failed shard must find its CI run's split plan: GitHub's attempt is
    in the run id (parts of two attempts stay apart) but not in the CI run; elsewhere
    a retry keeps the run id itself; ``CACHEKIT_CI_RUN`` overrides both."""
    event = {"repository": {"full_name": "acme/app", "default_branch": "main"}}
    first = github_env(tmp_path, "push", event) | {"GITHUB_RUN_ATTEMPT": "1"}
    rerun = first | {"GITHUB_RUN_ATTEMPT": "3"}
    assert detect_namespace(first).run_id != detect_namespace(rerun).run_id
    assert detect_namespace(first).ci_run == detect_namespace(rerun).ci_run == "9001"
    assert detect_namespace({"CACHEKIT_RUN_ID": "41"}).ci_run == "41"
    assert detect_namespace(rerun | {"CACHEKIT_CI_RUN": "wf-9"}).ci_run == "wf-9"
    assert detect_namespace({}).ci_run == ""


def test_github_pull_request_same_repository(tmp_path: Path) -> None:
    env = github_env(tmp_path, "pull_request", pull_request_event("acme/app"))
    ns = detect_namespace(env)
    assert ns.ref == "feature/login"
    assert ns.base_ref == "release/1.x"
    assert ns.read_refs == ("feature/login", "release/1.x", "main")
    assert ns.trusted


@pytest.mark.parametrize("event_name", ["pull_request", "pull_request_target"])
def test_github_pull_request_from_fork_is_untrusted(tmp_path: Path, event_name: str) -> None:
    env = github_env(tmp_path, event_name, pull_request_event("mallory/app"))
    ns = detect_namespace(env)
    assert not ns.trusted
    assert "mallory/app" in ns.untrusted_reason
    assert "read-only" in ns.describe()


def test_github_pull_request_from_deleted_fork_is_untrusted(tmp_path: Path) -> None:
    ns = detect_namespace(github_env(tmp_path, "pull_request", pull_request_event(None)))
    assert not ns.trusted


def test_github_pull_request_with_unreadable_event_fails_closed(tmp_path: Path) -> None:
    env = github_env(tmp_path, "pull_request", {})
    Path(env["GITHUB_EVENT_PATH"]).write_text("{not json", encoding="utf-8")
    assert not detect_namespace(env).trusted
    env["GITHUB_EVENT_PATH"] = str(tmp_path / "missing.json")
    assert not detect_namespace(env).trusted


def test_github_fork_cannot_become_trusted(tmp_path: Path) -> None:
    env = github_env(tmp_path, "pull_request", pull_request_event("mallory/app"))
    env["CACHEKIT_READONLY"] = "0"
    assert not detect_namespace(env, trusted=True).trusted


GITLAB_BRANCH = {
    "GITLAB_CI": "true",
    "CI_PROJECT_ID": "42",
    "CI_PROJECT_PATH": "group/sub/app",
    "CI_COMMIT_REF_NAME": "main",
    "CI_DEFAULT_BRANCH": "main",
    "CI_JOB_NAME": "pytest 3/4",
    "CI_NODE_INDEX": "3",
    "CI_NODE_TOTAL": "4",
    "CI_PIPELINE_ID": "777",
}


def test_gitlab_parallel_branch_pipeline() -> None:
    ns = detect_namespace(GITLAB_BRANCH)
    assert (ns.provider, ns.repository, ns.ref, ns.job, ns.shard, ns.run_id) == (
        "gitlab",
        "group/sub/app",
        "main",
        "pytest",
        "3/4",
        "777",
    )
    assert ns.read_refs == ("main",)
    assert ns.trusted


def test_gitlab_matrix_job_becomes_config() -> None:
    env = GITLAB_BRANCH | {"CI_JOB_NAME": "pytest: [3.12, linux]", "CI_NODE_INDEX": "2"}
    ns = detect_namespace(env)
    assert (ns.job, ns.config, ns.shard) == ("pytest", "3.12, linux", "")


def test_gitlab_merge_requests() -> None:
    merge_request = GITLAB_BRANCH | {
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "fix/crash",
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "stable",
        "CI_MERGE_REQUEST_SOURCE_PROJECT_ID": "42",
        "CI_COMMIT_REF_NAME": "fix/crash",
    }
    ns = detect_namespace(merge_request)
    assert ns.trusted
    assert ns.read_refs == ("fix/crash", "stable", "main")
    fork = merge_request | {
        "CI_MERGE_REQUEST_SOURCE_PROJECT_ID": "1001",
        "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH": "mallory/app",
    }
    ns = detect_namespace(fork)
    assert not ns.trusted
    assert "mallory/app" in ns.untrusted_reason


BUILDKITE = {
    "BUILDKITE": "true",
    "BUILDKITE_ORGANIZATION_SLUG": "acme",
    "BUILDKITE_PIPELINE_SLUG": "app",
    "BUILDKITE_REPO": "git@github.com:acme/app.git",
    "BUILDKITE_BRANCH": "main",
    "BUILDKITE_PIPELINE_DEFAULT_BRANCH": "main",
    "BUILDKITE_STEP_KEY": "tests",
    "BUILDKITE_LABEL": ":pytest: tests",
    "BUILDKITE_PARALLEL_JOB": "0",
    "BUILDKITE_PARALLEL_JOB_COUNT": "3",
    "BUILDKITE_BUILD_NUMBER": "55",
    "BUILDKITE_PULL_REQUEST": "false",
}


def test_buildkite() -> None:
    ns = detect_namespace(BUILDKITE)
    assert (ns.provider, ns.repository, ns.ref, ns.job, ns.shard, ns.run_id) == (
        "buildkite",
        "acme/app",
        "main",
        "tests",
        "1/3",
        "55",
    )
    assert ns.trusted
    same = BUILDKITE | {
        "BUILDKITE_PULL_REQUEST": "17",
        "BUILDKITE_BRANCH": "feature",
        "BUILDKITE_PULL_REQUEST_BASE_BRANCH": "main",
        "BUILDKITE_PULL_REQUEST_REPO": "https://github.com/acme/app.git",
    }
    assert detect_namespace(same).trusted
    fork = same | {"BUILDKITE_PULL_REQUEST_REPO": "https://github.com/mallory/app.git"}
    assert not detect_namespace(fork).trusted
    unknown = same | {"BUILDKITE_PULL_REQUEST_REPO": ""}
    assert not detect_namespace(unknown).trusted


CIRCLECI = {
    "CIRCLECI": "true",
    "CIRCLE_PROJECT_USERNAME": "acme",
    "CIRCLE_PROJECT_REPONAME": "app",
    "CIRCLE_BRANCH": "main",
    "CIRCLE_JOB": "test",
    "CIRCLE_NODE_INDEX": "1",
    "CIRCLE_NODE_TOTAL": "2",
    "CIRCLE_WORKFLOW_ID": "wf-1",
}


def test_circleci() -> None:
    ns = detect_namespace(CIRCLECI)
    assert (ns.repository, ns.ref, ns.job, ns.shard, ns.run_id, ns.trusted) == (
        "acme/app",
        "main",
        "test",
        "2/2",
        "wf-1",
        True,
    )
    fork = CIRCLECI | {
        "CIRCLE_BRANCH": "pull/31",
        "CIRCLE_PR_NUMBER": "31",
        "CIRCLE_PR_USERNAME": "mallory",
        "CIRCLE_PR_REPONAME": "app",
    }
    assert not detect_namespace(fork).trusted


JENKINS = {
    "JENKINS_URL": "https://ci.example/",
    "JOB_NAME": "app/PR-12",
    "BRANCH_NAME": "PR-12",
    "CHANGE_ID": "12",
    "CHANGE_BRANCH": "feature/x",
    "CHANGE_TARGET": "main",
    "GIT_URL": "https://user:secret@github.com/acme/app.git",
    "BUILD_NUMBER": "3",
}


def test_jenkins_multibranch() -> None:
    ns = detect_namespace(JENKINS)
    assert (ns.repository, ns.ref, ns.base_ref, ns.job, ns.run_id) == (
        "github.com/acme/app",
        "feature/x",
        "main",
        "app",
        "3",
    )
    assert "secret" not in ns.describe()
    assert ns.trusted
    assert not detect_namespace(JENKINS | {"CHANGE_FORK": "mallory"}).trusted


AZURE = {
    "TF_BUILD": "True",
    "BUILD_REPOSITORY_NAME": "acme/app",
    "BUILD_SOURCEBRANCH": "refs/heads/feature/y",
    "SYSTEM_PHASENAME": "tests",
    "SYSTEM_JOBNAME": "py312",
    "SYSTEM_JOBPOSITIONINPHASE": "2",
    "SYSTEM_TOTALJOBSINPHASE": "3",
    "BUILD_BUILDID": "808",
}


def test_azure_pipelines() -> None:
    ns = detect_namespace(AZURE)
    assert (ns.repository, ns.ref, ns.job, ns.config, ns.shard, ns.run_id) == (
        "acme/app",
        "feature/y",
        "tests",
        "py312",
        "",
        "808",
    )
    sliced = AZURE | {"SYSTEM_JOBNAME": "Job2"}
    assert detect_namespace(sliced).shard == "2/3"
    pull = AZURE | {
        "SYSTEM_PULLREQUEST_SOURCEBRANCH": "refs/heads/topic",
        "SYSTEM_PULLREQUEST_TARGETBRANCH": "refs/heads/main",
        "SYSTEM_PULLREQUEST_ISFORK": "False",
    }
    ns = detect_namespace(pull)
    assert (ns.ref, ns.base_ref, ns.trusted) == ("topic", "main", True)
    assert not detect_namespace(pull | {"SYSTEM_PULLREQUEST_ISFORK": "True"}).trusted


# -- overrides ------------------------------------------------------------------------


def test_no_ci_gives_local_defaults() -> None:
    ns = detect_namespace({})
    assert ns == Namespace()
    assert ns.describe() == "local: local ref local, read-write"


def test_environment_overrides_ci_and_arguments_override_environment() -> None:
    env = GITLAB_BRANCH | {
        "CACHEKIT_REF": "from-env",
        "CACHEKIT_BASE_REF": "base-env",
        "CACHEKIT_JOB": "job-env",
        "CACHEKIT_SHARD": "1/9",
        "CACHEKIT_CONFIG": "cfg",
    }
    ns = detect_namespace(env)
    assert (ns.ref, ns.base_ref, ns.job, ns.shard, ns.config) == (
        "from-env",
        "base-env",
        "job-env",
        "1/9",
        "cfg",
    )
    ns = detect_namespace(env, ref="explicit", shard="", repository="other")
    assert (ns.ref, ns.shard, ns.repository) == ("explicit", "", "other")


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_readonly_variable_makes_trusted_runs_read_only(value: str) -> None:
    ns = detect_namespace(GITLAB_BRANCH | {"CACHEKIT_READONLY": value})
    assert not ns.trusted
    assert "CACHEKIT_READONLY" in ns.untrusted_reason


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_readonly_variable_off(value: str) -> None:
    assert detect_namespace(GITLAB_BRANCH | {"CACHEKIT_READONLY": value}).trusted


def test_trusted_false_argument() -> None:
    assert not detect_namespace(GITLAB_BRANCH, trusted=False).trusted


def test_describe_one_line() -> None:
    ns = detect_namespace(GITLAB_BRANCH | {"CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "stable"})
    text = ns.describe()
    assert "\n" not in text
    assert (
        text
        == "gitlab: group/sub/app ref main (then stable) job pytest shard 3/4 run 777, read-write"
    )


# -- key segments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    ["feature/x", "../../etc", "a\\b", "..", ".", "x" * 300, "weird ref\x00\n", "ünïcode", "@base"],
)
def test_user_controlled_names_become_safe_segments(ref: str) -> None:
    ns = Namespace(repository="acme/app", ref=ref, job=ref, config=ref)
    prefix = ns.prefix
    validate_key(prefix)
    assert len(prefix.split("/")) == 5
    assert not any(segment.startswith("@") for segment in prefix.split("/"))
    validate_key(f"{prefix}/cache/lastfailed")
    assert prefix != Namespace(repository="acme/app", ref=ref + "y").prefix


def test_distinct_refs_get_distinct_prefixes() -> None:
    refs = ["feature/x", "feature-x", "feature_x", "Feature/x"]
    assert len({namespace_prefix("acme/app", ref) for ref in refs}) == len(refs)


def test_part_ids_carry_shard_and_run() -> None:
    ns = Namespace(shard="2/4", run_id="81-1")
    part = ns.new_part_id()
    assert "run-81-1-shard-2of4" in part
    assert "/" not in part


def test_normalize_git_url() -> None:
    for url in (
        "git@github.com:acme/app.git",
        "https://token@github.com/acme/app",
        "ssh://git@GitHub.com/acme/app.git",
        "https://github.com/acme/app/",
    ):
        assert normalize_git_url(url) == "github.com/acme/app"


# -- read chains and trust ------------------------------------------------------------


def write_failure(store: MemoryStore, ref: str, test: str, *, failed: bool, at: float) -> None:
    cache = namespaced_cache(store, Namespace(repository="acme/app", ref=ref, job="t"))
    value = observe_outcomes(
        failed=[test] if failed else [], passed=[] if failed else [test], at=at
    )
    cache.write_part(LASTFAILED_KEY, Namespace().new_part_id(), value)


def test_read_chain_joins_own_ref_base_and_default_branch() -> None:
    store = MemoryStore()
    write_failure(store, "main", "t.py::a", failed=True, at=1)
    write_failure(store, "release", "t.py::b", failed=True, at=1)
    write_failure(store, "feature/x", "t.py::c", failed=True, at=1)
    write_failure(store, "unrelated", "t.py::d", failed=True, at=1)
    ns = Namespace(
        repository="acme/app", ref="feature/x", base_ref="release", default_branch="main", job="t"
    )
    merged = namespaced_cache(store, ns).read_merged(LASTFAILED_KEY, LASTFAILED)
    assert still_failing(merged.value) == {"t.py::a": True, "t.py::b": True, "t.py::c": True}
    # Other jobs and configs are separate namespaces.
    other_job = attrs.evolve(ns, job="lint")
    assert namespaced_cache(store, other_job).read_merged(LASTFAILED_KEY, LASTFAILED).value == {}


def test_read_chain_still_joins_every_layer_after_each_is_compacted() -> None:
    """A compacted base in a nearer layer must not hide a farther layer's base."""
    store = MemoryStore()
    write_failure(store, "main", "t.py::a", failed=True, at=1)
    write_failure(store, "feature/x", "t.py::c", failed=True, at=2)
    write_failure(store, "feature/x", "t.py::a", failed=False, at=3)  # fixed on the branch
    write_failure(store, "main", "t.py::b", failed=True, at=4)
    for ref in ("main", "feature/x"):
        own = namespaced_cache(store, Namespace(repository="acme/app", ref=ref, job="t"))
        assert own.compact(LASTFAILED_KEY, LASTFAILED) == 2
    ns = Namespace(repository="acme/app", ref="feature/x", default_branch="main", job="t")
    merged = namespaced_cache(store, ns).read_merged(LASTFAILED_KEY, LASTFAILED)
    assert still_failing(merged.value) == {"t.py::b": True, "t.py::c": True}
    assert (merged.has_base, merged.parts) == (True, ())


def test_writes_go_to_own_ref_only() -> None:
    store = MemoryStore()
    ns = Namespace(repository="acme/app", ref="feature/x", base_ref="main", job="t")
    namespaced_cache(store, ns).write_part(LASTFAILED_KEY, "p1", {})
    keys = store.list()
    assert keys == [f"{ns.prefix}/{LASTFAILED_KEY}/@parts/p1"]


def test_untrusted_runs_read_but_never_write(tmp_path: Path) -> None:
    store = MemoryStore()
    write_failure(store, "main", "t.py::a", failed=True, at=1)
    env = github_env(tmp_path, "pull_request", pull_request_event("mallory/app"))
    env["CACHEKIT_JOB"] = "t"
    ns = detect_namespace(env)
    assert ns.read_refs[-1] == "main"
    before = {key: store.get(key) for key in store.list()}
    cache = namespaced_cache(store, ns)
    assert still_failing(cache.read_merged(LASTFAILED_KEY, LASTFAILED).value) == {"t.py::a": True}
    assert not cache.store.capabilities.writable
    assert not namespaced_store(store, ns).capabilities.writable
    with pytest.raises(UnsupportedOperation):
        cache.write_part(LASTFAILED_KEY, "p", {})
    with pytest.raises(UnsupportedOperation):
        cache.set("cache/nodeids", [])
    with pytest.raises(UnsupportedOperation):
        cache.delete(LASTFAILED_KEY)
    assert {key: store.get(key) for key in store.list()} == before


# -- which GitHub events are trusted (issue 15, 12) --------------------------------------


@pytest.mark.parametrize(
    "event_name", ["push", "schedule", "workflow_dispatch", "merge_group", "release"]
)
def test_github_events_that_run_only_the_repositorys_code_are_trusted(
    tmp_path: Path, event_name: str
) -> None:
    event = {"repository": {"full_name": "acme/app", "default_branch": "main"}}
    assert detect_namespace(github_env(tmp_path, event_name, event)).trusted


@pytest.mark.parametrize(
    "event_name",
    ["workflow_run", "issue_comment", "issues", "discussion_comment", "check_run", "status"],
)
def test_github_events_that_can_run_fork_code_are_untrusted(
    tmp_path: Path, event_name: str
) -> None:
    """A workflow_run after a fork's pull request, or an issue comment ("/test") that
    checks out the pull request's head, runs the fork's code with main's credentials."""
    event = {
        "repository": {"full_name": "acme/app", "default_branch": "main"},
        "workflow_run": {"head_repository": {"full_name": "mallory/app"}},
    }
    ns = detect_namespace(github_env(tmp_path, event_name, event))
    assert not ns.trusted
    assert f"event {event_name} can run code from forks" in ns.untrusted_reason
    assert "CACHEKIT_TRUSTED_EVENTS" in ns.untrusted_reason


@pytest.mark.parametrize(
    "event_name", ["pull_request_review", "pull_request_review_comment", "pull_request_target"]
)
def test_github_pull_request_events_from_a_fork_stay_untrusted(
    tmp_path: Path, event_name: str
) -> None:
    """Every pull_request* event is judged by its payload's head repository; a review of a
    fork's pull request is untrusted, even listed in CACHEKIT_TRUSTED_EVENTS (which a
    fork's own workflow file could set)."""
    env = github_env(tmp_path, event_name, pull_request_event("mallory/app"))
    env["CACHEKIT_TRUSTED_EVENTS"] = event_name
    ns = detect_namespace(env)
    assert not ns.trusted
    assert "mallory/app" in ns.untrusted_reason
    same = github_env(tmp_path, event_name, pull_request_event("acme/app"))
    assert detect_namespace(same).trusted


def test_trusted_events_can_be_added_but_not_a_fork(tmp_path: Path) -> None:
    event = {"repository": {"full_name": "acme/app", "default_branch": "main"}}
    env = github_env(tmp_path, "issue_comment", event)
    env["CACHEKIT_TRUSTED_EVENTS"] = "workflow_run, issue_comment"
    assert detect_namespace(env).trusted
    env["CACHEKIT_READONLY"] = "1"  # lowering still wins
    assert not detect_namespace(env).trusted
    env = github_env(tmp_path, "deployment", event) | {"CACHEKIT_TRUSTED_EVENTS": "push"}
    assert not detect_namespace(env).trusted


def test_github_without_an_event_name_is_untrusted(tmp_path: Path) -> None:
    env = github_env(tmp_path, "push", {})
    del env["GITHUB_EVENT_NAME"]
    ns = detect_namespace(env)
    assert not ns.trusted
    assert ns.untrusted_reason == "GITHUB_EVENT_NAME is not set"


def test_a_workflow_run_event_writes_nothing_through_the_plugin(
    tmp_path: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported attack: a workflow_run job (fork code) wrote its objects under main.
    Now the run reads, and the store is unchanged."""
    event = {"repository": {"full_name": "acme/app", "default_branch": "main"}}
    for name, value in github_env(tmp_path, "workflow_run", event).items():
        monkeypatch.setenv(name, value)
    store = tmp_path / "store"
    pytester.makepyfile(test_one="def test_ok():\n    pass\n\ndef test_bad():\n    assert 0\n")
    result = pytester.runpytest(f"--cache-url={store}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*read-only (event workflow_run can run code from forks*"])
    assert not store.exists() or not any(path.is_file() for path in store.rglob("*"))


# -- the event payload fails closed (issue 15, 6) -----------------------------------------


def test_a_deeply_nested_event_payload_is_untrusted_with_the_reason(tmp_path: Path) -> None:
    env = github_env(tmp_path, "push", {})
    Path(env["GITHUB_EVENT_PATH"]).write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    ns = detect_namespace(env)
    assert not ns.trusted
    assert ns.untrusted_reason == "event payload is unreadable (RecursionError: nested too deep)"
    pull = github_env(tmp_path, "pull_request", {})
    Path(pull["GITHUB_EVENT_PATH"]).write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert not detect_namespace(pull).trusted
    assert "RecursionError" in detect_namespace(pull).untrusted_reason


def test_a_deeply_nested_event_payload_does_not_crash_a_run(
    tmp_path: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to end the run with exit code 3 (INTERNALERROR)."""
    env = github_env(tmp_path, "push", {})
    Path(env["GITHUB_EVENT_PATH"]).write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(test_one="def test_ok():\n    pass\n")
    result = pytester.runpytest(f"--cache-url={tmp_path / 'store'}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*read-only (event payload is unreadable (RecursionError*"])


def test_an_oversized_event_payload_is_untrusted(tmp_path: Path) -> None:
    env = github_env(tmp_path, "push", {})
    with Path(env["GITHUB_EVENT_PATH"]).open("wb") as file:
        file.truncate(33 * 1024 * 1024)
    assert "larger than" in detect_namespace(env).untrusted_reason


def test_gitlab_external_pull_request_from_a_fork_is_untrusted() -> None:
    external = GITLAB_BRANCH | {
        "CI_PIPELINE_SOURCE": "external_pull_request_event",
        "CI_EXTERNAL_PULL_REQUEST_SOURCE_REPOSITORY": "mallory/app",
        "CI_EXTERNAL_PULL_REQUEST_TARGET_REPOSITORY": "acme/app",
    }
    ns = detect_namespace(external)
    assert not ns.trusted
    assert "mallory/app" in ns.untrusted_reason
    same = external | {"CI_EXTERNAL_PULL_REQUEST_SOURCE_REPOSITORY": "acme/app"}
    assert detect_namespace(same).trusted
