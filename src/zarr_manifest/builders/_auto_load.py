"""How much a build reads into memory on its own initiative.

An array that cannot be referenced (an HDF5 dataset whose chunks skipped a filter, a
compound with padding; a zip member the archive compressed) is loaded without being asked
only when its values take at most `MAX_AUTO_LOAD_BYTES`; a larger one is refused with
`UnsupportedError`, so a small file cannot make a build read gigabytes.  ``load=`` still
loads it.
"""

from __future__ import annotations

__all__ = ["MAX_AUTO_LOAD_BYTES"]

MAX_AUTO_LOAD_BYTES = 64 * 1024 * 1024
