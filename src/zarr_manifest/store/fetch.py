"""Coalesced, length-checked byte-range reads from a `Source` (sync, async, batched).

One idea: the last step of every chunk read, bytes for byte ranges.  Its layers share one
contract -- every merged fetch checked for length and for the pinned ETag, failures named by
key, URL and range -- and its sync and async paths mirror each other line for line; split,
that contract would be written in several places.

Three layers:

- `plan_coalesced` -- numpy-vectorized planning: sort ranges, merge neighbours whose gap is
  at most ``max_gap_bytes`` while the merged request stays within ``max_request_bytes``.
- `read_ranges_sync` / `read_ranges_async` -- one fetch call for the merged ranges of one
  source (``obstore.get_ranges[_async]``, or ``os.pread`` on a cached file descriptor for
  local files), sliced back per input in input order as zero-copy ``memoryview`` objects.
  Small batches (up to 64 ranges) are planned in plain Python, where numpy's per-call
  cost would dominate.  `read_range_sync` is the one-range shortcut.
- `RangeBatcher` -- many concurrent single-range ``await batcher.read(...)`` calls made in
  the same event-loop turn are merged into coalesced fetches per source.

Local files are opened by `open_no_follow` (no symlink followed at any path component,
regular files only, never blocking); http(s) sources go through `zarr_manifest.store._http`
(redirects re-checked against the registry), and a source whose ETag was verified is read
with ``If-Match`` (`StaleReferenceError` when the object changed).

Every merged fetch is checked: a source that returns fewer or more bytes than asked (short
file, truncated body, an HTTP server ignoring ``Range``) raises `ShortReadError`, never
short data.  Other failures raise `ChunkReadError`.  Both name the key(s), URL and byte
range, with the underlying error chained.
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import itertools
import os
import re
import stat
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt
import obstore
import obstore.exceptions

from zarr_manifest.errors import (
    ChunkReadError,
    ManifestError,
    ShortReadError,
    SourceNotAllowedError,
    StaleReferenceError,
    ZarrManifestError,
)
from zarr_manifest.store._http import http_executor
from zarr_manifest.store.sources import Source

__all__ = [
    "DEFAULT_LOCAL_MAX_GAP_BYTES",
    "DEFAULT_MAX_GAP_BYTES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "LOCAL_INLINE_MAX_BYTES",
    "LOCAL_REVALIDATE_SECONDS",
    "CoalescedPlan",
    "KeysOnDemand",
    "RangeBatcher",
    "check_local_extent",
    "close_local_files",
    "plan_coalesced",
    "read_local_ranges_into",
    "read_range_sync",
    "read_ranges_async",
    "read_ranges_into_sync",
    "read_ranges_sync",
]

#: Remote sources: a request costs a round trip, so reading up to 64 KiB of unused bytes
#: between two ranges is cheaper than a second request.
DEFAULT_MAX_GAP_BYTES = 64 * 1024
#: Local files: one more ``pread`` costs a few microseconds, about as much as copying a
#: few KiB of unused bytes, so only small gaps are worth bridging.
DEFAULT_LOCAL_MAX_GAP_BYTES = 4 * 1024
#: `read_ranges_into_sync` reads local ranges of at least this many bytes on average
#: straight into the caller's buffer, one ``preadv`` each; shorter ones are coalesced
#: into fewer reads and copied (a system call costs about as much as copying a few KiB).
DIRECT_READ_MIN_BYTES = 16 * 1024
#: Upper bound on one merged request (a single range larger than this is read alone).
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: In async reads of local files, batches up to this many bytes are read inline on the
#: event loop (a page-cache ``pread`` is far cheaper than a hop to a worker thread);
#: larger ones go to a thread so the loop is not blocked by disk I/O.
LOCAL_INLINE_MAX_BYTES = 1024 * 1024
#: A cached descriptor of a local file is checked against the path (same file?) when its
#: last check is older than this many seconds.
LOCAL_REVALIDATE_SECONDS = 1.0

# Error-message fragments of obstore errors that mean "the source returned another range or
# length than asked" (object_store's RangeNotSupported / UnexpectedRange / InvalidRange,
# HTTP 416, truncated body): reported as ShortReadError.
_LENGTH_ERROR_MARKERS = (
    "range request not supported",
    "rangenotsupported",
    "unexpectedrange",
    "invalidrange",
    "invalid range",
    "requested range was invalid",
    "range not satisfiable",
    "object was only",
    "body error",
)
# Errors that concern one range rather than the whole object: worth retrying the merged
# ranges one by one to tell which failed.  Others (not found, auth, timeouts) are not.
_RANGE_SPECIFIC_MARKERS = _LENGTH_ERROR_MARKERS

_MAX_KEYS_IN_MESSAGE = 8
# Up to this many ranges are planned in plain Python: numpy's fixed cost per call (tens of
# microseconds for the ~20 array operations) would dominate reading one or a few chunks.
_SMALL_BATCH = 64


class CoalescedPlan(NamedTuple):
    """Result of `plan_coalesced`.

    Attributes
    ----------
    starts, ends
        ``int64`` arrays: the merged ranges ``[start, end)``, sorted by start, disjoint.
    group
        ``intp`` array, one per input range (in input order): the index of the merged
        range that holds it.  Input ``i`` is ``merged[group[i]][starts_in[i] -
        starts[group[i]] : ends_in[i] - starts[group[i]]]``.
    """

    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]
    group: npt.NDArray[np.intp]


def _as_ranges(starts: npt.ArrayLike, ends: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(starts, dtype=np.int64).reshape(-1)
    e = np.asarray(ends, dtype=np.int64).reshape(-1)
    if s.shape != e.shape:
        raise ManifestError(f"{s.size} range starts but {e.size} range ends")
    return s, e


class KeysOnDemand(Sequence[str]):
    """The keys of some chunks, by index, made only when a failure names one: a read of
    thousands of chunks (a virtual shard, a merged chunk) passes these instead of strings."""

    __slots__ = ("_indices", "_key_of")

    def __init__(self, key_of: Callable[[int], str], indices: np.ndarray):
        self._key_of = key_of
        self._indices = indices

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self._key_of(int(self._indices[i]))


def _check_ranges(s: np.ndarray, e: np.ndarray, keys: Sequence[str | None] | None) -> None:
    bad = np.flatnonzero((s < 0) | (e < s))
    if bad.size:
        i = int(bad[0])
        key = keys[i] if keys is not None else None
        where = f" for key {key!r}" if key is not None else ""
        raise ManifestError(
            f"invalid byte range [{int(s[i])}, {int(e[i])}){where}", key=key, field="offset"
        )


def plan_coalesced(
    starts: npt.ArrayLike,
    ends: npt.ArrayLike,
    *,
    max_gap_bytes: int = DEFAULT_MAX_GAP_BYTES,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> CoalescedPlan:
    """Merge byte ranges into fewer, larger requests.

    Ranges are sorted by start; a range joins the current merged request when the gap
    between it and the request's end is at most ``max_gap_bytes`` and the merged request
    would span at most ``max_request_bytes``.  A range overlapping the request always
    joins it (its bytes are read anyway), so merged requests are disjoint; only such
    overlaps, or a single range, make a request exceed ``max_request_bytes``.
    Vectorized: the only Python loop runs over the pieces of runs longer than
    ``max_request_bytes``, never over input ranges.

    Parameters
    ----------
    starts, ends
        Byte ranges ``[start, end)``, 1-D integer arrays of equal length.
    max_gap_bytes
        Largest gap of unused bytes bridged to merge two ranges.
    max_request_bytes
        Largest merged request (a single range larger than this stays alone).

    Returns
    -------
    CoalescedPlan
        ``(starts, ends, group)``; see `CoalescedPlan`.

    Raises
    ------
    ManifestError
        For negative starts, ends before starts, or mismatched lengths.
    """
    if max_gap_bytes < 0 or max_request_bytes < 1:
        raise ValueError("max_gap_bytes must be >= 0 and max_request_bytes >= 1")
    s, e = _as_ranges(starts, ends)
    _check_ranges(s, e, None)
    n = s.size
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return CoalescedPlan(empty, empty.copy(), np.empty(0, dtype=np.intp))
    order = np.argsort(s, kind="stable")
    ss = s[order]
    ee = e[order]
    reach = np.maximum.accumulate(ee)  # end of everything read so far, monotonic
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.greater(ss[1:] - reach[:-1], max_gap_bytes, out=new[1:])

    # Runs joined by small gaps may still be too long for one request: split them, only
    # where a range does not overlap what comes before it (an overlapping range is read
    # with its neighbour anyway), as late as keeps the piece within max_request_bytes.
    # reach is monotonic, so each piece's end is one searchsorted away: the loop runs
    # once per piece of an overlong run, never per range.
    heads = np.flatnonzero(new)
    tails = np.append(heads[1:], n)  # exclusive
    too_long = np.flatnonzero(reach[tails - 1] - ss[heads] > max_request_bytes)
    if too_long.size:
        clean = np.empty(n, dtype=bool)
        clean[0] = True
        np.greater_equal(ss[1:], reach[:-1], out=clean[1:])
        # bisect on lists: numpy's per-call cost would dominate this per-piece loop.
        cuts = np.flatnonzero(clean).tolist()  # where a piece may start
        reach_l = reach.tolist()
        ss_l = ss.tolist()
        for r in too_long.tolist():
            i, stop = int(heads[r]), int(tails[r])
            while True:
                # First index whose inclusion would make the piece too long.
                j = bisect.bisect_right(reach_l, ss_l[i] + max_request_bytes, i, stop)
                if j >= stop:
                    break
                c = cuts[bisect.bisect_right(cuts, j) - 1]
                if c <= i:  # no cut in (i, j]: take the first one after i, if any
                    k = bisect.bisect_right(cuts, i)
                    if k >= len(cuts) or cuts[k] >= stop:
                        break
                    c = cuts[k]
                new[c] = True
                i = c

    group_sorted = np.cumsum(new) - 1
    heads = np.flatnonzero(new)
    tails = np.append(heads[1:], n)
    group = np.empty(n, dtype=np.intp)
    group[order] = group_sorted
    return CoalescedPlan(ss[heads].copy(), reach[tails - 1].copy(), group)


# -- local files: pread on cached descriptors -------------------------------------------


class _OpenFile:
    __slots__ = ("checked", "dev", "evicted", "fd", "ino", "nlink", "size", "users")

    def __init__(self, fd: int, dev: int, ino: int, size: int) -> None:
        self.fd = fd
        self.dev = dev
        self.ino = ino
        self.size = size  # as of the last check
        self.nlink = 1
        self.checked = time.monotonic()
        self.users = 0
        self.evicted = False

    def size_for(self, end: int) -> int:
        """The file's size, looked up again when ``end`` lies past the size last seen (the
        file may have grown); never allocate for bytes beyond it."""
        if end > self.size:
            self.size = os.fstat(self.fd).st_size
        return self.size


_DIR_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_PATH", 0)
)
_FILE_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    # A FIFO opened for reading blocks until a writer comes: never wait for one.
    | getattr(os, "O_NONBLOCK", 0)
)
# errno values of opening a symlink with O_NOFOLLOW (ELOOP; ENOTDIR with O_DIRECTORY;
# EMLINK on FreeBSD, EFTYPE elsewhere).
_LINK_ERRNOS = frozenset(
    getattr(errno, n) for n in ("ELOOP", "ENOTDIR", "EMLINK", "EFTYPE") if hasattr(errno, n)
)


def open_no_follow(path: str) -> int:
    """Open the regular file at absolute real path ``path`` read-only, following no symlink
    at any component, without blocking.

    Each directory is opened relative to the one before it (``openat`` with
    ``O_NOFOLLOW``), so no component can be swapped for a symlink between a check and the
    open: what is opened is the file at ``path`` as it is now, or nothing.

    Raises
    ------
    SourceNotAllowedError
        A component is (now) a symlink, or the file is not a regular file (FIFO, device,
        socket, directory).
    OSError
        The file is missing or cannot be opened.
    """
    parts = [p for p in path.split(os.sep) if p]
    if not os.path.isabs(path) or not parts or any(p in (".", "..") for p in parts):
        raise SourceNotAllowedError(f"local source {path!r} is not an absolute real path")
    fd = os.open(os.sep, _DIR_FLAGS)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            try:
                nxt = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _LINK_ERRNOS and _is_symlink(name, fd):
                    where = os.sep + os.sep.join(parts[: i + 1])
                    raise SourceNotAllowedError(
                        f"local source {path!r} is now reached through a symlink or a "
                        f"non-directory at {where!r}; refusing to follow it",
                        path=path,
                    ) from exc
                raise
            os.close(fd)
            fd = nxt
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceNotAllowedError(
                f"local source {path!r} is not a regular file ({_file_kind(st.st_mode)}); "
                "refusing to read it",
                path=path,
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_links(path: str, nlink: int, allowed: bool) -> None:
    if nlink > 1 and not allowed:
        raise SourceNotAllowedError(
            f"local source {path!r} has {nlink} hard links and hard links are refused "
            "(SourceRegistry(hard_links=...)): another name of it may lie outside the "
            "allowed prefixes",
            path=path,
        )


class _FdCache:
    """Open file descriptors of local sources, LRU-bounded and shared by all threads.

    A descriptor is reused while the path still names the same file: device and inode are
    checked with ``stat`` when the last check is older than `LOCAL_REVALIDATE_SECONDS`, so
    a file replaced on disk is reopened (a ``stat`` per read would double the cost of a
    small read).  Eviction closes a descriptor only once no reader uses it.
    """

    def __init__(self, max_open: int = 128) -> None:
        self.max_open = max_open
        self._lock = threading.Lock()
        self._files: OrderedDict[str, _OpenFile] = OrderedDict()

    def acquire(self, path: str, *, hard_links: bool = True) -> _OpenFile:
        """A descriptor of the regular file at real path ``path``, opened without
        following a symlink at any component (see `open_no_follow`).

        ``hard_links=False`` refuses a file with more than one link (strict mode).
        """
        now = time.monotonic()
        with self._lock:
            f = self._files.get(path)
            if f is not None and now - f.checked < LOCAL_REVALIDATE_SECONDS:
                _check_links(path, f.nlink, hard_links)
                self._files.move_to_end(path)
                f.users += 1
                return f
        # Opening again, component by component, is the check: a path swapped for a
        # symlink since it was resolved fails here, and what is opened is what is read.
        fd = open_no_follow(path)
        try:
            fst = os.fstat(fd)
            _check_links(path, fst.st_nlink, hard_links)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            f = self._files.get(path)
            if f is not None and f.dev == fst.st_dev and f.ino == fst.st_ino:
                os.close(fd)
                f.size = fst.st_size
                f.nlink = fst.st_nlink
                f.checked = now
                self._files.move_to_end(path)
                f.users += 1
                return f
        new = _OpenFile(fd, fst.st_dev, fst.st_ino, fst.st_size)
        new.nlink = fst.st_nlink
        new.users = 1
        with self._lock:
            old = self._files.pop(path, None)
            if old is not None:
                self._evict(old)
            self._files[path] = new
            while len(self._files) > self.max_open:
                self._evict(self._files.popitem(last=False)[1])
        return new

    def release(self, f: _OpenFile) -> None:
        with self._lock:
            f.users -= 1
            if f.evicted and f.users == 0:
                os.close(f.fd)

    @staticmethod
    def _evict(f: _OpenFile) -> None:  # called with the lock held
        f.evicted = True
        if f.users == 0:
            os.close(f.fd)

    def clear(self) -> None:
        """Close every descriptor not in use (the rest close when released)."""
        with self._lock:
            for f in self._files.values():
                self._evict(f)
            self._files.clear()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


_FD_CACHE = _FdCache()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_FD_CACHE._after_fork)


def close_local_files() -> None:
    """Close the cached descriptors of local sources (they reopen on the next read)."""
    _FD_CACHE.clear()


def _pread_full(fd: int, start: int, length: int) -> bytes:
    data = os.pread(fd, length, start)
    if len(data) == length or not data:
        return data
    # pread may return less than asked before end of file (signals, some filesystems).
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, start + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _fetch_local(source: Source, ms: list[int], me: list[int]) -> list[Any]:
    """pread every merged range; a failure (OSError) is returned in its slot."""
    assert source.local_path is not None
    try:
        f = _FD_CACHE.acquire(source.local_path, hard_links=source.hard_links)
    except SourceNotAllowedError:
        raise
    except OSError as exc:
        return [exc] * len(ms)
    try:
        out: list[Any] = []
        for a, b in zip(ms, me, strict=True):
            # A manifest may claim a 1 TiB chunk: read up to the end of the file; the length
            # check reports the rest.
            size = f.size_for(b)
            hi = min(b, size)
            if hi <= a:
                # A non-empty range gets b"" and fails the length check; an empty one must
                # still lie inside the file, which no length check can tell.
                past_end = a == b and a > size
                out.append(
                    EOFError(f"range not satisfiable: it starts past the end ({size} bytes)")
                    if past_end
                    else b""
                )
                continue
            try:
                out.append(_pread_full(f.fd, a, hi - a))
            except OSError as exc:
                out.append(exc)
        return out
    finally:
        _FD_CACHE.release(f)


# -- remote sources: obstore -------------------------------------------------------------


_UNEXPECTED_RANGE_RE = re.compile(r"requested \d+\.\.\d+, got \d+\.\.\d+")


def _is_range_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(m in text for m in _RANGE_SPECIFIC_MARKERS) or bool(
        _UNEXPECTED_RANGE_RE.search(text)
    )


def _waves(ms: list[int], me: list[int]) -> list[list[int]]:
    """Split the non-empty merged ranges into calls in which no two ranges touch.

    ``get_ranges(coalesce=0)`` still joins ranges that touch (gap 0), which would undo the
    ``max_request_bytes`` split of a long contiguous run into parallel requests.  Sorted
    disjoint ranges k and k+2 are separated by range k+1, so alternate ranges never touch.
    """
    idx = [i for i in range(len(ms)) if me[i] > ms[i]]
    if any(me[a] == ms[b] for a, b in itertools.pairwise(idx)):
        return [idx[0::2], idx[1::2]]
    return [idx] if idx else []


def _stale(source: Source, etag: str, why: str) -> StaleReferenceError:
    return StaleReferenceError(
        f"source {source.url} changed since the manifest was made: ETag {etag} recorded, "
        f"{why}; its byte ranges may no longer hold the chunks, rebuild the manifest",
        url=source.url,
    )


def _check_pinned_meta(source: Source, etag: str, meta: Any) -> None:
    live = meta.get("e_tag") if meta is not None else None
    if live and _strong_etag(live) != _strong_etag(etag):
        raise _stale(source, etag, f"the store served ETag {live}")


def _strong_etag(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def _remote_range_sync(source: Source, a: int, b: int) -> Any:
    """One remote range, raising.  http(s) goes through the redirect-checking client; a
    pinned ETag (verified source) is sent as If-Match."""
    etag = source.expected_etag
    if source.http is not None:
        return source.http.get_range(a, b, etag)
    if etag is None:
        return obstore.get_range(source.store, source.path, start=a, end=b)
    try:
        res = obstore.get(source.store, source.path, options={"range": (a, b), "if_match": etag})
    except obstore.exceptions.PreconditionError as exc:
        raise _stale(source, etag, "the store refused If-Match") from exc
    _check_pinned_meta(source, etag, res.meta)
    return res.bytes()


async def _remote_range_async(source: Source, a: int, b: int) -> Any:
    """Async `_remote_range_sync` (http(s) requests run in `http_executor`'s threads)."""
    etag = source.expected_etag
    if source.http is not None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(http_executor(), source.http.get_range, a, b, etag)
    if etag is None:
        return await obstore.get_range_async(source.store, source.path, start=a, end=b)
    try:
        res = await obstore.get_async(
            source.store, source.path, options={"range": (a, b), "if_match": etag}
        )
    except obstore.exceptions.PreconditionError as exc:
        raise _stale(source, etag, "the store refused If-Match") from exc
    _check_pinned_meta(source, etag, res.meta)
    return await res.bytes_async()


def _slot(source: Source, a: int, b: int) -> Any:
    """`_remote_range_sync`, a failure returned instead of raised -- except refusals and
    stale sources, which concern the whole source."""
    try:
        return _remote_range_sync(source, a, b)
    except (SourceNotAllowedError, StaleReferenceError):
        raise
    except Exception as exc:
        return exc


def _reraise_fatal(results: list[Any]) -> list[Any]:
    for r in results:
        if isinstance(r, SourceNotAllowedError | StaleReferenceError):
            raise r
    return results


def _fetch_wave_sync(source: Source, ms: list[int], me: list[int], idx: list[int]) -> list[Any]:
    if source.http is not None or source.expected_etag is not None:
        # One request per merged range (obstore's get_ranges cannot carry If-Match nor
        # stop redirects), in parallel as get_ranges would run them.
        if len(idx) == 1:
            return [_slot(source, ms[idx[0]], me[idx[0]])]
        pool = http_executor()
        return list(pool.map(lambda i: _slot(source, ms[i], me[i]), idx))
    qs = [ms[i] for i in idx]
    qe = [me[i] for i in idx]
    try:
        return list(obstore.get_ranges(source.store, source.path, starts=qs, ends=qe, coalesce=0))
    except Exception as exc:
        if len(idx) == 1 or not _is_range_error(exc):
            return [exc] * len(idx)
    # A range-specific failure: find out which merged ranges fail.
    out: list[Any] = []
    for i in idx:
        try:
            out.append(obstore.get_range(source.store, source.path, start=ms[i], end=me[i]))
        except Exception as one:
            out.append(one)
    return out


def _fetch_remote_sync(source: Source, ms: list[int], me: list[int]) -> list[Any]:
    """obstore reads of the merged ranges; a failure is returned in its slot."""
    out: list[Any] = [b""] * len(ms)
    for idx in _waves(ms, me):
        for i, res in zip(idx, _fetch_wave_sync(source, ms, me, idx), strict=True):
            out[i] = res
    return out


async def _fetch_wave_async(
    source: Source, ms: list[int], me: list[int], idx: list[int]
) -> list[Any]:
    if source.http is not None or source.expected_etag is not None:
        return _reraise_fatal(
            list(
                await asyncio.gather(
                    *(_remote_range_async(source, ms[i], me[i]) for i in idx),
                    return_exceptions=True,
                )
            )
        )
    qs = [ms[i] for i in idx]
    qe = [me[i] for i in idx]
    try:
        return list(
            await obstore.get_ranges_async(
                source.store, source.path, starts=qs, ends=qe, coalesce=0
            )
        )
    except Exception as exc:
        if len(idx) == 1 or not _is_range_error(exc):
            return [exc] * len(idx)
    return list(
        await asyncio.gather(
            *(
                obstore.get_range_async(source.store, source.path, start=ms[i], end=me[i])
                for i in idx
            ),
            return_exceptions=True,
        )
    )


async def _fetch_remote_async(source: Source, ms: list[int], me: list[int]) -> list[Any]:
    """Async `_fetch_remote_sync`; the waves run concurrently."""
    out: list[Any] = [b""] * len(ms)
    waves = _waves(ms, me)
    if len(waves) == 1:
        results = [await _fetch_wave_async(source, ms, me, waves[0])]
    else:
        results = await asyncio.gather(*(_fetch_wave_async(source, ms, me, w) for w in waves))
    for idx, res in zip(waves, results, strict=True):
        for i, r in zip(idx, res, strict=True):
            out[i] = r
    return out


# -- slicing results back, with checks ---------------------------------------------------


def _keys_text(keys: list[str | None]) -> str:
    named = [k for k in keys if k is not None]
    if not named:
        return ""
    if len(named) == 1:
        return f" for key {named[0]!r}"
    shown = ", ".join(repr(k) for k in named[:_MAX_KEYS_IN_MESSAGE])
    more = len(named) - _MAX_KEYS_IN_MESSAGE
    return f" for keys {shown}" + (f" (+{more} more)" if more > 0 else "")


def _cause_text(exc: BaseException) -> str:
    # obstore appends a multi-line Rust debug dump; the chained cause keeps it.
    text = str(exc).split("\n\nDebug source:", 1)[0].strip()
    return f"{type(exc).__name__}: {text}"


def _range_error(
    source: Source,
    cause: BaseException | None,
    s: int,
    e: int,
    key: str | None,
    *,
    req: tuple[int, int],
    got: int | None = None,
) -> ChunkReadError:
    """One input's error: ShortReadError for length mismatches, else ChunkReadError."""
    what = f"bytes [{s}, {e}) of {source.url}" + _keys_text([key])
    if req != (s, e):
        what += f" (in merged request [{req[0]}, {req[1]}))"
    if cause is None:
        return ShortReadError(
            f"short read: {what}: the source returned {got} bytes for a request of "
            f"{req[1] - req[0]}",
            key=key,
            url=source.url,
            start=s,
            end=e,
        )
    short = _is_range_error(cause)
    cls = ShortReadError if short else ChunkReadError
    label = "short read" if short else "reading failed"
    err = cls(
        f"{label}: {what}: {_cause_text(cause)}",
        key=key,
        url=source.url,
        start=s,
        end=e,
    )
    err.__cause__ = cause
    return err


class _Plan(NamedTuple):
    """A checked, planned request as plain lists (what the fetch loop works on)."""

    s: list[int]  # input starts, input order
    e: list[int]  # input ends
    ms: list[int]  # merged starts, sorted
    me: list[int]  # merged ends
    group: list[int]  # merged range of each input


def _plan_small(s: list[int], e: list[int], gap: int, limit: int) -> tuple[list[int], ...]:
    """`plan_coalesced` in plain Python, for small batches where numpy's per-call cost
    dominates; same result (tested against it)."""
    n = len(s)
    order = sorted(range(n), key=s.__getitem__)
    ss = [s[i] for i in order]
    reach = list(itertools.accumulate((e[i] for i in order), max))
    new = [True] + [ss[k] - reach[k - 1] > gap for k in range(1, n)]
    heads = [k for k in range(n) if new[k]]
    for h, t in zip(heads, [*heads[1:], n], strict=True):
        if reach[t - 1] - ss[h] <= limit:
            continue
        i = h
        while True:
            j = bisect.bisect_right(reach, ss[i] + limit, i, t)
            if j >= t:
                break
            c = j  # the last clean cut in (i, j], else the first after j
            while c > i and ss[c] < reach[c - 1]:
                c -= 1
            if c <= i:
                c = j + 1
                while c < t and ss[c] < reach[c - 1]:
                    c += 1
                if c >= t:
                    break
            new[c] = True
            i = c
    ms: list[int] = []
    me: list[int] = []
    group = [0] * n
    g = -1
    for k in range(n):
        if new[k]:
            g += 1
            ms.append(ss[k])
            me.append(reach[k])
        else:
            me[g] = reach[k]
        group[order[k]] = g
    return ms, me, group


def _prepare(
    source: Source,
    starts: npt.ArrayLike,
    ends: npt.ArrayLike,
    keys: Sequence[str | None] | None,
    max_gap_bytes: int | None,
    max_request_bytes: int,
) -> _Plan:
    if max_gap_bytes is None:
        local = source.local_path is not None
        max_gap_bytes = DEFAULT_LOCAL_MAX_GAP_BYTES if local else DEFAULT_MAX_GAP_BYTES
    n = len(starts)  # type: ignore[arg-type]
    if n > _SMALL_BATCH:
        sa, ea = _as_ranges(starts, ends)
        if keys is not None and len(keys) != sa.size:
            raise ManifestError(f"{len(keys)} keys for {sa.size} byte ranges")
        _check_ranges(sa, ea, keys)
        plan = plan_coalesced(
            sa, ea, max_gap_bytes=max_gap_bytes, max_request_bytes=max_request_bytes
        )
        return _Plan(
            sa.tolist(), ea.tolist(), plan.starts.tolist(), plan.ends.tolist(), plan.group.tolist()
        )
    s = [int(x) for x in starts]  # type: ignore[union-attr, arg-type]
    e = [int(x) for x in ends]  # type: ignore[union-attr, arg-type]
    if len(e) != n:
        raise ManifestError(f"{n} range starts but {len(e)} range ends")
    if keys is not None and len(keys) != n:
        raise ManifestError(f"{len(keys)} keys for {n} byte ranges")
    for i in range(n):
        if s[i] < 0 or e[i] < s[i]:
            key = keys[i] if keys is not None else None
            raise ManifestError(
                f"invalid byte range [{s[i]}, {e[i]}) of {source.url}" + _keys_text([key]),
                key=key,
                field="offset",
            )
    if n <= 1:
        return _Plan(s, e, s, e, [0] * n)
    if max_gap_bytes < 0 or max_request_bytes < 1:
        raise ValueError("max_gap_bytes must be >= 0 and max_request_bytes >= 1")
    ms, me, group = _plan_small(s, e, max_gap_bytes, max_request_bytes)
    return _Plan(s, e, ms, me, group)


def _distribute(
    source: Source,
    p: _Plan,
    keys: Sequence[str | None] | None,
    results: list[Any],
) -> tuple[list[memoryview | None], list[ChunkReadError | None] | None]:
    """Slice merged buffers back per input; per-input errors where a merged read failed."""
    ms, me = p.ms, p.me
    views: list[Any] = []
    ok = True
    for res, a, b in zip(results, ms, me, strict=True):
        if isinstance(res, BaseException):
            views.append(res)
            ok = False
            continue
        mv = memoryview(res)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        if mv.nbytes != b - a:
            ok = False
        views.append(mv)
    if ok:  # the hot path: every merged read came back whole
        return [
            views[g][a - ms[g] : b - ms[g]] for g, a, b in zip(p.group, p.s, p.e, strict=True)
        ], None

    out: list[memoryview | None] = []
    errors: list[ChunkReadError | None] = []
    for i, (g, a, b) in enumerate(zip(p.group, p.s, p.e, strict=True)):
        v = views[g]
        key = keys[i] if keys is not None else None
        req = (ms[g], me[g])
        want = me[g] - ms[g]
        if isinstance(v, BaseException):
            out.append(None)
            errors.append(_range_error(source, v, a, b, key, req=req))
        elif v.nbytes == want or (v.nbytes < want and b - ms[g] <= v.nbytes):
            # A merged read cut short at end of file still holds the inputs before the cut.
            out.append(v[a - ms[g] : b - ms[g]])
            errors.append(None)
        else:
            out.append(None)
            errors.append(_range_error(source, None, a, b, key, got=v.nbytes, req=req))
    return out, errors


def _raise_first(errors: list[ChunkReadError | None], keys: Sequence[str | None] | None) -> None:
    failed = [i for i, err in enumerate(errors) if err is not None]
    first = errors[failed[0]]
    assert first is not None
    if len(failed) > 1:
        others = _keys_text([keys[i] for i in failed[1:]] if keys is not None else [])
        first.args = (f"{first.args[0]} (and {len(failed) - 1} other range(s) failed{others})",)
    raise first


def _wrap_unexpected(source: Source, exc: Exception, p: _Plan, keys: Any) -> ChunkReadError:
    lo = min(p.s) if p.s else 0
    hi = max(p.e) if p.e else 0
    names = _keys_text(list(keys) if keys is not None else [])
    err = ChunkReadError(
        f"reading failed: bytes [{lo}, {hi}) of {source.url}{names}: {_cause_text(exc)}",
        key=keys[0] if keys is not None and len(keys) else None,
        url=source.url,
        start=lo,
        end=hi,
    )
    err.__cause__ = exc
    return err


def read_ranges_sync(
    source: Source,
    starts: npt.ArrayLike,
    ends: npt.ArrayLike,
    *,
    keys: Sequence[str | None] | None = None,
    max_gap_bytes: int | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> list[memoryview]:
    """Read byte ranges ``[starts[i], ends[i])`` of one source, coalesced and checked.

    Parameters
    ----------
    source
        Where to read (from `SourceRegistry.resolve`).  Local sources are read with
        ``os.pread`` on a cached descriptor, others with one ``obstore.get_ranges`` call
        for all merged ranges.
    starts, ends
        Byte ranges: sequences or 1-D integer arrays of equal length (any order, may
        overlap or repeat).
    keys
        Store keys of the ranges, only to name them in errors.
    max_gap_bytes
        Gap bridged when merging; ``None``: `DEFAULT_LOCAL_MAX_GAP_BYTES` for local
        sources, `DEFAULT_MAX_GAP_BYTES` otherwise.
    max_request_bytes
        Largest merged request.

    Returns
    -------
    list of memoryview
        One read-only, zero-copy ``memoryview`` per input, in input order (views into the
        merged buffers; ``bytes(v)`` copies one out).

    Raises
    ------
    ShortReadError
        A merged read returned another length than asked for ranges of the input.
    ChunkReadError
        The source failed (not found, denied, network ...); the cause is chained.
    ManifestError
        A range is invalid (negative, or end before start).
    """
    p = _prepare(source, starts, ends, keys, max_gap_bytes, max_request_bytes)
    try:
        if source.local_path is not None:
            results = _fetch_local(source, p.ms, p.me)
        else:
            results = _fetch_remote_sync(source, p.ms, p.me)
    except ZarrManifestError:
        raise
    except Exception as exc:
        raise _wrap_unexpected(source, exc, p, keys) from exc
    out, errors = _distribute(source, p, keys, results)
    if errors is not None:
        _raise_first(errors, keys)
    return out  # type: ignore[return-value]


def read_ranges_into_sync(
    source: Source,
    starts: npt.ArrayLike,
    ends: npt.ArrayLike,
    out: Any,
    positions: npt.ArrayLike,
    *,
    keys: Sequence[str | None] | None = None,
    max_gap_bytes: int | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> None:
    """Read byte ranges ``[starts[i], ends[i])`` of one source into ``out`` at
    ``positions[i]``, checked.

    Local ranges that are long on average (`DIRECT_READ_MIN_BYTES`) are read straight
    into ``out`` with ``os.preadv``, without an intermediate copy; other ranges are read as
    `read_ranges_sync` reads them (coalesced) and copied.

    Parameters
    ----------
    source
        Where to read (from `SourceRegistry.resolve`).
    starts, ends
        Byte ranges, 1-D integer arrays of equal length.
    out
        A writable buffer (``bytearray``, ``numpy`` array of bytes) holding every range at
        its position.
    positions
        Where each range goes in ``out``.
    keys, max_gap_bytes, max_request_bytes
        As for `read_ranges_sync`.

    Raises
    ------
    ShortReadError, ChunkReadError, ManifestError
        As `read_ranges_sync`; ``out`` may then be partly written.
    """
    s, e = _as_ranges(starts, ends)
    _check_ranges(s, e, keys)
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    view = memoryview(out).cast("B")
    if source.local_path is not None and int((e - s).sum()) >= s.size * DIRECT_READ_MIN_BYTES:
        _read_local_into(source, s.tolist(), e.tolist(), view, pos.tolist(), keys)
        return
    views = read_ranges_sync(
        source,
        s,
        e,
        keys=keys,
        max_gap_bytes=max_gap_bytes,
        max_request_bytes=max_request_bytes,
    )
    _copy_into(view, pos, views)


def _copy_into(view: memoryview, positions: np.ndarray, views: list[memoryview]) -> None:
    """Copy read ranges into ``view`` at their positions."""
    for p, v in zip(positions.tolist(), views, strict=True):
        view[p : p + len(v)] = v


@contextmanager
def _open_local(source: Source, start: int, end: int, key: str | None) -> Iterator[_OpenFile]:
    """A cached descriptor of a local source, released afterwards; failing to open it is a
    `ChunkReadError` for bytes ``[start, end)`` of ``key``."""
    assert source.local_path is not None
    try:
        f = _FD_CACHE.acquire(source.local_path, hard_links=source.hard_links)
    except SourceNotAllowedError:
        raise
    except OSError as exc:
        raise _range_error(source, exc, start, end, key, req=(start, end)) from exc
    try:
        yield f
    finally:
        _FD_CACHE.release(f)


def check_local_extent(source: Source, end: int, *, key: str | None = None) -> None:
    """Fail with `ShortReadError` if a local source holds fewer than ``end`` bytes (a no-op
    for remote sources): callers check before they allocate room for a read (spec 9.3)."""
    if source.local_path is None:
        return
    with _open_local(source, 0, end, key) as f:
        size = f.size_for(end)
    if end > size:
        raise ShortReadError(
            f"short read: {source.url}{_keys_text([key])} holds {size} bytes, but the "
            f"manifest references bytes up to {end}",
            key=key,
            url=source.url,
            start=size,
            end=end,
        )


def _read_local_into(
    source: Source,
    starts: list[int],
    ends: list[int],
    view: memoryview,
    positions: list[int],
    keys: Sequence[str | None] | None,
) -> None:
    """preadv each range into its place in ``view`` (see `read_ranges_into_sync`): one
    descriptor, no copy, no planning (``read_local_ranges_into`` for callers whose ranges
    are few, long and far apart, as Python lists)."""
    first_key = keys[0] if keys else None
    with _open_local(source, starts[0], ends[0], first_key) as f:
        for i, (a, b, p) in enumerate(zip(starts, ends, positions, strict=True)):
            got = 0
            want = b - a
            try:
                if b <= f.size_for(b):  # else: bytes the file does not hold, a short read
                    while got < want:
                        n = os.preadv(f.fd, [view[p + got : p + want]], a + got)
                        if n == 0:
                            break
                        got += n
            except OSError as exc:
                key = keys[i] if keys is not None else None
                raise _range_error(source, exc, a, b, key, req=(a, b)) from exc
            if got != want:
                key = keys[i] if keys is not None else None
                raise _range_error(source, None, a, b, key, req=(a, b), got=got)


read_local_ranges_into = _read_local_into


def read_range_sync(source: Source, start: int, end: int, *, key: str | None = None) -> Any:
    """Read one byte range ``[start, end)`` of a source, checked; no planning overhead.

    The per-chunk path of zarr's synchronous pipeline: one ``pread`` on a cached
    descriptor (local) or one ``obstore.get_range`` (remote).

    Returns
    -------
    bytes or obstore.Bytes
        Exactly ``end - start`` bytes (both support the buffer protocol and ``len``).

    Raises
    ------
    ShortReadError, ChunkReadError, ManifestError
        As `read_ranges_sync`.
    """
    start = int(start)
    end = int(end)
    if start < 0 or end < start:
        raise ManifestError(
            f"invalid byte range [{start}, {end}) of {source.url}" + _keys_text([key]), key=key
        )
    result: Any
    if source.local_path is not None:
        result = _fetch_local(source, [start], [end])[0]
    elif end == start:
        result = b""
    else:
        result = _slot(source, start, end)
    if isinstance(result, BaseException):
        raise _range_error(source, result, start, end, key, req=(start, end)) from result
    if len(result) != end - start:
        raise _range_error(source, None, start, end, key, req=(start, end), got=len(result))
    return result


async def _read_async_results(
    source: Source, p: _Plan, keys: Sequence[str | None] | None
) -> tuple[list[memoryview | None], list[ChunkReadError | None] | None]:
    try:
        if source.local_path is not None:
            total = sum(p.me) - sum(p.ms)
            if total <= LOCAL_INLINE_MAX_BYTES:
                results = _fetch_local(source, p.ms, p.me)
            else:
                results = await asyncio.to_thread(_fetch_local, source, p.ms, p.me)
        else:
            results = await _fetch_remote_async(source, p.ms, p.me)
    except ZarrManifestError:
        raise
    except Exception as exc:
        raise _wrap_unexpected(source, exc, p, keys) from exc
    return _distribute(source, p, keys, results)


async def read_ranges_async(
    source: Source,
    starts: npt.ArrayLike,
    ends: npt.ArrayLike,
    *,
    keys: Sequence[str | None] | None = None,
    max_gap_bytes: int | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> list[memoryview]:
    """Async `read_ranges_sync`: same parameters, result and errors.

    Remote sources use ``obstore.get_ranges_async``.  Local sources are read inline when
    the merged ranges total at most `LOCAL_INLINE_MAX_BYTES`, else in a worker thread.
    """
    p = _prepare(source, starts, ends, keys, max_gap_bytes, max_request_bytes)
    out, errors = await _read_async_results(source, p, keys)
    if errors is not None:
        _raise_first(errors, keys)
    return out  # type: ignore[return-value]


# -- batching concurrent single-range reads ---------------------------------------------

# The callers waiting for one range: (future, key) each.  Every reader has its own future,
# so one giving up (cancelled) does not cancel the read the others share.
_Waiters = list[tuple["asyncio.Future[memoryview]", "str | None"]]


class _LoopState:
    """A batcher's state on one event loop (only touched from that loop's thread)."""

    __slots__ = ("inflight", "pending", "scheduled", "tasks")

    def __init__(self) -> None:
        # Ranges not yet sent, per source: (start, end) -> waiters.
        self.pending: dict[Source, dict[tuple[int, int], _Waiters]] = {}
        # Every unfinished range, so identical ones are read once: (source, start, end) ->
        # the same waiters list as in pending.
        self.inflight: dict[tuple[Source, int, int], _Waiters] = {}
        self.scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()


class RangeBatcher:
    """Merge concurrent single-range reads into coalesced fetches.

    ``await batcher.read(source, start, end, key=...)`` queues the range; once the event
    loop has run ``turns`` more iterations (by default: every coroutine that was ready in
    the same turn has had its go), all queued ranges of each source are read with one
    coalesced fetch (as `read_ranges_async`).  Identical ranges in flight are read once and
    shared.  A failure is reported only to the reads it concerns.

    Parameters
    ----------
    max_gap_bytes, max_request_bytes
        As for `read_ranges_async` (``None``: by source kind).
    turns
        Event-loop iterations to collect requests before fetching (>= 1).  More turns
        catch requests that arrive a few awaits later, at the cost of latency.

    Notes
    -----
    State is kept per event loop (zarr runs its own loop in a thread; tests and users may
    run others), so one batcher may be shared by any number of loops and threads.
    """

    def __init__(
        self,
        *,
        max_gap_bytes: int | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        turns: int = 1,
    ) -> None:
        if turns < 1:
            raise ValueError("turns must be >= 1")
        self.max_gap_bytes = max_gap_bytes
        self.max_request_bytes = max_request_bytes
        self.turns = turns
        self._lock = threading.Lock()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        #: Number of coalesced fetches made (for tests and diagnostics).
        self.fetch_calls = 0

    def __getstate__(self) -> dict[str, Any]:
        return {
            "max_gap_bytes": self.max_gap_bytes,
            "max_request_bytes": self.max_request_bytes,
            "turns": self.turns,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        st = self._states.get(loop)
        if st is None:
            with self._lock:
                st = self._states.get(loop)
                if st is None:
                    st = self._states[loop] = _LoopState()
        return st

    async def read(
        self, source: Source, start: int, end: int, *, key: str | None = None
    ) -> memoryview:
        """Read ``[start, end)`` of ``source``, batched with concurrent reads.

        Returns
        -------
        memoryview
            Read-only view of the bytes (shared with identical concurrent reads).

        Raises
        ------
        ShortReadError, ChunkReadError, ManifestError
            As `read_ranges_async`, for this range only.
        """
        start = int(start)
        end = int(end)
        if start < 0 or end < start:
            raise ManifestError(
                f"invalid byte range [{start}, {end}) of {source.url}" + _keys_text([key]),
                key=key,
            )
        if end == start:
            return memoryview(b"")
        loop = asyncio.get_running_loop()
        st = self._state(loop)
        fut: asyncio.Future[memoryview] = loop.create_future()
        ident = (source, start, end)
        waiters = st.inflight.get(ident)
        if waiters is not None:
            waiters.append((fut, key))
        else:
            waiters = [(fut, key)]
            st.inflight[ident] = waiters
            st.pending.setdefault(source, {})[(start, end)] = waiters
            if not st.scheduled:
                st.scheduled = True
                loop.call_soon(self._tick, loop, st, self.turns)
        return await fut

    def _tick(self, loop: asyncio.AbstractEventLoop, st: _LoopState, left: int) -> None:
        if left > 1:
            loop.call_soon(self._tick, loop, st, left - 1)
            return
        st.scheduled = False
        pending, st.pending = st.pending, {}
        for source, reqs in pending.items():
            task = loop.create_task(self._run(st, source, reqs))
            st.tasks.add(task)
            task.add_done_callback(st.tasks.discard)

    async def _run(
        self, st: _LoopState, source: Source, reqs: dict[tuple[int, int], _Waiters]
    ) -> None:
        ranges = list(reqs)
        keys = [reqs[r][0][1] for r in ranges]
        try:
            p = _prepare(
                source,
                [r[0] for r in ranges],
                [r[1] for r in ranges],
                keys,
                self.max_gap_bytes,
                self.max_request_bytes,
            )
            self.fetch_calls += 1
            out, errors = await _read_async_results(source, p, keys)
        except BaseException as exc:
            err = (
                exc
                if isinstance(exc, Exception)
                else ChunkReadError(
                    f"reading {source.url} was interrupted: {exc!r}", url=source.url
                )
            )
            for r in ranges:
                for fut, _ in st.inflight.pop((source, r[0], r[1]), reqs[r]):
                    if not fut.done():
                        fut.set_exception(err)
                        fut.exception()  # a reader that gave up must not cause a warning
            if not isinstance(exc, Exception):
                raise
            return
        # No await from here on: readers that joined a range until now are all served.
        for i, r in enumerate(ranges):
            failed = errors[i] if errors is not None else None
            for fut, _ in st.inflight.pop((source, r[0], r[1]), reqs[r]):
                if fut.done():
                    continue
                if failed is not None:
                    fut.set_exception(failed)
                    fut.exception()
                else:
                    fut.set_result(out[i])  # type: ignore[arg-type]
