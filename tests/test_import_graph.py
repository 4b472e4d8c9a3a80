"""The package's import graph: no cycles, and a transport-free runtime.

Every import counts, also those under ``TYPE_CHECKING`` and those inside functions:
a cycle hidden in a function is still a cycle a reader has to hold in their head.
An import of ``aios_grpc.a.b`` is an edge to the module ``aios_grpc.a.b`` only (not to
the packages above it, which Python also runs but which a reader does not follow).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aios_grpc"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of the package that ``path`` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # ``from pkg import mod`` imports the module ``pkg.mod`` when there is one.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _is_package_init(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def test_the_graph_sees_imports_inside_functions_and_type_checking_blocks(tmp_path):
    # The reader itself must see the imports that hide: build a two-module cycle in a
    # scratch package and check it is found.
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.b import B\n")
    (pkg / "b.py").write_text("def f():\n    from p import a\n    return a\n")
    known = {"p", "p.a", "p.b"}
    graph = {
        "p": set(),
        "p.a": _imports(pkg / "a.py", "p.a", known),
        "p.b": _imports(pkg / "b.py", "p.b", known),
    }
    assert graph["p.a"] == {"p.b"}
    assert "p.a" in graph["p.b"]
    assert _cycles(graph) == [["p.a", "p.b"]]


def test_no_import_cycles_among_the_package_s_modules():
    graph = _graph()
    modules = _modules()
    # A package's __init__ re-exporting its own modules is not a cycle a reader follows
    # (the module does not depend on the package's face), so edges from a module to the
    # __init__ of a package that contains it are left out.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not (_is_package_init(t, modules) and name.startswith(t + "."))}
    assert _cycles(graph) == []


def test_the_runtime_imports_neither_grpc_nor_redis():
    offenders = []
    for path in sorted((PACKAGE / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for n in names:
                top = n.split(".")[0]
                if top in {"grpc", "redis"} or n.startswith(("aios_grpc.redis", "aios_grpc.service")):
                    offenders.append(f"{path.name}: {n}")
    assert offenders == []


def test_no_module_of_the_package_is_over_600_lines():
    # The structure issue's rule: a module that grows past this holds more than one thing.
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600
    }
    assert long == {}
