"""`ManifestGroup` -> an icechunk repository: Zarr v3 metadata plus virtual chunk references.

Icechunk stores virtual references natively: each chunk key of a virtual array points at
``(location, offset, length)`` in a file that one of the repository's *virtual chunk
containers* covers (a URL prefix with the object-store configuration to read it).  This
writer puts every node's ``zarr.json`` into an icechunk session store, sets the virtual
references of each `ManifestArray` in bulk (``IcechunkStore.set_virtual_refs_arr``) and
writes the values of each `InlineArray` as ordinary (native) chunks, then optionally commits.

Icechunk can only address references under one of the repository's containers; an array
whose manifest names any other location is refused (`UnsupportedError`, naming the array and
the location) before anything is written.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.errors import UnsupportedError
from zarr_manifest.format.hierarchy import GroupLike

if TYPE_CHECKING:
    from icechunk import IcechunkStore

    from zarr_manifest.group import ManifestGroup

__all__ = ["container_prefixes", "to_icechunk"]


def container_prefixes(store: IcechunkStore) -> tuple[str, ...]:
    """The URL prefixes of the virtual chunk containers of ``store``'s repository."""
    containers = store.session.config.virtual_chunk_containers or {}
    return tuple(c.url_prefix for c in containers.values())


def _unaddressable(group: ManifestGroup, prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(array, location) pairs no container covers."""
    out = []
    for path, node in group.walk():
        if isinstance(node, ManifestArray):
            for url in node.manifest.path_table:
                if not any(url.startswith(p) for p in prefixes):
                    out.append((path, url))
    return out


def to_icechunk(
    group: ManifestGroup,
    store: IcechunkStore,
    *,
    commit_message: str | None = None,
    path: str = "",
) -> str | None:
    """Write ``group`` into an icechunk session store, virtual arrays as virtual references.

    Parameters
    ----------
    group
        The hierarchy to write.
    store
        The ``session.store`` of a writable icechunk session (icechunk 2.x).  Its repository
        must have a virtual chunk container for every location the manifests reference, e.g.
        ``VirtualChunkContainer("file:///data/", local_filesystem_store("/data/"))`` or
        ``VirtualChunkContainer("s3://bucket/", s3_store(...))``.
    commit_message
        When given, the session is committed with this message after writing.
    path
        The group inside the repository to write to ("" = the root); it is created with the
        group's attributes (existing nodes at the same paths are replaced).

    Returns
    -------
    str or None
        The new snapshot id when committed, else None.

    Raises
    ------
    UnsupportedError
        A manifest references a location no virtual chunk container covers (the message
        names the array, the location and the containers there are).
    ValueError
        The store is read-only.
    """
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    if not isinstance(group, GroupLike):
        raise TypeError(f"to_icechunk needs a ManifestGroup, got {type(group).__name__}")
    if store.read_only or store.session.read_only:
        raise ValueError("to_icechunk needs the store of a writable icechunk session")
    prefixes = container_prefixes(store)
    missing = _unaddressable(group, prefixes)
    if missing:
        shown = ", ".join(f"{a!r} -> {u}" for a, u in missing[:5])
        raise UnsupportedError(
            f"icechunk cannot address {len(missing)} reference location(s) ({shown}): no virtual "
            f"chunk container covers them (containers: {list(prefixes) or 'none'}); add one with "
            "RepositoryConfig.set_virtual_chunk_container"
        )
    proto = default_buffer_prototype()
    base = path.strip("/")

    def key(rel: str, name: str) -> str:
        return "/".join(p for p in (base, rel, name) if p)

    def put(k: str, doc: bytes) -> None:
        sync(store.set(k, proto.buffer.from_bytes(doc)))

    def group_doc(attributes: dict[str, Any]) -> bytes:
        return orjson.dumps(
            {"zarr_format": 3, "node_type": "group", "attributes": attributes},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    # parents of the target group are ordinary (empty) groups if they do not exist yet
    parts = base.split("/") if base else []
    for i in range(len(parts)):
        parent = "/".join(parts[:i])
        if not sync(store.exists(f"{parent}/zarr.json" if parent else "zarr.json")):
            put(f"{parent}/zarr.json" if parent else "zarr.json", group_doc({}))
    put(key("", "zarr.json"), group_doc(group.attributes))
    for rel, node in group.walk():
        if not isinstance(node, ManifestArray | InlineArray):  # a group
            put(key(rel, "zarr.json"), group_doc(node.attributes))
            continue
        array_path = key(rel, "")
        # drop chunks a previous version of this node left behind
        sync(store.delete_dir(array_path))
        for name, buf in node.metadata.to_buffer_dict(proto).items():
            sync(store.set(key(rel, name), buf))
        if isinstance(node, InlineArray):
            if node.data.size:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    zarr.open_array(store, path=array_path, mode="r+")[...] = node.data
            continue
        manifest = node.manifest
        if not len(manifest):
            continue
        ids = manifest.path_ids.reshape(-1)
        table = np.array([*manifest.path_table, ""], dtype=object)
        locations = table[ids].tolist()  # id -1 picks the trailing "" (missing chunk)
        failed = store.set_virtual_refs_arr(
            "/" + array_path,
            tuple(manifest.shape_chunk_grid),
            locations,
            np.ascontiguousarray(manifest.offsets.reshape(-1), dtype=np.uint64),
            np.ascontiguousarray(manifest.lengths.reshape(-1), dtype=np.uint64),
            validate_containers=True,
        )
        if failed:
            raise UnsupportedError(
                f"icechunk refused {len(failed)} virtual reference(s) of array {rel!r} "
                f"(first chunk {failed[0]}); check the repository's virtual chunk containers"
            )
    if commit_message is not None:
        return str(store.session.commit(commit_message))
    return None
