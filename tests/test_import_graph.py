"""The import graph of ``src/specbound``, read from the source (AST, nothing imported): no cycle
between modules, and no library module imports the CLI (design.md: imports point down the line).

Every ``import`` and ``from ... import`` counts, at module level or inside a function, relative
ones resolved. Left out: imports under ``if TYPE_CHECKING:`` (never executed) and imports of
names outside the package. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module of the package, else to ``pkg``. Importing ``a.b`` also runs ``a/__init__.py``; those
implicit edges to parent packages are not added (they would make every package that re-exports
its submodules a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "specbound"
CLI = "specbound.cli"


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the package."""
    mods: dict[str, Path] = {}
    for f in sorted((src / package).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = f
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, except the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """Module → {imported module of the package: line of the first such import}."""
    mods = module_files(src, package)
    graph: dict[str, dict[str, int]] = {}
    for mod, path in mods.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(mod, path.name == "__init__.py", node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if t in mods and t != mod:
                    edges.setdefault(t, node.lineno)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(out)


def _describe(graph: dict[str, dict[str, int]], comp: list[str]) -> str:
    members = set(comp)
    edges = [f"{a} -> {b} (line {line})" for a in comp for b, line in sorted(graph[a].items()) if b in members]
    return "cycle: " + "; ".join(edges)


def _in_cli(module: str) -> bool:
    return module == CLI or module.startswith(CLI + ".")


GRAPH = import_graph()


def test_the_graph_is_read():
    # a sanity check of the reader: known edges, function-level and relative ones included
    assert "specbound.analysis" in GRAPH and "specbound.cli.application" in GRAPH
    assert "specbound.cli.analyze" in GRAPH["specbound.cli.application"]
    assert "specbound.analysis" in GRAPH["specbound.cli.analyze"]  # imported inside the command


def test_no_import_cycle():
    found = cycles(GRAPH)
    assert not found, "\n".join(_describe(GRAPH, c) for c in found)


def test_the_library_does_not_import_the_cli():
    wrong = [f"{m} -> {t} (line {line})" for m, edges in sorted(GRAPH.items()) if not _in_cli(m)
             for t, line in sorted(edges.items()) if _in_cli(t)]
    assert not wrong, "\n".join(wrong)


# ------------------------------------------------------------------------ the reader on fixtures


@pytest.fixture
def pkg(tmp_path):
    def make(files: dict[str, str]) -> dict[str, dict[str, int]]:
        for name, text in files.items():
            f = tmp_path / "p" / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
        return import_graph(tmp_path, "p")

    return make


def test_reader_resolves_relative_function_level_and_submodule_imports(pkg):
    g = pkg({
        "__init__.py": "",
        "a.py": "from . import b\nfrom .sub import c\n",
        "b.py": "def f():\n    import p.sub.c\n    from p.sub import helper\n",
        "sub/__init__.py": "from .c import helper\n",
        "sub/c.py": "from ..a import x\nimport os\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p import a\nelse:\n    from p import b\n",
    })
    assert g["p.a"] == {"p.b": 1, "p.sub.c": 2}
    assert g["p.b"] == {"p.sub.c": 2, "p.sub": 3}
    assert g["p.sub"] == {"p.sub.c": 1}
    assert g["p.sub.c"] == {"p.a": 1}
    assert g["p.d"] == {"p.b": 5}  # the TYPE_CHECKING branch is left out, its else is not
    assert cycles(g) == [["p.a", "p.b", "p.sub", "p.sub.c"]]
    assert "p.a -> p.b (line 1)" in _describe(g, cycles(g)[0])


def test_reader_finds_no_cycle_in_a_line(pkg):
    g = pkg({"__init__.py": "", "a.py": "import p.b\n", "b.py": "from p import c\n", "c.py": ""})
    assert cycles(g) == []
