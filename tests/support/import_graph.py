"""fetalbio's imports read from the source's AST (nothing is imported): what
``tests/test_dvc_deps.py`` (each stage's module closure) and ``tests/test_import_cycles.py``
(no cycles) build on. Importable as ``import_graph`` (tests/conftest.py puts tests/support on
sys.path)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (a package's ``__init__.py``), or None."""
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def module_name(path: Path) -> str:
    """``src/fetalbio/a/b.py`` -> ``fetalbio.a.b``; ``src/fetalbio/a/__init__.py`` -> ``fetalbio.a``."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(node: ast.AST, type_checking: bool) -> Iterator[ast.AST]:
    """``node`` and every node under it, but for the body of ``if TYPE_CHECKING:`` unless ``type_checking``."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not type_checking and isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _nodes(stmt, type_checking)
        else:
            yield from _nodes(child, type_checking)


def fetalbio_imports(path: Path, *, type_checking: bool = True, packages: bool = True) -> set[str]:
    """fetalbio modules a file imports anywhere in it, function-level imports included.

    ``from a import b``: ``a.b`` too when it is a module, and ``a`` itself always, or with
    ``packages=False`` only when some imported name is not a module (the import then names ``a``
    rather than its submodules). ``type_checking=False`` leaves out ``if TYPE_CHECKING:`` bodies.
    """
    out: set[str] = set()
    pkg = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1]) if path.is_relative_to(SRC) else ""
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8")), type_checking):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "fetalbio"}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative import inside the package
                mod = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([mod] if mod else []))
            if mod.split(".")[0] != "fetalbio":
                continue
            subs = {f"{mod}.{a.name}" for a in node.names if module_file(f"{mod}.{a.name}") is not None}
            out |= subs
            if packages or len(subs) < len(node.names):
                out.add(mod)
    return out
