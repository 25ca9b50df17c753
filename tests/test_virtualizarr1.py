"""Stores written by VirtualiZarr 1.3.0 (spec section 17): refused by default with advice,
read right with ``compat="virtualizarr-1"`` (compared with xarray/netCDF4 on the original
files), and rewritten in the current form by ``upgrade``.

The stores under spec/examples/virtualizarr-1/ were written by virtualizarr 1.3.0 itself
(make.py there); their references are absolute ``file://`` URLs under
/tmp/zarr-manifest-virtualizarr-1/, where the fixture puts the committed data files.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import orjson
import pytest
import xarray as xr
import zarr

from zarr_manifest import ManifestGroup, ManifestStore
from zarr_manifest.cli import main
from zarr_manifest.errors import ManifestFormatError
from zarr_manifest.format.publish import clean
from zarr_manifest.format.virtualizarr1 import repair_document
from zarr_manifest.upgrade import upgrade

EXAMPLES = Path(__file__).resolve().parents[1] / "spec" / "examples" / "virtualizarr-1"
DATA_ROOT = Path("/tmp/zarr-manifest-virtualizarr-1")
ALLOWED = [DATA_ROOT.as_uri() + "/"]
VZ1 = "virtualizarr-1"


@pytest.fixture(scope="module", autouse=True)
def data_files() -> None:
    """The data files where VirtualiZarr 1.3.0 referenced them (absolute paths)."""
    DATA_ROOT.mkdir(exist_ok=True)
    for source in (EXAMPLES / "data").iterdir():
        target = DATA_ROOT / source.name
        if target.exists() and target.read_bytes() == source.read_bytes():
            continue
        # atomically: another test run may be reading the file
        fd, staging = tempfile.mkstemp(dir=DATA_ROOT)
        os.close(fd)
        shutil.copyfile(source, staging)
        os.replace(staging, target)


def _copy(store: str, tmp_path: Path) -> Path:
    dest = tmp_path / store
    shutil.copytree(EXAMPLES / store, dest)
    return dest


def _reference(name: str) -> xr.Dataset:
    """The original file as xarray reads it with netCDF4."""
    with xr.open_dataset(DATA_ROOT / name, engine="netcdf4") as ds:
        return ds.load()


def _open(store: Path, **store_options: object) -> xr.Dataset:
    with xr.open_dataset(
        store, engine="manifest", allowed_prefixes=ALLOWED, store_options=store_options
    ) as ds:
        return ds.load()


def test_default_refuses_with_advice() -> None:
    store = ManifestStore(EXAMPLES / "air.zarr", allowed_prefixes=ALLOWED)
    with pytest.raises(ManifestFormatError, match=r"compat='virtualizarr-1'.*upgrade") as info:
        zarr.open_group(store, mode="r")["air"]
    assert info.value.location.endswith("air.zarr/air/zarr.json")


def test_default_refuses_missing_bytes_codec_with_advice(tmp_path: Path) -> None:
    # a VirtualiZarr 1.x document whose fill value is finite: only the codecs deviate
    store = _copy("partial.zarr", tmp_path)
    with pytest.raises(
        ManifestFormatError, match=r"ArrayBytesCodec is required.*compat='virtualizarr-1'"
    ):
        zarr.open_group(ManifestStore(store, allowed_prefixes=ALLOWED), mode="r")["partial"]


def test_compat_reads_like_netcdf4() -> None:
    got = _open(EXAMPLES / "air.zarr", compat=VZ1)
    expected = _reference("air.nc")
    xr.testing.assert_identical(got, expected)
    assert np.isnan(got["air"].values).sum() == 5  # the NaNs survive, as NaN
    assert got["air"].encoding["compressors"]  # the zlib + shuffle variable


def test_compat_through_zarr_and_missing_chunks() -> None:
    store = ManifestStore(EXAMPLES / "partial.zarr", allowed_prefixes=ALLOWED, compat=VZ1)
    got = zarr.open_group(store, mode="r")["partial"][...]
    # chunks 2 and 3 were never written: VirtualiZarr left their keys out (fill value)
    expected = _reference("by-hand.nc")["partial"].values
    np.testing.assert_array_equal(got, expected)
    assert got[4, 0] == 9.969209968386869e36


def test_compat_refuses_big_endian_data_type() -> None:
    # VirtualiZarr 1.x wrote ">i4": the missing bytes codec cannot be told its byte order
    store = ManifestStore(EXAMPLES / "bigendian.zarr", allowed_prefixes=ALLOWED, compat=VZ1)
    with pytest.raises(ManifestFormatError, match="'>i4'"):
        zarr.open_group(store, mode="r")["big"]
    # and by default without advising the mode, which would not help
    plain = ManifestStore(EXAMPLES / "bigendian.zarr", allowed_prefixes=ALLOWED)
    with pytest.raises(ManifestFormatError, match="'>i4'") as info:
        zarr.open_group(plain, mode="r")["big"]
    assert "compat=" not in str(info.value)


def test_compat_default_and_unknown_value() -> None:
    assert ManifestStore(EXAMPLES / "air.zarr")._args["compat"] is None
    with pytest.raises(ValueError, match="compat"):
        ManifestStore(EXAMPLES / "air.zarr", compat="virtualizarr-2")


def test_from_store_compat() -> None:
    with pytest.raises(ManifestFormatError):
        ManifestGroup.from_store(EXAMPLES / "air.zarr")
    group = ManifestGroup.from_store(EXAMPLES / "air.zarr", compat=VZ1)
    assert np.isnan(group["air"].metadata.fill_value)


_ARRAY = (
    b'{"zarr_format": 3, "node_type": "array", "shape": [2], "data_type": "float32",'
    b' "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},'
    b' "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},'
    b' "fill_value": %s, "codecs": %s, "attributes": %s,'
    b' "storage_transformers": [{"name": "chunk-manifest-json",'
    b' "configuration": {"manifest": "./manifest.json"}}]}'
)


def _doc(fill: bytes = b"NaN", codecs: bytes = b"[]", attributes: bytes = b"{}") -> bytes:
    return _ARRAY % (fill, codecs, attributes)


@pytest.mark.parametrize(
    ("token", "spelled"), [(b"NaN", "NaN"), (b"Infinity", "Infinity"), (b"-Infinity", "-Infinity")]
)
def test_repair_fill_value(token: bytes, spelled: str) -> None:
    doc = repair_document(_doc(fill=token), location="x/zarr.json")
    assert doc["fill_value"] == spelled
    assert doc["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]


def test_repair_refuses_bare_token_elsewhere() -> None:
    with pytest.raises(ManifestFormatError, match=r"attributes\.scale is the bare token NaN"):
        repair_document(_doc(attributes=b'{"scale": NaN}'), location="x/zarr.json")


def test_repair_places_bytes_codec_after_array_to_array_codecs() -> None:
    codecs = (
        b'[{"name": "transpose", "configuration": {"order": [0]}},'
        b' {"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}},'
        b' {"name": "numcodecs.zlib", "configuration": {"level": 1}}]'
    )
    doc = repair_document(_doc(codecs=codecs), location="x/zarr.json")
    assert [c["name"] for c in doc["codecs"]] == [
        "transpose",
        "bytes",
        "numcodecs.shuffle",
        "numcodecs.zlib",
    ]


def test_repair_leaves_other_documents_alone() -> None:
    # an array-to-bytes codec present, or an unknown codec: nothing is added
    codecs = b'[{"name": "bytes", "configuration": {"endian": "big"}}]'
    assert repair_document(_doc(codecs=codecs), location="x")["codecs"][0]["configuration"] == {
        "endian": "big"
    }
    unknown = b'[{"name": "no-such-codec"}]'
    assert repair_document(_doc(codecs=unknown), location="x")["codecs"] == [
        {"name": "no-such-codec"}
    ]
    # an inline array (no transformer) keeps its codecs: VirtualiZarr 1.x wrote none
    inline = orjson.loads(_doc(fill=b'"NaN"'))
    del inline["storage_transformers"]
    assert repair_document(orjson.dumps(inline), location="x")["codecs"] == []


def test_repair_refuses_array_to_array_after_bytes_to_bytes() -> None:
    codecs = (
        b'[{"name": "numcodecs.zlib", "configuration": {"level": 1}},'
        b' {"name": "transpose", "configuration": {"order": [0]}}]'
    )
    with pytest.raises(ManifestFormatError, match="cannot add the missing array-to-bytes"):
        repair_document(_doc(codecs=codecs), location="x/zarr.json")


def test_upgrade_rewrites_atomically_and_reads_the_same(tmp_path: Path) -> None:
    store = _copy("air.zarr", tmp_path)
    before = _open(store, compat=VZ1)
    old_manifest = (store / "air" / "manifest.json").read_bytes()
    assert upgrade(store) is True
    after = _open(store)  # no compat needed any more
    xr.testing.assert_identical(after, before)
    doc = orjson.loads((store / "air" / "zarr.json").read_bytes())
    assert doc["fill_value"] == "NaN"
    assert doc["chunk-manifest-json"] == {"must_understand": True}
    assert doc["codecs"][0] == {"name": "bytes", "configuration": {"endian": "little"}}
    assert (store / ".zarr-manifest" / "snapshot.json").exists()
    # the old manifest stays, unchanged, for readers that hold the old zarr.json
    assert (store / "air" / "manifest.json").read_bytes() == old_manifest
    assert doc["storage_transformers"][0]["configuration"]["manifest"] != "./manifest.json"
    deleted = clean(store, grace=datetime.timedelta(0))
    assert "air/manifest.json" in deleted
    xr.testing.assert_identical(_open(store), before)
    assert upgrade(store) is False  # already current: nothing written


def test_upgrade_killed_after_its_commit_is_finished_by_the_next(tmp_path: Path) -> None:
    store = _copy("air.zarr", tmp_path)
    before = _open(store, compat=VZ1)
    old_document = (store / "air" / "zarr.json").read_bytes()
    assert upgrade(store) is True
    # as if killed after the snapshot, before the zarr.json of "air" was rewritten
    (store / "air" / "zarr.json").write_bytes(old_document)
    with pytest.raises(ManifestFormatError, match="compat="):
        _open(store)
    xr.testing.assert_identical(_open(store, compat=VZ1), before)
    assert upgrade(store) is True
    xr.testing.assert_identical(_open(store), before)


def test_upgrade_refuses_what_it_cannot_repair(tmp_path: Path) -> None:
    store = _copy("bigendian.zarr", tmp_path)
    listing = sorted(p.relative_to(store) for p in store.rglob("*"))
    with pytest.raises(ManifestFormatError, match="'>i4'"):
        upgrade(store)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == listing


def test_cli_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _copy("partial.zarr", tmp_path)
    assert main(["upgrade", str(store)]) == 0
    assert "upgraded" in capsys.readouterr().out
    got = zarr.open_group(ManifestStore(store, allowed_prefixes=ALLOWED), mode="r")["partial"]
    np.testing.assert_array_equal(got[...], _reference("by-hand.nc")["partial"].values)
    assert main(["upgrade", str(store)]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert main(["upgrade", str(EXAMPLES / "bigendian.zarr")]) == 3
