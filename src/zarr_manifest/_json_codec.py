"""manifest.json bytes <-> columnar arrays.

The JSON form of a chunk manifest is one object mapping chunk keys ("i.j.k") to
``{"path": str, "offset": int, "length": int}``.  This module turns that text into flat
numpy columns and back, without building a Python object per chunk.

The writer emits one canonical layout::

    {
    "0.0":{"path":"s3://b/f.nc","offset":100,"length":100},
    "0.1":{"path":"s3://b/f.nc","offset":200,"length":100}
    }

(``{`` + newline, entries joined by ``,`` + newline, newline + ``}``; ``{}`` when empty),
written by `zarr_manifest._json_encoder` with numpy.

The reader has a numpy fast path that recognises exactly that layout
(`zarr_manifest._json_canonical_reader`) and a generic path (orjson, in this module) for
anything else.  The fast path cannot accept a document the generic path would
reject or read differently: it checks every byte of every entry against the canonical grammar
(fixed tokens, digit runs, key parts), and hands each distinct path literal to orjson, so
escapes and invalid strings are judged by a real JSON parser.  Whatever it does not recognise
goes to the generic path, which produces every error message but one: both paths reject a
repeated chunk key (and the generic one a repeated entry field), which orjson alone would
silently collapse, with the same message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import orjson

from zarr_manifest._json_canonical_reader import decode_canonical
from zarr_manifest._json_columns import MAX_OFFSET, DecodedManifest, in_location
from zarr_manifest._json_encoder import ManifestEncoder, unescaped_quotes
from zarr_manifest.errors import ManifestError, ManifestFormatError

__all__ = ["MAX_OFFSET", "DecodedManifest", "decode_entries", "decode_manifest", "encode_manifest"]

#: The largest manifest.json read when it is not in the canonical layout: the generic parser
#: builds a Python object per entry (~700 bytes), so an untrusted file must not be able to
#: ask for gigabytes.  64 MiB is about 800k entries and 0.5 GB.
MAX_GENERIC_MANIFEST_BYTES = int(os.environ.get("ZARR_MANIFEST_MAX_GENERIC_BYTES", 64 * 2**20))


_INDEX = r"(?:0|[1-9][0-9]*)"
_FIELDS = ("path", "offset", "length")

ErrorFactory = Callable[[str, str | None, str | None, str | None], ManifestError]


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
    return ManifestEncoder(shape, path_table, ids, offsets, lengths).run(present)


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
    fast = decode_canonical(data, ndim, location)
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


# =============================================================================================
# generic decoder
# =============================================================================================


def _decode_generic(data: bytes, ndim: int | None, location: str | None) -> DecodedManifest:
    """Decode any JSON layout with orjson, then validate (see `decode_manifest`)."""
    where = in_location(location)
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
    where = in_location(location)
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
    where = in_location(location)
    buf = np.frombuffer(data, dtype=np.uint8)
    quotes = unescaped_quotes(buf, has_backslash=b"\\" in data)
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
