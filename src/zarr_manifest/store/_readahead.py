"""Readahead for remote sources: a chunk read fetches the block of neighbouring chunks of
the same file, keeps it in a bounded cache, and starts fetching the blocks that follow."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from zarr_manifest.errors import ShortReadError
from zarr_manifest.store.fetch import RangeBatcher, plan_coalesced
from zarr_manifest.store.sources import Source

if TYPE_CHECKING:
    from zarr_manifest.store._references import Chunk

__all__ = ["BlockCache", "Readahead", "plan_blocks"]


class Readahead:
    """How a store reads remote chunks: by readahead blocks, or one by one.

    Parameters
    ----------
    batcher
        Merges concurrent single-range reads into coalesced requests.
    readahead_bytes
        The size bound of a block (0: no readahead, every chunk is read alone).
    max_gap_bytes
        Chunks of a block are at most this far apart in their file.
    prefetch_blocks
        How many following blocks to start fetching when a block is first read.
    cache_bytes
        The bound of the cache of blocks.
    """

    def __init__(
        self,
        batcher: RangeBatcher,
        *,
        readahead_bytes: int,
        max_gap_bytes: int,
        prefetch_blocks: int,
        cache_bytes: int,
    ) -> None:
        self.batcher = batcher
        self._limit = readahead_bytes
        self._max_gap = max_gap_bytes
        self._prefetch = max(prefetch_blocks, 0)
        self.blocks = BlockCache(cache_bytes)

    async def read(self, chunk: Chunk, source: Source, start: int, end: int) -> Any:
        """Bytes ``[start, end)`` of ``chunk``'s remote ``source``."""
        if self._limit:
            blocks = chunk.node.blocks_from(chunk, self._limit, self._max_gap, 1 + self._prefetch)
            if blocks:
                block = blocks[0]
                # Reads tend to go on in file order: start fetching the next blocks now,
                # so they arrive while this one is being decoded.
                for ahead in blocks[1:]:
                    self.blocks.prefetch(ahead, self.batcher, source, chunk.key)
                try:
                    data = await self.blocks.get(block, self.batcher, source, chunk.key)
                except ShortReadError:
                    # The block may end short only past this chunk (a neighbour referencing
                    # bytes beyond the end of the file): read the chunk alone, which either
                    # succeeds or fails naming this chunk.
                    pass
                else:
                    return data[start - block[1] : end - block[1]]
        return await self.batcher.read(source, start, end, key=chunk.key)


class BlockCache:
    """Readahead blocks: fetched once (concurrent askers share the fetch), kept LRU-bounded."""

    def __init__(self, limit: int):
        self._limit = limit
        # blocks as the read-only views the fetch module returns: a chunk is handed to zarr
        # as a slice of its block (no copy of the block, nor of each chunk)
        self._data: dict[tuple[Any, ...], memoryview] = {}
        self._size = 0
        # Fetches in flight, per event loop (a task belongs to one loop).
        self._pending: dict[tuple[Any, ...], asyncio.Task[memoryview]] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._size = 0

    def prefetch(
        self, block: tuple[int, int, int], batcher: RangeBatcher, source: Source, key: str
    ) -> None:
        """Start fetching a block unless it is cached or on its way (errors are left to the
        reader that asks for it)."""
        ident = (source.url, id(source.store), block[1], block[2])
        loop = asyncio.get_running_loop()
        with self._lock:
            if ident in self._data or (*ident, id(loop)) in self._pending:
                return
        self._task(ident, loop, batcher, source, key)

    async def get(
        self, block: tuple[int, int, int], batcher: RangeBatcher, source: Source, key: str
    ) -> memoryview:
        ident = (source.url, id(source.store), block[1], block[2])
        loop = asyncio.get_running_loop()
        with self._lock:
            data = self._data.pop(ident, None)
            if data is not None:
                self._data[ident] = data  # most recently used goes last
                return data
        return await asyncio.shield(self._task(ident, loop, batcher, source, key))

    def _task(
        self,
        ident: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        batcher: RangeBatcher,
        source: Source,
        key: str,
    ) -> asyncio.Task[memoryview]:
        with self._lock:
            pending_key = (*ident, id(loop))
            task = self._pending.get(pending_key)
            if task is None:
                # The fetch runs as a task of its own, so a reader that is cancelled (or
                # times out) cannot cancel it under the others waiting for the same block.
                task = loop.create_task(self._fetch(ident, pending_key, batcher, source, key))
                # retrieved even when every reader gave up, so asyncio does not warn
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                self._pending[pending_key] = task
        return task

    async def _fetch(
        self,
        ident: tuple[Any, ...],
        pending_key: tuple[Any, ...],
        batcher: RangeBatcher,
        source: Source,
        key: str,
    ) -> memoryview:
        try:
            data = await batcher.read(source, ident[2], ident[3], key=key)
            if data.obj is not None and memoryview(data.obj).nbytes != data.nbytes:
                # part of a larger (merged) read: keep only the block, so that the cache's
                # bound counts all the memory it holds
                data = memoryview(bytes(data))
        finally:
            with self._lock:
                self._pending.pop(pending_key, None)
        with self._lock:
            if ident not in self._data:
                self._data[ident] = data
                self._size += data.nbytes
            while self._size > self._limit and len(self._data) > 1:
                old = next(iter(self._data))
                self._size -= self._data.pop(old).nbytes
        return data


def plan_blocks(
    ids: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    pid: int,
    limit: int,
    max_gap: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Group one file's chunk ranges (of a manifest's or a region's columns) into blocks of
    at most ``limit`` bytes, in file order: block starts and ends, sorted."""
    mask = ids == pid
    starts = offsets[mask].astype(np.int64)
    ends = starts + lengths[mask].astype(np.int64)
    plan = plan_coalesced(starts, ends, max_gap_bytes=max_gap, max_request_bytes=limit)
    return plan.starts.astype(np.int64), plan.ends.astype(np.int64)
