"""HDF5 / netCDF4 builder: reference the chunks of an HDF5 file in place.

h5py opens the file and this module walks its groups, then builds the arrays.  What each
dataset is (shape, type, filters, fill value, layout) comes from its object header
(`zarr_manifest.builders._hdf5_headers`, which asks h5py when the encoding is unusual), its
attributes from `zarr_manifest.builders._hdf5_attributes`, and where its chunks are from
`zarr_manifest.builders._hdf5_chunk_index` (version-1 B-trees read directly, the newer
indexes through h5py's ``chunk_iter``).

Contiguous datasets are one chunk, or, when uncompressed and large, regular virtual chunks
of about ``split_contiguous_bytes`` so they can be read in parallel.  Datasets that cannot be
referenced (compact storage, variable-length strings, object references, external storage)
are read through h5py and stored inline (`InlineArray`).  netCDF-4 dimension ids / dimension
scales give dimension names; datasets without them get ``phony_dim_N`` names, as h5netcdf
does.
"""

from __future__ import annotations

import math
import os
import posixpath
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.metadata.v3 import ArrayV3Metadata, RegularChunkGridMetadata, parse_codecs

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._auto_load import MAX_AUTO_LOAD_BYTES
from zarr_manifest.builders._hdf5_attributes import (
    first_int,
    h5py_attributes,
    header_attributes,
    is_dimension_only,
    is_dimension_scale,
    reference_name,
    user_attributes,
)
from zarr_manifest.builders._hdf5_chunk_index import chunk_grid, contiguous_chunks
from zarr_manifest.builders._hdf5_headers import (
    MSG_LAYOUT,
    MSG_LINK_INFO,
    MSG_SYMBOL_TABLE,
    Description,
    Fallback,
    HDF5File,
    describe_from_header,
    describe_with_h5py,
    header_messages,
)
from zarr_manifest.builders._phony_dims import PhonyDims
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import (
    bytes_codec,
    hdf5_filters_to_codecs,
    xarray_fill_value_attribute,
)
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["DEFAULT_SPLIT_CONTIGUOUS_BYTES", "MAX_AUTO_LOAD_BYTES", "build_hdf5"]

#: Uncompressed contiguous datasets larger than this are split into virtual chunks of about
#: this many bytes along their leading axes.
DEFAULT_SPLIT_CONTIGUOUS_BYTES = 4 * 1024 * 1024


# Whether dataset descriptions may be decoded from object headers (tests turn it off to check
# the decoder against h5py).
_DECODE_HEADERS = True


# ---- opening ---------------------------------------------------------------------------------


@contextmanager
def _open(source: Source) -> Iterator[HDF5File]:
    import h5py

    if source.local_path is not None:
        fd = os.open(source.local_path, os.O_RDONLY)
        fobj: Any = None
        try:
            try:
                h5 = h5py.File(source.local_path, "r", locking=False)
            except OSError as e:
                if "locking" not in str(e):
                    raise BuildError(f"{source.url}: not a readable HDF5 file ({e})") from e
                # the file is already open in this process (h5py with other locking flags):
                # libhdf5 would share that open file; a Python file object gets one of its own
                fobj = open(source.local_path, "rb")  # noqa: SIM115 (closed below)
                try:
                    h5 = h5py.File(fobj, "r")
                except OSError as e2:
                    raise BuildError(f"{source.url}: not a readable HDF5 file ({e2})") from e2
            with h5:
                yield HDF5File(h5, lambda at, n: os.pread(fd, n, at), os.fstat(fd).st_size)
        finally:
            if fobj is not None:
                fobj.close()
            os.close(fd)
        return
    fobj = source.open()
    try:
        try:
            h5 = h5py.File(fobj, "r")
        except OSError as e:
            raise BuildError(f"{source.url}: not a readable HDF5 file ({e})") from e

        def read(at: int, n: int) -> bytes:
            fobj.seek(at)
            return bytes(fobj.read(n))

        with h5:
            yield HDF5File(h5, read, source.size())
    finally:
        fobj.close()


# ---- attribute values ------------------------------------------------------------------------


# Parsed zarr objects reused across datasets: building them is most of the metadata cost.
_ZDTYPES: dict[np.dtype[Any], Any] = {}
_CODECS: dict[bytes, tuple[Any, ...]] = {}
_CHUNK_KEY_ENCODING = DefaultChunkKeyEncoding(separator="/")


def _zarr_dtype(dtype: np.dtype[Any]) -> Any:
    zdtype = _ZDTYPES.get(dtype)
    if zdtype is None:
        with warnings.catch_warnings():
            # fixed-length strings have no finalised Zarr v3 spec; zarr-python reads them
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
            zdtype = get_data_type_from_native_dtype(dtype)
        _ZDTYPES[dtype] = zdtype
    return zdtype


def _zarr_codecs(codecs: list[dict[str, Any]]) -> tuple[Any, ...]:
    key = orjson.dumps(codecs)
    parsed = _CODECS.get(key)
    if parsed is None:
        parsed = parse_codecs(codecs)
        _CODECS[key] = parsed
    return parsed


# ---- the builder -----------------------------------------------------------------------------


class _Node:
    """A member of the group being built: where it is and what its header says."""

    __slots__ = (
        "_h5", "address", "dimids", "dims", "group", "info", "messages", "name", "path", "raw"
    )  # fmt: skip

    def __init__(
        self,
        group: Any,
        name: str,
        path: str,
        address: int | None,
        messages: list[tuple[int, int, bytes]] | None,
    ):
        self.group = group
        self.name = name
        self.path = path
        self.address = address
        self.messages = messages
        self.raw: dict[str, Any] = {}
        self.info: Description | None = None
        self.dims: list[str] = []
        self.dimids: list[int] | None = None  # netCDF-4 dimension ids, when they resolve
        self._h5: Any = None

    def h5(self) -> Any:
        """The h5py object, opened on first use."""
        if self._h5 is None:
            self._h5 = self.group[self.name]
        return self._h5

    def kind(self) -> str:
        """ "dataset", "group" or "other" (named datatypes, ...)."""
        if self.messages is not None:
            types = {m[0] for m in self.messages}
            if MSG_LAYOUT in types:
                return "dataset"
            if MSG_LINK_INFO in types or MSG_SYMBOL_TABLE in types:
                return "group"
        import h5py

        obj = self.h5()
        if isinstance(obj, h5py.Dataset):
            return "dataset"
        if isinstance(obj, h5py.Group):
            return "group"
        return "other"


class _Plan:
    """A group walked but not built yet: its datasets, child groups and attributes."""

    __slots__ = ("attributes", "datasets", "groups")

    def __init__(self, datasets: list[_Node], groups: dict[str, _Plan], attributes: dict[str, Any]):
        self.datasets = datasets
        self.groups = groups
        self.attributes = attributes


class _Builder:
    """Builds a `ManifestGroup` in two passes.

    The walk (`plan`) reads every header and attribute; only then are arrays built, because a
    netCDF-4 variable's shape is its dimensions' lengths, and an unlimited dimension is as
    long as the longest dataset along it, wherever in the file that dataset is.
    """

    def __init__(
        self,
        source: Source,
        f: HDF5File,
        drop: Collection[str],
        load: Collection[str],
        split_contiguous_bytes: int,
    ):
        self.source = source
        self.f = f
        self.drop = set(drop)
        self.load = set(load)
        self.split = split_contiguous_bytes
        self.seen: set[str] = set()
        # netCDF-4 dimension id -> name, from the dimension scales met so far (ids are
        # unique in a file and child groups see their ancestors' dimensions)
        self.dimids: dict[int, str] = {}
        # netCDF-4 dimension id -> length (the longest extent of any dataset along it)
        self.dimlen: dict[int, int] = {}

    def _messages(self, address: int | None) -> list[tuple[int, int, bytes]] | None:
        if address is None or not _DECODE_HEADERS:
            return None
        try:
            return header_messages(self.f, address)
        except (Fallback, IndexError, ValueError):
            return None

    def attributes(self, node: _Node) -> dict[str, Any]:
        where = f"{self.source.url}:/{node.path}"
        if node.messages is not None:
            return header_attributes(node.messages, self.f, node.h5, where)
        return h5py_attributes(node.h5(), where)

    def describe(self, node: _Node) -> Description:
        if node.messages is not None:
            try:
                return describe_from_header(node.messages, self.f)
            except (Fallback, IndexError, ValueError, TypeError):
                pass
        return describe_with_h5py(node.h5(), self.f, node.messages)

    # -- pass 1: walking ----------------------------------------------------------------------

    def plan(self, g: Any, prefix: str, address: int | None) -> _Plan:
        import h5py

        datasets: list[_Node] = []
        subgroups: list[_Node] = []
        links = g.id.links
        for name in g:
            path = f"{prefix}{name}"
            info = links.get_info(name.encode())
            if info.type == h5py.h5l.TYPE_EXTERNAL:
                link = g.get(name, getlink=True)
                warnings.warn(
                    f"{self.source.url}: /{path} is an external link to "
                    f"{link.filename}:{link.path}, which is not followed",
                    stacklevel=3,
                )
                continue
            if info.type == h5py.h5l.TYPE_HARD:
                node = _Node(g, name, path, int(info.u), None)
            else:  # soft link: h5py resolves it
                if g.get(name) is None:
                    continue  # dangling
                node = _Node(g, name, path, None, None)
            self.seen.update((name, path))
            if name in self.drop or path in self.drop:
                continue
            node.messages = self._messages(node.address)
            kind = node.kind()
            if kind == "dataset":
                node.raw = self.attributes(node)
                if "_Netcdf4Dimid" in node.raw and is_dimension_scale(node.raw):
                    dimid = first_int(node.raw["_Netcdf4Dimid"])
                    if dimid is not None:
                        self.dimids[dimid] = name
                if not is_dimension_only(node.raw):
                    datasets.append(node)
            elif kind == "group":
                subgroups.append(node)
        phony = PhonyDims()
        described = []
        for node in datasets:
            try:
                node.info = self.describe(node)
            except (TypeError, ValueError, RuntimeError) as e:
                # a type h5py has no numpy type for (HDF5 time, quad precision floats...):
                # that dataset is left out, the rest of the file is still read
                warnings.warn(
                    f"{self.source.url}:/{node.path}: dataset {node.path!r} is left out: "
                    f"h5py cannot describe it ({type(e).__name__}: {e})",
                    stacklevel=3,
                )
                continue
            described.append(node)
            if node.info.shape is not None:
                self.dimensions(node, node.info.shape, phony)
        datasets = described
        # the group's own node: its h5py object is `g` (h5py's `.parent` is costly, unused)
        here = _Node(None, "", prefix.rstrip("/"), address, self._messages(address))
        here._h5 = g
        attributes = user_attributes(self.attributes(here), self.f.h5)
        groups = {
            node.name: self.plan(node.h5(), f"{node.path}/", node.address) for node in subgroups
        }
        return _Plan(datasets, groups, attributes)

    def dimensions(self, node: _Node, shape: tuple[int, ...], phony: PhonyDims) -> None:
        """Set a dataset's dimension names (and netCDF-4 dimension ids).

        From netCDF-4 dimension ids (``_Netcdf4Coordinates``) when they all resolve, else
        from attached dimension scales (``DIMENSION_LIST``), else the dataset's own name if it
        is a 1-d dimension scale; axes left over get phony names.
        """
        raw = node.raw
        ndim = len(shape)
        if ndim == 0:
            return
        names: list[str | None] = [None] * ndim
        ids = raw.get("_Netcdf4Coordinates")
        dimids = None if ids is None else np.asarray(ids).reshape(-1).tolist()
        if "_Netcdf4Dimid" in raw and ndim == 1 and is_dimension_scale(raw):
            dimids = [first_int(raw["_Netcdf4Dimid"])]
        if dimids is not None and len(dimids) == ndim and all(i in self.dimids for i in dimids):
            names = [self.dimids[i] for i in dimids]
            node.dimids = dimids
            for i, extent in zip(dimids, shape, strict=True):
                self.dimlen[i] = max(self.dimlen.get(i, 0), extent)
        elif "DIMENSION_LIST" in raw:
            try:
                lists = node.h5().attrs["DIMENSION_LIST"]
            except (OSError, TypeError, ValueError):
                lists = []
            for axis, refs in enumerate(lists):
                if axis < ndim and len(refs):
                    target = reference_name(refs[0], self.f.h5)
                    if target:
                        names[axis] = posixpath.basename(target)
        elif is_dimension_scale(raw) and ndim == 1:
            names[0] = node.name
        missing = [axis for axis, n in enumerate(names) if n is None]
        if missing:
            filled = phony.names([shape[axis] for axis in missing])
            for axis, n in zip(missing, filled, strict=True):
                names[axis] = n
        node.dims = [n for n in names if n is not None]

    # -- pass 2: building ---------------------------------------------------------------------

    def build(self, plan: _Plan) -> ManifestGroup:
        arrays = {node.name: self.array(node) for node in plan.datasets}
        groups = {name: self.build(sub) for name, sub in plan.groups.items()}
        return ManifestGroup(arrays=arrays, groups=groups, attributes=plan.attributes)

    def array(self, node: _Node) -> ManifestArray | InlineArray:
        path = node.path
        where = f"{self.source.url}:/{path}"
        info = node.info
        assert info is not None
        if info.shape is None:
            raise UnsupportedError(
                f"{where}: dataset {path!r} has a null dataspace (no shape), which Zarr cannot "
                "represent; drop it"
            )
        shape = info.shape
        dims = node.dims
        attrs = user_attributes(node.raw, self.f.h5)
        dtype = info.dtype
        if "_FillValue" in attrs and dtype.kind in "fiuS":
            # xarray masks a Zarr v3 array by this attribute, in its own encoding
            attrs["_FillValue"] = xarray_fill_value_attribute(attrs["_FillValue"], dtype)
        if path in self.load or node.name in self.load or _must_load(info):
            return self.inline(node, dims, attrs)
        if dtype.fields is not None and not _is_packed(dtype):
            # Zarr's structured type packs the fields in declaration order; HDF5 stores them
            # at their own offsets, possibly out of order (PyTables) or with padding
            stored = _storage_order(dtype)
            if stored is None:
                why = f"the compound type of {path!r} has padding between or after its fields"
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > MAX_AUTO_LOAD_BYTES:
                    raise UnsupportedError(f"{where}: {why}; load it or leave it out")
                warnings.warn(f"{where}: {why}; its values are loaded", stacklevel=4)
                return self.inline(node, dims, attrs)
            dtype = stored
            reordered = np.zeros((), dtype=stored)
            for name in stored.names or ():
                reordered[name] = np.asarray(info.fill)[name]
            fill = reordered[()]
        else:
            fill = info.fill
        try:
            zdtype = _zarr_dtype(dtype)
        except (ValueError, TypeError) as e:
            raise UnsupportedError(f"{where}: dtype {dtype} of {path!r} has no Zarr type") from e
        layout = info.layout
        if layout.kind == "chunked":
            assert layout.chunks is not None
            chunks = layout.chunks
            if node.dimids is not None:
                # netCDF-4: shorter than its unlimited dimension reads as fill beyond its end
                shape = tuple(
                    max(extent, self.dimlen.get(i, 0))
                    for extent, i in zip(shape, node.dimids, strict=True)
                )
            codecs = hdf5_filters_to_codecs(info.filters, dtype, variable=path)
            present, offsets, lengths, masks = chunk_grid(
                self.f, layout.btree, lambda: node.h5().id, shape, chunks
            )
            skipped = int(np.count_nonzero(masks[present]))
            if skipped:
                # HDF5 stores a chunk unfiltered when an optional filter fails on it (Blosc on
                # incompressible data): no single codec pipeline decodes such a dataset
                why = (
                    f"{skipped} chunk(s) of {path!r} were stored with some of its HDF5 filters "
                    "skipped, which one codec pipeline cannot decode"
                )
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > MAX_AUTO_LOAD_BYTES:
                    raise UnsupportedError(f"{where}: {why}; load it or leave it out")
                warnings.warn(f"{where}: {why}; its values are loaded", stacklevel=4)
                return self.inline(node, dims, attrs)
            manifest = self._manifest(present, offsets, lengths)
        else:  # contiguous
            codecs = [bytes_codec(dtype, variable=path)]
            if layout.address is None or math.prod(shape) == 0:
                chunks = tuple(max(s, 1) for s in shape)
                manifest = ChunkManifest.empty((1,) * len(shape))
            else:
                chunks, offsets = contiguous_chunks(
                    shape, dtype.itemsize, layout.address, self.f.size, self.split
                )
                nbytes = math.prod(chunks) * dtype.itemsize
                lengths = np.full(offsets.shape, nbytes, dtype=np.uint64)
                manifest = ChunkManifest.from_arrays(
                    paths=self.source.url, offsets=offsets, lengths=lengths
                )
        try:
            meta = ArrayV3Metadata(
                shape=shape,
                data_type=zdtype,
                chunk_grid=RegularChunkGridMetadata(chunk_shape=chunks),
                chunk_key_encoding=_CHUNK_KEY_ENCODING,
                fill_value=fill,
                codecs=_zarr_codecs(codecs),
                attributes=attrs,
                dimension_names=dims or None,
            )
        except (ValueError, TypeError) as e:
            raise UnsupportedError(f"{where}: {path!r} cannot be described to Zarr ({e})") from e
        return ManifestArray(meta, manifest)

    def _manifest(
        self, present: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
    ) -> ChunkManifest:
        if present.all():
            return ChunkManifest.from_arrays(
                paths=self.source.url, offsets=offsets, lengths=lengths
            )
        paths = np.full(present.shape, "", dtype=np.dtypes.StringDType())
        paths[present] = self.source.url
        return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)

    def inline(self, node: _Node, dims: list[str], attrs: dict[str, Any]) -> InlineArray:
        """Read a dataset through h5py and store its values inline."""
        import h5py

        path = node.path
        where = f"{self.source.url}:/{path}"
        raw = self._contiguous_values(node)
        if raw is not None:
            # the header described it fully: no h5py dataset to open (most of a small
            # file's cost when its coordinates are loaded)
            assert node.info is not None
            return self._inline_values(node, raw, node.info.fill, dims, attrs, where, pad=True)
        ds = node.h5()
        dtype = ds.dtype
        fill: Any = None
        if h5py.check_string_dtype(dtype) is not None and dtype.kind == "O":
            data = np.asarray(ds.asstr()[()], dtype=object).astype(np.dtypes.StringDType())
        elif h5py.check_ref_dtype(dtype) is not None:
            refs = np.asarray(ds[()], dtype=object)
            names = [reference_name(r, self.f.h5) or "" for r in refs.reshape(-1).tolist()]
            data = np.array(names, dtype=np.dtypes.StringDType()).reshape(refs.shape)
        elif dtype.kind == "O":
            raise UnsupportedError(
                f"{where}: {path!r} holds variable-length data of type {dtype} "
                f"({h5py.check_vlen_dtype(dtype)}), which Zarr cannot represent; drop it"
            )
        else:
            data = np.asarray(ds[()])
            if data.dtype.fields is not None and not _is_packed(data.dtype):
                # Zarr's structured type has no padding: the same fields, packed
                from numpy.lib import recfunctions

                data = recfunctions.repack_fields(data)
            try:
                fill = ds.fillvalue
            except (OSError, TypeError, ValueError):
                fill = None
            return self._inline_values(node, data, fill, dims, attrs, where, pad=True)
        return self._inline_values(node, data, fill, dims, attrs, where, pad=False)

    def _contiguous_values(self, node: _Node) -> np.ndarray | None:
        """A dataset's values read straight from the file, when its header says they are
        plain numbers stored contiguously without filters (else None: h5py reads it)."""
        info = node.info
        if node.messages is None or info is None or info.shape is None:
            return None
        layout = info.layout
        dtype = info.dtype
        nbytes = math.prod(info.shape) * dtype.itemsize
        if (
            layout.kind != "contiguous"
            or layout.address is None
            or layout.size != nbytes
            or info.filters
            or info.external
            or dtype.kind not in "iuf"
            or layout.address + nbytes > self.f.size
        ):
            return None
        raw = self.f.read(layout.address, nbytes)
        if len(raw) != nbytes:
            return None
        return np.frombuffer(raw, dtype=dtype).reshape(info.shape)

    def _inline_values(
        self,
        node: _Node,
        data: np.ndarray,
        fill: Any,
        dims: list[str],
        attrs: dict[str, Any],
        where: str,
        *,
        pad: bool,
    ) -> InlineArray:
        """`InlineArray` of a dataset's values; ``pad``: padded with ``fill`` to the lengths
        of its netCDF-4 dimensions."""
        if pad and node.dimids is not None and data.ndim:
            # netCDF-4: pad up to the unlimited dimensions' lengths, as netCDF reads it
            full = tuple(
                max(extent, self.dimlen.get(i, 0))
                for extent, i in zip(data.shape, node.dimids, strict=True)
            )
            if full != data.shape:
                padded = np.full(full, fill if fill is not None else 0, dtype=data.dtype)
                padded[tuple(slice(0, n) for n in data.shape)] = data
                data = padded
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
                return InlineArray.from_numpy(
                    data, dimension_names=dims or None, attributes=attrs, fill_value=fill
                )
        except (ValueError, TypeError) as e:
            raise UnsupportedError(
                f"{where}: {node.path!r} of dtype {data.dtype} cannot be stored ({e})"
            ) from e


def _is_packed(dtype: np.dtype[Any]) -> bool:
    """Whether a compound type's fields lie in declaration order without gaps (nested too)."""
    names = dtype.names or ()
    return np.dtype([(name, dtype.fields[name][0]) for name in names]) == dtype  # type: ignore[index]


def _storage_order(dtype: np.dtype[Any]) -> np.dtype[Any] | None:
    """The compound type with its fields in the order they are stored, if that packs them.

    None when the fields leave gaps (padding) or a nested compound is not packed.
    """
    fields = sorted(
        ((int(spec[1]), name, spec[0]) for name, spec in (dtype.fields or {}).items()),
        key=lambda f: f[0],
    )
    position = 0
    for offset, _name, field in fields:
        if offset != position or (field.fields is not None and not _is_packed(field)):
            return None
        position += field.itemsize
    if position != dtype.itemsize:
        return None
    return np.dtype([(name, field) for _offset, name, field in fields])


def _must_load(info: Description) -> bool:
    """Whether a dataset's bytes cannot be referenced and must be stored inline."""
    if info.layout.kind in ("compact", "virtual") or info.external:
        return True
    dtype = info.dtype
    if dtype.kind == "O":  # variable-length strings or sequences, object references
        return True
    return bool(dtype.fields and any(f[0].kind == "O" for f in dtype.fields.values()))


def build_hdf5(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    split_contiguous_bytes: int = DEFAULT_SPLIT_CONTIGUOUS_BYTES,
    **options: Any,
) -> ManifestGroup:
    """Reference the datasets of an HDF5 or netCDF-4 file in place.

    Parameters
    ----------
    source
        The file: a `Source`, a local path or a URL.
    group
        The HDF5 group to start from (``"a/b"``); the whole file when None.
    drop
        Datasets or groups to leave out, by name or by path relative to ``group``.
    load
        Datasets to read now and store inline (`InlineArray`), e.g. coordinates.
    split_contiguous_bytes
        Uncompressed contiguous datasets larger than this are cut into virtual chunks of
        about this size along their leading axes (0 turns splitting off).
    **options
        Passed to `open_source` when ``source`` is a path or URL (obstore options).

    Returns
    -------
    ManifestGroup
        One array per dataset, one child group per HDF5 group; attributes carried over
        (netCDF-4/HDF5 bookkeeping such as ``DIMENSION_LIST`` or ``_Netcdf4Dimid`` left out).
        Compact datasets, variable-length strings and object references are `InlineArray`.

    Raises
    ------
    BuildError
        The file is not HDF5, ``group`` is not a group, or a ``drop``/``load`` name is unknown.
    UnsupportedError
        A dataset uses a filter or type that cannot be referenced (the message names it).
    """
    import h5py

    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_hdf5: unexpected options {sorted(options)}")
    if split_contiguous_bytes < 0:
        raise ValueError(f"split_contiguous_bytes must be >= 0, got {split_contiguous_bytes}")
    with _open(source) as f:
        start = f.h5
        if group not in (None, "", "/"):
            assert group is not None
            node = f.h5.get(group)
            if not isinstance(node, h5py.Group):
                what = "not found" if node is None else "not a group"
                raise BuildError(f"{source.url}: group {group!r} is {what}")
            start = node
        builder = _Builder(source, f, drop, load, split_contiguous_bytes)
        result = builder.build(builder.plan(start, "", _group_address(start)))
        unknown = sorted((set(drop) | set(load)) - builder.seen)
        if unknown:
            raise BuildError(f"{source.url}: no dataset or group {unknown} in the file (drop/load)")
        return result


def _group_address(g: Any) -> int:
    """The object header address of a group (cheap for groups: no chunk index to measure)."""
    import h5py

    return int(h5py.h5o.get_info(g.id).addr)
