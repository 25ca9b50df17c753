"""Whole-store readers apply the store's default-deny rules (issue 13, item 2).

`ManifestGroup.from_store` and the command line's ``info``, ``validate`` and ``convert``
read every zarr.json, manifest and inline chunk of a store.  A symlink inside the store
that leads out of it must be refused there exactly as `ManifestStore` refuses it: before,
``convert`` copied the outside file into the new store and ``validate`` said "valid".
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import zarr_manifest as zm
from zarr_manifest.cli import main
from zarr_manifest.errors import SourceNotAllowedError

SECRET = np.arange(6, dtype="int64") * 1000 + 7  # what the outside file encodes


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A manifest store with a referenced array ``t`` (data inside the store) and an inline
    coordinate ``x``."""
    root = tmp_path / "s.manifest"
    (root / "data").mkdir(parents=True)
    nc = root / "data" / "t.nc"
    xr.Dataset({"t": (("x",), np.linspace(0, 1, 6))}, coords={"x": np.arange(6)}).to_netcdf(nc)
    zm.open_virtual(nc, load=["x"]).to_store(root, overwrite=True)
    return root


def _outside_chunk(tmp_path: Path, store: Path) -> Path:
    """An outside file holding a valid encoding of SECRET as ``x``'s only chunk."""
    outside = tmp_path / "outside"
    outside.mkdir()
    meta = (store / "x" / "zarr.json").read_bytes()
    z = zarr.open_array(
        zarr.storage.MemoryStore({"zarr.json": zarr.core.buffer.cpu.Buffer.from_bytes(meta)}),
        mode="r+",
    )
    z[...] = SECRET
    secret = outside / "secret.chunk"
    secret.write_bytes(z.store._store_dict["c/0"].to_bytes())  # type: ignore[attr-defined]
    return secret


def _link_inline_chunk_out(tmp_path: Path, store: Path) -> Path:
    # the chunk at its usual place and the snapshot's immutable copy of it (spec 16), which
    # is what a reader holding the snapshot reads
    chunks = [store / "x" / "c" / "0", *sorted((store / "x").glob("chunks.*/c/0"))]
    assert len(chunks) == 2 and all(c.is_file() for c in chunks)
    secret = _outside_chunk(tmp_path, store)
    for chunk in chunks:
        chunk.unlink()
        chunk.symlink_to(secret)
    return secret


def _link_manifest_out(tmp_path: Path, store: Path) -> Path:
    manifest = store / "t" / "manifest.json"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    moved = outside / "manifest.json"
    # an absolute reference, so the moved manifest would be valid wherever it is read from
    text = manifest.read_text().replace("../data/t.nc", (store / "data" / "t.nc").as_uri())
    moved.write_text(text)
    manifest.unlink()
    manifest.symlink_to(moved)
    return moved


def _link_zarr_json_out(tmp_path: Path, store: Path) -> Path:
    meta = store / "x" / "zarr.json"
    outside = tmp_path / "meta"
    outside.mkdir()
    moved = outside / "zarr.json"
    shutil.move(meta, moved)
    meta.symlink_to(moved)
    return moved


LINKS = {
    "inline-chunk": _link_inline_chunk_out,
    "manifest": _link_manifest_out,
    "zarr.json": _link_zarr_json_out,
}


@pytest.mark.parametrize("what", sorted(LINKS))
def test_from_store_refuses_symlink_out_of_root(tmp_path: Path, store: Path, what: str) -> None:
    target = LINKS[what](tmp_path, store)
    with pytest.raises(SourceNotAllowedError, match="outside the store root") as info:
        zm.ManifestGroup.from_store(store)
    assert info.value.path == os.path.realpath(target)
    # ManifestStore refuses the same link
    with pytest.raises(SourceNotAllowedError):
        group = zarr.open_group(zm.ManifestStore(store), mode="r")
        for name in ("x", "t"):
            group[name][...]


@pytest.mark.parametrize("what", sorted(LINKS))
@pytest.mark.parametrize("command", ["info", "validate", "convert"])
def test_cli_refuses_symlink_out_of_root(
    tmp_path: Path, store: Path, what: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    LINKS[what](tmp_path, store)
    dest = tmp_path / "copy.manifest"
    argv = {
        "info": ["info", str(store)],
        "validate": ["validate", str(store)],
        "convert": ["convert", str(store), str(dest)],
    }[command]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "SourceNotAllowedError" in err and "outside the store root" in err
    assert not (dest / "x" / "c" / "0").exists()


def test_symlink_inside_root_is_read(tmp_path: Path, store: Path) -> None:
    """A link that stays inside the root is an ordinary file of the store."""
    chunk = store / "x" / "c" / "0"
    kept = store / "data" / "x-chunk"
    shutil.move(chunk, kept)
    chunk.symlink_to(kept)
    group = zm.ManifestGroup.from_store(store)
    x = group.arrays["x"]
    assert isinstance(x, zm.InlineArray)
    np.testing.assert_array_equal(x.data, np.arange(6))
    assert main(["validate", str(store)]) == 0


def test_convert_writes_no_outside_bytes(tmp_path: Path, store: Path) -> None:
    """The old failure: convert copied the outside chunk into the new store."""
    _link_inline_chunk_out(tmp_path, store)
    dest = tmp_path / "copy.manifest"
    assert main(["convert", str(store), str(dest)]) == 3
    assert not dest.exists() or not any(p.is_file() for p in dest.rglob("*"))
