"""Opening a legacy file for a builder: a local path or an obstore URL, as a file object.

Builders record every reference under the file's canonical URL (``file:///abs/path`` for
local files), so a manifest never depends on the working directory it was built in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import obstore

from zarr_manifest.fingerprint import Fingerprint
from zarr_manifest.format.location import StoreLocation, open_location
from zarr_manifest.format.paths import canonical_url, is_absolute_url, url_to_local_path
from zarr_manifest.format.storage_options import options_for

__all__ = ["Source", "open_source"]


class Source:
    """A legacy file to build from.

    Attributes
    ----------
    url
        The canonical URL recorded in manifests.
    local_path
        The local file path, for ``file://`` sources (None for remote ones).
    """

    __slots__ = ("_obstore_kwargs", "local_path", "url")

    def __init__(self, url: str, local_path: str | None, obstore_kwargs: dict[str, Any]):
        self.url = url
        self.local_path = local_path
        self._obstore_kwargs = obstore_kwargs

    def __repr__(self) -> str:
        return f"Source({self.url!r})"

    def _location(self) -> tuple[StoreLocation, str]:
        """The store of the file's directory, with the options that apply to the file."""
        parent, name = self.url.rsplit("/", 1)
        options = options_for(self.url, self._obstore_kwargs)
        return open_location(parent + "/", storage_options=options), name

    def open(self) -> BinaryIO:
        """A seekable binary file object over the source (close it when done)."""
        if self.local_path is not None:
            return open(self.local_path, "rb")
        location, name = self._location()
        return _Reader(obstore.open_reader(location.store, name))  # type: ignore[return-value]

    def read_range(self, start: int, length: int) -> bytes:
        """``length`` bytes at ``start``."""
        if self.local_path is not None:
            with open(self.local_path, "rb") as local:
                local.seek(start)
                return local.read(length)
        f = self.open()  # obstore's reader has close() but is no context manager
        try:
            f.seek(start)
            return bytes(f.read(length))
        finally:
            f.close()

    def size(self) -> int:
        """The file's size in bytes."""
        if self.local_path is not None:
            return os.path.getsize(self.local_path)
        location, name = self._location()
        return int(obstore.head(location.store, name)["size"])

    def fingerprint(self) -> Fingerprint:
        """The file's fingerprint now: size and mtime (local), or size, ETag and
        last-modified as the storage reports them (one HEAD request)."""
        if self.local_path is not None:
            return Fingerprint.from_stat(os.stat(self.local_path))
        location, name = self._location()
        return Fingerprint.from_object_meta(obstore.head(location.store, name))


class _Reader:
    """obstore's file reader, usable in ``with`` like a builtin file."""

    def __init__(self, reader: Any):
        self._reader = reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._reader.close()

    def read(self, size: int = -1) -> bytes:
        # obstore returns its own Bytes; h5py's file driver wants builtin bytes
        return bytes(
            self._reader.read(size) if size is not None and size >= 0 else self._reader.read()
        )

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._reader.read(len(view))
        view[: len(data)] = memoryview(data)
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def open_source(path_or_url: str | os.PathLike[str], **obstore_kwargs: Any) -> Source:
    """A `Source` for a local path or URL.

    Parameters
    ----------
    path_or_url
        A local path (relative ones are made absolute) or a URL that obstore can open.
    **obstore_kwargs
        Storage options for remote URLs (credentials, endpoint...; URL-prefix keys too, see
        `zarr_manifest.format.storage_options`).

    Raises
    ------
    FileNotFoundError
        A local file does not exist.
    """
    if isinstance(path_or_url, os.PathLike) or not is_absolute_url(str(path_or_url)):
        path = Path(path_or_url).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return Source(path.as_uri(), str(path), {})
    url = canonical_url(str(path_or_url))
    if url.startswith("file://"):
        local = url_to_local_path(url)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"no such file: {local}")
        return Source(url, local, {})
    return Source(url, None, dict(obstore_kwargs))
