"""HDF4 (the SD "scientific dataset" interface) -> `ManifestGroup`.

Why our own parser: the only Python HDF4 readers are pyhdf (a C extension that reads values
but never says where bytes are) and kerchunk's scanner, which mislabels big-endian floats
as native, decodes every compressed element as deflate whatever its coder, and ignores fill
values, dimension names and attributes.  The HDF4 layout needed here is small (HDF4
Specification and Developer's Guide, chapters "Basic structure", "Special elements",
"Vgroups/Vdatas" and the mfhdf conventions), so it is read here with `struct`/numpy:

- a file is a magic number then a linked list of data-descriptor blocks, each descriptor
  ``(tag, ref, offset, length)``; a tag with bit 0x4000 is a *special element* whose bytes
  start with a header (linked blocks, compressed, chunked...);
- the SD interface stores a netCDF-like model in Vgroups: one ``CDF0.0`` Vgroup lists the
  variables (``Var0.0`` Vgroups) and the global attributes (``Attr0.0`` Vdatas); a variable
  lists its dimensions (``Dim0.0``/``UDim0.0`` Vgroups, named), attributes, number type
  (``NT``: type, width, byte order), dimension record (``SDD``: shape) and data (``SD``).

How each dataset's data becomes chunks:

- contiguous: one chunk (``bytes``, big-endian unless the number type says little);
- compressed whole (special COMP, deflate coder): one ``numcodecs.zlib`` chunk;
- chunked (special CHUNKED): one reference per stored chunk, deflate or uncompressed,
  missing chunks read as the fill value the chunked header records;
- stored in linked blocks (unlimited dimensions): one chunk when one block holds the data,
  else the dataset is read now (the blocks' bytes concatenated) and kept inline, with a
  warning;
- never written: no chunks, read as the fill value (``_FillValue``, or the HDF4 library's
  default for the type, as pyhdf reads it).

Refused with `UnsupportedError` naming the file and the dataset (``drop=[name]`` builds the
rest): compressions other than deflate (RLE, n-bit, skipping Huffman, SZIP, JPEG), VAX/Cray
number types, external or otherwise special storage.  A file without the SD interface (no
``CDF0.0`` Vgroup) is a `BuildError`.  All datasets are at the root, named as in the file
(``/`` becomes ``_``; a name seen twice gets ``_<index>``, the pyhdf dataset index).
"""

from __future__ import annotations

import functools
import math
import os
import struct
import warnings
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
from zarr.core.dtype import get_data_type_from_native_dtype

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._chunk_reader import read_chunked
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import bytes_codec, xarray_fill_value_attribute
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["HDF4_MAGIC", "build_hdf4"]

#: The first four bytes of every HDF4 file.
HDF4_MAGIC = b"\x0e\x03\x13\x01"

# tags (hdf/src/htags.h)
_NULL = 1
_LINKED = 20
_COMPRESSED = 40
_CHUNK = 61
_NT = 106
_SDD = 701
_SD = 702
_VH = 1962
_VS = 1963
_VG = 1965
_SPECIAL = 0x4000

# special element codes (hdf/src/hdf.h)
_SPECIAL_LINKED = 1
_SPECIAL_COMP = 3
_SPECIAL_CHUNKED = 5
_SPECIAL_NAMES = {
    1: "linked blocks",
    2: "an external file",
    3: "compressed",
    4: "variable-length linked blocks",
    5: "chunked",
    6: "buffered",
    7: "compressed raster",
}

# coder types (hdf/src/hcomp.h)
_CODER_NONE = 0
_CODER_DEFLATE = 4
_CODER_NAMES = {1: "RLE", 2: "n-bit", 3: "skipping Huffman", 5: "SZIP", 7: "JPEG", 12: "IMCOMP"}

# number types (hdf/src/hntdefs.h): code -> (numpy type, default fill of the SD interface,
# which are netCDF-2's: the values pyhdf reads from a dataset never written)
_NUMBER_TYPES: dict[int, tuple[str, Any]] = {
    3: ("u1", 0),  # UCHAR8
    4: ("S1", b""),  # CHAR8
    5: ("f4", 9.9692099683868690e36),
    6: ("f8", 9.9692099683868690e36),
    20: ("i1", -127),
    21: ("u1", 129),
    22: ("i2", -32767),
    23: ("u2", 32769),
    24: ("i4", -2147483647),
    25: ("u4", 2147483649),
    26: ("i8", -9223372036854775806),
    27: ("u8", 9223372036854775810),
}
_LITTLE_ENDIAN_TYPE = 0x4000  # DFNT_LITEND, or'ed into a type code
# number type classes (byte order of NT elements): 1 big-endian IEEE / MBO, 4 little-endian
_BIG, _LITTLE = 1, 4


@dataclass(slots=True)
class _Descriptor:
    tag: int
    ref: int
    offset: int
    length: int


@dataclass(slots=True)
class _Variable:
    name: str
    dims: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    nt: tuple[int, int] | None = None  # (type, class)
    shape: tuple[int, ...] | None = None
    data: _Descriptor | None = None


class _File:
    """An HDF4 file's descriptors and the small reads its metadata needs."""

    def __init__(self, source: Source, handle: BinaryIO):
        self.source = source
        self._handle = handle
        self.size = source.size()
        if self.read(0, 4) != HDF4_MAGIC:
            raise BuildError(f"{source.url}: not an HDF4 file (no HDF4 magic number)")
        self.dds: dict[tuple[int, int], _Descriptor] = {}
        at, seen = 4, set()
        while at:
            if at in seen or at + 6 > self.size:
                raise BuildError(f"{source.url}: corrupt HDF4 descriptor list at byte {at}")
            seen.add(at)
            ndd, following = struct.unpack(">HI", self.read(at, 6))
            block = self.read(at + 6, 12 * ndd)
            for tag, ref, offset, length in struct.iter_unpack(">HHII", block):
                if tag != _NULL:
                    self.dds[(tag, ref)] = _Descriptor(tag, ref, offset, length)
            at = following

    def read(self, offset: int, length: int) -> bytes:
        self._handle.seek(offset)
        data = bytes(self._handle.read(length))
        if len(data) < length:
            raise BuildError(
                f"{self.source.url}: the HDF4 file ends inside an element "
                f"(bytes {offset}..{offset + length})"
            )
        return data

    def find(self, tag: int, ref: int) -> _Descriptor | None:
        """The descriptor of ``(tag, ref)``, plain or special."""
        return self.dds.get((tag, ref)) or self.dds.get((tag | _SPECIAL, ref))

    def element(self, tag: int, ref: int, what: str) -> bytes:
        """The bytes of a metadata element (plain, or in linked blocks)."""
        dd = self.find(tag, ref)
        if dd is None:
            raise BuildError(f"{self.source.url}: {what} refers to a missing element")
        if not dd.tag & _SPECIAL:
            if dd.offset == 0xFFFFFFFF or dd.length == 0xFFFFFFFF:
                return b""  # an element with no data yet (an empty Vdata)
            return self.read(dd.offset, dd.length)
        header = self.read(dd.offset, dd.length)
        (code,) = struct.unpack(">H", header[:2])
        if code != _SPECIAL_LINKED:
            raise UnsupportedError(
                f"{self.source.url}: {what} is stored as {_SPECIAL_NAMES.get(code, code)}"
            )
        total, blocks = self.linked_blocks(header, what)
        return b"".join(self.read(o, n) for o, n in blocks)[:total]

    def linked_blocks(self, header: bytes, what: str) -> tuple[int, list[tuple[int, int]]]:
        """(total length, [(offset, length)] of the data blocks) of a linked-block element."""
        total, _block_len, _per_table, link_ref = struct.unpack(">IIIH", header[2:16])
        blocks: list[tuple[int, int]] = []
        seen = set()
        while link_ref:
            if link_ref in seen:
                raise BuildError(f"{self.source.url}: {what}: linked blocks loop")
            seen.add(link_ref)
            table = self.dds.get((_LINKED, link_ref))
            if table is None:
                raise BuildError(f"{self.source.url}: {what}: a linked-block table is missing")
            raw = self.read(table.offset, table.length)
            link_ref = struct.unpack(">H", raw[:2])[0]
            for (ref,) in struct.iter_unpack(">H", raw[2 : 2 + (len(raw) - 2) // 2 * 2]):
                if ref == 0:
                    continue
                dd = self.dds.get((_LINKED, ref))
                if dd is None:
                    raise BuildError(f"{self.source.url}: {what}: a linked block is missing")
                blocks.append((dd.offset, dd.length))
        have = 0
        used = []
        for offset, length in blocks:
            if have >= total:
                break
            used.append((offset, min(length, total - have)))
            have += used[-1][1]
        if have < total:
            raise BuildError(f"{self.source.url}: {what}: linked blocks hold {have} of {total}")
        return total, used


def _strings(raw: bytes, count: int, at: int) -> tuple[list[str], int]:
    out = []
    for _ in range(count):
        (n,) = struct.unpack(">H", raw[at : at + 2])
        out.append(raw[at + 2 : at + 2 + n].split(b"\x00", 1)[0].decode("latin-1"))
        at += 2 + n
    return out, at


def _vgroup(f: _File, ref: int) -> tuple[str, str, list[tuple[int, int]]]:
    """A Vgroup: (name, class, [(tag, ref) of its members])."""
    raw = f.element(_VG, ref, f"Vgroup {ref}")
    (n,) = struct.unpack(">H", raw[:2])
    tags = struct.unpack(f">{n}H", raw[2 : 2 + 2 * n])
    refs = struct.unpack(f">{n}H", raw[2 + 2 * n : 2 + 4 * n])
    (name, cls), _ = _strings(raw, 2, 2 + 4 * n)
    return name, cls, list(zip(tags, refs, strict=True))


@dataclass(slots=True)
class _Vdata:
    name: str
    cls: str
    nvert: int
    types: tuple[int, ...]
    orders: tuple[int, ...]
    names: list[str]


def _vdata_header(f: _File, ref: int) -> _Vdata:
    raw = f.element(_VH, ref, f"Vdata {ref}")
    _interlace, nvert, _ivsize, nfields = struct.unpack(">HIHH", raw[:10])
    at = 10
    types = struct.unpack(f">{nfields}H", raw[at : at + 2 * nfields])
    at += 6 * nfields  # types, sizes, offsets
    orders = struct.unpack(f">{nfields}H", raw[at : at + 2 * nfields])
    at += 2 * nfields
    names, at = _strings(raw, nfields, at)
    (name, cls), _ = _strings(raw, 2, at)
    return _Vdata(name, cls, nvert, types, orders, names)


def _number_dtype(code: int, where: str) -> np.dtype[Any]:
    """The stored numpy dtype of a Vdata field type (big-endian unless DFNT_LITEND)."""
    base = code & ~_LITTLE_ENDIAN_TYPE & 0x0FFF
    if base not in _NUMBER_TYPES:
        raise UnsupportedError(f"{where}: HDF4 number type {code} is not supported")
    dtype = np.dtype(_NUMBER_TYPES[base][0])
    return dtype.newbyteorder("<" if code & _LITTLE_ENDIAN_TYPE else ">")


def _attribute(f: _File, ref: int) -> tuple[str, Any]:
    """An ``Attr0.0`` Vdata as (name, value): text for CHAR8, else a number or a list."""
    vh = _vdata_header(f, ref)
    where = f"{f.source.url}: attribute {vh.name!r}"
    if len(vh.types) != 1:
        raise BuildError(f"{where}: an attribute Vdata with {len(vh.types)} fields")
    dtype = _number_dtype(vh.types[0], where)
    raw = f.element(_VS, ref, f"attribute {vh.name!r}")
    count = vh.nvert * vh.orders[0]
    values = np.frombuffer(raw[: count * dtype.itemsize], dtype=dtype)
    if vh.types[0] & 0x0FFF == 4:  # CHAR8: text
        return vh.name, values.tobytes().split(b"\x00", 1)[0].decode("latin-1")
    items = values.astype(dtype.newbyteorder("=")).tolist()
    return vh.name, items[0] if len(items) == 1 else items


def _variables(f: _File) -> tuple[list[_Variable], dict[str, Any]]:
    """The SD datasets (in pyhdf's index order) and the file's global attributes."""
    roots = [ref for (tag, ref) in sorted(f.dds) if tag == _VG and _vgroup(f, ref)[1] == "CDF0.0"]
    if not roots:
        raise BuildError(
            f"{f.source.url}: an HDF4 file without SD datasets (no CDF0.0 Vgroup); only "
            "the SD interface is read"
        )
    variables: list[_Variable] = []
    attributes: dict[str, Any] = {}
    _, _, members = _vgroup(f, roots[-1])
    for tag, ref in members:
        if tag == _VH:
            if _vdata_header(f, ref).cls == "Attr0.0":
                name, value = _attribute(f, ref)
                attributes[name] = value
            continue
        if tag != _VG:
            continue
        name, cls, parts = _vgroup(f, ref)
        if cls != "Var0.0":
            continue
        var = _Variable(name)
        for ptag, pref in parts:
            base = ptag & ~_SPECIAL
            if base == _VG:
                dim_name, dim_cls, _ = _vgroup(f, pref)
                if dim_cls in ("Dim0.0", "UDim0.0"):
                    var.dims.append(dim_name)
            elif base == _VH and _vdata_header(f, pref).cls == "Attr0.0":
                aname, value = _attribute(f, pref)
                var.attributes[aname] = value
            elif base == _NT:
                _version, typ, _width, klass = f.element(_NT, pref, f"{name!r} number type")[:4]
                var.nt = (typ, klass)
            elif base == _SDD:
                raw = f.element(_SDD, pref, f"{name!r} dimension record")
                (rank,) = struct.unpack(">H", raw[:2])
                var.shape = struct.unpack(f">{rank}I", raw[2 : 2 + 4 * rank])
            elif base == _SD:
                var.data = f.find(_SD, pref)
        variables.append(var)
    return variables, attributes


def _stored_dtype(f: _File, var: _Variable) -> np.dtype[Any]:
    where = f"{f.source.url}: dataset {var.name!r}"
    if var.nt is None or var.shape is None:
        raise BuildError(f"{where}: no number type or dimension record")
    typ, klass = var.nt
    if typ not in _NUMBER_TYPES:
        raise UnsupportedError(f"{where}: HDF4 number type {typ} is not supported")
    dtype = np.dtype(_NUMBER_TYPES[typ][0])
    if dtype.itemsize == 1:
        return dtype
    if klass not in (_BIG, _LITTLE):
        raise UnsupportedError(f"{where}: number type class {klass} (VAX/Cray) is not supported")
    return dtype.newbyteorder(">" if klass == _BIG else "<")


@dataclass(slots=True)
class _Layout:
    """Where a dataset's chunks are: chunk shape, grid of (offset, length) (-1: missing)."""

    chunks: tuple[int, ...]
    offsets: np.ndarray
    lengths: np.ndarray
    deflate: bool
    fill: bytes | None = None  # the chunked header's fill value bytes


def _comp_header(f: _File, header: bytes, where: str) -> tuple[int, _Descriptor | None]:
    """(coder, compressed data descriptor) of a COMP special header."""
    _version, _length, comp_ref, _model, coder = struct.unpack(">HIHHH", header[2:14])
    if coder not in (_CODER_NONE, _CODER_DEFLATE):
        name = _CODER_NAMES.get(coder, f"coder {coder}")
        raise UnsupportedError(
            f"{where} is {name}-compressed, which has no Zarr codec here; only deflate and "
            "uncompressed HDF4 data can be referenced (drop it to build the rest)"
        )
    dd = f.dds.get((_COMPRESSED, comp_ref))
    if dd is None and (_COMPRESSED | _SPECIAL, comp_ref) in f.dds:
        raise UnsupportedError(f"{where}: compressed data in linked blocks")
    return coder, dd


def _layout(f: _File, var: _Variable, dtype: np.dtype[Any]) -> _Layout | None:
    """The chunks of a dataset with data; None when it must be read (linked blocks)."""
    where = f"{f.source.url}: dataset {var.name!r}"
    assert var.data is not None and var.shape is not None
    shape = var.shape
    nbytes = math.prod(shape) * dtype.itemsize
    one = tuple(1 for _ in shape)
    dd = var.data
    if not dd.tag & _SPECIAL:
        if dd.length < nbytes:
            raise BuildError(f"{where}: {dd.length} bytes stored for {nbytes} of data")
        return _Layout(shape, np.full(one, dd.offset), np.full(one, nbytes), False)
    header = f.read(dd.offset, dd.length)
    (code,) = struct.unpack(">H", header[:2])
    if code == _SPECIAL_COMP:
        coder, comp = _comp_header(f, header, where)
        if comp is None:
            raise BuildError(f"{where}: its compressed data element is missing")
        length = comp.length if coder == _CODER_DEFLATE else nbytes
        return _Layout(
            shape, np.full(one, comp.offset), np.full(one, length), coder == _CODER_DEFLATE
        )
    if code == _SPECIAL_LINKED:
        total, blocks = f.linked_blocks(header, f"dataset {var.name!r}")
        if total < nbytes:
            raise BuildError(f"{where}: {total} bytes stored for {nbytes} of data")
        if len(blocks) == 1:
            return _Layout(shape, np.full(one, blocks[0][0]), np.full(one, nbytes), False)
        return None
    if code == _SPECIAL_CHUNKED:
        return _chunked(f, var, header, dtype, where)
    raise UnsupportedError(f"{where}: data stored as {_SPECIAL_NAMES.get(code, code)}")


def _chunked(f: _File, var: _Variable, header: bytes, dtype: np.dtype[Any], where: str) -> _Layout:
    """The chunk table of a CHUNKED special element."""
    assert var.shape is not None
    _hlen, _version, _flag, _total, chunk_size, nt_size = struct.unpack(">IBIIII", header[2:23])
    table_tag, table_ref, _sp_tag, _sp_ref, ndims = struct.unpack(">HHHHI", header[23:35])
    at = 35
    chunks = []
    for _ in range(ndims):
        _dflag, _dim_length, chunk_length = struct.unpack(">III", header[at : at + 12])
        chunks.append(chunk_length)
        at += 12
    (fill_len,) = struct.unpack(">I", header[at : at + 4])
    fill = header[at + 4 : at + 4 + fill_len]
    if ndims != len(var.shape) or math.prod(chunks) != chunk_size or nt_size != dtype.itemsize:
        raise BuildError(f"{where}: its chunk header disagrees with its shape or type")
    chunk_bytes = chunk_size * nt_size
    vh = _vdata_header(f, table_ref)
    if table_tag != _VH or vh.names[:1] != ["origin"] or vh.types[0] & 0x0FFF != 24:
        raise BuildError(f"{where}: unrecognised chunk table")
    rows = np.frombuffer(
        f.element(_VS, table_ref, f"the chunk table of {var.name!r}"),
        dtype=[("origin", ">i4", (ndims,)), ("tag", ">u2"), ("ref", ">u2")],
        count=vh.nvert,
    )
    grid = tuple(math.ceil(s / c) if c else 0 for s, c in zip(var.shape, chunks, strict=True))
    offsets = np.full(grid, -1, dtype=np.int64)
    lengths = np.full(grid, -1, dtype=np.int64)
    kinds = set()
    for origin, tag, ref in rows.tolist():
        index = tuple(origin)
        if len(index) != ndims or not all(0 <= i < g for i, g in zip(index, grid, strict=True)):
            raise BuildError(f"{where}: chunk origin {index} outside its grid {grid}")
        dd = f.find(tag, ref)
        if dd is None:
            raise BuildError(f"{where}: chunk {index} refers to a missing element")
        if dd.tag & _SPECIAL:
            head = f.read(dd.offset, dd.length)
            (code,) = struct.unpack(">H", head[:2])
            if code != _SPECIAL_COMP:
                raise UnsupportedError(f"{where}: chunk {index} is {_SPECIAL_NAMES.get(code)}")
            coder, comp = _comp_header(f, head, f"{where} (chunk {index})")
            if comp is None:
                raise BuildError(f"{where}: chunk {index}: compressed data missing")
            kinds.add(coder == _CODER_DEFLATE)
            offsets[index], lengths[index] = (
                comp.offset,
                (comp.length if coder == _CODER_DEFLATE else chunk_bytes),
            )
        else:
            kinds.add(False)
            if dd.length < chunk_bytes:
                raise BuildError(f"{where}: chunk {index} holds {dd.length} of {chunk_bytes}")
            offsets[index], lengths[index] = dd.offset, chunk_bytes
    if len(kinds) > 1:
        raise UnsupportedError(f"{where}: some chunks are deflated and some are not")
    return _Layout(tuple(chunks), offsets, lengths, kinds == {True}, fill)


def _load(f: _File, var: _Variable, dtype: np.dtype[Any]) -> np.ndarray:
    """A dataset in linked blocks, read now (native byte order)."""
    assert var.data is not None and var.shape is not None
    header = f.read(var.data.offset, var.data.length)
    _total, blocks = f.linked_blocks(header, f"dataset {var.name!r}")
    raw = b"".join(f.read(o, n) for o, n in blocks)
    count = math.prod(var.shape)
    data = np.frombuffer(raw[: count * dtype.itemsize], dtype=dtype).reshape(var.shape)
    return data.astype(dtype.newbyteorder("="))


def _fill_value(var: _Variable, dtype: np.dtype[Any], layout: _Layout | None) -> Any:
    """What pyhdf reads where nothing was written."""
    if "_FillValue" in var.attributes:
        fill = var.attributes["_FillValue"]
        return fill[0] if isinstance(fill, list) else fill
    if layout is not None and layout.fill and len(layout.fill) == dtype.itemsize:
        return np.frombuffer(layout.fill, dtype=dtype)[0].item()
    assert var.nt is not None
    return _NUMBER_TYPES[var.nt[0]][1]


def build_hdf4(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    **options: Any,
) -> ManifestGroup:
    """Reference the SD datasets of an HDF4 file in place.

    Parameters
    ----------
    source
        The file: a `Source`, local path or URL.
    group
        Must be None, "" or "/": the SD datasets are all at the root.
    drop, load
        Datasets to leave out / read now and keep inline, by name.
    **options
        obstore options when ``source`` is a path or URL.

    Returns
    -------
    ManifestGroup
        One array per SD dataset (dimension names and attributes from the file; the fill
        value is what pyhdf reads where nothing was written); global attributes as the
        group's attributes.

    Raises
    ------
    BuildError
        Not an HDF4 file, no SD interface, a corrupt structure; an unknown drop/load name.
    UnsupportedError
        A dataset whose storage has no virtual form (see the module notes); the message
        names it.
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_hdf4: unexpected options {sorted(options)}")
    if group not in (None, "", "/"):
        raise BuildError(f"{source.url}: HDF4 SD datasets have no groups (asked for {group!r})")
    with source.open() as handle:
        f = _File(source, handle)
        variables, attributes = _variables(f)
        names = _names(variables)
        unknown = sorted((set(drop) | set(load)) - set(names))
        if unknown:
            raise BuildError(f"{source.url}: no dataset(s) {unknown} in the file (drop/load)")
        arrays: dict[str, ManifestArray | InlineArray] = {}
        for name, var in zip(names, variables, strict=True):
            if name in drop:
                continue
            arrays[name] = _array(f, var, name, load=name in load)
    return ManifestGroup(arrays=arrays, attributes=attributes)


def _names(variables: list[_Variable]) -> list[str]:
    names: list[str] = []
    for index, var in enumerate(variables):
        name = var.name.replace("/", "_") or f"sds_{index}"
        names.append(f"{name}_{index}" if name in names else name)
    return names


@functools.cache
def _zarr_dtype(native: str) -> Any:
    """zarr's data type of a numpy dtype (cached: zarr's lookup costs about a millisecond)."""
    return get_data_type_from_native_dtype(np.dtype(native))


def _array(f: _File, var: _Variable, name: str, *, load: bool) -> ManifestArray | InlineArray:
    dtype = _stored_dtype(f, var)
    assert var.shape is not None
    shape = var.shape
    layout = _layout(f, var, dtype) if var.data is not None and 0 not in shape else None
    fill = _fill_value(var, dtype, layout)
    attributes = dict(var.attributes)
    if "_FillValue" in attributes:
        attributes["_FillValue"] = xarray_fill_value_attribute(fill, dtype)
    native = dtype.newbyteorder("=")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: char data has no v3 spec yet
        zdtype = _zarr_dtype(native.str)
        try:
            fill_json = zdtype.to_json_scalar(zdtype.cast_scalar(fill), zarr_format=3)
        except (TypeError, ValueError, OverflowError) as e:
            raise BuildError(
                f"{f.source.url}: dataset {var.name!r}: fill value {fill!r} does not fit {native}"
            ) from e
        data_type = zdtype.to_json(zarr_format=3)
    codecs: list[dict[str, Any]] = [bytes_codec(dtype, variable=var.name)]
    if layout is not None and layout.deflate:
        codecs.append({"name": "numcodecs.zlib", "configuration": {"level": 6}})
    dims = (
        var.dims if len(var.dims) == len(shape) else [f"{name}_dim{i}" for i in range(len(shape))]
    )
    chunks = layout.chunks if layout is not None else shape
    doc = {
        "shape": list(shape),
        "data_type": data_type,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(int(c), 1) for c in chunks]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_json,
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": dims,
    }
    if var.data is not None and layout is None and 0 not in shape:
        warnings.warn(
            f"{f.source.url}: dataset {var.name!r} is stored in several linked blocks "
            "(an unlimited dimension), which cannot be referenced as chunks; reading it",
            stacklevel=4,
        )
        return InlineArray(doc, _load(f, var, dtype))
    grid = tuple(math.ceil(s / max(c, 1)) for s, c in zip(shape, chunks, strict=True))
    if layout is None:
        manifest = ChunkManifest.empty(grid)
    else:
        present = layout.offsets >= 0
        paths: Any = f.source.url
        if not present.all():
            paths = np.where(present, f.source.url, "").astype(np.dtypes.StringDType())
        manifest = ChunkManifest.from_arrays(
            paths=paths,
            offsets=np.where(present, layout.offsets, 0),
            lengths=np.where(present, layout.lengths, 0),
        )
    if load:
        if layout is None:
            return InlineArray(doc, np.full(shape, fill, dtype=native))
        try:
            values = read_chunked(
                f.read,
                shape=shape,
                chunks=layout.chunks,
                offsets=layout.offsets,
                lengths=layout.lengths,
                dtype=dtype,
                fill=fill,
                decode=zlib.decompress if layout.deflate else bytes,
            )
        except (ValueError, zlib.error) as e:
            raise BuildError(f"{f.source.url}: dataset {var.name!r}: {e}") from e
        return InlineArray(doc, values)
    return ManifestArray(doc, manifest)
