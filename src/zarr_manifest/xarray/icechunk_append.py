"""Appending a virtual dataset to one already in an Icechunk repository, along a dimension.

Referenced variables get their new chunks' references after the existing ones (the array
is resized, nothing is copied); loaded variables are appended by xarray's own ``to_zarr``
(which encodes them like the stored variable, e.g. times in its units).  Everything is
checked before anything is written: a variable whose layout or decoding attributes differ
from the stored one is refused, as is an append to an array whose last chunk is partial
(the new chunks would not line up).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr

from zarr_manifest.array import ManifestArray
from zarr_manifest.cf_attributes import check_decoding_attributes
from zarr_manifest.errors import CombineError, UnsupportedError
from zarr_manifest.writers.icechunk import container_prefixes
from zarr_manifest.xarray.dataset import dataset_to_group

__all__ = ["append_to_icechunk"]

#: metadata that must match for references to continue a stored array
_LAYOUT_FIELDS = ("data_type", "codecs", "fill_value", "chunk_key_encoding", "dimension_names")


def append_to_icechunk(
    ds: xr.Dataset,
    store: Any,
    *,
    append_dim: str,
    commit_message: str | None = None,
    path: str = "",
) -> str | None:
    """Append ``ds`` along ``append_dim`` to the group at ``path`` of an Icechunk session
    store (written before, e.g. by ``ds.manifest.to_icechunk(store)``).

    Raises
    ------
    CombineError
        A variable's dtype, codecs, chunking, fill value, dimensions or decoding attributes
        differ from the stored variable's, or the stored array's length along
        ``append_dim`` is not a whole number of chunks; nothing is written.
    UnsupportedError
        A reference location is not covered by a virtual chunk container.
    """
    group = dataset_to_group(ds)
    stored = zarr.open_group(store, path=path, mode="r+", zarr_format=3)
    prefixes = container_prefixes(store)
    plans: list[tuple[str, zarr.Array, int, ManifestArray]] = []
    for name, var in ds.variables.items():
        if append_dim not in var.dims or not isinstance(var._data, ManifestArray):
            continue
        new = group[str(name)]
        assert isinstance(new, ManifestArray)
        plans.append(_plan(str(name), new, stored, append_dim, prefixes))
    loaded = [
        name
        for name, var in ds.variables.items()
        if append_dim in var.dims and not isinstance(var._data, ManifestArray)
    ]
    if loaded:
        part = ds[loaded]
        part = part.drop_vars([n for n in part.variables if n not in loaded])
        for name in loaded:
            # the stored variable's encoding applies; the source file's layout does not
            part[name].encoding = {}
        part.to_zarr(
            store,
            group=path or None,
            mode="a",
            append_dim=append_dim,
            zarr_format=3,
            consolidated=False,
        )
    for name, array, axis, new in plans:
        _append_references(store, stored, name, array, axis, new, path)
    if commit_message is not None:
        return str(store.session.commit(commit_message))
    return None


def _plan(
    name: str,
    new: ManifestArray,
    stored: zarr.Group,
    append_dim: str,
    prefixes: tuple[str, ...],
) -> tuple[str, zarr.Array, int, ManifestArray]:
    if name not in stored:
        raise CombineError(f"cannot append {name!r}: the stored group has no such variable")
    array = stored[name]
    if not isinstance(array, zarr.Array):
        raise CombineError(f"cannot append {name!r}: it is a group in the store")
    old = array.metadata.to_dict()
    doc = new.metadata.to_dict()
    for field in _LAYOUT_FIELDS:
        if _normal(old.get(field)) != _normal(doc.get(field)):
            raise CombineError(
                f"cannot append {name!r}: its {field} is {doc.get(field)!r}, the stored "
                f"variable's is {old.get(field)!r}"
            )
    check_decoding_attributes(
        name, dict(array.attrs), new.attributes, inputs="the stored variable and the appended"
    )
    axis = list(new.dimension_names or ()).index(append_dim)
    chunks = new.chunks
    if tuple(array.chunks) != tuple(chunks):
        raise CombineError(
            f"cannot append {name!r}: chunked {chunks}, the stored variable {array.chunks}"
        )
    if array.shape[axis] % chunks[axis]:
        raise CombineError(
            f"cannot append {name!r}: the stored variable's length {array.shape[axis]} along "
            f"{append_dim!r} is not a whole number of chunks of {chunks[axis]}, so the new "
            "chunks would not line up"
        )
    off = [d for d in range(new.ndim) if d != axis and new.shape[d] != array.shape[d]]
    if off:
        raise CombineError(
            f"cannot append {name!r}: shape {new.shape}, stored {array.shape}; they must agree "
            f"off {append_dim!r}"
        )
    outside = [p for p in new.manifest.path_table if not any(p.startswith(x) for x in prefixes)]
    if outside:
        raise UnsupportedError(
            f"icechunk cannot address {outside[0]!r} of {name!r}: no virtual chunk container "
            f"covers it (containers: {list(prefixes) or 'none'})"
        )
    return name, array, axis, new


def _append_references(
    store: Any,
    stored: zarr.Group,
    name: str,
    array: zarr.Array,
    axis: int,
    new: ManifestArray,
    path: str,
) -> None:
    array = stored[name]  # type: ignore[assignment]  # re-read: to_zarr may have resized it
    start = array.shape[axis] // new.chunks[axis]
    shape = list(array.shape)
    shape[axis] += new.shape[axis]
    array.resize(tuple(shape))
    manifest = new.manifest
    table = np.array([*manifest.path_table, ""], dtype=object)
    offset = [0] * new.ndim
    offset[axis] = start
    array_path = "/" + "/".join(p for p in (path.strip("/"), name) if p)
    failed = store.set_virtual_refs_arr(
        array_path,
        tuple(manifest.shape_chunk_grid),
        table[manifest.path_ids.reshape(-1)].tolist(),
        np.ascontiguousarray(manifest.offsets.reshape(-1), dtype=np.uint64),
        np.ascontiguousarray(manifest.lengths.reshape(-1), dtype=np.uint64),
        validate_containers=True,
        arr_offset=tuple(offset),
    )
    if failed:
        raise UnsupportedError(
            f"icechunk refused {len(failed)} virtual reference(s) of {name!r} (first chunk "
            f"{failed[0]})"
        )


def _normal(value: Any) -> Any:
    """JSON-comparable form (tuples and lists alike)."""
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value
