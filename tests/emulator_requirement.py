"""Whether a missing cloud emulator skips its tests or fails them.

``./dev.sh test`` (so CI) sets ``ZARR_MANIFEST_REQUIRE_EMULATORS=1``: there an emulator
that is not installed fails its tests, so that they cannot pass by silently not running.
A developer running pytest without the emulators gets a skip saying how to get them.
(A module of its own, not conftest.py: several conftest modules share that name.)
"""

from __future__ import annotations

import os

import pytest

#: set by ./dev.sh test: an emulator that is not installed fails its tests, not skips
REQUIRE_EMULATORS = "ZARR_MANIFEST_REQUIRE_EMULATORS"


def emulator_installed(name: str, found: str | None) -> None:
    """Skip (or, under ``$ZARR_MANIFEST_REQUIRE_EMULATORS``, fail) when ``name`` is missing."""
    if found is not None:
        return
    message = f"{name} is not installed; ./dev.sh test installs it"
    if os.environ.get(REQUIRE_EMULATORS) == "1":
        pytest.fail(f"{message} (and {REQUIRE_EMULATORS}=1 requires it)", pytrace=False)
    pytest.skip(message)
