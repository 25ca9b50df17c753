"""The corpus' kerchunk entry: references kerchunk's own scanners make of the corpus' files.

No package ships kerchunk references next to the files they point into, so the corpus
makes them the way a user does: kerchunk's scanner for the format, with its default
settings (``SingleHdf5ToZarr`` for HDF5/netCDF-4, ``NetCDF3ToZarr`` for netCDF-3), and
for TIFF tifffile's ``write_fsspec(zarr_format=3)`` (references whose keys are Zarr v3
``zarr.json`` documents, codecs named as imagecodecs-zarr registers them; series named as
the TIFF builder names them), written as JSON into a temporary folder.
``open_virtual(refs, format="kerchunk")`` is then compared with the *source file's* own
library (h5py, netCDF4, tifffile), not with kerchunk's reading: what a user gets must be
the file's values.  A file kerchunk cannot scan is skipped (its
scanner is not under test), and so is an array its references leave out (kerchunk skips
datasets with filters it does not know, such as Blosc, without an error): listed, not
counted wrong.  Where ours differs from the file, kerchunk's own reading of its references
(fsspec's ``ReferenceFileSystem`` under zarr, `kerchunk_reading`) tells whether the
references themselves are wrong (kerchunk writes variable-length integer sequences as the
text of their repr, for one): the file is then skipped with that reason.

Registered by ``tests/corpus/corpus.py`` as a derived format: every HDF5 and netCDF-3
corpus file is also a kerchunk entry::

    from kerchunk_format import KERCHUNK_SOURCES, kerchunk_refs
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

__all__ = ["KERCHUNK_SOURCES", "kerchunk_arrays", "kerchunk_reading", "kerchunk_refs"]

#: The corpus formats whose files kerchunk scans.
KERCHUNK_SOURCES = ("hdf5", "netcdf3", "tiff")


def kerchunk_refs(path: Path, source_format: str, out_dir: Path) -> Path:
    """kerchunk's references of ``path`` (a ``source_format`` file) as ``out_dir/refs.json``.

    Raises
    ------
    Exception
        Whatever kerchunk's scanner raises on a file it cannot scan.
    """
    if source_format == "hdf5":
        from kerchunk.hdf import SingleHdf5ToZarr

        # kerchunk calls zarr (whose event loop runs in another thread) from inside h5py's
        # visititems, which holds h5py's lock: a garbage collection in zarr's thread that
        # frees an h5py object then waits for that lock forever.  No collection meanwhile.
        gc.collect()
        gc.disable()
        try:
            refs = SingleHdf5ToZarr(str(path)).translate()
        finally:
            gc.enable()
    elif source_format == "netcdf3":
        from kerchunk.netCDF3 import NetCDF3ToZarr

        refs = NetCDF3ToZarr(str(path)).translate()
    elif source_format == "tiff":
        refs = _tifffile_v3_refs(path)
    else:
        raise ValueError(f"kerchunk references of {source_format} files are not made here")
    out = out_dir / "refs.json"
    out.write_text(json.dumps(refs))
    return out


def _tifffile_v3_refs(path: Path) -> dict[str, Any]:
    """tifffile's Zarr v3 references of every series (``data`` or ``series_<i>``)."""
    import io

    import tifffile

    refs: dict[str, Any] = {"zarr.json": json.dumps({"zarr_format": 3, "node_type": "group"})}
    with tifffile.TiffFile(path) as tif:
        series = list(tif.series)
        for i, s in enumerate(series):
            name = "data" if len(series) == 1 else f"series_{i}"
            with s.aszarr() as store:
                buf = io.StringIO()
                store.write_fsspec(buf, url=str(path.parent), groupname=name, zarr_format=3)
            part = json.loads(buf.getvalue())
            part.pop("zarr.json", None)
            refs.update(part)
    return refs


def kerchunk_arrays(refs_path: Path) -> set[str]:
    """The array paths the references in ``refs_path`` hold (``<path>/.zarray``, or a
    ``<path>/zarr.json`` whose node is an array)."""
    doc = json.loads(refs_path.read_text())
    refs = doc.get("refs", doc)
    out = set()
    for key, value in refs.items():
        path, _, leaf = key.rpartition("/")
        if leaf == ".zarray" or (
            leaf == "zarr.json" and json.loads(value).get("node_type") == "array"
        ):
            out.add(path)
    return out


def kerchunk_reading(refs_path: Path, names: list[str]) -> dict[str, Any]:
    """The arrays ``names`` as kerchunk's own stack reads ``refs_path``: fsspec's
    ``ReferenceFileSystem`` under zarr-python."""
    import fsspec
    import numpy as np
    import zarr
    from zarr.storage import FsspecStore

    fs = fsspec.filesystem("reference", fo=str(refs_path), asynchronous=True)
    root = zarr.open_group(FsspecStore(fs, read_only=True, path=""), mode="r")
    return {name: np.asarray(root[name][...]) for name in names}
