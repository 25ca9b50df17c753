"""Where a manifest store lives: a local directory, a URL or an obstore store.

Every reader of a store's own objects (zarr.json, manifests, inline chunks) goes through
`StoreLocation.is_local_file` for a local root, so that a symlink inside the store cannot
make any of them -- `ManifestStore`, `read_group` and the command line alike -- read a file
outside it (spec section 8.1, rule 4).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import obstore
from obstore.store import HTTPStore, LocalStore, MemoryStore, ObjectStore

from zarr_manifest.errors import SourceNotAllowedError
from zarr_manifest.format.storage_options import (
    StorageOptions,
    merge_storage_options,
    object_store,
)

__all__ = ["StoreLocation", "open_location"]


class StoreLocation:
    """An obstore store holding a manifest store, and the URL of its root.

    Attributes
    ----------
    store
        The obstore store; keys are relative to the manifest store's root.
    url
        The root as a URL ending in "/", against which relative references resolve.
    real_root
        For a local root: its real path (symlinks resolved), which every object read must
        stay under; None for other roots.
    """

    __slots__ = ("real_root", "store", "url")

    def __init__(self, store: ObjectStore, url: str):
        self.store = store
        self.url = url if url.endswith("/") else url + "/"
        prefix = store.prefix if isinstance(store, LocalStore) else None
        self.real_root = os.path.realpath(prefix) if prefix else None

    def is_local_file(self, key: str) -> bool | None:
        """For a local root: whether ``key`` is a regular file (None for other roots).

        A key whose real path (symlinks resolved) leaves the root is refused.  A key that
        names a directory or runs through a file is absent, as in zarr's LocalStore
        (obstore would report some of these as errors).  Anything else that is not a
        regular file (a FIFO, a socket, a device) is refused: opening a FIFO would block
        until a writer came.

        Raises
        ------
        SourceNotAllowedError
            ``key`` resolves outside the store root, or to something that is not a regular
            file; the message names the key and where it leads.
        """
        root = self.real_root
        if root is None:
            return None
        if "\x00" in key:
            return False  # no file name holds a NUL (a manifest member may spell one)
        real = os.path.realpath(os.path.join(root, key))
        if real != root and not real.startswith(root + os.sep):
            raise SourceNotAllowedError(
                f"object {key!r} of {self.url} resolves to {real!r}, outside the store root",
                key=key,
                path=real,
            )
        try:
            mode = os.stat(real).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISREG(mode):
            return True
        if stat.S_ISDIR(mode):
            return False
        raise SourceNotAllowedError(
            f"object {key!r} of {self.url} is not a regular file ({real!r}): refused",
            key=key,
            path=real,
        )

    def exists(self, key: str) -> bool:
        """Whether the object ``key`` exists under the root; a local root answers from the
        file system alone (`is_local_file`, which refuses a key leading out of the root)."""
        local = self.is_local_file(key)
        if local is not None:
            return local
        try:
            obstore.head(self.store, key)
        except FileNotFoundError:
            return False
        return True

    def read(self, key: str) -> bytes:
        """The bytes of the object ``key`` under the root.

        Raises
        ------
        FileNotFoundError
            No such object (for a local root: not a regular file).
        SourceNotAllowedError
            A local ``key`` resolves outside the root (see `is_local_file`).
        """
        if self.is_local_file(key) is False:
            raise FileNotFoundError(f"no object {key!r} in {self.url}")
        return bytes(obstore.get(self.store, key).bytes())

    def __repr__(self) -> str:
        return f"StoreLocation({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoreLocation) and self.url == other.url


def open_location(
    root: str | os.PathLike[str] | ObjectStore,
    *,
    mkdir: bool = False,
    storage_options: StorageOptions | None = None,
    **obstore_kwargs: Any,
) -> StoreLocation:
    """Open the root of a manifest store.

    Parameters
    ----------
    root
        A local path, a URL (``file://``, ``s3://``, ``gs://``, ``az://``, ``http(s)://``,
        ``memory://``) or an obstore store.
    mkdir
        Create a local directory that does not exist yet (for writing).
    storage_options
        For URLs: credentials and client settings, in obstore's vocabulary, with URL-prefix
        overrides (see `zarr_manifest.format.storage_options`); plain ``http://`` gets
        ``allow_http`` automatically.  Default: obstore's (credentials from the environment).
    **obstore_kwargs
        Options too (the form taken before ``storage_options``); merged into it.
    """
    if isinstance(root, os.PathLike) or (isinstance(root, str) and "://" not in root):
        path = Path(root).expanduser().absolute()
        if mkdir:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.is_dir():
            raise FileNotFoundError(f"no manifest store at {path}: not a directory")
        return StoreLocation(LocalStore(path, mkdir=mkdir), path.as_uri())
    if isinstance(root, str):
        if root.startswith("file://"):
            return open_location(Path(_file_url_path(root)), mkdir=mkdir)
        if root.startswith("memory://"):
            return StoreLocation(MemoryStore(), root)
        options = merge_storage_options(storage_options, obstore_kwargs)
        return StoreLocation(object_store(root, options), root)
    return StoreLocation(root, store_url(root))


def store_url(store: ObjectStore) -> str:
    """A URL for the root of an obstore store (best effort for store kinds without one)."""
    if isinstance(store, LocalStore):
        return Path(store.prefix or "/").as_uri() + "/" if store.prefix else "file:///"
    if isinstance(store, HTTPStore):
        return store.url
    if isinstance(store, MemoryStore):
        return f"memory://{id(store):x}/"
    config = getattr(store, "config", {}) or {}
    prefix = str(getattr(store, "prefix", "") or "").strip("/")
    tail = f"/{prefix}/" if prefix else "/"
    if "bucket" in config:
        scheme = "gs" if type(store).__name__ == "GCSStore" else "s3"
        return f"{scheme}://{config['bucket']}{tail}"
    if "container_name" in config:
        return f"az://{config['container_name']}{tail}"
    return f"{type(store).__name__.lower()}://{id(store):x}{tail}"


def _file_url_path(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file URL with a host is not a local path: {url}")
    return unquote(parts.path)
