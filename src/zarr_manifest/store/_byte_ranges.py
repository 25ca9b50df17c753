"""zarr's byte requests (`RangeByteRequest`, `OffsetByteRequest`, `SuffixByteRequest`):
checked, turned into ``[start, end)`` bounds, and applied to bytes held in memory."""

from __future__ import annotations

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest

from zarr_manifest.errors import ChunkReadError

__all__ = ["check_byte_range", "request_bounds", "selects_nothing", "slice_bytes"]


def check_byte_range(byte_range: object) -> None:
    """Refuse anything but zarr's three byte requests (TypeError, worded as zarr's stores)."""
    if byte_range is not None and not isinstance(
        byte_range, RangeByteRequest | OffsetByteRequest | SuffixByteRequest
    ):
        # zarr's stores word it so (zarr.testing.store.StoreTests.test_get_raises)
        raise TypeError(f"Unexpected byte_range, got {byte_range!r}")


def request_bounds(length: int, byte_range: ByteRequest | None, key: str) -> tuple[int, int]:
    """[start, end) of a byte request inside a chunk (or shard) of ``length`` bytes;
    a request reaching outside it is a `ChunkReadError`."""
    if byte_range is None:
        lo, hi = 0, length
    elif isinstance(byte_range, RangeByteRequest):
        lo, hi = byte_range.start, byte_range.end
    elif isinstance(byte_range, OffsetByteRequest):
        lo, hi = byte_range.offset, length
    elif isinstance(byte_range, SuffixByteRequest):
        lo, hi = max(length - byte_range.suffix, 0), length
    else:
        raise TypeError(f"unexpected byte range {byte_range!r}")
    if not 0 <= lo <= hi <= length:
        raise ChunkReadError(
            f"byte range {byte_range} is outside chunk {key!r} of {length} bytes",
            key=key,
            start=lo,
            end=hi,
        )
    return lo, hi


def selects_nothing(byte_range: ByteRequest, size: int) -> bool:
    """Whether a byte request selects no byte of an object of ``size`` bytes."""
    if isinstance(byte_range, RangeByteRequest):
        return min(byte_range.end, size) <= byte_range.start
    if isinstance(byte_range, OffsetByteRequest):
        return byte_range.offset >= size
    return size == 0 or byte_range.suffix == 0


def slice_bytes(data: bytes, byte_range: ByteRequest | None, key: str) -> bytes:
    """The part of an object held in memory that a byte request selects (zarr's rules:
    a range past the end is cut short, not refused)."""
    if byte_range is None:
        return data
    n = len(data)
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[max(n - byte_range.suffix, 0) :]
    raise TypeError(f"unexpected byte range {byte_range!r} for {key!r}")
