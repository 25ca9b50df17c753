"""Combine many small virtual datasets: time and memory of `zarr_manifest.concat`.

Issue goal: 10,000 groups of 1,000 references (10M references) combine in seconds and
under 1 GB.  ``python benchmarks/bench_combine.py [--groups 10000] [--refs 1000]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np
import zarr

import zarr_manifest as zm


def make_groups(n_groups: int, refs: int) -> list[zm.ManifestGroup]:
    """One array of ``refs`` chunks (steps along time) per group, each in its own file, and
    an inline time coordinate."""
    meta = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(refs, 8),
        chunks=(1, 8),
        dtype="float32",
        compressors=None,
        dimension_names=["time", "x"],
    ).metadata
    offsets = (np.arange(refs, dtype=np.uint64) * 32).reshape(refs, 1)
    lengths = np.full((refs, 1), 32, dtype=np.uint64)
    groups = []
    for g in range(n_groups):
        manifest = zm.ChunkManifest.from_arrays(
            paths=f"file:///data/file_{g:05d}.bin", offsets=offsets, lengths=lengths
        )
        time_values = np.arange(g * refs, (g + 1) * refs, dtype="f8")
        groups.append(
            zm.ManifestGroup(
                arrays={
                    "air": zm.ManifestArray(meta, manifest),
                    "time": zm.InlineArray.from_numpy(time_values, dimension_names=["time"]),
                }
            )
        )
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--refs", type=int, default=1_000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    groups = make_groups(args.groups, args.refs)
    made = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    tracemalloc.start()
    t0 = time.perf_counter()
    combined = zm.concat(groups, "time", labels=[f"file_{g}" for g in range(len(groups))])
    took = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    refs = len(combined["air"].manifest)
    print(f"{args.groups} groups x {args.refs} references = {refs} references")
    print(f"  making the inputs: {made:.2f} s")
    print(f"  concat: {took:.2f} s, traced peak {peak / 2**20:.0f} MiB during concat")
    print(f"  peak RSS {rss_before:.0f} MiB before, {rss_after:.0f} MiB after")
    print(f"  load average {os.getloadavg()[0]:.1f}")
    assert refs == args.groups * args.refs


if __name__ == "__main__":
    main()
