"""From a manifest's references to checked sources and bytes: the canonical URL of each
path, the fingerprints recorded for them, and a chunk key resolved to its reference and
read (through the readahead cache for remote sources)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from zarr.abc.store import ByteRequest

from zarr_manifest.errors import (
    ChunkReadError,
    ChunkTooLargeError,
    ManifestFormatError,
    StaleReferenceError,
)
from zarr_manifest.fingerprint import Fingerprint
from zarr_manifest.format.paths import is_absolute_url, local_path_to_url, resolve_reference
from zarr_manifest.manifest import ChunkManifest
from zarr_manifest.store._byte_ranges import request_bounds
from zarr_manifest.store._root_objects import AFTER_FORK
from zarr_manifest.store._verify import SourceVerifier, live_fingerprint, stale_reason
from zarr_manifest.store.fetch import LOCAL_INLINE_MAX_BYTES, read_range_sync
from zarr_manifest.store.sources import Source, SourceRegistry

if TYPE_CHECKING:
    from zarr_manifest.format.entry_forms import Checksum
    from zarr_manifest.store._nodes import LoadedNode
    from zarr_manifest.store._readahead import Readahead

__all__ = [
    "DEFAULT_MAX_CHUNK_BYTES",
    "CheckedSources",
    "Chunk",
    "check_chunk_size",
    "fingerprint_urls",
    "memory_paths_as_urls",
    "read_chunk_async",
    "read_chunk_sync",
    "reference_urls",
    "resolve_paths",
    "whole_object_size",
]


#: The default cap on the bytes of one chunk read (spec 8.2, 8.3).  Zarr's guidance is
#: chunks of 1-100 MB; blosc, zarr's default compressor, cannot encode more than 2 GiB in
#: one buffer; the builders split contiguous data into chunks of a few MiB.  A read holds
#: the fetched bytes and zarr the decoded chunk, for several chunks at once: 1 GiB keeps a
#: hostile or broken entry (a 3 GiB range of a sparse file) from costing many GiB.
DEFAULT_MAX_CHUNK_BYTES = 1 << 30


# ---- a manifest's paths as URLs --------------------------------------------------------------


def reference_urls(
    manifest: ChunkManifest, base: str, *, in_memory: bool, where: str | None
) -> tuple[str, ...]:
    """The canonical URL of each path of a manifest's path table, in table order.

    Plain local paths are accepted only from manifests built in memory; on disk the spec
    forbids them, so there they are a format error, like any other invalid reference.
    """
    urls = []
    for pid, path in enumerate(manifest.path_table):
        if in_memory and path.startswith("/") and not path.startswith("//"):
            path = local_path_to_url(path)
        try:
            urls.append(resolve_reference(path, base))
        except ManifestFormatError as exc:
            # name the first chunk whose entry holds the refused path
            cell = int(np.argmax(manifest.path_ids.reshape(-1) == pid))
            index = (
                np.unravel_index(cell, manifest.shape_chunk_grid)
                if manifest.ndim_chunk_grid
                else ()
            )
            key = ".".join(str(int(i)) for i in index) or "0"
            prefix = f"{where}: " if where is not None else ""
            raise ManifestFormatError(
                f"{prefix}chunk {key!r}: {exc}",
                location=where or exc.location,
                key=key,
                field="path",
            ) from exc
    return tuple(urls)


def resolve_paths(paths: Iterable[str], base: str, where: str) -> list[str]:
    """The canonical URLs of on-disk references; a bad one is a format error naming ``where``."""
    urls = []
    for path in paths:
        try:
            urls.append(resolve_reference(path, base))
        except ManifestFormatError as exc:
            raise ManifestFormatError(f"{where}: {exc}", location=where, field="path") from exc
    return urls


def memory_paths_as_urls(paths: Iterable[str], base: str) -> list[str]:
    """The canonical URLs of an in-memory group's paths (plain local paths allowed)."""
    return [
        resolve_reference(
            local_path_to_url(p) if p.startswith("/") and not p.startswith("//") else p, base
        )
        for p in paths
    ]


def fingerprint_urls(
    fingerprints: dict[str, Fingerprint], base: str, where: str | None, verifier: SourceVerifier
) -> dict[str, Fingerprint]:
    """Recorded fingerprints by their source's canonical URL (none with verify="never").

    ``where`` names an on-disk zarr.json (None: an in-memory array, whose paths may be
    plain local paths).
    """
    if not fingerprints or verifier.mode == "never":
        return {}
    paths = list(fingerprints)
    urls = memory_paths_as_urls(paths, base) if where is None else resolve_paths(paths, base, where)
    return {
        url: _movable(fingerprints[p]) if not is_absolute_url(p) else fingerprints[p]
        for url, p in zip(urls, paths, strict=True)
    }


def _movable(fingerprint: Fingerprint) -> Fingerprint:
    """A relative reference's fingerprint without its time: such sources move with the
    store (spec 7), and a copy keeps the size and ETag but rarely the modification time."""
    return dataclasses.replace(fingerprint, last_modified=None, inode=None, ctime_ns=None)


# ---- sources, checked against their fingerprints ------------------------------------------


class CheckedSources:
    """The sources of a store's arrays: allowed by ``registry``, compared with their
    recorded fingerprints as ``verifier`` asks (`StaleReferenceError`)."""

    def __init__(self, registry: SourceRegistry, verifier: SourceVerifier) -> None:
        self.registry = registry
        self.verifier = verifier
        #: set in a forked child where obstore's runtime is dead: remote sources refused
        self.no_runtime = False

    def get(self, node: LoadedNode, pid: int, key: str) -> Source:
        """The source of path id ``pid`` of ``node``, for a read of ``key``."""
        source = self._usable(node.source(pid, self.registry, key), key)
        if node.fingerprints and pid not in node.verified:
            self._verify(node, pid, source, key)
        return source

    async def get_async(self, node: LoadedNode, pid: int, key: str) -> Source:
        """`get`, with a remote source's HEAD request off the event loop."""
        source = self._usable(node.source(pid, self.registry, key), key)
        if node.fingerprints and pid not in node.verified:
            if source.local_path is None:
                await asyncio.to_thread(self._verify, node, pid, source, key)
            else:
                self._verify(node, pid, source, key)
        return source

    def _usable(self, source: Source, key: str) -> Source:
        if self.no_runtime and source.local_path is None:
            raise ChunkReadError(
                f"chunk {key!r} of {source.url} cannot be read: {AFTER_FORK}",
                key=key,
                url=source.url,
            )
        return source

    def _verify(self, node: LoadedNode, pid: int, source: Source, key: str) -> None:
        recorded = node.fingerprints.get(source.url)
        if recorded is not None:
            self.verifier.check(source, recorded, key)
        if recorded is None or self.verifier.mode != "always":
            # from now on a dict lookup: this store has seen the source as recorded
            node.verified.add(pid)


# ---- one chunk ------------------------------------------------------------------------------


class Chunk:
    """A chunk key resolved to its manifest entry: path id, offset, length."""

    __slots__ = ("index", "key", "length", "missing", "node", "offset", "pid", "sources")

    def __init__(self, sources: CheckedSources, node: LoadedNode, index: tuple[int, ...], key: str):
        self.sources = sources
        self.node = node
        self.key = key
        self.index = index
        self.pid, self.offset, self.length = node.lookup(index)
        self.missing = self.pid < 0

    def source(self) -> Source:
        """The chunk's source, checked as ``verify`` asks."""
        return self.sources.get(self.node, self.pid, self.key)

    async def source_async(self) -> Source:
        """`source`, with a remote source's HEAD request off the event loop."""
        return await self.sources.get_async(self.node, self.pid, self.key)

    def byte_range(self, byte_range: ByteRequest | None) -> tuple[int, int]:
        """Absolute [start, end) in the source for a byte request inside the chunk."""
        lo, hi = request_bounds(self.length, byte_range, self.key)
        return self.offset + lo, self.offset + hi


def _verified(
    chunk: Chunk,
    checksum: Checksum,
    source: Source,
    data: bytes | memoryview,
    byte_range: ByteRequest | None,
) -> bytes | memoryview:
    """``byte_range`` of a chunk's whole bytes ``data``, once they match ``checksum``."""
    checksum.verify(data, key=chunk.key, url=source.url)
    lo, hi = request_bounds(chunk.length, byte_range, chunk.key)
    return data if (lo, hi) == (0, len(data)) else data[lo:hi]


def whole_object_size(source: Source, key: str, recorded: Fingerprint | None) -> int:
    """The size of a whole-object entry's source (spec 5.5): one ``stat`` or HEAD request,
    compared with the source's recorded fingerprint if there is one.

    Raises
    ------
    ChunkReadError
        The source does not exist.
    StaleReferenceError
        It differs from its recorded fingerprint.
    """
    live = live_fingerprint(source)
    if live is None:
        raise ChunkReadError(
            f"chunk {key!r}: {source.url}, the whole object its entry names, does not exist",
            key=key,
            url=source.url,
        )
    reason = None if recorded is None else stale_reason(recorded, live)
    if reason is not None:
        raise StaleReferenceError(
            f"source {source.url} changed since the manifest was made (sizing chunk {key!r}, "
            f"a whole object): {reason}; rebuild the manifest",
            key=key,
            url=source.url,
        )
    return live.size


def check_chunk_size(
    start: int,
    end: int,
    limit: int,
    key: str,
    *,
    url: str | None = None,
    what: str = "chunk",
) -> None:
    """Refuse to read bytes ``[start, end)`` of a chunk (or shard) when they are more than
    ``limit`` (`ChunkTooLargeError` naming ``key``), before anything is read or reserved."""
    if end - start > limit:
        source = f" of {url}" if url is not None else ""
        raise ChunkTooLargeError(
            f"{what} {key!r}: reading bytes [{start}, {end}){source} would take "
            f"{end - start} bytes, more than the store's max_chunk_bytes={limit}; the "
            f"manifest may be wrong (or raise the limit)",
            key=key,
            url=url,
            start=start,
            end=end,
        )


def read_chunk_sync(chunk: Chunk, byte_range: ByteRequest | None, max_bytes: int) -> bytes | None:
    """A chunk's bytes (or a byte range of them); None when the manifest has no entry.

    A read of more than ``max_bytes`` is a `ChunkTooLargeError`.  A chunk whose entry has a
    checksum (spec 5.5) is read whole and checked (`ChecksumMismatchError`) first.
    """
    if chunk.missing:
        return None
    checksum = chunk.node.checksums.get(chunk.index) if chunk.node.checksums else None
    start, end = chunk.byte_range(None if checksum is not None else byte_range)
    source = chunk.source()
    check_chunk_size(start, end, max_bytes, chunk.key, url=source.url)
    data = read_range_sync(source, start, end, key=chunk.key)
    if checksum is None:
        return data
    return bytes(_verified(chunk, checksum, source, data, byte_range))


async def read_chunk_async(
    chunk: Chunk, byte_range: ByteRequest | None, readahead: Readahead, max_bytes: int
) -> bytes | memoryview | None:
    """`read_chunk_sync` on the event loop: small local reads inline, large ones in a
    thread, remote ones through ``readahead``."""
    if chunk.missing:
        return None
    checksum = chunk.node.checksums.get(chunk.index) if chunk.node.checksums else None
    # with a checksum, the whole chunk, to check it, whatever part of it was asked for
    start, end = chunk.byte_range(None if checksum is not None else byte_range)
    source = await chunk.source_async()
    check_chunk_size(start, end, max_bytes, chunk.key, url=source.url)
    data = await _fetch_async(chunk, source, start, end, readahead)
    if checksum is None:
        return data
    return _verified(chunk, checksum, source, data, byte_range)


async def _fetch_async(
    chunk: Chunk, source: Source, start: int, end: int, readahead: Readahead
) -> bytes | memoryview:
    if source.local_path is not None:
        if end - start <= LOCAL_INLINE_MAX_BYTES:
            # a small local read is a few microseconds: cheaper than any scheduling
            return read_range_sync(source, start, end, key=chunk.key)
        # a large one would hold up every other read on zarr's event loop
        return await asyncio.to_thread(read_range_sync, source, start, end, key=chunk.key)
    return await readahead.read(chunk, source, start, end)
