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

- tile-compressed images (``ZIMAGE``: gzip, Rice, HCOMPRESS, PLIO, quantised floats): their
  tiles live in a binary table's heap and need CFITSIO's decoders;
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
import os
import warnings
from collections.abc import Collection
from typing import Any

import numpy as np

from zarr_manifest.array import InlineArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.kerchunk import from_kerchunk_refs, insert_array, url_to_fsspec_path
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup

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


def _hdus(source: Source) -> list[tuple[int, Any]]:
    """(index, (name, header, kind, why)) of the data-bearing HDUs, headers read (data
    untouched); ``kind`` and ``why`` as `_classify` says."""
    from astropy.io import fits

    handle: Any = source.local_path if source.local_path is not None else source.open()
    try:
        with fits.open(handle, lazy_load_hdus=False, do_not_scale_image_data=True) as hdul:
            return [
                (i, (h.name, h.header.copy(), *_classify(h)))
                for i, h in enumerate(hdul)
                if h.header.get("NAXIS", 0) > 0
            ]
    except OSError as e:
        raise BuildError(f"{source.url}: not a readable FITS file ({e})") from e


def _classify(hdu: Any) -> tuple[str, str]:
    """How an HDU is built: ``("image"|"table", "")`` referenced in place, ``("load", why)``
    read with astropy as one array, ``("columns", why)`` read as a group of column arrays."""
    from astropy.io import fits

    header = hdu.header
    if isinstance(hdu, fits.CompImageHDU):
        return "load", f"tile-compressed image ({header.get('ZCMPTYPE', '?')})"
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
) -> tuple[dict[str, Any], dict[str, InlineArray | ManifestGroup], dict[str, Any]]:
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

    hdus = _hdus(source)
    by_index = {i: h for i, h in hdus}
    if extension is None:
        wanted = [i for i, _ in hdus]
    else:
        requested = [extension] if isinstance(extension, int | str) else list(extension)
        wanted = []
        for ext in requested:
            matches = [i for i, (name, *_) in hdus if i == ext or name == ext]
            if not matches:
                raise BuildError(f"{source.url}: no HDU with data named or numbered {ext!r}")
            wanted.extend(m for m in matches if m not in wanted)
    raw = url_to_fsspec_path(source.url)
    primary = _primary_header(source)
    refs: dict[str, Any] = {
        ".zgroup": json.dumps({"zarr_format": 2}),
        ".zattrs": json.dumps(primary),
    }
    loaded: dict[str, InlineArray | ManifestGroup] = {}
    taken: set[str] = set()
    for index in wanted:
        hdu_name, header, kind, why = by_index[index]
        name = hdu_name or str(index)
        if name in taken:
            name = f"{name}_{index}"
        taken.add(name)
        attrs = _header_attrs(header)
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
                out = process_file(raw, extension=[index])
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


def _primary_header(source: Source) -> dict[str, Any]:
    from astropy.io import fits

    handle: Any = source.local_path if source.local_path is not None else source.open()
    with fits.open(handle) as hdul:
        return _header_attrs(hdul[0].header)


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
