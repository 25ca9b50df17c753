"""Which legacy format a file (or directory) is, from its magic bytes.

`sniff` looks at the first bytes of a file; `detect_format` opens a local path or URL,
also recognising directories (Zarr stores, kerchunk parquet references) and HDF5 files
behind a user block (the superblock then sits at 512, 1024, 2048 ... bytes).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson

from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.errors import UnsupportedError
from zarr_manifest.format.paths import canonical_url, is_absolute_url, url_to_local_path

__all__ = ["FORMATS", "detect_format", "envi_header_for", "open_input", "sniff"]

#: The formats `detect_format` can return.
FORMATS: tuple[str, ...] = (
    "hdf5",
    "netcdf3",
    "tiff",
    "fits",
    "grib",
    "zarr",
    "kerchunk",
    "envi",
    "hdf4",
    "dmrpp",
    "zip",
    "icechunk",
)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_NETCDF3 = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_FITS = b"SIMPLE  ="
_GRIB = b"GRIB"
_HDF4 = b"\x0e\x03\x13\x01"
_PARQUET = b"PAR1"
_ENVI_HEADER = b"ENVI"  # the first line of an ENVI header; its data file has no magic
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")  # a first member, or the end record of an empty zip

# kerchunk references of version 0 (no "version"/"refs" wrapper): a JSON object whose keys
# are a Zarr store's (a metadata key: ".zgroup", "a/zarr.json"...), or whose first value is a
# reference ``["url", ...]``.
_REFS_META_KEY = re.compile(
    rb'"(?:[^"\\]*/)?(?:zarr\.json|\.zgroup|\.zarray|\.zattrs|\.zmetadata)"\s*:'
)
_REFS_FIRST_REFERENCE = re.compile(rb'^\{\s*"[^"\\]*"\s*:\s*\[\s*"')

#: Bytes read from the start of a file to sniff it.
HEAD_BYTES = 4096

# Keys marking a directory (or URL prefix) as a Zarr store, and a kerchunk parquet store.
_ZARR_KEYS = ("zarr.json", ".zgroup", ".zarray")
_ZMETADATA = ".zmetadata"


def sniff(head: bytes) -> str | None:
    """The format whose magic bytes start ``head``, or None.

    Parameters
    ----------
    head
        The first bytes of a file (at least 16; `HEAD_BYTES` lets kerchunk JSON be told
        from other JSON).

    Returns
    -------
    str or None
        One of `FORMATS` (a parquet file is "kerchunk": kerchunk's parquet references;
        a zip archive is "zip": a zipped Zarr store).
    """
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if head[:4] in _NETCDF3:
        return "netcdf3"
    if head[:4] in _TIFF:
        return "tiff"
    if head.startswith(_FITS):
        return "fits"
    if head.startswith(_GRIB):
        return "grib"
    if head.startswith(_HDF4):
        return "hdf4"
    if head.startswith(_PARQUET):
        return "kerchunk"
    if head.startswith(_ZIP):
        return "zip"  # a zipped Zarr store (the builder says so if it holds none)
    if head.startswith(_ENVI_HEADER) and head[4:5] in (b"\r", b"\n", b" ", b""):
        return "envi"
    text = head.lstrip()
    if text.startswith(b"<") and b"xml.opendap.org/dap/dmrpp" in text:
        return "dmrpp"  # an OPeNDAP DMR++ document (its namespace is declared up front)
    if text.startswith(b"{") and (
        b'"refs"' in text
        or b'"version"' in text
        or _REFS_META_KEY.search(text)
        or _REFS_FIRST_REFERENCE.match(text)
    ):
        return "kerchunk"
    return None


def envi_header_for(source: Source) -> Source | None:
    """The ENVI header of a raw data file: ``<file>.hdr`` or ``<stem>.hdr`` (either case)
    starting with ``ENVI``, or None."""
    stem, dot, ext = source.url.rpartition(".")
    names = [source.url + ".hdr", source.url + ".HDR"]
    if dot and "/" not in ext:
        names += [stem + ".hdr", stem + ".HDR"]
    for url in names:
        try:
            header = open_source(url, **source._obstore_kwargs)
            if header.read_range(0, len(_ENVI_HEADER)) == _ENVI_HEADER:
                return header
        except (FileNotFoundError, OSError):
            continue
    return None


def _hdf5_userblock_offsets(size: int) -> list[int]:
    """Where an HDF5 superblock may sit after a user block: 512, 1024, 2048, ... < size."""
    offsets = []
    at = 512
    while at + len(HDF5_SIGNATURE) <= size:
        offsets.append(at)
        at *= 2
    return offsets


def _describe(head: bytes) -> str:
    return repr(head[:16]) if head else "no bytes (empty file)"


def _directory_format(path: Path) -> str | None:
    """ "zarr", "kerchunk" or "icechunk" for a local directory, None if it is none of them."""
    if ((path / "repo").is_file() or (path / "refs").is_dir()) and (path / "snapshots").is_dir():
        return "icechunk"  # an Icechunk repository: its root object (1.x: refs/) and snapshots
    if any((path / key).is_file() for key in _ZARR_KEYS):
        return "zarr"
    zmeta = path / _ZMETADATA
    if zmeta.is_file():
        try:
            doc = orjson.loads(zmeta.read_bytes())
        except orjson.JSONDecodeError:
            return None
        return "kerchunk" if isinstance(doc, dict) and "record_size" in doc else "zarr"
    return None


def _remote_directory_format(url: str, obstore_kwargs: dict[str, Any]) -> str | None:
    """ "zarr", "kerchunk" or "icechunk" when ``url`` is a prefix holding Zarr /
    kerchunk-parquet keys or an Icechunk repository's ``repo`` object."""
    base = url.rstrip("/")
    for key in _ZARR_KEYS:
        try:
            open_source(f"{base}/{key}", **obstore_kwargs).size()
        except (FileNotFoundError, OSError):
            continue
        return "zarr"
    try:
        data = open_source(f"{base}/{_ZMETADATA}", **obstore_kwargs).read_range(0, 1 << 20)
    except (FileNotFoundError, OSError):
        try:
            open_source(f"{base}/repo", **obstore_kwargs).size()
        except (FileNotFoundError, OSError):
            return None
        return "icechunk"  # an Icechunk repository's root object
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return "kerchunk" if isinstance(doc, dict) and "record_size" in doc else "zarr"


def open_input(path_or_url: str | os.PathLike[str], **obstore_kwargs: Any) -> Source:
    """A `Source` for a file or a directory (Zarr store, kerchunk parquet) to build from.

    Unlike `open_source`, a local directory is accepted (its `Source` has the directory's
    ``file://`` URL and path; ``open()`` on it fails).

    Raises
    ------
    FileNotFoundError
        A local path that does not exist.
    """
    if isinstance(path_or_url, os.PathLike) or not is_absolute_url(str(path_or_url)):
        path = Path(path_or_url).expanduser().resolve()
        if path.is_dir() or path.is_file():
            # resolved already: `open_source` would resolve it again (a stat per component)
            return Source(path.as_uri(), str(path), {})
        return open_source(path)  # raises FileNotFoundError
    url = canonical_url(str(path_or_url))
    if url.startswith("file://"):
        local = Path(url_to_local_path(url))
        if local.is_dir():
            return Source(url, str(local), {})
    return open_source(url, **obstore_kwargs)


def detect_format(source: Source | str | os.PathLike[str], **obstore_kwargs: Any) -> str:
    """The format of a file or directory, from its magic bytes.

    Parameters
    ----------
    source
        A `Source`, local path or URL.  Directories / URL prefixes holding ``zarr.json``,
        ``.zgroup`` or ``.zarray`` are Zarr stores; one holding a kerchunk ``.zmetadata``
        (with ``record_size``) is a kerchunk parquet reference store.
    **obstore_kwargs
        Passed to obstore for URLs.

    Returns
    -------
    str
        One of `FORMATS`.

    Raises
    ------
    UnsupportedError
        Nothing recognisable; the message names the file and the bytes seen.
    FileNotFoundError
        A local path that does not exist.
    """
    if not isinstance(source, Source):
        source = open_input(source, **obstore_kwargs)
    if source.local_path is not None and os.path.isdir(source.local_path):
        fmt = _directory_format(Path(source.local_path))
        if fmt is None:
            raise UnsupportedError(
                f"{source.url}: a directory that is neither a Zarr store, kerchunk parquet "
                f"references nor an Icechunk repository (none of "
                f"{[*_ZARR_KEYS, _ZMETADATA, 'repo']} found)"
            )
        return fmt
    try:
        head = source.read_range(0, HEAD_BYTES)
    except FileNotFoundError:
        if source.local_path is None:
            fmt = _remote_directory_format(source.url, source._obstore_kwargs)
            if fmt is not None:
                return fmt
        raise
    fmt = sniff(head)
    if fmt is not None:
        return fmt
    size = len(head) if len(head) < HEAD_BYTES else source.size()
    for at in _hdf5_userblock_offsets(size):
        block = head[at : at + 8] if at + 8 <= len(head) else source.read_range(at, 8)
        if block == HDF5_SIGNATURE:
            return "hdf5"
    if envi_header_for(source) is not None:
        return "envi"  # raw image data, described by the header next to it
    raise UnsupportedError(
        f"{source.url}: unrecognised file format (first bytes {_describe(head)}); "
        f"known formats: {', '.join(FORMATS)}"
    )
