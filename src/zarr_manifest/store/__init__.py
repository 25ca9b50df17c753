"""Reading manifest stores back through zarr: `ManifestStore`, its sources and fetching."""

from zarr_manifest.store.manifest_store import ManifestStore
from zarr_manifest.store.sources import Source, SourceRegistry

__all__ = ["ManifestStore", "Source", "SourceRegistry"]
