"""The corpus' HDF4 entry: pyhdf's values of every SD dataset, named as ``open_virtual`` names
them (a name seen twice gets ``_<index>``, the pyhdf dataset index).

Registered by ``tests/corpus/corpus.py``::

    from hdf4_format import hdf4_features, hdf4_magic, hdf4_reference
    register(Format("hdf4", hdf4_magic, hdf4_reference, hdf4_features))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["hdf4_features", "hdf4_magic", "hdf4_reference"]

# pyhdf's compression type codes (SDC.COMP_*) -> names for the support matrix
_COMPRESSIONS = {0: "none", 1: "RLE", 2: "n-bit", 3: "skipping Huffman", 4: "deflate", 5: "SZIP"}


def hdf4_magic(head: bytes) -> bool:
    """An HDF4 file starts with ``0e 03 13 01``."""
    return head.startswith(b"\x0e\x03\x13\x01")


def _datasets(path: Path) -> Any:
    from pyhdf.SD import SD

    f = SD(str(path))
    try:
        seen: set[str] = set()
        for index in range(f.info()[0]):
            sds = f.select(index)
            name, _rank, dims, _type, _nattrs = sds.info()
            key = name.replace("/", "_") or f"sds_{index}"
            yield (f"{key}_{index}" if key in seen else key), sds, dims
            seen.add(key)
    finally:
        f.end()


def hdf4_reference(path: Path) -> dict[str, Any]:
    """``{dataset name: values}`` as pyhdf reads them (None for empty datasets)."""
    out: dict[str, Any] = {}
    for name, sds, dims in _datasets(path):
        shape = (dims,) if isinstance(dims, int) else tuple(dims)
        out[name] = None if 0 in shape else sds.get()
    return out


def hdf4_features(path: Path) -> set[str]:
    """Compressions, dtypes and storage kinds the file's datasets use."""
    from pyhdf.error import HDF4Error

    out: set[str] = set()
    for _name, sds, _dims in _datasets(path):
        try:
            out.add(f"compression:{_COMPRESSIONS.get(sds.getcompress()[0], 'other')}")
        except HDF4Error:
            out.add("compression:none")
        if sds.isrecord():
            out.add("unlimited dimension")
        if sds.iscoordvar():
            out.add("dimension scales")
    return out
