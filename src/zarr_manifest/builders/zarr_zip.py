"""Zipped Zarr stores (``.zarr.zip``) -> `ManifestGroup` referencing byte ranges of the zip.

A zip archive of a Zarr v2 or v3 store (zarr's ``ZipStore``, or ``zip -r`` of a directory
store) holds each object as a member.  A member written uncompressed (zip method STORED,
``ZipStore``'s default, ``zip -0``) is its object's bytes at a fixed place in the archive,
so its chunk is referenced as ``{path: the zip, offset: member data offset, length}``.

Where a member's bytes start is read from the archive itself: the central directory (read
with Python's `zipfile`, ZIP64 included) gives each member's local header; the local
header's name and sizes must agree with the central directory's (else `BuildError`), and its
own name and extra-field lengths place the data.  A member the archive compresses
(DEFLATE, ``zip -r``'s default) is not its object's bytes and is never referenced: an array
with such a chunk is read through zarr and stored inline, with a warning naming it.
Encrypted members are refused (`UnsupportedError`).  When a name occurs twice (a key
rewritten by ``ZipStore``), the later member wins, as in `zipfile` and zarr.

When the archive has no Zarr metadata at its top but holds one directory (``zip -r
out.zip store.zarr``), that directory is the store's root.
"""

from __future__ import annotations

import os
import struct
import threading
import zipfile
from collections.abc import Collection
from typing import Any, BinaryIO

from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.zarr import _Listing, build_tree
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup

__all__ = ["build_zip", "is_zip"]

_LOCAL_SIGNATURE = b"PK\x03\x04"
_EMPTY_SIGNATURE = b"PK\x05\x06"  # an archive with no members starts at its end record
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # the fixed 30 bytes of a local header
_ZIP64_EXTRA = 0x0001
_FLAG_ENCRYPTED = 0x01
_FLAG_DATA_DESCRIPTOR = 0x08  # sizes follow the data; the local header holds zeros
_FLAG_UTF8 = 0x800
_ROOT_METADATA = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")
_NAME_AND_EXTRA_GUESS = 226  # read with a local header: most names and extra fields fit


def is_zip(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts a zip archive."""
    return head.startswith((_LOCAL_SIGNATURE, _EMPTY_SIGNATURE))


class _Member:
    __slots__ = ("data_offset", "info", "stored")

    def __init__(self, info: zipfile.ZipInfo, data_offset: int):
        self.info = info
        self.data_offset = data_offset
        self.stored = info.compress_type == zipfile.ZIP_STORED


def _local_zip64_sizes(extra: bytes, file_size: int, compress_size: int) -> tuple[int, int]:
    """A local header's sizes with 0xFFFFFFFF ones taken from its ZIP64 extra field."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if kind == _ZIP64_EXTRA:
            values = extra[at + 4 : at + 4 + length]
            # only the overflowing fields are present, in this order
            pos = 0
            if file_size == 0xFFFFFFFF and pos + 8 <= len(values):
                (file_size,) = struct.unpack_from("<Q", values, pos)
                pos += 8
            if compress_size == 0xFFFFFFFF and pos + 8 <= len(values):
                (compress_size,) = struct.unpack_from("<Q", values, pos)
            break
        at += 4 + length
    return file_size, compress_size


def _member(f: BinaryIO, info: zipfile.ZipInfo, archive_size: int, url: str) -> _Member:
    """Where ``info``'s data starts, from its local header (checked against ``info``)."""
    f.seek(info.header_offset)
    # the fixed header, and (usually) the name and extra field after it, in one read
    block = f.read(_LOCAL_HEADER.size + _NAME_AND_EXTRA_GUESS)
    header = block[: _LOCAL_HEADER.size]
    where = f"{url}: member {info.filename!r} (local header at {info.header_offset})"
    if len(header) != _LOCAL_HEADER.size or not header.startswith(_LOCAL_SIGNATURE):
        raise BuildError(f"{where}: no local file header there")
    (_, _, flags, method, _, _, _, csize, usize, name_len, extra_len) = _LOCAL_HEADER.unpack(header)
    end = _LOCAL_HEADER.size + name_len + extra_len
    if len(block) < end:
        block += f.read(end - len(block))
    raw_name = block[_LOCAL_HEADER.size : _LOCAL_HEADER.size + name_len]
    extra = block[_LOCAL_HEADER.size + name_len : end]
    if raw_name.isascii():
        name = raw_name.decode("ascii")  # the common case, and much faster than cp437
    else:
        name = raw_name.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")
    if name != info.orig_filename:
        raise BuildError(
            f"{where}: the local header names {raw_name!r}, the central directory "
            f"{info.orig_filename!r}"
        )
    if method != info.compress_type:
        raise BuildError(
            f"{where}: compression method {method} in the local header, "
            f"{info.compress_type} in the central directory"
        )
    if not flags & _FLAG_DATA_DESCRIPTOR:
        usize, csize = _local_zip64_sizes(extra, usize, csize)
        if (usize, csize) != (info.file_size, info.compress_size):
            raise BuildError(
                f"{where}: sizes {csize}/{usize} (stored/actual) in the local header, "
                f"{info.compress_size}/{info.file_size} in the central directory"
            )
    data_offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if data_offset + info.compress_size > archive_size:
        raise BuildError(
            f"{where}: its {info.compress_size} bytes at {data_offset} run past the end of "
            f"the archive ({archive_size} bytes)"
        )
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise BuildError(
            f"{where}: stored uncompressed, but {info.compress_size} bytes hold {info.file_size}"
        )
    return _Member(info, data_offset)


class ZipTree:
    """The objects of a zipped Zarr store: members of one archive, as a `ZarrTree`."""

    def __init__(self, source: Source):
        self.source = source
        self._file = source.open()
        self._lock = threading.Lock()
        try:
            self._zip = zipfile.ZipFile(self._file)  # type: ignore[arg-type]
        except (zipfile.BadZipFile, OSError) as e:
            self._file.close()
            raise BuildError(f"{source.url}: not a readable zip archive ({e})") from e
        try:
            self.members = self._index()
        except BaseException:
            self.close()
            raise
        self.root = self._root()
        self.url = f"{source.url}/{self.root}"

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def _index(self) -> dict[str, _Member]:
        url = self.source.url
        infos: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            if info.flag_bits & _FLAG_ENCRYPTED:
                raise UnsupportedError(
                    f"{url}: member {info.filename!r} is encrypted; encrypted archives "
                    "cannot be referenced"
                )
            infos[info.filename] = info  # a later member of the same name wins, as in zipfile
        size = self.source.size()
        # in archive order: the local headers are read front to back
        ordered = sorted(infos.values(), key=lambda i: i.header_offset)
        return {i.filename: _member(self._file, i, size, url) for i in ordered}

    def _root(self) -> str:
        """ "" or the one top directory that holds the store (``zip -r out.zip store.zarr``)."""
        names = self.members.keys()
        if any(n in _ROOT_METADATA for n in names):
            return ""
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) == 1:
            top = next(iter(tops))
            if any(f"{top}/{m}" in self.members for m in _ROOT_METADATA):
                return f"{top}/"
        return ""

    def listing(self, prefix: str) -> _Listing:
        start = self.root + prefix
        chosen = [(n, m) for n, m in self.members.items() if n.startswith(start)]
        return _Listing.of(
            [n[len(start) :] for n, _ in chosen],
            [m.info.compress_size for _, m in chosen],
            [m.data_offset for _, m in chosen],
            [m.stored for _, m in chosen],
            container=self.source.url,
        )

    def read(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._zip.read(self.members[self.root + key].info)
            except (zipfile.BadZipFile, OSError) as e:
                raise BuildError(f"{self.url}{key}: cannot read the zip member ({e})") from e

    def zarr_store(self, path: str, max_bytes: int | None = None) -> Any:
        """A zarr store of the members under ``path`` (decompressed), to load that array;
        None if they would decompress to more than ``max_bytes``."""
        import zarr
        from zarr.core.buffer import default_buffer_prototype

        start = self.root + (f"{path}/" if path else "")
        names = [name for name in self.members if name.startswith(start)]
        # zipfile keeps at most a member's declared size of inflated bytes (and checks its
        # CRC), so the central directory's sizes bound what this holds in memory
        if max_bytes is not None and sum(self.members[n].info.file_size for n in names) > max_bytes:
            return None
        proto = default_buffer_prototype()
        store = zarr.storage.MemoryStore()
        for name in names:
            key = name[len(self.root) :]
            store._store_dict[key] = proto.buffer.from_bytes(self.read(key))
        return store


def build_zip(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    **options: Any,
) -> ManifestGroup:
    """Reference the chunks of a zipped Zarr v2 or v3 store as byte ranges of the zip.

    Parameters
    ----------
    source
        The zip archive: a `Source`, local path or URL.
    group
        A sub-group (path inside the store) to start from.
    drop
        Members to leave out (paths relative to the starting group).
    load
        Arrays to read now (with zarr) and store inline.
    **options
        Passed to obstore for remote URLs.

    Returns
    -------
    ManifestGroup
        Every chunk stored uncompressed in the archive referenced as ``{zip URL, data
        offset, length}``; arrays with chunks the archive compresses loaded (with a
        warning).

    Raises
    ------
    BuildError
        Not a zip archive, a member whose local header disagrees with the central
        directory, or no Zarr metadata in the archive.
    UnsupportedError
        An encrypted archive, or an array zarr cannot read either.
    """
    src = source if isinstance(source, Source) else open_source(source, **options)
    tree = ZipTree(src)
    try:
        return build_tree(tree, group=group, drop=drop, load=load)
    finally:
        tree.close()
