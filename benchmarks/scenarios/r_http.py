"""Scenario R: scenario A's full read over HTTP with 10 ms of latency per request.

The file of scenario A is served by ``zarr_manifest.testing.RangeServer`` on 127.0.0.1,
which waits ``LATENCY`` seconds before answering each request (requests wait
concurrently, like network latency). With one request per chunk, the read time is about
``chunks x latency / concurrency``, so this measures how well a reader overlaps requests
(and whether it coalesces neighbouring chunks into fewer requests).

Data handed to factories: :class:`RemoteArrayFile`; a factory returns a zero-argument
callable reading the whole array. Besides the time, the report gives the number of HTTP
requests per full read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness import (
    IMPLEMENTATIONS,
    RunConfig,
    Scenario,
    measure_phases,
    register_scenario,
)
from scenarios import a_full_read
from scenarios.a_full_read import ArrayFile

LATENCY = 0.010


@dataclass(frozen=True)
class RemoteArrayFile:
    """Scenario A's file behind a running ``RangeServer``.

    Attributes
    ----------
    local
        The local file and its expected values (scenario A's data).
    server
        The running ``zarr_manifest.testing.RangeServer`` serving the file's directory;
        ``server.http_store()`` gives an obstore ``HTTPStore`` on it.
    latency
        Seconds the server waits before answering each request.
    """

    local: ArrayFile
    server: Any
    latency: float

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/a.h5``."""
        return self.server.url_for(self.local.path.name)


@contextmanager
def serve(data: ArrayFile) -> Iterator[RemoteArrayFile]:
    """Serve A's data directory with ``LATENCY`` for the duration of the scenario."""
    from zarr_manifest.testing import Faults, RangeServer

    with RangeServer(data.path.parent, faults=Faults(latency=LATENCY)) as server:
        yield RemoteArrayFile(local=data, server=server, latency=LATENCY)


def check(phase: str, result: Any, data: RemoteArrayFile) -> None:
    """Same check as scenario A."""
    a_full_read.check(phase, result, data.local)


def measure(work: Any, data: RemoteArrayFile, config: RunConfig) -> dict[str, dict[str, Any]]:
    """Time the full read and count the HTTP requests it made (set-up requests excluded)."""
    data.server.reset_counters()
    metrics = measure_phases(SCENARIO, work, data, config)
    calls = sum(len(m["runs"]) + 1 for m in metrics.values() if "runs" in m)  # +1: warm-up
    metrics["requests/read"] = {"value": data.server.request_count() / calls, "unit": "req"}
    return metrics


def virtualizarr_http(concurrency: int | None) -> Callable[[RemoteArrayFile], Any]:
    """VirtualiZarr ManifestStore over obstore ``HTTPStore``, read with zarr.

    ``concurrency`` sets zarr's ``async.concurrency`` during the read (``None``: zarr's
    default). The HDF5 metadata is parsed over HTTP too, outside the timing.
    """

    def factory(data: RemoteArrayFile) -> Callable[[], np.ndarray]:
        store = a_full_read.virtualizarr_store(data.url, data.server.url, data.server.http_store())
        config = None if concurrency is None else {"async.concurrency": concurrency}
        return a_full_read.zarr_reader(store, data.local.dataset, config)

    return factory


SCENARIO = register_scenario(
    Scenario(
        key="R",
        title=f"scenario A over loopback HTTP, {LATENCY * 1e3:.0f} ms latency per request",
        baseline="virtualizarr (zarr default concurrency)",
        params=a_full_read.params,
        generate=a_full_read.generate,
        load=a_full_read.load,
        default_phase="full read",
        context=serve,
        check=check,
        measure=measure,
        cache_key="A",
    )
)

IMPLEMENTATIONS["R"]["virtualizarr (zarr default concurrency)"] = virtualizarr_http(None)
IMPLEMENTATIONS["R"]["virtualizarr (concurrency 64)"] = virtualizarr_http(64)
