"""What a `ManifestStore` lists: the root storage's objects that zarr is shown, then the
chunk keys of virtual arrays (from their manifests)."""

from __future__ import annotations

from collections.abc import Iterator

from zarr_manifest.store._keys import KeyRouter, is_zarr_json, node_dir
from zarr_manifest.store._nodes import ZARR_JSON, LoadedNode
from zarr_manifest.store._root_objects import RootObjects

__all__ = ["keys_under", "listed_objects", "virtual_arrays"]


def listed_objects(router: KeyRouter, objects: RootObjects) -> dict[str, int]:
    """The objects of the root storage that zarr is shown, with their sizes as served.

    Not shown: manifest files and other files of virtual arrays' directories (their
    chunk keys come from the manifests), and, as spec 9.5 recommends, the contents of
    directories inside a group that are not nodes (``data/`` holding the referenced
    files) -- zarr would warn about each as an unknown member.
    """
    sizes = objects.sizes()
    node_dirs = {node_dir(k) for k in sizes if is_zarr_json(k)}
    for directory in sorted(node_dirs):
        router.forget_absent(directory)  # looked up before its zarr.json was written
        router.node(directory)
    shown: dict[str, int] = {}
    for key, size in sizes.items():
        if not _in_hierarchy(router, key, node_dirs):
            continue
        owner = router.owner(key)
        if (
            owner is not None
            and owner.manifest_key is not None
            and key != owner.path_key(ZARR_JSON)
        ):
            continue  # routing it could parse the manifest, only to hide the object
        target = router.route(key)
        if isinstance(target, bytes):
            shown[key] = len(target)
        elif target is None:
            shown[key] = size
    return shown


def virtual_arrays(router: KeyRouter, shown: dict[str, int]) -> list[LoadedNode]:
    """The virtual arrays whose zarr.json is among the ``shown`` objects."""
    return sorted(
        (
            n
            for n in list(router.nodes.values())
            if n is not None and n.manifest_key is not None and n.path_key(ZARR_JSON) in shown
        ),
        key=lambda n: n.path,
    )


def keys_under(
    router: KeyRouter, objects: RootObjects, prefix: str, *, inside_only: bool = False
) -> Iterator[str]:
    """Every key zarr is shown that starts with ``prefix``: objects first, then chunk keys.

    Manifests are parsed only for arrays that can have chunk keys under ``prefix`` (with
    ``inside_only``: only for arrays whose directory is ``prefix`` or holds it).
    """
    shown = listed_objects(router, objects)
    yield from (key for key in shown if key.startswith(prefix))
    for node in virtual_arrays(router, shown):
        directory = node.path_key("")
        if prefix.startswith(directory):
            yield from (key for key in node.chunk_keys() if key.startswith(prefix))
        elif directory.startswith(prefix) and not inside_only:
            yield from node.chunk_keys()


def _in_hierarchy(router: KeyRouter, key: str, node_dirs: set[str]) -> bool:
    """Whether ``key`` is not under a non-node directory of a group."""
    parts = key.split("/")
    for depth in range(len(parts) - 1):
        directory = "/".join(parts[:depth])
        node = router.node(directory) if directory in node_dirs else None
        if node is None:
            continue
        if node.is_array:
            return True  # an array's directory holds what its zarr.json says
        if "/".join(parts[: depth + 1]) not in node_dirs:
            return False
    return True
