"""Real local servers for tests and benchmarks: an HTTP range server (and, re-exported from
`zarr_manifest.testing.s3_server`, an S3 server).

One idea: an HTTP/1.1 range server that can misbehave on demand -- its request parsing
(ranges, conditional requests), fault injection and request log are the server's own
behaviour, tested together, and have no other user.

`RangeServer` serves the files of one directory over HTTP/1.1 on 127.0.0.1, with byte
ranges, HEAD, ETag/Last-Modified and conditional requests, and can be told to misbehave
(latency, 5xx, connection resets, truncated bodies, ignored ranges, wrong lengths) while
it counts every request it sees.  `S3Server` runs moto's S3 on 127.0.0.1.

Both bind a random free port, run in a daemon thread, work as context managers and stop
within a bounded time.  Both are meant to be read with obstore: see
`RangeServer.http_store` and `S3Server.obstore_config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import logging
import os
import random
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web

from zarr_manifest.testing.s3_server import S3Server  # re-exported: its public home

if TYPE_CHECKING:
    from obstore.store import ClientConfig, HTTPStore, RetryConfig

__all__ = [
    "FAULT_ERROR",
    "FAULT_IGNORE_RANGE",
    "FAULT_RESET",
    "FAULT_TRUNCATE",
    "FAULT_WRONG_LENGTH",
    "Faults",
    "RangeServer",
    "RequestRecord",
    "S3Server",
    "fast_retry_config",
    "parse_range_header",
]

_log = logging.getLogger(__name__)

#: Names of the faults, as recorded in `RequestRecord.fault`.
FAULT_ERROR = "error"
FAULT_RESET = "reset"
FAULT_TRUNCATE = "truncate"
FAULT_IGNORE_RANGE = "ignore_range"
FAULT_WRONG_LENGTH = "wrong_length"

_START_TIMEOUT = 10.0


def fast_retry_config(
    max_retries: int = 2, *, backoff: float = 0.01, timeout: float = 5.0
) -> RetryConfig:
    """An obstore retry configuration for tests: few, quick retries.

    obstore's default retries 10 times with backoff from 100 ms for up to 3 minutes,
    which makes a test of a failing server slow.

    Parameters
    ----------
    max_retries
        Retries after the first attempt (0 disables retrying).
    backoff
        Initial backoff between attempts, in seconds; later ones grow to at most 4x that.
    timeout
        Give up retrying after this many seconds from the first attempt.

    Notes
    -----
    object_store draws each backoff uniformly from ``[init, previous * base)``, so ``base``
    must stay > 1: with ``base=1`` (or ``max_backoff <= init_backoff`` and base 1) the range
    is empty and obstore 0.12 panics (``pyo3_runtime.PanicException: cannot sample empty
    range``, a BaseException) on the first retry.
    """
    if backoff <= 0:
        raise ValueError(f"backoff must be > 0, got {backoff}")
    return {
        "max_retries": max_retries,
        "backoff": {
            "init_backoff": timedelta(seconds=backoff),
            "max_backoff": timedelta(seconds=4 * backoff),
            "base": 2.0,
        },
        "retry_timeout": timedelta(seconds=timeout),
    }


# --------------------------------------------------------------------------------------
# Range parsing
# --------------------------------------------------------------------------------------


class _Unsatisfiable(Exception):
    """A syntactically valid byte range that selects nothing of the file (HTTP 416)."""


def parse_range_header(value: str | None, size: int) -> tuple[int, int] | None:
    """Resolve a ``Range`` header against a file of ``size`` bytes (RFC 9110 §14).

    Parameters
    ----------
    value
        The header's value, e.g. ``"bytes=0-99"``, ``"bytes=100-"`` or ``"bytes=-50"``.
    size
        The size of the selected file in bytes.

    Returns
    -------
    tuple of int or None
        The half-open byte range ``(start, stop)`` to send with 206, or ``None`` when the
        header is absent or must be ignored (another unit, bad syntax, several ranges), in
        which case the whole file is sent with 200.

    Raises
    ------
    _Unsatisfiable
        When the range is valid but selects no byte of the file (send 416).
    """
    if value is None:
        return None
    unit, sep, spec = value.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    # Several ranges would need multipart/byteranges; obstore never sends them and RFC 9110
    # lets a server ignore Range, so the whole file is sent.
    if "," in spec:
        return None
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    stop = size if not last else min(int(last) + 1, size)
    return start, stop


# --------------------------------------------------------------------------------------
# Faults and records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """How a `RangeServer` misbehaves.  All off by default.

    Faults are drawn per request, in this order: latency (always), then reset, then
    error, then (GET with a body only) truncate, ignore_range, wrong_length.  The first
    of reset/error/truncate that fires decides the request; "first N" counts are
    consumed only by requests that reach that fault's turn.

    Attributes
    ----------
    latency
        Seconds to wait before answering each request (e.g. ``0.01``).  Requests wait
        concurrently, like network latency, not in a queue.
    error_status
        The status sent by the error fault (500, 503, ...).
    error_first
        Answer the next N requests with ``error_status``.
    error_rate
        Probability in [0, 1] that a request gets ``error_status`` (seeded RNG).
    reset_first, reset_rate
        Reset the TCP connection (RST, no response at all) for the next N requests / with
        this probability.
    truncate_first, truncate_rate
        For GETs with a non-empty body: send the headers with the full Content-Length, then
        only ``truncate_keep`` of the body, then close the connection.
    truncate_keep
        Fraction of the body sent by the truncate fault, in [0, 1).
    ignore_range
        Answer ranged GETs with 200 and the whole file, as servers without range support do.
    wrong_length
        When non-zero, GET bodies have this many bytes more (padded with the bytes after
        the range, then zeros) or fewer than asked for.  The headers stay self-consistent
        (Content-Length is the real body length) but Content-Range still names the range
        that was asked for, so only a client that checks the body length notices.
    paths
        When set, the faults (latency included) apply only to these paths (relative to
        the served directory, ``"a/b.nc"``); other paths are served normally.
    """

    latency: float = 0.0
    error_status: int = 503
    error_first: int = 0
    error_rate: float = 0.0
    reset_first: int = 0
    reset_rate: float = 0.0
    truncate_first: int = 0
    truncate_rate: float = 0.0
    truncate_keep: float = 0.5
    ignore_range: bool = False
    wrong_length: int = 0
    paths: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"Faults.latency must be >= 0, got {self.latency}")
        for name in ("error_rate", "reset_rate", "truncate_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"Faults.{name} must be in [0, 1], got {rate}")
        for name in ("error_first", "reset_first", "truncate_first"):
            if getattr(self, name) < 0:
                raise ValueError(f"Faults.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.truncate_keep < 1.0:
            raise ValueError(f"Faults.truncate_keep must be in [0, 1), got {self.truncate_keep}")
        if not 400 <= self.error_status <= 599:
            raise ValueError(f"Faults.error_status must be a 4xx/5xx code, got {self.error_status}")
        if self.paths is not None and not isinstance(self.paths, frozenset):
            # Accept any iterable of paths but keep the dataclass hashable and immutable.
            object.__setattr__(self, "paths", frozenset(self.paths))


@dataclass(frozen=True)
class RequestRecord:
    """One request seen by a `RangeServer`.

    Attributes
    ----------
    method
        ``"GET"``, ``"HEAD"``, ...
    path
        The path asked for, relative to the served directory, without a leading slash.
    range_header
        The raw ``Range`` header, or ``None``.
    range
        The half-open byte range ``(start, stop)`` the Range header resolved to against
        the file, or ``None`` (no/ignored Range header, HEAD, missing file, 416, or the
        request was failed before the file was looked at).
    status
        The status sent, or 0 when the connection was reset instead.
    fault
        The fault injected into this request (one of the ``FAULT_*`` names), or ``None``.
    body_bytes
        How many body bytes were actually sent.
    time
        ``time.monotonic()`` when the request arrived.
    """

    method: str
    path: str
    range_header: str | None
    range: tuple[int, int] | None
    status: int
    fault: str | None
    body_bytes: int
    time: float


# --------------------------------------------------------------------------------------
# A thread running an asyncio loop
# --------------------------------------------------------------------------------------


class _LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Cancel what is left (handlers a timed-out cleanup gave up on) and give closing
        # transports a turn, so the loop closes without "task destroyed" warnings.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def call(self, coro: Any, timeout: float) -> Any:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


# --------------------------------------------------------------------------------------
# RangeServer
# --------------------------------------------------------------------------------------


class RangeServer:
    """A static HTTP file server with byte ranges, fault injection and request counters.

    Parameters
    ----------
    root
        The directory whose files are served; ``GET /a/b.bin`` reads ``root/a/b.bin``.
        Files may be added, changed or removed while the server runs (ETag and
        Last-Modified follow the file's size and mtime).
    faults
        The faults to start with (default: none).  Change them with `set_faults`.
    seed
        Seed of the RNG that draws the ``*_rate`` faults.
    host
        Address to bind; only loopback addresses are sensible here.
    port
        Port to bind; 0 (the default) picks a free one.
    shutdown_timeout
        Seconds `stop` lets in-flight requests finish before cancelling them; `stop` of a
        server with hung requests takes about twice this.

    Examples
    --------
    >>> with RangeServer(tmp_dir) as srv:  # doctest: +SKIP
    ...     store = srv.http_store()
    ...     obstore.get_range(store, "data.bin", start=0, end=10)
    ...     srv.set_faults(error_first=2, error_status=503)
    ...     srv.ranges("data.bin")
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        faults: Faults | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 1.0,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"RangeServer root is not a directory: {self.root}")
        self.host = host
        self._port_wanted = port
        self.shutdown_timeout = shutdown_timeout
        self._lock = threading.Lock()
        self._faults = Faults()
        self._remaining: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._records: list[RequestRecord] = []
        self._redirects: dict[str, tuple[int, str]] = {}
        self._in_flight = 0
        self._set_faults_locked(faults or Faults())
        self._loop_thread: _LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Bind the port and start serving; returns ``self``.  Idempotent."""
        if self._loop_thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port_wanted))
            sock.listen(128)
            self._port = sock.getsockname()[1]
            loop_thread = _LoopThread(name=f"RangeServer:{self._port}")
            try:
                loop_thread.call(self._astart(sock), timeout=_START_TIMEOUT)
            except BaseException:
                loop_thread.stop(timeout=_START_TIMEOUT)
                raise
        except BaseException:
            sock.close()
            self._port = None
            raise
        self._loop_thread = loop_thread
        return self

    async def _astart(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and free the port, within about ``timeout`` seconds.  Idempotent."""
        loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is None:
            return
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                loop_thread.call(runner.cleanup(), timeout=timeout)
            except Exception:  # a stuck cleanup must not keep the test session from ending
                _log.warning("RangeServer on port %s did not shut down cleanly", self._port)
        loop_thread.stop(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._loop_thread is not None and self._loop_thread.alive

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None or self._loop_thread is None:
            raise RuntimeError("RangeServer is not running; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    def url_for(self, path: str) -> str:
        """The URL of ``path`` (relative to the served directory), percent-encoded."""
        return f"{self.url}/{urllib.parse.quote(path.lstrip('/'))}"

    def http_store(
        self,
        prefix: str = "",
        *,
        client_options: ClientConfig | None = None,
        retry_config: RetryConfig | None = None,
    ) -> HTTPStore:
        """An obstore `HTTPStore` on this server (``allow_http`` is set for you).

        Parameters
        ----------
        prefix
            A sub-directory to root the store at.
        client_options
            Extra obstore client options (``timeout``, ``connect_timeout``, ...).
        retry_config
            obstore retry configuration; obstore's default retries 10 times over up to
            3 minutes, so tests of failures should pass a small one.
        """
        from obstore.store import HTTPStore

        options: ClientConfig = {**(client_options or {}), "allow_http": True}
        url = self.url + "/" + urllib.parse.quote(prefix.strip("/"))
        return HTTPStore.from_url(url, client_options=options, retry_config=retry_config)

    # ---- faults ---------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The faults in force (as last set; "first N" counts shown as set)."""
        with self._lock:
            return self._faults

    def faults_remaining(self) -> dict[str, int]:
        """How many of each "first N" fault are still to be injected."""
        with self._lock:
            return dict(self._remaining)

    def set_faults(
        self, faults: Faults | None = None, *, seed: int | None = None, **changes: Any
    ) -> Faults:
        """Change the faults, thread-safely, while the server runs.

        Parameters
        ----------
        faults
            Replace all faults by these; when omitted, ``changes`` apply to the current ones.
        seed
            Reseed the RNG of the ``*_rate`` faults.
        **changes
            `Faults` fields to change, e.g. ``set_faults(error_first=2, error_status=500)``.
            Every "first N" count is re-armed from the resulting `Faults`.

        Returns
        -------
        Faults
            The faults now in force.
        """
        with self._lock:
            new = dataclasses.replace(faults or self._faults, **changes)
            self._set_faults_locked(new)
            if seed is not None:
                self._rng.seed(seed)
            return new

    def set_redirect(self, path: str, location: str | None, status: int = 302) -> None:
        """Answer every request for ``path`` with a redirect to ``location`` (absolute or
        relative, sent as is in ``Location``); ``location=None`` removes it.

        Raises
        ------
        ValueError
            ``status`` is not a redirect (301, 302, 303, 307, 308).
        """
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"redirect status must be 301/302/303/307/308, got {status}")
        with self._lock:
            if location is None:
                self._redirects.pop(path.lstrip("/"), None)
            else:
                self._redirects[path.lstrip("/")] = (status, location)

    def clear_faults(self) -> None:
        """Turn every fault off."""
        self.set_faults(Faults())

    def _set_faults_locked(self, faults: Faults) -> None:
        self._faults = faults
        self._remaining = {
            FAULT_RESET: faults.reset_first,
            FAULT_ERROR: faults.error_first,
            FAULT_TRUNCATE: faults.truncate_first,
        }

    def _draw(self, kind: str, first: int, rate: float) -> bool:
        """Whether fault ``kind`` fires now; consumes a "first N" count.  Lock held.

        ``first``/``rate`` come from the faults that apply to the request (none for paths
        outside `Faults.paths`), so such requests consume nothing.
        """
        if first > 0 and self._remaining[kind] > 0:
            self._remaining[kind] -= 1
            return True
        return rate > 0.0 and self._rng.random() < rate

    # ---- counters -------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request seen since the last `reset_counters`, in arrival order."""
        with self._lock:
            return list(self._records)

    def request_count(self, path: str | None = None, method: str | None = None) -> int:
        """How many requests were seen, optionally only for ``path`` and/or ``method``."""
        return sum(1 for r in self._select(path, method))

    def counts_by_path(self, method: str | None = None) -> Counter[str]:
        """Number of requests per path."""
        return Counter(r.path for r in self._select(None, method))

    def ranges(self, path: str | None = None) -> list[tuple[int, int]]:
        """The resolved ``(start, stop)`` byte ranges of ranged GETs, in arrival order."""
        return [r.range for r in self._select(path, "GET") if r.range is not None]

    def bytes_sent(self, path: str | None = None) -> int:
        """Total body bytes sent."""
        return sum(r.body_bytes for r in self._select(path, None))

    @property
    def in_flight(self) -> int:
        """How many requests are being handled right now."""
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is in flight (e.g. ones a client gave up on).

        Returns
        -------
        bool
            True when idle, False when ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout
        while self.in_flight:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def reset_counters(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self._records.clear()

    def _select(self, path: str | None, method: str | None) -> Iterator[RequestRecord]:
        path = None if path is None else path.lstrip("/")
        for r in self.requests:
            if (path is None or r.path == path) and (method is None or r.method == method):
                yield r

    # ---- request handling -----------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        rel = request.match_info["path"]
        range_header = request.headers.get("Range")
        with self._lock:
            faults = self._faults
            applies = faults.paths is None or rel in faults.paths
            self._in_flight += 1
        rec: dict[str, Any] = {
            "method": request.method,
            "path": rel,
            "range_header": range_header,
            "range": None,
            "status": 0,
            "fault": None,
            "body_bytes": 0,
            "time": arrived,
        }
        try:
            return await self._respond(request, rel, faults if applies else Faults(), rec)
        finally:
            with self._lock:
                self._records.append(RequestRecord(**rec))
                self._in_flight -= 1

    async def _respond(
        self, request: web.Request, rel: str, faults: Faults, rec: dict[str, Any]
    ) -> web.StreamResponse:
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        with self._lock:
            reset = self._draw(FAULT_RESET, faults.reset_first, faults.reset_rate)
            error = not reset and self._draw(FAULT_ERROR, faults.error_first, faults.error_rate)
        if reset:
            rec["fault"] = FAULT_RESET
            return _reset_connection(request)
        if error:
            rec["fault"] = FAULT_ERROR
            return self._plain(rec, faults.error_status, f"injected fault for /{rel}\n")

        with self._lock:
            redirect = self._redirects.get(rel)
        if redirect is not None:
            rec["status"] = redirect[0]
            return web.Response(status=redirect[0], headers={"Location": redirect[1]})
        if request.method not in ("GET", "HEAD"):
            resp = self._plain(rec, 405, "only GET and HEAD are served\n")
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        target = self._resolve(rel)
        if target is None:
            return self._plain(rec, 404, f"not found: /{rel}\n")
        try:
            st = target.stat()
        except OSError:
            return self._plain(rec, 404, f"not found: /{rel}\n")
        size = st.st_size
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        mtime = int(st.st_mtime)
        headers = {
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        precondition = _check_preconditions(request, etag, mtime)
        if precondition is not None:
            rec["status"] = precondition
            return web.Response(status=precondition, headers=headers)

        if request.method == "HEAD":
            rec["status"] = 200
            # aiohttp keeps an explicit Content-Length on HEAD responses without a body.
            headers["Content-Length"] = str(size)
            return web.Response(status=200, headers=headers)

        rng: tuple[int, int] | None = None
        if range_applies(request, etag, mtime):
            try:
                rng = parse_range_header(request.headers.get("Range"), size)
            except _Unsatisfiable:
                rec["status"] = 416
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
        rec["range"] = rng
        if rng is not None and faults.ignore_range:
            rec["fault"] = FAULT_IGNORE_RANGE
            rng = None
        start, stop = rng if rng is not None else (0, size)
        status = 206 if rng is not None else 200
        if rng is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"

        n_body = stop - start
        if faults.wrong_length:
            rec["fault"] = FAULT_WRONG_LENGTH
            n_body = max(0, n_body + faults.wrong_length)
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, _read_range, target, start, n_body)
        with self._lock:
            truncate = len(body) > 0 and self._draw(
                FAULT_TRUNCATE, faults.truncate_first, faults.truncate_rate
            )
        rec["status"] = status
        if truncate:
            rec["fault"] = FAULT_TRUNCATE
            keep = int(len(body) * faults.truncate_keep)
            rec["body_bytes"] = keep
            return await _send_truncated(request, status, headers, body, keep)
        rec["body_bytes"] = len(body)
        return web.Response(status=status, headers=headers, body=body)

    @staticmethod
    def _plain(rec: dict[str, Any], status: int, text: str) -> web.Response:
        rec["status"] = status
        rec["body_bytes"] = len(text)
        return web.Response(status=status, text=text)

    def _resolve(self, rel: str) -> Path | None:
        """The file under ``root`` that ``rel`` names, or None (missing, dir, escapes root)."""
        if not rel or "\x00" in rel:
            return None
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target


def range_applies(request: web.Request, etag: str, mtime: int) -> bool:
    """Whether a Range header may be honoured given ``If-Range`` (RFC 9110 §13.1.5)."""
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith('"'):
        return if_range == etag
    parsed = _parse_http_date(if_range)
    return parsed is not None and parsed == mtime


def _check_preconditions(request: web.Request, etag: str, mtime: int) -> int | None:
    """The status a failed precondition demands (412 or 304), or None (RFC 9110 §13.2.2)."""
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        if not _etag_matches(if_match, etag, weak=False):
            return 412
    else:
        since = _parse_http_date(request.headers.get("If-Unmodified-Since"))
        if since is not None and mtime > since:
            return 412
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag, weak=True):
            return 304 if request.method in ("GET", "HEAD") else 412
    elif request.method in ("GET", "HEAD"):
        since = _parse_http_date(request.headers.get("If-Modified-Since"))
        if since is not None and mtime <= since:
            return 304
    return None


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    header = header.strip()
    if header == "*":
        return True
    for candidate in (c.strip() for c in header.split(",")):
        if candidate.startswith("W/"):
            if not weak:
                continue
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _parse_http_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _read_range(path: Path, start: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``start``, zero-padded past the end of the file."""
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), length, start) if length else b""
    return data + b"\x00" * (length - len(data))


def _reset_connection(request: web.Request) -> web.StreamResponse:
    """Abort the request's TCP connection with an RST (SO_LINGER 0), sending nothing.

    Returns a response for aiohttp to try to send: writing it to the aborted transport
    raises ConnectionError, which aiohttp takes quietly as a client disconnect.
    """
    transport = request.transport
    if transport is not None:
        _abort_with_rst(transport)
    return web.Response(status=500)


def _abort_with_rst(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _send_truncated(
    request: web.Request, status: int, headers: dict[str, str], body: bytes, keep: int
) -> web.StreamResponse:
    """Promise ``len(body)`` bytes, send only ``keep`` of them, then close the connection."""
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    if keep:
        await resp.write(body[:keep])
    transport = request.transport
    if transport is not None:
        # close() (not abort()) flushes what was written, then sends FIN mid-body.
        transport.close()
    # Already prepared: aiohttp's write_eof on the closing transport sends nothing more.
    return resp
