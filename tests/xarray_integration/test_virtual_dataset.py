"""The seed's workflow: files -> virtual datasets -> xarray's combining -> a manifest store
-> ``xr.open_dataset(store, engine="manifest")``, compared with ``xr.open_mfdataset``."""

from __future__ import annotations

from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import zarr_manifest as zm
from xarray_reference import netcdf_reference
from zarr_manifest.xarray import ManifestBackendEntrypoint

ENGINE = ManifestBackendEntrypoint


def reopened(vds: xr.Dataset, tmp_path: Path, name: str = "air.manifest") -> xr.Dataset:
    dest = tmp_path / name
    vds.manifest.to_store(dest)
    with xr.open_dataset(dest, engine=ENGINE, allowed_prefixes=[str(tmp_path / "data")]) as ds:
        return ds.load()


def test_open_virtual_dataset_wraps_manifest_arrays(air_files, no_warnings):
    vds = zm.open_virtual_dataset(air_files[0])
    assert isinstance(vds["air"].variable._data, zm.ManifestArray)
    assert isinstance(vds["land"].variable._data, zm.ManifestArray)
    # dimension coordinates are loaded (decoded), so they index
    assert set(vds.indexes) == {"time", "lat", "lon"}
    assert vds["time"].dtype.kind == "M"
    # referenced variables keep their stored, undecoded attributes
    assert vds["air"].dtype == np.int16
    assert vds["air"].attrs["scale_factor"] == 0.01
    assert vds["air"].attrs["_FillValue"] == -32767
    assert vds.attrs["title"] == "air"
    assert vds.encoding["source"] == air_files[0]
    assert "ManifestArray" in repr(vds)


@pytest.mark.parametrize("how", ["combine_nested", "concat", "combine_by_coords"])
def test_seed_workflow_equals_open_mfdataset(air_files, tmp_path, how, no_warnings):
    vdss = [zm.open_virtual_dataset(p) for p in air_files]
    options = {
        "data_vars": "minimal",
        "coords": "minimal",
        "compat": "override",
        "combine_attrs": "override",
    }
    if how == "combine_nested":
        combined = xr.combine_nested(vdss, concat_dim="time", **options)
    elif how == "concat":
        combined = xr.concat(vdss, dim="time", **options)
    else:
        combined = xr.combine_by_coords(vdss[::-1], **options)
    assert isinstance(combined["air"].variable._data, zm.ManifestArray)
    assert combined["air"].shape == (12, 3, 5)
    xr.testing.assert_identical(reopened(combined, tmp_path), netcdf_reference(air_files))


def test_virtualizarr_script_ports_by_changing_imports(air_files, tmp_path, no_warnings):
    # written the VirtualiZarr 2.x way; only the import differs
    from zarr_manifest import open_virtual_dataset

    vds_list = [
        open_virtual_dataset(
            url,
            loadable_variables=["time", "lat", "lon", "land"],
            drop_variables=["pressure"],
            decode_times=True,
        )
        for url in air_files
    ]
    combined = xr.combine_nested(
        vds_list,
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )
    assert "pressure" not in combined
    assert isinstance(combined["land"].variable._data, np.ndarray)
    assert isinstance(combined["air"].variable._data, zm.ManifestArray)
    got = reopened(combined, tmp_path)
    xr.testing.assert_identical(got, netcdf_reference(air_files).drop_vars("pressure"))


def test_decode_times_false_keeps_numbers(air_files, no_warnings):
    vds = zm.open_virtual_dataset(air_files[1], decode_times=False)
    assert vds["time"].dtype.kind in "iuf"
    assert vds["time"].attrs["units"].startswith("days since 2000-01-05")


def test_loadable_variables_must_exist(air_files):
    with pytest.raises(KeyError, match="nope"):
        zm.open_virtual_dataset(air_files[0], loadable_variables=["nope"])


@pytest.mark.parametrize("parallel", [None, "threads", "processes", "dask"])
def test_open_virtual_mfdataset(air_files, tmp_path, parallel, no_warnings):
    if parallel == "dask":
        vds = zm.open_virtual_mfdataset(
            air_files,
            combine="nested",
            concat_dim="time",
            data_vars="minimal",
            coords="minimal",
            compat="override",
            parallel="dask",
        )
        xr.testing.assert_identical(reopened(vds, tmp_path), netcdf_reference(air_files))
        return
    if parallel == "processes":
        # what a cluster does too: the work and its results travel pickled
        executor: Executor = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
    else:
        executor = ThreadPoolExecutor(2)
    with executor as pool:
        vds = zm.open_virtual_mfdataset(
            air_files,
            combine="nested",
            concat_dim="time",
            data_vars="minimal",
            coords="minimal",
            compat="override",
            parallel=pool if parallel else None,
        )
    xr.testing.assert_identical(reopened(vds, tmp_path), netcdf_reference(air_files))


def test_open_virtual_mfdataset_by_coords_and_preprocess(air_files, tmp_path, no_warnings):
    seen = []

    def preprocess(ds: xr.Dataset) -> xr.Dataset:
        seen.append(ds.encoding["source"])
        return ds.drop_vars("pressure")

    vds = zm.open_virtual_mfdataset(
        air_files[::-1],
        preprocess=preprocess,
        data_vars="minimal",
        coords="minimal",
        compat="override",
    )
    assert sorted(seen) == air_files
    assert vds.indexes["time"].is_monotonic_increasing
    xr.testing.assert_identical(
        reopened(vds, tmp_path), netcdf_reference(air_files).drop_vars("pressure")
    )


def _with_scale(make_air, tmp_path: Path, air_files: list[str], scale: float) -> list[str]:
    odd = make_air(3)
    odd["air"].encoding["scale_factor"] = scale
    path = str(tmp_path / "data" / "air_03.nc")
    odd.to_netcdf(path)
    return [*air_files, path]


def test_differing_scale_factor_is_refused_by_mfdataset(air_files, tmp_path, make_air):
    paths = _with_scale(make_air, tmp_path, air_files, 0.02)
    with pytest.raises(zm.CombineError) as e:
        zm.open_virtual_mfdataset(
            paths, combine="nested", concat_dim="time", data_vars="minimal", coords="minimal"
        )
    message = str(e.value)
    assert "'air'" in message and "scale_factor" in message
    assert "0.01" in message and "0.02" in message
    assert "air_00.nc" in message and "air_03.nc" in message


def test_differing_scale_factor_is_refused_by_xr_concat(air_files, tmp_path, make_air):
    # xarray itself keeps the first input's attributes; the arrays refuse to be joined
    paths = _with_scale(make_air, tmp_path, air_files, 0.02)
    vdss = [zm.open_virtual_dataset(p) for p in paths]
    with pytest.raises(zm.CombineError, match=r"scale_factor is 0\.01 .* and 0\.02"):
        xr.concat(vdss, "time", data_vars="minimal", coords="minimal", compat="override")


def test_accessor_group_nbytes_and_rename_paths(air_files, tmp_path, no_warnings):
    vds = zm.open_virtual_dataset(air_files[0])
    group = vds.manifest.to_group()
    assert isinstance(group, zm.ManifestGroup)
    assert isinstance(group["air"], zm.ManifestArray)
    assert isinstance(group["time"], zm.InlineArray)
    assert group["air"].dimension_names == ("time", "lat", "lon")
    refs = (
        vds["air"].variable._data.manifest.nbytes + vds["pressure"].variable._data.manifest.nbytes
    )
    refs += vds["land"].variable._data.manifest.nbytes
    loaded = sum(vds[n].nbytes for n in ("time", "lat", "lon"))
    assert vds.manifest.nbytes == refs + loaded
    moved = vds.manifest.rename_paths("s3://bucket/air_00.nc")
    assert set(moved["air"].variable._data.manifest.path_table) == {"s3://bucket/air_00.nc"}
    assert set(vds["air"].variable._data.manifest.path_table) != {"s3://bucket/air_00.nc"}


def test_group_to_dataset_round_trip(air_files, no_warnings):
    from zarr_manifest.xarray import dataset_to_group, group_to_dataset

    vds = zm.open_virtual_dataset(air_files[0])
    again = group_to_dataset(dataset_to_group(vds))
    # xarray cannot compare virtual variables it did not see joined (that needs values):
    # compare their references here, and everything else with xarray
    for name in ("air", "pressure", "land"):
        assert again[name].variable._data == vds[name].variable._data
    xr.testing.assert_identical(without_references(again), without_references(vds))
    # the package-level name is the same function
    by_name = zm.group_to_dataset(vds.manifest.to_group())
    xr.testing.assert_identical(without_references(by_name), without_references(vds))


def without_references(ds: xr.Dataset) -> xr.Dataset:
    """The dataset with each ManifestArray swapped for zeros of its shape and dtype."""
    out = ds.copy()
    for name, var in ds.variables.items():
        if isinstance(var._data, zm.ManifestArray):
            out[name] = var.copy(data=np.zeros(var.shape, var.dtype))
    return out


def test_to_kerchunk_reads_back(air_files, tmp_path, no_warnings):
    vds = zm.open_virtual_dataset(air_files[0])
    refs = vds.manifest.to_kerchunk()
    with xr.open_dataset(
        "reference://",
        engine="zarr",
        backend_kwargs={"storage_options": {"fo": refs}, "consolidated": False},
    ) as got:
        xr.testing.assert_identical(got.load(), netcdf_reference(air_files[:1]))


def test_open_virtual_mfdataset_defaults_match_open_mfdataset(air_files, tmp_path, no_warnings):
    # VirtualiZarr's (and xarray's classic) defaults: data_vars="all" concatenates the
    # static "land" along time too, by repeating its references
    vds = zm.open_virtual_mfdataset(air_files, combine="nested", concat_dim="time")
    assert vds["land"].dims == ("time", "lat", "lon")
    with xr.open_mfdataset(
        air_files,
        combine="nested",
        concat_dim="time",
        data_vars="all",
        coords="different",
        compat="no_conflicts",
        join="outer",
        combine_attrs="override",
    ) as expected:
        xr.testing.assert_identical(reopened(vds, tmp_path), expected.load())


def test_loaded_packed_variable_is_written_as_stored(air_files, tmp_path, no_warnings):
    # "air" loaded (decoded: scale_factor, add_offset, _FillValue applied), then written
    # inline, re-encoded with its encoding, and decoded again on reading
    vdss = [
        zm.open_virtual_dataset(p, loadable_variables=["time", "lat", "lon", "air"])
        for p in air_files
    ]
    assert vdss[0]["air"].dtype == np.float64 and np.isnan(vdss[0]["air"].values[0, 0, 0])
    combined = xr.concat(
        vdss,
        "time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )
    group = combined.manifest.to_group()
    assert isinstance(group["air"], zm.InlineArray) and group["air"].dtype == np.int16
    xr.testing.assert_identical(reopened(combined, tmp_path), netcdf_reference(air_files))
