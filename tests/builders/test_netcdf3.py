"""The netCDF3 builder: files written by netCDF4 and scipy, read back through ManifestStore."""

from __future__ import annotations

import base64
import itertools
import math
import struct
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import scipy.io
import zarr

from zarr_manifest import BuildError, InlineArray, ManifestArray, ManifestGroup
from zarr_manifest.builders._source import open_source
from zarr_manifest.builders.netcdf3 import build_netcdf3, parse_netcdf3_header

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

FORMATS = ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"]


def _open(group: ManifestGroup) -> zarr.Group:
    from zarr_manifest import ManifestStore

    return zarr.open_group(ManifestStore(group), mode="r")


def _write_sample(path: Path, fmt: str, nrec: int = 7) -> None:
    rng = np.random.default_rng(0)
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.title = "sample file"
        ds.history = "created by a test; ünïcode"
        ds.version = np.int32(3)
        ds.levels = np.array([1.5, 2.5, 3.5])
        ds.createDimension("time", None)
        ds.createDimension("y", 4)
        ds.createDimension("x", 5)
        ds.createDimension("nchar", 6)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(nrec) * 0.5
        temp = ds.createVariable("temp", "f4", ("time", "y", "x"), fill_value=-999.0)
        temp.scale_factor = 0.1  # a double: JSON attributes keep no narrower float type
        data = rng.normal(size=(nrec, 4, 5)).astype("f4")
        data[0, 0, 0] = -999.0  # stored as is (no auto scaling): the fill value
        temp.set_auto_maskandscale(False)
        temp[:] = data
        counts = ds.createVariable("counts", "i2", ("time", "x"))
        counts[:] = rng.integers(-300, 300, size=(nrec, 5))
        flags = ds.createVariable("flags", "i1", ("time", "y"))
        flags[:] = rng.integers(-100, 100, size=(nrec, 4))
        ds.createVariable("lat", "f4", ("y",))[:] = np.linspace(-10, 10, 4)
        ds.createVariable("ix", "i4", ("y", "x"))[:] = np.arange(20).reshape(4, 5) * 1000
        names = ds.createVariable("names", "S1", ("y", "nchar"))
        names[:] = netCDF4.stringtochar(np.array(["alpha", "b", "", "delta!"], "S6"))
        ds.createVariable("scalar", "f8", ())[...] = 42.25
        ds.createVariable("nofill", "f8", ("x",))  # never written: netCDF fills it
        if fmt == "NETCDF3_64BIT_DATA":
            ds.createVariable("u8", "u8", ("x",))[:] = np.arange(5, dtype="u8") * 2**62
            ds.createVariable("i8", "i8", ("time",))[:] = -(np.arange(nrec) * 2**40)
            ds.createVariable("u2", "u2", ("y",))[:] = [0, 1, 65000, 7]
            ds.createVariable("u1", "u1", ("time", "x"))[:] = np.arange(nrec * 5).reshape(nrec, 5)
            ds.createVariable("u4", "u4", ("x",))[:] = np.arange(5) * 10**9


def _assert_same_as_netcdf4(group: ManifestGroup, path: Path) -> None:
    zg = _open(group)
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        ds.set_auto_chartostring(False)
        assert set(zg.array_keys()) == set(ds.variables)
        for name, var in ds.variables.items():
            expected = np.asarray(var[...])
            got = zg[name][...]
            assert got.dtype == expected.dtype.newbyteorder("="), name
            assert got.shape == expected.shape, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
            assert zg[name].metadata.dimension_names == var.dimensions, name


@pytest.mark.parametrize("fmt", FORMATS)
def test_values_match_netcdf4(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "sample.nc"
    _write_sample(path, fmt)
    group = build_netcdf3(path)
    _assert_same_as_netcdf4(group, path)
    header = parse_netcdf3_header(path.read_bytes())
    assert header.version == {"NETCDF3_CLASSIC": 1, "NETCDF3_64BIT_OFFSET": 2}.get(fmt, 5)
    assert header.numrecs == 7
    # one reference per record of a record variable, chunk (1, *rest)
    temp = group["temp"]
    assert isinstance(temp, ManifestArray)
    assert temp.chunks == (1, 4, 5)
    assert len(temp.manifest) == 7
    assert temp.metadata.codecs[0].to_dict() == {
        "name": "bytes",
        "configuration": {"endian": "big"},
    }
    entries = [temp.manifest[f"{r}.0.0"] for r in range(7)]
    steps = {b["offset"] - a["offset"] for a, b in itertools.pairwise(entries)}
    assert len(steps) == 1  # records are equally spaced (recsize)
    assert {e["length"] for e in entries} == {4 * 5 * 4}
    assert all(e["path"] == path.resolve().as_uri() for e in entries)


@pytest.mark.parametrize("fmt", FORMATS)
def test_attributes_and_fill_values(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "sample.nc"
    _write_sample(path, fmt)
    group = build_netcdf3(path)
    with netCDF4.Dataset(path) as ds:
        for key in ds.ncattrs():
            expected = ds.getncattr(key)
            got = group.attributes[key]
            if isinstance(expected, str):
                assert got == expected
            else:
                np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
        assert group["time"].attributes == {"units": "days since 2000-01-01"}
        # _FillValue -> fill_value; the attribute stays for xarray, in its Zarr v3 encoding
        temp = group["temp"]
        assert temp.fill_value == np.float32(-999.0)
        raw = base64.standard_b64decode(temp.attributes["_FillValue"])
        assert struct.unpack("<d", raw)[0] == -999.0
        assert temp.attributes["scale_factor"] == pytest.approx(0.1)
        # no _FillValue attribute: netCDF's default fill value
        assert group["counts"].fill_value == -32767
        assert group["flags"].fill_value == -127
        assert group["ix"].fill_value == -2147483647
        assert group["lat"].fill_value == np.float32(9.9692099683868690e36)
        assert group["names"].fill_value == b""
        assert "_FillValue" not in group["counts"].attributes
        # the never-written variable holds netCDF's default fill in the file
        np.testing.assert_array_equal(_open(group)["nofill"][...], np.full(5, 9.969209968386869e36))
        if fmt == "NETCDF3_64BIT_DATA":
            assert group["u8"].fill_value == 18446744073709551614
            assert group["i8"].fill_value == -9223372036854775806


def test_xarray_decodes_like_netcdf(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    from zarr_manifest import ManifestStore

    path = tmp_path / "sample.nc"
    _write_sample(path, "NETCDF3_64BIT_OFFSET")
    group = build_netcdf3(path)
    with xr.open_dataset(path, engine="netcdf4") as expected:
        got = xr.open_zarr(ManifestStore(group), consolidated=False, zarr_format=3)
        xr.testing.assert_equal(got, expected)
        assert np.isnan(got["temp"].values[0, 0, 0])
        assert got["names"].values.tolist() == [b"alpha", b"b", b"", b"delta!"]


@pytest.mark.parametrize("version", [1, 2])
def test_values_match_scipy(tmp_path: Path, version: int) -> None:
    path = tmp_path / "scipy.nc"
    rng = np.random.default_rng(1)
    with scipy.io.netcdf_file(path, "w", version=version) as f:
        f.source = b"scipy"
        f.createDimension("t", None)
        f.createDimension("n", 3)
        v = f.createVariable("v", "f8", ("t", "n"))
        v[:] = rng.normal(size=(5, 3))
        w = f.createVariable("w", "i2", ("t",))
        w[:] = np.arange(5)
        f.createVariable("k", "i4", ("n",))[:] = [7, 8, 9]
    group = build_netcdf3(path)
    zg = _open(group)
    assert group.attributes == {"source": "scipy"}
    with scipy.io.netcdf_file(path, "r", mmap=False) as f:
        for name, var in f.variables.items():
            np.testing.assert_array_equal(zg[name][...], var[...], err_msg=name)


@pytest.mark.parametrize("dtype", ["i1", "S1", "i2", "f8"])
def test_single_record_variable_is_packed(tmp_path: Path, dtype: str) -> None:
    # with one record variable the records are not padded to 4 bytes (spec special case)
    path = tmp_path / "one.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createDimension("n", 3)
        ds.createVariable("fixed", "i2", ("n",))[:] = [1, 2, 3]
        v = ds.createVariable("v", dtype, ("t", "n"))
        if dtype == "S1":
            v[:] = np.array([list(s) for s in ("abc", "de\0", "fgh", "ijk", "lmn")], "S1")
        else:
            v[:] = np.arange(15).reshape(5, 3) - 4
    group = build_netcdf3(path)
    manifest = group["v"].manifest
    itemsize = np.dtype(dtype).itemsize
    # the records follow each other unpadded: one chunk of all five
    assert dict(manifest.items()) == {"0.0": manifest["0.0"]}
    assert manifest["0.0"]["length"] == 5 * 3 * itemsize
    _assert_same_as_netcdf4(group, path)


def test_records_of_the_only_record_variable_share_chunks(tmp_path: Path) -> None:
    # one chunk per record made a long time series 10,000 chunks of 4 bytes
    path = tmp_path / "series.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("time", None)
        ds.createDimension("x", 3)
        ds.createVariable("x", "i4", ("x",))[:] = [1, 2, 3]
        ds.createVariable("time", "f4", ("time",))[:] = np.arange(10_000, dtype="f4") / 7
    group = build_netcdf3(path)
    assert len(group["time"].manifest) == 1
    _assert_same_as_netcdf4(group, path)
    split = build_netcdf3(path, target_chunk_bytes=4000)
    assert split["time"].chunks == (1000,)
    assert len(split["time"].manifest) == 10
    _assert_same_as_netcdf4(split, path)


def test_interleaved_record_variables_keep_a_chunk_per_record(tmp_path: Path) -> None:
    path = tmp_path / "two.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("time", None)
        ds.createVariable("a", "f8", ("time",))[:] = np.arange(50.0)
        ds.createVariable("b", "i2", ("time",))[:] = np.arange(50) * 2
    group = build_netcdf3(path)
    assert len(group["a"].manifest) == 50  # records of a and b alternate in the file
    _assert_same_as_netcdf4(group, path)


def test_large_variables_split_into_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("t", None)
        ds.createDimension("a", 40)  # divisible by the rows per chunk
        ds.createDimension("b", 37)  # prime: the last chunk over-reads into what follows
        ds.createDimension("c", 10)
        ds.createVariable("even", "f4", ("a", "c"))[:] = np.arange(400).reshape(40, 10)
        ds.createVariable("prime", "f4", ("b", "c"))[:] = np.arange(370).reshape(37, 10)
        ds.createVariable("cube", "i2", ("a", "b", "c"))[:] = np.arange(14800).reshape(40, 37, 10)
        ds.createVariable("rec", "f8", ("t", "b", "c"))[:] = np.arange(3 * 370).reshape(3, 37, 10)
        ds.createVariable("last", "f4", ("b", "c"))  # last in the file: no bytes to over-read
    group = build_netcdf3(path, target_chunk_bytes=200)
    assert group["even"].chunks == (5, 10)
    assert group["prime"].chunks == (5, 10)
    assert group["cube"].chunks == (1, 10, 10)
    assert group["rec"].chunks[0] == 1
    assert math.prod(group["rec"].chunks) * 8 <= 200
    # every chunk length is the full chunk: zarr decodes edge chunks as whole chunks
    lengths = {e["length"] for e in group["prime"].manifest.values()}
    assert lengths == {5 * 10 * 4}
    _assert_same_as_netcdf4(group, path)
    whole = build_netcdf3(path)
    assert whole["cube"].chunks == (40, 37, 10)
    assert len(whole["cube"].manifest) == 1


def test_streaming_numrecs_counts_records_from_the_file_size(tmp_path: Path) -> None:
    original = tmp_path / "original.nc"
    _write_sample(original, "NETCDF3_CLASSIC", nrec=4)
    data = bytearray(original.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"  # numrecs = STREAMING (netCDF-C cannot read it)
    path = tmp_path / "stream.nc"
    path.write_bytes(bytes(data))
    group = build_netcdf3(path)
    assert parse_netcdf3_header(bytes(data)).numrecs == -1
    assert group["temp"].shape == (4, 4, 5)
    _assert_same_as_netcdf4(group, original)


def test_records_missing_from_a_truncated_file_read_as_fill(tmp_path: Path) -> None:
    path = tmp_path / "cut.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createVariable("v", "f8", ("t",))[:] = np.arange(6.0)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 16])  # the last two records are gone
    group = build_netcdf3(path)
    manifest = group["v"].manifest
    assert "3" in manifest and "4" not in manifest and "5" not in manifest
    got = _open(group)["v"][...]
    np.testing.assert_array_equal(got, [0, 1, 2, 3, 9.969209968386869e36, 9.969209968386869e36])


def test_zero_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createDimension("x", 2)
        ds.createVariable("v", "f4", ("t", "x"))
        ds.createVariable("x", "i4", ("x",))[:] = [5, 6]
    group = build_netcdf3(path)
    assert group["v"].shape == (0, 2)
    assert len(group["v"].manifest) == 0
    _assert_same_as_netcdf4(group, path)


def test_drop_and_load(tmp_path: Path) -> None:
    path = tmp_path / "sample.nc"
    _write_sample(path, "NETCDF3_CLASSIC")
    group = build_netcdf3(open_source(path), drop=["counts"], load=["time", "lat", "names"])
    assert "counts" not in group
    for name in ("time", "lat", "names"):
        assert isinstance(group[name], InlineArray)
    assert isinstance(group["temp"], ManifestArray)
    assert group["time"].attributes == {"units": "days since 2000-01-01"}
    assert group["time"].dimension_names == ("time",)
    zg = _open(group)
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_chartostring(False)
        np.testing.assert_array_equal(group["time"].data, ds["time"][:])
        np.testing.assert_array_equal(zg["time"][...], ds["time"][:])
        np.testing.assert_array_equal(zg["names"][...], ds["names"][:])
        np.testing.assert_array_equal(zg["lat"][...], ds["lat"][:])
    with pytest.raises(BuildError, match="nope"):
        build_netcdf3(path, drop=["nope"])


def test_round_trip_through_a_manifest_store_directory(tmp_path: Path) -> None:
    path = tmp_path / "sample.nc"
    _write_sample(path, "NETCDF3_64BIT_DATA")
    group = build_netcdf3(path)
    group.to_store(tmp_path / "store")
    again = ManifestGroup.from_store(tmp_path / "store")
    assert again.attributes == group.attributes
    for name, array in group.arrays.items():
        assert again[name].metadata.to_dict() == array.metadata.to_dict(), name
        assert dict(again[name].manifest.items()) == dict(array.manifest.items()), name
    _assert_same_as_netcdf4(again, path)


def test_not_netcdf3(tmp_path: Path) -> None:
    path = tmp_path / "not.nc"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(BuildError, match=r"not\.nc.*not a netCDF3 file"):
        build_netcdf3(path)
    with pytest.raises(BuildError, match="no groups"):
        _write_sample(tmp_path / "ok.nc", "NETCDF3_CLASSIC")
        build_netcdf3(tmp_path / "ok.nc", group="sub")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_header(tmp_path: Path, fmt: str) -> None:
    good = tmp_path / "good.nc"
    _write_sample(good, fmt)
    header_size = parse_netcdf3_header(good.read_bytes()).header_size
    data = good.read_bytes()
    for cut in (3, 10, header_size // 2, header_size - 1):
        bad = tmp_path / f"cut{cut}.nc"
        bad.write_bytes(data[:cut])
        with pytest.raises(BuildError, match=rf"cut{cut}\.nc"):
            build_netcdf3(bad)


def test_corrupt_header_fields(tmp_path: Path) -> None:
    good = tmp_path / "good.nc"
    _write_sample(good, "NETCDF3_CLASSIC")
    data = good.read_bytes()
    # the dimension count is at bytes 12..16 (after magic, numrecs and the list tag)
    for patch, message in (
        ((12, b"\x7f\xff\xff\xff"), "exceeds"),
        ((8, b"\x00\x00\x00\x07"), "list tag"),
        ((4, b"\xff\xff\xff\xf0"), "negative"),
    ):
        bad = bytearray(data)
        start, raw = patch
        bad[start : start + len(raw)] = raw
        path = tmp_path / "bad.nc"
        path.write_bytes(bytes(bad))
        with pytest.raises(BuildError, match=rf"bad\.nc.*{message}"):
            build_netcdf3(path)


def test_header_larger_than_the_first_read(tmp_path: Path) -> None:
    path = tmp_path / "wide.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("x", 2)
        for i in range(70):
            v = ds.createVariable(f"var_with_a_long_name_{i:04d}", "i2", ("x",))
            v.long_name = "a description that makes the header grow " * 30
            v[:] = [i, -i]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        header = parse_netcdf3_header(path.read_bytes())
    assert header.header_size > 64 * 1024
    group = build_netcdf3(path)
    assert len(group.arrays) == 70
    zg = _open(group)
    np.testing.assert_array_equal(zg["var_with_a_long_name_0069"][...], [69, -69])


def _write_radar(path: Path, nrays: int = 300, ngates: int = 40) -> None:
    """A CfRadial-like file written by xarray with its defaults (scipy engine): per-ray
    variables of a few bytes per record beside per-ray moments of a few hundred bytes."""
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(7)
    ds = xr.Dataset(
        {
            "azimuth": ("time", (np.arange(nrays) * 1.2 % 360).astype("f4")),
            "elevation": ("time", rng.uniform(0, 20, nrays).astype("f4")),
            "flag": ("time", rng.integers(-100, 100, nrays).astype("i1")),
            "ray_name": ("time", np.array([f"ray{i}" for i in range(nrays)], "S6")),
            "n_samples": ("time", rng.integers(0, 2**31, nrays).astype("i4")),
            "reflectivity": (("time", "range"), rng.integers(-999, 999, (nrays, ngates), "i2")),
            "velocity": (("time", "range"), rng.normal(size=(nrays, ngates)).astype("f4")),
        },
        coords={"time": np.arange(nrays) * 0.1, "range": np.arange(ngates) * 150.0},
    )
    ds["reflectivity"].attrs["_FillValue"] = np.int16(-9999)
    ds.to_netcdf(path, engine="scipy", unlimited_dims=["time"])


_TINY = {"azimuth", "elevation", "flag", "ray_name", "n_samples"}


def _raw_scipy(path: Path) -> dict[str, np.ndarray]:
    with scipy.io.netcdf_file(path, "r", mmap=False) as f:
        return {name: var[...].copy() for name, var in f.variables.items()}


def test_tiny_record_variables_are_loaded_by_default(tmp_path: Path) -> None:
    # 12 of the 17 record variables of Py-ART's CfRadial sample are a few bytes per ray:
    # one reference per record made ~80,000 references, each larger than its bytes
    import zarr_manifest as zm

    path = tmp_path / "radar.nc"
    _write_radar(path)
    with scipy.io.netcdf_file(path, "r", mmap=False) as f:
        assert sum(v.isrec for v in f.variables.values()) == 8  # interleaved records
    group = zm.open_virtual(path)
    for name in _TINY | {"time", "range"}:
        assert isinstance(group[name], InlineArray), name
    for name in ("reflectivity", "velocity"):  # 80 and 160 bytes a record: referenced
        assert isinstance(group[name], ManifestArray), name
        assert len(group[name].manifest) == 300
    expected = _raw_scipy(path)
    zg = _open(group)
    for name, values in expected.items():
        np.testing.assert_array_equal(zg[name][...], values, err_msg=name)
    # load=() keeps everything referenced, one chunk per record
    referenced = zm.open_virtual(path, load=())
    assert all(isinstance(a, ManifestArray) for a in referenced.arrays.values())
    assert len(referenced["azimuth"].manifest) == 300
    zg = _open(referenced)
    for name in _TINY:
        np.testing.assert_array_equal(zg[name][...], expected[name], err_msg=name)


def test_tiny_record_variables_through_the_engine(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    import zarr_manifest as zm

    path = tmp_path / "radar.nc"
    _write_radar(path)
    zm.open_virtual(path).to_store(tmp_path / "radar.manifest")
    with (
        xr.open_dataset(path, engine="netcdf4") as expected,
        xr.open_dataset(
            tmp_path / "radar.manifest", engine="manifest", allowed_prefixes=[str(tmp_path)]
        ) as got,
    ):
        xr.testing.assert_equal(got.load(), expected.load())


def test_loading_record_variables_reads_only_their_slabs_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # loading read the span of all records once per variable: 5 loaded variables of a
    # file of large records read the file 5 times
    from zarr_manifest.builders import _source

    path = tmp_path / "radar.nc"
    _write_radar(path, nrays=200, ngates=20_000)  # records of 120 kB: slabs far apart
    reads: list[int] = []
    original = _source.Source.open

    class Counting:
        def __init__(self, f: object) -> None:
            self._f = f

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self._f.close()  # type: ignore[attr-defined]

        def seek(self, pos: int) -> None:
            self._f.seek(pos)  # type: ignore[attr-defined]

        def read(self, n: int) -> bytes:
            reads.append(n)
            return self._f.read(n)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(_source.Source, "open", lambda self: Counting(original(self)))
    group = build_netcdf3(path, load=sorted(_TINY))
    # one request per record (the slabs of a record are neighbours), none of the moments
    assert len(reads) == 200
    assert sum(reads) < 200 * 64
    expected = _raw_scipy(path)
    for name in _TINY:
        assert isinstance(group[name], InlineArray)
        np.testing.assert_array_equal(group[name].data, expected[name], err_msg=name)


def test_loaded_records_missing_from_a_truncated_file_read_as_fill(tmp_path: Path) -> None:
    path = tmp_path / "cut.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createVariable("a", "f8", ("t",))[:] = np.arange(6.0)
        ds.createVariable("b", "i2", ("t",), fill_value=-5)[:] = np.arange(6) * 2
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 16])  # record 5 gone, and b of record 4
    referenced = _open(build_netcdf3(path))
    loaded = build_netcdf3(path, load=["a", "b"])
    fill = 9.969209968386869e36
    np.testing.assert_array_equal(loaded["a"].data, [0, 1, 2, 3, 4, fill])
    np.testing.assert_array_equal(loaded["b"].data, [0, 2, 4, 6, -5, -5])
    for name in ("a", "b"):
        np.testing.assert_array_equal(referenced[name][...], loaded[name].data, err_msg=name)


def test_only_small_arrays_of_tiny_chunks_are_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zarr_manifest as zm
    import zarr_manifest.builders as builders_module

    path = tmp_path / "radar.nc"
    _write_radar(path)
    # azimuth (1,200 bytes) is above a bound of 1,000 bytes; flag (300) is below
    monkeypatch.setattr(builders_module, "ROW_CHUNKS_LOAD_MAX_BYTES", 1000)
    group = zm.open_virtual(path)
    assert isinstance(group["flag"], InlineArray)
    assert isinstance(group["azimuth"], ManifestArray)
    # the only record variable is one contiguous chunk (or a few): referenced
    single = tmp_path / "single.nc"
    with netCDF4.Dataset(single, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createVariable("v", "f4", ("t",))[:] = np.arange(100.0)
    assert isinstance(zm.open_virtual(single)["v"], ManifestArray)


def test_tiny_record_variables_combine_along_the_records(tmp_path: Path) -> None:
    # build's default load: the first file's choice, applied to every file
    import zarr_manifest as zm

    paths = [tmp_path / "a.nc", tmp_path / "b.nc"]
    for i, path in enumerate(paths):
        _write_radar(path, nrays=100 + 50 * i)
    group = zm.build(paths, concat_dim="time")
    assert isinstance(group["azimuth"], InlineArray)
    assert isinstance(group["reflectivity"], ManifestArray)
    parts = [_raw_scipy(p) for p in paths]
    zg = _open(group)
    for name in (*_TINY, "reflectivity", "velocity"):
        expected = np.concatenate([part[name] for part in parts])
        np.testing.assert_array_equal(zg[name][...], expected, err_msg=name)
