"""`ManifestStore`: a read-only zarr v3 `Store` over a manifest store.

Metadata and ordinary objects come from the manifest store's own storage; chunk keys of
virtual arrays are looked up in their manifests and served as byte ranges of the legacy
files they reference.  Array ``zarr.json`` documents are served without the
chunk-manifest storage transformer, which zarr-python would refuse.

A chunk read goes top to bottom through the package's rooms: the key is routed
(`_keys.KeyRouter`) to its array (`_nodes.LoadedNode`, manifest loaded lazily), then to
its reference (`_references.Chunk`, or `_shard_view.Shard` with virtual shards), to the
checked source (`sources`, `_verify`), and fetched (`fetch`, `_readahead` for remote
sources).  The store's own objects are read by `_root_objects`; an in-memory group is
encoded by `_in_memory`; listings follow `_listing`.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from zarr_manifest.array import ManifestArray
from zarr_manifest.format.location import open_location
from zarr_manifest.format.paths import local_path_to_url
from zarr_manifest.format.publish import SNAPSHOT_KEY, parse_snapshot
from zarr_manifest.format.storage_options import (
    StorageOptions,
    has_prefix_options,
    merge_storage_options,
    options_for,
    options_of_store,
    same_bucket,
)
from zarr_manifest.format.virtualizarr1 import check_compat
from zarr_manifest.group import ManifestGroup
from zarr_manifest.store._byte_ranges import check_byte_range, slice_bytes
from zarr_manifest.store._fork import forks, obstore_works
from zarr_manifest.store._in_memory import group_source_urls, memory_objects
from zarr_manifest.store._keys import HIDDEN, KeyRouter, Target
from zarr_manifest.store._listing import dir_names, keys_under, listed_objects, virtual_arrays
from zarr_manifest.store._manifest_cache import DEFAULT_MANIFEST_CACHE_BYTES, ManifestCache
from zarr_manifest.store._merged_chunks import MergedChunk, read_merged_async, read_merged_sync
from zarr_manifest.store._nodes import ZARR_JSON, LoadedNode, load_node
from zarr_manifest.store._readahead import Readahead
from zarr_manifest.store._references import (
    DEFAULT_MAX_CHUNK_BYTES,
    CheckedSources,
    Chunk,
    check_chunk_size,
    fingerprint_urls,
    read_chunk_async,
    read_chunk_sync,
    whole_object_size,
)
from zarr_manifest.store._root_objects import RootObjects
from zarr_manifest.store._shard_view import Shard, read_shard_async, read_shard_sync
from zarr_manifest.store._sparse_reads import read_sparse
from zarr_manifest.store._verify import SourceVerifier, VerifyMode
from zarr_manifest.store.fetch import RangeBatcher, read_ranges_async
from zarr_manifest.store.sources import Source, SourceRegistry

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = ["ManifestStore"]

#: serializes rebuilding stores in a forked child (see `ManifestStore._rebuild_after_fork`)
_REBUILD_LOCK = threading.Lock()


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
        Whether to show a virtual array with a regular chunk grid to zarr as a *sharded*
        array, whose shards group whole chunks up to about this many decoded bytes.  The
        values read are the same; zarr then reads and decodes a shard's chunks in bulk
        instead of one by one.  ``"auto"`` (the default): shards of 4 MiB for arrays whose
        chunks decode to at most 1 MiB, when zarr's configured codec pipeline, at the time
        the array is first opened, reads shards in bulk (``FusedCodecPipeline``; zarr's
        default pipeline decodes a shard's chunks one by one, for which the plain view is
        faster).  An int: always, with shards of about that many bytes.  None or 0: never.
        With shards, chunk keys name shards, and ``Array.shards`` is set.  Arrays already
        sharded, with a rectilinear grid, or whose shard would hold one chunk are shown as
        they are.  A sparse array (4,096 chunks or more, at most 1 in 8 stored; its manifest
        not split) gets shards, smaller, sized so that most hold no chunk, with ``"auto"``
        under any pipeline: zarr then fills the absent ones in one go each (see
        `sparse_read`).  See "Virtual shards" in the README.
    merged_chunk_bytes
        Whether to show a virtual array (not shown as shards) with its chunks merged along
        the first axis, ``k`` at a time, up to about this many decoded bytes per merged
        chunk, with codecs ``[bytes]``: the store decodes the chunks (with the array's own
        codecs, checksums checked) and zarr sees ``k`` times fewer, which speeds up full
        reads under zarr's default codec pipeline.  The values read are the same; a read
        of one chunk reads its whole merged chunk.  None (the default) or 0: never.
        ``"auto"``: only when zarr's configured pipeline, at the time the array is first
        opened, is not ``FusedCodecPipeline``, with merged chunks of up to 64 KiB and 16
        chunks for arrays stored uncompressed, and of at most 2 chunks for compressed
        ones.  An int: always, up to that many bytes.  Only arrays with a regular grid, a
        numeric or bool data type and 2+ chunks along the first axis are merged.  See
        "Merged chunks" in the README.
    manifest_cache_bytes
        A bound on the parsed manifests (and regions of split manifests) the store keeps
        in memory, by their size there (default 1 GiB).  The least recently used are
        dropped beyond it, and parsed again (their references checked again) when next
        read; the newest is kept whatever its size.  Manifests of an in-memory
        `ManifestGroup` are the caller's and are not counted.  Raise it for datasets
        whose arrays, read in turn, hold more chunk entries than fit (an entry takes
        about 3 to 20 bytes), lest each be parsed again and again.
    max_chunk_bytes
        The most bytes one chunk read (or, with virtual shards, one shard read) may take
        (default 1 GiB).  A larger read raises `ChunkTooLargeError` naming the key,
        before anything is requested or reserved: a manifest entry of many GiB (a sparse
        file, references that overlap) cannot make the store hold many GiB.  Chunks are
        usually 1-100 MB; raise it for data whose chunks are larger, and keep it above
        ``virtual_shard_bytes``.
    storage_options
        Credentials and client settings for ``root`` (when a URL) and for the sources
        read, in obstore's vocabulary: its store config keys, ``client_options`` and
        ``retry_config`` in one dict, with URL-prefix keys (``{"s3://other-bucket/":
        {...}}``) for sources under other prefixes (the longest wins; see
        `zarr_manifest.format.storage_options`).  An allowed prefix on the root's bucket
        or host that no prefix key covers is read with the root's options (for an obstore
        store given as ``root``: the options it was made with).  Default: obstore's
        (credentials from the environment).
    compat
        None (default): read the specification's form only.  ``"virtualizarr-1"``: also
        read stores written by VirtualiZarr 1.x, repairing exactly their two deviations (a
        bare ``NaN`` fill value, a codec list without the ``bytes`` codec; spec section 17).
        `zarr-manifest upgrade` rewrites such a store so that it no longer needs this.
    **obstore_kwargs
        Options too (the form taken before ``storage_options``); merged into it.

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
        virtual_shard_bytes: int | Literal["auto"] | None = "auto",
        merged_chunk_bytes: int | Literal["auto"] | None = None,
        manifest_cache_bytes: int = DEFAULT_MANIFEST_CACHE_BYTES,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        storage_options: StorageOptions | None = None,
        compat: str | None = None,
        **obstore_kwargs: Any,
    ) -> None:
        if not read_only:
            raise ValueError(f"{type(self).__name__} is read-only; read_only=False is not possible")
        _check_view_option("virtual_shard_bytes", virtual_shard_bytes)
        _check_view_option("merged_chunk_bytes", merged_chunk_bytes)
        _check_size_option("manifest_cache_bytes", manifest_cache_bytes, minimum=0)
        _check_size_option("max_chunk_bytes", max_chunk_bytes, minimum=1)
        check_compat(compat)
        super().__init__(read_only=True)
        # Relative local paths are made absolute now, against this process's working
        # directory: a pickled store then reopens the same store in a worker whose working
        # directory differs, instead of silently reading another one.
        if isinstance(root, ManifestGroup):
            base_url = base_url or local_path_to_url(os.getcwd()) + "/"
        else:
            root = _absolute_local_path(root)
        allowed_prefixes = tuple(_absolute_local_prefix(p) for p in allowed_prefixes or ())
        storage_options = merge_storage_options(storage_options, obstore_kwargs)
        self._args: dict[str, Any] = {
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
            "merged_chunk_bytes": merged_chunk_bytes,
            "manifest_cache_bytes": manifest_cache_bytes,
            "max_chunk_bytes": max_chunk_bytes,
            "storage_options": storage_options,
            "compat": compat,
        }
        self._shard_bytes = virtual_shard_bytes
        self._max_gap = max_gap_bytes
        self._max_request = max_request_bytes
        self._max_chunk = max_chunk_bytes
        self._compat = compat
        self._registry = registry.copy() if registry is not None else SourceRegistry()
        self._verifier = SourceVerifier(verify)
        self._manifests = ManifestCache(manifest_cache_bytes)
        self._sources = CheckedSources(self._registry, self._verifier)
        self._readahead = Readahead(
            RangeBatcher(max_gap_bytes=max_gap_bytes, max_request_bytes=max_request_bytes),
            readahead_bytes=readahead_bytes,
            max_gap_bytes=max_gap_bytes,
            prefetch_blocks=prefetch_blocks,
            cache_bytes=cache_bytes,
        )
        self._router = KeyRouter(
            self._load_node, self._sources, virtual_shard_bytes, merged_chunk_bytes
        )
        # node path -> key of its document's immutable copy, from the store's snapshot
        self._snapshot: dict[str, str] | None = None
        if isinstance(root, ManifestGroup):
            self._location = None
            assert base_url is not None
            base = base_url
            self._url = base
            self._objects = RootObjects(None, memory_objects(root), base)
            # The caller's own prefixes go first: a source they cover is read with the store
            # they configured (credentials, retries), not one built here for its directory,
            # which as the longer prefix would otherwise win.
            for prefix in allowed_prefixes or ():
                self._registry.register(
                    prefix, storage_options=options_for(prefix, storage_options)
                )
            for url in group_source_urls(root, base):
                if url not in self._registry:
                    directory = url.rsplit("/", 1)[0] + "/"
                    options = options_for(url, storage_options)
                    self._registry.register(directory, storage_options=options)
            for path, node in root.walk():
                if isinstance(node, ManifestArray):
                    served = self._objects.read_sync(f"{path}/{ZARR_JSON}", None)
                    assert served is not None
                    self._router.adopt(
                        LoadedNode(
                            path,
                            served,
                            node.metadata,
                            base,
                            reader=self._objects.read_sync,
                            manifest=node.manifest,
                            fingerprints=fingerprint_urls(
                                node.fingerprints, base, None, self._verifier
                            ),
                        )
                    )
        else:
            self._location = open_location(root, storage_options=storage_options)
            self._url = self._location.url
            self._objects = RootObjects(self._location, None, self._url)
            self._registry.register(self._url, self._location.store)
            root_options = (
                options_for(self._url, storage_options)
                if isinstance(root, str | os.PathLike)
                else options_of_store(root)
            )
            for prefix in allowed_prefixes or ():
                if not has_prefix_options(prefix, storage_options) and same_bucket(
                    prefix, self._url
                ):
                    options = root_options  # the root's bucket or host: the root's options
                else:
                    options = options_for(prefix, storage_options)
                self._registry.register(prefix, storage_options=options)
        if not obstore_works():
            # a forked child whose obstore runtime is dead: no obstore async or network call
            self._objects.no_runtime = self._sources.no_runtime = True
        if self._location is not None:
            # the version this store shows throughout, whatever writers do meanwhile (read
            # through the root objects, which read local files without obstore after a fork)
            raw = self._objects.read_sync(SNAPSHOT_KEY, None)
            if raw is not None:
                where = self._url + SNAPSHOT_KEY
                self._snapshot = parse_snapshot(bytes(raw), location=where).nodes
                self._router.snapshot = True
        # last: in a forked child, readers use the store once this is set (see
        # _rebuild_after_fork)
        self._forks = forks()

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> Self:
        """A new store, opened (zarr's ``Store.open``)."""
        store = cls(*args, **kwargs)
        await store._open()
        return store

    def with_read_only(self, read_only: bool = False) -> ManifestStore:
        """A new store over the same root; ``read_only=False`` is refused (ValueError)."""
        if not read_only:
            raise ValueError(f"{type(self).__name__} is read-only; it cannot be opened for writing")
        return type(self)(**self._args)

    async def clear(self) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    def __eq__(self, value: object) -> bool:
        if (
            not isinstance(value, ManifestStore)
            or self._shard_bytes != value._shard_bytes
            or self._args["merged_chunk_bytes"] != value._args["merged_chunk_bytes"]
            or self._compat != value._compat
        ):
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
        # the snapshot travels along: a copy (a dask worker's) shows the same version; so
        # do the views "auto" chose (a worker's zarr config may differ from this one's)
        return {
            "args": self._args,
            "is_open": self._is_open,
            "snapshot": self._snapshot,
            "views": {**self._router.inherited, **self._router.chosen},
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["args"])  # type: ignore[misc]
        self._is_open = state["is_open"]
        if state.get("snapshot") is not None:
            self._snapshot = state["snapshot"]
        self._router.inherited = dict(state.get("views") or {})

    @property
    def registry(self) -> SourceRegistry:
        """The sources this store may read (its root included)."""
        return self._registry

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
        self._rebuild_after_fork()
        check_byte_range(byte_range)
        prototype = prototype or default_buffer_prototype()
        target = self._router.route(key)
        if isinstance(target, Chunk):
            data: Any = await read_chunk_async(target, byte_range, self._readahead, self._max_chunk)
        elif isinstance(target, Shard):
            data = await read_shard_async(
                target,
                byte_range,
                max_gap_bytes=self._max_gap,
                max_request_bytes=self._max_request,
                max_bytes=self._max_chunk,
            )
        elif isinstance(target, MergedChunk):
            data = await read_merged_async(
                target,
                byte_range,
                max_gap_bytes=self._max_gap,
                max_request_bytes=self._max_request,
            )
        elif isinstance(target, bytes):
            data = slice_bytes(target, byte_range, key)
        elif target is HIDDEN:
            data = None  # manifest.json and stray files of virtual arrays are not zarr's
        else:
            data = await self._objects.read_async(key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        """Many (key, byte range) reads; chunk reads in the same file are coalesced."""
        self._rebuild_after_fork()
        requests = list(key_ranges)
        results: list[Buffer | None] = [None] * len(requests)
        by_source: dict[Source, list[tuple[int, int, int, str]]] = {}
        others: list[tuple[int, str, ByteRequest | None]] = []
        for i, (key, byte_range) in enumerate(requests):
            check_byte_range(byte_range)
            target = self._route(key)
            if isinstance(target, Chunk):
                if target.missing:
                    continue
                if target.node.checksums and target.index in target.node.checksums:
                    others.append((i, key, byte_range))  # read whole and checked, in `get`
                    continue
                start, end = target.byte_range(byte_range)
                source = await target.source_async()
                check_chunk_size(start, end, self._max_chunk, key, url=source.url)
                by_source.setdefault(source, []).append((i, start, end, key))
            elif target is not HIDDEN:
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
        """Whether ``key`` exists (chunks: per the manifest, without I/O)."""
        self._rebuild_after_fork()
        target = self._route(key)
        if isinstance(target, Chunk | Shard | MergedChunk):
            return not target.missing
        if isinstance(target, bytes):
            return True
        if target is HIDDEN:
            return False
        return await self._objects.size_async(key) is not None

    async def set(self, key: str, value: Buffer) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    async def delete(self, key: str) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    async def list(self) -> AsyncIterator[str]:
        """Every key zarr is shown."""
        self._rebuild_after_fork()
        for key in keys_under(self._router, self._objects, ""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Every key zarr is shown that starts with ``prefix``."""
        self._rebuild_after_fork()
        for key in keys_under(self._router, self._objects, prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """The names directly under the directory ``prefix``."""
        self._rebuild_after_fork()
        # Only this directory is listed, and only an array whose directory is ``prefix`` or
        # holds it has its manifest parsed: zarr lists the members of groups this way.
        for name in dir_names(self._router, self._objects, prefix.rstrip("/")):
            yield name

    async def delete_dir(self, prefix: str) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    def close(self) -> None:
        """Close the store and drop its readahead cache."""
        super().close()
        self._readahead.blocks.clear()

    async def getsize(self, key: str) -> int:
        """Size of a value: chunk sizes come from the manifest, without I/O."""
        self._rebuild_after_fork()
        target = self._route(key)
        if isinstance(target, Chunk | Shard | MergedChunk):
            if target.missing:
                raise FileNotFoundError(key)
            return target.length
        if isinstance(target, bytes):
            return len(target)
        size = None if target is HIDDEN else await self._objects.size_async(key)
        if size is None:
            raise FileNotFoundError(key)
        return size

    async def getsize_prefix(self, prefix: str) -> int:
        """Total size of what `list_prefix` lists under ``prefix`` (taken as a directory).

        Chunks of virtual arrays count with their manifest lengths, ordinary objects with
        the sizes their listing reports: no object is read.
        """
        self._rebuild_after_fork()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        total = 0
        shown = listed_objects(self._router, self._objects, self._snapshot)
        for key, size in shown.items():
            if key.startswith(prefix):
                total += size
        for node in virtual_arrays(self._router, shown):
            directory = node.path_key("")
            if directory.startswith(prefix):
                total += node.stored_bytes()
            elif prefix.startswith(directory):
                total += sum(n for k, n in node.chunk_items() if k.startswith(prefix))
        return total

    # ---- zarr's synchronous surface (SupportsGetSync, SupportsSetSync, ...) ---------------

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """`get` without an event loop (zarr's ``SupportsGetSync``)."""
        self._rebuild_after_fork()
        check_byte_range(byte_range)
        prototype = prototype or default_buffer_prototype()
        target = self._router.route(key)
        if isinstance(target, Chunk):
            data: Any = read_chunk_sync(target, byte_range, self._max_chunk)
        elif isinstance(target, Shard):
            data = read_shard_sync(
                target,
                byte_range,
                max_gap_bytes=self._max_gap,
                max_request_bytes=self._max_request,
                max_bytes=self._max_chunk,
            )
        elif isinstance(target, MergedChunk):
            data = read_merged_sync(
                target,
                byte_range,
                max_gap_bytes=self._max_gap,
                max_request_bytes=self._max_request,
            )
        elif isinstance(target, bytes):
            data = slice_bytes(target, byte_range, key)
        elif target is HIDDEN:
            data = None
        else:
            data = self._objects.read_sync(key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    def delete_sync(self, key: str) -> None:
        """Refused: the store is read-only (ValueError)."""
        self._check_writable()

    @property
    def _supports_sync_io(self) -> bool:
        # zarr's FusedCodecPipeline runs get_sync per chunk on a few threads: right for
        # local files, slow for remote ones, where the async path batches requests.
        return all(p.startswith(("file:", "memory:")) for p in self._registry.prefixes)

    # ---- private helpers --------------------------------------------------------------------

    def _rebuild_after_fork(self) -> None:
        """In a child forked after this store was built, build it again (once).

        Its obstore stores (root and sources) would hang on their next call in the
        child: they are made anew from a pickled copy of the store's arguments (obstore
        stores pickle as their configuration), and the caches start empty.
        """
        if self._forks == forks():
            return
        with _REBUILD_LOCK:  # the child's first readers may be several threads
            if self._forks == forks():
                return
            is_open = self._is_open
            try:
                args = pickle.loads(pickle.dumps(self._args))
            except Exception:
                # an argument that does not pickle (a credential callback) is used as it
                # is: URL roots and prefixes still get new stores
                args = dict(self._args)
            snapshot = self._snapshot
            views = {**self._router.inherited, **self._router.chosen}
            self.__init__(**args)  # type: ignore[misc]
            self._is_open = is_open
            self._router.inherited = views  # the arrays zarr opened keep their view
            if snapshot is not None:
                self._snapshot = snapshot  # the version the parent showed, not a newer one

    def _route(self, key: str) -> Target:
        """What ``key`` names: a chunk, a shard, served bytes, hidden, or an ordinary object
        (None: read it from the root storage)."""
        return self._router.route(key)

    def _node(self, path: str) -> LoadedNode | None:
        """The node at ``path`` (loaded on first use; None: there is none)."""
        return self._router.node(path)

    def sparse_read(self, array: Any, key: Any) -> Any:
        """``array[key]`` for a zarr array of this store; for a sparse array (one shown as
        virtual shards because few of its chunks are stored), only the stored chunks in
        the selection are read through zarr, the rest filled with the fill value without
        zarr's per-chunk work (see `_sparse_reads`).  Otherwise, and for a selection
        other than integers and slices of step 1, zarr's ``array[key]``."""
        node = self._node(array.path)
        stored = None if node is None else node.stored_chunks
        if node is not None and stored is not None:
            chunk_shape = tuple(node.metadata.chunk_grid.chunk_shape)
            values = read_sparse(array, stored, chunk_shape, key)
            if values is not None:
                return values
        return array[key]

    def _load_node(self, path: str) -> LoadedNode | None:
        return load_node(
            path,
            self._objects.read_sync,
            self._url,
            self._fingerprint_urls,
            self._manifests,
            snapshot=self._snapshot,
            has_object=self._objects.exists,
            compat=self._compat,
            whole_size=self._whole_object_size,
        )

    def _whole_object_size(self, url: str, key: str, recorded: Any) -> int:
        # allowed (default-deny) before it is looked at, like any source
        return whole_object_size(self._registry.resolve(url, key=key), key, recorded)

    def _fingerprint_urls(self, fingerprints: Any, base: str, where: str | None) -> Any:
        return fingerprint_urls(fingerprints, base, where, self._verifier)


def _check_view_option(name: str, value: object) -> None:
    """Refuse a view option that is not "auto", an int >= 0 or None (ValueError)."""
    if value not in (None, "auto") and (
        isinstance(value, bool) or not isinstance(value, int) or value < 0
    ):
        raise ValueError(
            f"{name} must be 'auto', an int >= 0 or None (0 and None: off), got {value!r}"
        )


def _check_size_option(name: str, value: object, *, minimum: int) -> None:
    """Refuse a byte-count option that is not an int of at least ``minimum`` (ValueError)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r}")


def _absolute_local_path(root: Any) -> Any:
    """A local path made absolute (as `open_location` would take it); others unchanged."""
    if isinstance(root, os.PathLike) or (isinstance(root, str) and "://" not in root):
        return str(Path(root).expanduser().absolute())
    return root


def _absolute_local_prefix(prefix: Any) -> Any:
    """An allowed prefix that `SourceRegistry` takes as a local path, made absolute (a
    trailing ``/`` kept); URLs and anything else unchanged."""
    if (
        isinstance(prefix, str)
        and prefix
        and "://" not in prefix
        and (prefix.startswith((".", "~")) or os.path.exists(prefix))
    ):
        absolute = os.path.abspath(os.path.expanduser(prefix))
        return absolute + "/" if prefix.endswith("/") and absolute != "/" else absolute
    return prefix
