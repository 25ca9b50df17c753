"""Coalesced, checked range reads: plan_coalesced, read_ranges_sync/async, RangeBatcher."""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import obstore
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from obstore.store import LocalStore, MemoryStore

from zarr_manifest.errors import (
    ChunkReadError,
    ManifestError,
    ShortReadError,
    StaleReferenceError,
)
from zarr_manifest.format.paths import local_path_to_url
from zarr_manifest.store import fetch
from zarr_manifest.store.fetch import (
    DEFAULT_MAX_GAP_BYTES,
    RangeBatcher,
    plan_coalesced,
    read_range_sync,
    read_ranges_async,
    read_ranges_sync,
)
from zarr_manifest.store.sources import Source, SourceRegistry

DATA = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


# -- a small HTTP/1.1 range server (stdlib), counting what it sees ------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.mode = "ok"
        self.log: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.etag: str | None = None  # sent with every 206, whatever If-Match says
        self.if_match: list[str | None] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def ranges(self) -> list[tuple[int, int]]:
        out = []
        for _, header in self.log:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", header or "")
            assert m is not None, header
            out.append((int(m.group(1)), int(m.group(2)) + 1))
        return sorted(out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str], *, cut: int = 0) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:
            # promise len(body) bytes, send fewer, hang up
            self.wfile.write(body[: len(body) - cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_GET(self) -> None:
        srv = self.server
        header = self.headers.get("Range")
        with srv.lock:
            srv.log.append((self.path, header))
            srv.if_match.append(self.headers.get("If-Match"))
            mode = srv.mode
        data = srv.files.get(self.path)
        if data is None:
            self._send(404, b"not found", {})
            return
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", header or "")
        if m is None or mode == "ignore_range":
            self._send(200, data, {})
            return
        start, last = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
        if start >= len(data):
            self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            return
        if mode == "short" and last - start > 2:
            last -= 2  # a valid-looking 206 that is shorter than asked
        body = data[start : last + 1]
        headers = {"Content-Range": f"bytes {start}-{last}/{len(data)}"}
        if srv.etag is not None:
            headers["ETag"] = srv.etag
        self._send(206, body, headers, cut=(len(body) // 2 if mode == "truncate" else 0))


@pytest.fixture
def http() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


_NO_RETRY = {
    "max_retries": 0,
    "retry_timeout": timedelta(seconds=2),
    "backoff": {
        "init_backoff": timedelta(milliseconds=1),
        "max_backoff": timedelta(milliseconds=5),
        "base": 2.0,
    },
}


def http_source(srv: _Server, name: str = "data.bin", data: bytes = DATA) -> Source:
    srv.files[f"/files/{name}"] = data
    reg = SourceRegistry.from_urls([srv.base + "/files/"], retry_config=_NO_RETRY)
    return reg.resolve(f"{srv.base}/files/{name}")


def local_source(tmp_path: Path, name: str = "data.bin", data: bytes = DATA) -> Source:
    (tmp_path / name).write_bytes(data)
    reg = SourceRegistry.from_urls([local_path_to_url(tmp_path)])
    src = reg.resolve(local_path_to_url(tmp_path / name))
    assert src.local_path is not None
    return src


def obstore_local_source(tmp_path: Path, name: str = "data.bin", data: bytes = DATA) -> Source:
    """The same file read through obstore's LocalStore (no pread fast path)."""
    (tmp_path / name).write_bytes(data)
    return Source(local_path_to_url(tmp_path / name), LocalStore(tmp_path), name)


def memory_source(name: str = "data.bin", data: bytes = DATA) -> Source:
    store = MemoryStore()
    store.put(name, data)
    return Source(f"memory:///{name}", store, name)


def random_ranges(n: int, seed: int = 1, size: int = len(DATA)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, size - 1, n)
    ends = np.minimum(starts + rng.integers(0, 3000, n), size)
    return starts, ends


# -- plan_coalesced --------------------------------------------------------------------------


def test_plan_merges_small_gaps_and_maps_groups() -> None:
    starts = [1000, 0, 120, 5000, 100]
    ends = [1100, 100, 200, 5100, 150]
    plan = plan_coalesced(starts, ends, max_gap_bytes=100, max_request_bytes=10_000)
    # sorted: [0,100) [100,150) [120,200) | gap 800 | [1000,1100) | [5000,5100)
    assert plan.starts.tolist() == [0, 1000, 5000]
    assert plan.ends.tolist() == [200, 1100, 5100]
    assert plan.group.tolist() == [1, 0, 0, 2, 0]
    assert plan.starts.dtype == np.int64 and plan.group.dtype == np.intp
    s, e, g = plan  # a plain tuple too
    assert s is plan.starts and e is plan.ends and g is plan.group


def test_plan_gap_threshold_is_inclusive() -> None:
    plan = plan_coalesced([0, 110], [100, 200], max_gap_bytes=10, max_request_bytes=1000)
    assert plan.starts.tolist() == [0]
    plan = plan_coalesced([0, 111], [100, 200], max_gap_bytes=10, max_request_bytes=1000)
    assert plan.starts.tolist() == [0, 111]


def test_plan_respects_max_request() -> None:
    starts = np.arange(0, 10_000, 100)
    plan = plan_coalesced(starts, starts + 100, max_gap_bytes=0, max_request_bytes=1000)
    assert plan.starts.tolist() == list(range(0, 10_000, 1000))
    assert plan.ends.tolist() == list(range(1000, 10_001, 1000))
    assert plan.group.tolist() == [i // 10 for i in range(100)]


def test_plan_single_range_larger_than_limit_stays_whole() -> None:
    plan = plan_coalesced(
        [0, 5000, 5100], [5000, 5100, 5200], max_gap_bytes=0, max_request_bytes=200
    )
    assert plan.starts.tolist() == [0, 5000]
    assert plan.ends.tolist() == [5000, 5200]


def test_plan_overlaps_and_duplicates_join() -> None:
    # [0,100) overlaps everything after it; splitting inside would re-read bytes
    plan = plan_coalesced(
        [0, 10, 10, 30, 150], [100, 20, 20, 40, 160], max_gap_bytes=0, max_request_bytes=25
    )
    assert plan.starts.tolist() == [0, 150]
    assert plan.ends.tolist() == [100, 160]
    assert plan.group.tolist() == [0, 0, 0, 0, 1]


def test_plan_empty_and_zero_length() -> None:
    plan = plan_coalesced([], [])
    assert plan.starts.size == plan.ends.size == plan.group.size == 0
    plan = plan_coalesced([5, 5], [5, 10], max_gap_bytes=0, max_request_bytes=100)
    assert plan.starts.tolist() == [5] and plan.ends.tolist() == [10]


@pytest.mark.parametrize(
    ("starts", "ends"),
    [([-1], [5]), ([10], [5]), ([1, 2], [3])],
)
def test_plan_rejects_bad_ranges(starts: list[int], ends: list[int]) -> None:
    with pytest.raises(ManifestError):
        plan_coalesced(starts, ends)


def test_plan_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        plan_coalesced([0], [1], max_gap_bytes=-1)
    with pytest.raises(ValueError):
        plan_coalesced([0], [1], max_request_bytes=0)


@settings(max_examples=200, deadline=None)
@given(
    ranges=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 300)), min_size=1, max_size=60),
    gap=st.integers(0, 200),
    limit=st.integers(1, 1500),
)
def test_plan_properties(ranges: list[tuple[int, int]], gap: int, limit: int) -> None:
    s = np.array([a for a, _ in ranges], dtype=np.int64)
    e = s + np.array([n for _, n in ranges], dtype=np.int64)
    plan = plan_coalesced(s, e, max_gap_bytes=gap, max_request_bytes=limit)
    ms, me, g = plan.starts, plan.ends, plan.group
    k = ms.size
    # every input inside its merged range, and each merged range is its members' hull
    assert np.all(s >= ms[g]) and np.all(e <= me[g])
    for j in range(k):
        members = g == j
        assert members.any()
        assert ms[j] == s[members].min() and me[j] == e[members].max()
    # sorted and disjoint
    assert np.all(ms[1:] >= me[:-1])
    # not mergeable further: big gap, or the union would be too long
    for j in range(k - 1):
        assert ms[j + 1] - me[j] > gap or me[j + 1] - ms[j] > limit
    # a request longer than the limit could not have been cut at a clean point
    order = np.argsort(s, kind="stable")
    ss, ee = s[order], e[order]
    reach = np.maximum.accumulate(ee)
    gs = g[order]
    for j in range(k):
        if me[j] - ms[j] <= limit:
            continue
        idx = np.flatnonzero(gs == j)
        first = idx[0]
        for c in idx[1:]:
            if ss[c] >= reach[c - 1]:  # a clean cut point inside
                assert reach[c - 1] - ss[first] > limit


# -- read_ranges_sync: local files (pread) -----------------------------------------------------


def test_local_reads_in_input_order(tmp_path: Path) -> None:
    src = local_source(tmp_path)
    starts, ends = random_ranges(500)
    # add duplicates, overlaps and empty ranges
    starts = np.concatenate([starts, starts[:5], [7, 7]])
    ends = np.concatenate([ends, ends[:5], [7, 9]])
    out = read_ranges_sync(src, starts, ends)
    assert len(out) == len(starts)
    for v, a, b in zip(out, starts.tolist(), ends.tolist(), strict=True):
        assert isinstance(v, memoryview)
        assert v.readonly
        assert v.tobytes() == DATA[a:b]


def test_local_reads_are_coalesced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = local_source(tmp_path)
    calls: list[tuple[int, int]] = []
    real = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        calls.append((offset, n))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting)
    starts = np.arange(0, 100_000, 1000)
    out = read_ranges_sync(src, starts, starts + 500, max_gap_bytes=500)
    assert calls == [(0, 99_500)]
    assert out[3].tobytes() == DATA[3000:3500]
    calls.clear()
    read_ranges_sync(src, starts, starts + 500, max_gap_bytes=499)
    assert len(calls) == 100
    calls.clear()
    read_ranges_sync(src, starts, starts + 500, max_gap_bytes=500, max_request_bytes=10_000)
    assert len(calls) == 10


def test_local_short_read_names_key_url_range(tmp_path: Path) -> None:
    src = local_source(tmp_path, data=b"0123456789")
    with pytest.raises(ShortReadError) as info:
        read_ranges_sync(src, [0, 8], [4, 20], keys=["a/c/0", "a/c/1"])
    err = info.value
    assert err.key == "a/c/1"
    assert err.url == src.url
    assert (err.start, err.end) == (8, 20)
    text = str(err)
    assert "'a/c/1'" in text and src.url in text and "[8, 20)" in text
    assert "'a/c/0'" not in text  # the good range is not blamed
    # start beyond the end of the file
    with pytest.raises(ShortReadError, match="returned 0 bytes"):
        read_ranges_sync(src, [50], [60], keys=["k"])


def test_local_short_read_in_merged_request(tmp_path: Path) -> None:
    src = local_source(tmp_path, data=b"0123456789")
    # both ranges merge into [0, 14); only the second lies past the end
    with pytest.raises(ShortReadError) as info:
        read_ranges_sync(src, [0, 9], [3, 14], keys=["k0", "k1"], max_gap_bytes=100)
    assert info.value.key == "k1"
    assert "merged request [0, 14)" in str(info.value)


def test_all_failing_ranges_are_counted(tmp_path: Path) -> None:
    src = local_source(tmp_path, data=b"0123456789")
    with pytest.raises(ShortReadError) as info:
        read_ranges_sync(src, [20, 40, 60], [30, 50, 70], keys=["x", "y", "z"], max_gap_bytes=0)
    assert info.value.key == "x"
    assert "2 other range(s) failed" in str(info.value)
    assert "'y'" in str(info.value) and "'z'" in str(info.value)


def test_local_missing_file(tmp_path: Path) -> None:
    src = local_source(tmp_path)
    os.unlink(tmp_path / "data.bin")
    fetch.close_local_files()
    with pytest.raises(ChunkReadError) as info:
        read_ranges_sync(src, [0], [10], keys=["v/c/3"])
    err = info.value
    assert not isinstance(err, ShortReadError)
    assert isinstance(err.__cause__, FileNotFoundError)
    assert err.key == "v/c/3" and err.url == src.url
    assert "[0, 10)" in str(err)


def test_local_file_replaced_is_reopened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = local_source(tmp_path, data=b"old-old-old")
    assert read_ranges_sync(src, [0], [3])[0].tobytes() == b"old"
    tmp = tmp_path / "new.tmp"
    tmp.write_bytes(b"NEW-NEW-NEW")
    os.replace(tmp, tmp_path / "data.bin")
    # within the revalidation interval the open descriptor (old file) is trusted
    monkeypatch.setattr(fetch, "LOCAL_REVALIDATE_SECONDS", 3600.0)
    assert read_ranges_sync(src, [0], [3])[0].tobytes() == b"old"
    monkeypatch.setattr(fetch, "LOCAL_REVALIDATE_SECONDS", 0.0)
    assert read_ranges_sync(src, [0], [3])[0].tobytes() == b"NEW"


def test_local_file_grown_is_read_in_full(tmp_path: Path) -> None:
    src = local_source(tmp_path, data=b"0123")
    assert read_ranges_sync(src, [0], [4])[0].tobytes() == b"0123"
    with open(tmp_path / "data.bin", "ab") as f:
        f.write(b"4567")
    # the cached size is stale, but a range past it re-checks before reporting short
    assert read_ranges_sync(src, [2], [8])[0].tobytes() == b"234567"


def test_fd_cache_bounds_and_deferred_close(tmp_path: Path) -> None:
    cache = fetch._FdCache(max_open=2)
    paths = []
    for i in range(3):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x")
        paths.append(str(p))
    held = cache.acquire(paths[0])
    cache.release(cache.acquire(paths[1]))
    cache.release(cache.acquire(paths[2]))  # evicts paths[0], which is still in use
    assert held.evicted
    assert os.pread(held.fd, 1, 0) == b"x"  # not closed under the reader's feet
    fd = held.fd
    cache.release(held)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed once released
    again = cache.acquire(paths[1])
    assert not again.evicted
    cache.release(again)
    cache.clear()
    with pytest.raises(OSError):
        os.fstat(again.fd)


def test_empty_request(tmp_path: Path) -> None:
    assert read_ranges_sync(local_source(tmp_path), [], []) == []
    assert read_ranges_sync(memory_source(), [3], [3])[0].tobytes() == b""


def test_bad_ranges_name_key(tmp_path: Path) -> None:
    src = local_source(tmp_path)
    with pytest.raises(ManifestError, match="'k1'") as info:
        read_ranges_sync(src, [0, 5], [1, 2], keys=["k0", "k1"])
    assert info.value.key == "k1"
    with pytest.raises(ManifestError, match="keys"):
        read_ranges_sync(src, [0, 5], [1, 6], keys=["k0"])


# -- read_ranges_sync: obstore stores ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["obstore_local", "memory"])
def test_obstore_reads(tmp_path: Path, kind: str) -> None:
    src = obstore_local_source(tmp_path) if kind == "obstore_local" else memory_source()
    assert src.local_path is None
    starts, ends = random_ranges(300, seed=2)
    out = read_ranges_sync(src, starts, ends)
    for v, a, b in zip(out, starts.tolist(), ends.tolist(), strict=True):
        assert v.tobytes() == DATA[a:b]
    # zero-copy: the views share obstore's buffers
    assert out[0].obj is not None


@pytest.mark.parametrize("kind", ["obstore_local", "memory"])
def test_obstore_short_reads_are_caught(tmp_path: Path, kind: str) -> None:
    data = b"0123456789"
    src = (
        obstore_local_source(tmp_path, data=data)
        if kind == "obstore_local"
        else memory_source(data=data)
    )
    # obstore itself returns the clamped b"89" for [8, 20): it must not get through
    assert bytes(obstore.get_range(src.store, src.path, start=8, end=20)) == b"89"
    with pytest.raises(ShortReadError) as info:
        read_ranges_sync(src, [0, 8], [2, 20], keys=["ok", "bad"], max_gap_bytes=0)
    assert info.value.key == "bad"
    # a start past the end: obstore raises; still a ShortReadError naming the key
    with pytest.raises(ShortReadError) as info:
        read_ranges_sync(src, [30], [40], keys=["past"])
    assert info.value.key == "past"
    assert info.value.__cause__ is not None


def test_obstore_missing_object() -> None:
    src = Source("memory:///nope", MemoryStore(), "nope")
    with pytest.raises(ChunkReadError) as info:
        read_ranges_sync(src, [0, 100], [10, 110], keys=["a", "b"], max_gap_bytes=0)
    err = info.value
    assert not isinstance(err, ShortReadError)
    assert err.url == "memory:///nope" and err.key == "a"
    assert err.__cause__ is not None
    assert "memory:///nope" in str(err) and "'a'" in str(err)


# -- HTTP ----------------------------------------------------------------------------------------


def test_http_reads_and_request_counts(http: _Server) -> None:
    src = http_source(http)
    starts = np.arange(0, 200_000, 1000)
    ends = starts + 100
    out = read_ranges_sync(src, starts, ends, keys=[f"c/{i}" for i in range(len(starts))])
    assert [v.tobytes() for v in out] == [DATA[a:b] for a, b in zip(starts, ends, strict=True)]
    # default gap (64 KiB) merges everything into one request
    assert len(http.log) == 1
    assert http.ranges() == [(0, 199_100)]
    assert http.log[0][0] == "/files/data.bin"  # no doubled slash
    http.log.clear()
    read_ranges_sync(src, starts, ends, max_gap_bytes=0)
    assert len(http.log) == 200
    assert http.ranges() == list(zip(starts.tolist(), ends.tolist(), strict=True))
    http.log.clear()
    read_ranges_sync(
        src, starts, ends, max_gap_bytes=DEFAULT_MAX_GAP_BYTES, max_request_bytes=50_000
    )
    plan = plan_coalesced(starts, ends, max_request_bytes=50_000)
    assert len(http.log) == plan.starts.size == 4
    assert http.ranges() == list(zip(plan.starts.tolist(), plan.ends.tolist(), strict=True))


async def test_http_async_reads(http: _Server) -> None:
    src = http_source(http)
    starts, ends = random_ranges(400, seed=3)
    out = await read_ranges_async(src, starts, ends)
    for v, a, b in zip(out, starts.tolist(), ends.tolist(), strict=True):
        assert v.tobytes() == DATA[a:b]
    assert len(http.log) == len(plan_coalesced(starts, ends).starts)


@pytest.mark.parametrize("mode", ["ignore_range", "short", "truncate"])
@pytest.mark.parametrize("use_async", [False, True])
async def test_http_wrong_lengths_raise(http: _Server, mode: str, use_async: bool) -> None:
    src = http_source(http)
    http.mode = mode
    args = (src, [1000], [2000])
    with pytest.raises(ChunkReadError) as info:
        if use_async:
            await read_ranges_async(*args, keys=["v/c/0"])
        else:
            read_ranges_sync(*args, keys=["v/c/0"])
    err = info.value
    if mode != "truncate":  # a truncated body may also surface as a broken connection
        assert isinstance(err, ShortReadError)
    assert err.key == "v/c/0" and err.url == src.url
    assert (err.start, err.end) == (1000, 2000)
    assert "'v/c/0'" in str(err) and src.url in str(err) and "[1000, 2000)" in str(err)
    assert err.__cause__ is not None


async def test_http_not_found(http: _Server) -> None:
    src = http_source(http)
    http.files.clear()
    with pytest.raises(ChunkReadError) as info:
        await read_ranges_async(src, [0], [10], keys=["x/c/0"])
    assert not isinstance(info.value, ShortReadError)
    assert info.value.key == "x/c/0"
    assert "404" in str(info.value) or "not found" in str(info.value).lower()


def test_http_failure_is_attributed_to_its_range(http: _Server) -> None:
    src = http_source(http, data=DATA[:10_000])
    with pytest.raises(ShortReadError) as info:
        read_ranges_sync(src, [0, 50_000], [100, 50_100], keys=["good", "past"], max_gap_bytes=0)
    assert info.value.key == "past"
    assert "1 other" not in str(info.value)


# -- RangeBatcher ----------------------------------------------------------------------------------


async def test_batcher_merges_1000_concurrent_reads(http: _Server) -> None:
    src = http_source(http)
    batcher = RangeBatcher()
    starts = np.arange(1000) * 200
    results = await asyncio.gather(
        *(batcher.read(src, int(a), int(a) + 100, key=f"c/{i}") for i, a in enumerate(starts))
    )
    assert [r.tobytes() for r in results] == [DATA[a : a + 100] for a in starts.tolist()]
    assert batcher.fetch_calls == 1
    assert len(http.log) == 1
    assert http.ranges() == [(0, 199_900)]


async def test_batcher_local_and_dedupe(tmp_path: Path) -> None:
    src = local_source(tmp_path)
    batcher = RangeBatcher()
    reads = [batcher.read(src, 10, 20, key=f"k{i}") for i in range(10)]
    reads += [batcher.read(src, 100_000, 100_050)]
    out = await asyncio.gather(*reads)
    assert all(v.tobytes() == DATA[10:20] for v in out[:10])
    assert out[0] is out[1]  # one read shared
    assert out[10].tobytes() == DATA[100_000:100_050]
    assert batcher.fetch_calls == 1


async def test_batcher_one_fetch_per_source(http: _Server, tmp_path: Path) -> None:
    a = http_source(http, "a.bin")
    b = http_source(http, "b.bin", DATA[::-1])
    batcher = RangeBatcher()
    out = await asyncio.gather(
        *(batcher.read(s, i * 10, i * 10 + 5) for i in range(50) for s in (a, b))
    )
    assert out[0].tobytes() == DATA[0:5]
    assert out[1].tobytes() == DATA[::-1][0:5]
    assert batcher.fetch_calls == 2
    assert sorted(p for p, _ in http.log) == ["/files/a.bin", "/files/b.bin"]


async def test_batcher_isolates_errors(tmp_path: Path) -> None:
    src = local_source(tmp_path, data=DATA[:1000])
    batcher = RangeBatcher(max_gap_bytes=10_000)
    results = await asyncio.gather(
        batcher.read(src, 0, 10, key="good0"),
        batcher.read(src, 990, 1010, key="bad"),
        batcher.read(src, 500, 510, key="good1"),
        return_exceptions=True,
    )
    assert results[0].tobytes() == DATA[0:10]
    assert results[2].tobytes() == DATA[500:510]
    assert isinstance(results[1], ShortReadError)
    assert results[1].key == "bad" and (results[1].start, results[1].end) == (990, 1010)
    assert batcher.fetch_calls == 1


async def test_batcher_turns(tmp_path: Path) -> None:
    src = local_source(tmp_path)

    async def late(b: RangeBatcher, start: int) -> memoryview:
        await asyncio.sleep(0)  # arrives one loop turn after the others
        return await b.read(src, start, start + 10)

    for turns, expected_calls in [(1, 2), (3, 1)]:
        batcher = RangeBatcher(turns=turns)
        out = await asyncio.gather(batcher.read(src, 0, 10), late(batcher, 20))
        assert out[1].tobytes() == DATA[20:30]
        assert batcher.fetch_calls == expected_calls


async def test_batcher_cancelled_waiter_does_not_cancel_others(http: _Server) -> None:
    src = http_source(http)
    batcher = RangeBatcher()
    t1 = asyncio.create_task(batcher.read(src, 0, 100))
    t2 = asyncio.create_task(batcher.read(src, 0, 100))
    await asyncio.sleep(0)
    t1.cancel()
    assert (await t2).tobytes() == DATA[:100]
    with pytest.raises(asyncio.CancelledError):
        await t1
    assert batcher.fetch_calls == 1


async def test_batcher_trivial_and_bad_ranges(tmp_path: Path) -> None:
    src = local_source(tmp_path)
    batcher = RangeBatcher()
    assert (await batcher.read(src, 5, 5)).tobytes() == b""
    with pytest.raises(ManifestError, match="'k'"):
        await batcher.read(src, 5, 4, key="k")
    assert batcher.fetch_calls == 0
    with pytest.raises(ValueError):
        RangeBatcher(turns=0)


def test_batcher_on_several_loops(http: _Server, tmp_path: Path) -> None:
    src_http = http_source(http)
    src_local = local_source(tmp_path)
    batcher = RangeBatcher()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        async def main() -> None:
            starts, ends = random_ranges(200, seed=seed)
            for src in (src_http, src_local):
                out = await asyncio.gather(
                    *(
                        batcher.read(src, a, b)
                        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
                    )
                )
                for v, a, b in zip(out, starts.tolist(), ends.tolist(), strict=True):
                    assert v.tobytes() == DATA[a:b]

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert batcher.fetch_calls == 8  # one per source per loop


def test_batcher_pickles() -> None:
    b = RangeBatcher(max_gap_bytes=5, max_request_bytes=100, turns=2)
    c = pickle.loads(pickle.dumps(b))
    assert (c.max_gap_bytes, c.max_request_bytes, c.turns) == (5, 100, 2)
    assert c.fetch_calls == 0


async def test_async_local_large_batch_uses_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = local_source(tmp_path)
    used: list[bool] = []
    real = asyncio.to_thread

    async def spy(*args: object, **kwargs: object) -> object:
        used.append(True)
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch.asyncio, "to_thread", spy)
    monkeypatch.setattr(fetch, "LOCAL_INLINE_MAX_BYTES", 1000)
    out = await read_ranges_async(src, [0], [500])
    assert out[0].tobytes() == DATA[:500] and not used
    out = await read_ranges_async(src, [0], [5000])
    assert out[0].tobytes() == DATA[:5000] and used == [True]


# -- read_range_sync: the single-range path ---------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "obstore_local", "memory"])
def test_read_range_sync(tmp_path: Path, kind: str) -> None:
    data = DATA[:1000]
    if kind == "local":
        src = local_source(tmp_path, data=data)
    elif kind == "obstore_local":
        src = obstore_local_source(tmp_path, data=data)
    else:
        src = memory_source(data=data)
    assert bytes(fetch.read_range_sync(src, 10, 20)) == data[10:20]
    assert bytes(fetch.read_range_sync(src, 5, 5)) == b""
    with pytest.raises(ShortReadError) as info:
        fetch.read_range_sync(src, 990, 1010, key="k/9")
    assert info.value.key == "k/9" and (info.value.start, info.value.end) == (990, 1010)
    with pytest.raises(ShortReadError):
        fetch.read_range_sync(src, 2000, 2010, key="k/10")
    with pytest.raises(ManifestError, match="'k/1'"):
        fetch.read_range_sync(src, 10, 5, key="k/1")


def test_read_range_sync_http(http: _Server) -> None:
    src = http_source(http)
    assert bytes(fetch.read_range_sync(src, 100, 200, key="a")) == DATA[100:200]
    assert http.ranges() == [(100, 200)]
    http.mode = "ignore_range"
    with pytest.raises(ShortReadError, match="'a'"):
        fetch.read_range_sync(src, 100, 200, key="a")
    http.files.clear()
    http.mode = "ok"
    with pytest.raises(ChunkReadError, match="'a'") as info:
        fetch.read_range_sync(src, 100, 200, key="a")
    assert not isinstance(info.value, ShortReadError)


@settings(max_examples=200, deadline=None)
@given(
    ranges=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 400)), max_size=64),
    gap=st.integers(0, 300),
    limit=st.integers(1, 2000),
)
def test_small_planner_matches_numpy(ranges: list[tuple[int, int]], gap: int, limit: int) -> None:
    s = [a for a, _ in ranges]
    e = [a + n for a, n in ranges]
    plan = plan_coalesced(s, e, max_gap_bytes=gap, max_request_bytes=limit)
    if len(s) >= 2:
        ms, me, group = fetch._plan_small(s, e, gap, limit)
    else:  # the one-range shortcut of _prepare
        ms, me, group = s, e, [0] * len(s)
    assert ms == plan.starts.tolist()
    assert me == plan.ends.tolist()
    assert group == plan.group.tolist()


def test_small_and_large_batches_agree(tmp_path: Path) -> None:
    src = local_source(tmp_path)
    starts, ends = random_ranges(200, seed=9)
    big = read_ranges_sync(src, starts, ends)  # numpy planner
    for k in range(0, 200, 50):  # python planner, 50 at a time
        small = read_ranges_sync(src, starts[k : k + 50].tolist(), ends[k : k + 50].tolist())
        assert [v.tobytes() for v in small] == [v.tobytes() for v in big[k : k + 50]]


@pytest.mark.parametrize("use_async", [False, True])
async def test_http_contiguous_run_is_split_by_max_request(http: _Server, use_async: bool) -> None:
    # obstore joins touching ranges even with coalesce=0: the split must survive that
    src = http_source(http)
    starts = np.arange(0, 20_000, 100)
    ends = starts + 100
    if use_async:
        out = await read_ranges_async(src, starts, ends, max_request_bytes=5_000)
    else:
        out = read_ranges_sync(src, starts, ends, max_request_bytes=5_000)
    assert b"".join(v.tobytes() for v in out) == DATA[:20_000]
    assert http.ranges() == [(a, a + 5_000) for a in range(0, 20_000, 5_000)]


@pytest.mark.parametrize("kind", ["local", "obstore_local", "memory"])
def test_absurd_length_is_not_allocated(tmp_path: Path, kind: str) -> None:
    # a manifest claiming a 1 TiB chunk must fail on the length check, not in malloc
    data = DATA[:1000]
    if kind == "local":
        src = local_source(tmp_path, data=data)
    elif kind == "obstore_local":
        src = obstore_local_source(tmp_path, data=data)
    else:
        src = memory_source(data=data)
    huge = 1 << 40
    with pytest.raises(ShortReadError) as info:
        read_ranges_sync(src, [10], [10 + huge], keys=["big"])
    assert info.value.key == "big"
    with pytest.raises(ShortReadError):
        fetch.read_range_sync(src, 10, 10 + huge, key="big")
    with pytest.raises(ShortReadError):
        # merged with a good neighbour: the neighbour's bytes are fine, the call still fails
        read_ranges_sync(src, [0, 10], [5, 10 + huge], keys=["ok", "big"], max_gap_bytes=100)


def test_absurd_length_over_http(http: _Server) -> None:
    src = http_source(http, data=DATA[:1000])
    with pytest.raises(ShortReadError, match="'big'"):
        read_ranges_sync(src, [10], [10 + (1 << 40)], keys=["big"])


async def test_http_reads_send_if_match_only_once_an_etag_is_pinned(http: _Server) -> None:
    src = http_source(http)
    http.etag = '"v1"'
    assert bytes(read_range_sync(src, 0, 4)) == DATA[:4]
    assert http.if_match == [None]
    src.pin_etag('"v1"')
    assert bytes(read_range_sync(src, 4, 8)) == DATA[4:8]
    got = await read_ranges_async(src, [0, 100], [4, 104], max_gap_bytes=0)
    assert [bytes(v) for v in got] == [DATA[:4], DATA[100:104]]
    assert http.if_match[1:] == ['"v1"'] * 3


@pytest.mark.parametrize("use_async", [False, True])
async def test_http_server_ignoring_if_match_with_another_etag_is_stale(
    http: _Server, use_async: bool
) -> None:
    """A server whose HEAD showed the recorded ETag but whose GET ignores If-Match and
    serves another version (its ETag says so): StaleReferenceError naming the file."""
    src = http_source(http)
    src.pin_etag('"v1"')
    http.etag = '"v2"'
    with pytest.raises(StaleReferenceError, match='ETag "v1" recorded') as info:
        if use_async:
            await read_ranges_async(src, [0, 100], [4, 104], max_gap_bytes=0)
        else:
            read_ranges_sync(src, [0, 100], [4, 104], max_gap_bytes=0)
    assert info.value.url == src.url
