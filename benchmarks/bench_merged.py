"""The merged-chunk view's trade-off: chunks merged (k) vs full read vs random p50.

Under zarr's default codec pipeline, for scenario A's array (float32 (64, 512, 512), chunks
(4, 32, 32), raw or zlib+shuffle) and C100k's (int32 (316, 316), chunks (1, 1), 4 raw
files): the plain view, a zarr MemoryStore holding the same (uncompressed) chunks, and
``ManifestStore(merged_chunk_bytes=B)`` for several budgets B.  Random single-chunk reads
are interleaved (each position read through every variant, in shuffled order), so load
swings hit all variants alike; full reads too (best of ``--full``).

    python benchmarks/bench_merged.py A 32768,65536,131072,262144
    python benchmarks/bench_merged.py AZ 32768,65536,131072
    python benchmarks/bench_merged.py C100k 8,16,32,64,128 --random 600 --full 1
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

import zarr_manifest as zm


def _scenario_a(directory: Path, compressed: bool) -> tuple[Any, np.ndarray, tuple[int, ...]]:
    values = np.random.default_rng(0).random((64, 512, 512), dtype="float32")
    if compressed:
        values = np.round(values * 100) / 100  # compressible, as real data is
    options: dict[str, Any] = {"compression": "gzip", "shuffle": True} if compressed else {}
    path = directory / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=values, chunks=(4, 32, 32), **options)
    return zm.open_virtual(str(path)), values, (4, 32, 32)


def _scenario_c100k(
    directory: Path, side: int = 316, files: int = 4
) -> tuple[Any, np.ndarray, tuple[int, ...]]:
    values = (np.arange(side * side, dtype="<i4") + 7).reshape(side, side)
    blocks = np.array_split(values, files, axis=0)
    paths, offsets = [], []
    for k, block in enumerate(blocks):
        path = directory / f"part{k}.bin"
        block.tofile(path)
        paths.append(np.full(block.shape, str(path), dtype=object))
        offsets.append(np.arange(block.size, dtype=np.uint64).reshape(block.shape) * 4)
    metadata = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=values.shape,
        chunks=(1, 1),
        dtype="<i4",
        compressors=None,
        fill_value=0,
    ).metadata
    manifest = zm.ChunkManifest.from_arrays(
        paths=np.concatenate(paths).astype(np.dtypes.StringDType()),
        offsets=np.concatenate(offsets),
        lengths=np.full(values.shape, 4, dtype=np.uint64),
    )
    return zm.ManifestGroup(arrays={"data": zm.ManifestArray(metadata, manifest)}), values, (1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["A", "AZ", "C100k"])
    parser.add_argument("budgets", help="comma-separated merged_chunk_bytes values")
    parser.add_argument("--random", type=int, default=1500, help="random reads per variant")
    parser.add_argument("--full", type=int, default=3, help="full reads per variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.scenario == "C100k":
            group, values, chunks = _scenario_c100k(Path(tmp))
        else:
            group, values, chunks = _scenario_a(Path(tmp), args.scenario == "AZ")
        memory = zarr.storage.MemoryStore()
        zarr.create_array(
            memory,
            shape=values.shape,
            chunks=chunks,
            dtype=values.dtype,
            compressors=None,
            fill_value=0,
        )[...] = values

        def opener(budget: int | None) -> Callable[[], zarr.Array]:
            return lambda: zarr.open_array(
                zm.ManifestStore(group, merged_chunk_bytes=budget), path="data", mode="r"
            )

        openers = {"MemoryStore": lambda: zarr.open_array(memory, mode="r"), "plain": opener(None)}
        for budget in (int(b) for b in args.budgets.split(",")):
            openers[f"{budget} B"] = opener(budget)
        _measure(openers, values, chunks, args.random, args.full)


def _measure(
    openers: dict[str, Callable[[], zarr.Array]],
    values: np.ndarray,
    chunks: tuple[int, ...],
    count: int,
    full: int,
) -> None:
    arrays = {name: open_() for name, open_ in openers.items()}
    for array in arrays.values():
        array[(0,) * array.ndim]  # manifests parsed, files opened
    grid = [-(-s // c) for s, c in zip(values.shape, chunks, strict=True)]
    rng, shuffle = np.random.default_rng(1), random.Random(0)
    names = list(arrays)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(count):
        at = [int(rng.integers(0, g)) for g in grid]
        selection = tuple(slice(i * c, (i + 1) * c) for i, c in zip(at, chunks, strict=True))
        shuffle.shuffle(names)
        for name in names:
            start = time.perf_counter()
            arrays[name][selection]
            latencies[name].append(time.perf_counter() - start)
    reads: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(full):
        shuffle.shuffle(names)
        for name in names:
            array = openers[name]()  # a new store: no state carried over
            start = time.perf_counter()
            got = array[...]
            reads[name].append(time.perf_counter() - start)
            assert np.array_equal(got, values), name
    memory_p50 = float(np.median(latencies["MemoryStore"]))
    plain_p50, plain_full = float(np.median(latencies["plain"])), min(reads["plain"])
    print(
        "| view | chunk shape | k | full read (best) | vs plain "
        "| random p50 | vs MemoryStore | vs plain |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in openers:
        p50, best = float(np.median(latencies[name])), min(reads[name])
        k = arrays[name].chunks[0] // chunks[0]
        print(
            f"| {name} | {arrays[name].chunks} | {k} | {best * 1e3:.0f} ms | "
            f"{plain_full / best:.1f}x | {p50 * 1e6:.0f} us | {p50 / memory_p50:.2f}x | "
            f"{p50 / plain_p50:.2f}x |"
        )


if __name__ == "__main__":
    main()
