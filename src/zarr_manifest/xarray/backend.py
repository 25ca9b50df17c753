"""``engine="manifest"``: xarray's backend for manifest stores.

Built from xarray's own zarr backend (its `ZarrStore` and `StoreBackendEntrypoint`), so CF
decoding, groups and lazy indexing behave exactly as with ``engine="zarr"``.  What it adds:
it opens the store as a `ManifestStore` (with the sources it may read and the credentials to
read them), never looks for consolidated metadata (a manifest store has none, and xarray
would warn), opens every array under zarr's fused codec pipeline (zarr binds the pipeline
to an array when it is opened, so later lazy and dask reads keep it), asks dask for
chunks of whole shards when the store shows arrays as (virtual) shards, and reads a
sparse array's selections with `ManifestStore.sparse_read` (its stored chunks alone).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import zarr
from xarray.backends import BackendEntrypoint
from xarray.backends.common import datatree_from_dict_with_io_cleanup
from xarray.backends.store import StoreBackendEntrypoint
from xarray.backends.zarr import ZarrArrayWrapper, ZarrStore
from xarray.core import indexing
from xarray.core.treenode import NodePath
from xarray.core.utils import close_on_error
from xarray.core.variable import Variable

from zarr_manifest._pipelines import FUSED_PIPELINE
from zarr_manifest.group import ManifestGroup
from zarr_manifest.store import ManifestStore, SourceRegistry

if TYPE_CHECKING:
    from xarray import Dataset, DataTree

__all__ = [
    "DEFAULT_VIRTUAL_SHARD_BYTES",
    "FUSED_PIPELINE",
    "ManifestBackendEntrypoint",
    "open_manifest_store",
]

_TRANSFORMER = "chunk-manifest-json"

#: the engine's default virtual shard size: a full read of 4,096 chunks of 16 KiB takes
#: 0.28 s instead of 0.64 s without (and 1.9 s through open_zarr with zarr's defaults)
DEFAULT_VIRTUAL_SHARD_BYTES = 4 << 20


@contextmanager
def fast_reads() -> Iterator[None]:
    """zarr's configuration for reading a manifest store fastest (the fused pipeline),
    for the arrays opened inside it."""
    with zarr.config.set({"codec_pipeline.path": FUSED_PIPELINE}):
        yield


class _ManifestZarrStore(ZarrStore):
    """xarray's ZarrStore, with dask's preferred chunks of whole shards when an array is
    sharded (a virtual shard is read in one go; a dask chunk per inner chunk would read its
    shard's index once per chunk)."""

    def open_store_variable(self, name: str) -> Any:
        variable = super().open_store_variable(name)
        shards = variable.encoding.get("shards")
        if shards is not None and all(isinstance(s, int) for s in shards):
            variable.encoding["preferred_chunks"] = dict(zip(variable.dims, shards, strict=True))
            # a sparse array's absent shards are filled without zarr's per-chunk work
            data = indexing.LazilyIndexedArray(_SparseArrayWrapper(self.members[name]))
            variable = Variable(variable.dims, data, variable.attrs, variable.encoding)
        return variable


class _SparseArrayWrapper(ZarrArrayWrapper):
    """xarray's zarr array wrapper, whose basic selections go through
    `ManifestStore.sparse_read` (zarr's ``array[key]`` for any array but a sparse one)."""

    def _getitem(self, key: Any) -> Any:
        store = self._array.store
        if isinstance(store, ManifestStore):
            return store.sparse_read(self._array, key)
        return super()._getitem(key)


def open_manifest_store(
    source: str | os.PathLike[str] | ManifestStore | ManifestGroup,
    *,
    allowed_prefixes: Iterable[str] | None = None,
    registry: SourceRegistry | None = None,
    storage_options: Mapping[str, Any] | None = None,
    virtual_shard_bytes: int | None = None,
    store_options: Mapping[str, Any] | None = None,
) -> ManifestStore:
    """A `ManifestStore` for what the user passed (a path or URL, a group, or a store)."""
    if isinstance(source, ManifestStore):
        if (
            allowed_prefixes
            or registry
            or storage_options
            or store_options
            or virtual_shard_bytes not in (None, DEFAULT_VIRTUAL_SHARD_BYTES)
        ):
            raise ValueError(
                "a ManifestStore was passed: set allowed_prefixes, registry, storage_options, "
                "virtual_shard_bytes and other options on it, not on open_dataset"
            )
        return source
    root: Any = os.fspath(source) if isinstance(source, os.PathLike) else source
    return ManifestStore(
        root,
        allowed_prefixes=allowed_prefixes,
        registry=registry,
        virtual_shard_bytes=virtual_shard_bytes,
        storage_options=storage_options,
        **dict(store_options or {}),
    )


class ManifestBackendEntrypoint(BackendEntrypoint):
    """Open manifest stores (Zarr v3 hierarchies with ``chunk-manifest-json`` manifests)
    with xarray: ``xr.open_dataset(path_or_url, engine="manifest")``.

    Besides xarray's decoding options (as for ``engine="zarr"``) it takes:

    - ``allowed_prefixes``: where else bytes may be read from (default: only under the store);
    - ``registry``: a `SourceRegistry` with configured obstore stores, instead;
    - ``storage_options``: credentials and client settings in obstore's vocabulary, for
      the store and the sources it reads (URL-prefix keys for others; see `ManifestStore`);
    - ``virtual_shard_bytes``: show arrays of many small chunks as shards of about this size
      (see `ManifestStore`; default 4 MiB, None: as stored); dask then defaults to chunks
      of whole shards;
    - ``store_options``: other `ManifestStore` options (``verify``, ``readahead_bytes``...).

    ``filename_or_obj`` may also be a `ManifestStore` or an in-memory `ManifestGroup`.
    """

    description = "Open manifest stores (virtual Zarr, chunk-manifest-json) in xarray"
    url = "https://github.com/zarr-developers/zarr-specs/issues/287"
    supports_groups = True
    open_dataset_parameters = (
        "filename_or_obj",
        "mask_and_scale",
        "decode_times",
        "concat_characters",
        "decode_coords",
        "drop_variables",
        "use_cftime",
        "decode_timedelta",
        "group",
        "allowed_prefixes",
        "registry",
        "storage_options",
        "virtual_shard_bytes",
        "store_options",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        if isinstance(filename_or_obj, ManifestStore | ManifestGroup):
            return True
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        path = os.fspath(filename_or_obj)
        if path.startswith("file://"):
            path = path.removeprefix("file://")
        elif "://" in path:
            # remote: not opened just to guess
            return False
        return _is_local_manifest_store(path)

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: bool = True,
        decode_times: Any = True,
        concat_characters: bool = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: Any = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        allowed_prefixes: Iterable[str] | None = None,
        registry: SourceRegistry | None = None,
        storage_options: Mapping[str, Any] | None = None,
        virtual_shard_bytes: int | None = DEFAULT_VIRTUAL_SHARD_BYTES,
        store_options: Mapping[str, Any] | None = None,
    ) -> Dataset:
        store = open_manifest_store(
            filename_or_obj,
            allowed_prefixes=allowed_prefixes,
            registry=registry,
            storage_options=storage_options,
            virtual_shard_bytes=virtual_shard_bytes,
            store_options=store_options,
        )
        with fast_reads():
            zstore = _ManifestZarrStore.open_group(
                store, group=group, mode="r", consolidated=False, zarr_format=3
            )
        with close_on_error(zstore):
            return StoreBackendEntrypoint().open_dataset(
                zstore,
                mask_and_scale=mask_and_scale,
                decode_times=decode_times,
                concat_characters=concat_characters,
                decode_coords=decode_coords,
                drop_variables=drop_variables,
                use_cftime=use_cftime,
                decode_timedelta=decode_timedelta,
            )

    def open_datatree(  # type: ignore[override]
        self, filename_or_obj: Any, **kwargs: Any
    ) -> DataTree:
        return datatree_from_dict_with_io_cleanup(
            self.open_groups_as_dict(filename_or_obj, **kwargs)
        )

    def open_groups_as_dict(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: bool = True,
        decode_times: Any = True,
        concat_characters: bool = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: Any = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        allowed_prefixes: Iterable[str] | None = None,
        registry: SourceRegistry | None = None,
        storage_options: Mapping[str, Any] | None = None,
        virtual_shard_bytes: int | None = DEFAULT_VIRTUAL_SHARD_BYTES,
        store_options: Mapping[str, Any] | None = None,
    ) -> dict[str, Dataset]:
        store = open_manifest_store(
            filename_or_obj,
            allowed_prefixes=allowed_prefixes,
            registry=registry,
            storage_options=storage_options,
            virtual_shard_bytes=virtual_shard_bytes,
            store_options=store_options,
        )
        parent = str(NodePath("/") / NodePath(group)) if group else str(NodePath("/"))
        with fast_reads():
            stores = _ManifestZarrStore.open_store(
                store, group=parent, mode="r", consolidated=False, zarr_format=3
            )
        out: dict[str, Dataset] = {}
        for path, zstore in stores.items():
            with close_on_error(zstore):
                ds = StoreBackendEntrypoint().open_dataset(
                    zstore,
                    mask_and_scale=mask_and_scale,
                    decode_times=decode_times,
                    concat_characters=concat_characters,
                    decode_coords=decode_coords,
                    drop_variables=drop_variables,
                    use_cftime=use_cftime,
                    decode_timedelta=decode_timedelta,
                )
            name = str(NodePath(path).relative_to(parent)) if group else str(NodePath(path))
            out[name] = ds
        return out


def _is_local_manifest_store(path: str) -> bool:
    """A local directory whose hierarchy holds an array declaring the chunk-manifest-json
    storage transformer (looked for breadth first, a bounded number of nodes deep)."""
    if not os.path.isfile(os.path.join(path, "zarr.json")):
        return False
    queue = [path]
    for _ in range(_GUESS_NODES):
        if not queue:
            return False
        node = queue.pop(0)
        if _declares_manifest(os.path.join(node, "zarr.json")):
            return True
        try:
            children = sorted(os.listdir(node))
        except OSError:
            continue
        queue += [
            os.path.join(node, c)
            for c in children
            if not c.startswith(".") and os.path.isfile(os.path.join(node, c, "zarr.json"))
        ]
    return False


#: zarr.json documents read at most to guess whether a directory is a manifest store
_GUESS_NODES = 64


def _declares_manifest(zarr_json: str) -> bool:
    try:
        with open(zarr_json, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    transformers = doc.get("storage_transformers") if isinstance(doc, dict) else None
    return isinstance(transformers, list) and any(
        isinstance(t, dict) and t.get("name") == _TRANSFORMER for t in transformers
    )
