"""Optional dependencies: which extra of ``pip install "zarr-manifest[EXTRA]"`` brings each,
and the one place that turns a missing one into an error saying what to install.

Builders, writers and the xarray layer import their libraries (h5py, tifffile, astropy,
eccodes, kerchunk, xarray, icechunk ...) only when used; `extras_explained` wraps those uses,
so that a ``ModuleNotFoundError`` for one of them becomes a `MissingExtraError` naming the
extra, instead of a bare "No module named 'h5py'".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from zarr_manifest.errors import MissingExtraError

__all__ = ["EXTRAS", "extras_explained", "missing_extra"]

#: top-level module -> (the pip package, the extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "h5py": ("h5py", "hdf5"),
    "imagecodecs": ("imagecodecs", "tiff"),
    "tifffile": ("tifffile", "tiff"),
    "astropy": ("astropy", "fits"),
    "eccodes": ("eccodes", "grib"),
    "gribapi": ("eccodes", "grib"),
    "cfgrib": ("cfgrib", "grib"),
    "kerchunk": ("kerchunk", "kerchunk"),
    "fsspec": ("fsspec", "kerchunk"),
    "fastparquet": ("fastparquet", "kerchunk"),
    "xarray": ("xarray", "xarray"),
    "icechunk": ("icechunk", "icechunk"),
    "dask": ("dask[distributed]", "distributed"),
    "distributed": ("dask[distributed]", "distributed"),
    "rich": ("rich", "cli"),
}


def missing_extra(error: ModuleNotFoundError, needed_for: str | None = None) -> ImportError | None:
    """The `MissingExtraError` for ``error`` when it is about an optional dependency (or a
    module inside one); None for any other module."""
    if isinstance(error, MissingExtraError) or not error.name:
        return None
    top = error.name.split(".", 1)[0]
    if top not in EXTRAS:
        return None
    package, extra = EXTRAS[top]
    what = f" (needed for {needed_for})" if needed_for else ""
    return MissingExtraError(
        f'{package} is not installed{what}: install it with pip install "zarr-manifest[{extra}]"',
        name=error.name,
        extra=extra,
    )


@contextmanager
def extras_explained(needed_for: str | None = None) -> Iterator[None]:
    """Re-raise a missing optional dependency inside the block as a `MissingExtraError`."""
    try:
        yield
    except ModuleNotFoundError as e:
        explained = missing_extra(e, needed_for)
        if explained is None:
            raise
        raise explained from e
