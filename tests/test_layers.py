"""Data flows one way: checks on the import graph of ``src/`` (imports inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "zarr_manifest"
ABOVE_FORMAT = ("zarr_manifest.builders", "zarr_manifest.writers", "zarr_manifest.store")


def imports_of(module: Path) -> set[str]:
    """Every ``zarr_manifest`` module a file imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("zarr_manifest")}


def test_writers_do_not_import_builders() -> None:
    # a writer must not depend on a parser: shared kerchunk-path helpers live in format/paths
    for module in (SRC / "writers").glob("*.py"):
        builders = {m for m in imports_of(module) if m.startswith("zarr_manifest.builders")}
        assert not builders, f"{module.name} imports {sorted(builders)}"


def test_format_does_not_import_builders_writers_or_stores() -> None:
    for module in (SRC / "format").glob("*.py"):
        upward = {
            m
            for m in imports_of(module)
            if m.startswith(
                ("zarr_manifest.builders", "zarr_manifest.writers", "zarr_manifest.store")
            )
        }
        assert not upward, f"{module.name} imports {sorted(upward)}"
