"""Split manifests: one array's manifest as one file per region of its chunk grid.

A single manifest.json must be parsed whole before the first chunk can be read.  A *split*
manifest (spec section "Split manifests", extension version 1) declares::

    "configuration": {"manifest": "./manifest/", "split": {"version": 1, "region_shape": [r0, r1]}}

and stores, in the directory ``manifest/``:

- ``index.json``: ``{"regions": ["0.0", "0.1", ...]}``, the regions that have a file;
- ``<i>.<j>.json`` for each listed region ``(i, j)``: a manifest.json in exactly the version 1
  form, holding the entries of the chunks whose grid index ``// region_shape`` is ``(i, j)``,
  under their ordinary (global) keys.  A region not listed has no stored chunk.

So a reader needs ``index.json`` and one region file for its first chunk.  This module holds
the pure parts: validation of the configuration, index and region files, region geometry,
encoding a `ChunkManifest` into files and assembling one from decoded regions.  I/O is the
caller's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from zarr_manifest._json_codec import DecodedManifest, decode_manifest, encode_manifest
from zarr_manifest.errors import ManifestFormatError
from zarr_manifest.format._members import refuse_unknown_members
from zarr_manifest.manifest import MAX_GRID_CELLS, ChunkManifest

__all__ = [
    "DEFAULT_SPLIT_ABOVE",
    "INDEX_FILE",
    "MANIFEST_DIR",
    "REGION_CELLS",
    "SPLIT_MEMBER",
    "SPLIT_VERSION",
    "RegionGrid",
    "assemble_manifest",
    "auto_region_shape",
    "decode_index",
    "decode_region",
    "encode_index",
    "iter_split_manifest",
    "parse_split",
    "split_configuration",
    "split_manifest",
]

#: the configuration member that declares a split manifest (must be understood)
SPLIT_MEMBER = "split"
#: the version of the split extension this module reads and writes
SPLIT_VERSION = 1
#: the directory, relative to the array directory, that writers use
MANIFEST_DIR = "manifest"
#: the index of present regions, inside the manifest directory
INDEX_FILE = "index.json"
#: arrays with more references than this are written split by default
DEFAULT_SPLIT_ABOVE = 100_000
#: grid cells per region aimed at by `auto_region_shape`: a region file then parses in a
#: few milliseconds, so opening an array and reading one chunk stays well under 50 ms
REGION_CELLS = 32_768

_KEY = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_SPLIT_MEMBERS = {"version", "region_shape"}


# ---- configuration --------------------------------------------------------------------------


def split_configuration(region_shape: Sequence[int]) -> dict[str, Any]:
    """The ``split`` configuration member for ``region_shape``."""
    return {"version": SPLIT_VERSION, "region_shape": [int(r) for r in region_shape]}


def parse_split(value: Any, *, ndim: int, location: str) -> tuple[int, ...]:
    """Validate a ``split`` configuration member; return its region shape.

    Raises
    ------
    ManifestFormatError
        Not an object, an unknown version, a ``region_shape`` that is not ``ndim`` positive
        integers, or an unknown member not marked ``"must_understand": false``.
    """
    if not isinstance(value, dict):
        raise ManifestFormatError(
            f"{location}: configuration member 'split' must be an object, got {value!r}",
            location=location,
            field="split",
        )
    refuse_unknown_members(
        value, _SPLIT_MEMBERS, what="member {member} of 'split'", location=location, field="split"
    )
    version = value.get("version")
    if type(version) is not int or version != SPLIT_VERSION:
        raise ManifestFormatError(
            f"{location}: split manifest version {version!r} is not supported "
            f"(this reader knows version {SPLIT_VERSION})",
            location=location,
            field="split",
        )
    shape = value.get("region_shape")
    if (
        not isinstance(shape, list)
        or len(shape) != ndim
        or not all(type(r) is int and r > 0 for r in shape)
    ):
        raise ManifestFormatError(
            f"{location}: split region_shape must be a list of {ndim} positive integers, "
            f"got {shape!r}",
            location=location,
            field="split",
        )
    return tuple(shape)


def auto_region_shape(grid_shape: Sequence[int], cells: int = REGION_CELLS) -> tuple[int, ...]:
    """A region shape of at most ``cells`` grid cells (when ``cells >= 1``).

    The largest side is halved (rounding up) until the region is small enough, so regions
    stay roughly square in chunk units and a region of a short axis spans all of it.
    """
    region = [max(int(g), 1) for g in grid_shape]
    cells = max(int(cells), 1)
    while math.prod(region) > cells:
        d = max(range(len(region)), key=lambda i: region[i])
        region[d] = -(-region[d] // 2)
    return tuple(region)


# ---- region geometry ------------------------------------------------------------------------


class RegionGrid:
    """The regions of a chunk grid: grid index ``// region_shape`` names a chunk's region.

    Parameters
    ----------
    grid_shape
        Chunks along each dimension.
    region_shape
        Chunks per region along each dimension (positive).
    """

    __slots__ = ("grid_shape", "ndim", "region_shape", "shape")

    def __init__(self, grid_shape: Sequence[int], region_shape: Sequence[int]):
        self.grid_shape = tuple(int(g) for g in grid_shape)
        self.region_shape = tuple(int(r) for r in region_shape)
        if len(self.grid_shape) != len(self.region_shape):
            raise ValueError(
                f"region_shape {self.region_shape} must have one entry per grid dimension "
                f"of {self.grid_shape}"
            )
        if any(r < 1 for r in self.region_shape):
            raise ValueError(f"region_shape must be positive, got {self.region_shape}")
        self.ndim = len(self.grid_shape)
        #: regions along each dimension
        self.shape = tuple(
            -(-g // r) for g, r in zip(self.grid_shape, self.region_shape, strict=True)
        )

    def region_of(self, index: Sequence[int]) -> tuple[int, ...]:
        """The region holding chunk ``index``."""
        return tuple(i // r for i, r in zip(index, self.region_shape, strict=True))

    def origin(self, region: Sequence[int]) -> tuple[int, ...]:
        """The grid index of a region's first chunk."""
        return tuple(i * r for i, r in zip(region, self.region_shape, strict=True))

    def extent(self, region: Sequence[int]) -> tuple[int, ...]:
        """A region's shape, clipped to the grid (boundary regions are smaller)."""
        return tuple(
            min(r, g - i * r)
            for i, r, g in zip(region, self.region_shape, self.grid_shape, strict=True)
        )

    def slices(self, region: Sequence[int]) -> tuple[slice, ...]:
        """The part of the grid a region covers."""
        return tuple(
            slice(o, o + e) for o, e in zip(self.origin(region), self.extent(region), strict=True)
        )

    def regions(self) -> Iterator[tuple[int, ...]]:
        """Every region, in row-major order."""
        return np.ndindex(*self.shape)

    @staticmethod
    def key(region: Sequence[int]) -> str:
        """A region's key: its indices joined by "." ("0" for a 0-d grid)."""
        return ".".join(map(str, region)) if len(region) else "0"

    def file_name(self, region: Sequence[int]) -> str:
        """A region's file name inside the manifest directory."""
        return f"{self.key(region)}.json"


# ---- index.json -----------------------------------------------------------------------------


def encode_index(regions: Sequence[Sequence[int]]) -> bytes:
    """``index.json`` listing ``regions`` (give them in row-major order)."""
    return orjson.dumps({"regions": [RegionGrid.key(r) for r in regions]})


def decode_index(data: bytes, grid: RegionGrid, *, location: str) -> list[tuple[int, ...]]:
    """Parse and validate ``index.json``: the regions that have a file.

    Raises
    ------
    ManifestFormatError
        Not JSON, not ``{"regions": [...]}``, a key that is not canonical, has the wrong
        number of indices, lies outside the region grid or is listed twice.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ManifestFormatError(f"{location} is not valid JSON: {e}", location=location) from e
    if not isinstance(doc, dict) or set(doc) != {"regions"} or not isinstance(doc["regions"], list):
        raise ManifestFormatError(
            f'{location} must be an object with exactly the member "regions", a list of '
            "region keys",
            location=location,
        )
    regions: list[tuple[int, ...]] = []
    for key in doc["regions"]:
        region = _parse_region_key(key, grid)
        if region is None:
            raise ManifestFormatError(
                f"{location}: {key!r} is not a region key of the region grid {grid.shape}",
                location=location,
                key=key if isinstance(key, str) else None,
            )
        regions.append(region)
    if len(set(regions)) != len(regions):
        raise ManifestFormatError(f"{location} lists a region twice", location=location)
    return regions


def _parse_region_key(key: Any, grid: RegionGrid) -> tuple[int, ...] | None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return None
    if grid.ndim == 0:
        return () if key == "0" else None
    region = tuple(int(p) for p in key.split("."))
    if len(region) != grid.ndim or any(i >= n for i, n in zip(region, grid.shape, strict=True)):
        return None
    return region


# ---- region files ---------------------------------------------------------------------------


def decode_region(
    data: bytes, grid: RegionGrid, region: Sequence[int], *, location: str
) -> DecodedManifest:
    """Decode one region file, checking every key lies in ``region`` (and the grid).

    Raises
    ------
    ManifestFormatError
        The file is not a valid manifest.json, or holds a key outside its region or the grid;
        the message names the file and key.
    """
    cells = math.prod(grid.extent(region))
    if cells > MAX_GRID_CELLS:
        # a region is held dense once loaded: the same guard as for a whole manifest
        raise ManifestFormatError(
            f"{location}: region {grid.key(region)} has {cells} grid cells, more than the "
            f"{MAX_GRID_CELLS} a manifest may hold in memory",
            location=location,
        )
    decoded = decode_manifest(data, ndim=grid.ndim, location=location)
    if decoded.indices.shape[0] and grid.ndim:
        lo = np.array(grid.origin(region), dtype=np.int64)
        hi = lo + np.array(grid.extent(region), dtype=np.int64)
        outside = ((decoded.indices < lo) | (decoded.indices >= hi)).any(axis=1)
        if outside.any():
            bad = ".".join(map(str, decoded.indices[int(np.argmax(outside))].tolist()))
            raise ManifestFormatError(
                f"{location}: chunk key {bad!r} is outside region {grid.key(region)} "
                f"(chunks {lo.tolist()} to {(hi - 1).tolist()} of the grid {grid.grid_shape})",
                location=location,
                key=bad,
            )
    return decoded


def region_columns(
    decoded: DecodedManifest, grid: RegionGrid, region: Sequence[int], remap: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decoded region as region-shaped (path id, offset, length) arrays.

    ``remap`` maps the region file's path ids to the caller's (a node-wide table); path ids
    are -1 where a chunk is missing.  Each column has the narrowest integer type that holds
    its values (regions stay loaded: a region of 32k chunks takes about 400 kB).
    """
    extent = grid.extent(region)
    size = math.prod(extent)
    ids = np.full(size, -1, dtype=np.int32 if remap.max(initial=0) < 2**31 else np.int64)
    offs = np.zeros(size, dtype=_unsigned_for(decoded.offsets))
    lens = np.zeros(size, dtype=_unsigned_for(decoded.lengths))
    if decoded.indices.shape[0]:
        if grid.ndim:
            local = decoded.indices - np.array(grid.origin(region), dtype=np.int64)
            flat = np.ravel_multi_index(tuple(local.T), extent)
        else:
            flat = np.zeros(decoded.indices.shape[0], dtype=np.intp)
        ids[flat] = remap[decoded.path_ids]
        offs[flat] = decoded.offsets
        lens[flat] = decoded.lengths
    return ids.reshape(extent), offs.reshape(extent), lens.reshape(extent)


def _unsigned_for(values: np.ndarray) -> type[np.unsignedinteger[Any]]:
    top = int(values.max()) if values.size else 0
    return np.uint32 if top < 2**32 else np.uint64


def assemble_manifest(
    grid: RegionGrid, parts: Sequence[DecodedManifest], *, location: str
) -> ChunkManifest:
    """The whole `ChunkManifest` of decoded (and region-checked) region files.

    Raises
    ------
    ManifestFormatError
        The grid is larger than a manifest may hold in memory.
    """
    size = math.prod(grid.grid_shape)
    if size > MAX_GRID_CELLS:
        raise ManifestFormatError(
            f"{location}: chunk grid {grid.grid_shape} has {size} cells, more than the "
            f"{MAX_GRID_CELLS} a manifest may hold in memory",
            location=location,
        )
    table: dict[str, int] = {}
    ids = np.full(size, -1, dtype=np.int64)
    offs = np.zeros(size, dtype=np.uint64)
    lens = np.zeros(size, dtype=np.uint64)
    for part in parts:
        if not part.indices.shape[0]:
            continue
        remap = np.array([table.setdefault(p, len(table)) for p in part.path_table], np.int64)
        if grid.ndim:
            flat = np.ravel_multi_index(tuple(part.indices.T), grid.grid_shape)
        else:
            flat = np.zeros(part.indices.shape[0], dtype=np.intp)
        ids[flat] = remap[part.path_ids]
        offs[flat] = part.offsets
        lens[flat] = part.lengths
    shape = grid.grid_shape
    # The columns were validated entry by entry by decode_manifest, and region files cannot
    # overlap (decode_region confines each to its region): wrap them as they are.
    return ChunkManifest._new(
        tuple(table), ids.reshape(shape), offs.reshape(shape), lens.reshape(shape)
    )


def split_manifest(manifest: ChunkManifest, region_shape: Sequence[int]) -> dict[str, bytes]:
    """The files of a split manifest: ``index.json`` and one file per non-empty region.

    Returns
    -------
    dict
        File name inside the manifest directory -> bytes; region files in row-major order.
    """
    return dict(iter_split_manifest(manifest, region_shape))


def iter_split_manifest(
    manifest: ChunkManifest, region_shape: Sequence[int]
) -> Iterator[tuple[str, bytes]]:
    """`split_manifest` one file at a time, ``index.json`` last: a writer can store each
    region file as it is made, holding one region's bytes at a time instead of all."""
    grid = RegionGrid(manifest.shape_chunk_grid, region_shape)
    table = manifest.path_table
    ids = manifest.path_ids
    offs = manifest.offsets
    lens = manifest.lengths
    present: list[tuple[int, ...]] = []
    if grid.ndim == 0:
        if int(ids[()]) >= 0:
            yield grid.file_name(()), encode_manifest((), table, ids, offs, lens)
            present.append(())
    else:
        # Keys in a region file are global, and the encoder writes the keys of the grid it is
        # given: give it the rows of the grid up to the region's last, with every chunk outside
        # the region masked.  The rows prefix is a view, so only ids need a (reused) buffer.
        buf = np.full(grid.grid_shape, -1, dtype=ids.dtype)
        for region in grid.regions():
            where = grid.slices(region)
            block = ids[where]
            if not (block >= 0).any():
                continue
            buf[where] = block
            stop = where[0].stop
            data = encode_manifest(
                (stop, *grid.grid_shape[1:]), table, buf[:stop], offs[:stop], lens[:stop]
            )
            buf[where] = -1
            present.append(region)
            yield grid.file_name(region), data
    yield INDEX_FILE, encode_index(present)
