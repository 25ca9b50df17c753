"""The kerchunk references format itself, as fsspec's ``ReferenceFileSystem`` reads it
(https://fsspec.github.io/kerchunk/spec.html): a document's versions (0 and 1) and its
optional compression, ``templates`` and ``gen`` entries (rendered with jinja2's sandbox, as
fsspec does; vectorised with numpy where the expressions allow), inline values, integer
fields, and reference paths (fsspec paths) as canonical URLs.

`zarr_manifest.builders.kerchunk` translates what this module reads into a `ManifestGroup`.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

from zarr_manifest.errors import (
    BuildError,
    ManifestFormatError,
    UnsupportedError,
)
from zarr_manifest.format.paths import (
    SCHEMES,
    canonical_url,
    local_path_to_url,
    resolve_reference,
)

_STRINGS = np.dtypes.StringDType()

# fsspec protocol aliases -> the scheme obstore (and our manifests) use.
_SCHEME_ALIASES = {"gcs": "gs", "local": "file"}
SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# a plain "{{ name }}" placeholder, the only template syntax that needs no jinja2
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# characters kept literal when quoting a raw object key as a URL path
_PATH_SAFE = "/!$&'()*+,;=:@"


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


class Templates:
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


def references_parts(
    refs: Mapping[str, Any], location: str
) -> tuple[Mapping[str, Any], Templates, list[Any]]:
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
    return body, Templates(templates, location), gens


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
    body, tmpl, gens = references_parts(refs, location)
    out: dict[str, Any] = {}
    for key, value in body.items():
        out[key] = _expand_value(key, value, tmpl, location)
    for entry in gens:
        out.update(_generate(entry, tmpl, location))
    return out


def _expand_value(key: str, value: Any, tmpl: Templates, location: str) -> Any:
    if isinstance(value, str):
        return inline_bytes(value)
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
            reference_int(value[1], key, "offset", location),
            reference_int(value[2], key, "length", location),
        ]
    raise BuildError(f"{location}: reference {key!r} has an invalid value {value!r}")


def inline_bytes(value: str) -> bytes:
    if value.startswith("base64:"):
        return base64.b64decode(value[7:])
    return value.encode()


def reference_int(v: Any, key: str, what: str, location: str) -> int:
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


def _generate(entry: Any, tmpl: Templates, location: str) -> dict[str, Any]:
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


def _generate_vectorized(entry: Any, tmpl: Templates) -> dict[str, Any] | None:
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


def _generate_each(entry: Any, tmpl: Templates, location: str) -> dict[str, Any]:
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
                reference_int(off_f(variables).strip(), key, "offset", location),
                reference_int(len_f(variables).strip(), key, "length", location),
            ]
        else:
            out[key] = [url_f(variables)]
    return out


# ---- URLs -----------------------------------------------------------------------------------


def reference_url(raw: str, base_url: str | None, key_hint: str, location: str) -> str:
    """A kerchunk (fsspec) reference path as a canonical URL."""
    if "::" in raw:
        raise UnsupportedError(
            f"{location}: reference {key_hint!r} uses a chained fsspec URL {raw!r}, which has "
            "no plain object-store location"
        )
    try:
        m = SCHEME_RE.match(raw)
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


def with_generated(
    body: Mapping[str, Any], gens: list[Any], tmpl: Templates, location: str
) -> Mapping[str, Any]:
    """The references body plus the references its ``gen`` entries generate."""
    if not gens:
        return body
    out = dict(body)
    for entry in gens:
        out.update(_generate(entry, tmpl, location))
    return out
