"""What xarray makes of the files themselves: the reference the virtual paths are compared with.

Imported by the tests beside it (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

from typing import Any

import xarray as xr


def netcdf_reference(paths: list[str], **kwargs: Any) -> xr.Dataset:
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
