"""Reading the ``zarr.json`` documents VirtualiZarr 1.x wrote (spec section 17).

VirtualiZarr 1.0 to 1.3 (``ds.virtualize.to_zarr``) were the only writers of zarr-specs#287
stores on disk.  Their array documents deviate from Zarr v3 in exactly two ways that this
module repairs, and only when the reader was asked to (``compat="virtualizarr-1"``):

1. ``"fill_value": NaN`` (or ``Infinity``, ``-Infinity``) as a bare token, which is not
   JSON; Zarr v3 spells these fill values as the strings ``"NaN"``, ``"Infinity"`` and
   ``"-Infinity"``.  A bare token anywhere else in the document is not repaired.
2. A codec list without an array-to-bytes codec (``[]``, or only numcodecs bytes-to-bytes
   codecs such as ``numcodecs.shuffle`` and ``numcodecs.zlib``): VirtualiZarr 1.x left out
   the ``bytes`` codec.  It is put back, with ``"endian": "little"``, after the list's
   array-to-array codecs.  VirtualiZarr 1.x wrote ``data_type`` as numpy's name of the
   source's dtype, which is a Zarr v3 name (``float32``) only for little-endian and
   single-byte types; a big-endian source got ``">f4"``, which is not repaired and is
   refused as an invalid data type, so little-endian is never a guess.

Everything else is read as the specification says: VirtualiZarr 1.x manifests
(``{"0.0.0": {"path", "offset", "length"}}``, absolute ``file://`` URLs) are already valid.
"""

from __future__ import annotations

import json
from typing import Any

from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
from zarr.errors import UnknownCodecError
from zarr.registry import get_codec_class

from zarr_manifest.errors import ManifestFormatError

__all__ = [
    "COMPAT_MODES",
    "VIRTUALIZARR_1",
    "check_compat",
    "compat_hint",
    "lacks_array_bytes_codec",
    "repair_document",
]

#: the compatibility mode that reads stores written by VirtualiZarr 1.x
VIRTUALIZARR_1 = "virtualizarr-1"
#: the values of every reader's ``compat`` option (None: the specification only)
COMPAT_MODES = (None, VIRTUALIZARR_1)

_TRANSFORMER = "chunk-manifest-json"
#: what VirtualiZarr 1.x left out; every numcodecs filter it wrote is array-to-array or
#: bytes-to-bytes, so the bytes codec goes between them
_BYTES_CODEC: dict[str, Any] = {"name": "bytes", "configuration": {"endian": "little"}}


class _NonFinite(str):
    """A bare ``NaN``/``Infinity``/``-Infinity`` token, kept apart from a JSON string."""


def check_compat(compat: str | None) -> None:
    """Refuse an unknown ``compat`` value (ValueError)."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be None or {VIRTUALIZARR_1!r}, got {compat!r}")


def compat_hint() -> str:
    """The advice added to errors that a VirtualiZarr 1.x store would raise."""
    return (
        f" (written by VirtualiZarr 1.x? read it with compat={VIRTUALIZARR_1!r}, or rewrite "
        "it with `zarr-manifest upgrade STORE`)"
    )


def repair_document(data: bytes, *, location: str) -> dict[str, Any]:
    """Parse a ``zarr.json`` as VirtualiZarr 1.x wrote it, repaired into a Zarr v3 document.

    Raises
    ------
    ManifestFormatError
        Not JSON even with bare non-finite tokens; such a token outside an array's
        ``fill_value``; or a codec list without an array-to-bytes codec that cannot be
        repaired (an unknown codec, or an array-to-array codec after a bytes-to-bytes one).
        The message names ``location``.
    """
    try:
        doc = json.loads(data, parse_constant=_NonFinite)
    except (ValueError, RecursionError) as e:
        raise ManifestFormatError(f"{location} is not valid JSON: {e}", location=location) from e
    if not isinstance(doc, dict):
        return doc  # type: ignore[no-any-return]  # the strict parser's checks refuse it
    fill = doc.get("fill_value")
    if isinstance(fill, _NonFinite) and doc.get("node_type") == "array":
        doc["fill_value"] = str(fill)
    _refuse_bare_tokens(doc, location, "")
    if doc.get("node_type") == "array" and _declares_transformer(doc):
        codecs = doc.get("codecs")
        if isinstance(codecs, list) and lacks_array_bytes_codec(codecs):
            doc["codecs"] = _with_bytes_codec(codecs, location)
    return doc


def lacks_array_bytes_codec(codecs: Any) -> bool:
    """Whether a ``codecs`` list has no array-to-bytes codec (every name known to zarr)."""
    if not isinstance(codecs, list):
        return False
    kinds = [_kind(c) for c in codecs]
    return None not in kinds and ArrayBytesCodec not in kinds


def _kind(codec: Any) -> type | None:
    name = codec.get("name") if isinstance(codec, dict) else codec
    if not isinstance(name, str):
        return None
    try:
        cls = get_codec_class(name)
    except (KeyError, UnknownCodecError):
        return None
    for kind in (ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec):
        if issubclass(cls, kind):
            return kind
    return None


def _with_bytes_codec(codecs: list[Any], location: str) -> list[Any]:
    kinds = [_kind(c) for c in codecs]
    at = next((i for i, k in enumerate(kinds) if k is not ArrayArrayCodec), len(kinds))
    if any(k is not BytesBytesCodec for k in kinds[at:]):
        raise ManifestFormatError(
            f"{location}: cannot add the missing array-to-bytes codec to codecs {codecs!r}: an "
            "array-to-array codec follows a bytes-to-bytes one",
            location=location,
            field="codecs",
        )
    return [*codecs[:at], dict(_BYTES_CODEC), *codecs[at:]]


def _declares_transformer(doc: dict[str, Any]) -> bool:
    transformers = doc.get("storage_transformers")
    return isinstance(transformers, list) and any(
        isinstance(t, dict) and t.get("name") == _TRANSFORMER for t in transformers
    )


def _refuse_bare_tokens(value: Any, location: str, where: str) -> None:
    if isinstance(value, _NonFinite):
        raise ManifestFormatError(
            f"{location}: {where or 'the document'} is the bare token {value!s}, which is "
            "not JSON (VirtualiZarr 1.x wrote it only as an array's fill_value)",
            location=location,
            field=where or None,
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_bare_tokens(v, location, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_bare_tokens(v, location, f"{where}[{i}]")
