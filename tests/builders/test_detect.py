"""Format detection from magic bytes, and `open_virtual`'s dispatch to the builders."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pytest

from zarr_manifest import ManifestArray, UnsupportedError
from zarr_manifest import builders as builders_module
from zarr_manifest.builders import (
    BUILDERS,
    FORMATS,
    detect_format,
    get_builder,
    open_virtual,
    sniff,
)
from zarr_manifest.builders.hdf5 import build_hdf5

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89HDF\r\n\x1a\n\x00\x00", "hdf5"),
        (b"CDF\x01\x00\x00\x00\x00", "netcdf3"),
        (b"CDF\x02\x00\x00\x00\x00", "netcdf3"),
        (b"CDF\x05\x00\x00\x00\x00", "netcdf3"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"II+\x00\x08\x00\x00\x00", "tiff"),
        (b"SIMPLE  =                    T", "fits"),
        (b"GRIB\x00\x00\x00\x02", "grib"),
        (b"PAR1\x15\x04", "kerchunk"),
        (b'  {"version": 1, "refs": {}}', "kerchunk"),
        (b'{"refs": {".zgroup": "{}"}}', "kerchunk"),
        (b'{"something": "else"}', None),
        (b"CDF\x03", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, expected: str | None) -> None:
    assert sniff(head) == expected


def _write_hdf5(path: Path, userblock: int = 0) -> None:
    with h5py.File(path, "w", userblock_size=userblock) as f:
        f.create_dataset("x", data=np.arange(6, dtype="i4"), chunks=(4,))


def test_detect_files_of_each_format(tmp_path: Path) -> None:
    import tifffile
    from astropy.io import fits

    files: dict[str, str] = {}
    _write_hdf5(tmp_path / "a.h5")
    files["a.h5"] = "hdf5"
    with netCDF4.Dataset(tmp_path / "b.nc", "w", format="NETCDF4") as ds:
        ds.createDimension("x", 2)
    files["b.nc"] = "hdf5"
    for i, fmt in enumerate(["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"]):
        with netCDF4.Dataset(tmp_path / f"c{i}.nc", "w", format=fmt) as ds:
            ds.createDimension("x", 2)
        files[f"c{i}.nc"] = "netcdf3"
    tifffile.imwrite(tmp_path / "d.tif", np.zeros((4, 4), "u1"))
    tifffile.imwrite(tmp_path / "e.tif", np.zeros((4, 4), "u1"), bigtiff=True)
    files["d.tif"] = files["e.tif"] = "tiff"
    fits.PrimaryHDU(np.zeros((2, 2), "f4")).writeto(tmp_path / "f.fits")
    files["f.fits"] = "fits"
    (tmp_path / "g.grib2").write_bytes(b"GRIB" + bytes(60) + b"7777")
    files["g.grib2"] = "grib"
    (tmp_path / "h.json").write_text(json.dumps({"version": 1, "refs": {".zgroup": "{}"}}))
    files["h.json"] = "kerchunk"
    for name, expected in files.items():
        assert detect_format(tmp_path / name) == expected, name
        assert detect_format(str(tmp_path / name)) == expected, name
        assert detect_format((tmp_path / name).as_uri()) == expected, name


@pytest.mark.parametrize("userblock", [512, 1024, 8192])
def test_hdf5_behind_a_user_block(tmp_path: Path, userblock: int) -> None:
    path = tmp_path / "ub.h5"
    _write_hdf5(path, userblock)
    with open(path, "r+b") as f:
        f.write(b"not the signature")  # what a user block may hold
    assert detect_format(path) == "hdf5"
    group = open_virtual(path)
    assert group["x"].manifest["0"]["offset"] >= userblock


def test_directories(tmp_path: Path) -> None:
    import zarr

    zarr.create_group(tmp_path / "v3.zarr", zarr_format=3)
    zarr.create_group(tmp_path / "v2.zarr", zarr_format=2)
    zarr.create_array(tmp_path / "arr.zarr", shape=(2,), dtype="i4", zarr_format=2)
    refs = tmp_path / "refs.parq"
    refs.mkdir()
    (refs / ".zmetadata").write_text(json.dumps({"record_size": 1000, "metadata": {}}))
    consolidated = tmp_path / "consolidated.zarr"
    consolidated.mkdir()
    (consolidated / ".zmetadata").write_text(
        json.dumps({"metadata": {}, "zarr_consolidated_format": 1})
    )
    assert detect_format(tmp_path / "v3.zarr") == "zarr"
    assert detect_format(tmp_path / "v2.zarr") == "zarr"
    assert detect_format(tmp_path / "arr.zarr") == "zarr"
    assert detect_format(refs) == "kerchunk"
    assert detect_format(consolidated) == "zarr"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnsupportedError, match="neither a Zarr store"):
        detect_format(empty)


def test_unknown_format_names_file_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "mystery.bin"
    path.write_bytes(b"\x00\x01WHAT IS THIS" + bytes(100))
    with pytest.raises(UnsupportedError, match=r"mystery\.bin.*WHAT IS THIS"):
        detect_format(path)
    with pytest.raises(UnsupportedError, match=r"mystery\.bin"):
        open_virtual(path)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(UnsupportedError, match="empty file"):
        detect_format(empty)
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing.nc")


def test_detect_over_http(
    clean_range_server: Any, serve_bytes: Callable[[bytes, str], str], tmp_path: Path
) -> None:
    _write_hdf5(tmp_path / "a.h5", userblock=512)
    url = clean_range_server.url_for(serve_bytes((tmp_path / "a.h5").read_bytes(), "a.h5"))
    assert detect_format(url) == "hdf5"
    group = open_virtual(url)
    assert group["x"].manifest.path_table == (url,)
    # obstore options reach the builder
    assert open_virtual(url, client_options={"allow_http": True, "timeout": "20s"}) == group
    with netCDF4.Dataset(tmp_path / "c.nc", "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("x", 1)
    buf = io.BytesIO((tmp_path / "c.nc").read_bytes())
    url3 = clean_range_server.url_for(serve_bytes(buf.getvalue(), "c.nc"))
    assert detect_format(url3) == "netcdf3"


def test_open_virtual_dispatches_to_the_builders(tmp_path: Path, open_built: Any) -> None:
    h5 = tmp_path / "a.nc"
    with netCDF4.Dataset(h5, "w") as ds:
        ds.createDimension("x", 3000)
        ds.createVariable("v", "f8", ("x",), contiguous=True)[:] = np.arange(3000.0)
    assert open_virtual(h5) == build_hdf5(h5)
    assert open_virtual(h5, format="netcdf4") == build_hdf5(h5)
    small = open_virtual(h5, options={"split_contiguous_bytes": 8000})
    assert small["v"].chunks == (1000,)
    assert open_built(small)["v"][...].tolist() == list(np.arange(3000.0))
    assert set(open_virtual(h5, drop=["v"])) == set()
    nc3 = tmp_path / "b.nc"
    with netCDF4.Dataset(nc3, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("x", 4)
        ds.createVariable("y", "i2", ("x",))[:] = [1, 2, 3, 4]
    group = open_virtual(nc3)
    assert isinstance(group["y"], ManifestArray)
    assert open_built(group)["y"][...].tolist() == [1, 2, 3, 4]


def test_builder_table() -> None:
    assert set(BUILDERS) == set(FORMATS)
    assert get_builder("hdf5") is build_hdf5
    assert get_builder("NetCDF4") is build_hdf5
    with pytest.raises(UnsupportedError, match="unknown format 'gif'"):
        get_builder("gif")
    with pytest.raises(UnsupportedError, match="unknown format"):
        open_virtual("whatever.gif", format="gif")


def test_missing_builder_module_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        builders_module.BUILDERS, "fits", (("no_such_module", "build_fits"), ("hdf5", "nope"))
    )
    with pytest.raises(UnsupportedError, match=r"no builder available for format 'fits'"):
        get_builder("fits")
