"""CF-aware combining: files written the way everyone's tools write them.

Each test writes its inputs with xarray's or netCDF4's defaults (per-file time units,
``time_bnds``, static masks, packed integers), builds one virtual dataset, reads it back
through ``ManifestStore`` + ``xr.open_zarr`` and compares the decoded values with
``xr.open_mfdataset`` over the same files — or expects a `CombineError` naming the
variable, the attribute, both values and both files.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import zarr_manifest as zm
from zarr_manifest import CombineError, InlineArray, ManifestArray, ManifestStore

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    # xarray's own note that time_bnds gets its units on its own when writing
    pytest.mark.filterwarnings("ignore:Variable time has datetime type and a bounds variable"),
]


# ---- inputs --------------------------------------------------------------------------------


def xarray_files(
    directory: Path, *, n: int = 3, steps: int = 4, engine: str | None = None, mask_of: Any = None
) -> list[Path]:
    """Daily files written by ``Dataset.to_netcdf`` with its defaults: each file's ``time``
    in "days since <its first date>", ``time_bnds`` without units (CF: it inherits them),
    a static ``mask`` and ``lat_bnds`` stored in every file, a scalar ``crs``."""
    paths = []
    for i in range(n):
        t = pd.date_range("2000-01-01", periods=steps, freq="D") + pd.Timedelta(days=steps * i)
        rng = np.random.default_rng(i)
        mask = np.array([[1, 0], [1, 1], [0, 1]], dtype="i1") if mask_of is None else mask_of(i)
        ds = xr.Dataset(
            {
                "air": (("time", "lat", "lon"), rng.random((steps, 3, 2)).astype("f4")),
                "mask": (("lat", "lon"), mask, {"long_name": "land mask"}),
                "lat_bnds": (("lat", "nv"), [[5.0, 15.0], [15.0, 25.0], [25.0, 35.0]]),
                "time_bnds": (("time", "nv"), np.stack([t, t + pd.Timedelta("1D")], axis=1)),
                "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude"}),
            },
            coords={"time": t, "lat": [10.0, 20.0, 30.0], "lon": [0.0, 5.0]},
        )
        ds.time.attrs["bounds"] = "time_bnds"
        ds.lat.attrs["bounds"] = "lat_bnds"
        path = directory / f"x{i}.nc"
        ds.to_netcdf(path, engine=engine)
        paths.append(path)
    return paths


def packed_files(
    directory: Path, scales: Sequence[float], *, offsets: Sequence[float] | None = None
) -> list[Path]:
    """netCDF4 files with an int16 ``p`` packed by scale_factor/add_offset (netCDF4 packs on
    write), ``time`` in the same units everywhere."""
    paths = []
    for i, scale in enumerate(scales):
        path = directory / f"p{i}.nc"
        with netCDF4.Dataset(path, "w") as ds:
            ds.createDimension("time", None)
            ds.createDimension("x", 2)
            t = ds.createVariable("time", "f8", ("time",))
            t.units = "hours since 2001-01-01"
            p = ds.createVariable("p", "i2", ("time", "x"), fill_value=np.int16(-32767))
            p.scale_factor = np.float32(scale)
            if offsets is not None:
                p.add_offset = np.float32(offsets[i])
            t[:] = np.arange(2) + 2 * i
            p[:] = np.arange(4).reshape(2, 2) + 10 * i
        paths.append(path)
    return paths


# ---- reading back --------------------------------------------------------------------------


def read_back(group: zm.ManifestGroup) -> xr.Dataset:
    """The combined group as a user reads it: ManifestStore + xr.open_zarr, decoded."""
    with zarr.config.set({"array.rectilinear_chunks": True}):
        return xr.open_zarr(ManifestStore(group), consolidated=False, chunks=None).load()


def reference(files: Sequence[Path], engine: str | None = None) -> xr.Dataset:
    """What xarray gives for the same files (the done-when yardstick)."""
    with xr.open_mfdataset(
        [str(f) for f in files],
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        engine=engine,
    ) as ds:
        return ds.load()


def assert_same_decoded(
    ours: xr.Dataset, theirs: xr.Dataset, *, float32_packed: Sequence[str] = ()
) -> None:
    """Every variable: same dimensions, decoded dtype and values (NaN == NaN, NaT == NaT).

    ``float32_packed``: variables packed with a float32 scale_factor/add_offset, which
    xarray decodes in float32 arithmetic from the file but in float64 through JSON
    attributes (see `test_float32_scale_factor_through_json_decodes_to_float64`): equal to
    within float32 rounding.
    """
    assert sorted(ours.variables) == sorted(theirs.variables)
    for name in theirs.variables:
        a, b = ours[name].variable, theirs[name].variable
        assert a.dims == b.dims, name
        if name in float32_packed:
            assert (a.dtype, b.dtype) == (np.float64, np.float32), name
            eps = float(np.finfo(np.float32).eps)
            atol = 4 * eps * (float(np.nanmax(np.abs(b.values))) + 1)
            np.testing.assert_allclose(a.values, b.values, rtol=0, atol=atol)
            continue
        assert a.dtype == b.dtype, (name, a.dtype, b.dtype)
        assert a.equals(b), (name, a.values, b.values)


# ---- 1. per-file time units ----------------------------------------------------------------


def test_xarray_default_files_combine_like_open_mfdataset(tmp_path: Path) -> None:
    files = xarray_files(tmp_path)
    units = {netCDF4.Dataset(f)["time"].units for f in files}
    assert len(units) == 3  # the point of the test: every file has its own time units
    group = zm.build(files, concat_dim="time")
    ours = read_back(group)
    assert_same_decoded(ours, reference(files))
    # the one time axis is in one encoding: the first file's, values re-encoded exactly
    assert group["time"].attributes["units"] == netCDF4.Dataset(files[0])["time"].units
    assert isinstance(group["time"], InlineArray) and isinstance(group["air"], ManifestArray)
    assert ours.time.values[4] == np.datetime64("2000-01-05")


@pytest.mark.parametrize("engine", ["h5netcdf", "scipy"])
def test_other_writers_files_combine_like_open_mfdataset(tmp_path: Path, engine: str) -> None:
    # h5netcdf writes netCDF-4 its own way; scipy writes netCDF3 (the netCDF3 builder)
    pytest.importorskip(engine)
    files = xarray_files(tmp_path, engine=engine)
    group = zm.build(files, concat_dim="time")
    assert_same_decoded(read_back(group), reference(files, engine=engine))


def test_referenced_time_with_per_file_units_is_refused(tmp_path: Path) -> None:
    files = xarray_files(tmp_path)
    with pytest.raises(CombineError) as e:
        zm.build(files, concat_dim="time", load=())
    message = str(e.value)
    for part in ("'time'", "'units'", "days since 2000-01-01", "days since 2000-01-05"):
        assert part in message
    assert "'x0.nc'" in message and "'x1.nc'" in message


def test_time_bounds_inheriting_per_file_units_are_refused_when_referenced(
    tmp_path: Path,
) -> None:
    # time inline but its bounds referenced: each file's raw bounds count days from that
    # file's start, and would all inherit the combined time's units
    files = xarray_files(tmp_path)
    with pytest.raises(CombineError) as e:
        zm.build(files, concat_dim="time", load=["time", "lat", "lon"])
    message = str(e.value)
    assert "'time_bnds'" in message and "inherited from 'time'" in message


def test_inline_time_that_cannot_be_reencoded_exactly_gets_finer_units(tmp_path: Path) -> None:
    # file 1 starts at noon: in integer "days since" the first date it cannot be exact
    paths = []
    for i, start in enumerate(["2000-01-01", "2000-01-03T12:00"]):
        t = pd.date_range(start, periods=2, freq="D")
        ds = xr.Dataset({"v": ("time", [1.0, 2.0])}, coords={"time": t})
        paths.append(tmp_path / f"t{i}.nc")
        ds.to_netcdf(paths[-1])
    group = zm.build(paths, concat_dim="time")
    assert_same_decoded(read_back(group), reference(paths))
    assert group["time"].attributes["units"].startswith("hours since")


# ---- 2. packing ----------------------------------------------------------------------------


def test_differently_packed_variable_is_refused(tmp_path: Path) -> None:
    files = packed_files(tmp_path, [0.1, 0.2])
    with pytest.raises(CombineError) as e:
        zm.build(files, concat_dim="time")
    message = str(e.value)
    assert "'p'" in message and "'scale_factor'" in message
    assert "0.1" in message and "0.2" in message
    assert "'p0.nc'" in message and "'p1.nc'" in message


def test_differing_add_offset_is_refused(tmp_path: Path) -> None:
    files = packed_files(tmp_path, [0.5, 0.5], offsets=[0.0, 100.0])
    with pytest.raises(CombineError, match="'add_offset'"):
        zm.build(files, concat_dim="time")


def test_same_packing_matches_xarray(tmp_path: Path) -> None:
    files = packed_files(tmp_path, [0.1, 0.1, 0.1], offsets=[5.0, 5.0, 5.0])
    group = zm.build(files, concat_dim="time")
    assert isinstance(group["p"], ManifestArray)
    assert_same_decoded(read_back(group), reference(files), float32_packed=["p"])


def test_differently_packed_inline_variable_is_reencoded_or_refused(tmp_path: Path) -> None:
    # loaded, p's values can be re-encoded into the first file's packing only where that is
    # exact: 0.2 * k is a multiple of 0.1 in decimal, but not always in binary floating point
    files = packed_files(tmp_path, [0.25, 0.5])
    group = zm.build(files, concat_dim="time", load=["time", "p"])
    assert group["p"].attributes["scale_factor"] == 0.25
    assert_same_decoded(read_back(group), reference(files), float32_packed=["p"])
    files = packed_files(tmp_path, [0.3, 0.7])
    with pytest.raises(CombineError, match="cannot be re-encoded exactly"):
        zm.build(files, concat_dim="time", load=["time", "p"])


# ---- 3. variables without the concatenation dimension -------------------------------------


def test_static_variables_stored_in_every_file_compare_by_value(tmp_path: Path) -> None:
    files = xarray_files(tmp_path)
    group = zm.build(files, concat_dim="time")
    # still references into the first file: nothing was copied
    assert isinstance(group["mask"], ManifestArray)
    assert group["mask"].manifest.path_table[0].endswith("x0.nc")


def test_a_static_variable_that_differs_is_refused_by_default(tmp_path: Path) -> None:
    files = xarray_files(tmp_path, mask_of=lambda i: np.full((3, 2), i % 2, dtype="i1"))
    with pytest.raises(CombineError) as e:
        zm.build(files, concat_dim="time")
    assert "'mask'" in str(e.value) and "first at index (0, 0): 0 vs 1" in str(e.value)
    assert "compat='override'" in str(e.value)
    # override: the first file's, as xarray's compat="override"
    group = zm.build(files, concat_dim="time", compat="override")
    ours = read_back(group)
    assert_same_decoded(ours, reference(files))
    assert (ours.mask.values == 0).all()


def test_compat_identical_compares_attributes_equals_does_not(tmp_path: Path) -> None:
    def labelled(i: int) -> xr.Dataset:
        ds = xr.Dataset({"v": ("time", [float(i)]), "m": ("x", [1, 2], {"note": f"f{i}"})})
        return ds.assign_coords(time=[i])

    files = []
    for i in range(2):
        files.append(tmp_path / f"a{i}.nc")
        labelled(i).to_netcdf(files[-1])
    group = zm.build(files, concat_dim="time")  # default "equals": values only
    assert group["m"].attributes["note"] == "f0"
    with pytest.raises(CombineError, match=r"'m'.*attributes"):
        zm.build(files, concat_dim="time", compat="identical")
    with pytest.raises(CombineError, match="compat must be"):
        zm.build(files, concat_dim="time", compat="same")  # type: ignore[arg-type]


def test_static_variable_packed_differently_but_equal_decoded_values(tmp_path: Path) -> None:
    # the same decoded field stored two ways (scale 0.5 and 0.25): equal by value
    paths = []
    for i, scale in enumerate([0.5, 0.25]):
        path = tmp_path / f"s{i}.nc"
        with netCDF4.Dataset(path, "w") as ds:
            ds.createDimension("time", None)
            ds.createDimension("x", 3)
            t = ds.createVariable("time", "f8", ("time",))
            t.units = "days since 2000-01-01"
            s = ds.createVariable("s", "i2", ("x",))
            s.scale_factor = scale
            t[:] = [i]
            s[:] = [1.0, 1.5, 2.0]
        paths.append(path)
    group = zm.build(paths, concat_dim="time")
    assert_same_decoded(read_back(group), reference(paths))


def test_compare_limit_says_how_to_override(tmp_path: Path) -> None:
    files = xarray_files(tmp_path)
    with pytest.raises(CombineError) as e:
        zm.build(files, concat_dim="time", compare_limit=4)
    message = str(e.value)
    assert "compare_limit" in message and "compat='override'" in message
    assert zm.build(files, concat_dim="time", compare_limit=None) == zm.build(
        files, concat_dim="time"
    )
    # at the bound (the 3x2 int8 mask: 6 bytes), one input read at a time
    assert zm.build(files, concat_dim="time", compare_limit=6) == zm.build(files, concat_dim="time")


# ---- 4. open_virtual loads dimension coordinates ------------------------------------------


def test_open_virtual_loads_dimension_coordinates_and_their_bounds(tmp_path: Path) -> None:
    (path,) = xarray_files(tmp_path, n=1)
    g = zm.open_virtual(path)
    for name in ("time", "lat", "lon", "time_bnds", "lat_bnds"):
        assert isinstance(g[name], InlineArray), name
    assert isinstance(g["air"], ManifestArray) and isinstance(g["mask"], ManifestArray)
    kept = zm.open_virtual(path, load=())
    assert all(isinstance(a, ManifestArray) for a in kept.arrays.values())


def test_combine_by_coords_of_open_virtual_just_works(tmp_path: Path) -> None:
    files = xarray_files(tmp_path)
    groups = [zm.open_virtual(f) for f in reversed(files)]
    combined = zm.combine_by_coords(groups)
    assert_same_decoded(read_back(combined), reference(files))


# ---- 5. attribute types --------------------------------------------------------------------


def test_float32_scale_factor_through_json_decodes_to_float64(tmp_path: Path) -> None:
    """Documents a limit of plain zarr.json attributes: JSON numbers carry no width, and
    xarray picks the decoded dtype from ``type(scale_factor)``, so a float32 scale_factor
    decodes to float64 (netCDF4 and xarray on the file give float32).  If this ever starts
    failing, zarr/xarray have gained typed attributes and the README's note can go."""
    files = packed_files(tmp_path, [0.5], offsets=[1.0])
    with xr.open_dataset(files[0]) as direct:
        assert direct.p.dtype == np.float32
    ours = read_back(zm.open_virtual(files[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours.p.dtype == np.float64
    np.testing.assert_array_equal(ours.p.values, direct.p.values.astype("f8"))


# ---- the command line: same defaults as the API --------------------------------------------


def test_cli_build_defaults_agree_with_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zarr_manifest.cli import main
    from zarr_manifest.demo import make_sample_files

    # the README's command, on the demo's files, with no --load
    files = make_sample_files(tmp_path / "data")
    out = tmp_path / "air.manifest"
    pattern = str(tmp_path / "data" / "*.nc")
    code = main(["build", pattern, "-o", str(out), "--concat-dim", "time", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    written = zm.ManifestGroup.from_store(str(out))
    assert written == zm.build(files, concat_dim="time")
    assert isinstance(written["time"], InlineArray) and isinstance(written["lat"], InlineArray)
    # --no-load keeps the coordinates referenced: lat/lon then compare by value
    code = main(["build", pattern, "-o", str(out), "--concat-dim", "time", "--no-load",
                 "--overwrite", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert isinstance(zm.ManifestGroup.from_store(str(out))["lat"], ManifestArray)


def test_cli_compat_default_refuses_differing_static_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zarr_manifest.cli import main

    files = xarray_files(tmp_path, mask_of=lambda i: np.full((3, 2), i, dtype="i1"))
    out = tmp_path / "x.manifest"
    argv = ["build", *map(str, files), "-o", str(out), "--concat-dim", "time", "--no-progress"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "CombineError" in err and "'mask'" in err and "compat='override'" in err
    assert not out.exists()
    assert main([*argv, "--compat", "override"]) == 0
    assert read_back(zm.ManifestGroup.from_store(str(out))).mask.values.max() == 0
