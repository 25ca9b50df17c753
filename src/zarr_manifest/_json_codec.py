"""manifest.json bytes <-> columnar arrays.

The JSON form of a chunk manifest is one object mapping chunk keys ("i.j.k") to
``{"path": str, "offset": int, "length": int}``.  This module turns that text into flat
numpy columns and back, without building a Python object per chunk where it can help it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from zarr_manifest.errors import ManifestError, ManifestFormatError

__all__ = ["MAX_OFFSET", "DecodedManifest", "decode_manifest", "encode_manifest"]

#: offsets, lengths and their sum must stay below this (they are read as int64)
MAX_OFFSET = 2**63 - 1

_INDEX = r"(?:0|[1-9][0-9]*)"


@dataclass(frozen=True, slots=True)
class DecodedManifest:
    """The flat columns of a decoded manifest.json, one row per entry, in file order.

    Attributes
    ----------
    indices
        ``(n, ndim)`` int64 chunk grid indices (``(n, 0)`` for a 0-d array).
    path_table
        The distinct paths.
    path_ids
        ``(n,)`` int64 index into ``path_table``.
    offsets, lengths
        ``(n,)`` uint64.
    """

    indices: np.ndarray
    path_table: list[str]
    path_ids: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray


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

    Returns
    -------
    bytes
        ``{\\n`` + entries joined by ``,\\n`` + ``\\n}`` (``{}`` when there are none), entries
        in C order of the grid, each ``"i.j":{"path":...,"offset":O,"length":L}``.
    """
    ids = np.asarray(path_ids).reshape(-1)
    present = np.flatnonzero(ids >= 0)
    if present.size == 0:
        return b"{}"
    literals = [orjson.dumps(p).decode() for p in path_table]
    if len(shape) == 0:
        keys = ["0"]
    else:
        idx = np.unravel_index(present, shape)
        keys = [".".join(map(str, t)) for t in zip(*(a.tolist() for a in idx), strict=True)]
    offs = np.asarray(offsets).reshape(-1)[present].tolist()
    lens = np.asarray(lengths).reshape(-1)[present].tolist()
    pids = ids[present].tolist()
    lines = [
        f'"{k}":{{"path":{literals[p]},"offset":{o},"length":{n}}}'
        for k, p, o, n in zip(keys, pids, offs, lens, strict=True)
    ]
    return ("{\n" + ",\n".join(lines) + "\n}").encode()


def decode_manifest(data: bytes, *, ndim: int | None, location: str | None = None) -> DecodedManifest:
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
        Malformed JSON, a non-object document, a bad key or entry; the message names the
        location, key and field at fault.
    """
    where = f" in {location}" if location else ""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ManifestFormatError(f"manifest{where} is not valid JSON: {e}", location=location) from e
    if not isinstance(doc, dict):
        raise ManifestFormatError(
            f"manifest{where} must be a JSON object, got {type(doc).__name__}", location=location
        )
    return decode_entries(doc, ndim=ndim, location=location)


def decode_entries(
    entries: dict, *, ndim: int | None, location: str | None = None
) -> DecodedManifest:
    """Validate a manifest in dict form and turn it into flat columns.

    See `decode_manifest`; ``entries`` maps keys to ``{"path", "offset", "length"}`` dicts.
    """
    error = _error_factory(location)
    where = f" in {location}" if location else ""
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
    key_re = re.compile(_INDEX + r"(?:\." + _INDEX + "){%d}" % (parts - 1))
    joined = ",".join(k if isinstance(k, str) else "?" for k in keys)
    if re.fullmatch(f"{key_re.pattern}(?:,{key_re.pattern})*", joined) is None or (
        ndim == 0 and keys != ["0"]
    ):
        for k in keys:
            if not isinstance(k, str) or key_re.fullmatch(k) is None or (ndim == 0 and k != "0"):
                want = '"0"' if ndim == 0 else f"{ndim} '.'-separated non-negative integers"
                raise error(f"invalid chunk key {k!r}{where}: expected {want}", location, k, None)
    flat = joined.replace(",", ".").split(".")
    indices = np.array(flat, dtype=np.int64).reshape(n, parts)
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
        offsets = lengths = np.zeros(0, dtype=np.int64)
        _raise_first_bad_entry(keys, values, error, where, location)
    bad = (offsets < 0) | (lengths < 0) | (offsets > MAX_OFFSET - np.maximum(lengths, 0))
    if bad.any():
        _raise_first_bad_entry(keys, values, error, where, location)
    table: dict[str, int] = {}
    ids = np.fromiter((table.setdefault(p, len(table)) for p in paths), dtype=np.int64, count=n)
    if "" in table:
        i = paths.index("")
        raise error(f"chunk {keys[i]!r}{where}: 'path' must be a non-empty string", location, keys[i], "path")
    return DecodedManifest(
        indices=indices,
        path_table=list(table),
        path_ids=ids,
        offsets=offsets.astype(np.uint64),
        lengths=lengths.astype(np.uint64),
    )


def _error_factory(location: str | None):
    """Errors about an on-disk file are ManifestFormatError; about an in-memory dict, ManifestError."""

    def make(message: str, _location: str | None, key: str | None, field: str | None) -> ManifestError:
        if location is not None:
            return ManifestFormatError(message, location=location, key=key, field=field)
        return ManifestError(message, key=key, field=field)

    return make


def _raise_first_bad_entry(keys, values, error, where: str, location: str | None) -> None:
    for k, v in zip(keys, values, strict=True):
        if not isinstance(v, dict):
            raise error(f"chunk {k!r}{where}: entry must be an object, got {v!r}", location, k, None)
        for field in ("path", "offset", "length"):
            if field not in v:
                raise error(f"chunk {k!r}{where}: missing field {field!r}", location, k, field)
        extra = sorted(set(v) - {"path", "offset", "length"})
        if extra:
            raise error(f"chunk {k!r}{where}: unknown field {extra[0]!r}", location, k, extra[0])
        if not isinstance(v["path"], str):
            raise error(f"chunk {k!r}{where}: 'path' must be a string, got {v['path']!r}", location, k, "path")
        for field in ("offset", "length"):
            x = v[field]
            if type(x) is not int:
                raise error(
                    f"chunk {k!r}{where}: {field!r} must be an integer, got {x!r}", location, k, field
                )
            if x < 0 or x > MAX_OFFSET:
                raise error(
                    f"chunk {k!r}{where}: {field!r} must be in [0, 2**63-1], got {x}", location, k, field
                )
        if v["offset"] + v["length"] > MAX_OFFSET:
            raise error(f"chunk {k!r}{where}: offset + length exceeds 2**63-1", location, k, "length")
