"""``ds.manifest``: write a virtual `xarray.Dataset` (one of `ManifestArray`s) out."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import xarray as xr

from zarr_manifest.array import ManifestArray
from zarr_manifest.group import ManifestGroup
from zarr_manifest.xarray.dataset import dataset_to_group

__all__ = ["ManifestAccessor"]


@xr.register_dataset_accessor("manifest")
class ManifestAccessor:
    """Write a virtual dataset: ``ds.manifest.to_store("out.manifest")``.

    A virtual dataset is one whose variables wrap `ManifestArray`s (from
    `zarr_manifest.open_virtual_dataset`, combined with xarray as you like); loaded
    variables (numpy or dask) are written inline, encoded as ``to_zarr`` would.
    """

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def to_group(self) -> ManifestGroup:
        """This dataset as a `ManifestGroup` (see `dataset_to_group`)."""
        return dataset_to_group(self._ds)

    def to_store(
        self,
        dest: str | os.PathLike[str] | Any,
        *,
        overwrite: bool = False,
        split_above: int | None = 100_000,
        region_shape: Sequence[int] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Write as a manifest store (see `ManifestGroup.to_store`, which takes
        ``storage_options`` for a URL ``dest`` too); read it back with
        ``xr.open_dataset(dest, engine="manifest")``."""
        self.to_group().to_store(
            dest,
            overwrite=overwrite,
            split_above=split_above,
            region_shape=region_shape,
            storage_options=storage_options,
        )

    def to_kerchunk(
        self,
        dest: str | os.PathLike[str] | None = None,
        *,
        format: Literal["json", "parquet"] = "json",
        record_size: int = 100_000,
        categorical_threshold: int = 10,
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Kerchunk references, written to ``dest`` if given (see `ManifestGroup.to_kerchunk`)."""
        return self.to_group().to_kerchunk(
            dest,
            format=format,
            record_size=record_size,
            categorical_threshold=categorical_threshold,
            overwrite=overwrite,
        )

    def to_icechunk(
        self,
        store: Any,
        *,
        append_dim: str | None = None,
        commit_message: str | None = None,
        path: str = "",
    ) -> str | None:
        """Write into an Icechunk session store (see `ManifestGroup.to_icechunk`), or with
        ``append_dim`` append to the dataset stored there along that dimension (see
        `zarr_manifest.xarray.icechunk_append.append_to_icechunk`)."""
        if append_dim is not None:
            from zarr_manifest.xarray.icechunk_append import append_to_icechunk

            return append_to_icechunk(
                self._ds, store, append_dim=append_dim, commit_message=commit_message, path=path
            )
        return self.to_group().to_icechunk(store, commit_message=commit_message, path=path)

    @property
    def nbytes(self) -> int:
        """Bytes this dataset holds in memory: its references plus its loaded values (not
        the size of the data the references point at)."""
        total = 0
        for var in self._ds.variables.values():
            data = var._data
            if isinstance(data, ManifestArray):
                total += data.manifest.nbytes
            else:
                total += int(var.nbytes)
        return total

    def rename_paths(self, new: str | Callable[[str], str]) -> xr.Dataset:
        """A copy whose references point at renamed files (see `ChunkManifest.rename_paths`),
        e.g. after moving them to a bucket."""
        out = self._ds.copy()
        for name, var in self._ds.variables.items():
            data = var._data
            if isinstance(data, ManifestArray):
                out.variables[name]._data = data.rename_paths(new)  # type: ignore[attr-defined]
        return out
