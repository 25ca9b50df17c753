"""Benchmark `ChunkManifest` against VirtualiZarr's and kerchunk-style JSON references.

N references on a 2-D chunk grid (1000 x 1000 for the default N=1M) into 4 files, each file
holding a contiguous run of rows, chunk lengths 20-40 kB.  Measured (best of ``--repeat``):

- ``from_arrays``: build the manifest from grid-shaped path/offset/length columns;
- ``to_zarr_json`` / ``from_zarr_json``: write / read a manifest.json file;
- memory per reference: ``tracemalloc`` current bytes held once the manifest is built and
  its input columns are dropped, divided by N.

The same for ``virtualizarr.manifests.ChunkManifest.from_arrays`` (VirtualiZarr has no
manifest file of its own), and a kerchunk-style references dict
``{"a/i.j": [path, offset, length]}`` written and read with orjson.

Usage::

    python benchmarks/bench_manifest.py [--n 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from zarr_manifest import ChunkManifest

N_FILES = 4


def make_columns(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid-shaped ``(paths, offsets, lengths)``: 4 files, each a contiguous run of chunks."""
    rows = max(1, n // 1000)
    cols = max(1, n // rows)
    total = rows * cols
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20_000, 40_000, size=total, dtype=np.uint64)
    file_of = np.arange(total) * N_FILES // total
    names = np.array(
        [f"s3://benchmark-bucket/model/run/output_{i:04d}.nc" for i in range(N_FILES)],
        dtype=np.dtypes.StringDType(),
    )
    paths = names[file_of]
    offsets = np.empty(total, dtype=np.uint64)
    header = 4096
    for f in range(N_FILES):
        sel = file_of == f
        run = lengths[sel]
        # chunks of one file lie back to back after a header
        offsets[sel] = header + np.concatenate(([0], np.cumsum(run)[:-1])).astype(np.uint64)
    shape = (rows, cols)
    return paths.reshape(shape), offsets.reshape(shape), lengths.reshape(shape)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The shortest wall time of ``repeat`` calls, and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bytes_per_reference(build: Callable[[tuple[np.ndarray, ...]], Any], n: int) -> float:
    """Traced bytes still held by the built object after its inputs are dropped, per reference."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        columns = make_columns(n)
        built = build(columns)
        del columns
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del built
    return held / n


# ---- the implementations --------------------------------------------------------------------


def ours_from_arrays(columns: tuple[np.ndarray, ...]) -> ChunkManifest:
    paths, offsets, lengths = columns
    return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)


def vz_from_arrays(columns: tuple[np.ndarray, ...], validate_paths: bool = True) -> Any:
    from virtualizarr.manifests import ChunkManifest as VZManifest

    paths, offsets, lengths = columns
    return VZManifest.from_arrays(
        paths=paths, offsets=offsets, lengths=lengths, validate_paths=validate_paths
    )


def kerchunk_refs(columns: tuple[np.ndarray, ...]) -> dict[str, Any]:
    """A kerchunk version-1 ``refs`` dict for array ``a`` (one list per chunk)."""
    paths, offsets, lengths = columns
    keys = (f"a/{i}.{j}" for i, j in np.ndindex(paths.shape))
    refs: dict[str, Any] = {
        k: [p, o, n]
        for k, p, o, n in zip(
            keys,
            paths.reshape(-1).tolist(),
            offsets.reshape(-1).tolist(),
            lengths.reshape(-1).tolist(),
            strict=True,
        )
    }
    return {"version": 1, "refs": refs}


def run(n: int, repeat: int) -> list[tuple[str, float | None, float | None, str]]:
    columns = make_columns(n)
    total = columns[0].size
    rows: list[tuple[str, float | None, float | None, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest_path = Path(tmp) / "manifest.json"
        refs_path = Path(tmp) / "refs.json"

        t_ours, ours = best_of(lambda: ours_from_arrays(columns), repeat)
        try:
            t_vz, vz = best_of(lambda: vz_from_arrays(columns), repeat)
        except ModuleNotFoundError:
            t_vz, vz = None, None
        rows.append(("from_arrays", t_ours, t_vz, "VirtualiZarr ChunkManifest.from_arrays"))
        if vz is not None:
            t_nv, _ = best_of(lambda: vz_from_arrays(columns, validate_paths=False), repeat)
            rows.append(("from_arrays", t_ours, t_nv, "  the same, validate_paths=False"))

        t_w, _ = best_of(lambda: ours.to_zarr_json(manifest_path), repeat)

        def write_refs() -> None:
            refs_path.write_bytes(orjson.dumps(kerchunk_refs(columns)))

        t_kw, _ = best_of(write_refs, repeat)
        rows.append(("write JSON", t_w, t_kw, "kerchunk refs dict + orjson.dumps"))

        shape = ours.shape_chunk_grid
        t_r, back = best_of(lambda: ChunkManifest.from_zarr_json(manifest_path, shape), repeat)
        assert back == ours, "manifest.json did not round trip"
        t_kr, refs = best_of(lambda: orjson.loads(refs_path.read_bytes()), repeat)
        assert len(refs["refs"]) == total
        rows.append(("read JSON", t_r, t_kr, "orjson.loads of the refs file"))

        size_ours = os.path.getsize(manifest_path)
        size_refs = os.path.getsize(refs_path)
        del vz, back, refs

    mem_ours = bytes_per_reference(ours_from_arrays, n)
    try:
        mem_vz: float | None = bytes_per_reference(vz_from_arrays, n)
    except ModuleNotFoundError:
        mem_vz = None
    rows.append(("memory B/ref", mem_ours, mem_vz, "tracemalloc current / N"))
    rows.append(("file B/ref", size_ours / total, size_refs / total, "manifest.json vs refs.json"))
    rows.append(("nbytes B/ref", ours.nbytes / total, None, "ChunkManifest.nbytes / N"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of references")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    rows_n = max(1, args.n // 1000)
    total = rows_n * max(1, args.n // rows_n)
    print(
        f"N = {total:,} references, grid {rows_n} x {total // rows_n}, {N_FILES} files, "
        f"best of {args.repeat}"
    )
    rows = run(args.n, args.repeat)
    header = f"{'measure':<14}{'zarr-manifest':>15}{'other':>15}{'other/ours':>12}  other is"
    print(header)
    print("-" * (len(header) + 36))
    for name, ours, other, what in rows:
        unit = "s" if "ref" not in name else "B"

        def fmt(v: float | None, unit: str = unit) -> str:
            if v is None:
                return "n/a"
            return f"{v:.3f} {unit}" if unit == "s" else f"{v:.1f} {unit}"

        ratio = f"{other / ours:.3g}x" if ours and other is not None else "-"
        print(f"{name:<14}{fmt(ours):>15}{fmt(other):>15}{ratio:>12}  {what}")


if __name__ == "__main__":
    main()
