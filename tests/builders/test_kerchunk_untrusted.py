"""Untrusted kerchunk references (issue 13, item 3).

A references file may point only under its own directory and the prefixes the caller
allows.  Before, ``ManifestStore(open_virtual("refs.json"))`` read any file the references
named (the in-memory store allows the directories of the group's sources), an array mixing
inline and referenced chunks read an outside file while building and wrote it into the new
store, and building sent HEAD requests to any host the references named.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import zarr_manifest as zm
from zarr_manifest.builders.kerchunk import build_kerchunk, from_kerchunk_refs
from zarr_manifest.errors import SourceNotAllowedError

VALUES = np.arange(8, dtype="<i4") * 5 - 9
SECRET = np.arange(4, dtype="<i4") + 4242


def _zarray() -> str:
    return json.dumps(
        {
            "zarr_format": 2,
            "shape": [8],
            "chunks": [4],
            "dtype": "<i4",
            "compressor": None,
            "filters": None,
            "fill_value": 0,
            "order": "C",
        }
    )


def _refs(chunk0: Any, chunk1: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "refs": {
            ".zgroup": json.dumps({"zarr_format": 2}),
            "a/.zarray": _zarray(),
            "a/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["x"]}),
            "a/0": chunk0,
            "a/1": chunk1,
        },
    }


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """``refs/`` (the references' directory, with its data file) and ``private/`` beside it."""
    refs_dir = tmp_path / "refs"
    private = tmp_path / "private"
    refs_dir.mkdir()
    private.mkdir()
    (refs_dir / "data.bin").write_bytes(VALUES.tobytes())
    (private / "key.bin").write_bytes(SECRET.tobytes())
    return {"refs": refs_dir, "private": private, "secret": private / "key.bin"}


def _write_refs(layout: dict[str, Path], refs: dict[str, Any]) -> Path:
    path = layout["refs"] / "refs.json"
    path.write_text(json.dumps(refs))
    return path


def _read(group: zm.ManifestGroup) -> np.ndarray:
    return np.asarray(zarr.open_group(zm.ManifestStore(group), mode="r")["a"][...])


@pytest.mark.parametrize("spelling", ["absolute", "relative", "file-url"])
def test_reference_outside_own_directory_is_refused(layout: dict[str, Path], spelling: str) -> None:
    secret = layout["secret"]
    target = {
        "absolute": str(secret),
        "relative": "../private/key.bin",
        "file-url": secret.as_uri(),
    }[spelling]
    refs = _write_refs(layout, _refs(["data.bin", 0, 16], [target, 0, 16]))
    with pytest.raises(SourceNotAllowedError, match="for key 'a'") as info:
        zm.open_virtual(refs)
    assert info.value.path == secret.as_uri()


def test_allowed_prefix_lets_the_reference_through(layout: dict[str, Path]) -> None:
    refs = _write_refs(layout, _refs(["data.bin", 0, 16], [str(layout["secret"]), 0, 16]))
    group = zm.open_virtual(refs, allowed_prefixes=[str(layout["private"])])
    np.testing.assert_array_equal(_read(group), np.concatenate([VALUES[:4], SECRET]))


def test_references_under_own_directory_are_read(layout: dict[str, Path]) -> None:
    """The default allows the references file's own directory, however it is spelled."""
    data = layout["refs"] / "data.bin"
    refs = _write_refs(layout, _refs([str(data), 0, 16], ["data.bin", 16, 16]))
    np.testing.assert_array_equal(_read(zm.open_virtual(refs)), VALUES)


def test_symlink_in_own_directory_leading_out_is_refused(layout: dict[str, Path]) -> None:
    link = layout["refs"] / "innocent.bin"
    link.symlink_to(layout["secret"])
    refs = _write_refs(layout, _refs(["data.bin", 0, 16], ["innocent.bin", 0, 16]))
    with pytest.raises(SourceNotAllowedError, match="real path"):
        build_kerchunk(refs)


def test_mixed_inline_array_does_not_read_outside_file(
    layout: dict[str, Path], tmp_path: Path
) -> None:
    """One inline chunk makes the array load while building: the outside chunk must not
    be read, nor end up in a store written from the result."""
    inline = "base64:" + base64.b64encode(VALUES[:4].tobytes()).decode()
    refs = _write_refs(layout, _refs(inline, [str(layout["secret"]), 0, 16]))
    opened: list[str] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", spy)
        with pytest.raises(SourceNotAllowedError, match="for key 'a'"):
            zm.open_virtual(refs)
    assert str(layout["secret"]) not in opened
    # allowed, the array is loaded inline with the outside values, as asked
    group = zm.open_virtual(refs, allowed_prefixes=[str(layout["private"])])
    assert isinstance(group.arrays["a"], zm.InlineArray)
    np.testing.assert_array_equal(group.arrays["a"].data, np.concatenate([VALUES[:4], SECRET]))


@pytest.mark.parametrize("whole_files", [False, True], ids=["ranges", "whole-files"])
def test_no_request_to_a_host_the_caller_did_not_allow(
    layout: dict[str, Path], clean_range_server: Any, serve_bytes: Any, whole_files: bool
) -> None:
    """Ranges get a fingerprint (a HEAD) after building; whole-file references ``[url]``
    need the file's size (a HEAD) while building, even without fingerprints."""
    if whole_files:
        urls = [
            clean_range_server.url_for(serve_bytes(VALUES[i : i + 4].tobytes(), f"c{i}"))
            for i in (0, 4)
        ]
        chunks = [[u] for u in urls]
    else:
        urls = [clean_range_server.url_for(serve_bytes(VALUES.tobytes(), "remote.bin"))] * 2
        chunks = [[urls[0], 0, 16], [urls[0], 16, 16]]
    refs = _write_refs(layout, _refs(*chunks))
    with pytest.raises(SourceNotAllowedError, match="for key 'a'"):
        zm.open_virtual(refs, fingerprints=not whole_files)
    clean_range_server.wait_idle()
    assert clean_range_server.request_count() == 0
    # the same references with the server allowed: requests are made (the count can fail)
    group = zm.open_virtual(
        refs, fingerprints=not whole_files, allowed_prefixes=[urls[0].rsplit("/", 1)[0] + "/"]
    )
    assert clean_range_server.request_count() > 0
    np.testing.assert_array_equal(_read(group), VALUES)


def test_remote_references_file_allows_its_own_directory(
    clean_range_server: Any, serve_bytes: Any, tmp_path: Path
) -> None:
    data = serve_bytes(VALUES.tobytes(), "data.bin")
    refs_path = serve_bytes(
        json.dumps(_refs(["data.bin", 0, 16], ["data.bin", 16, 16])).encode(), "refs.json"
    )
    other = serve_bytes(SECRET.tobytes(), "../elsewhere-" + os.urandom(4).hex() + ".bin")
    assert data.rsplit("/", 1)[0] == refs_path.rsplit("/", 1)[0]
    group = zm.open_virtual(clean_range_server.url_for(refs_path))
    np.testing.assert_array_equal(_read(group), VALUES)
    bad = serve_bytes(
        json.dumps(_refs(["data.bin", 0, 16], [clean_range_server.url_for(other), 0, 16])).encode(),
        "bad.json",
    )
    clean_range_server.reset_counters()
    with pytest.raises(SourceNotAllowedError):
        zm.open_virtual(clean_range_server.url_for(bad))
    assert clean_range_server.request_count(path=other) == 0


def test_in_memory_references_are_unchecked_unless_asked(layout: dict[str, Path]) -> None:
    """from_kerchunk_refs takes the caller's own references: it checks only when given
    allowed_prefixes."""
    refs = _refs([str(layout["refs"] / "data.bin"), 0, 16], [str(layout["secret"]), 0, 16])
    group = from_kerchunk_refs(refs)
    np.testing.assert_array_equal(_read(group), np.concatenate([VALUES[:4], SECRET]))
    with pytest.raises(SourceNotAllowedError, match="for key 'a'"):
        from_kerchunk_refs(refs, allowed_prefixes=[str(layout["refs"])])


def test_allowed_prefixes_is_refused_for_a_file_format(tmp_path: Path) -> None:
    import xarray as xr

    nc = tmp_path / "t.nc"
    xr.Dataset({"t": (("x",), np.arange(3.0))}).to_netcdf(nc)
    with pytest.raises(TypeError, match="allowed_prefixes applies to references files"):
        zm.open_virtual(nc, allowed_prefixes=[str(tmp_path)])


def test_cli_convert_refuses_and_allows(
    layout: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zarr_manifest.cli import main

    inline = "base64:" + base64.b64encode(VALUES[:4].tobytes()).decode()
    refs = _write_refs(layout, _refs(inline, [str(layout["secret"]), 0, 16]))
    dest = tmp_path / "out.manifest"
    assert main(["convert", str(refs), str(dest)]) == 3
    assert "SourceNotAllowedError" in capsys.readouterr().err
    assert not dest.exists()
    assert main(["convert", str(refs), str(dest), "--allow", str(layout["private"])]) == 0
    stored = zm.ManifestGroup.from_store(dest).arrays["a"]
    assert isinstance(stored, zm.InlineArray)
    np.testing.assert_array_equal(stored.data, np.concatenate([VALUES[:4], SECRET]))
