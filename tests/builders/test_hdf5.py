"""The HDF5 / netCDF-4 builder: files written by h5py and netCDF4, read back through zarr."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import netCDF4
import numpy as np
import pytest

import zarr_manifest.builders.hdf5 as hdf5_builder
from zarr_manifest import BuildError, InlineArray, ManifestArray, ManifestGroup, UnsupportedError
from zarr_manifest.builders.hdf5 import build_hdf5

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

OpenBuilt = Callable[..., Any]
AssertEqual = Callable[..., None]


def _h5_values(ds: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(ds.dtype) is not None and ds.dtype.kind == "O":
        return np.asarray(ds.asstr()[()], dtype=object)
    return np.asarray(ds[()])


def _assert_file_matches(
    group: ManifestGroup, path: Path, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> int:
    """Every dataset h5py sees (but netCDF dimension-only scales) reads the same through zarr."""
    zg = open_built(group)
    checked = 0
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            ds = f[name]
            if name not in group:
                assert ds.attrs.get("NAME", b"").startswith(b"This is a netCDF dimension")
                continue
            assert_values_equal(zg[name][...], _h5_values(ds), name)
            checked += 1
    return checked


# ---- dtypes and byte order -------------------------------------------------------------------

DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8", "?"]


def _sample(dtype: np.dtype[Any], shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(
            info.min, info.max, size=shape, endpoint=True, dtype=dtype.newbyteorder("=")
        )
    return (rng.normal(size=shape) * 1e3).astype(dtype)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("code", DTYPES)
def test_dtypes_and_byte_order(
    tmp_path: Path, code: str, order: str, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> None:
    dtype = np.dtype(code if code in ("?", "i1", "u1") else order + code)
    path = tmp_path / "d.h5"
    data = _sample(dtype, (13, 7))
    with h5py.File(path, "w") as f:
        f.create_dataset("contiguous", data=data, dtype=dtype)
        f.create_dataset("chunked", data=data, dtype=dtype, chunks=(4, 3))  # uneven edges
        f.create_dataset("gzip", data=data, dtype=dtype, chunks=(5, 7), compression="gzip")
        f.create_dataset("scalar", data=data[0, 0], dtype=dtype)
    group = build_hdf5(path)
    assert group["chunked"].chunks == (4, 3)
    assert group["chunked"].manifest.shape_chunk_grid == (4, 3)
    assert group["scalar"].shape == ()
    codecs = group["contiguous"].metadata.to_dict()["codecs"]
    if dtype.itemsize > 1:
        expected = "big" if dtype.byteorder == ">" else "little"
        assert codecs[0] == {"name": "bytes", "configuration": {"endian": expected}}
    assert _assert_file_matches(group, path, open_built, assert_values_equal) == 4


def test_other_types(
    tmp_path: Path, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> None:
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("complex", data=np.array([1 + 2j, -3.5j], dtype=">c16"))
        f.create_dataset("complex64", data=np.arange(6).astype("c8").reshape(2, 3), chunks=(1, 3))
        f.create_dataset("fixed_strings", data=np.array([b"ab", b"cde", b""]))
        f.create_dataset("float16", data=np.linspace(0, 1, 5, dtype="f2"))
        f.create_dataset("vlen_strings", data=["x", "yy", "zzz"], dtype=h5py.string_dtype())
        target = f.create_dataset("target", data=[1, 2])
        refs = f.create_dataset("refs", (2,), dtype=h5py.ref_dtype)
        refs[0] = target.ref
        refs[1] = f.ref
    group = build_hdf5(path)
    assert isinstance(group["complex"], ManifestArray)
    assert isinstance(group["fixed_strings"], ManifestArray)
    assert isinstance(group["vlen_strings"], InlineArray)
    assert isinstance(group["refs"], InlineArray)
    zg = open_built(group)
    assert zg["refs"][...].tolist() == ["/target", "/"]
    assert zg["vlen_strings"][...].tolist() == ["x", "yy", "zzz"]
    names = ["complex", "complex64", "fixed_strings", "float16", "target"]
    for name in names:
        with h5py.File(path, "r") as f:
            assert_values_equal(zg[name][...], f[name][()], name)


def test_compound_dataset_is_referenced_or_loaded(tmp_path: Path, open_built: OpenBuilt) -> None:
    path = tmp_path / "c.h5"
    dt = np.dtype([("a", "<i4"), ("b", "<f8")])
    data = np.array([(1, 1.5), (2, 2.5)], dtype=dt)
    with h5py.File(path, "w") as f:
        f.create_dataset("rec", data=data)
    group = build_hdf5(path)
    values = open_built(group)["rec"][...]
    assert values["a"].tolist() == [1, 2]
    assert values["b"].tolist() == [1.5, 2.5]


# ---- compression ---------------------------------------------------------------------------

COMPRESSIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "gzip1": {"compression": "gzip", "compression_opts": 1},
    "gzip9": {"compression": "gzip", "compression_opts": 9},
    "shuffle_gzip": {"compression": "gzip", "shuffle": True},
    "fletcher32": {"fletcher32": True},
    "shuffle_gzip_fletcher32": {"compression": "gzip", "shuffle": True, "fletcher32": True},
    "zstd": dict(hdf5plugin.Zstd(clevel=5)),
    "blosc_lz4_shuffle": dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1)),
    "blosc_zstd_bitshuffle": dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=2)),
    "blosc_zlib_noshuffle": dict(hdf5plugin.Blosc(cname="zlib", clevel=3, shuffle=0)),
    "bzip2": dict(hdf5plugin.BZip2(blocksize=5)),
}


@pytest.mark.parametrize("name", list(COMPRESSIONS))
def test_compressions(
    tmp_path: Path, name: str, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> None:
    path = tmp_path / "z.h5"
    rng = np.random.default_rng(1)
    ints = rng.integers(0, 1000, size=(40, 30)).astype("<i4")
    # compressible even without shuffling, so no filter gives up on a chunk
    floats = np.round(np.cumsum(rng.normal(size=(40, 30)), axis=1), 1).astype(">f8")
    with h5py.File(path, "w") as f:
        f.create_dataset("ints", data=ints, chunks=(16, 7), **COMPRESSIONS[name])
        f.create_dataset("floats", data=floats, chunks=(40, 8), **COMPRESSIONS[name])
    group = build_hdf5(path)
    assert _assert_file_matches(group, path, open_built, assert_values_equal) == 2


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({"scaleoffset": 0}, "scaleoffset"),
        ({"compression": "lzf"}, "lzf"),
        (dict(hdf5plugin.LZ4()), "lz4"),
        (dict(hdf5plugin.Bitshuffle()), "bitshuffle"),
    ],
)
def test_unsupported_filters_raise_naming_variable_and_filter(
    tmp_path: Path, kwargs: dict[str, Any], label: str
) -> None:
    path = tmp_path / "u.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("fine", data=np.arange(10))
        f.create_dataset("grp/packed", data=np.arange(100, dtype="i4"), chunks=(10,), **kwargs)
    with pytest.raises(UnsupportedError, match=rf"'grp/packed'.*{label}"):
        build_hdf5(path)
    # the variable can be left out, or loaded (h5py decodes it)
    assert "grp/packed" not in build_hdf5(path, drop=["grp/packed"])
    loaded = build_hdf5(path, load=["packed"])["grp/packed"]
    assert isinstance(loaded, InlineArray)
    assert loaded.data.tolist() == list(range(100))


def test_chunks_with_skipped_filters_are_loaded_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", shape=(4,), chunks=(2,), dtype="<i4", compression="gzip")
        ds[0:2] = [1, 2]
        # a chunk stored raw, its deflate filter marked as skipped (as HDF5 does when an
        # optional filter fails, e.g. Blosc on incompressible data)
        ds.id.write_direct_chunk((2,), np.array([3, 4], "<i4").tobytes(), filter_mask=1)
    with pytest.warns(UserWarning, match="filters skipped"):
        loaded = build_hdf5(path)["x"]
    assert isinstance(loaded, InlineArray)
    assert loaded.data.tolist() == [1, 2, 3, 4]
    monkeypatch.setattr(hdf5_builder, "MAX_AUTO_LOAD_BYTES", 8)
    with pytest.raises(UnsupportedError, match=r"'x'.*filters skipped"):
        build_hdf5(path)
    assert build_hdf5(path, load=["x"])["x"].data.tolist() == [1, 2, 3, 4]


# ---- layouts and chunking ------------------------------------------------------------------


def test_never_written_chunks_read_as_fill(
    tmp_path: Path, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> None:
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("part", shape=(10, 10), chunks=(3, 4), dtype="i2", fillvalue=-7)
        ds[4:7, 1:3] = 5
        f.create_dataset("never", shape=(5,), chunks=(2,), dtype="f4", fillvalue=np.nan)
        f.create_dataset("never_contiguous", shape=(6,), dtype="u2", fillvalue=9)
        f.create_dataset("default_fill", shape=(3,), chunks=(2,), dtype="f8")
    group = build_hdf5(path)
    part = group["part"]
    assert isinstance(part, ManifestArray)
    assert sorted(part.manifest.keys()) == ["1.0", "2.0"]
    assert part.fill_value == -7
    assert len(group["never"].manifest) == 0
    assert len(group["never_contiguous"].manifest) == 0
    zg = open_built(group)
    assert np.isnan(zg["never"][...]).all()
    assert zg["never_contiguous"][...].tolist() == [9] * 6
    assert zg["default_fill"][...].tolist() == [0.0] * 3
    assert _assert_file_matches(group, path, open_built, assert_values_equal) == 4


def test_compact_and_external_datasets_are_loaded(tmp_path: Path, open_built: OpenBuilt) -> None:
    path = tmp_path / "c.h5"
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.arange(8, dtype="<i4").tobytes())
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    with h5py.File(path, "w") as f:
        f.create_dataset("compact", data=np.arange(5, dtype="i2"), dcpl=dcpl)
        f.create_dataset("external", shape=(8,), dtype="<i4", external=[(str(raw), 0, 32)])
    group = build_hdf5(path)
    assert isinstance(group["compact"], InlineArray)
    assert isinstance(group["external"], InlineArray)
    zg = open_built(group)
    assert zg["compact"][...].tolist() == list(range(5))
    assert zg["external"][...].tolist() == list(range(8))


@pytest.mark.parametrize(
    ("shape", "split", "expected_chunks"),
    [
        ((1000, 30), 4000, (25, 30)),  # 1000 rows of 120 bytes: 33 rows fit; 25 divides 1000
        ((997, 30), 4000, (33, 30)),  # prime length: overhanging last chunk (file has room)
        ((4, 50, 40), 3000, (1, 10, 40)),  # one 8000-byte slab is too big: split axis 1
        ((100,), 1 << 20, (100,)),  # small: one chunk
    ],
)
def test_contiguous_split_into_virtual_chunks(
    tmp_path: Path,
    shape: tuple[int, ...],
    split: int,
    expected_chunks: tuple[int, ...],
    open_built: OpenBuilt,
    assert_values_equal: AssertEqual,
) -> None:
    path = tmp_path / "s.h5"
    data = np.arange(math.prod(shape), dtype="<f4").reshape(shape)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data)
        f.create_dataset("after", data=np.zeros(10_000, "u1"))  # room after "x" in the file
    group = build_hdf5(path, split_contiguous_bytes=split)
    x = group["x"]
    assert x.chunks == expected_chunks
    assert len(x.manifest) == math.prod(x.manifest.shape_chunk_grid)
    assert_values_equal(open_built(group)["x"][...], data, "x")
    assert build_hdf5(path, split_contiguous_bytes=0)["x"].chunks == shape


def test_contiguous_split_at_end_of_file_stays_in_the_file(
    tmp_path: Path, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> None:
    path = tmp_path / "e.h5"
    data = np.arange(997 * 30, dtype="<f4").reshape(997, 30)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data)
    size = path.stat().st_size
    group = build_hdf5(path, split_contiguous_bytes=4000)
    manifest = group["x"].manifest
    ends = manifest.offsets + manifest.lengths
    assert int(ends.max()) <= size
    assert_values_equal(open_built(group)["x"][...], data, "x")


def test_unlimited_dimension_and_resize(
    tmp_path: Path, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> None:
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        grow = f.create_dataset("grow", shape=(0, 3), maxshape=(None, 3), chunks=(4, 3), dtype="i4")
        grow.resize((10, 3))
        grow[...] = np.arange(30).reshape(10, 3)  # last chunk overhangs the shape
        shrink = f.create_dataset("shrink", data=np.arange(20), maxshape=(None,), chunks=(4,))
        shrink.resize((6,))  # chunks beyond the extent stay in the index
        f.create_dataset("empty", shape=(0, 5), maxshape=(None, 5), chunks=(2, 5), dtype="f4")
    group = build_hdf5(path)
    assert group["grow"].manifest.shape_chunk_grid == (3, 1)
    assert group["shrink"].manifest.shape_chunk_grid == (2,)
    assert group["empty"].shape == (0, 5)
    assert _assert_file_matches(group, path, open_built, assert_values_equal) == 3


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_chunk_index_matches_h5py_chunk_iter(tmp_path: Path, libver: str) -> None:
    """The direct B-tree reader (and the h5py path for newer indexes) find every chunk."""
    path = tmp_path / "b.h5"
    with h5py.File(path, "w", libver=libver, userblock_size=1024) as f:
        ds = f.create_dataset("x", shape=(300, 200), chunks=(3, 7), dtype="u1", compression="gzip")
        ds[::2] = 1  # leaves chunk rows unwritten
        f.create_dataset("y", data=np.arange(5000), maxshape=(None,), chunks=(10,))
    group = build_hdf5(path)
    with h5py.File(path, "r") as f:
        for name in ("x", "y"):
            ds = f[name]
            found: list[Any] = []
            ds.id.chunk_iter(found.append)
            manifest = group[name].manifest
            assert len(manifest) == len(found)
            for info in found[:: max(1, len(found) // 50)]:
                index = tuple(o // c for o, c in zip(info.chunk_offset, ds.chunks, strict=True))
                entry = manifest[index]
                assert (entry["offset"], entry["length"]) == (info.byte_offset, info.size)


def test_header_decoding_agrees_with_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Descriptions decoded from object headers equal the ones h5py gives."""
    path = tmp_path / "h.h5"
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "root"
        f.attrs["numbers"] = np.array([1.5, 2.5], dtype=">f4")
        for i, code in enumerate([*DTYPES, ">f8", ">i2", "S7"]):
            ds = f.create_dataset(
                f"v{i}",
                data=_sample(np.dtype(code), (6, 5))
                if code != "S7"
                else np.array([[b"abc"] * 5] * 6),
                chunks=(4, 5),
                fillvalue=None if code in ("?", "S7") else 3,
            )
            ds.attrs["scale"] = np.float32(0.5)
            ds.attrs["label"] = f"variable {i}"
            ds.attrs["many"] = np.arange(4, dtype=">i8")
            ds.attrs["text"] = np.array([b"a", b"bc"])
        g = f.create_group("sub")
        g.attrs.update({f"a{i}": i for i in range(12)})  # dense attribute storage
        g.create_dataset(
            "gz",
            data=np.arange(20.0),
            chunks=(6,),
            compression="gzip",
            shuffle=True,
            fletcher32=True,
        )
        g.create_dataset("scalar", data=np.int16(-3))
    fast = build_hdf5(path)
    monkeypatch.setattr(hdf5_builder, "_DECODE_HEADERS", False)
    slow = build_hdf5(path)
    assert fast == slow
    assert fast.attributes == {"title": "root", "numbers": [1.5, 2.5]}
    assert fast["sub"].attributes == {f"a{i}": i for i in range(12)}
    assert fast["v0"].attributes == {
        "scale": 0.5,
        "label": "variable 0",
        "many": [0, 1, 2, 3],
        "text": ["a", "bc"],
    }


# ---- netCDF-4 ------------------------------------------------------------------------------


def _write_netcdf4(path: Path) -> None:
    rng = np.random.default_rng(2)
    with netCDF4.Dataset(path, "w") as ds:
        ds.title = "a netCDF-4 file"
        ds.Conventions = "CF-1.8"
        ds.version = np.int32(2)
        ds.createDimension("time", None)
        ds.createDimension("lat", 6)
        ds.createDimension("lon", 8)
        ds.createDimension("nv", 2)  # a dimension without a coordinate variable
        time = ds.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time.calendar = "standard"
        time[:] = np.arange(5)
        lat = ds.createVariable("lat", "f4", ("lat",))
        lat.units = "degrees_north"
        lat.bounds = "lat_bnds"
        lat[:] = np.linspace(-50, 50, 6)
        ds.createVariable("lon", "f4", ("lon",))[:] = np.arange(8) * 45.0
        bnds = ds.createVariable("lat_bnds", "f4", ("lat", "nv"))
        bnds[:] = np.stack([np.linspace(-60, 40, 6), np.linspace(-40, 60, 6)], axis=1)
        tas = ds.createVariable(
            "tas",
            "i2",
            ("time", "lat", "lon"),
            zlib=True,
            complevel=3,
            shuffle=True,
            chunksizes=(2, 3, 8),
            fill_value=np.int16(-9999),
        )
        tas.set_auto_maskandscale(False)
        tas.scale_factor = 0.01
        tas.add_offset = 280.0
        tas.units = "K"
        tas.standard_name = "air_temperature"
        tas.valid_range = np.array([-5000, 5000], dtype="i2")
        values = rng.integers(-4000, 4000, size=(5, 6, 8)).astype("i2")
        values[1, 2, 3] = -9999
        tas[:] = values
        pr = ds.createVariable("pr", "f4", ("time", "lat", "lon"), chunksizes=(1, 6, 8))
        pr.set_auto_maskandscale(False)
        pr[0:3] = rng.random((3, 6, 8), dtype="f4")  # time steps 3-4 never written
        ds.createVariable("scalar", "i8")[...] = 7
        names = ds.createVariable("station", str, ("lon",))
        names[:] = np.array([f"s{i}" for i in range(8)], dtype=object)
        sub = ds.createGroup("forecast")
        sub.source = "model"
        sub.createDimension("step", 3)
        steps = sub.createVariable("step", "i4", ("step",))
        steps[:] = [6, 12, 18]
        fc = sub.createVariable("temp", "f8", ("step", "lat"), zlib=True)
        fc[:] = rng.normal(size=(3, 6))
        deeper = sub.createGroup("deeper")
        deeper.createVariable("t", "u1", ("step", "time"))[:] = np.arange(15).reshape(3, 5)


def test_netcdf4_values_dimensions_attributes(
    tmp_path: Path, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> None:
    path = tmp_path / "n.nc"
    _write_netcdf4(path)
    group = build_hdf5(path)
    assert "nv" not in group  # netCDF dimension without a variable
    assert group.attributes == {"title": "a netCDF-4 file", "Conventions": "CF-1.8", "version": 2}
    tas = group["tas"]
    assert isinstance(tas, ManifestArray)
    assert tas.dimension_names == ("time", "lat", "lon")
    assert tas.chunks == (2, 3, 8)
    assert tas.fill_value == -9999
    assert tas.attributes == {
        "_FillValue": -9999,
        "scale_factor": 0.01,
        "add_offset": 280.0,
        "units": "K",
        "standard_name": "air_temperature",
        "valid_range": [-5000, 5000],
    }
    assert group["lat_bnds"].dimension_names == ("lat", "nv")
    assert group["time"].dimension_names == ("time",)
    assert group["lat"].attributes == {"units": "degrees_north", "bounds": "lat_bnds"}
    assert group["scalar"].dimension_names is None
    assert isinstance(group["station"], InlineArray)
    assert group["forecast"].attributes == {"source": "model"}
    assert group["forecast/temp"].dimension_names == ("step", "lat")
    assert group["forecast/deeper/t"].dimension_names == ("step", "time")
    assert len(group["pr"].manifest) == 3
    zg = open_built(group)
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)

        def check(grp: Any, prefix: str) -> int:
            n = 0
            for name, var in grp.variables.items():
                expected = var[...]
                if isinstance(expected, np.ma.MaskedArray):
                    expected = expected.data
                assert_values_equal(zg[prefix + name][...], expected, prefix + name)
                n += 1
            return n + sum(check(sub, f"{prefix}{g}/") for g, sub in grp.groups.items())

        assert check(nc, "") == 11


def test_netcdf4_header_decoding_agrees_with_h5py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "n.nc"
    _write_netcdf4(path)
    fast = build_hdf5(path)
    monkeypatch.setattr(hdf5_builder, "_DECODE_HEADERS", False)
    assert build_hdf5(path) == fast


def test_netcdf4_through_xarray(tmp_path: Path) -> None:
    import xarray as xr

    from zarr_manifest import ManifestStore

    path = tmp_path / "x.nc"
    _write_netcdf4(path)
    group = build_hdf5(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        virtual = xr.open_zarr(ManifestStore(group), consolidated=False).load()
        with xr.open_dataset(path) as expected:
            xr.testing.assert_identical(virtual, expected.load())
        sub = xr.open_zarr(ManifestStore(build_hdf5(path, group="forecast")), consolidated=False)
        with xr.open_dataset(path, group="forecast") as expected:
            xr.testing.assert_identical(sub.load(), expected.load())


def test_h5py_dimension_scales_and_phony_dims(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", data=np.arange(4.0))
        x.make_scale("x")
        data = f.create_dataset("data", data=np.zeros((4, 3)))
        data.dims[0].attach_scale(x)
        f.create_dataset("square", data=np.zeros((3, 3)))
        f.create_dataset("other", data=np.zeros((5, 3)))
        f.create_dataset("g/inner", data=np.zeros(3))
    group = build_hdf5(path)
    assert group["x"].dimension_names == ("x",)
    assert group["data"].dimension_names == ("x", "phony_dim_0")
    # datasets are visited by name; a length shared in one group shares its phony
    # dimension, and a dataset never repeats one
    assert group["other"].dimension_names == ("phony_dim_1", "phony_dim_0")
    assert group["square"].dimension_names == ("phony_dim_0", "phony_dim_2")
    assert group["g/inner"].dimension_names == ("phony_dim_0",)


# ---- options, errors, remote files ---------------------------------------------------------


def test_group_drop_load_options(tmp_path: Path, open_built: OpenBuilt) -> None:
    path = tmp_path / "o.nc"
    _write_netcdf4(path)
    sub = build_hdf5(path, group="forecast", load=["step"], drop=["deeper"])
    assert set(sub) == {"step", "temp"}
    assert isinstance(sub["step"], InlineArray)
    assert sub["step"].data.tolist() == [6, 12, 18]
    assert sub["step"].dimension_names == ("step",)
    full = build_hdf5(path, drop=["tas", "forecast/deeper/t"])
    assert "tas" not in full and "forecast/deeper/t" not in full
    assert open_built(sub)["temp"].shape == (3, 6)
    with pytest.raises(BuildError, match="no dataset or group"):
        build_hdf5(path, drop=["nope"])
    with pytest.raises(BuildError, match="not found"):
        build_hdf5(path, group="missing")
    with pytest.raises(BuildError, match="not a group"):
        build_hdf5(path, group="tas")
    with pytest.raises(TypeError, match="unexpected options"):
        from zarr_manifest.builders._source import open_source

        build_hdf5(open_source(path), bogus=1)


def test_not_hdf5_raises_build_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.h5"
    path.write_bytes(b"definitely not HDF5" * 10)
    with pytest.raises(BuildError, match=r"junk\.h5"):
        build_hdf5(path)


def test_references_use_the_canonical_file_url(tmp_path: Path) -> None:
    path = tmp_path / "with space.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    group = build_hdf5(path)
    assert group["x"].manifest.path_table == (path.resolve().as_uri(),)


def test_remote_file_over_http(
    clean_range_server: Any,
    serve_bytes: Callable[[bytes, str], str],
    tmp_path: Path,
    open_built: OpenBuilt,
    assert_values_equal: AssertEqual,
) -> None:
    path = tmp_path / "r.nc"
    _write_netcdf4(path)
    rel = serve_bytes(path.read_bytes(), "r.nc")
    url = clean_range_server.url_for(rel)
    remote = build_hdf5(url)
    local = build_hdf5(path)
    assert remote["tas"].manifest.path_table == (url,)
    assert remote.rename_paths(path.resolve().as_uri()) == local
    zg = open_built(remote)
    with h5py.File(path, "r") as f:
        assert_values_equal(zg["tas"][...], f["tas"][()], "tas")
        assert_values_equal(zg["forecast/temp"][...], f["forecast/temp"][()], "temp")


# ---- Zarr v2 / kerchunk codec configs -> v3 (shared with the other builders) -----------------


def _v2_array_as_manifest_array(path: Path) -> ManifestArray:
    """A Zarr v2 array on disk, described with v3 codecs from `v2_codecs_to_v3`."""
    import json

    from zarr.core.dtype import get_data_type_from_native_dtype

    from zarr_manifest import ChunkManifest
    from zarr_manifest.builders.codecs import v2_codecs_to_v3

    meta = json.loads((path / ".zarray").read_text())
    shape, chunks = tuple(meta["shape"]), tuple(meta["chunks"])
    codecs = v2_codecs_to_v3(
        meta["dtype"], meta["order"], meta["filters"], meta["compressor"], ndim=len(shape)
    )
    if meta["dtype"] == "|O":
        data_type: Any = "string"
    else:
        data_type = get_data_type_from_native_dtype(np.dtype(meta["dtype"])).to_json(zarr_format=3)
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
    paths = np.full(grid, "", dtype=np.dtypes.StringDType())
    lengths = np.zeros(grid, dtype=np.uint64)
    for index in np.ndindex(grid):
        chunk = path / ".".join(map(str, index))
        if chunk.exists():
            paths[index] = chunk.resolve().as_uri()
            lengths[index] = chunk.stat().st_size
    manifest = ChunkManifest.from_arrays(
        paths=paths, offsets=np.zeros(grid, np.uint64), lengths=lengths
    )
    doc = {
        "shape": list(shape),
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": meta["fill_value"],
        "codecs": codecs,
    }
    return ManifestArray(doc, manifest)


V2_CASES: dict[str, dict[str, Any]] = {
    "blosc_shuffle": {"dtype": "<f8", "compressors": {"id": "blosc", "cname": "lz4", "shuffle": 1}},
    "blosc_bitshuffle_big_endian": {
        "dtype": ">i4",
        "compressors": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
    },
    "zstd": {"dtype": "<u2", "compressors": {"id": "zstd", "level": 3}},
    "gzip": {"dtype": "<i8", "compressors": {"id": "gzip", "level": 5}},
    "zlib_delta_order_f": {
        "dtype": ">i4",
        "order": "F",
        "filters": [{"id": "delta", "dtype": ">i4"}],
        "compressors": {"id": "zlib", "level": 3},
    },
    "lz4": {"dtype": "<f4", "compressors": {"id": "lz4"}},
    "bz2_crc32": {"dtype": "|u1", "filters": [{"id": "crc32"}], "compressors": {"id": "bz2"}},
    "fixedscaleoffset_big_endian": {
        "dtype": ">f8",
        "filters": [
            {"id": "fixedscaleoffset", "offset": 0, "scale": 10, "dtype": ">f8", "astype": ">i4"}
        ],
        "compressors": None,
    },
    "no_compression": {"dtype": ">f4", "compressors": None},
    "strings": {
        "dtype": str,
        "filters": [{"id": "vlen-utf8"}],
        "compressors": {"id": "zstd", "level": 1},
    },
}


@pytest.mark.parametrize("case", list(V2_CASES))
def test_v2_codecs_to_v3_reads_zarr_v2_chunks(
    tmp_path: Path, case: str, open_built: OpenBuilt, assert_values_equal: AssertEqual
) -> None:
    import numcodecs
    import zarr

    spec = dict(V2_CASES[case])
    dtype = spec.pop("dtype")
    compressor = spec.pop("compressors")
    filters = spec.pop("filters", None)
    store = tmp_path / "a.zarr"
    array = zarr.create_array(
        store,
        shape=(11, 7),
        chunks=(4, 3),
        dtype=dtype,
        zarr_format=2,
        order=spec.pop("order", "C"),
        filters=[numcodecs.get_codec(f) for f in filters] if filters else None,
        compressors=numcodecs.get_codec(compressor) if compressor else None,
        fill_value="" if dtype is str else 0,
    )
    if dtype is str:
        values: np.ndarray = np.array([[f"s{i}" * (i % 3) for i in range(7)]] * 11, dtype=object)
    elif np.dtype(dtype).kind == "f":
        values = np.round(np.arange(77).reshape(11, 7) * 0.5, 1).astype(dtype)
    else:
        values = (np.arange(77).reshape(11, 7) % 200).astype(dtype)
    array[:10] = values[:10]  # the last chunk row stays unwritten
    expected = array[...]
    group = ManifestGroup(arrays={"a": _v2_array_as_manifest_array(store)})
    assert_values_equal(open_built(group)["a"][...], expected, case)


def test_v2_codecs_to_v3_mapping_and_errors() -> None:
    from zarr_manifest.builders.codecs import v2_codecs_to_v3

    kerchunk_hdf5 = v2_codecs_to_v3(
        "<f4", "C", [{"id": "shuffle", "elementsize": 4}, {"id": "zlib", "level": 4}], None
    )
    assert kerchunk_hdf5 == [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}},
        {"name": "numcodecs.zlib", "configuration": {"level": 4}},
    ]
    assert v2_codecs_to_v3("|O", "C", [{"id": "vlen-utf8"}], None) == [{"name": "vlen-utf8"}]
    scaled = v2_codecs_to_v3(
        ">f8", "C", [{"id": "fixedscaleoffset", "scale": 10, "offset": 0, "dtype": ">f8",
                      "astype": ">i2"}], None
    )  # fmt: skip
    assert scaled[-1] == {"name": "bytes", "configuration": {"endian": "big"}}
    assert v2_codecs_to_v3(
        "<f4", "C", [{"id": "astype", "encode_dtype": "|u1", "decode_dtype": "<f4"}], None
    )[-1] == {"name": "bytes"}
    assert v2_codecs_to_v3(">i2", "F", None, None, ndim=3)[0] == {
        "name": "transpose",
        "configuration": {"order": [2, 1, 0]},
    }
    with pytest.raises(UnsupportedError, match=r"'v'.*'nonesuch'"):
        v2_codecs_to_v3("<f4", "C", None, {"id": "nonesuch"}, variable="v")
    with pytest.raises(UnsupportedError, match="follows a byte filter"):
        v2_codecs_to_v3("<i4", "C", [{"id": "zlib"}, {"id": "delta", "dtype": "<i4"}], None)
    with pytest.raises(UnsupportedError, match="object dtype"):
        v2_codecs_to_v3("|O", "C", None, {"id": "zstd"})
    with pytest.raises(ValueError, match="needs ndim"):
        v2_codecs_to_v3("<i4", "F", None, None)


# ---- compound layouts, unmappable types, files already open ---------------------------------


def _assert_compound_equal(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Same fields (by name; the order may follow storage) with the same values."""
    assert set(actual.dtype.names or ()) == set(expected.dtype.names or ()), what
    for name in expected.dtype.names or ():
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=f"{what}.{name}")


@pytest.mark.parametrize("chunks", [None, (4,)])
def test_compound_stored_out_of_order_or_padded_reads_right(
    tmp_path: Path, open_built: OpenBuilt, chunks: tuple[int, ...] | None
) -> None:
    # PyTables writes compounds whose fields are stored out of declaration order
    # (out_of_order_types.h5) or padded beyond their fields (itemsize.h5)
    out_of_order = np.dtype(
        {"names": ["s5", "s10", "i"], "formats": ["S5", "S10", "<i4"], "offsets": [14, 4, 0],
         "itemsize": 19}
    )  # fmt: skip
    padded = np.dtype(
        {"names": ["A", "B"], "formats": ["<u4", "<u4"], "offsets": [0, 4], "itemsize": 16}
    )
    path = tmp_path / "compound.h5"
    data = {}
    with h5py.File(path, "w") as f:
        for name, dtype in (("out_of_order", out_of_order), ("padded", padded)):
            values = np.zeros(10, dtype=dtype)
            for k, field in enumerate(dtype.names or ()):
                kind = dtype.fields[field][0].kind  # type: ignore[index]
                col = np.arange(10) * (k + 3) + 1
                values[field] = col.astype("S") if kind == "S" else col
            f.create_dataset(name, data=values, chunks=chunks)
            assert f[name].dtype == dtype  # HDF5 kept the offsets
            data[name] = values
    with pytest.warns(UserWarning, match="padding"):
        group = build_hdf5(path)
    assert isinstance(group["out_of_order"], ManifestArray)  # still referenced
    assert isinstance(group["padded"], InlineArray)  # loaded (Zarr has no padded structs)
    z = open_built(group)
    for name, values in data.items():
        _assert_compound_equal(z[name][...], values, name)


def test_dataset_of_a_type_h5py_cannot_map_is_left_out(
    tmp_path: Path, open_built: OpenBuilt
) -> None:
    path = tmp_path / "quad.h5"
    with h5py.File(path, "w") as f:
        f["kept"] = np.arange(5.0)
        # IEEE quad precision, as PyTables' float.h5: h5py has no numpy type for it
        quad = h5py.h5t.IEEE_F64LE.copy()
        quad.set_size(16)
        quad.set_precision(128)
        quad.set_fields(127, 112, 15, 0, 112)
        quad.set_ebias(16383)
        space = h5py.h5s.create_simple((3,))
        h5py.h5d.create(f.id, b"quad", quad, space)
    with h5py.File(path, "r") as f, pytest.raises((TypeError, ValueError)):
        _ = f["quad"].dtype
    with pytest.warns(UserWarning, match=r"quad.*left out"):
        group = build_hdf5(path)
    assert "quad" not in group
    np.testing.assert_array_equal(open_built(group)["kept"][...], np.arange(5.0))


def test_file_already_open_in_h5py(tmp_path: Path, open_built: OpenBuilt) -> None:
    path = tmp_path / "open.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(12).reshape(3, 4), chunks=(2, 2))
    with h5py.File(path, "r") as held:  # default locking, unlike the builder's
        group = build_hdf5(path)
        np.testing.assert_array_equal(open_built(group)["x"][...], held["x"][...])


TABLES_TESTS = sorted(
    Path.home().joinpath(".cache", "zarr-manifest-corpus").glob("**/tables/tests/*.h5")
)


@pytest.mark.skipif(
    not TABLES_TESTS, reason="PyTables' test files are not in the corpus cache (tests/corpus)"
)
@pytest.mark.parametrize(
    "name", ["out_of_order_types.h5", "itemsize.h5", "attr-u16.h5", "times-nested-be.h5"]
)
def test_pytables_files(name: str, open_built: OpenBuilt) -> None:
    path = next(p for p in TABLES_TESTS if p.name == name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loaded / left-out datasets are announced
        group = build_hdf5(path)
    z = open_built(group)
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for ds_name in names:
            try:
                expected = f[ds_name][()]
            except (TypeError, ValueError):
                assert ds_name not in group  # h5py cannot read it: left out
                continue
            actual = z[ds_name][...]
            if expected.dtype.names:
                _assert_compound_equal(actual, expected, ds_name)
            else:
                np.testing.assert_array_equal(actual, expected, err_msg=ds_name)


@pytest.mark.skipif(
    not h5py.h5z.filter_avail(h5py.h5z.FILTER_SZIP), reason="this libhdf5 has no szip filter"
)
@pytest.mark.parametrize("dtype", ["<i2", ">i4", "<f4", ">f8"])
@pytest.mark.parametrize("coding", ["nn", "ec"])
def test_szip_is_referenced_with_imagecodecs(
    tmp_path: Path, open_built: OpenBuilt, dtype: str, coding: str
) -> None:
    path = tmp_path / "szip.h5"
    # smooth values: szip is an optional HDF5 filter, skipped on chunks it cannot shrink
    data = (np.add.outer(np.arange(37), np.arange(50)) % 100).astype(dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "v", data=data, chunks=(16, 20), compression="szip", compression_opts=(coding, 8)
        )
    group = build_hdf5(path)
    assert isinstance(group["v"], ManifestArray)
    assert "numcodecs.imagecodecs_szip" in [c.to_dict()["name"] for c in group["v"].codecs]
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(open_built(group)["v"][...], f["v"][...])


def test_loaded_contiguous_values_read_from_the_file_equal_h5py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # loaded (inline) datasets stored contiguously without filters are read from the file
    # directly; every dtype and byte order, fill values set or not, equal what h5py reads
    path = tmp_path / "contiguous.h5"
    names = []
    with h5py.File(path, "w") as f:
        codes = ["i1", "<i2", ">i4", "<i8", "u1", ">u2", "u4", ">u8", "<f4", ">f8"]
        for i, code in enumerate(codes):
            data = (np.arange(-6, 6) * 3).astype(code) if code[-2] in "if" else np.arange(12)
            ds = f.create_dataset(f"v{i}", data=np.asarray(data, dtype=code).reshape(3, 4))
            names.append(f"v{i}")
            if i % 2:
                g = f.create_dataset(f"fill{i}", shape=(5,), dtype=code, fillvalue=7)
                g[:2] = 1
                names.append(f"fill{i}")
            ds.attrs["units"] = "m"
        f.create_dataset("scalar", data=np.float32(2.5))
        f.create_dataset("empty", shape=(0,), dtype="f8")
        f.create_dataset("never_written", shape=(4,), dtype="i4", fillvalue=-1)
        names += ["scalar", "empty", "never_written"]
    netcdf = tmp_path / "coords.nc"
    with netCDF4.Dataset(netcdf, "w") as ds:
        ds.createDimension("lat", 3)
        lat = ds.createVariable("lat", "f4", ("lat",), fill_value=np.float32(-999))
        lat[:2] = [1.0, 2.0]  # the last value reads as the fill value
        ds.createVariable("level", ">i2", ("lat",), endian="big")[:] = [5, 6, 7]
    read_directly = []
    original = hdf5_builder._Builder._contiguous_values

    def spy(self: Any, node: Any) -> Any:
        values = original(self, node)
        read_directly.append(node.path) if values is not None else None
        return values

    for file, load in ((path, names), (netcdf, ["lat", "level"])):
        monkeypatch.setattr(hdf5_builder._Builder, "_contiguous_values", spy)
        fast = build_hdf5(file, load=load)
        assert all(isinstance(fast[name], InlineArray) for name in load)
        monkeypatch.setattr(hdf5_builder._Builder, "_contiguous_values", lambda self, node: None)
        slow = build_hdf5(file, load=load)
        monkeypatch.undo()
        assert fast == slow
        for name in load:
            with h5py.File(file, "r") as f:
                expected = np.asarray(f[name][()])
            got = fast[name].data
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)
    # everything but the never-written and the empty dataset took the direct read
    assert sorted(read_directly) == sorted(
        [n for n in names if n not in ("empty", "never_written")] + ["lat", "level"]
    )
