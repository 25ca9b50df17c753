"""Writes that never lose data: a store replaces only what it owns, publishes manifests under
new names, and lets one writer at a time in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import zarr_manifest as zm
from zarr_manifest import ManifestGroup, ManifestStore
from zarr_manifest.cli import main
from zarr_manifest.errors import ConcurrentWriteError, StoreConflictError
from zarr_manifest.format.location import open_location
from zarr_manifest.format.publish import LOCK_KEY, writer_lock


def write_source(path: Path, start: int, steps: int = 8, *, scale: float = 1.0) -> Path:
    """A netCDF4 file as xarray writes it by default: ``air(time, x)`` and coordinates."""
    time = np.arange(start, start + steps, dtype="f8")
    x = np.arange(4, dtype="f8")
    air = (time[:, None] * 10 + x[None, :]) * scale
    xr.Dataset({"air": (("time", "x"), air.astype("f4"))}, coords={"time": time, "x": x}).to_netcdf(
        path
    )
    return path


def source_values(path: Path, name: str = "air") -> np.ndarray:
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_mask(False)
        return np.asarray(ds[name][...])


def read(root: Path, name: str = "air") -> np.ndarray:
    store = ManifestStore(str(root))
    return np.asarray(zarr.open_group(store, mode="r")[name][...])


def virtual(path: Path, *, drop: tuple[str, ...] = ()) -> ManifestGroup:
    """The file's virtual dataset, its coordinates loaded inline."""
    load = [c for c in ("time", "x") if c not in drop]
    return zm.open_virtual(str(path), load=load, drop=list(drop))


def snapshot(folder: Path, names: list[str]) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder holding two source files and an unrelated file, and no store."""
    write_source(tmp_path / "a.nc", 0)
    write_source(tmp_path / "b.nc", 8, scale=2.0)
    (tmp_path / "notes.txt").write_text("not part of any store\n")
    return tmp_path


FOREIGN = ["a.nc", "b.nc", "notes.txt"]


# ---- overwrite replaces only what the store owns ---------------------------------------------


def test_store_beside_its_sources_needs_no_overwrite(folder: Path) -> None:
    before = snapshot(folder, FOREIGN)
    virtual(folder / "a.nc").to_store(folder)
    np.testing.assert_array_equal(read(folder), source_values(folder / "a.nc"))
    assert snapshot(folder, FOREIGN) == before
    # a second write finds a store there: that needs overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        virtual(folder / "b.nc").to_store(folder)


def test_overwrite_keeps_sources_and_unrelated_files(folder: Path) -> None:
    before = snapshot(folder, FOREIGN)
    virtual(folder / "a.nc").to_store(folder)
    zm.build([str(folder / "a.nc"), str(folder / "b.nc")], concat_dim="time").to_store(
        folder, overwrite=True
    )
    assert snapshot(folder, FOREIGN) == before
    expected = np.concatenate([source_values(folder / "a.nc"), source_values(folder / "b.nc")])
    np.testing.assert_array_equal(read(folder), expected)
    # and back to fewer arrays: the dropped array's objects go, nothing else does
    virtual(folder / "b.nc", drop=("x",)).to_store(folder, overwrite=True)
    assert snapshot(folder, FOREIGN) == before
    assert not (folder / "x" / "zarr.json").exists()
    np.testing.assert_array_equal(read(folder), source_values(folder / "b.nc"))


def test_cli_build_into_the_input_folder_keeps_the_input(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the reported case: `zarr-manifest build inputs/a.nc -o inputs --overwrite` deleted a.nc
    before = snapshot(folder, FOREIGN)
    for _ in range(2):
        argv = ["build", str(folder / "a.nc"), "-o", str(folder), "--overwrite", "--no-progress"]
        assert main(argv) == 0, capsys.readouterr().err
    assert snapshot(folder, FOREIGN) == before
    np.testing.assert_array_equal(read(folder), source_values(folder / "a.nc"))


def test_foreign_file_that_would_be_read_as_a_chunk_is_refused(folder: Path) -> None:
    # a file where the inline coordinate "x" keeps its chunks would be read as its data
    (folder / "x" / "c").mkdir(parents=True)
    (folder / "x" / "c" / "0").write_bytes(b"someone else's")
    group = virtual(folder / "a.nc")
    for overwrite in (False, True):
        with pytest.raises(StoreConflictError, match="x/c/0") as info:
            group.to_store(folder, overwrite=overwrite)
        assert info.value.key == "x/c/0"
    assert (folder / "x" / "c" / "0").read_bytes() == b"someone else's"
    assert not (folder / "zarr.json").exists()  # nothing was written
    assert not (folder / ".zarr-manifest").exists()


def test_foreign_node_inside_the_hierarchy_is_refused(folder: Path) -> None:
    # a zarr.json the store did not write, in a folder that would become a member of its root
    (folder / "other").mkdir()
    (folder / "other" / "zarr.json").write_bytes(b'{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(StoreConflictError, match=r"other/zarr\.json"):
        virtual(folder / "a.nc").to_store(folder)
    assert (folder / "other" / "zarr.json").exists()


def test_kerchunk_overwrite_replaces_only_references(folder: Path) -> None:
    group = virtual(folder / "a.nc")
    # JSON: a file that is not references is refused, references are replaced
    with pytest.raises(StoreConflictError, match="not kerchunk references"):
        group.to_kerchunk(folder / "notes.txt", overwrite=True)
    with pytest.raises(StoreConflictError, match="directory"):
        group.to_kerchunk(folder, overwrite=True)
    refs = folder / "refs.json"
    group.to_kerchunk(refs)
    virtual(folder / "b.nc").to_kerchunk(refs, overwrite=True)
    assert zm.open_virtual(str(refs))["air"] == zm.open_virtual(str(folder / "b.nc"))["air"]
    # parquet: a directory holding anything else is refused, and keeps it
    parq = folder / "refs.parq"
    group.to_kerchunk(parq, format="parquet")
    (parq / "mine.txt").write_text("keep me")
    with pytest.raises(StoreConflictError, match=r"mine\.txt"):
        group.to_kerchunk(parq, format="parquet", overwrite=True)
    assert (parq / "mine.txt").read_text() == "keep me"
    (parq / "mine.txt").unlink()
    group.to_kerchunk(parq, format="parquet", overwrite=True)
    assert sorted(p.name for p in folder.iterdir() if "tmp" in p.name or "old" in p.name) == []
    assert snapshot(folder, FOREIGN)["notes.txt"] == b"not part of any store\n"


# ---- readers and concurrent writers ----------------------------------------------------------


def test_reader_open_across_an_overwrite_keeps_reading_the_old_values(folder: Path) -> None:
    virtual(folder / "a.nc").to_store(folder)
    old = zarr.open_group(ManifestStore(str(folder)), mode="r")["air"]
    virtual(folder / "b.nc").to_store(folder, overwrite=True)
    # the old zarr.json's manifest is still there, unchanged: old metadata, old references
    np.testing.assert_array_equal(old[...], source_values(folder / "a.nc"))
    # and arrays first read after the overwrite come from the version the store opened:
    # "time" is inline, and its zarr.json is the same in both versions, only its data differs
    reader = ManifestStore(str(folder))
    zarr.open_group(reader, mode="r")
    virtual(folder / "a.nc").to_store(folder, overwrite=True)
    opened = zarr.open_group(reader, mode="r")
    np.testing.assert_array_equal(opened["time"][...], source_values(folder / "b.nc", "time"))
    np.testing.assert_array_equal(opened["air"][...], source_values(folder / "b.nc"))
    np.testing.assert_array_equal(read(folder), source_values(folder / "a.nc"))


def test_a_pickled_store_shows_the_version_it_opened(folder: Path) -> None:
    # dask sends the store to its workers: they must read the version the client opened
    import pickle

    virtual(folder / "a.nc").to_store(folder)
    reader = ManifestStore(str(folder))
    virtual(folder / "b.nc").to_store(folder, overwrite=True)
    copy = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(
        zarr.open_group(copy, mode="r")["air"][...], source_values(folder / "a.nc")
    )


def test_a_second_writer_fails_and_changes_nothing(folder: Path) -> None:
    virtual(folder / "a.nc").to_store(folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    location = open_location(folder)
    with writer_lock(location):
        # a real second process, through the command line
        proc = subprocess.run(
            [sys.executable, "-m", "zarr_manifest.cli", "build", str(folder / "b.nc"),
             "-o", str(folder), "--overwrite", "--no-progress"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 3, proc.stderr
        assert "ConcurrentWriteError" in proc.stderr and LOCK_KEY in proc.stderr
        with pytest.raises(ConcurrentWriteError) as info:
            virtual(folder / "b.nc").to_store(folder, overwrite=True)
        assert info.value.lock is not None and info.value.lock.endswith(LOCK_KEY)
        after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        assert {p: b for p, b in after.items() if not str(p).endswith(LOCK_KEY)} == before
    np.testing.assert_array_equal(read(folder), source_values(folder / "a.nc"))


def test_clean_removes_old_manifests_after_the_grace_period(folder: Path) -> None:
    import datetime

    virtual(folder / "a.nc").to_store(folder)
    virtual(folder / "b.nc").to_store(folder, overwrite=True)
    manifests = sorted(p.name for p in (folder / "air").iterdir() if p.name != "zarr.json")
    assert len(manifests) == 2  # the old one stays for readers that hold the old zarr.json
    assert zm.clean(folder) == []  # within the default grace period
    before = snapshot(folder, FOREIGN)
    kept = ManifestGroup.from_store(folder)
    removed = zm.clean(folder, grace=datetime.timedelta(0))
    # the first version's manifest, its node documents and its inline chunk copies
    assert "air/manifest.json" in removed
    assert all(k.startswith((".zarr-manifest/documents/", "time/", "x/", "air/")) for k in removed)
    assert zm.clean(folder, grace=datetime.timedelta(0)) == []
    assert snapshot(folder, FOREIGN) == before
    assert ManifestGroup.from_store(folder) == kept
    np.testing.assert_array_equal(read(folder), source_values(folder / "b.nc"))
    np.testing.assert_array_equal(read(folder, "time"), source_values(folder / "b.nc", "time"))


def test_clean_breaks_a_dead_writers_lock(folder: Path) -> None:
    virtual(folder / "a.nc").to_store(folder)
    (folder / LOCK_KEY).write_text('{"host": "elsewhere", "pid": 1}')
    with pytest.raises(ConcurrentWriteError, match="elsewhere"):
        virtual(folder / "b.nc").to_store(folder, overwrite=True)
    zm.clean(folder, break_lock=True)
    virtual(folder / "b.nc").to_store(folder, overwrite=True)
    np.testing.assert_array_equal(read(folder), source_values(folder / "b.nc"))


def test_memory_group_round_trip_after_overwrite(folder: Path) -> None:
    a = virtual(folder / "a.nc")
    b = virtual(folder / "b.nc")
    a.to_store(folder)
    b.to_store(folder, overwrite=True)
    as_urls = b.rename_paths(lambda p: Path(p).as_uri() if p.startswith("/") else p)
    assert ManifestGroup.from_store(folder) == as_urls


# ---- appending -------------------------------------------------------------------------------


def test_append_files_to_a_store(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_source(folder / "c.nc", 16, scale=3.0)
    before = snapshot(folder, [*FOREIGN, "c.nc"])
    zm.build(str(folder / "a.nc")).to_store(folder)
    appended = zm.append(folder, str(folder / "b.nc"), dim="time")
    assert appended["time"].shape == (16,)
    argv = ["append", str(folder), str(folder / "c.nc"), "--dim", "time", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "time is now 24 long" in capsys.readouterr().out
    names = ["a.nc", "b.nc", "c.nc"]
    expected = np.concatenate([source_values(folder / n) for n in names])
    np.testing.assert_array_equal(read(folder), expected)
    times = np.concatenate([source_values(folder / n, "time") for n in names])
    np.testing.assert_array_equal(read(folder, "time"), times)
    assert snapshot(folder, [*FOREIGN, "c.nc"]) == before
    # the same as building all three at once
    assert ManifestGroup.from_store(folder) == zm.build(
        [str(folder / n) for n in names], concat_dim="time"
    ).rename_paths(lambda p: Path(p).as_uri() if p.startswith("/") else p)


def test_append_refuses_overlapping_or_earlier_input(folder: Path) -> None:
    zm.build(str(folder / "b.nc")).to_store(folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for name, words in (("b.nc", "overlaps"), ("a.nc", "does not follow")):
        with pytest.raises(zm.CombineError, match=words) as info:
            zm.append(folder, str(folder / name), dim="time")
        assert "'time'" in str(info.value) and "store" in str(info.value)
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_append_refuses_what_combining_refuses(folder: Path) -> None:
    # a file whose "x" differs: an array without the dimension that must be the same
    time = np.arange(8, 16, dtype="f8")
    xr.Dataset(
        {"air": (("time", "x"), np.zeros((8, 4), "f4"))},
        coords={"time": time, "x": np.arange(4, dtype="f8") + 0.5},
    ).to_netcdf(folder / "shifted.nc")
    zm.build(str(folder / "a.nc")).to_store(folder)
    with pytest.raises(zm.CombineError, match="'x'"):
        zm.append(folder, str(folder / "shifted.nc"), dim="time")
    np.testing.assert_array_equal(read(folder), source_values(folder / "a.nc"))


def test_append_to_a_store_changed_meanwhile_fails(folder: Path) -> None:
    from zarr_manifest.format.hierarchy import write_group
    from zarr_manifest.format.publish import read_snapshot

    zm.build(str(folder / "a.nc")).to_store(folder)
    seen = read_snapshot(open_location(folder))
    zm.build(str(folder / "b.nc")).to_store(folder, overwrite=True)  # another writer
    with pytest.raises(ConcurrentWriteError, match="changed by another writer"):
        write_group(zm.build(str(folder / "a.nc")), folder, overwrite=True, if_snapshot=seen)
    np.testing.assert_array_equal(read(folder), source_values(folder / "b.nc"))


def test_overwrite_append_and_clean_on_s3(folder: Path, s3_server: Any, s3_bucket: str) -> None:
    import datetime

    store = s3_server.s3_store(s3_bucket, prefix="air.manifest")
    zm.build(str(folder / "a.nc")).to_store(store)
    reader = ManifestStore(store, allowed_prefixes=[str(folder)])
    opened = zarr.open_group(reader, mode="r")["air"]  # its zarr.json is read now
    zm.append(store, str(folder / "b.nc"), dim="time")
    with pytest.raises(FileExistsError):
        zm.build(str(folder / "b.nc")).to_store(store)
    removed = zm.clean(store, grace=datetime.timedelta(0))
    assert "air/manifest.json" in removed
    both = np.concatenate([source_values(folder / "a.nc"), source_values(folder / "b.nc")])
    fresh = ManifestStore(store, allowed_prefixes=[str(folder)])
    np.testing.assert_array_equal(zarr.open_group(fresh, mode="r")["air"][...], both)
    # the reader opened before the append holds the first version's zarr.json, whose
    # manifest the clean-up removed: an error naming it, never other values
    with pytest.raises(zm.ManifestFormatError, match=r"air/manifest\.json is missing"):
        opened[...]
