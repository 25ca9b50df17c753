"""Helpers for testing and benchmarking zarr-manifest against real (local) remote servers.

See `zarr_manifest.testing.servers`: `RangeServer` (HTTP with byte ranges and fault
injection) and `S3Server` (moto's S3).  These need the ``test`` extra (aiohttp, moto).
`AzuriteServer` (Azure Blob, `zarr_manifest.testing.azurite`) and `GCSServer` (GCS,
`zarr_manifest.testing.gcs_server`) run emulator programs that ``./dev.sh test`` installs.
"""

from zarr_manifest.testing._emulator_process import EmulatorStartError
from zarr_manifest.testing.azurite import AzuriteServer
from zarr_manifest.testing.gcs_server import GCSServer
from zarr_manifest.testing.servers import (
    FAULT_ERROR,
    FAULT_IGNORE_RANGE,
    FAULT_RESET,
    FAULT_TRUNCATE,
    FAULT_WRONG_LENGTH,
    Faults,
    RangeServer,
    RequestRecord,
    S3Server,
    fast_retry_config,
    parse_range_header,
)

__all__ = [
    "AzuriteServer",
    "EmulatorStartError",
    "GCSServer",
    "FAULT_ERROR",
    "FAULT_IGNORE_RANGE",
    "FAULT_RESET",
    "FAULT_TRUNCATE",
    "FAULT_WRONG_LENGTH",
    "Faults",
    "RangeServer",
    "RequestRecord",
    "S3Server",
    "fast_retry_config",
    "parse_range_header",
]
