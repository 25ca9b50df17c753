"""HDF5 object headers read straight from the file's bytes: what a dataset is.

A header's messages (dataspace, datatype, fill value, data layout, filter pipeline,
attributes) are decoded for the common, simple encodings (`describe_from_header`); anything
unusual raises `Fallback`, and h5py describes the dataset instead (`describe_with_h5py`).
Both give the same `Description`; h5py's per-object calls cost far more than the decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from zarr_manifest.builders.codecs import (
    HDF5Filter,
)


class HDF5File:
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


# ---- object headers --------------------------------------------------------------------------


class Fallback(Exception):
    """The header decoder does not handle this; ask h5py instead."""


# Message types (HDF5 file format spec, section IV.A.2).
MSG_DATASPACE = 0x01
MSG_LINK_INFO = 0x02
MSG_DATATYPE = 0x03
MSG_FILL = 0x05
MSG_EXTERNAL = 0x07
MSG_LAYOUT = 0x08
MSG_PIPELINE = 0x0B
MSG_ATTRIBUTE = 0x0C
MSG_CONTINUATION = 0x10
MSG_SYMBOL_TABLE = 0x11
MSG_ATTRIBUTE_INFO = 0x15
SHARED = 0x02  # message flag: the body is a reference to a shared message


def read_uint(data: bytes, at: int, n: int) -> int:
    return int.from_bytes(data[at : at + n], "little")


def header_messages(f: HDF5File, header_addr: int) -> list[tuple[int, int, bytes]]:
    """The messages ``(type, flags, body)`` of the object header at ``header_addr``.

    Handles version 1 and 2 headers and their continuation blocks.  Raises `Fallback` on
    anything unexpected.
    """
    sa, ss = f.sizeof_addr, f.sizeof_size
    at = f.base + header_addr
    head = f.read(at, 512)
    blocks: list[tuple[int, int, int]] = []  # (absolute start, length, header version)
    if head[:4] == b"OHDR":
        version, flags = head[4], head[5]
        if version != 2:
            raise Fallback
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        blocks.append((at + pos + width, read_uint(head, pos, width), 2))
        creation_order = bool(flags & 0x04)
    elif head[:1] == b"\x01":
        blocks.append((at + 16, read_uint(head, 8, 4), 1))
        creation_order = False
    else:
        raise Fallback
    messages: list[tuple[int, int, bytes]] = []
    seen = 0
    while blocks:
        start, length, version = blocks.pop(0)
        seen += 1
        if seen > 1000 or length > 1 << 24:
            raise Fallback
        if seen == 1 and start + length <= at + len(head):
            data = head[start - at : start - at + length]
        else:
            data = f.read(start, length)
        if len(data) != length:
            raise Fallback
        pos = 0
        if version == 2 and seen > 1:
            if data[:4] != b"OCHK":
                raise Fallback
            pos, length = 4, length - 4  # the checksum ends the block
        while pos < length:
            if version == 1:
                body = pos + 8
                if body > length:
                    break
                mtype, msize, mflags = (
                    read_uint(data, pos, 2),
                    read_uint(data, pos + 2, 2),
                    data[pos + 4],
                )
            else:
                body = pos + (6 if creation_order else 4)
                if body > length:
                    break  # a gap shorter than a message header
                mtype, msize, mflags = data[pos], read_uint(data, pos + 1, 2), data[pos + 3]
            if body + msize > length:
                raise Fallback
            if mtype == MSG_CONTINUATION:
                blocks.append(
                    (f.base + read_uint(data, body, sa), read_uint(data, body + sa, ss), version)
                )
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

    Only plain integers, IEEE floats and fixed-length strings; `Fallback` otherwise.
    """
    if len(data) < 8:
        raise Fallback
    cls = data[0] & 0x0F
    bits = data[1] | data[2] << 8 | data[3] << 16
    size = read_uint(data, 4, 4)
    if cls == 0:  # fixed-point
        if size not in (1, 2, 4, 8) or bits & 0b110 or len(data) < 12:
            raise Fallback
        if read_uint(data, 8, 2) != 0 or read_uint(data, 10, 2) != 8 * size:
            raise Fallback
        order = ">" if bits & 1 else "<"
        return np.dtype(f"{order}{'i' if bits & 8 else 'u'}{size}"), -1
    if cls == 1:  # floating point
        if size not in _IEEE or bits & 0x40 or len(data) < 20:
            raise Fallback
        props = (
            read_uint(data, 8, 2), read_uint(data, 10, 2), data[12], data[13], data[14], data[15],
            read_uint(data, 16, 4),
        )  # fmt: skip
        if props != _IEEE[size]:
            raise Fallback
        return np.dtype(f"{'>' if bits & 1 else '<'}f{size}"), -1
    if cls == 3:  # fixed-length string
        padding = bits & 0x0F
        if padding not in (0, 1) or size < 1:
            raise Fallback  # space-padded strings are converted by HDF5 on read
        return np.dtype(f"S{size}"), padding
    raise Fallback


def _parse_dataspace(data: bytes, ss: int) -> tuple[int, ...]:
    """A dataspace message -> shape (``()`` for scalars); `Fallback` for null dataspaces."""
    version, ndims = data[0], data[1]
    if version == 1:
        pos = 8
    elif version == 2:
        if data[3] == 2:
            raise Fallback  # null dataspace: h5py reports it as Empty
        pos = 4
    else:
        raise Fallback
    if len(data) < pos + ndims * ss:
        raise Fallback
    return tuple(read_uint(data, pos + i * ss, ss) for i in range(ndims))


def _decode_values(raw: bytes, dtype: np.dtype[Any], padding: int, shape: tuple[int, ...]) -> Any:
    """Values of ``dtype`` packed in ``raw``: an array, or a numpy scalar for shape ``()``."""
    count = math.prod(shape)
    if len(raw) < count * dtype.itemsize:
        raise Fallback
    values = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
    if padding == 0 and any(b"\x00" in v for v in values.reshape(-1).tolist()):
        raise Fallback  # a null-terminated string with bytes after its terminator
    return values[()] if not shape else values.copy()


def parse_attribute(data: bytes, ss: int) -> tuple[str, Any]:
    """An attribute message -> (name, value as h5py would return it)."""
    version = data[0]
    if version not in (1, 2, 3) or data[1] & 0x03:
        raise Fallback  # shared datatype / dataspace
    name_size, type_size, space_size = (
        read_uint(data, 2, 2),
        read_uint(data, 4, 2),
        read_uint(data, 6, 2),
    )
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
        fid = read_uint(data, pos, 2)
        pos += 2
        name_len = 0
        if version == 1 or fid >= 256:
            name_len = read_uint(data, pos, 2)
            pos += 2
        ncd = read_uint(data, pos + 2, 2)
        pos += 4
        name = data[pos : pos + name_len].split(b"\x00", 1)[0].decode("latin-1")
        pos += (name_len + 7) & ~7 if version == 1 else name_len
        cd = tuple(read_uint(data, pos + 4 * i, 4) for i in range(ncd))
        pos += 4 * ncd + (4 if version == 1 and ncd % 2 else 0)
        if pos > len(data):
            raise Fallback
        filters.append((fid, cd, name))
    return filters


def _parse_fill(data: bytes, dtype: np.dtype[Any]) -> Any:
    """A fill value message (version 1-3) -> the fill value (zero when none is defined)."""
    version = data[0]
    if version in (1, 2):
        defined = data[3]
        if version == 1 or defined:
            size, pos = read_uint(data, 4, 4), 8
        else:
            size, pos = 0, 8
    elif version == 3:
        flags = data[1]
        size, pos = (read_uint(data, 2, 4), 6) if flags & 0x20 else (0, 2)
    else:
        raise Fallback
    if size == 0:
        return np.zeros((), dtype=dtype)[()]
    if size != dtype.itemsize or len(data) < pos + size:
        raise Fallback
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


def _parse_layout(data: bytes, f: HDF5File, rank: int) -> _Layout:
    """A data layout message (versions 1-3) -> `_Layout`."""
    sa, ss = f.sizeof_addr, f.sizeof_size
    version = data[0]
    if version == 3:
        kind = data[1]
        if kind == 0:
            return _Layout("compact")
        if kind == 1:
            addr = read_uint(data, 2, sa)
            address = None if addr == f.undefined else f.base + addr
            return _Layout("contiguous", address=address, size=read_uint(data, 2 + sa, ss))
        if kind == 2:
            dimensionality = data[2]
            if dimensionality != rank + 1:
                raise Fallback
            root = read_uint(data, 3, sa)
            at = 3 + sa
            dims = tuple(read_uint(data, at + 4 * i, 4) for i in range(dimensionality))
            btree = -1 if root == f.undefined else f.base + root
            return _Layout("chunked", chunks=dims[:-1], btree=btree)
        if kind == 3:
            return _Layout("virtual")
    raise Fallback  # versions 1-2 (pre-1.6 files) and 4+ (new chunk indexes): ask h5py


class Description:
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


def describe_from_header(messages: list[tuple[int, int, bytes]], f: HDF5File) -> Description:
    """A dataset's `Description` decoded from its header messages (`Fallback` if unusual)."""
    found: dict[int, bytes] = {}
    for mtype, mflags, body in messages:
        if mtype in (MSG_DATASPACE, MSG_DATATYPE, MSG_FILL, MSG_LAYOUT, MSG_PIPELINE):
            if mflags & SHARED or mtype in found:
                raise Fallback
            found[mtype] = body
        elif mtype == MSG_EXTERNAL:
            raise Fallback  # data in external raw files: h5py reads them
    if not {MSG_DATASPACE, MSG_DATATYPE, MSG_FILL, MSG_LAYOUT} <= found.keys():
        raise Fallback
    shape = _parse_dataspace(found[MSG_DATASPACE], f.sizeof_size)
    dtype, _padding = _parse_datatype(found[MSG_DATATYPE])
    layout = _parse_layout(found[MSG_LAYOUT], f, len(shape))
    filters = _parse_pipeline(found[MSG_PIPELINE]) if MSG_PIPELINE in found else []
    fill = _parse_fill(found[MSG_FILL], dtype)
    return Description(shape, dtype, layout, filters, fill, external=False)


def describe_with_h5py(
    ds: Any, f: HDF5File, messages: list[tuple[int, int, bytes]] | None
) -> Description:
    """A dataset's `Description` from h5py (any encoding h5py reads)."""
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
                found = [b for t, fl, b in messages if t == MSG_LAYOUT and not fl & SHARED]
                if len(found) == 1:
                    parsed = _parse_layout(found[0], f, len(shape))
                    if parsed.chunks == layout.chunks:
                        layout.btree = parsed.btree
            except (Fallback, IndexError):
                pass
    filters: list[HDF5Filter] = []
    for i in range(dcpl.get_nfilters()):
        fid, _flags, cd, name = dcpl.get_filter(i)
        filters.append((int(fid), tuple(int(v) for v in cd), decode_text(name)))
    try:
        fill = ds.fillvalue
    except (OSError, TypeError, ValueError, RuntimeError):
        # RuntimeError: the fill value is undefined (PyTables writes such datasets); HDF5
        # leaves unwritten elements undefined, so zero, as for a header without a fill value
        fill = np.zeros((), dtype=ds.dtype)[()]
    return Description(shape, ds.dtype, layout, filters, fill, dcpl.get_external_count() > 0)


def decode_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")
