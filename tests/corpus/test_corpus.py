"""The corpus' fast subset (CI): sample files inside the installed test-extra packages.

No download: scipy, h5py, xarray and astropy ship sample files in their wheels.  Every file
must read like its own library reads it, or be refused with a documented error; a file
listed in `KNOWN` is expected to fail (strict: it must be removed once it passes).  The full
run over downloaded packages is ``./dev.sh corpus``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corpus import PACKAGES, _scan, collect_installed, compare, detect, evaluate

#: Files that do not read right yet: display path -> why (strict xfail).
KNOWN: dict[str, str] = {}


def _id(path: str) -> str:
    return path.split("site-packages/", 1)[-1]


def _files() -> list[tuple[str, str, str]]:
    return [(p.name, fmt, str(path)) for p in PACKAGES for fmt, path in collect_installed(p)]


FILES = _files()
PARAMS = [
    pytest.param(
        *f,
        id=_id(f[2]),
        marks=[pytest.mark.xfail(strict=True, reason=KNOWN[_id(f[2])])]
        if _id(f[2]) in KNOWN
        else [],
    )
    for f in FILES
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("package", "fmt", "path"), PARAMS)
def test_sample_file_reads_like_its_library(package: str, fmt: str, path: str) -> None:
    result = evaluate(fmt, path, package)
    if result.status == "skipped":
        pytest.skip(result.reason)
    assert result.status in ("right", "refused"), f"{result.status}: {result.reason}"


def test_the_subset_is_not_empty() -> None:
    formats = {fmt for _, fmt, _ in FILES}
    assert {"fits", "netcdf3", "hdf5"} <= formats, formats


def test_compare_finds_every_kind_of_difference() -> None:
    assert compare(np.array([1.0, np.nan]), np.array([1.0, np.nan])) is None
    assert "values differ" in (compare(np.array([1, 2]), np.array([1, 3])) or "")
    assert "shape" in (compare(np.zeros((2, 3)), np.zeros((3, 2))) or "")
    third = np.array([1 / 3])
    assert compare(third.astype("f4"), third) is None  # float32 against float64: its ulps
    assert compare(third + 1e-9, third) is not None
    assert compare(np.array([b"ab ", b"c"]), np.array([b"ab", b"c"])) is None
    assert compare(np.array([b"ab"]), np.array([b"ax"])) is not None
    text = np.array(["a", "bc"], dtype=np.dtypes.StringDType())
    assert compare(text, np.array([b"a", b"bc"], dtype=object)) is None  # h5py's vlen str
    assert compare(text, np.array([b"a", b"bd"], dtype=object)) is not None
    table = np.array([(1, 2.5)], dtype=[("a", "i4"), ("b", "f8")])
    assert compare(table, {"a": np.array([1]), "b": np.array([2.5])}) is None
    assert "t.b" in (compare(table, {"a": np.array([1]), "b": np.array([3.0])}, "t") or "")


def test_directory_stores_and_derived_formats(tmp_path: Path) -> None:
    """A Zarr store written by zarr-python with its defaults is one corpus entry (its keys
    are not looked at one by one), reads right, and so does zarr's zip of it; references
    kerchunk makes of an h5py file read right too."""
    import h5py
    import zarr

    root = tmp_path / "pkg"
    store = root / "fixture" / "store.zarr"
    group = zarr.open_group(store, mode="w", zarr_format=2)
    group.create_array("a", shape=(7, 5), chunks=(3, 5), dtype="i4")[...] = np.arange(35).reshape(
        7, 5
    )
    with h5py.File(root / "file.h5", "w") as f:
        f["x"] = np.linspace(0, 1, 11)
    found = _scan(root, ("*/store.zarr",))
    assert found == [("hdf5", root / "file.h5"), ("zarr", store)], found
    assert detect(store) == "zarr"
    for fmt, path in [("zarr", store), ("zip", store), ("kerchunk", root / "file.h5")]:
        result = evaluate(fmt, str(path), "pkg")
        assert result.status == "right", (fmt, result.reason)
