"""The corpus' kerchunk entry: references kerchunk's own scanners make of the corpus' files.

No package ships kerchunk references next to the files they point into, so the corpus
makes them the way a user does: kerchunk's scanner for the format, with its default
settings (``SingleHdf5ToZarr`` for HDF5/netCDF-4, ``NetCDF3ToZarr`` for netCDF-3), written
as JSON into a temporary folder.  ``open_virtual(refs, format="kerchunk")`` is then
compared with the *source file's* own library (h5py, netCDF4), not with kerchunk's reading:
what a user gets must be the file's values.  A file kerchunk cannot scan is skipped (its
scanner is not under test), and so is an array its references leave out (kerchunk skips
datasets with filters it does not know, such as Blosc, without an error): listed, not
counted wrong.

Registered by ``tests/corpus/corpus.py`` as a derived format: every HDF5 and netCDF-3
corpus file is also a kerchunk entry::

    from kerchunk_format import KERCHUNK_SOURCES, kerchunk_refs
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["KERCHUNK_SOURCES", "kerchunk_arrays", "kerchunk_refs"]

#: The corpus formats whose files kerchunk scans.
KERCHUNK_SOURCES = ("hdf5", "netcdf3")


def kerchunk_refs(path: Path, source_format: str, out_dir: Path) -> Path:
    """kerchunk's references of ``path`` (a ``source_format`` file) as ``out_dir/refs.json``.

    Raises
    ------
    Exception
        Whatever kerchunk's scanner raises on a file it cannot scan.
    """
    if source_format == "hdf5":
        from kerchunk.hdf import SingleHdf5ToZarr

        refs = SingleHdf5ToZarr(str(path)).translate()
    elif source_format == "netcdf3":
        from kerchunk.netCDF3 import NetCDF3ToZarr

        refs = NetCDF3ToZarr(str(path)).translate()
    else:
        raise ValueError(f"kerchunk references of {source_format} files are not made here")
    out = out_dir / "refs.json"
    out.write_text(json.dumps(refs))
    return out


def kerchunk_arrays(refs_path: Path) -> set[str]:
    """The array paths kerchunk's references in ``refs_path`` hold (``<path>/.zarray``)."""
    doc = json.loads(refs_path.read_text())
    refs = doc.get("refs", doc)
    return {k[: -len("/.zarray")] for k in refs if k.endswith("/.zarray")} | (
        {""} if ".zarray" in refs else set()
    )
