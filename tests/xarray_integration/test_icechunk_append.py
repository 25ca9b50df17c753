"""``ds.manifest.to_icechunk(store)`` and appending along a dimension, read back with
xarray and compared with the netCDF4 files."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

import zarr_manifest as zm
from xarray_reference import netcdf_reference
from zarr_manifest.format.paths import local_path_to_url

icechunk = pytest.importorskip("icechunk")

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
]


def repository(root: Path, data_dir: Path):
    config = icechunk.RepositoryConfig.default()
    prefix = local_path_to_url(data_dir) + "/"
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(data_dir)))
    )
    credentials = icechunk.containers_credentials(
        {prefix: icechunk.Credentials.LocalFileSystemAccess()}
    )
    return icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(root)),
        config=config,
        authorize_virtual_chunk_access=credentials,
    )


def read(repo) -> xr.Dataset:
    session = repo.readonly_session("main")
    with xr.open_zarr(session.store, consolidated=False, chunks=None) as ds:
        return ds.load()


def test_write_then_append_along_time(air_files, tmp_path):
    repo = repository(tmp_path / "repo", Path(air_files[0]).parent)
    first, second, third = (zm.open_virtual_dataset(p) for p in air_files)
    session = repo.writable_session("main")
    first.manifest.to_icechunk(session.store, commit_message="first file")
    xr.testing.assert_identical(read(repo), netcdf_reference(air_files[:1]))
    session = repo.writable_session("main")
    both = xr.concat(
        [second, third], "time", data_vars="minimal", coords="minimal", compat="override"
    )
    both.manifest.to_icechunk(session.store, append_dim="time", commit_message="two more")
    xr.testing.assert_identical(read(repo), netcdf_reference(air_files))


def test_append_refuses_a_different_scale_factor(air_files, tmp_path, make_air):
    repo = repository(tmp_path / "repo", Path(air_files[0]).parent)
    session = repo.writable_session("main")
    zm.open_virtual_dataset(air_files[0]).manifest.to_icechunk(session.store, commit_message="1")
    odd = make_air(1)
    odd["air"].encoding["scale_factor"] = 0.02
    path = Path(air_files[0]).parent / "odd.nc"
    odd.to_netcdf(path)
    session = repo.writable_session("main")
    with pytest.raises(zm.CombineError, match=r"'air'.*scale_factor"):
        zm.open_virtual_dataset(str(path)).manifest.to_icechunk(session.store, append_dim="time")
    # nothing was written: the stored dataset is still the first file
    assert not session.has_uncommitted_changes
    xr.testing.assert_identical(read(repo), netcdf_reference(air_files[:1]))
