"""The import graph of ``src/zarr_manifest``: data flows one way, so no module imports
itself again through others (issue 18).

Every ``import`` counts, at module level or inside a function (a deferred import is still
a dependency), except those under ``if TYPE_CHECKING:``, which never run.  A cycle is
reported as the set of modules of a strongly connected component of the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zarr_manifest

SRC = Path(zarr_manifest.__file__).parent
PACKAGE = "zarr_manifest"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports (outside TYPE_CHECKING blocks)."""
    found: set[str] = set()
    is_package = modules[name].name == "__init__.py"

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    found.add(sub)  # "from package import module"
                elif target in modules:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module of the package, and the package's modules it imports."""
    modules = _modules()
    return {
        name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, modules)
        for name, path in modules.items()
    }


def import_cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: set[frozenset[str]] = set()

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_the_graph_sees_deferred_imports_and_skips_type_checking_ones() -> None:
    modules = {"zarr_manifest.a": Path("a.py"), "zarr_manifest.b": Path("b.py")}
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from zarr_manifest.b import x\n"
        "def f():\n    from zarr_manifest.b import y\n"
    )
    assert _imports(tree, "zarr_manifest.a", modules) == {"zarr_manifest.b"}
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import zarr_manifest.b\n"
    )
    assert _imports(tree, "zarr_manifest.a", modules) == set()


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == {frozenset({"a", "b", "c"})}


def test_the_store_is_split_into_rooms_without_cycles() -> None:
    graph = import_graph()
    store = {m for m in graph if m.startswith("zarr_manifest.store")}
    assert len(store) >= 8  # the store's rooms: keys, nodes, references, shards, ...
    assert not any(cycle & store for cycle in import_cycles(graph))


def test_no_import_cycle_at_all() -> None:
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles in src/: " + "; ".join(
        " <-> ".join(sorted(cycle)) for cycle in cycles
    )


MODEL = (
    "zarr_manifest.manifest",
    "zarr_manifest._json_codec",
    "zarr_manifest._json_canonical_reader",
    "zarr_manifest._json_columns",
    "zarr_manifest._json_encoder",
    "zarr_manifest.array",
    "zarr_manifest.array_api",
    "zarr_manifest.cf_attributes",
    "zarr_manifest.group",
)

#: what a room must never import (shared/DESIGN.md, "Never"), by module-name prefix
NEVER: dict[tuple[str, ...], tuple[str, ...]] = {
    MODEL: (
        "zarr_manifest.store",
        "zarr_manifest.builders",
        "zarr_manifest.xarray",
        "zarr_manifest.combine",
    ),
    ("zarr_manifest.builders",): ("zarr_manifest.store", "zarr_manifest.writers"),
    ("zarr_manifest.store",): ("zarr_manifest.builders", "zarr_manifest.writers"),
    ("zarr_manifest.writers",): ("zarr_manifest.builders", "zarr_manifest.store"),
    ("zarr_manifest.format",): (
        "zarr_manifest.builders",
        "zarr_manifest.writers",
        "zarr_manifest.store",
        "zarr_manifest.group",
    ),
}


def _is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_room_imports_what_the_design_forbids() -> None:
    graph = import_graph()
    broken = sorted(
        (module, target)
        for module, targets in graph.items()
        for rooms, forbidden in NEVER.items()
        if _is_under(module, rooms)
        for target in targets
        if _is_under(target, forbidden)
    )
    assert not broken, "imports against the design: " + "; ".join(f"{a} -> {b}" for a, b in broken)
