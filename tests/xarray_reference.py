"""What xarray makes of the files themselves: the reference the virtual paths are compared with.

Imported by the xarray and cloud tests (pytest puts this folder, where conftest.py is, on
``sys.path``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import xarray as xr


def netcdf_reference(paths: Sequence[str | os.PathLike[str]], **kwargs: Any) -> xr.Dataset:
    """The files joined along time by ``xr.open_mfdataset`` (netCDF4 engine), loaded."""
    with xr.open_mfdataset(
        paths,
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        **kwargs,
    ) as ds:
        return ds.load()
