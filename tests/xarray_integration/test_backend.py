"""``engine="manifest"``: xarray's open_dataset / open_mfdataset / open_datatree on manifest
stores, compared with xarray's reading of the netCDF4 files themselves."""

from __future__ import annotations

import pickle
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import obstore
import pytest
import xarray as xr
import zarr
from xarray.backends import plugins

import zarr_manifest as zm
from xarray_reference import netcdf_reference
from zarr_manifest.xarray import ManifestBackendEntrypoint
from zarr_manifest.xarray.backend import FUSED_PIPELINE

ENGINE = ManifestBackendEntrypoint
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stores(air_files: list[str], tmp_path: Path) -> dict[str, str]:
    """Per file a manifest store, and one of all three joined along time."""
    out = {}
    for path in air_files:
        dest = tmp_path / (Path(path).stem + ".manifest")
        zm.open_virtual(path, load=["time", "lat", "lon"]).to_store(dest)
        out[Path(path).stem] = str(dest)
    joined = virtual_joined(air_files).manifest.to_group()
    joined.to_store(tmp_path / "all.manifest")
    out["all"] = str(tmp_path / "all.manifest")
    return out


def virtual_joined(paths: list[str]) -> xr.Dataset:
    """The three files joined along time as a virtual dataset (xarray's combining)."""
    return zm.open_virtual_mfdataset(
        paths,
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )


def test_entry_point_names_this_backend():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    module, _, name = declared["xarray.backends"]["manifest"].partition(":")
    assert getattr(import_module(module), name) is ManifestBackendEntrypoint


def test_engine_by_name_when_registered(stores, air_files, monkeypatch, no_warnings):
    # as the installed entry point registers it (the venv may predate the entry point)
    engines = dict(plugins.list_engines())
    engines["manifest"] = ManifestBackendEntrypoint()
    monkeypatch.setattr(plugins, "list_engines", lambda: engines)
    with xr.open_dataset(
        stores["air_00"], engine="manifest", allowed_prefixes=[str(Path(air_files[0]).parent)]
    ) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(air_files[:1]))
    # and guessed, without engine=
    assert plugins.guess_engine(stores["air_00"]) == "manifest"


def test_guess_can_open(stores, air_files, tmp_path):
    backend = ManifestBackendEntrypoint()
    assert backend.guess_can_open(stores["all"])
    assert backend.guess_can_open(Path(stores["all"]))
    assert backend.guess_can_open("file://" + stores["all"])
    assert not backend.guess_can_open(air_files[0])
    plain = tmp_path / "plain.zarr"
    xr.Dataset({"a": ("x", np.arange(3))}).to_zarr(plain, zarr_format=3, consolidated=False)
    assert not backend.guess_can_open(str(plain))
    assert not backend.guess_can_open(str(tmp_path / "missing"))


def test_open_dataset_decodes_like_the_files(stores, air_files, no_warnings):
    folder = str(Path(air_files[0]).parent)
    with xr.open_dataset(stores["all"], engine=ENGINE, allowed_prefixes=[folder]) as ds:
        assert ds["air"].dtype == np.float64  # scale_factor applied, _FillValue masked
        xr.testing.assert_identical(ds.load(), netcdf_reference(air_files))
    # the same as xarray's zarr engine over the store
    store = zm.ManifestStore(stores["all"], allowed_prefixes=[folder])
    with (
        xr.open_zarr(store, consolidated=False, chunks=None) as plain,
        xr.open_dataset(
            stores["all"], engine=ENGINE, allowed_prefixes=[folder], virtual_shard_bytes=None
        ) as ours,
    ):
        xr.testing.assert_identical(ours.load(), plain.load())
    # decode options pass through
    with xr.open_dataset(
        stores["all"], engine=ENGINE, allowed_prefixes=[folder], mask_and_scale=False
    ) as raw:
        assert raw["air"].dtype == np.int16


def test_sources_outside_are_refused_by_default(stores, air_files):
    with (
        xr.open_dataset(stores["all"], engine=ENGINE) as ds,
        pytest.raises(zm.SourceNotAllowedError),
    ):
        ds["air"].load()


def test_arrays_keep_the_fused_pipeline(stores, air_files, no_warnings):
    folder = str(Path(air_files[0]).parent)
    assert zarr.config.get("codec_pipeline.path") != FUSED_PIPELINE  # not the user's setting
    with xr.open_dataset(stores["all"], engine=ENGINE, allowed_prefixes=[folder]) as ds:
        # also after a trip to another process (dask.distributed pickles the arrays)
        for opened in (ds, pickle.loads(pickle.dumps(ds))):
            wrapper = opened["air"].variable._data
            while not hasattr(wrapper, "_array"):
                wrapper = wrapper.array
            pipeline = wrapper._array._async_array.codec_pipeline
            assert type(pipeline).__name__ == "FusedCodecPipeline"
        xr.testing.assert_identical(opened.load(), netcdf_reference(air_files))
    assert zarr.config.get("codec_pipeline.path") != FUSED_PIPELINE


def test_dask_chunks_default_to_virtual_shards(stores, air_files, no_warnings):
    folder = str(Path(air_files[0]).parent)
    with xr.open_dataset(stores["all"], engine=ENGINE, allowed_prefixes=[folder], chunks={}) as ds:
        shards = ds["air"].encoding["shards"]
        assert shards is not None and shards[0] > ds["air"].encoding["chunks"][0]
        assert ds["air"].chunks == tuple(
            (s,) * (n // s) + ((n % s,) if n % s else ())
            for s, n in zip(shards, ds["air"].shape, strict=True)
        )
        xr.testing.assert_identical(ds.load(), netcdf_reference(air_files))
    with xr.open_dataset(
        stores["all"], engine=ENGINE, allowed_prefixes=[folder], chunks={}, virtual_shard_bytes=None
    ) as ds:
        assert ds["air"].encoding["shards"] is None
        assert ds["air"].chunks[0] == (2,) * 6  # the files' chunks


def test_open_mfdataset(stores, air_files, no_warnings):
    folder = str(Path(air_files[0]).parent)
    paths = [stores[f"air_{i:02d}"] for i in range(3)]
    with xr.open_mfdataset(
        paths,
        engine=ENGINE,
        allowed_prefixes=[folder],
        combine="by_coords",
        data_vars="minimal",
        coords="minimal",
        compat="override",
    ) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(air_files))


def test_open_datatree(air_files, tmp_path, no_warnings):
    folder = str(Path(air_files[0]).parent)
    tree = zm.ManifestGroup(
        groups={
            "first": zm.open_virtual(air_files[0], load=["time", "lat", "lon"]),
            "second": zm.open_virtual(air_files[1], load=["time", "lat", "lon"]),
        },
        attributes={"title": "two"},
    )
    tree.to_store(tmp_path / "tree.manifest")
    assert ManifestBackendEntrypoint().guess_can_open(str(tmp_path / "tree.manifest"))
    with xr.open_datatree(
        tmp_path / "tree.manifest", engine=ENGINE, allowed_prefixes=[folder]
    ) as dt:
        assert dt.attrs["title"] == "two"
        xr.testing.assert_identical(
            dt["first"].to_dataset().load(), netcdf_reference(air_files[:1])
        )
        xr.testing.assert_identical(
            dt["second"].to_dataset().load(), netcdf_reference(air_files[1:2])
        )
    with xr.open_dataset(
        tmp_path / "tree.manifest", engine=ENGINE, group="second", allowed_prefixes=[folder]
    ) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(air_files[1:2]))


def test_in_memory_group_and_store(air_files, no_warnings):
    group = virtual_joined(air_files).manifest.to_group()
    with xr.open_dataset(group, engine=ENGINE) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(air_files))
    with xr.open_dataset(zm.ManifestStore(group), engine=ENGINE) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(air_files))
    with pytest.raises(ValueError, match="set allowed_prefixes"):
        xr.open_dataset(zm.ManifestStore(group), engine=ENGINE, allowed_prefixes=["/"])


def test_dask_distributed_local_cluster(stores, air_files, no_warnings):
    distributed = pytest.importorskip("dask.distributed")
    folder = str(Path(air_files[0]).parent)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        with xr.open_dataset(
            stores["all"], engine=ENGINE, allowed_prefixes=[folder], chunks={}
        ) as ds:
            got = ds.compute()
        xr.testing.assert_identical(got, netcdf_reference(air_files))


def test_remote_store_with_storage_options(air_files, tmp_path, s3_server, s3_bucket, no_warnings):
    # the files and the store in a bucket that needs credentials, given as storage_options
    config = s3_server.obstore_config()
    s3_server.upload_dir(Path(air_files[0]).parent, s3_bucket, "data")
    urls = [f"s3://{s3_bucket}/data/{Path(p).name}" for p in air_files]
    vds = zm.open_virtual_mfdataset(
        urls,
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
        storage_options=config,
    )
    vds.manifest.to_store(tmp_path / "all.manifest")
    s3_server.upload_dir(tmp_path / "all.manifest", s3_bucket, "stores/all.manifest")
    options = {k: v for k, v in config.items() if k != "client_options"}
    sources = zm.SourceRegistry.from_urls(
        [f"s3://{s3_bucket}/data/"], config=options, client_options=config["client_options"]
    )
    url = f"s3://{s3_bucket}/stores/all.manifest"
    with xr.open_dataset(url, engine=ENGINE, storage_options=config, registry=sources) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(air_files))
    # without them obstore has no endpoint or credentials for the store
    with pytest.raises(obstore.exceptions.BaseError):
        xr.open_dataset(url, engine=ENGINE, registry=sources)
