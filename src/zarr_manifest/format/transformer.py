"""The ``chunk-manifest-json`` storage transformer in an array's zarr.json.

On disk, a virtual array declares::

    "storage_transformers": [
        {"name": "chunk-manifest-json", "configuration": {"manifest": "./manifest.json"}}
    ]

A split manifest (`zarr_manifest.format.split`) declares instead::

    "configuration": {"manifest": "./manifest/", "split": {"version": 1, "region_shape": [...]}}

and, beside ``storage_transformers``, the top-level *plain-reader guard*::

    "chunk-manifest-json": {"must_understand": true}

zarr-python 3.4 checks ``storage_transformers`` only when an array is opened by its own path
(``zarr.open_array``); reached through a group (``group["a"]``, ``members()``, xarray) the
array opens and reads as all fill values.  Every path, though, parses the document with
``ArrayV3Metadata.from_dict``, which refuses an extra member that is not marked
``"must_understand": false``: the guard makes every plain Zarr reader fail loudly.
Readers of this format take both out before serving the document (`plain_zarr_metadata`);
stores written before the guard existed (without it) are still read.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Mapping
from typing import Any

import orjson
import zarr
from zarr.core.metadata.v3 import ArrayV3Metadata

from zarr_manifest.array import check_chunk_edges
from zarr_manifest.errors import ManifestFormatError, MetadataError
from zarr_manifest.fingerprint import Fingerprint, fingerprints_from_json, fingerprints_to_json
from zarr_manifest.format._members import refuse_unknown_members
from zarr_manifest.format.split import MANIFEST_DIR, SPLIT_MEMBER, parse_split, split_configuration
from zarr_manifest.format.virtualizarr1 import (
    VIRTUALIZARR_1,
    compat_hint,
    lacks_array_bytes_codec,
    repair_document,
)

__all__ = [
    "INLINE_MANIFEST",
    "MANIFEST_FILE",
    "TRANSFORMER_NAME",
    "PLAIN_READER_GUARD",
    "ArrayDocument",
    "array_document",
    "parse_array_document",
    "parse_node_document",
    "plain_zarr_metadata",
]

TRANSFORMER_NAME = "chunk-manifest-json"
MANIFEST_FILE = "manifest.json"
#: the optional extension member recording source fingerprints (must_understand: false)
FINGERPRINTS_MEMBER = "fingerprints"
#: the top-level member of a referenced array's zarr.json that plain Zarr readers refuse
PLAIN_READER_GUARD = TRANSFORMER_NAME
_GUARD_VALUE: dict[str, Any] = {"must_understand": True}
#: `ArrayDocument.manifest` of an array whose manifest is inlined in its configuration (a
#: "#" cannot begin a manifest file name: such a name is refused, spec 4.6)
INLINE_MANIFEST = "#inline"
#: the configuration members this reader understands
_KNOWN_CONFIGURATION = {"manifest", SPLIT_MEMBER, FINGERPRINTS_MEMBER}
#: the fill value VirtualiZarr 1.x wrote as a bare token (only used to suggest its mode)
_BARE_FILL_VALUE = re.compile(rb'"fill_value"\s*:\s*-?(?:NaN|Infinity)')


class ArrayDocument:
    """An array's zarr.json split into what zarr sees and where its manifest is.

    Attributes
    ----------
    document
        The zarr.json object without the chunk-manifest-json transformer.
    metadata
        ``document`` parsed by zarr.
    manifest
        The manifest file's path relative to the array directory (``"manifest.json"``), or
        for a split manifest its directory's (``"manifest"``, no trailing slash); None for an
        ordinary (inline) array.
    split
        The region shape of a split manifest, None for a single manifest file.
    fingerprints
        The recorded source fingerprints by manifest path (empty when none are recorded).
    entries
        A manifest inlined in the configuration (spec 4.4): its entries, and ``manifest``
        is `INLINE_MANIFEST`; None when the manifest is a file.
    """

    __slots__ = ("document", "entries", "fingerprints", "manifest", "metadata", "split")

    def __init__(
        self,
        document: dict[str, Any],
        metadata: ArrayV3Metadata,
        manifest: str | None,
        split: tuple[int, ...] | None = None,
        fingerprints: dict[str, Fingerprint] | None = None,
        entries: dict[str, Any] | None = None,
    ):
        self.entries = entries
        self.document = document
        self.metadata = metadata
        self.manifest = manifest
        self.split = split
        self.fingerprints = fingerprints or {}

    def to_bytes(self) -> bytes:
        """The zarr.json that a Zarr library is shown (no storage transformer)."""
        return orjson.dumps(self.document, option=orjson.OPT_INDENT_2)


def array_document(
    metadata: ArrayV3Metadata,
    *,
    virtual: bool,
    split: tuple[int, ...] | None = None,
    fingerprints: Mapping[str, Fingerprint] | None = None,
    manifest: str | None = None,
) -> bytes:
    """The on-disk zarr.json of an array; ``virtual`` adds the chunk-manifest transformer
    and the plain-reader guard member.

    With ``split`` (a region shape) the transformer declares a split manifest in the
    directory ``manifest/``.  ``manifest`` names the manifest file (or split directory,
    without "/") instead, e.g. ``manifest.<hash>.json`` when a store is replaced.
    ``fingerprints`` (by manifest path) are written as the ignorable ``fingerprints``
    extension member of a virtual array's configuration.
    """
    doc = metadata.to_dict()
    doc.pop("storage_transformers", None)
    if virtual:
        configuration: dict[str, Any] = {"manifest": f"./{manifest or MANIFEST_FILE}"}
        if split is not None:
            configuration = {
                "manifest": f"./{manifest or MANIFEST_DIR}/",
                SPLIT_MEMBER: split_configuration(split),
            }
        if fingerprints:
            configuration[FINGERPRINTS_MEMBER] = {
                "must_understand": False,
                "sources": fingerprints_to_json(fingerprints),
            }
        doc["storage_transformers"] = [{"name": TRANSFORMER_NAME, "configuration": configuration}]
        doc[PLAIN_READER_GUARD] = dict(_GUARD_VALUE)
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def parse_node_document(data: bytes, *, location: str, compat: str | None = None) -> dict[str, Any]:
    """Parse a zarr.json into a dict, checking it is a Zarr v3 node document.

    ``compat="virtualizarr-1"`` first repairs the deviations of documents VirtualiZarr 1.x
    wrote (`zarr_manifest.format.virtualizarr1`, spec section 17).

    Raises
    ------
    ManifestFormatError
        Not JSON, not an object, or not ``zarr_format`` 3 with a known ``node_type``.
    """
    if compat == VIRTUALIZARR_1:
        doc: Any = repair_document(data, location=location)
    else:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            hint = compat_hint() if _BARE_FILL_VALUE.search(data) else ""
            raise ManifestFormatError(
                f"{location} is not valid JSON: {e}{hint}", location=location
            ) from e
    if not isinstance(doc, dict):
        raise ManifestFormatError(f"{location} must hold a JSON object", location=location)
    if doc.get("zarr_format") != 3:
        raise ManifestFormatError(
            f"{location}: zarr_format must be 3, got {doc.get('zarr_format')!r}", location=location
        )
    if doc.get("node_type") not in ("array", "group"):
        raise ManifestFormatError(
            f"{location}: node_type must be 'array' or 'group', got {doc.get('node_type')!r}",
            location=location,
        )
    return doc


def parse_array_document(doc: dict[str, Any], *, location: str) -> ArrayDocument:
    """Split an array's zarr.json into the zarr-visible document and its manifest path.

    Raises
    ------
    ManifestFormatError
        The transformer entry is malformed, names an unknown configuration member that
        must be understood, points outside the array directory, another storage transformer
        is listed, the plain-reader guard is malformed or stands without the transformer,
        a rectilinear chunk grid has more than `~zarr_manifest.array.MAX_CHUNK_EDGES`
        edges, or zarr rejects the remaining metadata.
    """
    transformers = doc.get("storage_transformers", [])
    if not isinstance(transformers, list):
        raise ManifestFormatError(
            f"{location}: storage_transformers must be a list",
            location=location,
            field="storage_transformers",
        )
    manifest: str | None = None
    split: tuple[int, ...] | None = None
    config: dict[str, Any] = {}
    for t in transformers:
        name = t.get("name") if isinstance(t, dict) else t
        if name != TRANSFORMER_NAME:
            raise ManifestFormatError(
                f"{location}: unsupported storage transformer {name!r}",
                location=location,
                field="storage_transformers",
            )
        if manifest is not None:
            raise ManifestFormatError(
                f"{location}: {TRANSFORMER_NAME} is listed twice",
                location=location,
                field="storage_transformers",
            )
        extra = sorted(set(t) - {"name", "configuration"}) if isinstance(t, dict) else []
        if extra:
            raise ManifestFormatError(
                f"{location}: the {TRANSFORMER_NAME} entry has unknown member {extra[0]!r} "
                "(only 'name' and 'configuration' are allowed)",
                location=location,
                field=extra[0],
            )
        manifest, config = _parse_configuration(t, location)
    _check_guard(doc, referenced=manifest is not None, location=location)
    visible = plain_zarr_metadata(doc)
    try:
        # zarr expands run-length chunk edges into lists: bound them first
        check_chunk_edges(visible, where=location)
    except MetadataError as e:
        raise ManifestFormatError(str(e), location=location, field="chunk_grid") from e
    try:
        # Parsing is not opening: the rectilinear-grid gate is zarr's to apply when it opens
        # the array, so a store this library wrote can always be read back here.
        with zarr.config.set({"array.rectilinear_chunks": True}):
            # a copy: codecs may decode their configuration in place (imagecodecs-zarr's
            # JPEG turns its base64 "tables" into bytes), and `visible` is served as JSON
            metadata = ArrayV3Metadata.from_dict(copy.deepcopy(visible))
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        # the mode would repair the codecs, not a byte-order-prefixed numpy dtype (">i4")
        repairable = manifest and str(doc.get("data_type", ""))[:1] not in "<>|="
        hint = compat_hint() if repairable and lacks_array_bytes_codec(doc.get("codecs")) else ""
        raise ManifestFormatError(
            f"{location}: invalid Zarr v3 array metadata: {e}{hint}", location=location
        ) from e
    if SPLIT_MEMBER in config:
        split = parse_split(config[SPLIT_MEMBER], ndim=len(metadata.shape), location=location)
    fingerprints = _parse_fingerprints(config.get(FINGERPRINTS_MEMBER), location)
    entries = config["manifest"] if manifest == INLINE_MANIFEST else None
    return ArrayDocument(visible, metadata, manifest, split, fingerprints, entries)


def plain_zarr_metadata(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An array's zarr.json as a Zarr library is shown it: without the ``chunk-manifest-json``
    storage transformer and without the plain-reader guard member (`PLAIN_READER_GUARD`).

    Only takes members out; `parse_array_document` validates them first.
    """
    return {k: v for k, v in doc.items() if k != "storage_transformers" and k != PLAIN_READER_GUARD}


def _check_guard(doc: Mapping[str, Any], *, referenced: bool, location: str) -> None:
    """The plain-reader guard: optional on a referenced array (stores written before it
    existed lack it), exactly ``{"must_understand": true}``, and only on a referenced array."""
    if PLAIN_READER_GUARD not in doc:
        return
    if doc[PLAIN_READER_GUARD] != _GUARD_VALUE or not isinstance(
        doc[PLAIN_READER_GUARD].get("must_understand"), bool
    ):
        raise ManifestFormatError(
            f"{location}: the member {PLAIN_READER_GUARD!r} must be "
            f'{{"must_understand": true}}, got {_shown(doc[PLAIN_READER_GUARD])}',
            location=location,
            field=PLAIN_READER_GUARD,
        )
    if not referenced:
        raise ManifestFormatError(
            f"{location}: the member {PLAIN_READER_GUARD!r} marks a referenced array, but "
            f"the array declares no {TRANSFORMER_NAME} storage transformer",
            location=location,
            field=PLAIN_READER_GUARD,
        )


def _shown(value: Any) -> str:
    """A JSON value for a message, cut short."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_fingerprints(member: Any, location: str) -> dict[str, Fingerprint]:
    """The ``fingerprints`` extension member: ``{"must_understand": false, "sources": {...}}``."""
    if member is None:
        return {}
    if not isinstance(member, dict) or member.get("must_understand") is not False:
        raise ManifestFormatError(
            f"{location}: '{FINGERPRINTS_MEMBER}' must be an object with "
            '"must_understand": false',
            location=location,
            field=FINGERPRINTS_MEMBER,
        )
    try:
        return fingerprints_from_json(member.get("sources", {}))
    except MetadataError as e:
        raise ManifestFormatError(
            f"{location}: invalid '{FINGERPRINTS_MEMBER}': {e}",
            location=location,
            field=FINGERPRINTS_MEMBER,
        ) from e


def _parse_configuration(entry: Any, location: str) -> tuple[str, dict[str, Any]]:
    """The normalized manifest path of a transformer entry, and its configuration."""
    config = entry.get("configuration") if isinstance(entry, dict) else None
    if not isinstance(config, dict):
        raise ManifestFormatError(
            f"{location}: {TRANSFORMER_NAME} needs a configuration object",
            location=location,
            field="configuration",
        )
    refuse_unknown_members(
        config,
        _KNOWN_CONFIGURATION,
        what=f"{TRANSFORMER_NAME} configuration member {{member}}",
        location=location,
    )
    path = config.get("manifest")
    if isinstance(path, dict) and SPLIT_MEMBER not in config:
        # zarr-specs#287: a small manifest inlined in the configuration (spec 4.4)
        return INLINE_MANIFEST, config
    if not isinstance(path, str) or not path:
        raise ManifestFormatError(
            f"{location}: {TRANSFORMER_NAME} configuration 'manifest' must be a relative path "
            "(or the manifest itself, an object)",
            location=location,
            field="manifest",
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        # not a URI reference (RFC 3986 has no raw control characters), nor a file name
        raise ManifestFormatError(
            f"{location}: manifest path {path!r} holds a control character",
            location=location,
            field="manifest",
        )
    normal = posixpath.normpath(path)
    if (
        ":" in path
        or "\\" in path
        or "%" in path
        or "?" in path
        or "#" in path
        or path.startswith("/")
        or normal.startswith("..")
    ):
        raise ManifestFormatError(
            f"{location}: manifest path {path!r} must stay inside the array directory",
            location=location,
            field="manifest",
        )
    # A split manifest is a directory strictly inside the array directory ("./manifest/");
    # a single manifest is a file.
    if SPLIT_MEMBER in config and (not path.endswith("/") or normal == "."):
        raise ManifestFormatError(
            f"{location}: a split manifest's 'manifest' must name a directory inside the "
            f"array directory, ending in '/' (like './{MANIFEST_DIR}/'), got {path!r}",
            location=location,
            field="manifest",
        )
    if SPLIT_MEMBER not in config and (path.endswith("/") or normal == "."):
        raise ManifestFormatError(
            f"{location}: manifest path {path!r} names a directory, not a manifest file "
            f"(a split manifest also needs the '{SPLIT_MEMBER}' member)",
            location=location,
            field="manifest",
        )
    return normal, config
