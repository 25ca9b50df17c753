"""zarr-manifest: virtual Zarr through chunk manifests.

Read chunks of legacy files (HDF5/netCDF4, netCDF3, TIFF, FITS, GRIB, kerchunk references,
Zarr stores) in place, through zarr-python, without copying data.
"""

import sys

if sys.version_info < (3, 12):  # noqa: UP036 -- requires-python is not read by PYTHONPATH users
    # before anything else: the modules below use Python 3.12 syntax and would fail with
    # a SyntaxError that does not say why
    raise ImportError(
        "zarr-manifest needs Python 3.12 or newer; this is Python "
        f"{sys.version_info.major}.{sys.version_info.minor} ({sys.executable})"
    )

from zarr_manifest.append import append
from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.build import build
from zarr_manifest.builders import open_virtual
from zarr_manifest.combine import combine_by_coords, concat, stack
from zarr_manifest.errors import (
    BuildError,
    ChunkReadError,
    ChunkTooLargeError,
    CombineError,
    ConcurrentWriteError,
    ManifestError,
    ManifestFormatError,
    MetadataError,
    MissingExtraError,
    ShortReadError,
    SourceNotAllowedError,
    StaleReferenceError,
    StoreConflictError,
    UnsupportedError,
    ZarrManifestError,
)
from zarr_manifest.fingerprint import Fingerprint
from zarr_manifest.format.publish import clean
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkEntry, ChunkManifest
from zarr_manifest.store import ManifestStore, SourceRegistry

__version__ = "0.1.0"

#: needing xarray (an optional dependency), so imported on first use
_XARRAY_NAMES = frozenset({"group_to_dataset", "open_virtual_dataset", "open_virtual_mfdataset"})


def __getattr__(name: str) -> object:
    if name in _XARRAY_NAMES:
        from zarr_manifest._extras import extras_explained

        with extras_explained(name):
            import zarr_manifest.xarray as integration

        return getattr(integration, name)
    raise AttributeError(f"module 'zarr_manifest' has no attribute {name!r}")


__all__ = [
    "BuildError",
    "ChunkEntry",
    "ChunkManifest",
    "ChunkReadError",
    "ChunkTooLargeError",
    "CombineError",
    "ConcurrentWriteError",
    "Fingerprint",
    "InlineArray",
    "ManifestArray",
    "ManifestError",
    "ManifestFormatError",
    "ManifestGroup",
    "ManifestStore",
    "MetadataError",
    "MissingExtraError",
    "ShortReadError",
    "SourceNotAllowedError",
    "SourceRegistry",
    "StaleReferenceError",
    "StoreConflictError",
    "UnsupportedError",
    "ZarrManifestError",
    "__version__",
    "append",
    "build",
    "clean",
    "combine_by_coords",
    "concat",
    "open_virtual",
    "group_to_dataset",
    "open_virtual_dataset",
    "open_virtual_mfdataset",
    "stack",
]
