"""No import cycles among fetalbio's modules: the import graph of src/fetalbio, read from the AST
(``import_graph``, shared with test_dvc_deps.py), has no cycle, and a cycle fails naming its modules.

What is an edge, deliberately:

* every import statement that runs, **function-level (lazy) imports included**: a lazy import
  is still a dependency, and a cycle hidden in a function is still a cycle (``tasks/refine.py``
  imported ``tasks/crop_dataset.py`` lazily, which imported it back at the top); a lazy import
  stays the way to defer a heavy third-party import (torch, pydicom), not to break a cycle;
* not the body of ``if TYPE_CHECKING:``, which never runs (names for annotations only);
* an import names the module it names: ``from a.b import c`` is an edge to ``a.b.c`` when ``c``
  is a module, to ``a.b`` otherwise. The packages ``a`` and ``a.b`` whose ``__init__`` Python runs
  first are not edges, or every package whose ``__init__`` gathers its submodules would be a
  cycle with each of them; a submodule that imports its own package's ``__init__`` is one.
"""

from __future__ import annotations

from pathlib import Path

from import_graph import SRC, fetalbio_imports, module_name

# Cycles known and left to fix, each with why: the test fails when one goes away too, so the
# entry is removed then.
KNOWN: set[tuple[str, ...]] = set()


def import_graph() -> dict[str, set[str]]:
    """Module -> the fetalbio modules it imports (edges as in the module docstring)."""
    graph = {module_name(f): fetalbio_imports(f, type_checking=False, packages=False) for f in sorted((SRC / "fetalbio").rglob("*.py"))}
    return {m: {n for n in deps if n in graph} for m, deps in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a module that
    imports itself): ``[m0, m1, ..., m0]``, the modules in import order, from the smallest name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm (the graph is a few hundred modules deep at most)
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = {stack.pop()}
            while v not in comp:
                comp.add(stack.pop())
            if len(comp) > 1 or v in graph[v]:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_through(graph, comp) for comp in comps]


def _path_through(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of ``comp`` (breadth first inside it)."""
    start = min(comp)
    parent: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                todo.append(w)
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strongly connected component


def test_fetalbio_has_no_import_cycles() -> None:
    found = cycles(import_graph())
    new = [c for c in found if tuple(sorted(set(c))) not in KNOWN]
    assert not new, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in new)
    gone = KNOWN - {tuple(sorted(set(c))) for c in found}
    assert not gone, f"cycles in KNOWN that no longer exist (remove them): {sorted(gone)}"


def test_a_lazy_import_counts_and_type_checking_does_not(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\n"
        "from fetalbio.geometry import ellipse, masks\n"
        "from fetalbio.tasks import TASKS\n"
        "if TYPE_CHECKING:\n    from fetalbio.tasks.refine import RefineTask\n"
        "def dataset_class():\n    from fetalbio.tasks.crop_dataset import CropDataset\n    return CropDataset\n"
    )
    assert fetalbio_imports(f, type_checking=False, packages=False) == {"fetalbio.geometry.ellipse", "fetalbio.geometry.masks", "fetalbio.tasks", "fetalbio.tasks.crop_dataset"}


def test_a_cycle_is_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "e"]]
