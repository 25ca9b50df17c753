"""The manifest store's own objects (zarr.json documents, manifests, inline chunks): read
from its root storage through obstore, or from an in-memory group's encoded objects."""

from __future__ import annotations

import bisect
import os
import stat
from typing import TYPE_CHECKING, Any

import obstore
from obstore.store import LocalStore
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest

from zarr_manifest.errors import ChunkReadError, SourceNotAllowedError
from zarr_manifest.store._byte_ranges import selects_nothing, slice_bytes

if TYPE_CHECKING:
    from zarr_manifest.format.location import StoreLocation

__all__ = ["AFTER_FORK", "RootObjects"]

#: why obstore's remote and async I/O is refused in a forked child (see `_fork`)
AFTER_FORK = (
    "this process was forked after obstore's runtime had started, and obstore's network "
    "and async calls never return in such a child; start workers with multiprocessing's "
    "'spawn' or 'forkserver' method, or open the store in the worker"
)


class RootObjects:
    """Reads the objects of a manifest store: ``location``'s obstore store, or ``memory``.

    Parameters
    ----------
    location
        Where the manifest store is (None for an in-memory group).
    memory
        An in-memory group's objects by key (None for a store in storage).
    url
        The root's URL, for messages.
    """

    def __init__(
        self, location: StoreLocation | None, memory: dict[str, bytes] | None, url: str
    ) -> None:
        self._location = location
        self._memory = memory
        # an in-memory group's keys, sorted: a directory's entries are a contiguous run
        self._memory_keys = sorted(memory) if memory is not None else []
        self._url = url
        self.local_root: str | None = None
        #: set in a forked child where obstore's runtime is dead: local objects are then
        #: read with synchronous calls only, remote ones refused
        self.no_runtime = False
        store = None if location is None else location.store
        if isinstance(store, LocalStore) and store.prefix:
            self.local_root = os.path.realpath(store.prefix)

    def sizes(self) -> dict[str, int]:
        """Every object's key and size, sorted by key."""
        if self._memory is not None:
            return {k: len(v) for k, v in sorted(self._memory.items())}
        assert self._location is not None
        self._check_runtime("")
        listing = obstore.list(self._location.store).collect()
        return {m["path"]: int(m["size"]) for m in sorted(listing, key=lambda m: m["path"])}

    def list_dir(self, prefix: str, *, empty_dirs: bool = False) -> tuple[list[str], list[str]]:
        """The names of the objects directly under directory ``prefix`` ("" for the root)
        and of its subdirectories, each sorted; without ``empty_dirs``, only those holding
        an object (a local store may hold empty directories)."""
        start = f"{prefix}/" if prefix else ""
        if self._memory is not None:
            keys = self._memory_keys
            files: list[str] = []
            dirs: list[str] = []
            i = bisect.bisect_left(keys, start)
            while i < len(keys) and keys[i].startswith(start):
                name, sep, _ = keys[i][len(start) :].partition("/")
                if not sep:
                    files.append(name)
                    i += 1
                else:
                    dirs.append(name)
                    # skip the rest of this subdirectory: its keys sort before "name0"
                    i = bisect.bisect_left(keys, f"{start}{name}0", i)
            return files, dirs
        assert self._location is not None
        self._check_runtime(start)
        store = self._location.store
        listing = obstore.list_with_delimiter(store, start or None)
        files = sorted(m["path"][len(start) :] for m in listing["objects"])
        dirs = []
        for path in sorted(listing["common_prefixes"]):
            # a local store reports empty directories too, which hold no object
            if empty_dirs or self.local_root is None or _holds_an_object(store, path):
                dirs.append(path.rstrip("/")[len(start) :])
        return files, dirs

    def exists(self, key: str) -> bool:
        """Whether the object ``key`` exists."""
        if self._memory is not None:
            return key in self._memory
        assert self._location is not None
        self._check_runtime(key)  # a local root needs no obstore call (fork-safe)
        return self._location.exists(key)

    def read_sync(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        """An object's bytes (or a byte range of them); None when it does not exist."""
        if self._memory is not None:
            data = self._memory.get(key)
            return None if data is None else slice_bytes(data, byte_range, key)
        assert self._location is not None
        self._check_runtime(key)
        if self._is_local_file(key) is False:
            return None
        if self.no_runtime:
            return self._read_local_file(key, byte_range)
        store = self._location.store
        try:
            if byte_range is None:
                return bytes(obstore.get(store, key).bytes())
            return bytes(_obstore_range_sync(store, key, byte_range))
        except FileNotFoundError:
            return None
        except Exception:
            if byte_range is None:
                raise
            # Object stores refuse a range that selects nothing (start at or past the end,
            # or empty); zarr's own stores return b"" for it: serve it as they do.
            try:
                size = int(obstore.head(store, key)["size"])
            except FileNotFoundError:
                return None
            if selects_nothing(byte_range, size):
                return b""
            raise

    async def read_async(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        """`read_sync` on the event loop."""
        if self._memory is not None or self.no_runtime:
            return self.read_sync(key, byte_range)
        assert self._location is not None
        if self._is_local_file(key) is False:
            return None
        store = self._location.store
        try:
            if byte_range is None:
                result = await obstore.get_async(store, key)
                return bytes(await result.bytes_async())
            return bytes(await _obstore_range_async(store, key, byte_range))
        except FileNotFoundError:
            return None
        except Exception:
            if byte_range is None:
                raise
            size = await self.size_async(key)  # as in read_sync
            if size is None:
                return None
            if selects_nothing(byte_range, size):
                return b""
            raise

    async def size_async(self, key: str) -> int | None:
        """An object's size; None when it does not exist."""
        if self._memory is not None:
            data = self._memory.get(key)
            return None if data is None else len(data)
        assert self._location is not None
        self._check_runtime(key)
        if self._is_local_file(key) is False:
            return None
        try:
            if self.no_runtime:
                return os.path.getsize(os.path.join(self.local_root or "", key))
            meta = await obstore.head_async(self._location.store, key)
        except FileNotFoundError:
            return None
        return int(meta["size"])

    def _read_local_file(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        """Read a local object without obstore (whose reads can hang in a forked child);
        `_is_local_file` has checked it is a regular file inside the root."""
        try:
            # never blocks, even if the file was swapped for a FIFO since it was checked
            fd = os.open(os.path.join(self.local_root or "", key), os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SourceNotAllowedError(
                    f"object {key!r} of {self._url} is not a regular file: refused", key=key
                )
            return slice_bytes(file.read(), byte_range, key)

    def _check_runtime(self, key: str) -> None:
        """Refuse a remote root's I/O where obstore's runtime is dead (`ChunkReadError`)."""
        if self.no_runtime and self.local_root is None:
            raise ChunkReadError(f"{self._url}: {key!r} cannot be read: {AFTER_FORK}", key=key)

    def _is_local_file(self, key: str) -> bool | None:
        """For a local root: whether ``key`` is a regular file (None for other roots); a
        symlink leading out of the root is refused (`StoreLocation.is_local_file`)."""
        return None if self._location is None else self._location.is_local_file(key)


def _holds_an_object(store: Any, directory: str) -> bool:
    """Whether any object lies under ``directory`` (stops at the first one found)."""
    for batch in obstore.list(store, prefix=directory.rstrip("/") + "/", chunk_size=1):
        if batch:
            return True
    return False


def _obstore_range_sync(store: Any, key: str, byte_range: ByteRequest) -> Any:
    if isinstance(byte_range, RangeByteRequest):
        return obstore.get_range(store, key, start=byte_range.start, end=byte_range.end)
    if isinstance(byte_range, OffsetByteRequest):
        return obstore.get(store, key, options={"range": {"offset": byte_range.offset}}).bytes()
    return obstore.get(store, key, options={"range": {"suffix": byte_range.suffix}}).bytes()


async def _obstore_range_async(store: Any, key: str, byte_range: ByteRequest) -> Any:
    if isinstance(byte_range, RangeByteRequest):
        return await obstore.get_range_async(store, key, start=byte_range.start, end=byte_range.end)
    if isinstance(byte_range, OffsetByteRequest):
        result = await obstore.get_async(
            store, key, options={"range": {"offset": byte_range.offset}}
        )
    else:
        result = await obstore.get_async(
            store, key, options={"range": {"suffix": byte_range.suffix}}
        )
    return await result.bytes_async()
