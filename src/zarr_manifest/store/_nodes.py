"""One node of a manifest store as a `ManifestStore` loaded it: its served ``zarr.json``
and, for a virtual array, its manifest -- parsed lazily, whole or (split manifests) region
by region -- with the lookups a chunk read makes in it."""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from zarr.codecs import ShardingCodec

from zarr_manifest.array import RegularChunkGridMetadata, chunk_grid_shape
from zarr_manifest.errors import ManifestFormatError, ZarrManifestError
from zarr_manifest.fingerprint import Fingerprint
from zarr_manifest.format.entry_forms import (
    Checksum,
    explicit_entries,
    has_optional_forms,
    load_json_object,
)
from zarr_manifest.format.paths import encode_path_segments
from zarr_manifest.format.publish import USUAL_PLACE, document_key, document_to_read
from zarr_manifest.format.split import (
    INDEX_FILE,
    RegionGrid,
    decode_index,
    decode_region,
    region_columns,
)
from zarr_manifest.format.transformer import parse_array_document, parse_node_document
from zarr_manifest.manifest import MAX_GRID_CELLS, MAX_GRID_DIMS, ChunkManifest
from zarr_manifest.store._manifest_cache import ManifestCache
from zarr_manifest.store._merged_chunks import (
    MergedLayout,
    merged_document,
    merged_layout,
    per_merged,
)
from zarr_manifest.store._readahead import plan_blocks
from zarr_manifest.store._references import reference_urls, resolve_paths
from zarr_manifest.store._virtual_shards import (
    SPARSE_MAX_FRACTION,
    SPARSE_MIN_CHUNKS,
    ShardLayout,
    chunks_per_shard,
    per_shard,
    sharded_document,
    shards_holding,
    sparse_chunks_per_shard,
)
from zarr_manifest.store.sources import Source, SourceRegistry

if TYPE_CHECKING:
    from zarr_manifest.store._references import Chunk

__all__ = ["ZARR_JSON", "LoadedNode", "Region", "WholeSize", "load_node"]

ZARR_JSON = "zarr.json"
#: sizes the source of a whole-object entry: (URL, chunk key, recorded fingerprint) -> bytes
WholeSize = Callable[[str, str, "Fingerprint | None"], int]


def load_node(
    path: str,
    read: Callable[[str, None], bytes | None],
    root_url: str,
    fingerprints_by_url: Callable[[dict[str, Fingerprint], str, str], dict[str, Fingerprint]],
    cache: ManifestCache,
    snapshot: Mapping[str, str] | None = None,
    has_object: Callable[[str], bool] | None = None,
    compat: str | None = None,
    whole_size: WholeSize | None = None,
) -> LoadedNode | None:
    """The node at ``path`` of the store at ``root_url`` (None: it has no zarr.json).

    ``read`` reads one of the store's objects; ``fingerprints_by_url`` maps an array's
    recorded fingerprints to its sources' canonical URLs (given the base URL and where);
    ``cache`` bounds what is kept of the array's parsed manifest.  ``snapshot`` (node path
    -> key of its document's immutable copy, spec 16) is the version the store shows,
    whatever writers did since it was read; ``has_object`` tells whether an object exists.
    ``compat`` repairs the documents of another writer (`parse_node_document`);
    ``whole_size`` sizes the source of a whole-object entry (spec 5.5): (URL, chunk key,
    recorded fingerprint) -> bytes.
    """
    key = f"{path}/{ZARR_JSON}" if path else ZARR_JSON
    raw = read(key, None)
    if snapshot is not None:
        assert has_object is not None
        chosen = document_to_read(snapshot, path, None if raw is None else bytes(raw), has_object)
        if chosen is None:
            return None
        if chosen != USUAL_PLACE and (raw is None or chosen != document_key(bytes(raw))):
            # the snapshot's copy differs from the zarr.json read (else it is that one)
            key = chosen
            raw = read(key, None)
            if raw is None:
                raise ManifestFormatError(f"{root_url + key} is missing", location=root_url + key)
    if raw is None:
        return None
    where = root_url + key
    doc = parse_node_document(bytes(raw), location=where, compat=compat)
    # node names may hold '#', '?' or '%': the node's URL encodes them
    base = root_url + (f"{encode_path_segments(path)}/" if path else "")
    if doc["node_type"] == "group":
        served = bytes(raw)
        if doc.get("consolidated_metadata") is not None:
            # Spec 3.3: consolidated metadata would show zarr the arrays' documents with
            # their storage transformers (and may disagree with them): serve it without.
            del doc["consolidated_metadata"]
            served = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        return LoadedNode(path, served, None, base, reader=read)
    parsed = parse_array_document(doc, location=where)
    if parsed.entries is not None and compat is None:
        # an inlined manifest's repeated key would be lost in the parse above (spec 5.1.3)
        load_json_object(bytes(raw), location=where)
    if parsed.manifest is not None and len(parsed.metadata.shape) > MAX_GRID_DIMS:
        # numpy cannot hold such a grid: refused before any chunk of the array is read
        raise ManifestFormatError(
            f"{where}: a virtual array of {len(parsed.metadata.shape)} dimensions, more than "
            f"the {MAX_GRID_DIMS} a manifest may have",
            location=where,
            field="shape",
        )
    return LoadedNode(
        path,
        parsed.to_bytes(),
        parsed.metadata,
        base,
        reader=read,
        manifest_key=parsed.manifest,
        split=parsed.split,
        fingerprints=fingerprints_by_url(parsed.fingerprints, base, where),
        cache=cache,
        entries=parsed.entries,
        whole_size=whole_size,
    )


def _as_json(entries: dict[str, Any]) -> bytes:
    """Entries back as JSON text, for the manifest decoder to judge as it judges a file
    (the standard library's encoder: a parsed integer beyond 64 bits stays one)."""
    return json.dumps(entries).encode()


class LoadedNode:
    """One node of the hierarchy: its served zarr.json and, for virtual arrays, the manifest.

    A split manifest (``split`` is its region shape) is loaded region by region: a chunk
    lookup reads ``index.json`` once and then only its region's file.  Each region's path
    table is mapped into one node-wide table, so path ids (and the sources cached by them)
    mean the same in every region; ``manifest`` assembles the whole manifest from every
    region, for listings.
    """

    __slots__ = (
        "_blocks",
        "_cache",
        "_entries",
        "_held_shards",
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
        "_stored",
        "_urls",
        "_whole_size",
        "base_url",
        "checksums",
        "decoder",
        "fingerprints",
        "is_array",
        "manifest_key",
        "merged",
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
        cache: ManifestCache | None = None,
        entries: dict[str, Any] | None = None,
        whole_size: WholeSize | None = None,
    ):
        self.path = path
        # a manifest inlined in the zarr.json, and how whole-object entries are sized
        self._entries = entries
        self._whole_size = whole_size
        #: chunk index -> the checksum its entry records (spec 5.5), set when loaded
        self.checksums: dict[tuple[int, ...], Checksum] = {}
        # what the store keeps of parsed manifests: this node's whole manifest and regions
        # are entries of it, dropped when evicted (a manifest given in memory is not)
        self._cache = cache
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
        self._regions: dict[tuple[int, ...], Region | None] = {}
        self._paths: dict[str, int] = {}
        self._path_list: list[str] = []
        self._split_urls: list[str] = []
        # the chunk-key parser of an array, set by the key router that adopts the node
        self.decoder: Callable[[str], tuple[int, ...] | None] | None = None
        # virtual shards: chunks per shard along each dimension, and recent shard layouts
        self.shards: tuple[int, ...] | None = None
        self._shard_layouts: dict[tuple[int, ...], ShardLayout] = {}
        # a sparse array's shards: whether each holds a stored chunk
        self._held_shards: np.ndarray | None = None
        self._stored: np.ndarray | None = None
        # merged chunks: how the array is shown merged along its first axis
        self.merged: MergedLayout | None = None

    def path_key(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    # ---- virtual shards -------------------------------------------------------------------

    def present_as_shards(
        self, target_bytes: int, *, max_chunk_bytes: int | None = None, sparse_only: bool = False
    ) -> None:
        """Show this array as sharded (see `ManifestStore`'s ``virtual_shard_bytes``), if
        its grid is regular, it is not sharded already, a shard would hold 2+ chunks and
        (with ``max_chunk_bytes``) its chunks decode to at most that many bytes.

        A sparse array (`sparse_chunks_per_shard`) gets shards sized so that most hold no
        chunk, which the store answers as absent without per-chunk work; with
        ``sparse_only``, other arrays are left as they are.
        """
        metadata = self.metadata
        grid = metadata.chunk_grid
        if not isinstance(grid, RegularChunkGridMetadata) or not metadata.shape:
            return
        if any(isinstance(codec, ShardingCodec) for codec in metadata.codecs):
            return
        itemsize = metadata.dtype.to_native_dtype().itemsize
        chunk_bytes = int(np.prod(grid.chunk_shape, dtype=np.float64)) * itemsize
        if max_chunk_bytes is not None and chunk_bytes > max_chunk_bytes:
            return
        grid_shape = chunk_grid_shape(metadata)
        stored = self._stored_if_sparse(grid_shape)
        counts = None
        if stored is not None:
            counts = sparse_chunks_per_shard(
                stored, grid.chunk_shape, grid_shape, itemsize, target_bytes
            )
        if counts is None and not sparse_only:
            counts = chunks_per_shard(grid.chunk_shape, grid_shape, itemsize, target_bytes)
        if counts is not None:
            self.served = sharded_document(self.served, counts)
            self.shards = counts
            if stored is not None:
                self._held_shards = shards_holding(stored, grid_shape, counts)
                self._stored = stored

    def _stored_if_sparse(self, grid_shape: tuple[int, ...]) -> np.ndarray | None:
        """The grid indices of the stored chunks (one row each) of a whole (not split)
        manifest of a grid of at least `SPARSE_MIN_CHUNKS` chunks, at most
        `SPARSE_MAX_FRACTION` of them stored; None otherwise.  The manifest is parsed
        now (when zarr opens the array), not at its first chunk read; a manifest that
        fails to parse is reported then, as before."""
        if self.split is not None:
            return None  # a split manifest is loaded region by region, never whole here
        if int(np.prod(grid_shape, dtype=np.float64)) < SPARSE_MIN_CHUNKS:
            return None
        try:
            ids = self.manifest.path_ids
        except ZarrManifestError:
            return None
        present = ids >= 0
        if np.count_nonzero(present) > present.size * SPARSE_MAX_FRACTION:
            return None
        return np.argwhere(present)

    @property
    def stored_chunks(self) -> np.ndarray | None:
        """A sparse array shown as virtual shards: the grid indices of its stored chunks,
        one row each (None: any other array)."""
        return self._stored if self._held_shards is not None else None

    def shard_holds_chunks(self, index: tuple[int, ...]) -> bool:
        """Whether shard ``index`` holds a stored chunk (a sparse array's absent shards
        are answered from a grid computed once, without assembling their layout)."""
        held = self._held_shards
        if held is not None:
            if not all(map(operator.lt, index, held.shape)):
                return False  # indices are decoded from digits: never negative
            return bool(held[index])
        return self.shard_layout(index).present

    def present_merged(self, target_bytes: int, *, auto: bool) -> None:
        """Show this array with chunks merged along its first axis (see `_merged_chunks`
        and `ManifestStore`'s ``merged_chunk_bytes``), if it is eligible."""
        if self.shards is not None:
            return
        layout = merged_layout(
            self.metadata, chunk_grid_shape(self.metadata), target_bytes, auto=auto
        )
        if layout is not None:
            self.served = merged_document(self.served, layout)
            self.merged = layout

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
            # the stored (narrowed) columns, sliced before widening: `offsets` and
            # `lengths` widen the whole grid, a cost per shard as large as the array
            ids[dst] = manifest.path_ids[src]
            offsets[dst] = manifest._offsets[src]
            lengths[dst] = manifest._lengths[src]
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

    def column(
        self, origin: tuple[int, ...], count: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Path ids, offsets and lengths of up to ``count`` chunks from ``origin`` along the
        first axis, 1-D (fewer at the grid's edge; views of a whole manifest's columns)."""
        if self.split is not None:
            shape = (count,) + (1,) * (len(origin) - 1)
            ids, offsets, lengths = self.block(origin, shape)
            return ids.reshape(-1), offsets.reshape(-1), lengths.reshape(-1)
        manifest = self.manifest
        grid = manifest.shape_chunk_grid
        if not all(map(operator.lt, origin, grid)):
            return _EMPTY_COLUMN
        cells: tuple[Any, ...] = (slice(origin[0], origin[0] + count), *origin[1:])
        # the stored (maybe narrowed) columns sliced first: converting a whole column
        # would copy every entry of the manifest on every read
        return (
            manifest.path_ids[cells],
            manifest._offsets[cells].astype(np.uint64, copy=False),
            manifest._lengths[cells].astype(np.uint64, copy=False),
        )

    def stored_bytes(self) -> int:
        """Bytes of every key `chunk_items` lists."""
        if self.shards is None and self.merged is None:
            return int(self.manifest.lengths.sum(dtype=np.uint64))
        return sum(n for _, n in self.chunk_items())

    def decode(self, rest: str) -> tuple[int, ...] | None:
        """The chunk index a key relative to the array names (None: not a chunk key)."""
        assert self.decoder is not None
        return self.decoder(rest)

    @property
    def manifest(self) -> ChunkManifest:
        """The whole manifest (of a split one: assembled from every region)."""
        manifest = self._manifest
        if manifest is None:
            with self._lock:
                manifest = self._manifest
                if manifest is None:
                    manifest = self._load_manifest()
                    self._manifest = manifest
                    if self._cache is not None:
                        self._cache.add((self, None), manifest.nbytes, self._drop_manifest)
        elif self._cache is not None and not self._in_memory:
            self._cache.touch((self, None))
        return manifest

    def _drop_manifest(self) -> None:
        """Forget the parsed manifest (evicted from the store's cache; no lock taken)."""
        self._manifest = None
        for key in [k for k in list(self._blocks) if k[0] is None]:
            self._blocks.pop(key, None)

    def _load_manifest(self) -> ChunkManifest:
        if self.split is not None:
            return self._assemble_split()
        if self._entries is not None:
            # inlined in the configuration: errors name the zarr.json
            return self._load_optional_forms(self._entries, self.base_url + ZARR_JSON)
        key = self.path_key(self.manifest_key or "manifest.json")
        where = self.base_url + (self.manifest_key or "manifest.json")
        raw = self._reader(key, None)
        if raw is None:
            raise ManifestFormatError(f"{where} is missing", location=where)
        data = raw if isinstance(raw, bytes) else bytes(raw)
        try:
            manifest = ChunkManifest.from_json_bytes(
                data, shape=chunk_grid_shape(self.metadata), location=where
            )
        except ManifestFormatError:
            # the explicit form's decoders refuse the optional forms: looked for only then,
            # so an explicit manifest costs no extra pass over its bytes
            if not has_optional_forms(data):
                raise
            return self._load_optional_forms(load_json_object(data, location=where), where)
        # Every reference is checked now, not when its chunk is first read: the spec wants
        # format errors (7.1) reported before any data of the array is returned.
        self._urls = reference_urls(manifest, self.base_url, in_memory=False, where=where)
        return manifest

    def _load_optional_forms(self, entries: dict[str, Any], where: str) -> ChunkManifest:
        """A manifest that may use zarr-specs#287's optional forms (spec 5.5): validated
        in explicit form first, then whole-object entries sized from their sources, and
        checksums kept by chunk index."""
        explicit, forms = explicit_entries(entries, location=where)
        shape = chunk_grid_shape(self.metadata)
        manifest = ChunkManifest.from_json_bytes(_as_json(explicit), shape=shape, location=where)
        # every reference is checked before any source is looked at (spec 7.1, 8)
        self._urls = reference_urls(manifest, self.base_url, in_memory=False, where=where)
        if forms.whole:
            if self._whole_size is None:
                raise ManifestFormatError(
                    f"{where}: whole-object entries (a 'path' without 'offset' and 'length') "
                    "need a reader that can size their sources",
                    location=where,
                    key=forms.whole[0],
                )
            sizes: dict[str, int] = {}
            urls = dict(zip(manifest.path_table, self._urls, strict=True))
            for chunk_key in forms.whole:
                path = explicit[chunk_key]["path"]
                if path not in sizes:
                    url = urls[path]
                    sizes[path] = self._whole_size(url, chunk_key, self.fingerprints.get(url))
                explicit[chunk_key]["length"] = sizes[path]
            manifest = ChunkManifest.from_json_bytes(
                _as_json(explicit), shape=shape, location=where
            )
        ndim = len(shape)
        self.checksums = {
            tuple(int(i) for i in k.split("."))[:ndim]: c for k, c in forms.checksums.items()
        }
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
        region = self.region(key)
        if region is None:
            return _ABSENT
        local = tuple(map(operator.mod, index, shape))
        return region.ids.item(local), region.offsets.item(local), region.lengths.item(local)

    def region(self, key: tuple[int, ...]) -> Region | None:
        """One region of a split manifest, loaded on first use (None: no chunk stored)."""
        try:
            region = self._regions[key]
        except KeyError:
            pass
        else:
            if region is not None and self._cache is not None:
                self._cache.touch((self, key))
            return region
        with self._lock:
            if key in self._regions:
                return self._regions[key]
            region = self._load_region(key) if key in self._present_regions() else None
            self._regions[key] = region
            if region is not None and self._cache is not None:
                self._cache.add((self, key), region.nbytes, lambda: self._drop_region(key))
            return region

    def _drop_region(self, key: tuple[int, ...]) -> None:
        """Forget a parsed region (evicted from the store's cache; no lock taken)."""
        self._regions.pop(key, None)
        for plan in [k for k in list(self._blocks) if k[0] == key]:
            self._blocks.pop(plan, None)

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

    def _load_region(self, key: tuple[int, ...]) -> Region:
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
        urls = resolve_paths(new, self.base_url, where)
        for path, url in zip(new, urls, strict=True):
            self._paths[path] = len(self._path_list)
            self._path_list.append(path)
            self._split_urls.append(url)
        remap = np.array([self._paths[p] for p in decoded.path_table], dtype=np.int64)
        ids, offsets, lengths = region_columns(decoded, grid, key, remap)
        return Region(ids, offsets, lengths)

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
            self._urls = reference_urls(
                manifest, self.base_url, in_memory=self._in_memory, where=None
            )
        return self._urls

    def chunk_items(self) -> Iterator[tuple[str, int]]:
        """(store key, length) of every chunk present in the manifest, in C order (with
        virtual shards: of every shard holding a chunk; merged: of every merged chunk)."""
        manifest = self.manifest
        present = manifest.path_ids >= 0
        sizes = manifest.lengths
        if self.shards is not None:
            present, sizes = per_shard(present, sizes, self.shards)
        elif self.merged is not None:
            present = per_merged(present, self.merged.count)
            sizes = np.full(present.shape, self.merged.merged_bytes, dtype=np.uint64)
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
        self, chunk: Chunk, limit: int, max_gap: int, count: int
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
                    plan = plan_blocks(ids, offsets, lengths, pid, limit, max_gap)
                    self._blocks[(region_key, pid)] = plan
        starts, ends = plan
        i = int(np.searchsorted(starts, chunk.offset, side="right")) - 1
        if i < 0 or chunk.offset + chunk.length > ends[i]:
            return []
        stop = min(i + count, len(starts))
        return [(pid, int(starts[k]), int(ends[k])) for k in range(i, stop)]


class Region:
    """One loaded region of a split manifest: region-shaped columns, node-wide path ids."""

    __slots__ = ("ids", "lengths", "offsets")

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray):
        self.ids = ids
        self.offsets = offsets
        self.lengths = lengths

    @property
    def nbytes(self) -> int:
        """The bytes its columns take."""
        return int(self.ids.nbytes + self.offsets.nbytes + self.lengths.nbytes)


_ABSENT = (-1, 0, 0)
_EMPTY_COLUMN = (np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64))
#: shard layouts a node keeps (zarr reads a shard's index, then its chunks)
_SHARD_LAYOUTS_KEPT = 64
#: and at most this many bytes of their indexes (the newest is kept whatever its size)
_SHARD_LAYOUTS_BYTES = 64 * 1024 * 1024
