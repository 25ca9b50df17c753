"""Scenario R: scenario A's full read over HTTP with 10 ms of latency per request.

The file of scenario A is served by ``zarr_manifest.testing.RangeServer`` on 127.0.0.1
(in a child process, so the server does not take the GIL from the client measured), which
waits ``LATENCY`` seconds before answering each request (requests wait
concurrently, like network latency). With one request per chunk, the read time is about
``chunks x latency / concurrency``, so this measures how well a reader overlaps requests
(and whether it coalesces neighbouring chunks into fewer requests).

Data handed to factories: :class:`RemoteArrayFile`; a factory returns a zero-argument
callable reading the whole array. Besides the time, the report gives the number of HTTP
requests per full read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from harness import (
    IMPLEMENTATIONS,
    RunConfig,
    Scenario,
    as_phases,
    measure_phases,
    register_scenario,
)
from scenarios import a_full_read
from scenarios.a_full_read import ArrayFile

LATENCY = 0.010
_START_TIMEOUT = 60.0  # the child imports aiohttp and zarr_manifest
_CALL_TIMEOUT = 10.0
_IDLE_TIMEOUT = 3600.0


class ServerProcess:
    """A ``RangeServer`` running in a child process, driven through a pipe.

    The server runs in its own process so that its Python request handling does not
    compete with the client under test for the GIL (the client's time is what is
    measured). It offers the parts of ``RangeServer``'s API the benchmark uses.

    Parameters
    ----------
    root
        Directory to serve.
    latency
        Seconds the server waits before answering each request.
    """

    def __init__(self, root: Path, latency: float) -> None:
        import importlib.util

        if importlib.util.find_spec("zarr_manifest") is None:
            raise ModuleNotFoundError("zarr_manifest is not installed", name="zarr_manifest")
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(str(root), latency, child), name="bench-RangeServer", daemon=True
        )
        self._process.start()
        child.close()
        if not self._conn.poll(_START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"RangeServer process did not start within {_START_TIMEOUT} s")
        kind, value = self._conn.recv()
        if kind == "error":
            self.stop()
            raise RuntimeError(f"RangeServer process failed: {value}")
        self.url: str = value

    def url_for(self, path: str) -> str:
        """The URL of ``path`` relative to the served directory."""
        return f"{self.url}/{urllib.parse.quote(path.lstrip('/'))}"

    def http_store(self) -> Any:
        """An obstore ``HTTPStore`` on the server."""
        from obstore.store import HTTPStore

        return HTTPStore.from_url(self.url, client_options={"allow_http": True})

    def request_count(self) -> int:
        """Requests seen since the last `reset_counters`."""
        return int(self._call("count"))

    def cpu_time(self) -> float:
        """CPU seconds the server process has used so far (all its threads)."""
        return float(self._call("cpu"))

    def reset_counters(self) -> None:
        """Forget the requests seen so far."""
        self._call("reset")

    def _call(self, command: str) -> Any:
        self._conn.send(command)
        if not self._conn.poll(_CALL_TIMEOUT):
            raise RuntimeError(f"RangeServer process did not answer {command!r}")
        return self._conn.recv()

    def stop(self) -> None:
        """Stop the server process (terminate it if it does not exit in time)."""
        if self._process.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send("stop")
            self._process.join(_CALL_TIMEOUT)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(_CALL_TIMEOUT)
        self._conn.close()


def _serve(root: str, latency: float, conn: Connection) -> None:
    """Child process: run a RangeServer on ``root`` and answer commands until told to stop."""
    try:
        from zarr_manifest.testing import Faults, RangeServer

        server = RangeServer(root, faults=Faults(latency=latency)).start()
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("url", server.url))
        # bounded: a parent that vanished without saying "stop" ends the loop too
        while conn.poll(_IDLE_TIMEOUT):
            command = conn.recv()
            if command == "count":
                conn.send(server.request_count())
            elif command == "cpu":
                conn.send(time.process_time())
            elif command == "reset":
                server.reset_counters()
                conn.send(None)
            else:
                break
    except EOFError:
        pass
    finally:
        server.stop()


@dataclass(frozen=True)
class RemoteArrayFile:
    """Scenario A's file behind a running ``RangeServer``.

    Attributes
    ----------
    local
        The local file and its expected values (scenario A's data).
    server
        The server (:class:`ServerProcess`): ``server.url`` is its base URL,
        ``server.http_store()`` an obstore ``HTTPStore`` on it.
    latency
        Seconds the server waits before answering each request.
    """

    local: ArrayFile
    server: ServerProcess
    latency: float

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/a.h5``."""
        return self.server.url_for(self.local.path.name)


@contextmanager
def serve(data: ArrayFile) -> Iterator[RemoteArrayFile]:
    """Serve A's data directory with ``LATENCY`` for the duration of the scenario."""
    server = ServerProcess(data.path.parent, LATENCY)
    try:
        yield RemoteArrayFile(local=data, server=server, latency=LATENCY)
    finally:
        server.stop()


def check(phase: str, result: Any, data: RemoteArrayFile) -> None:
    """Same check as scenario A."""
    a_full_read.check(phase, result, data.local)


def measure(work: Any, data: RemoteArrayFile, config: RunConfig) -> dict[str, dict[str, Any]]:
    """Time the full read; count its HTTP requests and the CPU time of client and server.

    Both processes share this machine's cores, so the CPU seconds per read tell apart a
    slow client from a saturated server when the wall time is far above
    ``chunks x latency / concurrency``. Set-up requests are not counted.
    """
    usage = {"calls": 0, "client": 0.0, "server": 0.0}

    def metered(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            server_start, client_start = data.server.cpu_time(), time.process_time()
            result = fn()
            usage["client"] += time.process_time() - client_start
            usage["server"] += data.server.cpu_time() - server_start
            usage["calls"] += 1
            return result

        return call

    phases = {
        name: dataclasses.replace(phase, fn=metered(phase.fn))
        for name, phase in as_phases(work, SCENARIO.default_phase).items()
    }
    data.server.reset_counters()
    metrics = measure_phases(SCENARIO, phases, data, config)
    calls = usage["calls"]
    metrics["requests/read"] = {"value": data.server.request_count() / calls, "unit": "req"}
    metrics["client CPU/read"] = {"value": usage["client"] / calls, "unit": "cpu s"}
    metrics["server CPU/read"] = {"value": usage["server"] / calls, "unit": "cpu s"}
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
