"""`InlineArray.from_numpy` builds its metadata from a cached per-dtype template; the
documents it writes must be exactly what ``zarr.create_array`` writes for the same array."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
import zarr

from zarr_manifest.array import InlineArray

CASES: list[tuple[np.ndarray, Any]] = [
    (np.arange(5.0), None),
    (np.arange(5.0), np.nan),
    (np.arange(5.0, dtype="f4"), -9999.0),
    (np.arange(5.0, dtype=">f8"), np.inf),
    (np.arange(6, dtype="i1").reshape(2, 3), -1),
    (np.arange(6, dtype=">i2").reshape(3, 2), 7),
    (np.arange(4, dtype="u8"), None),
    (np.arange(4, dtype="<u4"), 2**32 - 1),
    (np.zeros((0, 3), dtype="i4"), 0),
    (np.array(3.5), None),
    (np.array([True, False]), True),
    (np.array([1 + 2j, 3j], dtype="c8"), None),
    (np.array([1 + 2j], dtype="c16"), 1 - 1j),
    (np.array(["2000-01-01", "2000-01-02"], dtype="datetime64[ns]"), None),
    (np.array([1, 2], dtype="timedelta64[s]"), None),
    (np.array([b"ab", b"c"], dtype="S2"), None),
    (np.array(["ab", "c"], dtype="U3"), None),
    (np.array(["ab", "cde"], dtype=np.dtypes.StringDType()), None),
    (np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]), None),
    (np.zeros(2, dtype="V4"), None),
    (np.arange(3, dtype="f2"), 0.5),
]


def _via_create_array(
    data: np.ndarray, dims: Any, attributes: dict[str, Any], fill_value: Any
) -> dict[str, Any]:
    """The document the former implementation wrote (zarr.create_array on a MemoryStore)."""
    spec = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=data.shape,
        dtype=data.dtype,
        chunks=tuple(max(n, 1) for n in data.shape),
        compressors=None,
        fill_value=fill_value,
        dimension_names=dims,
        attributes=attributes,
    )
    return spec.metadata.to_dict()


def _document(metadata: Any) -> str:
    buffers = metadata.to_buffer_dict(zarr.core.buffer.default_buffer_prototype())
    return json.dumps(json.loads(buffers["zarr.json"].to_bytes()), sort_keys=True)


@pytest.mark.parametrize(("data", "fill_value"), CASES, ids=lambda v: str(getattr(v, "dtype", v)))
@pytest.mark.parametrize("named", [False, True])
def test_from_numpy_metadata_matches_create_array(
    data: np.ndarray, fill_value: Any, named: bool
) -> None:
    dims = [f"d{i}" for i in range(data.ndim)] if named and data.ndim else None
    attributes = {"units": "K", "nested": {"a": [1, 2]}} if named else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns about unstable dtypes (both ways alike)
        expected = _via_create_array(data, dims, attributes, fill_value)
        # twice: the second call uses the cached template
        for _ in range(2):
            got = InlineArray.from_numpy(
                data, dimension_names=dims, attributes=attributes, fill_value=fill_value
            )
            assert got.metadata.to_dict().keys() == expected.keys()
            ref = zarr.core.metadata.v3.ArrayV3Metadata.from_dict(expected)
            assert _document(got.metadata) == _document(ref)
            np.testing.assert_array_equal(got.data, data)


def test_from_numpy_does_not_share_attributes_between_calls() -> None:
    first = InlineArray.from_numpy(np.arange(3), attributes={"units": "m"})
    second = InlineArray.from_numpy(np.arange(3))
    assert first.attributes == {"units": "m"}
    assert second.attributes == {}


def test_from_numpy_rejects_what_create_array_rejects() -> None:
    with pytest.raises(ValueError, match="Object"):
        InlineArray.from_numpy(np.array(["a", 1], dtype=object))
    with pytest.raises((ValueError, TypeError)):
        InlineArray.from_numpy(np.arange(3.0), fill_value="not a number")
