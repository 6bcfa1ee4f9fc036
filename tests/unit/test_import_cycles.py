"""No module of the app or of the local host imports itself back, even lazily or for type hints.

Every import counts: at the top, inside a function (imported on first use for cold start), and
under ``TYPE_CHECKING``; so does the package ``__init__`` that Python runs before any module of
its package. A loop among them means two modules each need the other to be read, which is a
layer in the wrong place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "devhost")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (REPO_ROOT / package).rglob("*.py")}


def imported_by(path: Path, known: set[str]) -> set[str]:
    """The app's modules that ``path`` imports, wherever in the file the import stands."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            # ``from shared.pipeline import callbacks`` imports the module callbacks, not a name.
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    # Importing ``a.b.c`` first runs ``a/__init__`` and ``a/b/__init__``.
    found |= {".".join(name.split(".")[:depth]) for name in set(found) for depth in range(1, name.count(".") + 1)}
    return {name for name in found if name in known and name != this and not this.startswith(name + ".")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_scan_sees_lazy_and_type_only_imports() -> None:
    known = set(modules())
    consume = imported_by(modules()["shared.pipeline.consume"], known)
    assert {"shared.pipeline.registry", "shared.pipeline.stages", "shared.storage.bus"} <= consume
    assert "shared.storage.tables" in consume  # imported inside a function
    stages = imported_by(modules()["shared.pipeline.stages"], known)
    assert {"shared.pipeline.deliver", "shared.pipeline.slack_flow"} <= stages


def test_the_scan_sees_the_package_init_run_before_a_module() -> None:
    known = set(modules())
    process = imported_by(modules()["shared.pipeline.process"], known)
    assert {"shared.erp.dynamics", "shared.erp.dynamics.events"} <= process


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    found = modules()
    known = set(found)
    graph = {name: imported_by(path, known) for name, path in found.items() if name.split(".")[0] == package}
    graph = {name: {target for target in targets if target in graph} for name, targets in graph.items()}
    assert cycles(graph) == []
