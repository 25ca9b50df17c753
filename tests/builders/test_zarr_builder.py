"""The Zarr builder: v2 and v3 stores written by zarr-python, referenced in place."""

from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs

from zarr_manifest import BuildError, InlineArray, ManifestArray, ManifestGroup
from zarr_manifest.builders.zarr import build_zarr

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
]


def _store(group: ManifestGroup, **kwargs: Any) -> Any:
    from zarr_manifest import ManifestStore

    return ManifestStore(group, **kwargs)


def _assert_same(original: zarr.Group, virtual: zarr.Group, prefix: str = "") -> int:
    """Every array of ``original`` reads the same through ``virtual``; returns how many."""
    n = 0
    assert sorted(virtual.array_keys()) == sorted(original.array_keys()), prefix
    assert sorted(virtual.group_keys()) == sorted(original.group_keys()), prefix
    assert virtual.attrs.asdict() == original.attrs.asdict(), prefix
    for name, array in original.arrays():
        expected = array[...]
        got = virtual[name][...]
        assert got.shape == expected.shape, prefix + name
        # v2 keeps the stored byte order in the dtype, v3 in the bytes codec
        native = expected.dtype if expected.dtype.kind == "T" else expected.dtype.newbyteorder("=")
        assert got.dtype == native, prefix + name
        np.testing.assert_array_equal(got, expected, err_msg=prefix + name)
        n += 1
    for name, child in original.groups():
        n += _assert_same(child, virtual[name], f"{prefix}{name}/")
    return n


def _write_v2(path: Path, separator: str) -> zarr.Group:
    root = zarr.open_group(path, mode="w", zarr_format=2)
    root.attrs.update(title="v2 store", n=3)
    rng = np.random.default_rng(0)
    temp = root.create_array(
        "temp",
        shape=(20, 13),
        chunks=(6, 5),
        dtype="<f4",
        compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE),
        filters=[numcodecs.Delta(dtype="<f4")],
        fill_value=np.nan,
        chunk_key_encoding={"name": "v2", "separator": separator},
        attributes={"_ARRAY_DIMENSIONS": ["y", "x"], "units": "K"},
    )
    data = rng.normal(size=(20, 13)).astype("f4")
    data[:6, :5] = np.nan  # an all-fill chunk zarr does not write: a missing chunk
    temp[:] = data
    big = root.create_array(
        "big_endian",
        shape=(9,),
        chunks=(4,),
        dtype=">i8",
        compressors=numcodecs.Zlib(level=4),
        fill_value=-1,
        chunk_key_encoding={"name": "v2", "separator": separator},
    )
    big[:5] = np.arange(5) * 10**12  # chunk 2 is never written
    fortran = root.create_array(
        "fortran",
        shape=(7, 6),
        chunks=(4, 4),
        dtype="<i2",
        order="F",
        compressors=numcodecs.GZip(level=1),
        filters=[numcodecs.Shuffle(elementsize=2)],
        chunk_key_encoding={"name": "v2", "separator": separator},
    )
    fortran[:] = np.arange(42, dtype="i2").reshape(7, 6)
    sub = root.create_group("sub")
    sub.attrs["level"] = 1
    deeper = sub.create_group("deeper")
    names = deeper.create_array(
        "names",
        shape=(5,),
        chunks=(2,),
        dtype=str,
        chunk_key_encoding={"name": "v2", "separator": separator},
    )
    names[:] = ["a", "bb", "", "dddd", "e"]
    scalar = sub.create_array("scalar", shape=(), dtype="<f8", fill_value=0.0)
    scalar[...] = 2.5
    fixed = sub.create_array(
        "fixed",
        shape=(4,),
        chunks=(3,),
        dtype="S3",
        compressors=None,
        chunk_key_encoding={"name": "v2", "separator": separator},
    )
    fixed[:] = [b"ab", b"cde", b"", b"x"]
    return root


def _write_v3(path: Path, separator: str) -> zarr.Group:
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs["title"] = "v3 store"
    rng = np.random.default_rng(1)
    temp = root.create_array(
        "temp",
        shape=(17, 11),
        chunks=(5, 4),
        dtype="f8",
        compressors=zarr.codecs.ZstdCodec(level=2),
        filters=[zarr.codecs.TransposeCodec(order=(1, 0))],
        fill_value=np.nan,
        dimension_names=["y", "x"],
        chunk_key_encoding={"name": "default", "separator": separator},
        attributes={"units": "m"},
    )
    data = rng.normal(size=(17, 11))
    data[5:10, 4:8] = np.nan
    temp[:] = data
    sharded = root.create_array(
        "sharded",
        shape=(12, 10),
        chunks=(2, 5),
        shards=(4, 10),
        dtype="u2",
        compressors=zarr.codecs.BloscCodec(cname="lz4"),
        chunk_key_encoding={"name": "default", "separator": separator},
    )
    sharded[:8] = np.arange(80, dtype="u2").reshape(8, 10)  # the last shard is missing
    big = root.create_array(
        "big",
        shape=(6,),
        chunks=(4,),
        dtype="i4",
        compressors=zarr.codecs.GzipCodec(),
        serializer=zarr.codecs.BytesCodec(endian="big"),
    )
    big[:] = np.arange(6) - 3
    sub = root.create_group("sub", attributes={"about": "nested"})
    deep = sub.create_group("deep")
    text = deep.create_array("text", shape=(5,), chunks=(2,), dtype=str)
    text[:] = ["x", "yy", "zzz", "", "w"]
    scalar = deep.create_array("scalar", shape=(), dtype="i8", fill_value=-9)
    scalar[...] = 41
    v2keys = sub.create_array(
        "v2keys",
        shape=(5, 3),
        chunks=(2, 2),
        dtype="f4",
        chunk_key_encoding={"name": "v2", "separator": separator},
    )
    v2keys[:] = np.arange(15).reshape(5, 3)
    return root


@pytest.mark.parametrize("separator", [".", "/"])
def test_v2_store(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "v2.zarr"
    original = _write_v2(path, separator)
    group = build_zarr(str(path))
    assert _assert_same(original, zarr.open_group(_store(group), mode="r")) == 6
    temp = group["temp"]
    assert isinstance(temp, ManifestArray)
    assert temp.dimension_names == ("y", "x")
    assert temp.attributes["units"] == "K"
    assert "_ARRAY_DIMENSIONS" not in temp.attributes
    # xarray masks a v2 fill_value, but a v3 array's _FillValue attribute: it is added
    assert np.isnan(struct.unpack("<d", base64.b64decode(temp.attributes["_FillValue"]))[0])
    assert "0.0" not in temp.manifest  # never written
    entry = temp.manifest["1.2"]
    key = f"1{separator}2"
    assert entry == {
        "path": (path / "temp" / key).resolve().as_uri(),
        "offset": 0,
        "length": (path / "temp" / key).stat().st_size,
    }
    assert len(group["big_endian"].manifest) == 2
    assert group["big_endian"].fill_value == -1


@pytest.mark.parametrize("separator", [".", "/"])
def test_v3_store(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "v3.zarr"
    original = _write_v3(path, separator)
    group = build_zarr(path.as_uri())
    assert _assert_same(original, zarr.open_group(_store(group), mode="r")) == 6
    sharded = group["sharded"]
    assert isinstance(sharded, ManifestArray)
    # the shards are the chunks of the outer grid, referenced whole
    assert sharded.metadata.chunk_grid.chunk_shape == (4, 10)
    assert sorted(sharded.manifest) == ["0.0", "1.0"]
    assert sharded.metadata.codecs[0].to_dict()["name"] == "sharding_indexed"
    assert group["temp"].dimension_names == ("y", "x")
    assert (
        group["temp"].metadata.to_dict()["codecs"] == original["temp"].metadata.to_dict()["codecs"]
    )
    text = group["sub/deep/text"]
    assert text.manifest["1"]["path"] == (path / "sub/deep/text/c/1").resolve().as_uri()
    v2keys = group["sub/v2keys"]
    key = f"2{separator}1"
    assert v2keys.manifest["2.1"]["path"] == (path / "sub/v2keys" / key).resolve().as_uri()


def test_group_drop_and_load(tmp_path: Path) -> None:
    path = tmp_path / "v3.zarr"
    original = _write_v3(path, "/")
    sub = build_zarr(path, group="sub")
    assert sorted(sub) == ["deep", "v2keys"]
    assert sub.attributes == {"about": "nested"}
    _assert_same(original["sub"], zarr.open_group(_store(sub), mode="r"))

    group = build_zarr(path, drop=["sharded", "sub/deep"], load=["big", "sub/v2keys"])
    assert "sharded" not in group and "sub/deep" not in group
    assert isinstance(group["big"], InlineArray)
    assert isinstance(group["sub/v2keys"], InlineArray)
    np.testing.assert_array_equal(group["big"].data, original["big"][...])
    virtual = zarr.open_group(_store(group), mode="r")
    np.testing.assert_array_equal(virtual["sub/v2keys"][...], original["sub/v2keys"][...])
    np.testing.assert_array_equal(virtual["temp"][...], original["temp"][...])
    with pytest.raises(BuildError, match="nothere"):
        build_zarr(path, drop=["nothere"])


def test_store_whose_root_is_an_array(tmp_path: Path) -> None:
    path = tmp_path / "single.zarr"
    array = zarr.create_array(path, shape=(5, 4), chunks=(2, 4), dtype="i4", zarr_format=2)
    array[:] = np.arange(20).reshape(5, 4)
    group = build_zarr(path)
    assert list(group) == ["single"]
    np.testing.assert_array_equal(
        zarr.open_group(_store(group), mode="r")["single"][...], array[...]
    )


def test_stray_and_out_of_grid_objects_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "v3.zarr"
    root = zarr.open_group(path, mode="w")
    array = root.create_array("a", shape=(6,), chunks=(3,), dtype="i2")
    array[:] = np.arange(6)
    (path / "a" / "c" / "7").write_bytes(b"left behind by a resize")
    (path / "a" / "c" / "x1").write_bytes(b"junk")
    (path / "a" / "notes.txt").write_text("hello")
    (path / ".DS_Store").write_bytes(b"\0")
    group = build_zarr(path)
    assert sorted(group["a"].manifest) == ["0", "1"]
    np.testing.assert_array_equal(zarr.open_group(_store(group), mode="r")["a"][...], np.arange(6))


def test_not_a_zarr_store(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "file.bin").write_bytes(b"x")
    with pytest.raises(BuildError, match="no Zarr metadata"):
        build_zarr(tmp_path / "empty")
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{not json")
    with pytest.raises(BuildError, match=r"bad\.zarr/zarr\.json"):
        build_zarr(bad)
    (bad / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "thing"}))
    with pytest.raises(BuildError, match="not Zarr v3"):
        build_zarr(bad)


def test_unreferenceable_v2_array_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "v2.zarr"
    root = zarr.open_group(path, mode="w", zarr_format=2)
    # base64 is a numcodecs codec zarr reads in v2 arrays but has no Zarr v3 codec
    odd = root.create_array(
        "odd",
        shape=(5,),
        chunks=(2,),
        dtype="i4",
        compressors=numcodecs.Base64(),
        attributes={"_ARRAY_DIMENSIONS": ["x"], "k": "v"},
    )
    odd[:] = [1, 2, 3, 4, 5]
    root.create_array("fine", shape=(3,), chunks=(3,), dtype="u1")[:] = [7, 8, 9]
    group = build_zarr(path)
    assert isinstance(group["odd"], InlineArray)
    assert group["odd"].dimension_names == ("x",)
    assert group["odd"].attributes == {"k": "v"}
    assert isinstance(group["fine"], ManifestArray)
    _assert_same(root, zarr.open_group(_store(group), mode="r"))


def test_xarray_reads_the_same(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    ds = xr.Dataset(
        {
            "t": (("time", "x"), np.where(np.eye(4, 5) > 0, np.nan, np.arange(20.0).reshape(4, 5))),
            "n": (("x",), np.arange(5, dtype="i2")),
        },
        coords={"time": np.arange(4), "x": np.linspace(0, 1, 5)},
        attrs={"source": "test"},
    )
    for fmt in (2, 3):
        path = tmp_path / f"x{fmt}.zarr"
        ds.to_zarr(path, zarr_format=fmt, consolidated=False, mode="w")
        group = build_zarr(path)
        got = xr.open_zarr(_store(group), consolidated=False, zarr_format=3)
        expected = xr.open_zarr(path, consolidated=False)
        xr.testing.assert_identical(got.load(), expected.load())


def test_s3_store(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    from obstore.store import LocalStore

    from zarr_manifest.store import SourceRegistry

    path = tmp_path / "v3.zarr"
    original = _write_v3(path, "/")
    remote = s3_server.s3_store(s3_bucket, prefix="data/v3.zarr")
    local = LocalStore(path)
    for batch in __import__("obstore").list(local):
        for meta in batch:
            remote.put(meta["path"], bytes(__import__("obstore").get(local, meta["path"]).bytes()))
    url = f"s3://{s3_bucket}/data/v3.zarr"
    group = build_zarr(url, **s3_server.obstore_config())
    assert group["temp"].manifest["0.0"]["path"] == f"{url}/temp/c/0/0"
    registry = SourceRegistry({f"s3://{s3_bucket}/": s3_server.s3_store(s3_bucket)})
    virtual = zarr.open_group(_store(group, registry=registry), mode="r")
    _assert_same(original, virtual)


def test_writes_to_a_manifest_store(tmp_path: Path) -> None:
    path = tmp_path / "v2.zarr"
    original = _write_v2(path, "/")
    group = build_zarr(path)
    group.to_store(tmp_path / "manifest")
    shutil.rmtree(tmp_path / "unrelated", ignore_errors=True)
    from zarr_manifest import ManifestStore

    virtual = zarr.open_group(
        ManifestStore(tmp_path / "manifest", allowed_prefixes=[str(path)]), mode="r"
    )
    _assert_same(original, virtual)
