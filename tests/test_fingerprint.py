"""Keys for skipping passed tests: exactly the test files whose inputs changed get new keys.

Each test builds a small project under ``tmp_path``, computes every test file's key with
a fresh `Fingerprinter`, changes one thing, and compares.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from cachekit.skip import analysis, fingerprint
from cachekit.skip.analysis import Signer
from cachekit.skip.fingerprint import (
    CACHE_FORMAT,
    Fingerprinter,
    KeyInputs,
    import_specs,
    installed_distributions,
    normalize_name,
)
from cachekit.skip.imports import EVERY_DISTRIBUTION, parse_source
from cachekit.skip.records import Secrets

PROJECT = {
    "conftest.py": "import pytest\n",
    "src/app/__init__.py": "VERSION = '1'\n",
    "src/app/core.py": "from .helpers import helper\n\ndef run():\n    return helper()\n",
    "src/app/helpers.py": "def helper():\n    return 1\n",
    "src/app/util.py": "def tool():\n    return 2\n",
    "src/app/sub/__init__.py": "",
    "src/app/sub/deep.py": "from ..util import tool\n\nX = tool()\n",
    "src/other/__init__.py": "",
    "src/other/thing.py": "THING = 3\n",
    "tests/conftest.py": "FIXTURES = 1\n",
    "tests/unit/conftest.py": "UNIT = 1\n",
    "tests/unit/test_core.py": "from app.core import run\n\ndef test_run():\n    assert run()\n",
    "tests/unit/test_deep.py": "from app.sub.deep import X\n\ndef test_x():\n    assert X\n",
    "tests/other/test_thing.py": "import other.thing\n\ndef test_thing():\n    pass\n",
    "tests/test_plain.py": "def test_plain():\n    pass\n",
    "data/a.json": "{}\n",
    "data/b.txt": "b\n",
    "README.md": "# readme\n",
    "scripts/tool.py": "import app.core\n",
}
TESTS = (
    "tests/unit/test_core.py",
    "tests/unit/test_deep.py",
    "tests/other/test_thing.py",
    "tests/test_plain.py",
)
ALL = frozenset(TESTS)
HOUR_AGO = time.time() - 3600


def write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def age(root: Path) -> None:
    """Date every file an hour back, out of the window where a cached analysis is not
    trusted (a file modified within the timestamp resolution of its last read)."""
    for path in root.rglob("*"):
        os.utime(path, (HOUR_AGO, HOUR_AGO), follow_symlinks=False)


def keys(root: Path, tests: Iterable[str] = TESTS, **inputs: Any) -> dict[str, str]:
    fingerprinter = Fingerprinter(KeyInputs(root=root, **inputs))
    return {name: fingerprinter.file_key(root / name) for name in tests}


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def labels(fingerprinter: Fingerprinter, root: Path, path: str) -> list[str]:
    real_root = Path(os.path.realpath(root))
    return [item.relative_to(real_root).as_posix() for item in fingerprinter.closure(root / path)]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write(tmp_path / "project", PROJECT)


# -- which keys change ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # behind a relative import (from .helpers import helper)
        ("src/app/helpers.py", {"tests/unit/test_core.py"}),
        # behind a parent-relative import (from ..util import tool)
        ("src/app/util.py", {"tests/unit/test_deep.py"}),
        # a package's __init__.py runs before any of its modules
        ("src/app/__init__.py", {"tests/unit/test_core.py", "tests/unit/test_deep.py"}),
        ("src/app/sub/__init__.py", {"tests/unit/test_deep.py"}),
        ("src/other/thing.py", {"tests/other/test_thing.py"}),
        ("tests/unit/test_core.py", {"tests/unit/test_core.py"}),
        # conftests: each covers the tests below it
        ("tests/unit/conftest.py", {"tests/unit/test_core.py", "tests/unit/test_deep.py"}),
        ("tests/conftest.py", set(ALL)),
        ("conftest.py", set(ALL)),
        # unrelated files, including one that imports project code
        ("README.md", set()),
        ("scripts/tool.py", set()),
        ("data/a.json", set()),  # no data glob declared
    ],
)
def test_a_change_to_a_file_changes_exactly_the_keys_that_depend_on_it(
    project: Path, name: str, expected: set[str]
) -> None:
    before = keys(project)
    path = project / name
    path.write_text(path.read_text() + "CHANGED = True\n")
    assert changed(before, keys(project)) == expected


def test_a_new_unrelated_file_changes_nothing(project: Path) -> None:
    before = keys(project)
    write(project, {"src/app/unused.py": "import app.core\n", "docs/x.md": "x"})
    assert changed(before, keys(project)) == set()


def test_a_new_module_that_shadows_an_import_changes_the_key(project: Path) -> None:
    """``from app.sub import deep`` style imports: a new submodule where there was none."""
    write(project, {"tests/test_names.py": "from app import helpers2\n"})
    tests = [*TESTS, "tests/test_names.py"]
    before = keys(project, tests)
    write(project, {"src/app/helpers2.py": "Y = 1\n"})
    assert changed(before, keys(project, tests)) == {"tests/test_names.py"}


def test_keys_are_stable(project: Path) -> None:
    assert keys(project) == keys(project)
    assert len(set(keys(project).values())) == len(TESTS)


def test_keys_do_not_depend_on_the_order_files_are_keyed(project: Path) -> None:
    forward = keys(project)
    backward = keys(project, reversed(TESTS))
    assert forward == backward


def test_keys_do_not_depend_on_where_the_project_is_checked_out(
    project: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    shutil.copytree(project, elsewhere)
    assert keys(project) == keys(elsewhere)


def test_moving_a_module_changes_the_key(project: Path) -> None:
    before = keys(project)
    (project / "src/other/thing.py").rename(project / "src/other/thing2.py")
    (project / "src/other/thing.py").write_text("from .thing2 import THING\n")
    assert changed(before, keys(project)) == {"tests/other/test_thing.py"}


# -- the environment --------------------------------------------------------------------


def test_a_data_file_matched_by_a_glob_changes_every_key(project: Path) -> None:
    before = keys(project, data_globs=("data/*.json",))
    (project / "data/b.txt").write_text("not matched\n")
    assert changed(before, keys(project, data_globs=("data/*.json",))) == set()
    (project / "data/a.json").write_text('{"changed": true}\n')
    assert changed(before, keys(project, data_globs=("data/*.json",))) == set(ALL)


def test_a_new_data_file_changes_every_key(project: Path) -> None:
    before = keys(project, data_globs=("data/**/*.json",))
    write(project, {"data/nested/new.json": "[]"})
    assert changed(before, keys(project, data_globs=("data/**/*.json",))) == set(ALL)


def test_a_named_environment_variable_changes_every_key(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CACHEKIT_TEST_NAMED", raising=False)
    monkeypatch.delenv("CACHEKIT_TEST_OTHER", raising=False)
    named = ("CACHEKIT_TEST_NAMED",)
    unset = keys(project, env_vars=named)
    monkeypatch.setenv("CACHEKIT_TEST_OTHER", "anything")  # not named: no effect
    assert changed(unset, keys(project, env_vars=named)) == set()
    monkeypatch.setenv("CACHEKIT_TEST_NAMED", "")
    empty = keys(project, env_vars=named)
    assert changed(unset, empty) == set(ALL)  # set and empty is not unset
    monkeypatch.setenv("CACHEKIT_TEST_NAMED", "1")
    assert changed(empty, keys(project, env_vars=named)) == set(ALL)
    monkeypatch.setenv("CACHEKIT_TEST_NAMED", "")
    assert keys(project, env_vars=named) == empty


def test_salt_and_tool_versions_change_every_key(project: Path) -> None:
    base = keys(project, tool_versions={"pytest": "9.2.0", "cachekit": "0.1.0"})
    salted = keys(project, tool_versions={"pytest": "9.2.0", "cachekit": "0.1.0"}, salt="x")
    assert changed(base, salted) == set(ALL)
    upgraded = keys(project, tool_versions={"pytest": "9.2.1", "cachekit": "0.1.0"})
    assert changed(base, upgraded) == set(ALL)
    reordered = keys(project, tool_versions={"cachekit": "0.1.0", "pytest": "9.2.0"})
    assert reordered == base


def test_a_missing_lock_file_falls_back_to_the_installed_distributions(project: Path) -> None:
    assert keys(project, lock_file=Path("missing.lock")) == keys(project)


def test_the_environment_covers_interpreter_platform_and_inputs(project: Path) -> None:
    fingerprinter = Fingerprinter(
        KeyInputs(root=project, env_vars=("B", "A"), data_globs=("data/*",), salt="s")
    )
    environment = fingerprinter.environment()
    assert environment["python"]["implementation"] == sys.implementation.name
    assert environment["python"]["version"] == list(sys.version_info)
    assert environment["platform"]["system"] == sys.platform
    assert list(environment["env"]) == ["A", "B"]
    assert [label for label, _digest in environment["data"]] == ["data/a.json", "data/b.txt"]
    assert environment["salt"] == "s"
    assert len(fingerprinter.environment_key()) == 64


def test_the_fast_distribution_scan_agrees_with_importlib_metadata() -> None:
    expected = {
        (normalize_name(distribution.metadata["Name"]), distribution.version)
        for distribution in importlib.metadata.distributions()
    }
    assert set(installed_distributions()) == expected


def test_the_distribution_scan_reads_odd_names_through_their_metadata(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "Some.Name-1.0.dist-info").mkdir(parents=True)
    (site / "weird.dist-info").mkdir()
    (site / "weird.dist-info" / "METADATA").write_text("Name: Weird_Thing\nVersion: 2.0\n")
    (site / "old.egg-info").write_text("Metadata-Version: 1.0\nName: old\nVersion: 0.1\n")
    assert installed_distributions([str(site)]) == [
        ("old", "0.1"),
        ("some-name", "1.0"),
        ("weird-thing", "2.0"),
    ]


# -- import analysis ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        b"from importlib.metadata import version\nversion('x')\n",
        b"import importlib.metadata\n",
        b"from importlib import metadata\nmetadata.entry_points(group='app')\n",
        b"import pkg_resources\n",
        b"import zoneinfo\n",
        b"import importlib\nimportlib.import_module(f'app.backends.{NAME}')\n",
    ],
)
def test_reading_the_installed_distributions_counts_every_one(source: bytes) -> None:
    """Entry points, metadata, resources and imports by a computed name reach
    distributions no import statement names."""
    assert EVERY_DISTRIBUTION in import_specs(source)


def test_plain_imports_count_no_unnamed_distribution() -> None:
    source = b"import importlib\nimport json\nimportlib.import_module('app.backends')\n"
    assert EVERY_DISTRIBUTION not in import_specs(source)


def test_import_specs_cover_every_static_form() -> None:
    source = b"""
from __future__ import annotations
import a.b.c
import d as e
from f.g import h, i
from . import j
from .k import l
from ..m import n
from ... import o
from .p import *
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from q import r
def later():
    import s
    class Inner:
        try:
            import t
        except ImportError:
            import u
        finally:
            import v
import importlib
importlib.import_module("w.x")
__import__("y")
importlib.import_module(name)  # not a literal: any installed distribution
"""
    assert import_specs(source) == tuple(
        sorted(
            [
                EVERY_DISTRIBUTION,
                "__future__.annotations",
                "a.b.c",
                "d",
                "f.g.h",
                "f.g.i",
                ".j",
                ".k.l",
                "..m.n",
                "...o",
                ".p",
                "typing.TYPE_CHECKING",
                "q.r",
                "s",
                "t",
                "u",
                "v",
                "importlib",
                "w.x",
                "y",
            ]
        )
    )


def test_import_specs_find_imports_in_match_cases_and_handlers() -> None:
    source = b"match x:\n    case 1:\n        import a\ntry:\n    pass\nexcept E:\n    import b\n"
    assert import_specs(source) == ("a", "b")


def test_a_file_that_does_not_parse_imports_nothing() -> None:
    assert import_specs(b"import a\ndef broken(:\n") == ()
    assert import_specs(b"import a\x00\n") == ()


def test_import_forms_resolve_to_their_files(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "",
            "pkg/a/b.py": "",
            "pkg/a/c/__init__.py": "",
            "pkg/names/__init__.py": "NAME = 1\n",
            "pkg/unused.py": "",
            "ns/portion/mod.py": "",  # namespace packages: no __init__.py
            "dyn/__init__.py": "",
            "dyn/loaded.py": "",
            "dyn/imported.py": "",
            "lazy.py": "",
            "typed.py": "",
            "test_forms.py": (
                "import pkg.a.b\n"
                "from pkg.a import c\n"
                "from pkg.names import NAME\n"
                "import ns.portion.mod\n"
                "import os, json  # not project files\n"
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    import typed\n"
                "def f():\n"
                "    import lazy\n"
                "    importlib.import_module('dyn.loaded')\n"
                "    __import__('dyn.imported')\n"
            ),
        },
    )
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    assert labels(fingerprinter, root, "test_forms.py") == [
        "dyn/__init__.py",
        "dyn/imported.py",
        "dyn/loaded.py",
        "lazy.py",
        "ns/portion/mod.py",
        "pkg/__init__.py",
        "pkg/a/__init__.py",
        "pkg/a/b.py",
        "pkg/a/c/__init__.py",
        "pkg/names/__init__.py",
        "test_forms.py",
        "typed.py",
    ]


def test_relative_imports_resolve_from_the_files_package(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "src/top/__init__.py": "",
            "src/top/shared.py": "",
            "src/top/pkg/__init__.py": "from . import first\n",
            "src/top/pkg/first.py": "from .second import y\n",
            "src/top/pkg/second.py": "from ..shared import z\nfrom .. import other\n",
            "src/top/other.py": "",
            "src/top/unrelated.py": "",
            "tests/test_rel.py": "from top.pkg import first\n",
        },
    )
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    assert labels(fingerprinter, root, "tests/test_rel.py") == [
        "src/top/__init__.py",
        "src/top/other.py",
        "src/top/pkg/__init__.py",
        "src/top/pkg/first.py",
        "src/top/pkg/second.py",
        "src/top/shared.py",
        "tests/test_rel.py",
    ]


def test_a_module_wins_over_a_namespace_directory_of_the_same_name(tmp_path: Path) -> None:
    """As in Python: a regular package beats ``x.py``, which beats a namespace directory."""
    root = write(
        tmp_path,
        {
            "mod.py": "",
            "mod/inner.py": "",
            "pkg.py": "",
            "pkg/__init__.py": "",
            "test_x.py": "import mod\nimport pkg\n",
        },
    )
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    assert labels(fingerprinter, root, "test_x.py") == ["mod.py", "pkg/__init__.py", "test_x.py"]


def test_pytest_prepend_rule_makes_the_test_files_basedir_a_root(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "tests/helpers.py": "",
            "tests/test_a.py": "import helpers\n",
            "pkgtests/__init__.py": "",
            "pkgtests/sub/__init__.py": "",
            "pkgtests/sub/test_b.py": "import helpers\nfrom pkgtests import util\n",
            "pkgtests/util.py": "",
        },
    )
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    assert labels(fingerprinter, root, "tests/test_a.py") == ["tests/helpers.py", "tests/test_a.py"]
    # In a package the basedir is above its top package: the root here, where no
    # helpers.py exists; the test's own packages' __init__.py files count.
    assert labels(fingerprinter, root, "pkgtests/sub/test_b.py") == [
        "pkgtests/__init__.py",
        "pkgtests/sub/__init__.py",
        "pkgtests/sub/test_b.py",
        "pkgtests/util.py",
    ]


def test_a_basedir_root_reaches_modules_imported_from_anywhere_in_the_closure(
    tmp_path: Path,
) -> None:
    """pytest puts ``tests/`` on sys.path for ``tests/test_a.py``, so a project module's
    ``import helpers`` finds ``tests/helpers.py`` in that run, and so on transitively."""
    root = write(
        tmp_path,
        {
            "src/lib/__init__.py": "",
            "src/lib/uses_helpers.py": "def f():\n    import helpers\n",
            "tests/helpers.py": "import more_helpers\n",
            "tests/more_helpers.py": "from lib import other\n",
            "src/lib/other.py": "",
            "tests/test_a.py": "import lib.uses_helpers\n",
            "elsewhere/test_b.py": "import lib.uses_helpers\n",
        },
    )
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    library = ["src/lib/__init__.py", "src/lib/other.py", "src/lib/uses_helpers.py"]
    assert labels(fingerprinter, root, "tests/test_a.py") == sorted(
        [*library, "tests/helpers.py", "tests/more_helpers.py", "tests/test_a.py"]
    )
    assert labels(fingerprinter, root, "elsewhere/test_b.py") == [
        "elsewhere/test_b.py",
        "src/lib/__init__.py",
        "src/lib/uses_helpers.py",
    ]
    assert labels(fingerprinter, root, "src/lib/uses_helpers.py") == library[::2]
    before = keys(root, ["tests/test_a.py", "elsewhere/test_b.py"])
    (root / "tests/more_helpers.py").write_text("from lib import other\nX = 1\n")
    after = keys(root, ["tests/test_a.py", "elsewhere/test_b.py"])
    assert changed(before, after) == {"tests/test_a.py"}


def test_search_paths_and_sys_path_entries_under_the_root_are_import_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write(
        tmp_path / "project",
        {
            "lib/onpath.py": "",
            "vendor/extra.py": "",
            "test_x.py": "import onpath\nimport extra\nimport outside\n",
        },
    )
    outside = write(tmp_path / "shared", {"outside.py": "V = 1\n"})
    monkeypatch.setattr(sys, "path", [*sys.path, str(root / "lib")])
    plain = Fingerprinter(KeyInputs(root=root))
    assert labels(plain, root, "test_x.py") == ["lib/onpath.py", "test_x.py"]
    searched = Fingerprinter(KeyInputs(root=root, search_paths=(Path("vendor"), outside)))
    expected = [root / "lib/onpath.py", root / "test_x.py", root / "vendor/extra.py"]
    assert searched.closure(root / "test_x.py") == sorted(
        Path(os.path.realpath(path)) for path in [*expected, outside / "outside.py"]
    )
    assert [label for label, _digest in searched.members(root / "test_x.py")] == [
        "<search_paths[1]>/outside.py",
        "lib/onpath.py",
        "test_x.py",
        "vendor/extra.py",
    ]


def test_a_virtualenv_inside_the_project_is_not_project_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write(
        tmp_path,
        {
            ".venv/lib/python3/site-packages/thirdparty/__init__.py": "",
            "venvlike/site-packages/other/__init__.py": "",
            "test_x.py": "import thirdparty\nimport other\n",
        },
    )
    site = root / ".venv/lib/python3/site-packages"
    monkeypatch.setattr(sys, "prefix", str(root / ".venv"))
    monkeypatch.setattr(sys, "path", [*sys.path, str(site), str(root / "venvlike/site-packages")])
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    assert labels(fingerprinter, root, "test_x.py") == ["test_x.py"]
    assert not any(str(site) in root_ for root_ in fingerprinter.roots)


# -- cycles and broken files ---------------------------------------------------------------


def test_import_cycles_share_a_closure(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "cyc/__init__.py": "",
            "cyc/a.py": "from . import b\n",
            "cyc/b.py": "from . import c\n",
            "cyc/c.py": "from . import a\nfrom . import leaf\nimport cyc.a\n",
            "cyc/leaf.py": "",
            "selfish.py": "import selfish\n",
            "tests/test_a.py": "import cyc.a\n",
            "tests/test_c.py": "from cyc import c\n",
            "tests/test_leaf.py": "from cyc import leaf\n",
            "tests/test_self.py": "import selfish\n",
        },
    )
    tests = ["tests/test_a.py", "tests/test_c.py", "tests/test_leaf.py", "tests/test_self.py"]
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    cycle = ["cyc/__init__.py", "cyc/a.py", "cyc/b.py", "cyc/c.py", "cyc/leaf.py"]
    assert labels(fingerprinter, root, "cyc/b.py") == cycle
    assert labels(fingerprinter, root, "tests/test_a.py") == [*cycle, "tests/test_a.py"]
    assert labels(fingerprinter, root, "tests/test_c.py") == [*cycle, "tests/test_c.py"]
    assert labels(fingerprinter, root, "selfish.py") == ["selfish.py"]

    before = keys(root, tests)
    (root / "cyc/b.py").write_text("from . import c\nB = 1\n")
    assert changed(before, keys(root, tests)) == {"tests/test_a.py", "tests/test_c.py"}
    before = keys(root, tests)
    (root / "cyc/leaf.py").write_text("L = 1\n")
    assert changed(before, keys(root, tests)) == set(tests) - {"tests/test_self.py"}


def test_a_long_import_chain_does_not_hit_the_recursion_limit(tmp_path: Path) -> None:
    count = sys.getrecursionlimit() + 500
    files = {f"m{index}.py": f"import m{index + 1}\n" for index in range(count)}
    files[f"m{count}.py"] = "import m0\n"  # and one cycle through all of them
    files["test_chain.py"] = "import m0\n"
    root = write(tmp_path, files)
    fingerprinter = Fingerprinter(KeyInputs(root=root))
    assert len(fingerprinter.closure(root / "test_chain.py")) == count + 2
    assert len(fingerprinter.closure(root / f"m{count // 2}.py")) == count + 1


def test_a_syntax_error_counts_by_content_and_imports_nothing(project: Path) -> None:
    broken = "from .util import tool\ndef broken(:\n"
    write(project, {"src/app/helpers.py": broken})
    fingerprinter = Fingerprinter(KeyInputs(root=project))
    closure = labels(fingerprinter, project, "tests/unit/test_core.py")
    assert "src/app/helpers.py" in closure
    assert "src/app/util.py" not in closure  # its imports are unknown

    before = keys(project)
    write(project, {"src/app/helpers.py": broken + "# still broken\n"})
    assert changed(before, keys(project)) == {"tests/unit/test_core.py"}
    write(project, {"tests/test_plain.py": "def test_plain(:\n"})
    assert "tests/test_plain.py" in changed(before, keys(project))


def test_an_unreadable_module_still_gets_a_key(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = keys(project)
    original = Fingerprinter.read

    def read(self: Fingerprinter, path: str) -> bytes:
        if path.endswith("helpers.py"):
            raise PermissionError(13, "Permission denied")
        return original(self, path)

    monkeypatch.setattr(Fingerprinter, "read", read)
    assert changed(before, keys(project)) == {"tests/unit/test_core.py"}


# -- what counts as a project file ---------------------------------------------------------


def test_symlinks_out_of_the_root_are_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside", {"ext.py": "E = 1\n", "extdir/mod.py": "", "d.json": ""})
    root = write(
        tmp_path / "project",
        {"pkg/__init__.py": "", "test_x.py": "import pkg.ext\nimport linked.mod\n"},
    )
    (root / "pkg/ext.py").symlink_to(outside / "ext.py")
    (root / "linked").symlink_to(outside / "extdir")
    (root / "data").mkdir()
    (root / "data/d.json").symlink_to(outside / "d.json")
    (root / "test_out.py").symlink_to(outside / "ext.py")
    (root / "conftest.py").symlink_to(outside / "ext.py")
    fingerprinter = Fingerprinter(KeyInputs(root=root, data_globs=("data/*",)))
    assert labels(fingerprinter, root, "test_x.py") == ["pkg/__init__.py", "test_x.py"]
    assert fingerprinter.members(root / "test_x.py")[0][0] == "pkg/__init__.py"  # no conftest
    assert fingerprinter.environment()["data"] == []
    with pytest.raises(ValueError, match="not a project file"):
        fingerprinter.file_key(root / "test_out.py")
    with pytest.raises(ValueError, match="not a project file"):
        fingerprinter.file_key(outside / "ext.py")

    before = keys(root, ["test_x.py"], data_globs=("data/*",))
    (outside / "ext.py").write_text("E = 2\n")
    (outside / "extdir/mod.py").write_text("changed = True\n")
    (outside / "d.json").write_text("{}")
    assert keys(root, ["test_x.py"], data_globs=("data/*",)) == before


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    root = write(tmp_path, {"real/mod.py": "M = 1\n", "test_x.py": "import alias\n"})
    (root / "alias.py").symlink_to(root / "real/mod.py")
    before = keys(root, ["test_x.py"])
    (root / "real/mod.py").write_text("M = 2\n")
    assert changed(before, keys(root, ["test_x.py"])) == {"test_x.py"}


# -- the analysis cache --------------------------------------------------------------------


class CountingFingerprinter(Fingerprinter):
    """Counts the files it reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[str] = []
        self.keys: dict[str, str] = {}

    def read(self, path: str) -> bytes:
        self.reads.append(os.path.relpath(path, os.path.realpath(self.inputs.root)))
        return super().read(path)


def run(
    root: Path, cache_file: Path | None, signer: Signer | None = None, **inputs: Any
) -> CountingFingerprinter:
    fingerprinter = CountingFingerprinter(
        KeyInputs(root=root, **inputs), cache_file=cache_file, cache_signer=signer
    )
    fingerprinter.keys = {name: fingerprinter.file_key(root / name) for name in TESTS}
    fingerprinter.save()
    return fingerprinter


SIGNER = Secrets.derive(b"the signing key of the tests here", "").sign_analysis
OTHER_SIGNER = Secrets.derive(b"another signing key, not this one", "").sign_analysis


def test_the_cache_file_spares_reading_unchanged_files(project: Path, tmp_path: Path) -> None:
    age(project)
    cache_file = tmp_path / "cache" / "fingerprint.json"
    first = run(project, cache_file, data_globs=("data/*.json",))
    assert len(first.reads) == 16  # every module, test, conftest and data file, once
    assert json.loads(cache_file.read_text())["format"] == CACHE_FORMAT

    second = run(project, cache_file, data_globs=("data/*.json",))
    assert second.reads == []
    assert second.keys == first.keys

    (project / "src/app/helpers.py").write_text("def helper():\n    return 2\n")
    third = run(project, cache_file, data_globs=("data/*.json",))
    assert third.reads == ["src/app/helpers.py"]
    assert changed(first.keys, third.keys) == {"tests/unit/test_core.py"}


@pytest.mark.parametrize("signed", [False, True])
def test_files_whose_stat_changed_but_not_their_content_are_not_parsed_again(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signed: bool
) -> None:
    """A fresh checkout (or a cache directory restored in CI) changes every file's stat:
    each is read and hashed again, but one whose content was analysed before is not
    parsed again; an edited one is. Signed or not."""
    age(project)
    cache_file = tmp_path / "fingerprint.json"
    signer = SIGNER if signed else None
    first = run(project, cache_file, signer)
    for written in (cache_file, tmp_path / "fingerprint.functions.json"):
        assert written.read_bytes().startswith(analysis.SIGNED_PREFIX) is signed
    parsed: list[bytes] = []

    def counting_parse(data: bytes) -> Any:
        parsed.append(data)
        return parse_source(data)

    monkeypatch.setattr(analysis, "parse_source", counting_parse)
    for path in project.rglob("*"):
        os.utime(path, (HOUR_AGO - 60, HOUR_AGO - 60), follow_symlinks=False)
    second = run(project, cache_file, signer)
    assert len(second.reads) == len(first.reads)
    assert parsed == []
    assert second.keys == first.keys

    (project / "src/app/helpers.py").write_text("def helper():\n    return 2\n")
    third = run(project, cache_file, signer)
    assert parsed == [b"def helper():\n    return 2\n"]
    assert changed(first.keys, third.keys) == {"tests/unit/test_core.py"}


def test_recently_modified_files_are_not_trusted_from_the_cache_file(
    project: Path, tmp_path: Path
) -> None:
    """Their timestamps could miss a second change within the file system's resolution."""
    age(project)
    (project / "src/app/helpers.py").write_text("def helper():\n    return 2\n")
    cache_file = tmp_path / "fingerprint.json"
    run(project, cache_file)
    assert run(project, cache_file).reads == ["src/app/helpers.py"]


def test_a_stale_entry_is_read_again(project: Path, tmp_path: Path) -> None:
    age(project)
    cache_file = tmp_path / "fingerprint.json"
    first = run(project, cache_file)
    document = json.loads(cache_file.read_text())
    entry = document["files"][os.path.realpath(project / "src/other/thing.py")]
    entry["digest"] = "0" * 64
    entry["mtime_ns"] += 1  # the stat no longer matches: the file is read again
    cache_file.write_text(json.dumps(document))
    second = run(project, cache_file)
    assert second.reads == ["src/other/thing.py"]
    assert second.keys == first.keys


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff not json",
        b'{"format": "cachekit.skip.fingerprint", "version": 1',  # torn
        b"[1, 2, 3]",
        b'{"format": "someone.else", "version": 1, "files": {}}',
        b'{"format": "cachekit.skip.fingerprint", "version": 99, "parser": "x", "files": {}}',
        json.dumps(
            {
                "format": CACHE_FORMAT,
                "version": fingerprint.CACHE_VERSION,
                "parser": "otherpython-2.7",  # what parses differs between versions
                "files": {},
            }
        ).encode(),
        json.dumps(
            {
                "format": CACHE_FORMAT,
                "version": fingerprint.CACHE_VERSION,
                "parser": fingerprint.PARSER,
                "files": {"/x.py": {"mtime_ns": "soon", "size": [], "digest": 3}},
            }
        ).encode(),
    ],
)
def test_a_corrupt_or_foreign_cache_file_is_ignored(
    project: Path, tmp_path: Path, content: bytes
) -> None:
    age(project)
    expected = keys(project)
    cache_file = tmp_path / "fingerprint.json"
    cache_file.write_bytes(content)
    fingerprinter = run(project, cache_file)
    assert fingerprinter.keys == expected
    assert len(fingerprinter.reads) == 15
    assert run(project, cache_file).reads == []  # and it was replaced by a good one


def test_save_is_atomic_and_skipped_when_nothing_was_read(project: Path, tmp_path: Path) -> None:
    age(project)
    cache_file = tmp_path / "fingerprint.json"
    run(project, cache_file)
    written = cache_file.stat()
    run(project, cache_file)  # everything from the cache: nothing to write
    assert cache_file.stat().st_mtime_ns == written.st_mtime_ns
    assert cache_file.stat().st_ino == written.st_ino
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "fingerprint.functions.json",
        "fingerprint.json",
        "project",
    ]
    Fingerprinter(KeyInputs(root=project)).save()  # no cache file: nothing happens


def test_entries_of_deleted_files_are_dropped(project: Path, tmp_path: Path) -> None:
    age(project)
    cache_file = tmp_path / "fingerprint.json"
    run(project, cache_file)
    (project / "src/other/thing.py").unlink()
    (project / "src/app/helpers.py").write_text("def helper():\n    return 2\n")
    run(project, cache_file)
    files = json.loads(cache_file.read_text())["files"]
    assert os.path.realpath(project / "src/other/thing.py") not in files
    assert os.path.realpath(project / "src/other/__init__.py") in files


def test_the_cache_file_is_never_pickled(project: Path, tmp_path: Path) -> None:
    age(project)
    cache_file = tmp_path / "fingerprint.json"
    run(project, cache_file)
    entry = next(iter(json.loads(cache_file.read_text())["files"].values()))
    assert set(entry) == {
        "mtime_ns", "size", "ino", "digest", "imports", "code", "skeleton", "docstrings",
        "shared_docstrings",
    }  # fmt: skip
    indexes = json.loads((tmp_path / "fingerprint.functions.json").read_text())["indexes"]
    assert set(next(iter(indexes.values()))) == {
        "skeleton", "bodies", "starts", "spans", "docstrings", "shared_docstrings",
        "bindings", "names", "exported",
    }  # fmt: skip


def forge_stale_entry(cache_file: Path, root: Path, name: str) -> None:
    """What someone who can write the cache directory but holds no key might do: point a
    module's entry (its old analysis) at the module as it is now, by its stat, so that
    an edit seems not to have happened."""
    data = cache_file.read_bytes()
    if data.startswith(analysis.SIGNED_PREFIX):
        data = data.partition(b"\n")[2]
    document = json.loads(data)
    status = os.stat(root / name)
    entry = document["files"][os.path.realpath(root / name)]
    entry.update(mtime_ns=status.st_mtime_ns, size=status.st_size, ino=status.st_ino)
    cache_file.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("written_by", "read_by"),
    [(None, SIGNER), (OTHER_SIGNER, SIGNER)],
    ids=["unsigned", "another key"],
)
def test_a_cache_file_not_signed_with_the_key_is_not_used(
    project: Path, tmp_path: Path, written_by: Signer | None, read_by: Signer
) -> None:
    age(project)
    cache_file = tmp_path / "fingerprint.json"
    first = run(project, cache_file, written_by)
    second = run(project, cache_file, read_by)
    assert sorted(second.reads) == sorted(first.reads)  # every file read and parsed again
    assert second.keys == first.keys
    assert run(project, cache_file, read_by).reads == []  # and replaced by a signed one


def test_a_forged_analysis_cannot_hide_an_edit(project: Path, tmp_path: Path) -> None:
    """Unsigned, the cache directory is trusted, as it always was; signed, a planted
    stale entry (or any edit that keeps the old signature) is ignored and the edited
    module changes its tests' keys."""
    age(project)
    for signer in (None, SIGNER):
        cache_file = tmp_path / f"cache-{signer is None}" / "fingerprint.json"
        before = run(project, cache_file, signer).keys
        helpers = project / "src/app/helpers.py"
        original = helpers.read_text()
        helpers.write_text("def helper():\n    return 7\n")
        signature = cache_file.read_bytes().partition(b"\n")[0]
        forge_stale_entry(cache_file, project, "src/app/helpers.py")
        if signer is not None:  # the old signature kept in front of the forged JSON
            cache_file.write_bytes(signature + b"\n" + cache_file.read_bytes())
        after = run(project, cache_file, signer).keys
        expected = set() if signer is None else {"tests/unit/test_core.py"}
        assert changed(before, after) == expected
        helpers.write_text(original)
        age(project)


def test_members_explain_a_key(project: Path) -> None:
    fingerprinter = Fingerprinter(KeyInputs(root=project))
    members = fingerprinter.members(project / "tests/unit/test_core.py")
    assert [label for label, _digest in members] == [
        "conftest.py",
        "src/app/__init__.py",
        "src/app/core.py",
        "src/app/helpers.py",
        "tests/conftest.py",
        "tests/unit/conftest.py",
        "tests/unit/test_core.py",
    ]
    # Python files by their code (comments, formatting and docstrings left out, but the
    # test file's own docstrings but its test functions'), conftests by their bytes.
    for label, digest in members:
        if label.endswith("conftest.py"):
            assert re.fullmatch("bytes:[0-9a-f]{64}", digest)
        elif label == "tests/unit/test_core.py":
            assert re.fullmatch("code:[0-9a-f]{64}[+]shared-docstrings:[0-9a-f]{64}", digest)
        else:
            assert re.fullmatch("code:[0-9a-f]{64}", digest)
