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

HDUs kerchunk cannot scan, and 64-bit unsigned images (no exact float path), are read with
astropy and kept inline, with a warning.
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
from zarr_manifest.errors import BuildError
from zarr_manifest.group import ManifestGroup

__all__ = ["build_fits", "fits_refs"]

# BITPIX -> stored (big-endian) dtype, as the FITS standard defines it
_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
# BITPIX -> (BZERO of the unsigned/signed convention, physical dtype)
_OFFSET_CONVENTION = {8: (-128.0, "i1"), 16: (32768.0, "<u2"), 32: (2147483648.0, "<u4")}


def _header_attrs(header: Any) -> dict[str, Any]:
    """A FITS header as JSON attributes (kerchunk's rule: non-scalars as strings)."""
    return {
        k: v if isinstance(v, bool | int | float | str) else str(v)
        for k, v in dict(header).items()
        if k not in ("COMMENT", "")
    }


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
    """(index, HDU) of the data-bearing HDUs, with headers read (data untouched)."""
    from astropy.io import fits

    handle: Any = source.local_path if source.local_path is not None else source.open()
    try:
        with fits.open(handle, lazy_load_hdus=False, do_not_scale_image_data=True) as hdul:
            return [
                (i, (h.name, h.header.copy(), h.is_image))
                for i, h in enumerate(hdul)
                if h.header.get("NAXIS", 0) > 0
            ]
    except OSError as e:
        raise BuildError(f"{source.url}: not a readable FITS file ({e})") from e


def _load_hdu(source: Source, index: int) -> np.ndarray:
    from astropy.io import fits

    handle: Any = source.local_path if source.local_path is not None else source.open()
    with fits.open(handle, memmap=False) as hdul:
        data = hdul[index].data
        arr = np.asarray(data)
        return arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.fields is None else arr.copy()


def fits_refs(
    source: Source, *, extension: Collection[int | str] | int | str | None = None
) -> tuple[dict[str, Any], dict[str, InlineArray], dict[str, Any]]:
    """kerchunk references for a FITS file's HDUs, plus the HDUs that had to be loaded.

    Returns
    -------
    refs, loaded, attributes
        Version 0 references; ``{name: InlineArray}`` of HDUs read with astropy; the primary
        header (root group attributes).

    Raises
    ------
    BuildError
        Not a FITS file, or an unknown extension.
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
            matches = [i for i, (name, _, _) in hdus if i == ext or name == ext]
            if not matches:
                raise BuildError(f"{source.url}: no HDU with data named or numbered {ext!r}")
            wanted.extend(m for m in matches if m not in wanted)
    raw = url_to_fsspec_path(source.url)
    primary = _primary_header(source)
    refs: dict[str, Any] = {
        ".zgroup": json.dumps({"zarr_format": 2}),
        ".zattrs": json.dumps(primary),
    }
    loaded: dict[str, InlineArray] = {}
    taken: set[str] = set()
    for index in wanted:
        hdu_name, header, is_image = by_index[index]
        name = hdu_name or str(index)
        if name in taken:
            name = f"{name}_{index}"
        taken.add(name)
        attrs = _header_attrs(header)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = process_file(raw, extension=[index])
        except Exception as e:  # kerchunk raises assorted errors on HDUs it cannot scan
            warnings.warn(
                f"{source.url}: HDU {index} cannot be referenced ({e}); loading it", stacklevel=3
            )
            loaded[name] = _loaded(source, index, attrs)
            continue
        out = {k: _decode_value(v) for k, v in out.items()}
        kname = hdu_name or str(index)
        zarray = json.loads(out[f"{kname}/.zarray"])
        zattrs = json.loads(out.get(f"{kname}/.zattrs", "{}"))
        if is_image and not _fix_scaling(zarray, attrs):
            loaded[name] = _loaded(source, index, attrs)
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


def _loaded(source: Source, index: int, attrs: dict[str, Any]) -> InlineArray:
    data = _load_hdu(source, index)
    dims = ["z", "y", "x"][-data.ndim :] if 0 < data.ndim <= 3 else None
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
        Arrays (HDU names, see the module notes) to leave out / read now and keep inline.
    extension
        HDUs to include, by index or name (default: every HDU with data).
    **options
        obstore options when ``source`` is a path or URL.

    Raises
    ------
    BuildError
        Not a FITS file; unknown extension, ``drop`` or ``load`` name; a ``group``.
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_fits: unexpected options {sorted(options)}")
    if group not in (None, "", "/"):
        raise BuildError(f"{source.url}: FITS files have no groups (asked for {group!r})")
    refs, loaded, attributes = fits_refs(source, extension=extension)
    virtual = {k[: -len("/.zarray")] for k in refs if k.endswith("/.zarray")}
    unknown = sorted((set(drop) | set(load)) - virtual - set(loaded))
    if unknown:
        raise BuildError(f"{source.url}: no HDU(s) {unknown} in the file (drop/load)")
    result = from_kerchunk_refs(
        refs,
        drop=[d for d in drop if d in virtual],
        load=[x for x in load if x in virtual],
        location=source.url,
    )
    for name, array in loaded.items():
        if name not in drop:
            result = insert_array(result, name, array)
    return result.replace(attributes=attributes)
