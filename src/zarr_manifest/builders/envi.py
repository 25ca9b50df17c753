"""ENVI raster (a raw binary image and its ``.hdr`` text header) -> `ManifestGroup`.

An "ENVI Standard" file is ``bands x lines x samples`` values of one data type, stored raw
after ``header offset`` bytes, in one of three interleaves: band-sequential (``bsq``: band,
line, sample), band-interleaved-by-line (``bil``: line, band, sample) or by pixel (``bip``:
line, sample, band).  The header, a separate text file, says all of that; it is parsed here
(the format is "``key = value``" lines, ``{...}`` values may span lines).

The result is one array, ``data``, of shape ``(band, y, x)`` whatever the interleave.  Why
one axis order: the same image saved as bsq or bil is then the same array, so files combine
whatever their interleave, and a reader never needs to know what interleave is.  The on-disk
order is given back by Zarr v3's standard ``transpose`` codec (bil: order ``[1, 0, 2]``,
bip: ``[1, 2, 0]``), which costs one reordering copy per chunk read.

Chunks are runs of whole lines, the only blocks that are contiguous in all three
interleaves: one band's lines for bsq (``(1, k, samples)``), all bands' lines for bil/bip
(``(bands, k, samples)``); ``k`` is the largest divisor of ``lines`` that keeps a chunk near
``target_chunk_bytes`` (a divisor, so the last chunk is whole: a regular Zarr grid reads a
full chunk's bytes).  Small images are one chunk per band (bsq) or one chunk.

A whole-file gzip image (``file compression = 1``) is one gzip chunk.  Refused with
`UnsupportedError` (the message names the header and the field): file types other than
`RAW_FILE_TYPES` (spectral libraries, TIFF...), frame offsets, unknown data types,
interleaves or byte orders, and an offset inside a compressed file.  Header fields other
than the layout are the array's attributes (``{a, b}`` lists as lists, numbers as
numbers; ``description`` and ``coordinate system string`` as text).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection
from typing import Any

import numpy as np
from zarr.core.dtype import get_data_type_from_native_dtype

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import bytes_codec
from zarr_manifest.builders.detect import envi_header_for
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = [
    "DATA_EXTENSIONS",
    "DEFAULT_TARGET_CHUNK_BYTES",
    "ENVI_MAGIC",
    "RAW_FILE_TYPES",
    "build_envi",
    "parse_envi_header",
]

#: The first bytes of every ENVI header file.
ENVI_MAGIC = b"ENVI"

#: The ``file type`` values of a raw image: ENVI's own, its class images (spectral's
#: ``save_classification`` writes them), and the bare "ENVI" that Specim's recorder writes.
#: Other types (spectral libraries, or a header beside a TIFF, NITF...) are refused.
RAW_FILE_TYPES = ("ENVI Standard", "ENVI Classification", "ENVI")
_RAW_FILE_TYPES = {t.lower() for t in RAW_FILE_TYPES}

#: Chunks (runs of whole lines) are kept below about this many bytes.
DEFAULT_TARGET_CHUNK_BYTES = 16 * 2**20

#: Extensions of the data file next to ``name.hdr`` (tried in this order, then upper case;
#: the empty one first), as GDAL and ``spectral`` look for it.
DATA_EXTENSIONS = ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".sli", ".hyspex")

# ENVI "data type" codes (ENVI header documentation) -> numpy type, without byte order
_DATA_TYPES = {
    1: "u1",
    2: "i2",
    3: "i4",
    4: "f4",
    5: "f8",
    6: "c8",
    9: "c16",
    12: "u2",
    13: "u4",
    14: "i8",
    15: "u8",
}

# interleave -> (stored axes as indices of (band, line, sample), the transpose codec order)
_INTERLEAVES = {"bsq": None, "bil": [1, 0, 2], "bip": [1, 2, 0]}

# fields that describe the byte layout (not kept as attributes: the array says them)
_LAYOUT_FIELDS = frozenset(
    {
        "samples",
        "lines",
        "bands",
        "header offset",
        "data type",
        "interleave",
        "byte order",
        "file type",
        "file compression",
    }
)

# braced fields that are free text (commas are not separators)
_TEXT_FIELDS = frozenset({"description", "coordinate system string"})

_LINE = re.compile(r"^\s*([^=]+?)\s*=\s*(.*)$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_envi_header(text: str, *, where: str = "header") -> dict[str, str]:
    """An ENVI header's fields: lower-case keys, values as text (a ``{...}`` value joined
    onto one line, braces kept).

    Parameters
    ----------
    text
        The header file's text.
    where
        Named in errors (the header's URL).

    Raises
    ------
    BuildError
        The text does not start with ``ENVI``, or a ``{`` value is never closed.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "ENVI":
        raise BuildError(f"{where}: not an ENVI header (the first line is not 'ENVI')")
    fields: dict[str, str] = {}
    i = 1
    while i < len(lines):
        match = _LINE.match(lines[i])
        i += 1
        if match is None or lines[i - 1].lstrip().startswith(";"):
            continue  # blank lines and comments
        key, value = match.group(1).strip().lower(), match.group(2).strip()
        if value.startswith("{"):
            parts = [value]
            while "}" not in parts[-1]:
                if i >= len(lines):
                    raise BuildError(f"{where}: the value of {key!r} opens '{{' but never closes")
                parts.append(lines[i].strip())
                i += 1
            value = " ".join(parts)
        fields[key] = value
    return fields


def _find_data(header: Source, interleave: str) -> Source:
    """The data file next to a header (``name.hdr`` -> ``name``, ``name.img`` ...)."""
    stem = header.url[: -len(".hdr")] if header.url.lower().endswith(".hdr") else None
    if stem is None:
        raise BuildError(
            f"{header.url}: an ENVI header not named '*.hdr'; pass the data file instead"
        )
    extensions = [*DATA_EXTENSIONS, f".{interleave}"]
    for ext in dict.fromkeys([*extensions, *(e.upper() for e in extensions)]):
        try:
            data = open_source(stem + ext, **header._obstore_kwargs)
            data.size()
        except (FileNotFoundError, OSError):
            continue
        return data
    raise BuildError(
        f"{header.url}: no ENVI data file found next to the header (tried the extensions "
        f"{list(extensions)}); open the data file itself"
    )


def _text(fields: dict[str, str], key: str) -> str | None:
    value = fields.get(key)
    return value.strip("{} ") if value is not None else None


def _integer(fields: dict[str, str], key: str, where: str, default: int | None) -> int:
    value = _text(fields, key)
    if value is None:
        if default is None:
            raise BuildError(f"{where}: the ENVI header has no {key!r} field")
        return default
    try:
        number = int(value)
    except ValueError:
        raise BuildError(f"{where}: ENVI field {key!r} = {value!r} is not an integer") from None
    if number < 0:
        raise BuildError(f"{where}: ENVI field {key!r} = {number} is negative")
    return number


def _attribute(key: str, value: str) -> Any:
    """A header value as an attribute: a ``{a, b}`` list as a list (free text fields as one
    string), numbers as numbers."""
    body = value.strip()
    if body.startswith("{"):
        body = body[1 : body.rindex("}")].strip()
        if key in _TEXT_FIELDS:
            return body
        items = [item.strip() for item in body.split(",")] if body else []
    else:
        items = [body]
    if items and all(_NUMBER.match(v) for v in items):
        values: list[Any] = [int(v) if re.fullmatch(r"[+-]?\d+", v) else float(v) for v in items]
    else:
        values = items
    return values if value.strip().startswith("{") else values[0]


def _lines_per_chunk(lines: int, line_bytes: int, target: int) -> int:
    """The largest divisor of ``lines`` whose run of lines fits ``target`` bytes (>= 1)."""
    limit = max(1, target // max(line_bytes, 1))
    if lines <= limit:
        return max(lines, 1)
    best = 1
    for d in range(1, math.isqrt(lines) + 1):
        if lines % d == 0:
            for cand in (d, lines // d):
                if best < cand <= limit:
                    best = cand
    return best


def _layout(
    header_url: str, fields: dict[str, str]
) -> tuple[tuple[int, int, int], np.dtype[Any], str, int, bool]:
    """(bands, lines, samples), stored dtype, interleave, header offset, gzip?"""
    where = header_url
    file_type = (_text(fields, "file type") or "ENVI Standard").strip()
    if " ".join(file_type.lower().split()) not in _RAW_FILE_TYPES:
        raise UnsupportedError(
            f"{where}: ENVI file type {file_type!r} is not a raw image "
            f"({', '.join(repr(t) for t in RAW_FILE_TYPES)})"
        )
    for key in ("major frame offsets", "minor frame offsets"):
        if key in fields and re.search(r"[1-9]", fields[key]):
            raise UnsupportedError(f"{where}: ENVI {key!r} (framed data) cannot be referenced")
    shape = tuple(_integer(fields, k, where, None) for k in ("bands", "lines", "samples"))
    code = _integer(fields, "data type", where, None)
    if code not in _DATA_TYPES:
        known = sorted(_DATA_TYPES)
        raise UnsupportedError(f"{where}: ENVI data type {code} is not one of {known}")
    interleave = (_text(fields, "interleave") or "bsq").strip().lower()
    if interleave not in _INTERLEAVES:
        raise UnsupportedError(f"{where}: ENVI interleave {interleave!r} is not bsq, bil or bip")
    # 'byte order' is mandatory for multi-byte types: guessing the machine's order would
    # read every value wrong on the other kind of machine
    order = _integer(fields, "byte order", where, 0 if code == 1 else None)
    if order not in (0, 1):
        raise UnsupportedError(f"{where}: ENVI byte order {order} is neither 0 nor 1")
    dtype = np.dtype(_DATA_TYPES[code]).newbyteorder(">" if order else "<")
    offset = _integer(fields, "header offset", where, 0)
    compression = _integer(fields, "file compression", where, 0)
    if compression not in (0, 1):
        raise UnsupportedError(f"{where}: ENVI file compression {compression} is not gzip (1)")
    if compression and offset:
        raise UnsupportedError(
            f"{where}: a header offset ({offset}) inside a gzip-compressed ENVI file cannot "
            "be referenced"
        )
    return (shape[0], shape[1], shape[2]), dtype, interleave, offset, bool(compression)


def build_envi(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    header: Source | str | os.PathLike[str] | None = None,
    target_chunk_bytes: int = DEFAULT_TARGET_CHUNK_BYTES,
    **options: Any,
) -> ManifestGroup:
    """Reference an ENVI raster's image in place, as the array ``data`` (band, y, x).

    Parameters
    ----------
    source
        The data file or its ``.hdr`` header (`Source`, local path or URL).  Given the data
        file, the header is ``<file>.hdr`` or ``<stem>.hdr``; given the header, the data
        file is ``<stem>`` or ``<stem>.img`` / ``.dat`` / ``.raw`` ... (`DATA_EXTENSIONS`).
    group
        Must be None, "" or "/": an ENVI file has no groups.
    drop, load
        ``["data"]`` to leave the image out / read it now and keep it inline.
    header
        The header, when it is not next to the data file under one of those names.
    target_chunk_bytes
        Chunks (runs of whole lines) stay below about this size.
    **options
        obstore options when ``source`` is a path or URL.

    Returns
    -------
    ManifestGroup
        The array ``data`` (dimensions ``band``, ``y``, ``x``; attributes: the header's
        descriptive fields); group attributes empty.

    Raises
    ------
    BuildError
        No header (or no data file) found, a malformed header, or a data file shorter than
        the image; the message names the file.
    UnsupportedError
        A header feature with no virtual form (see the module notes).
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_envi: unexpected options {sorted(options)}")
    if group not in (None, "", "/"):
        raise BuildError(f"{source.url}: ENVI files have no groups (asked for {group!r})")
    if target_chunk_bytes < 1:
        raise ValueError(f"target_chunk_bytes must be positive, got {target_chunk_bytes}")
    unknown = sorted((set(drop) | set(load)) - {"data"})
    if unknown:
        raise BuildError(f"{source.url}: no array(s) {unknown} in the file (drop/load)")
    if header is not None:
        header_source = header if isinstance(header, Source) else open_source(header, **options)
        data_source: Source | None = source
    elif source.read_range(0, len(ENVI_MAGIC)) == ENVI_MAGIC:
        header_source, data_source = source, None
    else:
        found = envi_header_for(source)
        if found is None:
            raise BuildError(f"{source.url}: no ENVI header ({source.url}.hdr) next to the file")
        header_source, data_source = found, source
    text = header_source.read_range(0, header_source.size()).decode("latin-1")
    fields = parse_envi_header(text, where=header_source.url)
    shape, dtype, interleave, offset, gzip = _layout(header_source.url, fields)
    if data_source is None:
        data_source = _find_data(header_source, interleave)
    if "data" in drop:
        return ManifestGroup()
    attributes = {k: _attribute(k, v) for k, v in fields.items() if k not in _LAYOUT_FIELDS}
    bands, lines, samples = shape
    nbytes = bands * lines * samples * dtype.itemsize
    size = data_source.size()
    if not gzip and size < offset + nbytes:
        raise BuildError(
            f"{data_source.url}: the ENVI data file has {size} bytes, fewer than the "
            f"{offset + nbytes} its header ({header_source.url}) describes"
        )
    order = _INTERLEAVES[interleave]
    if gzip:
        chunks = shape
        offsets = np.zeros((1, 1, 1), dtype=np.int64)
        lengths = np.full((1, 1, 1), size, dtype=np.int64)
    elif interleave == "bsq":
        k = _lines_per_chunk(lines, samples * dtype.itemsize, target_chunk_bytes)
        chunks = (1, k, samples)
        step = k * samples * dtype.itemsize
        grid = np.arange(bands)[:, None] * lines * samples * dtype.itemsize
        offsets = (offset + grid + np.arange(max(lines // k, 1))[None, :] * step)[..., None]
        lengths = np.full(offsets.shape, step, dtype=np.int64)
    else:
        k = _lines_per_chunk(lines, bands * samples * dtype.itemsize, target_chunk_bytes)
        chunks = (bands, k, samples)
        step = k * bands * samples * dtype.itemsize
        offsets = (offset + np.arange(max(lines // k, 1)) * step)[None, :, None]
        lengths = np.full(offsets.shape, step, dtype=np.int64)
    native = dtype.newbyteorder("=")
    zdtype = get_data_type_from_native_dtype(native)
    codecs: list[dict[str, Any]] = []
    if order is not None:
        codecs.append({"name": "transpose", "configuration": {"order": order}})
    codecs.append(bytes_codec(dtype, variable="data"))
    if gzip:
        codecs.append({"name": "gzip", "configuration": {"level": 6}})
    doc = {
        "shape": list(shape),
        "data_type": zdtype.to_json(zarr_format=3),
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(c, 1) for c in chunks]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": zdtype.to_json_scalar(zdtype.default_scalar(), zarr_format=3),
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": ["band", "y", "x"],
    }
    if 0 in shape:
        manifest = ChunkManifest.empty(tuple(0 if s == 0 else 1 for s in shape))
    else:
        manifest = ChunkManifest.from_arrays(
            paths=data_source.url, offsets=offsets.astype(np.int64), lengths=lengths
        )
    array: ManifestArray | InlineArray = ManifestArray(doc, manifest)
    if "data" in load:
        array = InlineArray(doc, _read(data_source, shape, dtype, interleave, offset, gzip))
    return ManifestGroup(arrays={"data": array})


def _read(
    source: Source,
    shape: tuple[int, int, int],
    dtype: np.dtype[Any],
    interleave: str,
    offset: int,
    gzip: bool,
) -> np.ndarray:
    """The image as a (band, y, x) array in native byte order."""
    import zlib

    nbytes = math.prod(shape) * dtype.itemsize
    if gzip:
        raw = zlib.decompress(source.read_range(0, source.size()), wbits=31)
    else:
        raw = source.read_range(offset, nbytes)
    if len(raw) < nbytes:
        raise BuildError(f"{source.url}: the ENVI image ends after {len(raw)} of {nbytes} bytes")
    bands, lines, samples = shape
    stored = {
        "bsq": (bands, lines, samples),
        "bil": (lines, bands, samples),
        "bip": (lines, samples, bands),
    }[interleave]
    data = np.frombuffer(raw[:nbytes], dtype=dtype).reshape(stored)
    back = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (2, 0, 1)}[interleave]
    return np.ascontiguousarray(data.transpose(back)).astype(dtype.newbyteorder("="))
