"""FITS -> `ManifestGroup`, through kerchunk's FITS scanner (``kerchunk.fits.process_file``).

FITS data units are uncompressed and big-endian, so every image and binary table HDU is one
contiguous block that kerchunk references as a single chunk; its references go through the
one translator (`zarr_manifest.builders.kerchunk.from_kerchunk_refs`).

Each HDU with data becomes an array named after the HDU (``PRIMARY``, ``SCI`` ...; its index
when it has no name, and ``NAME_<index>`` when the name is taken), with the HDU header as
attributes; the primary header is also the root group's attributes.

Two repairs of kerchunk's output (kerchunk 0.2.x with zarr 3):

- metadata values arrive as Python ``bytes`` reprs (``"b'{...}'"``) and are decoded;
- scaled images (``BSCALE``/``BZERO``) get the physical dtype and the right numcodecs
  ``fixedscaleoffset`` filter (kerchunk keeps the stored integer dtype and passes ``BSCALE``
  where numcodecs wants its inverse): unsigned integers stored with the FITS offset
  convention (``BZERO`` = 2**(bits-1), ``BSCALE`` = 1) decode exactly to ``uint16``/``uint32``
  (and ``BZERO`` = -128 bytes to ``int8``); other scalings decode to ``float64``.

Some HDUs have no exact virtual form; they are read with astropy (so their values are
astropy's) and kept inline, with a warning naming the HDU and why:

- tile-compressed images (``ZIMAGE``) other than integer Rice/GZIP_1/GZIP_2 images made of
  whole tiles (which are referenced tile by tile, see "tile-compressed images" below):
  HCOMPRESS, PLIO, quantised floats, scaled or BLANK pixels, edge tiles;
- integer images with ``BLANK`` (astropy turns blank pixels into NaN; no Zarr codec does);
- 64-bit unsigned images (no exact float path);
- random-groups HDUs, ASCII tables, and binary tables whose columns are not plain scalars
  or strings (array-valued ``TDIM``/repeat columns, logical, bit, scaled ``TSCAL``/``TZERO``
  columns): such an HDU becomes a *group* named after it with one array per column (astropy's
  converted values, first dimension ``row``); a plain binary table is one structured array;
- variable-length array columns (``P``/``Q``) cannot be stored at all: the HDU is refused
  with `UnsupportedError` unless the column is left out with ``drop=["<HDU>/<column>"]``;
- HDUs kerchunk cannot scan.
"""

from __future__ import annotations

import ast
import json
import math
import os
import warnings
from collections.abc import Collection
from typing import Any

import numpy as np

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.kerchunk import from_kerchunk_refs, insert_array, url_to_fsspec_path
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["build_fits", "fits_refs"]

# BITPIX -> stored (big-endian) dtype, as the FITS standard defines it
_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
# BITPIX -> (BZERO of the unsigned/signed convention, physical dtype)
_OFFSET_CONVENTION = {8: (-128.0, "i1"), 16: (32768.0, "<u2"), 32: (2147483648.0, "<u4")}


def _header_attrs(header: Any) -> dict[str, Any]:
    """A FITS header as JSON attributes (kerchunk's rule: non-scalars as strings; integers
    beyond 64 bits, which JSON readers cannot hold, as strings too)."""
    return {
        k: v if _json_scalar(v) else str(v)
        for k, v in dict(header).items()
        if k not in ("COMMENT", "")
    }


def _json_scalar(value: Any) -> bool:
    if isinstance(value, bool | float | str):
        return True
    return isinstance(value, int) and -(2**63) <= value < 2**64


def _decode_value(value: Any) -> Any:
    """A kerchunk FITS metadata value as JSON text (undoing a ``"b'...'"`` repr)."""
    if isinstance(value, str) and value[:2] in ("b'", 'b"'):
        try:
            raw = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        if isinstance(raw, bytes):
            return raw.decode()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _fix_scaling(zarray: dict[str, Any], attrs: dict[str, Any]) -> bool:
    """Rewrite a scaled image's metadata in place; False when it has no exact virtual form."""
    bitpix = int(attrs.get("BITPIX", 0))
    if bitpix not in _BITPIX or ("BSCALE" not in attrs and "BZERO" not in attrs):
        return True
    bscale = float(attrs.get("BSCALE", 1.0))
    bzero = float(attrs.get("BZERO", 0.0))
    stored = _BITPIX[bitpix]
    if bitpix < 0 and bscale == 1.0 and bzero == 0.0:
        zarray["dtype"], zarray["filters"] = stored, None
        return True
    convention = _OFFSET_CONVENTION.get(bitpix)
    if bscale == 1.0 and convention is not None and bzero == convention[0]:
        physical = convention[1]
        scale = 1.0
    elif bitpix == 64 and bscale == 1.0 and bzero == 2.0**63:
        return False  # uint64: the float path of fixedscaleoffset is not exact
    else:
        physical = "<f8"
        scale = 1.0 / bscale  # numcodecs decodes as stored / scale + offset
    zarray["dtype"] = physical
    zarray["fill_value"] = 0
    zarray["filters"] = [
        {
            "id": "fixedscaleoffset",
            "scale": scale,
            "offset": bzero,
            "dtype": physical,
            "astype": stored,
        }
    ]
    return True


def _hdus(hdul: Any) -> list[tuple[int, Any]]:
    """(index, (name, header, kind, why)) of the data-bearing HDUs of an open file (data
    untouched; the header is the file's own, not a copy); ``kind`` and ``why`` as
    `_classify` says."""
    return [
        (i, (h.name, h.header, *_classify(h)))
        for i, h in enumerate(hdul)
        if h.header.get("NAXIS", 0) > 0
    ]


def _open_headers(source: Source) -> Any:
    """The file opened with astropy for its headers: every HDU read (data untouched and
    unscaled).  One open serves the HDU list, the primary header and the plain references.

    Raises
    ------
    BuildError
        Not a FITS file.
    """
    from astropy.io import fits

    handle: Any = source.local_path if source.local_path is not None else source.open()
    try:
        return fits.open(handle, lazy_load_hdus=False, do_not_scale_image_data=True)
    except OSError as e:
        raise BuildError(f"{source.url}: not a readable FITS file ({e})") from e


def _classify(hdu: Any) -> tuple[str, str]:
    """How an HDU is built: ``("image"|"table", "")`` referenced in place, ``("load", why)``
    read with astropy as one array, ``("columns", why)`` read as a group of column arrays."""
    from astropy.io import fits

    header = hdu.header
    if isinstance(hdu, fits.CompImageHDU):
        return "load", f"tile-compressed image ({hdu.compression_type})"
    if isinstance(hdu, fits.GroupsHDU):
        return "columns", "random-groups HDU"
    if isinstance(hdu, fits.TableHDU):
        return "columns", "ASCII table"
    if isinstance(hdu, fits.BinTableHDU):
        for column in hdu.columns:
            why = _column_not_plain(column)
            if why:
                return "columns", f"column {column.name!r} is {why}"
        return "table", ""
    if hdu.is_image:
        if int(header.get("BITPIX", 0)) > 0 and "BLANK" in header:
            return "load", "integer image with BLANK"
        return "image", ""
    return "load", f"{type(hdu).__name__} HDU"


def _column_not_plain(column: Any) -> str:
    """Why a binary-table column cannot be a field of a referenced structured array ('' if
    it can: a scalar number or a string, stored as is)."""
    code = column.format.format
    repeat = column.format.repeat or 1
    if code in ("P", "Q") or "P" in str(column.format) or "Q" in str(column.format):
        return "variable-length"
    if code == "L":
        return "logical"
    if code == "X":
        return "a bit array"
    if column.bscale not in (None, 1) or column.bzero not in (None, 0):
        return "scaled (TSCAL/TZERO)"
    if code == "A":
        return "a string array" if column.dim else ""
    if repeat != 1 or column.dim:
        return "array-valued"
    return ""


def _load_hdu(source: Source, index: int) -> np.ndarray | None:
    from astropy.io import fits

    handle: Any = source.local_path if source.local_path is not None else source.open()
    with fits.open(handle, memmap=False) as hdul:
        data = hdul[index].data
        if data is None:
            return None
        arr = np.asarray(data)
        return arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.fields is None else arr.copy()


# ---- tile-compressed images ------------------------------------------------------------------
#
# A tile-compressed image (FITS tiled image convention, ``ZIMAGE = T``) is a binary table with
# one row per tile; the column ``COMPRESSED_DATA`` holds a heap descriptor (byte count, offset)
# of the tile's compressed bytes.  When every tile has the same shape (the image divides into
# whole tiles, as the default row-by-row tiling always does) and the pixels are integers
# stored as is, each tile is a Zarr chunk: Rice tiles decode with imagecodecs' ``rcomp``
# (CFITSIO's Rice coder), GZIP_1 tiles are gzip of the big-endian pixels, GZIP_2 tiles are
# gzip of the pixels' bytes shuffled by significance (numcodecs' ``shuffle``).  Everything
# else (quantised floats, BLANK/scaling, HCOMPRESS, PLIO, tiles stored uncompressed in other
# columns) is loaded with astropy.

_TILE_DTYPES = {8: "u1", 16: "i2", 32: "i4"}
_ZARR_INT = {"u1": "uint8", "i2": "int16", "i4": "int32"}


def _tile_codecs(
    ctype: str, dtype: np.dtype[Any], tile: tuple[int, ...], zvals: dict[str, Any]
) -> list[dict[str, Any]] | str:
    """The Zarr v3 codecs of one tile, or a reason why there are none."""
    big = {"name": "bytes", "configuration": {"endian": "big"}} if dtype.itemsize > 1 else None
    gzip = {"name": "gzip", "configuration": {"level": 5}}
    if ctype in ("RICE_1", "RICE_ONE"):
        # the convention's default BYTEPIX is 4, whatever BITPIX (CFITSIO then codes 16-bit
        # pixels as 32-bit ints, which would need a cast after decoding)
        bytepix = int(zvals.get("BYTEPIX", 4))
        if bytepix != dtype.itemsize:
            return f"Rice with BYTEPIX {bytepix} for {dtype.itemsize}-byte pixels"
        config: dict[str, Any] = {"shape": list(tile), "dtype": dtype.newbyteorder("=").str}
        config["nblock"] = int(zvals.get("BLOCKSIZE", 32))
        return [{"name": "numcodecs.imagecodecs_rcomp", "configuration": config}]
    if ctype in ("GZIP_1", "GZIP_2") and zvals.get("_TILE_ITEMSIZE") != dtype.itemsize:
        # CFITSIO may gzip 16-bit pixels as 32-bit ints; the first tile says which
        return f"{ctype} tiles of {zvals.get('_TILE_ITEMSIZE')}-byte pixels"
    if ctype == "GZIP_1":
        return [big or {"name": "bytes"}, gzip]
    if ctype == "GZIP_2":
        if big is None:
            return [{"name": "bytes"}, gzip]
        shuffle = {"name": "numcodecs.shuffle", "configuration": {"elementsize": dtype.itemsize}}
        return [big, shuffle, gzip]
    return f"{ctype} tiles"


def _tile_compressed(
    source: Source, index: int, attrs: dict[str, Any]
) -> tuple[ManifestArray | None, str]:
    """A tile-compressed image HDU referenced tile by tile, or (None, why not)."""
    from astropy.io import fits

    handle: Any = source.local_path if source.local_path is not None else source.open()
    with fits.open(handle, memmap=False, disable_image_compression=True) as hdul:
        table = hdul[index]
        hd = table.header
        ctype = str(hd.get("ZCMPTYPE", "?"))
        zbitpix = int(hd.get("ZBITPIX", 0))
        if zbitpix not in _TILE_DTYPES:
            return None, f"{ctype} tiles of BITPIX {zbitpix}"
        scaled = [k for k in ("BSCALE", "BZERO", "BLANK", "ZBLANK") if k in hd]
        if scaled:
            return None, f"{ctype} tiles with {'/'.join(scaled)}"
        if list(table.columns.names) != ["COMPRESSED_DATA"]:
            return None, f"{ctype} tiles in columns {list(table.columns.names)}"
        column_format = str(table.columns[0].format)
        if "PB" not in column_format and "QB" not in column_format:
            # descriptors count bytes only for byte columns (PLIO uses 16-bit words)
            return None, f"{ctype} tiles in a {column_format} column"
        naxis = int(hd["ZNAXIS"])
        dims = [int(hd[f"ZNAXIS{i}"]) for i in range(1, naxis + 1)]
        tiles = [int(hd.get(f"ZTILE{i}", dims[0] if i == 1 else 1)) for i in range(1, naxis + 1)]
        if any(d % t for d, t in zip(dims, tiles, strict=True)):
            return None, f"{ctype} tiles {tiles} do not divide the image {dims}"
        zvals = {}
        for i in range(1, 100):
            if f"ZNAME{i}" not in hd:
                break
            zvals[str(hd[f"ZNAME{i}"]).upper()] = hd.get(f"ZVAL{i}")
        dtype = np.dtype(">" + _TILE_DTYPES[zbitpix]) if zbitpix > 8 else np.dtype("u1")
        shape = tuple(reversed(dims))
        chunks = tuple(reversed(tiles))
        descriptors = np.asarray(table.data).view(np.ndarray)["COMPRESSED_DATA"]
        heap = table.fileinfo()["datLoc"] + int(hd.get("THEAP", hd["NAXIS1"] * hd["NAXIS2"]))
        if ctype.startswith("GZIP") and len(descriptors):
            zvals["_TILE_ITEMSIZE"] = _gzip_tile_itemsize(
                source, heap + int(descriptors[0, 1]), int(descriptors[0, 0]), math.prod(tiles)
            )
    codecs = _tile_codecs(ctype, dtype, chunks, zvals)
    if isinstance(codecs, str):
        return None, codecs
    grid = tuple(s // c for s, c in zip(shape, chunks, strict=True))
    if descriptors.shape != (math.prod(grid), 2) or (descriptors[:, 0] <= 0).any():
        return None, f"{ctype} tiles that are missing or stored elsewhere"
    manifest = ChunkManifest.from_arrays(
        paths=source.url,
        offsets=(heap + descriptors[:, 1].astype(np.int64)).reshape(grid),
        lengths=descriptors[:, 0].astype(np.int64).reshape(grid),
    )
    doc = {
        "shape": list(shape),
        "data_type": _ZARR_INT[_TILE_DTYPES[zbitpix]],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": codecs,
        "attributes": attrs,
        "dimension_names": _dims(len(shape)),
    }
    return ManifestArray(doc, manifest), ""


def _gzip_tile_itemsize(source: Source, offset: int, length: int, pixels: int) -> int | None:
    """Bytes per pixel of a gzip-compressed tile (its decompressed size over its pixels)."""
    import gzip
    import zlib

    data = source.read_range(offset, length)
    try:
        size = len(gzip.decompress(data))
    except (OSError, EOFError, zlib.error):
        return None
    return size // pixels if size % pixels == 0 else None


def _dims(ndim: int) -> list[str]:
    return ["z", "y", "x"][-ndim:] if ndim <= 3 else [f"dim_{k}" for k in range(ndim)]


def _column_names(names: list[str]) -> list[str]:
    """Column names as array names: no ``/``, none empty, none twice."""
    out: list[str] = []
    for i, raw in enumerate(names):
        name = (raw or "").replace("/", "_").strip() or f"col{i}"
        if name in out:
            name = f"{name}_{i}"
        out.append(name)
    return out


def _load_columns(
    source: Source, index: int, hdu_name: str, attrs: dict[str, Any], drop: Collection[str]
) -> ManifestGroup | None:
    """A table or random-groups HDU read with astropy: a group with one array per column
    (None when it holds no data).

    Raises
    ------
    UnsupportedError
        A variable-length array column that ``drop`` does not leave out.
    """
    from astropy.io import fits

    handle: Any = source.local_path if source.local_path is not None else source.open()
    arrays: dict[str, InlineArray] = {}
    with fits.open(handle, memmap=False) as hdul:
        hdu = hdul[index]
        data = hdu.data
        if data is None:  # a header that promises rows the file does not hold
            return None
        formats = [str(c.format) for c in hdu.columns]
        for i, name in enumerate(_column_names(list(hdu.columns.names))):
            if f"{hdu_name}/{name}" in drop:
                continue
            if "P" in formats[i] or "Q" in formats[i]:
                raise UnsupportedError(
                    f"{source.url}: HDU {index} ({hdu_name}) column {name!r} holds "
                    f"variable-length arrays, which Zarr cannot store; leave it out with "
                    f"drop=[{hdu_name + '/' + name!r}]"
                )
            values = np.asarray(data.field(i))
            if values.dtype.kind in "iufcb" or values.dtype.kind in "SU":
                values = values.astype(values.dtype.newbyteorder("="))
            dims = ["row"] + [f"{name}_{k}" for k in range(1, values.ndim)]
            arrays[name] = InlineArray.from_numpy(values, dimension_names=dims)
    return ManifestGroup(arrays=arrays, attributes=attrs)


def fits_refs(
    source: Source,
    *,
    extension: Collection[int | str] | int | str | None = None,
    drop: Collection[str] = (),
) -> tuple[dict[str, Any], dict[str, InlineArray | ManifestArray | ManifestGroup], dict[str, Any]]:
    """kerchunk references for a FITS file's HDUs, plus the HDUs that had to be loaded.

    Parameters
    ----------
    source
        The file.
    extension
        HDUs to include, by index or name (default: every HDU with data).
    drop
        Columns of loaded tables to leave out, as ``"<HDU>/<column>"``.

    Returns
    -------
    refs, loaded, attributes
        Version 0 references; ``{name: InlineArray}`` of HDUs read with astropy (a
        `ManifestGroup` of column arrays for tables read so); the primary header (root group
        attributes).

    Raises
    ------
    BuildError
        Not a FITS file, or an unknown extension.
    UnsupportedError
        A variable-length array column not left out by ``drop``.
    """
    from kerchunk.fits import process_file

    raw = url_to_fsspec_path(source.url)
    with _open_headers(source) as hdul:
        try:
            hdus = _hdus(hdul)
        except OSError as e:
            raise BuildError(f"{source.url}: not a readable FITS file ({e})") from e
        wanted = _wanted(source, hdus, extension)
        # the headers as attributes before `_plain_refs`, which fixes invalid cards in place
        # (and astropy parses a card's value once: the headers are not copied)
        primary = _header_attrs(hdul[0].header)
        by_index = {i: h for i, h in hdus}
        # (the primary HDU's are the same header's, unchanged since)
        attributes = {i: dict(primary) if i == 0 else _header_attrs(by_index[i][1]) for i in wanted}
        plain = _plain_refs(hdul, raw, [i for i in wanted if by_index[i][2] in ("image", "table")])
    refs: dict[str, Any] = {
        ".zgroup": json.dumps({"zarr_format": 2}),
        ".zattrs": json.dumps(primary),
    }
    loaded: dict[str, InlineArray | ManifestArray | ManifestGroup] = {}
    taken: set[str] = set()
    for index in wanted:
        hdu_name, _, kind, why = by_index[index]
        attrs = attributes[index]
        name = hdu_name or str(index)
        if name in taken:
            name = f"{name}_{index}"
        taken.add(name)
        if kind == "load" and why.startswith("tile-compressed"):
            tiled, why_not = _tile_compressed(source, index, attrs)
            if tiled is not None:
                loaded[name] = tiled
                continue
            why = f"{why}: {why_not}"
        if kind in ("load", "columns"):
            warnings.warn(
                f"{source.url}: HDU {index} ({name}) cannot be referenced in place ({why}); "
                "loading it with astropy",
                stacklevel=3,
            )
            node = (
                _load_columns(source, index, name, attrs, drop)
                if kind == "columns"
                else _loaded(source, index, attrs)
            )
            if node is not None:
                loaded[name] = node
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = plain.get(index) or process_file(raw, extension=[index])
        except Exception as e:  # kerchunk raises assorted errors on HDUs it cannot scan
            warnings.warn(
                f"{source.url}: HDU {index} cannot be referenced ({e}); loading it", stacklevel=3
            )
            if (array := _loaded(source, index, attrs)) is not None:
                loaded[name] = array
            continue
        out = {k: _decode_value(v) for k, v in out.items()}
        kname = hdu_name or str(index)
        zarray = json.loads(out[f"{kname}/.zarray"])
        zattrs = {
            k: str(v) if isinstance(v, int) and not _json_scalar(v) else v
            for k, v in json.loads(out.get(f"{kname}/.zattrs", "{}")).items()
        }
        if kind == "image" and not _fix_scaling(zarray, attrs):
            if (array := _loaded(source, index, attrs)) is not None:
                loaded[name] = array
            continue
        refs[f"{name}/.zarray"] = json.dumps(zarray)
        refs[f"{name}/.zattrs"] = json.dumps(zattrs)
        for k, v in out.items():
            head, _, rest = k.partition("/")
            if head == kname and rest and not rest.startswith(".z"):
                refs[f"{name}/{rest}"] = v
    return refs, loaded, primary


def _wanted(
    source: Source, hdus: list[tuple[int, Any]], extension: Collection[int | str] | int | str | None
) -> list[int]:
    """Indices of the HDUs ``extension`` asks for (default: all of ``hdus``)."""
    if extension is None:
        return [i for i, _ in hdus]
    requested = [extension] if isinstance(extension, int | str) else list(extension)
    wanted: list[int] = []
    for ext in requested:
        matches = [i for i, (name, *_) in hdus if i == ext or name == ext]
        if not matches:
            raise BuildError(f"{source.url}: no HDU with data named or numbered {ext!r}")
        wanted.extend(m for m in matches if m not in wanted)
    return wanted


def _plain_refs(hdul: Any, raw: str, indices: list[int]) -> dict[int, dict[str, Any]]:
    """kerchunk's references (``process_file(raw, extension=[i])``) of images and binary
    tables without variable-length columns, from the file already open as ``hdul``
    (`_open_headers`).

    The same output as kerchunk's, which opens the file once per HDU and sets each header
    card as its own Zarr attribute update (one event-loop round trip per card: most of the
    time of a FITS file).  An HDU that does not come out (an error) is left to kerchunk.
    """
    import zarr
    from kerchunk.fits import BITPIX2DTYPE

    out: dict[int, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index in indices:
            try:
                out[index] = _plain_hdu_refs(hdul[index], index, raw, zarr, BITPIX2DTYPE)
            except Exception:
                continue
    return out


def _plain_hdu_refs(
    hdu: Any, index: int, raw: str, zarr: Any, bitpix_dtypes: dict[int, str]
) -> dict[str, Any]:
    import numcodecs
    from astropy.io import fits

    hdu.header.__str__()  # fixes invalid cards, as kerchunk does
    attrs = dict(hdu.header)
    kwargs: dict[str, Any] = {"compressor": None, "filters": None}
    if hdu.is_image:
        nax = hdu.header["NAXIS"]
        shape = tuple(int(hdu.header[f"NAXIS{i}"]) for i in range(nax, 0, -1))
        dtype: Any = bitpix_dtypes[hdu.header["BITPIX"]]
        length = math.prod(shape) * np.dtype(dtype).itemsize
        if "BSCALE" in hdu.header or "BZERO" in hdu.header:
            kwargs["filters"] = [
                numcodecs.FixedScaleOffset(
                    offset=float(hdu.header.get("BZERO", 0)),
                    scale=float(hdu.header.get("BSCALE", 1)),
                    astype=dtype,
                    dtype=float,
                )
            ]
    elif isinstance(hdu, fits.BinTableHDU) and not any(
        c.format.startswith(("P", "Q")) for c in hdu.columns
    ):
        dtype = hdu.columns.dtype.newbyteorder(">")
        shape = (int(hdu.header["NAXIS2"]),)
        length = dtype.itemsize * shape[0]
    else:
        raise TypeError(f"HDU {index} is neither an image nor a plain binary table")
    name = hdu.name or str(index)
    if hdu.is_image:
        if 0 in shape:
            raise ValueError(f"HDU {index} has an empty axis")  # zarr refuses it: kerchunk too
        # what zarr writes for this array (tests compare with kerchunk's), without its
        # event-loop round trips
        zdtype = np.dtype(dtype)
        filters = kwargs["filters"]
        zarray = json.dumps(
            {
                "shape": list(shape),
                "chunks": list(shape),
                "dtype": zdtype.str,
                "fill_value": 0.0 if zdtype.kind == "f" else 0,
                "order": "C",
                "filters": [f.get_config() for f in filters] if filters else None,
                "dimension_separator": ".",
                "compressor": None,
                "zarr_format": 2,
            }
        )
    else:
        store: dict[str, Any] = {}
        group = zarr.open_group(store=zarr.storage.MemoryStore(store), zarr_format=2)
        group.create_array(name=name, dtype=dtype, shape=shape, chunks=shape, **kwargs)
        zarray = store[f"{name}/.zarray"].to_bytes().decode()
    zattrs: dict[str, Any] = {
        k: str(v) if not isinstance(v, int | float | str) else v
        for k, v in attrs.items()
        if k != "COMMENT"
    }
    zattrs["_ARRAY_DIMENSIONS"] = ["z", "y", "x"][-len(shape) :]
    return {
        f"{name}/.zarray": zarray,
        f"{name}/.zattrs": json.dumps(zattrs),
        f"{name}/{'.'.join(['0'] * len(shape))}": [raw, hdu.fileinfo()["datLoc"], length],
    }


def _loaded(source: Source, index: int, attrs: dict[str, Any]) -> InlineArray | None:
    """An image HDU read with astropy (None when it holds no data)."""
    data = _load_hdu(source, index)
    if data is None:
        return None
    dims = (
        ["z", "y", "x"][-data.ndim :] if data.ndim <= 3 else [f"dim_{k}" for k in range(data.ndim)]
    )
    return InlineArray.from_numpy(data, dimension_names=dims, attributes=attrs)


def build_fits(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    extension: Collection[int | str] | int | str | None = None,
    **options: Any,
) -> ManifestGroup:
    """Reference the image and table HDUs of a FITS file in place.

    Parameters
    ----------
    source
        The file: a `Source`, local path or URL (remote URLs need an fsspec backend for the
        scheme, which kerchunk's scanner opens the file with).
    group
        Must be None: FITS files have no groups.
    drop, load
        Arrays (HDU names, see the module notes) to leave out / read now and keep inline;
        ``drop`` also takes columns of tables that are loaded as groups
        (``"<HDU>/<column>"``, e.g. a variable-length column).
    extension
        HDUs to include, by index or name (default: every HDU with data).
    **options
        obstore options when ``source`` is a path or URL.

    Raises
    ------
    BuildError
        Not a FITS file; unknown extension, ``drop`` or ``load`` name; a ``group``.
    UnsupportedError
        A table with a variable-length array column (see the module notes).
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_fits: unexpected options {sorted(options)}")
    if group not in (None, "", "/"):
        raise BuildError(f"{source.url}: FITS files have no groups (asked for {group!r})")
    refs, loaded, attributes = fits_refs(source, extension=extension, drop=drop)
    virtual = {k[: -len("/.zarray")] for k in refs if k.endswith("/.zarray")}
    columns = {
        f"{name}/{c}"
        for name, node in loaded.items()
        if isinstance(node, ManifestGroup)
        for c in node.arrays
    }
    dropped_columns = {d for d in drop if "/" in d and d.split("/", 1)[0] in loaded}
    unknown = sorted((set(drop) - dropped_columns | set(load)) - virtual - set(loaded) - columns)
    if unknown:
        raise BuildError(f"{source.url}: no HDU(s) {unknown} in the file (drop/load)")
    result = from_kerchunk_refs(
        refs,
        drop=[d for d in drop if d in virtual],
        load=[x for x in load if x in virtual],
        location=source.url,
    )
    for name, node in loaded.items():
        if name in drop:
            continue
        if isinstance(node, ManifestGroup):
            result = result.replace(groups={**result.groups, name: node})
        else:
            result = insert_array(result, name, node)
    return result.replace(attributes=attributes)
