"""The corpus' DMR++ entry: h5py's values of the HDF5/netCDF-4 file a DMR++ sidecar describes.

Registered by ``tests/corpus/corpus.py``::

    from dmrpp_format import dmrpp_data_file, dmrpp_features, dmrpp_magic
    register(Format("dmrpp", dmrpp_magic, lambda p: _hdf5_reference(dmrpp_data_file(p)),
                    dmrpp_features))

A corpus file is the ``.dmrpp`` document; its data file is the same path without
``.dmrpp`` (the sidecar convention ``open_virtual`` follows).  The reference reads that
data file with h5py, never the document: the chunk offsets and filters the document lists
are what is under test.  Packages that ship a sidecar without its data file (pydap's test
documents) cannot be checked value by value: the reference raises, and the file is
listed as skipped with that reason.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = ["dmrpp_data_file", "dmrpp_features", "dmrpp_magic"]

_DMRPP_NAMESPACE = b"xml.opendap.org/dap/dmrpp"


def dmrpp_magic(head: bytes) -> bool:
    """An XML document that declares the DMR++ namespace up front."""
    text = head.lstrip()
    return text.startswith(b"<") and _DMRPP_NAMESPACE in text


def dmrpp_data_file(path: Path) -> Path:
    """The data file beside the sidecar ``path`` (raises when it is not there)."""
    data = path.with_name(path.name.removesuffix(".dmrpp"))
    if not data.is_file():
        raise FileNotFoundError(f"{data.name}: the data file is not shipped beside the sidecar")
    return data


def dmrpp_features(path: Path) -> set[str]:
    """The chunk filters, byte orders and group use of the document."""
    out: set[str] = set()
    root = ET.parse(path).getroot()
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Group":
            out.add("groups")
        elif tag == "chunks":
            filters = element.get("compressionType")
            out.add(f"compression:{filters}" if filters else "compression:none")
            if element.get("byteOrder"):
                out.add(f"byte order:{element.get('byteOrder')}")
    return out
