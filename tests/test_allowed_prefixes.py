"""format/allowed_prefixes.py: the default-deny rules the store and the kerchunk builder share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zarr_manifest.errors import SourceNotAllowedError
from zarr_manifest.format.allowed_prefixes import AllowedPrefix, AllowedPrefixes
from zarr_manifest.format.paths import local_path_to_url


def test_segment_wise_longest_prefix_wins() -> None:
    allowed = AllowedPrefixes.of(["s3://b/data", "s3://b/data/sub/"], "v", as_directory=True)
    hit = allowed.resolve("s3://b/data/sub/x%20y.nc", key="a/0")
    assert hit.prefix.prefix == "s3://b/data/sub"
    assert hit.relative == "x%20y.nc"  # still percent-encoded
    assert hit.url == "s3://b/data/sub/x%20y.nc" and hit.value == "v"
    with pytest.raises(SourceNotAllowedError, match="under no registered prefix") as e:
        allowed.resolve("s3://b/database/x.nc", key="a/1")
    assert e.value.key == "a/1" and e.value.path == "s3://b/database/x.nc"
    assert "allowed prefixes: s3://b/data, s3://b/data/sub" in str(e.value)


def test_directories_and_roots_are_not_objects() -> None:
    allowed = AllowedPrefixes.of(["https://h/files/"], None)
    with pytest.raises(SourceNotAllowedError, match="names a directory"):
        allowed.resolve("https://h/files/dir/")
    with pytest.raises(SourceNotAllowedError, match="names the store root"):
        allowed.resolve("https://h/files")
    assert allowed.resolve("https://h/files/a.nc?sig=1").query == "sig=1"


def test_an_object_prefix_allows_that_object_unless_taken_as_a_directory() -> None:
    assert AllowedPrefixes.of(["s3://b/one.nc"], 0).resolve("s3://b/one.nc").relative == "one.nc"
    with pytest.raises(SourceNotAllowedError, match="store root"):
        AllowedPrefixes.of(["s3://b/one.nc"], 0, as_directory=True).resolve("s3://b/one.nc")


def test_local_files_are_matched_by_real_path(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.nc").write_bytes(b"x")
    os.symlink(outside / "secret.nc", inside / "link.nc")
    (inside / "ok.nc").write_bytes(b"y")
    allowed = AllowedPrefixes.of([str(inside)], None)
    hit = allowed.resolve(local_path_to_url(str(inside / "ok.nc")))
    assert hit.real_path == os.path.realpath(inside / "ok.nc") and hit.relative == "ok.nc"
    with pytest.raises(SourceNotAllowedError, match="its real path, symlinks resolved"):
        allowed.resolve(local_path_to_url(str(inside / "link.nc")))
    # the same link is read from the other allowed directory when that one is allowed too
    both = allowed.with_prefix(AllowedPrefix.parse(str(outside)), None)
    assert both.resolve(local_path_to_url(str(inside / "link.nc"))).relative == "secret.nc"


def test_empty_allows_nothing() -> None:
    with pytest.raises(SourceNotAllowedError, match=r"allowed prefixes: none"):
        AllowedPrefixes().resolve("s3://b/x.nc")


def test_registering_a_prefix_again_replaces_it() -> None:
    allowed = AllowedPrefixes.of(["s3://b/a", "s3://b/c"], 1).with_prefix(
        AllowedPrefix.parse("s3://b/a"), 2
    )
    assert allowed.prefixes == ("s3://b/c", "s3://b/a")
    assert allowed.resolve("s3://b/a/x").value == 2
