"""`ManifestStore`: a read-only zarr v3 `Store` over a manifest store.

Metadata and ordinary objects come from the manifest store's own storage; chunk keys of
virtual arrays are looked up in their manifests and served as byte ranges of the legacy
files they reference.  Array ``zarr.json`` documents are served without the
chunk-manifest storage transformer, which zarr-python would refuse.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import operator
import os
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self, overload

import numpy as np
import obstore
import orjson
from obstore.store import LocalStore
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.codecs import ShardingCodec
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from zarr_manifest.array import ManifestArray, RegularChunkGridMetadata, chunk_grid_shape
from zarr_manifest.errors import (
    ChunkReadError,
    ManifestFormatError,
    ShortReadError,
    SourceNotAllowedError,
)
from zarr_manifest.fingerprint import Fingerprint
from zarr_manifest.format.location import open_location
from zarr_manifest.format.paths import is_absolute_url, local_path_to_url, resolve_reference
from zarr_manifest.format.publish import (
    USUAL_PLACE,
    document_key,
    document_to_read,
    read_snapshot,
)
from zarr_manifest.format.split import (
    INDEX_FILE,
    RegionGrid,
    decode_index,
    decode_region,
    region_columns,
)
from zarr_manifest.format.transformer import parse_array_document, parse_node_document
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import MAX_GRID_CELLS, ChunkManifest
from zarr_manifest.store._verify import SourceVerifier, VerifyMode
from zarr_manifest.store._virtual_shards import (
    INDEX_ENTRY_BYTES,
    ShardLayout,
    chunks_per_shard,
    sharded_document,
)
from zarr_manifest.store.fetch import (
    LOCAL_INLINE_MAX_BYTES,
    RangeBatcher,
    check_local_extent,
    plan_coalesced,
    read_range_sync,
    read_ranges_async,
    read_ranges_into_async,
    read_ranges_into_sync,
)
from zarr_manifest.store.sources import Source, SourceRegistry

if TYPE_CHECKING:
    from obstore.store import ObjectStore
    from zarr.core.chunk_key_encodings import ChunkKeyEncoding

__all__ = ["ManifestStore"]

ZARR_JSON = "zarr.json"


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
        the sources it references are allowed too (they are the caller's own choice),
        unless ``allowed_prefixes`` or ``registry`` already cover them.
    registry
        A `SourceRegistry` with pre-configured obstore stores (credentials, endpoints) for
        source prefixes; merged with ``allowed_prefixes``.
    read_only
        Must be True: the store is read-only (accepted for zarr's ``Store.open`` protocol;
        False raises ValueError).
    max_gap_bytes, max_request_bytes
        Coalescing limits: ranges of one file closer than ``max_gap_bytes`` are read in one
        request of at most ``max_request_bytes``.
    readahead_bytes
        For remote sources, a chunk read fetches the block of neighbouring chunks of the same
        array and file (up to this many bytes) and keeps it in a small cache, so reading a
        whole array takes few requests at any concurrency.  0 turns it off.
    prefetch_blocks
        With readahead, how many following blocks of the same file to start fetching
        when a block is first read (reads tend to go on in file order).
    cache_bytes
        The readahead cache's bound.
    base_url
        For an in-memory group: the URL that relative manifest paths resolve against
        (default: the current directory).
    verify
        When to compare source files with the fingerprints recorded when the manifest was
        made (sources without one are never checked): ``"once"`` (default) before the
        first read of each source, one ``stat`` (local) or HEAD request (remote) per source
        per store; ``"always"`` before every chunk read, which catches a file changed while
        the store is open but costs a ``stat`` / HEAD request per chunk; ``"never"``.
        A changed (or vanished) source raises `StaleReferenceError` naming the file.
    virtual_shard_bytes
        Show each virtual array with a regular chunk grid to zarr as a *sharded* array,
        whose shards group whole chunks up to about this many decoded bytes (None, the
        default: show the arrays as they are).  The values read are the same; zarr then
        reads and decodes a shard's chunks in bulk instead of one by one, which with
        zarr's ``FusedCodecPipeline`` makes reading arrays of many small chunks several
        times faster.  Chunk keys then name shards, and ``Array.shards`` is set.  Arrays
        already sharded, with a rectilinear grid, or whose shard would hold one chunk are
        shown as they are.  See "Virtual shards" in the README.
    **obstore_kwargs
        Passed to `obstore.store.from_url` when ``root`` is a URL.

    Notes
    -----
    Manifests are parsed lazily, on the first read of one of the array's chunks (or a
    listing that needs the array's chunk keys); all their references are checked then.
    A split manifest (spec section 14) is parsed region by region: a chunk read loads
    ``index.json`` once and then only its region's file, whose references are checked
    then; listings load every region.
    The store implements zarr's synchronous surface (`get_sync`), so zarr's
    ``FusedCodecPipeline`` reads local sources without per-chunk coroutines.

    Keys are served as follows: a virtual array's ``zarr.json`` without the storage
    transformer, its chunk keys from the manifest (a byte range outside a chunk is a
    `ChunkReadError`), its ``manifest.json`` and other files not at all; a group's
    ``zarr.json`` without consolidated metadata; everything else as stored.  Listings leave
    out the contents of directories of a group that are not nodes (``data/`` holding the
    referenced files), as the format's spec recommends.
    """

    supports_writes: bool = False
    supports_deletes: bool = False
    supports_partial_writes: bool = False  # type: ignore[assignment]  # zarr: Literal[False]
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
        prefetch_blocks: int = 2,
        cache_bytes: int = 64 * 1024 * 1024,
        base_url: str | None = None,
        verify: VerifyMode = "once",
        virtual_shard_bytes: int | None = None,
        **obstore_kwargs: Any,
    ) -> None:
        if not read_only:
            raise ValueError(f"{type(self).__name__} is read-only; read_only=False is not possible")
        if virtual_shard_bytes is not None and (
            isinstance(virtual_shard_bytes, bool)
            or not isinstance(virtual_shard_bytes, int)
            or virtual_shard_bytes < 1
        ):
            raise ValueError(
                f"virtual_shard_bytes must be a positive int or None, got {virtual_shard_bytes!r}"
            )
        super().__init__(read_only=True)
        self._args = {
            "root": root,
            "allowed_prefixes": tuple(allowed_prefixes or ()),
            "registry": registry,
            "read_only": read_only,
            "max_gap_bytes": max_gap_bytes,
            "max_request_bytes": max_request_bytes,
            "readahead_bytes": readahead_bytes,
            "prefetch_blocks": prefetch_blocks,
            "cache_bytes": cache_bytes,
            "base_url": base_url,
            "verify": verify,
            "virtual_shard_bytes": virtual_shard_bytes,
            **obstore_kwargs,
        }
        self._shard_bytes = virtual_shard_bytes
        self._max_gap = max_gap_bytes
        self._max_request = max_request_bytes
        self._readahead = readahead_bytes
        self._prefetch = max(prefetch_blocks, 0)
        self._registry = registry.copy() if registry is not None else SourceRegistry()
        self._lock = threading.RLock()
        self._nodes: dict[str, _Node | None] = {}
        # virtual arrays whose chunk keys are "<path>/c/i/j...": the per-chunk fast path
        self._chunk_prefixes: dict[str, _Node] = {}
        self._batcher = RangeBatcher(
            max_gap_bytes=max_gap_bytes, max_request_bytes=max_request_bytes
        )
        self._blocks = _BlockCache(cache_bytes)
        self._local_root: str | None = None
        self._verifier = SourceVerifier(verify)
        # node path -> key of its document, from the store's snapshot (read once, here: the
        # store shows that version throughout, whatever writers do meanwhile)
        self._documents: dict[str, str] | None = None
        if isinstance(root, ManifestGroup):
            self._location = None
            self._memory: dict[str, bytes] | None = _memory_objects(root)
            base = base_url or local_path_to_url(os.getcwd()) + "/"
            self._url = base
            # The caller's own prefixes go first: a source they cover is read with the store
            # they configured (credentials, retries), not one built here for its directory,
            # which as the longer prefix would otherwise win.
            for prefix in allowed_prefixes or ():
                self._registry.register(prefix)
            for url in _group_source_urls(root, base):
                if url not in self._registry:
                    self._registry.register(url.rsplit("/", 1)[0] + "/")
            for path, node in root.walk():
                if isinstance(node, ManifestArray):
                    adopted = _Node(
                        path,
                        self._memory[f"{path}/{ZARR_JSON}"],
                        node.metadata,
                        base,
                        reader=self._read_object_sync,
                        manifest=node.manifest,
                        fingerprints=self._fingerprint_urls(node.fingerprints, base, None),
                    )
                    self._nodes[path] = adopted
                    self._adopt(adopted)
        else:
            self._location = open_location(root, **obstore_kwargs)
            self._memory = None
            if isinstance(self._location.store, LocalStore) and self._location.store.prefix:
                self._local_root = os.path.realpath(self._location.store.prefix)
            self._url = self._location.url
            self._registry.register(self._url, self._location.store)
            snapshot = read_snapshot(self._location)
            self._documents = None if snapshot is None else snapshot.nodes
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
        if not isinstance(value, ManifestStore) or self._shard_bytes != value._shard_bytes:
            return False
        if isinstance(self._args["root"], ManifestGroup) or isinstance(
            value._args["root"], ManifestGroup
        ):
            return self._args["root"] == value._args["root"] and self._url == value._url
        return self._url == value._url and self._registry.prefixes == value._registry.prefixes

    def __repr__(self) -> str:
        kind = "ManifestGroup" if self._location is None else self._url
        return f"ManifestStore({kind!r})"

    def __getstate__(self) -> dict[str, Any]:
        # the snapshot travels along: a copy (a dask worker's) shows the same version
        return {"args": self._args, "is_open": self._is_open, "documents": self._documents}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["args"])  # type: ignore[misc]
        self._is_open = state["is_open"]
        if state.get("documents") is not None:
            self._documents = state["documents"]

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
            # Opening only sets the flag: set it here, because two threads' first reads
            # could both call _open, and the second would fail with "already open".
            self._is_open = True
        _check_byte_range(byte_range)
        prototype = prototype or default_buffer_prototype()
        target = self._fast_chunk(key) or self._route(key)
        if isinstance(target, _Chunk):
            data = await self._read_chunk_async(target, byte_range)
        elif isinstance(target, _Shard):
            data = await self._read_shard_async(target, byte_range)
        elif isinstance(target, bytes):
            data = _slice(target, byte_range, key)
        elif target is _HIDDEN:
            data = None  # manifest.json and stray files of virtual arrays are not zarr's
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
        _check_byte_range(byte_range)
        prototype = prototype or default_buffer_prototype()
        target = self._fast_chunk(key) or self._route(key)
        if isinstance(target, _Chunk):
            data = self._read_chunk_sync(target, byte_range)
        elif isinstance(target, _Shard):
            data = self._read_shard_sync(target, byte_range)
        elif isinstance(target, bytes):
            data = _slice(target, byte_range, key)
        elif target is _HIDDEN:
            data = None
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
            _check_byte_range(byte_range)
            target = self._route(key)
            if isinstance(target, _Chunk):
                if target.missing:
                    continue
                start, end = _chunk_range(target, byte_range)
                source = await target.source_async()
                by_source.setdefault(source, []).append((i, start, end, key))
            elif target is not _HIDDEN:
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
        if isinstance(target, _Chunk | _Shard):
            return not target.missing
        if isinstance(target, bytes):
            return True
        if target is _HIDDEN:
            return False
        return await self._object_size(key) is not None

    async def getsize(self, key: str) -> int:
        """Size of a value: chunk sizes come from the manifest, without I/O."""
        target = self._route(key)
        if isinstance(target, _Chunk | _Shard):
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
        """Total size of what `list_prefix` lists under ``prefix`` (taken as a directory).

        Chunks of virtual arrays count with their manifest lengths, ordinary objects with
        the sizes their listing reports: no object is read.
        """
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        total = 0
        shown = self._listed_objects()
        for key, size in shown.items():
            if key.startswith(prefix):
                total += size
        for node in self._virtual_arrays(shown):
            directory = node.path_key("")
            if directory.startswith(prefix):
                total += node.stored_bytes()
            elif prefix.startswith(directory):
                total += sum(n for k, n in node.chunk_items() if k.startswith(prefix))
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

    async def clear(self) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    def set_sync(self, key: str, value: Buffer) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    def delete_sync(self, key: str) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    # ---- listing ------------------------------------------------------------------------

    async def list(self) -> AsyncIterator[str]:
        for key in self._keys_under(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._keys_under(prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        start = f"{prefix}/" if prefix else ""
        seen: set[str] = set()
        # Only arrays whose directory is `start` or holds it need their manifest for this:
        # an array below `start` is named by its zarr.json already (zarr lists the members
        # of groups this way, and must not make every manifest be parsed).
        for key in self._keys_under(start, inside_only=True):
            name = key[len(start) :].split("/", 1)[0]
            if name not in seen:
                seen.add(name)
                yield name

    def close(self) -> None:
        super().close()
        self._blocks.clear()

    @property
    def _supports_sync_io(self) -> bool:
        # zarr's FusedCodecPipeline runs get_sync per chunk on a few threads: right for
        # local files, slow for remote ones, where the async path batches requests.
        return all(p.startswith(("file:", "memory:")) for p in self._registry.prefixes)

    # ---- routing ------------------------------------------------------------------------

    def _route(self, key: str) -> _Chunk | _Shard | bytes | object | None:
        """What ``key`` is: a chunk of a virtual array, served metadata bytes, hidden, or an
        ordinary object (None: read it from the root storage)."""
        if not _is_valid_key(key):
            return _HIDDEN  # "", "a/", "a//b", "../x": no object has such a key
        node = self._owner(key)
        if node is None:
            if _is_zarr_json(key):
                doc = self._node(_node_dir(key))
                if doc is not None:
                    return doc.served
                if self._documents is not None:
                    return _HIDDEN  # a node of another version than the snapshot's
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
        if node.shards is not None:
            return _Shard(self, node, index, key)
        return _Chunk(self, node, index, key)

    def _adopt(self, node: _Node) -> None:
        """Set up a node just loaded: virtual shards, and the chunk-key fast path."""
        if self._shard_bytes is not None and node.manifest_key is not None:
            node.present_as_shards(self._shard_bytes)
        encoding = node.metadata.chunk_key_encoding if node.is_array else None
        if (
            node.manifest_key is not None
            and node.path
            and encoding is not None
            and encoding.name == "default"
            and encoding.separator == "/"
        ):
            self._chunk_prefixes[node.path] = node

    def _fast_chunk(self, key: str) -> _Chunk | _Shard | None:
        """The chunk a key names, for the common case ``<array>/c/i/j...`` of an array
        already seen; None sends the key the general way (`_route`)."""
        cut = key.find("/c/")
        if cut < 0:
            return None
        node = self._chunk_prefixes.get(key[:cut])
        if node is None:
            return None
        # an array holds no nodes, so a known array at this prefix owns the key
        index = node.decode(key[cut + 1 :])
        if index is None:
            return None
        if node.shards is not None:
            return _Shard(self, node, index, key)
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
            if node is not None:
                self._adopt(node)
            return node

    def _load_node(self, path: str) -> _Node | None:
        key = f"{path}/{ZARR_JSON}" if path else ZARR_JSON
        raw = self._read_object_sync(key, None)
        if self._documents is not None:
            # the version of the snapshot read at open, whatever writers did since
            chosen = document_to_read(
                self._documents, path, None if raw is None else bytes(raw), self._has_object
            )
            if chosen is None:
                return None
            if chosen != USUAL_PLACE and (raw is None or chosen != document_key(bytes(raw))):
                # the snapshot's copy differs from the zarr.json read (else it is that one)
                key = chosen
                raw = self._read_object_sync(key, None)
                if raw is None:
                    where = self._url + key
                    raise ManifestFormatError(f"{where} is missing", location=where)
        if raw is None:
            return None
        where = self._url + key
        doc = parse_node_document(bytes(raw), location=where)
        base = self._url + (f"{path}/" if path else "")
        if doc["node_type"] == "group":
            served = bytes(raw)
            if doc.get("consolidated_metadata") is not None:
                # Spec 3.3: consolidated metadata would show zarr the arrays' documents with
                # their storage transformers (and may disagree with them): serve it without.
                del doc["consolidated_metadata"]
                served = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
            return _Node(path, served, None, base, reader=self._read_object_sync)
        parsed = parse_array_document(doc, location=where)
        return _Node(
            path,
            parsed.to_bytes(),
            parsed.metadata,
            base,
            reader=self._read_object_sync,
            manifest_key=parsed.manifest,
            split=parsed.split,
            fingerprints=self._fingerprint_urls(parsed.fingerprints, base, where),
        )

    def _has_object(self, key: str) -> bool:
        assert self._location is not None
        try:
            obstore.head(self._location.store, key)
        except FileNotFoundError:
            return False
        return True

    def _fingerprint_urls(
        self, fingerprints: dict[str, Fingerprint], base: str, where: str | None
    ) -> dict[str, Fingerprint]:
        """Recorded fingerprints by their source's canonical URL (none with verify="never").

        ``where`` names an on-disk zarr.json (None: an in-memory array, whose paths may be
        plain local paths).
        """
        if not fingerprints or self._verifier.mode == "never":
            return {}
        paths = list(fingerprints)
        if where is None:
            urls = _group_paths_as_urls(paths, base)
        else:
            urls = _resolve_paths(paths, base, where)
        return {
            url: _movable(fingerprints[p]) if not is_absolute_url(p) else fingerprints[p]
            for url, p in zip(urls, paths, strict=True)
        }

    def _verify_source(self, node: _Node, pid: int, source: Source, key: str) -> None:
        """Check a chunk's source against its recorded fingerprint (StaleReferenceError)."""
        recorded = node.fingerprints.get(source.url)
        if recorded is not None:
            self._verifier.check(source, recorded, key)
        if recorded is None or self._verifier.mode != "always":
            # from now on a dict lookup: this store has seen the source as recorded
            node.verified.add(pid)

    def _virtual_arrays(self, shown: dict[str, int]) -> builtins.list[_Node]:
        """The virtual arrays whose zarr.json is among the ``shown`` objects."""
        return sorted(
            (
                n
                for n in list(self._nodes.values())
                if n is not None and n.manifest_key is not None and n.path_key(ZARR_JSON) in shown
            ),
            key=lambda n: n.path,
        )

    def _listed_objects(self) -> dict[str, int]:
        """The objects of the root storage that zarr is shown, with their sizes as served.

        Not shown: manifest files and other files of virtual arrays' directories (their
        chunk keys come from the manifests), and, as spec 9.5 recommends, the contents of
        directories inside a group that are not nodes (``data/`` holding the referenced
        files) -- zarr would warn about each as an unknown member.
        """
        sizes = self._object_sizes()
        node_dirs = {_node_dir(k) for k in sizes if _is_zarr_json(k)}
        if self._documents is not None:
            # nodes of the snapshot's version only (a writer may have added or removed some)
            node_dirs = {d for d in node_dirs | set(self._documents) if self._node(d)}
        for directory in sorted(node_dirs):
            with self._lock:
                if self._nodes.get(directory, False) is None:
                    del self._nodes[directory]  # looked up before its zarr.json was written
            self._node(directory)
        shown: dict[str, int] = {}
        for key, size in sizes.items():
            if not self._in_hierarchy(key, node_dirs):
                continue
            owner = self._owner(key)
            if (
                owner is not None
                and owner.manifest_key is not None
                and key != owner.path_key(ZARR_JSON)
            ):
                continue  # routing it could parse the manifest, only to hide the object
            target = self._route(key)
            if isinstance(target, bytes):
                shown[key] = len(target)
            elif target is None:
                shown[key] = size
        return shown

    def _in_hierarchy(self, key: str, node_dirs: builtins.set[str]) -> bool:
        """Whether ``key`` is not under a non-node directory of a group."""
        parts = key.split("/")
        for depth in range(len(parts) - 1):
            directory = "/".join(parts[:depth])
            node = self._node(directory) if directory in node_dirs else None
            if node is None:
                continue
            if node.is_array:
                return True  # an array's directory holds what its zarr.json says
            if "/".join(parts[: depth + 1]) not in node_dirs:
                return False
        return True

    def _keys_under(self, prefix: str, *, inside_only: bool = False) -> Iterator[str]:
        """Every key zarr is shown that starts with ``prefix``: objects first, then chunk keys.

        Manifests are parsed only for arrays that can have chunk keys under ``prefix`` (with
        ``inside_only``: only for arrays whose directory is ``prefix`` or holds it).
        """
        shown = self._listed_objects()
        yield from (key for key in shown if key.startswith(prefix))
        for node in self._virtual_arrays(shown):
            directory = node.path_key("")
            if prefix.startswith(directory):
                yield from (key for key in node.chunk_keys() if key.startswith(prefix))
            elif directory.startswith(prefix) and not inside_only:
                yield from node.chunk_keys()

    # ---- storage of the manifest store itself --------------------------------------------

    def _object_sizes(self) -> dict[str, int]:
        if self._memory is not None:
            return {k: len(v) for k, v in sorted(self._memory.items())}
        assert self._location is not None
        listing = obstore.list(self._location.store).collect()
        return {m["path"]: int(m["size"]) for m in sorted(listing, key=lambda m: m["path"])}

    def _is_local_file(self, key: str) -> bool | None:
        """For a local root: whether ``key`` is a regular file (None for other roots).

        A symlink leading out of the root is refused.  A key that names a directory or
        runs through a file is absent, as in zarr's LocalStore (obstore would report some
        of these as errors).
        """
        if self._local_root is None:
            return None
        if "\x00" in key:
            return False  # no file name holds a NUL (a manifest member may spell one)
        real = os.path.realpath(os.path.join(self._local_root, key))
        if real != self._local_root and not real.startswith(self._local_root + os.sep):
            raise SourceNotAllowedError(
                f"object {key!r} of {self._url} resolves to {real!r}, outside the store root",
                key=key,
                path=real,
            )
        return os.path.isfile(real)

    def _read_object_sync(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        if self._memory is not None:
            data = self._memory.get(key)
            return None if data is None else _slice(data, byte_range, key)
        assert self._location is not None
        if self._is_local_file(key) is False:
            return None
        store = self._location.store
        try:
            if byte_range is None:
                return bytes(obstore.get(store, key).bytes())
            return bytes(_obstore_range_sync(store, key, byte_range))
        except FileNotFoundError:
            return None
        except Exception:
            if byte_range is None:
                raise
            # Object stores refuse a range that selects nothing (start at or past the end,
            # or empty); zarr's own stores return b"" for it: serve it as they do.
            try:
                size = int(obstore.head(store, key)["size"])
            except FileNotFoundError:
                return None
            if _selects_nothing(byte_range, size):
                return b""
            raise

    async def _read_object_async(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        if self._memory is not None:
            return self._read_object_sync(key, byte_range)
        assert self._location is not None
        if self._is_local_file(key) is False:
            return None
        store = self._location.store
        try:
            if byte_range is None:
                result = await obstore.get_async(store, key)
                return bytes(await result.bytes_async())
            return bytes(await _obstore_range_async(store, key, byte_range))
        except FileNotFoundError:
            return None
        except Exception:
            if byte_range is None:
                raise
            size = await self._object_size(key)  # as in _read_object_sync
            if size is None:
                return None
            if _selects_nothing(byte_range, size):
                return b""
            raise

    async def _object_size(self, key: str) -> int | None:
        if self._memory is not None:
            data = self._memory.get(key)
            return None if data is None else len(data)
        assert self._location is not None
        if self._is_local_file(key) is False:
            return None
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

    async def _read_chunk_async(
        self, chunk: _Chunk, byte_range: ByteRequest | None
    ) -> bytes | memoryview | None:
        if chunk.missing:
            return None
        start, end = _chunk_range(chunk, byte_range)
        source = await chunk.source_async()
        if source.local_path is not None:
            if end - start <= LOCAL_INLINE_MAX_BYTES:
                # a small local read is a few microseconds: cheaper than any scheduling
                return read_range_sync(source, start, end, key=chunk.key)
            # a large one would hold up every other read on zarr's event loop
            return await asyncio.to_thread(read_range_sync, source, start, end, key=chunk.key)
        if self._readahead:
            blocks = chunk.node.blocks_from(
                chunk, self._readahead, self._max_gap, 1 + self._prefetch
            )
            if blocks:
                block = blocks[0]
                # Reads tend to go on in file order: start fetching the next blocks now,
                # so they arrive while this one is being decoded.
                for ahead in blocks[1:]:
                    self._blocks.prefetch(ahead, self._batcher, source, chunk.key)
                try:
                    data = await self._blocks.get(block, self._batcher, source, chunk.key)
                except ShortReadError:
                    # The block may end short only past this chunk (a neighbour referencing
                    # bytes beyond the end of the file): read the chunk alone, which either
                    # succeeds or fails naming this chunk.
                    pass
                else:
                    return data[start - block[1] : end - block[1]]
        return await self._batcher.read(source, start, end, key=chunk.key)

    # ---- virtual shards -----------------------------------------------------------------

    def _read_shard_sync(self, shard: _Shard, byte_range: ByteRequest | None) -> Any:
        planned = _plan_shard_read(shard, byte_range)
        return None if planned is None else self._fill_shard_sync(shard, *planned)

    async def _read_shard_async(self, shard: _Shard, byte_range: ByteRequest | None) -> Any:
        planned = _plan_shard_read(shard, byte_range)
        if planned is None:
            return None
        size, reads, index_part = planned
        sources = {pid: shard.node.source(pid, self._registry, shard.key) for pid in reads}
        if all(source.local_path is not None for source in sources.values()):
            if size <= LOCAL_INLINE_MAX_BYTES:
                # a small local read is a few microseconds: cheaper than any scheduling
                return self._fill_shard_sync(shard, *planned)
            # a large one would hold up every other read on zarr's event loop
            return await asyncio.to_thread(self._fill_shard_sync, shard, *planned)
        out = _shard_buffer(size, shard)

        async def read_source(pid: int, plan: tuple[np.ndarray, ...]) -> None:
            starts, ends, positions, chunks = plan
            await read_ranges_into_async(
                await shard.source_async(pid),
                starts,
                ends,
                out,
                positions,
                keys=shard.chunk_keys(chunks),
                max_gap_bytes=self._max_gap,
                max_request_bytes=self._max_request,
            )

        await asyncio.gather(*(read_source(pid, plan) for pid, plan in reads.items()))
        _place_index(out, shard.layout, index_part)
        return out

    def _fill_shard_sync(
        self,
        shard: _Shard,
        size: int,
        reads: dict[int, tuple[np.ndarray, ...]],
        index_part: tuple[int, int],
    ) -> np.ndarray:
        """Read a planned part of a shard (see `_plan_shard_read`) into a new buffer."""
        sources = {pid: shard.source(pid) for pid in reads}
        for pid, (_, ends, _, chunks) in reads.items():
            last = int(np.argmax(ends))
            check_local_extent(sources[pid], int(ends[last]), key=shard.chunk_keys(chunks)[last])
        out = _shard_buffer(size, shard)
        for pid, (starts, ends, positions, chunks) in reads.items():
            read_ranges_into_sync(
                sources[pid],
                starts,
                ends,
                out,
                positions,
                keys=shard.chunk_keys(chunks),
                max_gap_bytes=self._max_gap,
                max_request_bytes=self._max_request,
            )
        _place_index(out, shard.layout, index_part)
        return out


# ---- helpers ------------------------------------------------------------------------------

_HIDDEN = object()


class _Node:
    """One node of the hierarchy: its served zarr.json and, for virtual arrays, the manifest.

    A split manifest (``split`` is its region shape) is loaded region by region: a chunk
    lookup reads ``index.json`` once and then only its region's file.  Each region's path
    table is mapped into one node-wide table, so path ids (and the sources cached by them)
    mean the same in every region; ``manifest`` assembles the whole manifest from every
    region, for listings.
    """

    __slots__ = (
        "_blocks",
        "_decoder",
        "_in_memory",
        "_lock",
        "_manifest",
        "_path_list",
        "_paths",
        "_present",
        "_reader",
        "_regions",
        "_shard_layouts",
        "_sources",
        "_split_urls",
        "_urls",
        "base_url",
        "fingerprints",
        "is_array",
        "manifest_key",
        "metadata",
        "path",
        "served",
        "shards",
        "split",
        "verified",
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
        split: tuple[int, ...] | None = None,
        fingerprints: dict[str, Fingerprint] | None = None,
    ):
        self.path = path
        # recorded source fingerprints by canonical URL, and the path ids already checked
        self.fingerprints = fingerprints or {}
        self.verified: set[int] = set()
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
        self._urls: tuple[str, ...] | None = None
        # reentrant: assembling a split manifest loads its regions under the same lock
        self._lock = threading.RLock()
        self._sources: dict[int, Source] = {}
        self._blocks: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        self.split = (
            RegionGrid(chunk_grid_shape(metadata), split)
            if split is not None and manifest is None
            else None
        )
        # split manifests: regions present per index.json, loaded regions (None: absent),
        # and the node-wide path table with each path's canonical URL
        self._present: frozenset[tuple[int, ...]] | None = None
        self._regions: dict[tuple[int, ...], _Region | None] = {}
        self._paths: dict[str, int] = {}
        self._path_list: list[str] = []
        self._split_urls: list[str] = []
        self._decoder = (
            _key_decoder(metadata.chunk_key_encoding, len(metadata.shape))
            if metadata is not None
            else None
        )
        # virtual shards: chunks per shard along each dimension, and recent shard layouts
        self.shards: tuple[int, ...] | None = None
        self._shard_layouts: dict[tuple[int, ...], ShardLayout] = {}

    def path_key(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    # ---- virtual shards -------------------------------------------------------------------

    def present_as_shards(self, target_bytes: int) -> None:
        """Show this array as sharded (see `ManifestStore`'s ``virtual_shard_bytes``), if
        its grid is regular, it is not sharded already and a shard would hold 2+ chunks."""
        metadata = self.metadata
        grid = metadata.chunk_grid
        if not isinstance(grid, RegularChunkGridMetadata) or not metadata.shape:
            return
        if any(isinstance(codec, ShardingCodec) for codec in metadata.codecs):
            return
        counts = chunks_per_shard(
            grid.chunk_shape,
            chunk_grid_shape(metadata),
            metadata.dtype.to_native_dtype().itemsize,
            target_bytes,
        )
        if counts is not None:
            self.served = sharded_document(self.served, counts)
            self.shards = counts

    def shard_layout(self, index: tuple[int, ...]) -> ShardLayout:
        """The byte layout of shard ``index`` (kept for the last few shards: zarr asks for a
        shard's index and then for its chunks)."""
        try:
            return self._shard_layouts[index]
        except KeyError:
            pass
        assert self.shards is not None
        origin = tuple(map(operator.mul, index, self.shards))
        layout = ShardLayout(*self.block(origin, self.shards))
        with self._lock:
            # bounded by count and by size: a shard of a million chunks has a 16 MB index
            kept = sum(len(k.index) for k in self._shard_layouts.values())
            while self._shard_layouts and (
                len(self._shard_layouts) >= _SHARD_LAYOUTS_KEPT
                or kept + len(layout.index) > _SHARD_LAYOUTS_BYTES
            ):
                kept -= len(self._shard_layouts.pop(next(iter(self._shard_layouts))).index)
            self._shard_layouts[index] = layout
        return layout

    def block(
        self, origin: tuple[int, ...], shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Path ids, offsets and lengths of the chunks of the grid block at ``origin`` of
        ``shape``; cells past the grid's edge are absent (path id -1).  A split manifest
        loads only the regions the block overlaps."""
        ids = np.full(shape, -1, dtype=np.int64)
        offsets = np.zeros(shape, dtype=np.uint64)
        lengths = np.zeros(shape, dtype=np.uint64)
        grid_shape = chunk_grid_shape(self.metadata)
        stop = tuple(min(o + n, g) for o, n, g in zip(origin, shape, grid_shape, strict=True))
        if any(o >= e for o, e in zip(origin, stop, strict=True)):
            return ids, offsets, lengths
        if self.split is None:
            manifest = self.manifest
            src = tuple(slice(o, e) for o, e in zip(origin, stop, strict=True))
            dst = tuple(slice(0, e - o) for o, e in zip(origin, stop, strict=True))
            ids[dst] = manifest.path_ids[src]
            offsets[dst] = manifest.offsets[src]
            lengths[dst] = manifest.lengths[src]
            return ids, offsets, lengths
        regions = self.split.region_shape
        first = tuple(map(operator.floordiv, origin, regions))
        last = tuple((e - 1) // r for e, r in zip(stop, regions, strict=True))
        for key in np.ndindex(*(b - a + 1 for a, b in zip(first, last, strict=True))):
            key = tuple(map(operator.add, key, first))
            region = self.region(key)
            if region is None:
                continue
            corner = tuple(map(operator.mul, key, regions))
            lo = tuple(map(max, corner, origin))
            hi = tuple(
                min(c + n, e) for c, n, e in zip(corner, region.ids.shape, stop, strict=True)
            )
            src = tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, corner, strict=True))
            dst = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin, strict=True))
            ids[dst] = region.ids[src]
            offsets[dst] = region.offsets[src]
            lengths[dst] = region.lengths[src]
        return ids, offsets, lengths

    def stored_bytes(self) -> int:
        """Bytes of every key `chunk_items` lists."""
        if self.shards is None:
            return int(self.manifest.lengths.sum(dtype=np.uint64))
        return sum(n for _, n in self.chunk_items())

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
        if self.split is not None:
            return self._assemble_split()
        key = self.path_key(self.manifest_key or "manifest.json")
        where = self.base_url + (self.manifest_key or "manifest.json")
        raw = self._reader(key, None)
        if raw is None:
            raise ManifestFormatError(f"{where} is missing", location=where)
        manifest = ChunkManifest.from_json_bytes(
            raw, shape=chunk_grid_shape(self.metadata), location=where
        )
        # Every reference is checked now, not when its chunk is first read: the spec wants
        # format errors (7.1) reported before any data of the array is returned.
        self._urls = _reference_urls(manifest, self.base_url, in_memory=False, where=where)
        return manifest

    # ---- split manifests ------------------------------------------------------------------

    def lookup(self, index: tuple[int, ...]) -> tuple[int, int, int]:
        """``(path id, offset, length)`` of one chunk; path id -1 if it is not stored.

        For a split manifest only the chunk's region is loaded.
        """
        grid = self.split
        if grid is None:
            manifest = self.manifest
            if any(not 0 <= i < s for i, s in zip(index, manifest.shape_chunk_grid, strict=True)):
                return _ABSENT
            return (
                manifest.path_ids.item(index),
                manifest._offsets.item(index),
                manifest._lengths.item(index),
            )
        # (map with operator functions: this runs once per chunk read, and generator
        # expressions cost several times as much)
        if not all(map(operator.lt, index, grid.grid_shape)):
            return _ABSENT  # indices are decoded from digits: never negative
        shape = grid.region_shape
        key = tuple(map(operator.floordiv, index, shape))
        try:
            region = self._regions[key]
        except KeyError:
            region = self.region(key)
        if region is None:
            return _ABSENT
        local = tuple(map(operator.mod, index, shape))
        return region.ids.item(local), region.offsets.item(local), region.lengths.item(local)

    def region(self, key: tuple[int, ...]) -> _Region | None:
        """One region of a split manifest, loaded on first use (None: no chunk stored)."""
        try:
            return self._regions[key]
        except KeyError:
            pass
        with self._lock:
            if key in self._regions:
                return self._regions[key]
            region = self._load_region(key) if key in self._present_regions() else None
            self._regions[key] = region
            return region

    def _present_regions(self) -> frozenset[tuple[int, ...]]:
        if self._present is None:
            assert self.split is not None
            rel = f"{self.manifest_key}/{INDEX_FILE}"
            where = self.base_url + rel
            raw = self._reader(self.path_key(rel), None)
            if raw is None:
                raise ManifestFormatError(f"{where} is missing", location=where)
            self._present = frozenset(decode_index(raw, self.split, location=where))
        return self._present

    def _load_region(self, key: tuple[int, ...]) -> _Region:
        grid = self.split
        assert grid is not None
        rel = f"{self.manifest_key}/{grid.file_name(key)}"
        where = self.base_url + rel
        raw = self._reader(self.path_key(rel), None)
        if raw is None:
            raise ManifestFormatError(
                f"{where} is missing (it is listed in {INDEX_FILE})", location=where
            )
        decoded = decode_region(raw, grid, key, location=where)
        # Every reference of the region is checked before any of its chunks is read, as the
        # spec wants of a whole manifest; new paths join the node-wide table only then.
        new = [p for p in dict.fromkeys(decoded.path_table) if p not in self._paths]
        urls = _resolve_paths(new, self.base_url, where)
        for path, url in zip(new, urls, strict=True):
            self._paths[path] = len(self._path_list)
            self._path_list.append(path)
            self._split_urls.append(url)
        remap = np.array([self._paths[p] for p in decoded.path_table], dtype=np.int64)
        ids, offsets, lengths = region_columns(decoded, grid, key, remap)
        return _Region(ids, offsets, lengths)

    def _assemble_split(self) -> ChunkManifest:
        """The whole manifest of a split node, in the node-wide path table's ids."""
        grid = self.split
        assert grid is not None
        size = int(np.prod(grid.grid_shape, dtype=np.float64))
        if size > MAX_GRID_CELLS:
            where = self.base_url + self.manifest_key + "/"  # type: ignore[operator]
            raise ManifestFormatError(
                f"{where}: chunk grid {grid.grid_shape} has {size} cells, more than the "
                f"{MAX_GRID_CELLS} a manifest may hold in memory",
                location=where,
            )
        regions = {key: self.region(key) for key in sorted(self._present_regions())}
        loaded = [r for r in regions.values() if r is not None]
        # the narrowest types that hold every region's columns (regions are narrowed)
        ids = np.full(grid.grid_shape, -1, dtype=np.result_type(np.int8, *(r.ids for r in loaded)))
        offsets = np.zeros(
            grid.grid_shape, dtype=np.result_type(np.uint8, *(r.offsets for r in loaded))
        )
        lengths = np.zeros(
            grid.grid_shape, dtype=np.result_type(np.uint8, *(r.lengths for r in loaded))
        )
        for key, region in regions.items():
            assert region is not None
            cells = grid.slices(key)
            ids[cells] = region.ids
            offsets[cells] = region.offsets
            lengths[cells] = region.lengths
        self._urls = tuple(self._split_urls)
        # the regions' columns were validated as they loaded
        return ChunkManifest._new(tuple(self._path_list), ids, offsets, lengths)

    # ---- whole-manifest views ---------------------------------------------------------------

    def urls(self) -> tuple[str, ...]:
        """The canonical URL of each path of the manifest's path table."""
        manifest = self.manifest
        if self._urls is None:
            self._urls = _reference_urls(
                manifest, self.base_url, in_memory=self._in_memory, where=None
            )
        return self._urls

    def chunk_items(self) -> Iterator[tuple[str, int]]:
        """(store key, length) of every chunk present in the manifest, in C order (with
        virtual shards: of every shard holding a chunk)."""
        manifest = self.manifest
        present = manifest.path_ids >= 0
        sizes = manifest.lengths
        if self.shards is not None:
            present, sizes = _per_shard(present, sizes, self.shards)
        flat = np.flatnonzero(present.reshape(-1))
        lengths = sizes.reshape(-1)[flat].tolist()
        encoding = self.metadata.chunk_key_encoding
        if manifest.ndim_chunk_grid == 0:
            indices: Iterable[tuple[int, ...]] = [()] * len(flat)
        else:
            indices = zip(
                *(a.tolist() for a in np.unravel_index(flat, present.shape)),
                strict=True,
            )
        for index, length in zip(indices, lengths, strict=True):
            yield self.path_key(encoding.encode_chunk_key(index)), length

    def chunk_keys(self) -> Iterator[str]:
        for key, _ in self.chunk_items():
            yield key

    def source(self, pid: int, registry: SourceRegistry, key: str) -> Source:
        try:
            return self._sources[pid]
        except KeyError:
            pass
        url = self._split_urls[pid] if self.split is not None else self.urls()[pid]
        source = registry.resolve(url, key=key)
        self._sources[pid] = source
        return source

    def blocks_from(
        self, chunk: _Chunk, limit: int, max_gap: int, count: int
    ) -> list[tuple[int, int, int]]:
        """The readahead block ``(path id, start, end)`` holding a chunk's bytes, then up to
        ``count - 1`` blocks that follow it in the same file (empty if none holds it)."""
        pid = chunk.pid
        # A split manifest plans per region: readahead must not load the other regions.
        region_key = None if self.split is None else self.split.region_of(chunk.index)
        plan = self._blocks.get((region_key, pid))
        if plan is None:
            with self._lock:
                plan = self._blocks.get((region_key, pid))
                if plan is None:
                    if region_key is None:
                        manifest = self.manifest
                        ids, offsets, lengths = (
                            manifest.path_ids,
                            manifest.offsets,
                            manifest.lengths,
                        )
                    else:
                        region = self.region(region_key)
                        assert region is not None  # the chunk was found in it
                        ids, offsets, lengths = region.ids, region.offsets, region.lengths
                    plan = _plan_blocks(ids, offsets, lengths, pid, limit, max_gap)
                    self._blocks[(region_key, pid)] = plan
        starts, ends = plan
        i = int(np.searchsorted(starts, chunk.offset, side="right")) - 1
        if i < 0 or chunk.offset + chunk.length > ends[i]:
            return []
        stop = min(i + count, len(starts))
        return [(pid, int(starts[k]), int(ends[k])) for k in range(i, stop)]


class _Region:
    """One loaded region of a split manifest: region-shaped columns, node-wide path ids."""

    __slots__ = ("ids", "lengths", "offsets")

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray):
        self.ids = ids
        self.offsets = offsets
        self.lengths = lengths


_ABSENT = (-1, 0, 0)
#: shard layouts a node keeps (zarr reads a shard's index, then its chunks)
_SHARD_LAYOUTS_KEPT = 64
#: and at most this many bytes of their indexes (the newest is kept whatever its size)
_SHARD_LAYOUTS_BYTES = 64 * 1024 * 1024


def _per_shard(
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


def _plan_blocks(
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


class _Chunk:
    """A chunk key resolved to its manifest entry."""

    __slots__ = ("index", "key", "length", "missing", "node", "offset", "pid", "store")

    def __init__(self, store: ManifestStore, node: _Node, index: tuple[int, ...], key: str):
        self.store = store
        self.node = node
        self.key = key
        self.index = index
        self.pid, self.offset, self.length = node.lookup(index)
        self.missing = self.pid < 0

    def source(self) -> Source:
        return _checked_source(self.store, self.node, self.pid, self.key)

    async def source_async(self) -> Source:
        """`source`, with a remote source's HEAD request off the event loop."""
        return await _checked_source_async(self.store, self.node, self.pid, self.key)


class _Shard:
    """A shard key of an array shown with virtual shards, resolved to its layout."""

    __slots__ = ("key", "layout", "length", "missing", "node", "origin", "store")

    def __init__(self, store: ManifestStore, node: _Node, index: tuple[int, ...], key: str):
        self.store = store
        self.node = node
        self.key = key
        assert node.shards is not None
        self.origin = tuple(map(operator.mul, index, node.shards))
        self.layout = node.shard_layout(index)
        self.missing = not self.layout.present
        self.length = self.layout.size

    def source(self, pid: int) -> Source:
        return _checked_source(self.store, self.node, pid, self.key)

    async def source_async(self, pid: int) -> Source:
        return await _checked_source_async(self.store, self.node, pid, self.key)

    def chunk_keys(self, flat: np.ndarray) -> _InnerChunkKeys:
        """Store keys (as the array is stored, unsharded) of inner chunks, by flat index in
        the shard, made only if an error names one: the chunk that failed, and its shard."""
        return _InnerChunkKeys(self, flat)


class _InnerChunkKeys(Sequence[str]):
    """The keys of some inner chunks of a shard, made on demand (see `_Shard.chunk_keys`)."""

    __slots__ = ("_flat", "_shard")

    def __init__(self, shard: _Shard, flat: np.ndarray):
        self._shard = shard
        self._flat = flat

    def __len__(self) -> int:
        return len(self._flat)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        shard = self._shard
        node = shard.node
        assert node.shards is not None
        inner = np.unravel_index(int(self._flat[i]), node.shards)
        index = tuple(o + int(k) for o, k in zip(shard.origin, inner, strict=True))
        key = node.path_key(node.metadata.chunk_key_encoding.encode_chunk_key(index))
        return f"{key} (in shard {shard.key!r})"


def _checked_source(store: ManifestStore, node: _Node, pid: int, key: str) -> Source:
    """The source of path id ``pid``, compared with its fingerprint as ``verify`` asks."""
    source = node.source(pid, store._registry, key)
    if node.fingerprints and pid not in node.verified:
        store._verify_source(node, pid, source, key)
    return source


async def _checked_source_async(store: ManifestStore, node: _Node, pid: int, key: str) -> Source:
    """`_checked_source`, with a remote source's HEAD request off the event loop."""
    source = node.source(pid, store._registry, key)
    if node.fingerprints and pid not in node.verified:
        if source.local_path is None:
            await asyncio.to_thread(store._verify_source, node, pid, source, key)
        else:
            store._verify_source(node, pid, source, key)
    return source


def _shard_buffer(size: int, shard: _Shard) -> np.ndarray:
    """Room for ``size`` bytes of a shard, not zeroed (every byte is read into it)."""
    try:
        return np.empty(size, dtype=np.uint8)
    except MemoryError as exc:
        raise ChunkReadError(
            f"shard {shard.key!r} would take {size} bytes, more than can be held; the "
            f"manifest's chunk lengths may be wrong",
            key=shard.key,
        ) from exc


def _plan_shard_read(
    shard: _Shard, byte_range: ByteRequest | None
) -> tuple[int, dict[int, tuple[np.ndarray, ...]], tuple[int, int]] | None:
    """What a read of a shard takes: its size and `ShardLayout.plan` (None: absent)."""
    layout = shard.layout
    if not layout.present:
        return None
    lo, hi = _request_bounds(layout.size, byte_range, shard.key)
    return hi - lo, *layout.plan(lo, hi)


def _place_index(out: np.ndarray, layout: ShardLayout, part: tuple[int, int]) -> None:
    """Copy the requested part of a shard's index to the end of the result."""
    lo, hi = part
    if hi > lo:
        memoryview(out)[len(out) - (hi - lo) :] = layout.index[lo:hi]


class _BlockCache:
    """Readahead blocks: fetched once (concurrent askers share the fetch), kept LRU-bounded."""

    def __init__(self, limit: int):
        self._limit = limit
        self._data: dict[tuple[Any, ...], bytes] = {}
        self._size = 0
        # Fetches in flight, per event loop (a task belongs to one loop).
        self._pending: dict[tuple[Any, ...], asyncio.Task[bytes]] = {}
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
    ) -> bytes:
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
    ) -> asyncio.Task[bytes]:
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
    ) -> bytes:
        try:
            data = bytes(await batcher.read(source, ident[2], ident[3], key=key))
        finally:
            with self._lock:
                self._pending.pop(pending_key, None)
        with self._lock:
            if ident not in self._data:
                self._data[ident] = data
                self._size += len(data)
            while self._size > self._limit and len(self._data) > 1:
                old = next(iter(self._data))
                self._size -= len(self._data.pop(old))
        return data


def _is_valid_key(key: str) -> bool:
    return bool(key) and all(part not in ("", ".", "..") for part in key.split("/"))


def _is_zarr_json(key: str) -> bool:
    return key == ZARR_JSON or key.endswith("/" + ZARR_JSON)


def _node_dir(zarr_json_key: str) -> str:
    """The node path of a zarr.json key ("" for the root)."""
    return zarr_json_key[: -len(ZARR_JSON)].rstrip("/")


def _key_decoder(encoding: ChunkKeyEncoding, ndim: int):  # type: ignore[no-untyped-def]
    """A fast chunk-key parser for an encoding: the key relative to the array, or None."""
    name = encoding.name
    sep: str = encoding.separator  # type: ignore[attr-defined]  # both encodings have one
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
        # Only the exact encoding of an index is a chunk key: "01" or "+1" must be absent
        # (spec 9.2), not an alias of chunk 1.
        if not (p.isdigit() and p.isascii()) or (p[0] == "0" and len(p) > 1):
            return None
    return tuple(map(int, parts))


def _chunk_range(chunk: _Chunk, byte_range: ByteRequest | None) -> tuple[int, int]:
    """Absolute [start, end) in the source for a byte request inside a chunk."""
    lo, hi = _request_bounds(chunk.length, byte_range, chunk.key)
    return chunk.offset + lo, chunk.offset + hi


def _request_bounds(length: int, byte_range: ByteRequest | None, key: str) -> tuple[int, int]:
    """[start, end) of a byte request inside a chunk (or shard) of ``length`` bytes;
    a request reaching outside it is a `ChunkReadError`."""
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
            f"byte range {byte_range} is outside chunk {key!r} of {length} bytes",
            key=key,
            start=lo,
            end=hi,
        )
    return lo, hi


def _check_byte_range(byte_range: object) -> None:
    if byte_range is not None and not isinstance(
        byte_range, RangeByteRequest | OffsetByteRequest | SuffixByteRequest
    ):
        # zarr's stores word it so (zarr.testing.store.StoreTests.test_get_raises)
        raise TypeError(f"Unexpected byte_range, got {byte_range!r}")


def _selects_nothing(byte_range: ByteRequest, size: int) -> bool:
    """Whether a byte request selects no byte of an object of ``size`` bytes."""
    if isinstance(byte_range, RangeByteRequest):
        return min(byte_range.end, size) <= byte_range.start
    if isinstance(byte_range, OffsetByteRequest):
        return byte_range.offset >= size
    return size == 0 or byte_range.suffix == 0


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
        result = await obstore.get_async(
            store, key, options={"range": {"offset": byte_range.offset}}
        )
    else:
        result = await obstore.get_async(
            store, key, options={"range": {"suffix": byte_range.suffix}}
        )
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


def _group_source_urls(group: ManifestGroup, base: str) -> set[str]:
    """The URL of every source an in-memory group references."""
    urls: set[str] = set()
    for _, node in group.walk():
        if isinstance(node, ManifestArray):
            urls.update(_reference_urls(node.manifest, base, in_memory=True, where=None))
    return urls


def _group_paths_as_urls(paths: Iterable[str], base: str) -> list[str]:
    """The canonical URLs of an in-memory group's paths (plain local paths allowed)."""
    return [
        resolve_reference(
            local_path_to_url(p) if p.startswith("/") and not p.startswith("//") else p, base
        )
        for p in paths
    ]


def _resolve_paths(paths: Iterable[str], base: str, where: str) -> list[str]:
    """The canonical URLs of on-disk references; a bad one is a format error naming ``where``."""
    urls = []
    for path in paths:
        try:
            urls.append(resolve_reference(path, base))
        except ManifestFormatError as exc:
            raise ManifestFormatError(f"{where}: {exc}", location=where, field="path") from exc
    return urls


def _movable(fingerprint: Fingerprint) -> Fingerprint:
    """A relative reference's fingerprint without its time: such sources move with the
    store (spec 7), and a copy keeps the size and ETag but rarely the modification time."""
    return dataclasses.replace(fingerprint, last_modified=None)


def _reference_urls(
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
