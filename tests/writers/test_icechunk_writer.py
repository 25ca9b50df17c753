"""Writing a ManifestGroup into an icechunk repository as virtual references, read back."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from zarr_manifest import InlineArray, ManifestArray, ManifestGroup, UnsupportedError
from zarr_manifest.builders.kerchunk import from_kerchunk_refs
from zarr_manifest.format.paths import local_path_to_url
from zarr_manifest.writers.icechunk import to_icechunk

icechunk = pytest.importorskip("icechunk")

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
]


def _repo(root: Path, data_dir: Path | None) -> tuple[object, dict[str, object]]:
    config = icechunk.RepositoryConfig.default()
    credentials: dict[str, object] = {}
    if data_dir is not None:
        prefix = local_path_to_url(data_dir) + "/"
        config.set_virtual_chunk_container(
            icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(data_dir)))
        )
        credentials = icechunk.containers_credentials(
            {prefix: icechunk.Credentials.LocalFileSystemAccess()}
        )
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(root)),
        config=config,
        authorize_virtual_chunk_access=credentials or None,
    )
    return repo, credentials


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, ManifestGroup]:
    from kerchunk.hdf import SingleHdf5ToZarr

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / "sample.h5"
    rng = np.random.default_rng(4)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "icechunk"
        f.create_dataset(
            "x", data=rng.normal(size=(16, 12)), chunks=(5, 5), compression="gzip", shuffle=True
        ).attrs["units"] = "s"
        f.create_dataset("be", data=np.arange(10, dtype=">u4"))
        f.create_dataset("scalar", data=np.int8(-3))
        f.create_dataset("names", data=["p", "qq"], dtype=h5py.string_dtype())
        f.create_group("g").create_dataset("y", data=np.arange(8.0), chunks=(3,))
    group = from_kerchunk_refs(SingleHdf5ToZarr(str(path), inline_threshold=0).translate())
    assert isinstance(group["names"], InlineArray) and isinstance(group["x"], ManifestArray)
    return path, group


def test_round_trip(tmp_path: Path, sample: tuple[Path, ManifestGroup]) -> None:
    path, group = sample
    repo, credentials = _repo(tmp_path / "repo", path.parent)
    session = repo.writable_session("main")
    snapshot = to_icechunk(group, session.store, commit_message="virtual sample")
    assert isinstance(snapshot, str) and snapshot
    reopened = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        authorize_virtual_chunk_access=credentials,
    )
    read = reopened.readonly_session("main")
    z = zarr.open_group(read.store, mode="r")
    with h5py.File(path) as f:
        for name in ("x", "be", "scalar", "g/y"):
            np.testing.assert_array_equal(z[name][...], f[name][...], err_msg=name)
    assert list(z["names"][...]) == ["p", "qq"]
    assert z.attrs["title"] == "icechunk" and z["x"].attrs["units"] == "s"
    assert z["x"].metadata.dimension_names == ("phony_dim_0", "phony_dim_1")
    # the big chunks are virtual, not copies
    assert read.chunk_type("/x", [0, 0]) == icechunk.ChunkType.virtual
    assert read.chunk_type("/x", [3, 2]) == icechunk.ChunkType.virtual
    assert read.chunk_type("/names", [0]) != icechunk.ChunkType.virtual


def test_into_a_subgroup_without_commit(tmp_path: Path, sample: tuple[Path, ManifestGroup]) -> None:
    path, group = sample
    repo, _ = _repo(tmp_path / "repo", path.parent)
    session = repo.writable_session("main")
    assert to_icechunk(group, session.store, path="runs/first") is None
    z = zarr.open_group(session.store, mode="r")
    with h5py.File(path) as f:
        np.testing.assert_array_equal(z["runs/first/x"][...], f["x"][...])
    assert session.has_uncommitted_changes


def test_locations_without_a_container_are_refused(
    tmp_path: Path, sample: tuple[Path, ManifestGroup]
) -> None:
    _, group = sample
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    repo, _ = _repo(tmp_path / "repo", elsewhere)
    session = repo.writable_session("main")
    with pytest.raises(UnsupportedError, match=r"'x' -> file://.*sample\.h5"):
        to_icechunk(group, session.store)
    assert not session.has_uncommitted_changes  # refused before writing anything
    readonly = repo.readonly_session("main")
    with pytest.raises(ValueError, match="writable"):
        to_icechunk(ManifestGroup(), readonly.store)
