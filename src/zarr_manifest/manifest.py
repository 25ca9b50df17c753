"""`ChunkManifest`: where every chunk of one array lives, as numpy columns.

A manifest is a grid (the array's chunk grid) of references ``{path, offset, length}``.
It is stored columnar: a small table of distinct paths, and grid-shaped numpy arrays of path
ids (-1 where the chunk is missing), offsets and lengths, each in the narrowest integer type
that holds its values.  A reference into a few files costs 9-17 bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from zarr_manifest._json_codec import (
    MAX_OFFSET,
    DecodedManifest,
    decode_entries,
    decode_manifest,
    encode_manifest,
)
from zarr_manifest.errors import ManifestError, ManifestFormatError

__all__ = ["ChunkEntry", "ChunkManifest"]

_STRINGS = np.dtypes.StringDType()

#: The most chunks one manifest grid may have when it is read from a dict or manifest.json
#: (the grid is held dense, at up to ~20 bytes a cell while it is built): a guard against a
#: one-line manifest asking for terabytes.  2**27 cells is about 2.5 GB at most; raise it
#: with the environment variable ZARR_MANIFEST_MAX_GRID_CELLS.
MAX_GRID_CELLS = int(os.environ.get("ZARR_MANIFEST_MAX_GRID_CELLS", 2**27))
#: The most dimensions a chunk grid may have: numpy holds at most 32 (numpy 1) or 64
#: (numpy 2), and no dataset comes near either.
MAX_GRID_DIMS = 32


class ChunkEntry(TypedDict):
    """One chunk reference: ``length`` bytes at ``offset`` of ``path``."""

    path: str
    offset: int
    length: int


class ChunkManifest:
    """In-memory representation of one array's chunk manifest (zarr-specs #287).

    Behaves like an immutable mapping from chunk keys (``"i.j.k"``) to `ChunkEntry` dicts,
    but is stored as numpy arrays.  Missing chunks (absent keys) mean "fill value".
    Validated when built: no `ChunkManifest` describes an invalid grid.

    Parameters
    ----------
    entries
        ``{"0.0": {"path": "s3://bucket/foo.nc", "offset": 100, "length": 100}, ...}``.
    shape
        The chunk grid shape.  Default: one past the largest index along each dimension.
        A 0-d (scalar) array has ``shape=()`` and the single key ``"0"``.

    Raises
    ------
    ManifestError
        A key or entry is invalid; the message (and ``.key``/``.field``) name it.
    """

    __slots__ = ("_lengths", "_offsets", "_path_ids", "_path_table")

    _path_table: tuple[str, ...]
    _path_ids: np.ndarray
    _offsets: np.ndarray
    _lengths: np.ndarray

    def __init__(self, entries: Mapping[str, ChunkEntry], shape: tuple[int, ...] | None = None):
        if not isinstance(entries, Mapping):
            raise ManifestError(
                f"entries must be a dict of chunk key -> entry, got {type(entries)}"
            )
        ndim = None if shape is None else len(shape)
        decoded = decode_entries(dict(entries), ndim=ndim)
        self._init_from_rows(decoded, shape)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        *,
        paths: np.ndarray | Sequence[Any] | str,
        offsets: np.ndarray | Sequence[Any],
        lengths: np.ndarray | Sequence[Any],
    ) -> ChunkManifest:
        """Create a manifest from grid-shaped arrays of paths, offsets and lengths.

        Parameters
        ----------
        paths
            Strings, one per chunk, shaped like the chunk grid; ``""`` marks a missing
            chunk.  A single string applies to every chunk.
        offsets, lengths
            Non-negative integers of the same shape.

        Raises
        ------
        ManifestError
            Shapes differ, a value is not an integer, is negative or too large.
        """
        offs = _as_index_array(offsets, "offsets")
        lens = _as_index_array(lengths, "lengths")
        if offs.shape != lens.shape:
            raise ManifestError(
                f"offsets and lengths must have the same shape, got {offs.shape} and {lens.shape}"
            )
        if isinstance(paths, str):
            if not paths:
                raise ManifestError("paths: a single path must be non-empty")
            table: list[str] = [paths]
            ids = np.zeros(offs.shape, dtype=np.int8)
        else:
            arr = np.asarray(paths)
            if arr.shape != offs.shape:
                raise ManifestError(
                    f"paths must have the shape of offsets {offs.shape}, got {arr.shape}"
                )
            table, ids = _factorize_paths(arr)
        _check_sum(offs, lens, ids)
        missing = ids < 0
        if missing.any():
            offs = np.where(missing, 0, offs)
            lens = np.where(missing, 0, lens)
        return cls._new(tuple(table), ids, offs, lens)

    @classmethod
    def from_zarr_json(
        cls, filepath: str | os.PathLike[str], shape: tuple[int, ...] | None = None
    ) -> ChunkManifest:
        """Read a manifest.json file.

        Parameters
        ----------
        filepath
            A local path.
        shape
            The chunk grid shape, when known (needed to read a 0-d array's manifest).

        Raises
        ------
        ManifestFormatError
            The file is not a valid manifest; the message names the file, key and field.
        """
        with open(filepath, "rb") as f:
            data = f.read()
        return cls.from_json_bytes(data, shape=shape, location=os.fspath(filepath))

    @classmethod
    def from_json_bytes(
        cls, data: bytes, *, shape: tuple[int, ...] | None = None, location: str | None = None
    ) -> ChunkManifest:
        """Parse manifest.json bytes (see `from_zarr_json`); ``location`` is named in errors."""
        ndim = None if shape is None else len(shape)
        decoded = decode_manifest(data, ndim=ndim, location=location or "<bytes>")
        self = cls.__new__(cls)
        where = location or "<bytes>"
        try:
            self._init_from_rows(decoded, shape, location=where)
        except ManifestFormatError:
            raise
        except ManifestError as e:
            # a file's error names the file: the documented type for on-disk manifests
            raise ManifestFormatError(str(e), location=where, key=e.key, field=e.field) from e
        return self

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> ChunkManifest:
        """A manifest of ``shape`` where every chunk is missing."""
        return cls._new(
            (),
            np.full(shape, -1, dtype=np.int8),
            np.zeros(shape, np.uint8),
            np.zeros(shape, np.uint8),
        )

    @classmethod
    def _new(
        cls,
        path_table: tuple[str, ...],
        path_ids: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
    ) -> ChunkManifest:
        """Wrap already-validated columns (ids -1 where missing), narrowing their types."""
        self = cls.__new__(cls)
        self._path_table = path_table
        self._path_ids = _frozen(_narrow_signed(path_ids, len(path_table)))
        self._offsets = _frozen(_narrow_unsigned(offsets))
        self._lengths = _frozen(_narrow_unsigned(lengths))
        return self

    def _init_from_rows(
        self,
        decoded: DecodedManifest,
        shape: tuple[int, ...] | None,
        *,
        location: str | None = None,
    ) -> None:
        """Place per-entry rows (from a dict or manifest.json) into the grid."""
        indices, path_table, path_ids = decoded.indices, decoded.path_table, decoded.path_ids
        offsets, lengths = decoded.offsets, decoded.lengths
        n, ndim = indices.shape
        where = f" in {location}" if location else ""
        if shape is None:
            shape = tuple(int(x) + 1 for x in indices.max(axis=0)) if n else (0,) * ndim
        shape = tuple(int(s) for s in shape)
        if len(shape) > MAX_GRID_DIMS or ndim > MAX_GRID_DIMS:
            raise ManifestError(
                f"chunk grid{where} has {max(len(shape), ndim)} dimensions, more than the "
                f"{MAX_GRID_DIMS} a manifest may have"
            )
        if any(s < 0 for s in shape):
            raise ManifestError(f"chunk grid shape must be non-negative, got {shape}")
        if n and len(shape) != ndim:
            raise ManifestError(
                f"chunk keys{where} have {ndim} dimensions but the grid shape {shape} "
                f"has {len(shape)}"
            )
        size = math.prod(shape)
        if size > MAX_GRID_CELLS:
            raise ManifestError(
                f"chunk grid {shape}{where} has {size} cells, more than the {MAX_GRID_CELLS} "
                "a manifest may hold in memory (ZARR_MANIFEST_MAX_GRID_CELLS raises the limit)"
            )
        if n:
            outside = (indices >= np.array(shape, dtype=np.int64)).any(axis=1)
            if outside.any():
                bad = ".".join(map(str, indices[np.argmax(outside)].tolist())) or "0"
                raise ManifestError(
                    f"chunk key {bad!r}{where} is outside the chunk grid of shape {shape}", key=bad
                )
        flat = np.ravel_multi_index(tuple(indices.T), shape) if ndim else np.zeros(n, np.int64)
        ids = np.full(size, -1, dtype=_signed_for(len(path_table)))
        offs = np.zeros(size, dtype=np.uint64)
        lens = np.zeros(size, dtype=np.uint64)
        ids[flat] = path_ids
        # every row fills a cell: fewer filled cells than rows means a key came twice
        # (cheaper than np.unique on the keys)
        if np.count_nonzero(ids >= 0) != n:
            raise ManifestError(f"duplicate chunk keys{where}")
        offs[flat] = offsets
        lens[flat] = lengths
        self._path_table = tuple(path_table)
        self._path_ids = _frozen(ids.reshape(shape))
        self._offsets = _frozen(_narrow_unsigned(offs.reshape(shape)))
        self._lengths = _frozen(_narrow_unsigned(lens.reshape(shape)))

    # ---- the columns --------------------------------------------------------------------

    @property
    def path_table(self) -> tuple[str, ...]:
        """The distinct paths referenced, indexed by `path_ids`."""
        return self._path_table

    @property
    def path_ids(self) -> np.ndarray:
        """Grid of indices into `path_table`; -1 where the chunk is missing (read-only)."""
        return self._path_ids

    @property
    def paths(self) -> np.ndarray:
        """Grid of paths (numpy StringDType), ``""`` where the chunk is missing."""
        # index -1 picks the trailing "", so missing chunks need no special case
        table = np.array([*self._path_table, ""], dtype=_STRINGS)
        # through a flat index so a 0-d grid stays an array (not a scalar str)
        return table[self._path_ids.reshape(-1)].reshape(self._path_ids.shape)

    @property
    def offsets(self) -> np.ndarray:
        """Grid of byte offsets as uint64 (0 where missing)."""
        return self._offsets.astype(np.uint64, copy=False)

    @property
    def lengths(self) -> np.ndarray:
        """Grid of byte lengths as uint64 (0 where missing)."""
        return self._lengths.astype(np.uint64, copy=False)

    @property
    def present(self) -> np.ndarray:
        """Boolean grid: True where the chunk has a reference."""
        return self._path_ids >= 0

    # ---- the seed's attributes ----------------------------------------------------------

    @property
    def ndim_chunk_grid(self) -> int:
        """Number of dimensions in the chunk grid."""
        return self._path_ids.ndim

    @property
    def shape_chunk_grid(self) -> tuple[int, ...]:
        """Number of separate chunks along each dimension."""
        return tuple(self._path_ids.shape)

    @property
    def nbytes(self) -> int:
        """Size required to hold these references in memory, in bytes."""
        arrays = self._path_ids.nbytes + self._offsets.nbytes + self._lengths.nbytes
        return arrays + sum(len(p.encode()) + 49 for p in self._path_table)

    def __len__(self) -> int:
        """Number of chunk references present (missing chunks not counted)."""
        return int(np.count_nonzero(self._path_ids >= 0))

    # ---- mapping view -------------------------------------------------------------------

    def __getitem__(self, key: str | tuple[int, ...]) -> ChunkEntry:
        """The reference of one chunk, by key ``"i.j"`` or index ``(i, j)``.

        Raises
        ------
        KeyError
            The chunk is missing or outside the grid.
        """
        entry = self.get(key)
        if entry is None:
            raise KeyError(key)
        return entry

    def get(self, key: str | tuple[int, ...], default: Any = None) -> ChunkEntry | Any:
        """The reference of one chunk, or ``default`` if it is missing or outside the grid."""
        index = _parse_key(key, self.ndim_chunk_grid)
        if index is None or any(
            not 0 <= i < s for i, s in zip(index, self.shape_chunk_grid, strict=True)
        ):
            return default
        pid = int(self._path_ids[index])
        if pid < 0:
            return default
        return {
            "path": self._path_table[pid],
            "offset": int(self._offsets[index]),
            "length": int(self._lengths[index]),
        }

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | tuple) and self.get(key) is not None

    def keys(self) -> Iterator[str]:
        """Keys of the chunks present, in C order of the grid."""
        for index in self._present_indices():
            yield _key(index)

    def values(self) -> Iterator[ChunkEntry]:
        """Entries of the chunks present, in C order of the grid."""
        for _, entry in self.items():
            yield entry

    def items(self) -> Iterator[tuple[str, ChunkEntry]]:
        """(key, entry) pairs of the chunks present, in C order of the grid."""
        flat = np.flatnonzero(self._path_ids.reshape(-1) >= 0)
        table = self._path_table
        ids = self._path_ids.reshape(-1)[flat].tolist()
        offs = self._offsets.reshape(-1)[flat].tolist()
        lens = self._lengths.reshape(-1)[flat].tolist()
        for index, pid, off, length in zip(self._unravel(flat), ids, offs, lens, strict=True):
            yield _key(index), {"path": table[pid], "offset": off, "length": length}

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def dict(self) -> dict[str, ChunkEntry]:
        """Convert the entire manifest to a dict of key -> entry (missing chunks absent)."""
        return dict(self.items())

    def _present_indices(self) -> Iterator[tuple[int, ...]]:
        return self._unravel(np.flatnonzero(self._path_ids.reshape(-1) >= 0))

    def _unravel(self, flat: np.ndarray) -> Iterator[tuple[int, ...]]:
        if self.ndim_chunk_grid == 0:
            return iter([()] * len(flat))
        return zip(
            *(a.tolist() for a in np.unravel_index(flat, self.shape_chunk_grid)), strict=True
        )

    # ---- comparison ---------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkManifest):
            return NotImplemented
        if self.shape_chunk_grid != other.shape_chunk_grid:
            return False
        present = self.present
        if not np.array_equal(present, other.present):
            return False
        return (
            np.array_equal(self.paths[present], other.paths[present])
            and np.array_equal(self.offsets[present], other.offsets[present])
            and np.array_equal(self.lengths[present], other.lengths[present])
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ChunkManifest<shape_chunk_grid={self.shape_chunk_grid}, references={len(self)}, "
            f"paths={len(self._path_table)}>"
        )

    def __getstate__(self) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
        return self._path_table, self._path_ids, self._offsets, self._lengths

    def __setstate__(
        self, state: tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        table, ids, offs, lens = state
        self._path_table = table
        self._path_ids = _frozen(ids)
        self._offsets = _frozen(offs)
        self._lengths = _frozen(lens)

    # ---- transformations ----------------------------------------------------------------

    def rename_paths(self, new: str | Callable[[str], str]) -> ChunkManifest:
        """Rename the paths of every reference.

        Parameters
        ----------
        new
            A single path that replaces every path, or a function applied to each path.

        Returns
        -------
        ChunkManifest
            A new manifest; only the path table changes.
        """
        if isinstance(new, str):
            if not new:
                raise ManifestError("rename_paths: the new path must be non-empty")
            present = self._path_ids >= 0
            ids = np.where(present, 0, -1) if self._path_table else self._path_ids
            return self._new((new,) if self._path_table else (), ids, self._offsets, self._lengths)
        if not callable(new):
            raise ManifestError(f"rename_paths takes a string or a callable, got {type(new)}")
        renamed = [new(p) for p in self._path_table]
        for old, p in zip(self._path_table, renamed, strict=True):
            if not isinstance(p, str) or not p:
                raise ManifestError(
                    f"rename_paths: {old!r} was renamed to {p!r}; paths must be non-empty strings",
                    field="path",
                )
        table, remap = _merge_tables([renamed])
        ids = _remap_ids(self._path_ids, remap[0])
        return self._new(table, ids, self._offsets, self._lengths)

    @staticmethod
    def concat(manifests: Sequence[ChunkManifest], axis: int = 0) -> ChunkManifest:
        """Join manifests along an existing grid axis, like `numpy.concatenate`.

        Raises
        ------
        ManifestError
            Fewer than one manifest, or grids that differ off the axis.
        """
        return _combine(manifests, axis, stack=False)

    @staticmethod
    def stack(manifests: Sequence[ChunkManifest], axis: int = 0) -> ChunkManifest:
        """Join manifests along a new grid axis, like `numpy.stack`.

        Raises
        ------
        ManifestError
            Fewer than one manifest, or grids of different shapes.
        """
        return _combine(manifests, axis, stack=True)

    # ---- JSON ---------------------------------------------------------------------------

    def to_json_bytes(self) -> bytes:
        """The manifest.json form of this manifest, as bytes."""
        return encode_manifest(
            self.shape_chunk_grid, self._path_table, self._path_ids, self._offsets, self._lengths
        )

    def to_zarr_json(self, filepath: str | os.PathLike[str]) -> None:
        """Write the manifest to a manifest.json file at a local path."""
        with open(filepath, "wb") as f:
            f.write(self.to_json_bytes())


# ---- helpers --------------------------------------------------------------------------------


def _key(index: tuple[int, ...]) -> str:
    return ".".join(map(str, index)) if index else "0"


def _parse_key(key: str | tuple[int, ...], ndim: int) -> tuple[int, ...] | None:
    if isinstance(key, tuple):
        return (
            key if len(key) == ndim and all(isinstance(i, int | np.integer) for i in key) else None
        )
    if not isinstance(key, str):
        return None
    if ndim == 0:
        return () if key == "0" else None
    parts = key.split(".")
    if len(parts) != ndim or not all(_canonical_index(p) for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _canonical_index(part: str) -> bool:
    # the same form the constructor accepts: "0", or digits without a leading zero
    return part.isascii() and part.isdigit() and (part == "0" or part[0] != "0")


def _frozen(a: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray would turn a 0-d grid into a 1-d one
    a = np.require(a, requirements="C")
    if a.flags.writeable and a.base is not None:
        a = a.copy()
    a.flags.writeable = False
    return a


def _signed_for(n_paths: int) -> type[np.signedinteger[Any]]:
    for dt in (np.int8, np.int16, np.int32):
        if n_paths <= np.iinfo(dt).max:
            return dt
    return np.int64


def _narrow_signed(ids: np.ndarray, n_paths: int) -> np.ndarray:
    return ids.astype(_signed_for(n_paths), copy=False)


def _narrow_unsigned(values: np.ndarray) -> np.ndarray:
    top = int(values.max()) if values.size else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return values.astype(dt, copy=False)
    return values.astype(np.uint64, copy=False)


def _as_index_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object and arr.size:
        if not all(type(v) is int for v in arr.reshape(-1).tolist()):
            raise ManifestError(f"{name} must be integers", field=name[:-1])
        try:
            arr = arr.astype(np.int64)
        except OverflowError as e:
            raise ManifestError(f"{name} must be below 2**63", field=name[:-1]) from e
    elif arr.size == 0 and arr.dtype.kind not in "iu":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ManifestError(f"{name} must be integers, got dtype {arr.dtype}", field=name[:-1])
    if arr.size:
        if arr.dtype.kind == "i" and int(arr.min()) < 0:
            bad = np.unravel_index(int(np.argmin(arr)), arr.shape)
            raise ManifestError(
                f"{name}[{_key(tuple(int(i) for i in bad))}] is negative: {int(arr.min())}",
                key=_key(tuple(int(i) for i in bad)),
                field=name[:-1],
            )
        if int(arr.max()) > MAX_OFFSET:
            raise ManifestError(f"{name} must be below 2**63", field=name[:-1])
    return arr.astype(np.uint64, copy=False)


def _check_sum(offs: np.ndarray, lens: np.ndarray, ids: np.ndarray) -> None:
    # both are < 2**63, so the uint64 sum cannot wrap
    over = (offs + lens > MAX_OFFSET) & (ids >= 0)
    if over.any():
        bad = _key(tuple(int(i) for i in np.unravel_index(int(np.argmax(over)), over.shape)))
        raise ManifestError(
            f"chunk {bad!r}: offset + length exceeds 2**63-1", key=bad, field="length"
        )


def _factorize_paths(paths: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct non-empty paths (in order of first appearance) and per-element ids (-1 for "").

    A grid of references usually points into a few files, either in runs (a file's chunks
    side by side: one comparison of the array with itself finds the runs, and a dict names
    their heads) or interleaved (chunk i in file i % k: "peeling" compares the array with
    its first unassigned path, assigns that id and repeats, one vectorised comparison per
    distinct path).  No sort, and no per-element Python work unless there are both many
    runs and many distinct paths.
    """
    if paths.dtype.kind not in "UTO":
        raise ManifestError(f"paths must be strings, got dtype {paths.dtype}", field="path")
    flat = paths.reshape(-1)
    if flat.dtype.kind == "O" and not all(
        issubclass(t, str) for t in set(map(type, flat.tolist()))
    ):
        raise ManifestError("paths must be strings", field="path")
    n = flat.size
    if n == 0:
        return [], np.zeros(paths.shape, dtype=np.int8)
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    if len(starts) > max(_FEW_RUNS, n // 16):
        # many runs: worth peeling if a sample shows few distinct paths (peeling gives up
        # by itself if the sample misled it)
        sample = flat[:: max(1, n // _PEEL_SAMPLE)].tolist()
        if len(set(sample)) <= _PEEL_MAX_PATHS // 2:
            found = _peel_paths(flat)
            if found is not None:
                table, ids = found
                return table, ids.reshape(paths.shape)
    table, ids = _paths_by_runs(flat, starts)
    return table, ids.reshape(paths.shape)


#: Up to this many runs of equal paths are always named through their heads.
_FEW_RUNS = 4096
#: Elements sampled to decide whether `_peel_paths` is worth trying.
_PEEL_SAMPLE = 64
#: Peeling gives up after this many distinct paths (each costs one pass over the array).
_PEEL_MAX_PATHS = 16
_UNASSIGNED = -2


def _peel_paths(flat: np.ndarray) -> tuple[list[str], np.ndarray] | None:
    """`_factorize_paths` for arrays of a few distinct paths; None if there are more than
    `_PEEL_MAX_PATHS`."""
    ids = np.full(flat.size, _UNASSIGNED, dtype=np.int8)
    table: list[str] = []
    start = 0
    while True:
        value = flat[start]
        # every element before `start` is assigned, and none of them equals `value`
        if not isinstance(value, str):
            raise ManifestError(f"paths must be strings, got {value!r}", field="path")
        if value:
            if len(table) == _PEEL_MAX_PATHS:
                return None
            code = len(table)
            table.append(str(value))
        else:
            code = -1
        rest = ids[start:]
        rest[flat[start:] == value] = code
        unassigned = rest == _UNASSIGNED
        step = int(np.argmax(unassigned))
        if not unassigned[step]:
            return table, ids
        start += step


def _paths_by_runs(flat: np.ndarray, starts: np.ndarray) -> tuple[list[str], np.ndarray]:
    """`_factorize_paths` through the heads of the runs of equal paths beginning at
    ``starts``, and a dict."""
    table: dict[str, int] = {}
    head_ids = []
    for head in flat[starts].tolist():
        if not isinstance(head, str):
            raise ManifestError(f"paths must be strings, got {head!r}", field="path")
        head_ids.append(table.setdefault(str(head), len(table)) if head else -1)
    run_ids = np.array(head_ids, dtype=np.int64)
    return list(table), np.repeat(run_ids, np.diff(np.append(starts, flat.size)))


def _merge_tables(tables: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """One table for several, and for each input an array mapping its ids to the merged ones."""
    merged: dict[str, int] = {}
    remaps = [
        np.array([merged.setdefault(p, len(merged)) for p in t], dtype=np.int64) for t in tables
    ]
    return tuple(merged), remaps


def _remap_ids(ids: np.ndarray, remap: np.ndarray) -> np.ndarray:
    # a trailing -1 makes index -1 (missing) map to itself
    return np.append(remap, -1)[ids]


def _combine(manifests: Sequence[ChunkManifest], axis: int, *, stack: bool) -> ChunkManifest:
    what = "stack" if stack else "concat"
    manifests = list(manifests)
    if not manifests:
        raise ManifestError(f"{what} needs at least one manifest")
    for m in manifests:
        if not isinstance(m, ChunkManifest):
            raise ManifestError(f"{what} takes ChunkManifests, got {type(m).__name__}")
    ndim = manifests[0].ndim_chunk_grid
    out_ndim = ndim + 1 if stack else ndim
    if not -out_ndim <= axis < out_ndim or (not stack and ndim == 0):
        raise ManifestError(f"{what}: axis {axis} is out of range for {ndim}-d chunk grids")
    axis %= out_ndim
    first = manifests[0].shape_chunk_grid
    for i, m in enumerate(manifests[1:], start=1):
        shape = m.shape_chunk_grid
        same = (
            shape == first
            if stack
            else (
                len(shape) == ndim
                and all(
                    a == b for d, (a, b) in enumerate(zip(shape, first, strict=True)) if d != axis
                )
            )
        )
        if not same:
            raise ManifestError(
                f"{what}: manifest {i} has chunk grid {shape}, "
                f"which does not fit manifest 0's {first}" + ("" if stack else f" off axis {axis}")
            )
    table, remaps = _merge_tables([m.path_table for m in manifests])
    ids = [_remap_ids(m.path_ids, r) for m, r in zip(manifests, remaps, strict=True)]
    join = np.stack if stack else np.concatenate
    return ChunkManifest._new(
        table,
        join(ids, axis=axis),
        join([m.offsets for m in manifests], axis=axis),
        join([m.lengths for m in manifests], axis=axis),
    )
