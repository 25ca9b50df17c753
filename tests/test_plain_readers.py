"""A manifest store opened without `ManifestStore` fails loudly, through every entry point.

zarr-python 3.4 checks ``storage_transformers`` only when an array is opened by its own
path; reached through a group (``group["a"]``, ``members()``, xarray) a referenced array
opened and read as all fill values.  The plain-reader guard member
(``"chunk-manifest-json": {"must_understand": true}``) makes zarr's metadata parser refuse
the array on every path, and `ManifestStore` serves the metadata without it.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import xarray as xr
import zarr
from zarr.errors import MetadataValidationError

import zarr_manifest as zm
from zarr_manifest.errors import ManifestFormatError

#: the on-disk name of the guard member (spec section 4), spelled out: it is the format
PLAIN_READER_GUARD = "chunk-manifest-json"

VALUES = np.arange(24, dtype="float64").reshape(4, 6) * 1.5 - 3


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A netCDF4 file written by xarray with its defaults, and a manifest store over it."""
    root = tmp_path_factory.mktemp("plain")
    nc = root / "t.nc"
    xr.Dataset(
        {"t": (("y", "x"), VALUES)},
        coords={"x": np.arange(6), "y": np.arange(4)},
    ).to_netcdf(nc)
    store = root / "t.manifest"
    zm.open_virtual(nc, load=["x"]).to_store(store)
    return root, store


def _manifest_store(root: Path, store: Path) -> zm.ManifestStore:
    return zm.ManifestStore(store, allowed_prefixes=[str(root)])


def _quiet(read: Callable[[], Any]) -> Any:
    # zarr and xarray warn about consolidated metadata; what matters is the result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read()


def _consolidated_by_hand(store: Path) -> None:
    """Give the root group consolidated metadata holding the arrays' documents as stored,
    as a tool copying documents blindly would (zarr's own consolidate_metadata refuses)."""
    root_doc = orjson.loads((store / "zarr.json").read_bytes())
    members = {
        p.parent.relative_to(store).as_posix(): orjson.loads(p.read_bytes())
        for p in store.glob("*/zarr.json")
    }
    root_doc["consolidated_metadata"] = {
        "kind": "inline",
        "must_understand": False,
        "metadata": members,
    }
    (store / "zarr.json").write_bytes(orjson.dumps(root_doc))


#: every zarr/xarray way of reaching array "t", given the store (a path, or a ManifestStore)
ENTRY_POINTS: dict[str, Callable[[Any], Any]] = {
    "zarr.open": lambda s: zarr.open(s, mode="r")["t"][...],
    "zarr.open_group[member]": lambda s: zarr.open_group(s, mode="r")["t"][...],
    "group.members": lambda s: dict(zarr.open_group(s, mode="r").members())["t"][...],
    "zarr.open_array": lambda s: zarr.open_array(s, path="t", mode="r")[...],
    "zarr.open(path=)": lambda s: zarr.open(s, path="t", mode="r")[...],
    "xr.open_zarr": lambda s: xr.open_zarr(s)["t"].values,
    "xr.open_zarr(consolidated=False)": lambda s: xr.open_zarr(s, consolidated=False)["t"].values,
    "xr.open_dataset": lambda s: xr.open_dataset(s, engine="zarr")["t"].values,
    "xr.open_mfdataset": lambda s: xr.open_mfdataset([s], engine="zarr")["t"].values,
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_plain_reader_fails(written: tuple[Path, Path], entry: str) -> None:
    _, store = written
    with pytest.raises(MetadataValidationError, match=PLAIN_READER_GUARD):
        _quiet(lambda: ENTRY_POINTS[entry](str(store)))


def test_plain_consolidate_metadata_fails(written: tuple[Path, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy.manifest"
    shutil.copytree(written[1], copy)
    with pytest.raises(MetadataValidationError, match=PLAIN_READER_GUARD):
        _quiet(lambda: zarr.consolidate_metadata(str(copy)))
    assert "consolidated_metadata" not in orjson.loads((copy / "zarr.json").read_bytes())


@pytest.mark.parametrize(
    "read",
    [
        lambda s: zarr.open_consolidated(s, mode="r")["t"][...],
        lambda s: xr.open_zarr(s, consolidated=True)["t"].values,
    ],
    ids=["zarr.open_consolidated", "xr.open_zarr(consolidated=True)"],
)
def test_plain_reader_of_consolidated_metadata_fails(
    written: tuple[Path, Path], tmp_path: Path, read: Callable[[str], Any]
) -> None:
    copy = tmp_path / "copy.manifest"
    shutil.copytree(written[1], copy)
    _consolidated_by_hand(copy)
    with pytest.raises(MetadataValidationError, match=PLAIN_READER_GUARD):
        _quiet(lambda: read(str(copy)))


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_manifest_store_reads_through(written: tuple[Path, Path], entry: str) -> None:
    root, store = written
    got = _quiet(lambda: ENTRY_POINTS[entry](_manifest_store(root, store)))
    np.testing.assert_array_equal(np.asarray(got), VALUES)


def test_manifest_store_hides_the_guard(written: tuple[Path, Path]) -> None:
    root, store = written
    on_disk = orjson.loads((store / "t" / "zarr.json").read_bytes())
    assert on_disk[PLAIN_READER_GUARD] == {"must_understand": True}
    served = _manifest_store(root, store).get_sync("t/zarr.json")
    assert served is not None
    doc = orjson.loads(served.to_bytes())
    assert PLAIN_READER_GUARD not in doc and "storage_transformers" not in doc


def test_manifest_store_reads_hand_consolidated_store(
    written: tuple[Path, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "copy.manifest"
    shutil.copytree(written[1], copy)
    _consolidated_by_hand(copy)
    ds = _quiet(lambda: xr.open_zarr(_manifest_store(written[0], copy)))
    np.testing.assert_array_equal(ds["t"].values, VALUES)


def test_store_without_the_guard_still_reads(written: tuple[Path, Path], tmp_path: Path) -> None:
    """Stores written before the guard existed (format version 1, first form) are read."""
    copy = tmp_path / "old.manifest"
    shutil.copytree(written[1], copy)
    meta = copy / "t" / "zarr.json"
    doc = orjson.loads(meta.read_bytes())
    del doc[PLAIN_READER_GUARD]
    meta.write_bytes(orjson.dumps(doc))
    ds = xr.open_zarr(_manifest_store(written[0], copy), consolidated=False)
    np.testing.assert_array_equal(ds["t"].values, VALUES)
    group = zm.ManifestGroup.from_store(copy)
    assert isinstance(group.arrays["t"], zm.ManifestArray)


@pytest.mark.parametrize(
    "guard", [{"must_understand": False}, {"must_understand": 1}, True, {}, "yes"]
)
def test_malformed_guard_is_refused(written: tuple[Path, Path], tmp_path: Path, guard: Any) -> None:
    copy = tmp_path / "bad.manifest"
    shutil.copytree(written[1], copy)
    meta = copy / "t" / "zarr.json"
    doc = orjson.loads(meta.read_bytes())
    doc[PLAIN_READER_GUARD] = guard
    meta.write_bytes(orjson.dumps(doc))
    with pytest.raises(ManifestFormatError, match=PLAIN_READER_GUARD):
        zarr.open_group(_manifest_store(written[0], copy), mode="r")["t"]
    with pytest.raises(ManifestFormatError, match=PLAIN_READER_GUARD):
        zm.ManifestGroup.from_store(copy)


def test_guard_on_inline_array_is_refused(written: tuple[Path, Path], tmp_path: Path) -> None:
    copy = tmp_path / "inline.manifest"
    shutil.copytree(written[1], copy)
    meta = copy / "x" / "zarr.json"
    doc = orjson.loads(meta.read_bytes())
    assert "storage_transformers" not in doc  # x is loaded inline
    doc[PLAIN_READER_GUARD] = {"must_understand": True}
    meta.write_bytes(orjson.dumps(doc))
    with pytest.raises(ManifestFormatError, match="declares no chunk-manifest-json"):
        zarr.open_group(_manifest_store(written[0], copy), mode="r")["x"]


def test_convert_rewrites_an_old_store_with_the_guard(
    written: tuple[Path, Path], tmp_path: Path
) -> None:
    """``zarr-manifest convert old new`` protects plain readers of a store in the old form."""
    from zarr_manifest.cli import main

    old = tmp_path / "old.manifest"
    shutil.copytree(written[1], old)
    meta = old / "t" / "zarr.json"
    doc = orjson.loads(meta.read_bytes())
    del doc[PLAIN_READER_GUARD]
    meta.write_bytes(orjson.dumps(doc))
    new = tmp_path / "new.manifest"
    assert main(["convert", str(old), str(new)]) == 0
    assert orjson.loads((new / "t" / "zarr.json").read_bytes())[PLAIN_READER_GUARD] == {
        "must_understand": True
    }
    with pytest.raises(MetadataValidationError, match=PLAIN_READER_GUARD):
        _quiet(lambda: xr.open_zarr(str(new))["t"].values)
