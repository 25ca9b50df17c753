"""kerchunk references (JSON v0/v1, parquet) -> `ManifestGroup`: the one translator.

Every kerchunk-shaped input (a references JSON file, a parquet reference store, the refs
kerchunk's or tifffile's scanners produce for TIFF, FITS and GRIB) goes through
`from_kerchunk_refs`.  The references format itself (versions, templates, ``gen``, inline
values, fsspec paths as URLs) is read by `zarr_manifest.builders._kerchunk_references`, and
the Zarr store the references describe (arrays, groups, chunk keys as grid positions, parquet
stores) by `zarr_manifest.builders._kerchunk_hierarchy`.  This module is the translation to
Zarr v3:

- each Zarr v2 array (``.zarray``/``.zattrs``, ``_ARRAY_DIMENSIONS``) becomes Zarr v3
  metadata (data type with its byte order in the ``bytes`` codec, order F as a ``transpose``
  codec, fill value, filters + compressor through
  `zarr_manifest.builders.codecs.v2_codecs_to_v3`); Zarr v3 ``zarr.json`` documents in the
  refs are taken as they are.
- chunk references become manifest entries; ``[url]`` becomes offset 0 and the file's size.
  An array whose chunks are all inline, or mixed inline and referenced, or whose data type
  has no virtual form, is decoded through zarr (Zarr v2 rules) and kept as an `InlineArray`.

Reference URLs are fsspec paths, not URLs: ``/data/x.nc`` and ``s3://bucket/a b.nc`` name
objects verbatim.  They are turned into canonical URLs (``file:///data/x.nc``,
``s3://bucket/a%20b.nc``); relative ones resolve against ``base_url``.

References are untrusted input: a references *file* may point only under its own directory
and the prefixes the caller allows (``allowed_prefixes``), checked with the store's own
default-deny rules (`zarr_manifest.format.allowed_prefixes`: canonical URLs, symlinks
resolved) when each URL is resolved -- before anything is read from it, a HEAD request is
sent for it, or it is written into a manifest.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
import orjson

from zarr_manifest._pipelines import FUSED_PIPELINE
from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._kerchunk_hierarchy import (
    ArrayNode,
    ParsedReferences,
    grid_shape,
    parquet_filesystem,
    parse_parquet_references,
    parse_references,
    remote_is_parquet,
)
from zarr_manifest.builders._kerchunk_references import (
    Templates,
    expand_refs,  # re-exported: the public reading of a references document
    read_kerchunk_refs,  # re-exported
    reference_int,
    reference_url,
    references_parts,
    with_generated,
)
from zarr_manifest.builders._raw_chunks import check_raw_lengths
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import (
    v2_codecs_to_v3,
    v3_array_document,
    xarray_fill_value_attribute,
)
from zarr_manifest.errors import (
    BuildError,
    SourceNotAllowedError,
    UnsupportedError,
)
from zarr_manifest.format.allowed_prefixes import AllowedPrefixes
from zarr_manifest.format.paths import (
    canonical_url,
    is_absolute_url,
    local_path_to_url,
    url_to_fsspec_path,  # re-exported: kerchunk-based builders use it
    url_to_local_path,
)
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

__all__ = [
    "build_kerchunk",
    "expand_refs",
    "from_kerchunk_refs",
    "insert_array",
    "read_kerchunk_refs",
    "url_to_fsspec_path",
]

_STRINGS = np.dtypes.StringDType()


def _allowed(prefixes: Iterable[str]) -> AllowedPrefixes[None]:
    """The places ``prefixes`` (URLs or local directories, each taken as a directory) allow."""
    return AllowedPrefixes.of(prefixes, None, as_directory=True)


class _Resolver:
    """Canonical URLs and whole-file sizes, each computed once per distinct reference URL.

    With ``allowed``, every URL is checked against it as it is resolved.  ``templates``
    (those of the references document, once it is read) fill in templated URLs.
    """

    def __init__(
        self,
        base_url: str | None,
        location: str,
        source_options: Mapping[str, Any],
        allowed: AllowedPrefixes[None] | None = None,
    ):
        self.base_url = base_url
        self.location = location
        self.source_options = dict(source_options)
        self.templates: Templates | None = None
        self.allowed = allowed
        self._urls: dict[str, str] = {}
        self._sizes: dict[str, int] = {}

    def url(self, raw: Any, key_hint: str) -> str:
        """The canonical URL of a reference's URL (templates filled in)."""
        out = self._urls.get(raw) if isinstance(raw, str) else None
        if out is None:
            if not isinstance(raw, str) or not raw:
                raise BuildError(
                    f"{self.location}: a reference of {key_hint!r} has an invalid URL {raw!r}"
                )
            text = raw
            if "{{" in text and self.templates is not None:
                text = self.templates.url(text)
            out = reference_url(text, self.base_url, key_hint, self.location)
            self._check_allowed(out, key_hint)
            self._urls[raw] = out
        return out

    def _check_allowed(self, url: str, key_hint: str) -> None:
        if self.allowed is None:
            return
        try:
            self.allowed.resolve(url, key=key_hint)
        except SourceNotAllowedError as e:
            raise SourceNotAllowedError(
                f"{self.location}: {e}; a references file may point only under its own "
                "directory and the prefixes passed as allowed_prefixes=[...]",
                key=key_hint,
                path=url,
            ) from e

    def fetch(self, key: str, ref: Any) -> bytes:
        """The bytes a ``[url]`` / ``[url, offset, length]`` reference names."""
        if not isinstance(ref, list | tuple) or len(ref) not in (1, 3):
            raise BuildError(
                f"{self.location}: reference {key!r} is not [url] or [url, offset, length]"
            )
        url = self.url(ref[0], key)
        source = self.source(url)
        try:
            if len(ref) == 1:
                return source.read_range(0, self.size(url))
            offset = reference_int(ref[1], key, "offset", self.location)
            length = reference_int(ref[2], key, "length", self.location)
            return source.read_range(offset, length)
        except OSError as e:
            raise BuildError(f"{self.location}: cannot read {key!r} from {url} ({e})") from e

    def source(self, url: str) -> Source:
        try:
            return open_source(
                url, **(self.source_options if not url.startswith("file://") else {})
            )
        except FileNotFoundError as e:
            raise BuildError(f"{self.location}: referenced file {url} does not exist") from e

    def size(self, url: str) -> int:
        out = self._sizes.get(url)
        if out is None:
            try:
                out = self.source(url).size()
            except (OSError, FileNotFoundError) as e:
                raise BuildError(
                    f"{self.location}: cannot get the size of referenced file {url} ({e})"
                ) from e
            self._sizes[url] = out
        return out


# ---- metadata conversion -------------------------------------------------------------------


def _v2_dtype(node: ArrayNode) -> np.dtype[Any]:
    raw = node.meta.get("dtype")
    if isinstance(raw, list):
        raw = [tuple(f) for f in raw]
    return np.dtype(raw)


def _v2_to_v3_metadata(
    node: ArrayNode, location: str, cf_fill_value: bool = False
) -> dict[str, Any]:
    """Zarr v3 array metadata (a zarr.json dict) for a Zarr v2 ``.zarray`` + ``.zattrs``.

    Raises
    ------
    UnsupportedError
        A data type or codec with no Zarr v3 form zarr-python reads.
    """
    from zarr.core.dtype import (
        VariableLengthBytes,
        VariableLengthUTF8,
        get_data_type_from_native_dtype,
    )

    meta = node.meta
    name = node.path or "<root array>"
    if meta.get("zarr_format", 2) != 2:
        raise BuildError(
            f"{location}: array {name!r}: .zarray has zarr_format {meta.get('zarr_format')!r}"
        )
    try:
        dtype = _v2_dtype(node)
    except (TypeError, ValueError) as e:
        raise BuildError(
            f"{location}: array {name!r} has an invalid dtype {meta.get('dtype')!r} ({e})"
        ) from e
    filters = list(meta.get("filters") or [])
    compressor = meta.get("compressor")
    zdtype: Any
    if dtype.kind == "O":
        # the object codec (first filter) says what the objects are
        ids = [f.get("id") for f in filters if isinstance(f, Mapping)]
        if "vlen-utf8" in ids:
            zdtype = VariableLengthUTF8()
        elif "vlen-bytes" in ids:
            zdtype = VariableLengthBytes()
        else:
            raise UnsupportedError(
                f"{location}: array {name!r} has object dtype with filters {ids}; only vlen-utf8 "
                "and vlen-bytes objects can be read virtually"
            )
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zdtype = get_data_type_from_native_dtype(dtype)
        except (TypeError, ValueError) as e:
            raise UnsupportedError(
                f"{location}: array {name!r}: dtype {dtype} has no Zarr v3 data type ({e})"
            ) from e
    shape = [int(s) for s in meta["shape"]]
    codecs = v2_codecs_to_v3(
        dtype,
        str(meta.get("order", "C")),
        filters or None,
        compressor,
        ndim=len(shape),
        variable=name,
    )
    fill = meta.get("fill_value")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = (
                zdtype.default_scalar()
                if fill is None
                else zdtype.from_json_scalar(fill, zarr_format=2)
            )
            fill_v3 = zdtype.to_json_scalar(value, zarr_format=3)
            data_type = zdtype.to_json(zarr_format=3)
    except (TypeError, ValueError) as e:
        raise BuildError(
            f"{location}: array {name!r} has an invalid fill_value {fill!r} ({e})"
        ) from e
    attrs = dict(node.attrs)
    dims = attrs.pop("_ARRAY_DIMENSIONS", None)
    if dims is not None and (not isinstance(dims, list) or len(dims) != len(shape)):
        dims = None  # malformed: keep nothing rather than wrong names
    numeric_fill = attrs.get("_FillValue")
    if dtype.kind == "f" and type(numeric_fill) in (int, float):
        # a float _FillValue attribute kept as a JSON number (VirtualiZarr writes NaN so):
        # xarray reads Zarr v3 float _FillValue attributes only in its base64 encoding
        attrs["_FillValue"] = xarray_fill_value_attribute(numeric_fill, dtype)
    if cf_fill_value and _fill_is_netcdf_fill_value(fill, dtype, attrs, dims, filters):
        # xarray masks a Zarr v3 array by its _FillValue attribute only, in its own encoding
        attrs["_FillValue"] = xarray_fill_value_attribute(value, dtype)
    return v3_array_document(
        shape=shape,
        data_type=data_type,
        chunks=meta["chunks"],
        fill_value=fill_v3,
        codecs=codecs,
        attributes=attrs,
        dimension_names=dims,
    )


def _fill_is_netcdf_fill_value(
    fill: Any, dtype: np.dtype[Any], attrs: Mapping[str, Any], dims: Any, filters: list[Any]
) -> bool:
    """Whether a Zarr v2 ``fill_value`` stands for the source's ``_FillValue`` attribute.

    kerchunk's HDF5 scanner moves a netCDF variable's ``_FillValue`` attribute into
    ``fill_value`` (and drops the attribute); xarray reading the original file masks by it,
    so it becomes the ``_FillValue`` attribute again.  Not for the ``fill_value`` kerchunk
    copies from plain HDF5 datasets (HDF5's default fill, usually 0, on ``phony_dim_``
    axes: the original file has no ``_FillValue`` and xarray masks nothing) nor for GRIB
    messages (the codec already gives NaN where points are missing; cfgrib masks nothing).
    """
    if fill is None or "_FillValue" in attrs or dtype.kind not in "fiu":
        return False
    if not isinstance(dims, list) or not dims:
        return False
    if all(isinstance(d, str) and d.startswith("phony_dim_") for d in dims):
        return False
    ids = {f.get("id") for f in filters if isinstance(f, Mapping)}
    return "grib" not in ids


def _v3_metadata(node: ArrayNode, location: str) -> dict[str, Any]:
    doc = dict(node.meta)
    if doc.get("storage_transformers"):
        raise UnsupportedError(f"{location}: array {node.path!r} declares storage transformers")
    # chunk keys were decoded with the array's own encoding; the manifest is index based
    doc["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": "/"}}
    return doc


# ---- building arrays -----------------------------------------------------------------------


def _load_array(
    node: ArrayNode,
    grid: tuple[int, ...],
    resolver: _Resolver,
    location: str,
) -> np.ndarray:
    """Decode an array's chunks (inline and referenced) through zarr, as zarr itself would."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    store = zarr.storage.MemoryStore()
    chunks = node.chunks
    name = node.path or "<root array>"
    if node.zarr_format == 2:
        store._store_dict[".zarray"] = proto.buffer.from_bytes(
            orjson.dumps(node.meta, option=orjson.OPT_SERIALIZE_NUMPY)
        )
        sep = node.meta.get("dimension_separator") or "."

        def key_of(flat: int) -> str:
            return sep.join(map(str, np.unravel_index(flat, grid))) if grid else "0"

    else:
        store._store_dict["zarr.json"] = proto.buffer.from_bytes(orjson.dumps(node.meta))
        from zarr.core.chunk_key_encodings import parse_chunk_key_encoding

        enc = parse_chunk_key_encoding(node.meta.get("chunk_key_encoding") or {"name": "default"})

        def key_of(flat: int) -> str:
            return enc.encode_chunk_key(
                tuple(int(i) for i in np.unravel_index(flat, grid)) if grid else ()
            )

    if chunks is not None:
        for flat, data in chunks.inline.items():
            store._store_dict[key_of(flat)] = proto.buffer.from_bytes(data)
        by_url: dict[str, list[int]] = {}
        for i, raw in enumerate(chunks.urls):
            by_url.setdefault(resolver.url(raw, name), []).append(i)
        for url, rows in by_url.items():
            source = resolver.source(url)
            try:
                with source.open() as f:
                    for i in rows:
                        off = int(chunks.offsets[i])
                        length = resolver.size(url) if off < 0 else int(chunks.lengths[i])
                        f.seek(max(off, 0))
                        data = bytes(f.read(length))
                        if len(data) != length:
                            raise BuildError(
                                f"{location}: array {name!r}: {url} ends before the chunk at "
                                f"offset {off} (length {length})"
                            )
                        store._store_dict[key_of(int(chunks.flat[i]))] = proto.buffer.from_bytes(
                            data
                        )
            except OSError as e:
                raise BuildError(f"{location}: array {name!r}: cannot read {url} ({e})") from e
    try:
        # the fused pipeline decodes chunks without zarr's per-chunk coroutines and threads:
        # loading 6,646 four-byte records took seconds an array through the default one
        with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": FUSED_PIPELINE}):
            warnings.simplefilter("ignore")
            arr = zarr.open_array(store, mode="r", zarr_format=2 if node.zarr_format == 2 else 3)
            return np.asarray(arr[...])
    except Exception as e:  # zarr/numcodecs raise many kinds on undecodable data
        raise UnsupportedError(
            f"{location}: array {name!r} cannot be decoded through zarr ({e})"
        ) from e


def _inline_array(data: np.ndarray, v3: dict[str, Any] | None, node: ArrayNode) -> InlineArray:
    if data.dtype == object:
        kinds = {type(x) for x in data.reshape(-1)}
        if kinds <= {str}:
            data = data.astype(_STRINGS)
        elif kinds <= {bytes}:
            data = data.astype("S")
    if v3 is not None and not _writable_codecs(v3.get("codecs") or []):
        v3 = None  # e.g. GRIB: the source's codec decodes but cannot encode the loaded values
    if v3 is not None:
        try:
            return InlineArray(v3, data)
        except (ValueError, TypeError):
            pass  # e.g. a data type zarr cannot write in v3: fall back to a plain inline array
    attrs = dict(node.attrs)
    dims = (
        attrs.pop("_ARRAY_DIMENSIONS", None)
        if node.zarr_format == 2
        else node.meta.get("dimension_names")
    )
    if dims is not None and len(dims) != data.ndim:
        dims = None
    return InlineArray.from_numpy(data, dimension_names=dims, attributes=attrs)


def _writable_codecs(codecs: list[Any]) -> bool:
    """Whether zarr can also encode with these codecs (so loaded data may keep them)."""
    from zarr.abc.codec import ArrayBytesCodec
    from zarr.registry import get_codec_class

    for codec in codecs:
        name = codec.get("name") if isinstance(codec, Mapping) else None
        if name in ("bytes", "vlen-utf8", "vlen-bytes", "sharding_indexed"):
            continue
        try:
            cls = get_codec_class(str(name))
        except (KeyError, ValueError, TypeError):
            return False
        if issubclass(cls, ArrayBytesCodec):
            return False  # a format-specific decoder (GRIB...), not a general codec
    return True


def _build_array(
    node: ArrayNode,
    *,
    force_load: bool,
    resolver: _Resolver,
    location: str,
    cf_fill_value: bool = False,
) -> ManifestArray | InlineArray:
    name = node.path or "<root array>"
    grid = grid_shape(node, location)
    v3: dict[str, Any] | None
    why: UnsupportedError | None = None
    try:
        v3 = (
            _v2_to_v3_metadata(node, location, cf_fill_value)
            if node.zarr_format == 2
            else _v3_metadata(node, location)
        )
    except UnsupportedError as e:
        v3, why = None, e
    chunks = node.chunks
    n_inline = len(chunks.inline) if chunks is not None else 0
    n_refs = len(chunks.flat) if chunks is not None else 0
    if force_load or v3 is None or n_inline:
        try:
            data = _load_array(node, grid, resolver, location)
        except UnsupportedError:
            if why is not None:
                raise why from None
            raise
        return _inline_array(data, v3, node)
    paths = np.full(grid, "", dtype=_STRINGS)
    offsets = np.zeros(grid, dtype=np.int64)
    lengths = np.zeros(grid, dtype=np.int64)
    if n_refs:
        assert chunks is not None
        # factorize the URLs: each distinct one is resolved (and maybe sized) once
        codes: dict[Any, int] = {}
        try:
            inverse = np.fromiter(
                (codes.setdefault(u, len(codes)) for u in chunks.urls.tolist()), np.int64
            )
        except TypeError:  # an unhashable (list, dict) URL
            bad = next(u for u in chunks.urls.tolist() if not isinstance(u, str))
            raise BuildError(f"{location}: array {name!r} has a reference URL {bad!r}") from None
        canon = [resolver.url(u, name) for u in codes]
        urls = np.asarray(canon, dtype=_STRINGS)[inverse]
        offs = chunks.offsets.copy()
        lens = chunks.lengths.copy()
        whole = offs < 0
        if whole.any():
            sizes = np.zeros(len(canon), dtype=np.int64)
            for code in np.unique(inverse[whole]).tolist():
                sizes[code] = resolver.size(canon[code])
            lens[whole] = sizes[inverse[whole]]
            offs[whole] = 0
        flat_paths = paths.reshape(-1)
        flat_paths[chunks.flat] = urls
        paths = flat_paths.reshape(grid)
        offsets.reshape(-1)[chunks.flat] = offs
        lengths.reshape(-1)[chunks.flat] = lens
    manifest = ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)
    try:
        array = ManifestArray(v3, manifest)
    except ValueError as e:
        raise BuildError(f"{location}: array {name!r}: {e}") from e
    check_raw_lengths(array, paths, lengths, f"{location}: array {name!r}")
    return array


def _parse_json_references(
    refs: Mapping[str, Any], resolver: _Resolver, location: str
) -> ParsedReferences:
    """The hierarchy a references document (any version) describes, ``gen`` entries included.

    The document's templates fill in the URLs ``resolver`` resolves; metadata documents that
    are themselves references are read through it.
    """
    body, tmpl, gens = references_parts(refs, location)
    resolver.templates = tmpl
    return parse_references(with_generated(body, gens, tmpl, location), location, resolver.fetch)


def _assemble(
    parsed: ParsedReferences,
    *,
    group: str | None,
    drop: Collection[str],
    load: Collection[str],
    resolver: _Resolver,
    location: str,
    root_array_name: str,
    cf_fill_value: bool = False,
) -> ManifestGroup:
    """The `ManifestGroup` rooted at ``group`` from the parsed hierarchy."""
    start = (group or "").strip("/")
    arrays = dict(parsed.arrays)
    groups = dict(parsed.groups)
    if "" in arrays:
        if start:
            raise BuildError(f"{location}: the references hold a single array, not group {group!r}")
        # a store that is one array (tifffile's single-image refs): name it inside a root group
        node = arrays.pop("")
        node.path = root_array_name
        arrays[root_array_name] = node
        groups.setdefault("", {})
    if start:
        if start in arrays:
            raise BuildError(f"{location}: {group!r} is an array, not a group")
        if start not in groups and not any(p.startswith(start + "/") for p in arrays):
            raise BuildError(f"{location}: no group {group!r} in the references")
        prefix = start + "/"
        arrays = {p[len(prefix) :]: n for p, n in arrays.items() if p.startswith(prefix)}
        groups = {p[len(prefix) :]: a for p, a in groups.items() if p.startswith(prefix)} | {
            "": groups.get(start, {})
        }
    unknown = sorted((set(drop) | set(load)) - set(arrays))
    if unknown:
        raise BuildError(f"{location}: no variable(s) {unknown} in the references (drop/load)")
    built: dict[str, ManifestArray | InlineArray] = {}
    for path, node in arrays.items():
        if path in drop:
            continue
        built[path] = _build_array(
            node,
            force_load=path in load,
            resolver=resolver,
            location=location,
            cf_fill_value=cf_fill_value,
        )
    # every ancestor of an array is a group, declared or not (implicit groups)
    for path in built:
        parts = path.split("/")
        for i in range(1, len(parts)):
            groups.setdefault("/".join(parts[:i]), {})
    groups.setdefault("", {})

    def make(gpath: str) -> ManifestGroup:
        prefix = f"{gpath}/" if gpath else ""
        child_arrays = {
            p[len(prefix) :]: a
            for p, a in built.items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        }
        child_groups = {
            p[len(prefix) :]: make(p)
            for p in groups
            if p and p.startswith(prefix) and "/" not in p[len(prefix) :]
        }
        return ManifestGroup(
            arrays=child_arrays, groups=child_groups, attributes=groups.get(gpath, {})
        )

    return make("")


def insert_array(
    group: ManifestGroup, path: str, array: ManifestArray | InlineArray
) -> ManifestGroup:
    """``group`` with ``array`` placed at ``path`` (``"a/b/x"``), creating groups on the way.

    The scanner-based builders use it to add the arrays they had to load themselves.
    """
    head, _, rest = path.strip("/").partition("/")
    if not rest:
        return group.replace(arrays={**group.arrays, head: array})
    child = group.groups.get(head, ManifestGroup())
    return group.replace(groups={**group.groups, head: insert_array(child, rest, array)})


# ---- public API ------------------------------------------------------------------------------


def from_kerchunk_refs(
    refs: Mapping[str, Any],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    base_url: str | None = None,
    root_array_name: str = "data",
    source_options: Mapping[str, Any] | None = None,
    location: str = "<refs>",
    allowed_prefixes: Iterable[str] | None = None,
    cf_fill_value: bool = False,
) -> ManifestGroup:
    """Translate kerchunk references (version 0 or 1, as a dict) into a `ManifestGroup`.

    Parameters
    ----------
    refs
        The references, as loaded from JSON (or as kerchunk's scanners return them).
    group
        The group to start from (``"a/b"``).
    drop
        Arrays to leave out (paths relative to ``group``).
    load
        Arrays to read now and keep inline (paths relative to ``group``).
    base_url
        The directory URL relative reference paths resolve against; by default they are
        relative to the working directory, as for fsspec's local filesystem.
    root_array_name
        The name given to the array when the references are a single array (no group).
    source_options
        obstore options for reading referenced remote files (whole-file sizes, loading).
    location
        Named in error messages (the references file).
    allowed_prefixes
        URL prefixes (or local directories) the references may point under; any other
        reference is refused before it is read, sized or recorded.  None (the default)
        checks nothing: the references are the caller's own (built in memory, or by a
        scanner from a file the caller opened).  `build_kerchunk` (a references *file*)
        always checks.
    cf_fill_value
        Whether a Zarr v2 ``fill_value`` becomes the ``_FillValue`` attribute xarray masks
        by, as xarray reading the references as Zarr v2 does: kerchunk's HDF5 scanner moves a
        netCDF variable's ``_FillValue`` there.  Not on ``phony_dim_`` axes (plain HDF5
        datasets: HDF5's default fill) nor for GRIB messages.  Off here by default (the TIFF
        and FITS builders translate their own references); `build_kerchunk` turns it on.

    Returns
    -------
    ManifestGroup
        One `ManifestArray` per referenced array; arrays with inline chunks (or that were
        asked for in ``load``, or whose data type has no virtual form) as `InlineArray`.

    Raises
    ------
    BuildError
        Malformed references (the message names the key); a missing ``group`` or unknown
        ``drop``/``load`` name.
    UnsupportedError
        A codec or data type that can neither be referenced nor decoded.
    SourceNotAllowedError
        A reference outside ``allowed_prefixes`` (the message names its key and URL).
    """
    if not isinstance(refs, Mapping):
        raise BuildError(
            f"{location}: kerchunk references must be a dict, got {type(refs).__name__}"
        )
    allowed = None if allowed_prefixes is None else _allowed(allowed_prefixes)
    resolver = _Resolver(base_url, location, source_options or {}, allowed=allowed)
    parsed = _parse_json_references(refs, resolver, location)
    return _assemble(
        parsed,
        group=group,
        drop=drop,
        load=load,
        resolver=resolver,
        location=location,
        root_array_name=root_array_name,
        cf_fill_value=cf_fill_value,
    )


def build_kerchunk(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    base_url: str | None = None,
    root_array_name: str = "data",
    storage_options: Mapping[str, Any] | None = None,
    allowed_prefixes: Iterable[str] = (),
    cf_fill_value: bool = True,
    **options: Any,
) -> ManifestGroup:
    """Reference the arrays a kerchunk references file (JSON) or parquet store describes.

    The references are untrusted: they may point only under the directory holding the
    JSON file (or the parquet store), ``base_url`` when given, and ``allowed_prefixes``.
    Any other reference is refused before anything is read from it, a HEAD request is sent
    for it, or it is written into a manifest -- so a references file cannot make the build
    (or a `ManifestStore` over its result, which allows the directories of the group's
    sources) read a file or contact a host the caller did not name.

    Parameters
    ----------
    source
        A JSON references file (optionally gzip/zstd/bz2 compressed) or a parquet reference
        store directory (``kerchunk.df.refs_to_dataframe`` output): a `Source`, local path or
        URL.
    group, drop, load
        As for every builder (see `from_kerchunk_refs`).
    base_url
        Where relative reference paths resolve; default: the directory holding the JSON
        file, or holding the parquet store.
    root_array_name
        The array's name when the references describe a single array.
    storage_options
        obstore options for the references themselves and the files they reference.
    allowed_prefixes
        URL prefixes (``"s3://bucket/data/"``, ``"https://host/files/"``) or local
        directories the references may point under, besides the references' own
        directory.  Matching is segment-wise on canonical URLs, with symlinks resolved for
        local files, as in `ManifestStore`.
    cf_fill_value
        A netCDF variable's ``fill_value`` becomes its ``_FillValue`` attribute, so xarray
        masks it as it masks the original file (see `from_kerchunk_refs`).
    **options
        obstore options too (what ``open_virtual`` passes on); merged into ``storage_options``.

    Raises
    ------
    BuildError
        Not kerchunk references; malformed references (named).
    SourceNotAllowedError
        A reference outside the allowed places (the message names its key and URL).
    """
    obstore_kwargs = {**dict(storage_options or {}), **options}
    if isinstance(source, Source):
        url, local = source.url, source.local_path
    elif isinstance(source, os.PathLike) or not is_absolute_url(str(source)):
        local = os.path.abspath(os.fspath(source))
        if not os.path.exists(local):
            raise FileNotFoundError(f"no such file or directory: {local}")
        url = local_path_to_url(local)
    else:
        url = canonical_url(str(source))
        local = url_to_local_path(url) if url.startswith("file://") else None
    location = url
    if local is not None:
        is_parquet = os.path.isdir(local)
    else:
        is_parquet = remote_is_parquet(url, obstore_kwargs)
    trimmed = url.rstrip("/")
    own_directory = trimmed.rsplit("/", 1)[0] + "/"
    allowed = [own_directory, *([base_url] if base_url is not None else []), *allowed_prefixes]
    if base_url is None:
        base_url = own_directory
    resolver = _Resolver(base_url, location, obstore_kwargs, allowed=_allowed(allowed))
    if is_parquet:
        fs, root = parquet_filesystem(local if local is not None else trimmed, obstore_kwargs)
        parsed = parse_parquet_references(root, fs, location)
    else:
        src = source if isinstance(source, Source) else open_source(url, **obstore_kwargs)
        with src.open() as f:
            data = bytes(f.read())
        parsed = _parse_json_references(
            read_kerchunk_refs(data, location=location), resolver, location
        )
    return _assemble(
        parsed,
        group=group,
        drop=drop,
        load=load,
        resolver=resolver,
        location=location,
        root_array_name=root_array_name,
        cf_fill_value=cf_fill_value,
    )
