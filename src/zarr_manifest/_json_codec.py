"""manifest.json bytes <-> columnar arrays.

The JSON form of a chunk manifest is one object mapping chunk keys ("i.j.k") to
``{"path": str, "offset": int, "length": int}``.  This module turns that text into flat
numpy columns and back, without building a Python object per chunk.

The writer emits one canonical layout::

    {
    "0.0":{"path":"s3://b/f.nc","offset":100,"length":100},
    "0.1":{"path":"s3://b/f.nc","offset":200,"length":100}
    }

(``{`` + newline, entries joined by ``,`` + newline, newline + ``}``; ``{}`` when empty).  It is
built with numpy: every entry is a row of a fixed-width byte matrix whose unused cells are NUL,
and the NULs are squeezed out at the end (JSON text never contains a raw NUL).

The reader has a numpy fast path that recognises exactly that layout and a generic path
(orjson) for anything else.  The fast path cannot accept a document the generic path would
reject or read differently: it checks every byte of every entry against the canonical grammar
(fixed tokens, digit runs, key parts), and hands each distinct path literal to orjson, so
escapes and invalid strings are judged by a real JSON parser.  Whatever it does not recognise
goes to the generic path, which produces every error message but one: both paths reject a
repeated chunk key (and the generic one a repeated entry field), which orjson alone would
silently collapse, with the same message.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from zarr_manifest.errors import ManifestError, ManifestFormatError

__all__ = ["MAX_OFFSET", "DecodedManifest", "decode_entries", "decode_manifest", "encode_manifest"]

#: The largest manifest.json read when it is not in the canonical layout: the generic parser
#: builds a Python object per entry (~700 bytes), so an untrusted file must not be able to
#: ask for gigabytes.  64 MiB is about 800k entries and 0.5 GB.
MAX_GENERIC_MANIFEST_BYTES = int(os.environ.get("ZARR_MANIFEST_MAX_GENERIC_BYTES", 64 * 2**20))

#: offsets, lengths and their sum must stay below this (they are read as int64)
MAX_OFFSET = 2**63 - 1

_INDEX = r"(?:0|[1-9][0-9]*)"
_FIELDS = ("path", "offset", "length")

ErrorFactory = Callable[[str, str | None, str | None, str | None], ManifestError]


@dataclass(frozen=True, slots=True)
class DecodedManifest:
    """The flat columns of a decoded manifest.json, one row per entry, in file order.

    Attributes
    ----------
    indices
        ``(n, ndim)`` int64 chunk grid indices (``(n, 0)`` for a 0-d array).
    path_table
        The distinct paths, in order of first appearance.
    path_ids
        ``(n,)`` int64 index into ``path_table``.
    offsets, lengths
        ``(n,)`` uint64.

    No two rows have the same indices: the decoders reject repeated keys.
    """

    indices: np.ndarray
    path_table: list[str]
    path_ids: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray


# =============================================================================================
# public API
# =============================================================================================


def encode_manifest(
    shape: tuple[int, ...],
    path_table: Sequence[str],
    path_ids: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
) -> bytes:
    """Encode a manifest grid as manifest.json bytes.

    Parameters
    ----------
    shape
        The chunk grid shape (``()`` for a 0-d array).
    path_table
        The distinct paths.
    path_ids, offsets, lengths
        Arrays of ``shape``; ``path_ids`` is -1 where a chunk is missing (not written).
        Offsets and lengths must be in ``[0, 2**63-1]``; their sum is not checked.

    Returns
    -------
    bytes
        ``{\\n`` + entries joined by ``,\\n`` + ``\\n}`` (``{}`` when there are none), entries
        in C order of the grid, each ``"i.j":{"path":...,"offset":O,"length":L}`` with the
        path as ``orjson.dumps`` writes it and no other whitespace.

    Raises
    ------
    TypeError, ValueError
        A path is not a string, an id is past the table, an offset or length out of range.
    """
    shape = tuple(int(s) for s in shape)
    ids = np.asarray(path_ids).reshape(-1)
    present = np.flatnonzero(ids >= 0)
    if present.size == 0:
        return b"{}"
    return _Encoder(shape, path_table, ids, offsets, lengths).run(present)


def decode_manifest(
    data: bytes, *, ndim: int | None, location: str | None = None
) -> DecodedManifest:
    """Decode manifest.json bytes into flat columns, validating every entry.

    Parameters
    ----------
    data
        The file's bytes.
    ndim
        The number of grid dimensions the keys must have (0 for a 0-d array, whose only key
        is "0"); None to take it from the first key.
    location
        The file or URL, named in errors.

    Raises
    ------
    ManifestFormatError
        Malformed JSON, a non-object document, a bad or duplicate key, a bad entry or a
        duplicate entry field; the message names the location, key and field at fault.
    """
    data = bytes(data) if not isinstance(data, bytes) else data
    fast = _decode_canonical(data, ndim, location)
    if fast is not None:
        return fast
    return _decode_generic(data, ndim, location)


def decode_entries(
    entries: dict, *, ndim: int | None, location: str | None = None
) -> DecodedManifest:
    """Validate a manifest in dict form and turn it into flat columns.

    See `decode_manifest`; ``entries`` maps keys to ``{"path", "offset", "length"}`` dicts.
    Errors are `ManifestFormatError` when a ``location`` is given, else `ManifestError`.
    """
    error = _format_error if location else _plain_error
    return _decode_entries(entries, ndim, location, error)


# =============================================================================================
# errors
# =============================================================================================


def _format_error(
    message: str, location: str | None, key: str | None, field: str | None
) -> ManifestError:
    return ManifestFormatError(message, location=location, key=key, field=field)


def _plain_error(
    message: str, location: str | None, key: str | None, field: str | None
) -> ManifestError:
    return ManifestError(message, key=key, field=field)


def _where(location: str | None) -> str:
    return f" in {location}" if location else ""


# =============================================================================================
# encoder
# =============================================================================================


def _digit_lut() -> np.ndarray:
    """ASCII of 0000..9999 as little-endian uint32: rows 0-9999 with leading zeros, rows
    10000-19999 with leading zeros as NUL (the most significant group of a number), row
    20000 all NUL (a group above the number's most significant digit)."""
    full = np.array([list(b"%04d" % i) for i in range(10000)], dtype=np.uint8)
    lead = np.logical_or.accumulate(full != ord("0"), axis=1)
    lead[:, -1] = True  # "0" itself keeps its last digit
    table = np.concatenate([full, np.where(lead, full, 0), np.zeros((1, 4), np.uint8)])
    return table.view("<u4").reshape(-1)


_DIGITS = _digit_lut()
_ENCODE_ROWS = 1 << 14  # rows per block: keeps the byte matrix in cache
_BLOCK_BYTES = 1 << 22  # ... and bounds it when paths are long
_TABLE_BYTES = 1 << 25  # largest table of padded path literals


def _ndigits(x: int) -> int:
    return len(str(int(x)))


def _digit_groups(v: np.ndarray, groups: int) -> np.ndarray:
    """``(n, 4 * groups)`` uint8 decimal ASCII of ``v`` (uint64), right-aligned, NUL-padded."""
    out = np.empty((v.shape[0], groups), dtype="<u4")
    q = v
    ten4 = np.uint64(10000)
    for g in range(groups - 1, -1, -1):
        hi = q // ten4
        r = (q - hi * ten4).astype(np.intp)
        if g == groups - 1:
            # the least significant group: full when more digits follow, else the leading one
            sel = np.where(hi > 0, r, r + 10000)
        else:
            sel = np.where(hi > 0, r, np.where(q > 0, r + 10000, 20000))
        out[:, g] = _DIGITS[sel]
        q = hi
    return out.view(np.uint8)


def _path_literals(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The JSON literals of ``paths``: (lengths, concatenated bytes).

    One ``orjson.dumps`` of the list (many small calls are far slower), cut after every
    second unescaped quote.
    """
    if not paths:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    if not all(issubclass(t, str) for t in set(map(type, paths))):
        raise TypeError("path_table must hold strings")
    text = orjson.dumps(list(paths))
    body = np.frombuffer(text, dtype=np.uint8)[1:-1]  # '"a","b",...'
    quotes = _unescaped_quotes(body, has_backslash=b"\\" in text)
    if quotes.size != 2 * len(paths):  # cannot happen for strings; a guard
        raise ValueError("path_table must hold strings")
    ends = quotes[1::2] + 1
    keep = np.ones(body.size, dtype=bool)
    keep[ends[:-1]] = False  # the separating commas
    return ends - quotes[0::2], body[keep]


def _unescaped_quotes(buf: np.ndarray, *, has_backslash: bool) -> np.ndarray:
    """Positions of the ``"`` in JSON text ``buf`` that delimit strings (not ``\\"``)."""
    quotes = np.flatnonzero(buf == ord('"'))
    if not has_backslash:
        return quotes
    # a quote is escaped when an odd number of backslashes precede it
    run = np.zeros(quotes.size, dtype=np.int64)
    alive = np.ones(quotes.size, dtype=bool)
    k = 1
    while alive.any():
        pos = quotes - k
        alive &= pos >= 0
        alive[alive] = buf[pos[alive]] == ord("\\")
        run += alive
        k += 1
    return quotes[run % 2 == 0]


class _Encoder:
    """Builds the canonical text block by block (see the module docstring)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        path_table: Sequence[str],
        ids: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
    ):
        self.shape = shape
        self.ids = ids
        self.offsets = np.asarray(offsets).reshape(-1)
        self.lengths = np.asarray(lengths).reshape(-1)
        lit_len, lit_bytes = _path_literals(path_table)
        self.n_paths = lit_len.size
        # literal cells rounded up to 8 bytes; NUL-padded, and NUL never occurs in JSON text
        width = -(-max(int(lit_len.max(initial=1)), 1) // 8) * 8
        self.lit_width = width
        if lit_len.size * width <= _TABLE_BYTES:
            # a table of fixed-size rows: one void item per path, gathered by id
            table = np.zeros((max(lit_len.size, 1), width), dtype=np.uint8)
            table[np.arange(width) < lit_len[:, None]] = lit_bytes
            self.table: np.ndarray | None = table.view(f"V{width}").reshape(-1)
        else:
            # many long paths: gather each block's cells from the concatenated literals
            self.table = None
            self.lit_start = np.concatenate([[0], np.cumsum(lit_len)[:-1]]).astype(np.intp)
            self.lit_len = lit_len
            self.lit_bytes = np.concatenate([lit_bytes, np.zeros(width, dtype=np.uint8)])
        self.template = bytearray()
        self.fields: list[tuple[str, int, int]] = []  # (what, first column, width)

    def _literal_cells(self, ids: np.ndarray) -> np.ndarray:
        """``(m, lit_width)`` uint8: the literals of paths ``ids``, NUL-padded."""
        w = self.lit_width
        if self.table is not None:
            return self.table[ids].view(np.uint8).reshape(ids.size, w)
        cols = np.arange(w)
        cells = self.lit_bytes[self.lit_start[ids][:, None] + cols]
        cells[cols >= self.lit_len[ids][:, None]] = 0
        return cells

    def _const(self, text: bytes) -> None:
        self.template += text

    def _field(self, what: str, width: int) -> None:
        self.fields.append((what, len(self.template), width))
        self.template += b"\0" * width

    def run(self, present: np.ndarray) -> bytes:
        """The whole document for the entries at flat grid positions ``present``."""
        every = present.size == self.ids.size
        offs = (self.offsets if every else self.offsets[present]).astype(np.uint64)
        lens = (self.lengths if every else self.lengths[present]).astype(np.uint64)
        if int(self.ids[present].max()) >= self.n_paths:
            raise ValueError("path_ids refer past the end of path_table")
        if offs.max() > MAX_OFFSET or lens.max() > MAX_OFFSET:
            raise ValueError("offsets and lengths must be in [0, 2**63-1]")
        self._const(b'"')
        if not self.shape:
            self._const(b"0")
        for d, size in enumerate(self.shape):
            if d:
                self._const(b".")
            self._field(f"key{d}", 4 * -(-_ndigits(max(size - 1, 0)) // 4))
        self._const(b'":{"path":')
        self._field("path", self.lit_width)
        self._const(b',"offset":')
        self._field("offset", 4 * -(-_ndigits(int(offs.max())) // 4))
        self._const(b',"length":')
        self._field("length", 4 * -(-_ndigits(int(lens.max())) // 4))
        self._const(b"},\n")
        template = np.frombuffer(bytes(self.template), dtype=np.uint8)
        width = template.size

        n = present.size
        # BytesIO hands its buffer over in getvalue(): the text is copied once, block by block
        out = io.BytesIO()
        out.write(b"{\n")
        step = max(1, min(_ENCODE_ROWS, _BLOCK_BYTES // width))
        matrix = np.empty((min(n, step), width), dtype=np.uint8)
        for r0 in range(0, n, step):
            rows = present[r0 : r0 + step]
            m = rows.size
            block = matrix[:m]
            block[:] = template
            index = np.unravel_index(rows, self.shape) if self.shape else ()
            for what, col, w in self.fields:
                if what == "path":
                    cells = self._literal_cells(self.ids[rows])
                elif what == "offset":
                    cells = _digit_groups(offs[r0 : r0 + m], w // 4)
                elif what == "length":
                    cells = _digit_groups(lens[r0 : r0 + m], w // 4)
                else:
                    cells = _digit_groups(index[int(what[3:])].astype(np.uint64), w // 4)
                block[:, col : col + w] = cells
            if r0 + m == n:
                block[m - 1, width - 2 :] = 0  # no ",\n" after the last entry
            out.write(block[block != 0])
        out.write(b"\n}")
        return out.getvalue()


# =============================================================================================
# canonical fast decoder
# =============================================================================================


class _NotCanonical(Exception):
    """The document is not in the writer's layout: let the generic path decide."""


def _u64(x: int) -> np.uint64:
    return np.uint64(x)


_PAD = 32  # zero bytes around a segment, so 24-byte look-behind and look-ahead stay inside
_SEGMENT = 1 << 20  # bytes per segment: the working set stays in cache
_LONG_LITERAL = 256  # longer path literals are compared as bytes, one by one
_SHORTEST = 37  # bytes from a line's start to its "}" in the shortest canonical entry
_ONES = (1 << 64) - 1
_ONE = _u64(1)
_B30 = _u64(0x3030303030303030)
_B0F = _u64(0x0F0F0F0F0F0F0F0F)
_B7F = _u64(0x7F7F7F7F7F7F7F7F)
_B76 = _u64(0x7676767676767676)
_B80 = _u64(0x8080808080808080)
_B00FF = _u64(0x00FF00FF00FF00FF)
_B0000FFFF = _u64(0x0000FFFF0000FFFF)
_MUL1, _MUL2, _MUL3 = _u64(10 * 256 + 1), _u64(100 * 65536 + 1), _u64(10000 * 2**32 + 1)
_SH8, _SH16, _SH32 = _u64(8), _u64(16), _u64(32)
#: [k]: the k high bytes of a word (the last k bytes in memory)
_HIGH = np.array([0] + [_ONES ^ ((1 << (8 * (8 - k))) - 1) for k in range(1, 9)], dtype=np.uint64)
#: [k]: "0" in the 8-k low bytes, so the k digits in the high bytes parse as a number
_ZEROS = np.array([0x3030303030303030 & ~int(h) & _ONES for h in _HIGH], dtype=np.uint64)
_POW8 = [_u64(10 ** (8 * k)) for k in range(3)]
_MAX = _u64(MAX_OFFSET)
_HASH = [_u64(0x9E3779B97F4A7C15), _u64(0xC2B2AE3D27D4EB4F), _u64(0x165667B19E3779F9)]


def _token(text: bytes) -> tuple[bytes, np.uint64, np.uint32]:
    """A fixed token of 8-12 bytes, compared as an 8-byte and an overlapping 4-byte word."""
    return text, np.frombuffer(text[:8], "<u8")[0], np.frombuffer(text[-4:], "<u4")[0]


_TOKEN_PATH = _token(b'":{"path":"')  # closes the key, opens the path literal
_TOKEN_OFFSET = _token(b'","offset":')  # closes the path literal
_TOKEN_LENGTH = _token(b',"length":')
_CLOSE = np.frombuffer(b"},", "<u2")[0]
_CLOSE_LAST = np.frombuffer(b"}\n", "<u2")[0]


def _nondigit(w: np.ndarray) -> np.ndarray:
    """0x80 in every byte of ``w`` that is not an ASCII digit (no carries between bytes)."""
    x = w ^ _B30
    return (((x & _B7F) + _B76) | x) & _B80


def _trailing_digits(w: np.ndarray) -> np.ndarray:
    """How many of the last bytes of each 8-byte word are digits (0-8)."""
    f = _nondigit(w)
    f |= f >> _SH8
    f |= f >> _SH16
    f |= f >> _SH32
    return 8 - np.bitwise_count(f).astype(np.int64)


def _leading_digits(w: np.ndarray) -> np.ndarray:
    """How many of the first bytes of each 8-byte word are digits (0-8)."""
    f = _nondigit(w)
    f |= f << _SH8
    f |= f << _SH16
    f |= f << _SH32
    return 8 - np.bitwise_count(f).astype(np.int64)


def _eight_digits(w: np.ndarray) -> np.ndarray:
    """The value of 8 ASCII digits per word, first byte most significant (SWAR)."""
    w = ((w & _B0F) * _MUL1) >> _SH8
    w = ((w & _B00FF) * _MUL2) >> _SH16
    return ((w & _B0000FFFF) * _MUL3) >> _SH32


class _Segment:
    """A zero-padded copy of a run of whole lines, with unaligned word views into it."""

    def __init__(self, size: int):
        size = -(-size // 8) * 8
        self.bytes = np.zeros(size + 2 * _PAD, dtype=np.uint8)
        self.u64 = self.words("<u8")
        self.u32 = self.words("<u4")
        self.u16 = self.words("<u2")
        self.size = 0

    def words(self, dtype: str) -> np.ndarray:
        """A view whose item i is the word starting at byte i (unaligned)."""
        width = np.dtype(dtype).itemsize
        return np.ndarray((self.bytes.size - width + 1,), dtype, buffer=self.bytes, strides=(1,))

    def load(self, chunk: np.ndarray) -> None:
        m = chunk.size
        self.bytes[_PAD : _PAD + m] = chunk
        self.bytes[_PAD + m : _PAD + m + _PAD] = 0
        self.size = m

    def newlines(self) -> np.ndarray:
        """Positions of the newlines in the loaded lines."""
        return np.flatnonzero(self.bytes[_PAD : _PAD + self.size] == ord("\n")) + _PAD

    def token(self, at: np.ndarray, token: tuple[bytes, np.uint64, np.uint32]) -> None:
        text, head, tail = token
        if not ((self.u64[at] == head) & (self.u32[at + (len(text) - 4)] == tail)).all():
            raise _NotCanonical

    def digits_before(self, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The canonical decimal ending just before ``end``: (length, value as uint64)."""
        words = []
        length = np.zeros(end.size, dtype=np.int64)
        more = np.ones(end.size, dtype=bool)
        for k in range(3):
            w = self.u64[end - 8 * (k + 1)]
            c = _trailing_digits(w)
            words.append(w)
            length += np.where(more, c, 0) if k else c
            more &= c == 8
            if not more.any():
                break
        else:
            raise _NotCanonical  # 24 or more digits
        _check_length(length)
        if ((self.bytes[end - length] == ord("0")) & (length > 1)).any():
            raise _NotCanonical  # leading zero
        value = np.zeros(end.size, dtype=np.uint64)
        for k, w in enumerate(words):
            keep = np.clip(length - 8 * k, 0, 8)
            value += _eight_digits((w & _HIGH[keep]) | _ZEROS[keep]) * _POW8[k]
        if len(words) == 3 and (value > _MAX).any():
            raise _NotCanonical
        return length, value

    def digits_after(self, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The canonical decimal starting at ``start``: (length, value as uint64)."""
        w = self.u64[start]
        length = _leading_digits(w)
        if length.max() == 8:  # a long one somewhere: read it backwards from its end
            more = length == 8
            for k in range(1, 3):
                c = _leading_digits(self.u64[start + 8 * k])
                length += np.where(more, c, 0)
                more &= c == 8
                if not more.any():
                    break
            else:
                raise _NotCanonical
            return self.digits_before(start + length)
        _check_length(length)
        if (((w & _u64(0xFF)) == ord("0")) & (length > 1)).any():
            raise _NotCanonical  # leading zero
        # move the digits to the high bytes, "0" below them
        keep = length.astype(np.uint64)
        return length, _eight_digits((w << ((8 - keep) * _SH8)) | _ZEROS[length])

    def literal_words(self, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """``(n, w)`` uint64: the bytes ``[start, start+length)`` of each row, zero-padded."""
        nw = (int(length.max()) + 7) // 8
        view = np.ndarray(
            (self.bytes.size - 8 * nw + 1,), f"V{8 * nw}", buffer=self.bytes, strides=(1,)
        )
        words = view[start].view("<u8").reshape(start.size, nw)
        keep = np.clip(length[:, None] - 8 * np.arange(nw), 0, 8).astype(np.uint64) * _SH8
        words &= (_ONE << keep) - _ONE  # a shift by 64 gives 0, so 8 kept bytes mask all
        return words


def _check_length(length: np.ndarray) -> None:
    if length.min() < 1 or length.max() > 19:
        raise _NotCanonical


class _Literals:
    """Distinct path literals (raw JSON bytes) in order of first appearance.

    Rows are compared as masked 8-byte words: with the previous row (paths come in runs),
    then with the first few literals seen, then by a verified hash; only what is left is
    looked up by its bytes in a dictionary.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ids: dict[bytes, int] = {}
        self.known: list[tuple[int, np.ndarray]] = []  # (length, words) of the first few
        self.escaped = False

    def assign(self, seg: _Segment, base: int, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Ids of the literals at ``seg.bytes[start:start+length]`` (``data[base+start:...]``)."""
        long = length > _LONG_LITERAL
        if not long.any():
            return self._assign_words(base, start, length, seg.literal_words(start, length))
        ids = np.empty(start.size, dtype=np.int64)
        short = np.flatnonzero(~long)
        if short.size:
            words = seg.literal_words(start[short], length[short])
            ids[short] = self._assign_words(base, start[short], length[short], words)
        rows = np.flatnonzero(long)
        ids[rows] = self._lookup(base + start[rows], length[rows], None)
        return ids

    def _assign_words(
        self, base: int, start: np.ndarray, length: np.ndarray, words: np.ndarray
    ) -> np.ndarray:
        n, nw = words.shape
        cols = words.T  # comparing column by column beats comparing void items
        same = length[1:] == length[:-1]
        for c in cols:
            same &= c[1:] == c[:-1]
        heads = np.flatnonzero(np.concatenate(([True], ~same)))
        ids = np.full(heads.size, -1, dtype=np.int64)
        h_len, h_cols = length[heads], cols[:, heads]
        if heads.size > 64:
            for i, (ln, w) in enumerate(self.known):
                if w.size <= nw:
                    hit = h_len == ln
                    for k in range(nw):
                        hit &= h_cols[k] == (w[k] if k < w.size else 0)
                    ids[hit] = i
        todo = np.flatnonzero(ids < 0)
        if todo.size > 64:
            # one dictionary lookup per distinct hash, if no two literals share one
            t_len, t_cols = h_len[todo], h_cols[:, todo]
            h = t_len.astype(np.uint64) * _HASH[0]
            for k in range(nw):
                h = (h ^ t_cols[k]) * _HASH[1 + k % 2]
            _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
            rep = first[inverse]
            exact = t_len == t_len[rep]
            for k in range(nw):
                exact &= t_cols[k] == t_cols[k][rep]
            if exact.all():
                order = np.argsort(first, kind="stable")
                firsts = heads[todo[first[order]]]
                rep_ids = np.empty(first.size, dtype=np.int64)
                rep_ids[order] = self._lookup(base + start[firsts], length[firsts], words[firsts])
                ids[todo] = rep_ids[inverse]
                todo = todo[:0]
        if todo.size:
            at = heads[todo]
            ids[todo] = self._lookup(base + start[at], length[at], words[at])
        return np.repeat(ids, np.diff(np.append(heads, n)))

    def _lookup(
        self, start: np.ndarray, length: np.ndarray, words: np.ndarray | None
    ) -> np.ndarray:
        """Ids of the literals ``data[start:start+length]``, new ones numbered as they come."""
        table = self.ids
        lits = list(
            map(self.data.__getitem__, map(slice, start.tolist(), (start + length).tolist()))
        )
        found = list(map(table.get, lits))
        if None in found:
            new = [lit for lit, j in zip(lits, found, strict=True) if j is None]
            new = list(dict.fromkeys(new))  # first appearance order, once each
            if words is not None and len(self.known) < 8:
                row = {lit: i for i, lit in reversed(list(enumerate(lits)))}
                for lit in new[: 8 - len(self.known)]:
                    self.known.append((len(lit), words[row[lit], : -(-len(lit) // 8)].copy()))
            table.update(zip(new, range(len(table), len(table) + len(new)), strict=True))
            found = list(map(table.__getitem__, lits))
        return np.array(found, dtype=np.int64)

    def strings(self) -> list[str]:
        """The literals decoded by orjson, in id order; raises `_NotCanonical` if one is not a
        single JSON string."""
        # A raw newline cannot be inside a JSON string, so a literal whose closing quote is
        # escaped, or that holds several values, cannot pair up with its neighbours here.
        text = b"[" + b",\n".join(self.ids) + b"]"
        self.escaped = b"\\" in text
        try:
            out = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise _NotCanonical from None
        if len(out) != len(self.ids) or set(map(type, out)) != {str}:
            raise _NotCanonical
        return out


def _increasing(prev: np.ndarray | None, idx: np.ndarray) -> bool:
    """Whether the rows of ``idx`` (after ``prev``) are in strictly increasing C order."""
    rows = idx if prev is None else np.concatenate([prev[None], idx])
    if rows.shape[0] < 2:
        return True
    a, b = rows[1:], rows[:-1]
    gt = a[:, -1] > b[:, -1]
    for d in range(rows.shape[1] - 2, -1, -1):
        gt = (a[:, d] > b[:, d]) | ((a[:, d] == b[:, d]) & gt)
    return bool(gt.all())


def _first_duplicate(idx: np.ndarray) -> int | None:
    """Row of the first entry (in file order) whose key repeats an earlier one."""
    n = idx.shape[0]
    if n < 2:
        return None
    if idx.shape[1] == 0:
        return 1
    order = np.lexsort(idx.T[::-1])  # stable: of two equal rows the later comes second
    srt = idx[order]
    same = (srt[1:] == srt[:-1]).all(axis=1)
    if not same.any():
        return None
    return int(order[1:][same].min())


def _decode_canonical(
    data: bytes, ndim: int | None, location: str | None
) -> DecodedManifest | None:
    """Decode ``data`` if it is exactly in the writer's layout, else return None.

    Raises
    ------
    ManifestFormatError
        The layout is canonical and every entry valid, but a chunk key repeats.
    """
    try:
        return _decode_canonical_or_raise(data, ndim, location)
    except _NotCanonical:
        return None


def _decode_canonical_or_raise(
    data: bytes, ndim: int | None, location: str | None
) -> DecodedManifest:
    total = len(data)
    if total < _SHORTEST + 5 or not data.startswith(b'{\n"') or not data.endswith(b"}\n}"):
        raise _NotCanonical
    if ndim is None:
        # like the generic path: the first key's number of parts
        ndim = data[3 : data.find(b'"', 3)].count(b".") + 1
    parts = max(ndim, 1)
    buf = np.frombuffer(data, dtype=np.uint8)
    end = total - 1  # the final "}"
    seg = _Segment(_SEGMENT + 4096)
    literals = _Literals(data)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    prev_key: np.ndarray | None = None
    ordered = True
    a = 2
    while a < end:
        # a segment is whole lines: [a, b) ends just after a newline
        b = data.find(b"\n", min(a + _SEGMENT, end - 1)) + 1
        if b <= a or b > end:
            raise _NotCanonical
        if b - a + 2 * _PAD > seg.bytes.size:
            seg = _Segment(b - a)
        seg.load(buf[a:b])
        raw = seg.bytes
        nl = seg.newlines()
        starts = np.empty_like(nl)
        starts[0] = _PAD
        starts[1:] = nl[:-1] + 1
        close = nl - 2  # each entry's "}", followed by "," on every line but the last
        if b == end:
            close[-1] += 1
        tails = seg.u16[close]
        if b == end:
            tails[-1] = _CLOSE if tails[-1] == _CLOSE_LAST else 0
        if not (
            (close - starts >= _SHORTEST).all()  # also keeps every read below in bounds
            and (tails == _CLOSE).all()
            and (raw[starts] == ord('"')).all()
        ):
            raise _NotCanonical

        # from the end: length, offset, the end of the path literal
        n_len, lengths = seg.digits_before(close)
        at = close - n_len - 10
        seg.token(at, _TOKEN_LENGTH)
        n_off, offsets = seg.digits_before(at)
        lit_end = at - n_off - 10
        seg.token(lit_end - 1, _TOKEN_OFFSET)
        if ((offsets + lengths) > _MAX).any():
            raise _NotCanonical

        # from the start: the key's parts, the start of the path literal
        idx = np.empty((nl.size, parts), dtype=np.int64)
        at = starts + 1
        for k in range(parts):
            if (at >= close - 20).any():
                raise _NotCanonical
            n_digits, idx[:, k] = seg.digits_after(at)
            at = at + n_digits
            if k < parts - 1:
                if not (raw[at] == ord(".")).all():
                    raise _NotCanonical
                at += 1
        seg.token(at, _TOKEN_PATH)
        if ndim == 0 and idx.any():
            raise _NotCanonical
        lit_start = at + 10
        lit_len = lit_end - lit_start
        if lit_len.min() < 2:
            raise _NotCanonical
        ids = literals.assign(seg, a - _PAD, lit_start, lit_len)

        ordered = ordered and _increasing(prev_key, idx)
        prev_key = idx[-1]
        out.append((idx, ids, offsets, lengths))
        a = b

    indices, path_ids, offsets, lengths = (np.concatenate(c) for c in zip(*out, strict=True))

    # each distinct literal is judged by orjson; equal strings spelled differently merge
    path_ids = _first_appearance(path_ids, len(literals.ids), literals)
    strings = literals.strings()
    if "" in strings:
        raise _NotCanonical
    table = strings
    if literals.escaped:
        # without escapes a literal is its string's UTF-8, so distinct literals are distinct
        table = list(dict.fromkeys(strings))
        if len(table) != len(strings):
            number = {p: i for i, p in enumerate(table)}
            path_ids = np.fromiter(map(number.__getitem__, strings), np.int64, len(strings))[
                path_ids
            ]

    # only now that every entry is known to be valid: the generic path would say the same
    if not ordered:
        dup = _first_duplicate(indices)
        if dup is not None:
            key = ".".join(map(str, indices[dup].tolist())) if ndim else "0"
            raise ManifestFormatError(
                f"duplicate chunk key {key!r}{_where(location)}", location=location, key=key
            )
    if ndim == 0:
        indices = indices[:, :0]
    return DecodedManifest(
        indices=indices,
        path_table=list(table),
        path_ids=path_ids,
        offsets=offsets,
        lengths=lengths,
    )


def _first_appearance(ids: np.ndarray, count: int, literals: _Literals) -> np.ndarray:
    """Renumber ``ids`` (and reorder ``literals``) so ids first appear in increasing order."""
    if ids.size == 0:
        return ids
    top = np.maximum.accumulate(ids)
    if ids[0] == 0 and (ids[1:] <= top[:-1] + 1).all():
        return ids  # the usual case: numbered as they came
    _, first = np.unique(ids, return_index=True)
    order = np.argsort(first)  # old ids by first appearance
    renumber = np.empty(count, dtype=np.int64)
    renumber[order] = np.arange(count)
    old = list(literals.ids)
    literals.ids = {old[i]: k for k, i in enumerate(order.tolist())}
    return renumber[ids]


# =============================================================================================
# generic decoder
# =============================================================================================


def _decode_generic(data: bytes, ndim: int | None, location: str | None) -> DecodedManifest:
    """Decode any JSON layout with orjson, then validate (see `decode_manifest`)."""
    where = _where(location)
    if len(data) > MAX_GENERIC_MANIFEST_BYTES:
        raise ManifestFormatError(
            f"manifest{where} is {len(data)} bytes in a layout other than the canonical one "
            "this library writes; such manifests are parsed as a whole in memory (about 700 "
            f"bytes an entry), so they are limited to {MAX_GENERIC_MANIFEST_BYTES} bytes "
            "(the environment variable ZARR_MANIFEST_MAX_GENERIC_BYTES raises the limit)",
            location=location,
        )
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ManifestFormatError(
            f"manifest{where} is not valid JSON: {e}", location=location
        ) from e
    if not isinstance(doc, dict):
        raise ManifestFormatError(
            f"manifest{where} must be a JSON object, got {type(doc).__name__}", location=location
        )
    decoded = _decode_entries(doc, ndim, location, _format_error)
    _check_no_duplicates(data, doc, decoded, location)
    return decoded


def _decode_entries(
    entries: dict, ndim: int | None, location: str | None, error: ErrorFactory
) -> DecodedManifest:
    where = _where(location)
    keys = list(entries)
    n = len(keys)
    if n == 0:
        return DecodedManifest(
            indices=np.zeros((0, ndim or 0), dtype=np.int64),
            path_table=[],
            path_ids=np.zeros(0, dtype=np.int64),
            offsets=np.zeros(0, dtype=np.uint64),
            lengths=np.zeros(0, dtype=np.uint64),
        )
    if ndim is None:
        ndim = keys[0].count(".") + 1 if isinstance(keys[0], str) else 1
    parts = max(ndim, 1)
    key_re = re.compile(_INDEX + r"(?:\." + _INDEX + f"){{{parts - 1}}}")
    joined = ",".join(k if isinstance(k, str) else "?" for k in keys)
    flat = joined.replace(",", ".").split(".")
    # a key holding "," would still match the joined pattern: the part count catches it
    if (
        re.fullmatch(f"{key_re.pattern}(?:,{key_re.pattern})*", joined) is None
        or len(flat) != n * parts
        or (ndim == 0 and keys != ["0"])
    ):
        for k in keys:
            if not isinstance(k, str) or key_re.fullmatch(k) is None or (ndim == 0 and k != "0"):
                want = '"0"' if ndim == 0 else f"{ndim} '.'-separated non-negative integers"
                raise error(
                    f"invalid chunk key {k!r}{where}: expected {want}", location, str(k), None
                )
    try:
        indices = np.array(flat, dtype=np.int64).reshape(n, parts)
    except OverflowError:
        for k in keys:
            if any(int(p) > MAX_OFFSET for p in k.split(".")):
                raise error(
                    f"invalid chunk key {k!r}{where}: index exceeds 2**63-1", location, k, None
                ) from None
        raise
    if ndim == 0:
        indices = indices[:, :0]

    values = list(entries.values())
    try:
        paths = [v["path"] for v in values]
        offs = [v["offset"] for v in values]
        lens = [v["length"] for v in values]
        well_formed = all(len(v) == 3 for v in values)
    except (TypeError, KeyError, IndexError):
        well_formed = False
    if not (
        well_formed
        and set(map(type, paths)) == {str}
        and set(map(type, offs)) == {int}
        and set(map(type, lens)) == {int}
    ):
        _raise_first_bad_entry(keys, values, error, where, location)
    try:
        offsets = np.array(offs, dtype=np.int64)
        lengths = np.array(lens, dtype=np.int64)
    except OverflowError:
        _raise_first_bad_entry(keys, values, error, where, location)
        raise
    bad = (offsets < 0) | (lengths < 0) | (offsets > MAX_OFFSET - np.maximum(lengths, 0))
    if bad.any():
        _raise_first_bad_entry(keys, values, error, where, location)
    table: dict[str, int] = {}
    ids = np.fromiter((table.setdefault(p, len(table)) for p in paths), dtype=np.int64, count=n)
    if "" in table:
        i = paths.index("")
        raise error(
            f"chunk {keys[i]!r}{where}: 'path' must be a non-empty string",
            location,
            keys[i],
            "path",
        )
    return DecodedManifest(
        indices=indices,
        path_table=list(table),
        path_ids=ids,
        offsets=offsets.astype(np.uint64),
        lengths=lengths.astype(np.uint64),
    )


def _raise_first_bad_entry(
    keys: list, values: list, error: ErrorFactory, where: str, location: str | None
) -> None:
    for k, v in zip(keys, values, strict=True):
        if not isinstance(v, dict):
            raise error(
                f"chunk {k!r}{where}: entry must be an object, got {v!r}", location, k, None
            )
        for field in _FIELDS:
            if field not in v:
                raise error(f"chunk {k!r}{where}: missing field {field!r}", location, k, field)
        extra = sorted(set(v) - set(_FIELDS))
        if extra:
            raise error(f"chunk {k!r}{where}: unknown field {extra[0]!r}", location, k, extra[0])
        if not isinstance(v["path"], str):
            raise error(
                f"chunk {k!r}{where}: 'path' must be a string, got {v['path']!r}",
                location,
                k,
                "path",
            )
        for field in ("offset", "length"):
            x = v[field]
            if type(x) is not int:
                raise error(
                    f"chunk {k!r}{where}: {field!r} must be an integer, got {x!r}",
                    location,
                    k,
                    field,
                )
            if x < 0 or x > MAX_OFFSET:
                raise error(
                    f"chunk {k!r}{where}: {field!r} must be in [0, 2**63-1], got {x}",
                    location,
                    k,
                    field,
                )
        if v["offset"] + v["length"] > MAX_OFFSET:
            raise error(
                f"chunk {k!r}{where}: offset + length exceeds 2**63-1", location, k, "length"
            )


# ---- duplicate keys and fields ------------------------------------------------------------
#
# orjson keeps the last of duplicate object members silently.  In a valid manifest every
# member but the path strings' contents has exactly one ":" outside strings: n keys and 3n
# fields.  So the raw ":" count equals 4n plus the ":" inside the kept paths unless a member
# was dropped -- or a path spells ":" as an escape, which the exact (slower) scan handles.


def _check_no_duplicates(
    data: bytes, doc: dict, decoded: DecodedManifest, location: str | None
) -> None:
    n = len(doc)
    if n == 0 and data.count(b":") == 0:
        return
    if b"\\u003" not in data:  # "\\u003a" would be a ":" without a raw ":"
        uses = np.bincount(decoded.path_ids, minlength=len(decoded.path_table))
        inside = sum(int(u) * p.count(":") for u, p in zip(uses, decoded.path_table, strict=True))
        if data.count(b":") == 4 * n + inside:
            return
    _find_duplicate(data, doc, location)


def _find_duplicate(data: bytes, doc: dict, location: str | None) -> None:
    """Raise for the first duplicate key or field of ``data`` (valid JSON), if there is one."""
    where = _where(location)
    buf = np.frombuffer(data, dtype=np.uint8)
    quotes = _unescaped_quotes(buf, has_backslash=b"\\" in data)
    marks = np.flatnonzero(np.isin(buf, np.frombuffer(b":{}[]", dtype=np.uint8)))
    marks = marks[np.searchsorted(quotes, marks) % 2 == 0]  # outside strings
    kind = buf[marks]
    step = np.where((kind == ord("{")) | (kind == ord("[")), 1, 0) - np.where(
        (kind == ord("}")) | (kind == ord("]")), 1, 0
    )
    depth = np.cumsum(step) - step  # containers open before each mark
    colons = kind == ord(":")
    top = marks[colons & (depth == 1)]
    inner = marks[colons & (depth == 2)]

    def name(colon: int) -> str:
        # the member name is the string just before its ":"
        q = int(np.searchsorted(quotes, colon)) - 1
        return orjson.loads(data[int(quotes[q - 1]) : int(quotes[q]) + 1])

    if top.size != len(doc):
        seen: set[str] = set()
        for c in top.tolist():
            key = name(c)
            if key in seen:
                raise ManifestFormatError(
                    f"duplicate chunk key {key!r}{where}", location=location, key=key
                )
            seen.add(key)
    owner = np.searchsorted(top, inner) - 1
    counts = np.bincount(owner, minlength=top.size)
    for i in np.flatnonzero(counts > 3).tolist():
        fields = [name(c) for c in inner[owner == i].tolist()]
        dup = next(f for j, f in enumerate(fields) if f in fields[:j])
        key = name(int(top[i]))
        raise ManifestFormatError(
            f"chunk {key!r}{where}: duplicate field {dup!r}", location=location, key=key, field=dup
        )
