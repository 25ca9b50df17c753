"""`open_virtual`'s default load: the dimension coordinates read the builder's way, and the
second parse builds only what it loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import zarr_manifest as zm
import zarr_manifest.builders as builders_module
from zarr_manifest import InlineArray, ManifestArray
from zarr_manifest.builders import default_load


def _write(path: Path, engine: str, group: str | None = None) -> None:
    ds = xr.Dataset(
        {"air": (("time", "y"), np.arange(12.0).reshape(4, 3))},
        coords={"time": [0.0, 1.0, 2.0, 3.0], "y": [10, 20, 30]},
    )
    ds["time"].attrs["bounds"] = "time_bnds"
    ds["time_bnds"] = (("time", "nv"), np.arange(8.0).reshape(4, 2))
    ds.to_netcdf(path, engine=engine, group=group, mode="a" if path.exists() else "w")


@pytest.mark.parametrize(
    ("engine", "groups"), [("scipy", [None]), ("netcdf4", [None]), ("netcdf4", [None, "sub"])]
)
def test_default_load_is_a_full_parse_with_those_names(
    tmp_path: Path, engine: str, groups: list[str | None], monkeypatch: Any
) -> None:
    path = tmp_path / "data.nc"
    for group in groups:
        _write(path, engine, group)
    names = default_load(zm.open_virtual(path, load=()))
    prefixes = [f"{g}/" if g else "" for g in groups]
    assert set(names) == {f"{p}{n}" for p in prefixes for n in ("time", "time_bnds", "y")}
    whole = zm.open_virtual(path, load=names)

    drops: list[tuple[str, ...]] = []
    get_builder = builders_module.get_builder

    def recording(name: str) -> Any:
        builder = get_builder(name)

        def build(*args: Any, drop: Any = (), **kwargs: Any) -> Any:
            drops.append(tuple(drop))
            return builder(*args, drop=drop, **kwargs)

        return build

    monkeypatch.setattr(builders_module, "get_builder", recording)
    fmt = "netcdf3" if engine == "scipy" else "hdf5"
    assert zm.open_virtual(path, format=fmt) == whole
    # the second parse leaves out every array it does not load
    assert len(drops) == 2
    assert set(drops[1]) == {f"{p}air" for p in prefixes}
    for name in names:
        assert isinstance(whole[name], InlineArray)
    for p in prefixes:
        assert isinstance(whole[f"{p}air"], ManifestArray)


def test_default_load_keeps_the_users_drop(tmp_path: Path) -> None:
    path = tmp_path / "data.nc"
    _write(path, "netcdf4")
    group = zm.open_virtual(path, drop=["time_bnds"])
    assert sorted(group.arrays) == ["air", "time", "y"]
    assert isinstance(group["time"], InlineArray)


def test_rows_that_follow_each_other_stay_referenced(tmp_path: Path) -> None:
    # one row per chunk, but in file order: a merged read serves them, nothing to load
    import h5py

    path = tmp_path / "rows.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("series", data=np.arange(50, dtype="f4"), chunks=(1,))
    group = zm.open_virtual(path)
    assert isinstance(group["series"], ManifestArray)
    assert not builders_module.has_tiny_rows(group["series"])
