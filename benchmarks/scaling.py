"""How time and memory grow with the number of chunk references, and where a full read goes.

Part 1 (scaling): for N = 10^3 .. 10^max_exp references, a 2-D grid of tiny int32 chunks
(chunk shape (1, 1), 4 bytes each) lying back to back in 4 local raw files written with numpy.
Each N runs in a fresh child process (so its peak RSS is its own), step by step:

- ``from_arrays``: `ChunkManifest.from_arrays` from grid-shaped path/offset/length columns;
  time, and with tracemalloc the bytes still held per reference and the peak per reference;
- ``to_json_bytes`` / ``from_json_bytes``: encode / parse manifest.json bytes;
- ``to_store single`` / ``to_store split``: `ManifestGroup.to_store` with one manifest.json
  (``split_above=None``) and split into regions (``split_above=0``, default region shape);
- ``open+first single|split``: a fresh ``ManifestStore(dir)``, ``zarr.open_array`` and the
  first chunk read (the single form parses the whole manifest here, the split form one region);
- ``full read single|split``: the whole array through zarr's ``FusedCodecPipeline``
  (up to ``--full-read-max-exp``);
- ``full read shards``: the same from the split form shown as virtual shards of 4 MiB
  (``ManifestStore(virtual_shard_bytes=...)``; up to ``--shard-read-max-exp``).

Every step is timed best of ``--repeats`` (all times are kept, to show the noise), with the
1-minute load average before and after, and the step's peak RSS (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``; ``resource.getrusage`` ``ru_maxrss`` where that is not
possible, and the running maximum over the steps as the process's peak).  The parent fits
time and memory against N on a log-log scale and models 10^8.

Part 2 (profile, ``--profile``): scenario A, a float32 (64, 512, 512) array in (4, 32, 32)
chunks in one HDF5 file, read whole by h5py, by zarr on a MemoryStore holding the same chunks,
and through `zarr_manifest.ManifestStore` over ``open_virtual(path)``, in zarr's default and
fused codec pipelines (best of two interleaved rounds of ``--repeats``); the 4096 chunks
fetched one by one without zarr (``os.pread`` of the byte ranges, ``MemoryStore.get_sync``,
``ManifestStore.get_sync``); the memory a full read of 10^5 tiny chunks holds with either
store; cProfile of the reads, grouped by package; and (if ``py-spy`` is on PATH or in the
venv) py-spy samples of all threads of a child reading in a loop.

Usage::

    python benchmarks/scaling.py [--max-exp 7] [--repeats 3] [--out benchmarks/results]
    python benchmarks/scaling.py --profile-only [--repeats 5]

Results: tables on stdout and ``scaling-<time>.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FUSED = {"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"}
#: virtual shard size of the "full read shards" step
SHARD_BYTES = 4 << 20
N_FILES = 4
ITEM = 4  # bytes per chunk: one int32
MARKER = "SCALING-RESULT "


# =============================================================================================
# measurement helpers
# =============================================================================================


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (0 where there is no procfs)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


#: the process's peak RSS in KiB over the steps measured so far
_PEAK = [0]


def measure(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, Any], Any]:
    """Time ``fn`` ``repeats`` times; record load, RSS before and the step's peak RSS."""
    times = []
    result = None
    gc.collect()
    load0 = os.getloadavg()[0]
    rss0 = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    for _ in range(repeats):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    hwm = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # resetting VmHWM also lowers what getrusage reports, so keep the running maximum here
    _PEAK[0] = max(_PEAK[0], hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return {
        "best": min(times),
        "times": times,
        "load": [load0, os.getloadavg()[0]],
        "rss_before_mib": rss0 / 1024,
        "step_peak_rss_mib": hwm / 1024,
        "maxrss_so_far_mib": _PEAK[0] / 1024,
    }, result


def traced(fn: Callable[[], Any]) -> tuple[Any, int, int]:
    """Call ``fn`` under tracemalloc: its result, the bytes it still holds, the peak."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, held - base, peak - base


# =============================================================================================
# part 1: scaling with the number of references
# =============================================================================================


def grid_shape(n: int) -> tuple[int, int]:
    """A 2-D chunk grid of ``n = 10^k`` cells, as square as powers of ten allow."""
    k = round(math.log10(n))
    rows = 10 ** (k // 2)
    return rows, n // rows


def make_data(n: int, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write ``n`` int32 chunks (values 0..n-1) into 4 raw files under ``root/data``.

    Returns grid-shaped ``(paths, offsets, lengths)`` and the expected array.
    """
    shape = grid_shape(n)
    values = np.arange(n, dtype="<i4")
    file_of = np.arange(n) * N_FILES // n
    (root / "data").mkdir(parents=True, exist_ok=True)
    offsets = np.empty(n, dtype=np.uint64)
    names = []
    for f in range(N_FILES):
        sel = np.flatnonzero(file_of == f)
        path = root / "data" / f"part{f}.bin"
        path.write_bytes(values[sel].tobytes())
        offsets[sel] = np.arange(sel.size, dtype=np.uint64) * ITEM
        names.append(str(path))
    table = np.array(names, dtype=np.dtypes.StringDType())
    paths = table[file_of].reshape(shape)
    lengths = np.full(shape, ITEM, dtype=np.uint64)
    return paths, offsets.reshape(shape), lengths, values.reshape(shape)


def dir_size(path: Path) -> tuple[int, int]:
    """Total bytes and number of files under ``path``."""
    sizes = [p.stat().st_size for p in path.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def run_one(
    n: int, workdir: Path, repeats: int, full_read: bool, shard_read: bool = False
) -> dict[str, Any]:
    """All steps for one N (run in a child process)."""
    import zarr
    from zarr.storage import MemoryStore

    from zarr_manifest import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore

    root = workdir / f"n{n}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    heavy = n >= 10**7
    reps = min(repeats, 2) if heavy else repeats
    out: dict[str, Any] = {"n": n, "grid": grid_shape(n), "repeats": reps, "steps": {}}
    steps = out["steps"]
    rss_start = _status_kib("VmRSS") / 1024
    paths, offsets, lengths, expected = make_data(n, root)
    out["rss_after_data_mib"] = _status_kib("VmRSS") / 1024
    out["rss_start_mib"] = rss_start

    def build() -> ChunkManifest:
        return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)

    steps["from_arrays"], manifest = measure(build, reps)
    _, held, peak = traced(build)
    steps["from_arrays"]["traced_held_bytes_per_ref"] = held / n
    steps["from_arrays"]["traced_peak_bytes_per_ref"] = peak / n
    steps["from_arrays"]["nbytes_per_ref"] = manifest.nbytes / n

    steps["to_json_bytes"], blob = measure(manifest.to_json_bytes, reps)
    steps["to_json_bytes"]["bytes_per_ref"] = len(blob) / n
    steps["from_json_bytes"], back = measure(lambda: ChunkManifest.from_json_bytes(blob), reps)
    _, _, peak = traced(lambda: ChunkManifest.from_json_bytes(blob))
    steps["from_json_bytes"]["traced_peak_bytes_per_ref"] = peak / n
    if back != manifest:
        raise AssertionError(f"N={n}: from_json_bytes(to_json_bytes(m)) != m")
    blob = back = b""  # free them before the store steps

    meta = zarr.create_array(
        MemoryStore(),
        shape=expected.shape,
        chunks=(1, 1),
        dtype="int32",
        compressors=None,
        fill_value=0,
    ).metadata
    group = ManifestGroup(arrays={"a": ManifestArray(meta, manifest)})
    forms = {"single": (root / "single.manifest", None), "split": (root / "split.manifest", 0)}
    for form, (dest, split_above) in forms.items():

        def write(dest: Path = dest, split_above: int | None = split_above) -> None:
            group.to_store(dest, overwrite=True, split_above=split_above)

        steps[f"to_store {form}"], _ = measure(write, reps)
        size, files = dir_size(dest)
        steps[f"to_store {form}"]["store_bytes"] = size
        steps[f"to_store {form}"]["store_files"] = files

    group = manifest = None  # free them before the read steps
    allowed = [str(root / "data")]
    for form, (dest, _) in forms.items():

        def open_first(dest: Path = dest) -> Any:
            store = ManifestStore(dest, allowed_prefixes=allowed)
            return zarr.open_array(store, path="a", mode="r")[0, 0]

        steps[f"open+first {form}"], first = measure(open_first, reps)
        if int(first) != 0:
            raise AssertionError(f"N={n} {form}: first chunk {first} != 0")

    # (step, store, virtual shard bytes) of every full read asked for
    full_reads: list[tuple[str, Path, int | None]] = []
    if full_read:
        full_reads += [(f"full read {form}", dest, None) for form, (dest, _) in forms.items()]
    if shard_read:
        full_reads.append(("full read shards", forms["split"][0], SHARD_BYTES))
    for step, dest, shard_bytes in full_reads:

        def full(dest: Path = dest, shard_bytes: int | None = shard_bytes) -> np.ndarray:
            with zarr.config.set(FUSED):
                store = ManifestStore(
                    dest, allowed_prefixes=allowed, virtual_shard_bytes=shard_bytes
                )
                return zarr.open_array(store, path="a", mode="r")[...]

        steps[step], values = measure(full, 1 if n >= 10**6 else reps)
        if not np.array_equal(values, expected):
            raise AssertionError(f"N={n} {step}: the values read differ from the data")
        del values
    out["maxrss_mib"] = _PEAK[0] / 1024
    shutil.rmtree(root)
    return out


STEP_ORDER = [
    "from_arrays",
    "to_json_bytes",
    "from_json_bytes",
    "to_store single",
    "to_store split",
    "open+first single",
    "open+first split",
    "full read single",
    "full read split",
    "full read shards",
]


def fit(ns: list[int], ys: list[float]) -> tuple[float, float]:
    """Log-log slope over the points with N >= 10^5 (all when fewer than 2), and y/N there."""
    pts = [(n, y) for n, y in zip(ns, ys, strict=True) if n >= 10**5 and y > 0]
    if len(pts) < 2:
        pts = [(n, y) for n, y in zip(ns, ys, strict=True) if y > 0]
    if len(pts) < 2:
        return float("nan"), float("nan")
    x = np.log10([p[0] for p in pts])
    y = np.log10([p[1] for p in pts])
    slope = float(np.polyfit(x, y, 1)[0])
    return slope, pts[-1][1] / pts[-1][0]


def fmt_t(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def report_scaling(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the tables and the 10^8 model; return the fitted constants."""
    ns = [r["n"] for r in runs]
    head = (
        "| step | "
        + " | ".join(f"N=10^{round(math.log10(n))}" for n in ns)
        + " | slope | per ref |"
    )
    sep = "|---" * (len(ns) + 3) + "|"
    print("\nTime, best of k (spread max/min of the repeats in brackets):\n")
    print(head)
    print(sep)
    fits: dict[str, Any] = {}
    for step in STEP_ORDER:
        cells, ys, yn = [], [], []
        for r in runs:
            s = r["steps"].get(step)
            if s is None:
                cells.append("-")
                continue
            spread = max(s["times"]) / s["best"] if len(s["times"]) > 1 else None
            cells.append(fmt_t(s["best"]) + (f" ({spread:.2f}x)" if spread else ""))
            ys.append(s["best"])
            yn.append(r["n"])
        if not ys:
            continue
        slope, per = fit(yn, ys)
        fits[step] = {"slope": slope, "seconds_per_ref": per}
        print(f"| {step} | " + " | ".join(cells) + f" | {slope:.2f} | {per * 1e9:.0f} ns |")

    print("\nMemory: bytes per reference (tracemalloc) and step peak RSS in MiB:\n")
    print("| measure | " + " | ".join(f"N=10^{round(math.log10(n))}" for n in ns) + " |")
    print("|---" * (len(ns) + 1) + "|")
    rows = [
        ("manifest held (tracemalloc) B/ref", "from_arrays", "traced_held_bytes_per_ref"),
        ("from_arrays peak (tracemalloc) B/ref", "from_arrays", "traced_peak_bytes_per_ref"),
        ("manifest.json B/ref", "to_json_bytes", "bytes_per_ref"),
        (
            "from_json_bytes peak (tracemalloc) B/ref",
            "from_json_bytes",
            "traced_peak_bytes_per_ref",
        ),
        ("split store files", "to_store split", "store_files"),
    ]
    for label, step, key in rows:
        vals = [r["steps"][step].get(key) for r in runs]
        print(
            f"| {label} | "
            + " | ".join(
                "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v) for v in vals
            )
            + " |"
        )
    for step in STEP_ORDER:
        vals = [r["steps"].get(step) for r in runs]
        if all(v is None for v in vals):
            continue
        cells = [
            "-"
            if v is None
            else f"{v['step_peak_rss_mib']:.0f} "
            f"(+{v['step_peak_rss_mib'] - v['rss_before_mib']:.0f})"
            for v in vals
        ]
        print(f"| peak RSS {step} | " + " | ".join(cells) + " |")
    print("| process max RSS | " + " | ".join(f"{r['maxrss_mib']:.0f}" for r in runs) + " |")
    loads = [x for r in runs for s in r["steps"].values() for x in s["load"]]
    print(f"\n1-min load average during the runs: {min(loads):.2f} .. {max(loads):.2f}")

    # memory constants for the model (from the largest N measured)
    big = runs[-1]
    st = big["steps"]
    mem = {
        "held_b": st["from_arrays"]["traced_held_bytes_per_ref"],
        "build_peak_b": st["from_arrays"]["traced_peak_bytes_per_ref"],
        "json_b": st["to_json_bytes"]["bytes_per_ref"],
        "parse_peak_b": st["from_json_bytes"]["traced_peak_bytes_per_ref"],
        "rss_parse_b": (
            st["open+first single"]["step_peak_rss_mib"] - st["open+first single"]["rss_before_mib"]
        )
        * 2**20
        / big["n"],
    }
    n8 = 10**8
    print("\nModel for N = 10^8 (linear in N from the per-reference constants above):\n")
    for step, f in fits.items():
        if f["slope"] < 0.5:
            # does not grow with N (the split form's open reads one region): no per-ref model
            last = [r["steps"][step]["best"] for r in runs if step in r["steps"]][-1]
            print(f"- {step}: about {fmt_t(last)} (does not grow with N)")
        else:
            print(f"- {step}: {fmt_t(f['seconds_per_ref'] * n8)}")
    print(
        f"- manifest in memory {mem['held_b'] * n8 / 2**30:.2f} GiB; from_arrays peak "
        f"{mem['build_peak_b'] * n8 / 2**30:.1f} GiB; manifest.json "
        f"{mem['json_b'] * n8 / 2**30:.1f} GiB; parse peak "
        f"{mem['parse_peak_b'] * n8 / 2**30:.1f} GiB;"
        f" RSS growth to open+first (single) {mem['rss_parse_b'] * n8 / 2**30:.1f} GiB"
    )
    return {"fits": fits, "memory_per_ref": mem}


def scaling(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    runs = []
    for k in range(args.min_exp, args.max_exp + 1):
        n = 10**k
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(n),
            "--workdir",
            str(workdir),
            "--repeats",
            str(args.repeats),
        ]
        if k <= args.full_read_max_exp:
            cmd.append("--full-read")
        if k <= args.shard_read_max_exp:
            cmd.append("--shard-read")
        print(f"N=10^{k} ...", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            print(f"N=10^{k} failed (exit {proc.returncode}); larger N skipped")
            break
        line = [x for x in proc.stdout.splitlines() if x.startswith(MARKER)][-1]
        run = json.loads(line[len(MARKER) :])
        run["wall_s"] = time.perf_counter() - t0
        runs.append(run)
        print(f"  done in {run['wall_s']:.0f} s, max RSS {run['maxrss_mib']:.0f} MiB", flush=True)
    return runs


# =============================================================================================
# part 2: profile of scenario A's full read
# =============================================================================================

A_SHAPE = (64, 512, 512)
A_CHUNKS = (4, 32, 32)


def _category(filename: str, func: str) -> str:
    """Which package a profiled function belongs to."""
    f = filename.replace("\\", "/")
    if "zarr_manifest" in f:
        return "zarr_manifest." + f.rsplit("zarr_manifest/", 1)[-1].removesuffix(".py")
    for pkg in (
        "zarr/core/codec_pipeline",
        "zarr/core/indexing",
        "zarr/codecs",
        "zarr/core/array",
        "zarr/core/buffer",
        "zarr/storage",
        "zarr/abc",
        "zarr/core/sync",
        "zarr",
        "numpy",
        "obstore",
        "asyncio",
        "concurrent",
        "threading",
    ):
        if f"/{pkg}/" in f or f"/{pkg}." in f:
            return pkg
    if filename == "~":
        return "builtins: " + func.split(" of ")[0].strip("<>{}")[:60]
    return "other (" + Path(f).name + ")"


def profile_read(read: Callable[[], Any], loops: int, top: int = 14) -> dict[str, Any]:
    """cProfile ``loops`` calls of ``read``: self time by package and the top functions."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(loops):
        read()
    prof.disable()
    stats = pstats.Stats(prof)
    total = 0.0
    by_cat: dict[str, float] = defaultdict(float)
    funcs = []
    for (filename, line, func), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        by_cat[_category(filename, func)] += tt
        funcs.append((tt, ct, nc, f"{Path(filename).name}:{line}({func})"))
    funcs.sort(reverse=True)
    cum = sorted(
        (
            (ct, nc, f"{Path(fn).name}:{ln}({fu})")
            for (fn, ln, fu), (_, nc, _, ct, _) in stats.stats.items()
        ),  # type: ignore[attr-defined]
        reverse=True,
    )
    return {
        "loops": loops,
        "total_self_s_per_read": total / loops,
        "self_by_package": sorted(((v / loops, k) for k, v in by_cat.items()), reverse=True),
        "top_self": [
            (tt / loops, ct / loops, nc // loops, name) for tt, ct, nc, name in funcs[:top]
        ],
        "top_cumulative": [(ct / loops, nc // loops, name) for ct, nc, name in cum[:top]],
    }


#: leaf functions where a sampled thread is waiting, not working
_WAITING = {"wait", "select", "acquire", "_wait_for_tstate_lock", "sleep", "poll", "get"}


def pyspy_sample(workdir: Path, reader: str, seconds: float) -> dict[str, Any] | None:
    """py-spy (if installed) attached to a child that reads scenario A in a loop.

    The child builds its reader, reads once and says so; py-spy is attached only then, for
    ``seconds``, so set-up is not sampled.  All threads are sampled (zarr's event loop and
    the fused pipeline's workers do the work).
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    raw = workdir / f"pyspy-{reader.replace(' ', '-')}.txt"
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--spy-child",
            reader,
            "--workdir",
            str(workdir),
            "--seconds",
            str(seconds + 5),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            return {"error": "the reading child did not start"}
        proc = subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(child.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--duration",
                str(int(seconds)),
                "--nonblocking",
                "-o",
                str(raw),
            ],
            capture_output=True,
            text=True,
        )
    finally:
        child.kill()
        child.wait()
    if proc.returncode != 0 or not raw.exists():
        return {"error": proc.stderr[-500:]}
    leaf: dict[str, int] = defaultdict(int)
    incl: dict[str, int] = defaultdict(int)
    total = waiting = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        if frames[-1].rsplit(":", 1)[-1].split(".")[-1] in _WAITING:
            waiting += c
            continue
        total += c
        leaf[frames[-1]] += c
        for name in set(frames):
            incl[name] += c
    total = max(total, 1)
    return {
        "working_samples": total,
        "waiting_samples": waiting,
        "leaf": sorted(((v / total, k) for k, v in leaf.items()), reverse=True)[:15],
        "inclusive": sorted(((v / total, k) for k, v in incl.items()), reverse=True)[:30],
    }


def _frame_name(frame: str) -> str:
    """``func (path/file.py:line)`` -> ``file.py:func``."""
    func, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{Path(file).name}:{func}"


def make_a(workdir: Path) -> tuple[Path, np.ndarray]:
    """Scenario A's HDF5 file (written once) and its values."""
    import h5py

    path = workdir / "a.h5"
    values = np.random.default_rng(0).random(A_SHAPE, dtype="float32")
    if not path.exists():
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=values, chunks=A_CHUNKS)
    return path, values


def memory_a(values: np.ndarray) -> tuple[Any, Any]:
    """A zarr MemoryStore holding scenario A's chunks (uncompressed) as array "data"."""
    import zarr
    from zarr.storage import MemoryStore

    mem = MemoryStore()
    arr = zarr.create_array(
        mem,
        name="data",
        shape=A_SHAPE,
        chunks=A_CHUNKS,
        dtype="float32",
        compressors=None,
        filters=None,
        fill_value=0,
    )
    arr[...] = values
    return mem, arr


def a_readers(workdir: Path) -> tuple[dict[str, Callable[[], np.ndarray]], np.ndarray, Any]:
    """The full-read callables of scenario A (array opened inside each call, like run.py)."""
    import h5py
    import zarr

    import zarr_manifest as zm

    path, values = make_a(workdir)
    mem, _ = memory_a(values)
    ms = zm.ManifestStore(zm.open_virtual(str(path)))
    h5 = h5py.File(path, "r")

    def reader(store: Any, config: dict[str, Any] | None) -> Callable[[], np.ndarray]:
        def read() -> np.ndarray:
            with zarr.config.set(config or {}):
                return zarr.open_array(store, path="data", mode="r")[...]

        return read

    readers = {
        "h5py": lambda: h5["data"][...],
        "MemoryStore default": reader(mem, None),
        "MemoryStore fused": reader(mem, FUSED),
        "ManifestStore default": reader(ms, None),
        "ManifestStore fused": reader(ms, FUSED),
    }
    return readers, values, h5


def profile(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    readers, values, h5 = a_readers(workdir)
    out: dict[str, Any] = {"timings": {}, "cprofile": {}}
    print(
        "\nScenario A full read, float32 (64,512,512) in (4,32,32) chunks = 4096 chunks of 16 KiB"
    )
    print(f"(best of {args.repeats}, after a warm-up; times of all repeats kept):\n")
    print("| reader | best | median | max/min | load before/after |")
    print("|---|---|---|---|---|")
    for _round in range(2):  # two interleaved rounds: a burst of load hits every reader
        for name, read in readers.items():
            if not np.array_equal(read(), values):
                raise AssertionError(f"{name}: values differ")
            res, _ = measure(read, args.repeats)
            prev = out["timings"].get(name)
            if prev:
                res["times"] = prev["times"] + res["times"]
                res["load"] = prev["load"] + res["load"]
                res["best"] = min(res["times"])
            out["timings"][name] = res
    for name, res in out["timings"].items():
        ts = res["times"]
        print(
            f"| {name} | {fmt_t(res['best'])} | {fmt_t(statistics.median(ts))} | "
            f"{max(ts) / min(ts):.2f} | {res['load'][0]:.1f}/{res['load'][-1]:.1f} |"
        )
    for name in (
        "ManifestStore fused",
        "ManifestStore default",
        "MemoryStore fused",
        "MemoryStore default",
    ):
        p = profile_read(readers[name], loops=3)
        out["cprofile"][name] = p
        print(f"\ncProfile {name}: {fmt_t(p['total_self_s_per_read'])} per read under the profiler")
        print("  self time by package:")
        for v, k in p["self_by_package"][:12]:
            print(f"    {fmt_t(v):>9}  {k}")
        print("  top self time (self, cumulative, calls per read):")
        for tt, ct, nc, fn in p["top_self"]:
            print(f"    {fmt_t(tt):>9} {fmt_t(ct):>9} {nc:>7}  {fn}")
        print("  top cumulative:")
        for ct, nc, fn in p["top_cumulative"]:
            print(f"    {fmt_t(ct):>9} {nc:>7}  {fn}")
    h5.close()
    so = store_only(workdir, 2 * args.repeats)
    out["store_only"] = so
    print("\nThe 4096 chunks fetched one by one in one thread, no zarr pipeline (best of k):\n")
    print("| fetch | best | per chunk |")
    print("|---|---|---|")
    for name, r in so.items():
        print(f"| {name} | {fmt_t(r['best'])} | {fmt_t(r['best'] / 4096)} |")
    n = 10**5
    rm = read_memory(workdir, n)
    out["read_memory"] = rm
    print(f"\nFull read of {n} tiny chunks (fused pipeline), memory per chunk:\n")
    print("| store | time | peak RSS growth B/chunk | tracemalloc peak B/chunk |")
    print("|---|---|---|---|")
    for name in ("ManifestStore", "MemoryStore"):
        r = rm[name]
        print(
            f"| {name} | {fmt_t(r['best'])} | {r['rss_bytes_per_chunk']:.0f} | "
            f"{r['traced_peak_bytes_per_chunk']:.0f} |"
        )
    for name in ("ManifestStore fused", "MemoryStore fused", "ManifestStore default"):
        spy = pyspy_sample(workdir, name, seconds=args.spy_seconds)
        if spy is None:
            print("\npy-spy not installed: skipped")
            break
        out[f"pyspy {name}"] = spy
        if "error" in spy:
            print(f"\npy-spy failed: {spy['error']}")
            continue
        print(
            f"\npy-spy {name}: {spy['working_samples']} samples of working threads "
            f"({spy['waiting_samples']} waiting left out); leaf frames:"
        )
        for v, k in spy["leaf"]:
            print(f"    {v * 100:5.1f}%  {k}")
        print("  inclusive:")
        for v, k in spy["inclusive"]:
            print(f"    {v * 100:5.1f}%  {k}")
    return out


def store_only(workdir: Path, repeats: int) -> dict[str, Any]:
    """Scenario A's 4096 chunks fetched one by one in one thread, without zarr's pipeline:
    ``os.pread`` of the manifest's byte ranges (the floor), ``MemoryStore.get_sync`` and
    ``ManifestStore.get_sync`` on the same keys."""
    from zarr.core.buffer import default_buffer_prototype

    import zarr_manifest as zm

    path, values = make_a(workdir)
    group = zm.open_virtual(str(path))
    manifest = group["data"].manifest
    ms = zm.ManifestStore(group)
    mem, arr = memory_a(values)
    grid = manifest.shape_chunk_grid
    indices = list(np.ndindex(grid))
    keys = ["data/" + arr.metadata.encode_chunk_key(i) for i in indices]
    ranges = [(int(manifest.offsets[i]), int(manifest.lengths[i])) for i in indices]
    proto = default_buffer_prototype()
    fd = os.open(path, os.O_RDONLY)

    def pread_all() -> int:
        return sum(len(os.pread(fd, n, off)) for off, n in ranges)

    def get_all(store: Any) -> Callable[[], int]:
        return lambda: sum(len(store.get_sync(k, prototype=proto)) for k in keys)

    out: dict[str, Any] = {}
    try:
        for name, fn in (
            ("os.pread", pread_all),
            ("MemoryStore.get_sync", get_all(mem)),
            ("ManifestStore.get_sync", get_all(ms)),
        ):
            if fn() != values.nbytes:
                raise AssertionError(f"{name}: wrong number of bytes")
            out[name], _ = measure(fn, repeats)
    finally:
        os.close(fd)
    return out


def read_memory(workdir: Path, n: int) -> dict[str, Any]:
    """Peak memory of a full read of ``n`` tiny chunks (fused pipeline): ManifestStore (single
    manifest.json) against a MemoryStore holding the same chunks, to tell zarr's share of the
    per-chunk memory of a full read from the store's."""
    import zarr
    from zarr.storage import MemoryStore

    from zarr_manifest import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore

    root = workdir / f"readmem{n}"
    if root.exists():
        shutil.rmtree(root)
    paths, offsets, lengths, expected = make_data(n, root)
    mem = MemoryStore()
    with zarr.config.set(FUSED):
        arr = zarr.create_array(
            mem,
            name="a",
            shape=expected.shape,
            chunks=(1, 1),
            dtype="int32",
            compressors=None,
            fill_value=-1,
        )
        arr[...] = expected
    manifest = ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)
    group = ManifestGroup(arrays={"a": ManifestArray(arr.metadata, manifest)})
    group.to_store(root / "single.manifest", split_above=None)
    stores = {
        "ManifestStore": lambda: ManifestStore(
            root / "single.manifest", allowed_prefixes=[str(root / "data")]
        ),
        "MemoryStore": lambda: mem,
    }
    out: dict[str, Any] = {"n": n}
    for name, make in stores.items():

        def read(make: Callable[[], Any] = make) -> np.ndarray:
            with zarr.config.set(FUSED):
                return zarr.open_array(make(), path="a", mode="r")[...]

        res, values = measure(read, 1)
        if not np.array_equal(values, expected):
            raise AssertionError(f"read memory, {name}: values differ")
        values = None
        _, _, peak = traced(read)
        res["traced_peak_bytes_per_chunk"] = peak / n
        res["rss_bytes_per_chunk"] = (res["step_peak_rss_mib"] - res["rss_before_mib"]) * 2**20 / n
        out[name] = res
    shutil.rmtree(root)
    return out


def spy_loop(read: Callable[[], Any], seconds: float) -> int:
    """Read repeatedly for ``seconds`` (the frame py-spy samples are filtered on)."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        read()
        n += 1
    return n


# =============================================================================================
# command line
# =============================================================================================


def machine() -> dict[str, Any]:
    import zarr

    import zarr_manifest

    return {
        "python": platform.python_version(),
        "zarr": zarr.__version__,
        "numpy": np.__version__,
        "zarr_manifest": zarr_manifest.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--min-exp", type=int, default=3)
    ap.add_argument("--max-exp", type=int, default=7)
    ap.add_argument("--full-read-max-exp", type=int, default=6)
    ap.add_argument("--shard-read-max-exp", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--profile", action="store_true", help="also profile scenario A")
    ap.add_argument("--profile-only", action="store_true")
    ap.add_argument("--spy-seconds", type=float, default=8.0)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--full-read", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shard-read", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--spy-child", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=8.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    own_tmp = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zm-scaling-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        res = run_one(args.child, workdir, args.repeats, args.full_read, args.shard_read)
        print(MARKER + json.dumps(res), flush=True)
        return 0
    if args.spy_child:
        readers, _, h5 = a_readers(workdir)
        read = readers[args.spy_child]
        read()
        print("ready", flush=True)
        spy_loop(read, args.seconds)
        h5.close()
        return 0

    result: dict[str, Any] = {"machine": machine(), "argv": sys.argv, "started": time.ctime()}
    try:
        if not args.profile_only:
            runs = scaling(args, workdir)
            result["runs"] = runs
            if runs:
                result["model"] = report_scaling(runs)
        if args.profile or args.profile_only:
            result["profile"] = profile(args, workdir)
    finally:
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
