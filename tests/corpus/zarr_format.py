"""The corpus' Zarr entry: zarr-python's values of a Zarr v2/v3 store shipped as a directory.

Registered by ``tests/corpus/corpus.py``::

    from zarr_format import is_zarr_store, zarr_features, zarr_reference
    register(Format("zarr", lambda head: False, zarr_reference, zarr_features,
                    directory=is_zarr_store))

A store is a directory, not a file: it has no magic bytes, and the corpus recognises it by
its metadata keys (``zarr.json``, ``.zgroup``, ``.zarray``).  The reference opens it with
zarr-python directly (no manifest), so what is under test is the chunk references
``open_virtual`` makes of the store's objects.  A store whose root is an array is one array
named after the directory (as ``open_virtual`` names it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["is_zarr_store", "zarr_features", "zarr_reference"]

_METADATA_KEYS = ("zarr.json", ".zgroup", ".zarray")


def is_zarr_store(path: Path) -> bool:
    """A directory holding Zarr metadata at its top."""
    return path.is_dir() and any((path / key).is_file() for key in _METADATA_KEYS)


def _open(path: Path) -> Any:
    import zarr
    from zarr.storage import LocalStore

    return zarr.open(LocalStore(path, read_only=True), mode="r")


def zarr_reference(path: Path) -> dict[str, Any]:
    """``{array path: values}`` as zarr-python reads the store."""
    import zarr

    node = _open(path)
    if isinstance(node, zarr.Array):
        name = path.name.removesuffix(".zip").removesuffix(".zarr") or "data"
        return {name: np.asarray(node[...])}
    return {
        name: np.asarray(array[...])
        for name, array in node.members(max_depth=None)
        if isinstance(array, zarr.Array)
    }


def zarr_features(path: Path) -> set[str]:
    """Zarr format, codecs, dtypes and chunk-key layout of the store's arrays."""
    import zarr

    node = _open(path)
    arrays = (
        [node]
        if isinstance(node, zarr.Array)
        else [a for _, a in node.members(max_depth=None) if isinstance(a, zarr.Array)]
    )
    out: set[str] = set()
    if isinstance(node, zarr.Group) and any(
        isinstance(g, zarr.Group) for _, g in node.members(max_depth=None)
    ):
        out.add("groups")
    for a in arrays:
        meta = a.metadata
        out.add(f"zarr_format:{meta.zarr_format}")
        out.add(f"dtype:{np.dtype(a.dtype).kind}")
        if meta.zarr_format == 2:
            compressor = meta.compressor  # type: ignore[union-attr]
            out.add(f"compression:{compressor.codec_id if compressor else 'none'}")
            for f in meta.filters or ():  # type: ignore[union-attr]
                out.add(f"filter:{f.codec_id}")
            if meta.dimension_separator == "/":  # type: ignore[union-attr]
                out.add("nested chunk keys")
        else:
            for codec in meta.codecs:  # type: ignore[union-attr]
                out.add(f"codec:{type(codec).__name__}")
    return out
