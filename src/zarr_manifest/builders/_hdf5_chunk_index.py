"""Where a dataset's chunks are in an HDF5 file: the chunk index, and contiguous data cut
into virtual chunks.

Version-1 B-trees (h5py's and netCDF-4's default file format) are read directly, a whole
node per numpy call, so a million-chunk dataset is enumerated in a fraction of a second;
the newer indexes (fixed/extensible arrays, v2 B-trees) go through h5py's
``DatasetID.chunk_iter``, whose callback appends straight into typed arrays.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from typing import Any

import numpy as np

from zarr_manifest.builders._hdf5_headers import Fallback, HDF5File, read_uint

# ---- chunk index -----------------------------------------------------------------------------


def _btree_chunks(
    f: HDF5File, root: int, rank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every chunk in a version-1 B-tree: (element offsets (n, rank), addresses, sizes, masks).

    Each node is read with one read; leaf records are copied raw and decoded with one numpy
    call at the end.  Levels are walked breadth first.
    """
    if f.sizeof_addr != 8:
        raise Fallback
    dims = rank + 1
    record = np.dtype(
        [("size", "<u4"), ("mask", "<u4"), ("coords", "<u8", (dims,)), ("addr", "<u8")]
    )
    key_size = 8 + 8 * dims
    header = 24
    # nodes hold at most 2K entries, K = 32 unless the file says otherwise (h5py does not
    # tell); a larger node is re-read whole
    node_bytes = header + 64 * record.itemsize + key_size
    leaves = bytearray()
    level_nodes = [root]
    level = None
    visited = 0
    while level_nodes:
        children: list[np.ndarray] = []
        for addr in level_nodes:
            visited += 1
            if visited > 1 << 26:
                raise Fallback
            buf = f.read(addr, node_bytes)
            if buf[:4] != b"TREE" or buf[4:5] != b"\x01":
                raise Fallback
            node_level = buf[5]
            if level is not None and node_level != level:
                raise Fallback
            used = read_uint(buf, 6, 2)
            need = header + used * record.itemsize + key_size
            if need > len(buf):
                buf = f.read(addr, need)
                if len(buf) < need:
                    raise Fallback
            if node_level == 0:
                leaves += buf[header : header + used * record.itemsize]
            else:
                recs = np.frombuffer(buf, dtype=record, count=used, offset=header)
                children.append(recs["addr"] + np.uint64(f.base))
        level_nodes = np.concatenate(children).tolist() if children else []
        if children:
            level = node_level - 1
    recs = np.frombuffer(bytes(leaves), dtype=record)
    coords = recs["coords"][:, :rank]
    return coords, recs["addr"] + np.uint64(f.base), recs["size"], recs["mask"]


def _h5py_chunks(dsid: Any, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every chunk of a dataset through h5py's ``chunk_iter`` (HDF5 >= 1.12.3 / 1.14).

    The callback appends to typed arrays: no Python object is kept per chunk.
    """
    coords, addrs, sizes, masks = array("Q"), array("Q"), array("Q"), array("I")
    add_coords, add_addr = coords.extend, addrs.append
    add_size, add_mask = sizes.append, masks.append

    def collect(info: Any) -> None:
        add_coords(info.chunk_offset)
        add_addr(info.byte_offset)
        add_size(info.size)
        add_mask(info.filter_mask)

    if hasattr(dsid, "chunk_iter"):
        dsid.chunk_iter(collect)
    else:  # older HDF5: one query per chunk
        for i in range(dsid.get_num_chunks()):
            collect(dsid.get_chunk_info(i))
    return (
        np.frombuffer(coords, dtype=np.uint64).reshape(-1, rank),
        np.frombuffer(addrs, dtype=np.uint64),
        np.frombuffer(sizes, dtype=np.uint64),
        np.frombuffer(masks, dtype=np.uint32),
    )


def chunk_grid(
    f: HDF5File,
    btree: int | None,
    dsid: Callable[[], Any],
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chunk grid arrays of a chunked dataset: (present, offsets, lengths, filter masks).

    Reads the v1 B-tree at ``btree`` directly when given (-1: no chunk written yet), else
    iterates with h5py (``dsid()`` opens the dataset).  Chunks the index holds outside the
    current extent (after a shrink) are left out.
    """
    rank = len(shape)
    coords = np.empty((0, rank), np.uint64)
    addrs = sizes = np.empty(0, np.uint64)
    masks = np.empty(0, np.uint32)
    try:
        if btree is None:
            raise Fallback
        if btree >= 0:
            coords, addrs, sizes, masks = _btree_chunks(f, btree, rank)
    except Fallback:
        coords, addrs, sizes, masks = _h5py_chunks(dsid(), rank)
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
    index = coords // np.asarray(chunks, dtype=np.uint64)
    inside = (index < np.asarray(grid, dtype=np.uint64)).all(axis=1)
    if not inside.all():
        index, addrs, sizes, masks = index[inside], addrs[inside], sizes[inside], masks[inside]
    present = np.zeros(grid, dtype=bool)
    offsets = np.zeros(grid, dtype=np.uint64)
    lengths = np.zeros(grid, dtype=np.uint64)
    mask_grid = np.zeros(grid, dtype=np.uint32)
    where = tuple(index.T.astype(np.intp))
    present[where] = True
    offsets[where] = addrs
    lengths[where] = sizes
    mask_grid[where] = masks
    return present, offsets, lengths, mask_grid


# ---- contiguous datasets ---------------------------------------------------------------------


def contiguous_chunks(
    shape: tuple[int, ...], itemsize: int, offset: int, file_size: int, target: int
) -> tuple[tuple[int, ...], np.ndarray]:
    """Virtual chunk shape and grid of byte offsets for uncompressed contiguous data.

    C-ordered data is cut into blocks ``(1, ..., 1, r, *shape[k+1:])``, each one byte range:
    axis ``k`` is the first whose trailing block fits in ``target`` bytes, and ``r`` a divisor
    of ``shape[k]`` near ``target`` bytes, or, when the file has room for the last block's
    overhang (zarr ignores it), simply ``target // block``.  Small data stays one chunk.
    """
    nbytes = math.prod(shape) * itemsize
    whole = tuple(max(s, 1) for s in shape)
    if not shape or nbytes <= target or target <= 0:
        return whole, np.full((1,) * len(shape), offset, dtype=np.uint64)
    inner = [math.prod(shape[k + 1 :]) * itemsize for k in range(len(shape))]
    k = next(k for k in range(len(shape)) if inner[k] <= target)
    n = shape[k]
    rows = max(1, min(n, target // inner[k]))
    best = None
    first = math.ceil(n / rows)
    for count in range(first, min(n, 2 * first, first + 100_000) + 1):
        if n % count == 0:
            best = n // count
            break
    if best is None:
        end = offset + nbytes + (math.ceil(n / rows) * rows - n) * inner[k]
        if end > file_size:
            return whole, np.full((1,) * len(shape), offset, dtype=np.uint64)
        best = rows
    chunk = (1,) * k + (best,) + tuple(shape[k + 1 :])
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunk, strict=True))
    offsets = np.full(grid, offset, dtype=np.uint64)
    for axis, (g, c) in enumerate(zip(grid, chunk, strict=True)):
        if g > 1:
            step = np.arange(g, dtype=np.uint64) * np.uint64(c * math.prod(shape[axis + 1 :]))
            offsets += (step * np.uint64(itemsize)).reshape((-1,) + (1,) * (len(shape) - axis - 1))
    return tuple(max(c, 1) for c in chunk), offsets
