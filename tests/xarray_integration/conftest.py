"""netCDF4 files as users have them: written by xarray with its default settings."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr


def air_dataset(index: int, steps: int = 4) -> xr.Dataset:
    """One file's worth of a packed air temperature: int16 with scale_factor/add_offset,
    CF times whose units xarray picks per file (``days since`` its first day)."""
    rng = np.random.default_rng(index)
    time = pd.date_range("2000-01-01", periods=steps, freq="D") + pd.Timedelta(days=steps * index)
    air = rng.uniform(250, 300, size=(steps, 3, 5)).round(2)
    air[0, 0, 0] = np.nan
    ds = xr.Dataset(
        {
            "air": (("time", "lat", "lon"), air, {"long_name": "air temperature"}),
            "pressure": (
                ("time", "lat", "lon"),
                rng.uniform(900, 1000, (steps, 3, 5)).astype("f4"),
            ),
            # the same in every file, as a static field is
            "land": (("lat", "lon"), np.arange(15, dtype="i1").reshape(3, 5) % 2),
        },
        coords={"time": time, "lat": [10.0, 20.0, 30.0], "lon": np.arange(5.0) * 2.5},
        attrs={"title": "air"},
    )
    ds["air"].encoding = {
        "dtype": "int16",
        "scale_factor": 0.01,
        "add_offset": 273.15,
        "_FillValue": -32767,
        "chunksizes": (2, 3, 5),
        "zlib": True,
    }
    ds["air"].attrs["units"] = "K"
    return ds


@pytest.fixture
def make_air() -> object:
    """`air_dataset`, for tests that write a file of their own."""
    return air_dataset


@pytest.fixture
def air_files(tmp_path: Path) -> list[str]:
    """Three consecutive daily files, data/air_00.nc ... data/air_02.nc."""
    folder = tmp_path / "data"
    folder.mkdir()
    paths = []
    for i in range(3):
        path = folder / f"air_{i:02d}.nc"
        air_dataset(i).to_netcdf(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def no_warnings() -> Iterator[None]:
    """Every warning is an error (the engine must not warn, e.g. about consolidated metadata)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
