"""Rectilinear chunk grids in run-length form are bounded before zarr expands them
(issue 13, item 8): ``[[1, 100000000]]`` in a 600-byte zarr.json took 1.7 GB and 29 s, and
larger counts raised a bare MemoryError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import zarr

import zarr_manifest as zm
import zarr_manifest.array
from zarr_manifest.errors import ManifestFormatError, MetadataError

HUGE = 10**12  # expanded by zarr, a list of 8 TB: refused before that, in no time


def _array_doc(edges: list[Any], shape: int, *, virtual: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [shape],
        "data_type": "int8",
        "chunk_grid": {
            "name": "rectilinear",
            "configuration": {"kind": "inline", "chunk_shapes": [edges]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
    }
    if virtual:
        doc["storage_transformers"] = [
            {"name": "chunk-manifest-json", "configuration": {"manifest": "./manifest.json"}}
        ]
        doc["chunk-manifest-json"] = {"must_understand": True}
    return doc


def _store(tmp_path: Path, edges: list[Any], shape: int, *, virtual: bool = True) -> Path:
    root = tmp_path / "s.manifest"
    (root / "a").mkdir(parents=True)
    (root / "zarr.json").write_bytes(orjson.dumps({"zarr_format": 3, "node_type": "group"}))
    doc = _array_doc(edges, shape, virtual=virtual)
    (root / "a" / "zarr.json").write_bytes(orjson.dumps(doc))
    if virtual:
        (root / "a" / "manifest.json").write_bytes(b"{}")
    assert (root / "a" / "zarr.json").stat().st_size < 1000
    return root


@pytest.mark.parametrize("virtual", [True, False], ids=["referenced", "inline"])
def test_manifest_store_refuses_huge_run_length(tmp_path: Path, virtual: bool) -> None:
    root = _store(tmp_path, [[1, HUGE]], HUGE, virtual=virtual)
    with pytest.raises(ManifestFormatError, match=r"a/zarr.json: .*1000000000000 chunk edges"):
        zarr.open_group(zm.ManifestStore(root), mode="r")["a"]


def test_from_store_refuses_huge_run_length(tmp_path: Path) -> None:
    root = _store(tmp_path, [[1, HUGE]], HUGE)
    with pytest.raises(ManifestFormatError, match="chunk edges") as info:
        zm.ManifestGroup.from_store(root)
    assert info.value.field == "chunk_grid"


def test_model_refuses_huge_run_length() -> None:
    doc = _array_doc([[1, HUGE], [2, HUGE]], 3 * HUGE, virtual=False)
    with pytest.raises(MetadataError, match="2000000000000 chunk edges"):
        zm.ManifestArray(doc, zm.ChunkManifest({}, shape=(1,)))


def test_the_limit_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the limit a grid reads (explicit edges and pairs count alike); one more is refused."""
    monkeypatch.setattr(zarr_manifest.array, "MAX_CHUNK_EDGES", 100)
    edges = [[2, 98], 1, 1]  # 100 edges covering 198 elements
    root = _store(tmp_path, edges, 198, virtual=False)
    data = np.arange(198, dtype="int8")
    with zarr.config.set({"array.rectilinear_chunks": True}):
        z = zarr.open_array(zarr.storage.LocalStore(root / "a"), mode="r+")
        z[...] = data
        got = zarr.open_group(zm.ManifestStore(root), mode="r")["a"][...]
    np.testing.assert_array_equal(got, data)
    (root / "a" / "zarr.json").write_bytes(
        orjson.dumps(_array_doc([[2, 98], 1, 1, 1], 199, virtual=False))
    )
    with pytest.raises(ManifestFormatError, match="101 chunk edges"):
        zarr.open_group(zm.ManifestStore(root), mode="r")["a"]
