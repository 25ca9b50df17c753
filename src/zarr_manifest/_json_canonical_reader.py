"""The fast reader of manifest.json in the canonical layout the writer emits.

The document is read in segments of whole lines as 64-bit words: every byte of every entry is
checked against the canonical grammar (fixed tokens, digit runs, key parts), and each
distinct path literal is handed to orjson, so escapes and invalid strings are judged by a
real JSON parser.  A document it does not recognise is left to the generic reader
(`zarr_manifest._json_codec`): this reader never accepts what that one would reject or read
differently.
"""

from __future__ import annotations

import numpy as np
import orjson

from zarr_manifest._json_columns import MAX_OFFSET, DecodedManifest, in_location
from zarr_manifest.errors import ManifestFormatError

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


def decode_canonical(data: bytes, ndim: int | None, location: str | None) -> DecodedManifest | None:
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
                f"duplicate chunk key {key!r}{in_location(location)}", location=location, key=key
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
