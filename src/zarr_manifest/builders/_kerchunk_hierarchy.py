"""A kerchunk references body read as the Zarr store it describes.

The metadata documents (``.zarray``, ``.zgroup``, ``.zattrs``, ``.zmetadata``, ``zarr.json``)
give the arrays and groups; every other key is decoded to its array's chunk-grid position,
and the references become columns (URL, offset, length) or inline bytes per array.  A
parquet reference store (``kerchunk.df.refs_to_dataframe``) gives the same intermediate form
through fsspec's ``LazyReferenceMapper``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from zarr_manifest.builders._kerchunk_references import SCHEME_RE, inline_bytes, reference_int
from zarr_manifest.builders._source import open_source
from zarr_manifest.errors import (
    BuildError,
    UnsupportedError,
)
from zarr_manifest.format.paths import (
    is_absolute_url,
    url_to_local_path,
)
from zarr_manifest.format.storage_options import obstore_arguments, options_for

_STRINGS = np.dtypes.StringDType()
_META_NAMES = frozenset({".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"})

# ---- the intermediate form: metadata documents + per-array chunk columns --------------------


@dataclass
class ChunkColumns:
    """The chunk references of one array, as parallel columns over present chunks."""

    flat: np.ndarray  # flat (C order) index into the chunk grid
    urls: np.ndarray  # object: raw reference URL, None where the chunk is inline
    offsets: np.ndarray  # int64; -1 for a whole-file reference
    lengths: np.ndarray  # int64
    inline: dict[int, bytes] = field(default_factory=dict)  # flat index -> bytes


@dataclass
class ArrayNode:
    path: str
    zarr_format: int
    meta: dict[str, Any]  # .zarray (v2) or zarr.json (v3) document
    attrs: dict[str, Any]
    chunks: ChunkColumns | None = None


@dataclass
class ParsedReferences:
    arrays: dict[str, ArrayNode]
    groups: dict[str, dict[str, Any]]  # group path ("" = root) -> attributes


def _json_doc(value: Any, key: str, location: str) -> dict[str, Any]:
    """A metadata value (JSON text, bytes or an already parsed object) as a dict."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple):
        raise BuildError(f"{location}: metadata key {key!r} is a reference, not inline JSON")
    if isinstance(value, str):
        value = inline_bytes(value)
    try:
        doc = json.loads(value)
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise BuildError(f"{location}: metadata key {key!r} is not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise BuildError(f"{location}: metadata key {key!r} is not a JSON object")
    return doc


def _split_meta(key: str) -> tuple[str, str]:
    parent, _, name = key.rpartition("/")
    return parent, name


def _collect_metadata(meta: Mapping[str, Any], location: str) -> ParsedReferences:
    """Arrays and groups from the metadata keys (``.zarray``, ``.zgroup``, ``zarr.json``...)."""
    docs: dict[str, dict[str, Any]] = {}
    zmeta = meta.get(".zmetadata")
    if zmeta is not None:
        # consolidated metadata fills in keys the references do not carry themselves
        consolidated = _json_doc(zmeta, ".zmetadata", location).get("metadata") or {}
        for k, v in consolidated.items():
            if k not in meta:
                docs[k] = _json_doc(v, k, location)
    for k, v in meta.items():
        if k != ".zmetadata":
            docs[k] = _json_doc(v, k, location)
    arrays: dict[str, ArrayNode] = {}
    groups: dict[str, dict[str, Any]] = {}
    for key, doc in docs.items():
        parent, name = _split_meta(key)
        if name == ".zarray":
            attrs = docs.get(f"{parent}/.zattrs" if parent else ".zattrs", {})
            arrays[parent] = ArrayNode(parent, 2, doc, dict(attrs))
        elif name == ".zgroup":
            groups[parent] = dict(docs.get(f"{parent}/.zattrs" if parent else ".zattrs", {}))
        elif name == "zarr.json":
            node_type = doc.get("node_type")
            if doc.get("zarr_format") != 3 or node_type not in ("array", "group"):
                raise BuildError(f"{location}: {key!r} is not a Zarr v3 array or group document")
            if node_type == "array":
                arrays[parent] = ArrayNode(parent, 3, doc, dict(doc.get("attributes") or {}))
            else:
                groups[parent] = dict(doc.get("attributes") or {})
    if not arrays and not groups:
        raise BuildError(
            f"{location}: the references hold no Zarr metadata (.zgroup/.zarray/zarr.json)"
        )
    return ParsedReferences(arrays, groups)


def grid_shape(node: ArrayNode, location: str) -> tuple[int, ...]:
    if node.zarr_format == 3:
        grid = node.meta.get("chunk_grid")
        name = grid.get("name") if isinstance(grid, Mapping) else None
        if name != "regular":
            raise UnsupportedError(
                f"{location}: array {node.path!r} has chunk grid {name!r}; only regular grids "
                "are read from references"
            )
    try:
        shape = [int(s) for s in node.meta["shape"]]
        if node.zarr_format == 2:
            chunks = [int(c) for c in node.meta["chunks"]]
        else:
            chunks = [int(c) for c in node.meta["chunk_grid"]["configuration"]["chunk_shape"]]
    except (KeyError, TypeError, ValueError) as e:
        raise BuildError(
            f"{location}: array {node.path!r} has invalid shape/chunks metadata ({e})"
        ) from e
    if len(shape) != len(chunks) or any(c <= 0 for c in chunks) or any(s < 0 for s in shape):
        raise BuildError(f"{location}: array {node.path!r} has shape {shape} but chunks {chunks}")
    return tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))


class _KeyDecoder:
    """Maps a chunk key of the references to (array path, chunk index)."""

    def __init__(self, parsed: ParsedReferences, location: str):
        self.location = location
        self.grids = {p: grid_shape(n, location) for p, n in parsed.arrays.items()}
        self.nodes = parsed.arrays
        self._v3_decoders: dict[str, Any] = {}
        self.max_depth = 1 + max((len(g) for g in self.grids.values()), default=0)
        # arrays whose chunk keys are "<array>/<i.j.k>": decoded by one split
        self.dotted = {
            p
            for p, n in parsed.arrays.items()
            if n.zarr_format == 2 and n.meta.get("dimension_separator", ".") != "/"
        }

    def decode(self, key: str) -> tuple[str, list[int]] | None:
        """(array, chunk index) of a chunk key; None for keys of no array (ignored)."""
        parent, _, name = key.rpartition("/")
        if parent in self.dotted:
            return parent, self._ints(name.split("."), parent, key)
        # "/"-separated v2 keys and v3 keys: the array is some ancestor of the key
        prefix = key
        for _ in range(self.max_depth + 1):
            prefix = prefix.rpartition("/")[0] if "/" in prefix else ""
            node = self.nodes.get(prefix)
            if node is not None:
                rest = key[len(prefix) + 1 :] if prefix else key
                if node.zarr_format == 2:
                    return prefix, self._ints(rest.split("/"), prefix, key)
                return prefix, self._v3_index(node, rest, key)
            if not prefix:
                break
        return None

    def _ints(self, parts: list[str], path: str, key: str) -> list[int]:
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise BuildError(
                f"{self.location}: key {key!r} is not a chunk key of array {path!r}"
            ) from None

    def _v3_index(self, node: ArrayNode, rest: str, key: str) -> list[int]:
        dec = self._v3_decoders.get(node.path)
        if dec is None:
            from zarr.core.chunk_key_encodings import parse_chunk_key_encoding

            try:
                dec = parse_chunk_key_encoding(
                    node.meta.get("chunk_key_encoding") or {"name": "default"}
                )
            except (ValueError, TypeError, KeyError) as e:
                raise BuildError(
                    f"{self.location}: array {node.path!r}: invalid chunk_key_encoding ({e})"
                ) from e
            self._v3_decoders[node.path] = dec
        try:
            index = [int(i) for i in dec.decode_chunk_key(rest)]
        except (ValueError, TypeError) as e:
            raise BuildError(
                f"{self.location}: key {key!r} is not a chunk key of array {node.path!r}"
            ) from e
        return index if index or self.grids[node.path] else [0]

    def ravel_dotted(self, path: str, names: list[str]) -> np.ndarray:
        """Flat grid positions of ``"i.j.k"`` chunk-key strings of one array."""
        grid = self.grids[path]
        ndim = max(len(grid), 1)
        prefix = f"{path}/" if path else ""
        dots = np.strings.count(np.asarray(names, dtype=_STRINGS), ".")
        bad = np.flatnonzero(dots != ndim - 1)
        if bad.size:
            key = prefix + names[int(bad[0])]
            raise BuildError(
                f"{self.location}: chunk key {key!r} does not have {ndim} indices for "
                f"array {path!r}"
            )
        try:
            parts = np.fromiter(map(int, ".".join(names).split(".")), np.int64)
        except ValueError:
            key = next(prefix + n for n in names if not all(p.isdigit() for p in n.split(".")))
            raise BuildError(
                f"{self.location}: key {key!r} is not a chunk key of array {path!r}"
            ) from None
        return self._ravel_checked(
            path, parts.reshape(len(names), ndim), lambda i: prefix + names[i]
        )

    def ravel(self, path: str, indices: list[list[int]], keys: list[str]) -> np.ndarray:
        """Flat (C order) grid positions of chunk indices, checked against the grid."""
        grid = self.grids[path]
        ndim = max(len(grid), 1)
        bad = next((k for k, i in zip(keys, indices, strict=True) if len(i) != ndim), None)
        if bad is not None:
            raise BuildError(
                f"{self.location}: chunk key {bad!r} does not have {ndim} indices for "
                f"array {path!r}"
            )
        idx = np.asarray(indices, dtype=np.int64).reshape(len(indices), ndim)
        return self._ravel_checked(path, idx, lambda i: keys[i])

    def _ravel_checked(
        self, path: str, idx: np.ndarray, key_of: Callable[[int], str]
    ) -> np.ndarray:
        grid = self.grids[path]
        bounds = np.asarray(grid if grid else (1,), dtype=np.int64)
        outside = ((idx < 0) | (idx >= bounds)).any(axis=1)
        if outside.any():
            key = key_of(int(np.argmax(outside)))
            raise BuildError(
                f"{self.location}: chunk key {key!r} is outside the chunk grid {grid} of "
                f"array {path!r}"
            )
        if not grid:
            if len(idx) > 1:
                raise BuildError(f"{self.location}: array {path!r} has two keys for its one chunk")
            return np.zeros(len(idx), dtype=np.int64)
        flat = np.ravel_multi_index(tuple(idx.T), grid).astype(np.int64)
        seen = np.zeros(int(np.prod(grid, dtype=np.int64)), dtype=bool)
        seen[flat] = True
        if int(np.count_nonzero(seen)) != flat.size:
            raise BuildError(f"{self.location}: array {path!r} has two keys for the same chunk")
        return flat


def _is_meta_key(key: str) -> bool:
    return (".z" in key or "zarr.json" in key) and key.rpartition("/")[2] in _META_NAMES


def parse_references(
    refs: Mapping[str, Any],
    location: str,
    fetch: Callable[[str, Any], bytes] | None = None,
) -> ParsedReferences:
    """The intermediate form of a references body (version 0 form, templates unexpanded).

    ``fetch(key, reference)`` reads a metadata document that is itself a reference.
    """
    meta: dict[str, Any] = {}
    for key in refs:
        if _is_meta_key(key):
            value = refs[key]
            if isinstance(value, list | tuple) and fetch is not None:
                value = fetch(key, value)
            meta[key] = value
    parsed = _collect_metadata(meta, location)
    decoder = _KeyDecoder(parsed, location)
    # "<array>/<i.j.k>" keys of "."-separated v2 arrays: chunk-key strings and values
    dotted: dict[str, tuple[list[str], list[Any]]] = {p: ([], []) for p in decoder.dotted}
    # every other chunk key: keys, decoded indices and values
    other: dict[str, tuple[list[str], list[list[int]], list[Any]]] = {}
    for key, value in refs.items():
        parent, _, name = key.rpartition("/")
        bucket = dotted.get(parent)
        if bucket is not None:
            if name[:2] != ".z":
                bucket[0].append(name)
                bucket[1].append(value)
            continue
        if key in meta:
            continue
        hit = decoder.decode(key)
        if hit is None:
            continue  # a stray object outside every array: not part of the Zarr hierarchy
        keys, indices, values = other.setdefault(hit[0], ([], [], []))
        keys.append(key)
        indices.append(hit[1])
        values.append(value)
    for path, (names, values) in dotted.items():
        if names:
            prefix = f"{path}/" if path else ""
            flat = decoder.ravel_dotted(path, names)
            parsed.arrays[path].chunks = _chunk_columns(
                flat, values, _prefixed_key(prefix, names), location
            )
    for path, (keys, indices, values) in other.items():
        flat = decoder.ravel(path, indices, keys)
        parsed.arrays[path].chunks = _chunk_columns(flat, values, keys.__getitem__, location)
    return parsed


def _int_column(
    values: list[Any], key_of: Callable[[int], str], what: str, location: str
) -> np.ndarray:
    """Offsets or lengths as int64, each checked to be a non-negative integer."""
    arr = np.asarray(values) if values else np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        # not all plain integers: check one by one (and name the first bad one)
        arr = np.asarray(
            [reference_int(v, key_of(i), what, location) for i, v in enumerate(values)],
            dtype=np.int64,
        )
    negative = np.flatnonzero(arr < 0)
    if negative.size:
        i = int(negative[0])
        raise BuildError(f"{location}: reference {key_of(i)!r} has a negative {what} {arr[i]}")
    return arr.astype(np.int64, copy=False)


def _prefixed_key(prefix: str, names: list[str]) -> Callable[[int], str]:
    """The store key of the ``i``-th reference: ``prefix`` and its chunk name."""

    def key_of(i: int) -> str:
        return prefix + names[i]

    return key_of


def _chunk_columns(
    flat: np.ndarray, values: list[Any], key_of: Callable[[int], str], location: str
) -> ChunkColumns:
    """Reference values (``[url, offset, length]``, ``[url]``, inline data) as columns."""
    if all(type(v) is list and len(v) == 3 for v in values):
        # the common case, done column-wise
        urls = list(map(itemgetter(0), values))
        offs = _int_column(list(map(itemgetter(1), values)), key_of, "offset", location)
        lens = _int_column(list(map(itemgetter(2), values)), key_of, "length", location)
        return ChunkColumns(flat, np.asarray(urls, dtype=object), offs, lens, {})
    rows: list[int] = []
    urls = []
    offsets: list[Any] = []
    lengths: list[Any] = []
    inline: dict[int, bytes] = {}
    for i, (f, value) in enumerate(zip(flat.tolist(), values, strict=True)):
        if isinstance(value, str):
            inline[f] = inline_bytes(value)
        elif isinstance(value, bytes):
            inline[f] = value
        elif isinstance(value, dict):
            inline[f] = orjson.dumps(value)
        elif isinstance(value, list | tuple) and len(value) in (1, 3):
            rows.append(i)
            urls.append(value[0])
            offsets.append(value[1] if len(value) == 3 else None)  # None: whole file
            lengths.append(value[2] if len(value) == 3 else 0)
        elif value is None:
            continue
        else:
            raise BuildError(
                f"{location}: reference {key_of(i)!r} is not data, [url] or "
                f"[url, offset, length]: {value!r}"
            )
    row_keys = [key_of(i) for i in rows] if rows else []

    def row_key(j: int) -> str:
        return row_keys[j]

    whole = np.asarray([o is None for o in offsets], dtype=bool)
    offs = _int_column(
        [0 if w else o for w, o in zip(whole, offsets, strict=True)], row_key, "offset", location
    )
    lens = _int_column(lengths, row_key, "length", location)
    return ChunkColumns(
        flat[np.asarray(rows, dtype=np.int64)],
        np.asarray(urls, dtype=object),
        np.where(whole, -1, offs) if len(offs) else offs,
        lens,
        inline,
    )


# ---- parquet reference stores --------------------------------------------------------------


def parse_parquet_references(root: str, fs: Any, location: str) -> ParsedReferences:
    """The intermediate form of a kerchunk parquet store, read with fsspec's LazyReferenceMapper."""
    import pandas as pd
    from fsspec.implementations.reference import LazyReferenceMapper

    mapper = LazyReferenceMapper(root, fs=fs)
    try:
        zmetadata = mapper.zmetadata
        record_size = int(mapper.record_size)
    except FileNotFoundError as e:
        raise BuildError(
            f"{location}: no .zmetadata: not a kerchunk parquet reference store"
        ) from e
    except (KeyError, ValueError, TypeError) as e:
        raise BuildError(f"{location}: invalid parquet .zmetadata ({e})") from e
    parsed = _collect_metadata(dict(zmetadata), location)
    grids = {p: grid_shape(n, location) for p, n in parsed.arrays.items()}
    for path, node in parsed.arrays.items():
        if node.zarr_format != 2 or not path:
            raise BuildError(
                f"{location}: array {path!r}: parquet references hold Zarr v2 arrays in groups"
            )
        n = int(np.prod(grids[path], dtype=np.int64))
        if n == 0:
            continue
        parts: dict[str, list[np.ndarray]] = {"path": [], "offset": [], "size": [], "raw": []}
        for record in range(math.ceil(n / record_size)):
            want = min(record_size, n - record * record_size)
            try:
                refs = mapper.open_refs(path, record)
            except FileNotFoundError:
                refs = None  # a record never written: all its chunks are missing
            if refs is None:
                refs = {}
            for name in parts:
                col = refs.get(name)
                if col is None:
                    fill: Any = None if name in ("path", "raw") else 0
                    col = np.full(want, fill, dtype=object if fill is None else np.int64)
                col = np.asarray(col)
                if len(col) < want:
                    raise BuildError(
                        f"{location}: {path}/refs.{record}.parq has {len(col)} rows, "
                        f"expected {want}"
                    )
                parts[name].append(col[:want])
        urls = np.concatenate(parts["path"]).astype(object)
        raws = np.concatenate(parts["raw"]).astype(object)
        offsets = np.concatenate(parts["offset"]).astype(np.int64)
        sizes = np.concatenate(parts["size"]).astype(np.int64)
        # absent values are None or NaN, depending on how the record was written
        has_url = ~pd.isna(urls)
        has_raw = ~pd.isna(raws)
        ref = has_url & ~has_raw
        whole = ref & (offsets == 0) & (sizes == 0)  # [url]: the whole file (fsspec's rule)
        offsets = np.where(whole, -1, offsets)
        flat = np.flatnonzero(ref)
        inline = {int(i): bytes(raws[i]) for i in np.flatnonzero(has_raw)}
        node.chunks = ChunkColumns(
            flat.astype(np.int64), urls[flat], offsets[flat], sizes[flat], inline
        )
    return parsed


def parquet_filesystem(url: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    """An fsspec filesystem and root path for a parquet reference store at ``url``."""
    import fsspec

    if not is_absolute_url(url) or url.startswith("file://"):
        local = url_to_local_path(url) if url.startswith("file://") else os.path.abspath(url)
        return fsspec.filesystem("file"), local.rstrip("/")
    scheme = SCHEME_RE.match(url)
    protocol = scheme.group(1).lower() if scheme else ""
    # obstore's fsspec adapter reads every scheme obstore does, with the same options
    from obstore.fsspec import FsspecStore

    kwargs = obstore_arguments(url, options_for(url, storage_options))
    # (obstore checks the protocol at run time; its stub lists only a few literals)
    return FsspecStore(protocol, **kwargs), url.rstrip("/")  # type: ignore[arg-type]


def remote_is_parquet(url: str, obstore_kwargs: Mapping[str, Any]) -> bool:
    """Whether a remote URL is a parquet reference store (a prefix with ``.zmetadata``)."""
    try:
        with open_source(url.rstrip("/") + "/.zmetadata", **obstore_kwargs).open() as f:
            data = bytes(f.read())
    except (FileNotFoundError, OSError):
        return False
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and "record_size" in doc
