"""DMR++ (OPeNDAP's XML sidecar of an HDF5/netCDF-4 file) -> `ManifestGroup`.

A DMR++ document is a DAP4 dataset description (groups, dimensions, typed variables,
attributes) in which each variable also lists where its chunks are in the data file
(``<dmrpp:chunks>``: filters, fill value, byte order, chunk shape, and one
``<dmrpp:chunk offset nBytes chunkPositionInArray>`` per stored chunk).  NASA publishes one
next to many granules (``granule.nc`` + ``granule.nc.dmrpp``), so a granule can be
referenced from its sidecar alone, without opening the HDF5 file.

The chunks are in the *data file*: ``data_url`` when given, else the DMR++ document's own
URL without its ``.dmrpp`` suffix (the sidecar convention).  The document's ``dmrpp:href``
is a placeholder or the archive's HTTPS URL; when it names another file than that, the build
is refused (two inputs disagree: pass ``data_url``).

Mapping:

- a variable -> an array: dimensions from ``<Dim name="/path/dim">`` (the last path segment;
  anonymous ``<Dim size>`` get ``phony_dim_N``), codecs ``bytes`` (the ``byteOrder``) then
  the ``compressionType`` filters in pipeline order (``shuffle``, ``deflate``,
  ``fletcher32``), fill value ``fillValue`` (what HDF5 reads from chunks never written,
  which are simply absent from the list); a ``_FillValue`` attribute that is the same number
  printed with more digits is preferred, so missing chunks read exactly that number;
- attributes with their DAP4 types (one value -> a scalar, several -> a list;
  ``Container`` attributes -> nested objects; OPeNDAP's ``build_dmrpp_metadata`` dropped);
- ``<Group>`` -> a subgroup.

Refused with `UnsupportedError`, naming the variable (``drop=[path]`` builds the rest):
strings, structures, sequences, opaque and enum types; compact storage; filters other than
those three; chunks whose filter mask skips a filter; per-chunk ``href``s to other files;
anything else in the ``dmrpp`` namespace this module does not know.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Collection
from typing import Any

import numpy as np
from zarr.core.dtype import get_data_type_from_native_dtype

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._chunk_reader import read_chunked
from zarr_manifest.builders._phony_dims import PhonyDims
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import hdf5_filters_to_codecs, xarray_fill_value_attribute
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = ["DAP4_NAMESPACE", "DMRPP_NAMESPACE", "build_dmrpp"]

#: XML namespaces of DAP4 elements and of the DMR++ chunk elements.
DAP4_NAMESPACE = "http://xml.opendap.org/ns/DAP/4.0#"
DMRPP_NAMESPACE = "http://xml.opendap.org/dap/dmrpp/1.0.0#"
_D = "{" + DAP4_NAMESPACE + "}"
_P = "{" + DMRPP_NAMESPACE + "}"

#: The placeholder ``build_dmrpp -u`` writes as ``dmrpp:href`` when no URL is known.
HREF_PLACEHOLDER = "OPeNDAP_DMRpp_DATA_ACCESS_URL"

# DAP4 atomic types -> numpy (no byte order: the chunks' byteOrder gives it)
_DAP_TYPES = {
    "Byte": "u1",
    "UInt8": "u1",
    "Int8": "i1",
    "Char": "S1",
    "Int16": "i2",
    "UInt16": "u2",
    "Int32": "i4",
    "UInt32": "u4",
    "Int64": "i8",
    "UInt64": "u8",
    "Float32": "f4",
    "Float64": "f8",
}
_REFUSED_TYPES = {"String", "URL", "Structure", "Sequence", "Opaque", "Enum"}
_TEXT_ATTRIBUTE_TYPES = {"String", "URL", "OtherXML"}

# compressionType words -> HDF5 filter ids (H5Zpublic.h)
_FILTERS = {"deflate": 1, "shuffle": 2, "fletcher32": 3}

# dmrpp elements inside <dmrpp:chunks> this module reads
_KNOWN_CHUNK_CHILDREN = {_P + "chunkDimensionSizes", _P + "chunk"}


def _name(element: ET.Element, where: str) -> str:
    name = element.get("name")
    if not name:
        raise BuildError(f"{where}: a <{_local(element.tag)}> without a name")
    return name


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attribute_value(element: ET.Element, where: str) -> Any:
    """A DAP4 <Attribute> as a JSON value."""
    kind = element.get("type", "")
    if kind == "Container":
        out: dict[str, Any] = {}
        for child in element.findall(_D + "Attribute"):
            out[_name(child, where)] = _attribute_value(child, where)
        return out
    texts = [v.text or "" for v in element.findall(_D + "Value")]
    if kind in _TEXT_ATTRIBUTE_TYPES or kind not in _DAP_TYPES:
        values: list[Any] = texts
    elif _DAP_TYPES[kind].startswith("S"):
        values = texts
    else:
        dtype = np.dtype(_DAP_TYPES[kind])
        try:
            values = [_number(t, dtype) for t in texts]
        except ValueError as e:
            raise BuildError(f"{where}: attribute {element.get('name')!r}: {e}") from e
    return values[0] if len(values) == 1 else values


def _number(text: str, dtype: np.dtype[Any]) -> Any:
    text = text.strip()
    if dtype.kind == "f":
        value = float(text)
        return value if np.isfinite(value) else str(value)  # JSON has no NaN: "nan"
    return int(text)


def _attributes(element: ET.Element, where: str) -> dict[str, Any]:
    out = {}
    for child in element.findall(_D + "Attribute"):
        name = _name(child, where)
        if name == "build_dmrpp_metadata" and child.get("type") == "Container":
            continue  # how the sidecar was made, not the data's metadata
        out[name] = _attribute_value(child, where)
    return out


class _Dimensions:
    """Declared dimensions by full path, and phony names for anonymous ones."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self._phony = PhonyDims()

    def declare(self, path: str, size: str | None, where: str) -> None:
        try:
            self.sizes[path] = int(size or "")
        except ValueError:
            raise BuildError(f"{where}: dimension {path!r} has size {size!r}") from None

    def of(self, var: ET.Element, group_path: str, where: str) -> tuple[list[str], list[int]]:
        names: list[str | None] = []  # None: unnamed, named below
        sizes: list[int] = []
        for dim in var.findall(_D + "Dim"):
            ref = dim.get("name")
            if ref:
                path = ref if ref.startswith("/") else f"{group_path}/{ref}"
                if path not in self.sizes:
                    raise BuildError(f"{where}: dimension {ref!r} is not declared")
                names.append(path.rsplit("/", 1)[-1])
                sizes.append(self.sizes[path])
                continue
            try:
                size = int(dim.get("size", ""))
            except ValueError:
                raise BuildError(f"{where}: a <Dim> without name or size") from None
            names.append(None)
            sizes.append(size)
        unnamed = [size for name, size in zip(names, sizes, strict=True) if name is None]
        phony = iter(self._phony.names(unnamed))
        return [next(phony) if name is None else name for name in names], sizes


class _Plan:
    """One variable's array: metadata document and chunk grid."""

    def __init__(
        self,
        doc: dict[str, Any],
        dtype: np.dtype[Any],
        fill: Any,
        offsets: np.ndarray,
        lengths: np.ndarray,
        filters: list[int],
    ):
        self.doc = doc
        self.dtype = dtype
        self.fill = fill
        self.offsets = offsets
        self.lengths = lengths
        self.filters = filters


def _fill_value(chunks: ET.Element, attributes: dict[str, Any], dtype: np.dtype[Any]) -> Any:
    """HDF5's fill value as the document gives it (0 when it gives none)."""
    text = chunks.get("fillValue")
    if text is None:
        return b"" if dtype.kind == "S" else 0
    if dtype.kind == "S":
        return text.encode("latin-1")[:1]
    if dtype.kind == "f":
        value = float(text)
        precise = attributes.get("_FillValue")
        # build_dmrpp prints fillValue with 6 significant digits; the attribute (which
        # netCDF also sets as HDF5's fill value) may carry all of them
        if (
            isinstance(precise, int | float)
            and not isinstance(precise, bool)
            and np.isclose(value, precise, rtol=1e-5, atol=0)
        ):
            return float(precise)
        return value
    return int(text)


def _variable_plan(
    var: ET.Element,
    path: str,
    group_path: str,
    dims: _Dimensions,
    data_url: str,
    where: str,
) -> _Plan:
    kind = _local(var.tag)
    here = f"{where}: variable {path!r}"
    if kind in _REFUSED_TYPES:
        raise UnsupportedError(
            f"{here} is of DAP4 type {kind}, which cannot be referenced; drop it to build the rest"
        )
    base = np.dtype(_DAP_TYPES[kind])
    names, shape = dims.of(var, group_path, here)
    attributes = _attributes(var, here)
    for child in var:
        if child.tag.startswith(_P) and child.tag != _P + "chunks":
            raise UnsupportedError(
                f"{here}: DMR++ element <dmrpp:{_local(child.tag)}> (e.g. compact storage) "
                "cannot be referenced; drop it to build the rest"
            )
    chunks_el = var.find(_P + "chunks")
    if chunks_el is None:
        raise UnsupportedError(f"{here} has no <dmrpp:chunks>: no data to reference")
    for child in chunks_el:
        if child.tag not in _KNOWN_CHUNK_CHILDREN:
            raise UnsupportedError(f"{here}: unknown DMR++ element <{_local(child.tag)}>")
    order = chunks_el.get("byteOrder")
    if order is None and chunks_el.find(_P + "chunk") is None:
        order = "LE"  # nothing stored (all fill value): no bytes to interpret
    if base.itemsize > 1 and order not in ("LE", "BE"):
        raise UnsupportedError(f"{here}: byteOrder {order!r} (neither LE nor BE)")
    dtype = base.newbyteorder("<" if order == "LE" else ">") if base.itemsize > 1 else base
    filters = []
    for word in (chunks_el.get("compressionType") or "").split():
        if word not in _FILTERS:
            raise UnsupportedError(
                f"{here} uses filter {word!r}, which cannot be referenced (known: "
                f"{sorted(_FILTERS)}); drop it to build the rest"
            )
        filters.append(_FILTERS[word])
    sizes_text = chunks_el.findtext(_P + "chunkDimensionSizes")
    chunk_shape = tuple(int(x) for x in sizes_text.split()) if sizes_text else tuple(shape)
    if len(chunk_shape) != len(shape) or any(c < 1 for c in chunk_shape if shape):
        raise BuildError(f"{here}: chunk shape {chunk_shape} does not fit shape {shape}")
    grid = tuple(-(-s // c) for s, c in zip(shape, chunk_shape, strict=True))
    offsets = np.full(grid, -1, dtype=np.int64)
    lengths = np.zeros(grid, dtype=np.int64)
    _place_chunks(chunks_el.findall(_P + "chunk"), chunk_shape, offsets, lengths, data_url, here)
    fill = _fill_value(chunks_el, attributes, dtype)
    if "_FillValue" in attributes and not isinstance(attributes["_FillValue"], dict | list):
        value = attributes["_FillValue"]
        if dtype.kind == "f" and isinstance(value, str):
            value = float(value)  # "nan"
        if dtype.kind != "S":
            attributes["_FillValue"] = xarray_fill_value_attribute(value, dtype)
    codecs = hdf5_filters_to_codecs(
        [(fid, [dtype.itemsize] if fid == 2 else [], "") for fid in filters],
        dtype,
        variable=path,
    )
    native = dtype.newbyteorder("=")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: char data has no v3 spec yet
        zdtype = get_data_type_from_native_dtype(native)
        try:
            fill_json = zdtype.to_json_scalar(zdtype.cast_scalar(fill), zarr_format=3)
        except (TypeError, ValueError, OverflowError) as e:
            raise BuildError(f"{here}: fill value {fill!r} does not fit {native}") from e
        data_type = zdtype.to_json(zarr_format=3)
    doc = {
        "shape": list(shape),
        "data_type": data_type,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(c, 1) for c in chunk_shape]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_json,
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": names,
    }
    return _Plan(doc, dtype, fill, offsets, lengths, filters)


def _place_chunks(
    elements: list[ET.Element],
    chunk_shape: tuple[int, ...],
    offsets: np.ndarray,
    lengths: np.ndarray,
    data_url: str,
    where: str,
) -> None:
    """Fill the grids ``offsets``/``lengths`` from the <dmrpp:chunk> elements (vectorised:
    a granule lists thousands).  ``chunkPositionInArray`` is an element index."""
    if not elements:
        return
    for chunk in elements:
        href, mask = chunk.get("href"), chunk.get("fm")
        if href is not None and href != data_url:
            raise UnsupportedError(f"{where}: a chunk is in another file ({href})")
        if mask not in (None, "0"):
            raise UnsupportedError(
                f"{where}: a chunk skips filters (filter mask {mask}); one codec list "
                "cannot read it"
            )
    try:
        offs = np.array([c.get("offset") for c in elements], dtype=np.int64)
        lens = np.array([c.get("nBytes") for c in elements], dtype=np.int64)
    except (TypeError, ValueError):
        raise BuildError(f"{where}: a chunk without a numeric offset/nBytes") from None
    positions = [c.get("chunkPositionInArray") for c in elements]
    grid = offsets.shape
    if any(p is None for p in positions):
        if len(elements) != 1:
            raise BuildError(f"{where}: {len(elements)} chunks, some without a position")
        offsets[(0,) * len(grid)], lengths[(0,) * len(grid)] = offs[0], lens[0]
        return
    texts = [str(p).strip() for p in positions]
    if not all(t.startswith("[") and t.endswith("]") for t in texts):
        raise BuildError(f"{where}: a malformed chunkPositionInArray")
    try:
        flat = np.array(",".join(t[1:-1] for t in texts).split(","), dtype=np.int64)
        coords = flat.reshape(len(elements), len(grid))
    except ValueError:
        raise BuildError(f"{where}: a chunkPositionInArray of the wrong rank") from None
    step = np.array(chunk_shape, dtype=np.int64)
    index = coords // step
    if (coords % step).any() or (index < 0).any() or (index >= np.array(grid)).any():
        raise BuildError(f"{where}: a chunk position is not on the chunk grid {chunk_shape}")
    at = tuple(index.T)
    if len(np.unique(np.ravel_multi_index(at, grid))) != len(elements):
        raise BuildError(f"{where}: two chunks at the same position")
    offsets[at], lengths[at] = offs, lens


def _data_url(source: Source, root: ET.Element, data_url: str | None) -> str:
    """The URL of the file the chunks are in (see the module notes)."""
    if data_url is not None:
        return open_source(data_url, **source._obstore_kwargs).url
    if not source.url.endswith(".dmrpp"):
        raise BuildError(
            f"{source.url}: a DMR++ document not named '<data file>.dmrpp'; pass data_url="
        )
    url = source.url[: -len(".dmrpp")]
    href = root.get(_P + "href")
    named = (href or "").rstrip("/").rsplit("/", 1)[-1]
    if href and href != HREF_PLACEHOLDER and named != url.rsplit("/", 1)[-1]:
        raise BuildError(
            f"{source.url}: its dmrpp:href names {href}, not the file next to it "
            f"({url}); pass data_url= to say which holds the chunks"
        )
    return url


def build_dmrpp(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    data_url: str | None = None,
    **options: Any,
) -> ManifestGroup:
    """Reference the variables a DMR++ document describes, in their HDF5/netCDF-4 file.

    Parameters
    ----------
    source
        The ``.dmrpp`` document (`Source`, local path or URL).
    group
        The group to start from (``"a/b"``), or None for the root.
    drop, load
        Variables to leave out / read now and keep inline, by path (``"g/var"``) below
        ``group``.
    data_url
        The data file; default: the document's URL without ``.dmrpp``.
    **options
        obstore options when ``source`` is a path or URL.

    Returns
    -------
    ManifestGroup
        Groups, arrays and attributes as the document describes them.

    Raises
    ------
    BuildError
        Not a DMR++ document, malformed chunk lists, a ``dmrpp:href`` that names another
        file, unknown drop/load paths.
    UnsupportedError
        A variable with no virtual form (see the module notes); the message names it.
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_dmrpp: unexpected options {sorted(options)}")
    try:
        root = ET.fromstring(source.read_range(0, source.size()))
    except ET.ParseError as e:
        raise BuildError(f"{source.url}: not a readable XML document ({e})") from e
    if root.tag != _D + "Dataset":
        raise BuildError(f"{source.url}: not a DAP4 dataset (root element {root.tag!r})")
    url = _data_url(source, root, data_url)
    found: dict[str, tuple[ET.Element, str]] = {}
    attributes: dict[str, dict[str, Any]] = {}
    dims = _Dimensions()
    _walk(root, "", dims, source.url, found, attributes)
    prefix = (group or "").strip("/")
    if prefix and prefix not in attributes:
        raise BuildError(f"{source.url}: no group {prefix!r}")
    start = prefix + "/" if prefix else ""
    variables = {p[len(start) :]: p for p in found if p.startswith(start)}
    unknown = sorted((set(drop) | set(load)) - set(variables))
    if unknown:
        raise BuildError(f"{source.url}: no variable(s) {unknown} (drop/load)")
    data_source: Source | None = None
    built: dict[str, ManifestArray | InlineArray] = {}
    for path, full in variables.items():
        if path in drop:
            continue
        element, group_path = found[full]
        plan = _variable_plan(element, full, group_path, dims, url, source.url)
        if path in load:
            if data_source is None:
                data_source = open_source(url, **source._obstore_kwargs)
            built[path] = InlineArray(plan.doc, _read(data_source, plan, path))
        else:
            built[path] = ManifestArray(plan.doc, _manifest(plan, url))
    groups = {
        g[len(start) :]: a for g, a in attributes.items() if g == prefix or g.startswith(start)
    }
    return _assemble(built, groups)


def _walk(
    element: ET.Element,
    path: str,
    dims: _Dimensions,
    where: str,
    found: dict[str, tuple[ET.Element, str]],
    attributes: dict[str, dict[str, Any]],
) -> None:
    """Collect the variables (element, group path) and group attributes in ``element`` (a
    Dataset or Group) and below, and declare its dimensions."""
    for dim in element.findall(_D + "Dimension"):
        dims.declare(f"{('/' + path) if path else ''}/{_name(dim, where)}", dim.get("size"), where)
    attributes[path] = _attributes(element, where)
    for child in element:
        kind = _local(child.tag)
        if not child.tag.startswith(_D) or kind in ("Dimension", "Attribute", "Enumeration"):
            if child.tag.startswith(_P):
                raise UnsupportedError(f"{where}: unknown DMR++ element <{kind}> in {path!r}")
            continue
        name = _name(child, where)
        full = f"{path}/{name}" if path else name
        if kind == "Group":
            _walk(child, full, dims, where, found, attributes)
        elif kind in _DAP_TYPES or kind in _REFUSED_TYPES:
            found[full] = (child, "/" + path if path else "")
        else:
            raise UnsupportedError(f"{where}: unknown DAP4 element <{kind}> ({full!r})")


def _manifest(plan: _Plan, url: str) -> ChunkManifest:
    present = plan.offsets >= 0
    if plan.offsets.size == 0 or not present.any():
        return ChunkManifest.empty(plan.offsets.shape)
    paths: Any = url
    if not present.all():
        paths = np.where(present, url, "").astype(np.dtypes.StringDType())
    return ChunkManifest.from_arrays(
        paths=paths,
        offsets=np.where(present, plan.offsets, 0),
        lengths=np.where(present, plan.lengths, 0),
    )


def _read(source: Source, plan: _Plan, path: str) -> np.ndarray:
    """A variable's values read from the data file (for ``load``)."""
    import numcodecs

    decoders = []
    for fid in reversed(plan.filters):
        if fid == 1:
            decoders.append(zlib.decompress)
        elif fid == 2:
            decoders.append(numcodecs.Shuffle(elementsize=plan.dtype.itemsize).decode)
        else:
            decoders.append(numcodecs.Fletcher32().decode)

    def decode(raw: bytes) -> bytes:
        for step in decoders:
            raw = bytes(step(raw))
        return raw

    shape = tuple(plan.doc["shape"])
    chunks = tuple(plan.doc["chunk_grid"]["configuration"]["chunk_shape"])
    try:
        return read_chunked(
            source.read_range,
            shape=shape,
            chunks=chunks,
            offsets=plan.offsets,
            lengths=plan.lengths,
            dtype=plan.dtype,
            fill=plan.fill,
            decode=decode,
        )
    except (ValueError, RuntimeError, zlib.error) as e:
        raise BuildError(f"{source.url}: variable {path!r}: {e}") from e


def _assemble(
    arrays: dict[str, ManifestArray | InlineArray], groups: dict[str, dict[str, Any]]
) -> ManifestGroup:
    """Nested `ManifestGroup`s from flat paths."""

    def build(prefix: str) -> ManifestGroup:
        start = prefix + "/" if prefix else ""
        members = {
            p[len(start) :]: a
            for p, a in arrays.items()
            if p.startswith(start) and "/" not in p[len(start) :]
        }
        children = {
            g[len(start) :]: build(g)
            for g in groups
            if g.startswith(start) and g != prefix and "/" not in g[len(start) :]
        }
        return ManifestGroup(arrays=members, groups=children, attributes=groups.get(prefix, {}))

    return build("")
