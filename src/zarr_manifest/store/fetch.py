"""Coalesced, length-checked byte-range reads from a `Source` (sync, async, batched).

Three layers:

- `plan_coalesced` -- numpy-vectorized planning: sort ranges, merge neighbours whose gap is
  at most ``max_gap_bytes`` while the merged request stays within ``max_request_bytes``.
- `read_ranges_sync` / `read_ranges_async` -- one fetch call for the merged ranges of one
  source (``obstore.get_ranges[_async]``, or ``os.pread`` on a cached file descriptor for
  local files), sliced back per input in input order as zero-copy ``memoryview`` objects.
- `RangeBatcher` -- many concurrent single-range ``await batcher.read(...)`` calls made in
  the same event-loop turn are merged into coalesced fetches per source.

Every merged fetch is checked: a source that returns fewer or more bytes than asked (short
file, truncated body, an HTTP server ignoring ``Range``) raises `ShortReadError`, never
short data.  Other failures raise `ChunkReadError`.  Both name the key(s), URL and byte
range, with the underlying error chained.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import obstore

from zarr_manifest.errors import ChunkReadError, ManifestError, ShortReadError, ZarrManifestError
from zarr_manifest.store.sources import Source

__all__ = [
    "read_range_sync",
    "DEFAULT_LOCAL_MAX_GAP_BYTES",
    "DEFAULT_MAX_GAP_BYTES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "LOCAL_INLINE_MAX_BYTES",
    "CoalescedPlan",
    "RangeBatcher",
    "plan_coalesced",
    "read_ranges_async",
    "read_ranges_sync",
]

#: Remote sources: a request costs a round trip, so reading up to 64 KiB of unused bytes
#: between two ranges is cheaper than a second request.
DEFAULT_MAX_GAP_BYTES = 64 * 1024
#: Local files: a ``pread`` costs about a microsecond, copying 64 KiB several, so only
#: small gaps are worth bridging.
DEFAULT_LOCAL_MAX_GAP_BYTES = 4 * 1024
#: Upper bound on one merged request (a single range larger than this is read alone).
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: In async reads of local files, batches up to this many bytes are read inline on the
#: event loop (a page-cache ``pread`` is far cheaper than a hop to a worker thread);
#: larger ones go to a thread so the loop is not blocked by disk I/O.
LOCAL_INLINE_MAX_BYTES = 1024 * 1024

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
        cuts = np.flatnonzero(clean)  # where a piece may start
        for r in too_long.tolist():
            i, stop = int(heads[r]), int(tails[r])
            while True:
                # First index whose inclusion would make the piece too long.
                j = i + int(np.searchsorted(reach[i:stop], ss[i] + max_request_bytes, side="right"))
                if j >= stop:
                    break
                k = int(np.searchsorted(cuts, j, side="right")) - 1
                c = int(cuts[k])
                if c <= i:  # no cut in (i, j]: take the first one after i, if any
                    k = int(np.searchsorted(cuts, i, side="right"))
                    if k >= cuts.size or cuts[k] >= stop:
                        break
                    c = int(cuts[k])
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
    __slots__ = ("dev", "evicted", "fd", "ino", "users")

    def __init__(self, fd: int, dev: int, ino: int) -> None:
        self.fd = fd
        self.dev = dev
        self.ino = ino
        self.users = 0
        self.evicted = False


class _FdCache:
    """Open file descriptors of local sources, LRU-bounded and shared by all threads.

    A descriptor is reused while the path still names the same file (device and inode, one
    ``stat`` per batch), so a file replaced on disk is reopened.  Eviction closes a
    descriptor only once no reader uses it.
    """

    def __init__(self, max_open: int = 128) -> None:
        self.max_open = max_open
        self._lock = threading.Lock()
        self._files: OrderedDict[str, _OpenFile] = OrderedDict()

    def acquire(self, path: str) -> _OpenFile:
        st = os.stat(path)
        with self._lock:
            f = self._files.get(path)
            if f is not None and f.dev == st.st_dev and f.ino == st.st_ino:
                self._files.move_to_end(path)
                f.users += 1
                return f
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        fst = os.fstat(fd)
        new = _OpenFile(fd, fst.st_dev, fst.st_ino)
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
        f = _FD_CACHE.acquire(source.local_path)
    except OSError as exc:
        return [exc] * len(ms)
    try:
        out: list[Any] = []
        for a, b in zip(ms, me, strict=True):
            if b == a:
                out.append(b"")
                continue
            try:
                out.append(_pread_full(f.fd, a, b - a))
            except OSError as exc:
                out.append(exc)
        return out
    finally:
        _FD_CACHE.release(f)


# -- remote sources: obstore -------------------------------------------------------------


def _is_range_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(m in text for m in _RANGE_SPECIFIC_MARKERS)


def _fetch_remote_sync(source: Source, ms: list[int], me: list[int]) -> list[Any]:
    idx = [i for i in range(len(ms)) if me[i] > ms[i]]
    out: list[Any] = [b""] * len(ms)
    if not idx:
        return out
    qs = [ms[i] for i in idx]
    qe = [me[i] for i in idx]
    try:
        got = obstore.get_ranges(source.store, source.path, starts=qs, ends=qe, coalesce=0)
    except Exception as exc:
        if len(idx) == 1 or not _is_range_error(exc):
            for i in idx:
                out[i] = exc
            return out
        # A range-specific failure: find out which merged ranges fail.
        for i in idx:
            try:
                out[i] = obstore.get_range(source.store, source.path, start=ms[i], end=me[i])
            except Exception as one:
                out[i] = one
        return out
    for i, buf in zip(idx, got, strict=True):
        out[i] = buf
    return out


async def _fetch_remote_async(source: Source, ms: list[int], me: list[int]) -> list[Any]:
    idx = [i for i in range(len(ms)) if me[i] > ms[i]]
    out: list[Any] = [b""] * len(ms)
    if not idx:
        return out
    qs = [ms[i] for i in idx]
    qe = [me[i] for i in idx]
    try:
        got = await obstore.get_ranges_async(
            source.store, source.path, starts=qs, ends=qe, coalesce=0
        )
    except Exception as exc:
        if len(idx) == 1 or not _is_range_error(exc):
            for i in idx:
                out[i] = exc
            return out
        singles = await asyncio.gather(
            *(
                obstore.get_range_async(source.store, source.path, start=ms[i], end=me[i])
                for i in idx
            ),
            return_exceptions=True,
        )
        for i, res in zip(idx, singles, strict=True):
            out[i] = res
        return out
    for i, buf in zip(idx, got, strict=True):
        out[i] = buf
    return out


# -- slicing results back, with checks ---------------------------------------------------


def _keys_text(keys: list[str | None]) -> str:
    named = [k for k in keys if k is not None]
    if not named:
        return ""
    shown = ", ".join(repr(k) for k in named[:_MAX_KEYS_IN_MESSAGE])
    more = len(named) - _MAX_KEYS_IN_MESSAGE
    return f" for key(s) {shown}" + (f" (+{more} more)" if more > 0 else "")


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
        f"{label}: {what}: {type(cause).__name__}: {cause}",
        key=key,
        url=source.url,
        start=s,
        end=e,
    )
    err.__cause__ = cause
    return err


def _distribute(
    source: Source,
    s: np.ndarray,
    e: np.ndarray,
    keys: Sequence[str | None] | None,
    plan: CoalescedPlan,
    results: list[Any],
) -> tuple[list[memoryview | None], list[ChunkReadError | None] | None]:
    """Slice merged buffers back per input; per-input errors where a merged read failed."""
    ms = plan.starts
    expected = (plan.ends - ms).tolist()
    views: list[Any] = []
    ok = True
    for res, want in zip(results, expected, strict=True):
        if isinstance(res, BaseException):
            views.append(res)
            ok = False
            continue
        mv = memoryview(res)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        if mv.nbytes != want:
            ok = False
        views.append(mv)
    g = plan.group
    rel_s = (s - ms[g]).tolist()
    rel_e = (e - ms[g]).tolist()
    gl = g.tolist()
    if ok:  # the hot path: every merged read came back whole
        return [views[gi][a:b] for gi, a, b in zip(gl, rel_s, rel_e, strict=True)], None

    out: list[memoryview | None] = []
    errors: list[ChunkReadError | None] = []
    for i, (gi, a, b) in enumerate(zip(gl, rel_s, rel_e, strict=True)):
        v = views[gi]
        key = keys[i] if keys is not None else None
        req = (int(ms[gi]), int(plan.ends[gi]))
        if isinstance(v, BaseException):
            out.append(None)
            errors.append(_range_error(source, v, int(s[i]), int(e[i]), key, req=req))
        elif v.nbytes == expected[gi] or (v.nbytes < expected[gi] and b <= v.nbytes):
            # A merged read cut short at end of file still holds the inputs before the cut.
            out.append(v[a:b])
            errors.append(None)
        else:
            out.append(None)
            errors.append(
                _range_error(source, None, int(s[i]), int(e[i]), key, got=v.nbytes, req=req)
            )
    return out, errors


def _raise_first(errors: list[ChunkReadError | None], keys: Sequence[str | None] | None) -> None:
    failed = [i for i, err in enumerate(errors) if err is not None]
    first = errors[failed[0]]
    assert first is not None
    if len(failed) > 1:
        others = _keys_text([keys[i] for i in failed[1:]] if keys is not None else [])
        first.args = (f"{first.args[0]} (and {len(failed) - 1} other range(s) failed{others})",)
    raise first


def _prepare(
    source: Source,
    starts: npt.ArrayLike,
    ends: npt.ArrayLike,
    keys: Sequence[str | None] | None,
    max_gap_bytes: int | None,
    max_request_bytes: int,
) -> tuple[np.ndarray, np.ndarray, CoalescedPlan]:
    s, e = _as_ranges(starts, ends)
    if keys is not None and len(keys) != s.size:
        raise ManifestError(f"{len(keys)} keys for {s.size} byte ranges")
    _check_ranges(s, e, keys)
    if max_gap_bytes is None:
        local = source.local_path is not None
        max_gap_bytes = DEFAULT_LOCAL_MAX_GAP_BYTES if local else DEFAULT_MAX_GAP_BYTES
    plan = plan_coalesced(s, e, max_gap_bytes=max_gap_bytes, max_request_bytes=max_request_bytes)
    return s, e, plan


def _wrap_unexpected(
    source: Source, exc: Exception, s: np.ndarray, e: np.ndarray, keys: Any
) -> ChunkReadError:
    lo = int(s.min()) if s.size else 0
    hi = int(e.max()) if e.size else 0
    names = _keys_text(list(keys) if keys is not None else [])
    err = ChunkReadError(
        f"reading failed: bytes [{lo}, {hi}) of {source.url}{names}: {type(exc).__name__}: {exc}",
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
        Byte ranges, 1-D integer arrays of equal length (any order, may overlap or repeat).
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
    s, e, plan = _prepare(source, starts, ends, keys, max_gap_bytes, max_request_bytes)
    ms = plan.starts.tolist()
    me = plan.ends.tolist()
    try:
        if source.local_path is not None:
            results = _fetch_local(source, ms, me)
        else:
            results = _fetch_remote_sync(source, ms, me)
    except ZarrManifestError:
        raise
    except Exception as exc:
        raise _wrap_unexpected(source, exc, s, e, keys) from exc
    out, errors = _distribute(source, s, e, keys, plan, results)
    if errors is not None:
        _raise_first(errors, keys)
    return out  # type: ignore[return-value]


def read_range_sync(source: Source, start: int, end: int, *, key: str | None = None) -> Any:
    """Read one byte range ``[start, end)`` of a source, checked; no planning overhead.

    The per-chunk path of zarr's synchronous pipeline: one ``pread`` (local) or one
    ``obstore.get_range`` (remote).  Errors as in `read_ranges_sync`.
    """
    if start < 0 or end < start:
        raise ManifestError(f"invalid byte range [{start}, {end}) of {source.url}" + _keys_text([key]))
    try:
        if source.local_path is not None:
            result = _fetch_local(source, [start], [end])[0]
        else:
            result = _fetch_remote_sync(source, [start], [end])[0]
    except ZarrManifestError:
        raise
    except Exception as exc:
        raise _range_error(source, exc, start, end, key, req=(start, end)) from exc
    if isinstance(result, BaseException):
        raise _range_error(source, result, start, end, key, req=(start, end)) from result
    if len(result) != end - start:
        raise _range_error(source, None, start, end, key, req=(start, end), got=len(result))
    return result


async def _read_async_results(
    source: Source,
    s: np.ndarray,
    e: np.ndarray,
    keys: Sequence[str | None] | None,
    plan: CoalescedPlan,
) -> tuple[list[memoryview | None], list[ChunkReadError | None] | None]:
    ms = plan.starts.tolist()
    me = plan.ends.tolist()
    try:
        if source.local_path is not None:
            total = int((plan.ends - plan.starts).sum())
            if total <= LOCAL_INLINE_MAX_BYTES:
                results = _fetch_local(source, ms, me)
            else:
                results = await asyncio.to_thread(_fetch_local, source, ms, me)
        else:
            results = await _fetch_remote_async(source, ms, me)
    except ZarrManifestError:
        raise
    except Exception as exc:
        raise _wrap_unexpected(source, exc, s, e, keys) from exc
    return _distribute(source, s, e, keys, plan, results)


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
    s, e, plan = _prepare(source, starts, ends, keys, max_gap_bytes, max_request_bytes)
    out, errors = await _read_async_results(source, s, e, keys, plan)
    if errors is not None:
        _raise_first(errors, keys)
    return out  # type: ignore[return-value]


# -- batching concurrent single-range reads ---------------------------------------------


class _LoopState:
    """A batcher's state on one event loop (only touched from that loop's thread)."""

    __slots__ = ("inflight", "pending", "scheduled", "tasks")

    def __init__(self) -> None:
        # Requests not yet sent, per source: (start, end) -> (future, key).
        self.pending: dict[Source, dict[tuple[int, int], tuple[asyncio.Future[Any], Any]]] = {}
        # Every unfinished request, to share identical ranges: (source, start, end) -> future.
        self.inflight: dict[tuple[Source, int, int], asyncio.Future[Any]] = {}
        self.scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()


class RangeBatcher:
    """Merge concurrent single-range reads into coalesced fetches.

    ``await batcher.read(source, start, end, key=...)`` queues the range; once the event
    loop has run ``turns`` more iterations (by default: every coroutine that was ready in
    the same turn has had its go), all queued ranges of each source are read with one
    `read_ranges_async` call.  Identical ranges in flight are read once and shared.  A
    failure is reported only to the reads it concerns.

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
        #: Number of `read_ranges_async` calls made (for tests and diagnostics).
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
            where = f" for key {key!r}" if key is not None else ""
            raise ManifestError(f"invalid byte range [{start}, {end}){where}", key=key)
        if end == start:
            return memoryview(b"")
        loop = asyncio.get_running_loop()
        st = self._state(loop)
        ident = (source, start, end)
        fut = st.inflight.get(ident)
        if fut is None:
            fut = loop.create_future()
            st.inflight[ident] = fut
            st.pending.setdefault(source, {})[(start, end)] = (fut, key)
            if not st.scheduled:
                st.scheduled = True
                loop.call_soon(self._tick, loop, st, self.turns)
        # shield: one caller giving up must not cancel the read others share.
        return await asyncio.shield(fut)

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
        self,
        st: _LoopState,
        source: Source,
        reqs: dict[tuple[int, int], tuple[asyncio.Future[Any], Any]],
    ) -> None:
        ranges = list(reqs)
        futs = [reqs[r][0] for r in ranges]
        keys = [reqs[r][1] for r in ranges]
        try:
            s = np.fromiter((r[0] for r in ranges), dtype=np.int64, count=len(ranges))
            e = np.fromiter((r[1] for r in ranges), dtype=np.int64, count=len(ranges))
            gap = self.max_gap_bytes
            if gap is None:
                local = source.local_path is not None
                gap = DEFAULT_LOCAL_MAX_GAP_BYTES if local else DEFAULT_MAX_GAP_BYTES
            plan = plan_coalesced(s, e, max_gap_bytes=gap, max_request_bytes=self.max_request_bytes)
            self.fetch_calls += 1
            out, errors = await _read_async_results(source, s, e, keys, plan)
            for i, fut in enumerate(futs):
                if fut.done():
                    continue
                err = errors[i] if errors is not None else None
                if err is not None:
                    fut.set_exception(err)
                    fut.exception()  # a waiter that gave up must not cause a warning
                else:
                    fut.set_result(out[i])
        except BaseException as exc:
            err = (
                exc
                if isinstance(exc, Exception)
                else ChunkReadError(
                    f"reading {source.url} was interrupted: {exc!r}", url=source.url
                )
            )
            for fut in futs:
                if not fut.done():
                    fut.set_exception(err)
                    fut.exception()
            if not isinstance(exc, Exception):
                raise
        finally:
            for r in ranges:
                st.inflight.pop((source, r[0], r[1]), None)
