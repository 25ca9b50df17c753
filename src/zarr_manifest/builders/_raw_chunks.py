"""Chunk references that a raw (uncompressed) array's codecs could never decode.

An array whose codecs are ``transpose`` then ``bytes`` only stores each chunk as exactly
``prod(chunk_shape) * itemsize`` bytes; a reference of another length fails on every read
(numpy's ``cannot reshape``).  Builders that take references from elsewhere (kerchunk
files) check them here when building, so the error names the chunk and comes first.
"""

from __future__ import annotations

import math

import numpy as np

from zarr_manifest.array import ManifestArray
from zarr_manifest.errors import BuildError

__all__ = ["check_raw_lengths"]


def check_raw_lengths(
    array: ManifestArray, paths: np.ndarray, lengths: np.ndarray, where: str
) -> None:
    """Refuse (`BuildError`) a raw array (codecs: ``transpose`` then ``bytes`` only, a
    fixed-size dtype, a regular grid) with a reference whose length is not its chunk's
    size: zarr could never decode it (tifffile writes such references for a malformed
    ``RowsPerStrip``), so the error is given now, naming the chunk, not at read time."""
    from zarr.codecs import BytesCodec, TransposeCodec
    from zarr.core.metadata.v3 import RegularChunkGridMetadata

    meta = array.metadata
    codecs = list(meta.codecs)
    if (
        not codecs
        or not isinstance(codecs[-1], BytesCodec)
        or not all(isinstance(c, TransposeCodec) for c in codecs[:-1])
        or not isinstance(meta.chunk_grid, RegularChunkGridMetadata)
    ):
        return
    try:
        itemsize = meta.data_type.to_native_dtype().itemsize
    except Exception:  # a data type numpy has no fixed size for
        return
    if meta.data_type.to_native_dtype().kind in "OTU" or itemsize == 0:
        return
    expected = math.prod(meta.chunk_grid.chunk_shape) * itemsize
    bad = np.flatnonzero((paths.reshape(-1) != "") & (lengths.reshape(-1) != expected))
    if bad.size:
        index = np.unravel_index(int(bad[0]), paths.shape)
        raise BuildError(
            f"{where}: chunk {'.'.join(map(str, index))} is referenced with "
            f"{int(lengths.reshape(-1)[bad[0]])} bytes, but uncompressed it holds "
            f"{expected} ({len(bad)} such chunk(s)); zarr cannot decode it"
        )
