"""Which installed distributions count for a test file's key: those its imports reach,
what they require, and those that run every test (pytest, its plugins), on a real site
directory with tiny distributions."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cachekit.skip import analysis
from cachekit.skip.distributions import (
    DistributionIndex,
    distribution_index,
    installed_distributions,
    name_and_version,
    normalize_name,
)
from cachekit.skip.fingerprint import Fingerprinter, KeyInputs

# -- which installed distributions count ---------------------------------------------------


class Site:
    """A site directory on ``sys.path`` with real (tiny) distributions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.versions: dict[str, str] = {}

    def install(
        self, name: str, version: str, *, modules: tuple[str, ...] = (), requires: str = ""
    ) -> None:
        """Install (or upgrade to) ``name`` ``version``, providing ``modules``."""
        for old in self.path.glob(f"{name}-*.dist-info"):
            for file in old.iterdir():
                file.unlink()
            old.rmdir()
        info = self.path / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        metadata += "".join(f"Requires-Dist: {line}\n" for line in requires.splitlines())
        (info / "METADATA").write_text(metadata)
        (info / "top_level.txt").write_text("".join(f"{module}\n" for module in modules))
        for module in modules:
            (self.path / module).mkdir(exist_ok=True)
            (self.path / module / "__init__.py").write_text(f"VERSION = {version!r}\n")
        importlib.invalidate_caches()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    site = Site(tmp_path / "site")
    site.path.mkdir()
    monkeypatch.syspath_prepend(str(site.path))
    site.install("alpha-lib", "1.0", modules=("alpha",), requires="beta-lib>=1")
    site.install(
        "beta-lib",
        "1.0",
        modules=("beta",),
        requires='gamma-lib ; python_version >= "3"\ndelta-lib ; extra == "fast"',
    )
    site.install("gamma-lib", "1.0", modules=("gamma",))
    site.install("delta-lib", "1.0", modules=("delta",))
    site.install("unrelated-lib", "1.0", modules=("unrelated",))
    site.install("runner-plugin", "1.0", modules=("runner_plugin",), requires="runner-dep")
    site.install("runner-dep", "1.0", modules=("runner_dep",))
    return site


DIST_TESTS = {
    "tests/test_alpha.py": "from app.uses_alpha import value\n\ndef test_value():\n    pass\n",
    "tests/test_stdlib.py": "import json\nimport os.path\n\ndef test_json():\n    pass\n",
    "tests/test_optional.py": (
        "try:\n    import not_installed_anywhere\nexcept ImportError:\n    pass\n"
    ),
    "tests/test_mystery.py": "import mystery\n\ndef test_mystery():\n    pass\n",
    "tests/test_literal.py": (
        "import importlib\n\ndef test_literal():\n    importlib.import_module('alpha')\n"
    ),
    "tests/test_dynamic.py": (
        "import importlib, os\n\n"
        "def test_dynamic():\n    importlib.import_module(os.environ['BACKEND'])\n"
    ),
    "tests/test_plugins.py": "from app.plugins import names\n\ndef test_names():\n    pass\n",
}


def distribution_keys(root: Path, **inputs: Any) -> dict[str, str]:
    fingerprinter = Fingerprinter(
        KeyInputs(root=root, always_distributions=("runner-plugin",), **inputs)
    )
    return {name: fingerprinter.file_key(root / name) for name in DIST_TESTS}


@pytest.fixture
def dist_project(tmp_path: Path, site: Site) -> Path:
    root = tmp_path / "dist-project"
    files = {
        **DIST_TESTS,
        "app/__init__.py": "",
        "app/uses_alpha.py": "import alpha\n\nvalue = alpha.VERSION\n",
        "app/plugins.py": (
            "from importlib.metadata import entry_points\n\n"
            "names = [point.name for point in entry_points(group='app.plugins')]\n"
        ),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # A module on sys.path that no distribution claims.
    (site.path / "mystery.py").write_text("X = 1\n")
    return root


def changed_files(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


EVERY_DIST_TEST = set(DIST_TESTS)
#: Files that count every distribution: a module no distribution claims, a module
#: imported by a computed name, the installed distributions read as data.
COUNTS_EVERY = {"tests/test_mystery.py", "tests/test_dynamic.py", "tests/test_plugins.py"}


#: The files that import alpha: by a statement, and by a literal name.
ALPHA = {"tests/test_alpha.py", "tests/test_literal.py"}


@pytest.mark.parametrize(
    ("bump", "expected"),
    [
        pytest.param(("alpha-lib", ("alpha",), "beta-lib>=1"), ALPHA, id="imported"),
        pytest.param(("beta-lib", ("beta",), ""), ALPHA, id="its-requirement"),
        pytest.param(("gamma-lib", (), ""), ALPHA, id="a-requirement-of-a-requirement"),
        pytest.param(("unrelated-lib", ("unrelated",), ""), set(), id="unrelated"),
        pytest.param(("delta-lib", ("delta",), ""), set(), id="a-requirement-of-an-extra"),
        pytest.param(("runner-plugin", (), "runner-dep"), EVERY_DIST_TEST, id="plugin"),
        pytest.param(("runner-dep", (), ""), EVERY_DIST_TEST, id="plugin-requirement"),
    ],
)
def test_a_distribution_bump_changes_the_keys_of_the_files_that_reach_it(
    dist_project: Path, site: Site, bump: tuple[str, tuple[str, ...], str], expected: set[str]
) -> None:
    name, modules, requires = bump
    before = distribution_keys(dist_project)
    site.install(name, "2.0", modules=modules, requires=requires)
    after = distribution_keys(dist_project)
    assert changed_files(before, after) == expected | COUNTS_EVERY


def test_installing_a_missing_module_changes_the_keys_of_its_importers(
    dist_project: Path, site: Site
) -> None:
    before = distribution_keys(dist_project)
    site.install("new-lib", "1.0", modules=("not_installed_anywhere",))
    assert changed_files(before, distribution_keys(dist_project)) == {
        "tests/test_optional.py",
        *COUNTS_EVERY,
    }


def test_the_distributions_a_file_counts_explain_its_key(dist_project: Path) -> None:
    fingerprinter = Fingerprinter(
        KeyInputs(root=dist_project, always_distributions=("runner-plugin",))
    )
    alpha = fingerprinter.distributions(dist_project / "tests/test_alpha.py")
    assert alpha == [
        ("alpha-lib", "1.0"),
        ("beta-lib", "1.0"),
        ("gamma-lib", "1.0"),
        ("runner-dep", "1.0"),
        ("runner-plugin", "1.0"),
    ]
    stdlib = fingerprinter.distributions(dist_project / "tests/test_stdlib.py")
    assert stdlib == [("runner-dep", "1.0"), ("runner-plugin", "1.0")]
    optional = fingerprinter.distributions(dist_project / "tests/test_optional.py")
    assert ("<module not_installed_anywhere>", "absent") in (optional or [])
    mystery = fingerprinter.distributions(dist_project / "tests/test_mystery.py")
    assert mystery is not None
    assert mystery[0] == ("<unattributed module>", "mystery")
    assert ("unrelated-lib", "1.0") in mystery
    for name in ("tests/test_dynamic.py", "tests/test_plugins.py"):
        every = fingerprinter.distributions(dist_project / name)
        assert every is not None
        assert every[0] == ("<every installed distribution>", "")
        assert ("unrelated-lib", "1.0") in every


def test_a_lock_file_stands_for_every_distribution(dist_project: Path, site: Site) -> None:
    lock = dist_project / "uv.lock"
    lock.write_text("alpha-lib==1.0\n")
    before = distribution_keys(dist_project, lock_file=Path("uv.lock"))
    assert changed_files(before, distribution_keys(dist_project)) == EVERY_DIST_TEST
    site.install("alpha-lib", "2.0", modules=("alpha",))
    assert distribution_keys(dist_project, lock_file=Path("uv.lock")) == before
    lock.write_text("alpha-lib==2.0\n")
    after = distribution_keys(dist_project, lock_file=Path("uv.lock"))
    assert changed_files(before, after) == EVERY_DIST_TEST
    fingerprinter = Fingerprinter(KeyInputs(root=dist_project, lock_file=Path("uv.lock")))
    assert fingerprinter.distributions(dist_project / "tests/test_alpha.py") is None


def test_the_distribution_index_is_kept_in_the_cache_file(
    dist_project: Path, site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_file = tmp_path / "analysis.json"
    first = Fingerprinter(KeyInputs(root=dist_project), cache_file=cache_file)
    expected = first.file_key(dist_project / "tests/test_alpha.py")
    first.save()
    calls: list[int] = []

    def counting(installed: Sequence[tuple[str, str]]) -> DistributionIndex:
        calls.append(1)
        return distribution_index(installed)

    monkeypatch.setattr(analysis, "distribution_index", counting)
    again = Fingerprinter(KeyInputs(root=dist_project), cache_file=cache_file)
    assert again.file_key(dist_project / "tests/test_alpha.py") == expected
    assert calls == []  # same installed distributions: read from the cache
    site.install("unrelated-lib", "2.0", modules=("unrelated",))
    third = Fingerprinter(KeyInputs(root=dist_project), cache_file=cache_file)
    assert third.file_key(dist_project / "tests/test_alpha.py") == expected
    assert calls == [1]  # the index was read again


def test_without_narrowing_every_distribution_counts_for_every_file(
    dist_project: Path, site: Site
) -> None:
    before = distribution_keys(dist_project, narrow_distributions=False)
    site.install("unrelated-lib", "2.0", modules=("unrelated",))
    after = distribution_keys(dist_project, narrow_distributions=False)
    assert changed_files(before, after) == EVERY_DIST_TEST


def test_the_distribution_index_agrees_with_importlib_metadata() -> None:
    """Read from the files of each ``.dist-info`` rather than through the e-mail parser:
    the same requirements, and every module importlib.metadata maps (Python 3.11's
    ``packages_distributions`` leaves out top-level extension modules: those are more)."""
    index = distribution_index(installed_distributions())
    for module, names in importlib.metadata.packages_distributions().items():
        assert {normalize_name(name) for name in names} <= set(index.modules[module]), module
    for distribution in importlib.metadata.distributions():
        name = normalize_name(distribution.metadata["Name"])
        expected = {
            normalize_name(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)[1])  # type: ignore[index]
            for requirement in distribution.requires or ()
            if "extra" not in requirement.partition(";")[2]
        }
        assert set(index.requires[name]) == expected, name


def test_a_distributions_name_and_version_are_those_its_metadata_gives(
    pytestconfig: pytest.Config,
) -> None:
    """Read from the ``.dist-info`` directory's name: of every installed distribution,
    and of each plugin as pytest lists them (pluggy's facade of the distribution)."""
    for distribution in importlib.metadata.distributions():
        expected = (normalize_name(distribution.metadata["Name"]), distribution.version)
        assert name_and_version(distribution) == expected
    plugins = pytestconfig.pluginmanager.list_plugin_distinfo()
    assert plugins
    for _, facade in plugins:
        assert name_and_version(facade) == (normalize_name(facade.project_name), facade.version)


def test_a_distribution_without_a_wheels_directory_name_is_read_from_its_metadata(
    tmp_path: Path,
) -> None:
    egg = tmp_path / "Old_Style.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: Old_Style\nVersion: 0.9\n")
    distribution = importlib.metadata.PathDistribution(egg)
    assert name_and_version(distribution) == ("old-style", "0.9")
