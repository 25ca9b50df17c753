"""Reading http(s) sources with a client that never follows a redirect on its own.

obstore (reqwest) follows HTTP redirects and offers no option to stop it, so an allowed
server with an open redirect (``/go?to=...``) would make the store read from a host that
was never allowed.  http(s) sources are therefore read here, with urllib3 and redirects
turned off: a 301/302/303/307/308 answer is followed only when its ``Location``, resolved
against the request URL, is itself allowed by the `SourceRegistry` (checked again at every
hop, at most `MAX_REDIRECTS` hops), and it is then read with the client configured for
that prefix.

Retries, timeouts and the range checks mirror obstore's: connection errors, timeouts,
truncated bodies, 429 and 5xx are retried with exponential backoff up to ``max_retries``
times within ``retry_timeout``; a ranged GET must come back as 206 with the asked-for
``Content-Range`` (else the error text carries the markers the fetch module reports as
`ShortReadError`).  When the source's ETag was verified, GETs carry ``If-Match`` and a
412 or another ``ETag`` in the answer is a `StaleReferenceError`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3

from zarr_manifest.errors import SourceNotAllowedError, StaleReferenceError

__all__ = ["MAX_REDIRECTS", "HttpClient", "HttpObject", "http_executor"]

#: Redirect hops followed at most (each one re-checked against the registry).
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# obstore's defaults (object_store ClientOptions / RetryConfig).
_DEFAULT_TIMEOUT = 30.0
_DEFAULT_CONNECT_TIMEOUT = 5.0
_DEFAULT_RETRIES = 10
_DEFAULT_RETRY_TIMEOUT = 180.0
_DEFAULT_BACKOFF = (0.1, 15.0, 2.0)  # init, max, base
# client_options that only tune connection pooling or the HTTP version: safe to ignore.
_IGNORED_OPTIONS = frozenset(
    {
        "http1_only",
        "http2_only",
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
        "http2_keep_alive_while_idle",
        "http2_max_frame_size",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "content_type_map",
        "default_content_type",
    }
)
_DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)")
_UNITS = {
    "ns": 1e-9,
    "nsec": 1e-9,
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}


def _seconds(value: Any, name: str) -> float:
    """A duration as obstore takes it (``timedelta``, number, or ``"30s"``) in seconds."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        total = 0.0
        pos = 0
        while pos < len(text):
            m = _DURATION_RE.match(text, pos)
            if m is None or m.end() == pos or m.group(2) not in _UNITS:
                raise ValueError(f"client option {name}={value!r} is not a duration")
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos == 0:
            raise ValueError(f"client option {name}={value!r} is not a duration")
        return total
    raise ValueError(f"client option {name}={value!r} is not a duration")


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass(frozen=True, slots=True)
class _Settings:
    timeout: float
    connect_timeout: float
    allow_http: bool
    verify_tls: bool
    headers: tuple[tuple[str, str], ...]
    proxy_url: str | None
    max_retries: int
    init_backoff: float
    max_backoff: float
    backoff_base: float
    retry_timeout: float


def _settings(
    client_options: Mapping[str, Any] | None, retry_config: Mapping[str, Any] | None
) -> _Settings:
    opts = dict(client_options or {})
    headers: dict[str, str] = {}
    for k, v in dict(opts.pop("default_headers", None) or {}).items():
        headers[str(k)] = v.decode() if isinstance(v, bytes) else str(v)
    if "user_agent" in opts:
        headers["User-Agent"] = str(opts.pop("user_agent"))
    timeout = _seconds(opts.pop("timeout", _DEFAULT_TIMEOUT), "timeout")
    connect = _seconds(opts.pop("connect_timeout", _DEFAULT_CONNECT_TIMEOUT), "connect_timeout")
    allow_http = _flag(opts.pop("allow_http", False))
    verify_tls = not _flag(opts.pop("allow_invalid_certificates", False))
    proxy_url = opts.pop("proxy_url", None)
    unknown = sorted(k for k in opts if k not in _IGNORED_OPTIONS)
    if unknown:
        # Options such as proxy certificates or exclusions change where and how requests
        # go; silently dropping them could send requests somewhere the caller did not mean.
        raise ValueError(
            f"client option(s) {', '.join(unknown)} are not supported for http(s) sources "
            "(read without following redirects; see the spec, section 8)"
        )
    retry = dict(retry_config or {})
    backoff = dict(retry.get("backoff") or {})
    init, most, base = _DEFAULT_BACKOFF
    return _Settings(
        timeout=timeout,
        connect_timeout=connect,
        allow_http=allow_http,
        verify_tls=verify_tls,
        headers=tuple(headers.items()),
        proxy_url=None if proxy_url is None else str(proxy_url),
        max_retries=int(retry.get("max_retries", _DEFAULT_RETRIES)),
        init_backoff=_seconds(backoff.get("init_backoff", init), "init_backoff"),
        max_backoff=_seconds(backoff.get("max_backoff", most), "max_backoff"),
        backoff_base=float(backoff.get("base", base)),
        retry_timeout=_seconds(retry.get("retry_timeout", _DEFAULT_RETRY_TIMEOUT), "retry_timeout"),
    )


class HttpClient:
    """A urllib3 connection pool with obstore's retry and timeout settings, no redirects.

    Parameters
    ----------
    client_options, retry_config
        obstore ``ClientConfig`` / ``RetryConfig`` (the ones the prefix was registered
        with).  Options that would change where requests go and that this client does not
        implement are refused with ``ValueError``.

    Notes
    -----
    Picklable (only the settings travel); the pool is rebuilt in a forked child.
    """

    def __init__(
        self,
        client_options: Mapping[str, Any] | None = None,
        retry_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._options = (dict(client_options or {}), dict(retry_config or {}))
        self.settings = _settings(client_options, retry_config)
        self._lock = threading.Lock()
        self._pool: urllib3.PoolManager | None = None
        self._pid = 0

    def __getstate__(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._options

    def __setstate__(self, state: tuple[dict[str, Any], dict[str, Any]]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def _manager(self) -> urllib3.PoolManager:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                s = self.settings
                kwargs: dict[str, Any] = {
                    "num_pools": 64,
                    "maxsize": 64,
                    "block": False,
                    "retries": False,
                    "timeout": urllib3.Timeout(total=s.timeout, connect=s.connect_timeout),
                    "headers": dict(s.headers),
                    "cert_reqs": "CERT_REQUIRED" if s.verify_tls else "CERT_NONE",
                }
                self._pool = (
                    urllib3.ProxyManager(s.proxy_url, **kwargs)
                    if s.proxy_url
                    else urllib3.PoolManager(**kwargs)
                )
                self._pid = os.getpid()
            return self._pool

    def request(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> urllib3.BaseHTTPResponse:
        """One request, retried as obstore retries; redirects are returned, not followed.

        Raises
        ------
        OSError
            The last transport error once retries are exhausted, or an ``http://`` URL
            without ``allow_http``.
        """
        s = self.settings
        if url.startswith("http://") and not s.allow_http:
            raise PermissionError(f"{url}: plain http is not allowed (client option allow_http)")
        first = time.monotonic()
        backoff = s.init_backoff
        attempt = 0
        while True:
            failure: BaseException | None = None
            resp: urllib3.BaseHTTPResponse | None = None
            try:
                resp = self._manager().request(
                    method, url, headers=dict(headers), redirect=False, preload_content=True
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                failure = exc
            retryable = failure is not None or (resp is not None and resp.status in _RETRY_STATUS)
            elapsed = time.monotonic() - first
            if not retryable or attempt >= s.max_retries or elapsed + backoff > s.retry_timeout:
                if failure is not None:
                    raise OSError(
                        f"{method} {url} failed after {attempt + 1} attempt(s): "
                        f"{type(failure).__name__}: {failure}"
                    ) from failure
                assert resp is not None
                return resp
            time.sleep(backoff)
            attempt += 1
            backoff = min(backoff * s.backoff_base, s.max_backoff)


@dataclass(frozen=True, slots=True, eq=False)
class HttpObject:
    """How to read one http(s) source: its URL, its prefix's client, and the registry check
    every redirect target must pass.

    Attributes
    ----------
    url
        The URL requested (the source's URL under its store's base URL, query included).
    client
        The client of the prefix that allowed it.
    follow
        ``registry.resolve``: gives the `Source` of a redirect target or raises
        `SourceNotAllowedError`.
    """

    url: str
    client: HttpClient
    follow: Callable[[str], Any]

    def _send(self, method: str, headers: dict[str, str]) -> tuple[str, urllib3.BaseHTTPResponse]:
        url, client = self.url, self.client
        for _ in range(MAX_REDIRECTS + 1):
            resp = client.request(method, url, headers)
            if resp.status not in _REDIRECTS:
                return url, resp
            location = resp.headers.get("Location")
            if not location:
                raise OSError(f"{method} {url}: redirect {resp.status} without a Location")
            target = urllib.parse.urljoin(url, location)
            try:
                nxt = self.follow(target)
            except SourceNotAllowedError as exc:
                raise SourceNotAllowedError(
                    f"{self.url} redirects ({resp.status} from {url}) to {target!r}, which "
                    f"is not allowed: {exc}",
                    path=target,
                ) from exc
            if nxt.http is None:
                raise SourceNotAllowedError(
                    f"{self.url} redirects ({resp.status} from {url}) to {target!r}, which "
                    "is allowed but not as an http(s) source; refusing to follow",
                    path=target,
                )
            url, client = nxt.http.url, nxt.http.client
        raise SourceNotAllowedError(
            f"{self.url}: more than {MAX_REDIRECTS} redirects; refusing to follow", path=url
        )

    def get_range(self, start: int, end: int, etag: str | None = None) -> bytes:
        """Bytes ``[start, end)`` (``end > start``), checked to be that range.

        Raises
        ------
        SourceNotAllowedError
            A redirect to somewhere the registry does not allow.
        StaleReferenceError
            ``etag`` given and the server answers 412 or with another ETag.
        FileNotFoundError
            404 / 410.
        OSError
            Other failures; the text of range mismatches carries the markers the fetch
            module reports as short reads.
        """
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if etag is not None:
            headers["If-Match"] = etag
        url, resp = self._send("GET", headers)
        status = resp.status
        if status == 412 and etag is not None:
            raise self._stale(etag, "the server refused If-Match (412 Precondition Failed)")
        if status in (404, 410):
            raise FileNotFoundError(f"GET {url}: not found ({status})")
        if status == 416:
            raise OSError(f"GET {url}: range not satisfiable (416) for bytes {start}..{end}")
        if status == 200:
            raise OSError(f"GET {url}: range request not supported (200 with the whole object)")
        if status != 206:
            raise OSError(f"GET {url}: HTTP status {status}")
        got_etag = resp.headers.get("ETag")
        if etag is not None and got_etag is not None and _strong(got_etag) != _strong(etag):
            raise self._stale(etag, f"the server sent ETag {got_etag}")
        content_range = resp.headers.get("Content-Range", "")
        m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", content_range)
        if m is None:
            raise OSError(f"GET {url}: invalid range: no valid Content-Range in a 206 answer")
        first, last = int(m.group(1)), int(m.group(2))
        # A range reaching past the end comes back cut at the end of the object (as with
        # obstore): the caller's length check reports the missing bytes.
        at_end = m.group(3) != "*" and last + 1 == int(m.group(3)) and last + 1 < end
        if first != start or (last + 1 != end and not at_end):
            raise OSError(
                f"GET {url}: UnexpectedRange: requested {start}..{end}, got {first}..{last + 1}"
            )
        return resp.data

    def head(self) -> dict[str, Any] | None:
        """obstore-like ``ObjectMeta`` (size, e_tag, last_modified); None if not found."""
        url, resp = self._send("HEAD", {})
        if resp.status in (404, 410):
            return None
        if resp.status != 200:
            raise OSError(f"HEAD {url}: HTTP status {resp.status}")
        length = resp.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise OSError(f"HEAD {url}: no Content-Length")
        modified = resp.headers.get("Last-Modified")
        stamp: dt.datetime | None = None
        if modified:
            try:
                stamp = email.utils.parsedate_to_datetime(modified).astimezone(dt.UTC)
            except (TypeError, ValueError):
                stamp = None
        return {
            "path": url,
            "size": int(length),
            "e_tag": resp.headers.get("ETag"),
            "last_modified": stamp,
        }

    def _stale(self, etag: str, why: str) -> StaleReferenceError:
        return StaleReferenceError(
            f"source {self.url} changed since the manifest was made: ETag {etag} recorded, "
            f"{why}; its byte ranges may no longer hold the chunks, rebuild the manifest",
            url=self.url,
        )


def _strong(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_PID = 0
_EXECUTOR_LOCK = threading.Lock()


def http_executor() -> ThreadPoolExecutor:
    """The threads that run http(s) requests for async reads (requests block on I/O, so
    many more threads than cores; rebuilt in a forked child)."""
    global _EXECUTOR, _EXECUTOR_PID
    ex = _EXECUTOR
    if ex is not None and os.getpid() == _EXECUTOR_PID:
        return ex
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or os.getpid() != _EXECUTOR_PID:
            _EXECUTOR = ThreadPoolExecutor(max_workers=64, thread_name_prefix="zarr-manifest-http")
            _EXECUTOR_PID = os.getpid()
        return _EXECUTOR
