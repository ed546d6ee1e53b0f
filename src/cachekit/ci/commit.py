"""The commit a run tests, from the CI environment: what tells a flaky test (passed and
failed on the same code) from a fixed one (`cachekit.stats.flaky`).

One lookup for the pytest plugin and ``cachekit stats ingest`` alike. ``CACHEKIT_COMMIT``
wins; then the variables the CI systems set (GitHub Actions, GitLab CI, Buildkite,
CircleCI, Jenkins, Azure Pipelines). A value that is not a plain commit-like token (hex
digits, or at most `MAX_LENGTH` printable characters without spaces) is left out rather
than stored: it is only a label, never a key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

#: Read in this order; the first that is set wins.
COMMIT_VARIABLES = (
    "CACHEKIT_COMMIT",
    "GITHUB_SHA",
    "CI_COMMIT_SHA",
    "BUILDKITE_COMMIT",
    "CIRCLE_SHA1",
    "GIT_COMMIT",
    "BUILD_SOURCEVERSION",
)
MAX_LENGTH = 100
_TOKEN = re.compile(r"[!-~]+")  # printable ASCII, no spaces


def detect_commit(environ: Mapping[str, str] | None = None) -> str:
    """The commit this run tests, or "" when the environment does not say."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    for name in COMMIT_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value if valid_commit(value) else ""
    return ""


def valid_commit(value: str) -> bool:
    """Whether ``value`` can be stored as a run's commit."""
    return len(value) <= MAX_LENGTH and _TOKEN.fullmatch(value) is not None
