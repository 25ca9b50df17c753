"""The virtual-shard view: a shard key resolved to its layout (see `_virtual_shards`), and
its bytes assembled from the referenced chunks' sources plus the shard index."""

from __future__ import annotations

import asyncio
import operator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from zarr.abc.store import ByteRequest

from zarr_manifest.errors import ChunkReadError, ZarrManifestError
from zarr_manifest.store._byte_ranges import request_bounds
from zarr_manifest.store._references import check_chunk_size
from zarr_manifest.store._virtual_shards import _ABSENT, ShardLayout
from zarr_manifest.store.fetch import (
    LOCAL_INLINE_MAX_BYTES,
    KeysOnDemand,
    check_local_extent,
    read_range_sync,
    read_ranges_async,
    read_ranges_into_sync,
)
from zarr_manifest.store.sources import Source

if TYPE_CHECKING:
    from zarr_manifest.store._nodes import LoadedNode
    from zarr_manifest.store._references import CheckedSources

__all__ = ["Shard", "read_shard_async", "read_shard_sync"]


class Shard:
    """A shard key of an array shown with virtual shards, resolved to its layout."""

    __slots__ = ("_layout", "index", "key", "missing", "node", "origin", "sources")

    def __init__(self, sources: CheckedSources, node: LoadedNode, index: tuple[int, ...], key: str):
        self.sources = sources
        self.node = node
        self.key = key
        self.index = index
        assert node.shards is not None
        self.origin = tuple(map(operator.mul, index, node.shards))
        # an absent shard of a sparse array is known without its layout (most of its
        # shards are absent, and zarr asks for each)
        self.missing = not node.shard_holds_chunks(index)
        self._layout: ShardLayout | None = None

    @property
    def layout(self) -> ShardLayout:
        """The shard's byte layout, made on first use."""
        if self._layout is None:
            self._layout = self.node.shard_layout(self.index)
        return self._layout

    @property
    def length(self) -> int:
        """The shard's size in bytes (chunks plus index)."""
        return self.layout.size

    def source(self, pid: int) -> Source:
        """The source of path id ``pid``, checked as ``verify`` asks."""
        return self.sources.get(self.node, pid, self.key)

    async def source_async(self, pid: int) -> Source:
        """`source`, with a remote source's HEAD request off the event loop."""
        return await self.sources.get_async(self.node, pid, self.key)

    def chunk_key(self, flat: int) -> str:
        """The store key (as the array is stored, unsharded) of the inner chunk at flat
        index ``flat`` in the shard, naming the shard too."""
        node = self.node
        assert node.shards is not None
        inner = np.unravel_index(flat, node.shards)
        index = tuple(o + int(k) for o, k in zip(self.origin, inner, strict=True))
        key = node.path_key(node.metadata.chunk_key_encoding.encode_chunk_key(index))
        return f"{key} (in shard {self.key!r})"

    def chunk_keys(self, flat: np.ndarray) -> KeysOnDemand:
        """`chunk_key` of inner chunks, by flat index in the shard, made only if an error
        names one: the chunk that failed, and its shard."""
        return KeysOnDemand(self.chunk_key, flat)


#: what a planned read of a shard takes: its size, the ranges per path id, the index part
_Plan = tuple[int, dict[int, tuple[np.ndarray, ...]], tuple[int, int]]


def read_shard_sync(
    shard: Shard,
    byte_range: ByteRequest | None,
    *,
    max_gap_bytes: int,
    max_request_bytes: int,
    max_bytes: int,
) -> np.ndarray | bytes | None:
    """A shard's bytes (or a byte range of them); None when it holds no chunk.

    A read of more than ``max_bytes`` is a `ChunkTooLargeError` (chunks whose references
    overlap can make a shard far larger than the file they reference).
    """
    planned = _plan_shard_read(shard, byte_range, max_bytes)
    if planned is None:
        return None
    quick = _read_quickly_sync(shard, planned)
    out = (
        quick
        if quick is not None
        else _fill_shard_sync(shard, planned, max_gap_bytes, max_request_bytes)
    )
    return _verify_checksums(shard, byte_range, out)


async def read_shard_async(
    shard: Shard,
    byte_range: ByteRequest | None,
    *,
    max_gap_bytes: int,
    max_request_bytes: int,
    max_bytes: int,
) -> np.ndarray | bytes | None:
    """`read_shard_sync` on the event loop: local sources read as `read_chunk_async` does,
    remote ones concurrently, one coalesced read per source."""
    planned = _plan_shard_read(shard, byte_range, max_bytes)
    if planned is None:
        return None
    size, reads, index_part = planned
    if not reads:  # the index alone, held in memory
        return shard.layout.index[index_part[0] : index_part[1]]
    sources = {pid: shard.node.source(pid, shard.sources.registry, shard.key) for pid in reads}
    if all(source.local_path is not None for source in sources.values()):
        if size <= LOCAL_INLINE_MAX_BYTES:
            quick = _read_quickly_sync(shard, planned)
            if quick is not None:
                return _verify_checksums(shard, byte_range, quick)
            # a small local read is a few microseconds: cheaper than any scheduling
            filled = _fill_shard_sync(shard, planned, max_gap_bytes, max_request_bytes)
        else:
            # a large one would hold up every other read on zarr's event loop
            filled = await asyncio.to_thread(
                _fill_shard_sync, shard, planned, max_gap_bytes, max_request_bytes
            )
        return _verify_checksums(shard, byte_range, filled)

    async def read_source(pid: int, plan: tuple[np.ndarray, ...]) -> Any:
        starts, ends, positions, chunks = plan
        source = await shard.source_async(pid)
        strided = _strided_span(starts, ends, positions, max_gap_bytes, max_request_bytes)
        if strided is not None:
            try:
                (data,) = await read_ranges_async(
                    source, [strided.first], [strided.first + strided.span]
                )
            except ZarrManifestError:
                pass  # read range by range below, which names the chunk that fails
            else:
                if len(data) == strided.span:
                    return strided, data
        return None, await read_ranges_async(
            source,
            starts,
            ends,
            keys=shard.chunk_keys(chunks),
            max_gap_bytes=max_gap_bytes,
            max_request_bytes=max_request_bytes,
        )

    fetched = await asyncio.gather(*(read_source(pid, plan) for pid, plan in reads.items()))
    # Room for the shard is reserved only now that every source has delivered its bytes
    # (a remote source's size is not known before): a manifest promising more than the
    # sources hold fails with ShortReadError without reserving anything.
    out = _shard_buffer(size, shard)
    view = memoryview(out)
    for (_, _, positions, _), (strided, got) in zip(reads.values(), fetched, strict=True):
        if strided is not None:
            _copy_strided(out, got, strided)
            continue
        for p, v in zip(positions.tolist(), got, strict=True):
            view[p : p + len(v)] = v
    _place_index(out, shard.layout, index_part)
    return _verify_checksums(shard, byte_range, out)


def _verify_checksums(
    shard: Shard, byte_range: ByteRequest | None, out: np.ndarray | bytes
) -> np.ndarray | bytes:
    """``out`` (bytes ``byte_range`` of the shard), once every inner chunk in it whose
    manifest entry has a checksum matches it (spec 5.5).

    Raises
    ------
    ChecksumMismatchError
        An inner chunk's bytes differ from its checksum.
    ChunkReadError
        The range holds part of a checksummed chunk, which cannot be checked (zarr reads
        inner chunks whole).
    """
    node = shard.node
    if not node.checksums:
        return out
    assert node.shards is not None
    layout = shard.layout
    lo, hi = request_bounds(layout.size, byte_range, shard.key)
    index = np.frombuffer(layout.index, dtype="<u8").reshape(-1, 2)
    for flat in np.flatnonzero(index[:, 1] != _ABSENT).tolist():
        inner = np.unravel_index(flat, node.shards)
        chunk_index = tuple(o + int(k) for o, k in zip(shard.origin, inner, strict=True))
        checksum = node.checksums.get(chunk_index)
        start, length = int(index[flat, 0]), int(index[flat, 1])
        if checksum is None or start >= hi or start + length <= lo:
            continue
        key = shard.chunk_keys(np.array([flat]))[0]
        if start < lo or start + length > hi:
            raise ChunkReadError(
                f"chunk {key} has a checksum, so it is read whole; bytes [{lo}, {hi}) of "
                "its shard hold only part of it",
                key=shard.key,
            )
        url = node.urls()[node.lookup(chunk_index)[0]]
        checksum.verify(memoryview(out)[start - lo : start - lo + length], key=key, url=url)
    return out


def _plan_shard_read(shard: Shard, byte_range: ByteRequest | None, max_bytes: int) -> _Plan | None:
    """What a read of a shard takes: its size and `ShardLayout.plan` (None: absent)."""
    if shard.missing:
        return None
    layout = shard.layout
    lo, hi = request_bounds(layout.size, byte_range, shard.key)
    check_chunk_size(lo, hi, max_bytes, shard.key, what="virtual shard")
    return hi - lo, *layout.plan(lo, hi)


def _read_quickly_sync(shard: Shard, planned: _Plan) -> bytes | None:
    """The two reads zarr makes of a shard to read one inner chunk, without assembling a
    buffer: the index alone (held in memory), or bytes of one run of one source (read as
    a chunk of the plain view is).  None: the read is neither; `_fill_shard_sync` does it.
    """
    _, reads, (index_lo, index_hi) = planned
    if not reads:
        return shard.layout.index[index_lo:index_hi]
    if index_hi > index_lo or len(reads) != 1:
        return None
    ((pid, (starts, ends, _, chunks)),) = reads.items()
    if len(starts) != 1:
        return None
    source = shard.source(pid)
    try:
        # the inner chunk's key takes longer to make than the read: made on failure only
        return read_range_sync(source, int(starts[0]), int(ends[0]))
    except ZarrManifestError:
        key = shard.chunk_keys(chunks)[0]
        return read_range_sync(source, int(starts[0]), int(ends[0]), key=key)


def _fill_shard_sync(
    shard: Shard, planned: _Plan, max_gap_bytes: int, max_request_bytes: int
) -> np.ndarray:
    """Read a planned part of a shard (see `_plan_shard_read`) into a new buffer."""
    size, reads, index_part = planned
    sources = {pid: shard.source(pid) for pid in reads}
    for pid, (_, ends, _, chunks) in reads.items():
        last = int(np.argmax(ends))
        check_local_extent(sources[pid], int(ends[last]), key=shard.chunk_keys(chunks)[last])
    out = _shard_buffer(size, shard)
    for pid, (starts, ends, positions, chunks) in reads.items():
        if _read_strided_into(
            sources[pid], starts, ends, positions, out, max_gap_bytes, max_request_bytes
        ):
            continue
        read_ranges_into_sync(
            sources[pid],
            starts,
            ends,
            out,
            positions,
            keys=shard.chunk_keys(chunks),
            max_gap_bytes=max_gap_bytes,
            max_request_bytes=max_request_bytes,
        )
    _place_index(out, shard.layout, index_part)
    return out


#: a strided read (`_strided_span`) pays off from this many ranges on
_STRIDED_MIN_RANGES = 8


class _Strided(NamedTuple):
    """Ranges of one source that are ``rows`` slabs of ``length`` bytes every ``stride``
    bytes from ``first``, laid end to end in the shard from ``at``."""

    first: int
    span: int
    stride: int
    length: int
    rows: int
    at: int


def _strided_span(
    starts: np.ndarray,
    ends: np.ndarray,
    positions: np.ndarray,
    max_gap_bytes: int,
    max_request_bytes: int,
) -> _Strided | None:
    """The ranges as `_Strided` when they are equally long, equally spaced (gaps within
    ``max_gap_bytes``, the whole span within ``max_request_bytes``) and laid end to end in
    the shard -- the records of a netCDF-3 record variable, one slab every ``recsize``
    bytes -- so they can be read as one request and one strided copy instead of a slice
    and a copy each.  None: they are not so."""
    n = len(starts)
    if n < _STRIDED_MIN_RANGES:
        return None
    length = int(ends[0] - starts[0])
    stride = int(starts[1] - starts[0])
    span = (n - 1) * stride + length
    if (
        length <= 0
        or stride < length
        or stride - length > max(max_gap_bytes, 0)
        or span > max_request_bytes
    ):
        return None
    steps = np.arange(n, dtype=np.int64)
    first, at = int(starts[0]), int(positions[0])
    if not (
        np.array_equal(starts, first + steps * stride)
        and np.array_equal(ends - starts, np.full(n, length))
        and np.array_equal(positions, at + steps * length)
    ):
        return None
    return _Strided(first, span, stride, length, n, at)


def _copy_strided(out: np.ndarray, data: Any, plan: _Strided) -> bool:
    """Copy the slabs of a span read for ``plan`` into the shard buffer (False: the read
    came back short, and nothing was copied)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != plan.span:
        return False
    rows = np.lib.stride_tricks.as_strided(
        raw, shape=(plan.rows, plan.length), strides=(plan.stride, 1), writeable=False
    )
    out[plan.at : plan.at + plan.rows * plan.length].reshape(plan.rows, plan.length)[...] = rows
    return True


def _read_strided_into(
    source: Source,
    starts: np.ndarray,
    ends: np.ndarray,
    positions: np.ndarray,
    out: np.ndarray,
    max_gap_bytes: int,
    max_request_bytes: int,
) -> bool:
    """Read strided ranges (`_strided_span`) into ``out`` as one request.  False: they
    are not strided, or the one read failed; the caller then reads them range by range,
    which names the chunk that fails."""
    plan = _strided_span(starts, ends, positions, max_gap_bytes, max_request_bytes)
    if plan is None:
        return False
    try:
        data = read_range_sync(source, plan.first, plan.first + plan.span)
    except ZarrManifestError:
        return False
    return _copy_strided(out, data, plan)


def _shard_buffer(size: int, shard: Shard) -> np.ndarray:
    """Room for ``size`` bytes of a shard, not zeroed (every byte is read into it)."""
    try:
        return np.empty(size, dtype=np.uint8)
    except MemoryError as exc:
        raise ChunkReadError(
            f"shard {shard.key!r} would take {size} bytes, more than can be held; the "
            f"manifest's chunk lengths may be wrong",
            key=shard.key,
        ) from exc


def _place_index(out: np.ndarray, layout: ShardLayout, part: tuple[int, int]) -> None:
    """Copy the requested part of a shard's index to the end of the result."""
    lo, hi = part
    if hi > lo:
        memoryview(out)[len(out) - (hi - lo) :] = layout.index[lo:hi]
