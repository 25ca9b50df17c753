"""Chunk manifest columns -> manifest.json bytes in the one canonical layout.

Every entry is a row of a fixed-width byte matrix whose unused cells are NUL, built with
numpy (digits by lookup table, path literals by ``orjson.dumps`` once per distinct path);
the NULs are squeezed out at the end (JSON text never contains a raw NUL).  See
`zarr_manifest._json_codec` for the layout.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import orjson

from zarr_manifest._json_columns import MAX_OFFSET

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
    quotes = unescaped_quotes(body, has_backslash=b"\\" in text)
    if quotes.size != 2 * len(paths):  # cannot happen for strings; a guard
        raise ValueError("path_table must hold strings")
    ends = quotes[1::2] + 1
    keep = np.ones(body.size, dtype=bool)
    keep[ends[:-1]] = False  # the separating commas
    return ends - quotes[0::2], body[keep]


def unescaped_quotes(buf: np.ndarray, *, has_backslash: bool) -> np.ndarray:
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


class ManifestEncoder:
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
