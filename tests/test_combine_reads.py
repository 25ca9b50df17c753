"""`combine` reads the referenced arrays it must compare by value all in one go; each must
come back under its own name with the values the file holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from zarr_manifest import build, open_virtual
from zarr_manifest.combine import _read_referenced
from zarr_manifest.errors import CombineError


def _write(path: Path, time0: int, mask: np.ndarray) -> Path:
    xr.Dataset(
        {
            "t": (("time", "y", "x"), np.full((2, 3, 4), float(time0), dtype="f4")),
            "mask": (("y", "x"), mask),
            "level": ((), np.int16(5)),
        },
        coords={"time": [time0, time0 + 1], "y": [0.0, 1.0, 2.0], "x": np.arange(4.0)},
    ).to_netcdf(path)
    return path


def test_read_referenced_returns_each_array_under_its_name(tmp_path: Path) -> None:
    mask = np.arange(12, dtype="i4").reshape(3, 4)
    group = open_virtual(_write(tmp_path / "a.nc", 7, mask), load=())
    arrays = {name: group[name] for name in ("t", "mask", "level", "x", "y")}
    values = _read_referenced(arrays, {})
    assert list(values) == list(arrays)
    np.testing.assert_array_equal(values["t"], np.full((2, 3, 4), 7.0, dtype="f4"))
    np.testing.assert_array_equal(values["mask"], mask)
    assert values["level"].shape == () and values["level"] == 5
    np.testing.assert_array_equal(values["x"], np.arange(4.0))
    np.testing.assert_array_equal(values["y"], [0.0, 1.0, 2.0])


def test_build_compares_referenced_variables_by_value(tmp_path: Path) -> None:
    mask = np.arange(12, dtype="i4").reshape(3, 4)
    same = [_write(tmp_path / f"s{i}.nc", 2 * i, mask) for i in range(5)]
    combined = build([str(p) for p in same], concat_dim="time", load=())
    assert combined["t"].shape == (10, 3, 4)
    other = mask.copy()
    other[2, 3] = -1
    paths = [*same[:3], _write(tmp_path / "odd.nc", 6, other), same[4]]
    with pytest.raises(CombineError, match="mask"):
        build([str(p) for p in paths], concat_dim="time", load=())
