"""Benchmark split manifests against a single manifest.json.

An int32 array of 1M tiny chunks (a 1000 x 1000 chunk grid of 2 x 2 chunks, 16 bytes each)
whose chunks lie back to back in 4 raw files.  The store is written twice: with one
manifest.json, and split (the default region shape, about 32k references per region).
Measured, best of ``--repeat``, each read with a fresh `ManifestStore` (no cached manifest):

- ``write``: `ManifestGroup.to_store`;
- ``open + first chunk``: ``zarr.open_array(ManifestStore(dir), path="a")`` and read the
  first chunk (checked against the data);
- ``open + last chunk``: the same for the last chunk (another region of the split form);
- ``read_group``: parse the whole manifest back (every region for the split form).

Usage::

    python benchmarks/bench_split.py [--side 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from zarr_manifest import ChunkManifest, ManifestStore
from zarr_manifest.array import ManifestArray
from zarr_manifest.format.hierarchy import read_group
from zarr_manifest.group import ManifestGroup

N_FILES = 4
CHUNK = (2, 2)


def make_group(side: int, root: Path) -> tuple[ManifestGroup, np.ndarray]:
    """A group with array "a" of ``side x side`` chunks, its data written under ``root``.

    Returns the group and the array's values.
    """
    shape = (side * CHUNK[0], side * CHUNK[1])
    values = np.arange(shape[0] * shape[1], dtype="<i4").reshape(shape)
    # chunk (i, j) as a row of a (side*side, 4) table, in C order of the grid
    blocks = values.reshape(side, CHUNK[0], side, CHUNK[1]).transpose(0, 2, 1, 3)
    blocks = np.ascontiguousarray(blocks).reshape(side * side, -1)
    nbytes = blocks.shape[1] * 4
    file_of = np.arange(side * side) * N_FILES // (side * side)
    (root / "data").mkdir(parents=True)
    offsets = np.empty(side * side, dtype=np.int64)
    for f in range(N_FILES):
        sel = np.flatnonzero(file_of == f)
        (root / "data" / f"part{f}.bin").write_bytes(blocks[sel].tobytes())
        offsets[sel] = np.arange(sel.size) * nbytes
    names = np.array(
        [(root / "data" / f"part{f}.bin").as_posix() for f in range(N_FILES)],
        dtype=np.dtypes.StringDType(),
    )
    manifest = ChunkManifest.from_arrays(
        paths=names[file_of].reshape(side, side),
        offsets=offsets.reshape(side, side),
        lengths=np.full((side, side), nbytes),
    )
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNK)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
    }
    return ManifestGroup(arrays={"a": ManifestArray(meta, manifest)}), values


def best(fn: Callable[[], Any], repeat: int) -> float:
    """The best wall time of ``repeat`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(repeat):
        gc.collect()  # not the previous step's garbage
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def read_chunk(store_dir: Path, allowed: str, index: tuple[int, int], want: np.ndarray) -> None:
    """Open the array through a fresh store and read one chunk (checked)."""
    store = ManifestStore(store_dir, allowed_prefixes=[allowed])
    a = zarr.open_array(store, path="a", mode="r")
    sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, CHUNK, strict=True))
    got = a[sel]
    if not np.array_equal(got, want[sel]):
        raise AssertionError(f"chunk {index} read wrong values")


def main(argv: list[str] | None = None) -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1000, help="chunks along each dimension")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    side = args.side
    tmp = Path(tempfile.mkdtemp(prefix="bench-split-"))
    try:
        group, values = make_group(side, tmp)
        allowed = (tmp / "data").as_uri() + "/"
        forms = {"single": None, "split": 0}
        rows: dict[str, dict[str, float]] = {}
        for form, split_above in forms.items():
            dest = tmp / form

            def write(dest: Path = dest, split_above: int | None = split_above) -> None:
                group.to_store(dest, overwrite=True, split_above=split_above)

            row = {"write": best(write, args.repeat)}
            read_chunk(dest, allowed, (1, 1), values)  # warm up zarr's and numpy's code paths
            row["open + first chunk"] = best(
                lambda d=dest: read_chunk(d, allowed, (0, 0), values), args.repeat
            )
            row["open + last chunk"] = best(
                lambda d=dest: read_chunk(d, allowed, (side - 1, side - 1), values), args.repeat
            )
            row["read_group"] = best(lambda d=dest: read_group(d), args.repeat)
            files = [p for p in (dest / "a").rglob("*.json") if p.name != "zarr.json"]
            row["manifest files"] = len(files)
            row["manifest MB"] = sum(p.stat().st_size for p in files) / 1e6
            rows[form] = row
            print(form, {k: round(v, 4) for k, v in row.items()}, flush=True)
        # both forms hold the same references (absolute paths were written as file:// URLs)
        assert read_group(tmp / "split")["a"].manifest == read_group(tmp / "single")["a"].manifest
        print(f"{side * side:,} references ({side} x {side} chunk grid), best of {args.repeat}")
        names = list(rows["single"])
        print(f"{'':22s}" + "".join(f"{form:>12s}" for form in rows))
        for name in names:
            cells = "".join(
                f"{rows[form][name]:>12.0f}"
                if name == "manifest files"
                else f"{rows[form][name]:>12.4f}"
                for form in rows
            )
            unit = "" if name.startswith("manifest") else " s"
            print(f"{name + unit:22s}{cells}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
