"""netCDF3 (classic CDF-1, 64-bit offset CDF-2, 64-bit data CDF-5) -> `ManifestGroup`.

The classic format is a small big-endian header (dimensions, attributes, variables with the
byte offset ``begin`` of their data) followed by uncompressed data, so every variable can be
referenced in place with the ``bytes`` codec (``endian: big``):

- a non-record variable is one contiguous block at ``begin``; it becomes one chunk, or
  several chunks of whole rows when it is large, so that reads can go in parallel;
- a record variable (first dimension unlimited) holds one slab per record, the slab of
  record ``r`` at ``begin + r * recsize``; each slab is a chunk (or several, as above) —
  except when it is the only record variable: then ``recsize`` is its slab, the records are
  one contiguous block, and chunks span many records like a non-record variable's rows.
  Several records cannot share a chunk otherwise: a chunk is one byte range, and no Zarr
  codec takes every ``recsize``-th slab out of one.  So `open_virtual` loads the record
  variables of a few bytes per record by default (`zarr_manifest.builders.has_tiny_rows`);
  loaded record variables are read together, only their slabs, in coalesced requests.

The header is parsed here with `struct`/numpy, following the NetCDF Classic Format
Specification (NUG appendix "File Format Specifications").
"""

from __future__ import annotations

import functools
import math
import struct
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.metadata.v3 import ArrayV3Metadata, RegularChunkGridMetadata, parse_codecs

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import xarray_fill_value_attribute
from zarr_manifest.errors import BuildError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["DEFAULT_TARGET_CHUNK_BYTES", "Netcdf3Header", "build_netcdf3", "parse_netcdf3_header"]

#: Non-record variables (and record slabs) larger than this are split into several chunks.
DEFAULT_TARGET_CHUNK_BYTES = 16 * 2**20

# Header list tags.
_NC_DIMENSION = 0x0A
_NC_VARIABLE = 0x0B
_NC_ATTRIBUTE = 0x0C

# nc_type -> (big-endian numpy dtype, default fill value of the netCDF library).
_NC_TYPES: dict[int, tuple[str, Any]] = {
    1: ("i1", -127),  # NC_BYTE
    2: ("S1", b""),  # NC_CHAR (fill "\0", which a null-terminated byte string reads as b"")
    3: (">i2", -32767),  # NC_SHORT
    4: (">i4", -2147483647),  # NC_INT
    5: (">f4", 9.9692099683868690e36),  # NC_FLOAT
    6: (">f8", 9.9692099683868690e36),  # NC_DOUBLE
    7: ("u1", 255),  # NC_UBYTE (CDF-5)
    8: (">u2", 65535),  # NC_USHORT (CDF-5)
    9: (">u4", 4294967295),  # NC_UINT (CDF-5)
    10: (">i8", -9223372036854775806),  # NC_INT64 (CDF-5)
    11: (">u8", 18446744073709551614),  # NC_UINT64 (CDF-5)
}
_CDF5_ONLY_TYPES = frozenset({7, 8, 9, 10, 11})

_FIRST_READ = 64 * 1024


class _ShortHeader(Exception):
    """The header continues past the bytes read so far (carries how many are needed)."""

    def __init__(self, needed: int):
        super().__init__(needed)
        self.needed = needed


class _Corrupt(Exception):
    """The header is malformed (message says where)."""


@dataclass(frozen=True, slots=True)
class Netcdf3Dimension:
    """A dimension; ``length`` is 0 for the record (unlimited) dimension."""

    name: str
    length: int


@dataclass(frozen=True, slots=True)
class Netcdf3Variable:
    """A variable as declared in the header.

    Attributes
    ----------
    dimids
        Indices into the header's dimensions.
    nc_type
        The netCDF external type code (1 = byte ... 11 = uint64).
    vsize
        The header's (padded) size per record or of the whole variable; may be clipped to
        2**32 - 1 for large variables in CDF-2 files, so sizes are recomputed from shapes.
    begin
        Byte offset of the variable's data (of its first record for record variables).
    """

    name: str
    dimids: tuple[int, ...]
    attributes: dict[str, Any]
    nc_type: int
    vsize: int
    begin: int


@dataclass(slots=True)
class Netcdf3Header:
    """A parsed netCDF3 header.

    Attributes
    ----------
    version
        1 (classic), 2 (64-bit offset) or 5 (64-bit data).
    numrecs
        The number of records, or -1 when the header says "streaming" (unknown).
    header_size
        The header's length in bytes.
    """

    version: int
    numrecs: int
    dimensions: list[Netcdf3Dimension] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    variables: list[Netcdf3Variable] = field(default_factory=list)
    header_size: int = 0


class _Cursor:
    """Reads big-endian header fields from a byte buffer that may end too early."""

    __slots__ = ("buf", "pos", "total", "wide_counts", "wide_offsets")

    def __init__(self, buf: bytes, version: int, total: int):
        self.buf = buf
        self.pos = 4
        self.total = total  # bytes in the whole file: no count can exceed it
        self.wide_counts = version == 5  # NON_NEG is INT64 in CDF-5
        self.wide_offsets = version in (2, 5)  # OFFSET is INT64 in CDF-2 and CDF-5

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise _ShortHeader(end)
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack(">q", self.take(8))[0])

    def non_neg(self, what: str) -> int:
        at = self.pos
        value = self.int64() if self.wide_counts else self.int32()
        if value < 0:
            raise _Corrupt(f"negative {what} ({value}) at byte {at}")
        return value

    def offset(self, what: str) -> int:
        at = self.pos
        value = self.int64() if self.wide_offsets else self.int32()
        if value < 0:
            raise _Corrupt(f"negative {what} ({value}) at byte {at}")
        return value

    def count(self, what: str, min_item_bytes: int) -> int:
        """A number of items that each take at least ``min_item_bytes`` of the file."""
        n = self.non_neg(what)
        if n * min_item_bytes > self.total - self.pos:
            raise _Corrupt(f"{what} {n} at byte {self.pos} exceeds what the file can hold")
        return n

    def padded(self, n: int) -> bytes:
        """``n`` bytes followed by padding to a 4-byte boundary."""
        return self.take(-(-n // 4) * 4)[:n]

    def name(self, what: str) -> str:
        n = self.count(f"{what} name length", 1)
        raw = self.padded(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Corrupt(f"{what} name at byte {self.pos - len(raw)} is not UTF-8") from e

    def list_header(self, tag: int, what: str, min_item_bytes: int) -> int:
        """The element count of a dim/att/var list (0 when ABSENT)."""
        at = self.pos
        got = self.int32()
        n = self.count(f"number of {what}", min_item_bytes)
        if got == 0 and n == 0:
            return 0
        if got != tag:
            raise _Corrupt(f"expected the {what} list tag {tag:#x} at byte {at}, found {got:#x}")
        return n

    def attributes(self, version: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        minimum = 16 if self.wide_counts else 12
        for _ in range(self.list_header(_NC_ATTRIBUTE, "attributes", minimum)):
            name = self.name("attribute")
            at = self.pos
            nc_type = self.int32()
            if nc_type not in _NC_TYPES or (nc_type in _CDF5_ONLY_TYPES and version != 5):
                raise _Corrupt(f"attribute {name!r} has unknown type {nc_type} at byte {at}")
            dtype = np.dtype(_NC_TYPES[nc_type][0])
            n = self.count(f"attribute {name!r} length", dtype.itemsize)
            raw = self.padded(n * dtype.itemsize)
            out[name] = _attribute_value(raw, dtype)
        return out


def _attribute_value(raw: bytes, dtype: np.dtype[Any]) -> Any:
    """An attribute's value as JSON-compatible Python: text, a number or a list of numbers."""
    if dtype.kind == "S":
        text = raw.rstrip(b"\x00")
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            # netCDF3 text has no declared encoding; Latin-1 keeps every byte
            return text.decode("latin-1")
    values = np.frombuffer(raw, dtype=dtype).tolist()
    return values[0] if len(values) == 1 else values


def parse_netcdf3_header(data: bytes, *, file_size: int | None = None) -> Netcdf3Header:
    """Parse a netCDF3 header from the first bytes of a file.

    Parameters
    ----------
    data
        The file's first bytes (at least the whole header).
    file_size
        The file's size, to reject counts no file of that size could hold (default
        ``len(data)``).

    Raises
    ------
    ValueError
        Not a netCDF3 file, or a malformed header (message says where).
    EOFError
        ``data`` ends inside the header; the message says how many bytes are needed.
    """
    try:
        return _parse(data, len(data) if file_size is None else file_size)
    except _ShortHeader as e:
        raise EOFError(f"the header needs at least {e.needed} bytes, got {len(data)}") from None
    except _Corrupt as e:
        raise ValueError(str(e)) from None


def _parse(data: bytes, file_size: int) -> Netcdf3Header:
    if len(data) < 4:
        raise _ShortHeader(4)
    if data[:3] != b"CDF" or data[3] not in (1, 2, 5):
        raise _Corrupt(f"not a netCDF3 file (magic {data[:4]!r})")
    version = data[3]
    cur = _Cursor(data, version, file_size)
    numrecs = cur.int64() if cur.wide_counts else cur.int32()
    if numrecs < -1:
        raise _Corrupt(f"negative number of records ({numrecs})")
    header = Netcdf3Header(version=version, numrecs=numrecs)
    word = 8 if cur.wide_counts else 4

    for _ in range(cur.list_header(_NC_DIMENSION, "dimensions", 2 * word)):
        name = cur.name("dimension")
        header.dimensions.append(Netcdf3Dimension(name, cur.non_neg(f"length of {name!r}")))
    record_dims = [i for i, d in enumerate(header.dimensions) if d.length == 0]
    if len(record_dims) > 1:
        raise _Corrupt(f"{len(record_dims)} record (unlimited) dimensions; at most one allowed")

    header.attributes = cur.attributes(version)

    offset_bytes = 8 if cur.wide_offsets else 4
    for _ in range(cur.list_header(_NC_VARIABLE, "variables", 5 * word + 4 + offset_bytes)):
        name = cur.name("variable")
        ndims = cur.count(f"rank of {name!r}", word)
        dimids = tuple(cur.non_neg(f"dimension id of {name!r}") for _ in range(ndims))
        for pos, dimid in enumerate(dimids):
            if dimid >= len(header.dimensions):
                raise _Corrupt(f"variable {name!r} uses dimension id {dimid}, which is undefined")
            if pos > 0 and header.dimensions[dimid].length == 0:
                raise _Corrupt(f"variable {name!r} uses the record dimension after its first axis")
        attributes = cur.attributes(version)
        at = cur.pos
        nc_type = cur.int32()
        if nc_type not in _NC_TYPES or (nc_type in _CDF5_ONLY_TYPES and version != 5):
            raise _Corrupt(f"variable {name!r} has unknown type {nc_type} at byte {at}")
        vsize = cur.non_neg(f"vsize of {name!r}")
        begin = cur.offset(f"begin of {name!r}")
        header.variables.append(Netcdf3Variable(name, dimids, attributes, nc_type, vsize, begin))
    header.header_size = cur.pos
    for var in header.variables:
        if var.begin < header.header_size:
            raise _Corrupt(
                f"variable {var.name!r} starts at byte {var.begin}, inside the header "
                f"({header.header_size} bytes)"
            )
    return header


def read_netcdf3_header(source: Source) -> Netcdf3Header:
    """Read and parse the header of a netCDF3 file, reading more bytes while it needs them.

    Raises
    ------
    BuildError
        Not a netCDF3 file, or a truncated or malformed header; the message names the file.
    """
    size = source.size()
    want = min(size, _FIRST_READ)
    while True:
        data = source.read_range(0, want)
        try:
            return _parse(data, size)
        except _ShortHeader as e:
            if want >= size:
                raise BuildError(
                    f"{source.url}: truncated netCDF3 header (the file has {size} bytes, the "
                    f"header needs at least {e.needed})"
                ) from None
            want = min(size, max(e.needed, 2 * want))
        except _Corrupt as e:
            raise BuildError(f"{source.url}: {e}") from None


# ---- layout --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where one variable's bytes are: shape, record stride and chunking."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]  # big-endian external type
    is_record: bool
    begin: int
    record_stride: int  # bytes from one record's slab to the next (record variables)


def _record_stride(header: Netcdf3Header, layouts: dict[str, _Layout]) -> int:
    """``recsize``: the bytes of one record of all record variables together.

    Each record variable's slab is padded to 4 bytes, except when there is exactly one
    record variable: then records are packed without padding (the spec's special case).
    """
    slabs = [
        math.prod(lay.shape[1:]) * lay.dtype.itemsize for lay in layouts.values() if lay.is_record
    ]
    if len(slabs) == 1:
        return slabs[0]
    return sum(-(-s // 4) * 4 for s in slabs)


def _layouts(header: Netcdf3Header, source: Source) -> tuple[dict[str, _Layout], int]:
    """Every variable's layout, and the number of records."""
    record_dim = next((i for i, d in enumerate(header.dimensions) if d.length == 0), None)
    shapes: dict[str, tuple[tuple[int, ...], bool]] = {}
    for var in header.variables:
        is_record = bool(var.dimids) and var.dimids[0] == record_dim
        shapes[var.name] = (tuple(header.dimensions[d].length for d in var.dimids), is_record)
    draft = {
        v.name: _Layout(
            shapes[v.name][0], np.dtype(_NC_TYPES[v.nc_type][0]), shapes[v.name][1], v.begin, 0
        )
        for v in header.variables
    }
    stride = _record_stride(header, draft)
    numrecs = header.numrecs
    if numrecs == -1:
        # streaming: as many whole records as the file holds after the first record slab
        starts = [lay.begin for lay in draft.values() if lay.is_record]
        if not starts or stride == 0:
            numrecs = 0
        else:
            numrecs = max(0, (source.size() - min(starts)) // stride)
    out = {}
    for name, lay in draft.items():
        shape = (numrecs, *lay.shape[1:]) if lay.is_record else lay.shape
        out[name] = _Layout(shape, lay.dtype, lay.is_record, lay.begin, stride)
    return out, numrecs


def _largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is <= ``limit`` (n >= 1, limit >= 1)."""
    best = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            if d <= limit:
                best = max(best, d)
            if n // d <= limit:
                best = max(best, n // d)
    return best


def _block_chunks(
    shape: tuple[int, ...], itemsize: int, target: int, overread_ok: bool
) -> tuple[int, ...]:
    """A chunk shape that cuts a C-ordered block into contiguous pieces of <= ``target`` bytes.

    Chunks are whole trailing rows: ``(1, ..., 1, rows, *shape[k+1:])``.  Zarr reads an edge
    chunk as a full chunk, so the last chunk may extend past the block's end; that is only
    allowed when ``overread_ok`` (the file has the bytes).  Otherwise ``rows`` divides the
    axis; if only tiny divisors exist the block stays whole.
    """
    nbytes = math.prod(shape) * itemsize
    if not shape or nbytes <= target or 0 in shape:
        return shape
    k = 0
    while math.prod(shape[k + 1 :]) * itemsize > target:
        k += 1
    row = math.prod(shape[k + 1 :]) * itemsize
    rows = max(1, min(shape[k], target // row))
    divisor = _largest_divisor_at_most(shape[k], rows)
    if shape[k] % rows == 0 or 2 * divisor >= rows:
        rows = divisor
    elif not overread_ok:
        if 16 * divisor < rows:
            return shape
        rows = divisor
    return (1,) * k + (rows,) + tuple(shape[k + 1 :])


def _chunk_offsets(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int) -> np.ndarray:
    """Byte offset of every chunk of a contiguous C-ordered block, relative to its start."""
    grid = tuple(-(-s // c) if c else 0 for s, c in zip(shape, chunks, strict=True))
    strides = [itemsize * math.prod(shape[i + 1 :]) for i in range(len(shape))]
    offsets = np.zeros(grid, dtype=np.int64)
    for axis, (n, c, stride) in enumerate(zip(grid, chunks, strides, strict=True)):
        step = np.arange(n, dtype=np.int64) * (c * stride)
        offsets += step.reshape((n,) + (1,) * (len(grid) - axis - 1))
    return offsets


def _split(
    shape: tuple[int, ...], itemsize: int, target: int, last_block_start: int, file_size: int
) -> tuple[tuple[int, ...], np.ndarray]:
    """Chunk shape and relative chunk offsets of a block; the last copy starts at
    ``last_block_start`` (the last record's slab), and over-reading past it must stay inside
    the file."""
    chunks = _block_chunks(shape, itemsize, target, overread_ok=True)
    offsets = _chunk_offsets(shape, chunks, itemsize)
    if chunks != shape and offsets.size:
        end = last_block_start + int(offsets.max()) + math.prod(chunks) * itemsize
        if end > file_size:
            chunks = _block_chunks(shape, itemsize, target, overread_ok=False)
            offsets = _chunk_offsets(shape, chunks, itemsize)
    return chunks, offsets


def _records_contiguous(layout: _Layout, file_size: int) -> bool:
    """Whether a record variable's records are one gapless block that the file holds whole
    (its slab is the whole record; a file cut short keeps one chunk per record, so that the
    records it lacks read as fill values and the others still read)."""
    slab = math.prod(layout.shape[1:]) * layout.dtype.itemsize
    numrecs = layout.shape[0]
    return (
        slab > 0
        and numrecs > 1
        and layout.record_stride == slab
        and layout.begin + numrecs * slab <= file_size
    )


def _manifest(
    layout: _Layout, target: int, file_size: int, url: str
) -> tuple[tuple[int, ...], ChunkManifest]:
    """The chunk shape and manifest of one variable."""
    itemsize = layout.dtype.itemsize
    if layout.is_record and _records_contiguous(layout, file_size):
        # the only record variable: its records follow each other without gaps, so they
        # are one block, chunked like a non-record variable (many records a chunk)
        chunks, rel = _split(layout.shape, itemsize, target, layout.begin, file_size)
        offsets = layout.begin + rel
    elif layout.is_record:
        inner = layout.shape[1:]
        numrecs = layout.shape[0]
        last_start = layout.begin + max(numrecs - 1, 0) * layout.record_stride
        inner_chunks, inner_offsets = _split(inner, itemsize, target, last_start, file_size)
        chunks = (1, *inner_chunks)
        rec = layout.begin + np.arange(numrecs, dtype=np.int64) * layout.record_stride
        offsets = rec.reshape((numrecs,) + (1,) * len(inner)) + inner_offsets[np.newaxis]
    else:
        chunks, rel = _split(layout.shape, itemsize, target, layout.begin, file_size)
        offsets = layout.begin + rel
    lengths = np.full(offsets.shape, math.prod(chunks) * itemsize, dtype=np.int64)
    if offsets.size == 0:
        return chunks, ChunkManifest.empty(offsets.shape)
    # chunks past the end of the file were never written: read them as the fill value
    present = offsets + lengths <= file_size
    if present.all():
        paths: np.ndarray | str = url
    else:
        paths = np.where(present, url, "").astype(np.dtypes.StringDType())
    return chunks, ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)


# ---- metadata ------------------------------------------------------------------------------


def _array_metadata(
    var: Netcdf3Variable,
    header: Netcdf3Header,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    url: str,
) -> ArrayV3Metadata:
    """The Zarr metadata of a variable (without manifest).

    Built from parsed parts (data type and codecs shared between variables) rather than
    from a zarr.json dict: parsing the dict is most of the cost of a small file.
    """
    external = np.dtype(_NC_TYPES[var.nc_type][0])
    attributes = dict(var.attributes)
    fill = attributes.get("_FillValue", _NC_TYPES[var.nc_type][1])
    if isinstance(fill, list):
        fill = fill[0] if fill else _NC_TYPES[var.nc_type][1]
    if external.kind == "S":
        fill = fill.encode("latin-1")[:1] if isinstance(fill, str) else bytes(fill)[:1]
        fill = fill.rstrip(b"\x00")
    elif isinstance(fill, str):
        raise BuildError(f"{url}: variable {var.name!r} has a text _FillValue {fill!r}")
    if "_FillValue" in attributes:
        attributes["_FillValue"] = xarray_fill_value_attribute(fill, external)
    native = external.newbyteorder("=")
    zdtype = _zarr_dtype(native)
    try:
        # through the JSON form, as from a zarr.json: the fill value zarr would read back
        fill_json = zdtype.to_json_scalar(zdtype.cast_scalar(fill), zarr_format=3)
        fill_value = zdtype.from_json_scalar(fill_json, zarr_format=3)
    except (TypeError, ValueError, OverflowError) as e:
        raise BuildError(
            f"{url}: variable {var.name!r}: _FillValue {fill!r} does not fit {native}"
        ) from e
    return ArrayV3Metadata(
        shape=shape,
        data_type=zdtype,
        chunk_grid=RegularChunkGridMetadata(chunk_shape=chunks),
        chunk_key_encoding=_CHUNK_KEY_ENCODING,
        fill_value=fill_value,
        codecs=_codecs(external.itemsize > 1),
        attributes=attributes,
        dimension_names=[header.dimensions[d].name for d in var.dimids],
    )


_CHUNK_KEY_ENCODING = DefaultChunkKeyEncoding(separator="/")


@functools.cache
def _zarr_dtype(native: np.dtype[Any]) -> Any:
    """zarr's data type for a native dtype (zarr's lookup tries every registered type)."""
    with warnings.catch_warnings():
        # char data as null-terminated bytes: zarr warns that the type has no v3 spec yet
        warnings.simplefilter("ignore")
        return get_data_type_from_native_dtype(native)


@functools.cache
def _codecs(big_endian: bool) -> tuple[Any, ...]:
    """The one codec of a netCDF3 variable: ``bytes``, big-endian for multi-byte types."""
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if big_endian:
        bytes_codec["configuration"] = {"endian": "big"}
    return tuple(parse_codecs([bytes_codec]))


def _chunks_for_metadata(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    # zarr needs chunk lengths >= 1, also along an empty (0-record) axis
    return tuple(max(c, 1) for c in chunks) if shape else ()


#: Loading record variables: slabs at most this far apart in the file are read in one request
#: (the bytes between are read and dropped) ...
_LOAD_GAP_BYTES = 64 * 1024
#: ... of at most this many bytes (a longer slab is read alone).
_LOAD_REQUEST_BYTES = 16 * 2**20


def _load(source: Source, layout: _Layout) -> np.ndarray:
    """A non-record variable's values, read from the file (native byte order)."""
    nbytes = math.prod(layout.shape) * layout.dtype.itemsize
    raw_bytes = source.read_range(layout.begin, nbytes)
    if len(raw_bytes) < nbytes:
        raise BuildError(f"{source.url}: the file ends inside the data of a variable")
    data = np.frombuffer(raw_bytes, dtype=layout.dtype).reshape(layout.shape)
    return data.astype(layout.dtype.newbyteorder("="))


def _coalesce(starts: np.ndarray, ends: np.ndarray, gap: int, limit: int) -> list[tuple[int, int]]:
    """Byte ranges (sorted by start) merged into requests: ranges at most ``gap`` apart join
    one request of at most ``limit`` bytes; overlapping ranges always share one."""
    if starts.size == 0:
        return []
    reach = np.maximum.accumulate(ends)  # how far the ranges so far extend
    heads = np.flatnonzero(np.r_[True, starts[1:] - reach[:-1] > gap]).tolist()
    out = []
    for a, b in zip(heads, [*heads[1:], starts.size], strict=True):
        while a < b:
            j = a + int(np.searchsorted(reach[a:b], starts[a] + limit, side="right"))
            j = max(j, a + 1)
            while j < b and starts[j] < reach[j - 1]:
                j += 1  # a range overlapping the request goes in it
            out.append((int(starts[a]), int(reach[j - 1])))
            a = j
    return out


def _load_records(
    source: Source, layouts: dict[str, _Layout], file_size: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The values of record variables (native byte order) and which records the file holds.

    Only the variables' own slabs are read, all variables in one pass over the records,
    in coalesced requests (`_LOAD_GAP_BYTES`, `_LOAD_REQUEST_BYTES`): loading a few bytes
    per record from a file of large records does not read the whole file once per
    variable.  A record past the end of a file cut short is not held (the caller fills it
    with the fill value, as a reference to it would read).
    """
    slabs: dict[str, tuple[int, np.ndarray, int]] = {}  # name -> (slab, starts, records held)
    raws: dict[str, np.ndarray] = {}
    for name, layout in layouts.items():
        numrecs = layout.shape[0]
        slab = math.prod(layout.shape[1:]) * layout.dtype.itemsize
        starts = layout.begin + np.arange(numrecs, dtype=np.int64) * layout.record_stride
        # records lie in file order: those held are a prefix
        held = int(np.searchsorted(starts + slab, file_size, side="right")) if slab else numrecs
        slabs[name] = (slab, starts, held)
        raws[name] = np.zeros((numrecs, slab), dtype=np.uint8)
    wanted = [(s[1][: s[2]], s[0]) for s in slabs.values() if s[0] and s[2]]
    if wanted:
        all_starts = np.concatenate([st for st, _ in wanted])
        all_ends = np.concatenate([st + slab for st, slab in wanted])
        order = np.argsort(all_starts, kind="stable")
        requests = _coalesce(
            all_starts[order], all_ends[order], _LOAD_GAP_BYTES, _LOAD_REQUEST_BYTES
        )
        with source.open() as f:
            for lo, hi in requests:
                f.seek(lo)
                buf = f.read(hi - lo)
                if len(buf) < hi - lo:
                    raise BuildError(
                        f"{source.url}: the file ends at byte {lo + len(buf)}, inside the "
                        f"records of a variable (the file may have changed while read)"
                    )
                raw = np.frombuffer(buf, dtype=np.uint8)
                for name, (slab, starts, held) in slabs.items():
                    # the records whose slab starts in this request lie wholly inside it
                    r0 = int(np.searchsorted(starts[:held], lo, side="left"))
                    r1 = int(np.searchsorted(starts[:held], hi, side="left"))
                    if r1 <= r0 or not slab:
                        continue
                    first = int(starts[r0]) - lo
                    assert int(starts[r1 - 1]) + slab <= hi
                    raws[name][r0:r1] = np.lib.stride_tricks.as_strided(
                        raw[first:],
                        shape=(r1 - r0, slab),
                        strides=(layouts[name].record_stride, 1),
                        writeable=False,
                    )
    out = {}
    for name, layout in layouts.items():
        slab, _, held = slabs[name]
        data = raws[name].view(layout.dtype).reshape(layout.shape)
        present = np.arange(layout.shape[0]) < held
        out[name] = (data.astype(layout.dtype.newbyteorder("=")), present)
    return out


def build_netcdf3(
    source: Source | str,
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    target_chunk_bytes: int = DEFAULT_TARGET_CHUNK_BYTES,
    **options: Any,
) -> ManifestGroup:
    """Reference the variables of a netCDF3 file (CDF-1, CDF-2 or CDF-5) in place.

    Parameters
    ----------
    source
        The file: a `Source`, a local path or a URL.
    group
        Must be None, "" or "/": netCDF3 files have no groups.
    drop
        Variables to leave out.
    load
        Variables to read now and store inline (`InlineArray`), e.g. coordinates.
    target_chunk_bytes
        Variables (and record slabs) larger than this are split along their leading axes
        into chunks of about this size, so reads can go in parallel.
    **options
        Passed to `open_source` when ``source`` is a path or URL (obstore options).

    Returns
    -------
    ManifestGroup
        One array per variable (``bytes`` codec, big-endian); global attributes as the
        group's attributes; ``_FillValue`` (or netCDF's default fill value) as fill value.

    Raises
    ------
    BuildError
        Not a netCDF3 file, or a truncated or corrupt header; the message names the file.
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_netcdf3: unexpected options {sorted(options)}")
    if group not in (None, "", "/"):
        raise BuildError(f"{source.url}: netCDF3 files have no groups (asked for {group!r})")
    if target_chunk_bytes < 1:
        raise ValueError(f"target_chunk_bytes must be positive, got {target_chunk_bytes}")
    header = read_netcdf3_header(source)
    names = {v.name for v in header.variables}
    unknown = sorted((set(load) | set(drop)) - names)
    if unknown:
        raise BuildError(f"{source.url}: no variable(s) {unknown} in the file (drop/load)")
    layouts, _ = _layouts(header, source)
    file_size = source.size()
    records = _load_records(
        source,
        {n: layouts[n] for n in load if n not in drop and layouts[n].is_record},
        file_size,
    )
    arrays: dict[str, ManifestArray | InlineArray] = {}
    for var in header.variables:
        if var.name in drop:
            continue
        layout = layouts[var.name]
        if var.name in load:
            metadata = _array_metadata(
                var,
                header,
                layout.shape,
                _chunks_for_metadata(layout.shape, layout.shape),
                source.url,
            )
            if layout.is_record:
                data, present = records[var.name]
                # records the file lacks read as the fill value, as their references would
                data[~present] = metadata.fill_value
            else:
                data = _load(source, layout)
            arrays[var.name] = InlineArray(metadata, data)
            continue
        chunks, manifest = _manifest(layout, target_chunk_bytes, file_size, source.url)
        metadata = _array_metadata(
            var, header, layout.shape, _chunks_for_metadata(layout.shape, chunks), source.url
        )
        arrays[var.name] = ManifestArray(metadata, manifest)
    return ManifestGroup(arrays=arrays, attributes=header.attributes)
