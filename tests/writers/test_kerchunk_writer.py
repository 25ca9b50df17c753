"""Exporting a ManifestGroup as kerchunk references (JSON, parquet), read back the kerchunk way:
fsspec's ReferenceFileSystem + zarr (Zarr v2), compared with the source files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import h5py
import netCDF4
import numcodecs
import numpy as np
import pytest
import zarr

from zarr_manifest import InlineArray, ManifestArray, ManifestGroup, UnsupportedError
from zarr_manifest.builders.kerchunk import build_kerchunk, from_kerchunk_refs
from zarr_manifest.manifest import ChunkManifest
from zarr_manifest.writers.kerchunk import to_kerchunk, v3_metadata_to_v2

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*fastparquet.*"),
    pytest.mark.filterwarnings("ignore:.*infer_string.*"),
]


def _rfs(fo: Any) -> zarr.Group:
    fs = fsspec.filesystem("reference", fo=fo, remote_protocol="file")
    return zarr.open_group(fs.get_mapper(), mode="r", zarr_format=2)


@pytest.fixture
def h5_group(tmp_path: Path) -> tuple[Path, ManifestGroup]:
    from kerchunk.hdf import SingleHdf5ToZarr

    path = tmp_path / "data file.h5"  # a space: fsspec paths are written unencoded
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "export"
        f.create_dataset(
            "x", data=rng.normal(size=(12, 10)), chunks=(5, 4), compression="gzip", shuffle=True
        ).attrs["units"] = "m"
        f.create_dataset("be", data=np.arange(6, dtype=">i8"))
        f.create_dataset("scalar", data=np.float32(2.5))
        f.create_dataset("names", data=["a", "bb", "ccc"], dtype=h5py.string_dtype())
        f.create_group("sub").create_dataset("y", data=np.arange(9, dtype="u1").reshape(3, 3))
    refs = SingleHdf5ToZarr(str(path), inline_threshold=0).translate()
    return path, from_kerchunk_refs(refs)


def test_json_export_reads_like_the_source(
    tmp_path: Path, h5_group: tuple[Path, ManifestGroup]
) -> None:
    path, group = h5_group
    dest = tmp_path / "out.json"
    refs = to_kerchunk(group, dest)
    assert refs["version"] == 1
    assert json.loads(dest.read_text()) == refs
    assert refs["refs"]["x/0.0"][0] == str(path)  # a plain local path, not a file:// URL
    assert isinstance(refs["refs"]["names/0"], str) and refs["refs"]["names/0"].startswith(
        "base64:"
    )
    z = _rfs(str(dest))
    with h5py.File(path) as f:
        for name in ("x", "be", "scalar", "sub/y"):
            np.testing.assert_array_equal(z[name][...], f[name][...], err_msg=name)
        assert list(z["names"][...]) == ["a", "bb", "ccc"]
    assert z.attrs["title"] == "export"
    assert z["x"].attrs["units"] == "m"
    assert z["x"].attrs["_ARRAY_DIMENSIONS"] == ["phony_dim_0", "phony_dim_1"]
    assert z["be"].dtype == np.dtype(">i8")
    # and back: the same group
    again = from_kerchunk_refs(refs)
    for name in ("x", "be", "scalar", "sub/y"):
        assert again[name] == group[name], name
    assert again["names"] == group["names"]


def test_parquet_export(tmp_path: Path, h5_group: tuple[Path, ManifestGroup]) -> None:
    path, group = h5_group
    dest = tmp_path / "out.parq"
    to_kerchunk(group, dest, format="parquet", record_size=4)
    assert (dest / ".zmetadata").exists() and (dest / "x" / "refs.1.parq").exists()
    z = _rfs(str(dest))
    with h5py.File(path) as f:
        for name in ("x", "be", "sub/y"):
            np.testing.assert_array_equal(z[name][...], f[name][...], err_msg=name)
    back = build_kerchunk(dest)
    assert back["x"] == group["x"] and back["sub/y"] == group["sub/y"]
    with pytest.raises(FileExistsError):
        to_kerchunk(group, dest, format="parquet")
    to_kerchunk(group, dest, format="parquet", overwrite=True)


def test_netcdf3_builder_export(tmp_path: Path) -> None:
    from zarr_manifest.builders.netcdf3 import build_netcdf3

    path = tmp_path / "classic.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createDimension("x", 3)
        v = ds.createVariable("v", "f4", ("t", "x"), fill_value=-1.0)
        v[:] = np.arange(12).reshape(4, 3)
        ds.createVariable("c", "S1", ("x",))[:] = np.array([b"a", b"b", b"c"])
    group = build_netcdf3(path)
    z = _rfs(to_kerchunk(group))
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        np.testing.assert_array_equal(z["v"][...], ds["v"][...])
        np.testing.assert_array_equal(z["c"][...], ds["c"][...])
    assert z["v"].fill_value == -1.0


def test_order_f_and_filters_export(tmp_path: Path) -> None:
    src = tmp_path / "v2"
    data = np.arange(6 * 7, dtype="<i2").reshape(6, 7)
    arr = zarr.create_array(
        str(src),
        shape=data.shape,
        chunks=(4, 3),
        dtype="<i2",
        zarr_format=2,
        order="F",
        filters=[numcodecs.Delta(dtype="<i2")],
        compressors=numcodecs.Zlib(level=2),
        fill_value=3,
    )
    arr[...] = data
    refs = {}
    for file in src.iterdir():
        refs[file.name] = file.read_text() if file.name.startswith(".z") else [str(file)]
    group = from_kerchunk_refs(
        {".zgroup": '{"zarr_format": 2}', **{f"m/{k}": v for k, v in refs.items()}}
    )
    out = to_kerchunk(group)
    zarray = json.loads(out["refs"]["m/.zarray"])
    assert zarray["order"] == "F"
    assert zarray["filters"] == [{"id": "delta", "dtype": "<i2", "astype": "<i2"}]
    assert zarray["compressor"] == {"id": "zlib", "level": 2}
    np.testing.assert_array_equal(_rfs(out)["m"][...], data)


def _array(codecs: list[dict[str, Any]], shape: tuple[int, ...] = (4, 4, 4)) -> ManifestArray:
    meta = {
        "shape": list(shape),
        "data_type": "int16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shape)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": codecs,
    }
    manifest = ChunkManifest.from_arrays(
        paths=np.full((1,) * len(shape), "file:///tmp/x.bin", dtype=object),
        offsets=np.zeros((1,) * len(shape), dtype=np.int64),
        lengths=np.full((1,) * len(shape), 128, dtype=np.int64),
    )
    return ManifestArray(meta, manifest)


def test_codecs_zarr_v2_cannot_express() -> None:
    sharded = _array(
        [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [2, 2, 2],
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                },
            }
        ]
    )
    with pytest.raises(UnsupportedError, match=r"'shards'.*sharding_indexed"):
        to_kerchunk(ManifestGroup(arrays={"shards": sharded}))
    odd = _array(
        [
            {"name": "transpose", "configuration": {"order": [1, 0, 2]}},
            {"name": "bytes", "configuration": {"endian": "little"}},
        ]
    )
    with pytest.raises(UnsupportedError, match="transpose order"):
        to_kerchunk(ManifestGroup(arrays={"odd": odd}))
    # zarr's own byte codecs map to numcodecs
    ok = _array(
        [
            {"name": "bytes", "configuration": {"endian": "big"}},
            {
                "name": "blosc",
                "configuration": {
                    "cname": "lz4",
                    "clevel": 5,
                    "shuffle": "bitshuffle",
                    "typesize": 2,
                    "blocksize": 0,
                },
            },
            {"name": "crc32c"},
        ]
    )
    zarray, _ = v3_metadata_to_v2(ok)
    assert zarray["dtype"] == ">i2"
    assert zarray["filters"] == [
        {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 2, "blocksize": 0}
    ]
    assert zarray["compressor"] == {"id": "crc32c"}


def test_inline_array_with_v3_only_codecs_is_written_plainly() -> None:
    data = np.arange(10, dtype="<f4")
    spec = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(10,),
        chunks=(5,),
        shards=(10,),
        dtype="<f4",
        fill_value=0,
    )
    inline = InlineArray(spec.metadata, data)  # sharded: no v2 form, but the data is ours
    out = to_kerchunk(ManifestGroup(arrays={"v": inline}))
    np.testing.assert_array_equal(_rfs(out)["v"][...], data)
