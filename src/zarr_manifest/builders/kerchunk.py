"""kerchunk references (JSON v0/v1, parquet) -> `ManifestGroup`: the one translator.

Every kerchunk-shaped input (a references JSON file, a parquet reference store, the refs
kerchunk's or tifffile's scanners produce for TIFF, FITS and GRIB) goes through
`from_kerchunk_refs`, following the kerchunk references specification
(https://fsspec.github.io/kerchunk/spec.html) as fsspec's ``ReferenceFileSystem`` reads it:

- version 0: ``{key: value}``; version 1: ``{"version": 1, "templates": {...}, "gen": [...],
  "refs": {...}}``.  ``{{name}}`` in reference URLs is replaced by ``templates[name]``;
  templates that are themselves jinja strings, and ``gen`` entries (a cartesian product of
  ``dimensions`` rendering ``key``/``url``/``offset``/``length``), are rendered with jinja2's
  sandbox, as fsspec does.
- a value is inline data (a string, UTF-8 encoded, or ``"base64:..."``), ``[url]`` (the
  whole file) or ``[url, offset, length]``.
- the keys form a Zarr v2 store (``.zgroup``/``.zarray``/``.zattrs``, ``_ARRAY_DIMENSIONS``);
  each array becomes Zarr v3 metadata (data type with its byte order in the ``bytes`` codec,
  order F as a ``transpose`` codec, fill value, filters + compressor through
  `zarr_manifest.builders.codecs.v2_codecs_to_v3`).  Zarr v3 ``zarr.json`` documents in the
  refs are taken as they are.

Chunk references become manifest entries; ``[url]`` becomes offset 0 and the file's size.
An array whose chunks are all inline, or mixed inline and referenced, or whose data type has
no virtual form, is decoded through zarr (Zarr v2 rules) and kept as an `InlineArray`.

Reference URLs are fsspec paths, not URLs: ``/data/x.nc`` and ``s3://bucket/a b.nc`` name
objects verbatim.  They are turned into canonical URLs (``file:///data/x.nc``,
``s3://bucket/a%20b.nc``); relative ones resolve against ``base_url``.

References are untrusted input: a references *file* may point only under its own directory
and the prefixes the caller allows (``allowed_prefixes``), checked with the store's own
default-deny rules (`~zarr_manifest.store.sources.SourceRegistry`: canonical URLs, symlinks
resolved) when each URL is resolved -- before anything is read from it, a HEAD request is
sent for it, or it is written into a manifest.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.codecs import (
    v2_codecs_to_v3,
    v3_array_document,
    xarray_fill_value_attribute,
)
from zarr_manifest.errors import (
    BuildError,
    ManifestFormatError,
    SourceNotAllowedError,
    UnsupportedError,
)
from zarr_manifest.format.paths import (
    SCHEMES,
    canonical_url,
    is_absolute_url,
    local_path_to_url,
    resolve_reference,
    url_to_fsspec_path,  # re-exported: kerchunk-based builders use it
    url_to_local_path,
)
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest
from zarr_manifest.store.sources import SourceRegistry

__all__ = [
    "build_kerchunk",
    "expand_refs",
    "from_kerchunk_refs",
    "insert_array",
    "read_kerchunk_refs",
    "url_to_fsspec_path",
]

_STRINGS = np.dtypes.StringDType()

# fsspec protocol aliases -> the scheme obstore (and our manifests) use.
_SCHEME_ALIASES = {"gcs": "gs", "local": "file"}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# a plain "{{ name }}" placeholder, the only template syntax that needs no jinja2
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# characters kept literal when quoting a raw object key as a URL path
_PATH_SAFE = "/!$&'()*+,;=:@"
_META_NAMES = frozenset({".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"})


# ---- reading the references -----------------------------------------------------------------


def read_kerchunk_refs(data: bytes, *, location: str = "<bytes>") -> dict[str, Any]:
    """Parse a kerchunk references JSON document (optionally gzip/zstd/bz2 compressed).

    Raises
    ------
    BuildError
        Not JSON, or not a JSON object; the message names ``location``.
    """
    data = _decompress(data, location)
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        # Python's json writes NaN/Infinity, which orjson refuses; the stdlib reads them.
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise BuildError(f"{location}: not a kerchunk references JSON file ({e})") from e
    if not isinstance(doc, dict):
        raise BuildError(
            f"{location}: kerchunk references must be a JSON object, got {type(doc).__name__}"
        )
    return doc


def _decompress(data: bytes, location: str) -> bytes:
    """Undo the compression kerchunk users commonly apply to references files."""
    import numcodecs

    codec: Any = None
    if data[:2] == b"\x1f\x8b":
        codec = numcodecs.GZip()
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        codec = numcodecs.Zstd()
    elif data[:3] == b"BZh":
        codec = numcodecs.BZ2()
    if codec is None:
        return data
    try:
        return bytes(codec.decode(data))
    except Exception as e:  # numcodecs raises a variety of errors on corrupt streams
        raise BuildError(f"{location}: cannot decompress the references ({e})") from e


class _Templates:
    """Renders kerchunk jinja strings: plain ``{{name}}`` by substitution, the rest by jinja2."""

    def __init__(self, templates: Mapping[str, Any], location: str):
        self.location = location
        self.plain: dict[str, str] = {}
        self.jinja: dict[str, str] = {}
        for k, v in templates.items():
            if not isinstance(v, str):
                raise BuildError(f"{location}: template {k!r} is not a string: {v!r}")
            (self.jinja if "{{" in v else self.plain)[k] = v
        self._env: Any = None
        self._compiled: dict[str, Any] = {}
        self._cache: dict[str, str] = {}

    def _environment(self) -> Any:
        if self._env is None:
            try:
                import jinja2.sandbox
            except ImportError as e:  # pragma: no cover - jinja2 is installed with the extras
                raise UnsupportedError(
                    f"{self.location}: these references use jinja templates or 'gen', which "
                    "need the jinja2 package"
                ) from e
            self._env = jinja2.sandbox.SandboxedEnvironment()
        return self._env

    def _template_callables(self) -> dict[str, Any]:
        # A template holding "{{...}}" is a function of keyword arguments (fsspec's rule):
        # "{{f(c='x')}}" renders template f with c="x".
        env = self._environment()
        out: dict[str, Any] = dict(self.plain)
        for k, v in self.jinja.items():
            tmpl = env.from_string(v)
            out[k] = lambda _t=tmpl, **kw: _t.render(**kw)
        return out

    def compile(self, text: str) -> Callable[[Mapping[str, Any]], str]:
        """A function rendering ``text`` with the given variables (and the templates)."""
        if "{{" not in text and "{%" not in text:
            return lambda _vars: text
        names = _PLACEHOLDER_RE.findall(text)
        if (
            "{%" not in text
            and _PLACEHOLDER_RE.sub("", text).find("{{") < 0
            and not any(n in self.jinja for n in names)
        ):
            plain = self.plain

            def render_plain(variables: Mapping[str, Any]) -> str:
                def sub(m: re.Match[str]) -> str:
                    name = m.group(1)
                    if name in variables:
                        return str(variables[name])
                    if name in plain:
                        return plain[name]
                    raise BuildError(
                        f"{self.location}: {text!r} uses {{{{{name}}}}}, which is neither a "
                        "template nor a gen dimension"
                    )

                return _PLACEHOLDER_RE.sub(sub, text)

            return render_plain
        if text not in self._compiled:
            env = self._environment()
            try:
                self._compiled[text] = env.from_string(text)
            except Exception as e:  # jinja2.TemplateSyntaxError
                raise BuildError(f"{self.location}: invalid template string {text!r}: {e}") from e
        tmpl = self._compiled[text]
        context = self._template_callables()

        def render_jinja(variables: Mapping[str, Any]) -> str:
            try:
                return str(tmpl.render(**context, **variables))
            except Exception as e:  # jinja2 errors while rendering
                raise BuildError(f"{self.location}: cannot render {text!r}: {e}") from e

        return render_jinja

    def url(self, text: str) -> str:
        """A reference URL with its templates filled in (cached: URLs repeat a lot)."""
        out = self._cache.get(text)
        if out is None:
            out = self.compile(text)({})
            self._cache[text] = out
        return out


def _refs_parts(
    refs: Mapping[str, Any], location: str
) -> tuple[Mapping[str, Any], _Templates, list[Any]]:
    """(the references body, its templates, its gen entries) for either version."""
    version = refs.get("version")
    if version is None:
        if isinstance(refs.get("refs"), dict) and not any(
            k.endswith((".zgroup", ".zarray")) for k in refs
        ):
            # a version-less wrapper, as kerchunk.df.refs_to_dataframe also accepts
            body = refs["refs"]
            templates: Mapping[str, Any] = refs.get("templates") or {}
            gens: list[Any] = list(refs.get("gen") or [])
        else:
            body, templates, gens = refs, {}, []
    elif version == 1:
        body = refs.get("refs") or {}
        templates = refs.get("templates") or {}
        gens = list(refs.get("gen") or [])
    else:
        raise BuildError(f"{location}: unknown kerchunk references version {version!r}")
    if not isinstance(body, Mapping) or not isinstance(templates, Mapping):
        raise BuildError(f"{location}: 'refs' and 'templates' must be JSON objects")
    return body, _Templates(templates, location), gens


def expand_refs(refs: Mapping[str, Any], *, location: str = "<refs>") -> dict[str, Any]:
    """Kerchunk references of any version as a flat version-0 dict.

    Templates are filled in, ``gen`` entries are generated, ``"base64:"`` values are
    decoded to bytes and other strings UTF-8 encoded (as fsspec does); references become
    ``[url]`` or ``[url, offset, length]`` lists; JSON-object values stay dicts.

    Raises
    ------
    BuildError
        An unknown version, a malformed template, gen entry or reference (named).
    """
    body, tmpl, gens = _refs_parts(refs, location)
    out: dict[str, Any] = {}
    for key, value in body.items():
        out[key] = _expand_value(key, value, tmpl, location)
    for entry in gens:
        out.update(_generate(entry, tmpl, location))
    return out


def _expand_value(key: str, value: Any, tmpl: _Templates, location: str) -> Any:
    if isinstance(value, str):
        return _inline_bytes(value)
    if isinstance(value, bytes | dict) or value is None:
        return value
    if isinstance(value, list | tuple):
        if len(value) not in (1, 3) or not isinstance(value[0], str):
            raise BuildError(
                f"{location}: reference {key!r} is not [url] or [url, offset, length]: {value!r}"
            )
        url = tmpl.url(value[0]) if "{" in value[0] else value[0]
        if len(value) == 1:
            return [url]
        return [
            url,
            _int(value[1], key, "offset", location),
            _int(value[2], key, "length", location),
        ]
    raise BuildError(f"{location}: reference {key!r} has an invalid value {value!r}")


def _inline_bytes(value: str) -> bytes:
    if value.startswith("base64:"):
        return base64.b64decode(value[7:])
    return value.encode()


def _int(v: Any, key: str, what: str, location: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        try:
            if isinstance(v, str | float) and float(v) == int(float(v)):
                return int(float(v))
        except ValueError:
            pass
        raise BuildError(f"{location}: reference {key!r} has a non-integer {what} {v!r}")
    if v < 0:
        raise BuildError(f"{location}: reference {key!r} has a negative {what} {v}")
    return int(v)


_EXPR_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def _generate(entry: Any, tmpl: _Templates, location: str) -> dict[str, Any]:
    """The references of one version-1 ``gen`` entry (a cartesian product of dimensions).

    Each ``{{expression}}`` is evaluated once over numpy arrays of all the dimension
    values; entries this cannot handle (jinja statements, template calls, results that are
    not per-product values) are rendered product by product with jinja2.
    """
    try:
        fast = _generate_vectorized(entry, tmpl)
    except BuildError:
        raise
    except Exception:  # any surprise in the vectorized path: the exact path decides
        fast = None
    return fast if fast is not None else _generate_each(entry, tmpl, location)


def _generate_vectorized(entry: Any, tmpl: _Templates) -> dict[str, Any] | None:
    if not isinstance(entry, Mapping) or not {"key", "url", "dimensions"} <= set(entry):
        return None
    if ("offset" in entry) != ("length" in entry):
        return None
    fields = {f: str(entry[f]) for f in ("key", "url", "offset", "length") if f in entry}
    if any("{%" in v or any(n in v for n in tmpl.jinja) for v in fields.values()):
        return None
    dims: dict[str, np.ndarray] = {}
    for name, spec in dict(entry["dimensions"]).items():
        if isinstance(spec, list) and all(isinstance(v, int) for v in spec):
            dims[name] = np.asarray(spec, dtype=np.int64)
        elif isinstance(spec, Mapping) and "stop" in spec:
            dims[name] = np.arange(
                int(spec.get("start", 0)), int(spec["stop"]), int(spec.get("step", 1))
            )
        else:
            return None
    grids = np.meshgrid(*dims.values(), indexing="ij") if dims else []
    variables = {n: g.reshape(-1) for n, g in zip(dims, grids, strict=True)}
    n = int(np.prod([len(v) for v in dims.values()], dtype=np.int64)) if dims else 0
    env = tmpl._environment()
    context = {**tmpl.plain, **variables}

    def strings(text: str) -> np.ndarray:
        out: np.ndarray = np.full(n, "", dtype=_STRINGS)
        pos = 0
        for m in _EXPR_RE.finditer(text):
            out = np.strings.add(out, text[pos : m.start()])
            value = env.compile_expression(m.group(1))(**context)
            out = np.strings.add(out, _as_strings(value, n))
            pos = m.end()
        return np.strings.add(out, text[pos:])

    keys = strings(fields["key"]).tolist()
    urls = strings(fields["url"]).tolist()
    if "offset" not in fields:
        return {k: [u] for k, u in zip(keys, urls, strict=True)}
    offsets = _as_ints(strings(fields["offset"]))
    lengths = _as_ints(strings(fields["length"]))
    if offsets is None or lengths is None:
        return None
    return {
        k: [u, o, ln]
        for k, u, o, ln in zip(keys, urls, offsets.tolist(), lengths.tolist(), strict=True)
    }


def _as_strings(value: Any, n: int) -> np.ndarray:
    """A per-product expression value as strings (jinja prints values with ``str``)."""
    if isinstance(value, np.ndarray):
        if value.shape != (n,) or value.dtype.kind not in "iub":
            raise ValueError("not one integer per product")
        return value.astype(_STRINGS)
    if isinstance(value, bool | int | str | np.integer):
        return np.full(n, str(value), dtype=_STRINGS)
    raise ValueError(f"unexpected expression value {type(value).__name__}")


def _as_ints(values: np.ndarray) -> np.ndarray | None:
    try:
        out = np.strings.strip(values).astype(np.int64)
    except (ValueError, TypeError):
        return None
    return None if (out < 0).any() else out


def _generate_each(entry: Any, tmpl: _Templates, location: str) -> dict[str, Any]:
    """The references of one ``gen`` entry, rendering each product with jinja2 (exact)."""
    if (
        not isinstance(entry, Mapping)
        or "key" not in entry
        or "url" not in entry
        or "dimensions" not in entry
    ):
        raise BuildError(f"{location}: a gen entry needs 'key', 'url' and 'dimensions': {entry!r}")
    if ("offset" in entry) != ("length" in entry):
        raise BuildError(
            f"{location}: gen entry {entry['key']!r} needs both 'offset' and 'length' or neither"
        )
    dims: dict[str, Iterable[Any]] = {}
    for name, spec in dict(entry["dimensions"]).items():
        if isinstance(spec, list):
            dims[name] = spec
        elif isinstance(spec, Mapping) and "stop" in spec:
            dims[name] = range(
                int(spec.get("start", 0)), int(spec["stop"]), int(spec.get("step", 1))
            )
        else:
            raise BuildError(
                f"{location}: gen dimension {name!r} must be a list or "
                f"{{start, stop, step}}: {spec!r}"
            )
    key_f = tmpl.compile(str(entry["key"]))
    url_f = tmpl.compile(str(entry["url"]))
    ranged = "offset" in entry
    off_f = tmpl.compile(str(entry["offset"])) if ranged else None
    len_f = tmpl.compile(str(entry["length"])) if ranged else None
    out: dict[str, Any] = {}
    names = list(dims)
    for values in itertools.product(*dims.values()):
        variables = dict(zip(names, values, strict=True))
        key = key_f(variables)
        if off_f is not None and len_f is not None:
            out[key] = [
                url_f(variables),
                _int(off_f(variables).strip(), key, "offset", location),
                _int(len_f(variables).strip(), key, "length", location),
            ]
        else:
            out[key] = [url_f(variables)]
    return out


# ---- the intermediate form: metadata documents + per-array chunk columns --------------------


@dataclass
class _Chunks:
    """The chunk references of one array, as parallel columns over present chunks."""

    flat: np.ndarray  # flat (C order) index into the chunk grid
    urls: np.ndarray  # object: raw reference URL, None where the chunk is inline
    offsets: np.ndarray  # int64; -1 for a whole-file reference
    lengths: np.ndarray  # int64
    inline: dict[int, bytes] = field(default_factory=dict)  # flat index -> bytes


@dataclass
class _ArrayNode:
    path: str
    zarr_format: int
    meta: dict[str, Any]  # .zarray (v2) or zarr.json (v3) document
    attrs: dict[str, Any]
    chunks: _Chunks | None = None


@dataclass
class _Parsed:
    arrays: dict[str, _ArrayNode]
    groups: dict[str, dict[str, Any]]  # group path ("" = root) -> attributes


def _json_doc(value: Any, key: str, location: str) -> dict[str, Any]:
    """A metadata value (JSON text, bytes or an already parsed object) as a dict."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple):
        raise BuildError(f"{location}: metadata key {key!r} is a reference, not inline JSON")
    if isinstance(value, str):
        value = _inline_bytes(value)
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


def _collect_metadata(meta: Mapping[str, Any], location: str) -> _Parsed:
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
    arrays: dict[str, _ArrayNode] = {}
    groups: dict[str, dict[str, Any]] = {}
    for key, doc in docs.items():
        parent, name = _split_meta(key)
        if name == ".zarray":
            attrs = docs.get(f"{parent}/.zattrs" if parent else ".zattrs", {})
            arrays[parent] = _ArrayNode(parent, 2, doc, dict(attrs))
        elif name == ".zgroup":
            groups[parent] = dict(docs.get(f"{parent}/.zattrs" if parent else ".zattrs", {}))
        elif name == "zarr.json":
            node_type = doc.get("node_type")
            if doc.get("zarr_format") != 3 or node_type not in ("array", "group"):
                raise BuildError(f"{location}: {key!r} is not a Zarr v3 array or group document")
            if node_type == "array":
                arrays[parent] = _ArrayNode(parent, 3, doc, dict(doc.get("attributes") or {}))
            else:
                groups[parent] = dict(doc.get("attributes") or {})
    if not arrays and not groups:
        raise BuildError(
            f"{location}: the references hold no Zarr metadata (.zgroup/.zarray/zarr.json)"
        )
    return _Parsed(arrays, groups)


def _grid_shape(node: _ArrayNode, location: str) -> tuple[int, ...]:
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

    def __init__(self, parsed: _Parsed, location: str):
        self.location = location
        self.grids = {p: _grid_shape(n, location) for p, n in parsed.arrays.items()}
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

    def _v3_index(self, node: _ArrayNode, rest: str, key: str) -> list[int]:
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


def _parse_refs(
    refs: Mapping[str, Any],
    location: str,
    fetch: Callable[[str, Any], bytes] | None = None,
) -> _Parsed:
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
            [_int(v, key_of(i), what, location) for i, v in enumerate(values)], dtype=np.int64
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
) -> _Chunks:
    """Reference values (``[url, offset, length]``, ``[url]``, inline data) as columns."""
    if all(type(v) is list and len(v) == 3 for v in values):
        # the common case, done column-wise
        urls = list(map(itemgetter(0), values))
        offs = _int_column(list(map(itemgetter(1), values)), key_of, "offset", location)
        lens = _int_column(list(map(itemgetter(2), values)), key_of, "length", location)
        return _Chunks(flat, np.asarray(urls, dtype=object), offs, lens, {})
    rows: list[int] = []
    urls = []
    offsets: list[Any] = []
    lengths: list[Any] = []
    inline: dict[int, bytes] = {}
    for i, (f, value) in enumerate(zip(flat.tolist(), values, strict=True)):
        if isinstance(value, str):
            inline[f] = _inline_bytes(value)
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
    return _Chunks(
        flat[np.asarray(rows, dtype=np.int64)],
        np.asarray(urls, dtype=object),
        np.where(whole, -1, offs) if len(offs) else offs,
        lens,
        inline,
    )


# ---- parquet reference stores --------------------------------------------------------------


def _parse_parquet_refs(root: str, fs: Any, location: str) -> _Parsed:
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
    grids = {p: _grid_shape(n, location) for p, n in parsed.arrays.items()}
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
        node.chunks = _Chunks(flat.astype(np.int64), urls[flat], offsets[flat], sizes[flat], inline)
    return parsed


def _parquet_filesystem(url: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    """An fsspec filesystem and root path for a parquet reference store at ``url``."""
    import fsspec

    if not is_absolute_url(url) or url.startswith("file://"):
        local = url_to_local_path(url) if url.startswith("file://") else os.path.abspath(url)
        return fsspec.filesystem("file"), local.rstrip("/")
    scheme = _SCHEME_RE.match(url)
    protocol = scheme.group(1).lower() if scheme else ""
    # obstore's fsspec adapter reads every scheme obstore does, with the same options
    from obstore.fsspec import FsspecStore

    kwargs = dict(storage_options)
    if protocol == "http":
        kwargs["client_options"] = {"allow_http": True, **dict(kwargs.get("client_options") or {})}
    # (obstore checks the protocol at run time; its stub lists only a few literals)
    return FsspecStore(protocol, **kwargs), url.rstrip("/")  # type: ignore[arg-type]


# ---- URLs -----------------------------------------------------------------------------------


def _normalize_url(raw: str, base_url: str | None, key_hint: str, location: str) -> str:
    """A kerchunk (fsspec) reference path as a canonical URL."""
    if "::" in raw:
        raise UnsupportedError(
            f"{location}: reference {key_hint!r} uses a chained fsspec URL {raw!r}, which has "
            "no plain object-store location"
        )
    try:
        m = _SCHEME_RE.match(raw)
        if m is None:
            if raw.startswith("/"):
                return local_path_to_url(raw)
            if base_url is None:
                return local_path_to_url(raw)  # fsspec's local filesystem: the working directory
            return resolve_reference(quote(raw, safe=_PATH_SAFE), base_url)
        scheme = m.group(1).lower()
        scheme = _SCHEME_ALIASES.get(scheme, scheme)
        rest = raw[m.end() :]
        if scheme == "file":
            return local_path_to_url(rest if rest.startswith("/") else "/" + rest)
        if scheme not in SCHEMES:
            raise UnsupportedError(
                f"{location}: reference {key_hint!r} uses URL scheme {scheme!r} ({raw!r}); "
                f"supported: {sorted(SCHEMES)}"
            )
        if scheme in ("http", "https"):
            return canonical_url(f"{scheme}://{rest}")
        # object keys are verbatim in fsspec: quote them so the URL names the same key
        authority, slash, path = rest.partition("/")
        return canonical_url(f"{scheme}://{authority}{slash}{quote(path, safe=_PATH_SAFE)}")
    except ManifestFormatError as e:
        raise BuildError(
            f"{location}: reference {key_hint!r} has an invalid URL {raw!r}: {e}"
        ) from e


# The registry only decides what is allowed; nothing is read through it.
_CHECK_ONLY = object()


def _allowed_registry(prefixes: Iterable[str]) -> SourceRegistry:
    """A registry allowing ``prefixes`` (URLs or local directories), used for its checks."""
    registry = SourceRegistry()
    for prefix in prefixes:
        registry.register(prefix, _CHECK_ONLY)
    return registry


class _Resolver:
    """Canonical URLs and whole-file sizes, each computed once per distinct reference URL.

    With ``allowed`` (a registry), every URL is checked against it as it is resolved.
    """

    def __init__(
        self,
        base_url: str | None,
        location: str,
        source_options: Mapping[str, Any],
        templates: _Templates | None = None,
        allowed: SourceRegistry | None = None,
    ):
        self.base_url = base_url
        self.location = location
        self.source_options = dict(source_options)
        self.templates = templates
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
            out = _normalize_url(text, self.base_url, key_hint, self.location)
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
            offset = _int(ref[1], key, "offset", self.location)
            length = _int(ref[2], key, "length", self.location)
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


def _v2_dtype(node: _ArrayNode) -> np.dtype[Any]:
    raw = node.meta.get("dtype")
    if isinstance(raw, list):
        raw = [tuple(f) for f in raw]
    return np.dtype(raw)


def _v2_to_v3_metadata(
    node: _ArrayNode, location: str, cf_fill_value: bool = False
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


def _v3_metadata(node: _ArrayNode, location: str) -> dict[str, Any]:
    doc = dict(node.meta)
    if doc.get("storage_transformers"):
        raise UnsupportedError(f"{location}: array {node.path!r} declares storage transformers")
    # chunk keys were decoded with the array's own encoding; the manifest is index based
    doc["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": "/"}}
    return doc


# ---- building arrays -----------------------------------------------------------------------


def _load_array(
    node: _ArrayNode,
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = zarr.open_array(store, mode="r", zarr_format=2 if node.zarr_format == 2 else 3)
            return np.asarray(arr[...])
    except Exception as e:  # zarr/numcodecs raise many kinds on undecodable data
        raise UnsupportedError(
            f"{location}: array {name!r} cannot be decoded through zarr ({e})"
        ) from e


def _inline_array(data: np.ndarray, v3: dict[str, Any] | None, node: _ArrayNode) -> InlineArray:
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
    node: _ArrayNode,
    *,
    force_load: bool,
    resolver: _Resolver,
    location: str,
    cf_fill_value: bool = False,
) -> ManifestArray | InlineArray:
    name = node.path or "<root array>"
    grid = _grid_shape(node, location)
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
        return ManifestArray(v3, manifest)
    except ValueError as e:
        raise BuildError(f"{location}: array {name!r}: {e}") from e


def _assemble(
    parsed: _Parsed,
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
    body, tmpl, gens = _refs_parts(refs, location)
    allowed = None if allowed_prefixes is None else _allowed_registry(allowed_prefixes)
    resolver = _Resolver(base_url, location, source_options or {}, tmpl, allowed)
    parsed = _parse_refs(_with_gen(body, gens, tmpl, location), location, resolver.fetch)
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
        is_parquet = _remote_is_parquet(url, obstore_kwargs)
    trimmed = url.rstrip("/")
    own_directory = trimmed.rsplit("/", 1)[0] + "/"
    allowed = [own_directory, *([base_url] if base_url is not None else []), *allowed_prefixes]
    if base_url is None:
        base_url = own_directory
    resolver = _Resolver(base_url, location, obstore_kwargs, allowed=_allowed_registry(allowed))
    if is_parquet:
        fs, root = _parquet_filesystem(local if local is not None else trimmed, obstore_kwargs)
        parsed = _parse_parquet_refs(root, fs, location)
    else:
        src = source if isinstance(source, Source) else open_source(url, **obstore_kwargs)
        with src.open() as f:
            data = bytes(f.read())
        body, tmpl, gens = _refs_parts(read_kerchunk_refs(data, location=location), location)
        resolver.templates = tmpl
        parsed = _parse_refs(_with_gen(body, gens, tmpl, location), location, resolver.fetch)
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


def _with_gen(
    body: Mapping[str, Any], gens: list[Any], tmpl: _Templates, location: str
) -> Mapping[str, Any]:
    """The references body plus the references its ``gen`` entries generate."""
    if not gens:
        return body
    out = dict(body)
    for entry in gens:
        out.update(_generate(entry, tmpl, location))
    return out


def _remote_is_parquet(url: str, obstore_kwargs: Mapping[str, Any]) -> bool:
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
