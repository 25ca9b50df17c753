"""Virtual shards: ManifestStore(virtual_shard_bytes=...) shows arrays of many small chunks
as sharded arrays.  Every read is compared with what h5py reads from the file."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import orjson
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype

import zarr_manifest as zm
from zarr_manifest import ChunkReadError, ManifestStore, ShortReadError, StaleReferenceError
from zarr_manifest.store._virtual_shards import (
    MAX_CHUNKS_PER_SHARD,
    ShardLayout,
    chunks_per_shard,
)
from zarr_manifest.testing import RangeServer

PROTO = default_buffer_prototype()
FUSED = {"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"}
PIPELINES = [{}, FUSED]
SHAPE = (13, 50, 70)
CHUNKS = (4, 16, 16)  # a (4, 4, 5) grid of 4 KiB float32 chunks, edge chunks partial
CHUNK_BYTES = 4 * 16 * 16 * 4


def _values(dtype: str = "f4") -> np.ndarray:
    return (np.arange(np.prod(SHAPE)) % 1000 - 300).astype(dtype).reshape(SHAPE)


def _write_h5(path: Path, **kwargs: Any) -> np.ndarray:
    """An HDF5 file with dataset "v" (and return what h5py reads back)."""
    dtype = kwargs.pop("dtype", "f4")
    sparse = kwargs.pop("sparse", False)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("v", shape=SHAPE, chunks=CHUNKS, dtype=dtype, **kwargs)
        if sparse:  # only some chunks are written; the others stay unallocated
            ds[0:4, 0:16, :] = _values(dtype)[0:4, 0:16, :]
            ds[8:13, 40:50, 30:50] = 7
        else:
            ds[...] = _values(dtype)
    with h5py.File(path, "r") as f:
        return f["v"][...]


def _open(store: ManifestStore, pipeline: dict[str, Any] | None = None) -> zarr.Array:
    with zarr.config.set(pipeline or {}):
        return zarr.open_array(store, path="v", mode="r")


@pytest.fixture
def h5(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "a.h5"
    return path, _write_h5(path)


# ---- shard shape ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (CHUNK_BYTES, None),  # one chunk per shard: left as it is
        (2 * CHUNK_BYTES, (1, 1, 2)),
        (7 * CHUNK_BYTES, (1, 1, 5)),  # a whole row, not part of the next
        (16 * CHUNK_BYTES, (1, 3, 5)),  # partly over the second dimension: the first stays 1
        (1 << 30, (4, 4, 5)),  # capped by the grid
    ],
)
def test_chunks_per_shard(target: int, expected: tuple[int, ...] | None) -> None:
    assert chunks_per_shard(CHUNKS, (4, 4, 5), 4, target) == expected


def test_chunks_per_shard_is_capped_for_tiny_chunks() -> None:
    # a million 4-byte chunks fit 4 MiB, but zarr's bookkeeping per inner chunk would not
    assert chunks_per_shard((1, 1), (1000, 1000), 4, 4 << 20) == (65, 1000)
    assert MAX_CHUNKS_PER_SHARD >= 65 * 1000


def test_layout_runs_and_index() -> None:
    # chunks 0 and 1 follow each other in file 0, chunk 2 is absent, chunk 3 is elsewhere
    ids = np.array([0, 0, -1, 0, 1])
    offsets = np.array([100, 110, 0, 500, 0], dtype=np.uint64)
    lengths = np.array([10, 5, 0, 7, 3], dtype=np.uint64)
    layout = ShardLayout(ids, offsets, lengths)
    assert layout.data_size == 25
    assert layout.size == 25 + 5 * 16
    index = np.frombuffer(layout.index, dtype="<u8").reshape(5, 2)
    absent = 2**64 - 1
    assert index.tolist() == [[0, 10], [10, 5], [absent, absent], [15, 7], [22, 3]]
    assert layout.run_pids.tolist() == [0, 0, 1]
    assert layout.run_sources.tolist() == [100, 500, 0]
    assert layout.run_lengths.tolist() == [15, 7, 3]
    reads, index_part = layout.plan(12, 30)  # the end of a run, the next two, some index
    starts, ends, positions, _ = reads[0]
    assert (starts.tolist(), ends.tolist(), positions.tolist()) == ([112, 500], [115, 507], [0, 3])
    starts, ends, positions, _ = reads[1]
    assert (starts.tolist(), ends.tolist(), positions.tolist()) == ([0], [3], [10])
    assert index_part == (0, 5)


@st.composite
def _layouts(draw: st.DrawFn) -> tuple[list[bytes], list[tuple[int, int, int]], int, int]:
    """Two files, a shard's chunks referencing them (or absent), and a byte range."""
    files = [draw(st.binary(min_size=1, max_size=64)) for _ in range(2)]
    chunks = []
    for _ in range(draw(st.integers(0, 12))):
        pid = draw(st.integers(-1, 1))
        if pid < 0:
            chunks.append((-1, 0, 0))
            continue
        start = draw(st.integers(0, len(files[pid])))
        length = draw(st.integers(0, len(files[pid]) - start))
        chunks.append((pid, start, length))
    size = sum(n for p, _, n in chunks if p >= 0) + 16 * len(chunks)
    lo = draw(st.integers(0, size))
    return files, chunks, lo, draw(st.integers(lo, size))


@settings(max_examples=300, deadline=None)
@given(_layouts())
def test_layout_plan_assembles_any_range(
    case: tuple[list[bytes], list[tuple[int, int, int]], int, int],
) -> None:
    files, chunks, lo, hi = case
    ids = np.array([c[0] for c in chunks], dtype=np.int64)
    offsets = np.array([c[1] for c in chunks], dtype=np.uint64)
    lengths = np.array([c[2] for c in chunks], dtype=np.uint64)
    layout = ShardLayout(ids, offsets, lengths)
    expected = b"".join(files[p][a : a + n] for p, a, n in chunks if p >= 0) + layout.index
    assert layout.size == len(expected)
    out = bytearray(hi - lo)
    reads, (i0, i1) = layout.plan(lo, hi)
    for pid, (starts, ends, positions, _) in reads.items():
        for a, b, p in zip(starts.tolist(), ends.tolist(), positions.tolist(), strict=True):
            out[p : p + b - a] = files[pid][a:b]
    out[len(out) - (i1 - i0) :] = layout.index[i0:i1]
    assert bytes(out) == expected[lo:hi]


# ---- values --------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", PIPELINES, ids=["default", "fused"])
@pytest.mark.parametrize("per_shard", [2, 16, 1 << 20], ids=["pairs", "ragged", "whole"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "gzip", "shuffle": True, "dtype": "i2"},
        {"dtype": ">f8", "fillvalue": -1.0, "sparse": True},
    ],
    ids=["plain", "zlib-shuffle", "big-endian-sparse"],
)
def test_reads_equal_h5py(
    tmp_path: Path, options: dict[str, Any], per_shard: int, pipeline: dict[str, Any]
) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path, **options)
    target = per_shard * int(np.prod(CHUNKS)) * expected.dtype.itemsize
    store = ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=target)
    array = _open(store, pipeline)
    assert array.shards is not None
    assert array.chunks == CHUNKS  # the inner chunks are the file's chunks
    np.testing.assert_array_equal(array[...], expected)
    # partial reads: a corner, a slab across shards, points, a strided selection
    np.testing.assert_array_equal(array[12, 49, 69], expected[12, 49, 69])
    np.testing.assert_array_equal(array[3:9, 10:40, 5:66], expected[3:9, 10:40, 5:66])
    np.testing.assert_array_equal(array[::3, 7, ::2], expected[::3, 7, ::2])
    rows = [12, 0, 5, 5]
    np.testing.assert_array_equal(array.oindex[rows, :, 3], expected[rows, :, 3])


def test_without_option_nothing_changes(h5: tuple[Path, np.ndarray]) -> None:
    path, expected = h5
    store = ManifestStore(zm.open_virtual(str(path)))
    array = _open(store)
    assert array.shards is None and array.chunks == CHUNKS
    np.testing.assert_array_equal(array[...], expected)


def test_metadata_is_rewritten_as_sharding(h5: tuple[Path, np.ndarray]) -> None:
    path, _ = h5
    store = ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=16 * CHUNK_BYTES)
    doc = orjson.loads(store.get_sync("v/zarr.json").to_bytes())
    assert doc["chunk_grid"]["configuration"]["chunk_shape"] == [4, 48, 80]
    (codec,) = doc["codecs"]
    assert codec["name"] == "sharding_indexed"
    assert codec["configuration"]["chunk_shape"] == list(CHUNKS)
    assert codec["configuration"]["codecs"] == [
        {"name": "bytes", "configuration": {"endian": "little"}}
    ]
    assert codec["configuration"]["index_location"] == "end"
    assert "storage_transformers" not in doc


def test_xarray_reads_the_sharded_view(tmp_path: Path) -> None:
    values = np.arange(4 * 40 * 30, dtype="f4").reshape(4, 40, 30)
    path = tmp_path / "x.nc"
    xr.Dataset({"t": (("time", "y", "x"), values)}).to_netcdf(
        path, engine="netcdf4", encoding={"t": {"chunksizes": (1, 8, 10)}}
    )
    store = ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=8 * 8 * 10 * 4)
    with zarr.config.set(FUSED):
        ds = xr.open_zarr(store, consolidated=False, zarr_format=3)
        np.testing.assert_array_equal(ds["t"].values, values)
        assert ds["t"].encoding["shards"] == (1, 16, 30)  # 2 rows of 3 chunks
        # dask chunks of whole shards, as the README suggests
        shards = dict(zip(ds["t"].dims, ds["t"].encoding["shards"], strict=True))
        lazy = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=shards)
        assert lazy["t"].chunks == ((1,) * 4, (16, 16, 8), (30,))
        np.testing.assert_array_equal(lazy["t"].compute().values, values)


# ---- the Store API on shard keys ---------------------------------------------------------


async def test_shard_keys_sizes_and_ranges(h5: tuple[Path, np.ndarray]) -> None:
    path, _ = h5
    store = ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=16 * CHUNK_BYTES)
    # shards of (1, 3, 5) chunks over the (4, 4, 5) grid: 4 x 2 shards
    keys = sorted([k async for k in store.list_prefix("v/c/")])
    assert keys == [f"v/c/{i}/{j}/0" for i in range(4) for j in range(2)]
    whole = store.get_sync("v/c/1/1/0").to_bytes()
    # the edge shard holds 1 x 1 x 5 chunks of the grid, and an index of all 15 places
    assert len(whole) == 5 * CHUNK_BYTES + 15 * 16 == await store.getsize("v/c/1/1/0")
    assert await store.exists("v/c/3/1/0")
    assert not await store.exists("v/c/4/0/0")  # past the grid
    assert store.get_sync("v/c/4/0/0") is None
    for request in [RangeByteRequest(100, 9000), OffsetByteRequest(5000), SuffixByteRequest(240)]:
        part = await store.get("v/c/1/1/0", PROTO, request)
        assert part is not None
        if isinstance(request, RangeByteRequest):
            assert part.to_bytes() == whole[100:9000]
        elif isinstance(request, OffsetByteRequest):
            assert part.to_bytes() == whole[5000:]
        else:
            assert part.to_bytes() == whole[-240:]
    (got,) = await store.get_partial_values(PROTO, [("v/c/1/1/0", RangeByteRequest(7, 70))])
    assert got is not None and got.to_bytes() == whole[7:70]
    with pytest.raises(ChunkReadError, match="v/c/1/1/0"):
        store.get_sync("v/c/1/1/0", byte_range=RangeByteRequest(0, len(whole) + 1))
    total = sum([await store.getsize(k) for k in [*keys, "v/zarr.json"]])
    assert await store.getsize_prefix("v") == total


async def test_empty_shard_is_absent(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path, sparse=True, fillvalue=3.5)
    store = ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=7 * CHUNK_BYTES)
    keys = {k async for k in store.list_prefix("v/c/")}
    # only the chunks written hold data: rows 0 (grid 0, rows 0) and grid (2..3, 2..3, 1..3)
    assert "v/c/0/0/0" in keys and "v/c/1/0/0" not in keys
    assert not await store.exists("v/c/1/0/0")
    np.testing.assert_array_equal(_open(store, FUSED)[...], expected)


# ---- what stays unsharded ---------------------------------------------------------------


def test_sharded_and_rectilinear_arrays_stay_as_they_are(tmp_path: Path) -> None:
    values = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    source = tmp_path / "s.zarr"
    zarr.create_array(source, name="s", data=values, chunks=(8, 8), shards=(32, 32))
    group = zm.open_virtual(str(source), format="zarr")
    store = ManifestStore(group, virtual_shard_bytes=1 << 20)
    array = zarr.open_array(store, path="s", mode="r")
    assert array.shards == (32, 32) and array.chunks == (8, 8)
    np.testing.assert_array_equal(array[...], values)


@pytest.mark.parametrize("pipeline", PIPELINES, ids=["default", "fused"])
def test_variable_length_strings(tmp_path: Path, pipeline: dict[str, Any]) -> None:
    """Inner chunks of variable size (vlen-utf8) are read through zarr's per-chunk path."""
    values = np.array([f"s{i}" * (i % 5) for i in range(100)]).reshape(10, 10)
    source = zarr.create_array(
        tmp_path / "s.zarr", name="s", shape=(10, 10), chunks=(2, 2), dtype=str
    )
    source[...] = values
    store = ManifestStore(
        zm.open_virtual(str(tmp_path / "s.zarr"), format="zarr"), virtual_shard_bytes=1024
    )
    with zarr.config.set(pipeline):
        array = zarr.open_array(store, path="s", mode="r")
        assert array.shards == (6, 10)
        np.testing.assert_array_equal(array[...], values)
        np.testing.assert_array_equal(array[3:9, 1:4], values[3:9, 1:4])


def test_one_chunk_per_shard_stays_as_it_is(h5: tuple[Path, np.ndarray]) -> None:
    path, expected = h5
    store = ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=CHUNK_BYTES)
    array = _open(store)
    assert array.shards is None
    np.testing.assert_array_equal(array[...], expected)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "4MiB", "AUTO"])
def test_bad_option_is_refused(h5: tuple[Path, np.ndarray], bad: Any) -> None:
    with pytest.raises(ValueError, match="virtual_shard_bytes"):
        ManifestStore(zm.open_virtual(str(h5[0])), virtual_shard_bytes=bad)


# ---- the default: "auto" -----------------------------------------------------------------


def test_auto_shows_shards_to_the_fused_pipeline_only(h5: tuple[Path, np.ndarray]) -> None:
    path, expected = h5
    # made outside any config: the view is chosen when zarr first opens the array
    store = ManifestStore(zm.open_virtual(str(path)))
    fused = _open(store, FUSED)
    assert fused.shards is not None and fused.chunks == CHUNKS
    np.testing.assert_array_equal(fused[...], expected)
    # the view stays what it was when first opened, whatever the pipeline now
    again = _open(store)
    assert again.shards == fused.shards
    np.testing.assert_array_equal(again[...], expected)
    plain = _open(ManifestStore(zm.open_virtual(str(path))))
    assert plain.shards is None and plain.chunks == CHUNKS
    np.testing.assert_array_equal(plain[...], expected)
    later = _open(plain.store, FUSED)  # type: ignore[arg-type]
    assert later.shards is None
    np.testing.assert_array_equal(later[...], expected)


def test_auto_view_travels_with_a_pickled_store(h5: tuple[Path, np.ndarray]) -> None:
    path, expected = h5
    fused = _open(ManifestStore(zm.open_virtual(str(path))), FUSED)
    assert fused.shards is not None
    # a dask worker unpickles the array (sharded metadata) and its store under its own
    # config, here zarr's default: the store must keep serving shards, not chunks
    copy = pickle.loads(pickle.dumps(fused))
    np.testing.assert_array_equal(copy[...], expected)
    np.testing.assert_array_equal(copy[5:9, 20:40, 3:60], expected[5:9, 20:40, 3:60])
    again = pickle.loads(pickle.dumps(copy.store))  # and so does a copy of the copy
    assert _open(again).shards == fused.shards
    plain = _open(ManifestStore(zm.open_virtual(str(path))))
    with zarr.config.set(FUSED):
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(plain))[...], expected)


def _read_in_child(array: zarr.Array, queue: Any) -> None:
    try:
        queue.put(np.asarray(array[...]))
    except BaseException as exc:  # sent to the parent, which fails the test with it
        queue.put(repr(exc))


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_auto_view_survives_a_fork(h5: tuple[Path, np.ndarray]) -> None:
    import multiprocessing

    path, expected = h5
    fused = _open(ManifestStore(zm.open_virtual(str(path))), FUSED)
    assert fused.shards is not None
    np.testing.assert_array_equal(fused[...], expected)
    # the child rebuilds the store after the fork, under zarr's default config (the
    # parent's `config.set` has ended): the array it holds still asks for shards
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(fused, queue))
    child.start()
    got = queue.get(timeout=60)
    child.join(30)
    assert not isinstance(got, str), got
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("off", [None, 0])
def test_none_and_zero_turn_virtual_shards_off(h5: tuple[Path, np.ndarray], off: Any) -> None:
    path, expected = h5
    array = _open(ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=off), FUSED)
    assert array.shards is None
    np.testing.assert_array_equal(array[...], expected)


def test_auto_on_disk_and_listing(h5: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, expected = h5
    zm.open_virtual(str(path)).to_store(tmp_path / "s.manifest")
    store = ManifestStore(tmp_path / "s.manifest", allowed_prefixes=[str(path.parent)])
    with zarr.config.set(FUSED):
        group = zarr.open_group(store, mode="r")  # a listing looks at the array first
        array = group["v"]
        assert isinstance(array, zarr.Array) and array.shards is not None
        np.testing.assert_array_equal(array[...], expected)
    keys = [k for k in asyncio.run(_keys(store)) if "/c/" in k]  # shard keys are listed
    assert array.shards is not None
    assert len(keys) == np.prod([-(-s // n) for s, n in zip(SHAPE, array.shards, strict=True)])


def test_auto_leaves_large_chunks_alone(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    values = np.arange(2 * 512 * 640, dtype="f4").reshape(2, 512, 640)
    with h5py.File(path, "w") as f:  # chunks of 1.25 MiB: zarr's per-chunk cost is small
        f.create_dataset("v", data=values, chunks=(1, 512, 640))
    array = _open(ManifestStore(zm.open_virtual(str(path))), FUSED)
    assert array.shards is None
    np.testing.assert_array_equal(array[...], values)


@pytest.mark.parametrize("pipeline", PIPELINES, ids=["default", "fused"])
def test_single_chunk_reads_through_shards_equal_h5py(
    tmp_path: Path, pipeline: dict[str, Any]
) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path, compression="gzip", dtype=">i4", sparse=True, fillvalue=-3)
    store = ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=1 << 20)
    array = _open(store, pipeline)
    assert array.shards is not None
    rng = np.random.default_rng(5)
    for _ in range(40):  # whole inner chunks and parts of one, at random places
        i, j, k = (int(rng.integers(0, n)) for n in (4, 4, 5))
        whole = (slice(4 * i, 4 * i + 4), slice(16 * j, 16 * j + 16), slice(16 * k, 16 * k + 16))
        np.testing.assert_array_equal(array[whole], expected[whole])
        part = (min(4 * i + 1, 12), slice(16 * j + 3, 16 * j + 9), 16 * k)
        np.testing.assert_array_equal(array[part], expected[part])


def test_truncated_file_single_chunk_read_names_chunk_and_shard(
    h5: tuple[Path, np.ndarray],
) -> None:
    path, expected = h5
    group = zm.open_virtual(str(path), fingerprints=False)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3000)
    array = _open(ManifestStore(group, virtual_shard_bytes=1 << 30))
    failed = []
    for i, j, k in np.ndindex(4, 4, 5):  # one inner chunk at a time: one read of the file
        sel = (slice(4 * i, 4 * i + 4), slice(16 * j, 16 * j + 16), slice(16 * k, 16 * k + 16))
        try:
            np.testing.assert_array_equal(array[sel], expected[sel])
        except* ShortReadError as group:
            (exc,) = group.exceptions  # zarr's default pipeline raises it in a group
            assert f"v/c/{i}/{j}/{k} (in shard 'v/c/0/0/0')" in str(exc)
            failed.append((i, j, k))
    assert failed  # the chunks at the file's cut end


async def _keys(store: ManifestStore) -> list[str]:
    return [k async for k in store.list()]


# ---- on disk, split manifests, pickling ----------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["single", "split"])
def test_manifest_store_on_disk(h5: tuple[Path, np.ndarray], tmp_path: Path, split: bool) -> None:
    path, expected = h5
    root = tmp_path / "m.zarr"
    # regions of 3 x 3 x 2 chunks do not line up with shards of 1 x 3 x 5
    zm.open_virtual(str(path)).to_store(
        root,
        split_above=0 if split else None,
        region_shape=(3, 3, 2) if split else None,
    )
    assert (root / "v" / "manifest").is_dir() == split
    store = ManifestStore(root, allowed_prefixes=[str(tmp_path)], virtual_shard_bytes=16 << 12)
    for pipeline in PIPELINES:
        np.testing.assert_array_equal(_open(store, pipeline)[...], expected)
    again = pickle.loads(pickle.dumps(store))
    assert again == store
    assert again != ManifestStore(root, allowed_prefixes=[str(tmp_path)])
    np.testing.assert_array_equal(_open(again, FUSED)[1:3, 20:30], expected[1:3, 20:30])


# ---- errors -------------------------------------------------------------------------------


def test_truncated_file_names_the_chunk_and_shard(h5: tuple[Path, np.ndarray]) -> None:
    path, _ = h5
    group = zm.open_virtual(str(path), fingerprints=False)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3000)
    store = ManifestStore(group, virtual_shard_bytes=1 << 30)
    with pytest.raises(ShortReadError, match=r"v/c/\d+/\d+/\d+ \(in shard 'v/c/0/0/0'\)"):
        _open(store, FUSED)[...]
    with pytest.raises(ShortReadError):
        _open(store)[...]


def test_changed_file_is_stale(h5: tuple[Path, np.ndarray]) -> None:
    path, _ = h5
    group = zm.open_virtual(str(path))
    with open(path, "ab") as f:
        f.write(b"appended")
    store = ManifestStore(group, virtual_shard_bytes=1 << 20)
    with pytest.raises(StaleReferenceError, match=path.name):
        _open(store, FUSED)[...]


def test_lying_lengths_never_give_data(tmp_path: Path) -> None:
    source = tmp_path / "x.bin"
    source.write_bytes(np.arange(8, dtype="<i4").tobytes())
    manifest = zm.ChunkManifest(
        {
            "0": {"path": str(source), "offset": 0, "length": 16},
            "1": {"path": str(source), "offset": 16, "length": 1 << 40},  # 1 TiB
        },
        shape=(2,),
    )
    metadata = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(8,), chunks=(4,), dtype="<i4", compressors=None
    ).metadata
    group = zm.ManifestGroup(arrays={"v": zm.ManifestArray(metadata, manifest)})
    store = ManifestStore(group, virtual_shard_bytes=1 << 20)
    with pytest.raises(ChunkReadError, match="v/c/"):
        _open(store, FUSED)[...]


# ---- remote sources ---------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", PIPELINES, ids=["default", "fused"])
def test_http_reads_in_few_requests(
    clean_range_server: RangeServer,
    serve_bytes: Callable[..., str],
    tmp_path: Path,
    pipeline: dict[str, Any],
) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path)
    rel = serve_bytes(path.read_bytes(), "a.h5")
    url = clean_range_server.url_for(rel)
    group = zm.open_virtual(url, client_options={"allow_http": True})
    store = ManifestStore(
        group, allowed_prefixes=[clean_range_server.url + "/"], virtual_shard_bytes=1 << 30
    )
    clean_range_server.reset_counters()
    np.testing.assert_array_equal(_open(store, pipeline)[...], expected)
    # one shard: its chunks, written one after the other, come in one or two requests
    assert clean_range_server.request_count(rel, "GET") <= 3


# ---- any array, any layout: the sharded view reads what the plain view reads ---------------


@st.composite
def _arrays(draw: st.DrawFn) -> dict[str, Any]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 12)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    grid = tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    cells = int(np.prod(grid))
    return {
        "shape": shape,
        "chunks": chunks,
        "present": draw(st.lists(st.booleans(), min_size=cells, max_size=cells)),
        "order": draw(st.permutations(range(cells))),  # where each chunk lies in the file
        "per_shard": draw(st.integers(2, 64)),
        "compressed": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "selection": tuple(
            slice(draw(st.integers(0, n - 1)), draw(st.integers(1, n)), draw(st.integers(1, 3)))
            for n in shape
        ),
    }


@settings(max_examples=100, deadline=None)
@given(_arrays())
def test_sharded_view_equals_plain_view(tmp_path_factory: Any, case: dict[str, Any]) -> None:
    shape, chunks = case["shape"], case["chunks"]
    values = np.random.default_rng(case["seed"]).integers(-1000, 1000, shape).astype("<i4")
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if case["compressed"]:
        codecs.append({"name": "numcodecs.zlib", "configuration": {"level": 1}})
    encoder = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=shape,
        chunks=chunks,
        dtype="<i4",
        fill_value=-7,
        compressors=[zarr.codecs.numcodecs.Zlib(level=1)] if case["compressed"] else None,
    )
    encoder[...] = values
    metadata = encoder.metadata.to_dict() | {"codecs": codecs}
    grid = tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    blobs = {}
    for flat, index in enumerate(np.ndindex(*grid)):
        if case["present"][flat]:
            key = "c/" + "/".join(map(str, index))
            blobs[flat] = encoder.store_path.store._store_dict[key].to_bytes()  # type: ignore[attr-defined]
    path = tmp_path_factory.mktemp("shards") / "data.bin"
    entries, pos, parts = {}, 0, []
    for flat in case["order"]:
        if flat in blobs:
            index = np.unravel_index(flat, grid)
            entries[".".join(str(int(i)) for i in index)] = {
                "path": str(path),
                "offset": pos,
                "length": len(blobs[flat]),
            }
            parts += [blobs[flat], b"gap"]
            pos += len(blobs[flat]) + 3
    path.write_bytes(b"".join(parts))
    manifest = zm.ChunkManifest(entries, shape=grid)
    group = zm.ManifestGroup(arrays={"v": zm.ManifestArray(metadata, manifest)})
    itemsize = 4
    target = case["per_shard"] * int(np.prod(chunks)) * itemsize
    plain = zarr.open_array(ManifestStore(group), path="v", mode="r")
    sharded_store = ManifestStore(group, virtual_shard_bytes=target)
    expected = values.copy()
    for flat, index in enumerate(np.ndindex(*grid)):
        if not case["present"][flat]:
            expected[
                tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks, strict=True))
            ] = -7
    np.testing.assert_array_equal(plain[...], expected)
    sel = case["selection"]
    for pipeline in PIPELINES:
        with zarr.config.set(pipeline):
            sharded = zarr.open_array(sharded_store, path="v", mode="r")
            np.testing.assert_array_equal(sharded[...], plain[...])
            np.testing.assert_array_equal(sharded[sel], plain[sel])


def test_threads_read_shards_concurrently(h5: tuple[Path, np.ndarray]) -> None:
    """zarr's fused pipeline reads shards on a thread pool: many threads, one store."""
    from concurrent.futures import ThreadPoolExecutor

    path, expected = h5
    store = ManifestStore(zm.open_virtual(str(path)), virtual_shard_bytes=2 * CHUNK_BYTES)
    array = _open(store, FUSED)
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(64):
        lo = [int(rng.integers(0, n)) for n in SHAPE]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, SHAPE, strict=True)]
        boxes.append(tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))
    with zarr.config.set(FUSED), ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda box: array[box], boxes))
    for box, got in zip(boxes, results, strict=True):
        np.testing.assert_array_equal(got, expected[box])


# ---- netCDF-3 records: equally spaced slabs -------------------------------------------


def _write_records(path: Path, nrec: int = 300) -> dict[str, np.ndarray]:
    """A netCDF-3 file (scipy, xarray's defaults) of interleaved record variables; what
    scipy reads back."""
    import scipy.io

    rng = np.random.default_rng(3)
    ds = xr.Dataset(
        {
            "refl": (("time", "gate"), rng.integers(-999, 999, (nrec, 37), "i2")),
            "vel": (("time", "gate"), rng.normal(size=(nrec, 37)).astype("f4")),
        },
        coords={"time": np.arange(nrec) * 0.5},
    )
    ds.to_netcdf(path, engine="scipy", unlimited_dims=["time"])
    with scipy.io.netcdf_file(path, "r", mmap=False) as f:
        return {name: f.variables[name][...].copy() for name in ("refl", "vel")}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_record_slabs_read_as_one_range_per_shard(
    tmp_path: Path, pipeline: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # each record's slab was a range of its own, sliced and copied one by one
    from zarr_manifest.store import _shard_view

    path = tmp_path / "radar.nc"
    expected = _write_records(path)
    group = zm.open_virtual(path)
    assert len(group["refl"].manifest) == 300  # one chunk per record
    reads: list[tuple[int, int]] = []
    read_range = _shard_view.read_range_sync

    def counting(source: Any, start: int, end: int, **kwargs: Any) -> Any:
        reads.append((start, end))
        return read_range(source, start, end, **kwargs)

    monkeypatch.setattr(_shard_view, "read_range_sync", counting)
    monkeypatch.setattr(_shard_view, "read_ranges_into_sync", None)  # not range by range
    for name, values in expected.items():
        # 3 shards of 100 records
        store = ManifestStore(group, virtual_shard_bytes=100 * 37 * values.itemsize)
        reads.clear()
        with zarr.config.set(pipeline):
            array = zarr.open_array(store, path=name, mode="r")
            assert array.shards == (100, 37)
            np.testing.assert_array_equal(array[...], values, err_msg=name)
        # one span of 100 records per shard (shards may be read in any order)
        entries = group[name].manifest
        spans = [
            (entries[f"{r}.0"]["offset"], entries[f"{r + 99}.0"]["offset"] + values[0].nbytes)
            for r in (0, 100, 200)
        ]
        assert sorted(reads) == spans, name


def test_truncated_records_name_the_missing_record(tmp_path: Path) -> None:
    path = tmp_path / "radar.nc"
    _write_records(path)
    group = zm.open_virtual(path, fingerprints=False)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 100)  # the last record's vel slab, 148 bytes, is cut
    store = ManifestStore(group, virtual_shard_bytes=1 << 20)
    with pytest.raises(ShortReadError, match=r"vel/c/299/0 \(in shard 'vel/c/0/0'\)"):
        _open_named(store, "vel", FUSED)[...]
    np.testing.assert_array_equal(
        _open_named(store, "refl", FUSED)[...], _open_named(store, "refl")[...]
    )


def _open_named(store: ManifestStore, name: str, pipeline: dict[str, Any] | None = None) -> Any:
    with zarr.config.set(pipeline or {}):
        return zarr.open_array(store, path=name, mode="r")


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_remote_record_slabs_read_as_one_range_per_shard(
    clean_range_server: RangeServer,
    serve_bytes: Callable[..., str],
    tmp_path: Path,
    pipeline: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zarr_manifest.store import _shard_view

    path = tmp_path / "radar.nc"
    expected = _write_records(path)
    rel = serve_bytes(path.read_bytes(), "radar.nc")
    group = zm.open_virtual(
        clean_range_server.url_for(rel), client_options={"allow_http": True}, load=()
    )
    store = ManifestStore(
        group, allowed_prefixes=[clean_range_server.url + "/"], virtual_shard_bytes=1 << 30
    )
    asked: list[int] = []
    read_ranges = _shard_view.read_ranges_async

    async def counting(source: Any, starts: Any, ends: Any, **kwargs: Any) -> Any:
        asked.append(len(starts))
        return await read_ranges(source, starts, ends, **kwargs)

    monkeypatch.setattr(_shard_view, "read_ranges_async", counting)
    for name, values in expected.items():
        asked.clear()
        clean_range_server.reset_counters()
        np.testing.assert_array_equal(_open_named(store, name, pipeline)[...], values)
        assert clean_range_server.request_count(rel, "GET") == 1, name
        assert asked == [1], name  # the span, not 300 ranges sliced one by one
