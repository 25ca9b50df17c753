"""Forked children.  obstore runs its I/O on a tokio runtime whose threads do not survive
``fork``: in a child forked after the parent used it, every async or network call of any
obstore store (old or new) waits forever, while synchronous local calls still work.

`ManifestStore` counts forks (`forks`) to rebuild itself in a child, and there asks
`obstore_works` whether it may still use obstore for remote and async I/O; if not, it
reads local files without obstore's runtime and refuses remote reads with an error
instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

import obstore
from obstore.store import MemoryStore

__all__ = ["forks", "obstore_works"]

#: how long the probe of obstore's runtime may take before it is taken as dead (a live
#: runtime answers in microseconds; a dead one never)
PROBE_SECONDS = 3.0

_forks = 0
_probed: dict[int, bool] = {}
_lock = threading.Lock()


def forks() -> int:
    """How many forks led to this process since this module was imported (0: none)."""
    return _forks


def obstore_works() -> bool:
    """Whether obstore's runtime serves async and network calls in this process.

    True outside forked children; in one, found out once by an async call on a
    `MemoryStore` in a daemon thread, given `PROBE_SECONDS` to answer.
    """
    if _forks == 0:
        return True
    with _lock:
        if _forks not in _probed:
            _probed[_forks] = _probe()
        return _probed[_forks]


def _probe() -> bool:
    done = threading.Event()

    def run() -> None:
        async def put() -> None:
            await obstore.put_async(MemoryStore(), "probe", b"1")

        with contextlib.suppress(Exception):  # an error is an answer too: the runtime runs
            asyncio.run(put())
        done.set()

    threading.Thread(target=run, name="zarr-manifest-obstore-probe", daemon=True).start()
    return done.wait(PROBE_SECONDS)


def _count_fork() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)
