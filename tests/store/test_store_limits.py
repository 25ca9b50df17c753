"""Resource limits of `ManifestStore` against small hostile or broken stores (issue 13):
what it keeps of parsed manifests, how large a chunk it reads, how listings scale with
depth, and how it survives pickling and forking."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype

import zarr_manifest.store._nodes as nodes_module
from zarr_manifest import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from zarr_manifest.store._manifest_cache import DEFAULT_MANIFEST_CACHE_BYTES

PROTO = default_buffer_prototype()
MiB = 1 << 20


def _meta(shape: list[int], chunks: list[int]) -> dict[str, Any]:
    return {
        "shape": shape,
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
    }


def _sparse_store(root: Path, arrays: int, cells: int, **to_store: Any) -> Path:
    """``arrays`` arrays of ``cells`` one-byte chunks, only chunk i stored (value i + 1):
    tiny files whose manifests take ``3 * cells`` bytes each once parsed."""
    root.mkdir()
    data = root / "data.bin"
    data.write_bytes(bytes(range(1, arrays + 1)))
    group = ManifestGroup(
        arrays={
            f"a{i}": ManifestArray(
                _meta([cells], [1]),
                ChunkManifest(
                    {str(i): {"path": str(data), "offset": i, "length": 1}}, shape=(cells,)
                ),
            )
            for i in range(arrays)
        }
    )
    store = root / "store"
    group.to_store(store, **to_store)
    return store


def _read_each(store: ManifestStore, arrays: int) -> None:
    for i in range(arrays):
        buf = store.get_sync(f"a{i}/c/{i}", prototype=PROTO)
        assert buf is not None and buf.to_bytes() == bytes([i + 1])


# ---- issue 13 item 7: what a store keeps of parsed manifests -------------------------------


def test_parsed_manifests_stay_within_the_cache_bound(tmp_path: Path) -> None:
    arrays, cells = 8, 1 << 20  # 3 MiB per parsed manifest, 24 MiB for all of them
    root = _sparse_store(tmp_path / "s", arrays, cells, split_above=None)
    store = ManifestStore(root, allowed_prefixes=[str(tmp_path)], manifest_cache_bytes=4 * MiB)
    gc.collect()
    tracemalloc.start()
    try:
        _read_each(store, arrays)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the bound plus the newest manifest, and some slack for everything else
    assert held < 4 * MiB + 3 * MiB + 2 * MiB, held
    assert store._manifests.size <= 4 * MiB or len(store._manifests) == 1
    # evicted manifests are parsed again when read again, and read the same
    _read_each(store, arrays)


def test_split_regions_are_evicted(tmp_path: Path) -> None:
    # regions are read with 4-byte columns: 3 MiB per region of 2^18 chunks, 18 MiB in all
    arrays, cells = 6, 1 << 19
    root = _sparse_store(tmp_path / "s", arrays, cells, split_above=0, region_shape=[1 << 18])
    store = ManifestStore(root, allowed_prefixes=[str(tmp_path)], manifest_cache_bytes=2 * MiB)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(2):
            _read_each(store, arrays)
            for i in range(arrays):  # the other region of each array
                assert store.get_sync(f"a{i}/c/{cells - 1}", prototype=PROTO) is None
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # at most the bound and the newest stay
    assert held < 2 * MiB + 3 * MiB + 2 * MiB, held
    assert store._manifests.size <= 2 * MiB or len(store._manifests) == 1


def test_manifests_are_kept_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real = ChunkManifest.from_json_bytes.__func__  # type: ignore[attr-defined]

    def counting(cls: type, data: bytes, **kwargs: Any) -> ChunkManifest:
        parsed.append(kwargs["location"])
        return real(cls, data, **kwargs)

    monkeypatch.setattr(nodes_module.ChunkManifest, "from_json_bytes", classmethod(counting))
    arrays, cells = 4, 1 << 16
    root = _sparse_store(tmp_path / "s", arrays, cells, split_above=None)
    store = ManifestStore(root, allowed_prefixes=[str(tmp_path)])
    assert store._manifests.limit == DEFAULT_MANIFEST_CACHE_BYTES == 1 << 30
    for _ in range(3):
        _read_each(store, arrays)
    assert len(parsed) == arrays  # each parsed once
    small = ManifestStore(root, allowed_prefixes=[str(tmp_path)], manifest_cache_bytes=0)
    parsed.clear()
    for _ in range(3):
        _read_each(small, arrays)
    assert len(parsed) == 3 * arrays  # read in turn, each is evicted before it is read again
    np.testing.assert_array_equal(
        zarr.open_array(small, path="a2", mode="r")[:4], np.array([0, 0, 3, 0], dtype=np.uint8)
    )


def test_manifest_cache_bytes_is_checked(tmp_path: Path) -> None:
    root = _sparse_store(tmp_path / "s", 1, 4)
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="manifest_cache_bytes"):
            ManifestStore(root, manifest_cache_bytes=bad)  # type: ignore[arg-type]
