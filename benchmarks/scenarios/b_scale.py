"""Scenario B10k: scenario B at scale, 10,000 small netCDF4 files (quick: 100) built in parallel.

Each file holds a float32 ``air`` of (4, 32, 32) in chunks of (1, 32, 32) and a ``time``
coordinate (hours since 2000-01-01, consecutive across files).  An implementation scans every
file on a given `concurrent.futures.Executor` and combines the results along ``time`` in the
calling process.  Two executors, each created fresh per implementation, warmed up (workers
started, the implementation imported) before timing:

- ``process pool``: `concurrent.futures.ProcessPoolExecutor` of ``workers`` processes (spawn);
- ``LocalCluster``: a `dask.distributed.LocalCluster` of ``workers`` processes with one thread
  each, used through ``Client.get_executor()``.

Reported per executor: the wall time of one build (one run: at full size it takes minutes for
some peers), files per second, and the peak resident memory of the client process plus its
workers (sampled every 50 ms with psutil) and of the client alone.  The files are generated
once into the benchmark cache.

Data handed to factories: :class:`ManyFiles`.  A factory returns
``build(executor) -> combined`` (anything with ``air`` and ``time``: checked for shape and
the time values).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import IMPLEMENTATIONS, RunConfig, Scenario, expect, register_scenario

VARIABLE = "air"
TIME_UNITS = "hours since 2000-01-01"
EXECUTORS = ("process pool", "LocalCluster")


@dataclass(frozen=True)
class ManyFiles:
    """The files of scenario B10k.

    Attributes
    ----------
    files
        Absolute paths, in time order.
    shape
        Shape of ``air`` in each file (time, y, x).
    workers
        Worker processes of each executor.
    """

    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    workers: int

    @property
    def urls(self) -> list[str]:
        """``file://`` URLs of the files."""
        return [p.as_uri() for p in self.files]


def params(config: RunConfig) -> dict[str, Any]:
    """Number of files (quick: 100), per-file shapes, workers per executor."""
    return {
        "files": 100 if config.quick else 10_000,
        "shape": [4, 32, 32],
        "chunks": [1, 32, 32],
        "workers": 2,
    }


def generate(p: dict[str, Any], directory: Path) -> None:
    """Write ``f00000.nc``, ``f00001.nc``, ... with netCDF4 (chunked, uncompressed)."""
    import netCDF4

    nt, ny, nx = p["shape"]
    rng = np.random.default_rng(0)
    for k in range(p["files"]):
        with netCDF4.Dataset(directory / f"f{k:05d}.nc", "w", format="NETCDF4") as ds:
            ds.createDimension("time", nt)
            ds.createDimension("y", ny)
            ds.createDimension("x", nx)
            t = ds.createVariable("time", "f8", ("time",))
            t.units = TIME_UNITS
            t.calendar = "standard"
            t[:] = np.arange(k * nt, (k + 1) * nt, dtype="f8")
            air = ds.createVariable(VARIABLE, "f4", ("time", "y", "x"), chunksizes=p["chunks"])
            air[:] = rng.random(p["shape"], dtype=np.float32)


def load(p: dict[str, Any], directory: Path, config: RunConfig) -> ManyFiles:
    """List the cached files."""
    files = tuple((directory / f"f{k:05d}.nc").resolve() for k in range(p["files"]))
    return ManyFiles(files, tuple(p["shape"]), p["workers"])


def check(result: Any, data: ManyFiles) -> None:
    """``air`` spans every file along time; ``time`` holds every file's hours in order."""
    nt = data.shape[0]
    count = nt * len(data.files)
    air = result[VARIABLE]
    expect(tuple(air.shape) == (count, *data.shape[1:]), f"air shape {air.shape}")
    node = result["time"]  # an xarray variable or an InlineArray
    times = np.asarray(node.values if hasattr(node, "values") else node.data)
    if times.dtype.kind == "M":  # xarray decoded the CF times
        times = (times - np.datetime64("2000-01-01")) / np.timedelta64(1, "h")
    expect(np.array_equal(times, np.arange(count)), "time coordinate differs")


# --------------------------------------------------------------------------- executors


def _warm(module: str) -> None:
    importlib.import_module(module)
    time.sleep(0.3)  # keep this worker busy so the next warm-up call goes to another


@contextmanager
def process_pool(workers: int, module: str) -> Iterator[Executor]:
    """A spawn process pool with every worker started and ``module`` imported."""
    # spawn: the calling process runs zarr's event-loop thread, which fork does not carry
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        list(pool.map(_warm, [module] * workers))
        yield pool
    finally:
        pool.shutdown()


@contextmanager
def local_cluster(workers: int, module: str) -> Iterator[Executor]:
    """A dask.distributed LocalCluster (processes, one thread each), ``module`` imported."""
    import distributed

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Port 8787 is already in use", UserWarning)
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        )
    client = distributed.Client(cluster)
    try:
        client.run(importlib.import_module, module)
        yield client.get_executor()
    finally:
        client.close()
        cluster.close()


class PeakRSS:
    """Peak resident memory of this process and of it plus its descendants, sampled."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.client = self.total = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        own = self._process.memory_info().rss
        total = own
        for child in self._process.children(recursive=True):
            # a worker may end between the listing and the read
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        self.client = max(self.client, own)
        self.total = max(self.total, total)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def measure(
    work: tuple[str, Callable[[Executor], Any]], data: ManyFiles, config: RunConfig
) -> dict[str, dict[str, Any]]:
    """Time one build on each executor; files/s and peak RSS (client + workers, client)."""
    module, build = work
    metrics: dict[str, dict[str, Any]] = {}
    for kind, executor_of in (("process pool", process_pool), ("LocalCluster", local_cluster)):
        with executor_of(data.workers, module) as executor, PeakRSS() as rss:
            start = time.perf_counter()
            result = build(executor)
            elapsed = time.perf_counter() - start
        check(result, data)
        del result
        metrics[f"{kind}: build+combine"] = {"value": elapsed, "unit": "s", "runs": [elapsed]}
        metrics[f"{kind}: files/s (higher is better)"] = {
            "value": len(data.files) / elapsed,
            "unit": "files/s",
        }
        metrics[f"{kind}: peak RSS, client + workers"] = {"value": rss.total, "unit": "B"}
        metrics[f"{kind}: peak RSS, client"] = {"value": rss.client, "unit": "B"}
    return metrics


# --------------------------------------------------------------------------- virtualizarr


def virtualizarr_parallel(data: ManyFiles) -> tuple[str, Callable[[Executor], Any]]:
    """VirtualiZarr ``open_virtual_mfdataset(parallel=executor)`` (HDFParser, nested along time)."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_mfdataset
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})

    def build(executor: Executor) -> Any:
        return open_virtual_mfdataset(
            data.urls,
            registry=registry,
            parser=HDFParser(),
            combine="nested",
            concat_dim="time",
            parallel=executor,
        )

    return "virtualizarr.parsers", build


SCENARIO = register_scenario(
    Scenario(
        key="B10k",
        title="B at scale: 10,000 (quick: 100) small netCDF4 files built on 2 worker processes",
        baseline="virtualizarr",
        params=params,
        generate=generate,
        load=load,
        measure=measure,
    )
)

IMPLEMENTATIONS["B10k"]["virtualizarr"] = virtualizarr_parallel
