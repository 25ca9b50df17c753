"""kerchunk references whose metadata keys are Zarr v3 ``zarr.json`` documents: as
VirtualiZarr 2.8 writes them (``to_kerchunk(zarr_format=3)``) and as a Zarr v3 store's
objects, compared with netCDF4 (through xarray) and with zarr reading the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import zarr_manifest as zm
from zarr_manifest import InlineArray, ManifestArray, ManifestGroup, ManifestStore
from zarr_manifest.builders import detect_format, sniff

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
]


def _netcdf(path: Path) -> Path:
    """A netCDF4 file written by xarray: chunked + zlib, packed, masked, CF times."""
    rng = np.random.default_rng(0)
    temp = rng.normal(280, 5, size=(4, 5, 6))
    temp[0, 0, 0] = np.nan
    ds = xr.Dataset(
        {
            "tas": (("time", "y", "x"), temp.astype("f4"), {"units": "K"}),
            "packed": (("time", "y", "x"), temp),
            "count": (("time",), np.array([1, 2, -9, 4], "i2"), {"_FillValue": np.int16(-9)}),
            "scalar": ((), 3.5),
        },
        coords={
            "time": pd.date_range("2000-01-01", periods=4),
            "x": np.arange(6.0),
            "y": np.arange(5)[::-1],
        },
        attrs={"title": "v3 refs"},
    )
    ds.to_netcdf(
        path,
        encoding={
            "tas": {"zlib": True, "chunksizes": (2, 5, 3), "_FillValue": 1e20},
            "packed": {
                "dtype": "int16",
                "scale_factor": 0.01,
                "add_offset": 280,
                "_FillValue": -32767,
            },
        },
    )
    return path


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_virtualizarr_references_read_like_netcdf4(tmp_path: Path, zarr_format: int) -> None:
    """VirtualiZarr's ``to_kerchunk`` output, with ``zarr.json`` keys (3) or ``.zarray`` (2;
    its loaded float coordinates carry ``"_FillValue": NaN`` in ``.zattrs``)."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    path = _netcdf(tmp_path / "air.nc").resolve()
    registry = ObjectStoreRegistry({"file://": LocalStore()})
    vds = open_virtual_dataset(path.as_uri(), parser=HDFParser(), registry=registry)
    refs = tmp_path / "refs.json"
    vds.vz.to_kerchunk(str(refs), format="json", zarr_format=zarr_format)
    keys = json.loads(refs.read_text())["refs"]
    if zarr_format == 3:
        assert "tas/zarr.json" in keys and "tas/c/0/0/0" in keys and ".zarray" not in str(keys)
    else:
        assert "tas/.zarray" in keys and "tas/0.0.0" in keys
    group = zm.open_virtual(refs)
    assert isinstance(group["tas"], ManifestArray)
    assert group["tas"].manifest.path_table == (path.as_uri(),)
    assert isinstance(group["time"], InlineArray)  # VirtualiZarr inlined the loaded coordinates
    for decode in (True, False):
        got = xr.open_zarr(ManifestStore(group), consolidated=False, decode_cf=decode)
        want = xr.open_dataset(path, decode_cf=decode)
        assert sorted(got.variables) == sorted(want.variables)
        assert got.attrs == want.attrs
        for name, variable in want.variables.items():
            np.testing.assert_array_equal(got[name].values, variable.values, err_msg=name)
            assert got[name].dtype == variable.dtype, name


def _v3_store(path: Path) -> zarr.Group:
    """A Zarr v3 store with nested groups, a sharded array, v2 chunk keys, a scalar, strings."""
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs["title"] = "v3 store"
    inner = root.create_group("g1/inner")
    sharded = inner.create_array(
        "sharded", shape=(20, 16), chunks=(5, 4), shards=(10, 8), dtype="i4", fill_value=-1
    )
    sharded[:15] = np.arange(15 * 16).reshape(15, 16)  # the last row of shards never written
    dotted = root.create_array(
        "dotted",
        shape=(7, 3),
        chunks=(3, 2),
        dtype=">f8",
        chunk_key_encoding={"name": "v2", "separator": "."},
    )
    dotted[:] = np.random.default_rng(1).normal(size=(7, 3))
    scalar = root.create_array("scalar", shape=(), dtype="f4")
    scalar[...] = 2.5
    words = root.create_array("words", shape=(3,), dtype=str)
    words[:] = ["a", "bb", "ccc"]
    return root


def _store_as_references(path: Path) -> dict[str, object]:
    """Each object of a Zarr store as a reference: metadata inline, chunks as ``[path]``."""
    refs: dict[str, object] = {}
    for f in sorted(path.rglob("*")):
        if f.is_file():
            key = f.relative_to(path).as_posix()
            refs[key] = f.read_text() if f.name == "zarr.json" else [str(f)]
    return refs


def _arrays(group: ManifestGroup) -> dict[str, object]:
    return {p: n for p, n in group.walk() if isinstance(n, ManifestArray | InlineArray)}


@pytest.mark.parametrize("version", [0, 1])
def test_references_of_a_zarr_v3_store(tmp_path: Path, version: int) -> None:
    """Version 1 and version 0 (the bare key -> reference mapping, first key a chunk's)."""
    original = _v3_store(tmp_path / "store.zarr")
    refs = _store_as_references(tmp_path / "store.zarr")
    assert next(iter(refs)).startswith("dotted/")  # the file starts with a chunk reference
    doc = {"version": 1, "refs": refs} if version == 1 else refs
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(doc))
    assert detect_format(path) == "kerchunk"
    group = zm.open_virtual(path, load=())
    assert all(isinstance(a, ManifestArray) for a in _arrays(group).values())
    virtual = zarr.open_group(ManifestStore(group), mode="r")
    assert virtual.attrs.asdict() == original.attrs.asdict()
    expected = {p: a for p, a in original.members(max_depth=None) if isinstance(a, zarr.Array)}
    assert sorted(_arrays(group)) == sorted(expected)
    for name, array in expected.items():
        got = virtual[name][...]
        want = array[...]
        native = want.dtype if want.dtype.kind == "T" else want.dtype.newbyteorder("=")
        assert got.dtype == native, name
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'{"a/c/0/0": ["/data/a.nc", 0, 8], "a/zarr.json": "{}"}', "kerchunk"),
        (b'{"zarr.json": "{\\"zarr_format\\": 3}"}', "kerchunk"),
        (b'{\n  "x/.zarray": "{}"}', "kerchunk"),
        # a Zarr v3 metadata document itself, or other JSON, is not references
        (b'{"zarr_format": 3, "node_type": "group", "attributes": {}}', None),
        (b'{"something": "else"}', None),
    ],
)
def test_version_0_references_are_sniffed(head: bytes, expected: str | None) -> None:
    assert sniff(head) == expected


def test_tifffile_v3_references_with_jpeg_tables_read_like_tifffile(tmp_path: Path) -> None:
    """tifffile's ``write_fsspec(zarr_format=3)`` of a JPEG TIFF whose strips share a
    ``JPEGTables`` tag (what libtiff, here through Pillow, writes) names its codec
    ``imagecodecs_jpeg`` with base64 ``tables``; zarr's codec (imagecodecs-zarr) decodes
    them into bytes inside the configuration it is given, which must not leak into the
    zarr.json the store serves (it used to: ``TypeError: Type is not JSON serializable``)."""
    import importlib.metadata
    import io

    tifffile = pytest.importorskip("tifffile")
    image = pytest.importorskip("PIL.Image")
    if not any(
        e.name == "imagecodecs_jpeg" for e in importlib.metadata.entry_points(group="zarr.codecs")
    ):
        pytest.skip("zarr needs imagecodecs-zarr's codec entry points (the test extra)")
    data = np.random.default_rng(5).integers(0, 255, (48, 64, 3), dtype="u1")
    path = tmp_path / "rgb.tif"
    image.fromarray(data).save(path, compression="jpeg")
    with tifffile.TiffFile(path) as tif, tif.series[0].aszarr() as store:
        assert tif.pages[0].jpegtables is not None
        buf = io.StringIO()
        store.write_fsspec(buf, url=str(tmp_path), groupname="data", zarr_format=3)
    refs = tmp_path / "refs.json"
    refs.write_text(buf.getvalue())
    codec = json.loads(json.loads(buf.getvalue())["data/zarr.json"])["codecs"][-1]
    assert codec["name"] == "imagecodecs_jpeg" and codec["configuration"]["tables"]
    group = zm.open_virtual(refs, allowed_prefixes=[str(tmp_path)])
    group.to_store(tmp_path / "store")
    store = ManifestStore(tmp_path / "store", allowed_prefixes=[str(tmp_path)])
    root = zarr.open_group(store, mode="r")
    arrays = dict(root.members())  # listing serves every node's zarr.json
    np.testing.assert_array_equal(arrays["data"][...], tifffile.imread(path))
