"""Write the VirtualiZarr 1.x conformance examples with VirtualiZarr 1.3.0 itself.

VirtualiZarr 1.3.0 was the last release with ``ds.virtualize.to_zarr``, the only
writer of zarr-specs#287 stores on disk. It installs on Python 3.11, so this script
runs in its own virtual environment, not in zarr-manifest's:

    python3.11 -m venv /tmp/vz1-venv
    /tmp/vz1-venv/bin/pip install virtualizarr==1.3.0 h5py==3.16.0 kerchunk==0.2.10 \
        netCDF4==1.7.5.1.post1 xarray==2026.9.0 zarr==3.1.6 numcodecs==0.16.6 numpy==2.4.6
    /tmp/vz1-venv/bin/python spec/examples/virtualizarr-1/make.py

It writes, next to itself, ``data/*.nc`` (netCDF4 files written by xarray with its
default encoding plus zlib+shuffle for one variable) and one store per file,
``<name>.zarr``, exactly as ``vds.virtualize.to_zarr`` wrote it. Nothing in the
stores is edited afterwards: they are what users of VirtualiZarr 1.x have on disk.

VirtualiZarr 1.x wrote every ``path`` as an absolute ``file://`` URL. So that the
committed stores are readable on any machine, the data files are first written under
the fixed directory ``/tmp/zarr-manifest-virtualizarr-1/`` (``DATA_ROOT``), and then
copied beside this script; tests copy them back to ``DATA_ROOT`` before reading.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from virtualizarr import open_virtual_dataset

HERE = Path(__file__).resolve().parent
DATA_ROOT = Path("/tmp/zarr-manifest-virtualizarr-1")


def _air_dataset() -> xr.Dataset:
    """A small temperature-like dataset: float32 with NaNs, a time coordinate."""
    rng = np.random.default_rng(20240207)
    time = pd.date_range("2020-01-01", periods=6, freq="6h")
    lat = np.linspace(60.0, 30.0, 4, dtype="float32")
    lon = np.linspace(200.0, 230.0, 5, dtype="float32")
    air = (rng.normal(280.0, 10.0, (6, 4, 5))).astype("float32")
    air[1, 2, 3] = np.nan
    air[4, :, 0] = np.nan
    ds = xr.Dataset(
        {
            "air": (("time", "lat", "lon"), air, {"units": "K", "long_name": "air"}),
            "precip": (("time", "lat", "lon"), rng.random((6, 4, 5)), {"units": "mm"}),
            "station": (("lat",), np.arange(4, dtype="int16")),
        },
        coords={"time": time, "lat": lat, "lon": lon},
        attrs={"title": "VirtualiZarr 1.3.0 conformance example"},
    )
    return ds


def _write_netcdf4_by_hand(path: Path) -> None:
    """Two cases xarray's defaults do not make, written with netCDF4 itself.

    ``partial``: a chunked float64 variable of which only the first chunks were ever
    written (HDF5 allocates no others, so VirtualiZarr leaves their keys out: they read as
    the fill value).  ``big``: a big-endian int32 variable.
    """
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("t", 8)
        nc.createDimension("x", 3)
        partial = nc.createVariable("partial", "f8", ("t", "x"), chunksizes=(2, 3), zlib=True)
        partial[0:4, :] = np.arange(12.0).reshape(4, 3)
        big = nc.createVariable("big", "i4", ("t",), endian="big")
        big[:] = np.arange(8, dtype="int32") * 1000


def _virtualize(nc: Path, store: Path, variables: list[str] | None = None) -> None:
    vds = open_virtual_dataset(str(nc), indexes={}, loadable_variables=[])
    if variables is not None:
        vds = vds[variables]
    if store.exists():
        shutil.rmtree(store)
    vds.virtualize.to_zarr(str(store))


def main() -> int:
    """Write the data files and the stores; return the exit status."""
    import virtualizarr

    if virtualizarr.__version__ != "1.3.0":
        print(f"needs virtualizarr 1.3.0, found {virtualizarr.__version__}", file=sys.stderr)
        return 1
    if DATA_ROOT.exists():
        shutil.rmtree(DATA_ROOT)
    DATA_ROOT.mkdir(parents=True)
    ds = _air_dataset()
    # Chunked and compressed (zlib + shuffle) for "air"; the other variables keep
    # xarray's defaults (contiguous, uncompressed; time as int64 "hours since").
    encoding = {
        "air": {"zlib": True, "shuffle": True, "complevel": 4, "chunksizes": (2, 4, 5)},
    }
    nc = DATA_ROOT / "air.nc"
    ds.to_netcdf(nc, engine="netcdf4", encoding=encoding)
    _virtualize(nc, HERE / "air.zarr")
    by_hand = DATA_ROOT / "by-hand.nc"
    _write_netcdf4_by_hand(by_hand)
    _virtualize(by_hand, HERE / "partial.zarr", ["partial"])
    _virtualize(by_hand, HERE / "bigendian.zarr", ["big"])
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    for written in (nc, by_hand):
        shutil.copyfile(written, data / written.name)
    print(f"wrote the stores and data files under {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
