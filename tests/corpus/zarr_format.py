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

Zipped stores: no package ships one, so each store is also copied, key by key, into a zip
by zarr-python's own ``ZipStore`` with its defaults (`zip_store`, the derived format
``zip``), and that archive is read virtually and compared with the directory store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["is_zarr_store", "zarr_features", "zarr_reference", "zip_store"]

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


def zip_store(path: Path, source_format: str, out_dir: Path) -> Path:
    """The store ``path`` copied into ``out_dir/<name>.zip`` by zarr's ``ZipStore``
    (its defaults: members stored uncompressed)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import LocalStore, ZipStore

    if source_format != "zarr":
        raise ValueError(f"zipped stores are made of Zarr stores, not {source_format} files")
    # the name a store whose root is an array gives that array (``.zip`` is dropped)
    out = out_dir / f"{path.name}.zip"

    async def copy() -> None:
        src = LocalStore(path, read_only=True)
        dst = ZipStore(out, mode="w")
        async for key in src.list():
            value = await src.get(key, prototype=default_buffer_prototype())
            if value is not None:
                await dst.set(key, value)
        dst.close()

    sync(copy())
    return out
