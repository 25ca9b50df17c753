"""The ``zarr-manifest`` command line: build, info, validate, convert, and its exit codes
(0 ok, 1 validation problems, 2 usage error, 3 bad input).

Most runs call `main` in-process; two go through the installed console script.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import fsspec
import netCDF4
import numpy as np
import pytest
import zarr

from zarr_manifest import ManifestGroup, ManifestStore, build
from zarr_manifest.cli import main
from zarr_manifest.format.paths import local_path_to_url

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

SCRIPT = Path(sys.executable).parent / "zarr-manifest"
LOAD = ["--load", "time", "--load", "y", "--load", "x"]


def field(t: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (t[:, None, None] * 10000 + y[None, :, None] * 100 + x[None, None, :]).astype("f4")


def write_nc(
    path: Path,
    t: Sequence[float],
    y: Sequence[float] = (0, 1, 2),
    x: Sequence[float] = (0, 1, 2, 3),
    chunk: int = 1,
) -> Path:
    ta, ya, xa = (np.asarray(v, dtype="f8") for v in (t, y, x))
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.history = "cli test"
        ds.createDimension("time", len(ta))
        ds.createDimension("y", len(ya))
        ds.createDimension("x", len(xa))
        for name, values in (("time", ta), ("y", ya), ("x", xa)):
            ds.createVariable(name, "f8", (name,))[:] = values
        air = ds.createVariable(
            "air", "f4", ("time", "y", "x"), chunksizes=(chunk, len(ya), len(xa))
        )
        air[:] = field(ta, ya, xa)
    return path


@pytest.fixture
def data(tmp_path: Path) -> list[Path]:
    """Three netCDF4 files of 8 time steps each, one chunk per step."""
    folder = tmp_path / "data"
    folder.mkdir()
    return [write_nc(folder / f"d{i}.nc", np.arange(8 * i, 8 * i + 8)) for i in range(3)]


T24 = np.arange(24.0)
Y3, X4 = np.arange(3.0), np.arange(4.0)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def read_store(root: Path, name: str, allowed: Sequence[Path] = ()) -> np.ndarray:
    store = ManifestStore(str(root), allowed_prefixes=[str(p) for p in allowed])
    with zarr.config.set({"array.rectilinear_chunks": True}):
        return np.asarray(zarr.open_group(store, mode="r")[name][...])


@pytest.fixture
def store(tmp_path: Path, data: list[Path], capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "air.manifest"
    code, _, _ = run(
        ["build", str(data[0].parent / "*.nc"), "-o", str(out), "--concat-dim", "time", *LOAD,
         "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0
    return out


# ---- build ----------------------------------------------------------------------------


def test_build_in_process(
    tmp_path: Path, data: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "air.manifest"
    code, stdout, _ = run(
        ["build", str(data[0].parent / "d*.nc"), "-o", str(out), "--concat-dim", "time", *LOAD,
         "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert f"wrote manifest {out}" in stdout
    written = ManifestGroup.from_store(str(out))
    assert written == build(data, concat_dim="time", load=["time", "y", "x"])
    assert written.attributes["history"] == "cli test"
    np.testing.assert_array_equal(
        read_store(out, "air", allowed=[data[0].parent]), field(T24, Y3, X4)
    )
    np.testing.assert_array_equal(read_store(out, "time"), T24)
    # writing over it needs --overwrite
    again = ["build", *map(str, data), "-o", str(out), "--concat-dim", "time", *LOAD,
             "--no-progress"]  # fmt: skip
    code, _, err = run(again, capsys)
    assert code == 3 and "overwrite" in err
    code, _, _ = run([*again, "--overwrite", "--drop", "x", "--drop", "y"], capsys)
    assert code == 0
    assert sorted(ManifestGroup.from_store(str(out)).arrays) == ["air", "time"]


def test_build_uneven_inputs_then_info_and_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # monthly files of 31 and 28 steps in chunks of 4: a rectilinear grid, which every
    # command must be able to read back
    a = write_nc(tmp_path / "jan.nc", np.arange(31), chunk=4)
    b = write_nc(tmp_path / "feb.nc", np.arange(31, 59), chunk=4)
    out = tmp_path / "uneven.manifest"
    code, _, _ = run(
        ["build", str(a), str(b), "-o", str(out), "--concat-dim", "time", *LOAD,
         "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0
    np.testing.assert_array_equal(
        read_store(out, "air", allowed=[tmp_path]), field(np.arange(59.0), Y3, X4)
    )
    code, stdout, _ = run(["info", str(out)], capsys)
    assert code == 0 and "air float32 (59, 3, 4)" in stdout
    code, stdout, _ = run(
        ["validate", str(out), "--allow", str(tmp_path), "--check-sources"], capsys
    )
    assert code == 0 and "valid" in stdout
    # kerchunk (Zarr v2) has no rectilinear grid: refused, nothing written
    refs = tmp_path / "refs.json"
    code, _, err = run(["convert", str(out), str(refs)], capsys)
    assert code == 3 and "regular" in err and "'air'" in err
    assert not refs.exists()


def test_build_console_script_by_coords_with_workers(tmp_path: Path) -> None:
    ys, xs = np.arange(4.0), np.arange(6.0)
    paths = []
    for ti, tb in enumerate(np.split(np.arange(4.0), 2)):
        for yi, yb in enumerate(np.split(ys, 2)):
            for xi, xb in enumerate(np.split(xs, 2)):
                paths.append(write_nc(tmp_path / f"t{ti}y{yi}x{xi}.nc", tb, yb, xb))
    random.Random(5).shuffle(paths)
    out = tmp_path / "tiles.manifest"
    argv = [str(SCRIPT), "build", *map(str, paths), "-o", str(out), "--by-coords",
            "--workers", "2", *LOAD]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote manifest {out}" in proc.stdout
    assert "parsing" in proc.stderr  # the progress bar
    np.testing.assert_array_equal(
        read_store(out, "air", allowed=[tmp_path]), field(np.arange(4.0), ys, xs)
    )
    np.testing.assert_array_equal(read_store(out, "x"), xs)


def test_console_script_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not a data file at all")
    proc = subprocess.run(
        [str(SCRIPT), "info", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    assert "bad.nc" in proc.stderr and "unrecognised file format" in proc.stderr
    proc = subprocess.run([str(SCRIPT), "info"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr


# ---- info -----------------------------------------------------------------------------


def test_info(store: Path, data: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(["info", str(store)], capsys)
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == str(store)
    assert "  @history = 'cli test'" in lines
    air = next(ln for ln in lines if ln.strip().startswith("air "))
    assert "float32 (24, 3, 4) (time,y,x) codecs=bytes" in air
    assert "references=24 missing=0" in air
    assert f"bytes={24 * 12 * 4}" in air
    assert any(
        ln.strip().startswith("time float64 (24,)") and ln.endswith("inline") for ln in lines
    )
    assert f"total: 24 references, {24 * 12 * 4} bytes referenced, 3 source files" in lines
    for p in data:
        assert f"  {p.as_uri()}" in lines
    # a legacy file directly
    code, stdout, _ = run(["info", str(data[0])], capsys)
    assert code == 0
    assert "air float32 (8, 3, 4)" in stdout and "1 source files" in stdout


# ---- validate -------------------------------------------------------------------------


def test_validate_reference_outside_root(
    store: Path, data: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # the store is valid; its sources outside it are summed up in one line saying what
    # readers must allow (issue 15), not one problem per source
    code, stdout, _ = run(["validate", str(store)], capsys)
    assert code == 0
    assert not [ln for ln in stdout.splitlines() if ln.startswith("PROBLEM")]
    (note,) = [ln for ln in stdout.splitlines() if ln.startswith("note:")]
    assert "3 source file(s)" in note and f"--allow {data[0].parent}/" in note
    assert stdout.splitlines()[-1] == f"{store}: valid"
    code, stdout, _ = run(["validate", str(store), "--check-sources"], capsys)
    assert code == 1
    (problem,) = [ln for ln in stdout.splitlines() if ln.startswith("PROBLEM")]
    assert f"--allow {data[0].parent}/" in problem
    code, stdout, _ = run(["validate", str(store), "--allow", str(data[0].parent)], capsys)
    assert code == 0
    assert stdout.strip() == f"{store}: valid"


def test_validate_sources_inside_the_root(
    tmp_path: Path, data: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "packed"
    inside = root / "sources"
    group = build(data, concat_dim="time", load=["time", "y", "x"])
    old = local_path_to_url(str(data[0].parent)) + "/"
    group = group.rename_paths(lambda u: u.replace(old, local_path_to_url(str(inside)) + "/"))
    group.to_store(str(root))
    inside.mkdir()
    for p in data:
        shutil.copy(p, inside / p.name)
    code, stdout, _ = run(["validate", str(root), "--check-sources"], capsys)
    assert code == 0, stdout
    assert stdout.strip() == f"{root}: valid"
    np.testing.assert_array_equal(read_store(root, "air"), field(T24, Y3, X4))


def test_validate_check_sources_truncated_and_missing(
    store: Path, data: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    allow = ["--allow", str(data[0].parent)]
    # cut the file inside its last chunk
    manifest = ManifestGroup.from_store(str(store))["air"].manifest
    mine = manifest.path_ids == manifest.path_table.index(data[1].as_uri())
    end = int((manifest.offsets[mine] + manifest.lengths[mine]).max())
    with open(data[1], "r+b") as f:
        f.truncate(end - 1)
    # without --check-sources the references are only checked for where they point
    code, _, _ = run(["validate", str(store), *allow], capsys)
    assert code == 0
    code, stdout, _ = run(["validate", str(store), *allow, "--check-sources"], capsys)
    assert code == 1
    problems = [ln for ln in stdout.splitlines() if ln.startswith("PROBLEM")]
    assert len(problems) == 1
    assert "end beyond" in problems[0] and data[1].as_uri() in problems[0]
    assert f"1 chunk ranges end beyond the {end - 1} bytes" in problems[0]
    data[2].unlink()
    code, stdout, _ = run(["validate", str(store), *allow, "--check-sources"], capsys)
    assert code == 1
    assert f"source {data[2].as_uri()} does not exist" in stdout
    assert "2 problem(s)" in stdout


# ---- convert --------------------------------------------------------------------------


def test_convert_to_kerchunk_json_and_back(
    tmp_path: Path, store: Path, data: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    refs = tmp_path / "refs.json"
    code, stdout, _ = run(["convert", str(store), str(refs)], capsys)
    assert code == 0 and f"wrote kerchunk-json {refs}" in stdout
    fs = fsspec.filesystem("reference", fo=str(refs), asynchronous=True)
    group = zarr.open_group(zarr.storage.FsspecStore(fs, read_only=True), mode="r", zarr_format=2)
    np.testing.assert_array_equal(group["air"][...], field(T24, Y3, X4))
    np.testing.assert_array_equal(group["time"][...], T24)
    np.testing.assert_array_equal(group["x"][...], X4)
    assert group["air"].attrs["_ARRAY_DIMENSIONS"] == ["time", "y", "x"]
    # kerchunk references -> manifest store again: the same references
    back = tmp_path / "back.manifest"
    code, _, _ = run(["convert", str(refs), str(back)], capsys)
    assert code == 0
    np.testing.assert_array_equal(
        read_store(back, "air", allowed=[data[0].parent]), field(T24, Y3, X4)
    )
    assert ManifestGroup.from_store(str(back))["air"].manifest == (
        ManifestGroup.from_store(str(store))["air"].manifest
    )


# ---- usage and input errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["build", "a.nc"],  # no -o
        ["build", "a.nc", "-o", "x", "--concat-dim", "time", "--by-coords"],
        ["build", "a.nc", "-o", "x", "--workers", "many"],
        ["convert", "a", "b", "--to", "netcdf"],
        ["validate"],
    ],
    ids=["nothing", "unknown", "no-output", "exclusive", "workers", "target", "no-src"],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "usage:" in err


def test_several_files_need_a_combine_option(
    tmp_path: Path, data: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.manifest"
    code, _, err = run(["build", str(data[0].parent / "*.nc"), "-o", str(out)], capsys)
    assert code == 2 and "--concat-dim" in err
    assert not out.exists()


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "exit codes" in out
    code, out, _ = run(["build", "--help"], capsys)
    assert code == 0 and "--concat-dim" in out


def test_bad_inputs(tmp_path: Path, data: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(512))
    out = tmp_path / "out.manifest"
    # a corrupt file among good ones: named with its cause, nothing written
    code, _, err = run(
        ["build", str(data[0]), str(garbage), str(data[1]), "-o", str(out),
         "--concat-dim", "time", *LOAD, "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 3
    assert "1 of 3 files failed" in err and "garbage.nc" in err and "HDF5" in err
    assert not out.exists()
    # variables that cannot be combined: named with the files, nothing written
    code, _, err = run(
        ["build", *map(str, data), "-o", str(out), "--concat-dim", "time", "--no-load",
         "--compare-limit", "0", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 3 and "CombineError" in err and "'d0.nc'" in err
    assert not out.exists()
    code, _, err = run(["info", str(garbage)], capsys)
    assert code == 3 and "garbage.nc" in err
    code, _, err = run(["info", str(tmp_path / "missing.nc")], capsys)
    assert code == 3 and "missing.nc" in err
    # not a manifest store / a broken one
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["validate", str(empty)], capsys)
    assert code == 3 and "zarr.json" in err
    broken = tmp_path / "broken.manifest"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    code, _, err = run(["validate", str(broken)], capsys)
    assert code == 3 and "zarr.json" in err
    code, _, err = run(["convert", str(broken), str(tmp_path / "x.json")], capsys)
    assert code == 3
    # an output that cannot be written (its parent is a file): exit 3, not a traceback
    code, _, err = run(
        ["build", str(data[0]), "-o", str(data[1] / "sub"), *LOAD, "--no-progress"], capsys
    )
    assert code == 3 and "Not a directory" in err
