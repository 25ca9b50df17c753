"""`ManifestStore`: a read-only zarr v3 `Store` over a manifest store.

Metadata and ordinary objects come from the manifest store's own storage; chunk keys of
virtual arrays are looked up in their manifests and served as byte ranges of the legacy
files they reference.  Array ``zarr.json`` documents are served without the
chunk-manifest storage transformer, which zarr-python would refuse.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import obstore
from obstore.store import LocalStore
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from zarr_manifest.array import ManifestArray, chunk_grid_shape
from zarr_manifest.errors import ChunkReadError, ManifestFormatError, SourceNotAllowedError
from zarr_manifest.format.location import StoreLocation, open_location
from zarr_manifest.format.paths import local_path_to_url, resolve_reference
from zarr_manifest.format.transformer import parse_array_document, parse_node_document
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest
from zarr_manifest.store.fetch import RangeBatcher, read_range_sync, read_ranges_async
from zarr_manifest.store.sources import Source, SourceRegistry

if TYPE_CHECKING:
    from obstore.store import ObjectStore
    from zarr.core.chunk_key_encodings import ChunkKeyEncoding

__all__ = ["ManifestStore"]

ZARR_JSON = "zarr.json"
_READ_ONLY = "store was opened in read-only mode and does not support writing"


class ManifestStore(Store):
    """A read-only zarr v3 store over a manifest store or an in-memory `ManifestGroup`.

    Parameters
    ----------
    root
        Where the manifest store is: a local path, a URL (``file://``, ``s3://``, ``gs://``,
        ``az://``, ``http(s)://``, ``memory://``), an obstore store, or a `ManifestGroup`
        held in memory.
    allowed_prefixes
        URL prefixes (or local directories) outside ``root`` that references may read.
        Default-deny: a reference to anything not under ``root`` or one of these is refused
        with `SourceNotAllowedError`.  For an in-memory `ManifestGroup` the directories of
        the sources it references are allowed (they are the caller's own choice).
    registry
        A `SourceRegistry` with pre-configured obstore stores (credentials, endpoints) for
        source prefixes; merged with ``allowed_prefixes``.
    read_only
        Must be True: the store is read-only (accepted for zarr's ``Store.open`` protocol).
    max_gap_bytes, max_request_bytes
        Coalescing limits: ranges of one file closer than ``max_gap_bytes`` are read in one
        request of at most ``max_request_bytes``.
    readahead_bytes
        For remote sources, a chunk read fetches the block of neighbouring chunks of the same
        array and file (up to this many bytes) and keeps it in a small cache, so reading a
        whole array takes few requests at any concurrency.  0 turns it off.
    cache_bytes
        The readahead cache's bound.
    base_url
        For an in-memory group: the URL that relative manifest paths resolve against
        (default: the current directory).
    **obstore_kwargs
        Passed to `obstore.store.from_url` when ``root`` is a URL.

    Notes
    -----
    Manifests are parsed lazily, on the first read of one of the array's chunks.  The
    store implements zarr's synchronous surface (`get_sync`), so zarr's
    ``FusedCodecPipeline`` reads without per-chunk coroutines.
    """

    supports_writes: bool = False
    supports_deletes: bool = False
    supports_partial_writes: bool = False
    supports_listing: bool = True

    def __init__(
        self,
        root: str | os.PathLike[str] | ObjectStore | ManifestGroup,
        *,
        allowed_prefixes: Iterable[str] | None = None,
        registry: SourceRegistry | None = None,
        read_only: bool = True,
        max_gap_bytes: int = 64 * 1024,
        max_request_bytes: int = 16 * 1024 * 1024,
        readahead_bytes: int = 4 * 1024 * 1024,
        cache_bytes: int = 64 * 1024 * 1024,
        base_url: str | None = None,
        **obstore_kwargs: Any,
    ) -> None:
        super().__init__(read_only=True)
        self._args = {
            "root": root,
            "allowed_prefixes": tuple(allowed_prefixes or ()),
            "registry": registry,
            "read_only": read_only,
            "max_gap_bytes": max_gap_bytes,
            "max_request_bytes": max_request_bytes,
            "readahead_bytes": readahead_bytes,
            "cache_bytes": cache_bytes,
            "base_url": base_url,
            **obstore_kwargs,
        }
        self._max_gap = max_gap_bytes
        self._max_request = max_request_bytes
        self._readahead = readahead_bytes
        self._registry = registry.copy() if registry is not None else SourceRegistry()
        self._lock = threading.RLock()
        self._nodes: dict[str, _Node | None] = {}
        self._batcher = RangeBatcher(max_gap_bytes=max_gap_bytes, max_request_bytes=max_request_bytes)
        self._blocks = _BlockCache(cache_bytes)
        self._local_root: str | None = None
        if isinstance(root, ManifestGroup):
            self._location = None
            self._memory = _memory_objects(root)
            base = base_url or local_path_to_url(os.getcwd()) + "/"
            self._url = base
            for prefix in _group_source_dirs(root, base):
                self._registry.register(prefix)
            for path, node in root.walk():
                if isinstance(node, ManifestArray):
                    self._nodes[path] = _Node(
                        path,
                        self._memory[f"{path}/{ZARR_JSON}"],
                        node.metadata,
                        base,
                        reader=self._read_object_sync,
                        manifest=node.manifest,
                    )
        else:
            self._location = open_location(root, **obstore_kwargs)
            self._memory = None
            if isinstance(self._location.store, LocalStore) and self._location.store.prefix:
                self._local_root = os.path.realpath(self._location.store.prefix)
            self._url = self._location.url
            self._registry.register(self._url, self._location.store)
        for prefix in allowed_prefixes or ():
            self._registry.register(prefix)

    # ---- construction helpers -----------------------------------------------------------

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> Self:
        store = cls(*args, **kwargs)
        await store._open()
        return store

    def with_read_only(self, read_only: bool = False) -> ManifestStore:
        """A new store over the same root; ``read_only=False`` is refused (ValueError)."""
        if not read_only:
            raise ValueError(f"{type(self).__name__} is read-only; it cannot be opened for writing")
        return type(self)(**self._args)

    def __eq__(self, value: object) -> bool:
        if not isinstance(value, ManifestStore):
            return False
        if isinstance(self._args["root"], ManifestGroup) or isinstance(value._args["root"], ManifestGroup):
            return self._args["root"] == value._args["root"] and self._url == value._url
        return self._url == value._url and self._registry.prefixes == value._registry.prefixes

    def __repr__(self) -> str:
        kind = "ManifestGroup" if self._location is None else self._url
        return f"ManifestStore({kind!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args, "is_open": self._is_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["args"])  # type: ignore[misc]
        self._is_open = state["is_open"]

    @property
    def registry(self) -> SourceRegistry:
        """The sources this store may read (its root included)."""
        return self._registry

    # ---- reading ------------------------------------------------------------------------

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """The value of ``key`` (or a byte range of it); None when it does not exist."""
        if not self._is_open:
            await self._open()
        prototype = prototype or default_buffer_prototype()
        target = self._route(key)
        if isinstance(target, _Chunk):
            data = await self._read_chunk_async(target, byte_range)
        elif isinstance(target, bytes):
            data = _slice(target, byte_range, key)
        else:
            data = await self._read_object_async(key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """`get` without an event loop (zarr's ``SupportsGetSync``)."""
        prototype = prototype or default_buffer_prototype()
        target = self._route(key)
        if isinstance(target, _Chunk):
            data = self._read_chunk_sync(target, byte_range)
        elif isinstance(target, bytes):
            data = _slice(target, byte_range, key)
        else:
            data = self._read_object_sync(key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        """Many (key, byte range) reads; chunk reads in the same file are coalesced."""
        requests = list(key_ranges)
        results: list[Buffer | None] = [None] * len(requests)
        by_source: dict[Source, list[tuple[int, int, int, str]]] = {}
        others: list[tuple[int, str, ByteRequest | None]] = []
        for i, (key, byte_range) in enumerate(requests):
            target = self._route(key)
            if isinstance(target, _Chunk):
                if target.missing:
                    continue
                start, end = _chunk_range(target, byte_range)
                by_source.setdefault(target.source(), []).append((i, start, end, key))
            else:
                others.append((i, key, byte_range))

        async def read_source(source: Source, reqs: list[tuple[int, int, int, str]]) -> None:
            starts = np.array([r[1] for r in reqs], dtype=np.int64)
            ends = np.array([r[2] for r in reqs], dtype=np.int64)
            datas = await read_ranges_async(
                source,
                starts,
                ends,
                keys=[r[3] for r in reqs],
                max_gap_bytes=self._max_gap,
                max_request_bytes=self._max_request,
            )
            for (i, *_), data in zip(reqs, datas, strict=True):
                results[i] = prototype.buffer.from_bytes(data)

        async def read_other(i: int, key: str, byte_range: ByteRequest | None) -> None:
            results[i] = await self.get(key, prototype, byte_range)

        await asyncio.gather(
            *(read_source(s, r) for s, r in by_source.items()),
            *(read_other(*o) for o in others),
        )
        return results

    async def exists(self, key: str) -> bool:
        target = self._route(key)
        if isinstance(target, _Chunk):
            return not target.missing
        if isinstance(target, bytes):
            return True
        if target is _HIDDEN:
            return False
        return await self._object_size(key) is not None

    async def getsize(self, key: str) -> int:
        """Size of a value: chunk sizes come from the manifest, without I/O."""
        target = self._route(key)
        if isinstance(target, _Chunk):
            if target.missing:
                raise FileNotFoundError(key)
            return target.length
        if isinstance(target, bytes):
            return len(target)
        size = None if target is _HIDDEN else await self._object_size(key)
        if size is None:
            raise FileNotFoundError(key)
        return size

    async def getsize_prefix(self, prefix: str) -> int:
        """Total size under ``prefix``; virtual arrays are summed from manifest lengths."""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        total = 0
        for key in self._object_keys():
            if key.startswith(prefix) and self._route(key) is not _HIDDEN:
                total += await self.getsize(key)
        for node in self._virtual_arrays():
            if node.path_key("").startswith(prefix):
                total += int(node.manifest.lengths.sum(dtype=np.uint64))
        return total

    # ---- writing (refused) --------------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    async def delete_dir(self, prefix: str) -> None:
        self._check_writable()

    def set_sync(self, key: str, value: Buffer) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    def delete_sync(self, key: str) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    # ---- listing ------------------------------------------------------------------------

    async def list(self) -> AsyncIterator[str]:
        for key in self._all_keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._all_keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        start = f"{prefix}/" if prefix else ""
        seen: set[str] = set()
        for key in self._all_keys():
            if key.startswith(start):
                name = key[len(start) :].split("/", 1)[0]
                if name not in seen:
                    seen.add(name)
                    yield name

    async def is_empty(self, prefix: str) -> bool:
        async for _ in self.list_prefix(prefix):
            return False
        return True

    def close(self) -> None:
        super().close()
        self._blocks.clear()

    @property
    def _supports_sync_io(self) -> bool:
        # zarr's FusedCodecPipeline runs get_sync per chunk on a few threads: right for
        # local files, slow for remote ones, where the async path batches requests.
        return all(p.startswith(("file:", "memory:")) for p in self._registry.prefixes)

    # ---- routing ------------------------------------------------------------------------

    def _route(self, key: str) -> _Chunk | bytes | object | None:
        """What ``key`` is: a chunk of a virtual array, served metadata bytes, hidden, or an
        ordinary object (None: read it from the root storage)."""
        node = self._owner(key)
        if node is None:
            if key.endswith(ZARR_JSON):
                parent = key[: -len(ZARR_JSON)].rstrip("/")
                doc = self._node(parent)
                if doc is not None:
                    return doc.served
            return None
        rest = key[len(node.path) + 1 :] if node.path else key
        if rest == ZARR_JSON:
            return node.served
        if rest == node.manifest_key:
            return _HIDDEN
        if node.manifest_key is None:
            return None
        index = node.decode(rest)
        if index is None:
            return _HIDDEN
        return _Chunk(self, node, index, key)

    def _owner(self, key: str) -> _Node | None:
        """The array whose directory holds ``key``, if any (first array from the root)."""
        parts = key.split("/")
        for depth in range(len(parts)):
            prefix = "/".join(parts[:depth])
            node = self._node(prefix)
            if node is not None and node.is_array:
                return node if depth < len(parts) else None
        return None

    def _node(self, path: str) -> _Node | None:
        try:
            return self._nodes[path]
        except KeyError:
            pass
        with self._lock:
            if path in self._nodes:
                return self._nodes[path]
            node = self._load_node(path)
            self._nodes[path] = node
            return node

    def _load_node(self, path: str) -> _Node | None:
        key = f"{path}/{ZARR_JSON}" if path else ZARR_JSON
        raw = self._read_object_sync(key, None)
        if raw is None:
            return None
        where = self._url + key
        doc = parse_node_document(bytes(raw), location=where)
        base = self._url + (f"{path}/" if path else "")
        if doc["node_type"] == "group":
            return _Node(path, bytes(raw), None, base, reader=self._read_object_sync)
        parsed = parse_array_document(doc, location=where)
        return _Node(
            path, parsed.to_bytes(), parsed.metadata, base,
            reader=self._read_object_sync, manifest_key=parsed.manifest,
        )

    def _virtual_arrays(self) -> list[_Node]:
        self._discover()
        return sorted(
            (n for n in list(self._nodes.values()) if n is not None and n.manifest_key is not None),
            key=lambda n: n.path,
        )

    def _discover(self) -> None:
        for key in self._object_keys():
            if key.endswith(ZARR_JSON):
                self._node(key[: -len(ZARR_JSON)].rstrip("/"))

    def _all_keys(self) -> Iterator[str]:
        virtual = self._virtual_arrays()
        for key in self._object_keys():
            if self._route(key) is not _HIDDEN:
                yield key  # manifest.json and stray files of virtual arrays are not zarr's
        for node in virtual:
            yield from node.chunk_keys()

    # ---- storage of the manifest store itself --------------------------------------------

    def _object_keys(self) -> list[str]:
        if self._memory is not None:
            return sorted(self._memory)
        assert self._location is not None
        return sorted(m["path"] for m in obstore.list(self._location.store).collect())

    def _check_contained(self, key: str) -> None:
        """Refuse an object of a local root that is a symlink leading out of the root."""
        if self._local_root is None:
            return
        real = os.path.realpath(os.path.join(self._local_root, key))
        if real != self._local_root and not real.startswith(self._local_root + os.sep):
            raise SourceNotAllowedError(
                f"object {key!r} of {self._url} resolves to {real!r}, outside the store root",
                key=key,
                path=real,
            )

    def _read_object_sync(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        self._check_contained(key)
        if self._memory is not None:
            data = self._memory.get(key)
            return None if data is None else _slice(data, byte_range, key)
        assert self._location is not None
        try:
            if byte_range is None:
                return bytes(obstore.get(self._location.store, key).bytes())
            return bytes(_obstore_range_sync(self._location.store, key, byte_range))
        except FileNotFoundError:
            return None

    async def _read_object_async(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        self._check_contained(key)
        if self._memory is not None:
            return self._read_object_sync(key, byte_range)
        assert self._location is not None
        try:
            if byte_range is None:
                result = await obstore.get_async(self._location.store, key)
                return bytes(await result.bytes_async())
            return bytes(await _obstore_range_async(self._location.store, key, byte_range))
        except FileNotFoundError:
            return None

    async def _object_size(self, key: str) -> int | None:
        if self._memory is not None:
            data = self._memory.get(key)
            return None if data is None else len(data)
        assert self._location is not None
        try:
            meta = await obstore.head_async(self._location.store, key)
        except FileNotFoundError:
            return None
        return int(meta["size"])

    # ---- chunk bytes --------------------------------------------------------------------

    def _read_chunk_sync(self, chunk: _Chunk, byte_range: ByteRequest | None) -> bytes | None:
        if chunk.missing:
            return None
        start, end = _chunk_range(chunk, byte_range)
        return read_range_sync(chunk.source(), start, end, key=chunk.key)

    async def _read_chunk_async(self, chunk: _Chunk, byte_range: ByteRequest | None) -> bytes | None:
        if chunk.missing:
            return None
        start, end = _chunk_range(chunk, byte_range)
        source = chunk.source()
        if source.local_path is not None:
            # a local read is a few microseconds: cheaper than any scheduling
            return read_range_sync(source, start, end, key=chunk.key)
        if self._readahead:
            block = chunk.node.block_of(chunk, self._readahead, self._max_gap)
            if block is not None:
                data = await self._blocks.get(block, self._batcher, source, chunk.key)
                return data[start - block[1] : end - block[1]]
        return await self._batcher.read(source, start, end, key=chunk.key)


# ---- helpers ------------------------------------------------------------------------------

_HIDDEN = object()


class _Node:
    """One node of the hierarchy: its served zarr.json and, for virtual arrays, the manifest."""

    __slots__ = (
        "_blocks",
        "_decoder",
        "_lock",
        "_manifest",
        "_reader",
        "_in_memory",
        "_sources",
        "base_url",
        "is_array",
        "manifest_key",
        "metadata",
        "path",
        "served",
    )

    def __init__(
        self,
        path: str,
        served: bytes,
        metadata: Any,
        base_url: str,
        *,
        reader: Any,
        manifest_key: str | None = None,
        manifest: ChunkManifest | None = None,
    ):
        self.path = path
        self.served = served
        self.metadata = metadata
        self.is_array = metadata is not None
        self.base_url = base_url
        self._reader = reader
        self.manifest_key = "manifest.json" if manifest is not None else manifest_key
        self._manifest = manifest
        # Only manifests the user built in memory may hold plain local paths; on disk the
        # spec forbids them, so they are a format error there, never a file to read.
        self._in_memory = manifest is not None
        self._lock = threading.Lock()
        self._sources: dict[int, Source] = {}
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._decoder = (
            _key_decoder(metadata.chunk_key_encoding, len(metadata.shape))
            if metadata is not None
            else None
        )

    def path_key(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    def decode(self, rest: str) -> tuple[int, ...] | None:
        assert self._decoder is not None
        return self._decoder(rest)

    @property
    def manifest(self) -> ChunkManifest:
        if self._manifest is None:
            with self._lock:
                if self._manifest is None:
                    self._manifest = self._load_manifest()
        return self._manifest

    def _load_manifest(self) -> ChunkManifest:
        key = self.path_key(self.manifest_key or "manifest.json")
        where = self.base_url + (self.manifest_key or "manifest.json")
        raw = self._reader(key, None)
        if raw is None:
            raise ManifestFormatError(f"{where} is missing", location=where)
        return ChunkManifest.from_json_bytes(raw, shape=chunk_grid_shape(self.metadata), location=where)

    def chunk_keys(self) -> Iterator[str]:
        manifest = self.manifest
        flat = np.flatnonzero(manifest.path_ids.reshape(-1) >= 0)
        encoding = self.metadata.chunk_key_encoding
        if manifest.ndim_chunk_grid == 0:
            indices: Iterable[tuple[int, ...]] = [()] * len(flat)
        else:
            indices = zip(*(a.tolist() for a in np.unravel_index(flat, manifest.shape_chunk_grid)), strict=True)
        for index in indices:
            yield self.path_key(encoding.encode_chunk_key(index))

    def source(self, pid: int, registry: SourceRegistry, key: str) -> Source:
        try:
            return self._sources[pid]
        except KeyError:
            pass
        path = self.manifest.path_table[pid]
        if path.startswith("/") and not path.startswith("//") and self._in_memory:
            path = local_path_to_url(path)
        url = resolve_reference(path, self.base_url)
        source = registry.resolve(url, key=key)
        self._sources[pid] = source
        return source

    def block_of(self, chunk: _Chunk, limit: int, max_gap: int) -> tuple[int, int, int] | None:
        """The readahead block ``(path id, start, end)`` holding a chunk's bytes."""
        pid = chunk.pid
        plan = self._blocks.get(pid)
        if plan is None:
            with self._lock:
                plan = self._blocks.get(pid)
                if plan is None:
                    plan = _plan_blocks(self.manifest, pid, limit, max_gap)
                    self._blocks[pid] = plan
        starts, ends, _ = plan
        i = int(np.searchsorted(starts, chunk.offset, side="right")) - 1
        if i < 0 or chunk.offset + chunk.length > ends[i]:
            return None
        return (pid, int(starts[i]), int(ends[i]))


def _plan_blocks(manifest: ChunkManifest, pid: int, limit: int, max_gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group one file's chunk ranges (sorted by offset) into blocks of at most ``limit`` bytes."""
    mask = manifest.path_ids == pid
    starts = np.sort(manifest.offsets[mask].astype(np.int64))
    order = np.argsort(manifest.offsets[mask].astype(np.int64), kind="stable")
    ends = (manifest.offsets[mask].astype(np.int64) + manifest.lengths[mask].astype(np.int64))[order]
    if starts.size == 0:
        return starts, ends, starts
    block_starts = [int(starts[0])]
    block_ends = [int(ends[0])]
    for s, e in zip(starts[1:].tolist(), ends[1:].tolist(), strict=True):
        if s - block_ends[-1] <= max_gap and max(e, block_ends[-1]) - block_starts[-1] <= limit:
            block_ends[-1] = max(e, block_ends[-1])
        else:
            block_starts.append(s)
            block_ends.append(e)
    bs = np.array(block_starts, dtype=np.int64)
    be = np.array(block_ends, dtype=np.int64)
    return bs, be, be - bs


class _Chunk:
    """A chunk key resolved to its manifest entry."""

    __slots__ = ("key", "length", "missing", "node", "offset", "pid", "store")

    def __init__(self, store: ManifestStore, node: _Node, index: tuple[int, ...], key: str):
        manifest = node.manifest
        self.store = store
        self.node = node
        self.key = key
        grid = manifest.shape_chunk_grid
        if any(not 0 <= i < s for i, s in zip(index, grid, strict=True)):
            self.missing = True
            self.pid = -1
            self.offset = self.length = 0
            return
        self.pid = manifest.path_ids.item(index)
        self.missing = self.pid < 0
        self.offset = manifest._offsets.item(index)
        self.length = manifest._lengths.item(index)

    def source(self) -> Source:
        return self.node.source(self.pid, self.store._registry, self.key)


class _BlockCache:
    """Readahead blocks: fetched once (concurrent askers share the fetch), kept LRU-bounded."""

    def __init__(self, limit: int):
        self._limit = limit
        self._data: dict[tuple[Any, ...], bytes] = {}
        self._size = 0
        self._pending: dict[tuple[Any, ...], asyncio.Future[bytes]] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._size = 0

    async def get(
        self, block: tuple[int, int, int], batcher: RangeBatcher, source: Source, key: str
    ) -> bytes:
        ident = (source.url, block[1], block[2], id(asyncio.get_running_loop()))
        with self._lock:
            data = self._data.pop(ident, None)
            if data is not None:
                self._data[ident] = data  # most recently used goes last
                return data
            pending = self._pending.get(ident)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._pending[ident] = pending
                owner = True
            else:
                owner = False
        if not owner:
            return await asyncio.shield(pending)
        try:
            data = bytes(await batcher.read(source, block[1], block[2], key=key))
        except BaseException as e:
            with self._lock:
                self._pending.pop(ident, None)
            pending.set_exception(e)
            pending.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        with self._lock:
            self._pending.pop(ident, None)
            self._data[ident] = data
            self._size += len(data)
            while self._size > self._limit and len(self._data) > 1:
                old = next(iter(self._data))
                self._size -= len(self._data.pop(old))
        pending.set_result(data)
        return data


def _key_decoder(encoding: ChunkKeyEncoding, ndim: int):  # type: ignore[no-untyped-def]
    """A fast chunk-key parser for an encoding: the key relative to the array, or None."""
    name = encoding.name
    sep = encoding.separator
    if name == "default":
        if ndim == 0:
            return lambda rest: () if rest == "c" else None
        head = "c" + sep

        def decode_default(rest: str) -> tuple[int, ...] | None:
            if not rest.startswith(head):
                return None
            return _indices(rest[2:].split(sep), ndim)

        return decode_default
    if ndim == 0:
        return lambda rest: () if rest == "0" else None
    return lambda rest: _indices(rest.split(sep), ndim)


def _indices(parts: list[str], ndim: int) -> tuple[int, ...] | None:
    if len(parts) != ndim:
        return None
    for p in parts:
        if not (p.isdigit() and p.isascii()):
            return None
    return tuple(map(int, parts))


def _chunk_range(chunk: _Chunk, byte_range: ByteRequest | None) -> tuple[int, int]:
    """Absolute [start, end) in the source for a byte request inside a chunk."""
    length = chunk.length
    if byte_range is None:
        lo, hi = 0, length
    elif isinstance(byte_range, RangeByteRequest):
        lo, hi = byte_range.start, byte_range.end
    elif isinstance(byte_range, OffsetByteRequest):
        lo, hi = byte_range.offset, length
    elif isinstance(byte_range, SuffixByteRequest):
        lo, hi = max(length - byte_range.suffix, 0), length
    else:
        raise TypeError(f"unexpected byte range {byte_range!r}")
    if not 0 <= lo <= hi <= length:
        raise ChunkReadError(
            f"byte range {byte_range} is outside chunk {chunk.key!r} of {length} bytes",
            key=chunk.key,
            start=lo,
            end=hi,
        )
    return chunk.offset + lo, chunk.offset + hi


def _slice(data: bytes, byte_range: ByteRequest | None, key: str) -> bytes:
    if byte_range is None:
        return data
    n = len(data)
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[max(n - byte_range.suffix, 0) :]
    raise TypeError(f"unexpected byte range {byte_range!r} for {key!r}")


def _obstore_range_sync(store: Any, key: str, byte_range: ByteRequest) -> Any:
    if isinstance(byte_range, RangeByteRequest):
        return obstore.get_range(store, key, start=byte_range.start, end=byte_range.end)
    if isinstance(byte_range, OffsetByteRequest):
        return obstore.get(store, key, options={"range": {"offset": byte_range.offset}}).bytes()
    return obstore.get(store, key, options={"range": {"suffix": byte_range.suffix}}).bytes()


async def _obstore_range_async(store: Any, key: str, byte_range: ByteRequest) -> Any:
    if isinstance(byte_range, RangeByteRequest):
        return await obstore.get_range_async(store, key, start=byte_range.start, end=byte_range.end)
    if isinstance(byte_range, OffsetByteRequest):
        result = await obstore.get_async(store, key, options={"range": {"offset": byte_range.offset}})
    else:
        result = await obstore.get_async(store, key, options={"range": {"suffix": byte_range.suffix}})
    return await result.bytes_async()


def _memory_objects(group: ManifestGroup) -> dict[str, bytes]:
    """The objects of an in-memory group's store: metadata and inline arrays' chunks."""
    from zarr_manifest.array import InlineArray
    from zarr_manifest.format.hierarchy import encode_inline_chunks, group_document
    from zarr_manifest.format.transformer import array_document

    objects = {ZARR_JSON: group_document(group.attributes)}
    for path, node in group.walk():
        if isinstance(node, ManifestGroup):
            objects[f"{path}/{ZARR_JSON}"] = group_document(node.attributes)
        elif isinstance(node, ManifestArray):
            objects[f"{path}/{ZARR_JSON}"] = array_document(node.metadata, virtual=False)
        elif isinstance(node, InlineArray):
            objects[f"{path}/{ZARR_JSON}"] = array_document(node.metadata, virtual=False)
            for key, value in encode_inline_chunks(node).items():
                objects[f"{path}/{key}"] = value
    return objects


def _group_source_dirs(group: ManifestGroup, base: str) -> set[str]:
    """The directories of every source an in-memory group references."""
    dirs: set[str] = set()
    for _, node in group.walk():
        manifest = getattr(node, "manifest", None)
        if manifest is None:
            continue
        for path in manifest.path_table:
            url = resolve_reference(local_path_to_url(path) if path.startswith("/") else path, base)
            dirs.add(url.rsplit("/", 1)[0] + "/")
    return dirs
