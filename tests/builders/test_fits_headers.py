"""The FITS layout reader (`_fits_headers`) against astropy: on the sample files astropy ships
(HDU offsets, data sizes, header values, HDU classes and names, the image headers of
tile-compressed tables) and on headers with every card form astropy parses."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from zarr_manifest.builders._fits_headers import (
    compressed_image_header,
    header_dict,
    parse_header,
    read_hdus,
)

_ASTROPY_FITS = Path(fits.__file__).parent
SAMPLES = sorted(
    [
        *(_ASTROPY_FITS / "tests" / "data").glob("*.fits"),
        *(_ASTROPY_FITS / "tests" / "data" / "invalid").glob("*.fits"),
        *(_ASTROPY_FITS / "hdu" / "compressed" / "tests" / "data").glob("*.fits"),
    ]
)

# astropy's HDU class -> FitsHDU.kind
_KINDS = {
    "PrimaryHDU": "image",
    "ImageHDU": "image",
    "GroupsHDU": "groups",
    "CompImageHDU": "compressed",
    "BinTableHDU": "bintable",
    "TableHDU": "table",
}


def _astropy_dict(header: fits.Header) -> dict[str, Any]:
    """``dict(header)``, commentary cards as the text `header_dict` gives them."""
    out: dict[str, Any] = {}
    for keyword in header:
        if keyword not in out:
            value = header[keyword]
            out[keyword] = str(value) if keyword in ("COMMENT", "HISTORY", "") else value
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # NaN-safe, and True is not 1 (a logical must not become an integer)
    return a.keys() == b.keys() and all(
        type(a[k]) is type(b[k]) and (a[k] == b[k] or (a[k] != a[k] and b[k] != b[k])) for k in a
    )


def test_the_samples_are_there() -> None:
    assert len(SAMPLES) >= 30


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_layout_and_headers_read_like_astropy(path: Path) -> None:
    try:
        with fits.open(path, disable_image_compression=True) as tables:
            tables.readall()
            layout = [(h.fileinfo()["hdrLoc"], h.fileinfo()["datLoc"], h.size) for h in tables]
        with fits.open(path) as hdul:
            hdul.readall()
            classes = [type(h).__name__ for h in hdul]
            names = [h.name for h in hdul]
            image_headers = [
                _astropy_dict(h.header) if isinstance(h, fits.CompImageHDU) else None for h in hdul
            ]
    except Exception as e:  # astropy cannot read it either
        pytest.skip(f"astropy cannot read it ({e})")
    with open(path, "rb") as f:
        hdus = read_hdus(f, str(path))
    raw = path.read_bytes()
    assert [(h.header_offset, h.data_offset, h.data_size) for h in hdus] == layout
    for hdu, cls, name, image_header in zip(hdus, classes, names, image_headers, strict=True):
        header = fits.Header.fromstring(raw[hdu.header_offset : hdu.data_offset])
        assert _same(hdu.header, _astropy_dict(header)), hdu.index
        assert hdu.kind == _KINDS.get(cls, "other"), (hdu.index, cls)
        assert hdu.name == name, hdu.index
        if image_header is not None:
            assert _same(compressed_image_header(hdu), image_header), hdu.index


def _card(text: str) -> str:
    assert len(text) <= 80, text
    return text.ljust(80)


# every form of card value astropy parses, and the cards it treats specially
_CARDS = [
    "SIMPLE  =                    T / conforms",
    "BITPIX  =                  -32",
    "NAXIS   =                    0",
    "STR     = 'a string'           / comment",
    "QUOTE   = 'it''s ''quoted'''",
    "TRAIL   = 'trailing   '",
    "LEAD    = '   leading'",
    "EMPTY   = ''",
    "BLANKSTR= '        '",
    "SLASH   = 'a/b / c'            / the comment",
    "NOSPACE = 'x'/comment",
    "FREE    =   'free format'",
    "INT     =                 -042",
    "PLUS    =                  +17",
    "HUGE    = 123456789012345678901234567890",
    "REAL    =              -1.5E-3",
    "DEXP    =               2.5D10",
    "LOWD    =               2.5d-2",
    "DOT     =                   1.",
    "LEADDOT =                  .25",
    "INTEXP  =                  1E5",
    "FALSE   =                    F",
    "CPLX    = (1.5, -2)",
    "UNDEF   =                        / no value",
    "DP1     = 'AXIS.1: 1'",
    "DP1     = 'AXIS.2: 2.5'",
    "COLON   = 'time: 12:00'",
    "HIERARCH ESO DET CHIP NAME = 'CCD-1' / hierarch",
    "HIERARCH ESO TEL ALT = 45.5",
    "HIERARCH ESO INS FILT1 NAME= 'V  ' / filter",
    "HIERARCH lower Case Key = 3",
    "HIERARCH ESO TPL START =                    T",
    "HIERARCH ESO DET DIT = 1.5D2",
    "HIERARCH ESO OBS TARG = 'a: b'",
    "COMMENT first comment",
    "COMMENT = not a value",
    "HISTORY step one",
    "HISTORY step two",
    "        blank keyword text",
    "",
    "DUP     =                    1",
    "DUP     =                    2",
    "NOVALUE a card without a value indicator",
    "date-obs= '2020-01-01'",
    "SPACEEQ =1",
]


def _header_bytes(cards: list[str]) -> bytes:
    return "".join(_card(c) for c in cards).encode("ascii")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("index", range(len(_CARDS)), ids=lambda i: _CARDS[i][:8].strip())
def test_each_card_form_reads_like_astropy(index: int) -> None:
    # each card with the mandatory cards before it, so astropy reads it in a header
    raw = _header_bytes([*_CARDS[:3], _CARDS[index]] if index >= 3 else _CARDS[:3])
    expected = _astropy_dict(fits.Header.fromstring(raw))
    assert _same(header_dict(parse_header(raw)), expected), _CARDS[index]


@pytest.mark.filterwarnings("ignore")
def test_a_whole_header_reads_like_astropy() -> None:
    raw = _header_bytes(_CARDS)
    assert _same(header_dict(parse_header(raw)), _astropy_dict(fits.Header.fromstring(raw)))


@pytest.mark.filterwarnings("ignore")
def test_continued_strings_and_non_ascii_bytes_read_like_astropy() -> None:
    header = fits.Header()
    header["SIMPLE"] = True
    header["LONG"] = "x" * 100 + " and more" * 10  # written as CONTINUE cards
    raw = header.tostring().encode("ascii")
    raw = raw[: raw.index(b"END     ")]
    assert b"CONTINUE" in raw
    expected = _astropy_dict(fits.Header.fromstring(raw))
    assert header_dict(parse_header(raw)) == expected
    assert expected["LONG"].endswith(" and more")


def test_a_card_astropy_cannot_parse_keeps_its_text() -> None:
    # astropy raises on the value (non-ASCII); the rest of the header still reads
    raw = _header_bytes(["SIMPLE  =                    T", "NAME    = 'caf?'", "N       = 1"])
    raw = raw.replace(b"caf?", b"caf\xe9")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(fits.VerifyError):
            _ = fits.Header.fromstring(raw)["NAME"]
    with pytest.warns(UserWarning, match="'NAME' has a value astropy cannot parse"):
        header = header_dict(parse_header(raw))
    assert header == {"SIMPLE": True, "NAME": "'caf\xe9'", "N": 1}


def test_data_sizes_of_groups_tables_and_heaps(tmp_path: Path) -> None:
    groups = fits.GroupsHDU(
        fits.GroupData(
            np.zeros((3, 1, 2, 4), dtype=">f4"),
            parnames=["UU", "VV"],
            pardata=[np.arange(3.0), np.arange(3.0)],
            bitpix=-32,
        )
    )
    path = tmp_path / "groups.fits"
    groups.writeto(path)
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="v", format="PJ()", array=np.array([[1], [2, 3]], dtype=object))]
    )
    fits.HDUList([fits.PrimaryHDU(np.arange(6, dtype=">i2")), table]).writeto(tmp_path / "v.fits")
    for name in ("groups.fits", "v.fits"):
        with open(tmp_path / name, "rb") as f:
            ours = [(h.data_offset, h.data_size) for h in read_hdus(f, name)]
        with fits.open(tmp_path / name) as hdul:
            assert ours == [(h.fileinfo()["datLoc"], h.size) for h in hdul], name


@pytest.mark.filterwarnings("ignore")
def test_a_fits_file_over_http_reads_like_astropy(
    clean_range_server: Any, serve_bytes: Any, tmp_path: Path
) -> None:
    # the headers, the tile descriptors and the HDUs astropy loads are read through the
    # file's URL (kerchunk's scanner needed fsspec for that)
    import zarr

    from zarr_manifest import InlineArray, ManifestArray, ManifestStore, open_virtual

    image = fits.PrimaryHDU(np.arange(12, dtype=">i4").reshape(3, 4))
    tiles = fits.CompImageHDU(
        (np.arange(40 * 30).reshape(40, 30) % 97).astype("i2"),
        compression_type="RICE_1",
        tile_shape=(8, 30),
        name="TILES",
    )
    blank = fits.ImageHDU(np.array([[1, -32768, 3]], dtype=">i2"), name="BLANKED")
    blank.header["BLANK"] = -32768
    path = tmp_path / "remote.fits"
    fits.HDUList([image, tiles, blank]).writeto(path)
    url = clean_range_server.url_for(serve_bytes(path.read_bytes(), "remote.fits"))
    group = open_virtual(url, fingerprints=False)
    assert isinstance(group["PRIMARY"], ManifestArray)
    assert isinstance(group["TILES"], ManifestArray)
    assert isinstance(group["BLANKED"], InlineArray)
    assert group["TILES"].manifest.path_table == (url,)
    z = zarr.open_group(ManifestStore(group), mode="r")
    with fits.open(path) as hdul:
        for name in ("PRIMARY", "TILES", "BLANKED"):
            np.testing.assert_array_equal(z[name][...], hdul[name].data)
