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
- Every write ends with one commit: the **snapshot** ``.zarr-manifest/snapshot.json``, which
  names, for every node, an immutable copy of its ``zarr.json`` under
  ``.zarr-manifest/documents/<hash>.json``.  Readers that support it (`ManifestStore`,
  `read_group`) read the snapshot once when they open the store and take every document
  from it, so they see the whole old store or the whole new one, whatever the writer is
  doing, and a writer killed before the commit leaves the old store as it was.  In the
  snapshot's copy, an inline array is presented as a referenced array whose manifest points
  at immutable copies of its chunks (``chunks.<hash>/``), marked ``"inline"``.
- Writes happen in this order: manifests and inline chunks (copies under new names), the
  immutable documents, the snapshot (the commit), then the ``zarr.json`` at each node's
  usual place for readers without snapshot support (children first, the root last); the
  objects of nodes that are gone are deleted after.
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import obstore
import orjson
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import LocalStore

from zarr_manifest.errors import ConcurrentWriteError, ManifestFormatError, StoreConflictError
from zarr_manifest.format.location import StoreLocation, open_location
from zarr_manifest.format.split import INDEX_FILE, MANIFEST_DIR
from zarr_manifest.format.transformer import (
    MANIFEST_FILE,
    TRANSFORMER_NAME,
    parse_array_document,
    parse_node_document,
)
from zarr_manifest.manifest import ChunkManifest

__all__ = [
    "DEFAULT_GRACE",
    "SNAPSHOT_KEY",
    "USUAL_PLACE",
    "Snapshot",
    "commit_snapshot",
    "document_key",
    "document_to_read",
    "encode_snapshot",
    "inline_presentation",
    "parse_snapshot",
    "put_new",
    "read_snapshot",
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
#: the commit point of a store: which immutable document is every node's
SNAPSHOT_KEY = f"{BOOKKEEPING_DIR}/snapshot.json"
#: where the immutable node documents are, named by their content
DOCUMENTS_DIR = f"{BOOKKEEPING_DIR}/documents"
#: the version of the snapshot document this module reads and writes
SNAPSHOT_VERSION = 1
#: the transformer configuration member marking an inline array presented as referenced
INLINE_MEMBER = "inline"
#: how long `clean` keeps manifests that no zarr.json names any more, after the last write
DEFAULT_GRACE = datetime.timedelta(hours=1)

# manifests a writer may have written into an array directory
_MANIFEST_FILE = re.compile(r"manifest(?:\.[0-9a-f]{16,64})?\.json")
_MANIFEST_DIR = re.compile(r"manifest(?:\.[0-9a-f]{16,64})?")
_CHUNK_COPY = re.compile(r"chunks\.[0-9a-f]{16,64}")
_DOCUMENT = re.compile(re.escape(DOCUMENTS_DIR) + r"/[0-9a-f]{16,64}(?:\.[0-9a-f]{16,64})?\.json")
_STAGING = re.compile(r"#[0-9]+$")  # obstore's local staging files, left by a killed writer
_REGION_FILE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*\.json")


@dataclass
class Snapshot:
    """A store's commit: the immutable document of every node.

    Attributes
    ----------
    nodes
        Node path ("" for the root) -> key of its immutable document.
    retired
        Paths of nodes removed by earlier writes whose manifests `clean` has yet to delete.
    etag, version
        The snapshot object's ETag and version when read (for a conditional replacement:
        S3 and Azure match the ETag, GCS the version, its generation).
    """

    nodes: dict[str, str]
    retired: list[str] = field(default_factory=list)
    etag: str | None = None
    version: str | None = None


@dataclass
class ExistingStore:
    """What the manifest store found at a location owns.

    Attributes
    ----------
    nodes
        Node path ("" for the root) -> ``"group"``, ``"virtual"`` or ``"inline"``, for the
        hierarchy of ``zarr.json`` documents at their usual places.
    documents
        Node path -> the bytes of its ``zarr.json`` at its usual place.
    owned
        Every key the store owns (see the module notes).
    in_use
        The keys a current document names, or is (a reader may be reading them).
    chunks
        Inline array path -> the keys of its chunk objects.
    snapshot
        The store's snapshot, if it has one.
    """

    nodes: dict[str, str] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)
    owned: set[str] = field(default_factory=set)
    in_use: set[str] = field(default_factory=set)
    chunks: dict[str, set[str]] = field(default_factory=dict)
    snapshot: Snapshot | None = None


def scan_store(
    location: StoreLocation, keys: Iterable[str], *, compat: str | None = None
) -> ExistingStore | None:
    """The store at ``location`` (whose objects are ``keys``), or None if it has neither a
    root zarr.json nor a snapshot.  ``compat`` reads documents another writer wrote
    (`parse_node_document`).

    Raises
    ------
    ManifestFormatError
        A document of the hierarchy or the snapshot cannot be parsed: what the store owns
        cannot be told, so it is not replaced.
    """
    keys = set(keys)
    snapshot = read_snapshot(location) if SNAPSHOT_KEY in keys else None
    if ZARR_JSON not in keys and snapshot is None:
        return None
    found = ExistingStore(snapshot=snapshot)
    if ZARR_JSON in keys:
        _scan_node(location, keys, "", found, compat)
    directories = set(found.nodes)
    if snapshot is not None:
        for path, key in snapshot.nodes.items():
            _scan_snapshot_node(location, path, key, found)
        directories |= set(snapshot.nodes) | set(snapshot.retired)
    for key in keys:
        if key.startswith(BOOKKEEPING_DIR + "/"):
            found.owned.add(key)
    for path in directories:
        prefix = f"{path}/" if path else ""
        for key in keys:
            if key.startswith(prefix) and _written_by_us(key[len(prefix) :]):
                found.owned.add(key)
    return found


def _written_by_us(rel: str) -> bool:
    """Whether a key relative to an array directory is one this library writes there
    (besides zarr.json and inline chunks)."""
    rel = _STAGING.sub("", rel)
    first, _, rest = rel.partition("/")
    if not rest:
        return _MANIFEST_FILE.fullmatch(first) is not None
    if _CHUNK_COPY.fullmatch(first):
        return True
    return _MANIFEST_DIR.fullmatch(first) is not None and (
        rest == INDEX_FILE or _REGION_FILE.fullmatch(rest) is not None
    )


def _scan_node(
    location: StoreLocation,
    keys: set[str],
    path: str,
    found: ExistingStore,
    compat: str | None = None,
) -> None:
    prefix = f"{path}/" if path else ""
    key = prefix + ZARR_JSON
    raw = bytes(obstore.get(location.store, key).bytes())
    where = location.url + key
    doc = parse_node_document(raw, location=where, compat=compat)
    found.documents[path] = raw
    found.owned.add(key)
    found.in_use.add(key)
    below = [k[len(prefix) :] for k in keys if k.startswith(prefix) and k != key]
    if doc["node_type"] == "group":
        found.nodes[path] = "group"
        children = sorted({k.split("/", 1)[0] for k in below if k.endswith("/" + ZARR_JSON)})
        for name in children:
            if f"{prefix}{name}/{ZARR_JSON}" in keys:
                _scan_node(location, keys, prefix + name, found, compat)
        return
    parsed = parse_array_document(doc, location=where)
    if parsed.manifest is not None:
        found.nodes[path] = "virtual"
        _mark_manifest(found, prefix, parsed.manifest, parsed.split is not None)
        return
    found.nodes[path] = "inline"
    pattern = chunk_key_pattern(parsed.document.get("chunk_key_encoding"))
    chunks = {prefix + r for r in below if pattern.fullmatch(r)}
    found.chunks[path] = chunks
    found.owned |= chunks
    found.in_use |= chunks


def _scan_snapshot_node(location: StoreLocation, path: str, key: str, found: ExistingStore) -> None:
    where = location.url + key
    try:
        raw = bytes(obstore.get(location.store, key).bytes())
    except FileNotFoundError as e:
        raise ManifestFormatError(
            f"{where} is missing (named by {SNAPSHOT_KEY})", location=where
        ) from e
    found.in_use.add(key)
    # an inline array's copy "<zarr.json hash>.<presented hash>.json" comes with the plain
    # copy of its zarr.json, which readers look for
    directory, name = key.rsplit("/", 1)
    found.in_use.add(f"{directory}/{name.split('.', 1)[0]}.json")
    doc = parse_node_document(raw, location=where)
    if doc["node_type"] != "array":
        return
    prefix = f"{path}/" if path else ""
    configuration = _transformer_configuration(doc)
    parsed = parse_array_document(doc, location=where)
    if parsed.manifest is not None:
        _mark_manifest(found, prefix, parsed.manifest, parsed.split is not None)
    inline = configuration.get(INLINE_MEMBER)
    if isinstance(inline, dict) and isinstance(inline.get("chunks"), str):
        found.in_use.add(prefix + inline["chunks"])  # a directory: a prefix of its chunks


def _mark_manifest(found: ExistingStore, prefix: str, name: str, split: bool) -> None:
    key = prefix + name
    found.in_use.add(key + "/" if split else key)


def in_use(found: ExistingStore, key: str) -> bool:
    """Whether ``key`` is, or is inside, something a current document names."""
    if key in found.in_use:
        return True
    parts = key.split("/")
    return any("/".join(parts[:i]) + "/" in found.in_use for i in range(1, len(parts)))


def _transformer_configuration(doc: dict[str, Any]) -> dict[str, Any]:
    for entry in doc.get("storage_transformers") or ():
        if isinstance(entry, dict) and isinstance(entry.get("configuration"), dict):
            return dict(entry["configuration"])
    return {}


# ---- the snapshot ---------------------------------------------------------------------------


def document_key(document: bytes, presented: bytes | None = None) -> str:
    """The key of a node document's immutable copy: named by its content.

    ``presented`` is what the snapshot shows when it differs from the zarr.json (an inline
    array, whose zarr.json does not change with its data): its hash is added to the name.
    """
    name = hashlib.sha256(document).hexdigest()[:32]
    if presented is not None:
        name += "." + hashlib.sha256(presented).hexdigest()[:32]
    return f"{DOCUMENTS_DIR}/{name}.json"


#: `document_to_read`'s answer for "the zarr.json at the node's usual place"
USUAL_PLACE = "zarr.json"


def document_to_read(
    documents: Mapping[str, str],
    path: str,
    usual: bytes | None,
    has_object: Callable[[str], bool],
) -> str | None:
    """Which document a reader holding a snapshot shows for the node at ``path``.

    Parameters
    ----------
    documents
        The snapshot's nodes (path -> key of the immutable copy).
    path
        The node path.
    usual
        The zarr.json at the node's usual place (None: there is none).
    has_object
        Whether the store holds a key.

    Returns
    -------
    str or None
        The key of the snapshot's copy; `USUAL_PLACE` when the zarr.json at its usual place
        was changed by something that keeps no snapshot (a hand edit: it is shown as it is,
        as a store without snapshot shows it); None when there is no such node in the
        snapshot's version.
    """
    expected = documents.get(path)
    if usual is None:
        return expected  # removed by a writer since the snapshot was read (or never there)
    key = document_key(usual)
    if (expected is not None and expected.startswith(key[: -len(".json")])) or has_object(key):
        # the snapshot's version, or one a writer published since (every writer stores the
        # copy before it replaces the zarr.json): this reader keeps to its snapshot
        return expected
    return USUAL_PLACE


def encode_snapshot(nodes: dict[str, str], retired: Iterable[str] = ()) -> bytes:
    """The snapshot document naming each node's immutable document."""
    doc = {"version": SNAPSHOT_VERSION, "nodes": dict(sorted(nodes.items()))}
    retired = sorted(set(retired))
    if retired:
        doc["retired"] = retired
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def parse_snapshot(data: bytes, *, location: str) -> Snapshot:
    """Parse and validate a snapshot document.

    Raises
    ------
    ManifestFormatError
        Not JSON, an unknown version, no root, or a node document key that is not an
        immutable document's.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ManifestFormatError(f"{location} is not valid JSON: {e}", location=location) from e
    if not isinstance(doc, dict) or doc.get("version") != SNAPSHOT_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise ManifestFormatError(
            f"{location}: snapshot version {version!r} is not supported (this reader knows "
            f"version {SNAPSHOT_VERSION})",
            location=location,
        )
    nodes = doc.get("nodes")
    retired = doc.get("retired", [])
    if (
        not isinstance(nodes, dict)
        or "" not in nodes
        or not all(
            isinstance(p, str) and isinstance(k, str) and _DOCUMENT.fullmatch(k)
            for p, k in nodes.items()
        )
        or not isinstance(retired, list)
        or not all(isinstance(p, str) for p in retired)
    ):
        raise ManifestFormatError(
            f'{location} must hold "nodes": an object from node path (the root "" '
            f'included) to a key under "{DOCUMENTS_DIR}/", and optionally "retired": a '
            "list of paths",
            location=location,
        )
    for path in [*nodes, *retired]:
        parts = path.split("/") if path else []
        if any(p in ("", ".", "..") for p in parts):
            raise ManifestFormatError(
                f"{location}: {path!r} is not a node path", location=location, key=path
            )
    return Snapshot(nodes, retired)


def read_snapshot(location: StoreLocation) -> Snapshot | None:
    """The store's snapshot, or None if it has none.

    Raises
    ------
    ManifestFormatError
        The snapshot is malformed.
    """
    try:
        result = obstore.get(location.store, SNAPSHOT_KEY)
    except FileNotFoundError:
        return None
    etag, version = result.meta.get("e_tag"), result.meta.get("version")
    snapshot = parse_snapshot(bytes(result.bytes()), location=location.url + SNAPSHOT_KEY)
    snapshot.etag, snapshot.version = etag, version
    return snapshot


def commit_snapshot(location: StoreLocation, data: bytes, previous: Snapshot | None) -> None:
    """Replace the snapshot: the one step that publishes a write.

    Where the store supports it (object stores), the replacement is conditional on the
    snapshot being the one read when the write began.

    Raises
    ------
    ConcurrentWriteError
        The snapshot changed since (another writer ignored or broke the lock).
    """
    mode: Any
    if previous is None:
        mode = "create"
    elif previous.etag is not None and not isinstance(location.store, LocalStore):
        mode = {"e_tag": previous.etag}
        if previous.version is not None:  # GCS matches the generation, not the ETag
            mode["version"] = previous.version
    else:
        # local disks: the lock keeps other writers out; the put itself is a rename
        current = read_snapshot(location)
        if current is None or current.nodes != previous.nodes:
            raise _changed(location)
        mode = "overwrite"
    try:
        obstore.put(location.store, SNAPSHOT_KEY, data, mode=mode)
    except (AlreadyExistsError, PreconditionError) as e:
        raise _changed(location) from e


def _changed(location: StoreLocation) -> ConcurrentWriteError:
    return ConcurrentWriteError(
        f"{location.url}{SNAPSHOT_KEY} changed while this write was in progress: another "
        "writer published first; this write was not published",
        lock=location.url + LOCK_KEY,
    )


def put_new(location: StoreLocation, key: str, data: bytes) -> None:
    """Store an object under a content-addressed name, unless it is there already."""
    with suppress(AlreadyExistsError):
        obstore.put(location.store, key, data, mode="create")


def inline_presentation(
    path: str, document: bytes, chunks: dict[str, bytes], grid_shape: tuple[int, ...]
) -> tuple[bytes, dict[str, bytes]]:
    """An inline array as the snapshot shows it: a referenced array whose manifest points
    at immutable copies of its chunks.

    Parameters
    ----------
    path
        The array's node path.
    document
        Its zarr.json (inline form).
    chunks
        Its encoded chunks by store key (``"<path>/c/0"``).
    grid_shape
        Chunks along each dimension.

    Returns
    -------
    document, objects
        The presented zarr.json, and the objects to store (key -> bytes): the chunk copies
        and the manifest.
    """
    doc = orjson.loads(document)
    encoding = doc.get("chunk_key_encoding")
    digest = hashlib.sha256()
    for key in sorted(chunks):
        digest.update(orjson.dumps([key[len(path) + 1 :], len(chunks[key])]))
        digest.update(chunks[key])
    directory = f"chunks.{digest.hexdigest()[:32]}"
    objects: dict[str, bytes] = {}
    entries: dict[str, Any] = {}
    for key, value in chunks.items():
        rel = key[len(path) + 1 :]
        index = _chunk_index(rel, encoding, len(grid_shape))
        objects[f"{path}/{directory}/{rel}"] = value
        entries[".".join(map(str, index)) if index else "0"] = {
            "path": f"{directory}/{rel}",
            "offset": 0,
            "length": len(value),
        }
    manifest = ChunkManifest(entries, shape=grid_shape).to_json_bytes()
    name = f"manifest.{hashlib.sha256(manifest).hexdigest()[:32]}.json"
    objects[f"{path}/{name}"] = manifest
    doc["storage_transformers"] = [
        {
            "name": TRANSFORMER_NAME,
            "configuration": {
                "manifest": f"./{name}",
                INLINE_MEMBER: {"must_understand": False, "chunks": directory + "/"},
            },
        }
    ]
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2), objects


def _chunk_index(rel: str, encoding: Any, ndim: int) -> tuple[int, ...]:
    if ndim == 0:
        return ()
    name, separator = "default", "/"
    if isinstance(encoding, dict):
        name = encoding.get("name", name)
        separator = (encoding.get("configuration") or {}).get(
            "separator", "/" if name == "default" else "."
        )
    if name == "v2":
        return tuple(int(p) for p in rel.split(separator))
    return tuple(int(p) for p in rel[2:].split(separator))  # after "c" and a separator


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
        if isinstance(location.store, LocalStore) and location.store.prefix:
            # a write refused before it began leaves no empty directory behind
            with suppress(OSError):
                os.rmdir(os.path.join(location.store.prefix, BOOKKEEPING_DIR))


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
    storage_options: Mapping[str, Any] | None = None,
    **obstore_kwargs: Any,
) -> list[str]:
    """Delete the objects of a manifest store's earlier versions: manifests, immutable
    documents and inline chunk copies that neither the snapshot nor a ``zarr.json`` names.

    Replacing a store keeps them, so that readers that opened an earlier version keep
    reading it; this removes them once the store was last written more than ``grace`` ago
    (readers that opened it before then may fail afterwards, with a `ManifestFormatError`
    naming the missing object, never with other values).

    Parameters
    ----------
    store
        The manifest store (local path, URL or obstore store).
    grace
        How long after the last write old manifests are kept.
    break_lock
        Remove the writer lock a writer that died left behind (only when no writer is
        running: a live writer's lock removed this way lets a second writer in).
    storage_options
        For a URL: credentials and client settings in obstore's vocabulary (see
        `zarr_manifest.open_virtual`).  Default: obstore's (environment credentials).
    **obstore_kwargs
        Options too (the form taken before ``storage_options``); merged into it.

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
    location = open_location(store, storage_options=storage_options, **obstore_kwargs)
    if break_lock:
        with suppress(FileNotFoundError):
            obstore.delete(location.store, LOCK_KEY)
    with writer_lock(location):
        listing = {m["path"]: m for m in obstore.list(location.store).collect()}
        found = scan_store(location, listing)
        if found is None:
            raise FileNotFoundError(f"no manifest store at {location.url}")
        written = listing.get(SNAPSHOT_KEY, listing.get(ZARR_JSON))
        assert written is not None
        if datetime.datetime.now(datetime.UTC) - written["last_modified"] < grace:
            return []
        unused = sorted(
            k for k in found.owned if not in_use(found, k) and k not in (LOCK_KEY, SNAPSHOT_KEY)
        )
        if found.snapshot is not None and found.snapshot.retired:
            # the removed nodes' leftovers go now: the snapshot stops listing them first
            commit_snapshot(location, encode_snapshot(found.snapshot.nodes), found.snapshot)
        if unused:
            obstore.delete(location.store, unused)
        return unused
