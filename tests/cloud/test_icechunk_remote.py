"""An Icechunk repository in a bucket of each emulated cloud, opened by its URL with the
one ``storage_options`` dict: icechunk's own clients read the repository, obstore (with the
same dict) its native chunks; values compared with zarr reading the repository through
icechunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from emulated_cloud import Cloud

import zarr_manifest as zm
from zarr_manifest import InlineArray, ManifestArray, ManifestStore
from zarr_manifest.builders import detect_format

icechunk = pytest.importorskip("icechunk")

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
]


def _local_repository(path: Path) -> zarr.Group:
    """A repository written by zarr through icechunk with its defaults: native chunks,
    and an array small enough for icechunk to keep inline in its manifest."""
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="w")
    root.attrs["title"] = "in a bucket"
    native = root.create_array(
        "native", shape=(60, 10), chunks=(10, 10), dtype="f8", dimension_names=["y", "x"]
    )
    native[:] = np.random.default_rng(3).normal(size=(60, 10))
    root.create_array("tiny", shape=(4,), chunks=(4,), dtype="i2")[:] = [1, 2, 3, 4]
    session.commit("first")
    return zarr.open_group(repo.readonly_session(branch="main").store, mode="r")


def test_a_repository_in_a_bucket_by_url(cloud: Cloud, tmp_path: Path) -> None:
    reference = _local_repository(tmp_path / "repo")
    cloud.upload_dir(tmp_path / "repo", cloud.bucket, "repo")
    url = cloud.url("repo")
    options = cloud.storage_options
    assert detect_format(url, **options) == "icechunk"
    built = zm.open_virtual(url, load=(), storage_options=options)
    native, tiny = built["native"], built["tiny"]
    assert isinstance(native, ManifestArray) and isinstance(tiny, InlineArray)
    assert all(p.startswith(f"{url}/chunks/") for p in native.manifest.path_table)
    store = ManifestStore(built, allowed_prefixes=[f"{url}/"], storage_options=options)
    virtual = zarr.open_group(store, mode="r")
    assert virtual.attrs.asdict() == reference.attrs.asdict()
    for name in ("native", "tiny"):
        np.testing.assert_array_equal(virtual[name][...], reference[name][...], err_msg=name)
