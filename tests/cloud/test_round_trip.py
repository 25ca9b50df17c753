"""From cloud globbing to values, on the three clouds' emulators: S3 (moto), Azure Blob
(Azurite) and GCS (fake-gcs-server), each started by the session's fixtures on 127.0.0.1.

netCDF4 files written by xarray with its default settings are uploaded; a virtual dataset
is built from them through a glob URL, written as a manifest store into the same bucket
(twice: the second write replaces the first conditionally), and read back through
`ManifestStore`, the xarray engine and the command line, then compared with xarray reading
the local originals.  Credentials are passed explicitly,
as one ``storage_options`` dict per call (``--storage-option`` on the command line): the
emulators' configurations are nothing obstore could find in the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from emulated_cloud import Cloud

import zarr_manifest as zm
from xarray_reference import netcdf_reference
from zarr_manifest.cli import main

N_FILES = 3


@pytest.fixture(scope="module")
def netcdf_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small netCDF4 files along ``time``, written by xarray with default settings."""
    root = tmp_path_factory.mktemp("netcdf")
    rng = np.random.default_rng(15)
    paths = []
    for i in range(N_FILES):
        time = pd.date_range("2026-01-01", periods=2, freq="D") + pd.Timedelta(days=2 * i)
        ds = xr.Dataset(
            {
                "t2m": (
                    ("time", "lat", "lon"),
                    rng.normal(280, 5, (2, 3, 4)).astype("float32"),
                    {"units": "K", "long_name": "2 m temperature"},
                ),
                "flag": (("time", "lat"), rng.integers(0, 9, (2, 3)).astype("int16")),
            },
            coords={"time": time, "lat": [10.0, 20.0, 30.0], "lon": [0.0, 1.0, 2.0, 3.0]},
            attrs={"title": "emulated clouds"},
        )
        path = root / f"part{i}.nc"
        ds.to_netcdf(path)
        paths.append(path)
    return paths


def _upload(cloud: Cloud, netcdf_files: list[Path]) -> None:
    cloud.upload_dir(netcdf_files[0].parent, cloud.bucket, "data")


def test_api_glob_build_write_read(cloud: Cloud, netcdf_files: list[Path]) -> None:
    _upload(cloud, netcdf_files)
    options = cloud.storage_options
    store_url = cloud.url("virtual/store")

    group = zm.build(cloud.url("data/*.nc"), concat_dim="time", storage_options=options)
    group.to_store(store_url, storage_options=options)
    # a second write replaces the store (a conditional replacement of its snapshot)
    group.to_store(store_url, overwrite=True, storage_options=options)

    allowed = [cloud.url("data/")]
    store = zm.ManifestStore(store_url, allowed_prefixes=allowed, storage_options=options)
    with xr.open_zarr(store, consolidated=False, zarr_format=3) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(netcdf_files, engine="netcdf4"))

    with xr.open_dataset(
        store_url, engine="manifest", allowed_prefixes=allowed, storage_options=options
    ) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(netcdf_files, engine="netcdf4"))

    read_back = zm.ManifestGroup.from_store(store_url, storage_options=options)
    assert read_back.arrays["t2m"].shape == (2 * N_FILES, 3, 4)


def _cli_options(options: dict[str, Any], tmp_path: Path) -> list[str]:
    """``--storage-option KEY=VALUE`` arguments saying what ``options`` says."""
    args = []
    for key, value in options.items():
        if key == "service_account_key":
            # as a GCS user would: the service account's key file
            key_file = tmp_path / "service-account.json"
            key_file.write_text(value)
            key, value = "service_account", str(key_file)
        if isinstance(value, dict):
            args += [f"--storage-option={key}.{k}={str(v).lower()}" for k, v in value.items()]
        else:
            args.append(
                f"--storage-option={key}={str(value).lower() if isinstance(value, bool) else value}"
            )
    return args


def test_cli_glob_build_then_read(
    cloud: Cloud, netcdf_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _upload(cloud, netcdf_files)
    options = _cli_options(cloud.storage_options, tmp_path)
    store_url = cloud.url("cli/store")
    code = main(
        [
            "build",
            cloud.url("data/*.nc"),
            "-o",
            store_url,
            "--concat-dim",
            "time",
            "--no-progress",
            *options,
        ]
    )
    assert code == 0, capsys.readouterr().err
    allowed = [cloud.url("data/")]
    code = main(["validate", store_url] + [f"--allow={p}" for p in allowed] + options)
    assert code == 0, capsys.readouterr()

    with xr.open_dataset(
        store_url,
        engine="manifest",
        allowed_prefixes=allowed,
        storage_options=cloud.storage_options,
    ) as ds:
        xr.testing.assert_identical(ds.load(), netcdf_reference(netcdf_files, engine="netcdf4"))
