"""FITS -> `ManifestGroup`: each HDU's data referenced in place, from the file's own headers.

The headers are read from the file's 2880-byte blocks (`_fits_headers`: astropy's values,
without opening the file with astropy), and the Zarr v3 metadata is built here directly.
FITS data units are uncompressed and big-endian, so every image and plain binary table is
one contiguous chunk.

Each HDU with data becomes an array named after the HDU (``PRIMARY``, ``SCI`` ...; its index
when it has no name, and ``NAME_<index>`` when the name is taken), with the HDU header as
attributes (a tile-compressed image's: the image header astropy gives it); the primary
header is also the root group's attributes.

Scaled images (``BSCALE``/``BZERO``) get the physical dtype and numcodecs'
``fixedscaleoffset`` filter: unsigned integers stored with the FITS offset convention
(``BZERO`` = 2**(bits-1), ``BSCALE`` = 1) decode exactly to ``uint16``/``uint32`` (and
``BZERO`` = -128 bytes to ``int8``); other scalings decode to ``float64``.

Some HDUs have no exact virtual form; they are read with astropy (so their values are
astropy's) and kept inline, with a warning naming the HDU and why:

- tile-compressed images (``ZIMAGE``) other than integer Rice/GZIP_1/GZIP_2 images made of
  whole tiles (which are referenced tile by tile, see "tile-compressed images" below):
  HCOMPRESS, PLIO, quantised floats, BLANK pixels, edge tiles;
- integer images with ``BLANK`` (astropy turns blank pixels into NaN; no Zarr codec does);
- 64-bit unsigned images (no exact float path);
- random-groups HDUs, ASCII tables, and binary tables whose columns are not plain scalars
  or strings (array-valued ``TDIM``/repeat columns, logical, bit, scaled ``TSCAL``/``TZERO``
  columns): such an HDU becomes a *group* named after it with one array per column (astropy's
  converted values, first dimension ``row``); a plain binary table is one structured array;
- variable-length array columns (``P``/``Q``) cannot be stored at all: the HDU is refused
  with `UnsupportedError` unless the column is left out with ``drop=["<HDU>/<column>"]``;
- extensions of other types.

Only those HDUs are handed to astropy, each from its own bytes.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Collection
from typing import Any, BinaryIO

import numpy as np

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._fits_headers import (
    BLOCK,
    FitsHDU,
    compressed_image_header,
    read_hdus,
)
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import v2_codecs_to_v3, v3_array_document
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["build_fits"]

# BITPIX -> stored (big-endian) dtype, as the FITS standard defines it
_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
# BITPIX -> (BZERO of the unsigned/signed convention, physical dtype)
_OFFSET_CONVENTION = {8: (-128.0, "i1"), 16: (32768.0, "<u2"), 32: (2147483648.0, "<u4")}
# numpy dtype -> Zarr v3 data type name, for images
_ZARR_TYPES = {
    "|u1": "uint8",
    ">i2": "int16",
    ">i4": "int32",
    ">i8": "int64",
    ">f4": "float32",
    ">f8": "float64",
    "<u2": "uint16",
    "<u4": "uint32",
    "|i1": "int8",
    "<f8": "float64",
}
# binary table TFORM codes of plain scalar columns -> numpy dtype (strings: S<repeat>)
_TFORM = re.compile(r"(?P<repeat>^[0-9]*)(?P<format>[LXBIJKAEDCMPQ])(?P<option>[!-~]*)$", re.I)
_COLUMN_DTYPES = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
_COLUMN_DTYPES |= {"C": ">c8", "M": ">c16"}


def _header_attrs(header: dict[str, Any]) -> dict[str, Any]:
    """A FITS header as JSON attributes (non-scalars as strings; integers beyond 64 bits,
    which JSON readers cannot hold, as strings too; no COMMENT or blank-keyword cards)."""
    return {
        k: v if _json_scalar(v) else str(v) for k, v in header.items() if k not in ("COMMENT", "")
    }


def _json_scalar(value: Any) -> bool:
    if isinstance(value, bool | float | str):
        return True
    return isinstance(value, int) and -(2**63) <= value < 2**64


def _dims(ndim: int) -> list[str]:
    return ["z", "y", "x"][-ndim:] if ndim <= 3 else [f"dim_{k}" for k in range(ndim)]


# ---- classification --------------------------------------------------------------------------


def _classify(hdu: FitsHDU) -> tuple[str, str]:
    """How an HDU is built: ``("image"|"table"|"compressed", "")`` referenced in place,
    ``("load", why)`` read with astropy as one array, ``("columns", why)`` read as a group of
    column arrays."""
    kind = hdu.kind
    header = hdu.header
    if kind == "compressed":
        return "compressed", f"tile-compressed image ({header.get('ZCMPTYPE')})"
    if kind == "groups":
        return "columns", "random-groups HDU"
    if kind == "table":
        return "columns", "ASCII table"
    if kind == "bintable":
        for i in range(1, _int(header.get("TFIELDS", 0)) + 1):
            why = _column_not_plain(header, i)
            if why:
                return "columns", f"column {header.get(f'TTYPE{i}', '')!r} is {why}"
        return "table", ""
    if kind == "image":
        if _int(header.get("BITPIX", 0)) > 0 and "BLANK" in header:
            return "load", "integer image with BLANK"
        return "image", ""
    return "load", f"{str(header.get('XTENSION', '?')).rstrip()} extension"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _column_not_plain(header: dict[str, Any], i: int) -> str:
    """Why binary-table column ``i`` cannot be a field of a referenced structured array
    ('' if it can: a scalar number or a string, stored as is)."""
    tform = str(header.get(f"TFORM{i}", "")).strip()
    m = _TFORM.match(tform)
    if m is None:
        return f"of format {tform!r}"
    code = m.group("format").upper()
    repeat = int(m.group("repeat")) if m.group("repeat") else 1
    if code in ("P", "Q"):
        return "variable-length"
    if code == "L":
        return "logical"
    if code == "X":
        return "a bit array"
    if header.get(f"TSCAL{i}", 1) != 1 or header.get(f"TZERO{i}", 0) != 0:
        return "scaled (TSCAL/TZERO)"
    if m.group("option"):
        return f"of format {tform!r}"
    dim = header.get(f"TDIM{i}")
    if code == "A":
        return "a string array" if dim else ""
    if (repeat or 1) != 1 or dim:
        return "array-valued"
    return ""


def _table_dtype(header: dict[str, Any]) -> np.dtype[Any] | None:
    """The big-endian row dtype of a plain binary table (None when its columns do not make
    one: names missing or repeated, a width other than ``NAXIS1``)."""
    names: list[str] = []
    formats: list[str] = []
    for i in range(1, _int(header.get("TFIELDS", 0)) + 1):
        name = header.get(f"TTYPE{i}")
        m = _TFORM.match(str(header.get(f"TFORM{i}", "")).strip())
        if not isinstance(name, str) or not name or name in names or m is None:
            return None
        code = m.group("format").upper()
        repeat = int(m.group("repeat")) if m.group("repeat") else 1
        if code == "A":
            if repeat < 1:
                return None
            formats.append(f"S{repeat}")
        else:
            formats.append(_COLUMN_DTYPES[code])
        names.append(name)
    if not names:
        return None
    dtype = np.dtype({"names": names, "formats": formats})
    return dtype if dtype.itemsize == header.get("NAXIS1") else None


# ---- referenced HDUs -------------------------------------------------------------------------


def _scaling(
    header: dict[str, Any], stored: str, bitpix: int
) -> tuple[str, list[dict[str, Any]] | None]:
    """(physical dtype, numcodecs filters) of an image whose pixels are ``stored`` (BITPIX
    ``bitpix``), or ("", None) when it has no exact virtual form (uint64)."""
    if "BSCALE" not in header and "BZERO" not in header:
        return stored, None
    bscale = float(header.get("BSCALE", 1.0))
    bzero = float(header.get("BZERO", 0.0))
    if bitpix < 0 and bscale == 1.0 and bzero == 0.0:
        return stored, None
    convention = _OFFSET_CONVENTION.get(bitpix)
    if bscale == 1.0 and convention is not None and bzero == convention[0]:
        physical = convention[1]
        scale = 1.0
    elif bitpix == 64 and bscale == 1.0 and bzero == 2.0**63:
        return "", None  # uint64: the float path of fixedscaleoffset is not exact
    else:
        physical = "<f8"
        scale = 1.0 / bscale  # numcodecs decodes as stored / scale + offset
    config = {"id": "fixedscaleoffset", "scale": scale, "offset": bzero}
    return physical, [{**config, "dtype": physical, "astype": stored}]


def _image(hdu: FitsHDU, url: str, attrs: dict[str, Any]) -> ManifestArray | None:
    """A plain image HDU as one chunk (None: it has no exact virtual form)."""
    header = hdu.header
    stored = _BITPIX[_int(header.get("BITPIX"))]
    shape = [int(header[f"NAXIS{i}"]) for i in range(hdu.naxis, 0, -1)]
    physical, filters = _scaling(header, stored, _int(header.get("BITPIX")))
    if not physical:
        return None
    dtype = np.dtype(physical)
    codecs = v2_codecs_to_v3(stored, "C", filters, None)
    doc = v3_array_document(
        shape=shape,
        data_type=_ZARR_TYPES[dtype.str],
        chunks=shape,
        fill_value=0.0 if dtype.kind == "f" else 0,
        codecs=codecs,
        attributes=attrs,
        dimension_names=list(_dims(len(shape))),
    )
    return _one_chunk(doc, url, hdu, math.prod(shape) * np.dtype(stored).itemsize)


def _table(hdu: FitsHDU, url: str, attrs: dict[str, Any]) -> ManifestArray | None:
    """A plain binary table as one structured chunk (None: no row dtype, see
    `_table_dtype`)."""
    from zarr.core.dtype import get_data_type_from_native_dtype

    dtype = _table_dtype(hdu.header)
    if dtype is None:
        return None
    rows = int(hdu.header["NAXIS2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zdtype = get_data_type_from_native_dtype(dtype)
        data_type = zdtype.to_json(zarr_format=3)
        fill = zdtype.to_json_scalar(zdtype.default_scalar(), zarr_format=3)
    doc = v3_array_document(
        shape=[rows],
        data_type=data_type,
        chunks=[rows],
        fill_value=fill,
        codecs=v2_codecs_to_v3(dtype, "C", None, None),
        attributes=attrs,
        dimension_names=["x"],
    )
    return _one_chunk(doc, url, hdu, rows * dtype.itemsize)


def _empty(hdu: FitsHDU) -> bool:
    """Whether an image or table has an axis of length 0 (and so no data)."""
    return any(_int(hdu.header.get(f"NAXIS{i}")) == 0 for i in range(1, hdu.naxis + 1))


def _empty_image(hdu: FitsHDU, attrs: dict[str, Any]) -> InlineArray:
    """An image with an axis of length 0: no values, so nothing to reference (zarr
    refuses zero-length chunks) or read."""
    header = hdu.header
    stored = _BITPIX[_int(header.get("BITPIX"))]
    shape = tuple(_int(header.get(f"NAXIS{i}")) for i in range(hdu.naxis, 0, -1))
    physical = _scaling(header, stored, _int(header.get("BITPIX")))[0] or "<u8"
    values = np.zeros(shape, dtype=np.dtype(physical).newbyteorder("="))
    return InlineArray.from_numpy(values, dimension_names=_dims(len(shape)), attributes=attrs)


def _one_chunk(doc: dict[str, Any], url: str, hdu: FitsHDU, length: int) -> ManifestArray:
    """An array whose one chunk is the HDU's data."""
    grid = (1,) * len(doc["shape"])
    manifest = ChunkManifest.from_arrays(
        paths=url,
        offsets=np.full(grid, hdu.data_offset, dtype=np.int64),
        lengths=np.full(grid, length, dtype=np.int64),
    )
    return ManifestArray(doc, manifest)


# ---- tile-compressed images ------------------------------------------------------------------
#
# A tile-compressed image (FITS tiled image convention, ``ZIMAGE = T``) is a binary table with
# one row per tile; the column ``COMPRESSED_DATA`` holds a heap descriptor (byte count, offset)
# of the tile's compressed bytes.  When every tile has the same shape (the image divides into
# whole tiles, as the default row-by-row tiling always does) and the pixels are integers
# stored as is, each tile is a Zarr chunk: Rice tiles decode with imagecodecs' ``rcomp``
# (CFITSIO's Rice coder), GZIP_1 tiles are gzip of the big-endian pixels, GZIP_2 tiles are
# gzip of the pixels' bytes shuffled by significance (numcodecs' ``shuffle``); BSCALE/BZERO
# are the plain images' ``fixedscaleoffset`` filter.  Everything else (quantised floats,
# BLANK, HCOMPRESS, PLIO, tiles stored uncompressed in other columns) is loaded with
# astropy.  The descriptors are read from the table itself: astropy would decompress the
# image to open it.

_TILE_DTYPES = {8: "u1", 16: "i2", 32: "i4"}
_ZARR_INT = {"u1": "uint8", "i2": "int16", "i4": "int32"}
_DESCRIPTOR_COLUMN = re.compile(r"1?([PQ])B(\(\d*\))?$")


def _tile_codecs(
    ctype: str, dtype: np.dtype[Any], tile: tuple[int, ...], zvals: dict[str, Any]
) -> list[dict[str, Any]] | str:
    """The Zarr v3 codecs of one tile, or a reason why there are none.

    A tile may hold its pixels as wider integers than the image (CFITSIO Rice-codes 16-bit
    pixels as 32-bit ones by default, and gzips them so too): they are cast back to the
    image's type after decoding (numcodecs' ``astype``), as astropy assigns them.
    """
    if ctype in ("RICE_1", "RICE_ONE"):
        # the convention's default BYTEPIX is 4, whatever BITPIX
        itemsize = int(zvals.get("BYTEPIX", 4))
        if itemsize not in (1, 2, 4):
            return f"Rice with BYTEPIX {itemsize}"
    elif ctype in ("GZIP_1", "GZIP_2"):
        # the first tile's decompressed size says (astropy and CFITSIO decide so too)
        itemsize = zvals.get("_TILE_ITEMSIZE") or 0
        if itemsize not in (1, 2, 4, 8) or (itemsize == 1 and dtype.itemsize > 1):
            return f"{ctype} tiles of {zvals.get('_TILE_ITEMSIZE')}-byte pixels"
    else:
        return f"{ctype} tiles"
    stored = np.dtype(f"i{itemsize}") if itemsize > 1 or dtype.itemsize > 1 else dtype
    codecs: list[dict[str, Any]] = []
    if stored.itemsize != dtype.itemsize:
        cast = {"encode_dtype": stored.str, "decode_dtype": dtype.newbyteorder("=").str}
        codecs.append({"name": "numcodecs.astype", "configuration": cast})
    if ctype in ("RICE_1", "RICE_ONE"):
        config: dict[str, Any] = {"shape": list(tile), "dtype": stored.newbyteorder("=").str}
        config["nblock"] = int(zvals.get("BLOCKSIZE", 32))
        return [*codecs, {"name": "numcodecs.imagecodecs_rcomp", "configuration": config}]
    if stored.itemsize > 1:
        codecs.append({"name": "bytes", "configuration": {"endian": "big"}})
    else:
        codecs.append({"name": "bytes"})
    if ctype == "GZIP_2" and stored.itemsize > 1:
        shuffle = {"elementsize": stored.itemsize}
        codecs.append({"name": "numcodecs.shuffle", "configuration": shuffle})
    return [*codecs, {"name": "gzip", "configuration": {"level": 5}}]


def _tile_compressed(
    f: BinaryIO, hdu: FitsHDU, url: str, attrs: dict[str, Any]
) -> tuple[ManifestArray | None, str]:
    """A tile-compressed image HDU referenced tile by tile, or (None, why not)."""
    hd = hdu.header
    ctype = str(hd.get("ZCMPTYPE", "?"))
    zbitpix = _int(hd.get("ZBITPIX", 0))
    if zbitpix not in _TILE_DTYPES:
        return None, f"{ctype} tiles of BITPIX {zbitpix}"
    blank = [k for k in ("BLANK", "ZBLANK") if k in hd]
    if blank:
        return None, f"{ctype} tiles with {'/'.join(blank)}"
    columns = [hd.get(f"TTYPE{i}") for i in range(1, _int(hd.get("TFIELDS", 0)) + 1)]
    if columns != ["COMPRESSED_DATA"]:
        return None, f"{ctype} tiles in columns {columns}"
    column_format = str(hd.get("TFORM1", "")).strip()
    descriptor = _DESCRIPTOR_COLUMN.match(column_format.upper())
    if descriptor is None:
        # descriptors count bytes only for byte columns (PLIO uses 16-bit words)
        return None, f"{ctype} tiles in a {column_format} column"
    naxis = hdu.naxis
    dims = [_int(hd.get(f"ZNAXIS{i}")) for i in range(1, naxis + 1)]
    tiles = [_int(hd.get(f"ZTILE{i}", dims[0] if i == 1 else 1)) for i in range(1, naxis + 1)]
    if 0 in dims or 0 in tiles or any(d % t for d, t in zip(dims, tiles, strict=True)):
        return None, f"{ctype} tiles {tiles} do not divide the image {dims}"
    zvals = {}
    for i in range(1, 100):
        if f"ZNAME{i}" not in hd:
            break
        zvals[str(hd[f"ZNAME{i}"]).upper()] = hd.get(f"ZVAL{i}")
    dtype = np.dtype(">" + _TILE_DTYPES[zbitpix]) if zbitpix > 8 else np.dtype("u1")
    shape = tuple(reversed(dims))
    chunks = tuple(reversed(tiles))
    grid = tuple(s // c for s, c in zip(shape, chunks, strict=True))
    width, rows = _int(hd.get("NAXIS1")), _int(hd.get("NAXIS2"))
    item = ">i4" if descriptor.group(1) == "P" else ">i8"
    if width != 2 * np.dtype(item).itemsize or rows != math.prod(grid):
        return None, f"{ctype} tiles that are missing or stored elsewhere"
    f.seek(hdu.data_offset)
    raw = f.read(width * rows)
    if len(raw) != width * rows:
        return None, f"{ctype} tile table cut short by the end of the file"
    descriptors = np.frombuffer(raw, dtype=item).reshape(rows, 2).astype(np.int64)
    if (descriptors[:, 0] <= 0).any():
        return None, f"{ctype} tiles that are missing or stored elsewhere"
    heap = hdu.data_offset + _int(hd.get("THEAP", width * rows))
    if ctype.startswith("GZIP"):
        f.seek(heap + int(descriptors[0, 1]))
        first = f.read(int(descriptors[0, 0]))
        zvals["_TILE_ITEMSIZE"] = _gzip_tile_itemsize(first, math.prod(tiles))
    codecs = _tile_codecs(ctype, dtype, chunks, zvals)
    if isinstance(codecs, str):
        return None, codecs
    # BSCALE/BZERO as for a plain image, on the pixels the tile codecs give (big-endian
    # after a ``bytes`` codec, native after a cast or Rice)
    layout = dtype.str if codecs[0]["name"] == "bytes" else dtype.newbyteorder("=").str
    physical, filters = _scaling(hd, layout, zbitpix)
    if not physical:
        return None, f"{ctype} tiles of unsigned 64-bit pixels"
    for config in filters or ():
        name = "numcodecs." + config.pop("id")
        codecs.insert(0, {"name": name, "configuration": config})
    manifest = ChunkManifest.from_arrays(
        paths=url,
        offsets=(heap + descriptors[:, 1]).reshape(grid),
        lengths=descriptors[:, 0].reshape(grid),
    )
    doc = v3_array_document(
        shape=list(shape),
        data_type=_ZARR_TYPES[np.dtype(physical).str] if filters else _ZARR_INT[dtype.str[1:]],
        chunks=chunks,
        fill_value=0.0 if physical == "<f8" else 0,
        codecs=codecs,
        attributes=attrs,
        dimension_names=list(_dims(len(shape))),
    )
    return ManifestArray(doc, manifest), ""


def _gzip_tile_itemsize(data: bytes, pixels: int) -> int | None:
    """Bytes per pixel of a gzip-compressed tile (its decompressed size over its pixels)."""
    import gzip
    import zlib

    try:
        size = len(gzip.decompress(data))
    except (OSError, EOFError, zlib.error):
        return None
    return size // pixels if size % pixels == 0 else None


# ---- HDUs read with astropy ------------------------------------------------------------------

# a primary header without data, put before an extension HDU's bytes for astropy
_PRIMARY_STUB = (
    "".join(
        card.ljust(80)
        for card in (
            "SIMPLE  =                    T",
            "BITPIX  =                    8",
            "NAXIS   =                    0",
            "EXTEND  =                    T",
            "END",
        )
    )
    .ljust(BLOCK)
    .encode("ascii")
)


def _astropy_hdu(source: Source, hdu: FitsHDU) -> tuple[Any, Any]:
    """(HDU list, HDU) of one HDU read by astropy from its own bytes (the file is not
    walked again; close the list when done)."""
    from astropy.io import fits

    padded = -(-hdu.data_size // BLOCK) * BLOCK
    raw = source.read_range(hdu.header_offset, hdu.data_offset - hdu.header_offset + padded)
    # the option fits.open sets (unsigned integers by the BZERO convention as such)
    options = {"uint": fits.conf.enable_uint}
    if hdu.index == 0:
        hdul = fits.HDUList.fromstring(raw, **options)
        return hdul, hdul[0]
    hdul = fits.HDUList.fromstring(_PRIMARY_STUB + raw, **options)
    return hdul, hdul[1]


def _loaded(source: Source, hdu: FitsHDU, attrs: dict[str, Any]) -> InlineArray | None:
    """An HDU's data read with astropy as one array (None when it holds no data)."""
    hdul, astropy_hdu = _astropy_hdu(source, hdu)
    with hdul:
        data = astropy_hdu.data
        if data is None:
            return None
        arr = np.asarray(data)
        arr = arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.fields is None else arr.copy()
    return InlineArray.from_numpy(arr, dimension_names=_dims(arr.ndim), attributes=attrs)


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
    source: Source, hdu: FitsHDU, hdu_name: str, attrs: dict[str, Any], drop: Collection[str]
) -> ManifestGroup | None:
    """A table or random-groups HDU read with astropy: a group with one array per column
    (None when it holds no data).

    Raises
    ------
    UnsupportedError
        A variable-length array column that ``drop`` does not leave out.
    """
    arrays: dict[str, InlineArray] = {}
    hdul, astropy_hdu = _astropy_hdu(source, hdu)
    with hdul:
        data = astropy_hdu.data
        if data is None:  # a header that promises rows the file does not hold
            return None
        formats = [str(c.format) for c in astropy_hdu.columns]
        for i, name in enumerate(_column_names(list(astropy_hdu.columns.names))):
            if f"{hdu_name}/{name}" in drop:
                continue
            if "P" in formats[i] or "Q" in formats[i]:
                raise UnsupportedError(
                    f"{source.url}: HDU {hdu.index} ({hdu_name}) column {name!r} holds "
                    f"variable-length arrays, which Zarr cannot store; leave it out with "
                    f"drop=[{hdu_name + '/' + name!r}]"
                )
            values = np.asarray(data.field(i))
            if values.dtype.kind in "iufcb" or values.dtype.kind in "SU":
                values = values.astype(values.dtype.newbyteorder("="))
            dims = ["row"] + [f"{name}_{k}" for k in range(1, values.ndim)]
            arrays[name] = InlineArray.from_numpy(values, dimension_names=dims)
    return ManifestGroup(arrays=arrays, attributes=attrs)


def _read_referenced(array: ManifestArray, source: Source) -> InlineArray:
    """A referenced array's values (``load``), its chunks decoded through zarr."""
    import json

    import zarr
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    doc = array.metadata.to_dict()
    store = {"zarr.json": proto.buffer.from_bytes(json.dumps(doc).encode())}
    manifest = array.manifest
    with source.open() as f:
        for index in np.ndindex(manifest.shape_chunk_grid):
            f.seek(int(manifest.offsets[index]))
            length = int(manifest.lengths[index])
            data = f.read(length)
            if len(data) != length:
                raise BuildError(f"{source.url}: the file ends inside chunk {index}")
            store["c/" + "/".join(map(str, index))] = proto.buffer.from_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = zarr.open_array(zarr.storage.MemoryStore(store), mode="r")[...]
    return InlineArray.from_numpy(
        np.asarray(values),
        dimension_names=array.dimension_names,
        attributes=array.attributes,
    )


# ---- the builder -----------------------------------------------------------------------------


def _wanted(
    source: Source, hdus: list[FitsHDU], extension: Collection[int | str] | int | str | None
) -> list[FitsHDU]:
    """The HDUs ``extension`` asks for (default: all of ``hdus``)."""
    if extension is None:
        return hdus
    requested = [extension] if isinstance(extension, int | str) else list(extension)
    wanted: list[FitsHDU] = []
    for ext in requested:
        matches = [h for h in hdus if h.index == ext or h.name == ext]
        if not matches:
            raise BuildError(f"{source.url}: no HDU with data named or numbered {ext!r}")
        wanted.extend(m for m in matches if m not in wanted)
    return wanted


def _build_hdu(
    source: Source,
    f: BinaryIO,
    hdu: FitsHDU,
    name: str,
    attrs: dict[str, Any],
    drop: Collection[str],
) -> InlineArray | ManifestArray | ManifestGroup | None:
    """One HDU as a node: referenced when it can be, else read with astropy (warning why)."""
    kind, why = _classify(hdu)
    node: ManifestArray | None = None
    try:
        if kind == "image" and _int(hdu.header.get("BITPIX")) not in _BITPIX:
            kind, why = "load", f"BITPIX {hdu.header.get('BITPIX')!r}"
        if kind == "image" and _empty(hdu):
            return _empty_image(hdu, attrs)
        if kind == "table" and _empty(hdu):
            return _loaded(source, hdu, attrs)  # astropy's empty table, if any
        if kind == "image":
            node = _image(hdu, source.url, attrs)
            # None: no exact virtual form (uint64), read as astropy reads it
            return node if node is not None else _loaded(source, hdu, attrs)
        if kind == "table":
            node = _table(hdu, source.url, attrs)
            if node is not None:
                return node
            kind, why = "load", "a binary table whose columns make no row type"
        if kind == "compressed":
            node, why_not = _tile_compressed(f, hdu, source.url, attrs)
            if node is not None:
                return node
            kind, why = "load", f"{why}: {why_not}"
    except (KeyError, ValueError, TypeError) as e:
        kind, why = "load", f"a malformed header ({e})"
    warnings.warn(
        f"{source.url}: HDU {hdu.index} ({name}) cannot be referenced in place ({why}); "
        "loading it with astropy",
        stacklevel=4,
    )
    if kind == "columns":
        return _load_columns(source, hdu, name, attrs, drop)
    return _loaded(source, hdu, attrs)


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
        The file: a `Source`, local path or URL.
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
    nodes: dict[str, InlineArray | ManifestArray | ManifestGroup | None] = {}
    with source.open() as f:
        try:
            hdus = read_hdus(f, source.url)
        except OSError as e:
            raise BuildError(f"{source.url}: not a readable FITS file ({e})") from e
        primary = _header_attrs(hdus[0].header)
        taken: set[str] = set()
        for hdu in _wanted(source, [h for h in hdus if h.naxis > 0], extension):
            name = hdu.name or str(hdu.index)
            if name in taken:
                name = f"{name}_{hdu.index}"
            taken.add(name)
            if name in drop:
                nodes[name] = None
                continue
            if hdu.index == 0:
                attrs = dict(primary)
            elif hdu.kind == "compressed":
                attrs = _header_attrs(compressed_image_header(hdu))
            else:
                attrs = _header_attrs(hdu.header)
            nodes[name] = _build_hdu(source, f, hdu, name, attrs, drop)
    columns = {
        f"{name}/{c}"
        for name, node in nodes.items()
        if isinstance(node, ManifestGroup)
        for c in node.arrays
    }
    groups = {name for name, node in nodes.items() if isinstance(node, ManifestGroup)}
    dropped_columns = {d for d in drop if "/" in d and d.split("/", 1)[0] in groups}
    unknown = sorted((set(drop) - dropped_columns | set(load)) - set(nodes) - columns)
    if unknown:
        raise BuildError(f"{source.url}: no HDU(s) {unknown} in the file (drop/load)")
    arrays: dict[str, InlineArray | ManifestArray] = {}
    subgroups: dict[str, ManifestGroup] = {}
    for name, node in nodes.items():
        if node is None or name in drop:
            continue
        if isinstance(node, ManifestGroup):
            subgroups[name] = node
        elif isinstance(node, ManifestArray) and name in load:
            arrays[name] = _read_referenced(node, source)
        else:
            arrays[name] = node
    return ManifestGroup(arrays=arrays, groups=subgroups, attributes=primary)
