"""The layout of a FITS file read from its 2880-byte blocks: each HDU's header and data span.

One idea: find a FITS file's HDUs and read their headers as astropy reads them, without
astropy's HDU objects.  Opening a file with astropy parses every card it touches through
astropy's configuration system, converts each tile-compressed table into an image header
and walks the whole file: most of the time of a FITS build, for values astropy would give
anyway.  Here:

- the header cards are read from the blocks up to the ``END`` card; card values are what
  ``astropy.io.fits.Card.value`` gives: the common forms (quoted strings, logicals, integers,
  reals, commentary cards) are parsed here, any other card (``HIERARCH``, record-valued,
  complex, undefined, malformed) by astropy's ``Card``; a header with ``CONTINUE`` cards or
  bytes outside printable ASCII is parsed whole by astropy's ``Header``;
- `FitsHDU.header` is ``dict(astropy_header)``: a keyword's first card, and for commentary
  keywords (``COMMENT``, ``HISTORY``, blank) their texts joined by newlines;
- the data span is astropy's: ``|BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)``
  bytes (``NAXIS1`` left out for random groups), padded to whole blocks;
- `compressed_image_header` is the image header astropy gives a tile-compressed table
  (``CompImageHDU.header``).

tests/builders/test_fits_headers.py compares all of it with astropy on the sample files
astropy ships.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO

from zarr_manifest.errors import BuildError

__all__ = ["FitsHDU", "compressed_image_header", "header_dict", "parse_header", "read_hdus"]

BLOCK = 2880
CARD = 80

# the END card as astropy finds it (astropy.io.fits.header.HEADER_END_RE), at a card boundary
_END = re.compile(rb"(?:(?P<valid>END {77}) *)|(?P<invalid>END$|END {0,76}[^A-Z0-9_-])")
_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8} *$")
_COMMENTARY = ("COMMENT", "HISTORY", "")
# value fields of the common forms, each with an optional comment (astropy's NFSC forms)
_STRING = re.compile(r" *'((?:[ -&(-~]|'')*)' *(?:/.*)?$")
_LOGICAL = re.compile(r" *([TF]) *(?:/.*)?$")
_INTEGER = re.compile(r" *([+-]?\d+) *(?:/.*)?$")
_REAL = re.compile(r" *([+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[EeDd][+-]?\d+)?) *(?:/.*)?$")


@dataclass(frozen=True, slots=True)
class FitsHDU:
    """One HDU of a FITS file.

    Attributes
    ----------
    index
        Its position in the file (0: the primary HDU).
    header_offset, data_offset
        Where its header and its data start (bytes from the start of the file).
    data_size
        Bytes of data (unpadded; a binary table's heap included).
    cards
        (keyword, value) of its header cards, in order (see `parse_header`).
    header
        Keyword -> value, as ``dict(astropy_header)`` (see `header_dict`).
    """

    index: int
    header_offset: int
    data_offset: int
    data_size: int
    cards: tuple[tuple[str, Any], ...]
    header: dict[str, Any]

    @property
    def kind(self) -> str:
        """The HDU class astropy reads it as: ``"image"`` (PrimaryHDU, ImageHDU),
        ``"groups"`` (GroupsHDU), ``"compressed"`` (CompImageHDU), ``"bintable"``,
        ``"table"`` (ASCII) or ``"other"`` (any other extension)."""
        h = self.header
        if self.index == 0:
            return "groups" if h.get("GROUPS") is True else "image"
        xtension = h.get("XTENSION")
        xtension = xtension.rstrip() if isinstance(xtension, str) else xtension
        if xtension == "IMAGE":
            return "image"
        if xtension == "TABLE":
            return "table"
        if xtension in ("BINTABLE", "A3DTABLE"):
            return "compressed" if h.get("ZIMAGE") else "bintable"
        return "other"

    @property
    def name(self) -> str:
        """astropy's ``hdu.name``: ``EXTNAME``, else the class's default name."""
        if self.index == 0:
            return str(self.header.get("EXTNAME", "PRIMARY"))
        if self.kind == "compressed":
            return str(compressed_image_header(self).get("EXTNAME", "COMPRESSED_IMAGE"))
        return str(self.header.get("EXTNAME", ""))

    @property
    def naxis(self) -> int:
        """The number of axes of its data (a tile-compressed image's: ``ZNAXIS``)."""
        key = "ZNAXIS" if self.kind == "compressed" else "NAXIS"
        value = self.header.get(key, 0)
        return value if isinstance(value, int) else 0


def read_hdus(f: BinaryIO, url: str) -> list[FitsHDU]:
    """The HDUs of the FITS file open as ``f``, in file order.

    Reading stops, as astropy's does, at the end of the file or at bytes after the last
    HDU that do not start an extension header (with a warning if they are not padding).

    Raises
    ------
    BuildError
        Not a FITS file (no ``SIMPLE`` card first, no ``END`` card, a malformed data size).
    """
    hdus: list[FitsHDU] = []
    offset = 0
    while True:
        f.seek(offset)
        first = f.read(BLOCK)
        if not hdus and not first.startswith(b"SIMPLE  ="):
            raise BuildError(f"{url}: not a FITS file (no SIMPLE card at the start)")
        if hdus and (len(first) < BLOCK or not first.startswith(b"XTENSION=")):
            if first.strip(b"\0 "):
                warnings.warn(
                    f"{url}: {len(first)}+ bytes after the last HDU (at offset {offset}) "
                    "are not an extension header; ignored, as astropy ignores them",
                    stacklevel=3,
                )
            return hdus
        blocks = [first]
        while _end_card(blocks[-1]) is None:
            block = f.read(BLOCK)
            if len(block) < BLOCK:
                where = f"HDU {len(hdus)} (header at offset {offset})"
                raise BuildError(f"{url}: {where} has no END card")
            blocks.append(block)
        raw = b"".join(blocks)
        end = len(raw) - BLOCK + _end_card(blocks[-1])  # type: ignore[operator]
        try:
            cards = tuple(parse_header(raw[:end]))
        except Exception as e:  # astropy's errors on a header it cannot parse
            raise BuildError(f"{url}: HDU {len(hdus)} has an unreadable header ({e})") from e
        header = header_dict(list(cards))
        hdu = FitsHDU(len(hdus), offset, offset + len(raw), 0, cards, header)
        try:
            size = _data_size(hdu)
        except (KeyError, TypeError) as e:
            raise BuildError(f"{url}: HDU {len(hdus)} has a malformed data size ({e})") from e
        hdus.append(FitsHDU(hdu.index, offset, hdu.data_offset, size, cards, header))
        offset = hdu.data_offset + -(-size // BLOCK) * BLOCK


def _end_card(block: bytes) -> int | None:
    """The offset of the END card in a header block (None if it has none)."""
    for match in _END.finditer(block):
        if match.start() % CARD == 0:
            return match.start()
    return None


def _data_size(hdu: FitsHDU) -> int:
    """Bytes of data after the header (astropy's ``hdu.size``)."""
    h = hdu.header
    naxis = h.get("NAXIS", 0)
    first = 2 if hdu.kind == "groups" else 1  # random groups: NAXIS1 = 0 is no axis
    if naxis < first:
        return 0
    size = 1
    for i in range(first, naxis + 1):
        size *= int(h[f"NAXIS{i}"])
    return abs(int(h["BITPIX"])) * int(h.get("GCOUNT", 1)) * (int(h.get("PCOUNT", 0)) + size) // 8


def parse_header(raw: bytes) -> list[tuple[str, Any]]:
    """(keyword, value) of a header's cards (up to, without, the END card), in order, as
    astropy's ``Header.fromstring(raw).cards`` give them (an undefined value as None, as
    ``header[keyword]`` gives it).

    A card whose value astropy cannot parse either (bytes outside printable ASCII, a
    malformed value) keeps the text of its value field, with a warning naming it.
    """
    if _has_continue(raw):
        return _astropy_header(raw)
    text = raw.decode("latin-1")
    cards: list[tuple[str, Any]] = []
    for start in range(0, len(text), CARD):
        card = text[start : start + CARD]
        keyword = card[:8].rstrip()
        if keyword in _COMMENTARY and "=" not in card[:8]:
            cards.append((keyword, card[8:].rstrip()))
            continue
        value: Any = _NOT_PARSED
        if card[8:10] == "= " and _KEYWORD.match(card[:8]):
            value = _value(card[10:])
        elif keyword == "HIERARCH" and card[8] == " " and "=" in card:
            # ESO's long keywords: "HIERARCH ESO DET CHIP NAME = value", the keyword as
            # written (astropy keeps its case)
            name, _, field = card[9:].partition("=")
            keyword, value = name.strip(), _value(field)
        if value is _NOT_PARSED:
            parsed = _astropy_card(card)
            if parsed is None:
                keyword = keyword.upper()
                value = card[10:].strip() if card[8:10] == "= " else card[8:].strip()
                warnings.warn(
                    f"FITS card {keyword!r} has a value astropy cannot parse; kept as its "
                    f"text {value!r}",
                    stacklevel=4,
                )
            else:
                keyword, value = parsed
        cards.append((keyword, value))
    return cards


def header_dict(cards: list[tuple[str, Any]]) -> dict[str, Any]:
    """``dict(astropy_header)`` of a header's cards: a keyword's first value; commentary
    keywords (COMMENT, HISTORY, blank) their texts joined by newlines."""
    out: dict[str, Any] = {}
    commentary: dict[str, list[str]] = {}
    for keyword, value in cards:
        if keyword in _COMMENTARY:
            commentary.setdefault(keyword, []).append(value)
            out.setdefault(keyword, None)
        else:
            out.setdefault(keyword, value)
    for keyword, texts in commentary.items():
        out[keyword] = "\n".join(texts)
    return out


_NOT_PARSED = object()


def _value(field: str) -> Any:
    """A value field (bytes 11-80) of one of the common forms, or ``_NOT_PARSED``."""
    if m := _STRING.match(field):
        inner = m.group(1)
        if ":" in inner:  # maybe a record-valued keyword card: astropy's
            return _NOT_PARSED
        return inner.replace("''", "'").rstrip()
    if m := _INTEGER.match(field):
        return int(m.group(1))
    if m := _REAL.match(field):
        return float(m.group(1).replace("D", "E").replace("d", "e"))
    if m := _LOGICAL.match(field):
        return m.group(1) == "T"
    return _NOT_PARSED


def _has_continue(raw: bytes) -> bool:
    return any(raw[i : i + 8] == b"CONTINUE" for i in range(0, len(raw), CARD))


def _astropy_card(image: str) -> tuple[str, Any] | None:
    """(keyword, value) of a card as astropy's ``Card`` parses it (None if it cannot)."""
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            card = fits.Card.fromstring(image)
            value = card.value
            return card.keyword, None if isinstance(value, type(fits.card.UNDEFINED)) else value
        except Exception:
            return None


def _astropy_header(raw: bytes) -> list[tuple[str, Any]]:
    """The cards of astropy's ``Header`` of ``raw`` (see `parse_header`)."""
    from astropy.io import fits

    undefined = type(fits.card.UNDEFINED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = fits.Header.fromstring(raw)
        return [
            (card.keyword, None if isinstance(card.value, undefined) else card.value)
            for card in header.cards
        ]


# ---- tile-compressed images ------------------------------------------------------------------

# keywords of the tiled image convention that describe the table, not the image (astropy's
# astropy.io.fits.hdu.compressed.header._is_reserved_keyword)
_COMPRESSION_KEYWORDS = {
    "ZSIMPLE",
    "ZTENSION",
    "ZBITPIX",
    "ZNAXIS",
    "ZEXTEND",
    "ZBLOCKED",
    "ZPCOUNT",
    "ZGCOUNT",
    "ZHECKSUM",
    "ZDATASUM",
    "ZIMAGE",
    "ZCMPTYPE",
    "ZMASKCMP",
    "ZQUANTIZ",
    "ZDITHER0",
    "ZBLANK",
    "ZSCALE",
    "ZZERO",
}
_INDEXED_COMPRESSION = {"ZNAXIS", "ZTILE", "ZNAME", "ZVAL"}
_ZDEF = re.compile(r"(?P<label>^[Zz][a-zA-Z]*)(?P<num>[1-9][0-9 ]*$)?")
_TABLE_KEYWORDS = {
    "TTYPE",
    "TFORM",
    "TUNIT",
    "TNULL",
    "TSCAL",
    "TZERO",
    "TDISP",
    "TBCOL",
    "TDIM",
    "TCTYP",
    "TCUNI",
    "TCRPX",
    "TCRVL",
    "TCDLT",
    "TRPOS",
}
_TDEF = re.compile(r"(?P<label>^T[A-Z]*)(?P<num>[1-9][0-9 ]*$)")
# cards astropy's Header.strip() removes from a table header
_STRIPPED = {
    "SIMPLE",
    "XTENSION",
    "BITPIX",
    "NAXIS",
    "EXTEND",
    "PCOUNT",
    "GCOUNT",
    "GROUPS",
    "BSCALE",
    "BZERO",
    "TFIELDS",
    "THEAP",
    "CHECKSUM",
    "DATASUM",
}


def _reserved(keyword: str) -> bool:
    if keyword in _COMPRESSION_KEYWORDS or keyword in ("TFIELDS", "THEAP"):
        return True
    z = _ZDEF.match(keyword)
    if z and z.group("label").upper() in _INDEXED_COMPRESSION:
        return True
    t = _TDEF.match(keyword)
    return bool(t and t.group("label").upper() in _TABLE_KEYWORDS)


def compressed_image_header(hdu: FitsHDU) -> dict[str, Any]:
    """The header of the image a tile-compressed table holds, as astropy gives it
    (``CompImageHDU.header``: astropy's ``_bintable_header_to_image_header``), as a dict."""
    table = hdu.header
    extnames = [v for k, v in hdu.cards if k == "EXTNAME"]
    if len(extnames) > 1:
        # astropy drops the default EXTNAME cards when the table has another one too
        # (CFHT files), and keeps the first of its own
        named = [v for v in extnames if v != "COMPRESSED_IMAGE"]
        table = {**table, "EXTNAME": named[0] if named else extnames[0]}
    naxis = int(table.get("NAXIS", 0))
    strip = _STRIPPED | {f"NAXIS{i}" for i in range(1, naxis + 1)}
    rest = {k: v for k, v in table.items() if k not in strip and not _reserved(k)}
    out: dict[str, Any] = {}
    if "ZSIMPLE" in table:
        out["SIMPLE"] = table["ZSIMPLE"]
    else:
        out["XTENSION"] = "IMAGE"
    out["BITPIX"] = table["ZBITPIX"]
    out["NAXIS"] = table["ZNAXIS"]
    for i in range(1, int(table["ZNAXIS"]) + 1):
        out[f"NAXIS{i}"] = table[f"ZNAXIS{i}"]
    if "SIMPLE" not in out:
        out["PCOUNT"] = table.get("ZPCOUNT", 0)
        out["GCOUNT"] = table.get("ZGCOUNT", 1)
    for key, value in rest.items():
        if key.startswith("NAXIS") and key[5:].isdigit() and int(key[5:]) > out["NAXIS"]:
            continue  # astropy deletes spurious NAXISn cards
        out.setdefault(key, value)
    for key in ("BSCALE", "BZERO"):
        if table.get(key):
            out[key] = table[key]
    for new, old in (
        ("EXTEND", "ZEXTEND"),
        ("BLOCKED", "ZBLOCKED"),
        ("CHECKSUM", "ZHECKSUM"),
        ("DATASUM", "ZDATASUM"),
    ):
        if old in table:
            out[new] = table[old]
    if out.get("EXTNAME") == "COMPRESSED_IMAGE":
        del out["EXTNAME"]
    if out["BITPIX"] > 0 and "BLANK" not in out:
        if "ZBLANK" in table:
            out["BLANK"] = table["ZBLANK"]
        elif any(table.get(f"TTYPE{i}") == "ZBLANK" for i in range(1, int(table["TFIELDS"]) + 1)):
            out["BLANK"] = -(1 << (out["BITPIX"] - 1))
    return out
