"""HDF5 / netCDF4 builder: reference the chunks of an HDF5 file in place.

h5py opens the file and walks its groups.  Each dataset's description (shape, type, filters,
fill value, layout, attributes) is decoded straight from the bytes of its object header when
it uses the common, simple encodings, and asked of h5py otherwise (both give the same
result; h5py's per-object calls cost far more than the decoding).  Chunk locations come
from the dataset's chunk index:

- version-1 B-trees (what h5py's and netCDF-4's default file format uses) are read directly,
  a whole B-tree node per numpy call, so a million-chunk dataset is enumerated in a fraction
  of a second (h5py's ``chunk_iter`` costs a Python call per chunk);
- the newer indexes (fixed/extensible arrays, v2 B-trees) go through ``DatasetID.chunk_iter``,
  whose callback appends straight into typed arrays.

Contiguous datasets are one chunk, or, when uncompressed and large, regular virtual chunks
of about ``split_contiguous_bytes`` so they can be read in parallel.  Datasets that cannot be
referenced (compact storage, variable-length strings, object references, external storage)
are read through h5py and stored inline (`InlineArray`).  netCDF-4 dimension ids / dimension
scales give dimension names; datasets without them get ``phony_dim_N`` names, as h5netcdf
does.
"""

from __future__ import annotations

import math
import os
import posixpath
import warnings
from array import array
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.metadata.v3 import ArrayV3Metadata, RegularChunkGridMetadata, parse_codecs

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import (
    HDF5Filter,
    bytes_codec,
    hdf5_filters_to_codecs,
    xarray_fill_value_attribute,
)
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["DEFAULT_SPLIT_CONTIGUOUS_BYTES", "MAX_AUTO_LOAD_BYTES", "build_hdf5"]

#: Uncompressed contiguous datasets larger than this are split into virtual chunks of about
#: this many bytes along their leading axes.
DEFAULT_SPLIT_CONTIGUOUS_BYTES = 4 * 1024 * 1024

#: Datasets that cannot be referenced only because some chunks skipped a filter are loaded
#: when at most this large (and refused with `UnsupportedError` when larger).
MAX_AUTO_LOAD_BYTES = 64 * 1024 * 1024

# Attributes that describe HDF5 / netCDF-4 bookkeeping rather than the data.
_INTERNAL_ATTRIBUTES = frozenset(
    {
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_NCProperties",
        "_nc3_strict",
        "_IsNetcdf4",
        "_SuperblockVersion",
        "DIMENSION_LIST",
        "REFERENCE_LIST",
        "CLASS",
        "NAME",
    }
)
_NETCDF_DIM_ONLY = b"This is a netCDF dimension but not a netCDF variable"

_UNDEFINED_ADDRESS = 0xFFFFFFFFFFFFFFFF

# Whether dataset descriptions may be decoded from object headers (tests turn it off to check
# the decoder against h5py).
_DECODE_HEADERS = True


# ---- opening ---------------------------------------------------------------------------------


class _File:
    """An open HDF5 file: the h5py handle and a positional reader of raw bytes."""

    def __init__(self, h5: Any, read: Callable[[int, int], bytes], size: int):
        self.h5 = h5
        self.read = read
        self.size = size
        fcpl = h5.id.get_create_plist()
        # addresses inside the file are relative to the superblock, after any user block
        self.base = int(fcpl.get_userblock())
        self.sizeof_addr, self.sizeof_size = (int(x) for x in fcpl.get_sizes())
        self.undefined = (1 << (8 * self.sizeof_addr)) - 1


@contextmanager
def _open(source: Source) -> Iterator[_File]:
    import h5py

    if source.local_path is not None:
        fd = os.open(source.local_path, os.O_RDONLY)
        fobj: Any = None
        try:
            try:
                h5 = h5py.File(source.local_path, "r", locking=False)
            except OSError as e:
                if "locking" not in str(e):
                    raise BuildError(f"{source.url}: not a readable HDF5 file ({e})") from e
                # the file is already open in this process (h5py with other locking flags):
                # libhdf5 would share that open file; a Python file object gets one of its own
                fobj = open(source.local_path, "rb")  # noqa: SIM115 (closed below)
                try:
                    h5 = h5py.File(fobj, "r")
                except OSError as e2:
                    raise BuildError(f"{source.url}: not a readable HDF5 file ({e2})") from e2
            with h5:
                yield _File(h5, lambda at, n: os.pread(fd, n, at), os.fstat(fd).st_size)
        finally:
            if fobj is not None:
                fobj.close()
            os.close(fd)
        return
    fobj = source.open()
    try:
        try:
            h5 = h5py.File(fobj, "r")
        except OSError as e:
            raise BuildError(f"{source.url}: not a readable HDF5 file ({e})") from e

        def read(at: int, n: int) -> bytes:
            fobj.seek(at)
            return bytes(fobj.read(n))

        with h5:
            yield _File(h5, read, source.size())
    finally:
        fobj.close()


# ---- object headers --------------------------------------------------------------------------


class _Fallback(Exception):
    """The header decoder does not handle this; ask h5py instead."""


# Message types (HDF5 file format spec, section IV.A.2).
_MSG_DATASPACE = 0x01
_MSG_LINK_INFO = 0x02
_MSG_DATATYPE = 0x03
_MSG_FILL = 0x05
_MSG_EXTERNAL = 0x07
_MSG_LAYOUT = 0x08
_MSG_PIPELINE = 0x0B
_MSG_ATTRIBUTE = 0x0C
_MSG_CONTINUATION = 0x10
_MSG_SYMBOL_TABLE = 0x11
_MSG_ATTRIBUTE_INFO = 0x15
_SHARED = 0x02  # message flag: the body is a reference to a shared message


def _u(data: bytes, at: int, n: int) -> int:
    return int.from_bytes(data[at : at + n], "little")


def _header_messages(f: _File, header_addr: int) -> list[tuple[int, int, bytes]]:
    """The messages ``(type, flags, body)`` of the object header at ``header_addr``.

    Handles version 1 and 2 headers and their continuation blocks.  Raises `_Fallback` on
    anything unexpected.
    """
    sa, ss = f.sizeof_addr, f.sizeof_size
    at = f.base + header_addr
    head = f.read(at, 512)
    blocks: list[tuple[int, int, int]] = []  # (absolute start, length, header version)
    if head[:4] == b"OHDR":
        version, flags = head[4], head[5]
        if version != 2:
            raise _Fallback
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        blocks.append((at + pos + width, _u(head, pos, width), 2))
        creation_order = bool(flags & 0x04)
    elif head[:1] == b"\x01":
        blocks.append((at + 16, _u(head, 8, 4), 1))
        creation_order = False
    else:
        raise _Fallback
    messages: list[tuple[int, int, bytes]] = []
    seen = 0
    while blocks:
        start, length, version = blocks.pop(0)
        seen += 1
        if seen > 1000 or length > 1 << 24:
            raise _Fallback
        if seen == 1 and start + length <= at + len(head):
            data = head[start - at : start - at + length]
        else:
            data = f.read(start, length)
        if len(data) != length:
            raise _Fallback
        pos = 0
        if version == 2 and seen > 1:
            if data[:4] != b"OCHK":
                raise _Fallback
            pos, length = 4, length - 4  # the checksum ends the block
        while pos < length:
            if version == 1:
                body = pos + 8
                if body > length:
                    break
                mtype, msize, mflags = _u(data, pos, 2), _u(data, pos + 2, 2), data[pos + 4]
            else:
                body = pos + (6 if creation_order else 4)
                if body > length:
                    break  # a gap shorter than a message header
                mtype, msize, mflags = data[pos], _u(data, pos + 1, 2), data[pos + 3]
            if body + msize > length:
                raise _Fallback
            if mtype == _MSG_CONTINUATION:
                blocks.append((f.base + _u(data, body, sa), _u(data, body + sa, ss), version))
            elif mtype:
                messages.append((mtype, mflags, data[body : body + msize]))
            pos = body + msize
    return messages


# IEEE 754 layouts of the float datatype properties:
# (bit offset, precision, exponent location, exponent size, mantissa location, mantissa size,
#  exponent bias) per size in bytes.
_IEEE = {
    2: (0, 16, 10, 5, 0, 10, 15),
    4: (0, 32, 23, 8, 0, 23, 127),
    8: (0, 64, 52, 11, 0, 52, 1023),
}


def _parse_datatype(data: bytes) -> tuple[np.dtype[Any], int]:
    """A datatype message -> (numpy dtype, string padding type or -1).

    Only plain integers, IEEE floats and fixed-length strings; `_Fallback` otherwise.
    """
    if len(data) < 8:
        raise _Fallback
    cls = data[0] & 0x0F
    bits = data[1] | data[2] << 8 | data[3] << 16
    size = _u(data, 4, 4)
    if cls == 0:  # fixed-point
        if size not in (1, 2, 4, 8) or bits & 0b110 or len(data) < 12:
            raise _Fallback
        if _u(data, 8, 2) != 0 or _u(data, 10, 2) != 8 * size:
            raise _Fallback
        order = ">" if bits & 1 else "<"
        return np.dtype(f"{order}{'i' if bits & 8 else 'u'}{size}"), -1
    if cls == 1:  # floating point
        if size not in _IEEE or bits & 0x40 or len(data) < 20:
            raise _Fallback
        props = (
            _u(data, 8, 2), _u(data, 10, 2), data[12], data[13], data[14], data[15],
            _u(data, 16, 4),
        )  # fmt: skip
        if props != _IEEE[size]:
            raise _Fallback
        return np.dtype(f"{'>' if bits & 1 else '<'}f{size}"), -1
    if cls == 3:  # fixed-length string
        padding = bits & 0x0F
        if padding not in (0, 1) or size < 1:
            raise _Fallback  # space-padded strings are converted by HDF5 on read
        return np.dtype(f"S{size}"), padding
    raise _Fallback


def _parse_dataspace(data: bytes, ss: int) -> tuple[int, ...]:
    """A dataspace message -> shape (``()`` for scalars); `_Fallback` for null dataspaces."""
    version, ndims = data[0], data[1]
    if version == 1:
        pos = 8
    elif version == 2:
        if data[3] == 2:
            raise _Fallback  # null dataspace: h5py reports it as Empty
        pos = 4
    else:
        raise _Fallback
    if len(data) < pos + ndims * ss:
        raise _Fallback
    return tuple(_u(data, pos + i * ss, ss) for i in range(ndims))


def _decode_values(raw: bytes, dtype: np.dtype[Any], padding: int, shape: tuple[int, ...]) -> Any:
    """Values of ``dtype`` packed in ``raw``: an array, or a numpy scalar for shape ``()``."""
    count = math.prod(shape)
    if len(raw) < count * dtype.itemsize:
        raise _Fallback
    values = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
    if padding == 0 and any(b"\x00" in v for v in values.reshape(-1).tolist()):
        raise _Fallback  # a null-terminated string with bytes after its terminator
    return values[()] if not shape else values.copy()


def _parse_attribute(data: bytes, ss: int) -> tuple[str, Any]:
    """An attribute message -> (name, value as h5py would return it)."""
    version = data[0]
    if version not in (1, 2, 3) or data[1] & 0x03:
        raise _Fallback  # shared datatype / dataspace
    name_size, type_size, space_size = _u(data, 2, 2), _u(data, 4, 2), _u(data, 6, 2)
    pos = 9 if version == 3 else 8

    def span(n: int) -> int:
        return (n + 7) & ~7 if version == 1 else n

    name = data[pos : pos + name_size].rstrip(b"\x00").decode("utf-8")
    pos += span(name_size)
    dtype, padding = _parse_datatype(data[pos : pos + type_size])
    pos += span(type_size)
    shape = _parse_dataspace(data[pos : pos + space_size], ss)
    pos += span(space_size)
    return name, _decode_values(data[pos:], dtype, padding, shape)


def _parse_pipeline(data: bytes) -> list[HDF5Filter]:
    """A filter pipeline message -> [(filter id, client data, name), ...]."""
    version, count = data[0], data[1]
    pos = 8 if version == 1 else 2
    filters: list[HDF5Filter] = []
    for _ in range(count):
        fid = _u(data, pos, 2)
        pos += 2
        name_len = 0
        if version == 1 or fid >= 256:
            name_len = _u(data, pos, 2)
            pos += 2
        ncd = _u(data, pos + 2, 2)
        pos += 4
        name = data[pos : pos + name_len].split(b"\x00", 1)[0].decode("latin-1")
        pos += (name_len + 7) & ~7 if version == 1 else name_len
        cd = tuple(_u(data, pos + 4 * i, 4) for i in range(ncd))
        pos += 4 * ncd + (4 if version == 1 and ncd % 2 else 0)
        if pos > len(data):
            raise _Fallback
        filters.append((fid, cd, name))
    return filters


def _parse_fill(data: bytes, dtype: np.dtype[Any]) -> Any:
    """A fill value message (version 1-3) -> the fill value (zero when none is defined)."""
    version = data[0]
    if version in (1, 2):
        defined = data[3]
        if version == 1 or defined:
            size, pos = _u(data, 4, 4), 8
        else:
            size, pos = 0, 8
    elif version == 3:
        flags = data[1]
        size, pos = (_u(data, 2, 4), 6) if flags & 0x20 else (0, 2)
    else:
        raise _Fallback
    if size == 0:
        return np.zeros((), dtype=dtype)[()]
    if size != dtype.itemsize or len(data) < pos + size:
        raise _Fallback
    return np.frombuffer(data, dtype=dtype, count=1, offset=pos)[0]


class _Layout:
    """A dataset's storage: compact, contiguous (address, size) or chunked (chunks, B-tree)."""

    __slots__ = ("address", "btree", "chunks", "kind", "size")

    def __init__(
        self,
        kind: str,
        *,
        address: int | None = None,
        size: int = 0,
        chunks: tuple[int, ...] | None = None,
        btree: int | None = None,
    ):
        self.kind = kind  # "compact" | "contiguous" | "chunked" | "virtual"
        self.address = address  # absolute file offset of contiguous data (None: unallocated)
        self.size = size
        self.chunks = chunks
        self.btree = btree  # v1 B-tree root (absolute), None: use h5py, -1: no chunks


def _parse_layout(data: bytes, f: _File, rank: int) -> _Layout:
    """A data layout message (versions 1-3) -> `_Layout`."""
    sa, ss = f.sizeof_addr, f.sizeof_size
    version = data[0]
    if version == 3:
        kind = data[1]
        if kind == 0:
            return _Layout("compact")
        if kind == 1:
            addr = _u(data, 2, sa)
            address = None if addr == f.undefined else f.base + addr
            return _Layout("contiguous", address=address, size=_u(data, 2 + sa, ss))
        if kind == 2:
            dimensionality = data[2]
            if dimensionality != rank + 1:
                raise _Fallback
            root = _u(data, 3, sa)
            at = 3 + sa
            dims = tuple(_u(data, at + 4 * i, 4) for i in range(dimensionality))
            btree = -1 if root == f.undefined else f.base + root
            return _Layout("chunked", chunks=dims[:-1], btree=btree)
        if kind == 3:
            return _Layout("virtual")
    raise _Fallback  # versions 1-2 (pre-1.6 files) and 4+ (new chunk indexes): ask h5py


class _Description:
    """What the builder needs to know about a dataset, from its header or from h5py."""

    __slots__ = ("dtype", "external", "fill", "filters", "layout", "shape")

    def __init__(
        self,
        shape: tuple[int, ...] | None,
        dtype: np.dtype[Any],
        layout: _Layout,
        filters: list[HDF5Filter],
        fill: Any,
        external: bool,
    ):
        self.shape = shape
        self.dtype = dtype
        self.layout = layout
        self.filters = filters
        self.fill = fill
        self.external = external


def _describe_from_header(messages: list[tuple[int, int, bytes]], f: _File) -> _Description:
    """A dataset's `_Description` decoded from its header messages (`_Fallback` if unusual)."""
    found: dict[int, bytes] = {}
    for mtype, mflags, body in messages:
        if mtype in (_MSG_DATASPACE, _MSG_DATATYPE, _MSG_FILL, _MSG_LAYOUT, _MSG_PIPELINE):
            if mflags & _SHARED or mtype in found:
                raise _Fallback
            found[mtype] = body
        elif mtype == _MSG_EXTERNAL:
            raise _Fallback  # data in external raw files: h5py reads them
    if not {_MSG_DATASPACE, _MSG_DATATYPE, _MSG_FILL, _MSG_LAYOUT} <= found.keys():
        raise _Fallback
    shape = _parse_dataspace(found[_MSG_DATASPACE], f.sizeof_size)
    dtype, _padding = _parse_datatype(found[_MSG_DATATYPE])
    layout = _parse_layout(found[_MSG_LAYOUT], f, len(shape))
    filters = _parse_pipeline(found[_MSG_PIPELINE]) if _MSG_PIPELINE in found else []
    fill = _parse_fill(found[_MSG_FILL], dtype)
    return _Description(shape, dtype, layout, filters, fill, external=False)


def _describe_with_h5py(
    ds: Any, f: _File, messages: list[tuple[int, int, bytes]] | None
) -> _Description:
    """A dataset's `_Description` from h5py (any encoding h5py reads)."""
    import h5py

    dcpl = ds.id.get_create_plist()
    kind = {
        h5py.h5d.COMPACT: "compact",
        h5py.h5d.CONTIGUOUS: "contiguous",
        h5py.h5d.CHUNKED: "chunked",
    }.get(dcpl.get_layout(), "virtual")
    shape = None if ds.shape is None else tuple(int(s) for s in ds.shape)
    layout = _Layout(kind)
    if kind == "contiguous":
        offset = ds.id.get_offset()
        layout.address = None if offset is None else int(offset)
        layout.size = int(ds.id.get_storage_size())
    elif kind == "chunked":
        layout.chunks = tuple(int(c) for c in dcpl.get_chunk())
        if messages is not None and shape is not None:
            # the B-tree may still be readable directly when only the rest was unusual
            try:
                found = [b for t, fl, b in messages if t == _MSG_LAYOUT and not fl & _SHARED]
                if len(found) == 1:
                    parsed = _parse_layout(found[0], f, len(shape))
                    if parsed.chunks == layout.chunks:
                        layout.btree = parsed.btree
            except (_Fallback, IndexError):
                pass
    filters: list[HDF5Filter] = []
    for i in range(dcpl.get_nfilters()):
        fid, _flags, cd, name = dcpl.get_filter(i)
        filters.append((int(fid), tuple(int(v) for v in cd), _decode_text(name)))
    try:
        fill = ds.fillvalue
    except (OSError, TypeError, ValueError, RuntimeError):
        # RuntimeError: the fill value is undefined (PyTables writes such datasets); HDF5
        # leaves unwritten elements undefined, so zero, as for a header without a fill value
        fill = np.zeros((), dtype=ds.dtype)[()]
    return _Description(shape, ds.dtype, layout, filters, fill, dcpl.get_external_count() > 0)


# ---- chunk index -----------------------------------------------------------------------------


def _btree_chunks(
    f: _File, root: int, rank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every chunk in a version-1 B-tree: (element offsets (n, rank), addresses, sizes, masks).

    Each node is read with one read; leaf records are copied raw and decoded with one numpy
    call at the end.  Levels are walked breadth first.
    """
    if f.sizeof_addr != 8:
        raise _Fallback
    dims = rank + 1
    record = np.dtype(
        [("size", "<u4"), ("mask", "<u4"), ("coords", "<u8", (dims,)), ("addr", "<u8")]
    )
    key_size = 8 + 8 * dims
    header = 24
    # nodes hold at most 2K entries, K = 32 unless the file says otherwise (h5py does not
    # tell); a larger node is re-read whole
    node_bytes = header + 64 * record.itemsize + key_size
    leaves = bytearray()
    level_nodes = [root]
    level = None
    visited = 0
    while level_nodes:
        children: list[np.ndarray] = []
        for addr in level_nodes:
            visited += 1
            if visited > 1 << 26:
                raise _Fallback
            buf = f.read(addr, node_bytes)
            if buf[:4] != b"TREE" or buf[4:5] != b"\x01":
                raise _Fallback
            node_level = buf[5]
            if level is not None and node_level != level:
                raise _Fallback
            used = _u(buf, 6, 2)
            need = header + used * record.itemsize + key_size
            if need > len(buf):
                buf = f.read(addr, need)
                if len(buf) < need:
                    raise _Fallback
            if node_level == 0:
                leaves += buf[header : header + used * record.itemsize]
            else:
                recs = np.frombuffer(buf, dtype=record, count=used, offset=header)
                children.append(recs["addr"] + np.uint64(f.base))
        level_nodes = np.concatenate(children).tolist() if children else []
        if children:
            level = node_level - 1
    recs = np.frombuffer(bytes(leaves), dtype=record)
    coords = recs["coords"][:, :rank]
    return coords, recs["addr"] + np.uint64(f.base), recs["size"], recs["mask"]


def _h5py_chunks(dsid: Any, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every chunk of a dataset through h5py's ``chunk_iter`` (HDF5 >= 1.12.3 / 1.14).

    The callback appends to typed arrays: no Python object is kept per chunk.
    """
    coords, addrs, sizes, masks = array("Q"), array("Q"), array("Q"), array("I")
    add_coords, add_addr = coords.extend, addrs.append
    add_size, add_mask = sizes.append, masks.append

    def collect(info: Any) -> None:
        add_coords(info.chunk_offset)
        add_addr(info.byte_offset)
        add_size(info.size)
        add_mask(info.filter_mask)

    if hasattr(dsid, "chunk_iter"):
        dsid.chunk_iter(collect)
    else:  # older HDF5: one query per chunk
        for i in range(dsid.get_num_chunks()):
            collect(dsid.get_chunk_info(i))
    return (
        np.frombuffer(coords, dtype=np.uint64).reshape(-1, rank),
        np.frombuffer(addrs, dtype=np.uint64),
        np.frombuffer(sizes, dtype=np.uint64),
        np.frombuffer(masks, dtype=np.uint32),
    )


def _chunk_grid(
    f: _File,
    btree: int | None,
    dsid: Callable[[], Any],
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chunk grid arrays of a chunked dataset: (present, offsets, lengths, filter masks).

    Reads the v1 B-tree at ``btree`` directly when given (-1: no chunk written yet), else
    iterates with h5py (``dsid()`` opens the dataset).  Chunks the index holds outside the
    current extent (after a shrink) are left out.
    """
    rank = len(shape)
    coords = np.empty((0, rank), np.uint64)
    addrs = sizes = np.empty(0, np.uint64)
    masks = np.empty(0, np.uint32)
    try:
        if btree is None:
            raise _Fallback
        if btree >= 0:
            coords, addrs, sizes, masks = _btree_chunks(f, btree, rank)
    except _Fallback:
        coords, addrs, sizes, masks = _h5py_chunks(dsid(), rank)
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
    index = coords // np.asarray(chunks, dtype=np.uint64)
    inside = (index < np.asarray(grid, dtype=np.uint64)).all(axis=1)
    if not inside.all():
        index, addrs, sizes, masks = index[inside], addrs[inside], sizes[inside], masks[inside]
    present = np.zeros(grid, dtype=bool)
    offsets = np.zeros(grid, dtype=np.uint64)
    lengths = np.zeros(grid, dtype=np.uint64)
    mask_grid = np.zeros(grid, dtype=np.uint32)
    where = tuple(index.T.astype(np.intp))
    present[where] = True
    offsets[where] = addrs
    lengths[where] = sizes
    mask_grid[where] = masks
    return present, offsets, lengths, mask_grid


# ---- contiguous datasets ---------------------------------------------------------------------


def _contiguous_chunks(
    shape: tuple[int, ...], itemsize: int, offset: int, file_size: int, target: int
) -> tuple[tuple[int, ...], np.ndarray]:
    """Virtual chunk shape and grid of byte offsets for uncompressed contiguous data.

    C-ordered data is cut into blocks ``(1, ..., 1, r, *shape[k+1:])``, each one byte range:
    axis ``k`` is the first whose trailing block fits in ``target`` bytes, and ``r`` a divisor
    of ``shape[k]`` near ``target`` bytes, or, when the file has room for the last block's
    overhang (zarr ignores it), simply ``target // block``.  Small data stays one chunk.
    """
    nbytes = math.prod(shape) * itemsize
    whole = tuple(max(s, 1) for s in shape)
    if not shape or nbytes <= target or target <= 0:
        return whole, np.full((1,) * len(shape), offset, dtype=np.uint64)
    inner = [math.prod(shape[k + 1 :]) * itemsize for k in range(len(shape))]
    k = next(k for k in range(len(shape)) if inner[k] <= target)
    n = shape[k]
    rows = max(1, min(n, target // inner[k]))
    best = None
    first = math.ceil(n / rows)
    for count in range(first, min(n, 2 * first, first + 100_000) + 1):
        if n % count == 0:
            best = n // count
            break
    if best is None:
        end = offset + nbytes + (math.ceil(n / rows) * rows - n) * inner[k]
        if end > file_size:
            return whole, np.full((1,) * len(shape), offset, dtype=np.uint64)
        best = rows
    chunk = (1,) * k + (best,) + tuple(shape[k + 1 :])
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunk, strict=True))
    offsets = np.full(grid, offset, dtype=np.uint64)
    for axis, (g, c) in enumerate(zip(grid, chunk, strict=True)):
        if g > 1:
            step = np.arange(g, dtype=np.uint64) * np.uint64(c * math.prod(shape[axis + 1 :]))
            offsets += (step * np.uint64(itemsize)).reshape((-1,) + (1,) * (len(shape) - axis - 1))
    return tuple(max(c, 1) for c in chunk), offsets


# ---- attribute values ------------------------------------------------------------------------


def _decode_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _json_value(value: Any, f: Any) -> Any:
    """An attribute value as JSON-ready Python (str for bytes, lists for arrays)."""
    import h5py

    if isinstance(value, bytes | np.bytes_):
        return _decode_text(bytes(value))
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSUV" or value.dtype.fields:
            out: Any = _reshape_list(
                [_json_value(v, f) for v in value.reshape(-1).tolist()], value.shape
            )
        elif value.dtype.kind == "c":
            out = np.stack([value.real, value.imag], axis=-1).tolist()
        else:
            out = value.tolist()
        # netCDF stores scalar attributes as length-1 arrays
        if value.ndim == 1 and value.size == 1:
            return out[0]
        return out
    if isinstance(value, np.void) and value.dtype.fields:
        return {name: _json_value(value[name], f) for name in value.dtype.names or ()}
    if isinstance(value, np.generic):
        return _json_value(value.item(), f)
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, h5py.Reference | h5py.RegionReference):
        return _reference_name(value, f)
    if isinstance(value, list | tuple):
        return [_json_value(v, f) for v in value]
    return str(value)


def _reshape_list(items: list[Any], shape: tuple[int, ...]) -> Any:
    """A flat list nested to ``shape`` (C order), like ``ndarray.tolist``."""
    if len(shape) <= 1:
        return items if shape else items[0]
    step = len(items) // shape[0] if shape[0] else 0
    return [_reshape_list(items[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _reference_name(ref: Any, f: Any) -> str | None:
    """The path of the object an HDF5 reference points to (None for a null reference)."""
    import h5py

    if not ref:
        return None
    try:
        return _decode_text(h5py.h5r.get_name(ref, f.id))
    except (KeyError, ValueError, OSError, TypeError):
        return None


# Attributes never read: dimension-scale back references (large, and only HDF5 bookkeeping)
# and netCDF-4 file bookkeeping.  DIMENSION_LIST is read only when dimension ids fail.
_NOT_READ = frozenset(
    {
        "REFERENCE_LIST",
        "DIMENSION_LIST",
        "_NCProperties",
        "_nc3_strict",
        "_IsNetcdf4",
        "_SuperblockVersion",
    }
)
_UNREAD = object()


def _h5py_attribute(obj: Any, name: str, where: str) -> tuple[bool, Any]:
    """``(True, value)`` of one attribute read by h5py, ``(False, None)`` if it cannot be."""
    try:
        return True, obj.attrs[name]
    except (OSError, TypeError, ValueError, KeyError) as e:
        warnings.warn(
            f"{where}: attribute {name!r} cannot be read and is left out ({e})", stacklevel=5
        )
        return False, None


def _h5py_attributes(obj: Any, where: str) -> dict[str, Any]:
    """An object's attributes read by h5py (`_UNREAD` for the ones not needed)."""
    out: dict[str, Any] = {}
    for name in obj.attrs:
        if name in _NOT_READ:
            out[name] = _UNREAD
            continue
        ok, value = _h5py_attribute(obj, name, where)
        if ok:
            out[name] = value
    return out


def _header_attributes(
    messages: list[tuple[int, int, bytes]], f: _File, obj: Callable[[], Any], where: str
) -> dict[str, Any]:
    """An object's attributes decoded from its header's attribute messages.

    Attributes of types the decoder does not handle are read by h5py one by one; objects
    with dense attribute storage (a fractal heap) are read by h5py whole.
    """
    sa = f.sizeof_addr
    for mtype, _flags, body in messages:
        if mtype == _MSG_ATTRIBUTE_INFO:
            heap = _u(body, 4 if body[1] & 1 else 2, sa)
            if heap != f.undefined:
                return _h5py_attributes(obj(), where)
    out: dict[str, Any] = {}
    for mtype, mflags, body in messages:
        if mtype != _MSG_ATTRIBUTE:
            continue
        if mflags & _SHARED:
            return _h5py_attributes(obj(), where)
        try:
            name, value = _parse_attribute(body, f.sizeof_size)
        except (_Fallback, UnicodeDecodeError, ValueError):
            found = _attribute_name(body)
            if found is None:
                return _h5py_attributes(obj(), where)
            name = found
            if name in _NOT_READ:
                out[name] = _UNREAD
                continue
            ok, value = _h5py_attribute(obj(), name, where)
            if not ok:
                continue
        out[name] = _UNREAD if name in _NOT_READ else value
    return out


def _attribute_name(body: bytes) -> str | None:
    """The name in an attribute message, or None if it cannot be told."""
    try:
        version = body[0]
        pos = 9 if version == 3 else 8
        return body[pos : pos + _u(body, 2, 2)].rstrip(b"\x00").decode("utf-8")
    except (IndexError, UnicodeDecodeError):
        return None


def _user_attributes(raw: dict[str, Any], f: Any) -> dict[str, Any]:
    """The attributes worth carrying over, as JSON-ready values."""
    return {
        name: _json_value(value, f)
        for name, value in raw.items()
        if name not in _INTERNAL_ATTRIBUTES and value is not _UNREAD
    }


def _is_dimension_scale(raw: dict[str, Any]) -> bool:
    cls = raw.get("CLASS")
    return isinstance(cls, bytes | np.bytes_) and bytes(cls) == b"DIMENSION_SCALE"


def _is_dimension_only(raw: dict[str, Any]) -> bool:
    """A netCDF-4 dimension without a variable (a dimension scale holding no data)."""
    name = raw.get("NAME")
    return (
        isinstance(name, bytes | np.bytes_)
        and bytes(name).startswith(_NETCDF_DIM_ONLY)
        and _is_dimension_scale(raw)
    )


def _first_int(value: Any) -> int | None:
    try:
        return int(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None


class _PhonyDims:
    """``phony_dim_N`` names for axes without dimension scales, one set per group.

    An axis of length L takes the group's first phony dimension of length L that the same
    dataset has not used yet, so one dataset never repeats a name (h5netcdf's scheme).
    """

    def __init__(self) -> None:
        self._by_length: dict[int, list[str]] = {}
        self._count = 0

    def names(self, lengths: list[int]) -> list[str]:
        used: dict[int, int] = {}
        out = []
        for length in lengths:
            k = used.get(length, 0)
            used[length] = k + 1
            names = self._by_length.setdefault(length, [])
            if k == len(names):
                names.append(f"phony_dim_{self._count}")
                self._count += 1
            out.append(names[k])
        return out


# Parsed zarr objects reused across datasets: building them is most of the metadata cost.
_ZDTYPES: dict[np.dtype[Any], Any] = {}
_CODECS: dict[bytes, tuple[Any, ...]] = {}
_CHUNK_KEY_ENCODING = DefaultChunkKeyEncoding(separator="/")


def _zarr_dtype(dtype: np.dtype[Any]) -> Any:
    zdtype = _ZDTYPES.get(dtype)
    if zdtype is None:
        with warnings.catch_warnings():
            # fixed-length strings have no finalised Zarr v3 spec; zarr-python reads them
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
            zdtype = get_data_type_from_native_dtype(dtype)
        _ZDTYPES[dtype] = zdtype
    return zdtype


def _zarr_codecs(codecs: list[dict[str, Any]]) -> tuple[Any, ...]:
    key = orjson.dumps(codecs)
    parsed = _CODECS.get(key)
    if parsed is None:
        parsed = parse_codecs(codecs)
        _CODECS[key] = parsed
    return parsed


# ---- the builder -----------------------------------------------------------------------------


class _Node:
    """A member of the group being built: where it is and what its header says."""

    __slots__ = (
        "_h5", "address", "dimids", "dims", "group", "info", "messages", "name", "path", "raw"
    )  # fmt: skip

    def __init__(
        self,
        group: Any,
        name: str,
        path: str,
        address: int | None,
        messages: list[tuple[int, int, bytes]] | None,
    ):
        self.group = group
        self.name = name
        self.path = path
        self.address = address
        self.messages = messages
        self.raw: dict[str, Any] = {}
        self.info: _Description | None = None
        self.dims: list[str] = []
        self.dimids: list[int] | None = None  # netCDF-4 dimension ids, when they resolve
        self._h5: Any = None

    def h5(self) -> Any:
        """The h5py object, opened on first use."""
        if self._h5 is None:
            self._h5 = self.group[self.name]
        return self._h5

    def kind(self) -> str:
        """ "dataset", "group" or "other" (named datatypes, ...)."""
        if self.messages is not None:
            types = {m[0] for m in self.messages}
            if _MSG_LAYOUT in types:
                return "dataset"
            if _MSG_LINK_INFO in types or _MSG_SYMBOL_TABLE in types:
                return "group"
        import h5py

        obj = self.h5()
        if isinstance(obj, h5py.Dataset):
            return "dataset"
        if isinstance(obj, h5py.Group):
            return "group"
        return "other"


class _Plan:
    """A group walked but not built yet: its datasets, child groups and attributes."""

    __slots__ = ("attributes", "datasets", "groups")

    def __init__(self, datasets: list[_Node], groups: dict[str, _Plan], attributes: dict[str, Any]):
        self.datasets = datasets
        self.groups = groups
        self.attributes = attributes


class _Builder:
    """Builds a `ManifestGroup` in two passes.

    The walk (`plan`) reads every header and attribute; only then are arrays built, because a
    netCDF-4 variable's shape is its dimensions' lengths, and an unlimited dimension is as
    long as the longest dataset along it, wherever in the file that dataset is.
    """

    def __init__(
        self,
        source: Source,
        f: _File,
        drop: Collection[str],
        load: Collection[str],
        split_contiguous_bytes: int,
    ):
        self.source = source
        self.f = f
        self.drop = set(drop)
        self.load = set(load)
        self.split = split_contiguous_bytes
        self.seen: set[str] = set()
        # netCDF-4 dimension id -> name, from the dimension scales met so far (ids are
        # unique in a file and child groups see their ancestors' dimensions)
        self.dimids: dict[int, str] = {}
        # netCDF-4 dimension id -> length (the longest extent of any dataset along it)
        self.dimlen: dict[int, int] = {}

    def _messages(self, address: int | None) -> list[tuple[int, int, bytes]] | None:
        if address is None or not _DECODE_HEADERS:
            return None
        try:
            return _header_messages(self.f, address)
        except (_Fallback, IndexError, ValueError):
            return None

    def attributes(self, node: _Node) -> dict[str, Any]:
        where = f"{self.source.url}:/{node.path}"
        if node.messages is not None:
            return _header_attributes(node.messages, self.f, node.h5, where)
        return _h5py_attributes(node.h5(), where)

    def describe(self, node: _Node) -> _Description:
        if node.messages is not None:
            try:
                return _describe_from_header(node.messages, self.f)
            except (_Fallback, IndexError, ValueError, TypeError):
                pass
        return _describe_with_h5py(node.h5(), self.f, node.messages)

    # -- pass 1: walking ----------------------------------------------------------------------

    def plan(self, g: Any, prefix: str, address: int | None) -> _Plan:
        import h5py

        datasets: list[_Node] = []
        subgroups: list[_Node] = []
        links = g.id.links
        for name in g:
            path = f"{prefix}{name}"
            info = links.get_info(name.encode())
            if info.type == h5py.h5l.TYPE_EXTERNAL:
                link = g.get(name, getlink=True)
                warnings.warn(
                    f"{self.source.url}: /{path} is an external link to "
                    f"{link.filename}:{link.path}, which is not followed",
                    stacklevel=3,
                )
                continue
            if info.type == h5py.h5l.TYPE_HARD:
                node = _Node(g, name, path, int(info.u), None)
            else:  # soft link: h5py resolves it
                if g.get(name) is None:
                    continue  # dangling
                node = _Node(g, name, path, None, None)
            self.seen.update((name, path))
            if name in self.drop or path in self.drop:
                continue
            node.messages = self._messages(node.address)
            kind = node.kind()
            if kind == "dataset":
                node.raw = self.attributes(node)
                if "_Netcdf4Dimid" in node.raw and _is_dimension_scale(node.raw):
                    dimid = _first_int(node.raw["_Netcdf4Dimid"])
                    if dimid is not None:
                        self.dimids[dimid] = name
                if not _is_dimension_only(node.raw):
                    datasets.append(node)
            elif kind == "group":
                subgroups.append(node)
        phony = _PhonyDims()
        described = []
        for node in datasets:
            try:
                node.info = self.describe(node)
            except (TypeError, ValueError, RuntimeError) as e:
                # a type h5py has no numpy type for (HDF5 time, quad precision floats...):
                # that dataset is left out, the rest of the file is still read
                warnings.warn(
                    f"{self.source.url}:/{node.path}: dataset {node.path!r} is left out: "
                    f"h5py cannot describe it ({type(e).__name__}: {e})",
                    stacklevel=3,
                )
                continue
            described.append(node)
            if node.info.shape is not None:
                self.dimensions(node, node.info.shape, phony)
        datasets = described
        here = _Node(g.parent, "", prefix.rstrip("/"), address, self._messages(address))
        here._h5 = g
        attributes = _user_attributes(self.attributes(here), self.f.h5)
        groups = {
            node.name: self.plan(node.h5(), f"{node.path}/", node.address) for node in subgroups
        }
        return _Plan(datasets, groups, attributes)

    def dimensions(self, node: _Node, shape: tuple[int, ...], phony: _PhonyDims) -> None:
        """Set a dataset's dimension names (and netCDF-4 dimension ids).

        From netCDF-4 dimension ids (``_Netcdf4Coordinates``) when they all resolve, else
        from attached dimension scales (``DIMENSION_LIST``), else the dataset's own name if it
        is a 1-d dimension scale; axes left over get phony names.
        """
        raw = node.raw
        ndim = len(shape)
        if ndim == 0:
            return
        names: list[str | None] = [None] * ndim
        ids = raw.get("_Netcdf4Coordinates")
        dimids = None if ids is None else np.asarray(ids).reshape(-1).tolist()
        if "_Netcdf4Dimid" in raw and ndim == 1 and _is_dimension_scale(raw):
            dimids = [_first_int(raw["_Netcdf4Dimid"])]
        if dimids is not None and len(dimids) == ndim and all(i in self.dimids for i in dimids):
            names = [self.dimids[i] for i in dimids]
            node.dimids = dimids
            for i, extent in zip(dimids, shape, strict=True):
                self.dimlen[i] = max(self.dimlen.get(i, 0), extent)
        elif "DIMENSION_LIST" in raw:
            try:
                lists = node.h5().attrs["DIMENSION_LIST"]
            except (OSError, TypeError, ValueError):
                lists = []
            for axis, refs in enumerate(lists):
                if axis < ndim and len(refs):
                    target = _reference_name(refs[0], self.f.h5)
                    if target:
                        names[axis] = posixpath.basename(target)
        elif _is_dimension_scale(raw) and ndim == 1:
            names[0] = node.name
        missing = [axis for axis, n in enumerate(names) if n is None]
        if missing:
            filled = phony.names([shape[axis] for axis in missing])
            for axis, n in zip(missing, filled, strict=True):
                names[axis] = n
        node.dims = [n for n in names if n is not None]

    # -- pass 2: building ---------------------------------------------------------------------

    def build(self, plan: _Plan) -> ManifestGroup:
        arrays = {node.name: self.array(node) for node in plan.datasets}
        groups = {name: self.build(sub) for name, sub in plan.groups.items()}
        return ManifestGroup(arrays=arrays, groups=groups, attributes=plan.attributes)

    def array(self, node: _Node) -> ManifestArray | InlineArray:
        path = node.path
        where = f"{self.source.url}:/{path}"
        info = node.info
        assert info is not None
        if info.shape is None:
            raise UnsupportedError(
                f"{where}: dataset {path!r} has a null dataspace (no shape), which Zarr cannot "
                "represent; drop it"
            )
        shape = info.shape
        dims = node.dims
        attrs = _user_attributes(node.raw, self.f.h5)
        dtype = info.dtype
        if "_FillValue" in attrs and dtype.kind in "fiuS":
            # xarray masks a Zarr v3 array by this attribute, in its own encoding
            attrs["_FillValue"] = xarray_fill_value_attribute(attrs["_FillValue"], dtype)
        if path in self.load or node.name in self.load or _must_load(info):
            return self.inline(node, dims, attrs)
        if dtype.fields is not None and not _is_packed(dtype):
            # Zarr's structured type packs the fields in declaration order; HDF5 stores them
            # at their own offsets, possibly out of order (PyTables) or with padding
            stored = _storage_order(dtype)
            if stored is None:
                why = f"the compound type of {path!r} has padding between or after its fields"
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > MAX_AUTO_LOAD_BYTES:
                    raise UnsupportedError(f"{where}: {why}; load it or leave it out")
                warnings.warn(f"{where}: {why}; its values are loaded", stacklevel=4)
                return self.inline(node, dims, attrs)
            dtype = stored
            reordered = np.zeros((), dtype=stored)
            for name in stored.names or ():
                reordered[name] = np.asarray(info.fill)[name]
            fill = reordered[()]
        else:
            fill = info.fill
        try:
            zdtype = _zarr_dtype(dtype)
        except (ValueError, TypeError) as e:
            raise UnsupportedError(f"{where}: dtype {dtype} of {path!r} has no Zarr type") from e
        layout = info.layout
        if layout.kind == "chunked":
            assert layout.chunks is not None
            chunks = layout.chunks
            if node.dimids is not None:
                # netCDF-4: shorter than its unlimited dimension reads as fill beyond its end
                shape = tuple(
                    max(extent, self.dimlen.get(i, 0))
                    for extent, i in zip(shape, node.dimids, strict=True)
                )
            codecs = hdf5_filters_to_codecs(info.filters, dtype, variable=path)
            present, offsets, lengths, masks = _chunk_grid(
                self.f, layout.btree, lambda: node.h5().id, shape, chunks
            )
            skipped = int(np.count_nonzero(masks[present]))
            if skipped:
                # HDF5 stores a chunk unfiltered when an optional filter fails on it (Blosc on
                # incompressible data): no single codec pipeline decodes such a dataset
                why = (
                    f"{skipped} chunk(s) of {path!r} were stored with some of its HDF5 filters "
                    "skipped, which one codec pipeline cannot decode"
                )
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > MAX_AUTO_LOAD_BYTES:
                    raise UnsupportedError(f"{where}: {why}; load it or leave it out")
                warnings.warn(f"{where}: {why}; its values are loaded", stacklevel=4)
                return self.inline(node, dims, attrs)
            manifest = self._manifest(present, offsets, lengths)
        else:  # contiguous
            codecs = [bytes_codec(dtype, variable=path)]
            if layout.address is None or math.prod(shape) == 0:
                chunks = tuple(max(s, 1) for s in shape)
                manifest = ChunkManifest.empty((1,) * len(shape))
            else:
                chunks, offsets = _contiguous_chunks(
                    shape, dtype.itemsize, layout.address, self.f.size, self.split
                )
                nbytes = math.prod(chunks) * dtype.itemsize
                lengths = np.full(offsets.shape, nbytes, dtype=np.uint64)
                manifest = ChunkManifest.from_arrays(
                    paths=self.source.url, offsets=offsets, lengths=lengths
                )
        try:
            meta = ArrayV3Metadata(
                shape=shape,
                data_type=zdtype,
                chunk_grid=RegularChunkGridMetadata(chunk_shape=chunks),
                chunk_key_encoding=_CHUNK_KEY_ENCODING,
                fill_value=fill,
                codecs=_zarr_codecs(codecs),
                attributes=attrs,
                dimension_names=dims or None,
            )
        except (ValueError, TypeError) as e:
            raise UnsupportedError(f"{where}: {path!r} cannot be described to Zarr ({e})") from e
        return ManifestArray(meta, manifest)

    def _manifest(
        self, present: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
    ) -> ChunkManifest:
        if present.all():
            return ChunkManifest.from_arrays(
                paths=self.source.url, offsets=offsets, lengths=lengths
            )
        paths = np.full(present.shape, "", dtype=np.dtypes.StringDType())
        paths[present] = self.source.url
        return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)

    def inline(self, node: _Node, dims: list[str], attrs: dict[str, Any]) -> InlineArray:
        """Read a dataset through h5py and store its values inline."""
        import h5py

        ds = node.h5()
        path = node.path
        where = f"{self.source.url}:/{path}"
        dtype = ds.dtype
        fill: Any = None
        if h5py.check_string_dtype(dtype) is not None and dtype.kind == "O":
            data = np.asarray(ds.asstr()[()], dtype=object).astype(np.dtypes.StringDType())
        elif h5py.check_ref_dtype(dtype) is not None:
            refs = np.asarray(ds[()], dtype=object)
            names = [_reference_name(r, self.f.h5) or "" for r in refs.reshape(-1).tolist()]
            data = np.array(names, dtype=np.dtypes.StringDType()).reshape(refs.shape)
        elif dtype.kind == "O":
            raise UnsupportedError(
                f"{where}: {path!r} holds variable-length data of type {dtype} "
                f"({h5py.check_vlen_dtype(dtype)}), which Zarr cannot represent; drop it"
            )
        else:
            data = np.asarray(ds[()])
            if data.dtype.fields is not None and not _is_packed(data.dtype):
                # Zarr's structured type has no padding: the same fields, packed
                from numpy.lib import recfunctions

                data = recfunctions.repack_fields(data)
            try:
                fill = ds.fillvalue
            except (OSError, TypeError, ValueError):
                fill = None
            if node.dimids is not None and data.ndim:
                # netCDF-4: pad up to the unlimited dimensions' lengths, as netCDF reads it
                full = tuple(
                    max(extent, self.dimlen.get(i, 0))
                    for extent, i in zip(data.shape, node.dimids, strict=True)
                )
                if full != data.shape:
                    padded = np.full(full, fill if fill is not None else 0, dtype=data.dtype)
                    padded[tuple(slice(0, n) for n in data.shape)] = data
                    data = padded
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
                return InlineArray.from_numpy(
                    data, dimension_names=dims or None, attributes=attrs, fill_value=fill
                )
        except (ValueError, TypeError) as e:
            raise UnsupportedError(
                f"{where}: {path!r} of dtype {dtype} cannot be stored ({e})"
            ) from e


def _is_packed(dtype: np.dtype[Any]) -> bool:
    """Whether a compound type's fields lie in declaration order without gaps (nested too)."""
    names = dtype.names or ()
    return np.dtype([(name, dtype.fields[name][0]) for name in names]) == dtype  # type: ignore[index]


def _storage_order(dtype: np.dtype[Any]) -> np.dtype[Any] | None:
    """The compound type with its fields in the order they are stored, if that packs them.

    None when the fields leave gaps (padding) or a nested compound is not packed.
    """
    fields = sorted(
        ((int(spec[1]), name, spec[0]) for name, spec in (dtype.fields or {}).items()),
        key=lambda f: f[0],
    )
    position = 0
    for offset, _name, field in fields:
        if offset != position or (field.fields is not None and not _is_packed(field)):
            return None
        position += field.itemsize
    if position != dtype.itemsize:
        return None
    return np.dtype([(name, field) for _offset, name, field in fields])


def _must_load(info: _Description) -> bool:
    """Whether a dataset's bytes cannot be referenced and must be stored inline."""
    if info.layout.kind in ("compact", "virtual") or info.external:
        return True
    dtype = info.dtype
    if dtype.kind == "O":  # variable-length strings or sequences, object references
        return True
    return bool(dtype.fields and any(f[0].kind == "O" for f in dtype.fields.values()))


def build_hdf5(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    split_contiguous_bytes: int = DEFAULT_SPLIT_CONTIGUOUS_BYTES,
    **options: Any,
) -> ManifestGroup:
    """Reference the datasets of an HDF5 or netCDF-4 file in place.

    Parameters
    ----------
    source
        The file: a `Source`, a local path or a URL.
    group
        The HDF5 group to start from (``"a/b"``); the whole file when None.
    drop
        Datasets or groups to leave out, by name or by path relative to ``group``.
    load
        Datasets to read now and store inline (`InlineArray`), e.g. coordinates.
    split_contiguous_bytes
        Uncompressed contiguous datasets larger than this are cut into virtual chunks of
        about this size along their leading axes (0 turns splitting off).
    **options
        Passed to `open_source` when ``source`` is a path or URL (obstore options).

    Returns
    -------
    ManifestGroup
        One array per dataset, one child group per HDF5 group; attributes carried over
        (netCDF-4/HDF5 bookkeeping such as ``DIMENSION_LIST`` or ``_Netcdf4Dimid`` left out).
        Compact datasets, variable-length strings and object references are `InlineArray`.

    Raises
    ------
    BuildError
        The file is not HDF5, ``group`` is not a group, or a ``drop``/``load`` name is unknown.
    UnsupportedError
        A dataset uses a filter or type that cannot be referenced (the message names it).
    """
    import h5py

    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_hdf5: unexpected options {sorted(options)}")
    if split_contiguous_bytes < 0:
        raise ValueError(f"split_contiguous_bytes must be >= 0, got {split_contiguous_bytes}")
    with _open(source) as f:
        start = f.h5
        if group not in (None, "", "/"):
            assert group is not None
            node = f.h5.get(group)
            if not isinstance(node, h5py.Group):
                what = "not found" if node is None else "not a group"
                raise BuildError(f"{source.url}: group {group!r} is {what}")
            start = node
        builder = _Builder(source, f, drop, load, split_contiguous_bytes)
        result = builder.build(builder.plan(start, "", _group_address(start)))
        unknown = sorted((set(drop) | set(load)) - builder.seen)
        if unknown:
            raise BuildError(f"{source.url}: no dataset or group {unknown} in the file (drop/load)")
        return result


def _group_address(g: Any) -> int:
    """The object header address of a group (cheap for groups: no chunk index to measure)."""
    import h5py

    return int(h5py.h5o.get_info(g.id).addr)
