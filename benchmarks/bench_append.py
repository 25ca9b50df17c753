"""Appending 1 file to a store of N files vs rebuilding the store from all N + 1.

    python benchmarks/bench_append.py [--files 1000] [--repeats 3]

Writes N + 1 small netCDF4 files (xarray defaults: ``air(time, y, x)`` float32 with a
``time`` coordinate, one time step per chunk), builds a store of the first N, then times

- ``append``: ``zm.append(store, last_file, dim="time")`` (parses one file), and
- ``rebuild``: ``zm.build(all_files, concat_dim="time").to_store(store, overwrite=True)``,

each the best of ``--repeats`` runs (the store is rebuilt from N files before each append),
checks that both stores hold the same hierarchy, and prints the ratio and the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

import zarr_manifest as zm


def write_files(folder: Path, count: int, steps: int = 4) -> list[str]:
    paths = []
    for i in range(count):
        path = folder / f"f{i:05d}.nc"
        time_values = np.arange(i * steps, (i + 1) * steps, dtype="f8")
        air = np.full((steps, 16, 16), i, dtype="f4")
        xr.Dataset(
            {"air": (("time", "y", "x"), air)},
            coords={"time": time_values, "y": np.arange(16.0), "x": np.arange(16.0)},
        ).to_netcdf(path, encoding={"air": {"chunksizes": (1, 16, 16)}})
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "data").mkdir()
        files = write_files(folder / "data", args.files + 1)
        store = folder / "store"
        appends, rebuilds = [], []
        for _ in range(args.repeats):
            zm.build(files[:-1], concat_dim="time").to_store(store, overwrite=True)
            start = time.perf_counter()
            zm.append(store, files[-1], dim="time")
            appends.append(time.perf_counter() - start)
            appended = zm.ManifestGroup.from_store(store)
            start = time.perf_counter()
            zm.build(files, concat_dim="time").to_store(store, overwrite=True)
            rebuilds.append(time.perf_counter() - start)
            assert zm.ManifestGroup.from_store(store) == appended
        load = os.getloadavg()
        print(f"store of {args.files} files, 1 file appended (best of {args.repeats}):")
        print(f"  append   {min(appends):8.3f} s")
        print(f"  rebuild  {min(rebuilds):8.3f} s")
        print(f"  ratio    {min(rebuilds) / min(appends):8.1f}x faster")
        print(f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
