"""zarr-specs#287's optional forms (spec 4.4, 5.5): whole-object entries, checksums and
inlined manifests -- read right on every read path, refused where wrong, and never written
by default.  The conformance examples (spec/examples/{valid,invalid}) cover the basic
cases; these tests cover the read paths and the checks around them."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype

from zarr_manifest import ManifestGroup, ManifestStore
from zarr_manifest.errors import (
    ChecksumMismatchError,
    ManifestFormatError,
    SourceNotAllowedError,
    StaleReferenceError,
)
from zarr_manifest.format.entry_forms import Checksum, explicit_entries, load_json_object

EXAMPLES = Path(__file__).resolve().parents[1] / "spec" / "examples" / "valid"


def _copy(example: str, tmp_path: Path) -> Path:
    dest = tmp_path / example
    shutil.copytree(EXAMPLES / example / "store", dest)
    return dest


def _expected(example: str) -> np.ndarray:
    entry = orjson.loads((EXAMPLES / example / "expected.json").read_bytes())["a"]
    return np.array(entry["values"], dtype=entry["dtype"]).reshape(entry["shape"])


def _corrupt_gzip_header(path: Path) -> None:
    # a gzip member's time stamp: it still decodes to the same values, so only the
    # checksum can tell the bytes changed
    data = bytearray(path.read_bytes())
    data[4] ^= 1
    path.write_bytes(bytes(data))


def test_crc32c_check_value() -> None:
    # RFC 3720's check value of CRC-32C
    assert Checksum("crc32c", "e3069283").of(b"123456789") == "e3069283"
    Checksum("crc32c", "e3069283").verify(b"123456789", key="k", url="u")


@pytest.mark.parametrize("virtual_shard_bytes", [None, 1 << 20])
def test_checksums_read_right(tmp_path: Path, virtual_shard_bytes: int | None) -> None:
    store = ManifestStore(_copy("checksums", tmp_path), virtual_shard_bytes=virtual_shard_bytes)
    np.testing.assert_array_equal(
        zarr.open_group(store, mode="r")["a"][...], _expected("checksums")
    )


@pytest.mark.parametrize("virtual_shard_bytes", [None, 1 << 20])
def test_checksum_mismatch_refused_through_zarr(
    tmp_path: Path, virtual_shard_bytes: int | None
) -> None:
    root = _copy("checksums", tmp_path)
    _corrupt_gzip_header(root / "data" / "a.bin")
    store = ManifestStore(root, virtual_shard_bytes=virtual_shard_bytes)
    array = zarr.open_group(store, mode="r")["a"]
    # zarr's sharding codec gathers inner-chunk reads: the error may come in a group
    with pytest.raises((ChecksumMismatchError, ExceptionGroup)) as info:
        array[0]
    error = _first_mismatch(info.value)
    assert error.url is not None and error.url.endswith("data/a.bin")
    assert "crc32c:071e5b0c" in str(error)
    np.testing.assert_array_equal(array[1], _expected("checksums")[1])  # no checksum there


def _first_mismatch(error: BaseException) -> ChecksumMismatchError:
    if isinstance(error, ChecksumMismatchError):
        return error
    assert isinstance(error, BaseExceptionGroup)
    return _first_mismatch(error.exceptions[0])


def test_checksum_mismatch_refused_through_xarray(tmp_path: Path) -> None:
    root = _copy("checksums", tmp_path)
    _corrupt_gzip_header(root / "data" / "a-2.bin")
    with (
        xr.open_dataset(root, engine="manifest") as ds,  # virtual shards by default
        pytest.raises(ChecksumMismatchError, match="sha256"),
    ):
        ds["a"].load()


def test_checksum_checked_on_partial_and_batched_reads(tmp_path: Path) -> None:
    root = _copy("checksums", tmp_path)
    store = ManifestStore(root)
    zarr.open_group(store, mode="r")["a"]  # loads the node
    proto = default_buffer_prototype()
    whole = asyncio.run(store.get("a/c/0/0", proto))
    assert whole is not None
    part = asyncio.run(store.get("a/c/0/0", proto, zarr.abc.store.RangeByteRequest(2, 9)))
    assert part is not None and part.to_bytes() == whole.to_bytes()[2:9]
    _corrupt_gzip_header(root / "data" / "a.bin")
    fresh = ManifestStore(root)
    zarr.open_group(fresh, mode="r")["a"]
    with pytest.raises(ChecksumMismatchError):
        asyncio.run(fresh.get("a/c/0/0", proto, zarr.abc.store.RangeByteRequest(2, 9)))
    with pytest.raises(ChecksumMismatchError):
        asyncio.run(fresh.get_partial_values(proto, [("a/c/0/0", None), ("a/c/1/0", None)]))


def test_bad_checksum_members_refused() -> None:
    for bad in ("crc32c:E3069283", "crc32c:e30692", "md5:" + "0" * 32, 5, "sha256:" + "0" * 63):
        with pytest.raises(ManifestFormatError, match="'checksum'"):
            explicit_entries({"0": {"path": "x", "checksum": bad}}, location="m.json")


def test_whole_object_entries_read_right(tmp_path: Path) -> None:
    root = _copy("whole-object-entries", tmp_path)
    for shards in (None, 1 << 20):
        store = ManifestStore(root, virtual_shard_bytes=shards)
        got = zarr.open_group(store, mode="r")["a"][...]
        np.testing.assert_array_equal(got, _expected("whole-object-entries"))


def test_whole_object_size_follows_the_file(tmp_path: Path) -> None:
    # the length is taken from the file, so a file cut short would be read short without
    # error: its recorded fingerprint is what catches the change
    root = _copy("whole-object-entries", tmp_path)
    doc_path = root / "a" / "zarr.json"
    doc = orjson.loads(doc_path.read_bytes())
    size = (root / "data" / "a-0.bin").stat().st_size
    doc["storage_transformers"][0]["configuration"]["fingerprints"] = {
        "must_understand": False,
        "sources": {"../data/a-0.bin": {"size": size}},
    }
    doc_path.write_bytes(orjson.dumps(doc))
    np.testing.assert_array_equal(
        zarr.open_group(ManifestStore(root), mode="r")["a"][...], _expected("whole-object-entries")
    )
    with open(root / "data" / "a-0.bin", "r+b") as f:
        f.truncate(size - 2)
    with pytest.raises(StaleReferenceError, match=r"a-0\.bin"):
        zarr.open_group(ManifestStore(root), mode="r")["a"][...]


def test_whole_object_outside_root_is_not_looked_at(tmp_path: Path) -> None:
    root = _copy("whole-object-entries", tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes((root / "data" / "a-0.bin").read_bytes())
    manifest_path = root / "a" / "manifest.json"
    manifest = orjson.loads(manifest_path.read_bytes())
    manifest["0"] = {"path": "../../outside.bin"}
    manifest_path.write_bytes(orjson.dumps(manifest))
    with pytest.raises(SourceNotAllowedError):
        zarr.open_group(ManifestStore(root), mode="r")["a"][...]
    allowed = ManifestStore(root, allowed_prefixes=[tmp_path.as_uri() + "/"])
    np.testing.assert_array_equal(
        zarr.open_group(allowed, mode="r")["a"][...], _expected("whole-object-entries")
    )


def test_duplicate_members_refused_in_optional_forms() -> None:
    text = b'{"0": {"path": "a"}, "0": {"path": "b"}}'
    with pytest.raises(ManifestFormatError, match="appears twice"):
        load_json_object(text, location="m.json")
    with pytest.raises(ManifestFormatError, match="appears twice"):
        load_json_object(b'{"0": {"path": "a", "path": "b"}}', location="m.json")


def test_inline_manifest_read_and_rewritten_explicit(tmp_path: Path) -> None:
    root = _copy("inline-manifest", tmp_path)
    expected = _expected("inline-manifest")
    np.testing.assert_array_equal(
        zarr.open_group(ManifestStore(root), mode="r")["a"][...], expected
    )
    group = ManifestGroup.from_store(root)
    out = tmp_path / "rewritten"
    group.to_store(out)
    shutil.copytree(root / "data", out / "data")  # the references are relative
    # writers keep writing the explicit form: a manifest file of path/offset/length
    doc = orjson.loads((out / "a" / "zarr.json").read_bytes())
    name = doc["storage_transformers"][0]["configuration"]["manifest"]
    assert isinstance(name, str)
    manifest = orjson.loads((out / "a" / name.removeprefix("./")).read_bytes())
    assert all(set(e) == {"path", "offset", "length"} for e in manifest.values())
    np.testing.assert_array_equal(
        zarr.open_group(ManifestStore(out), mode="r")["a"][...],
        expected,
    )


@pytest.mark.parametrize("example", ["checksums", "whole-object-entries"])
def test_from_store_refuses_what_it_would_drop(example: str, tmp_path: Path) -> None:
    with pytest.raises(ManifestFormatError, match="optional form of zarr-specs#287"):
        ManifestGroup.from_store(_copy(example, tmp_path))


def test_explicit_manifests_keep_the_fast_path() -> None:
    from zarr_manifest.format.entry_forms import has_optional_forms

    explicit = (EXAMPLES / "int32-1d" / "store" / "counts" / "manifest.json").read_bytes()
    assert not has_optional_forms(explicit)
    assert has_optional_forms(b'{"0": {"path": "a"}}')


def test_inline_manifest_repeated_key_refused(tmp_path: Path) -> None:
    root = _copy("inline-manifest", tmp_path)
    path = root / "a" / "zarr.json"
    text = path.read_text()
    # a second "0.0" entry, pointing elsewhere: a JSON parser would keep one silently
    path.write_text(
        text.replace(
            '"0.0": {', '"0.0": {"path": "../data/a.bin", "offset": 3, "length": 3}, "0.0": {', 1
        )
    )
    with pytest.raises(ManifestFormatError, match=r"'0\.0' appears twice"):
        zarr.open_group(ManifestStore(root), mode="r")["a"]


def test_optional_forms_with_an_integer_beyond_64_bits(tmp_path: Path) -> None:
    # found by tests/test_fuzz.py: the optional-forms path re-encodes parsed entries, and
    # an integer beyond 64 bits must reach the decoder's error, not crash the encoder
    root = _copy("whole-object-entries", tmp_path)
    (root / "a" / "manifest.json").write_text(
        '{"0": {"path": "../data/a-0.bin", "offset": 0, "length": 1' + "0" * 29 + "},"
        ' "1": {"path": "../data/a-1.bin"}}'
    )
    with pytest.raises(ManifestFormatError, match="'length' must be an integer"):
        zarr.open_group(ManifestStore(root), mode="r")["a"][...]
