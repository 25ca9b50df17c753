"""What a `ManifestStore` lists: the root storage's objects that zarr is shown, then the
chunk keys of virtual arrays (from their manifests)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from zarr_manifest.store._keys import KeyRouter, is_valid_key, is_zarr_json, node_dir
from zarr_manifest.store._nodes import ZARR_JSON, LoadedNode
from zarr_manifest.store._root_objects import RootObjects

__all__ = ["dir_names", "keys_under", "listed_objects", "virtual_arrays"]


def listed_objects(
    router: KeyRouter, objects: RootObjects, snapshot: Iterable[str] | None = None
) -> dict[str, int]:
    """The objects of the root storage that zarr is shown, with their sizes as served.

    Not shown: manifest files and other files of virtual arrays' directories (their
    chunk keys come from the manifests), and, as spec 9.5 recommends, the contents of
    directories inside a group that are not nodes (``data/`` holding the referenced
    files) -- zarr would warn about each as an unknown member.
    """
    sizes = objects.sizes()
    node_dirs = {node_dir(k) for k in sizes if is_zarr_json(k)}
    if snapshot is not None:
        # the nodes of the snapshot's version only (a writer may have added or removed some)
        node_dirs = {d for d in node_dirs | set(snapshot) if router.node(d)}
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
            # looked up through the router: an array's view is chosen on first look-up
            for n in map(router.node, list(router.nodes))
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


def dir_names(router: KeyRouter, objects: RootObjects, prefix: str) -> list[str]:
    """The names directly under directory ``prefix`` that zarr is shown, as the first
    parts of the keys `keys_under` lists (with ``inside_only``), in the same order.

    Only ``prefix`` itself is listed, and its ancestors looked up (nodes are cached), so
    walking a hierarchy costs one listing per directory, not one of the whole store.
    """
    if prefix and not is_valid_key(prefix):
        return []  # no key lies under "a//b" or "../x"
    parts = prefix.split("/") if prefix else []
    directory = ""
    for depth in range(len(parts) + 1):
        router.forget_absent(directory)  # its zarr.json may have been written since
        node = router.node(directory)
        if node is not None and node.is_array:
            return _array_dir_names(router, objects, node, prefix)
        if depth == len(parts):
            if node is None:
                break  # not a node: its contents are listed as they are
            # a group shows its objects and those subdirectories that are nodes (spec 9.5)
            files, dirs = objects.list_dir(prefix, empty_dirs=True)
            return _in_key_order(files, [d for d in dirs if _is_node(router, prefix, d)])
        child = f"{directory}/{parts[depth]}" if depth else parts[depth]
        if node is not None:
            router.forget_absent(child)
            if router.node(child) is None:
                return []  # a directory of a group that is not a node: not shown
        directory = child
    return _in_key_order(*objects.list_dir(prefix))


def _array_dir_names(
    router: KeyRouter, objects: RootObjects, node: LoadedNode, prefix: str
) -> list[str]:
    """The names under ``prefix`` inside the directory of array ``node``."""
    if node.manifest_key is None:
        return _in_key_order(*objects.list_dir(prefix))  # an inline array: as stored
    start = f"{prefix}/" if prefix else ""
    names = [ZARR_JSON] if prefix == node.path else []
    seen = set(names)
    for key in node.chunk_keys():
        if key.startswith(start):
            name = key[len(start) :].split("/", 1)[0]
            if name not in seen:
                seen.add(name)
                names.append(name)
    return names


def _is_node(router: KeyRouter, prefix: str, name: str) -> bool:
    path = f"{prefix}/{name}" if prefix else name
    router.forget_absent(path)
    return router.node(path) is not None


def _in_key_order(files: list[str], dirs: list[str]) -> list[str]:
    """Names of files and directories in the order of the keys they start (a directory
    ``d`` sorts as ``d/``)."""
    directories = set(dirs)
    return sorted([*files, *dirs], key=lambda n: n + "/" if n in directories else n)


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
