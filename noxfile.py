"""Every check the project runs, locally and in CI: ``nox`` runs the default sessions."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

import nox

nox.options.sessions = [
    "tests",
    "pytest_upstream",
    "tests_oldest_pytest",
    "lint",
    "typecheck",
    "docs",
]
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
#: The oldest pytest the plugin supports, and the newest release (tested in `tests`).
OLDEST_PYTEST = "8.0.2"


def install_azurite(session: nox.Session) -> None:
    """Azurite (the Azure Blob server the tests start on loopback) from the npm registry."""
    if not (ROOT / "node_modules" / ".bin" / "azurite-blob").exists():
        if shutil.which("npm") is None:
            session.error("npm is needed to install Azurite for the Azure Blob tests")
        session.run("npm", "ci", "--no-audit", "--no-fund", "--silent", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against real servers on loopback (S3, Azure Blob, GCS)."""
    install_azurite(session)
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-n", "auto"]))


@nox.session
def tests_oldest_pytest(session: nox.Session) -> None:
    """The plugin's tests on the oldest supported pytest."""
    session.install("-e", ".[test]", f"pytest=={OLDEST_PYTEST}")
    session.run("pytest", "tests/test_plugin_local.py", *session.posargs)


#: The oldest Python the project supports and the newest here: ``--skip-passed`` records
#: what tests execute with ``sys.settrace`` before Python 3.12 and ``sys.monitoring`` from
#: it. With pyenv: ``PYENV_VERSION=3.10.13:3.13.0 nox -s tests_skip_pythons``.
SKIP_PYTHONS = ["3.10", "3.13"]


@nox.session(python=SKIP_PYTHONS)
def tests_skip_pythons(session: nox.Session) -> None:
    """``--skip-passed``'s tests on the oldest and newest Python; not a default
    session (the default ones run on the machine's Python): ``nox -s tests_skip_pythons``
    where both are installed (a missing one is skipped outside CI)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest", "tests/test_fingerprint.py",
        *map(str, sorted(ROOT.glob("tests/test_skip_*.py"))), *session.posargs,
    )  # fmt: skip


@nox.session
def pytest_upstream(session: nox.Session) -> None:
    """pytest's own tests of its cache and stepwise plugins, with cachekit loaded into
    every inner run: without a backend, then with a remote store (tests/upstream)."""
    session.install("-e", ".")
    version = session.run("python", "-c", "import pytest; print(pytest.__version__)", silent=True)
    assert isinstance(version, str)
    # Outside the project: pytest's inner runs must not find our pyproject.toml.
    sources = Path(tempfile.mkdtemp(prefix="cachekit-upstream-"))
    session.run(
        "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
        f"pytest=={version.strip()}", "--dest", str(sources),
    )  # fmt: skip
    archive = next(sources.glob("pytest-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(sources, filter="data")
    checkout = sources / archive.name.removesuffix(".tar.gz")
    env = {"PYTHONPATH": str(ROOT / "tests" / "upstream")}
    with session.chdir(checkout):
        for loader in ("load_cachekit", "load_cachekit_remote"):
            session.run(
                "python", "-m", "pytest", "-p", loader, "-q",
                f"--basetemp={sources / 'basetemp'}",
                "testing/test_cacheprovider.py", "testing/test_stepwise.py", env=env,
            )  # fmt: skip
    shutil.rmtree(sources)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site; any warning fails the build. The API reference is
    read from the docstrings in src/ (mkdocstrings); the pages' examples run as tests in
    the `tests` session (tests/test_docs_examples.py)."""
    session.install(
        "-e", ".", "mkdocs>=1.6", "mkdocstrings[python]>=0.29", "pymdown-extensions>=10"
    )
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "build" / "site"))


@nox.session
def bench(session: nox.Session) -> None:
    """The committed benchmarks; results land in benchmarks/results/."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks", *session.posargs)
