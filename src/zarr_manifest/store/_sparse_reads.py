"""Reading a selection of a sparse array through zarr, its absent shards filled without zarr.

zarr spends some microseconds per chunk of a selection even where nothing is stored: a
shard the store answers as absent is filled in one go, but only after zarr has computed
the position of each of its inner chunks.  A GRIB file's hypercube of 1.4 million cells
holding 372 messages costs tens of seconds that way.  For a sparse array (`LoadedNode`
keeps which of its chunks are stored), `read_sparse` fills the selection with the array's
fill value -- what zarr returns for a chunk that is not stored -- and asks zarr only for
the parts of the selection inside stored chunks, one chunk at a time.  Values read are
zarr's own; only the absent remainder is filled here.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = ["read_sparse"]


#: a selection is read chunk by chunk only if at most one in this many of its chunks is
#: stored: a zarr call per chunk costs about as much as zarr's work on this many chunks
#: of a whole read
CHUNKS_PER_CALL = 32


def read_sparse(
    array: Any, stored: np.ndarray, chunk_shape: tuple[int, ...], key: Any
) -> np.ndarray | None:
    """``array[key]``: the stored chunks' parts read through zarr, the rest filled.

    Parameters
    ----------
    array
        The zarr array.
    stored
        The grid indices of its stored chunks, one row each.
    chunk_shape
        The shape of its chunks (the manifest's, not of virtual shards).
    key
        A basic selection: a tuple of integers and slices (fewer than the dimensions:
        the rest whole).

    Returns
    -------
    The values, or None where this path does not apply (a step other than 1, an
    ellipsis, an empty selection, a dtype without a numpy fill value, more than one in
    `CHUNKS_PER_CALL` of the selected chunks stored, zarr's ``read_missing_chunks``
    off): read it through zarr.
    """
    shape = tuple(array.shape)
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > len(shape) or not shape or array.dtype.kind not in "biufcmM":
        return None
    if not array._async_array.config.read_missing_chunks:
        return None  # zarr is to refuse a missing chunk, and names them
    key = key + (slice(None),) * (len(shape) - len(key))
    lo: list[int] = []
    hi: list[int] = []
    squeeze: list[int | slice] = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step != 1 or stop <= start:
                return None
            lo.append(start)
            hi.append(stop)
            squeeze.append(slice(None))
        elif isinstance(k, int | np.integer) and not isinstance(k, bool):
            i = int(k) + n if int(k) < 0 else int(k)
            if not 0 <= i < n:
                return None  # zarr says why
            lo.append(i)
            hi.append(i + 1)
            squeeze.append(0)
        else:
            return None
    size = np.array(chunk_shape, dtype=np.int64)
    first = np.array(lo, dtype=np.int64) // size
    last = (np.array(hi, dtype=np.int64) - 1) // size + 1
    inside = stored[np.all((stored >= first) & (stored < last), axis=1)]
    if len(inside) * CHUNKS_PER_CALL > int(np.prod(last - first, dtype=np.float64)):
        return None
    out = np.full(tuple(map(operator.sub, hi, lo)), array.fill_value, dtype=array.dtype)
    for index in inside.tolist():
        begin = [max(a, i * c) for a, i, c in zip(lo, index, chunk_shape, strict=True)]
        end = [min(b, (i + 1) * c) for b, i, c in zip(hi, index, chunk_shape, strict=True)]
        region = tuple(slice(a, b) for a, b in zip(begin, end, strict=True))
        place = tuple(slice(a - o, b - o) for a, b, o in zip(begin, end, lo, strict=True))
        out[place] = array[region]
    return out[tuple(squeeze)]
