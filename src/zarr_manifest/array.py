"""`ManifestArray` (Zarr v3 metadata + a chunk manifest) and `InlineArray` (metadata + data).

The metadata is zarr-python's own `ArrayV3Metadata`, as zarr sees the array: without the
chunk-manifest storage transformer, which belongs to the on-disk form only.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.metadata.v3 import (
    ArrayV3Metadata,
    RectilinearChunkGridMetadata,
    RegularChunkGridMetadata,
)

from zarr_manifest import array_api
from zarr_manifest.errors import CombineError, MetadataError
from zarr_manifest.fingerprint import Fingerprint, merge_fingerprints
from zarr_manifest.manifest import ChunkManifest

__all__ = [
    "MAX_CHUNK_EDGES",
    "InlineArray",
    "ManifestArray",
    "check_chunk_edges",
    "chunk_grid_shape",
    "parse_array_metadata",
]

#: The most chunk edges a rectilinear chunk grid may spell out, all dimensions together,
#: once its run-length pairs ``[size, count]`` are expanded.  zarr expands them into Python
#: lists: ``[[1, 100000000]]`` (a 600-byte document) took 1.7 GB and 29 s, and 10**9 a
#: MemoryError; 2**20 edges take zarr about 1.5 s and 25 MB.  Raise it with the environment
#: variable ZARR_MANIFEST_MAX_CHUNK_EDGES.
MAX_CHUNK_EDGES = int(os.environ.get("ZARR_MANIFEST_MAX_CHUNK_EDGES", 2**20))


def check_chunk_edges(doc: Mapping[str, Any], *, where: str = "array metadata") -> None:
    """Refuse a zarr.json document whose rectilinear chunk grid expands to more than
    `MAX_CHUNK_EDGES` edges, counting its run-length pairs without expanding them.

    Call it before handing the document to zarr's parser.  Anything malformed is left for
    that parser to report.

    Raises
    ------
    MetadataError
        Too many edges; the message names ``where`` (the array) and the count.
    """
    grid = doc.get("chunk_grid")
    if not isinstance(grid, Mapping) or grid.get("name") != "rectilinear":
        return
    config = grid.get("configuration")
    shapes = config.get("chunk_shapes") if isinstance(config, Mapping) else None
    if not isinstance(shapes, list):
        return
    total = 0
    for spec in shapes:
        if not isinstance(spec, list):
            continue  # a bare int: a regular step, never expanded
        for item in spec:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], int):
                total += max(item[1], 0)
            else:
                total += 1
    if total > MAX_CHUNK_EDGES:
        raise MetadataError(
            f"{where}: the rectilinear chunk grid spells out {total} chunk edges once its "
            f"run-length pairs are expanded, more than the {MAX_CHUNK_EDGES} allowed "
            "(ZARR_MANIFEST_MAX_CHUNK_EDGES raises the limit)"
        )


def parse_array_metadata(metadata: ArrayV3Metadata | Mapping[str, Any]) -> ArrayV3Metadata:
    """Zarr v3 array metadata from an `ArrayV3Metadata` or a zarr.json dict.

    Raises
    ------
    MetadataError
        The document is not valid Zarr v3 array metadata, declares storage transformers,
        or has a rectilinear chunk grid of more than `MAX_CHUNK_EDGES` edges.
    """
    if isinstance(metadata, ArrayV3Metadata):
        meta = metadata
    elif isinstance(metadata, Mapping):
        # a deep copy: codecs may decode their configuration in place (imagecodecs-zarr's
        # JPEG turns its base64 "tables" into bytes); the caller's mapping stays JSON
        doc = copy.deepcopy({"zarr_format": 3, "node_type": "array", **metadata})
        check_chunk_edges(doc)
        try:
            # the rectilinear-grid gate is zarr's to apply when it opens an array
            with zarr.config.set({"array.rectilinear_chunks": True}):
                meta = ArrayV3Metadata.from_dict(doc)
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            raise MetadataError(f"invalid Zarr v3 array metadata: {e}") from e
    else:
        raise MetadataError(f"metadata must be ArrayV3Metadata or a dict, got {type(metadata)}")
    if meta.storage_transformers:
        raise MetadataError(
            "array metadata in the model must not declare storage transformers "
            f"(got {list(meta.storage_transformers)}); the manifest carries the references"
        )
    return meta


def chunk_grid_shape(metadata: ArrayV3Metadata) -> tuple[int, ...]:
    """The number of chunks along each dimension of an array's (outer) chunk grid."""
    grid = metadata.chunk_grid
    if isinstance(grid, RegularChunkGridMetadata):
        return tuple(
            math.ceil(s / c) if c else 0
            for s, c in zip(metadata.shape, grid.chunk_shape, strict=True)
        )
    if isinstance(grid, RectilinearChunkGridMetadata):
        return tuple(
            _rectilinear_count(edges, s)
            for edges, s in zip(grid.chunk_shapes, metadata.shape, strict=True)
        )
    raise MetadataError(f"unsupported chunk grid {grid!r}")


def _rectilinear_count(edges: Any, extent: int) -> int:
    if isinstance(edges, int):
        return math.ceil(extent / edges) if edges else 0
    return len(edges)


class ManifestArray:
    """A virtual Zarr v3 array: its metadata and the manifest of where its chunks live.

    Parameters
    ----------
    metadata
        Zarr v3 array metadata (`ArrayV3Metadata` or the zarr.json dict) without storage
        transformers.
    manifest
        The chunk references; its grid must equal the metadata's chunk grid.
    fingerprints
        Optional: what each source file looked like when the manifest was made (size, ETag,
        last-modified), keyed by path as in the manifest's path table, so readers can tell
        when a file has changed under its references.  Paths without one are not checked.

    Raises
    ------
    MetadataError
        Invalid metadata, a manifest grid that does not match the chunk grid, or a
        fingerprint for a path the manifest does not reference.
    """

    __slots__ = ("_fingerprints", "_manifest", "_metadata")

    def __init__(
        self,
        metadata: ArrayV3Metadata | Mapping[str, Any],
        manifest: ChunkManifest,
        *,
        fingerprints: Mapping[str, Fingerprint] | None = None,
    ):
        meta = parse_array_metadata(metadata)
        if not isinstance(manifest, ChunkManifest):
            raise MetadataError(f"manifest must be a ChunkManifest, got {type(manifest)}")
        grid = chunk_grid_shape(meta)
        if manifest.shape_chunk_grid != grid:
            raise MetadataError(
                f"the manifest's chunk grid {manifest.shape_chunk_grid} does not match the "
                f"array's chunk grid {grid} (shape {meta.shape})"
            )
        self._metadata = meta
        self._manifest = manifest
        self._fingerprints = _check_fingerprints(fingerprints, manifest)

    @property
    def metadata(self) -> ArrayV3Metadata:
        """The Zarr v3 array metadata, as zarr sees it."""
        return self._metadata

    @property
    def manifest(self) -> ChunkManifest:
        """Where the chunks live."""
        return self._manifest

    @property
    def fingerprints(self) -> dict[str, Fingerprint]:
        """The recorded source fingerprints by manifest path (a copy; empty if none)."""
        return dict(self._fingerprints)

    def with_fingerprints(self, fingerprints: Mapping[str, Fingerprint] | None) -> ManifestArray:
        """A copy with these source fingerprints instead (None: without any)."""
        return ManifestArray(self._metadata, self._manifest, fingerprints=fingerprints)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._metadata.shape

    @property
    def ndim(self) -> int:
        return len(self._metadata.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy data type."""
        return self._metadata.data_type.to_native_dtype()

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape of a regular chunk grid."""
        return self._metadata.chunks

    @property
    def fill_value(self) -> Any:
        return self._metadata.fill_value

    @property
    def codecs(self) -> tuple[Any, ...]:
        return self._metadata.codecs

    @property
    def dimension_names(self) -> tuple[str | None, ...] | None:
        return self._metadata.dimension_names

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self._metadata.attributes)

    def replace(self, **changes: Any) -> ManifestArray:
        """A copy with metadata fields replaced (e.g. ``attributes=``, ``dimension_names=``)."""
        doc = {**self._metadata.to_dict(), **changes}
        return ManifestArray(doc, self._manifest, fingerprints=self._fingerprints)

    def rename_paths(self, new: str | Callable[[str], str]) -> ManifestArray:
        """A copy whose manifest paths are renamed (see `ChunkManifest.rename_paths`).

        Fingerprints follow their paths.  A path that changes keeps only its recorded size:
        the size belongs to the content, which moved with the file, while the ETag and the
        modification time belong to the stored object at the old place (a copy gets new
        ones, and would otherwise always look stale).

        Raises
        ------
        MetadataError
            Two paths with different fingerprints are renamed to one.
        """
        manifest = self._manifest.rename_paths(new)
        fingerprints: dict[str, Fingerprint] = {}
        for path, fp in self._fingerprints.items():
            to = new if isinstance(new, str) else new(path)
            if to != path:
                fp = Fingerprint(size=fp.size)
            if fingerprints.setdefault(to, fp) != fp:
                raise MetadataError(
                    f"rename_paths: sources with different fingerprints are renamed to {to!r}"
                )
        return ManifestArray(self._metadata, manifest, fingerprints=fingerprints)

    def __eq__(self, other: object) -> bool:
        """Same metadata and references.  Fingerprints record when the references were
        taken, not what they are, so they are not compared (compare `fingerprints`)."""
        if not isinstance(other, ManifestArray):
            return NotImplemented
        return (
            _metadata_equal(self._metadata, other._metadata) and self._manifest == other._manifest
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ManifestArray<shape={self.shape}, dtype={self._metadata.data_type}, "
            f"chunks={chunk_grid_shape(self._metadata)} grid, references={len(self._manifest)}>"
        )

    # ---- a duck array for xarray (NEP 18; see array_api) ----------------------------------

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __array_function__(
        self, func: Any, types: Any, args: Any, kwargs: Mapping[str, Any]
    ) -> Any:

        impl = array_api.HANDLED_FUNCTIONS.get(func)
        if impl is None:
            raise array_api.needs_data(f"numpy.{getattr(func, '__name__', func)}")
        return impl(*args, **kwargs)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:

        raise array_api.needs_data(f"numpy.{getattr(ufunc, '__name__', ufunc)}")

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:

        raise array_api.needs_data("converting to a numpy array")

    def __getitem__(self, key: Any) -> ManifestArray:
        """Only the whole array, with new axes if asked (``a[...]``, ``a[:, None]``): a
        selection needs the values."""

        parts = key if isinstance(key, tuple) else (key,)
        whole = all(
            p is None or p is Ellipsis or (isinstance(p, slice) and p == slice(None)) for p in parts
        )
        axes = sum(p is not None and p is not Ellipsis for p in parts)
        if not whole or parts.count(Ellipsis) > 1 or axes > self.ndim:
            raise array_api.needs_data(f"indexing with {key!r}")
        if Ellipsis not in parts:
            parts = (*parts, Ellipsis)
        at = parts.index(Ellipsis)
        parts = (*parts[:at], *[slice(None)] * (self.ndim - axes), *parts[at + 1 :])
        new = [i for i, p in enumerate(parts) if p is None]
        return array_api.expand_dims(self, new) if new else self

    def astype(self, dtype: Any, *, copy: bool = True) -> ManifestArray:
        """Only to the array's own dtype (a no-op xarray asks for)."""

        if np.dtype(dtype) != self.dtype:
            raise array_api.needs_data(f"casting from {self.dtype} to {np.dtype(dtype)}")
        return self

    @property
    def T(self) -> ManifestArray:
        return self.transpose()

    def transpose(self, *axes: Any) -> ManifestArray:
        """Reorder axes, where that moves no element inside a chunk (see array_api)."""

        order = axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else axes
        return array_api.transpose(self, order or None)

    def _unsupported(self, *args: Any, **kwargs: Any) -> Any:

        raise array_api.needs_data("arithmetic")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _unsupported
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __pow__ = _unsupported
    __mod__ = __neg__ = __abs__ = __lt__ = __le__ = __gt__ = __ge__ = _unsupported
    __and__ = __or__ = __xor__ = __invert__ = _unsupported

    # ---- combining ----------------------------------------------------------------------

    @staticmethod
    def concat(arrays: Sequence[ManifestArray], axis: int = 0) -> ManifestArray:
        """Join arrays along an existing axis.

        The result keeps a regular chunk grid wherever it can.  Where the inputs do not fit
        one (a length along ``axis`` that is not a multiple of the chunk size, e.g. monthly
        files of 28-31 daily steps), it gets zarr's rectilinear chunk grid, which zarr 3.4
        reads with ``zarr.config.set({"array.rectilinear_chunks": True})``.  Every chunk
        must then decode to its declared size: an input's padded edge chunk that ends up
        inside the sequence is trimmed when the data is uncompressed and ``axis`` is the
        outermost, and refused otherwise (zarr-specs #394).

        Raises
        ------
        CombineError
            The inputs differ in dtype, codecs, chunking, fill value, dimension names or
            shape off the axis, or a padded edge chunk cannot be trimmed; the message says
            which input and why.
        """
        arrays = _check_combinable(arrays, "concat")
        first = arrays[0]
        ndim = first.ndim
        if ndim == 0 or not -ndim <= axis < ndim:
            raise CombineError(f"concat: axis {axis} is out of range for {ndim}-d arrays")
        axis %= ndim
        for i, a in enumerate(arrays[1:], start=1):
            off = [d for d in range(ndim) if a.shape[d] != first.shape[d] and d != axis]
            if a.ndim != ndim or off:
                raise CombineError(
                    f"concat: array {i} has shape {a.shape}, array 0 has {first.shape}; "
                    f"they must agree off axis {axis}"
                )
            for d in range(ndim):
                if d != axis and _edges(a.metadata, d) != _edges(first.metadata, d):
                    raise CombineError(
                        f"concat: array {i} is chunked differently from array 0 along axis {d}"
                    )
        edges: list[int] = []
        manifests = []
        for i, a in enumerate(arrays):
            own = _edges(a.metadata, axis)
            manifest = a.manifest
            data_last = a.shape[axis] - sum(own[:-1])
            if i < len(arrays) - 1 and own and data_last < own[-1]:
                manifest = _trim_last_chunks(a, axis, data_last, i)
                own = [*own[:-1], data_last]
            edges.extend(own)
            manifests.append(manifest)
        shape = list(first.shape)
        shape[axis] = sum(a.shape[axis] for a in arrays)
        grid = _grid_with_axis(first.metadata, axis, edges, shape[axis])
        meta = dataclasses.replace(first.metadata, shape=tuple(shape), chunk_grid=grid)
        fingerprints = merge_fingerprints(a._fingerprints for a in arrays)
        return ManifestArray(
            meta, ChunkManifest.concat(manifests, axis=axis), fingerprints=fingerprints
        )

    @staticmethod
    def stack(
        arrays: Sequence[ManifestArray], axis: int = 0, *, dimension_name: str | None = None
    ) -> ManifestArray:
        """Join arrays of the same shape along a new axis (chunk length 1 along it).

        Raises
        ------
        CombineError
            As for `concat`, or the shapes differ.
        """
        arrays = _check_combinable(arrays, "stack")
        first = arrays[0]
        for i, a in enumerate(arrays[1:], start=1):
            if a.shape != first.shape:
                raise CombineError(
                    f"stack: array {i} has shape {a.shape}, array 0 has {first.shape}"
                )
        ndim = first.ndim + 1
        if not -ndim <= axis < ndim:
            raise CombineError(f"stack: axis {axis} is out of range for {ndim - 1}-d arrays")
        axis %= ndim
        shape = list(first.shape)
        shape.insert(axis, len(arrays))
        chunks = list(first.chunks)
        chunks.insert(axis, 1)
        names = first.dimension_names
        if names is not None:
            names = (*names[:axis], dimension_name, *names[axis:])
        manifest = ChunkManifest.stack([a.manifest for a in arrays], axis=axis)
        doc = first.metadata.to_dict()
        doc.update(
            shape=shape,
            chunk_grid={"name": "regular", "configuration": {"chunk_shape": chunks}},
            dimension_names=names,
        )
        fingerprints = merge_fingerprints(a._fingerprints for a in arrays)
        return ManifestArray(doc, manifest, fingerprints=fingerprints)


def _check_fingerprints(
    fingerprints: Mapping[str, Fingerprint] | None, manifest: ChunkManifest
) -> dict[str, Fingerprint]:
    if not fingerprints:
        return {}
    if not isinstance(fingerprints, Mapping):
        raise MetadataError(f"fingerprints must be a mapping, got {type(fingerprints)}")
    paths = set(manifest.path_table)
    out = {}
    for path, fp in fingerprints.items():
        if not isinstance(fp, Fingerprint):
            raise MetadataError(f"the fingerprint of {path!r} is a {type(fp).__name__}")
        if path not in paths:
            raise MetadataError(
                f"a fingerprint is given for {path!r}, which the manifest does not reference"
            )
        out[path] = fp
    return out


def _metadata_equal(a: ArrayV3Metadata, b: ArrayV3Metadata) -> bool:
    # fill values may be NaN, which compares unequal to itself in the dataclass __eq__
    da, db = a.to_dict(), b.to_dict()
    return da == db


def _check_combinable(arrays: Sequence[ManifestArray], what: str) -> list[ManifestArray]:
    arrays = list(arrays)
    if not arrays:
        raise CombineError(f"{what} needs at least one array")
    for i, a in enumerate(arrays):
        if not isinstance(a, ManifestArray):
            raise CombineError(f"{what}: input {i} is a {type(a).__name__}, not a ManifestArray")
    first = arrays[0].metadata
    f = first.to_dict()
    for i, a in enumerate(arrays[1:], start=1):
        d = a.metadata.to_dict()
        for field, label in (
            ("data_type", "dtype"),
            ("codecs", "codecs"),
            ("fill_value", "fill value"),
            ("chunk_key_encoding", "chunk key encoding"),
            ("dimension_names", "dimension names"),
        ):
            if d.get(field) != f.get(field):
                raise CombineError(
                    f"{what}: array {i} has {label} {d.get(field)!r}, array 0 has {f.get(field)!r}"
                )
        if what == "stack" and a.metadata.chunk_grid != first.chunk_grid:
            raise CombineError(
                f"{what}: array {i} has chunk grid {d['chunk_grid']!r}, "
                f"array 0 has {f['chunk_grid']!r}"
            )
    return arrays


def _edges(metadata: ArrayV3Metadata, axis: int) -> list[int]:
    """The declared chunk lengths along ``axis`` (a regular grid's last one is full-size)."""
    grid = metadata.chunk_grid
    extent = metadata.shape[axis]
    if isinstance(grid, RegularChunkGridMetadata):
        size = grid.chunk_shape[axis]
        return [size] * (math.ceil(extent / size) if size else 0)
    if isinstance(grid, RectilinearChunkGridMetadata):
        edges = grid.chunk_shapes[axis]
        if isinstance(edges, int):
            return [edges] * (math.ceil(extent / edges) if edges else 0)
        return list(edges)
    raise CombineError(f"unsupported chunk grid {grid!r}")


def _grid_with_axis(
    metadata: ArrayV3Metadata, axis: int, edges: list[int], extent: int
) -> RegularChunkGridMetadata | RectilinearChunkGridMetadata:
    """The chunk grid of ``metadata`` with ``edges`` along ``axis``: regular if it can be."""
    per_dim: list[Any] = []
    for d in range(len(metadata.shape)):
        own = edges if d == axis else _edges(metadata, d)
        per_dim.append(own)
    regular = []
    for d, own in enumerate(per_dim):
        size = own[0] if own else (metadata.shape[d] or 1)
        # regular: every chunk full-size but the last, which may overhang the extent
        length = extent if d == axis else metadata.shape[d]
        if all(e == size for e in own) and len(own) == math.ceil(length / size):
            regular.append(size)
        else:
            break
    else:
        return RegularChunkGridMetadata(chunk_shape=tuple(regular))
    shapes = tuple(
        own[0] if own and all(e == own[0] for e in own) and d != axis else tuple(own)
        for d, own in enumerate(per_dim)
    )
    return RectilinearChunkGridMetadata(chunk_shapes=shapes)


def _trim_last_chunks(array: ManifestArray, axis: int, keep: int, index: int) -> ChunkManifest:
    """Shorten the references of an input's padded last chunks along ``axis`` to ``keep``
    rows, or explain why that cannot be done exactly."""
    meta = array.metadata
    edge = _edges(meta, axis)[-1]
    codecs = [c.to_dict()["name"] for c in meta.codecs]
    reason = None
    if codecs != ["bytes"]:
        reason = (
            f"its chunks are encoded with {codecs}, so a shorter byte range is not a valid chunk"
        )
    elif axis != 0:
        reason = f"axis {axis} is not the outermost, so the kept rows are not one byte range"
    if reason is not None:
        raise CombineError(
            f"concat: input {index} has {array.shape[axis]} elements along axis {axis}, which "
            f"leaves its last chunk padded ({keep} of {edge}); in the combined array that chunk "
            f"would sit inside the chunk sequence, where it must decode to exactly {keep} "
            f"(zarr-specs #394), and it cannot be trimmed: {reason}"
        )
    manifest = array.manifest
    lengths = manifest.lengths.copy()
    last = [slice(None)] * manifest.ndim_chunk_grid
    last[axis] = slice(-1, None)
    tail = lengths[tuple(last)]
    present = manifest.path_ids[tuple(last)] >= 0
    item = meta.data_type.to_native_dtype().itemsize
    other = math.prod(_edges(meta, d)[0] for d in range(array.ndim) if d != axis)
    full = edge * other * item
    if np.any(tail[present] != full):
        raise CombineError(
            f"concat: input {index}: its last chunks along axis {axis} are not {full} bytes "
            "long, so they cannot be trimmed exactly"
        )
    lengths[tuple(last)] = np.where(present, keep * other * item, 0)
    return ChunkManifest.from_arrays(
        paths=manifest.paths, offsets=manifest.offsets, lengths=lengths
    )


class InlineArray:
    """A small array whose values are stored in the manifest store itself, not referenced.

    Used for variables that cannot be referenced (variable-length strings, compact HDF5
    datasets) or that the user asked to load (coordinates).  Written as an ordinary Zarr v3
    array, chunks and all.

    Parameters
    ----------
    metadata
        Zarr v3 array metadata (codecs, chunking, fill value, attributes...).
    data
        The values; must have the metadata's shape and a dtype castable to it.
    """

    __slots__ = ("_data", "_metadata")

    def __init__(self, metadata: ArrayV3Metadata | Mapping[str, Any], data: np.ndarray):
        meta = parse_array_metadata(metadata)
        arr = np.asarray(data)
        if arr.shape != meta.shape:
            raise MetadataError(f"inline data has shape {arr.shape}, metadata says {meta.shape}")
        native = meta.data_type.to_native_dtype()
        if arr.dtype != native:
            try:
                arr = arr.astype(native)
            except (TypeError, ValueError) as e:
                raise MetadataError(
                    f"inline data of dtype {arr.dtype} does not fit {native}"
                ) from e
        arr = arr.copy()
        arr.flags.writeable = False
        self._metadata = meta
        self._data = arr

    @classmethod
    def from_numpy(
        cls,
        data: np.ndarray,
        *,
        dimension_names: Sequence[str | None] | None = None,
        attributes: Mapping[str, Any] | None = None,
        fill_value: Any = None,
    ) -> InlineArray:
        """An uncompressed, single-chunk inline array holding ``data``.

        The metadata is what ``zarr.create_array(shape=data.shape, dtype=data.dtype,
        chunks=data.shape, compressors=None, ...)`` writes, built from a per-dtype template
        rather than by creating an array in a store (which costs milliseconds per variable).
        """
        arr = np.asarray(data)
        template = _inline_template(arr.dtype)
        metadata = ArrayV3Metadata(
            shape=arr.shape,
            data_type=template.data_type,
            # one chunk holding everything; a zero-length axis still needs chunk length 1
            chunk_grid={
                "name": "regular",
                "configuration": {"chunk_shape": tuple(max(n, 1) for n in arr.shape)},
            },
            chunk_key_encoding=template.chunk_key_encoding,
            # as zarr.create_array: None means the data type's default scalar
            fill_value=template.data_type.default_scalar() if fill_value is None else fill_value,
            codecs=template.codecs,
            attributes=dict(attributes or {}),
            dimension_names=tuple(dimension_names) if dimension_names else None,
        )
        return cls(metadata, arr)

    @property
    def metadata(self) -> ArrayV3Metadata:
        return self._metadata

    @property
    def data(self) -> np.ndarray:
        """The values (read-only)."""
        return self._data

    @property
    def shape(self) -> tuple[int, ...]:
        return self._metadata.shape

    @property
    def ndim(self) -> int:
        return len(self._metadata.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._data.dtype

    @property
    def dimension_names(self) -> tuple[str | None, ...] | None:
        return self._metadata.dimension_names

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self._metadata.attributes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InlineArray):
            return NotImplemented
        return _metadata_equal(self._metadata, other._metadata) and np.array_equal(
            self._data, other._data, equal_nan=self._data.dtype.kind in "fc"
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"InlineArray<shape={self.shape}, dtype={self._metadata.data_type}>"


@functools.lru_cache(maxsize=256)
def _inline_template(dtype: np.dtype[Any]) -> ArrayV3Metadata:
    """The metadata zarr itself gives an uncompressed one-element array of ``dtype``: its
    data type, codecs and chunk key encoding are what `InlineArray.from_numpy` reuses."""
    spec = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(1,), dtype=dtype, chunks=(1,), compressors=None
    )
    metadata = spec.metadata
    assert isinstance(metadata, ArrayV3Metadata)  # create_array's default format is v3
    return metadata
