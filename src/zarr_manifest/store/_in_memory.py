"""A `ManifestGroup` held in memory, served as a manifest store: its objects (metadata
documents and inline arrays' chunks) encoded as on disk, and the sources it references."""

from __future__ import annotations

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.format.hierarchy import encode_inline_chunks, group_document
from zarr_manifest.format.transformer import array_document
from zarr_manifest.group import ManifestGroup
from zarr_manifest.store._nodes import ZARR_JSON
from zarr_manifest.store._references import reference_urls

__all__ = ["group_source_urls", "memory_objects"]


def memory_objects(group: ManifestGroup) -> dict[str, bytes]:
    """The objects of an in-memory group's store: metadata and inline arrays' chunks."""
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


def group_source_urls(group: ManifestGroup, base: str) -> set[str]:
    """The URL of every source an in-memory group references."""
    urls: set[str] = set()
    for _, node in group.walk():
        if isinstance(node, ManifestArray):
            urls.update(reference_urls(node.manifest, base, in_memory=True, where=None))
    return urls
