"""The HDF4 builder: SD datasets of files written by pyhdf (and NASA's MOD14 sample shipped
in the VirtualiZarr wheel), read back through ManifestStore and compared with pyhdf."""

from __future__ import annotations

import base64
import importlib.util
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from zarr_manifest import (
    BuildError,
    InlineArray,
    ManifestArray,
    ManifestGroup,
    UnsupportedError,
    open_virtual,
)
from zarr_manifest.builders import detect_format
from zarr_manifest.builders.hdf4 import build_hdf4

SD_module = pytest.importorskip("pyhdf.SD")
SD, SDC = SD_module.SD, SD_module.SDC

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")


def _zarr(group: ManifestGroup) -> zarr.Group:
    from zarr_manifest import ManifestStore

    return zarr.open_group(ManifestStore(group), mode="r")


def _assert_matches_pyhdf(path: Path, group: ManifestGroup) -> int:
    """Every SD dataset pyhdf reads has the same values, dtype, dims and attributes;
    returns how many were compared."""
    z = _zarr(group)
    f = SD(str(path))
    try:
        count = 0
        seen: set[str] = set()
        for index in range(f.info()[0]):
            sds = f.select(index)
            name, _rank, dims, _type, _nattrs = sds.info()
            shape = (dims,) if isinstance(dims, int) else tuple(dims)
            array = z[f"{name}_{index}" if name in seen else name]  # a name seen twice
            seen.add(name)
            assert array.shape == shape, name
            if 0 not in shape:
                expected = sds.get()
                got = array[:]
                assert got.dtype == expected.dtype, name
                np.testing.assert_array_equal(got, expected, err_msg=name)
            assert tuple(array.metadata.dimension_names) == tuple(
                sds.dim(i).info()[0] for i in range(len(shape))
            )
            for key, value in sds.attributes().items():
                if key != "_FillValue":
                    assert np.asarray(array.attrs[key]).tolist() == np.asarray(value).tolist()
            count += 1
        for key, value in f.attributes().items():
            assert np.asarray(group.attributes[key]).tolist() == np.asarray(value).tolist()
        return count
    finally:
        f.end()


def _write(path: Path) -> None:
    """A file with pyhdf's defaults: contiguous, deflated, unwritten, unlimited datasets."""
    f = SD(str(path), SDC.WRITE | SDC.CREATE)
    f.title = "a pyhdf file"
    f.attr("levels").set(SDC.FLOAT64, [1.5, 2.5])
    temp = f.create("temp", SDC.FLOAT32, (4, 5))
    temp.units = "K"
    temp.setfillvalue(-999.0)
    temp[:] = np.arange(20, dtype="f4").reshape(4, 5)
    temp.dim(0).setname("y")
    temp.dim(1).setname("x")
    counts = f.create("counts", SDC.INT16, (6, 8))
    counts.setcompress(SDC.COMP_DEFLATE, 6)
    counts[:] = (np.arange(48, dtype="i2") - 20).reshape(6, 8)
    for name in ("CHAR8", "UCHAR8", "INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32"):
        f.create(f"unwritten_{name}", getattr(SDC, name), (2, 3))
    f.create("unwritten_FLOAT64", SDC.FLOAT64, (3,))
    grow = f.create("grow", SDC.UINT32, (SDC.UNLIMITED, 3))
    grow[0:4] = np.arange(12, dtype="u4").reshape(4, 3) * 1000
    part = f.create("part", SDC.UINT16, (6,))
    part[0:2] = np.array([1, 2], "u2")
    chars = f.create("chars", SDC.CHAR8, (2, 3))
    chars[:] = np.array([[b"a", b"b", b""], [b"d", b"e", b"f"]])
    scaled = f.create("val", SDC.FLOAT64, (5,))
    scaled[:] = np.linspace(0, 1, 5)
    dim = scaled.dim(0)
    dim.setname("val")
    dim.setscale(SDC.FLOAT64, [0.0, 1.0, 2.0, 3.0, 4.0])  # a second SDS named "val"
    f.end()


def test_pyhdf_file_matches_pyhdf(tmp_path: Path) -> None:
    path = tmp_path / "sample.hdf"
    _write(path)
    assert detect_format(path) == "hdf4"
    group = open_virtual(path, load=())
    assert isinstance(group["counts"], ManifestArray)
    codecs = group["counts"].metadata.to_dict()["codecs"]
    assert [c["name"] for c in codecs] == ["bytes", "numcodecs.zlib"]
    assert codecs[0]["configuration"]["endian"] == "big"
    # the dimension scale is a second dataset named "val": kept under its index
    assert {"val", "val_15"} <= set(group.arrays)
    assert _assert_matches_pyhdf(path, group) == 16
    assert group.attributes["title"] == "a pyhdf file"
    # the fill value is what pyhdf reads where nothing was written (netCDF-2 defaults)
    z = _zarr(group)
    assert z["unwritten_UINT8"][0, 0] == 129
    assert z["unwritten_FLOAT64"][0] == np.float64(9.9692099683868690e36)
    # _FillValue as xarray's Zarr v3 encoding (base64 of the double), so xarray masks it
    encoded = base64.standard_b64encode(struct.pack("<d", -999.0)).decode()
    assert group["temp"].metadata.attributes["_FillValue"] == encoded


def test_load_reads_the_same_values(tmp_path: Path) -> None:
    path = tmp_path / "sample.hdf"
    _write(path)
    names = ["temp", "counts", "part", "grow", "unwritten_INT16"]
    group = build_hdf4(path, load=names)
    assert all(isinstance(group[n], InlineArray) for n in names)
    z = _zarr(group)
    f = SD(str(path))
    for name in names:
        np.testing.assert_array_equal(z[name][:], f.select(name).get())
    f.end()
    assert set(build_hdf4(path, drop=["temp"]).arrays) == set(group.arrays) - {"temp"}


def test_linked_blocks_are_read(tmp_path: Path) -> None:
    """Rows appended one by one to two unlimited datasets land in many linked blocks."""
    path = tmp_path / "linked.hdf"
    f = SD(str(path), SDC.WRITE | SDC.CREATE)
    a = f.create("a", SDC.FLOAT32, (SDC.UNLIMITED, 7))
    b = f.create("b", SDC.INT16, (SDC.UNLIMITED,))
    for i in range(200):
        a[i : i + 1] = np.full((1, 7), i, "f4")
        b[i : i + 1] = np.array([i], "i2")
    f.end()
    with pytest.warns(UserWarning, match="linked blocks"):
        group = build_hdf4(path)
    assert isinstance(group["a"], InlineArray)
    _assert_matches_pyhdf(path, group)


@pytest.mark.parametrize(
    ("comp", "args", "label"),
    [("COMP_RLE", (), "RLE"), ("COMP_SKPHUFF", (2,), "skipping Huffman")],
)
def test_other_compressions_are_refused(
    tmp_path: Path, comp: str, args: tuple[int, ...], label: str
) -> None:
    path = tmp_path / "comp.hdf"
    f = SD(str(path), SDC.WRITE | SDC.CREATE)
    sds = f.create("packed", SDC.INT16, (10, 10))
    sds.setcompress(getattr(SDC, comp), *args)
    sds[:] = np.arange(100, dtype="i2").reshape(10, 10)
    f.create("plain", SDC.INT16, (3,))[:] = np.array([1, 2, 3], "i2")
    f.end()
    with pytest.raises(UnsupportedError, match=f"'packed' is {label}-compressed"):
        build_hdf4(path)
    group = build_hdf4(path, drop=["packed"])
    np.testing.assert_array_equal(_zarr(group)["plain"][:], [1, 2, 3])


def test_not_hdf4_and_unknown_names(tmp_path: Path) -> None:
    path = tmp_path / "sample.hdf"
    _write(path)
    with pytest.raises(BuildError, match="no dataset"):
        build_hdf4(path, drop=["nope"])
    other = tmp_path / "x.hdf"
    other.write_bytes(b"\x0e\x03\x13\x01" + b"\x00" * 20)
    with pytest.raises(BuildError):
        build_hdf4(other)


def _virtualizarr_samples() -> list[Path]:
    spec = importlib.util.find_spec("virtualizarr")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "tests" / "data").glob("*.hdf4"))


@pytest.mark.skipif(not _virtualizarr_samples(), reason="needs the VirtualiZarr wheel's samples")
def test_nasa_samples() -> None:
    """MOD14 (a MODIS fire granule: chunked, deflated datasets, chunk tables in linked
    blocks, empty unlimited datasets) and a synthetic one, as pyhdf reads them."""
    for path in _virtualizarr_samples():
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # nothing loaded
            group = open_virtual(path, load=())
        assert _assert_matches_pyhdf(path, group) >= 2
    mod14 = next(p for p in _virtualizarr_samples() if p.name == "MOD14.hdf4")
    fire = open_virtual(mod14, load=())["fire mask"]
    assert fire.metadata.chunks == (10, 1354)
    assert len(fire.manifest) == 203
    loaded = build_hdf4(mod14, load=["fire mask"])["fire mask"]
    f = SD(str(mod14))
    np.testing.assert_array_equal(
        _zarr(ManifestGroup(arrays={"m": loaded}))["m"][:], f.select("fire mask").get()
    )
    f.end()


def test_over_http(
    clean_range_server: Any, serve_bytes: Callable[[bytes, str], str], tmp_path: Path
) -> None:
    path = tmp_path / "sample.hdf"
    _write(path)
    url = clean_range_server.url_for(serve_bytes(path.read_bytes(), "sample.hdf"))
    assert detect_format(url) == "hdf4"
    group = open_virtual(url, load=())
    assert group["counts"].manifest.path_table == (url,)
    assert _assert_matches_pyhdf(path, group) == 16
