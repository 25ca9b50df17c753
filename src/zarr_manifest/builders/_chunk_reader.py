"""Reading a chunked array's values from its chunk byte ranges, for builders' ``load``.

Builders do not read through the store (the store never imports a builder, and a builder
never imports the store), so a builder that loads a variable it found as chunks (HDF4,
DMR++) decodes them here: read each range, undo the byte codecs, place the chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["read_chunked"]


def read_chunked(
    read: Callable[[int, int], bytes],
    *,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    offsets: np.ndarray,
    lengths: np.ndarray,
    dtype: np.dtype[Any],
    fill: Any,
    decode: Callable[[bytes], bytes] = bytes,
) -> np.ndarray:
    """An array's values (native byte order) from its chunks.

    Parameters
    ----------
    read
        ``read(offset, length)`` -> the bytes of the file there.
    shape, chunks
        The array's and a chunk's shape (edge chunks are stored whole, padded).
    offsets, lengths
        Per chunk of the grid; a negative offset is a chunk never written (fill value).
    dtype
        The stored dtype (with byte order).
    fill
        The value of never-written chunks.
    decode
        Undoes the byte codecs of one chunk (decompression, shuffle...).
    """
    out = np.full(shape, fill, dtype=dtype.newbyteorder("="))
    nbytes = math.prod(chunks) * dtype.itemsize
    for index in np.ndindex(offsets.shape):
        if offsets[index] < 0:
            continue
        raw = decode(read(int(offsets[index]), int(lengths[index])))
        if len(raw) < nbytes:
            raise ValueError(f"chunk {index} decodes to {len(raw)} of {nbytes} bytes")
        block = np.frombuffer(raw[:nbytes], dtype=dtype).reshape(chunks)
        where = tuple(
            slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape, strict=True)
        )
        out[where] = block[tuple(slice(0, w.stop - w.start) for w in where)]
    return out
