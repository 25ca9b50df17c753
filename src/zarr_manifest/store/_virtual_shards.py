"""Virtual shards: a virtual array's many small chunks shown to zarr as a few large shards.

zarr-python spends tens of microseconds of Python on every chunk it reads, whatever the
store; an array of millions of small chunks is slow to read for that reason alone.  A
shard (the ``sharding_indexed`` codec) is one key that zarr reads and decodes in bulk.  So
a `ManifestStore` asked for virtual shards serves such an array's ``zarr.json`` as a
sharded array whose inner chunks are the manifest's chunks, unchanged (same codecs, same
bytes), and builds each shard's bytes on request: the referenced chunks laid end to end
in C order of the shard's inner grid, then the shard index (offset and length of each
inner chunk, ``2**64 - 1`` for an absent one, little-endian, no checksum).  The values
zarr reads are the same; only the keys and the ``shards`` of the metadata differ.

This module is the layout arithmetic (no I/O): which shard shape, the rewritten
metadata document, and which source bytes make up a byte range of a shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

__all__ = [
    "AUTO_MAX_CHUNK_BYTES",
    "AUTO_SHARD_BYTES",
    "INDEX_ENTRY_BYTES",
    "MAX_CHUNKS_PER_SHARD",
    "ShardLayout",
    "bulk_shard_pipeline",
    "chunks_per_shard",
    "per_shard",
    "sharded_document",
    "shards_holding",
    "sparse_chunks_per_shard",
]

#: bytes per inner chunk in a shard index: offset and length, uint64 each
INDEX_ENTRY_BYTES = 16
#: zarr holds a few hundred bytes per inner chunk of a shard it decodes (its selections):
#: shards of tiny chunks are capped at this many, which costs little time and bounds that
#: (a million 4-byte chunks: 0.3 GB of peak RSS instead of 0.7 GB for one shard)
MAX_CHUNKS_PER_SHARD = 65536
#: ``virtual_shard_bytes="auto"``: the shard size, and the largest (decoded) chunk that is
#: grouped into shards -- above it zarr's per-chunk cost is small beside the chunk's bytes
AUTO_SHARD_BYTES = 4 << 20
AUTO_MAX_CHUNK_BYTES = 1 << 20
#: an array of at least this many chunks, at most `SPARSE_MAX_FRACTION` of them stored, is
#: *sparse*: shown as shards chosen so that most hold no chunk (`sparse_chunks_per_shard`)
SPARSE_MIN_CHUNKS = 4096
SPARSE_MAX_FRACTION = 1 / 8
_ABSENT = np.uint64(2**64 - 1)
_INDEX_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}]


def chunks_per_shard(
    chunk_shape: Sequence[int], grid_shape: Sequence[int], itemsize: int, target_bytes: int
) -> tuple[int, ...] | None:
    """How many chunks a virtual shard holds along each dimension (None: do not shard).

    Shards grow from the last dimension to the first, taking whole rows of chunks first,
    so that a shard is a C-contiguous block of the chunk grid (files written in C order
    then read in long runs), up to about ``target_bytes`` of decoded data and at most
    `MAX_CHUNKS_PER_SHARD` chunks.  An array whose shard would hold a single chunk is not
    sharded.
    """
    chunk_bytes = max(int(np.prod(chunk_shape, dtype=np.float64)) * max(itemsize, 1), 1)
    budget = max(min(target_bytes // chunk_bytes, MAX_CHUNKS_PER_SHARD), 1)
    counts = [1] * len(grid_shape)
    for axis in range(len(grid_shape) - 1, -1, -1):
        take = int(min(grid_shape[axis], budget))
        if take < 1:
            break
        counts[axis] = take
        budget //= take
        if take < grid_shape[axis] or budget < 2:
            break  # a partly covered dimension: earlier ones stay 1, to keep it contiguous
    if int(np.prod(counts, dtype=np.float64)) < 2:
        return None
    return tuple(counts)


def sparse_chunks_per_shard(
    stored: np.ndarray,
    chunk_shape: Sequence[int],
    grid_shape: Sequence[int],
    itemsize: int,
    target_bytes: int,
) -> tuple[int, ...] | None:
    """Chunks per virtual shard for a sparse array (None: not sparse, or no gain).

    zarr reads an absent key (a missing chunk, or a shard the store answers ``None`` for)
    by filling it in one go, but still spends some tens of microseconds per key; in a
    shard it reads, every inner chunk costs about half a key, stored or not; in a shard
    it skips, each inner chunk costs only zarr's index arithmetic (a tenth or so).  So a
    full read of a grid of N chunks costs about ``2 * shards + held_cells +
    N / 10`` units against ``2 * N`` unsharded, where ``held_cells`` counts the inner
    chunks of shards holding a stored chunk.  Of the C-contiguous shard shapes of
    `chunks_per_shard` (2, 4, 8 ... chunks, up to ``target_bytes``), the cheapest is
    taken if it costs at most half as much as no shards.

    Parameters
    ----------
    stored
        The grid indices of the stored chunks, one row each (``np.argwhere`` of the
        manifest's presence grid).
    """
    cells = int(np.prod(grid_shape, dtype=np.float64))
    if cells < SPARSE_MIN_CHUNKS or len(stored) > cells * SPARSE_MAX_FRACTION:
        return None
    chunk_bytes = max(int(np.prod(chunk_shape, dtype=np.float64)) * max(itemsize, 1), 1)
    most = max(min(target_bytes // chunk_bytes, MAX_CHUNKS_PER_SHARD), 1)
    grid = np.array(grid_shape, dtype=np.int64)
    best, best_cost = None, 2.0 * cells / 2  # half of the unsharded cost
    budget = 2
    while budget <= most:
        counts = chunks_per_shard(chunk_shape, grid_shape, itemsize, budget * chunk_bytes)
        budget *= 2
        if counts is None:
            continue
        n = np.array(counts, dtype=np.int64)
        shard_grid = -(-grid // n)
        shards = int(np.prod(shard_grid, dtype=np.float64))
        marks = np.zeros(shards, dtype=bool)  # per shard (flat): does it hold a chunk
        marks[np.ravel_multi_index(tuple((stored // n).T), tuple(shard_grid))] = True
        held = int(np.count_nonzero(marks))
        cost = 2.0 * shards + held * float(np.prod(n, dtype=np.float64)) + cells / 10
        if cost < best_cost:
            best, best_cost = counts, cost
    return best


def shards_holding(
    stored: np.ndarray, grid_shape: Sequence[int], shards: Sequence[int]
) -> np.ndarray:
    """Per virtual shard, whether it holds a stored chunk (``stored``: grid indices of
    the stored chunks, one row each)."""
    counts = np.array(shards, dtype=np.int64)
    held = np.zeros([-(-g // n) for g, n in zip(grid_shape, shards, strict=True)], dtype=bool)
    if len(stored):
        held[tuple((stored // counts).T)] = True
    return held


def bulk_shard_pipeline() -> bool:
    """Whether the codec pipeline zarr is configured with now reads a shard's inner chunks
    in bulk (``FusedCodecPipeline``).

    zarr's default ``BatchedCodecPipeline`` decodes a shard's inner chunks one by one,
    each at the cost of a chunk of its own plus the shard's: a full read is as slow as
    in the plain view and a single-chunk read about twice as slow.  So
    ``virtual_shard_bytes="auto"`` shows virtual shards only to a bulk pipeline.
    """
    from zarr.core import codec_pipeline
    from zarr.registry import get_pipeline_class

    fused = getattr(codec_pipeline, "FusedCodecPipeline", None)
    try:
        configured = get_pipeline_class()
    except Exception:  # a misconfigured pipeline: zarr itself reports it on opening
        return False
    return fused is not None and issubclass(configured, fused)


def sharded_document(served: bytes, counts: Sequence[int]) -> bytes:
    """An array's served ``zarr.json`` rewritten as sharded: shards of ``counts`` chunks,
    whose inner chunks keep the array's chunk shape and codecs."""
    doc: dict[str, Any] = orjson.loads(served)
    grid = doc["chunk_grid"]
    chunk_shape = list(grid["configuration"]["chunk_shape"])
    grid["configuration"]["chunk_shape"] = [
        int(c) * int(n) for c, n in zip(chunk_shape, counts, strict=True)
    ]
    doc["codecs"] = [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": chunk_shape,
                "codecs": doc["codecs"],
                "index_codecs": _INDEX_CODECS,
                "index_location": "end",
            },
        }
    ]
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


class ShardLayout:
    """The byte layout of one virtual shard, as runs of source bytes.

    A run is a stretch of the shard's data section that one source holds contiguously
    (consecutive present inner chunks whose file ranges follow one another), so a shard
    of a file written in C order is read in one or a few ranges.

    Parameters
    ----------
    ids, offsets, lengths
        The inner chunks' manifest columns, flattened in C order of the shard's inner
        grid (path id -1: absent, including chunks past the edge of the array's grid).
    """

    __slots__ = (
        "data_size",
        "held",
        "held_starts",
        "index",
        "present",
        "run_chunks",
        "run_lengths",
        "run_pids",
        "run_sources",
        "run_starts",
        "size",
    )

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray):
        ids = ids.reshape(-1).astype(np.int64, copy=False)
        present = ids >= 0
        lengths = np.where(present, lengths.reshape(-1), 0).astype(np.uint64)
        offsets = offsets.reshape(-1).astype(np.uint64, copy=False)
        ends = np.cumsum(lengths, dtype=np.uint64)
        starts = ends - lengths  # where each chunk sits in the data section
        index = np.full((ids.size, 2), _ABSENT, dtype="<u8")
        index[present, 0] = starts[present]
        index[present, 1] = lengths[present]
        #: whether any inner chunk is stored (an empty shard is absent)
        self.present = bool(present.any())
        self.index = index.tobytes()
        self.data_size = int(ends[-1]) if ends.size else 0
        #: bytes of the whole shard: data, then index
        self.size = self.data_size + len(self.index)

        # Runs: present, non-empty chunks; a new run starts where the source changes or
        # its bytes do not follow the previous chunk's.
        held = np.flatnonzero(present & (lengths > 0))
        #: the stored inner chunks (flat) and where each starts in the shard, to name the
        #: chunk a read inside a run falls in
        self.held = held
        self.held_starts = starts[held].astype(np.int64)
        pids = ids[held]
        offs = offsets[held].astype(np.int64)
        lens = lengths[held].astype(np.int64)
        new = np.ones(held.size, dtype=bool)
        if held.size > 1:
            new[1:] = (pids[1:] != pids[:-1]) | (offs[1:] != offs[:-1] + lens[:-1])
        heads = np.flatnonzero(new)
        #: per run: path id, first byte in the source, byte count, first byte in the shard,
        #: and its first inner chunk (flat index, to name it in errors)
        self.run_pids = pids[heads]
        self.run_sources = offs[heads]
        self.run_starts = starts[held[heads]].astype(np.int64)
        self.run_lengths = np.add.reduceat(lens, heads) if heads.size else lens[:0]
        self.run_chunks = held[heads]

    def plan(self, lo: int, hi: int) -> tuple[dict[int, tuple[np.ndarray, ...]], tuple[int, int]]:
        """What makes up bytes ``[lo, hi)`` of the shard (``0 <= lo <= hi <= size``).

        Returns
        -------
        reads
            Per path id: source starts, source ends, positions in the result and the
            runs' first inner chunks (flat; for a read inside one run, the inner chunk it
            starts in), as arrays.
        index_part
            ``(start, end)`` of the index bytes that end the result (empty if none).
        """
        data_hi = min(hi, self.data_size)
        reads: dict[int, tuple[np.ndarray, ...]] = {}
        if lo < data_hi:
            first = int(np.searchsorted(self.run_starts, lo, side="right")) - 1
            last = int(np.searchsorted(self.run_starts, data_hi, side="left"))
            if last - first == 1:  # inside one run: an inner chunk, most often
                start = int(self.run_sources[first] + (lo - self.run_starts[first]))
                at = int(np.searchsorted(self.held_starts, lo, side="right")) - 1
                reads[int(self.run_pids[first])] = (
                    np.array([start]),
                    np.array([start + data_hi - lo]),
                    np.zeros(1, dtype=np.int64),
                    self.held[at : at + 1],  # the inner chunk the read starts in
                )
                return reads, self._index_part(lo, hi)
            sel = slice(max(first, 0), last)
            v0 = self.run_starts[sel]
            v1 = v0 + self.run_lengths[sel]
            c0 = np.maximum(v0, lo)
            c1 = np.minimum(v1, data_hi)
            keep = c1 > c0
            pids = self.run_pids[sel][keep]
            src = self.run_sources[sel][keep] + (c0 - v0)[keep]
            count = (c1 - c0)[keep]
            pos = c0[keep] - lo
            chunks = self.run_chunks[sel][keep]
            for pid in np.unique(pids).tolist():
                mask = pids == pid
                reads[pid] = (src[mask], src[mask] + count[mask], pos[mask], chunks[mask])
        return reads, self._index_part(lo, hi)

    def _index_part(self, lo: int, hi: int) -> tuple[int, int]:
        """The part of the index among bytes ``[lo, hi)`` of the shard."""
        return max(lo, self.data_size) - self.data_size, max(hi, self.data_size) - self.data_size


def per_shard(
    present: np.ndarray, lengths: np.ndarray, shards: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Per virtual shard: whether it holds a chunk, and its size (chunks plus index)."""
    pad = [(0, -g % n) for g, n in zip(present.shape, shards, strict=True)]
    blocked = tuple(x for g, n in zip(present.shape, shards, strict=True) for x in (-(-g // n), n))
    inner = tuple(range(1, 2 * len(shards), 2))
    held = np.pad(present, pad).reshape(blocked).any(axis=inner)
    data = np.pad(np.where(present, lengths, 0).astype(np.uint64), pad).reshape(blocked)
    index_bytes = INDEX_ENTRY_BYTES * int(np.prod(shards))
    return held, data.sum(axis=inner, dtype=np.uint64) + np.uint64(index_bytes)
