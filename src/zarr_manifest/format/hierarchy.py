"""Writing a hierarchy as a manifest store, and reading one back whole.

This module is below the group model (``group.py`` calls it for ``to_store`` and
``from_store``), so it never imports it: it writes anything shaped like a `ManifestGroup`
(``walk()`` and ``attributes``; a node that is no array is a group) and reads stores into
`StoredGroup` trees, which ``ManifestGroup.from_store`` turns into groups.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import obstore
import orjson
from obstore.store import ObjectStore

from zarr_manifest.array import InlineArray, ManifestArray, chunk_grid_shape
from zarr_manifest.errors import ConcurrentWriteError, ManifestFormatError, MetadataError
from zarr_manifest.format.entry_forms import (
    explicit_entries,
    has_optional_forms,
    load_json_object,
)
from zarr_manifest.format.location import StoreLocation, open_location
from zarr_manifest.format.publish import (
    INLINE_MEMBER,
    LOCK_KEY,
    SNAPSHOT_KEY,
    USUAL_PLACE,
    ExistingStore,
    Snapshot,
    check_not_shadowed,
    chunk_key_pattern,
    commit_snapshot,
    document_key,
    document_to_read,
    encode_snapshot,
    fresh_manifest_name,
    inline_presentation,
    put_new,
    read_snapshot,
    scan_store,
    writer_lock,
)
from zarr_manifest.format.split import (
    DEFAULT_SPLIT_ABOVE,
    INDEX_FILE,
    MANIFEST_DIR,
    RegionGrid,
    assemble_manifest,
    auto_region_shape,
    decode_index,
    decode_region,
    iter_split_manifest,
)
from zarr_manifest.format.transformer import (
    MANIFEST_FILE,
    ArrayDocument,
    array_document,
    parse_array_document,
    parse_node_document,
)
from zarr_manifest.manifest import ChunkManifest

__all__ = [
    "GroupLike",
    "StoredGroup",
    "encode_inline_chunks",
    "group_document",
    "read_hierarchy",
    "write_group",
]

ZARR_JSON = "zarr.json"

Node = ManifestArray | InlineArray


@runtime_checkable
class GroupLike(Protocol):
    """What writing needs of a group (a `ManifestGroup`): its attributes and descendants."""

    @property
    def attributes(self) -> Mapping[str, Any]: ...

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Any]]: ...


@dataclass
class StoredGroup:
    """A group as read from a store: its arrays, child groups and attributes."""

    arrays: dict[str, Node] = field(default_factory=dict)
    groups: dict[str, StoredGroup] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


def group_document(attributes: dict[str, Any]) -> bytes:
    """A group's zarr.json."""
    doc = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def encode_inline_chunks(array: InlineArray) -> dict[str, bytes]:
    """The encoded chunk objects of an inline array, keyed relative to the array directory.

    Encoding goes through zarr itself, so every codec zarr supports works.
    """
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    memory = zarr.storage.MemoryStore()
    meta = array.metadata.to_buffer_dict(default_buffer_prototype())
    memory._store_dict.update(meta)
    target = zarr.open_array(memory, mode="r+")
    if array.data.size:
        target[...] = array.data
    return {key: value.to_bytes() for key, value in memory._store_dict.items() if key != ZARR_JSON}


def write_group(
    group: GroupLike,
    dest: str | os.PathLike[str] | ObjectStore,
    *,
    overwrite: bool = False,
    split_above: int | None = DEFAULT_SPLIT_ABOVE,
    region_shape: Sequence[int] | None = None,
    if_snapshot: Snapshot | Literal["any"] | None = "any",
    compat: str | None = None,
    **obstore_kwargs: Any,
) -> StoreLocation:
    """Write ``group`` as a manifest store at ``dest`` (see `ManifestGroup.to_store`).

    Absolute local paths in manifests are written as ``file://`` URLs.  ``dest`` may hold
    other files (the sources, say): they are never changed.  Writing follows
    `zarr_manifest.format.publish`: under the store's writer lock, only the old store's own
    objects are replaced, manifests under new names, and one snapshot commits the write.

    Parameters
    ----------
    split_above
        Arrays with more references than this get a split manifest (one file per region of
        the chunk grid, read lazily region by region); None never splits.
    region_shape
        Chunks per region along each dimension, for every split array (which must then all
        have as many dimensions); default: chosen per array, about
        `~zarr_manifest.format.split.REGION_CELLS` grid cells per region.
    if_snapshot
        Publish only if the store's snapshot is still this one (None: the store has none),
        as read before ``group`` was made from the store; ``"any"``: whatever it is.
    compat
        How the store being replaced was written (``"virtualizarr-1"``: by VirtualiZarr
        1.x), so that what it owns can be told (`zarr-manifest upgrade`).

    Raises
    ------
    FileExistsError
        ``dest`` already holds a manifest store (a root zarr.json) and ``overwrite`` is False.
    StoreConflictError
        The store would overwrite, or take into its hierarchy, an object it does not own.
    ConcurrentWriteError
        Another writer is writing the store, or (``if_snapshot``) published since.
    ValueError
        ``region_shape`` does not fit an array that is split.
    """
    location = open_location(dest, mkdir=True, **obstore_kwargs)
    if not overwrite and _has_root(location):
        raise FileExistsError(f"{location.url} holds a manifest store; pass overwrite=True")
    plan = _plan(group, split_above, region_shape)
    with writer_lock(location):
        keys = {m["path"] for m in obstore.list(location.store).collect()} - {LOCK_KEY}
        old = scan_store(location, keys, compat=compat)
        if old is not None and not overwrite:
            raise FileExistsError(f"{location.url} holds a manifest store; pass overwrite=True")
        if if_snapshot != "any":
            current = None if old is None else old.snapshot
            expected = None if not isinstance(if_snapshot, Snapshot) else if_snapshot.nodes
            if (None if current is None else current.nodes) != expected:
                raise ConcurrentWriteError(
                    f"{location.url} was changed by another writer since it was read; "
                    "nothing was written",
                    lock=location.url + LOCK_KEY,
                )
        _publish(location, plan, keys, old or ExistingStore())
    return location


def _has_root(location: StoreLocation) -> bool:
    return location.exists(ZARR_JSON) or location.exists(SNAPSHOT_KEY)


class _Node:
    """One node of the hierarchy to write."""

    __slots__ = ("chunks", "document", "kind", "manifest", "regions", "source")

    def __init__(self, kind: str, source: Any):
        self.kind = kind  # "group", "virtual" or "inline"
        self.source = source
        self.document = b""
        self.manifest: ChunkManifest | None = None
        self.regions: tuple[int, ...] | None = None
        self.chunks: dict[str, bytes] = {}


def _plan(
    group: GroupLike, split_above: int | None, region_shape: Sequence[int] | None
) -> dict[str, _Node]:
    """Every node to write by path ("" for the root), children before their parents;
    documents of virtual arrays are made once their manifest is named (`_publish`)."""
    nodes: dict[str, _Node] = {}
    for path, node in reversed(list(group.walk())):
        if not isinstance(node, ManifestArray | InlineArray):
            plan = nodes[path] = _Node("group", node)
            plan.document = group_document(dict(node.attributes))
        elif isinstance(node, ManifestArray):
            plan = nodes[path] = _Node("virtual", node)
            plan.manifest = node.manifest.rename_paths(_local_path_to_url)
            if split_above is not None and len(plan.manifest) > split_above:
                grid = plan.manifest.shape_chunk_grid
                regions = (
                    auto_region_shape(grid)
                    if region_shape is None
                    else tuple(int(r) for r in region_shape)
                )
                if len(regions) != len(grid) or not all(r > 0 for r in regions):
                    raise ValueError(
                        f"region_shape {regions} does not fit array {path!r}: it needs "
                        f"{len(grid)} positive integers"
                    )
                plan.regions = regions
        else:
            plan = nodes[path] = _Node("inline", node)
            plan.document = array_document(node.metadata, virtual=False)
            plan.chunks = {f"{path}/{k}": v for k, v in encode_inline_chunks(node).items()}
    root = nodes[""] = _Node("group", group)
    root.document = group_document(dict(group.attributes))
    return nodes


def _publish(
    location: StoreLocation, plan: dict[str, _Node], keys: set[str], old: ExistingStore
) -> None:
    """Write the planned nodes in the order that keeps every published zarr.json readable:
    manifests, inline chunks, documents below the root, the root; then delete what the old
    store owned and the new one does not."""
    store = location.store
    names: dict[str, str] = {}
    for path, node in plan.items():
        if node.kind == "virtual":
            assert node.manifest is not None
            names[path] = fresh_manifest_name(f"{path}/", keys, node.manifest, node.regions)
    writes = {_doc_key(p) for p in plan} | {k for n in plan.values() for k in n.chunks}
    writes |= {f"{p}/{name}" for p, name in names.items() if plan[p].regions is None}
    writes |= {f"{p}/{name}/{INDEX_FILE}" for p, name in names.items() if plan[p].regions}
    check_not_shadowed(
        keys,
        old.owned,
        writes,
        [p for p, n in plan.items() if n.kind == "group"],
        {
            p: chunk_key_pattern(orjson.loads(n.document).get("chunk_key_encoding"))
            for p, n in plan.items()
            if n.kind == "inline"
        },
        location.url,
    )
    # 1. manifests, under names no published zarr.json uses (or the same content's name)
    for path, name in names.items():
        node = plan[path]
        array = node.source
        assert node.manifest is not None
        fingerprints = {_local_path_to_url(p): fp for p, fp in array.fingerprints.items()}
        node.document = array_document(
            array.metadata,
            virtual=True,
            split=node.regions,
            fingerprints=fingerprints,
            manifest=name,
        )
        if node.regions is None:
            key = f"{path}/{name}"
            if key not in keys or name == MANIFEST_FILE:
                obstore.put(store, key, node.manifest.to_json_bytes())
            continue
        if f"{path}/{name}/{INDEX_FILE}" in keys and name != MANIFEST_DIR:
            continue  # the same content, complete (index.json is written last)
        # Stored as they are made: all the region files of 10^8 references would take
        # gigabytes at once; index.json comes last.
        for file_name, data in iter_split_manifest(node.manifest, node.regions):
            obstore.put(store, f"{path}/{name}/{file_name}", data)
    # 2. inline chunks at their usual keys (chunks of the old version that the new one
    # lacks would be read as its data: they go too), and immutable copies for the snapshot
    presented: dict[str, bytes] = {}
    for path, node in plan.items():
        if node.kind != "inline":
            presented[path] = node.document
            continue
        for key, value in node.chunks.items():
            obstore.put(store, key, value)
        stale = sorted(old.chunks.get(path, set()) - set(node.chunks))
        if stale:
            obstore.delete(store, stale)
        grid = chunk_grid_shape(node.source.metadata)
        presented[path], objects = inline_presentation(path, node.document, node.chunks, grid)
        for key, value in objects.items():
            put_new(location, key, value)
    # 3. every node's immutable document, named by its zarr.json's content (so that a reader
    # can tell a zarr.json a writer published from a hand edit); 4. the snapshot: the commit
    copies: dict[str, str] = {}
    for path, document in presented.items():
        usual = plan[path].document
        # every zarr.json a writer publishes has its copy: readers tell them from hand edits
        put_new(location, document_key(usual), usual)
        if document != usual:
            put_new(location, document_key(usual, document), document)
        copies[path] = document_key(usual, None if document == usual else document)
    previous = old.snapshot
    old_paths = set(old.nodes) | (set(previous.nodes) if previous else set())
    retired = (set(previous.retired) if previous else set()) | (old_paths - set(plan))
    commit_snapshot(
        location,
        encode_snapshot(copies, retired - set(plan)),
        previous,
    )
    # 5. each node's zarr.json at its usual place, for readers without snapshots: children
    # first, the root last
    for path, node in plan.items():
        if old.documents.get(path) != node.document:
            obstore.put(store, _doc_key(path), node.document)
    # 6. what only the old hierarchy had: zarr.json of nodes gone, chunks of arrays that
    # are no longer inline.  Manifests, chunk copies and documents stay for readers that
    # opened the old snapshot, until `clean`.
    gone: list[str] = []
    for path, kind in old.nodes.items():
        new = plan.get(path)
        if new is None:
            gone.append(_doc_key(path))
            gone.extend(old.chunks.get(path, ()))
        elif kind == "inline" and new.kind != "inline":
            gone.extend(old.chunks.get(path, ()))
    if gone:
        obstore.delete(store, sorted(gone))


def _doc_key(path: str) -> str:
    return f"{path}/{ZARR_JSON}" if path else ZARR_JSON


def read_hierarchy(
    src: str | os.PathLike[str] | ObjectStore, *, compat: str | None = None, **obstore_kwargs: Any
) -> StoredGroup:
    """Read a whole manifest store (every manifest is parsed; see `ManifestGroup.from_store`).

    Inline arrays are decoded through zarr.  ``compat="virtualizarr-1"`` repairs the
    documents of a store VirtualiZarr 1.x wrote (spec section 17; such stores have no
    snapshot).

    Raises
    ------
    ManifestFormatError
        A zarr.json or manifest.json breaks the spec; the message names the file.
    SourceNotAllowedError
        A zarr.json, manifest or inline chunk of a local store is a symlink leading out of
        the store root (as `ManifestStore` refuses it).
    FileNotFoundError
        There is no zarr.json at the root.
    """
    location = open_location(src, **obstore_kwargs)
    snapshot = read_snapshot(location)
    if snapshot is not None:
        # one consistent version, whatever a writer is doing meanwhile
        return _read_snapshot(location, snapshot, compat)
    keys = {m["path"] for m in obstore.list(location.store).collect()}
    if ZARR_JSON not in keys:
        raise FileNotFoundError(f"no {ZARR_JSON} at {location.url}")
    return _read_node_group(location, "", keys, compat)


def _read_snapshot(
    location: StoreLocation, snapshot: Snapshot, compat: str | None = None
) -> StoredGroup:
    """The hierarchy a snapshot names, every node from its immutable document (or, where
    its zarr.json was changed without a snapshot, from that zarr.json: an upgrade killed
    after its commit leaves VirtualiZarr 1.x documents there, read with ``compat``)."""
    documents: dict[str, dict[str, Any]] = {}
    wheres: dict[str, str] = {}
    for path in snapshot.nodes:
        usual = _doc_key(path)
        try:
            raw: bytes | None = _read(location, usual)
        except FileNotFoundError:
            raw = None
        key = document_to_read(snapshot.nodes, path, raw, location.exists)
        if key is None:
            continue
        if key != USUAL_PLACE and (raw is None or key != document_key(raw)):
            usual = key
            try:
                raw = _read(location, key)
            except FileNotFoundError as e:
                where = location.url + key
                raise ManifestFormatError(
                    f"{where} is missing (named by {SNAPSHOT_KEY})", location=where
                ) from e
        assert raw is not None
        wheres[path] = location.url + usual
        documents[path] = parse_node_document(raw, location=wheres[path], compat=compat)
    children: dict[str, list[str]] = {}
    for path in sorted(documents):
        if path:
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            children.setdefault(parent, []).append(path)

    def build(path: str) -> StoredGroup:
        doc = documents.get(path)
        where = wheres.get(path, location.url + SNAPSHOT_KEY)
        if doc is None or doc["node_type"] != "group":
            raise ManifestFormatError(f"{where}: node {path!r} must be a group", location=where)
        arrays: dict[str, ManifestArray | InlineArray] = {}
        groups: dict[str, StoredGroup] = {}
        for child in children.get(path, ()):
            name = child.rsplit("/", 1)[-1]
            child_doc = documents[child]
            if child_doc["node_type"] == "group":
                groups[name] = build(child)
                continue
            child_where = wheres[child]
            array = _read_array(location, child + "/", child_doc, child_where)
            if _is_presented_inline(child_doc) and isinstance(array, ManifestArray):
                array = _inline_from_copies(location, child + "/", array)
            arrays[name] = array
        return StoredGroup(arrays, groups, doc.get("attributes", {}))

    return build("")


def _is_presented_inline(doc: dict[str, Any]) -> bool:
    for entry in doc.get("storage_transformers") or ():
        if isinstance(entry, dict) and isinstance(entry.get("configuration"), dict):
            return INLINE_MEMBER in entry["configuration"]
    return False


def _inline_from_copies(location: StoreLocation, prefix: str, array: ManifestArray) -> InlineArray:
    """An inline array back from the snapshot's form: its chunks decoded through zarr."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    doc = orjson.loads(array_document(array.metadata, virtual=False))
    memory = {ZARR_JSON: proto.buffer.from_bytes(orjson.dumps(doc))}
    for entry in array.manifest.values():
        path = entry["path"]
        # "chunks.<hash>/c/0": the chunk's own key follows the copies' directory
        memory[path.split("/", 1)[1]] = proto.buffer.from_bytes(_read(location, prefix + path))
    data = zarr.open_array(zarr.storage.MemoryStore(memory), mode="r")[...]
    return InlineArray(array.metadata, np.asarray(data))


def _read(location: StoreLocation, key: str) -> bytes:
    # the same rule as ManifestStore: nothing under a local root may lead out of it
    return location.read(key)


def _read_node_group(
    location: StoreLocation, prefix: str, keys: set[str], compat: str | None = None
) -> StoredGroup:
    where = location.url + prefix + ZARR_JSON
    doc = parse_node_document(_read(location, prefix + ZARR_JSON), location=where, compat=compat)
    if doc["node_type"] != "group":
        raise ManifestFormatError(f"{where}: expected a group", location=where)
    attributes = doc.get("attributes", {})
    children = sorted(
        {
            k[len(prefix) :].split("/", 1)[0]
            for k in keys
            if k.startswith(prefix) and k.endswith("/" + ZARR_JSON)
        }
    )
    arrays: dict[str, ManifestArray | InlineArray] = {}
    groups: dict[str, StoredGroup] = {}
    for name in children:
        child = f"{prefix}{name}/"
        if child + ZARR_JSON not in keys:
            continue  # an intermediate directory without a node of its own
        child_where = location.url + child + ZARR_JSON
        child_doc = parse_node_document(
            _read(location, child + ZARR_JSON), location=child_where, compat=compat
        )
        if child_doc["node_type"] == "group":
            groups[name] = _read_node_group(location, child, keys, compat)
        else:
            arrays[name] = _read_array(location, child, child_doc, child_where)
    return StoredGroup(arrays, groups, attributes)


def _read_array(
    location: StoreLocation, prefix: str, doc: dict[str, Any], where: str
) -> ManifestArray | InlineArray:
    parsed = parse_array_document(doc, location=where)
    if parsed.manifest is None:
        import zarr

        memory = {prefix + ZARR_JSON: parsed.to_bytes()}
        for m in obstore.list(location.store, prefix).collect():
            if m["path"] != prefix + ZARR_JSON:
                memory[m["path"]] = _read(location, m["path"])
        from zarr.core.buffer import default_buffer_prototype

        proto = default_buffer_prototype()
        store = zarr.storage.MemoryStore({k: proto.buffer.from_bytes(v) for k, v in memory.items()})
        data = zarr.open_array(store, path=prefix.rstrip("/"), mode="r")[...]
        return InlineArray(parsed.metadata, np.asarray(data))
    if parsed.split is not None:
        return _manifest_array(parsed, _read_split(location, prefix, parsed), where)
    if parsed.entries is not None:
        # inlined in the configuration (spec 4.4)
        manifest_where = where
        # the standard encoder: an integer beyond 64 bits reaches the decoder, which says so
        data = json.dumps(parsed.entries).encode()
    else:
        manifest_key = prefix + parsed.manifest
        manifest_where = location.url + manifest_key
        try:
            data = _read(location, manifest_key)
        except FileNotFoundError as e:
            raise ManifestFormatError(
                f"{manifest_where} is missing", location=manifest_where
            ) from e
    try:
        manifest = ChunkManifest.from_json_bytes(
            data, shape=chunk_grid_shape(parsed.metadata), location=manifest_where
        )
    except ManifestFormatError:
        if not has_optional_forms(data):
            raise
        _, forms = explicit_entries(load_json_object(data, location=manifest_where), location=where)
        if not (forms.whole or forms.checksums):
            raise
        # kept in memory without them, a rewrite would silently drop the checksums
        raise ManifestFormatError(
            f"{manifest_where}: chunk {(forms.whole or tuple(forms.checksums))[0]!r} uses "
            "an optional form of zarr-specs#287 (a whole-object entry or a checksum, spec "
            "5.5), which ManifestStore reads but a ManifestGroup cannot hold",
            location=manifest_where,
        ) from None
    return _manifest_array(parsed, manifest, where)


def _manifest_array(parsed: Any, manifest: ChunkManifest, where: str) -> ManifestArray:
    """The array of a parsed zarr.json and its manifest; a fingerprint recorded for a path
    the manifest does not reference is a format error naming the zarr.json."""
    try:
        return ManifestArray(parsed.metadata, manifest, fingerprints=parsed.fingerprints)
    except MetadataError as e:
        raise ManifestFormatError(f"{where}: {e}", location=where) from e


def _read_split(location: StoreLocation, prefix: str, parsed: ArrayDocument) -> ChunkManifest:
    """The whole manifest of a split manifest: every region file listed in its index."""
    assert parsed.manifest is not None and parsed.split is not None
    directory = prefix + parsed.manifest + "/"
    grid = RegionGrid(chunk_grid_shape(parsed.metadata), parsed.split)
    index_where = location.url + directory + INDEX_FILE
    try:
        index = _read(location, directory + INDEX_FILE)
    except FileNotFoundError as e:
        raise ManifestFormatError(f"{index_where} is missing", location=index_where) from e
    parts = []
    for region in decode_index(index, grid, location=index_where):
        name = grid.file_name(region)
        where = location.url + directory + name
        try:
            data = _read(location, directory + name)
        except FileNotFoundError as e:
            raise ManifestFormatError(
                f"{where} is missing (listed in {INDEX_FILE})", location=where
            ) from e
        parts.append(decode_region(data, grid, region, location=where))
    return assemble_manifest(grid, parts, location=location.url + directory)


def _local_path_to_url(path: str) -> str:
    # On disk, absolute local paths are file:// URLs (spec: paths are URLs or relative refs).
    return Path(path).as_uri() if path.startswith("/") else path
