"""The import graph of `trainer/`, read from the source alone (nothing is imported), and its
circles: a test of the module map that needs no tool beyond the standard library.

Every import counts, wherever it is written: at module level, under `if TYPE_CHECKING:` and
inside a function (each edge says which), since each ties the two modules together.
"""

from __future__ import annotations

import ast
import os

from conftest import ROOT


def modules(root: str = ROOT) -> dict[str, str]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for folder, _, files in os.walk(os.path.join(root, "trainer")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def edges(root: str = ROOT) -> dict[str, dict[str, str]]:
    """module -> {module it imports: `top`, `type-checking` or `in-function`}."""
    mods = modules(root)

    def resolve(name: str) -> str:
        while name and name not in mods:  # `from trainer.config import Config` -> trainer.config
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, dict[str, str]] = {m: {} for m in mods}
    for module, path in mods.items():
        def visit(node: ast.AST, kind: str) -> None:
            for child in ast.iter_child_nodes(node):
                where = kind
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    where = "in-function"
                elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    where = "type-checking"
                names: list[str] = []
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                    names = [f"{child.module}.{a.name}" for a in child.names]
                for name in names:
                    target = resolve(name) if name.startswith("trainer.") else ""
                    if target and target != module:
                        graph[module].setdefault(target, where)
                visit(child, where)

        with open(path, encoding="utf-8") as f:
            visit(ast.parse(f.read()), "top")
    return graph


def circles(root: str = ROOT) -> list[list[str]]:
    """The strongly connected components of two or more modules (Tarjan's algorithm)."""
    graph = edges(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return found
