"""Writing a `ManifestGroup` as a manifest store, and reading one back whole."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import orjson
from obstore.store import ObjectStore

from zarr_manifest.array import InlineArray, ManifestArray, chunk_grid_shape
from zarr_manifest.errors import ManifestFormatError, MetadataError
from zarr_manifest.format.location import StoreLocation, open_location
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
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["encode_inline_chunks", "group_document", "read_group", "write_group"]

ZARR_JSON = "zarr.json"


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
    group: ManifestGroup,
    dest: str | os.PathLike[str] | ObjectStore,
    *,
    overwrite: bool = False,
    split_above: int | None = DEFAULT_SPLIT_ABOVE,
    region_shape: Sequence[int] | None = None,
    **obstore_kwargs: Any,
) -> StoreLocation:
    """Write ``group`` as a manifest store at ``dest`` (see `ManifestGroup.to_store`).

    Absolute local paths in manifests are written as ``file://`` URLs.

    Parameters
    ----------
    split_above
        Arrays with more references than this get a split manifest (one file per region of
        the chunk grid, read lazily region by region); None never splits.
    region_shape
        Chunks per region along each dimension, for every split array (which must then all
        have as many dimensions); default: chosen per array, about
        `~zarr_manifest.format.split.REGION_CELLS` grid cells per region.

    Raises
    ------
    FileExistsError
        ``dest`` already holds a zarr.json and ``overwrite`` is False.
    ValueError
        ``region_shape`` does not fit an array that is split.
    """
    location = open_location(dest, mkdir=True, **obstore_kwargs)
    store = location.store
    existing = [m["path"] for m in obstore.list(store).collect()]
    if existing:
        if not overwrite:
            raise FileExistsError(
                f"{location.url} is not empty ({len(existing)} objects); pass overwrite=True"
            )
        obstore.delete(store, existing)
    files: dict[str, bytes] = {ZARR_JSON: group_document(group.attributes)}
    for path, node in group.walk():
        if isinstance(node, ManifestGroup):
            files[f"{path}/{ZARR_JSON}"] = group_document(node.attributes)
        elif isinstance(node, ManifestArray):
            manifest = node.manifest.rename_paths(_local_path_to_url)
            # the same files, spelled as URLs: their fingerprints are kept whole
            fingerprints = {_local_path_to_url(p): fp for p, fp in node.fingerprints.items()}
            if split_above is None or len(manifest) <= split_above:
                files[f"{path}/{ZARR_JSON}"] = array_document(
                    node.metadata, virtual=True, fingerprints=fingerprints
                )
                files[f"{path}/{MANIFEST_FILE}"] = manifest.to_json_bytes()
                continue
            grid = manifest.shape_chunk_grid
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
            files[f"{path}/{ZARR_JSON}"] = array_document(
                node.metadata, virtual=True, split=regions, fingerprints=fingerprints
            )
            # Stored as they are made: all the region files of 10^8 references would take
            # gigabytes at once.  The array's zarr.json is stored after them, with the rest.
            for name, data in iter_split_manifest(manifest, regions):
                obstore.put(store, f"{path}/{MANIFEST_DIR}/{name}", data)
        else:
            files[f"{path}/{ZARR_JSON}"] = array_document(node.metadata, virtual=False)
            for key, value in encode_inline_chunks(node).items():
                files[f"{path}/{key}"] = value
    for key, value in files.items():
        obstore.put(store, key, value)
    return location


def read_group(src: str | os.PathLike[str] | ObjectStore, **obstore_kwargs: Any) -> ManifestGroup:
    """Read a whole manifest store into a `ManifestGroup` (every manifest is parsed).

    Inline arrays are decoded through zarr.

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
    keys = {m["path"] for m in obstore.list(location.store).collect()}
    if ZARR_JSON not in keys:
        raise FileNotFoundError(f"no {ZARR_JSON} at {location.url}")
    return _read_node_group(location, "", keys)


def _read(location: StoreLocation, key: str) -> bytes:
    # the same rule as ManifestStore: nothing under a local root may lead out of it
    return location.read(key)


def _read_node_group(location: StoreLocation, prefix: str, keys: set[str]) -> ManifestGroup:
    where = location.url + prefix + ZARR_JSON
    doc = parse_node_document(_read(location, prefix + ZARR_JSON), location=where)
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
    groups: dict[str, ManifestGroup] = {}
    for name in children:
        child = f"{prefix}{name}/"
        if child + ZARR_JSON not in keys:
            continue  # an intermediate directory without a node of its own
        child_where = location.url + child + ZARR_JSON
        child_doc = parse_node_document(_read(location, child + ZARR_JSON), location=child_where)
        if child_doc["node_type"] == "group":
            groups[name] = _read_node_group(location, child, keys)
        else:
            arrays[name] = _read_array(location, child, child_doc, child_where)
    return ManifestGroup(arrays=arrays, groups=groups, attributes=attributes)


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
    manifest_key = prefix + parsed.manifest
    manifest_where = location.url + manifest_key
    try:
        data = _read(location, manifest_key)
    except FileNotFoundError as e:
        raise ManifestFormatError(f"{manifest_where} is missing", location=manifest_where) from e
    manifest = ChunkManifest.from_json_bytes(
        data, shape=chunk_grid_shape(parsed.metadata), location=manifest_where
    )
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
