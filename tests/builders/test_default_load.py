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


def test_tiny_rows_of_kerchunk_references_are_loaded_into_one_chunk(tmp_path: Path) -> None:
    """kerchunk's references of a netCDF-3 file keep one chunk per record; loaded for their
    tiny rows, such arrays hold one chunk (not one object per record when written: 6,646
    records of a radar's azimuth made to_store take minutes), with scipy's values."""
    import json

    import scipy.io
    import zarr
    from kerchunk.netCDF3 import NetCDF3ToZarr

    n = 400
    rng = np.random.default_rng(2)
    values = {
        "azimuth": rng.uniform(0, 360, n).astype("f4"),
        "elevation": rng.uniform(0, 90, n).astype("f4"),
        "power": rng.normal(size=(n, 40)).astype("f4"),
    }
    path = tmp_path / "radar.nc"
    with scipy.io.netcdf_file(path, "w") as f:
        f.createDimension("time", None)
        f.createDimension("range", 40)
        for name, data in values.items():
            dims = ("time", "range") if data.ndim == 2 else ("time",)
            f.createVariable(name, data.dtype, dims)[:] = data
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(NetCDF3ToZarr(str(path)).translate()))
    group = zm.open_virtual(refs)
    for name in ("azimuth", "elevation"):
        array = group[name]
        assert isinstance(array, InlineArray), name
        assert array.metadata.chunk_grid.chunk_shape == (n,), name
    assert isinstance(group["power"], ManifestArray)  # 160 bytes a row: referenced
    group.to_store(tmp_path / "m")
    assert not (tmp_path / "m" / "azimuth" / "c" / "1").exists()  # one chunk object
    store = zm.ManifestStore(tmp_path / "m", allowed_prefixes=[str(tmp_path)])
    opened = zarr.open_group(store, mode="r")
    for name, data in values.items():
        np.testing.assert_array_equal(opened[name][...], data, err_msg=name)
