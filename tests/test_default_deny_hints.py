"""Default-deny that says what to do (issue 15): a refused reference names the exact
``allowed_prefixes=[...]`` / ``--allow`` that would allow it; ``validate`` and ``info`` on
a fresh local build say so in one line instead of one problem per source."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import zarr_manifest as zm
from zarr_manifest.cli import main
from zarr_manifest.format.allowed_prefixes import allow_hint, suggested_prefixes

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")


@pytest.fixture
def fresh_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, np.ndarray]:
    """The local quick-start: files written by xarray in data/, a store built next to them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for day in range(3):
        xr.Dataset(
            {"air": (("time", "x"), np.full((1, 4), day, dtype="f4"))},
            coords={"time": [float(day)], "x": np.arange(4.0)},
        ).to_netcdf(tmp_path / "data" / f"d{day}.nc")
    zm.build("data/*.nc", concat_dim="time").to_store("days.manifest")
    expected = np.repeat(np.arange(3, dtype="f4")[:, None], 4, axis=1)
    return tmp_path, expected


def test_the_refusal_says_what_to_pass_and_that_works(fresh_build: tuple[Path, np.ndarray]) -> None:
    root, expected = fresh_build
    data = os.path.realpath(root / "data") + "/"
    with pytest.raises(zm.SourceNotAllowedError) as refused:
        zarr.open_group(zm.ManifestStore("days.manifest"), mode="r")["air"][...]
    message = str(refused.value)
    assert f"allowed_prefixes=[{data!r}]" in message
    assert f"--allow {data}" in message
    # doing what it says reads the values
    suggested = re.search(r"allowed_prefixes=(\[[^\]]*\])", message)
    assert suggested is not None
    prefixes = ast.literal_eval(suggested.group(1))
    store = zm.ManifestStore("days.manifest", allowed_prefixes=prefixes)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)


def test_validate_on_a_fresh_build_says_it_in_one_line(
    fresh_build: tuple[Path, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = fresh_build
    data = os.path.realpath(root / "data") + "/"
    assert main(["validate", "days.manifest"]) == 0
    out = capsys.readouterr().out
    assert "PROBLEM" not in out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and f"--allow {data}" in notes[0], out
    # sources cannot be checked without being allowed: one problem, saying what to pass
    assert main(["validate", "days.manifest", "--check-sources"]) == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1 and f"--allow {data}" in problems[0], out
    assert main(["validate", "days.manifest", "--check-sources", "--allow", data]) == 0
    assert "valid" in capsys.readouterr().out


def test_info_lists_the_prefixes_to_allow(
    fresh_build: tuple[Path, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = fresh_build
    data = os.path.realpath(root / "data") + "/"
    assert main(["info", "days.manifest"]) == 0
    out = capsys.readouterr().out
    assert f"allowed_prefixes=[{data!r}]" in out and f"--allow {data}" in out


def test_sources_inside_the_store_need_no_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The spec's own layout (the store in the folder of its sources) is read as it is."""
    monkeypatch.chdir(tmp_path)
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(tmp_path / "a.nc")
    zm.open_virtual("a.nc").to_store(".", overwrite=True)
    assert main(["validate", "."]) == 0
    assert "note" not in capsys.readouterr().out
    assert main(["info", "."]) == 0
    assert "allowed_prefixes" not in capsys.readouterr().out


def test_suggested_prefixes() -> None:
    assert suggested_prefixes(["file:///a/b/c.nc", "file:///a/b/d/e.nc"]) == ["/a/b/"]
    # never the file system's root: each directory instead
    assert suggested_prefixes(["file:///x/c.nc", "file:///y/d.nc"]) == ["/x/", "/y/"]
    assert suggested_prefixes(["s3://b/x/1.nc", "s3://b/x/y/2.nc", "gs://g/a/b.nc"]) == [
        "gs://g/a/",
        "s3://b/x/",
    ]
    assert allow_hint(["/a/", "s3://b/"]) == (
        "pass allowed_prefixes=['/a/', 's3://b/'] (command line: --allow /a/ --allow s3://b/)"
    )
