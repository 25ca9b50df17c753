"""The kerchunk translator: references made by kerchunk itself, hand-written v0/v1 references
(templates, gen), parquet stores, read back through ManifestStore and compared with the
format's own library and with fsspec's ReferenceFileSystem."""

from __future__ import annotations

import base64
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

from zarr_manifest import BuildError, InlineArray, ManifestArray, ManifestGroup, UnsupportedError
from zarr_manifest.builders.kerchunk import (
    build_kerchunk,
    expand_refs,
    from_kerchunk_refs,
    url_to_fsspec_path,
)
from zarr_manifest.format.paths import local_path_to_url

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
]


def _open(group: ManifestGroup) -> zarr.Group:
    from zarr_manifest import ManifestStore

    return zarr.open_group(ManifestStore(group), mode="r")


def _reference_fs(refs: dict[str, Any]) -> zarr.Group:
    """The same references opened the kerchunk way: fsspec ReferenceFileSystem + zarr v2."""
    fs = fsspec.filesystem("reference", fo=refs, simple_templates=False)
    return zarr.open_group(fs.get_mapper(), mode="r", zarr_format=2)


# ---- references made by kerchunk ------------------------------------------------------------


@pytest.fixture
def h5_file(tmp_path: Path) -> Path:
    path = tmp_path / "sample.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "kerchunk sample"
        x = f.create_dataset(
            "x", data=rng.normal(size=(20, 30)), chunks=(8, 16), compression="gzip", shuffle=True
        )
        x.attrs["units"] = "m"
        f.create_dataset("big", data=np.arange(24, dtype=">i4").reshape(4, 6))  # contiguous
        f.create_dataset("scalar", data=np.int16(-7))
        f.create_dataset(
            "filled", shape=(10,), chunks=(5,), dtype="f4", fillvalue=-1.5, compression="gzip"
        )
        f["filled"][:5] = np.arange(5)  # the second chunk is never written: fill value
        f.create_dataset("fixed", data=np.array([b"ab", b"cde", b""], dtype="S3"))
        f.create_dataset("names", data=["alpha", "beta"], dtype=h5py.string_dtype())
        g = f.create_group("sub")
        g.attrs["note"] = "nested"
        g.create_dataset("y", data=np.arange(12, dtype="u2").reshape(3, 4), chunks=(2, 2))
    return path


def _h5_refs(path: Path, inline_threshold: int = 0) -> dict[str, Any]:
    from kerchunk.hdf import SingleHdf5ToZarr

    return SingleHdf5ToZarr(str(path), inline_threshold=inline_threshold).translate()


def test_hdf5_refs_from_kerchunk_read_like_h5py(h5_file: Path) -> None:
    group = from_kerchunk_refs(_h5_refs(h5_file))
    z = _open(group)
    with h5py.File(h5_file) as f:
        for name in ("x", "big", "scalar", "filled", "fixed", "sub/y"):
            np.testing.assert_array_equal(z[name][...], f[name][...], err_msg=name)
        assert z["names"][...].tolist() == [s.decode() for s in f["names"][...]]
    assert isinstance(group["x"], ManifestArray)
    assert isinstance(group["names"], InlineArray)  # vlen strings are inline in the refs
    assert group["x"].manifest.shape_chunk_grid == (3, 2)
    entry = group["x"].manifest["0.0"]
    assert entry["path"] == local_path_to_url(h5_file)
    assert z["x"].attrs["units"] == "m"
    assert z["x"].metadata.dimension_names == ("phony_dim_0", "phony_dim_1")
    assert "_ARRAY_DIMENSIONS" not in z["x"].attrs
    assert z["sub"].attrs["note"] == "nested"
    assert z["filled"].fill_value == np.float32(-1.5)
    # big-endian storage is described by the bytes codec
    assert {"name": "bytes", "configuration": {"endian": "big"}} in [
        c.to_dict() for c in group["big"].metadata.codecs
    ]


def test_inline_threshold_refs_become_inline_arrays(h5_file: Path) -> None:
    refs = _h5_refs(h5_file, inline_threshold=10_000)
    group = from_kerchunk_refs(refs)
    assert isinstance(group["big"], InlineArray)  # 96 bytes: inlined by kerchunk
    z = _open(group)
    with h5py.File(h5_file) as f:
        np.testing.assert_array_equal(z["big"][...], f["big"][...])
        np.testing.assert_array_equal(z["x"][...], f["x"][...])


def test_netcdf3_refs_from_kerchunk(tmp_path: Path) -> None:
    from kerchunk.netCDF3 import NetCDF3ToZarr

    path = tmp_path / "classic.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.title = "classic"
        ds.createDimension("time", None)
        ds.createDimension("x", 5)
        t = ds.createVariable("time", "f8", ("time",))
        t[:] = np.arange(4) * 0.5
        v = ds.createVariable("v", "i2", ("time", "x"))
        v.units = "K"
        v[:] = np.arange(20).reshape(4, 5)
        w = ds.createVariable("w", "f4", ("x",))
        w[:] = np.linspace(0, 1, 5)
    refs = NetCDF3ToZarr(str(path), inline_threshold=0).translate()
    group = from_kerchunk_refs(refs)
    z = _open(group)
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        for name in ("time", "v", "w"):
            np.testing.assert_array_equal(z[name][...], ds[name][...], err_msg=name)
    assert group["v"].manifest.shape_chunk_grid == (4, 1)  # one chunk per record
    assert z.attrs["title"] == "classic"
    assert z["v"].metadata.dimension_names == ("time", "x")


# ---- hand-written references: v0, v1, templates, gen ----------------------------------------


def _raw_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.arange(5 * 4 * 10, dtype="<f8").reshape(5, 4, 10)
    path = tmp_path / "raw data.bin"  # a space: URLs must be encoded, fsspec paths not
    path.write_bytes(b"HEADER" * 100 + data.tobytes())
    return path, data


def _zarray(**kw: Any) -> str:
    doc = {
        "zarr_format": 2,
        "shape": [5, 4, 10],
        "chunks": [1, 4, 10],
        "dtype": "<f8",
        "fill_value": None,
        "order": "C",
        "filters": None,
        "compressor": None,
    }
    doc.update(kw)
    return json.dumps(doc)


def test_v0_v1_templates_and_gen_agree(tmp_path: Path) -> None:
    path, data = _raw_file(tmp_path)
    nbytes = 4 * 10 * 8
    meta = {
        ".zgroup": json.dumps({"zarr_format": 2}),
        "a/.zarray": _zarray(),
        "a/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["t", "y", "x"], "units": "K"}),
    }
    v0 = dict(meta)
    for i in range(5):
        v0[f"a/{i}.0.0"] = [str(path), 600 + i * nbytes, nbytes]
    v1 = {
        "version": 1,
        "templates": {"u": str(path), "d": str(tmp_path), "f": "{{d}}/{{name}}"},
        "gen": [
            {
                "key": "a/{{i}}.0.0",
                "url": "{{u}}",
                "offset": "{{600 + i * " + str(nbytes) + "}}",
                "length": str(nbytes),
                "dimensions": {"i": {"start": 1, "stop": 5}},
            }
        ],
        # key 0 through a jinja template called with an argument
        "refs": {**meta, "a/0.0.0": ["{{f(d=d, name='raw data.bin')}}", 600, nbytes]},
    }
    g0 = from_kerchunk_refs(v0)
    g1 = from_kerchunk_refs(v1)
    assert g0 == g1
    np.testing.assert_array_equal(_open(g1)["a"][...], data)
    # fsspec reads the v1 references the same way
    np.testing.assert_array_equal(_reference_fs(v1)["a"][...], data)
    assert expand_refs(v1)["a/3.0.0"] == [str(path), 600 + 3 * nbytes, nbytes]


@pytest.mark.parametrize(
    "gen",
    [
        # evaluated over numpy arrays of the dimension values
        {
            "key": "k/{{i}}.{{j}}",
            "url": "{{u}}/f{{j}}",
            "offset": "{{ i * 10 + j }}",
            "length": "{{ 5 + j }}",
            "dimensions": {"i": {"stop": 3}, "j": [4, 7]},
        },
        # string formatting and division: rendered product by product with jinja2
        {
            "key": "k/{{ '%02d' % i }}",
            "url": "{{u}}/f{{ i / 2 }}",
            "offset": "{{ i // 2 }}",
            "length": "8",
            "dimensions": {"i": {"start": 1, "stop": 9, "step": 3}},
        },
        # whole-file references
        {"key": "w/{{i}}", "url": "{{u}}/w{{i}}", "dimensions": {"i": [0, 2]}},
    ],
)
def test_gen_expands_like_fsspec(gen: dict[str, Any]) -> None:
    refs = {"version": 1, "templates": {"u": "/data"}, "gen": [gen], "refs": {"x": "1"}}
    ours = expand_refs(refs)
    fs = fsspec.filesystem("reference", fo=refs, simple_templates=False)
    theirs = {k: v for k, v in fs.references.items() if k != "x"}
    assert {k: v for k, v in ours.items() if k != "x"} == {
        k: [v[0], int(v[1]), int(v[2])] if len(v) == 3 else list(v) for k, v in theirs.items()
    }
    assert ours["x"] == b"1"


def test_gen_with_list_dimensions_and_whole_file_refs(tmp_path: Path) -> None:
    # one file per chunk, referenced whole ([url]): offset 0, length = the file's size
    data = np.arange(6 * 8, dtype=">i4").reshape(6, 8)
    for i in range(3):
        (tmp_path / f"part{i}.bin").write_bytes(data[2 * i : 2 * i + 2].tobytes())
    refs = {
        "version": 1,
        "templates": {"root": str(tmp_path)},
        "gen": [
            {
                "key": "v/{{i}}.{{j}}",
                "url": "{{root}}/part{{i}}.bin",
                "dimensions": {"i": [0, 1, 2], "j": [0]},
            }
        ],
        "refs": {
            ".zgroup": '{"zarr_format": 2}',
            "v/.zarray": _zarray(shape=[6, 8], chunks=[2, 8], dtype=">i4", fill_value=0),
        },
    }
    group = from_kerchunk_refs(refs)
    manifest = group["v"].manifest
    assert manifest["1.0"] == {
        "path": local_path_to_url(tmp_path / "part1.bin"),
        "offset": 0,
        "length": 64,
    }
    np.testing.assert_array_equal(_open(group)["v"][...], data)


def test_zarr_v2_features_match_reference_filesystem(tmp_path: Path) -> None:
    """Order F, "/" separator, blosc + delta, NaN fill, missing chunks: as fsspec + zarr."""
    src = tmp_path / "v2store"
    data = np.arange(7 * 9, dtype="<i4").reshape(7, 9)
    arr = zarr.create_array(
        str(src),
        name="m",
        shape=data.shape,
        chunks=(3, 4),
        dtype="<i4",
        zarr_format=2,
        order="F",
        chunk_key_encoding={"name": "v2", "separator": "/"},
        filters=[numcodecs.Delta(dtype="<i4")],
        compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE),
        fill_value=-9,
    )
    arr[...] = data
    arr[6:, :] = -9  # the last chunk row holds only fill values and is not stored
    zarr.create_array(
        str(src), name="f", shape=(4,), chunks=(2,), dtype="<f4", zarr_format=2, fill_value=np.nan
    )[:2] = [1.5, 2.5]
    refs: dict[str, Any] = {}
    for file in sorted(src.rglob("*")):
        if file.is_file():
            key = file.relative_to(src).as_posix()
            if key.rsplit("/", 1)[-1].startswith(".z"):
                refs[key] = file.read_text()
            else:
                refs[key] = [str(file)]  # whole-file references
    group = from_kerchunk_refs(refs)
    z = _open(group)
    expected = _reference_fs(refs)
    np.testing.assert_array_equal(z["m"][...], expected["m"][...])
    np.testing.assert_array_equal(z["f"][...], expected["f"][...])
    assert z["m"][6, 0] == -9 and np.isnan(z["f"][3])
    codecs = [c.to_dict()["name"] for c in group["m"].metadata.codecs]
    assert codecs[0] == "transpose" and "blosc" in codecs and "numcodecs.delta" in codecs
    assert not group["m"].manifest.present[2].any()  # absent chunks stay absent


def test_mixed_inline_and_referenced_chunks_load(tmp_path: Path) -> None:
    path, data = _raw_file(tmp_path)
    nbytes = 4 * 10 * 8
    refs = {
        ".zgroup": '{"zarr_format": 2}',
        "a/.zarray": _zarray(),
        "a/0.0.0": "base64:" + base64.b64encode(data[0].tobytes()).decode(),
        **{f"a/{i}.0.0": [str(path), 600 + i * nbytes, nbytes] for i in range(1, 5)},
    }
    group = from_kerchunk_refs(refs)
    assert isinstance(group["a"], InlineArray)
    np.testing.assert_array_equal(group["a"].data, data)
    np.testing.assert_array_equal(_open(group)["a"][...], data)


def test_zarr_v3_documents_in_refs(tmp_path: Path) -> None:
    path, data = _raw_file(tmp_path)
    nbytes = 4 * 10 * 8
    meta = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=data.shape,
        chunks=(1, 4, 10),
        dtype="<f8",
        compressors=None,
        fill_value=0,
        dimension_names=["t", "y", "x"],
    ).metadata.to_dict()
    refs = {
        "zarr.json": json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"k": 1}}),
        "a/zarr.json": json.dumps(meta),
        **{f"a/c/{i}/0/0": [str(path), 600 + i * nbytes, nbytes] for i in range(5)},
    }
    group = from_kerchunk_refs(refs)
    assert group.attributes == {"k": 1}
    np.testing.assert_array_equal(_open(group)["a"][...], data)


# ---- files: JSON (plain and compressed), relative paths, parquet -----------------------------


def test_build_from_json_file_relative_paths_and_compression(tmp_path: Path) -> None:
    path, data = _raw_file(tmp_path)
    nbytes = 4 * 10 * 8
    refs = {
        ".zgroup": '{"zarr_format": 2}',
        "a/.zarray": _zarray(),
        **{f"a/{i}.0.0": [path.name, 600 + i * nbytes, nbytes] for i in range(5)},
    }
    plain = tmp_path / "refs.json"
    plain.write_text(json.dumps(refs))
    group = build_kerchunk(plain)  # relative paths: next to the references file
    assert group["a"].manifest["2.0.0"]["path"] == local_path_to_url(path)
    np.testing.assert_array_equal(_open(group)["a"][...], data)
    packed = tmp_path / "refs.json.zst"
    packed.write_bytes(numcodecs.Zstd(level=3).encode(json.dumps(refs).encode()))
    assert build_kerchunk(packed) == group
    other = tmp_path / "elsewhere"
    other.mkdir()
    moved = build_kerchunk(plain, base_url=local_path_to_url(other) + "/")
    assert moved["a"].manifest["0.0.0"]["path"] == local_path_to_url(other / path.name)


def test_parquet_references(tmp_path: Path, h5_file: Path) -> None:
    from kerchunk.df import refs_to_dataframe

    refs = _h5_refs(h5_file, inline_threshold=50)  # some arrays inline, some referenced
    out = tmp_path / "refs.parq"
    refs_to_dataframe(refs, str(out), record_size=4)  # x has 6 chunks: two record files
    assert (out / "x" / "refs.1.parq").exists()
    from_parquet = build_kerchunk(out)
    from_json = from_kerchunk_refs(refs)
    for name in ("x", "big", "filled", "fixed", "sub/y"):
        a, b = from_parquet[name], from_json[name]
        assert type(a) is type(b), name
        if isinstance(a, ManifestArray):
            assert a == b, name
    z = _open(from_parquet)
    with h5py.File(h5_file) as f:
        for name in ("x", "big", "scalar", "filled", "fixed", "sub/y"):
            np.testing.assert_array_equal(z[name][...], f[name][...], err_msg=name)
        assert z["names"][...].tolist() == ["alpha", "beta"]


# ---- options and errors ----------------------------------------------------------------------


def test_group_drop_load(h5_file: Path) -> None:
    refs = _h5_refs(h5_file)
    sub = from_kerchunk_refs(refs, group="sub")
    assert list(sub.arrays) == ["y"] and sub.attributes == {"note": "nested"}
    g = from_kerchunk_refs(refs, drop=["big", "sub/y"], load=["x"])
    assert "big" not in g.arrays and "y" not in g.groups["sub"].arrays
    assert isinstance(g["x"], InlineArray)
    with h5py.File(h5_file) as f:
        np.testing.assert_array_equal(g["x"].data, f["x"][...])
    with pytest.raises(BuildError, match="nope"):
        from_kerchunk_refs(refs, drop=["nope"])
    with pytest.raises(BuildError, match="no group 'missing'"):
        from_kerchunk_refs(refs, group="missing")


def test_single_array_refs_get_a_name(tmp_path: Path) -> None:
    path, data = _raw_file(tmp_path)
    nbytes = 4 * 10 * 8
    refs = {
        ".zarray": _zarray(),
        **{f"{i}.0.0": [str(path), 600 + i * nbytes, nbytes] for i in range(5)},
    }
    group = from_kerchunk_refs(refs, root_array_name="image")
    np.testing.assert_array_equal(_open(group)["image"][...], data)


@pytest.mark.parametrize(
    ("refs", "error", "match"),
    [
        ({"version": 2, "refs": {}}, BuildError, "version 2"),
        ({"a/.zarray": _zarray(), "a/9.0.0": ["/x", 0, 1]}, BuildError, "a/9.0.0"),
        ({"a/.zarray": _zarray(), "a/0.0.0": ["/x", -1, 1]}, BuildError, "negative offset"),
        (
            {"a/.zarray": _zarray(), "a/0.0.0": ["simplecache::s3://b/k", 0, 8]},
            UnsupportedError,
            "chained",
        ),
        ({"a/.zarray": _zarray(), "a/0.0.0": ["ftp://h/k", 0, 8]}, UnsupportedError, "ftp"),
        ({"a/.zarray": _zarray(), "a/0.0.0": [1, 2]}, BuildError, "a/0.0.0"),
        ({"x": "y"}, BuildError, "no Zarr metadata"),
        ({"a/.zarray": "{not json"}, BuildError, "a/.zarray"),
    ],
)
def test_bad_references(refs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        from_kerchunk_refs(refs)


def test_not_a_references_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\x00\x01 not json")
    with pytest.raises(BuildError, match=r"bad\.json"):
        build_kerchunk(bad)


def test_fsspec_paths_round_trip() -> None:
    for url in (
        "file:///data/a%20b.nc",
        "s3://bucket/dir/a%20b%25.nc",
        "https://example.org/x/y.nc",
        "gs://b/k",
    ):
        raw = url_to_fsspec_path(url)
        refs = {".zarray": _zarray(shape=[1], chunks=[1]), "0": [raw, 0, 8]}
        assert from_kerchunk_refs(refs)["data"].manifest["0"]["path"] == url
    assert url_to_fsspec_path("s3://bucket/a%20b.nc") == "s3://bucket/a b.nc"


def test_remote_json_and_parquet_references(
    clean_range_server: Any, serve_bytes: Any, tmp_path: Path
) -> None:
    """References served over HTTP: relative paths resolve against the references' URL."""
    data = np.arange(40, dtype="<f8").reshape(4, 10)
    raw = serve_bytes(b"H" * 16 + data.tobytes(), "raw.bin")
    serve_bytes(data[3].tobytes(), "whole.bin")
    refs = {
        ".zgroup": '{"zarr_format": 2}',
        "a/.zarray": _zarray(shape=[4, 10], chunks=[1, 10]),
        **{f"a/{i}.0": ["raw.bin", 16 + 80 * i, 80] for i in range(3)},
        "a/3.0": ["whole.bin"],  # sized with a HEAD request
    }
    folder = raw.split("/")[0]
    url = clean_range_server.url_for(serve_bytes(json.dumps(refs).encode(), "refs.json"))
    group = build_kerchunk(url)
    assert group["a"].manifest["1.0"] == {
        "path": clean_range_server.url_for(raw),
        "offset": 96,
        "length": 80,
    }
    assert group["a"].manifest["3.0"]["length"] == 80
    np.testing.assert_array_equal(_open(group)["a"][...], data)
    # a parquet store of the same references, read over HTTP through obstore's fsspec adapter
    from zarr_manifest.writers.kerchunk import to_kerchunk

    local = Path(clean_range_server.root) / folder / "refs.parq"
    to_kerchunk(group, local, format="parquet")
    remote = build_kerchunk(clean_range_server.url_for(f"{folder}/refs.parq"))
    assert remote["a"] == group["a"]


# ---- fill values: masked as xarray masks the original file ----------------------------------


def test_fill_values_are_masked_as_xarray_masks_the_original(tmp_path: Path) -> None:
    import xarray as xr
    from kerchunk.netCDF3 import NetCDF3ToZarr

    from zarr_manifest import ManifestStore

    values = np.array([[1.5, -9999.9, 3.0], [-9999.9, 0.0, 2.0]])
    ds = xr.Dataset(
        {
            "t": (("y", "x"), values),
            "n": (("y", "x"), np.array([[1, -1, 0], [7, 0, -1]], dtype="i4")),
            "plain": (("y", "x"), np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])),
        }
    )
    ds["t"].encoding["_FillValue"] = -9999.9
    ds["n"].encoding["_FillValue"] = -1
    ds["plain"].encoding["_FillValue"] = None  # no _FillValue: nothing is masked
    nc4 = tmp_path / "fill.nc"
    ds.to_netcdf(nc4, engine="netcdf4")
    nc3 = tmp_path / "fill3.nc"
    ds.to_netcdf(nc3, engine="scipy")
    # a plain HDF5 dataset: kerchunk copies HDF5's default fill (0) into fill_value
    h5 = tmp_path / "plain.h5"
    with h5py.File(h5, "w") as f:
        f["z"] = np.array([0.0, 1.0, 0.0])
    for path, refs in (
        (nc4, _h5_refs(nc4)),
        (nc3, NetCDF3ToZarr(str(nc3), inline_threshold=0).translate()),
        (h5, _h5_refs(h5)),
    ):
        refs_file = tmp_path / f"{path.name}.json"
        refs_file.write_text(json.dumps(refs))
        group = build_kerchunk(refs_file)  # the default: cf_fill_value=True
        assert from_kerchunk_refs(refs, cf_fill_value=True) == group
        ours = xr.open_dataset(ManifestStore(group), engine="zarr", consolidated=False)
        engine = "h5netcdf" if path.suffix == ".h5" else None
        with xr.open_dataset(path, engine=engine) as original:
            for name in original.data_vars:
                np.testing.assert_array_equal(
                    ours[name].values, original[name].values, err_msg=f"{path.name}:{name}"
                )
    # the translator's default (the TIFF and FITS builders' path) leaves fill_value alone
    assert "_FillValue" not in from_kerchunk_refs(_h5_refs(nc4))["t"].attributes


def test_uncompressed_chunk_of_the_wrong_length_is_refused_at_build(tmp_path: Path) -> None:
    """tifffile references the strips of a TIFF whose ``StripByteCounts`` are too short
    (like Pillow's ``tiff_overflow_rows_per_strip.tif``) as they are: uncompressed chunks
    zarr can never decode.  Refused when built, naming the chunk (was a ``ValueError:
    cannot reshape`` on read)."""
    import io

    import tifffile

    data = np.arange(3 * 32 * 20, dtype="u1").reshape(3, 32, 20)
    path = tmp_path / "rows.tif"
    tifffile.imwrite(path, data, rowsperstrip=32, planarconfig="separate", photometric="rgb")
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[0].tags["StripByteCounts"].overwrite([200, 200, 200])
    with tifffile.TiffFile(path) as tif, tif.series[0].aszarr() as store:
        buf = io.StringIO()
        store.write_fsspec(buf, url=str(tmp_path), groupname="data")
    refs = tmp_path / "refs.json"
    refs.write_text(buf.getvalue())
    with pytest.raises(BuildError, match=r"'data': chunk 0\.0\.0 is referenced with 200 bytes"):
        build_kerchunk(refs, allowed_prefixes=[str(tmp_path)])
    # the same file with its true byte counts reads like tifffile
    tifffile.imwrite(path, data, rowsperstrip=32, planarconfig="separate", photometric="rgb")
    with tifffile.TiffFile(path) as tif, tif.series[0].aszarr() as store:
        buf = io.StringIO()
        store.write_fsspec(buf, url=str(tmp_path), groupname="data")
    refs.write_text(buf.getvalue())
    group = build_kerchunk(refs, allowed_prefixes=[str(tmp_path)])
    assert isinstance(group["data"], ManifestArray)
