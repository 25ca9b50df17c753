"""Publishing a manifest store: what an existing store owns, and replacing it safely.

The rules (spec section 10.2, "Replacing a store"):

- A store **owns** only its hierarchy: the ``zarr.json`` of every node reachable from the root,
  the manifests in its referenced arrays' directories (``manifest.json``, ``manifest/``,
  ``manifest.<hash>.json``, ``manifest.<hash>/``), the chunk objects of its inline arrays,
  and its writer lock ``.zarr-manifest/writer.lock``.  Nothing else under the root is ever
  deleted or overwritten; a write that would overwrite or shadow such an object is refused
  (`StoreConflictError`, naming it).
- A manifest that a published ``zarr.json`` names is never rewritten in place: a replacement
  goes under a new, content-addressed name (``manifest.<hash>.json``), so a reader that holds
  the old ``zarr.json`` keeps reading the old manifest.  Old manifests stay until `clean`.
- Writes happen in this order: manifests, inline chunks, the ``zarr.json`` of every node
  below the root, the root's last; objects of nodes that are gone are deleted after.
- One writer at a time: the writer lock is created with a conditional write (local:
  ``O_EXCL``; object stores: ``If-None-Match: *``), so a second writer fails with
  `ConcurrentWriteError` before it has changed anything.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import obstore
import orjson
from obstore.exceptions import AlreadyExistsError

from zarr_manifest.errors import ConcurrentWriteError, StoreConflictError
from zarr_manifest.format.location import StoreLocation, open_location
from zarr_manifest.format.split import INDEX_FILE, MANIFEST_DIR
from zarr_manifest.format.transformer import (
    MANIFEST_FILE,
    parse_array_document,
    parse_node_document,
)
from zarr_manifest.manifest import ChunkManifest

__all__ = [
    "DEFAULT_GRACE",
    "LOCK_KEY",
    "ExistingStore",
    "check_not_shadowed",
    "chunk_key_pattern",
    "clean",
    "fresh_manifest_name",
    "manifest_digest",
    "scan_store",
    "writer_lock",
]

ZARR_JSON = "zarr.json"
#: the writer's bookkeeping directory (not a node: readers do not list it)
BOOKKEEPING_DIR = ".zarr-manifest"
#: created (conditionally) for the duration of a write; a second writer finds it and fails
LOCK_KEY = f"{BOOKKEEPING_DIR}/writer.lock"
#: how long `clean` keeps manifests that no zarr.json names any more, after the last write
DEFAULT_GRACE = datetime.timedelta(hours=1)

# manifests a writer may have written into an array directory
_MANIFEST_FILE = re.compile(r"manifest(?:\.[0-9a-f]{16,64})?\.json")
_MANIFEST_DIR = re.compile(r"manifest(?:\.[0-9a-f]{16,64})?")
_REGION_FILE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*\.json")


@dataclass
class ExistingStore:
    """What the manifest store found at a location owns.

    Attributes
    ----------
    nodes
        Node path ("" for the root) -> ``"group"``, ``"virtual"`` or ``"inline"``.
    documents
        Node path -> the bytes of its zarr.json.
    owned
        Every key the store owns (see the module notes).
    in_use
        The manifest keys that a zarr.json names (a reader may be reading them).
    chunks
        Inline array path -> the keys of its chunk objects.
    """

    nodes: dict[str, str] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)
    owned: set[str] = field(default_factory=set)
    in_use: set[str] = field(default_factory=set)
    chunks: dict[str, set[str]] = field(default_factory=dict)


def scan_store(location: StoreLocation, keys: Iterable[str]) -> ExistingStore | None:
    """The store at ``location`` (whose objects are ``keys``), or None if it has no root
    zarr.json.

    Raises
    ------
    ManifestFormatError
        A zarr.json of the hierarchy cannot be parsed: what it owns cannot be told, so it
        is not replaced.
    """
    keys = set(keys)
    if ZARR_JSON not in keys:
        return None
    found = ExistingStore()
    _scan_node(location, keys, "", found)
    return found


def _scan_node(location: StoreLocation, keys: set[str], path: str, found: ExistingStore) -> None:
    prefix = f"{path}/" if path else ""
    key = prefix + ZARR_JSON
    raw = bytes(obstore.get(location.store, key).bytes())
    where = location.url + key
    doc = parse_node_document(raw, location=where)
    found.documents[path] = raw
    found.owned.add(key)
    below = [k[len(prefix) :] for k in keys if k.startswith(prefix) and k != key]
    if doc["node_type"] == "group":
        found.nodes[path] = "group"
        children = sorted({k.split("/", 1)[0] for k in below if k.endswith("/" + ZARR_JSON)})
        for name in children:
            if f"{prefix}{name}/{ZARR_JSON}" in keys:
                _scan_node(location, keys, prefix + name, found)
        return
    parsed = parse_array_document(doc, location=where)
    # Manifests this library writes are owned whether or not the document names them: an
    # old one kept for readers, or one a killed writer left.
    for rel in below:
        first, _, rest = rel.partition("/")
        if (not rest and _MANIFEST_FILE.fullmatch(first)) or (
            rest
            and _MANIFEST_DIR.fullmatch(first)
            and (rest == INDEX_FILE or _REGION_FILE.fullmatch(rest))
        ):
            found.owned.add(prefix + rel)
    if parsed.manifest is not None:
        found.nodes[path] = "virtual"
        named = prefix + parsed.manifest
        if parsed.split is None:
            found.in_use.add(named)
            found.owned.add(named)
        else:
            inside = {prefix + r for r in below if r.startswith(parsed.manifest + "/")}
            found.in_use |= inside
            found.owned |= inside
        return
    found.nodes[path] = "inline"
    pattern = chunk_key_pattern(parsed.document.get("chunk_key_encoding"))
    chunks = {prefix + r for r in below if pattern.fullmatch(r)}
    found.chunks[path] = chunks
    found.owned |= chunks


def chunk_key_pattern(encoding: Any) -> re.Pattern[str]:
    """The keys (relative to the array directory) of an inline array's chunk objects."""
    name, separator = "default", "/"
    if isinstance(encoding, dict):
        name = encoding.get("name", name)
        separator = (encoding.get("configuration") or {}).get(
            "separator", "/" if name == "default" else "."
        )
    sep = re.escape(str(separator))
    index = r"(?:0|[1-9][0-9]*)"
    if name == "v2":
        return re.compile(f"{index}(?:{sep}{index})*")
    return re.compile(f"c(?:{sep}{index})*")


def manifest_digest(manifest: ChunkManifest, region_shape: tuple[int, ...] | None) -> str:
    """A name for a manifest's content (16 hex digits of SHA-256 over its entries)."""
    h = hashlib.sha256()
    h.update(orjson.dumps([list(manifest.shape_chunk_grid), region_shape, manifest.path_table]))
    for column in (manifest.path_ids, manifest.offsets, manifest.lengths):
        dtype = np.int64 if column.dtype.kind == "i" else np.uint64
        h.update(np.ascontiguousarray(column, dtype=dtype).tobytes())
    return h.hexdigest()[:16]


def fresh_manifest_name(
    prefix: str, keys: set[str], manifest: ChunkManifest, region_shape: tuple[int, ...] | None
) -> str:
    """The manifest name for an array directory: the plain one (``manifest.json`` or
    ``manifest``) while nothing has that name, else a content-addressed one, so a manifest
    a reader may hold is never rewritten."""
    if region_shape is None:
        if prefix + MANIFEST_FILE not in keys:
            return MANIFEST_FILE
        return f"manifest.{manifest_digest(manifest, None)}.json"
    if not any(k.startswith(f"{prefix}{MANIFEST_DIR}/") for k in keys):
        return MANIFEST_DIR
    return f"{MANIFEST_DIR}.{manifest_digest(manifest, region_shape)}"


# ---- one writer at a time -------------------------------------------------------------------


@contextmanager
def writer_lock(location: StoreLocation) -> Iterator[None]:
    """Hold the store's writer lock while the body runs.

    Raises
    ------
    ConcurrentWriteError
        Another writer holds the lock (or died holding it: the message says how to clear it).
    """
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    try:
        obstore.put(location.store, LOCK_KEY, orjson.dumps(holder), mode="create")
    except AlreadyExistsError as e:
        raise ConcurrentWriteError(
            f"{location.url}{LOCK_KEY} exists: another writer is writing this store "
            f"({_describe_holder(location)}); nothing was changed. If that writer died, "
            "remove the lock with zarr_manifest.clean(store, break_lock=True)",
            lock=location.url + LOCK_KEY,
        ) from e
    try:
        yield
    finally:
        obstore.delete(location.store, LOCK_KEY)


def _describe_holder(location: StoreLocation) -> str:
    try:
        holder = orjson.loads(bytes(obstore.get(location.store, LOCK_KEY).bytes()))
    except Exception:
        return "holder unknown"
    text = f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
    if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
        text += ", which is no longer running"
    return text


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_not_shadowed(
    existing: Iterable[str],
    owned: set[str],
    writes: Iterable[str],
    groups: Iterable[str],
    inline: dict[str, re.Pattern[str]],
    url: str,
) -> None:
    """Refuse a write that would overwrite, or make part of the hierarchy, an object the
    store does not own.

    ``existing`` are the keys at the location, ``writes`` the keys about to be written,
    ``groups`` the new hierarchy's group paths and ``inline`` its inline arrays' paths with
    their chunk-key patterns.

    Raises
    ------
    StoreConflictError
        Naming the first such object.
    """
    foreign = sorted(k for k in existing if k not in owned)
    if not foreign:
        return
    foreign_set = set(foreign)
    for key in sorted(set(writes) & foreign_set):
        raise StoreConflictError(
            f"{url}{key} exists and is not part of the manifest store; it would be "
            "overwritten. Move it, or write the store elsewhere",
            key=key,
        )
    group_set = set(groups)
    for key in foreign:
        parts = key.split("/")
        if parts[-1] == ZARR_JSON and "/".join(parts[:-2]) in group_set and len(parts) > 1:
            # a zarr.json inside a group of the new hierarchy would become a member node
            raise StoreConflictError(
                f"{url}{key} is not part of the manifest store but would be read as a "
                f"member of group {'/'.join(parts[:-2]) or '/'}. Move it, or write the store "
                "elsewhere",
                key=key,
            )
        for path, pattern in inline.items():
            prefix = f"{path}/"
            if key.startswith(prefix) and pattern.fullmatch(key[len(prefix) :]):
                raise StoreConflictError(
                    f"{url}{key} is not part of the manifest store but would be read as a "
                    f"chunk of the inline array {path!r}. Move it, or write the store elsewhere",
                    key=key,
                )


# ---- clean-up -------------------------------------------------------------------------------


def clean(
    store: str | os.PathLike[str] | Any,
    *,
    grace: datetime.timedelta = DEFAULT_GRACE,
    break_lock: bool = False,
    **obstore_kwargs: Any,
) -> list[str]:
    """Delete the manifests of a manifest store that no zarr.json names any more.

    Replacing a store keeps the old manifests, so that readers that opened it before keep
    reading consistent values; this removes them once the store was last written more than
    ``grace`` ago (readers that opened it before then may fail afterwards).

    Parameters
    ----------
    store
        The manifest store (local path, URL or obstore store).
    grace
        How long after the last write old manifests are kept.
    break_lock
        Remove the writer lock a writer that died left behind (only when no writer is
        running: a live writer's lock removed this way lets a second writer in).
    **obstore_kwargs
        Passed to `obstore.store.from_url` for URLs.

    Returns
    -------
    list of str
        The keys deleted.

    Raises
    ------
    ConcurrentWriteError
        A writer holds the lock (and ``break_lock`` is False).
    FileNotFoundError
        There is no manifest store at ``store``.
    """
    location = open_location(store, **obstore_kwargs)
    if break_lock:
        with suppress(FileNotFoundError):
            obstore.delete(location.store, LOCK_KEY)
    with writer_lock(location):
        listing = {m["path"]: m for m in obstore.list(location.store).collect()}
        found = scan_store(location, listing)
        if found is None:
            raise FileNotFoundError(f"no manifest store at {location.url}")
        written = listing[ZARR_JSON]["last_modified"]
        if datetime.datetime.now(datetime.UTC) - written < grace:
            return []
        chunks = set().union(*found.chunks.values()) if found.chunks else set()
        unused = sorted(
            k
            for k in found.owned
            if k not in found.in_use
            and k not in chunks
            and not k.endswith(ZARR_JSON)
            and k != LOCK_KEY
        )
        if unused:
            obstore.delete(location.store, unused)
        return unused
