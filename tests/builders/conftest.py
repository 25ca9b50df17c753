"""Fixtures shared by the builder tests: reading a built group back through zarr."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# hdf5plugin's filters call the HDF5 C API from their set_local callbacks: they must bind to
# h5py's libhdf5, so hdf5plugin is loaded before netCDF4 brings its own copy of the library
# (otherwise writing Blosc datasets fails with "error during user callback").
import h5py  # noqa: F401
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
import zarr

from zarr_manifest.group import ManifestGroup


def _open_built(group: ManifestGroup, **store_kwargs: Any) -> zarr.Group:
    # imported here so that collecting the tests does not depend on the store module
    from zarr_manifest import ManifestStore

    return zarr.open_group(ManifestStore(group, **store_kwargs), mode="r")


@pytest.fixture
def open_built() -> Callable[..., zarr.Group]:
    """``open_built(group, **store_kwargs)``: a built `ManifestGroup` opened with zarr.

    The group is read through ``zarr.open_group(ManifestStore(group), mode="r")``, so every
    value a test checks has gone through the manifest, the byte-range reads and the codecs.
    """
    return _open_built


def _assert_values_equal(actual: Any, expected: Any, what: str = "") -> None:
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind == "O" or actual.dtype.kind in "OT":
        assert actual.astype(object).tolist() == expected.astype(object).tolist(), what
        return
    assert actual.dtype == expected.dtype.newbyteorder("="), (
        f"{what}: dtype {actual.dtype} != {expected.dtype}"
    )
    np.testing.assert_array_equal(actual, expected, err_msg=what, strict=False)


@pytest.fixture
def assert_values_equal() -> Callable[..., None]:
    """``assert_values_equal(actual, expected, what)``: same shape, native dtype and values.

    NaNs compare equal; object/string arrays compare element-wise as Python objects.
    """
    return _assert_values_equal
