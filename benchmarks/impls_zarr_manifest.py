"""zarr-manifest's implementations of every scenario, registered beside the peers'."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness import IMPLEMENTATIONS, Phase
from scenarios import a_full_read

FUSED = a_full_read.FUSED_PIPELINE
#: ManifestStore's ``virtual_shard_bytes`` for the "virtual shards" entries
SHARD_BYTES = 4 << 20


def _group_a(data: Any) -> Any:
    import zarr_manifest as zm

    return zm.open_virtual(str(data.path))


def read_a(
    config: dict[str, Any] | None, shard_bytes: int | None = None
) -> Callable[[Any], Callable[[], np.ndarray]]:
    """Scenario A: the HDF5 file built into an in-memory group, read through ManifestStore
    (with ``shard_bytes``: shown to zarr as virtual shards)."""

    def factory(data: Any) -> Callable[[], np.ndarray]:
        import zarr_manifest as zm

        store = zm.ManifestStore(_group_a(data), virtual_shard_bytes=shard_bytes)
        return a_full_read.zarr_reader(store, data.dataset, config)

    return factory


def read_r(
    concurrency: int | None, shard_bytes: int | None = None
) -> Callable[[Any], Callable[[], np.ndarray]]:
    """Scenario R: the same, with the file served over HTTP (built over HTTP too)."""

    def factory(data: Any) -> Callable[[], np.ndarray]:
        import zarr_manifest as zm

        group = zm.open_virtual(data.url, client_options={"allow_http": True})
        store = zm.ManifestStore(group, virtual_shard_bytes=shard_bytes)
        config = None if concurrency is None else {"async.concurrency": concurrency}
        return a_full_read.zarr_reader(store, data.local.dataset, config)

    return factory


def build_b(data: Any) -> dict[str, Any]:
    """Scenario B: build + combine along time (serial, like the peer), write kerchunk JSON."""
    import zarr_manifest as zm
    from zarr_manifest.writers.kerchunk import to_kerchunk

    assert data.workdir is not None
    out = data.workdir / "zarr-manifest.json"
    state: dict[str, Any] = {}

    def build() -> Any:
        state["group"] = zm.build([str(p) for p in data.files], concat_dim="time", load=["time"])
        return state["group"]

    def write() -> Path:
        to_kerchunk(state["group"], str(out), format="json", overwrite=True)
        return out

    return {"build+combine": build, "write kerchunk JSON": write}


def many_refs(data: Any) -> dict[str, Any]:
    """Scenario C: 1M references written as a manifest store, opened, read."""
    import zarr

    import zarr_manifest as zm

    assert data.workdir is not None
    out = data.workdir / "c.manifest"
    meta = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=data.shape,
        chunks=(1, 1),
        dtype=data.dtype,
        compressors=None,
        fill_value=0,
        dimension_names=["y", "x"],
    ).metadata

    def write() -> Path:
        if out.exists():
            shutil.rmtree(out)
        manifest = zm.ChunkManifest.from_arrays(
            paths=data.urls.reshape(data.shape),
            offsets=data.offsets.reshape(data.shape),
            lengths=data.lengths.reshape(data.shape),
        )
        zm.ManifestGroup(arrays={"data": zm.ManifestArray(meta, manifest)}).to_store(out)
        return out

    def open_array(shard_bytes: int | None = None) -> Any:
        store = zm.ManifestStore(
            out, allowed_prefixes=[str(data.directory)], virtual_shard_bytes=shard_bytes
        )
        return zarr.open_array(store, path="data", mode="r")

    phases: dict[str, Any] = {
        "write": Phase(write, repeats=1, warmup=False, per=data.count)
        if data.count >= 100_000
        else Phase(write, per=data.count),
        "open+first": lambda: open_array()[0, 0],
    }
    if data.full_read:

        def full() -> Any:
            with zarr.config.set(FUSED):
                return open_array()[...]

        def full_sharded() -> Any:
            with zarr.config.set(FUSED):
                return open_array(SHARD_BYTES)[...]

        phases["full read"] = Phase(full, repeats=1, warmup=False)
        phases["full read, virtual shards"] = Phase(full_sharded, repeats=1, warmup=False)
    return phases


def random_reader(shard_bytes: int | None) -> Callable[[Any], Callable[[Any], np.ndarray]]:
    """Random single-chunk reads through ManifestStore (default pipeline)."""

    def factory(data: Any) -> Callable[[Any], np.ndarray]:
        import zarr

        import zarr_manifest as zm

        store = zm.ManifestStore(_group_a(data), virtual_shard_bytes=shard_bytes)
        array = zarr.open_array(store, path=data.dataset, mode="r")
        return lambda sel: array[sel]

    return factory


IMPLEMENTATIONS["A"]["zarr-manifest (default pipeline)"] = read_a(None)
IMPLEMENTATIONS["A"]["zarr-manifest (fused pipeline)"] = read_a(FUSED)
IMPLEMENTATIONS["A"]["zarr-manifest (virtual shards, fused pipeline)"] = read_a(FUSED, SHARD_BYTES)
IMPLEMENTATIONS["R"]["zarr-manifest (zarr default concurrency)"] = read_r(None)
IMPLEMENTATIONS["R"]["zarr-manifest (concurrency 64)"] = read_r(64)
IMPLEMENTATIONS["R"]["zarr-manifest (virtual shards)"] = read_r(None, SHARD_BYTES)
IMPLEMENTATIONS["B"]["zarr-manifest"] = build_b
IMPLEMENTATIONS["C"]["zarr-manifest"] = many_refs
IMPLEMENTATIONS["random"]["zarr-manifest"] = random_reader(None)
IMPLEMENTATIONS["random"]["zarr-manifest (virtual shards)"] = random_reader(SHARD_BYTES)


def from_arrays(data: Any) -> dict[str, Any]:
    """Scenario F: `ChunkManifest.from_arrays` on the grid-shaped columns."""
    import zarr_manifest as zm
    from scenarios import f_from_arrays

    def build(paths: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> Any:
        return zm.ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)

    return f_from_arrays.phases(data, build)


IMPLEMENTATIONS["F"]["zarr-manifest"] = from_arrays


def build_at_scale(data: Any) -> tuple[str, Callable[[Any], Any]]:
    """Scenario B10k: `zarr_manifest.build` on the executor, combined along time."""
    import zarr_manifest as zm

    paths = [str(p) for p in data.files]

    def build(executor: Any) -> Any:
        return zm.build(paths, concat_dim="time", load=["time"], executor=executor)

    return "zarr_manifest.builders.hdf5", build


IMPLEMENTATIONS["B10k"]["zarr-manifest"] = build_at_scale
