"""The package's shape: imports run downward only (no circle, no module importing a higher layer), and every module
has tests that name it (a mirror ``tests/<package>/test_<module>.py`` or a test that imports it). The layers are
listed in docs/layout.md, lowest first; this test and that page must agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "personamine"

# Lowest first. A module may import its own package and the packages of lower layers, nothing else.
LAYERS = [
    {"errors", "roles", "verbosity", "version"},
    {"cache", "atomic"},
    {"config"},
    {"corpora"},
    {"corpus"},
    {"model"},
    {"saes"},
    {"merge"},
    {"files"},
    {"shards"},
    {"cluster", "discovery", "steering", "autointerp"},
    {"report", "export"},
    {"serve"},
    {"jobs"},
    {"__init__", "__main__"},
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The personamine modules ``path`` imports at run time (``TYPE_CHECKING`` blocks are for the type checker)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(branch.test) for stmt in branch.body for node in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("personamine"):
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.startswith("personamine")]
        else:
            continue
        for target in targets:
            while target not in modules:
                target = target.rpartition(".")[0]
            found.add(target)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


GRAPH = {name: imports(path, module_names()) - {name} for name, path in module_names().items()}


def test_every_package_has_a_layer():
    assert sorted({package_of(m) for m in GRAPH} - set().union(*LAYERS)) == []


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    wrong = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                   if package_of(t) != package_of(m) and layer_of(package_of(t)) >= layer_of(package_of(m)))
    assert wrong == []


def test_the_import_graph_has_no_circle():
    seen: dict[str, int] = {}  # 1: on the current path, 2: finished
    circles = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(GRAPH[module]):
            if seen.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module, [module])
    assert circles == []


def test_the_layers_here_are_the_layers_the_docs_list():
    text = (REPO / "docs" / "layout.md").read_text()
    listed = re.search(r"<!-- layers:start -->(.*?)<!-- layers:end -->", text, re.S).group(1)
    rows = [re.findall(r"`([\w_]+)`", line) for line in listed.strip().splitlines()[2:]]
    assert [set(row) for row in rows] == LAYERS[::-1]


MODULES = sorted(m for m, path in module_names().items() if path.name != "__init__.py")


@pytest.mark.parametrize("module", MODULES)
def test_every_module_has_tests_that_name_it(module):
    parts = module.split(".")[1:]
    mirror = REPO / "tests" / Path(*parts[:-1]) / f"test_{parts[-1]}.py"
    if mirror.is_file():
        return
    tests = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    parent, _, name = module.rpartition(".")
    imported = (rf"^\s*(from {re.escape(module)} import|import {re.escape(module)}\b"
                rf"|from {re.escape(parent)} import .*\b{name}\b)")
    assert re.search(imported, tests, re.M), f"no {mirror.relative_to(REPO)} and no test imports {module}"
