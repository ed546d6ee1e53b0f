"""The package tree is the architecture (docs/architecture.md, "Layers"): every module
imports, each layer imports only the layers below it, features of one layer do not
import each other, and no modules import each other in a circle.

Read from the source with `ast`, so an import inside a function counts as much as one at
the top of a module (only imports under ``if TYPE_CHECKING:`` are left out: they never
run).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: Lowest first. A module belongs to the first group one of whose prefixes it starts
#: with; it may import modules of a lower layer, and of its own group.
LAYERS: list[dict[str, tuple[str, ...]]] = [
    {"foundation": ("cachekit.errors", "cachekit.urls", "cachekit.files", "cachekit.collector")},
    {"stores": ("cachekit.stores",)},
    {"values": ("cachekit.values",)},
    {"ci": ("cachekit.ci",)},
    {"stats": ("cachekit.stats",), "skip": ("cachekit.skip",)},
    {"session": ("cachekit.session", "cachekit.budget")},
    {"facade": ("cachekit",)},  # the package's __init__: the curated public API
    {
        "cli": ("cachekit.cli", "cachekit.__main__"),
        "unittest": ("cachekit.unittest",),
        "hypothesis": ("cachekit.hypothesis",),
        "testing": ("cachekit.testing",),
        "pytest": ("cachekit_pytest",),
    },
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _group(module: str) -> tuple[int, str]:
    """(layer, group) of a module: the longest matching prefix decides."""
    best: tuple[int, int, str] | None = None
    for level, groups in enumerate(LAYERS):
        for name, prefixes in groups.items():
            for prefix in prefixes:
                matches = module == prefix or module.startswith(prefix + ".")
                if matches and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), level, name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1], best[2]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> set[str]:
    """The project modules ``module`` imports (``from a import b`` counts as ``a.b``
    where ``a.b`` is a module, else as ``a``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in MODULES}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module: str) -> None:
    if module.endswith("__main__"):
        pytest.skip("running it is the program: tests/test_cli.py runs it")
    optional = {"cachekit.hypothesis", "cachekit.testing.stateful"}  # need hypothesis
    if module in optional:
        pytest.importorskip("hypothesis")
    importlib.import_module(module)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module of the same or a higher layer, but for its own group."""
    wrong = []
    for module, imported in sorted(graph.items()):
        level, group = _group(module)
        for target in sorted(imported):
            target_level, target_group = _group(target)
            if target_group != group and target_level >= level:
                wrong.append(f"{module} ({group}) imports {target} ({target_group})")
    return wrong


def first_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports, by depth-first search for a back edge; None if none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if target == module or module.startswith(target + "."):
                continue  # importing a module imports its packages: not a circle
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = layer_violations(GRAPH)
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    cycle = first_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_cover_every_module() -> None:
    for module in MODULES:
        _group(module)  # raises for a module outside every layer


def test_the_checks_see_a_wrong_import() -> None:
    """Not vacuous: the graph is read from the code, and a store importing the value
    layer, a feature importing another, an adapter importing an adapter and a circle
    through a lazy import are all reported."""
    assert "cachekit.values.codec" in GRAPH["cachekit.values.cache"]
    planted = {
        "cachekit.stores.local": {"cachekit.values.cache"},
        "cachekit.stats.runs": {"cachekit.skip.records"},
        "cachekit.cli.app": {"cachekit_pytest.cachedir"},
        "cachekit.values.cache": {"cachekit.stores.base"},
    }
    assert len(layer_violations(planted)) == 3
    circle = {"cachekit_pytest.sync.agent": {"cachekit_pytest.sync.remote"}}
    circle["cachekit_pytest.sync.remote"] = {"cachekit_pytest.sync.agent"}
    assert first_cycle(circle) is not None
    assert first_cycle({"cachekit.values.cache": {"cachekit.values"}}) is None


def _feature_table() -> list[str]:
    """The paths named in docs/architecture.md's table "feature | where it lives"."""
    text = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("| feature | where it lives |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"`(cachekit(?:_pytest)?/[\w/.]*)`", table)


def test_the_feature_table_names_real_places() -> None:
    paths = _feature_table()
    assert paths
    missing = [path for path in paths if not (SRC / path).exists()]
    assert not missing, f"docs/architecture.md names places that do not exist: {missing}"


def test_every_package_is_in_the_feature_table() -> None:
    named = _feature_table()
    packages = sorted(
        str(path.parent.relative_to(SRC))
        for path in SRC.rglob("__init__.py")
        if path.parent.parent != SRC  # the two top-level packages themselves
    )
    absent = [package for package in packages if not any(p.startswith(package) for p in named)]
    assert not absent, f"packages missing from docs/architecture.md's table: {absent}"
