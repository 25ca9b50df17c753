"""Scenario R's default read with the http(s) client of `store/_http.py` (urllib3, redirects
checked) against obstore's `HTTPStore` (what the store used before), alternately.

    python benchmarks/bench_http_client.py [--rounds 4] [--repeats 3] [--fused]
                                           [--clients urllib3,obstore]

Scenario A's file (generated into the harness cache if missing) is served by a
``RangeServer`` in a child process with 10 ms of latency per request, as in scenario R.
Each read is ``zarr.open_array(ManifestStore(group))[...]`` under zarr's default config
(``--fused``: the fused pipeline), checked against the file's values.  The obstore variant
is the same store with its sources' ``http`` client left out, so the fetch module reads
them with obstore as it did before (redirects unchecked: for measuring only).

Wall time on a shared machine mostly measures the other jobs, so besides it every read
reports, from ``/proc``, where its threads' time went:

- CPU per thread group: zarr's event loop thread (``zarr_io``: decoding, the store), the
  request threads (``http pool``) or obstore's native threads, the main thread;
- the loop thread's time *blocked* (sleeping in ``select`` for data or waiting for the
  GIL), *running*, and *runnable but waiting for a core* (other processes' load), and its
  voluntary context switches (each block on the GIL or on I/O is one).

The blocked time and the switches are what the client's design decides; the runnable
wait is the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads, summed per group."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(tid), "native threads (obstore)")
        if name.startswith("zarr-manifest-http"):
            name = "http pool"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _loop_thread_sched() -> tuple[float, float, int]:
    """zarr's loop thread: seconds running, seconds runnable-waiting, voluntary switches."""
    for t in threading.enumerate():
        if t.name == "zarr_io":
            with open(f"/proc/self/task/{t.native_id}/schedstat") as f:
                run, wait, _ = f.read().split()
            with open(f"/proc/self/task/{t.native_id}/status") as f:
                switches = next(int(ln.split()[1]) for ln in f if ln.startswith("voluntary_ctxt"))
            return int(run) / 1e9, int(wait) / 1e9, switches
    return 0.0, 0.0, 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the clients")
    parser.add_argument("--repeats", type=int, default=3, help="timed reads per client a round")
    parser.add_argument("--fused", action="store_true", help="zarr's FusedCodecPipeline")
    parser.add_argument(
        "--clients", default="urllib3,obstore", help="which of urllib3,obstore to measure"
    )
    args = parser.parse_args(argv)

    import numpy as np
    import zarr

    import zarr_manifest as zm
    from harness import SCENARIOS, RunConfig, cached_data_dir
    from scenarios.a_full_read import DATASET, FILE_NAME, FUSED_PIPELINE
    from scenarios.r_http import LATENCY, ServerProcess
    from zarr_manifest.store import sources

    # scenario A's data, in the cache run.py uses by default
    config = RunConfig(
        quick=False, repeats=1, cache_dir=Path(tempfile.gettempdir()) / "zarr-manifest-bench/cache"
    )
    params, directory = cached_data_dir(SCENARIOS["A"], config)
    expected = SCENARIOS["A"].load(params, directory, config).expected
    server = ServerProcess(directory, LATENCY)
    checked_client = sources.HttpObject
    try:
        group = zm.open_virtual(server.url_for(FILE_NAME), client_options={"allow_http": True})
        settings = FUSED_PIPELINE if args.fused else {}

        def read() -> Any:
            with zarr.config.set(settings):
                return zarr.open_array(zm.ManifestStore(group), path=DATASET, mode="r")[...]

        clients = {
            name: client
            for name, client in (
                ("urllib3 (_http.py)", checked_client),
                ("obstore (before)", lambda *a, **k: None),
            )
            if name.split()[0] in args.clients.split(",")
        }
        walls: dict[str, list[float]] = {c: [] for c in clients}
        usage: dict[str, list[dict[str, float]]] = {c: [] for c in clients}
        for r in range(args.rounds):
            for name, client in clients.items():
                sources.HttpObject = client  # type: ignore[misc]
                if not np.array_equal(read(), expected):  # warm-up, checked
                    raise SystemExit(f"{name}: wrong values")
                for _ in range(args.repeats):
                    server.reset_counters()
                    cpu0, sched0 = _thread_cpu(), _loop_thread_sched()
                    start = time.perf_counter()
                    values = read()
                    wall = time.perf_counter() - start
                    cpu1, sched1 = _thread_cpu(), _loop_thread_sched()
                    if not np.array_equal(values, expected):
                        raise SystemExit(f"{name}: wrong values")
                    running, runnable = sched1[0] - sched0[0], sched1[1] - sched0[1]
                    row = {f"CPU {k}": v - cpu0.get(k, 0.0) for k, v in cpu1.items()}
                    row.update(
                        {
                            "loop blocked": wall - running - runnable,
                            "loop running": running,
                            "loop runnable-waiting": runnable,
                            "loop voluntary switches": (sched1[2] - sched0[2]) / 1e3,
                            "requests": server.request_count() / 1e3,
                        }
                    )
                    walls[name].append(wall)
                    usage[name].append(row)
                recent = walls[name][-args.repeats :]
                print(
                    f"round {r} {name}: best {min(recent) * 1e3:.0f} ms, median "
                    f"{statistics.median(recent) * 1e3:.0f} ms; "
                    f"1-min load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        sources.HttpObject = checked_client  # type: ignore[misc]
        server.stop()

    print("\nmedians per read (ms; switches and requests as counts):")
    for name in clients:
        rows = usage[name]
        medians = {
            k: statistics.median(row.get(k, 0.0) for row in rows)
            for k in sorted({k for row in rows for k in row})
        }
        # thread groups that did nothing (idle pools) are left out
        cells = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in medians.items() if v >= 5e-4)
        print(
            f"  {name}: wall best {min(walls[name]) * 1e3:.0f}, median "
            f"{statistics.median(walls[name]) * 1e3:.0f}; {cells}"
        )


if __name__ == "__main__":
    main()
