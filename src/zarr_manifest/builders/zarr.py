"""Existing Zarr v2 / v3 stores -> `ManifestGroup` referencing their chunk objects in place.

Every chunk of a Zarr store is a whole object, so its manifest entry is ``{path: URL of the
object, offset: 0, length: object size}``.  The store is listed once; each array's chunk keys
are parsed with numpy string operations (no per-chunk Python objects) and placed in the chunk
grid.  Zarr v3 metadata is kept as it is (a sharded array's shards are the chunks of its
outer grid, so they are referenced the same way); Zarr v2 metadata (``.zarray``,
``.zattrs``, ``.zgroup``, ``_ARRAY_DIMENSIONS``) becomes the equivalent v3 metadata.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol
from urllib.parse import quote

import numpy as np
import obstore
import orjson

from zarr_manifest.array import InlineArray, ManifestArray, chunk_grid_shape, parse_array_metadata
from zarr_manifest.builders._auto_load import MAX_AUTO_LOAD_BYTES
from zarr_manifest.builders._source import Source
from zarr_manifest.builders.codecs import (
    v2_codecs_to_v3,
    v3_array_document,
    xarray_fill_value_attribute,
)
from zarr_manifest.errors import BuildError, MetadataError, UnsupportedError
from zarr_manifest.format.location import StoreLocation, open_location
from zarr_manifest.format.paths import canonical_url
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["build_zarr"]

_STRINGS = np.dtypes.StringDType()
_V3_META = "zarr.json"
_V2_ARRAY = ".zarray"
_V2_GROUP = ".zgroup"
_V2_ATTRS = ".zattrs"
_METADATA_NAMES = frozenset({_V3_META, _V2_ARRAY, _V2_GROUP, _V2_ATTRS, ".zmetadata"})
# RFC 3986 pchar minus pct-encoded (the canonical form of `zarr_manifest.format.paths`)
_SEGMENT_SAFE = "!$&'()*+,;=:@"
_DIMENSIONS_ATTR = "_ARRAY_DIMENSIONS"


@dataclass(slots=True)
class _Node:
    """One node of the store: its path (relative to the listing root) and metadata."""

    path: str
    kind: str  # "array" or "group"
    zarr_format: int
    doc: dict[str, Any]  # zarr.json, or .zarray / .zgroup
    attributes: dict[str, Any]


@dataclass(slots=True)
class _Listing:
    """Every object under the root: sorted keys and their sizes.

    For a store inside one file (a zip archive), each object is a byte range of that file:
    ``container`` is the file's URL, ``offsets`` where each object's bytes start, and
    ``stored`` whether they are its value as they are (False: compressed by the container,
    not referenceable).
    """

    keys: np.ndarray  # StringDType, sorted
    sizes: np.ndarray  # int64
    offsets: np.ndarray | None = None  # int64, with ``container``
    stored: np.ndarray | None = None  # bool, with ``container``
    container: str | None = None

    def under(self, prefix: str) -> _Listing:
        """The objects under ``prefix``, with the prefix cut off their keys."""
        if not prefix:
            return self
        # keys starting with "p/" are those in ["p/", "p0"): "0" follows "/" in ASCII
        lo, hi = np.searchsorted(
            self.keys, np.array([prefix, prefix[:-1] + "0"], dtype=_STRINGS), side="left"
        )
        return _Listing(
            np.strings.slice(self.keys[lo:hi], len(prefix), None),
            self.sizes[lo:hi],
            None if self.offsets is None else self.offsets[lo:hi],
            None if self.stored is None else self.stored[lo:hi],
            self.container,
        )

    @classmethod
    def of(
        cls,
        keys: list[str],
        sizes: list[int],
        offsets: list[int] | None = None,
        stored: list[bool] | None = None,
        container: str | None = None,
    ) -> _Listing:
        """A listing of unsorted keys (and their columns), sorted by key."""
        arr = np.array(keys, dtype=_STRINGS)
        order = np.argsort(arr, kind="stable")
        return cls(
            arr[order],
            np.asarray(sizes, dtype=np.int64)[order],
            None if offsets is None else np.asarray(offsets, dtype=np.int64)[order],
            None if stored is None else np.asarray(stored, dtype=bool)[order],
            container,
        )


class ZarrTree(Protocol):
    """Where a Zarr hierarchy's objects are: listed, read, and loaded through zarr.

    `build_zarr` reads stores through `ObjectTree` (a directory or bucket prefix);
    `zarr_manifest.builders.zarr_zip` reads zipped stores through its own tree.
    """

    #: The URL shown in messages and under which chunk objects are referenced ("/"-ended).
    url: str

    def listing(self, prefix: str) -> _Listing:
        """Every object under ``prefix`` (keys relative to it)."""
        ...

    def read(self, key: str) -> bytes:
        """The value of the object ``key``."""
        ...

    def zarr_store(self, path: str, max_bytes: int | None = None) -> Any:
        """A read-only zarr store holding (at least) the array at ``path``; None when making
        it would decompress more than ``max_bytes`` of objects."""
        ...


class ObjectTree:
    """A store whose objects are files or objects of their own: a directory, a prefix."""

    def __init__(self, location: StoreLocation, url: str):
        self.location = location
        self.url = url

    def listing(self, prefix: str) -> _Listing:
        keys: list[str] = []
        sizes: list[int] = []
        for batch in obstore.list(self.location.store, prefix=prefix or None, chunk_size=10_000):
            keys.extend(meta["path"] for meta in batch)
            sizes.extend(meta["size"] for meta in batch)
        if prefix:
            cut = len(prefix)
            keys = [k[cut:] if k.startswith(prefix) else k for k in keys]
        return _Listing.of(keys, sizes)

    def read(self, key: str) -> bytes:
        return bytes(obstore.get(self.location.store, key).bytes())

    def zarr_store(self, path: str, max_bytes: int | None = None) -> Any:
        import zarr

        # objects are read one at a time as zarr asks: nothing is decompressed up front
        return zarr.storage.ObjectStore(self.location.store, read_only=True)


def _read_docs(tree: ZarrTree, prefix: str, keys: list[str], url: str) -> dict[str, dict[str, Any]]:
    """The JSON metadata documents at ``keys`` (relative to ``prefix``), read in parallel."""

    def read(key: str) -> tuple[str, dict[str, Any]]:
        raw = tree.read(prefix + key)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # zarr-python 2 wrote NaN/Infinity fill values, which are not strict JSON
            import json

            try:
                doc = json.loads(raw)
            except ValueError as e:
                raise BuildError(f"{url}{key}: invalid JSON metadata: {e}") from None
        if not isinstance(doc, dict):
            raise BuildError(f"{url}{key}: metadata is not a JSON object")
        return key, doc

    if len(keys) <= 1:
        return dict(read(k) for k in keys)
    with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
        return dict(pool.map(read, keys))


def _discover(listing: _Listing, tree: ZarrTree, prefix: str, url: str) -> list[_Node]:
    """Every array and group under the root, from the metadata objects in the listing."""
    names = np.strings.rpartition(listing.keys, np.array("/", dtype=_STRINGS))
    is_meta = np.isin(names[2], np.array(sorted(_METADATA_NAMES), dtype=_STRINGS))
    meta_keys = [str(k) for k in listing.keys[is_meta]]
    by_dir: dict[str, set[str]] = {}
    for key in meta_keys:
        parent, _, name = key.rpartition("/")
        by_dir.setdefault(parent, set()).add(name)
    wanted = []
    for parent, present in by_dir.items():
        base = f"{parent}/" if parent else ""
        if _V3_META in present:
            wanted.append(base + _V3_META)
        else:
            wanted += [base + n for n in (_V2_ARRAY, _V2_GROUP, _V2_ATTRS) if n in present]
    docs = _read_docs(tree, prefix, wanted, url)
    nodes = []
    for parent, present in sorted(by_dir.items()):
        base = f"{parent}/" if parent else ""
        if _V3_META in present:
            doc = docs[base + _V3_META]
            if doc.get("zarr_format") != 3 or doc.get("node_type") not in ("array", "group"):
                raise BuildError(f"{url}{base}{_V3_META}: not Zarr v3 array or group metadata")
            attrs = dict(doc.get("attributes") or {})
            nodes.append(_Node(parent, doc["node_type"], 3, doc, attrs))
        elif _V2_ARRAY in present or _V2_GROUP in present:
            kind = "array" if _V2_ARRAY in present else "group"
            doc = docs[base + (_V2_ARRAY if kind == "array" else _V2_GROUP)]
            attrs = dict(docs.get(base + _V2_ATTRS) or {})
            nodes.append(_Node(parent, kind, 2, doc, attrs))
    # a node inside an array's directory is not part of the hierarchy (zarr ignores it too)
    arrays = [n.path for n in nodes if n.kind == "array"]
    if "" in arrays:
        return [n for n in nodes if n.path == ""]
    return [n for n in nodes if not any(n.path.startswith(f"{a}/") for a in arrays)]


# ---- chunk keys ----------------------------------------------------------------------------


def _key_layout(doc: Mapping[str, Any], zarr_format: int) -> tuple[str, str]:
    """(prefix, separator) of an array's chunk keys: ("c/", "/"), ("", "."), ..."""
    if zarr_format == 2:
        return "", str(doc.get("dimension_separator") or ".")
    encoding = doc.get("chunk_key_encoding") or {"name": "default"}
    if isinstance(encoding, str):
        encoding = {"name": encoding}
    name = encoding.get("name")
    separator = str((encoding.get("configuration") or {}).get("separator", ""))
    if name == "default":
        sep = separator or "/"
        return f"c{sep}", sep
    if name == "v2":
        return "", separator or "."
    raise UnsupportedError(f"chunk key encoding {name!r} is not supported")


def _parse_chunk_keys(
    keys: np.ndarray, prefix: str, separator: str, grid: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Which keys are chunk keys of the grid, and their grid indices (n, ndim).

    Keys that are not chunk keys (metadata, stray files) or lie outside the grid (left
    behind by a resize) are ignored, as zarr ignores them.
    """
    ndim = len(grid)
    if ndim == 0:
        zero_key = f"{prefix}0" if not prefix else prefix.rstrip(separator)
        valid = keys == zero_key
        return valid, np.zeros((int(valid.sum()), 0), dtype=np.int64)
    valid = np.strings.startswith(keys, prefix) if prefix else np.ones(keys.shape, bool)
    rest = np.strings.slice(keys, len(prefix), None) if prefix else keys
    sep = np.array(separator, dtype=_STRINGS)
    parts = []
    for axis in range(ndim):
        before, found, rest = np.strings.partition(rest, sep)
        valid &= np.strings.isdigit(before)
        # every index but the last is followed by a separator, the last by nothing
        valid &= found == (separator if axis < ndim - 1 else "")
        parts.append(before)
    if not valid.any():
        return valid, np.zeros((0, ndim), dtype=np.int64)
    indices = np.stack([p[valid].astype(np.int64) for p in parts], axis=1)
    inside = (indices < np.asarray(grid, dtype=np.int64)).all(axis=1)
    if not inside.all():
        where = np.flatnonzero(valid)
        valid = valid.copy()
        valid[where[~inside]] = False
        indices = indices[inside]
    return valid, indices


def _array_url(base_url: str, path: str) -> str:
    """The canonical URL of an array's directory (ending in "/")."""
    if not path:
        return base_url
    return base_url + "/".join(quote(seg, safe=_SEGMENT_SAFE) for seg in path.split("/")) + "/"


def _manifest(
    listing: _Listing, node: _Node, grid: tuple[int, ...], base_url: str
) -> ChunkManifest | list[str]:
    """The array's manifest; or, when its container compressed some of its chunk objects
    (zip members), the keys of those (such chunks cannot be referenced)."""
    under = listing.under(f"{node.path}/" if node.path else "")
    keys = under.keys
    prefix, separator = _key_layout(node.doc, node.zarr_format)
    valid, indices = _parse_chunk_keys(keys, prefix, separator, grid)
    if not len(indices):
        return ChunkManifest.empty(grid)
    paths = np.full(grid, "", dtype=_STRINGS)
    offsets = np.zeros(grid, dtype=np.int64)
    lengths = np.zeros(grid, dtype=np.int64)
    # flat positions also work for a 0-d grid (one chunk, no index columns)
    flat = np.ravel_multi_index(tuple(indices.T), grid) if grid else np.zeros(1, np.intp)
    if under.container is None:
        url = np.array(_array_url(base_url, node.path), dtype=_STRINGS)
        paths.reshape(-1)[flat] = np.strings.add(url, keys[valid])
    else:
        assert under.offsets is not None and under.stored is not None
        if not under.stored[valid].all():
            return [str(k) for k in keys[valid][~under.stored[valid]]]
        paths.reshape(-1)[flat] = under.container
        offsets.reshape(-1)[flat] = under.offsets[valid]
    lengths.reshape(-1)[flat] = under.sizes[valid]
    return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)


# ---- metadata ------------------------------------------------------------------------------


def _v2_to_v3(node: _Node, url: str) -> dict[str, Any]:
    """The zarr.json dict equal to a v2 array's .zarray (+ .zattrs)."""
    from zarr.core.metadata.v2 import ArrayV2Metadata

    doc = node.doc
    name = node.path or "/"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = ArrayV2Metadata.from_dict({**doc, "attributes": {}})
    except (ValueError, TypeError, KeyError) as e:
        raise BuildError(f"{url}{node.path}/.zarray: invalid Zarr v2 array metadata: {e}") from e
    shape = [int(s) for s in doc["shape"]]
    try:
        codecs = v2_codecs_to_v3(
            str(doc["dtype"]) if isinstance(doc["dtype"], str) else meta.dtype.to_native_dtype(),
            str(doc.get("order", "C")),
            doc.get("filters"),
            doc.get("compressor"),
            ndim=len(shape),
            variable=name,
        )
    except UnsupportedError as e:
        raise UnsupportedError(f"{url}{node.path}: {e}") from e
    except ValueError as e:
        raise BuildError(f"{url}{node.path}/.zarray: {e}") from e
    zdtype = meta.dtype
    fill: Any = meta.fill_value
    attributes = dict(node.attributes)
    dims = attributes.pop(_DIMENSIONS_ATTR, None)
    if not (isinstance(dims, list) and len(dims) == len(shape)):
        if dims is not None:
            attributes[_DIMENSIONS_ATTR] = dims  # not usable as dimension names: keep it
        dims = None
    native = zdtype.to_native_dtype()
    if fill is None:
        fill = zdtype.default_scalar()
    elif native.kind in "iuf" and "_FillValue" not in attributes:
        # xarray masks a v2 array's fill_value but a v3 array's _FillValue attribute
        attributes["_FillValue"] = xarray_fill_value_attribute(fill, native)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data_type = zdtype.to_json(zarr_format=3)
        fill_json = zdtype.to_json_scalar(fill, zarr_format=3)
    return v3_array_document(
        shape=shape,
        data_type=data_type,
        chunks=doc["chunks"],
        fill_value=fill_json,
        codecs=codecs,
        attributes=attributes,
        dimension_names=dims,
    )


def _metadata(node: _Node, url: str) -> dict[str, Any]:
    """The v3 array metadata dict of an array node."""
    if node.zarr_format == 2:
        return _v2_to_v3(node, url)
    doc = dict(node.doc)
    if doc.get("storage_transformers"):
        raise UnsupportedError(
            f"{url}{node.path}: array uses storage transformers "
            f"{[t.get('name') for t in doc['storage_transformers']]}, which cannot be referenced"
        )
    doc.pop("storage_transformers", None)
    return doc


def _load(tree: ZarrTree, prefix: str, node: _Node, *, why: str | None = None) -> np.ndarray:
    """The values of an array, read with zarr from the original store.

    ``why`` (the reason it cannot be referenced) marks a load the user did not ask for:
    then more than `MAX_AUTO_LOAD_BYTES` of values, or of objects to decompress, is refused.
    """
    import zarr

    path = (prefix + node.path).strip("/")
    limit = None if why is None else MAX_AUTO_LOAD_BYTES
    store = tree.zarr_store(path, max_bytes=limit)
    if store is None:
        _refuse_auto_load(tree, prefix, node, why, "its objects decompress to")
    array = zarr.open_array(
        store, path=path, mode="r", zarr_format=2 if node.zarr_format == 2 else 3
    )
    if limit is not None and array.nbytes > limit:
        _refuse_auto_load(tree, prefix, node, why, f"its values take {array.nbytes} bytes,")
    return np.asarray(array[...])


class _AutoLoadRefused(UnsupportedError):
    """An array too large to load without being asked (see `MAX_AUTO_LOAD_BYTES`)."""


def _refuse_auto_load(
    tree: ZarrTree, prefix: str, node: _Node, why: str | None, size: str
) -> NoReturn:
    path = prefix + node.path
    raise _AutoLoadRefused(
        f"{tree.url}: array {path!r} cannot be referenced in place ({why}) and {size} more "
        f"than the {MAX_AUTO_LOAD_BYTES} bytes a build loads on its own; load it "
        f"(load=[{path!r}]) or leave it out (drop=[{path!r}])"
    )


def _build_array(
    node: _Node,
    listing: _Listing,
    tree: ZarrTree,
    prefix: str,
    base_url: str,
    load: bool,
) -> ManifestArray | InlineArray:
    url = base_url
    try:
        doc = _metadata(node, url)
        meta = parse_array_metadata(doc)
    except UnsupportedError as e:
        # cannot be referenced: zarr may still read it, then it is stored inline
        try:
            data = _load(tree, prefix, node, why=str(e))
        except _AutoLoadRefused:
            raise
        except Exception as read_error:
            raise e from read_error
        attributes = dict(node.attributes)
        dims = attributes.pop(_DIMENSIONS_ATTR, None) if node.zarr_format == 2 else None
        if node.zarr_format == 3:
            dims = node.doc.get("dimension_names")
        try:
            return InlineArray.from_numpy(data, dimension_names=dims, attributes=attributes)
        except (ValueError, TypeError, MetadataError) as inline_error:
            raise e from inline_error
    except MetadataError as e:
        raise BuildError(f"{url}{node.path}: invalid array metadata: {e}") from e
    if load:
        return InlineArray(meta, _load(tree, prefix, node))
    grid = chunk_grid_shape(meta)
    try:
        manifest = _manifest(listing, node, grid, base_url)
    except UnsupportedError as e:
        raise UnsupportedError(f"{url}{node.path}: {e}") from e
    if isinstance(manifest, list):
        # a compressed zip member is not its chunk's bytes: never referenced, read instead
        why = (
            f"{len(manifest)} of its chunks (e.g. {prefix + node.path}/{manifest[0]}) are "
            "compressed zip members"
        )
        data = _load(tree, prefix, node, why=why)
        warnings.warn(
            f"{tree.url}: array {prefix + node.path!r} cannot be referenced in place: {why}; "
            "loading it (write the archive with `zip -0` or zarr's ZipStore to reference it)",
            stacklevel=4,
        )
        return InlineArray(meta, data)
    return ManifestArray(meta, manifest)


def _source_url(source: str | os.PathLike[str] | Source) -> str:
    if isinstance(source, Source):
        return source.url
    return os.fspath(source)


def build_zarr(
    source_url: str | os.PathLike[str] | Source,
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    **options: Any,
) -> ManifestGroup:
    """Reference the chunks of an existing Zarr v2 or v3 store in place.

    Parameters
    ----------
    source_url
        The store's root: a local directory, a URL (``file://``, ``s3://``, ``gs://``,
        ``az://``, ``http(s)://`` where the server can list), or a `Source` (its ``url``).
    group
        A sub-group (path inside the store) to start from.
    drop
        Members to leave out, as paths relative to the starting group (``"temp"``,
        ``"sub/temp"``; a group path drops the whole group).
    load
        Arrays to read now (with zarr) and store inline, as paths like ``drop``.
    **options
        Passed to `obstore.store.from_url` for URLs (credentials, ``client_options``...).

    Returns
    -------
    ManifestGroup
        The hierarchy under the starting group; every chunk object referenced whole
        (offset 0, its size).  If the starting node is an array, a group holding just that
        array, named after the last path segment (without a ``.zarr`` suffix).

    Raises
    ------
    BuildError
        No Zarr metadata at the location, or invalid metadata (message names the object).
    UnsupportedError
        An array zarr cannot read either (unknown codec, storage transformer...).
    """
    url = _source_url(source_url)
    location = open_location(url, **options)
    base_url = canonical_url(location.url)
    if not base_url.endswith("/"):
        base_url += "/"
    return build_tree(ObjectTree(location, base_url), group=group, drop=drop, load=load)


def build_tree(
    tree: ZarrTree,
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
) -> ManifestGroup:
    """The `ManifestGroup` of the Zarr hierarchy in ``tree`` (see `build_zarr`)."""
    base_url = tree.url
    sub = (group or "").strip("/")
    prefix = f"{sub}/" if sub else ""
    listing = tree.listing(prefix)
    shown = base_url + prefix
    nodes = _discover(listing, tree, prefix, shown)
    if not nodes:
        raise BuildError(f"{shown}: no Zarr metadata (zarr.json, .zgroup or .zarray) found")
    by_path = {n.path: n for n in nodes}
    root = by_path.get("")
    drop_set = {d.strip("/") for d in drop}
    load_set = {d.strip("/") for d in load}
    if root is not None and root.kind == "array":
        name = posixpath.basename((base_url + prefix).rstrip("/"))
        name = name.removesuffix(".zip").removesuffix(".zarr") or "data"
        array = _build_array(
            root, listing, tree, prefix, _array_url(base_url, sub), load=name in load_set
        )
        return ManifestGroup(arrays={} if name in drop_set else {name: array})
    unknown = sorted(
        p
        for p in drop_set | load_set
        if p not in by_path and not any(n.startswith(p + "/") for n in by_path)
    )
    if unknown:
        raise BuildError(f"{shown}: no member(s) {unknown} in the store (drop/load)")
    store_base = _array_url(base_url, sub)

    def build_group(path: str, node: _Node | None) -> ManifestGroup:
        arrays: dict[str, ManifestArray | InlineArray] = {}
        groups: dict[str, ManifestGroup] = {}
        depth = path.count("/") + 1 if path else 0
        children = sorted(
            {
                p.split("/")[depth]
                for p in by_path
                if p and (not path or p.startswith(path + "/")) and p != path
            }
        )
        for name in children:
            child = f"{path}/{name}" if path else name
            if child in drop_set:
                continue
            child_node = by_path.get(child)
            if child_node is not None and child_node.kind == "array":
                arrays[name] = _build_array(
                    child_node, listing, tree, prefix, store_base, load=child in load_set
                )
            else:
                # an implicit group (no metadata of its own) still holds its members
                groups[name] = build_group(child, child_node)
        return ManifestGroup(
            arrays=arrays, groups=groups, attributes=node.attributes if node else {}
        )

    return build_group("", root)
