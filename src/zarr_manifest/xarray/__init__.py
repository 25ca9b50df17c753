"""xarray integration: the ``engine="manifest"`` backend, virtual datasets of
`ManifestArray`s (`open_virtual_dataset`, `open_virtual_mfdataset`) and the ``ds.manifest``
accessor that writes them.

Everything below (model, combine, format, store) is used from here; nothing below imports
this package.  Importing it registers the ``.manifest`` dataset accessor.
"""

from zarr_manifest._extras import extras_explained

with extras_explained("zarr_manifest.xarray"):
    import xarray  # noqa: F401 -- first, so that a missing xarray names the extra

from zarr_manifest.xarray.accessor import ManifestAccessor
from zarr_manifest.xarray.backend import ManifestBackendEntrypoint
from zarr_manifest.xarray.dataset import (
    check_datasets_combinable,
    dataset_to_group,
    group_to_dataset,
    open_virtual_dataset,
    open_virtual_mfdataset,
)

__all__ = [
    "ManifestAccessor",
    "ManifestBackendEntrypoint",
    "check_datasets_combinable",
    "dataset_to_group",
    "group_to_dataset",
    "open_virtual_dataset",
    "open_virtual_mfdataset",
]
