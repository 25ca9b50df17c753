"""An install that explains itself (issue 15): a missing optional dependency names the
extra to install; an old Python is told it is too old; the extras README names exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import zarr_manifest as zm
from zarr_manifest._extras import EXTRAS, extras_explained

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_a_missing_builder_dependency_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.nc"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(path)
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(zm.MissingExtraError, match=re.escape('pip install "zarr-manifest[hdf5]"')):
        zm.open_virtual(path)
    with pytest.raises(ModuleNotFoundError):  # what callers caught before still catches it
        zm.open_virtual(path)


def test_a_missing_xarray_names_the_extra() -> None:
    """In a fresh interpreter: the xarray layer is imported on first use."""
    script = (
        "import sys; sys.modules['xarray'] = None\n"
        "import zarr_manifest as zm\n"
        "try:\n"
        "    zm.open_virtual_dataset\n"
        "except zm.MissingExtraError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert 'pip install "zarr-manifest[xarray]"' in done.stdout, done.stdout + done.stderr


def test_other_missing_modules_pass_through() -> None:
    with pytest.raises(ModuleNotFoundError) as raised, extras_explained():
        import zarr_manifest_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert not isinstance(raised.value, zm.MissingExtraError)


def test_every_extra_named_exists_in_pyproject() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    for module, (package, extra) in EXTRAS.items():
        assert extra in extras, (module, extra)
        names = [re.split(r"[<>=\[ ]", d, maxsplit=1)[0].lower() for d in extras[extra]]
        assert re.split(r"[\[]", package)[0].lower() in names, (module, extra, names)


def test_the_readme_install_table_matches_pyproject() -> None:
    extras = set(_pyproject()["project"]["optional-dependencies"])
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `(\w+)` \|", section, re.M)
    assert table, "README has no install table"
    assert set(table) <= extras
    assert extras - set(table) <= {"test", "bench"}


def test_hdf5plugin_is_where_it_is_used() -> None:
    """Only the tests import hdf5plugin: it is a test dependency, not the hdf5 extra's."""
    extras = _pyproject()["project"]["optional-dependencies"]
    assert not any(d.startswith("hdf5plugin") for d in extras["hdf5"])
    assert any(d.startswith("hdf5plugin") for d in extras["test"])
    sources = (REPO / "src").rglob("*.py")
    assert not any(re.search(r"^\s*(import|from) hdf5plugin", p.read_text(), re.M) for p in sources)


@pytest.mark.skipif(shutil.which("python3.11") is None, reason="no Python 3.11 on PATH")
def test_an_old_python_is_told_so() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
    env["PYTHONPATH"] = str(REPO / "src")
    done = subprocess.run(
        [
            "python3.11",
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import zarr_manifest",
            str(REPO / "src"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode != 0
    assert "zarr-manifest needs Python 3.12 or newer" in done.stderr, done.stderr
