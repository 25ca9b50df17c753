"""The optional forms of a manifest entry that zarr-specs#287 allows (spec section 5.5).

Besides the explicit ``{"path", "offset", "length"}``, an entry may be

- ``{"path"}`` alone: the chunk is the whole object (its size is taken from the source
  when the manifest is loaded: one ``stat`` or HEAD request per distinct source);
- any entry with a ``"checksum"``: ``"<algorithm>:<lowercase hex digest>"`` of the chunk's
  bytes, ``crc32c`` (8 hex digits, the CRC-32C value most significant digit first, as
  RFC 3720 and Zarr's ``crc32c`` codec compute it) or ``sha256`` (64 hex digits); a reader
  verifies it on every read of the chunk.

This module turns such a manifest into the explicit form the columnar decoder reads, with
the whole-object keys and the checksums set apart.  It does no I/O: the reader sizes the
whole objects (`zarr_manifest.store._references.whole_object_size`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import google_crc32c

from zarr_manifest._json_codec import MAX_GENERIC_MANIFEST_BYTES
from zarr_manifest.errors import ChecksumMismatchError, ManifestFormatError

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "Checksum",
    "OptionalForms",
    "explicit_entries",
    "has_optional_forms",
    "load_json_object",
]

#: the algorithms a ``checksum`` may name, with the hex digits of their digest
CHECKSUM_ALGORITHMS = {"crc32c": 8, "sha256": 64}
_CHECKSUM = re.compile(r"(crc32c|sha256):([0-9a-f]+)")


@dataclass(frozen=True, slots=True)
class Checksum:
    """A chunk's recorded checksum: the algorithm and its lowercase hex digest."""

    algorithm: str
    digest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.digest}"

    def of(self, data: bytes | memoryview) -> str:
        """The digest of ``data`` with this checksum's algorithm, as recorded."""
        if self.algorithm == "sha256":
            return hashlib.sha256(data).hexdigest()
        return f"{google_crc32c.value(bytes(data)):08x}"

    def verify(self, data: bytes | memoryview, *, key: str, url: str) -> None:
        """Raise `ChecksumMismatchError` naming ``key`` and ``url`` unless ``data`` matches."""
        got = self.of(data)
        if got != self.digest:
            raise ChecksumMismatchError(
                f"chunk {key!r} read from {url} does not match its checksum: the manifest "
                f"records {self}, its {len(data)} bytes have {self.algorithm}:{got}; the "
                "source changed or the manifest is wrong, so the bytes are not returned",
                key=key,
                url=url,
            )


@dataclass(frozen=True, slots=True)
class OptionalForms:
    """What `explicit_entries` set apart: keys whose entry is a whole object, and the
    checksums by key."""

    whole: tuple[str, ...]
    checksums: dict[str, Checksum]


def has_optional_forms(data: bytes) -> bool:
    """Whether manifest.json bytes may hold an optional form (cheap, on the bytes).

    A JSON string cannot hold a bare ``"``, so each ``"offset"`` token is a member name
    (or a string value spelled so, which only sends the manifest down the slower path):
    a path-only entry makes the counts differ.
    """
    return b'"checksum"' in data or data.count(b'"offset"') != data.count(b'"path"')


def load_json_object(data: bytes, *, location: str) -> dict[str, Any]:
    """Parse a JSON object, refusing duplicate members at any depth (spec 5.1, rule 3).

    Raises
    ------
    ManifestFormatError
        Not JSON, too large or too deep, not an object, or a member repeated.
    """
    if len(data) > MAX_GENERIC_MANIFEST_BYTES:
        raise ManifestFormatError(
            f"manifest in {location} is {len(data)} bytes, more than the "
            f"{MAX_GENERIC_MANIFEST_BYTES} bytes read in this form (the environment variable "
            "ZARR_MANIFEST_MAX_GENERIC_BYTES raises the limit)",
            location=location,
        )

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        doc = dict(pairs)
        if len(doc) != len(pairs):
            seen: set[str] = set()
            repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise ManifestFormatError(
                f"{location}: member {repeated!r} appears twice", location=location, key=repeated
            )
        return doc

    try:
        doc = json.loads(data, object_pairs_hook=no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        if isinstance(e, ManifestFormatError):
            raise
        raise ManifestFormatError(f"{location} is not valid JSON: {e}", location=location) from e
    if not isinstance(doc, dict):
        raise ManifestFormatError(f"{location} must hold a JSON object", location=location)
    return doc


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def explicit_entries(
    entries: dict[str, Any], *, location: str
) -> tuple[dict[str, Any], OptionalForms]:
    """The manifest in explicit form, and what its optional forms said.

    A whole-object entry becomes ``{"path", "offset": 0, "length": 0}`` (the reader sets
    the length from the source).  Entries that are not objects, or have ``offset``
    without ``length`` or the reverse, are passed on unchanged: the decoder reports them.

    Raises
    ------
    ManifestFormatError
        A ``checksum`` that is not a string ``"crc32c:<8 hex>"`` or ``"sha256:<64 hex>"``
        (lowercase), naming the key.
    """
    explicit: dict[str, Any] = {}
    whole: list[str] = []
    checksums: dict[str, Checksum] = {}
    for key, entry in entries.items():
        if not isinstance(entry, dict):
            explicit[key] = entry
            continue
        entry = dict(entry)
        if "checksum" in entry:
            checksums[key] = _parse_checksum(entry.pop("checksum"), key, location)
        if "offset" not in entry and "length" not in entry and set(entry) == {"path"}:
            entry["offset"] = entry["length"] = 0
            whole.append(key)
        explicit[key] = entry
    return explicit, OptionalForms(tuple(whole), checksums)


def _parse_checksum(value: Any, key: str, location: str) -> Checksum:
    match = _CHECKSUM.fullmatch(value) if isinstance(value, str) else None
    if match is None or len(match[2]) != CHECKSUM_ALGORITHMS[match[1]]:
        raise ManifestFormatError(
            f'chunk {key!r} in {location}: \'checksum\' must be "crc32c:" and 8 or "sha256:" '
            f"and 64 lowercase hex digits, got {value!r}",
            location=location,
            key=key,
            field="checksum",
        )
    return Checksum(match[1], match[2])
