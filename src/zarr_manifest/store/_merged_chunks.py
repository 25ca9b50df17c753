"""Merged chunks: a virtual array's chunks shown to zarr's default codec pipeline ``k`` at
a time along the first axis, decoded.

zarr's default ``BatchedCodecPipeline`` spends about 100 microseconds of Python on every
chunk it reads, whatever the store, and its sharding codec decodes a shard's inner chunks
through the same per-chunk path (so virtual shards do not help it).  The one lever a store
has is the number of chunks zarr sees.  So a `ManifestStore` may serve an eligible array's
``zarr.json`` with chunks ``k`` times as long along the first axis and codecs ``[bytes]``
(no compressor), and build each merged chunk's bytes itself: chunks stacked along the
first axis are contiguous in C order, so a merged chunk is its ``k`` chunks decoded with
the array's own codec chain (zarr's codec objects) and laid end to end, with the fill
value's bytes for a chunk the manifest does not hold or that lies past the array's end.
The values zarr reads are the same; the keys, the chunk shape and the codecs differ.

An array stored uncompressed (codecs ``[bytes]``) is merged by reading its chunks' bytes
into place (one read per chunk, or one read of the span that small chunks lie in), without
decoding.  A compressed one costs a decode per chunk in the store, on the read of any of
them, so fewer are merged (see `chunks_per_merge`).  A read of one chunk reads its whole
merged chunk: the view is an opt-in for bulk reads (benchmarks/README.md, "Merged chunks").

This module: which arrays are eligible and how many chunks merge (`merged_layout`), the
rewritten metadata document, and the read of a merged chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from zarr.abc.store import ByteRequest
from zarr.codecs import BytesCodec, ShardingCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_utils import ChunkTransform, evolve_codecs
from zarr.core.metadata.v3 import RegularChunkGridMetadata

from zarr_manifest.errors import ChunkReadError, ZarrManifestError
from zarr_manifest.store._byte_ranges import request_bounds
from zarr_manifest.store.fetch import (
    LOCAL_INLINE_MAX_BYTES,
    KeysOnDemand,
    read_local_ranges_into,
    read_range_sync,
    read_ranges_async,
    read_ranges_into_sync,
    read_ranges_sync,
)

if TYPE_CHECKING:
    from zarr.core.metadata.v3 import ArrayV3Metadata

    from zarr_manifest.store._nodes import LoadedNode
    from zarr_manifest.store._references import CheckedSources

__all__ = [
    "AUTO_MERGED_CHUNKS",
    "AUTO_MERGED_CHUNK_BYTES",
    "AUTO_MERGED_DECODES",
    "MergedChunk",
    "MergedLayout",
    "merged_layout",
    "read_merged_async",
    "read_merged_sync",
]

#: ``merged_chunk_bytes="auto"``: the most decoded bytes of a merged chunk, and the most
#: chunks in one.  A random read of one chunk reads (and decodes) all of a merged chunk's:
#: measured, 4 chunks of 16 KiB (scenario A) or 16 of 4 bytes (C100k) cost a random read
#: ~10 % more than the plain view and make a full read 3x and 8x faster
#: (benchmarks/README.md, "Merged chunks")
AUTO_MERGED_CHUNK_BYTES = 64 << 10
AUTO_MERGED_CHUNKS = 16
#: and the most chunks merged when each costs a decode in the store (a compressed array:
#: measured, 2 chunks cost a random read nothing more, 4 cost ~20-30 % more)
AUTO_MERGED_DECODES = 2
#: never more chunks than this in one merged chunk (the store plans their reads in numpy,
#: but a merged chunk of a million 4-byte chunks would still cost a random read dearly)
MAX_CHUNKS_PER_MERGE = 4096
#: and never more decoded bytes than this, whatever ``merged_chunk_bytes`` asks (the store
#: holds a merged chunk whole, zarr a copy of it)
MAX_MERGED_BYTES = 256 << 20
#: up to this many chunks, a merged chunk's reads are planned in plain Python
_FEW_ROWS = 32
#: chunks stored raw whose bytes lie within this span of a file are read in one request
_GATHER_SPAN_BYTES = 1 << 20
#: numpy kinds of the fixed-size data types merged: bool, integers, floats, complex
_MERGED_KINDS = frozenset("biufc")


class MergedLayout:
    """How an array is shown merged: ``count`` chunks per merged chunk along axis 0.

    Attributes
    ----------
    count
        Chunks per merged chunk (``k``).
    chunk_shape
        The array's (stored) chunk shape.
    chunk_bytes
        Decoded bytes of one chunk.
    dtype
        The numpy dtype of the bytes served (the source's byte order for an array stored
        raw, little-endian otherwise).
    raw
        Whether the chunks are stored as their bytes (codecs ``[bytes]`` in the byte order
        served): merged by reading them end to end, without decoding.
    """

    __slots__ = (
        "_transform",
        "chunk_bytes",
        "chunk_shape",
        "count",
        "dtype",
        "fill",
        "raw",
        "spec",
    )

    def __init__(
        self,
        metadata: ArrayV3Metadata,
        chunk_shape: tuple[int, ...],
        count: int,
        dtype: np.dtype,
        raw: bool,
    ):
        self.count = count
        self.chunk_shape = chunk_shape
        self.dtype = dtype
        self.raw = raw
        self.chunk_bytes = int(np.prod(self.chunk_shape, dtype=np.int64)) * dtype.itemsize
        # zarr's own decode of one chunk, as its fused pipeline builds it
        self.spec = ArraySpec(
            shape=self.chunk_shape,
            dtype=metadata.data_type,
            fill_value=metadata.fill_value,
            config=ArrayConfig.from_dict({}),
            prototype=default_buffer_prototype(),
        )
        self._transform = ChunkTransform(codecs=evolve_codecs(metadata.codecs, self.spec))
        #: one chunk of the fill value, as served
        self.fill = np.full(self.chunk_shape, metadata.fill_value, dtype=dtype)

    @property
    def merged_bytes(self) -> int:
        """Bytes of one merged chunk (every merged chunk has them, edges included)."""
        return self.count * self.chunk_bytes

    def decode(self, data: Any) -> np.ndarray:
        """One chunk's stored bytes decoded with the array's codecs (zarr's objects)."""
        buffer = self.spec.prototype.buffer.from_bytes(data)
        return self._transform.decode_chunk(buffer, self.spec).as_numpy_array()


def merged_layout(
    metadata: ArrayV3Metadata, grid_shape: Sequence[int], target_bytes: int, *, auto: bool
) -> MergedLayout | None:
    """The merged view of an array, or None when it is not eligible or not worth it.

    Eligible: a regular chunk grid of 1+ dimensions, a fixed-size numeric or bool data
    type, codecs zarr can run synchronously (not sharding), and at least 2 chunks to merge
    along the first axis.  See `chunks_per_merge` for how many.
    """
    grid = metadata.chunk_grid
    if not isinstance(grid, RegularChunkGridMetadata) or not metadata.shape:
        return None
    try:
        native = np.dtype(metadata.dtype.to_native_dtype())
    except Exception:  # a data type numpy does not hold as such
        return None
    if native.kind not in _MERGED_KINDS or native.hasobject or native.fields is not None:
        return None
    if native.kind == "b" and native.itemsize != 1:
        return None
    codecs = list(metadata.codecs)
    if any(isinstance(codec, ShardingCodec) for codec in codecs):
        return None  # its chunks are shards: zarr reads them in parts, merged or not
    raw = len(codecs) == 1 and isinstance(codecs[0], BytesCodec)
    # raw: the source's byte order, its bytes served as they are; else little-endian.  The
    # source's order is its bytes codec's: the data type's own byte order is whatever the
    # metadata object was made with (a document read from JSON has the machine's)
    if native.itemsize == 1:
        dtype = native
    elif raw:
        endian = getattr(codecs[0], "endian", None)
        dtype = native.newbyteorder(">" if str(getattr(endian, "value", endian)) == "big" else "<")
    else:
        dtype = native.newbyteorder("<")
    chunk_bytes = int(np.prod(grid.chunk_shape, dtype=np.int64)) * native.itemsize
    count = chunks_per_merge(chunk_bytes, int(grid_shape[0]), target_bytes, raw=raw, auto=auto)
    if count is None:
        return None
    try:
        return MergedLayout(metadata, tuple(grid.chunk_shape), count, dtype, raw)
    except TypeError:  # a codec without zarr's synchronous decode: shown as it is
        return None


def chunks_per_merge(
    chunk_bytes: int, grid_rows: int, target_bytes: int, *, raw: bool, auto: bool
) -> int | None:
    """How many chunks a merged chunk holds along the first axis (None: do not merge).

    Up to ``target_bytes`` (at most `MAX_MERGED_BYTES`) of decoded data and
    `MAX_CHUNKS_PER_MERGE` chunks (with
    ``auto``, at most `AUTO_MERGED_CHUNKS`, and for a compressed array
    `AUTO_MERGED_DECODES`: each costs a decode on any read), balanced so that the last
    merged chunk is about as full as the others.
    """
    target_bytes = min(max(target_bytes, 0), MAX_MERGED_BYTES)
    most = min(target_bytes // max(chunk_bytes, 1), MAX_CHUNKS_PER_MERGE)
    if auto:
        most = min(most, AUTO_MERGED_CHUNKS if raw else AUTO_MERGED_DECODES)
    most = min(most, grid_rows)
    if most < 2:
        return None
    merged_rows = -(-grid_rows // most)
    return -(-grid_rows // merged_rows)


def merged_document(served: bytes, layout: MergedLayout) -> bytes:
    """An array's served ``zarr.json`` rewritten as merged: the first chunk edge ``count``
    times as long, codecs ``[bytes]`` in the served byte order."""
    doc: dict[str, Any] = orjson.loads(served)
    config = doc["chunk_grid"]["configuration"]
    shape = list(config["chunk_shape"])
    shape[0] = int(shape[0]) * layout.count
    config["chunk_shape"] = shape
    codec: dict[str, Any] = {"name": "bytes"}
    if layout.dtype.itemsize > 1:
        order = layout.dtype.byteorder
        little = order == "<" or (order in "=|" and np.little_endian)
        codec["configuration"] = {"endian": "little" if little else "big"}
    doc["codecs"] = [codec]
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


class MergedChunk:
    """A merged-chunk key resolved to the chunks it is made of."""

    __slots__ = (
        "entries",
        "ids",
        "key",
        "layout",
        "length",
        "lengths",
        "missing",
        "node",
        "offsets",
        "origin",
        "sources",
    )

    def __init__(self, sources: CheckedSources, node: LoadedNode, index: tuple[int, ...], key: str):
        self.sources = sources
        self.node = node
        self.key = key
        layout = node.merged
        assert layout is not None
        self.layout = layout
        self.origin = (index[0] * layout.count, *index[1:])
        #: the entries of its chunks (fewer than ``count`` past the grid's edge)
        self.ids, self.offsets, self.lengths = node.column(self.origin, layout.count)
        #: for a few chunks: ``(path id, offset, length)`` of each, as Python ints (numpy's
        #: fixed cost per call would be most of reading them)
        self.entries: list[tuple[int, int, int]] | None = None
        if len(self.ids) <= _FEW_ROWS:
            ids = self.ids.tolist()
            offsets, lengths = self.offsets.tolist(), self.lengths.tolist()
            self.entries = list(zip(ids, offsets, lengths, strict=True))
            self.missing = not ids or max(ids) < 0
        else:
            self.missing = not bool((self.ids >= 0).any())
        self.length = layout.merged_bytes

    def chunk_key(self, row: int) -> str:
        """The store key (as the array is stored, unmerged) of the chunk at ``row``."""
        node = self.node
        index = (self.origin[0] + row, *self.origin[1:])
        key = node.path_key(node.metadata.chunk_key_encoding.encode_chunk_key(index))
        return f"{key} (in merged chunk {self.key!r})"

    def chunk_keys(self, rows: np.ndarray) -> KeysOnDemand:
        """`chunk_key` of each of ``rows``, made only if an error names one."""
        return KeysOnDemand(self.chunk_key, rows)


def _plan(chunk: MergedChunk) -> dict[int, np.ndarray]:
    """The rows of present chunks, per path id."""
    ids = chunk.ids
    if ids.size <= _FEW_ROWS:  # numpy's fixed cost per call is more than a few rows' loop
        grouped: dict[int, list[int]] = {}
        for row, pid in enumerate(ids.tolist()):
            if pid >= 0:
                grouped.setdefault(pid, []).append(row)
        return {pid: np.array(rows, dtype=np.int64) for pid, rows in grouped.items()}
    rows = np.flatnonzero(ids >= 0)
    return {int(pid): rows[ids[rows] == pid] for pid in np.unique(ids[rows]).tolist()}


def _check_raw_lengths(chunk: MergedChunk, rows: np.ndarray) -> None:
    """An uncompressed chunk's entry must hold exactly its decoded bytes (else zarr's
    decode of it would fail): refused naming the chunk, never padded or cut."""
    lengths = chunk.lengths[rows]
    bad = np.flatnonzero(lengths != chunk.layout.chunk_bytes)
    if bad.size:
        row = int(rows[bad[0]])
        raise ChunkReadError(
            f"chunk {chunk.chunk_key(row)}: its manifest entry holds {int(lengths[bad[0]])} "
            f"bytes, but an uncompressed chunk of this array holds {chunk.layout.chunk_bytes}",
            key=chunk.key,
        )


def _verify(chunk: MergedChunk, row: int, pid: int, data: Any) -> None:
    """Check one chunk's stored bytes against its entry's checksum, if it has one."""
    checksums = chunk.node.checksums
    if not checksums:
        return
    index = (chunk.origin[0] + row, *chunk.origin[1:])
    checksum = checksums.get(index)
    if checksum is not None:
        url = chunk.node.urls()[pid]
        checksum.verify(data, key=chunk.chunk_key(row), url=url)


def _verify_rows(chunk: MergedChunk, pid: int, rows: np.ndarray, flat: np.ndarray) -> None:
    """Check chunks placed raw in ``flat`` against their checksums, if they have them."""
    if not chunk.node.checksums:
        return
    size = chunk.layout.chunk_bytes
    for row in rows.tolist():
        _verify(chunk, row, pid, memoryview(flat)[row * size : (row + 1) * size])


def _new_merged(chunk: MergedChunk) -> np.ndarray:
    """Room for a merged chunk, with the fill value in the rows not read (absent, or past
    the grid's edge)."""
    layout = chunk.layout
    out = np.empty((layout.count, *layout.chunk_shape), dtype=layout.dtype)
    ids = chunk.ids
    out[ids.size :] = layout.fill
    absent = ids < 0
    if absent.any():
        out[: ids.size][absent] = layout.fill
    return out


def _assemble_sync(chunk: MergedChunk, max_gap: int, max_request: int) -> np.ndarray:
    """Read (and decode) every chunk of a merged chunk into a new array."""
    if chunk.entries is not None:
        return _assemble_few_sync(chunk, chunk.entries)
    layout = chunk.layout
    out = _new_merged(chunk)
    for pid, rows in _plan(chunk).items():
        source = chunk.sources.get(chunk.node, pid, chunk.key)
        starts = chunk.offsets[rows].astype(np.int64)
        ends = starts + chunk.lengths[rows].astype(np.int64)
        keys = chunk.chunk_keys(rows)
        if layout.raw:
            _check_raw_lengths(chunk, rows)
            flat = out.reshape(-1).view(np.uint8)
            lo, hi = int(starts.min()), int(ends.max())
            if hi - lo <= max(_GATHER_SPAN_BYTES, 4 * len(rows) * layout.chunk_bytes):
                # small chunks near one another (a column of tiny chunks): one read of
                # the span they lie in, and a gather, instead of a read per chunk
                try:
                    span = np.frombuffer(read_range_sync(source, lo, hi), dtype=np.uint8)
                except ZarrManifestError:
                    read_range_sync(source, lo, hi, key=keys[0])
                    raise
                picks = (starts - lo)[:, None] + np.arange(layout.chunk_bytes)
                flat.reshape(layout.count, layout.chunk_bytes)[rows] = span[picks]
                _verify_rows(chunk, pid, rows, flat)
                continue
            read_ranges_into_sync(
                source,
                starts,
                ends,
                flat,
                rows.astype(np.int64) * layout.chunk_bytes,
                keys=keys,
                max_gap_bytes=max_gap,
                max_request_bytes=max_request,
            )
            _verify_rows(chunk, pid, rows, flat)
            continue
        datas = read_ranges_sync(
            source, starts, ends, keys=keys, max_gap_bytes=max_gap, max_request_bytes=max_request
        )
        _decode_into(chunk, out, pid, rows, datas)
    return out


def _assemble_few_sync(chunk: MergedChunk, entries: list[tuple[int, int, int]]) -> np.ndarray:
    """`_assemble_sync` for a few chunks, in plain Python: the chunks of a merged chunk
    lie far apart in a file written in C order, so each is one read (straight into its
    place, for chunks stored raw in a local file)."""
    layout = chunk.layout
    size = layout.chunk_bytes
    out = np.empty((layout.count, *layout.chunk_shape), dtype=layout.dtype)
    flat = out.data.cast("B")
    if len(entries) < layout.count:
        out[len(entries) :] = layout.fill  # past the grid's edge
    rows_of: dict[int, list[int]] = {}
    for row, (pid, _, length) in enumerate(entries):
        if pid < 0:
            out[row] = layout.fill
            continue
        if layout.raw and length != size:
            _check_raw_lengths(chunk, np.array([row]))
        rows_of.setdefault(pid, []).append(row)
    for pid, rows in rows_of.items():
        source = chunk.sources.get(chunk.node, pid, chunk.key)
        starts = [entries[row][1] for row in rows]
        ends = [start + entries[row][2] for start, row in zip(starts, rows, strict=True)]
        if layout.raw and source.local_path is not None:
            positions = [row * size for row in rows]
            try:
                # the chunks' keys take longer to make than the reads: made on failure only
                read_local_ranges_into(source, starts, ends, flat, positions, None)
            except ZarrManifestError:
                keys = chunk.chunk_keys(np.array(rows))
                read_local_ranges_into(source, starts, ends, flat, positions, keys)
            for row in rows:
                _verify(chunk, row, pid, flat[row * size : (row + 1) * size])
            continue
        for row, start, end in zip(rows, starts, ends, strict=True):
            try:
                # the chunk's key takes longer to make than the read: made on failure only
                data = read_range_sync(source, start, end)
            except ZarrManifestError:
                data = read_range_sync(source, start, end, key=chunk.chunk_key(row))
            if layout.raw:
                _verify(chunk, row, pid, data)
                flat[row * size : (row + 1) * size] = data
            else:
                _decode_into(chunk, out, pid, np.array([row]), [data])
    return out


def _decode_into(
    chunk: MergedChunk, out: np.ndarray, pid: int, rows: np.ndarray, datas: Sequence[Any]
) -> None:
    """Decode chunks' stored bytes into their rows of ``out`` (checksums first)."""
    layout = chunk.layout
    for row, data in zip(rows.tolist(), datas, strict=True):
        _verify(chunk, row, pid, data)
        try:
            out[row] = layout.decode(data)
        except ChunkReadError:
            raise
        except Exception as exc:
            raise ChunkReadError(
                f"chunk {chunk.chunk_key(row)} could not be decoded: {exc}", key=chunk.key
            ) from exc


def _result(chunk: MergedChunk, out: np.ndarray, byte_range: ByteRequest | None) -> memoryview:
    """The requested bytes of a merged chunk assembled in ``out``."""
    flat = out.data.cast("B")
    if byte_range is None:
        return flat
    lo, hi = request_bounds(chunk.length, byte_range, chunk.key)
    return flat[lo:hi]


def read_merged_sync(
    chunk: MergedChunk,
    byte_range: ByteRequest | None,
    *,
    max_gap_bytes: int,
    max_request_bytes: int,
) -> memoryview | None:
    """A merged chunk's bytes (or a byte range of them); None when it holds no chunk."""
    if chunk.missing:
        return None
    request_bounds(chunk.length, byte_range, chunk.key)  # a bad range fails before reading
    out = _assemble_sync(chunk, max_gap_bytes, max_request_bytes)
    return _result(chunk, out, byte_range)


async def read_merged_async(
    chunk: MergedChunk,
    byte_range: ByteRequest | None,
    *,
    max_gap_bytes: int,
    max_request_bytes: int,
) -> memoryview | None:
    """`read_merged_sync` on the event loop: local sources inline when small (else in a
    thread, as zlib and friends release the GIL), remote ones fetched concurrently."""
    if chunk.missing:
        return None
    request_bounds(chunk.length, byte_range, chunk.key)
    registry = chunk.sources.registry
    if chunk.entries is not None:
        pids: Any = {e[0] for e in chunk.entries if e[0] >= 0}
    else:
        pids = plan = _plan(chunk)
    if all(chunk.node.source(pid, registry, chunk.key).local_path is not None for pid in pids):
        # checked (``verify``) as they are read, in `_assemble_sync`
        if chunk.layout.raw and chunk.length <= LOCAL_INLINE_MAX_BYTES:
            out = _assemble_sync(chunk, max_gap_bytes, max_request_bytes)
        else:
            out = await asyncio.to_thread(_assemble_sync, chunk, max_gap_bytes, max_request_bytes)
        return _result(chunk, out, byte_range)
    plan = _plan(chunk)
    sources = {pid: await chunk.sources.get_async(chunk.node, pid, chunk.key) for pid in plan}

    layout = chunk.layout

    async def fetch(pid: int, rows: np.ndarray) -> list[memoryview]:
        if layout.raw:
            _check_raw_lengths(chunk, rows)
        starts = chunk.offsets[rows].astype(np.int64)
        return await read_ranges_async(
            sources[pid],
            starts,
            starts + chunk.lengths[rows].astype(np.int64),
            keys=chunk.chunk_keys(rows),
            max_gap_bytes=max_gap_bytes,
            max_request_bytes=max_request_bytes,
        )

    fetched = await asyncio.gather(*(fetch(pid, rows) for pid, rows in plan.items()))

    def assemble() -> np.ndarray:
        out = _new_merged(chunk)
        flat = out.reshape(-1).view(np.uint8)
        for (pid, rows), datas in zip(plan.items(), fetched, strict=True):
            if not layout.raw:
                _decode_into(chunk, out, pid, rows, datas)
                continue
            for row, data in zip(rows.tolist(), datas, strict=True):
                _verify(chunk, row, pid, data)
                at = row * layout.chunk_bytes
                flat[at : at + layout.chunk_bytes] = np.frombuffer(data, dtype=np.uint8)
        return out

    out = assemble() if layout.raw else await asyncio.to_thread(assemble)
    return _result(chunk, out, byte_range)


def per_merged(present: np.ndarray, count: int) -> np.ndarray:
    """Per merged chunk: whether it holds a chunk (the grid's first axis grouped by
    ``count``)."""
    rows = present.shape[0]
    pad = [(0, -rows % count)] + [(0, 0)] * (present.ndim - 1)
    grouped = np.pad(present, pad).reshape(-1, count, *present.shape[1:])
    return grouped.any(axis=1)
