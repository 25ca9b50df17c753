"""An Icechunk repository (one branch, tag or snapshot) -> `ManifestGroup` of its chunks.

Icechunk (2.x) keeps, per array, a manifest of chunk references of three kinds, listed with
``IcechunkStore.array_chunk_iterator``:

- *virtual*: ``(URL, offset, length)`` in a file outside the repository (relative
  ``vcc://`` locations come resolved against the repository's virtual chunk containers);
  referenced as they are.  Icechunk may hold an ETag / modification time per reference
  and refuse a file changed since; its listing does not give them, so one chunk of each
  virtual file is read through icechunk at build time, and a file icechunk refuses is
  refused (`BuildError`).
- *native*: a chunk object icechunk wrote, ``chunks/<id>`` under the repository root (a
  fixed place of icechunk's storage layout), holding the chunk's encoded bytes at
  ``(offset, length)``; referenced as ``<repository URL>/chunks/<id>``.  Each array's
  first native chunk object is checked to exist and hold its range, so a repository whose
  chunks live elsewhere is refused (`BuildError`) rather than referenced wrongly.
- *inline*: bytes kept inside icechunk's manifest, with no place of their own; an array
  with inline chunks (icechunk inlines chunks under 512 bytes by default) is read through
  zarr from the session and stored inline (with a warning when it also has chunks that
  could have been referenced).

Metadata (Zarr v3 ``zarr.json`` of every node) is read through zarr from the session.
The repository is read-only here: nothing is written to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import warnings
from collections.abc import Collection, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from zarr_manifest.array import InlineArray, ManifestArray, chunk_grid_shape, parse_array_metadata
from zarr_manifest.builders._icechunk_storage import icechunk_storage
from zarr_manifest.builders._source import Source
from zarr_manifest.errors import BuildError, MetadataError, UnsupportedError
from zarr_manifest.format.paths import (
    canonical_url,
    is_absolute_url,
    local_path_to_url,
    url_to_local_path,
)
from zarr_manifest.format.storage_options import object_store
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

if TYPE_CHECKING:
    import icechunk
    import zarr

__all__ = ["build_icechunk", "is_icechunk_repository"]

_STRINGS = np.dtypes.StringDType()
_BATCH = 100_000
# icechunk.ChunkType values as array_chunk_iterator yields them
_NATIVE, _VIRTUAL, _INLINE = 1, 2, 3
#: Where icechunk keeps native chunk objects, under the repository root.
CHUNKS_DIRECTORY = "chunks"


def is_icechunk_repository(path: str | os.PathLike[str]) -> bool:
    """Whether a local directory is an Icechunk repository (``repo`` object or ``refs/``,
    and ``snapshots/``)."""
    root = os.fspath(path)
    has_root = os.path.isfile(os.path.join(root, "repo")) or os.path.isdir(
        os.path.join(root, "refs")
    )
    return has_root and os.path.isdir(os.path.join(root, "snapshots"))


def _run[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class _Columns:
    """An array's chunk references as icechunk lists them, gathered over batches."""

    def __init__(self) -> None:
        self.coords: list[np.ndarray] = []
        self.kinds: list[np.ndarray] = []
        self.paths: list[str] = []
        self.offsets: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []


async def _chunk_columns(store: icechunk.IcechunkStore, path: str, ndim: int) -> _Columns:
    out = _Columns()
    async for coords, kinds, paths, offsets, lengths, _ in store.array_chunk_iterator(path, _BATCH):
        if not len(kinds):
            continue
        out.coords.append(np.asarray(coords, dtype=np.int64).reshape(len(kinds), ndim))
        out.kinds.append(np.asarray(kinds, dtype=np.uint8))
        out.paths.extend(paths)
        out.offsets.append(np.asarray(offsets, dtype=np.int64))
        out.lengths.append(np.asarray(lengths, dtype=np.int64))
    return out


def _check_native(
    repo_url: str,
    chunk_id: str,
    offset: int,
    length: int,
    where: str,
    storage_options: Mapping[str, Any] | None,
) -> None:
    """The native chunk object is where icechunk's layout puts it, holding its range.

    ``storage_options`` None: a remote repository the caller opened (a `Repository` or
    `Session`), with credentials this module does not have; its layout is icechunk's.
    """
    name = f"{CHUNKS_DIRECTORY}/{chunk_id}"
    if repo_url.startswith("file://"):
        place = os.path.join(url_to_local_path(repo_url), CHUNKS_DIRECTORY, chunk_id)
        try:
            size = os.path.getsize(place)
        except OSError:
            size = None
    elif storage_options is None:
        return
    else:
        import obstore

        place = repo_url + name
        try:
            size = obstore.head(object_store(repo_url, storage_options), name)["size"]
        except FileNotFoundError:
            size = None
    if size is None:
        raise BuildError(
            f"{where}: native chunk {chunk_id} is not at {place}; this repository's chunk "
            "objects cannot be referenced in place"
        ) from None
    if offset + length > size:
        raise BuildError(
            f"{where}: native chunk {chunk_id} holds {size} bytes, its reference "
            f"[{offset}, {offset + length})"
        )


def _manifest(
    columns: _Columns,
    grid: tuple[int, ...],
    repo_url: str,
    where: str,
    storage_options: Mapping[str, Any] | None,
) -> ChunkManifest:
    paths = np.full(grid, "", dtype=_STRINGS)
    offsets = np.zeros(grid, dtype=np.int64)
    lengths = np.zeros(grid, dtype=np.int64)
    if not columns.kinds:
        return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)
    coords = np.concatenate(columns.coords)
    kinds = np.concatenate(columns.kinds)
    urls = np.asarray(columns.paths, dtype=_STRINGS)
    native = kinds == _NATIVE
    if native.any():
        first = int(np.argmax(native))
        _check_native(
            repo_url,
            columns.paths[first],
            int(np.concatenate(columns.offsets)[first]),
            int(np.concatenate(columns.lengths)[first]),
            where,
            storage_options,
        )
        urls[native] = np.strings.add(f"{repo_url}{CHUNKS_DIRECTORY}/", urls[native])
    virtual = kinds == _VIRTUAL
    if virtual.any():
        urls[virtual] = np.asarray([canonical_url(str(u)) for u in urls[virtual]], dtype=_STRINGS)
    unknown = ~(native | virtual)
    if unknown.any():
        raise BuildError(f"{where}: icechunk chunk kind {int(kinds[unknown][0])} is not known")
    flat = np.ravel_multi_index(tuple(coords.T), grid) if grid else np.zeros(len(kinds), np.intp)
    paths.reshape(-1)[flat] = urls
    offsets.reshape(-1)[flat] = np.concatenate(columns.offsets)
    lengths.reshape(-1)[flat] = np.concatenate(columns.lengths)
    return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)


def _read(array: zarr.Array, where: str) -> np.ndarray:
    """An array's values, read through icechunk."""
    import icechunk

    try:
        return np.asarray(array[...])
    except icechunk.IcechunkError as e:
        raise BuildError(f"{where}: icechunk cannot read it ({str(e).splitlines()[0]})") from e


def _build_array(
    array: zarr.Array,
    store: icechunk.IcechunkStore,
    repo_url: str,
    load: bool,
    shown: str,
    verified: set[str],
    storage_options: Mapping[str, Any] | None,
) -> ManifestArray | InlineArray:
    where = f"{shown} array {array.path!r}"
    doc: dict[str, Any] = dict(array.metadata.to_dict())
    if doc.get("zarr_format") != 3:
        raise BuildError(f"{where}: not Zarr v3 metadata")
    try:
        meta = parse_array_metadata(doc)
    except UnsupportedError:
        return InlineArray.from_numpy(
            _read(array, where),
            dimension_names=doc.get("dimension_names"),
            attributes=dict(doc.get("attributes") or {}),
        )
    except MetadataError as e:
        raise BuildError(f"{where}: invalid array metadata: {e}") from e
    if load:
        return InlineArray(meta, _read(array, where))
    grid = chunk_grid_shape(meta)
    columns = _run(_chunk_columns(store, array.path, len(grid)))
    if columns.kinds:
        kinds = np.concatenate(columns.kinds)
        inline = kinds == _INLINE
        if inline.any():
            if not inline.all():
                warnings.warn(
                    f"{where}: {int(inline.sum())} of its {len(kinds)} chunks are inline in "
                    "icechunk's manifest (no place of their own); loading the array",
                    stacklevel=4,
                )
            return InlineArray(meta, _read(array, where))
    manifest = _manifest(columns, grid, repo_url, where, storage_options)
    _verify_virtual_files(array, store, columns, verified, where)
    return ManifestArray(meta, manifest)


async def _get(store: icechunk.IcechunkStore, key: str) -> None:
    from zarr.core.buffer import default_buffer_prototype

    await store.get(key, default_buffer_prototype())


def _verify_virtual_files(
    array: zarr.Array,
    store: icechunk.IcechunkStore,
    columns: _Columns,
    verified: set[str],
    where: str,
) -> None:
    """Read one chunk of each virtual file not yet read through icechunk, which refuses it
    when the file changed since its reference recorded an ETag / modification time.

    Icechunk's listing does not give those checksums, so the manifest cannot carry them;
    this read is how a file that changed since the commit is refused instead of referenced.
    """
    import icechunk

    if not columns.kinds:
        return
    kinds = np.concatenate(columns.kinds)
    coords = np.concatenate(columns.coords)
    for row in np.flatnonzero(kinds == _VIRTUAL).tolist():
        url = columns.paths[row]
        if url in verified:
            continue
        key = array.metadata.encode_chunk_key(tuple(int(i) for i in coords[row]))
        key = f"{array.path}/{key}" if array.path else key
        try:
            _run(_get(store, key))
        except icechunk.IcechunkError as e:
            raise BuildError(
                f"{where}: icechunk refuses its virtual chunk {key} in {url} "
                f"({str(e).splitlines()[0]}); a repository opened by path reads only "
                "file:// and http(s):// containers: open others with icechunk (authorising "
                "them) and pass the repository"
            ) from e
        verified.add(url)


def _session(
    repository: Any, branch: str | None, tag: str | None, snapshot_id: str | None
) -> icechunk.Session:
    if sum(v is not None for v in (branch, tag, snapshot_id)) > 1:
        raise ValueError("give at most one of branch, tag and snapshot_id")
    if tag is None and snapshot_id is None:
        branch = branch or "main"
    import icechunk

    try:
        return repository.readonly_session(branch=branch, tag=tag, snapshot_id=snapshot_id)
    except icechunk.IcechunkError as e:
        version = f"branch {branch!r}" if branch else f"tag {tag!r}" if tag else snapshot_id
        raise BuildError(
            f"cannot open {version} of the Icechunk repository ({str(e).splitlines()[0]})"
        ) from e


def _open_repository(url: str, storage_options: Mapping[str, Any]) -> Any:
    import icechunk

    if url.startswith("file://"):
        local = url_to_local_path(url)
        if not is_icechunk_repository(local):
            raise BuildError(f"{url}: not an Icechunk repository (no repo object and snapshots/)")
        storage = icechunk.local_filesystem_storage(local)
    else:
        storage = icechunk_storage(url, storage_options)
    try:
        repository = icechunk.Repository.open(storage)
    except icechunk.IcechunkError as e:
        raise BuildError(f"{url}: cannot open the Icechunk repository ({e})") from e
    containers = repository.config.virtual_chunk_containers or {}
    if not containers:
        return repository
    # reading through zarr (metadata, inline arrays) needs the containers authorised; only
    # local-file and plain-HTTP containers need no credentials
    access: dict[str, Any] = {}
    for prefix in (c.url_prefix for c in containers.values()):
        if prefix.startswith("file://"):
            access[prefix] = icechunk.credentials.LocalFileSystemAccess
        elif prefix.startswith(("http://", "https://")):
            access[prefix] = icechunk.credentials.HttpAccess
    return icechunk.Repository.open(storage, authorize_virtual_chunk_access=access or None)


def build_icechunk(
    source: Source | str | os.PathLike[str] | icechunk.Repository | icechunk.Session,
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    branch: str | None = None,
    tag: str | None = None,
    snapshot_id: str | None = None,
    repository_url: str | None = None,
    **storage_options: Any,
) -> ManifestGroup:
    """Reference the chunks of an Icechunk repository: virtual ones where they point, native
    ones as the repository's chunk objects.

    Parameters
    ----------
    source
        A local repository directory (path, ``file://`` URL or `Source`), or an open
        ``icechunk.Repository`` / ``icechunk.Session`` (any storage icechunk reaches; then
        ``repository_url`` says where the repository lives).
    group
        The group inside the repository to start from.
    drop
        Members to leave out (paths relative to ``group``).
    load
        Arrays to read now (through icechunk) and store inline.
    branch, tag, snapshot_id
        Which version to read (at most one; default: the tip of branch ``main``).  Ignored
        when ``source`` is a `Session`.
    repository_url
        The repository's root URL (``s3://bucket/repo/``), under which its native chunks
        are referenced; required for a `Repository` or `Session` source whose arrays hold
        native chunks.
    **storage_options
        For a repository URL on ``s3://``, ``gs://``, ``az://`` or ``http(s)://``: the
        `storage_options` of every other entry point (obstore's keys), translated into
        icechunk's storage arguments; the same options read the native chunks later.

    Returns
    -------
    ManifestGroup
        Arrays with virtual and native chunks as `ManifestArray`; arrays with inline chunks
        as `InlineArray`.

    Raises
    ------
    BuildError
        Not a repository; a native chunk object missing from where icechunk's layout puts it
        (``chunks/<id>``); native chunks but no ``repository_url``.
    UnsupportedError
        A storage option with no equivalent in icechunk's storage (open the repository
        with icechunk and pass it).
    """
    import icechunk
    import zarr

    if isinstance(source, icechunk.Session):
        session, repo_url = source, repository_url
        opened_with: Mapping[str, Any] | None = None
    elif isinstance(source, icechunk.Repository):
        session, repo_url = _session(source, branch, tag, snapshot_id), repository_url
        opened_with = None
    else:
        if isinstance(source, Source):
            url = source.url
        elif isinstance(source, os.PathLike) or not is_absolute_url(str(source)):
            url = local_path_to_url(os.path.abspath(os.fspath(source)))
        else:
            url = canonical_url(str(source))
        repo_url = url
        opened_with = storage_options
        session = _session(_open_repository(url, storage_options), branch, tag, snapshot_id)
    shown = repo_url or "<icechunk session>"
    if repo_url is not None and not repo_url.endswith("/"):
        repo_url += "/"
    store = session.store
    if not hasattr(store, "array_chunk_iterator"):
        raise UnsupportedError(
            f"{shown}: listing an Icechunk repository's chunks needs icechunk >= 2.0.5 "
            f"(installed: {icechunk.__version__})"
        )
    start = (group or "").strip("/")
    try:
        root = zarr.open_group(store, path=start, mode="r", zarr_format=3)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise BuildError(f"{shown}: no group {start or '/'!r} in the repository ({e})") from e
    members = dict(root.members(max_depth=None))
    drop_set = {d.strip("/") for d in drop}
    load_set = {d.strip("/") for d in load}
    unknown = sorted(p for p in drop_set | load_set if p not in members)
    if unknown:
        raise BuildError(f"{shown}: no member(s) {unknown} in the repository (drop/load)")

    verified: set[str] = set()  # virtual files read once through icechunk

    def dropped(path: str) -> bool:
        return any(path == d or path.startswith(d + "/") for d in drop_set)

    def build(node: zarr.Group, prefix: str) -> ManifestGroup:
        arrays: dict[str, ManifestArray | InlineArray] = {}
        groups: dict[str, ManifestGroup] = {}
        for name, child in sorted(node.members()):
            path = prefix + name
            if dropped(path):
                continue
            if isinstance(child, zarr.Array):
                built = _build_array(
                    child, store, repo_url or "", path in load_set, shown, verified, opened_with
                )
                if (
                    isinstance(built, ManifestArray)
                    and repo_url is None
                    and any(p.startswith(f"{CHUNKS_DIRECTORY}/") for p in built.manifest.path_table)
                ):
                    raise BuildError(
                        f"{shown}: array {path!r} has native chunks; pass "
                        "repository_url=... (where the repository lives) to reference them"
                    )
                arrays[name] = built
            else:
                groups[name] = build(child, path + "/")
        return ManifestGroup(arrays=arrays, groups=groups, attributes=dict(node.attrs))

    return build(root, "")
