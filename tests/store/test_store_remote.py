"""ManifestStore over remote sources: HTTP (`RangeServer`, with faults) and S3 (moto).

The data is one file of 256 zlib-compressed chunks (a 64x64 float32 array in 4x4 chunks)
between junk bytes, so a chunk read must use exactly the manifest's range.  Readahead
should make a whole-array read a handful of requests; faults must surface as
`ChunkReadError` / `ShortReadError`, never as wrong values; many concurrent readers, on
threads (sync API) or asyncio tasks (async API), must all read the right values.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.api.asynchronous as zarr_async
from obstore.store import S3Store
from zarr.core.buffer import default_buffer_prototype

from zarr_manifest import (
    ChunkManifest,
    ChunkReadError,
    ManifestArray,
    ManifestGroup,
    ManifestStore,
    ShortReadError,
    SourceNotAllowedError,
    SourceRegistry,
)
from zarr_manifest.testing import Faults, RangeServer, S3Server, fast_retry_config

pytestmark = pytest.mark.timeout(60)

PROTO = default_buffer_prototype()
SIDE, CHUNK = 64, 4
GRID = SIDE // CHUNK  # 16 x 16 = 256 chunks
FUSED = "zarr.core.codec_pipeline.FusedCodecPipeline"
PIPELINES = [{}, {"codec_pipeline.path": FUSED}]

VALUES = (np.arange(SIDE * SIDE, dtype="<f4").reshape(SIDE, SIDE) % 37) * 0.5 - 3


def _layout() -> tuple[bytes, dict[str, Any]]:
    """The data file and the manifest entries (without path) of its 256 chunks."""
    parts = [b"HEADER" * 20]
    entries: dict[str, Any] = {}
    pos = len(parts[0])
    for i in range(GRID):
        for j in range(GRID):
            block = VALUES[i * CHUNK : (i + 1) * CHUNK, j * CHUNK : (j + 1) * CHUNK]
            data = zlib.compress(np.ascontiguousarray(block).tobytes(), 1 + (i + j) % 9)
            entries[f"{i}.{j}"] = {"offset": pos, "length": len(data)}
            junk = bytes([i, j]) * 5  # a gap between chunks: readers must not include it
            parts += [data, junk]
            pos += len(data) + len(junk)
    return b"".join(parts), entries


DATA, ENTRIES = _layout()


def _group(ref: str) -> ManifestGroup:
    manifest = ChunkManifest(
        {key: {"path": ref, **entry} for key, entry in ENTRIES.items()}, shape=(GRID, GRID)
    )
    metadata = {
        "shape": [SIDE, SIDE],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [CHUNK, CHUNK]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "numcodecs.zlib", "configuration": {"level": 1}},
        ],
        "dimension_names": ["y", "x"],
    }
    return ManifestGroup(arrays={"a": ManifestArray(metadata, manifest)})


def _chunk_bytes(key: str) -> bytes:
    entry = ENTRIES[key]
    return DATA[entry["offset"] : entry["offset"] + entry["length"]]


def _read_all(store: ManifestStore, pipeline: dict[str, Any] | None = None) -> np.ndarray:
    with zarr.config.set(pipeline or {}):
        return zarr.open_array(store, path="a", mode="r")[...]


@pytest.fixture
def http(clean_range_server: RangeServer, serve_bytes: Callable[..., str]) -> HttpSetup:
    return HttpSetup(clean_range_server, clean_range_server.url_for(serve_bytes(DATA, "x.bin")))


class HttpSetup:
    """The server and the URL of the data file on it."""

    def __init__(self, server: RangeServer, url: str) -> None:
        self.server = server
        self.url = url
        self.path = url.removeprefix(server.url + "/")

    def store(self, *, retries: int = 2, **kwargs: Any) -> ManifestStore:
        """An in-memory group over the file, its server allowed with a fast retry config."""
        registry = SourceRegistry.from_urls(
            [self.server.url + "/"], retry_config=fast_retry_config(retries, timeout=5.0)
        )
        return ManifestStore(_group(self.url), registry=registry, **kwargs)

    def gets(self) -> int:
        return self.server.request_count(self.path, "GET")


# ---- HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", PIPELINES, ids=["default", "fused"])
def test_http_reads_equal(http: HttpSetup, pipeline: dict[str, Any]) -> None:
    store = ManifestStore(_group(http.url), allowed_prefixes=[http.server.url + "/"])
    assert not store._supports_sync_io  # remote: zarr's async path, which batches
    np.testing.assert_array_equal(_read_all(store, pipeline), VALUES)
    # the registered prefix is the one used (not one made for the file's directory)
    assert store.registry.prefixes == (http.server.url + "/",)


async def test_http_store_api(http: HttpSetup) -> None:
    store = http.store()
    assert (await store.get("a/c/3/5", PROTO)).to_bytes() == _chunk_bytes("3.5")
    assert store.get_sync("a/c/15/15").to_bytes() == _chunk_bytes("15.15")
    got = await store.get_partial_values(
        PROTO, [("a/c/0/1", None), ("a/c/9/2", None), ("a/c/0/0", None)]
    )
    assert [g.to_bytes() for g in got] == [_chunk_bytes(k) for k in ("0.1", "9.2", "0.0")]
    assert await store.getsize("a/c/4/4") == ENTRIES["4.4"]["length"]


def test_on_disk_store_needs_the_server_allowed(http: HttpSetup, tmp_path: Path) -> None:
    _group(http.url).to_store(tmp_path / "store")
    with pytest.raises(SourceNotAllowedError, match=r"a/c/0/0") as info:
        _read_all(ManifestStore(tmp_path / "store"))
    assert info.value.path == http.url
    assert http.server.request_count() == 0  # refused before any request
    allowed = ManifestStore(tmp_path / "store", allowed_prefixes=[http.server.url + "/"])
    np.testing.assert_array_equal(_read_all(allowed), VALUES)


@pytest.mark.parametrize("pipeline", PIPELINES, ids=["default", "fused"])
def test_readahead_makes_a_full_read_a_few_requests(
    http: HttpSetup, pipeline: dict[str, Any]
) -> None:
    # the plain view (virtual shards, chosen by default under the fused pipeline, read
    # a whole shard in one request with or without readahead)
    plain = {"virtual_shard_bytes": None}
    np.testing.assert_array_equal(_read_all(http.store(**plain), pipeline), VALUES)
    with_readahead = http.gets()
    assert 1 <= with_readahead <= 4, http.server.ranges(http.path)
    # Without readahead, only reads that happen to be concurrent are merged.
    http.server.reset_counters()
    np.testing.assert_array_equal(
        _read_all(http.store(readahead_bytes=0, **plain), pipeline), VALUES
    )
    without = http.gets()
    assert without > with_readahead
    # Every range asked for lies inside the file, none of them reads the header.
    for start, stop in http.server.ranges(http.path):
        assert len(DATA[:120]) <= start < stop <= len(DATA)


def test_503_is_retried(http: HttpSetup) -> None:
    http.server.set_faults(error_first=2, error_status=503)
    np.testing.assert_array_equal(_read_all(http.store(retries=3)), VALUES)
    statuses = [r.status for r in http.server.requests if r.path == http.path]
    assert statuses.count(503) == 2 and 206 in statuses


async def test_persistent_503_is_an_error(http: HttpSetup) -> None:
    http.server.set_faults(error_rate=1.0, error_status=503)
    store = http.store(retries=1)
    started = time.monotonic()
    with pytest.raises(ChunkReadError, match=r"a/c/2/3") as info:
        await store.get("a/c/2/3", PROTO)
    assert info.value.url == http.url
    with pytest.raises(ChunkReadError):
        await asyncio.to_thread(_read_all, store)
    assert time.monotonic() - started < 20


FAULTS = {
    "truncated-body": Faults(truncate_rate=1.0, truncate_keep=0.5),
    "longer-body": Faults(wrong_length=3),
    "shorter-body": Faults(wrong_length=-3),
    "range-ignored": Faults(ignore_range=True),
    "connection-reset": Faults(reset_rate=1.0),
}


def _exact_or_error(result: Any, key: str, *, must_fail: bool) -> None:
    """A read under a fault: an error naming the key, or (if allowed) the exact bytes."""
    if isinstance(result, BaseException):
        assert isinstance(result, ChunkReadError), repr(result)
        return
    assert not must_fail, f"{key}: a faulty response was taken as data"
    assert result.to_bytes() == _chunk_bytes(key.removeprefix("a/c/").replace("/", "."))


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_faults_are_errors_never_wrong_bytes(http: HttpSetup, fault: str) -> None:
    http.server.set_faults(FAULTS[fault])
    length_fault = fault in ("longer-body", "shorter-body", "range-ignored")
    # obstore's get_ranges trims a body longer than the range asked for to that range, so
    # the async paths (which use it) cannot see a longer body: for them its first bytes,
    # the right ones here, are the data.  A single get_range (get_sync) sees the length.
    trimmed = fault == "longer-body"
    for readahead in (4 * 1024 * 1024, 0):
        store = http.store(retries=1, readahead_bytes=readahead)
        with pytest.raises(ChunkReadError, match=r"a/c/7/7") as info:
            await asyncio.to_thread(store.get_sync, "a/c/7/7")
        assert not length_fault or isinstance(info.value, ShortReadError), info.value
        try:
            got: Any = await store.get("a/c/7/7", PROTO)
        except ChunkReadError as exc:
            assert "a/c/7/7" in str(exc)
            assert not length_fault or isinstance(exc, ShortReadError), exc
            got = exc
        _exact_or_error(got, "a/c/7/7", must_fail=not trimmed)
        keys = ["a/c/7/7", "a/c/7/8", "a/c/12/3"]
        try:
            values = await store.get_partial_values(PROTO, [(k, None) for k in keys])
        except ChunkReadError as exc:
            assert any(k in str(exc) for k in keys), exc
        else:
            # a merged response cut short still holds the ranges before the cut
            assert fault not in ("connection-reset", "range-ignored")
            for key, value in zip(keys, values, strict=True):
                _exact_or_error(value, key, must_fail=False)
        for pipeline in PIPELINES:
            try:
                values = await asyncio.to_thread(_read_all, store, pipeline)
            except ChunkReadError:
                continue
            assert trimmed, f"{fault}: zarr read the array despite the fault"
            np.testing.assert_array_equal(values, VALUES)


async def test_fault_on_one_request_only_is_retried_or_reported(http: HttpSetup) -> None:
    """A truncated first response: the read either fails or returns the right bytes."""
    http.server.set_faults(truncate_first=1)
    store = http.store(retries=2)
    try:
        got = await store.get("a/c/1/1", PROTO)
    except ChunkReadError:
        got = await store.get("a/c/1/1", PROTO)  # the fault is spent: now it reads
    assert got.to_bytes() == _chunk_bytes("1.1")


# ---- many readers at once -------------------------------------------------------------------


def _selections(n: int) -> list[tuple[slice, slice]]:
    rng = np.random.default_rng(42)
    out = []
    for _ in range(n):
        y0, x0 = rng.integers(0, SIDE - 1, size=2)
        y1, x1 = y0 + rng.integers(1, SIDE - y0 + 1), x0 + rng.integers(1, SIDE - x0 + 1)
        out.append((slice(int(y0), int(y1)), slice(int(x0), int(x1))))
    return out


def test_64_threads_with_the_sync_api(http: HttpSetup) -> None:
    http.server.set_faults(latency=0.005)
    store = http.store()
    selections = _selections(64)
    barrier = threading.Barrier(64, timeout=30)

    def read(sel: tuple[slice, slice]) -> np.ndarray:
        array = zarr.open_array(store, path="a", mode="r")
        barrier.wait()
        return array[sel]

    with ThreadPoolExecutor(64) as pool:
        results = [f.result(timeout=45) for f in [pool.submit(read, s) for s in selections]]
    for sel, got in zip(selections, results, strict=True):
        np.testing.assert_array_equal(got, VALUES[sel])
    # the readers shared the readahead block fetches
    assert http.gets() <= 8


async def test_64_tasks_with_the_async_api(http: HttpSetup) -> None:
    http.server.set_faults(latency=0.005)
    store = http.store()
    selections = _selections(64)

    async def read(sel: tuple[slice, slice]) -> Any:
        array = await zarr_async.open_array(store=store, path="a", mode="r")
        return await array.getitem(sel)

    results = await asyncio.wait_for(asyncio.gather(*(read(s) for s in selections)), 45)
    for sel, got in zip(selections, results, strict=True):
        np.testing.assert_array_equal(got, VALUES[sel])
    assert http.gets() <= 8


async def test_64_readers_of_chunks_over_a_faulty_server(http: HttpSetup) -> None:
    """Concurrent direct chunk reads while some responses are short: each read gets its
    chunk's exact bytes or an error."""
    # no merging (the chunks are 10 bytes apart): one request per chunk, some truncated
    store = http.store(retries=0, readahead_bytes=0, max_gap_bytes=0)
    keys = [f"{i}.{j}" for i in range(8) for j in range(8)]
    http.server.set_faults(Faults(truncate_rate=0.3, truncate_keep=0.5), seed=1)
    results = await asyncio.gather(
        *(store.get("a/c/" + k.replace(".", "/"), PROTO) for k in keys), return_exceptions=True
    )
    errors = 0
    for key, got in zip(keys, results, strict=True):
        if isinstance(got, BaseException):
            assert isinstance(got, ChunkReadError), got
            errors += 1
        else:
            assert got.to_bytes() == _chunk_bytes(key)
    truncated = sum(r.fault == "truncate" for r in http.server.requests)
    assert truncated > 0 and 0 < errors < len(keys)


# ---- S3 ---------------------------------------------------------------------------------------


def _s3_registry_config(s3: S3Server) -> dict[str, Any]:
    config = s3.obstore_config()
    return {
        "config": {k: v for k, v in config.items() if k != "client_options"},
        "client_options": config["client_options"],
    }


@pytest.mark.parametrize("pipeline", PIPELINES, ids=["default", "fused"])
def test_s3_store_and_data_in_the_bucket(
    s3_server: S3Server, s3_bucket: str, pipeline: dict[str, Any]
) -> None:
    _group("../data/x.bin").to_store(
        S3Store(s3_bucket, prefix="prefix", **s3_server.obstore_config())
    )
    s3_server.put_object(s3_bucket, "prefix/data/x.bin", DATA)
    # the plain view: chunk keys below name chunks whatever pipeline the array was opened with
    store = ManifestStore(
        f"s3://{s3_bucket}/prefix", virtual_shard_bytes=None, **s3_server.obstore_config()
    )
    assert not store._supports_sync_io
    np.testing.assert_array_equal(_read_all(store, pipeline), VALUES)
    group = zarr.open_group(store, mode="r")
    assert list(group.array_keys()) == ["a"]
    assert store.get_sync("a/c/2/2").to_bytes() == _chunk_bytes("2.2")
    assert store.get_sync("a/manifest.json") is None


async def test_s3_data_outside_the_root(s3_server: S3Server, s3_bucket: str) -> None:
    s3_server.put_object(s3_bucket, "elsewhere/x.bin", DATA)
    root = S3Store(s3_bucket, prefix="prefix", **s3_server.obstore_config())
    _group(f"s3://{s3_bucket}/elsewhere/x.bin").to_store(root)
    refused = ManifestStore(f"s3://{s3_bucket}/prefix", **s3_server.obstore_config())
    with pytest.raises(SourceNotAllowedError, match=r"elsewhere/x\.bin"):
        await refused.get("a/c/0/0", PROTO)
    registry = SourceRegistry.from_urls(
        [f"s3://{s3_bucket}/elsewhere/"], **_s3_registry_config(s3_server)
    )
    allowed = ManifestStore(
        f"s3://{s3_bucket}/prefix", registry=registry, **s3_server.obstore_config()
    )
    assert (await allowed.get("a/c/0/5", PROTO)).to_bytes() == _chunk_bytes("0.5")
    np.testing.assert_array_equal(await asyncio.to_thread(_read_all, allowed), VALUES)


async def test_s3_short_object_is_an_error(s3_server: S3Server, s3_bucket: str) -> None:
    _group("../data/x.bin").to_store(
        S3Store(s3_bucket, prefix="prefix", **s3_server.obstore_config())
    )
    s3_server.put_object(s3_bucket, "prefix/data/x.bin", DATA[: len(DATA) // 2])
    store = ManifestStore(f"s3://{s3_bucket}/prefix", **s3_server.obstore_config())
    assert (await store.get("a/c/0/0", PROTO)).to_bytes() == _chunk_bytes("0.0")
    with pytest.raises(ShortReadError, match=r"a/c/15/15"):
        await store.get("a/c/15/15", PROTO)
    with pytest.raises(ChunkReadError):
        await asyncio.to_thread(_read_all, store)


async def test_a_bad_neighbour_in_the_readahead_block_does_not_break_a_chunk(
    http: HttpSetup,
) -> None:
    """Chunk (15, 15) claims bytes past the end of the file; the readahead block holding it
    and its neighbours is short, yet the neighbours read, and (15, 15) fails alone."""
    group = _group(http.url)
    manifest = group["a"].manifest
    offsets = manifest.offsets.copy()
    lengths = manifest.lengths.copy()
    lengths[15, 15] = len(DATA) - int(offsets[15, 15]) + 50
    bad = ManifestArray(
        group["a"].metadata,
        ChunkManifest.from_arrays(paths=manifest.paths, offsets=offsets, lengths=lengths),
    )
    registry = SourceRegistry.from_urls([http.server.url + "/"], retry_config=fast_retry_config())
    store = ManifestStore(ManifestGroup(arrays={"a": bad}), registry=registry)
    keys = ["a/c/15/14", "a/c/15/15", "a/c/0/0"]
    results = await asyncio.gather(*(store.get(k, PROTO) for k in keys), return_exceptions=True)
    assert results[0].to_bytes() == _chunk_bytes("15.14")
    assert isinstance(results[1], ShortReadError) and "a/c/15/15" in str(results[1])
    assert results[2].to_bytes() == _chunk_bytes("0.0")


async def test_readahead_keeps_a_fetched_block_without_copying_it() -> None:
    """A block fetched on its own is cached as the read's own buffer (chunks are handed to
    zarr as slices of it); a block that is part of a larger merged read is copied out, so
    that the cache's bound counts every byte it keeps alive."""
    from types import SimpleNamespace

    from zarr_manifest.store._readahead import BlockCache

    alone = bytes(range(256)) * 16
    merged = bytes(range(256)) * 32

    class Batcher:
        async def read(self, source: Any, start: int, end: int, key: str) -> memoryview:
            if start == 0:
                return memoryview(alone)
            return memoryview(merged)[start - 4096 : end - 4096]

    cache = BlockCache(1 << 20)
    source: Any = SimpleNamespace(url="http://host/f.bin", store=None)
    first = await cache.get((0, 0, 4096), Batcher(), source, "a/c/0")
    assert first.obj is alone
    part = await cache.get((0, 4096, 6144), Batcher(), source, "a/c/1")
    assert bytes(part) == merged[:2048]
    assert memoryview(part.obj).nbytes == 2048
    # served from the cache the second time
    assert (await cache.get((0, 0, 4096), Batcher(), source, "a/c/0")).obj is alone
