"""`Fingerprint`: what a source file looked like when a manifest referencing it was made.

A manifest records byte ranges; if the file they point into is rewritten, the ranges point
at the wrong bytes and a reader silently decodes garbage (or fails in a codec).  Builders
therefore record each source's size and, where the storage gives them, its ETag and
last-modified time; readers compare them with the live file before reading (see
`zarr_manifest.store.ManifestStore`'s ``verify``).

This module is the model layer: no I/O.  It turns the results of ``os.stat`` and
``obstore.head`` into fingerprints and compares them; the builders and the store do the
calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Mapping
from typing import Any

from zarr_manifest.errors import CombineError, MetadataError

__all__ = ["Fingerprint", "fingerprints_from_json", "fingerprints_to_json", "merge_fingerprints"]

_FIELDS = ("size", "etag", "last_modified", "inode", "ctime_ns")
# st_ctime is the status change time on POSIX; on Windows it was the creation time, which a
# rewrite does not change.
_HAS_CHANGE_TIME = os.name == "posix"


def _iso_utc(value: str | dt.datetime) -> str:
    """An ISO 8601 timestamp in UTC with a ``Z`` suffix (microseconds only when non-zero)."""
    if isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value)
        except ValueError as e:
            raise MetadataError(f"last_modified {value!r} is not an ISO 8601 timestamp") from e
    elif isinstance(value, dt.datetime):
        stamp = value
    else:
        raise MetadataError(f"last_modified must be an ISO 8601 string, got {type(value)}")
    if stamp.tzinfo is None:
        raise MetadataError(f"last_modified {value!r} has no time zone (it must be UTC)")
    stamp = stamp.astimezone(dt.UTC)
    return stamp.replace(tzinfo=None).isoformat() + "Z"


@dataclasses.dataclass(frozen=True, slots=True)
class Fingerprint:
    """A source file's identity when a manifest was made.

    Parameters
    ----------
    size
        The file's size in bytes.
    etag
        The storage's ETag (HTTP, S3, GCS, Azure), exactly as the storage returned it;
        None where there is none (local files).
    last_modified
        When the file was last modified: an ISO 8601 timestamp with a time zone, stored
        normalised to UTC (``"2026-11-23T18:33:02.123456Z"``); for local files the mtime.
    inode
        Local files: the inode number (``st_ino``); a file replaced by another one (even
        with the same size and mtime) has another.
    ctime_ns
        Local files on POSIX: the status change time in nanoseconds (``st_ctime_ns``).
        Every write, truncate or rename sets it, and unlike the mtime it cannot be set back
        (``os.utime``), so a same-size rewrite with the mtime restored is still seen.

    Raises
    ------
    MetadataError
        A negative or non-integer size, inode or change time, an empty ETag, or a
        timestamp that is not ISO 8601 with a time zone.
    """

    size: int
    etag: str | None = None
    last_modified: str | None = None
    inode: int | None = None
    ctime_ns: int | None = None

    def __post_init__(self) -> None:
        for name in ("size", "inode", "ctime_ns"):
            value = getattr(self, name)
            if value is None and name != "size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MetadataError(f"fingerprint {name} must be an integer >= 0, got {value!r}")
        if self.etag is not None and (not isinstance(self.etag, str) or not self.etag):
            raise MetadataError(f"fingerprint etag must be a non-empty string, got {self.etag!r}")
        if self.last_modified is not None:
            object.__setattr__(self, "last_modified", _iso_utc(self.last_modified))

    # ---- from what the storage reports -----------------------------------------------------

    @classmethod
    def from_stat(cls, st: os.stat_result) -> Fingerprint:
        """The fingerprint of a local file from its ``os.stat`` result: size, mtime, inode
        and (POSIX) status change time."""
        # from integer microseconds: float seconds could round differently per platform
        mtime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            microseconds=st.st_mtime_ns // 1000
        )
        ino = int(st.st_ino)
        ctime = int(st.st_ctime_ns)
        return cls(
            size=int(st.st_size),
            last_modified=_iso_utc(mtime),
            inode=ino if ino > 0 else None,
            ctime_ns=ctime if _HAS_CHANGE_TIME and ctime >= 0 else None,
        )

    @classmethod
    def from_object_meta(cls, meta: Mapping[str, Any]) -> Fingerprint:
        """The fingerprint of an object from obstore's ``ObjectMeta`` (``obstore.head``)."""
        modified = meta.get("last_modified")
        etag = meta.get("e_tag") or None
        return cls(
            size=int(meta["size"]),
            etag=etag,
            last_modified=None if modified is None else _iso_utc(modified),
        )

    # ---- comparing -----------------------------------------------------------------------

    def mismatch(self, live: Fingerprint) -> str | None:
        """How ``live`` (the file now) differs from this recorded fingerprint; None if not.

        The size must match.  ETags are compared when both are known (ignoring a weak
        ``W/`` marker); last-modified times only when both are known and the ETags could
        not be compared (an ETag is the stronger identity: a file re-uploaded with the same
        content keeps its ETag but gets a new time).
        """
        problems = []
        if self.size != live.size:
            problems.append(f"size {self.size} recorded, {live.size} now")
        if self.etag is not None and live.etag is not None:
            if _strong(self.etag) != _strong(live.etag):
                problems.append(f"ETag {self.etag} recorded, {live.etag} now")
        elif (
            self.last_modified is not None
            and live.last_modified is not None
            and self.last_modified != live.last_modified
        ):
            problems.append(
                f"last modified {self.last_modified} recorded, {live.last_modified} now"
            )
        if self.inode is not None and live.inode is not None and self.inode != live.inode:
            problems.append(f"inode {self.inode} recorded, {live.inode} now (another file)")
        if (
            self.ctime_ns is not None
            and live.ctime_ns is not None
            and self.ctime_ns != live.ctime_ns
        ):
            problems.append(
                f"change time {self.ctime_ns} ns recorded, {live.ctime_ns} ns now "
                "(written, renamed or re-linked)"
            )
        return "; ".join(problems) or None

    # ---- JSON ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The JSON object form: ``{"size": n, "etag": ..., "last_modified": ..., "inode":
        ..., "ctime_ns": ...}`` (members that are None are left out)."""
        out: dict[str, Any] = {"size": self.size}
        for name in _FIELDS[1:]:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Fingerprint:
        """Parse the JSON object form.

        Raises
        ------
        MetadataError
            Not an object, a missing ``size``, an unknown member, or a bad value.
        """
        if not isinstance(obj, Mapping):
            raise MetadataError(f"a fingerprint must be a JSON object, got {obj!r}")
        unknown = sorted(set(obj) - set(_FIELDS))
        if unknown:
            raise MetadataError(f"unknown fingerprint member {unknown[0]!r}")
        if "size" not in obj:
            raise MetadataError("a fingerprint needs 'size'")
        for name in ("etag", "last_modified"):
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise MetadataError(f"fingerprint {name} must be a string, got {value!r}")
        return cls(
            size=obj["size"],
            etag=obj.get("etag"),
            last_modified=obj.get("last_modified"),
            inode=obj.get("inode"),
            ctime_ns=obj.get("ctime_ns"),
        )


def _strong(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def fingerprints_to_json(fingerprints: Mapping[str, Fingerprint]) -> dict[str, Any]:
    """``{path: fingerprint JSON}``, sorted by path."""
    return {path: fingerprints[path].to_json() for path in sorted(fingerprints)}


def fingerprints_from_json(obj: Any) -> dict[str, Fingerprint]:
    """Parse ``{path: fingerprint JSON}``.

    Raises
    ------
    MetadataError
        Not an object, an empty path, or a bad fingerprint (the message names the path).
    """
    if not isinstance(obj, Mapping):
        raise MetadataError(f"fingerprint sources must be a JSON object, got {type(obj).__name__}")
    out: dict[str, Fingerprint] = {}
    for path, value in obj.items():
        if not isinstance(path, str) or not path:
            raise MetadataError(f"fingerprint source path {path!r} must be a non-empty string")
        try:
            out[path] = Fingerprint.from_json(value)
        except MetadataError as e:
            raise MetadataError(f"fingerprint of {path!r}: {e}") from e
    return out


def merge_fingerprints(mappings: Iterable[Mapping[str, Fingerprint]]) -> dict[str, Fingerprint]:
    """The union of several ``{path: Fingerprint}`` mappings.

    Raises
    ------
    CombineError
        One path has different fingerprints in two inputs (the same file was seen in two
        different states, so one of the manifests is stale).
    """
    out: dict[str, Fingerprint] = {}
    for i, mapping in enumerate(mappings):
        for path, fp in mapping.items():
            seen = out.setdefault(path, fp)
            if seen != fp:
                raise CombineError(
                    f"input {i} records a different fingerprint for {path} than an earlier "
                    f"input ({fp.to_json()} vs {seen.to_json()}); the file changed between "
                    "the builds"
                )
    return out
