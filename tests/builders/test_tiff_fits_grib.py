"""TIFF (tifffile), FITS (astropy) and GRIB (eccodes) files referenced through kerchunk-style
references, read back through ManifestStore and compared with each format's own library."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from astropy.io import fits

from zarr_manifest import BuildError, InlineArray, ManifestArray, ManifestGroup
from zarr_manifest.builders.fits import build_fits
from zarr_manifest.builders.tiff import build_tiff

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
]


def _open(group: ManifestGroup) -> zarr.Group:
    from zarr_manifest import ManifestStore

    return zarr.open_group(ManifestStore(group), mode="r")


# ---- TIFF ------------------------------------------------------------------------------------


def test_tiled_strip_and_multi_series_tiffs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tiled = rng.integers(0, 60000, (70, 90), dtype="<u2")
    tifffile.imwrite(tmp_path / "tiled.tif", tiled, tile=(32, 32), compression="zlib")
    rgb = rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, rowsperstrip=8, photometric="rgb")
    big = np.arange(32 * 48, dtype=">i4").reshape(32, 48)
    tifffile.imwrite(tmp_path / "big.tif", big, byteorder=">", tile=(16, 16))
    with tifffile.TiffWriter(tmp_path / "two.tif") as tw:
        tw.write(rng.normal(size=(32, 48)).astype("<f4"), tile=(16, 16))
        tw.write(np.full((3, 16, 16), 7, "u1"), photometric="minisblack")
    for name in ("tiled.tif", "rgb.tif", "big.tif", "two.tif"):
        path = tmp_path / name
        group = build_tiff(path)
        z = _open(group)
        with tifffile.TiffFile(path) as tif:
            keys = (
                ["data"]
                if len(tif.series) == 1
                else [f"series_{i}" for i in range(len(tif.series))]
            )
            for key, series in zip(keys, tif.series, strict=True):
                assert isinstance(group[key], ManifestArray), (name, key)
                np.testing.assert_array_equal(
                    z[key][...], series.asarray(), err_msg=f"{name} {key}"
                )
                assert z[key].metadata.dimension_names == tuple(series.axes)
    assert _open(build_tiff(tmp_path / "tiled.tif"))["data"].chunks == (32, 32)
    assert build_tiff(tmp_path / "tiled.tif")["data"].manifest.shape_chunk_grid == (3, 3)


def test_pyramid_and_geotiff_metadata(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 255, (128, 128), dtype=np.uint8)
    path = tmp_path / "pyramid.tif"
    geokeys = (1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326)  # GeoKeyDirectory: geographic WGS84
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            data,
            tile=(32, 32),
            subifds=1,
            compression="zlib",
            extratags=[
                (33550, "d", 3, (0.5, 0.5, 0.0), True),  # ModelPixelScale
                (33922, "d", 6, (0, 0, 0, 10.0, 50.0, 0), True),  # ModelTiepoint
                (34735, "H", len(geokeys), geokeys, True),  # GeoKeyDirectory
            ],
        )
        tw.write(data[::2, ::2], tile=(32, 32), subfiletype=1, compression="zlib")
    group = build_tiff(path)
    z = _open(group)
    with tifffile.TiffFile(path) as tif:
        for level, page in enumerate(tif.series[0].levels):
            np.testing.assert_array_equal(z[f"data/{level}"][...], page.asarray())
    assert "multiscales" in z["data"].attrs
    geo = group.attributes["geotiff_metadata"]
    assert geo["ModelPixelScale"] == [0.5, 0.5, 0.0]
    assert geo["ModelTiepoint"][3:5] == [10.0, 50.0]
    only = build_tiff(path, drop=["data/1"])
    assert list(only["data"].arrays) == ["0"]


def test_incomplete_strips_are_loaded_with_a_warning(tmp_path: Path) -> None:
    data = np.arange(40 * 50, dtype="<u2").reshape(40, 50)
    path = tmp_path / "incomplete.tif"
    tifffile.imwrite(path, data, rowsperstrip=16)  # 40 rows: the last strip holds 8
    with pytest.warns(UserWarning, match="cannot be referenced"):
        group = build_tiff(path)
    assert isinstance(group["data"], InlineArray)
    np.testing.assert_array_equal(_open(group)["data"][...], data)
    with pytest.raises(BuildError, match="no array"):
        build_tiff(path, load=["nope"])


def test_not_a_tiff(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(BuildError, match=r"bad\.tif"):
        build_tiff(bad)


# ---- FITS ------------------------------------------------------------------------------------


@pytest.fixture
def fits_file(tmp_path: Path) -> Path:
    primary = fits.PrimaryHDU(np.arange(12, dtype="u2").reshape(3, 4) + 60000)  # BZERO=32768
    primary.header["OBJECT"] = "M31"
    sci = fits.ImageHDU(np.random.default_rng(2).normal(size=(5, 6)).astype(">f8"), name="SCI")
    scaled = fits.ImageHDU(np.arange(6, dtype=">i2").reshape(2, 3) * 2, name="SCI")  # same name
    scaled.header["BSCALE"] = 0.5
    scaled.header["BZERO"] = 10.0
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="flux", format="E", array=np.linspace(0, 1, 7).astype("f4")),
            fits.Column(name="id", format="J", array=np.arange(7)),
            fits.Column(name="tag", format="4A", array=np.array([b"ab", b"cdef"] * 3 + [b"x"])),
        ],
        name="CAT",
    )
    big = fits.ImageHDU(np.arange(4, dtype="u8") + 2**63 + 5, name="U64")
    path = tmp_path / "sample.fits"
    fits.HDUList([primary, sci, scaled, table, big]).writeto(path)
    return path


def test_fits_hdus_read_like_astropy(fits_file: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = build_fits(fits_file)
    assert sorted(group.arrays) == ["CAT", "PRIMARY", "SCI", "SCI_2", "U64"]
    for name in ("PRIMARY", "SCI", "SCI_2", "CAT"):
        assert isinstance(group[name], ManifestArray), name
    assert isinstance(group["U64"], InlineArray)  # no exact virtual form: loaded
    z = _open(group)
    with fits.open(fits_file) as hdul:
        np.testing.assert_array_equal(z["PRIMARY"][...], hdul[0].data)
        assert z["PRIMARY"].dtype == np.uint16
        np.testing.assert_array_equal(z["SCI"][...], hdul[1].data)
        np.testing.assert_allclose(z["SCI_2"][...], hdul[2].data)
        np.testing.assert_array_equal(z["SCI_2"][...], [[10, 11, 12], [13, 14, 15]])
        table = z["CAT"][...]
        for col in ("flux", "id"):
            np.testing.assert_array_equal(table[col], hdul[3].data[col])
        assert [t.rstrip(b" ") for t in table["tag"]] == [t.encode() for t in hdul[3].data["tag"]]
        np.testing.assert_array_equal(z["U64"][...], hdul[4].data)
    assert z["SCI"].attrs["EXTNAME"] == "SCI"
    assert group.attributes["OBJECT"] == "M31"
    only = build_fits(fits_file, extension=["SCI"], drop=["SCI_2"])
    assert list(only.arrays) == ["SCI"]
    with pytest.raises(BuildError, match="no HDU"):
        build_fits(fits_file, extension="NOPE")


def test_not_fits(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = garbage" + b" " * 100)
    with pytest.raises(BuildError, match=r"bad\.fits"):
        build_fits(bad)


# GRIB: tests/builders/test_grib.py
