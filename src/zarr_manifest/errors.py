"""The errors zarr-manifest raises on bad input, in one small hierarchy.

Every error the library raises because of what it was given (a manifest, a zarr.json, a
legacy file, a source that misbehaves) is a subclass of `ZarrManifestError`, and also of
the builtin that fits it (`ValueError`, `PermissionError`, `OSError`), so callers that
already catch those keep working.  Each carries the thing at fault in its message and,
where there is one, as an attribute.

Hierarchy::

    ZarrManifestError
    ├── ManifestError(ValueError)          a chunk manifest is invalid (key, field)
    │   └── ManifestFormatError            an on-disk manifest store breaks the spec
    ├── MetadataError(ValueError)          array/group metadata is invalid or mismatched
    ├── CombineError(ValueError)           inputs cannot be concatenated/stacked/combined
    ├── BuildError(ValueError)             a legacy file cannot be turned into a manifest
    │   └── UnsupportedError               a format, codec, filter or dtype we cannot reference
    ├── SourceNotAllowedError(PermissionError)  a reference points outside what may be read
    ├── StoreConflictError(FileExistsError)     a write would overwrite or shadow a foreign file
    ├── ConcurrentWriteError(OSError)           another writer is writing the same store
    ├── MissingExtraError(ModuleNotFoundError)  an optional dependency is not installed
    └── ChunkReadError(OSError)            fetching a chunk's bytes failed
        ├── ShortReadError                 the source returned a different length than promised
        ├── ChunkTooLargeError             a chunk (or virtual shard) is over the store's size cap
        └── StaleReferenceError            the source file changed since the manifest was made
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ChunkReadError",
    "ChunkTooLargeError",
    "CombineError",
    "ConcurrentWriteError",
    "ManifestError",
    "ManifestFormatError",
    "MetadataError",
    "MissingExtraError",
    "ShortReadError",
    "SourceNotAllowedError",
    "StaleReferenceError",
    "StoreConflictError",
    "UnsupportedError",
    "ZarrManifestError",
]


class ZarrManifestError(Exception):
    """Base class of every error zarr-manifest raises on bad input."""


class ManifestError(ZarrManifestError, ValueError):
    """A chunk manifest is invalid.

    Attributes
    ----------
    key
        The chunk key at fault (``"0.1.2"``), when one is.
    field
        The entry field at fault (``"path"``, ``"offset"``, ``"length"``), when one is.
    """

    def __init__(self, message: str, *, key: str | None = None, field: str | None = None):
        super().__init__(message)
        self.key = key
        self.field = field


class ManifestFormatError(ManifestError):
    """An on-disk manifest store (zarr.json / manifest.json) does not follow the spec.

    Attributes
    ----------
    location
        The file or URL at fault.
    """

    def __init__(
        self,
        message: str,
        *,
        location: str | None = None,
        key: str | None = None,
        field: str | None = None,
    ):
        super().__init__(message, key=key, field=field)
        self.location = location


class MetadataError(ZarrManifestError, ValueError):
    """Zarr array or group metadata is invalid, or does not match its manifest."""


class CombineError(ZarrManifestError, ValueError):
    """Arrays or groups cannot be concatenated, stacked or combined as asked.

    The message names the variable and the inputs that differ.
    """


class BuildError(ZarrManifestError, ValueError):
    """A legacy file cannot be turned into a manifest (the message names the file)."""


class UnsupportedError(BuildError):
    """A format, codec, filter or data type that cannot be referenced virtually."""


class SourceNotAllowedError(ZarrManifestError, PermissionError):
    """A chunk reference points somewhere the store was not allowed to read.

    Attributes
    ----------
    key
        The store key whose chunk was asked for, when known.
    path
        The path or URL of the refused reference.
    """

    def __init__(self, message: str, *, key: str | None = None, path: str | None = None):
        super().__init__(message)
        self.key = key
        self.path = path


class MissingExtraError(ZarrManifestError, ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that brings it
    (``pip install "zarr-manifest[hdf5]"``).

    Attributes
    ----------
    name
        The missing module.
    extra
        The extra to install.
    """

    def __init__(self, message: str, *, name: str, extra: str):
        super().__init__(message, name=name)
        self.extra = extra


class ChunkReadError(ZarrManifestError, OSError):
    """Reading a chunk's bytes from its source failed.

    Attributes
    ----------
    key
        The store key whose chunk was asked for, when known.
    url
        The source URL.
    start, end
        The byte range ``[start, end)`` that was asked for.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        url: str | None = None,
        start: int | None = None,
        end: int | None = None,
    ):
        super().__init__(message)
        self.key = key
        self.url = url
        self.start = start
        self.end = end


class ShortReadError(ChunkReadError):
    """A source returned a different number of bytes than the manifest promises."""


class StaleReferenceError(ChunkReadError):
    """A source file changed (size, ETag or last-modified) since the manifest was made."""


class ChunkTooLargeError(ChunkReadError):
    """A chunk (or virtual shard) read would take more bytes than the store's
    ``max_chunk_bytes`` allows; nothing was read or reserved for it."""


class StoreConflictError(ZarrManifestError, FileExistsError):
    """Writing a store would overwrite, or make part of the hierarchy, an object that the
    store does not own (a source file, an unrelated file); nothing was written.

    Attributes
    ----------
    key
        The object at fault, relative to the store root.
    """

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.key = key


class ConcurrentWriteError(ZarrManifestError, OSError):
    """Another writer holds the store's writer lock; this write changed nothing.

    Attributes
    ----------
    lock
        The URL of the lock object (remove it with ``zarr_manifest.clean(store,
        break_lock=True)`` if its writer died).
    """

    def __init__(self, message: str, *, lock: str | None = None):
        super().__init__(message)
        self.lock = lock
