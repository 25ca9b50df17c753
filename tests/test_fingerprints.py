"""Source fingerprints: recorded by the builders, stored in zarr.json, checked by the store.

Built from real HDF5 files (h5py), served locally, over HTTP (`RangeServer`: ETag and
Last-Modified) and from S3 (moto: ETag = MD5 of the content).  A file rewritten after the
manifest was made must fail a read with `StaleReferenceError` naming it, never return the
new bytes as if they were the old chunks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import orjson
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype

import zarr_manifest as zm
from zarr_manifest import (
    CombineError,
    Fingerprint,
    ManifestArray,
    ManifestFormatError,
    ManifestGroup,
    ManifestStore,
    MetadataError,
    SourceNotAllowedError,
    SourceRegistry,
    StaleReferenceError,
)
from zarr_manifest.cli import main
from zarr_manifest.testing import RangeServer, S3Server, fast_retry_config

pytestmark = pytest.mark.timeout(60)

PROTO = default_buffer_prototype()
N, CHUNK = 64, 8


def write_h5(path: Path, values: np.ndarray) -> Path:
    """An HDF5 file with one chunked, uncompressed int32 dataset ``x``."""
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=values.astype("<i4"), chunks=(CHUNK,))
    return path


def read_x(store: ManifestStore) -> np.ndarray:
    return np.asarray(zarr.open_group(store, mode="r")["x"][...])


def set_mtime(path: Path, seconds: int) -> None:
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))


@pytest.fixture
def h5(tmp_path: Path) -> Path:
    """``data/a.h5``: ``x`` = 0..63 in chunks of 8."""
    (tmp_path / "data").mkdir()
    return write_h5(tmp_path / "data" / "a.h5", np.arange(N))


# ---- the model ------------------------------------------------------------------------------


def test_fingerprint_json_and_validation() -> None:
    fp = Fingerprint(size=10, etag='"abc"', last_modified="2026-01-02T03:04:05+02:00")
    assert fp.last_modified == "2026-01-02T01:04:05Z"  # normalised to UTC
    assert fp.to_json() == {"size": 10, "etag": '"abc"', "last_modified": "2026-01-02T01:04:05Z"}
    assert Fingerprint.from_json(fp.to_json()) == fp
    assert Fingerprint(size=3).to_json() == {"size": 3}
    for bad, match in [
        ({"size": -1}, "size"),
        ({"size": True}, "size"),
        ({"size": 1, "etag": ""}, "etag"),
        ({"size": 1, "last_modified": "yesterday"}, "ISO 8601"),
        ({"size": 1, "last_modified": "2026-01-02T03:04:05"}, "time zone"),
        ({"size": 1, "md5": "x"}, "unknown"),
        ({"etag": "x"}, "size"),
        ([1], "object"),
    ]:
        with pytest.raises(MetadataError, match=match):
            Fingerprint.from_json(bad)


def test_mismatch_rules() -> None:
    old = Fingerprint(size=10, etag='"a"', last_modified="2026-01-01T00:00:00Z")
    same_etag_new_time = Fingerprint(size=10, etag='W/"a"', last_modified="2026-06-01T00:00:00Z")
    assert old.mismatch(same_etag_new_time) is None  # the ETag decides, weak or not
    assert old.mismatch(Fingerprint(size=10, etag='"b"')) == 'ETag "a" recorded, "b" now'
    assert old.mismatch(Fingerprint(size=11, etag='"a"')) == "size 10 recorded, 11 now"
    local = Fingerprint(size=10, last_modified="2026-01-01T00:00:00Z")
    assert local.mismatch(Fingerprint(size=10, last_modified="2026-01-01T00:00:00Z")) is None
    assert local.mismatch(Fingerprint(size=10, last_modified="2026-01-01T00:00:01Z")) == (
        "last modified 2026-01-01T00:00:00Z recorded, 2026-01-01T00:00:01Z now"
    )
    assert Fingerprint(size=10).mismatch(local) is None  # nothing else to compare


def test_manifest_array_keeps_fingerprints(h5: Path, tmp_path: Path) -> None:
    a = zm.open_virtual(h5)["x"]
    url = h5.resolve().as_uri()
    fp = a.fingerprints[url]
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and copy.fingerprints == {url: fp}
    assert a.replace(attributes={"k": 1}).fingerprints == {url: fp}
    # equality is about the references, not when they were taken
    assert a == a.with_fingerprints(None) and a.with_fingerprints(None).fingerprints == {}
    # a moved file keeps its size only: its copy gets a new mtime / ETag
    moved = a.rename_paths("s3://bucket/a.h5")
    assert moved.fingerprints == {"s3://bucket/a.h5": Fingerprint(size=fp.size)}
    assert a.rename_paths(lambda p: p).fingerprints == {url: fp}
    with pytest.raises(MetadataError, match="does not reference"):
        ManifestArray(a.metadata, a.manifest, fingerprints={"file:///other.h5": fp})

    other = write_h5(tmp_path / "data" / "b.h5", np.arange(N) + 100)
    b = zm.open_virtual(other)["x"]
    joined = ManifestArray.concat([a, b])
    assert joined.fingerprints == {**a.fingerprints, **b.fingerprints}
    stacked = ManifestArray.stack([a, b], dimension_name="t")
    assert stacked.fingerprints == joined.fingerprints
    # the same file seen in two states: one of the manifests is stale
    changed = a.with_fingerprints({url: Fingerprint(size=fp.size + 1)})
    with pytest.raises(CombineError, match="different fingerprint"):
        ManifestArray.concat([a, changed])


def test_combine_takes_the_union(tmp_path: Path, h5: Path) -> None:
    other = write_h5(tmp_path / "data" / "b.h5", np.arange(N) + 100)
    groups = [zm.open_virtual(p) for p in (h5, other)]
    stacked = zm.stack(groups, "t")
    assert set(stacked["x"].fingerprints) == {h5.resolve().as_uri(), other.resolve().as_uri()}


# ---- recording --------------------------------------------------------------------------------


def test_local_fingerprint_is_size_mtime_inode_and_change_time(h5: Path) -> None:
    set_mtime(h5, 1_700_000_000)
    group = zm.open_virtual(h5)
    fp = group["x"].fingerprints[h5.resolve().as_uri()]
    st = h5.stat()
    assert fp == Fingerprint(
        size=st.st_size,
        last_modified="2023-11-14T22:13:20Z",
        inode=st.st_ino,
        ctime_ns=st.st_ctime_ns,
    )
    assert fp.etag is None
    assert zm.open_virtual(h5, fingerprints=False)["x"].fingerprints == {}


def test_http_fingerprint_is_etag_and_last_modified(
    clean_range_server: RangeServer, serve_bytes: Any, h5: Path, range_root: Path
) -> None:
    rel = serve_bytes(h5.read_bytes(), "a.h5")
    set_mtime(range_root / rel, 1_700_000_000)
    st = (range_root / rel).stat()
    url = clean_range_server.url_for(rel)
    fp = zm.open_virtual(url)["x"].fingerprints[url]
    assert fp.size == st.st_size == h5.stat().st_size
    assert fp.etag == f'"{st.st_size:x}-{st.st_mtime_ns:x}"'  # the server's ETag
    assert fp.last_modified == "2023-11-14T22:13:20Z"


def test_s3_fingerprint_is_the_etag(s3_server: S3Server, s3_bucket: str, h5: Path) -> None:
    data = h5.read_bytes()
    s3_server.put_object(s3_bucket, "d/a.h5", data)
    url = f"s3://{s3_bucket}/d/a.h5"
    fp = zm.open_virtual(url, **s3_server.obstore_config())["x"].fingerprints[url]
    assert fp.size == len(data)
    assert fp.etag == f'"{hashlib.md5(data).hexdigest()}"'
    assert fp.last_modified is not None


# ---- on disk ----------------------------------------------------------------------------------


def test_round_trip_through_the_store(h5: Path, tmp_path: Path) -> None:
    group = zm.open_virtual(h5)
    out = tmp_path / "m"
    group.to_store(out)
    url = h5.resolve().as_uri()
    doc = orjson.loads((out / "x" / "zarr.json").read_bytes())
    (config,) = [t["configuration"] for t in doc["storage_transformers"]]
    assert config["fingerprints"] == {
        "must_understand": False,
        "sources": {url: group["x"].fingerprints[url].to_json()},
    }
    back = ManifestGroup.from_store(out)
    assert back == group
    assert back["x"].fingerprints == group["x"].fingerprints
    # a split manifest records them in its zarr.json just the same
    group.to_store(tmp_path / "split", split_above=1, region_shape=(3,))
    split = ManifestGroup.from_store(tmp_path / "split")
    assert split == group and split["x"].fingerprints == group["x"].fingerprints
    assert (tmp_path / "split" / "x" / "manifest" / "index.json").exists()
    # zarr never sees the extension
    store = ManifestStore(out, allowed_prefixes=[str(h5.parent)])
    served = orjson.loads(store.get_sync("x/zarr.json").to_bytes())
    assert "storage_transformers" not in served
    np.testing.assert_array_equal(read_x(store), np.arange(N))


@pytest.mark.parametrize(
    ("member", "match"),
    [
        ("./fingerprints.json", "must_understand"),
        ({"must_understand": True, "sources": {}}, "must_understand"),
        ({"must_understand": False, "sources": {"SRC": {"size": -5}}}, "size"),
        ({"must_understand": False, "sources": {"file:///nowhere.h5": {"size": 5}}}, "nowhere"),
    ],
)
def test_bad_fingerprints_member_is_a_format_error(
    h5: Path, tmp_path: Path, member: Any, match: str
) -> None:
    out = tmp_path / "m"
    zm.open_virtual(h5).to_store(out)
    path = out / "x" / "zarr.json"
    doc = orjson.loads(path.read_bytes())
    if isinstance(member, dict):
        member = orjson.loads(orjson.dumps(member).replace(b"SRC", h5.resolve().as_uri().encode()))
    doc["storage_transformers"][0]["configuration"]["fingerprints"] = member
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(ManifestFormatError, match=match) as info:
        ManifestGroup.from_store(out)
    assert str(path) in str(info.value)


# ---- checking ---------------------------------------------------------------------------------


def test_rewritten_file_is_stale(h5: Path, tmp_path: Path) -> None:
    group = zm.open_virtual(h5)
    out = tmp_path / "m"
    group.to_store(out)
    group.to_store(tmp_path / "split", split_above=1, region_shape=(3,))
    url = h5.resolve().as_uri()
    size = h5.stat().st_size
    write_h5(h5, np.arange(3 * N))
    assert h5.stat().st_size != size
    allowed = [str(h5.parent)]
    for store in (
        ManifestStore(out, allowed_prefixes=allowed),
        ManifestStore(tmp_path / "split", allowed_prefixes=allowed),
        ManifestStore(group),
    ):
        with pytest.raises(StaleReferenceError, match=f"size {size} recorded") as info:
            read_x(store)
        assert info.value.url == url
        assert info.value.key == "x/c/0"
        assert url in str(info.value)
        # the async path (zarr's default pipeline for remote stores) checks as well
        with pytest.raises(StaleReferenceError):
            asyncio.run(store.get("x/c/1", PROTO))
    # without a check, the references are followed into the new file
    never = ManifestStore(out, allowed_prefixes=[str(h5.parent)], verify="never")
    assert never.get_sync("x/c/0") is not None


def test_same_size_new_mtime_is_stale(h5: Path) -> None:
    set_mtime(h5, 1_700_000_000)
    group = zm.open_virtual(h5)
    write_h5(h5, np.arange(N)[::-1].copy())
    set_mtime(h5, 1_700_000_100)
    assert group["x"].fingerprints[h5.resolve().as_uri()].size == h5.stat().st_size
    with pytest.raises(StaleReferenceError, match="last modified 2023-11-14T22:13:20Z recorded"):
        read_x(ManifestStore(group))
    # verify="never" reads the new values: exactly what the check is there to stop
    np.testing.assert_array_equal(read_x(ManifestStore(group, verify="never")), np.arange(N)[::-1])


def test_once_checks_once_and_always_catches_later_changes(h5: Path) -> None:
    group = zm.open_virtual(h5)
    once = ManifestStore(group)
    always = ManifestStore(group, verify="always")
    np.testing.assert_array_equal(read_x(once), np.arange(N))
    np.testing.assert_array_equal(read_x(always), np.arange(N))
    st = h5.stat()
    set_mtime(h5, int(st.st_mtime) + 60)  # touched: same bytes, new time
    # "once" checked before the first read and does not look again
    np.testing.assert_array_equal(read_x(once), np.arange(N))
    with pytest.raises(StaleReferenceError, match="last modified"):
        read_x(always)
    with pytest.raises(ValueError, match="verify"):
        ManifestStore(group, verify="sometimes")  # type: ignore[arg-type]


def _http_store(server: RangeServer, group: ManifestGroup, verify: Any) -> ManifestStore:
    registry = SourceRegistry.from_urls([server.url + "/"], retry_config=fast_retry_config())
    return ManifestStore(group, registry=registry, verify=verify, readahead_bytes=0)


def test_http_head_requests_per_mode(
    clean_range_server: RangeServer, serve_bytes: Any, h5: Path, range_root: Path
) -> None:
    rel = serve_bytes(h5.read_bytes(), "a.h5")
    url = clean_range_server.url_for(rel)
    group = zm.open_virtual(url)
    counts = {}
    for verify in ("never", "once", "always"):
        clean_range_server.reset_counters()
        np.testing.assert_array_equal(
            read_x(_http_store(clean_range_server, group, verify)), np.arange(N)
        )
        counts[verify] = clean_range_server.request_count(method="HEAD")
    assert counts == {"never": 0, "once": 1, "always": N // CHUNK}
    # same size, new time: the server's ETag changes, so the file is stale
    set_mtime(range_root / rel, 1_600_000_000)
    with pytest.raises(StaleReferenceError, match="ETag") as info:
        read_x(_http_store(clean_range_server, group, "once"))
    assert info.value.url == url


def test_s3_overwritten_object_is_stale(s3_server: S3Server, s3_bucket: str, h5: Path) -> None:
    s3_server.put_object(s3_bucket, "d/a.h5", h5.read_bytes())
    url = f"s3://{s3_bucket}/d/a.h5"
    group = zm.open_virtual(url, **s3_server.obstore_config())
    config = s3_server.obstore_config()
    registry = SourceRegistry.from_urls(
        [f"s3://{s3_bucket}/"],
        config={k: v for k, v in config.items() if k != "client_options"},
        client_options=config["client_options"],
    )
    np.testing.assert_array_equal(read_x(ManifestStore(group, registry=registry)), np.arange(N))
    rewritten = h5.parent / "b.h5"
    write_h5(rewritten, np.arange(N) * 2)
    assert rewritten.stat().st_size == h5.stat().st_size
    s3_server.put_object(s3_bucket, "d/a.h5", rewritten.read_bytes())
    with pytest.raises(StaleReferenceError, match="ETag") as info:
        read_x(ManifestStore(group, registry=registry))
    assert info.value.url == url


def test_cli_validate_reports_every_stale_file(
    tmp_path: Path, h5: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [
        h5,
        write_h5(tmp_path / "data" / "b.h5", np.arange(N)),
        write_h5(tmp_path / "data" / "c.h5", np.arange(N)),
    ]
    for i, f in enumerate(files):
        set_mtime(f, 1_700_000_000 + i)
    group = zm.stack([zm.open_virtual(f) for f in files], "t")
    out = tmp_path / "m"
    group.to_store(out)
    allow = ["--allow", str(tmp_path / "data")]
    assert main(["validate", str(out), *allow, "--check-sources"]) == 0
    capsys.readouterr()
    set_mtime(files[0], 1_800_000_000)
    write_h5(files[2], np.arange(2 * N))
    assert main(["validate", str(out), *allow]) == 0  # only --check-sources looks at them
    capsys.readouterr()
    assert main(["validate", str(out), *allow, "--check-sources"]) == 1
    problems = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("PROBLEM")]
    assert len(problems) == 2
    assert files[0].resolve().as_uri() in problems[0] and "last modified" in problems[0]
    assert files[2].resolve().as_uri() in problems[1] and "size" in problems[1]
    assert not any(files[1].resolve().as_uri() in p for p in problems)


def test_mtime_is_stored_to_the_microsecond(h5: Path) -> None:
    os.utime(h5, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    fp = Fingerprint.from_stat(h5.stat())
    expected = dt.datetime(2023, 11, 14, 22, 13, 20, 123456)
    assert fp.last_modified == expected.isoformat() + "Z"


def test_relative_references_survive_a_copy_that_changes_times(h5: Path, tmp_path: Path) -> None:
    """A store whose data lies inside it, referenced relatively, moves with its data: a copy
    (new mtimes, same sizes) still reads, and a rewrite with another size is still stale."""
    set_mtime(h5, 1_700_000_000)
    url = h5.resolve().as_uri()
    built = zm.open_virtual(h5)
    fingerprint = built["x"].fingerprints[url]  # size and mtime, as the builder recorded
    moved = built["x"].rename_paths("../data/a.h5").with_fingerprints({"../data/a.h5": fingerprint})
    store_dir = tmp_path / "store"
    ManifestGroup(arrays={"x": moved}).to_store(store_dir)
    (store_dir / "data").mkdir()
    copy = store_dir / "data" / "a.h5"
    copy.write_bytes(h5.read_bytes())  # a copy: same bytes and size, a new mtime
    set_mtime(copy, 1_800_000_000)
    np.testing.assert_array_equal(read_x(ManifestStore(store_dir)), np.arange(N))
    write_h5(copy, np.arange(2 * N))
    with pytest.raises(StaleReferenceError, match="size"):
        read_x(ManifestStore(store_dir))


# ---- what size and mtime cannot see (issue 13, item 11) ----------------------------------


def test_inode_and_change_time_round_trip_and_validate() -> None:
    fp = Fingerprint(size=3, last_modified="2026-01-01T00:00:00Z", inode=12, ctime_ns=5)
    assert fp.to_json() == {
        "size": 3,
        "last_modified": "2026-01-01T00:00:00Z",
        "inode": 12,
        "ctime_ns": 5,
    }
    assert Fingerprint.from_json(fp.to_json()) == fp
    for bad in ({"size": 1, "inode": -1}, {"size": 1, "ctime_ns": "5"}, {"size": 1, "inode": True}):
        with pytest.raises(MetadataError):
            Fingerprint.from_json(bad)
    # either side unknown (an older manifest): not compared
    assert Fingerprint(size=3).mismatch(fp) is None
    assert fp.mismatch(Fingerprint(size=3, last_modified="2026-01-01T00:00:00Z")) is None
    assert "inode 12 recorded, 13 now" in (fp.mismatch(dataclasses_replace(fp, inode=13)) or "")


def dataclasses_replace(fp: Fingerprint, **changes: Any) -> Fingerprint:
    return Fingerprint(**{**fp.to_json(), **changes})


def _rewrite_in_place(path: Path, values: np.ndarray, tmp: Path) -> None:
    """Same inode, same size, other bytes, the mtime set back to what it was."""
    st = path.stat()
    new = write_h5(tmp / "new.h5", values).read_bytes()
    assert len(new) == st.st_size
    with open(path, "r+b") as f:
        f.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_ino == st.st_ino


@pytest.mark.parametrize("verify", ["once", "always"])
def test_same_size_rewrite_with_mtime_restored_is_stale(
    h5: Path, tmp_path: Path, verify: Any
) -> None:
    group = zm.open_virtual(h5)
    store = ManifestStore(group, verify=verify)
    if verify == "always":
        np.testing.assert_array_equal(read_x(store), np.arange(N))
    _rewrite_in_place(h5, np.arange(N)[::-1].copy(), tmp_path)
    fresh = ManifestStore(group, verify=verify)  # "once": the first read checks
    for s in (fresh, store) if verify == "always" else (fresh,):
        with pytest.raises(StaleReferenceError, match="change time") as info:
            read_x(s)
        assert info.value.url == h5.resolve().as_uri()


def test_new_inode_with_same_size_and_mtime_is_stale(h5: Path, tmp_path: Path) -> None:
    group = zm.open_virtual(h5)
    st = h5.stat()
    other = write_h5(tmp_path / "other.h5", np.arange(N) * 3)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert other.stat().st_size == st.st_size
    os.replace(other, h5)
    assert h5.stat().st_mtime_ns == st.st_mtime_ns and h5.stat().st_ino != st.st_ino
    with pytest.raises(StaleReferenceError, match="another file"):
        read_x(ManifestStore(group, verify="once"))


def test_fingerprints_without_inode_keep_working(h5: Path) -> None:
    """A manifest written before inodes and change times were recorded reads as before."""
    group = zm.open_virtual(h5)
    url = h5.resolve().as_uri()
    fp = group["x"].fingerprints[url]
    old = Fingerprint(size=fp.size, last_modified=fp.last_modified)
    assert Fingerprint.from_stat(h5.stat()).mismatch(old) is None
    assert old.mismatch(Fingerprint.from_stat(h5.stat())) is None


# ---- If-Match on remote reads (issue 13, item 12) ----------------------------------------


def test_http_object_replaced_after_the_check_fails_the_next_read(
    clean_range_server: RangeServer, serve_bytes: Any, h5: Path, range_root: Path, tmp_path: Path
) -> None:
    """verify="once" checks the ETag once; later range GETs carry If-Match, so bytes of a
    replacement never mix with the bytes read before."""
    rel = serve_bytes(h5.read_bytes(), "a.h5")
    url = clean_range_server.url_for(rel)
    group = zm.open_virtual(url)
    store = _http_store(clean_range_server, group, "once")
    first = store.get_sync("x/c/0", prototype=default_buffer_prototype())
    assert first is not None
    replacement = write_h5(tmp_path / "b.h5", np.arange(N) * 2).read_bytes()
    assert len(replacement) == (range_root / rel).stat().st_size
    (range_root / rel).write_bytes(replacement)
    set_mtime(range_root / rel, 1_600_000_000)  # a new ETag
    for read in (
        lambda: store.get_sync("x/c/1", prototype=default_buffer_prototype()),
        lambda: asyncio.run(store.get("x/c/2", default_buffer_prototype())),
    ):
        with pytest.raises(StaleReferenceError, match="If-Match") as info:
            read()
        assert info.value.url == url
    gets = [r for r in clean_range_server.requests if r.method == "GET" and r.path == rel]
    assert gets and all(r.status in (206, 412) for r in gets)


def test_s3_object_replaced_after_the_check_fails_the_next_read(
    s3_server: S3Server, s3_bucket: str, h5: Path, tmp_path: Path
) -> None:
    s3_server.put_object(s3_bucket, "d/a.h5", h5.read_bytes())
    url = f"s3://{s3_bucket}/d/a.h5"
    group = zm.open_virtual(url, **s3_server.obstore_config())
    config = s3_server.obstore_config()
    registry = SourceRegistry.from_urls(
        [f"s3://{s3_bucket}/"],
        config={k: v for k, v in config.items() if k != "client_options"},
        client_options=config["client_options"],
    )
    store = ManifestStore(group, registry=registry, readahead_bytes=0)
    assert store.get_sync("x/c/0", prototype=default_buffer_prototype()) is not None
    rewritten = write_h5(tmp_path / "b.h5", np.arange(N) * 2)
    s3_server.put_object(s3_bucket, "d/a.h5", rewritten.read_bytes())
    for read in (
        lambda: store.get_sync("x/c/1", prototype=default_buffer_prototype()),
        lambda: asyncio.run(store.get("x/c/2", default_buffer_prototype())),
    ):
        with pytest.raises(StaleReferenceError, match="If-Match") as info:
            read()
        assert info.value.url == url


def test_http_fingerprint_check_does_not_follow_a_redirect_out(
    clean_range_server: RangeServer, serve_bytes: Any, h5: Path
) -> None:
    """The HEAD request of the check is redirected like the GETs would be: re-checked
    against the allowed prefixes, and refused before the target is contacted."""
    rel = serve_bytes(h5.read_bytes(), "pub/a.h5")
    secret = serve_bytes(b"\xff" * 64, "secret.bin")
    url = clean_range_server.url_for(rel)
    group = zm.open_virtual(url)
    clean_range_server.set_redirect(rel, clean_range_server.url_for(secret), status=307)
    try:
        registry = SourceRegistry.from_urls(
            [url.rsplit("/", 1)[0] + "/"], retry_config=fast_retry_config()
        )
        with pytest.raises(SourceNotAllowedError, match="redirects"):
            read_x(ManifestStore(group, registry=registry, verify="once"))
    finally:
        clean_range_server.set_redirect(rel, None)
    assert clean_range_server.request_count(secret) == 0
    assert clean_range_server.request_count(rel, method="HEAD") >= 1
