"""No import circle in the package, read from the source (no module is imported).

An edge is any import of a package module, inside functions and `if TYPE_CHECKING:` too (a
circle hidden in a function is still a circle), and, for `import a.b.c` from outside `a.b`,
one to each package above it, whose `__init__` runs first."""

import ast
import os
import sys

from conftest import ROOT

PACKAGE = "trainer"
# Circles allowed: none.
KNOWN: set = set()


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = \
                    os.path.join(folder, name)
    return found


def _imports(path: str, module: str, modules: dict[str, str]) -> set[str]:
    here = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                top = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{top}.{base}" if base else top
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            names += subs + ([base] if len(subs) < len(node.names) else [])
    edges = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if not name or name == module:
            continue
        edges.add(name)
        above = name.rpartition(".")[0]
        while above and above != PACKAGE:  # its packages' __init__, unless the importer is inside
            if not (module == above or module.startswith(above + ".")):
                edges.add(above)
            above = above.rpartition(".")[0]
    return edges


def import_circles() -> list[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    modules = _modules()
    graph = {m: _imports(p, m, modules) for m, p in modules.items()}
    index, low, stack, on, found = {}, {}, [], set(), []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on.discard(component[-1])
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_but_the_known_ones():
    circles = set(import_circles())
    assert circles <= KNOWN, f"new import circles: {sorted(circles - KNOWN)}"


def test_the_walk_finds_a_circle_hidden_in_a_function(tmp_path, monkeypatch):
    """The check itself: a circle made only by an import inside a function, and one through a
    package's `__init__`, are both found."""
    import test_import_circles as me

    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from trainer import b\n")
    (pkg / "b.py").write_text("import trainer.a\n")
    (pkg / "sub" / "__init__.py").write_text("from trainer.sub.cmd import main\n")
    (pkg / "sub" / "cmd.py").write_text("from trainer import c\n")
    (pkg / "sub" / "part.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("from trainer.sub.part import X\n")
    monkeypatch.setattr(me, "ROOT", str(tmp_path))
    assert sorted(import_circles()) == [("trainer.a", "trainer.b"),
                                        ("trainer.c", "trainer.sub", "trainer.sub.cmd")]
