"""An Icechunk repository as a source: native chunks written by zarr through a session,
virtual references into netCDF4 files, inline chunks; values compared with zarr reading the
repository through icechunk."""

from __future__ import annotations

import os
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pytest
import zarr

import zarr_manifest as zm
from zarr_manifest import (
    BuildError,
    InlineArray,
    ManifestArray,
    ManifestGroup,
    ManifestStore,
    UnsupportedError,
)
from zarr_manifest.builders import detect_format

icechunk = pytest.importorskip("icechunk")

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
    # arrays with inline chunks beside native ones are loaded, with this warning
    pytest.mark.filterwarnings("ignore:.*inline in icechunk's manifest:UserWarning"),
]


def _netcdf(path: Path, offset: float) -> list[tuple[tuple[int, ...], int, int]]:
    """A netCDF4 file (netCDF4's defaults, chunked, uncompressed); its chunks' places."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("t", 6)
        ds.createDimension("x", 4)
        v = ds.createVariable("v", "f4", ("t", "x"), chunksizes=(3, 4))
        v[:] = np.arange(24, dtype="f4").reshape(6, 4) + offset
    with h5py.File(path) as f:
        info = [f["v"].id.get_chunk_info(i) for i in range(f["v"].id.get_num_chunks())]
    return [(i.chunk_offset, i.byte_offset, i.size) for i in info]


def _repository(tmp_path: Path) -> Any:
    """A repository on main: native, inline, mixed and virtual (two netCDF4 files) arrays."""
    data = tmp_path / "data"
    data.mkdir()
    prefix = data.resolve().as_uri() + "/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(data)))
    )
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=config,
        authorize_virtual_chunk_access={prefix: icechunk.credentials.LocalFileSystemAccess},
    )
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="w")
    root.attrs["title"] = "icechunk source"
    native = root.create_array(
        "native", shape=(100, 10), chunks=(10, 10), dtype="f8", dimension_names=["y", "x"]
    )
    native[:] = np.random.default_rng(0).normal(size=(100, 10))
    native.attrs["units"] = "K"
    tiny = root.create_array("tiny", shape=(4,), chunks=(4,), dtype="i2")
    tiny[:] = [1, 2, 3, 4]  # under icechunk's 512-byte threshold: inline in its manifest
    mixed = root.create_array("mixed", shape=(40, 10), chunks=(10, 10), dtype="f8")
    values = np.ones((40, 10))
    values[20:] = np.random.default_rng(1).normal(size=(20, 10))  # ones compress to inline
    mixed[:] = values
    sub = root.create_group("sub")
    sub.create_array(
        "v",
        shape=(12, 4),
        chunks=(3, 4),
        dtype="f4",
        compressors=None,
        fill_value=np.nan,
        dimension_names=["t", "x"],
    )
    places = {n: _netcdf(data / f"{n}.nc", offset=100.0 * i) for i, n in enumerate("ab")}
    # a time after the files were written (icechunk keeps whole seconds)
    written = datetime.now(UTC) + timedelta(seconds=2)
    for n, name in enumerate("ab"):
        for (t, _), offset, size in places[name]:
            key = f"sub/v/c/{2 * n + t // 3}/0"
            # as VirtualiZarr's writer does: icechunk refuses the file if modified later
            session.store.set_virtual_ref(
                key, f"{prefix}{name}.nc", offset=offset, length=size, checksum=written
            )
    session.commit("first")
    return repo


def _reference(repo: Any, **version: Any) -> zarr.Group:
    return zarr.open_group(repo.readonly_session(**(version or {"branch": "main"})).store, mode="r")


def _assert_reads_like(built: ManifestGroup, reference: zarr.Group) -> None:
    virtual = zarr.open_group(ManifestStore(built), mode="r")
    assert virtual.attrs.asdict() == reference.attrs.asdict()
    expected = {p: a for p, a in reference.members(max_depth=None) if isinstance(a, zarr.Array)}
    got = {p for p, n in built.walk() if isinstance(n, ManifestArray | InlineArray)}
    assert got == set(expected)
    for path, array in expected.items():
        assert virtual[path].attrs.asdict() == array.attrs.asdict(), path
        np.testing.assert_array_equal(virtual[path][...], array[...], err_msg=path)


def test_native_virtual_and_inline_chunks(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    path = tmp_path / "repo"
    assert detect_format(path) == "icechunk"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = zm.open_virtual(path, load=())
    _assert_reads_like(built, _reference(repo))
    repo_url = path.resolve().as_uri()
    native = built["native"]
    assert isinstance(native, ManifestArray)
    assert all(p.startswith(f"{repo_url}/chunks/") for p in native.manifest.path_table)
    assert len(native.manifest.path_table) == 10
    for p in native.manifest.path_table:  # each native chunk is an object of its own
        assert os.path.isfile(p.removeprefix("file://"))
    virtual = built["sub/v"]
    assert isinstance(virtual, ManifestArray)
    data = (tmp_path / "data").resolve().as_uri()
    assert sorted(virtual.manifest.path_table) == [f"{data}/a.nc", f"{data}/b.nc"]
    assert isinstance(built["tiny"], InlineArray)
    assert isinstance(built["mixed"], InlineArray)
    messages = [str(w.message) for w in caught if "inline in icechunk" in str(w.message)]
    assert len(messages) == 1 and "'mixed'" in messages[0]
    with netCDF4.Dataset(tmp_path / "data" / "b.nc") as nc:
        np.testing.assert_array_equal(
            zarr.open_group(ManifestStore(built), mode="r")["sub/v"][6:], nc["v"][...]
        )


def test_branch_tag_snapshot_group_and_drop(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    first = repo.lookup_branch("main")
    repo.create_tag("v1", first)
    repo.create_branch("dev", first)
    session = repo.writable_session("dev")
    zarr.open_array(session.store, path="native", mode="r+")[:10] = -1.0
    session.commit("dev edit")
    path = tmp_path / "repo"
    dev = zm.open_virtual(path, options={"branch": "dev"}, load=())
    _assert_reads_like(dev, _reference(repo, branch="dev"))
    for version in ({"tag": "v1"}, {"snapshot_id": first}, {}):
        built = zm.open_virtual(path, options=version, load=())
        assert zarr.open_group(ManifestStore(built), mode="r")["native"][0, 0] != -1.0
    with pytest.raises(BuildError, match="cannot open branch 'nope'"):
        zm.open_virtual(path, options={"branch": "nope"})
    sub = zm.open_virtual(path, group="sub", load=())
    _assert_reads_like(
        sub, zarr.open_group(repo.readonly_session("main").store, path="sub", mode="r")
    )
    dropped = zm.open_virtual(path, drop=["mixed", "sub"], load=())
    assert sorted(dropped.arrays) == ["native", "tiny"] and not dropped.groups


def test_a_repository_object(tmp_path: Path) -> None:
    from zarr_manifest.builders.icechunk import build_icechunk

    repo = _repository(tmp_path)
    url = (tmp_path / "repo").resolve().as_uri()
    built = build_icechunk(repo, repository_url=url)
    _assert_reads_like(built, _reference(repo))
    built = build_icechunk(repo.readonly_session("main"), repository_url=url + "/")
    _assert_reads_like(built, _reference(repo))
    with pytest.raises(BuildError, match="'native' has native chunks; pass repository_url"):
        build_icechunk(repo)


def test_a_native_chunk_not_where_icechunk_puts_it_is_refused(tmp_path: Path) -> None:
    _repository(tmp_path)
    chunks = tmp_path / "repo" / "chunks"
    for f in chunks.iterdir():
        f.rename(tmp_path / f.name)  # moved away: the references would point at nothing
    with pytest.raises(BuildError, match=r"'native': native chunk .* is not at"):
        zm.open_virtual(tmp_path / "repo", drop=["mixed"], load=())
    # an array read at build time (inline chunks beside native ones) says what failed
    with pytest.raises(BuildError, match="'mixed': icechunk cannot read it"):
        zm.open_virtual(tmp_path / "repo", drop=["native"], load=())


def test_a_virtual_file_changed_since_the_commit_is_refused(tmp_path: Path) -> None:
    """Icechunk refuses the file (its reference's modification-time checksum); so does the
    build, rather than reference bytes that are no longer the ones committed."""
    _repository(tmp_path)
    changed = tmp_path / "data" / "b.nc"
    later = changed.stat().st_mtime + 3600
    os.utime(changed, (later, later))
    with pytest.raises(BuildError, match=r"'sub/v': icechunk refuses .* in file://.*/b\.nc"):
        zm.open_virtual(tmp_path / "repo", load=())
    # the other arrays do not reference it
    zm.open_virtual(tmp_path / "repo", drop=["sub"], load=())


def test_storage_options_icechunk_cannot_take_are_refused(tmp_path: Path) -> None:
    """A key with no icechunk equivalent is named, not dropped: a credential that silently
    does not apply reads as someone else or fails later with an unrelated message."""
    from zarr_manifest.builders._icechunk_storage import icechunk_storage

    with pytest.raises(UnsupportedError, match=r"\['imdsv1_fallback'\] have no equivalent"):
        icechunk_storage("s3://bucket/repo", {"region": "x", "imdsv1_fallback": "true"})
    with pytest.raises(UnsupportedError, match="credential_provider"):
        icechunk_storage("s3://bucket/repo", {"credential_provider": object()})
    with pytest.raises(UnsupportedError, match="account_name"):
        icechunk_storage("az://container/repo", {})
    # the obstore spellings map, and prefix keys choose options as everywhere else
    assert icechunk_storage(
        "s3://bucket/repo",
        {"s3://bucket/": {"aws_region": "eu-west-1", "skip_signature": "true"}},
    )


def test_a_remote_repository_over_http_is_read_by_url(
    tmp_path: Path, clean_range_server: Any, serve_bytes: Any
) -> None:
    repo = _repository(tmp_path)
    root = tmp_path / "repo"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = serve_bytes(path.read_bytes(), "icerepo/" + path.relative_to(root).as_posix())
    url = clean_range_server.url_for(rel).split("/icerepo/")[0] + "/icerepo"
    assert detect_format(url) == "icechunk"
    built = zm.open_virtual(url, load=(), drop=["sub"])
    virtual = zarr.open_group(ManifestStore(built, allowed_prefixes=[url + "/"]), mode="r")
    np.testing.assert_array_equal(virtual["native"][...], _reference(repo)["native"][...])
