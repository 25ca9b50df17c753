"""The local test servers behave as specified, as seen by raw HTTP and by obstore.

Also records what obstore 0.12 (object_store 0.14) does under each fault, since the
library's error handling is built on it:

- 5xx and connection resets are retried (``max_retries``), then ``GenericError``.
- A truncated body is retried by asking for the *missing tail* only (``bytes=600-1099``
  after 500 of 1000 bytes), then ``GenericError("... request or response body error")``.
- A 200 answer to a ranged GET is ``NotSupportedError``, not retried.
- A body of the wrong length under a plausible Content-Range is returned as is, no error.
- A range running past the end of the file comes back short, no error; one starting at
  or after the end is a 416 ``GenericError``, not retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
import pytest
from obstore.exceptions import (
    GenericError,
    NotModifiedError,
    NotSupportedError,
    PreconditionError,
)
from obstore.store import S3Store, from_url

from zarr_manifest.testing import (
    FAULT_ERROR,
    FAULT_IGNORE_RANGE,
    FAULT_RESET,
    FAULT_TRUNCATE,
    FAULT_WRONG_LENGTH,
    Faults,
    RangeServer,
    S3Server,
    fast_retry_config,
    parse_range_header,
)
from zarr_manifest.testing.servers import _Unsatisfiable

if TYPE_CHECKING:
    from obstore.store import ClientConfig, HTTPStore

pytestmark = pytest.mark.timeout(60)

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable mod 256
SIZE = len(DATA)
CLIENT: ClientConfig = {"timeout": "5s", "connect_timeout": "2s"}

ServeBytes = Callable[..., str]


def raw(
    server: RangeServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request (no retries), as (status, headers, body)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, dict(resp.getheaders()), body
    finally:
        conn.close()


@pytest.fixture
def srv(clean_range_server: RangeServer) -> RangeServer:
    return clean_range_server


@pytest.fixture
def path(serve_bytes: ServeBytes) -> str:
    return serve_bytes(DATA, "f.bin")


def store(server: RangeServer, retries: int = 2, timeout: str = "5s") -> HTTPStore:
    return server.http_store(
        client_options={**CLIENT, "timeout": timeout},
        retry_config=fast_retry_config(retries),
    )


# --------------------------------------------------------------------------------------
# Range parsing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", (0, 1)),
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, 1000)),
        ("bytes=-100", (900, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 1000)),
        ("bytes = 5 - 9", (5, 10)),
        ("BYTES=1-2", (1, 3)),
        ("bytes=9-5", None),  # last < first: invalid, so ignored
        ("bytes=0-1,5-6", None),  # several ranges: whole file
        ("items=0-1", None),
        ("bytes=a-b", None),
        ("bytes=-", None),
        ("bytes", None),
    ],
)
def test_parse_range_header(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range_header(header, 1000) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_parse_range_header_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(_Unsatisfiable):
        parse_range_header(header, size)


def test_faults_validation() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="latency"):
        Faults(latency=-1)
    with pytest.raises(ValueError, match="truncate_keep"):
        Faults(truncate_keep=1.0)
    with pytest.raises(ValueError, match="error_status"):
        Faults(error_status=200)
    assert Faults(paths=["a", "b"]).paths == frozenset({"a", "b"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# HTTP semantics, raw
# --------------------------------------------------------------------------------------


def test_raw_http_semantics(srv: RangeServer, path: str, range_root: Path) -> None:
    st = (range_root / path).stat()
    etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'

    status, headers, body = raw(srv, "GET", f"/{path}")
    assert (status, body) == (200, DATA)
    assert headers["Content-Length"] == str(SIZE)
    assert headers["ETag"] == etag
    assert headers["Accept-Ranges"] == "bytes"
    assert email.utils.parsedate_to_datetime(headers["Last-Modified"]).timestamp() == int(
        st.st_mtime
    )

    status, headers, body = raw(srv, "HEAD", f"/{path}")
    assert (status, body, headers["Content-Length"], headers["ETag"]) == (200, b"", "10240", etag)

    cases = {
        "bytes=10-19": (10, 20),
        "bytes=10200-": (10200, SIZE),
        "bytes=-7": (SIZE - 7, SIZE),
        "bytes=10000-99999": (10000, SIZE),
    }
    for header, (start, stop) in cases.items():
        status, headers, body = raw(srv, "GET", f"/{path}", {"Range": header})
        assert status == 206, header
        assert body == DATA[start:stop], header
        assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
        assert headers["Content-Length"] == str(stop - start)

    status, headers, body = raw(srv, "GET", f"/{path}", {"Range": f"bytes={SIZE}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{SIZE}"

    # Multi-range and malformed ranges are ignored: the whole file with 200.
    for header in ("bytes=0-1,5-6", "bytes=9-5"):
        status, _, body = raw(srv, "GET", f"/{path}", {"Range": header})
        assert (status, body) == (200, DATA), header

    # If-Range with the current ETag honours the range, with a stale one sends everything.
    assert raw(srv, "GET", f"/{path}", {"Range": "bytes=0-0", "If-Range": etag})[0] == 206
    assert raw(srv, "GET", f"/{path}", {"Range": "bytes=0-0", "If-Range": '"old"'})[0] == 200

    assert raw(srv, "GET", "/missing.bin")[0] == 404
    assert raw(srv, "GET", f"/{path.split('/')[0]}")[0] == 404  # a directory
    assert raw(srv, "GET", "/../../../etc/passwd")[0] == 404  # outside the root
    status, headers, _ = raw(srv, "POST", f"/{path}")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")

    methods = [r.method for r in srv.requests]
    assert len(methods) == 15
    assert methods.count("HEAD") == 1
    assert srv.ranges(path) == [(10, 20), (10200, SIZE), (SIZE - 7, SIZE), (10000, SIZE), (0, 1)]


def test_url_for_quotes_names(srv: RangeServer, serve_bytes: ServeBytes) -> None:
    rel = serve_bytes(b"hello", "a name #1.bin")
    assert srv.url_for(rel).endswith("/a%20name%20%231.bin")
    quoted = srv.url_for(rel)[len(srv.url) :]
    assert raw(srv, "GET", quoted)[2] == b"hello"
    assert obstore.get(store(srv), rel).bytes() == b"hello"


# --------------------------------------------------------------------------------------
# obstore HTTPStore against the server
# --------------------------------------------------------------------------------------


def test_obstore_head_and_ranges(srv: RangeServer, path: str, range_root: Path) -> None:
    s = store(srv)
    meta = obstore.head(s, path)
    st = (range_root / path).stat()
    assert meta["size"] == SIZE
    assert meta["e_tag"] == f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    assert int(meta["last_modified"].timestamp()) == int(st.st_mtime)

    assert bytes(obstore.get_range(s, path, start=10, end=20)) == DATA[10:20]
    assert bytes(obstore.get_range(s, path, start=0, length=1)) == DATA[:1]
    suffix = obstore.get(s, path, options={"range": {"suffix": 100}})
    assert (suffix.range, bytes(suffix.bytes())) == ((SIZE - 100, SIZE), DATA[-100:])
    tail = obstore.get(s, path, options={"range": {"offset": 10000}})
    assert bytes(tail.bytes()) == DATA[10000:]
    whole = obstore.get(s, path)
    assert bytes(whole.bytes()) == DATA
    assert whole.meta["e_tag"] == meta["e_tag"]

    # obstore sends exactly these headers (one request each, no HEAD before a GET).
    assert [(r.method, r.range_header) for r in srv.requests] == [
        ("HEAD", None),
        ("GET", "bytes=10-19"),
        ("GET", "bytes=0-0"),
        ("GET", "bytes=-100"),
        ("GET", "bytes=10000-"),
        ("GET", None),
    ]
    assert srv.request_count(path, "GET") == 5
    assert srv.counts_by_path() == {path: 6}
    assert srv.bytes_sent(path) == 10 + 1 + 100 + 240 + SIZE


def test_obstore_past_eof_and_416(srv: RangeServer, path: str) -> None:
    s = store(srv)
    # A range running past the end comes back short, without an error.
    assert bytes(obstore.get_range(s, path, start=10000, end=11000)) == DATA[10000:]
    # One starting at/after the end is a 416, surfaced as GenericError and not retried.
    with pytest.raises(GenericError, match="416 Range Not Satisfiable"):
        obstore.get_range(s, path, start=SIZE, end=SIZE + 10)
    assert [r.status for r in srv.requests] == [206, 416]


def test_obstore_missing_file(srv: RangeServer) -> None:
    s = store(srv)
    with pytest.raises(FileNotFoundError, match="404 Not Found"):
        obstore.head(s, "nope.bin")
    with pytest.raises(FileNotFoundError, match=r"nope\.bin"):
        obstore.get_range(s, "nope.bin", start=0, end=4)
    assert srv.request_count() == 2  # 404 is not retried


def test_obstore_etag_follows_file_changes(srv: RangeServer, path: str, range_root: Path) -> None:
    s = store(srv)
    before = obstore.head(s, path)
    (range_root / path).write_bytes(DATA + b"x")
    os.utime(range_root / path, ns=(0, 1_000_000_000_000_000_000))
    after = obstore.head(s, path)
    assert after["size"] == SIZE + 1
    assert after["e_tag"] != before["e_tag"]
    # Conditional GETs that stale-reference detection can rely on.
    with pytest.raises(PreconditionError, match="412 Precondition Failed"):
        obstore.get(s, path, options={"if_match": before["e_tag"], "range": (0, 4)})
    ok = obstore.get(s, path, options={"if_match": after["e_tag"], "range": (0, 4)})
    assert bytes(ok.bytes()) == DATA[:4]
    with pytest.raises(NotModifiedError):
        obstore.get(s, path, options={"if_none_match": after["e_tag"]})
    with pytest.raises(PreconditionError):
        obstore.get(
            s, path, options={"if_unmodified_since": after["last_modified"].replace(year=2000)}
        )


def test_obstore_http_store_prefix(srv: RangeServer, serve_bytes: ServeBytes) -> None:
    rel = serve_bytes(b"0123456789", "sub/x.bin")
    folder = rel.rsplit("/", 2)[0]
    s = srv.http_store(folder, client_options=CLIENT)
    assert bytes(obstore.get_range(s, "sub/x.bin", start=2, end=5)) == b"234"
    assert srv.requests[0].path == rel


def test_obstore_get_ranges_coalescing(srv: RangeServer, serve_bytes: ServeBytes) -> None:
    big = os.urandom(3 * 1024 * 1024)
    rel = serve_bytes(big, "big.bin")
    s = store(srv)
    starts, ends = [0, 100, 4000], [10, 200, 4100]
    got = obstore.get_ranges(s, rel, starts=starts, ends=ends)
    assert [bytes(g) for g in got] == [big[a:b] for a, b in zip(starts, ends, strict=True)]
    # Close ranges are merged into one request covering them all.
    assert srv.ranges(rel) == [(0, 4100)]

    srv.reset_counters()
    far = 2 * 1024 * 1024
    got = obstore.get_ranges(s, rel, starts=[0, far], ends=[10, far + 10])
    assert [bytes(g) for g in got] == [big[:10], big[far : far + 10]]
    # Ranges more than obstore's coalesce gap (1 MiB) apart are fetched separately.
    assert sorted(srv.ranges(rel)) == [(0, 10), (far, far + 10)]


# --------------------------------------------------------------------------------------
# Faults, as obstore sees them
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500])
def test_error_first_is_retried(srv: RangeServer, path: str, status: int) -> None:
    srv.set_faults(error_first=2, error_status=status)
    assert bytes(obstore.get_range(store(srv, retries=2), path, start=0, end=10)) == DATA[:10]
    assert [(r.status, r.fault) for r in srv.requests] == [
        (status, FAULT_ERROR),
        (status, FAULT_ERROR),
        (206, None),
    ]
    assert srv.faults_remaining()[FAULT_ERROR] == 0


def test_error_exhausts_retries(srv: RangeServer, path: str) -> None:
    srv.set_faults(error_first=10, error_status=503)
    with pytest.raises(GenericError) as info:
        obstore.get_range(store(srv, retries=2), path, start=0, end=10)
    msg = str(info.value)
    assert "after 2 retries, max_retries: 2" in msg
    assert "Server returned non-2xx status code: 503 Service Unavailable" in msg
    assert f"injected fault for /{path}" in msg  # the response body is quoted
    assert srv.request_count() == 3

    srv.reset_counters()
    with pytest.raises(GenericError, match="503"):
        obstore.head(store(srv, retries=0), path)
    assert srv.request_count() == 1  # max_retries=0: one attempt only


def test_error_rate_is_seeded(srv: RangeServer, path: str) -> None:
    def statuses() -> list[int]:
        return [raw(srv, "HEAD", f"/{path}")[0] for _ in range(30)]

    srv.set_faults(error_rate=0.5, error_status=500, seed=123)
    first = statuses()
    srv.set_faults(seed=123)
    second = statuses()
    assert first == second
    assert set(first) == {200, 500}
    assert 5 <= first.count(500) <= 25
    srv.set_faults(error_rate=0.0)
    assert set(statuses()) == {200}


def test_reset_is_retried(srv: RangeServer, path: str) -> None:
    srv.set_faults(reset_first=1)
    assert bytes(obstore.get_range(store(srv), path, start=5, end=15)) == DATA[5:15]
    assert [(r.status, r.fault) for r in srv.requests] == [(0, FAULT_RESET), (206, None)]


def test_reset_exhausts_retries(srv: RangeServer, path: str) -> None:
    srv.set_faults(reset_first=10)
    with pytest.raises(GenericError) as info:
        obstore.get_range(store(srv, retries=1), path, start=0, end=10)
    msg = str(info.value)
    assert "after 1 retries" in msg
    assert "error sending request" in msg
    assert "Connection reset by peer" in msg  # in the debug part of the message
    assert srv.request_count() == 2
    # A raw client sees the reset too: nothing was sent.
    with pytest.raises(ConnectionError):
        raw(srv, "GET", f"/{path}")


def test_truncated_body_is_resumed(srv: RangeServer, path: str) -> None:
    srv.set_faults(truncate_first=1, truncate_keep=0.5)
    got = obstore.get_range(store(srv), path, start=100, end=1100)
    assert bytes(got) == DATA[100:1100]
    # obstore asks again only for the bytes it did not get.
    assert srv.ranges(path) == [(100, 1100), (600, 1100)]
    assert [r.fault for r in srv.requests] == [FAULT_TRUNCATE, None]
    assert [r.body_bytes for r in srv.requests] == [500, 500]

    srv.reset_counters()
    srv.set_faults(truncate_first=1)
    assert bytes(obstore.get(store(srv), path).bytes()) == DATA
    assert [r.range_header for r in srv.requests] == [None, f"bytes={SIZE // 2}-{SIZE - 1}"]


def test_truncated_body_exhausts_retries(srv: RangeServer, path: str) -> None:
    srv.set_faults(truncate_first=10, truncate_keep=0.0)
    with pytest.raises(GenericError) as info:
        obstore.get_range(store(srv, retries=2), path, start=0, end=100)
    msg = str(info.value)
    assert "request or response body error" in msg
    assert "IncompleteBody" in msg
    assert srv.request_count() == 3
    # A raw client sees fewer bytes than Content-Length promised.
    with pytest.raises(http.client.IncompleteRead):
        raw(srv, "GET", f"/{path}")


def test_ignore_range_is_not_supported(srv: RangeServer, path: str) -> None:
    srv.set_faults(ignore_range=True)
    with pytest.raises(NotSupportedError, match="Range request not supported"):
        obstore.get_range(store(srv), path, start=0, end=10)
    assert [(r.status, r.fault, r.range) for r in srv.requests] == [
        (200, FAULT_IGNORE_RANGE, (0, 10))
    ]
    # Whole-file reads are unaffected.
    assert bytes(obstore.get(store(srv), path).bytes()) == DATA


@pytest.mark.parametrize("delta", [-3, 3])
def test_wrong_length_passes_obstore_silently(srv: RangeServer, path: str, delta: int) -> None:
    srv.set_faults(wrong_length=delta)
    got = bytes(obstore.get_range(store(srv), path, start=100, end=1100))
    # obstore does not check the body against the range: the caller must.
    assert len(got) == 1000 + delta
    assert got[: min(1000, len(got))] == DATA[100 : 100 + min(1000, len(got))]
    assert [(r.fault, r.body_bytes) for r in srv.requests] == [(FAULT_WRONG_LENGTH, 1000 + delta)]

    # Coalesced get_ranges slices the short buffer: the last range comes back short.
    ranges = obstore.get_ranges(store(srv), path, starts=[0, 500], ends=[100, 1000])
    assert [len(r) for r in ranges] == ([100, 497] if delta < 0 else [100, 500])


def test_latency_is_concurrent(srv: RangeServer, path: str) -> None:
    s = store(srv)
    srv.set_faults(latency=0.1)
    t0 = time.monotonic()
    obstore.head(s, path)
    assert time.monotonic() - t0 >= 0.1

    async def many() -> list[bytes]:
        got = await asyncio.gather(
            *(obstore.get_range_async(s, path, start=i, end=i + 1) for i in range(10))
        )
        return [bytes(g) for g in got]

    t0 = time.monotonic()
    got = asyncio.run(many())
    elapsed = time.monotonic() - t0
    assert got == [DATA[i : i + 1] for i in range(10)]
    assert 0.1 <= elapsed < 0.6  # not 10 x 0.1 s


def test_latency_beyond_client_timeout(srv: RangeServer, path: str) -> None:
    srv.set_faults(latency=0.5)
    with pytest.raises(GenericError) as info:
        obstore.get_range(store(srv, retries=1, timeout="100ms"), path, start=0, end=10)
    msg = str(info.value)
    assert "error sending request" in msg
    assert "TimedOut" in msg
    assert srv.wait_idle(timeout=5)
    assert srv.request_count() == 2  # timeouts of GETs are retried


def test_faults_limited_to_paths(srv: RangeServer, serve_bytes: ServeBytes) -> None:
    bad = serve_bytes(DATA, "bad.bin")
    good = serve_bytes(DATA, "good.bin")
    srv.set_faults(error_first=100, paths={bad})
    s = store(srv, retries=0)
    assert bytes(obstore.get_range(s, good, start=0, end=3)) == DATA[:3]
    with pytest.raises(GenericError, match="503"):
        obstore.get_range(s, bad, start=0, end=3)
    assert srv.faults_remaining()[FAULT_ERROR] == 99


def test_faults_change_at_runtime_under_load(srv: RangeServer, path: str) -> None:
    s = store(srv, retries=5)
    stop = threading.Event()

    def toggle() -> None:
        while not stop.is_set():
            srv.set_faults(error_rate=0.3, reset_rate=0.1)
            srv.set_faults(error_rate=0.0, reset_rate=0.0)

    toggler = threading.Thread(target=toggle, daemon=True)
    toggler.start()
    try:
        for i in range(40):
            assert bytes(obstore.get_range(s, path, start=i, end=i + 7)) == DATA[i : i + 7]
    finally:
        stop.set()
        toggler.join(5)
    records = srv.requests
    assert sum(r.status == 206 for r in records) == 40
    assert all(r.fault in (None, FAULT_ERROR, FAULT_RESET) for r in records)


# --------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------


def _port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _expect_disconnect(server: RangeServer, path: str) -> None:
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        raw(server, "GET", path)


def test_range_server_lifecycle(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    server = RangeServer(tmp_path, faults=Faults(error_first=1), shutdown_timeout=0.5)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    server.start()
    server.start()  # idempotent
    try:
        assert server.running
        assert server.url.startswith("http://127.0.0.1:")
        assert raw(server, "GET", "/a.bin")[0] == 503  # faults given at construction
        assert raw(server, "GET", "/a.bin")[2] == b"abc"
        # A request that would hang for 30 s must not hold up stop() for long.
        server.set_faults(latency=30)
        client = threading.Thread(target=_expect_disconnect, args=(server, "/a.bin"), daemon=True)
        client.start()
        time.sleep(0.1)
        assert server.in_flight == 1
        port = server.port
    finally:
        t0 = time.monotonic()
        server.stop()
        stop_time = time.monotonic() - t0
    assert stop_time < 3.0
    assert not server.running
    assert _port_is_closed(port)
    server.stop()  # idempotent
    client.join(5)

    with RangeServer(tmp_path) as again:  # a fresh server, stopping fast when idle
        assert raw(again, "HEAD", "/a.bin")[1]["Content-Length"] == "3"
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 1.0


def test_range_server_rejects_missing_root(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        RangeServer(tmp_path / "nope")


# --------------------------------------------------------------------------------------
# S3Server
# --------------------------------------------------------------------------------------


def test_s3_upload_dir_and_obstore(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(DATA)
    (tmp_path / "sub" / "b.bin").write_bytes(b"bee")
    keys = s3_server.upload_dir(tmp_path, s3_bucket, prefix="pre/")
    assert keys == ["pre/a.bin", "pre/sub/b.bin"]

    cfg = s3_server.obstore_config()
    assert cfg["endpoint"] == s3_server.endpoint
    assert cfg["client_options"] == {"allow_http": True}
    st = S3Store(s3_bucket, **cfg)
    meta = obstore.head(st, "pre/a.bin")
    assert meta["size"] == SIZE
    assert meta["e_tag"]
    assert bytes(obstore.get_range(st, "pre/a.bin", start=5, end=50)) == DATA[5:50]
    got = obstore.get_ranges(st, "pre/a.bin", starts=[0, 9000], ends=[3, 9010])
    assert [bytes(g) for g in got] == [DATA[:3], DATA[9000:9010]]

    prefixed = from_url(f"s3://{s3_bucket}/pre", **cfg)
    assert bytes(obstore.get(prefixed, "sub/b.bin").bytes()) == b"bee"
    listed = obstore.list(S3Store.from_url(f"s3://{s3_bucket}/pre/sub", **cfg)).collect()
    assert [m["path"] for m in listed] == ["b.bin"]

    helper = s3_server.s3_store(s3_bucket, prefix="pre", retry_config=fast_retry_config(0))
    with pytest.raises(FileNotFoundError, match="nope"):
        obstore.head(helper, "nope")
    with pytest.raises(GenericError, match="416"):
        obstore.get_range(helper, "a.bin", start=SIZE, end=SIZE + 1)


def test_s3_bucket_helpers(s3_server: S3Server, s3_bucket: str) -> None:
    assert s3_server.create_bucket(s3_bucket) == s3_bucket  # idempotent
    s3_server.put_object(s3_bucket, "k/v.bin", b"value")
    st = s3_server.s3_store(s3_bucket)
    assert bytes(obstore.get(st, "k/v.bin").bytes()) == b"value"
    obstore.put(st, "k/w.bin", b"written by obstore")
    body = s3_server.boto3_client().get_object(Bucket=s3_bucket, Key="k/w.bin")["Body"].read()
    assert body == b"written by obstore"
    assert s3_server.fsspec_options() == {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": s3_server.endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
    }


def test_s3_server_lifecycle() -> None:
    server = S3Server(region="eu-west-1")
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.endpoint
    with server:
        port = server.port
        bucket = server.create_bucket(f"lifecycle-{uuid.uuid4().hex[:8]}")
        st = server.s3_store(bucket)
        obstore.put(st, "x", b"1")
        assert obstore.head(st, "x")["size"] == 1
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3.0
    assert not server.running
    assert _port_is_closed(port)
