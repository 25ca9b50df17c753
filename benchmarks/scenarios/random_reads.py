"""Scenario random: latency of single-chunk reads at random places of scenario A's array.

1,000 reads (quick: 100) of one whole chunk each, at chunk-grid positions drawn with a fixed
seed, so every implementation reads the same chunks in the same order; 20 reads first warm
up. Reported: latency percentiles p50/p95/p99 and mean, in milliseconds.

Data handed to factories: scenario A's :class:`~scenarios.a_full_read.ArrayFile`. A factory
returns ``read(selection) -> numpy array`` where ``selection`` is a tuple of slices
covering exactly one chunk (the array is opened once, in the factory).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from harness import (
    IMPLEMENTATIONS,
    RunConfig,
    Scenario,
    expect,
    latency_metrics,
    register_scenario,
)
from scenarios import a_full_read
from scenarios.a_full_read import ArrayFile

WARMUP_READS = 20
SEED = 1

Reader = Callable[[tuple[slice, ...]], np.ndarray]


def selections(data: ArrayFile, count: int) -> list[tuple[slice, ...]]:
    """``count`` one-chunk selections at random chunk positions (fixed seed)."""
    rng = np.random.default_rng(SEED)
    picks = np.stack([rng.integers(0, g, count) for g in data.chunk_grid], axis=1)
    bounds = list(zip(data.chunks, data.shape, strict=True))
    return [
        tuple(slice(i * c, min((i + 1) * c, s)) for i, (c, s) in zip(p, bounds, strict=True))
        for p in picks.tolist()
    ]


def measure(work: Reader, data: ArrayFile, config: RunConfig) -> dict[str, dict[str, Any]]:
    """Time each read separately; check every result against the data written (untimed)."""
    count = 100 if config.quick else 1000
    for sel in selections(data, WARMUP_READS):
        work(sel)
    samples = []
    for sel in selections(data, count):
        start = time.perf_counter()
        block = work(sel)
        samples.append(time.perf_counter() - start)
        expect(np.array_equal(np.asarray(block), data.expected[sel]), f"chunk at {sel} differs")
    return latency_metrics(samples)


def h5py_reader(data: ArrayFile) -> Iterator[Reader]:
    """h5py dataset slicing (file opened once)."""
    import h5py

    with h5py.File(data.path, "r") as f:
        dataset = f[data.dataset]
        yield lambda sel: dataset[sel]


def memory_reader(data: ArrayFile) -> Reader:
    """zarr array on a MemoryStore holding the same chunks (default codec pipeline)."""
    import zarr

    array = zarr.open_array(a_full_read.memory_store(data), path=data.dataset, mode="r")
    return lambda sel: array[sel]


def memory_fused_reader(data: ArrayFile) -> Reader:
    """The same MemoryStore, array opened and read with ``FusedCodecPipeline``."""
    import zarr

    fused = a_full_read.FUSED_PIPELINE
    with zarr.config.set(fused):
        array = zarr.open_array(a_full_read.memory_store(data), path=data.dataset, mode="r")

    def read(sel: tuple[slice, ...]) -> np.ndarray:
        with zarr.config.set(fused):
            return array[sel]

    return read


def virtualizarr_reader(data: ArrayFile) -> Reader:
    """zarr array on VirtualiZarr's ManifestStore (HDFParser, obstore LocalStore)."""
    import zarr
    from obstore.store import LocalStore

    store = a_full_read.virtualizarr_store(data.url, "file://", LocalStore())
    array = zarr.open_array(store, path=data.dataset, mode="r")
    return lambda sel: array[sel]


SCENARIO = register_scenario(
    Scenario(
        key="random",
        title="random single-chunk reads of scenario A's array: latency percentiles",
        baseline="h5py",
        params=a_full_read.params,
        generate=a_full_read.generate,
        load=a_full_read.load,
        measure=measure,
        cache_key="A",
    )
)

IMPLEMENTATIONS["random"]["h5py"] = h5py_reader
IMPLEMENTATIONS["random"]["zarr MemoryStore"] = memory_reader
IMPLEMENTATIONS["random"]["zarr MemoryStore (fused pipeline)"] = memory_fused_reader
IMPLEMENTATIONS["random"]["virtualizarr (zarr)"] = virtualizarr_reader
