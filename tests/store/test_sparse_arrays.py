"""Sparse arrays: a large chunk grid with few chunks stored (an HDF5 dataset mostly never
written; a GRIB hypercube of a few messages) is read without per-chunk work on the absent
chunks -- by zarr under either pipeline, by `ManifestStore.sparse_read` and the xarray
engine.  Values are compared with h5py's; the work with counts of store reads, not times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import xarray as xr
import zarr

import zarr_manifest as zm
from zarr_manifest import ManifestStore
from zarr_manifest.store import _nodes
from zarr_manifest.store._virtual_shards import sparse_chunks_per_shard

FUSED = {"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"}
SHAPE = (96, 64, 5)
CHUNKS = (1, 1, 5)  # a (96, 64, 1) grid: 6,144 chunks of 20 bytes
WRITTEN = [(3, 7), (3, 8), (40, 0), (41, 63), (95, 63), (60, 30), (61, 31), (10, 50)]


def _write_h5(path: Path) -> np.ndarray:
    """A chunked dataset (h5py's defaults) of which only the chunks in WRITTEN are
    allocated; what h5py reads back."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("v", shape=SHAPE, chunks=CHUNKS, dtype="f4")
        for n, (i, j) in enumerate(WRITTEN):
            ds[i, j, :] = np.arange(5) + 10 * n + 1
    with h5py.File(path, "r") as f:
        return f["v"][...]


@pytest.fixture
def sparse(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "sparse.h5"
    return path, _write_h5(path)


class _Counts:
    """Store reads of chunk keys that found bytes, such reads in all, the bytes they
    returned (a shard's index has 16 bytes per inner chunk, each of which zarr then
    decodes or fills one by one), and shard layouts assembled."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.found = self.reads = self.layouts = self.bytes = 0
        real_get, real_get_sync = ManifestStore.get, ManifestStore.get_sync
        real_layout = _nodes.ShardLayout

        async def get(store: ManifestStore, key: str, *args: Any, **kwargs: Any) -> Any:
            return self._count(key, await real_get(store, key, *args, **kwargs))

        def get_sync(store: ManifestStore, key: str, *args: Any, **kwargs: Any) -> Any:
            return self._count(key, real_get_sync(store, key, *args, **kwargs))

        def layout(*args: Any) -> Any:
            self.layouts += 1
            return real_layout(*args)

        monkeypatch.setattr(ManifestStore, "get", get)
        monkeypatch.setattr(ManifestStore, "get_sync", get_sync)
        monkeypatch.setattr(_nodes, "ShardLayout", layout)

    def _count(self, key: str, value: Any) -> Any:
        if "/c/" in key or key.startswith("c/"):
            self.reads += 1
            self.found += value is not None
            self.bytes += 0 if value is None else len(value)
        return value


def test_shard_shape_leaves_most_shards_empty() -> None:
    grid = (124, 124, 92, 1, 1)  # ncep-seasonal-monthly.grib: 372 messages
    stored = np.array(
        [(n, (n * 7) % 124, s + (n % 3), 0, 0) for n in range(124) for s in (0, 31, 61)]
    )
    counts = sparse_chunks_per_shard(stored, (1, 1, 1, 7, 12), grid, 4, 4 << 20)
    assert counts is not None
    held = len(np.unique(stored // np.array(counts), axis=0))
    shards = np.prod(-(-np.array(grid) // np.array(counts)))
    # far fewer keys than chunks, and the shards zarr decodes hold few cells in all
    assert shards * 32 < np.prod(grid)
    assert held * np.prod(counts) * 50 < np.prod(grid)
    # a dense grid, or a small one, is not sparse
    dense = np.argwhere(np.ones((64, 64, 2), dtype=bool))
    assert sparse_chunks_per_shard(dense, (1, 1, 8), (64, 64, 2), 4, 4 << 20) is None
    assert sparse_chunks_per_shard(stored[:3, :2], (1, 1), (60, 60), 4, 4 << 20) is None


@pytest.mark.parametrize("pipeline", [{}, FUSED], ids=["default", "fused"])
def test_zarr_reads_absent_shards_without_per_chunk_work(
    sparse: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch, pipeline: dict[str, Any]
) -> None:
    path, expected = sparse
    store = ManifestStore(zm.open_virtual(path), allowed_prefixes=[str(path.parent)])
    counts = _Counts(monkeypatch)
    with zarr.config.set(pipeline):
        array = zarr.open_array(store, path="v", mode="r")
        values = array[...]
    np.testing.assert_array_equal(values, expected)
    assert array.shards is not None  # shown as shards under zarr's default pipeline too
    grid_cells = np.prod(SHAPE) // np.prod(CHUNKS)
    # one store read per shard, few of them; only the shards holding a chunk are laid out
    assert counts.reads * 16 <= grid_cells, counts.reads
    assert counts.found <= len(WRITTEN)
    assert counts.layouts <= len(WRITTEN)
    # the shards zarr decodes inner chunk by inner chunk hold few chunks in all
    assert counts.bytes <= 16 * grid_cells / 8, counts.bytes


def test_sparse_read_equals_zarr_and_reads_only_stored_chunks(
    sparse: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, expected = sparse
    store = ManifestStore(zm.open_virtual(path), allowed_prefixes=[str(path.parent)])
    array = zarr.open_array(store, path="v", mode="r")
    keys: list[Any] = [
        (),
        (slice(None),),
        (3,),
        (-56, slice(None)),
        (slice(2, 62), slice(5, 40), 2),
        (41, 63, slice(1, 4)),
        (slice(0, 4), 7),
        (np.int64(95), -1),
    ]
    for key in keys:
        counts = _Counts(monkeypatch)
        values = store.sparse_read(array, key)
        np.testing.assert_array_equal(values, expected[key], err_msg=str(key))
        assert values.dtype == expected.dtype
        # two store reads per stored chunk (its shard's index, then the chunk), none for
        # the absent ones
        assert counts.reads <= 2 * len(WRITTEN), (key, counts.reads)
    # a selection zarr must make (steps, arrays) is zarr's
    np.testing.assert_array_equal(store.sparse_read(array, (slice(None, None, 2),)), expected[::2])


def test_sparse_read_leaves_refusing_missing_chunks_to_zarr(
    sparse: tuple[Path, np.ndarray],
) -> None:
    path, _ = sparse
    store = ManifestStore(zm.open_virtual(path), allowed_prefixes=[str(path.parent)])
    with zarr.config.set({"array.read_missing_chunks": False}):
        array = zarr.open_array(store, path="v", mode="r")
        with pytest.raises(zarr.errors.ChunkNotFoundError):
            store.sparse_read(array, (slice(0, 5),))


def test_xarray_engine_reads_only_stored_chunks(
    sparse: tuple[Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, expected = sparse
    zm.open_virtual(path).to_store(tmp_path / "store")
    counts = _Counts(monkeypatch)
    ds = xr.open_dataset(tmp_path / "store", engine="manifest", allowed_prefixes=[str(path.parent)])
    np.testing.assert_array_equal(ds["v"].values, expected)
    assert counts.reads <= 2 * len(WRITTEN)  # a shard index and a chunk per stored chunk
    grid_cells = np.prod(SHAPE) // np.prod(CHUNKS)
    assert counts.bytes <= 16 * grid_cells / 8, counts.bytes  # not whole shards' indexes
    # the plain view reads the same
    plain = xr.open_dataset(
        tmp_path / "store",
        engine="manifest",
        allowed_prefixes=[str(path.parent)],
        virtual_shard_bytes=None,
    )
    np.testing.assert_array_equal(plain["v"].values, expected)


def test_sparse_view_travels_with_a_pickled_store(sparse: tuple[Path, np.ndarray]) -> None:
    import pickle

    path, expected = sparse
    store = ManifestStore(zm.open_virtual(path), allowed_prefixes=[str(path.parent)])
    array = zarr.open_array(store, path="v", mode="r")
    # the copy serves the same keys (shards of the same shape) to the array unpickled
    copy = pickle.loads(pickle.dumps(array))
    assert copy.shards == array.shards is not None
    np.testing.assert_array_equal(copy[...], expected)
