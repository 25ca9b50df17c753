"""Writing a `ManifestGroup` as a manifest store, and reading one back whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import orjson
from obstore.store import ObjectStore

from zarr_manifest.array import InlineArray, ManifestArray, chunk_grid_shape
from zarr_manifest.errors import ManifestFormatError
from zarr_manifest.format.location import StoreLocation, open_location
from zarr_manifest.format.transformer import (
    MANIFEST_FILE,
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
    **obstore_kwargs: Any,
) -> StoreLocation:
    """Write ``group`` as a manifest store at ``dest`` (see `ManifestGroup.to_store`).

    Absolute local paths in manifests are written as ``file://`` URLs.

    Raises
    ------
    FileExistsError
        ``dest`` already holds a zarr.json and ``overwrite`` is False.
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
            files[f"{path}/{ZARR_JSON}"] = array_document(node.metadata, virtual=True)
            manifest = node.manifest.rename_paths(_local_path_to_url)
            files[f"{path}/{MANIFEST_FILE}"] = manifest.to_json_bytes()
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
    FileNotFoundError
        There is no zarr.json at the root.
    """
    location = open_location(src, **obstore_kwargs)
    keys = {m["path"] for m in obstore.list(location.store).collect()}
    if ZARR_JSON not in keys:
        raise FileNotFoundError(f"no {ZARR_JSON} at {location.url}")
    return _read_node_group(location, "", keys)


def _read(location: StoreLocation, key: str) -> bytes:
    return bytes(obstore.get(location.store, key).bytes())


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
    manifest_key = prefix + parsed.manifest
    manifest_where = location.url + manifest_key
    try:
        data = _read(location, manifest_key)
    except FileNotFoundError as e:
        raise ManifestFormatError(f"{manifest_where} is missing", location=manifest_where) from e
    manifest = ChunkManifest.from_json_bytes(
        data, shape=chunk_grid_shape(parsed.metadata), location=manifest_where
    )
    return ManifestArray(parsed.metadata, manifest)


def _local_path_to_url(path: str) -> str:
    # On disk, absolute local paths are file:// URLs (spec: paths are URLs or relative refs).
    return Path(path).as_uri() if path.startswith("/") else path
