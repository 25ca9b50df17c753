"""`combine` reads the referenced arrays it must compare by value all in one go; each must
come back under its own name with the values the file holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from zarr_manifest import build, open_virtual
from zarr_manifest.combine import _read_referenced
from zarr_manifest.errors import CombineError


def _write(path: Path, time0: int, mask: np.ndarray) -> Path:
    xr.Dataset(
        {
            "t": (("time", "y", "x"), np.full((2, 3, 4), float(time0), dtype="f4")),
            "mask": (("y", "x"), mask),
            "level": ((), np.int16(5)),
        },
        coords={"time": [time0, time0 + 1], "y": [0.0, 1.0, 2.0], "x": np.arange(4.0)},
    ).to_netcdf(path)
    return path


def test_read_referenced_returns_each_array_under_its_name(tmp_path: Path) -> None:
    mask = np.arange(12, dtype="i4").reshape(3, 4)
    group = open_virtual(_write(tmp_path / "a.nc", 7, mask), load=())
    arrays = {name: group[name] for name in ("t", "mask", "level", "x", "y")}
    values = _read_referenced(arrays, {})
    assert list(values) == list(arrays)
    np.testing.assert_array_equal(values["t"], np.full((2, 3, 4), 7.0, dtype="f4"))
    np.testing.assert_array_equal(values["mask"], mask)
    assert values["level"].shape == () and values["level"] == 5
    np.testing.assert_array_equal(values["x"], np.arange(4.0))
    np.testing.assert_array_equal(values["y"], [0.0, 1.0, 2.0])


def test_build_compares_referenced_variables_by_value(tmp_path: Path) -> None:
    mask = np.arange(12, dtype="i4").reshape(3, 4)
    same = [_write(tmp_path / f"s{i}.nc", 2 * i, mask) for i in range(5)]
    combined = build([str(p) for p in same], concat_dim="time", load=())
    assert combined["t"].shape == (10, 3, 4)
    other = mask.copy()
    other[2, 3] = -1
    paths = [*same[:3], _write(tmp_path / "odd.nc", 6, other), same[4]]
    with pytest.raises(CombineError, match="mask"):
        build([str(p) for p in paths], concat_dim="time", load=())


@pytest.mark.parametrize(
    ("dtype", "fill"),
    [("f4", np.nan), ("f8", -9999.0), ("i2", -1), ("M8[ns]", None), ("S3", None), ("c8", None)],
)
def test_encoding_has_the_documents_data_type_and_fill_value(dtype: str, fill: object) -> None:
    from zarr_manifest import _cf
    from zarr_manifest.array import InlineArray, ManifestArray
    from zarr_manifest.group import ManifestGroup
    from zarr_manifest.manifest import ChunkManifest

    data = np.zeros(4, dtype=dtype)
    metadata = InlineArray.from_numpy(data, fill_value=fill).metadata
    manifest = ChunkManifest({"0": {"path": "/x.nc", "offset": 0, "length": data.nbytes}})
    array = ManifestArray(metadata, manifest)
    doc = array.metadata.to_dict()
    encoding = _cf.encoding_of(ManifestGroup(arrays={"v": array}), "v")
    assert encoding.values["data type"] == doc["data_type"]
    got, want = encoding.values["fill value"], doc["fill_value"]
    assert type(got) is type(want)
    assert got == want  # JSON forms: NaN is "NaN"
