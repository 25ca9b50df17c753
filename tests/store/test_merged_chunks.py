"""Merged chunks: ManifestStore(merged_chunk_bytes=...) shows an array's chunks merged along
the first axis, decoded by the store.  Every read is compared with the plain view and with
what h5py / netCDF4 read from the file."""

from __future__ import annotations

import asyncio
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import orjson
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype

import zarr_manifest as zm
from zarr_manifest import (
    ChecksumMismatchError,
    ChunkReadError,
    ManifestStore,
    ShortReadError,
)
from zarr_manifest.store._merged_chunks import chunks_per_merge
from zarr_manifest.testing import RangeServer

PROTO = default_buffer_prototype()
FUSED = {"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"}
SHAPE = (13, 50, 70)
CHUNKS = (4, 16, 16)  # a (4, 4, 5) grid, edge chunks partial on every axis
EXAMPLES = Path(__file__).resolve().parents[2] / "spec" / "examples" / "valid"


def _values(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    values = np.arange(int(np.prod(shape))) % 1000 - 300
    if np.dtype(dtype).kind == "b":
        return (values % 3 == 0).reshape(shape)
    return values.astype(dtype).reshape(shape)


def _write_h5(
    path: Path,
    shape: tuple[int, ...] = SHAPE,
    chunks: tuple[int, ...] = CHUNKS,
    sparse: bool = False,
    **kwargs: Any,
) -> np.ndarray:
    """An HDF5 file with dataset "v" (and return what h5py reads back)."""
    dtype = kwargs.pop("dtype", "f4")
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("v", shape=shape, chunks=chunks, dtype=dtype, **kwargs)
        if sparse:  # chunks of the first and last rows only; the others stay unallocated
            ds[: chunks[0]] = _values(shape, dtype)[: chunks[0]]
            ds[-1:] = _values(shape, dtype)[-1:]
        else:
            ds[...] = _values(shape, dtype)
    with h5py.File(path, "r") as f:
        return f["v"][...]


def _open(store: ManifestStore, pipeline: dict[str, Any] | None = None) -> zarr.Array:
    with zarr.config.set(pipeline or {}):
        return zarr.open_array(store, path="v", mode="r")


def _selections(shape: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """A corner, a slab across merged chunks, single rows at merged-chunk edges, strides."""
    last = tuple(s - 1 for s in shape)
    middle = tuple(slice(s // 4, s - s // 5) for s in shape)
    rows = tuple([slice(3, 9)] + [slice(None)] * (len(shape) - 1))
    strided = tuple([slice(None, None, 3)] + [slice(None, None, 2)] * (len(shape) - 1))
    edges = [(7,), (8,), (slice(7, 9),)] if shape[0] > 8 else []
    return [last, middle, rows, strided, *edges]


# ---- how many chunks are merged --------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunk_bytes", "rows", "target", "raw", "auto", "expected"),
    [
        (4096, 4, 4096, True, False, None),  # one chunk: not merged
        (4096, 4, 8192, True, False, 2),
        (4096, 4, 3 * 4096, True, False, 2),  # balanced: 2 + 2, not 3 + 1
        (4096, 4, 1 << 30, True, False, 4),  # capped by the grid
        (4096, 1, 1 << 30, True, False, None),  # one row of chunks: nothing to merge
        (4, 1000, 64 << 10, True, True, 16),  # auto: at most 16 chunks
        (4096, 1000, 64 << 10, False, True, 2),  # auto, compressed: 2 decodes
        (4, 4096 * 100, 1 << 30, True, False, 4096),  # never more than MAX_CHUNKS_PER_MERGE
        (100 << 20, 10, 1 << 40, True, False, 2),  # nor more than MAX_MERGED_BYTES
        (200 << 20, 10, 1 << 40, True, False, None),
    ],
)
def test_chunks_per_merge(
    chunk_bytes: int, rows: int, target: int, raw: bool, auto: bool, expected: int | None
) -> None:
    assert chunks_per_merge(chunk_bytes, rows, target, raw=raw, auto=auto) == expected


# ---- values: equal to h5py and to the plain view -------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"dtype": "f8"},
        {"dtype": "i2", "compression": "gzip", "shuffle": True},
        {"dtype": "u1"},
        {"dtype": "?"},
        {"dtype": "i8", "compression": "gzip"},
        {"dtype": ">f8"},  # stored raw big-endian: served in its byte order
        {"dtype": ">i4", "compression": "gzip", "shuffle": True},  # decoded: little-endian
        {"dtype": "f4", "fillvalue": -9.5, "sparse": True},
        {"dtype": "i2", "fillvalue": 7, "sparse": True, "compression": "gzip"},
        {"dtype": "c8"},
    ],
    ids=[
        "f4",
        "f8",
        "i2-zlib-shuffle",
        "u1",
        "bool",
        "i8-zlib",
        "big-endian-raw",
        "big-endian-zlib",
        "fill-missing",
        "fill-missing-zlib",
        "complex",
    ],
)
@pytest.mark.parametrize("merged", ["auto", 1 << 30, "two chunks"])
def test_reads_equal_h5py_and_the_plain_view(
    tmp_path: Path, options: dict[str, Any], merged: int | str
) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path, **options)
    if merged == "two chunks":
        merged = 2 * int(np.prod(CHUNKS)) * expected.dtype.itemsize
    group = zm.open_virtual(str(path))
    array = _open(ManifestStore(group, merged_chunk_bytes=merged))
    plain = _open(ManifestStore(group))
    assert plain.chunks == CHUNKS
    assert array.chunks[1:] == CHUNKS[1:] and array.chunks[0] in (8, 16)
    assert [type(c).__name__ for c in array.metadata.codecs] == ["BytesCodec"]
    np.testing.assert_array_equal(array[...], expected)
    np.testing.assert_array_equal(array[...], plain[...])
    for sel in _selections(SHAPE):
        np.testing.assert_array_equal(array[sel], expected[sel])
    rows = [12, 0, 5, 5, 8]
    np.testing.assert_array_equal(array.oindex[rows, :, 3], expected[rows, :, 3])
    assert array.fill_value == plain.fill_value or (
        np.isnan(array.fill_value) and np.isnan(plain.fill_value)
    )


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((1001,), (10,)), ((37, 5), (2, 5)), ((6, 3, 5, 7), (1, 2, 5, 3)), ((9, 4), (9, 4))],
    ids=["1-D", "2-D", "4-D", "one-chunk"],
)
def test_other_dimensions(tmp_path: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path, shape, chunks, dtype="i4", compression="gzip", fillvalue=3)
    array = _open(ManifestStore(zm.open_virtual(str(path)), merged_chunk_bytes=1 << 20))
    if shape[0] == chunks[0]:
        assert array.chunks == chunks  # one chunk along the first axis: shown as it is
    else:
        assert array.chunks[0] > chunks[0] and array.chunks[1:] == chunks[1:]
    np.testing.assert_array_equal(array[...], expected)
    for sel in _selections(shape):
        np.testing.assert_array_equal(array[sel], expected[sel])


@pytest.mark.parametrize(
    ("shape", "chunks", "sparse"),
    [((1001,), (10,), True), ((300, 1024), (1, 64), False), ((300, 1024), (1, 64), True)],
    ids=["near-one-another", "far-apart", "far-apart-sparse"],
)
def test_many_raw_chunks_per_merged_chunk(
    tmp_path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], sparse: bool
) -> None:
    """More chunks than are read one by one: small raw chunks near one another are read as
    one span and gathered, others read into place (coalesced)."""
    path = tmp_path / "a.h5"
    expected = _write_h5(path, shape, chunks, sparse=sparse, dtype="<i4", fillvalue=-1)
    group = zm.open_virtual(str(path))
    if sparse and np.prod(shape) // np.prod(chunks) >= 4096:
        # by default a sparse array of this many chunks is shown as sparse shards instead
        array = _open(ManifestStore(group, merged_chunk_bytes=1 << 20))
        assert array.shards is not None
    array = _open(ManifestStore(group, merged_chunk_bytes=1 << 20, virtual_shard_bytes=None))
    assert array.chunks[0] > 32 * chunks[0]
    np.testing.assert_array_equal(array[...], expected)
    for sel in _selections(shape):
        np.testing.assert_array_equal(array[sel], expected[sel])


def test_netcdf_written_by_xarray(tmp_path: Path) -> None:
    """A netCDF4 file with xarray's defaults plus zlib, a fill value and a time axis: read
    through zarr.open_group and xr.open_zarr, equal to what netCDF4 reads."""
    rng = np.random.default_rng(0)
    temp = rng.normal(280, 5, (30, 21, 17)).astype("f4")
    temp[3, 4, 5] = np.nan
    ds = xr.Dataset(
        {
            "temp": (("time", "y", "x"), temp),
            "count": (("time",), np.arange(30, dtype="i2")),
        },
        coords={"time": np.arange(30), "y": np.linspace(0, 1, 21), "x": np.arange(17)},
    )
    path = tmp_path / "x.nc"
    ds.to_netcdf(
        path,
        engine="netcdf4",
        encoding={
            "temp": {"zlib": True, "chunksizes": (2, 7, 17), "_FillValue": -999.0},
            "count": {"chunksizes": (4,)},
        },
    )
    store = ManifestStore(zm.open_virtual(str(path)), merged_chunk_bytes="auto")
    group = zarr.open_group(store, mode="r")
    assert group["temp"].chunks == (4, 7, 17)  # 2 compressed chunks of 2 rows
    assert group["count"].chunks == (32,)  # all 8 raw chunks of 4 values
    with xr.open_dataset(path, engine="netcdf4") as reference:
        merged = xr.open_zarr(store, consolidated=False, zarr_format=3)
        xr.testing.assert_identical(merged.load(), reference.load())
        np.testing.assert_array_equal(
            merged["temp"][5:11, 2:9].values, reference["temp"][5:11, 2:9]
        )


# ---- the option and its default ---------------------------------------------------------------


def test_default_is_the_plain_view(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path)
    store = ManifestStore(zm.open_virtual(str(path)))
    array = _open(store)
    assert array.chunks == CHUNKS and array.shards is None
    np.testing.assert_array_equal(array[...], expected)


def test_auto_merges_for_the_default_pipeline_only(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path)
    group = zm.open_virtual(str(path))
    fused = _open(ManifestStore(group, merged_chunk_bytes="auto"), FUSED)
    assert fused.shards is not None and fused.chunks == CHUNKS  # virtual shards instead
    np.testing.assert_array_equal(fused[...], expected)
    plain_fused = _open(
        ManifestStore(group, merged_chunk_bytes="auto", virtual_shard_bytes=None), FUSED
    )
    assert plain_fused.shards is None and plain_fused.chunks == CHUNKS
    store = ManifestStore(group, merged_chunk_bytes="auto")
    merged = _open(store)
    assert merged.chunks == (16, 16, 16)
    # the view stays what it was when first opened, whatever the pipeline now
    assert _open(store, FUSED).chunks == (16, 16, 16)
    np.testing.assert_array_equal(_open(store, FUSED)[...], expected)
    # a pickled copy (a dask worker's) keeps serving merged chunks under any config
    copy = pickle.loads(pickle.dumps(merged))
    with zarr.config.set(FUSED):
        np.testing.assert_array_equal(copy[...], expected)


def test_int_merges_under_any_pipeline_when_not_sharded(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path)
    group = zm.open_virtual(str(path))
    store = ManifestStore(group, merged_chunk_bytes=1 << 20, virtual_shard_bytes=None)
    array = _open(store, FUSED)
    assert array.chunks == (16, 16, 16)
    with zarr.config.set(FUSED):
        np.testing.assert_array_equal(array[...], expected)
    sharded = _open(ManifestStore(group, merged_chunk_bytes=1 << 20), FUSED)
    assert sharded.shards is not None  # "auto" virtual shards win under the fused pipeline


@pytest.mark.parametrize("bad", [-1, 1.5, True, "64KiB", "AUTO"])
def test_bad_option_is_refused(tmp_path: Path, bad: Any) -> None:
    path = tmp_path / "a.h5"
    _write_h5(path)
    with pytest.raises(ValueError, match="merged_chunk_bytes"):
        ManifestStore(zm.open_virtual(str(path)), merged_chunk_bytes=bad)


@pytest.mark.parametrize("off", [None, 0])
def test_none_and_zero_turn_it_off(tmp_path: Path, off: Any) -> None:
    path = tmp_path / "a.h5"
    _write_h5(path)
    assert _open(ManifestStore(zm.open_virtual(str(path)), merged_chunk_bytes=off)).chunks == CHUNKS


def test_metadata_document(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    _write_h5(path, dtype=">i4", compression="gzip", shuffle=True)
    store = ManifestStore(zm.open_virtual(str(path)), merged_chunk_bytes=1 << 20)
    doc = orjson.loads(store.get_sync("v/zarr.json").to_bytes())
    assert doc["chunk_grid"]["configuration"]["chunk_shape"] == [16, 16, 16]
    assert doc["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]
    assert "storage_transformers" not in doc
    assert doc["shape"] == list(SHAPE)


def test_strings_and_sharded_arrays_stay_as_they_are(tmp_path: Path) -> None:
    strings = np.array([f"s{i}" * (i % 5) for i in range(100)]).reshape(10, 10)
    source = zarr.create_array(
        tmp_path / "s.zarr", name="s", shape=(10, 10), chunks=(2, 2), dtype=str
    )
    source[...] = strings
    values = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    zarr.create_array(tmp_path / "s.zarr", name="t", data=values, chunks=(8, 8), shards=(32, 32))
    store = ManifestStore(
        zm.open_virtual(str(tmp_path / "s.zarr"), format="zarr"), merged_chunk_bytes=1 << 20
    )
    s = zarr.open_array(store, path="s", mode="r")
    assert s.chunks == (2, 2)
    np.testing.assert_array_equal(s[...], strings)
    t = zarr.open_array(store, path="t", mode="r")
    assert t.shards == (32, 32) and t.chunks == (8, 8)
    np.testing.assert_array_equal(t[...], values)


# ---- the Store API on merged keys ------------------------------------------------------------


def test_store_api_on_merged_keys(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    _write_h5(path, sparse=True)
    store = ManifestStore(zm.open_virtual(str(path)), merged_chunk_bytes=2 * 4 * 16 * 16 * 4)
    _open(store)
    merged_bytes = 8 * 16 * 16 * 4
    # merged rows 0 (holds the first chunk row) and 1 (the last, which holds row 12)
    assert asyncio.run(store.exists("v/c/0/0/0"))
    assert asyncio.run(store.exists("v/c/1/3/4"))
    assert asyncio.run(store.getsize("v/c/1/3/4")) == merged_bytes
    assert not asyncio.run(store.exists("v/c/2/0/0"))  # past the merged grid
    keys = asyncio.run(_listed(store, "v/"))
    assert "v/c/0/0/0" in keys and "v/zarr.json" in keys
    assert all(k == "v/zarr.json" or int(k.split("/")[2]) < 2 for k in keys)
    assert asyncio.run(store.getsize_prefix("v/c/")) == merged_bytes * (len(keys) - 1)
    whole = asyncio.run(store.get("v/c/0/1/2", PROTO))
    assert whole is not None and len(whole) == merged_bytes
    assert store.get_sync("v/c/0/1/2").to_bytes() == whole.to_bytes()  # type: ignore[union-attr]
    for request, part in [
        (RangeByteRequest(10, 4000), slice(10, 4000)),
        (OffsetByteRequest(8000), slice(8000, None)),
        (SuffixByteRequest(33), slice(-33, None)),
    ]:
        got = asyncio.run(store.get("v/c/0/1/2", PROTO, request))
        assert got is not None and got.to_bytes() == whole.to_bytes()[part]
    with pytest.raises(ChunkReadError):
        asyncio.run(store.get("v/c/0/1/2", PROTO, RangeByteRequest(0, merged_bytes + 1)))
    (batched,) = asyncio.run(store.get_partial_values(PROTO, [("v/c/0/1/2", None)]))
    assert batched is not None and batched.to_bytes() == whole.to_bytes()


async def _listed(store: ManifestStore, prefix: str) -> list[str]:
    return [k async for k in store.list_prefix(prefix)]


@pytest.mark.parametrize(
    "options",
    [{"compression": "gzip"}, {"dtype": ">f8"}, {"dtype": ">i2"}],
    ids=["zlib", "big-endian-f8", "big-endian-i2"],
)
def test_on_disk_store(tmp_path: Path, options: dict[str, Any]) -> None:
    """Read back from disk, a big-endian array's data type comes in the machine's byte order
    and only its bytes codec says "big": the raw merged chunk must be served as big."""
    path = tmp_path / "a.h5"
    expected = _write_h5(path, **options)
    zm.open_virtual(str(path)).to_store(tmp_path / "m")
    store = ManifestStore(
        tmp_path / "m", allowed_prefixes=[str(tmp_path)], merged_chunk_bytes=1 << 20
    )
    array = zarr.open_group(store, mode="r")["v"]
    assert array.chunks[0] > CHUNKS[0]  # merged
    np.testing.assert_array_equal(array[...], expected)
    np.testing.assert_array_equal(array[3:11, 2], expected[3:11, 2])


def test_netcdf3_record_variables(tmp_path: Path) -> None:
    """netCDF-3 is big-endian throughout; tiny record variables, one chunk a record, merged
    many to a chunk, equal to what scipy reads."""
    from scipy.io import netcdf_file

    n = 500
    rng = np.random.default_rng(5)
    values = {
        "azimuth": rng.uniform(0, 360, n).astype("f4"),
        "count": rng.integers(-30000, 30000, n).astype("i2"),
        "gate": rng.normal(size=(n, 7)).astype("f8"),
    }
    path = tmp_path / "records.nc"
    with netcdf_file(path, "w") as f:
        f.createDimension("time", None)
        f.createDimension("range", 7)
        for name, data in values.items():
            dims = ("time", "range") if data.ndim == 2 else ("time",)
            f.createVariable(name, data.dtype, dims)[:] = data
    group = zm.open_virtual(str(path), load=())
    store = ManifestStore(group, merged_chunk_bytes=1 << 16)
    opened = zarr.open_group(store, mode="r")
    for name, data in values.items():
        array = opened[name]
        assert array.chunks[0] > 1, name  # one record a chunk in the file, merged here
        np.testing.assert_array_equal(array[...], data, err_msg=name)
        np.testing.assert_array_equal(array[17:301:3], data[17:301:3], err_msg=name)


@pytest.mark.parametrize("split", [False, True], ids=["single", "split"])
def test_split_manifest_on_disk(tmp_path: Path, split: bool) -> None:
    path = tmp_path / "a.h5"
    expected = _write_h5(path, sparse=True)
    root = tmp_path / "m.zarr"
    # regions of 3 x 3 x 2 chunks do not line up with merged chunks of 2 rows
    zm.open_virtual(str(path)).to_store(
        root, split_above=0 if split else None, region_shape=(3, 3, 2) if split else None
    )
    assert (root / "v" / "manifest").is_dir() == split
    store = ManifestStore(root, allowed_prefixes=[str(tmp_path)], merged_chunk_bytes=2 << 12)
    array = _open(store)
    assert array.chunks == (8, 16, 16)
    np.testing.assert_array_equal(array[...], expected)
    np.testing.assert_array_equal(array[3:9, 20:30], expected[3:9, 20:30])


def test_remote_source(
    clean_range_server: RangeServer, serve_bytes: Callable[..., str], tmp_path: Path
) -> None:
    """Remote sources: each merged chunk's chunks fetched concurrently, then decoded."""
    path = tmp_path / "a.h5"
    expected = _write_h5(path, compression="gzip", fillvalue=2, sparse=True)
    raw_path = tmp_path / "b.h5"
    raw = _write_h5(raw_path)
    for name, values in (("a.h5", expected), ("b.h5", raw)):
        rel = serve_bytes((tmp_path / name).read_bytes(), name)
        group = zm.open_virtual(
            clean_range_server.url_for(rel), client_options={"allow_http": True}
        )
        store = ManifestStore(
            group, allowed_prefixes=[clean_range_server.url + "/"], merged_chunk_bytes=1 << 20
        )
        array = _open(store)
        assert array.chunks == (16, 16, 16)
        np.testing.assert_array_equal(array[...], values)
        np.testing.assert_array_equal(array[3:9, 20:30], values[3:9, 20:30])


# ---- errors: never wrong values ---------------------------------------------------------------


@pytest.mark.parametrize("merged", [1 << 20, "auto"])
def test_checksums_are_checked_per_chunk(tmp_path: Path, merged: int | str) -> None:
    root = tmp_path / "checksums"
    shutil.copytree(EXAMPLES / "checksums" / "store", root)
    entry = orjson.loads((EXAMPLES / "checksums" / "expected.json").read_bytes())["a"]
    expected = np.array(entry["values"], dtype=entry["dtype"]).reshape(entry["shape"])
    array = zarr.open_group(ManifestStore(root, merged_chunk_bytes=merged), mode="r")["a"]
    assert array.chunks[0] > 1
    np.testing.assert_array_equal(array[...], expected)
    # a gzip member's time stamp changed: same values, so only the checksum can tell
    data = bytearray((root / "data" / "a.bin").read_bytes())
    data[4] ^= 1
    (root / "data" / "a.bin").write_bytes(bytes(data))
    fresh = zarr.open_group(ManifestStore(root, merged_chunk_bytes=merged), mode="r")["a"]
    with pytest.raises(ChecksumMismatchError, match=r"a/c/0/0 \(in merged chunk 'a/c/0/0'\)"):
        fresh[1]


def test_wrong_length_of_a_raw_chunk_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "x.bin"
    source.write_bytes(np.arange(12, dtype="<i4").tobytes())
    manifest = zm.ChunkManifest(
        {
            "0": {"path": str(source), "offset": 0, "length": 16},
            "1": {"path": str(source), "offset": 16, "length": 12},  # one value short
            "2": {"path": str(source), "offset": 32, "length": 16},
        },
        shape=(3,),
    )
    metadata = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(12,), chunks=(4,), dtype="<i4", compressors=None
    ).metadata
    group = zm.ManifestGroup(arrays={"v": zm.ManifestArray(metadata, manifest)})
    array = _open(ManifestStore(group, merged_chunk_bytes=1 << 20))
    assert array.chunks == (12,)
    with pytest.raises(ChunkReadError, match=r"v/c/1 \(in merged chunk 'v/c/0'\).*12 bytes"):
        array[...]


def test_truncated_file_names_the_chunk(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    _write_h5(path)
    group = zm.open_virtual(str(path), fingerprints=False)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3000)
    store = ManifestStore(group, merged_chunk_bytes=1 << 20)
    with pytest.raises(
        ShortReadError, match=r"v/c/\d+/\d+/\d+ \(in merged chunk 'v/c/0/\d+/\d+'\)"
    ):
        _open(store)[...]


def test_undecodable_chunk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    _write_h5(path, compression="gzip")
    group = zm.open_virtual(str(path), fingerprints=False)
    manifest = group.arrays["v"].manifest
    # garbage in place of the first chunk's compressed bytes
    offset = int(manifest.offsets[0, 0, 0])
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * int(manifest.lengths[0, 0, 0]))
    with pytest.raises(ChunkReadError, match=r"v/c/0/0/0 \(in merged chunk 'v/c/0/0/0'\)"):
        _open(ManifestStore(group, merged_chunk_bytes=1 << 20))[...]


# ---- any array: the merged view equals the plain view ---------------------------------------


@st.composite
def _arrays(draw: st.DrawFn) -> dict[str, Any]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, s)) for s in shape)
    dtype = draw(st.sampled_from(["<i2", ">f8", "u1", "<f4", ">i4"]))
    compressed = draw(st.booleans())
    sparse = draw(st.booleans())
    budget = draw(st.integers(1, 4096))
    return {
        "shape": shape,
        "chunks": chunks,
        "dtype": dtype,
        "compressed": compressed,
        "sparse": sparse,
        "budget": budget,
    }


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_arrays())
def test_merged_view_equals_plain_view(tmp_path_factory: Any, case: dict[str, Any]) -> None:
    directory = tmp_path_factory.mktemp("m")
    path = directory / "a.h5"
    options: dict[str, Any] = {"dtype": case["dtype"], "fillvalue": 5}
    if case["compressed"]:
        options["compression"] = "gzip"
    shape, chunks = case["shape"], case["chunks"]
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("v", shape=shape, chunks=chunks, **options)
        values = _values(shape, case["dtype"])
        if case["sparse"]:
            ds[: chunks[0]] = values[: chunks[0]]
        else:
            ds[...] = values
    with h5py.File(path, "r") as f:
        expected = f["v"][...]
    group = zm.open_virtual(str(path))
    merged = _open(ManifestStore(group, merged_chunk_bytes=case["budget"]))
    np.testing.assert_array_equal(merged[...], expected)
    np.testing.assert_array_equal(merged[...], _open(ManifestStore(group))[...])
    cut = tuple(slice(s // 3, s) for s in shape)
    np.testing.assert_array_equal(merged[cut], expected[cut])
