"""The numpy functions a `ManifestArray` answers as a duck array (NEP 18), for xarray.

xarray wraps a `ManifestArray` in a `Variable` and combines variables with numpy's
``concatenate``, ``stack``, ``expand_dims``, ``broadcast_to``, ``transpose`` and
``result_type``.  Each is answered by rearranging chunk references, never by reading data,
and only where the result is exactly the array those functions would give: anything that
needs values raises a `TypeError` that says to load the variable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from zarr_manifest.cf_attributes import check_decoding_attributes
from zarr_manifest.errors import CombineError
from zarr_manifest.manifest import ChunkManifest

if TYPE_CHECKING:
    from zarr_manifest.array import ManifestArray

__all__ = ["HANDLED_FUNCTIONS", "needs_data"]

HANDLED_FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {}


def needs_data(what: str) -> TypeError:
    """The error for an operation that would need the array's values."""
    return TypeError(
        f"{what} needs the values of a ManifestArray, which holds only references to chunks "
        "in other files; load the variable first (open_virtual_dataset(..., "
        "loadable_variables=[name]), or write the dataset with .manifest.to_store(...) and "
        "open that with xr.open_dataset(store, engine='manifest'))"
    )


def _implements(func: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        HANDLED_FUNCTIONS[func] = impl
        return impl

    return register


def _label(array: ManifestArray) -> str:
    names = array.dimension_names
    return f"variable with dimensions {names}" if names else f"array of shape {array.shape}"


def _check_attributes(arrays: Sequence[ManifestArray]) -> None:
    first = arrays[0].attributes
    for i, a in enumerate(arrays[1:], start=1):
        check_decoding_attributes(
            _label(arrays[0]), first, a.attributes, inputs=f"inputs 0 and {i}"
        )


@_implements(np.concatenate)
def concatenate(arrays: Sequence[ManifestArray], axis: int | None = 0, **kwargs: Any) -> Any:
    if axis is None or kwargs.get("out") is not None:
        raise needs_data("concatenate with axis=None or out=")
    arrays = list(arrays)
    _check_attributes(arrays)
    return type(arrays[0]).concat(arrays, axis=axis)


@_implements(np.stack)
def stack(arrays: Sequence[ManifestArray], axis: int = 0, **kwargs: Any) -> Any:
    if kwargs.get("out") is not None:
        raise needs_data("stack with out=")
    arrays = list(arrays)
    _check_attributes(arrays)
    # the new axis has no name in the array's metadata; xarray's Variable keeps the names
    return type(arrays[0]).stack(arrays, axis=axis)


@_implements(np.expand_dims)
def expand_dims(array: ManifestArray, axis: int | Sequence[int]) -> Any:
    result = array
    axes = [axis] if isinstance(axis, int) else list(axis)
    ndim = array.ndim + len(axes)
    for ax in sorted(a % ndim for a in axes):
        result = stack([result], axis=ax)
    return result


def _is_virtual(value: Any) -> bool:
    # a ManifestArray, known by its manifest: this module is below array.py, which uses it
    return isinstance(getattr(value, "manifest", None), ChunkManifest)


@_implements(np.result_type)
def result_type(*arrays_and_dtypes: Any) -> np.dtype[Any]:
    virtual = [a.dtype for a in arrays_and_dtypes if _is_virtual(a)]
    others = [a for a in arrays_and_dtypes if not _is_virtual(a)]
    dtypes = set(virtual)
    for other in others:
        # scalars (a fill value) do not change an array's dtype; dtypes and arrays must match
        if isinstance(other, int | float | complex | np.generic):
            continue
        if isinstance(other, np.ndarray | np.dtype | type) or hasattr(other, "dtype"):
            dtypes.add(np.dtype(getattr(other, "dtype", other)))
    if len(dtypes) != 1:
        raise TypeError(
            f"ManifestArrays of different dtypes {sorted(map(str, dtypes))} cannot be joined: "
            "their chunks cannot be cast without reading them; load the variable first"
        )
    return dtypes.pop()


@_implements(np.broadcast_to)
def broadcast_to(array: ManifestArray, shape: Sequence[int], subok: bool = False) -> Any:
    """Repeat references along new leading axes and axes of length 1 (chunk length 1)."""
    shape = tuple(int(n) for n in shape)
    if tuple(shape) == array.shape:
        return array
    new = len(shape) - array.ndim
    try:
        fits = new >= 0 and np.broadcast_shapes(array.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"a ManifestArray of shape {array.shape} cannot broadcast to {shape}")
    meta = array.metadata
    chunks = list(_regular_chunks(array, "broadcast_to"))
    for d, (old, n) in enumerate(zip(array.shape, shape[new:], strict=True)):
        if old != n and chunks[d] != 1:
            raise TypeError(
                f"broadcast_to: axis {d} has length 1 but chunks of {chunks[d]}, so repeating "
                f"it is not a repetition of chunks; {needs_data('broadcasting it')}"
            )
    grid = (*shape[:new], *(n if c == 1 else g for n, c, g in _axes(array, shape[new:], chunks)))
    m = array.manifest
    lead = (1,) * new
    ids = np.broadcast_to(m.path_ids.reshape(lead + m.shape_chunk_grid), grid)
    offsets = np.broadcast_to(m.offsets.reshape(lead + m.shape_chunk_grid), grid)
    lengths = np.broadcast_to(m.lengths.reshape(lead + m.shape_chunk_grid), grid)
    manifest = ChunkManifest._new(m.path_table, ids.copy(), offsets.copy(), lengths.copy())
    doc = meta.to_dict()
    names = meta.dimension_names
    doc.update(
        shape=list(shape),
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": [1] * new + chunks}},
        dimension_names=None if names is None else [*([None] * new), *names],
    )
    return type(array)(doc, manifest, fingerprints=array.fingerprints)


def _axes(
    array: ManifestArray, shape: Sequence[int], chunks: Sequence[int]
) -> list[tuple[int, int, int]]:
    grid = array.manifest.shape_chunk_grid
    return [(n, c, g) for n, c, g in zip(shape, chunks, grid, strict=True)]


@_implements(np.transpose)
def transpose(array: ManifestArray, axes: Sequence[int] | None = None) -> ManifestArray:
    """Reorder axes where that does not reorder the elements of any chunk: only axes whose
    chunks are one element long may move past others."""
    order = list(range(array.ndim))[::-1] if axes is None else [a % array.ndim for a in axes]
    if sorted(order) != list(range(array.ndim)):
        raise ValueError(f"transpose: {axes} is not a permutation of {array.ndim} axes")
    if order == list(range(array.ndim)):
        return array
    chunks = _regular_chunks(array, "transpose")
    long = [a for a in order if chunks[a] != 1]
    if long != sorted(long):
        raise TypeError(
            f"transpose {order} would reorder the elements inside each chunk of an array "
            f"chunked {chunks}; {needs_data('that')}"
        )
    m = array.manifest
    manifest = ChunkManifest._new(
        m.path_table,
        m.path_ids.transpose(order).copy(),
        m.offsets.transpose(order).copy(),
        m.lengths.transpose(order).copy(),
    )
    meta = array.metadata
    names = meta.dimension_names
    doc = meta.to_dict()
    doc.update(
        shape=[array.shape[a] for a in order],
        chunk_grid={
            "name": "regular",
            "configuration": {"chunk_shape": [chunks[a] for a in order]},
        },
        dimension_names=None if names is None else [names[a] for a in order],
    )
    return type(array)(doc, manifest, fingerprints=array.fingerprints)


def _regular_chunks(array: ManifestArray, what: str) -> tuple[int, ...]:
    try:
        return tuple(array.chunks)
    except (NotImplementedError, AttributeError, TypeError) as e:
        raise CombineError(f"{what}: the array has an irregular chunk grid") from e
