"""Helpers for testing and benchmarking zarr-manifest against real (local) remote servers.

See `zarr_manifest.testing.servers`: `RangeServer` (HTTP with byte ranges and fault
injection) and `S3Server` (moto's S3).  These need the ``test`` extra (aiohttp, moto).
"""

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
