"""Scenario B: build, combine and write a virtual dataset from many small netCDF4 files.

100 netCDF4 files (quick: 10), each with a float32 variable ``air`` of (24, 64, 128) in
chunks of (1, 32, 32) and a ``time`` coordinate (hours since 2000-01-01, consecutive across
files). An implementation scans every file, concatenates along ``time`` and writes the
combined references as one kerchunk JSON file.

Data handed to factories: :class:`NetCDFFiles`. A factory returns a mapping with two phases:

- ``"build+combine"``: scan all files and combine them (returns anything);
- ``"write kerchunk JSON"``: write the combined references of the previous phase, returning
  the path of the JSON file written. The harness then reads it back with fsspec + zarr and
  compares sampled values with the source data (untimed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness import IMPLEMENTATIONS, RunConfig, Scenario, expect, register_scenario

VARIABLE = "air"
TIME_UNITS = "hours since 2000-01-01"


@dataclass(frozen=True)
class NetCDFFiles:
    """The netCDF4 files of scenario B.

    Attributes
    ----------
    files
        Absolute paths, in time order.
    shape, chunks
        Shape and chunk shape of ``air`` in each file (time, y, x).
    seed
        ``air`` of file ``k`` is ``default_rng(seed + k).random(shape, float32)``.
    workdir
        A scratch directory for outputs, emptied after the scenario.
    """

    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    chunks: tuple[int, int, int]
    seed: int
    workdir: Path | None = None

    @property
    def urls(self) -> list[str]:
        """``file://`` URLs of the files."""
        return [p.as_uri() for p in self.files]

    def file_values(self, k: int) -> np.ndarray:
        """The values of ``air`` in file ``k``."""
        return np.random.default_rng(self.seed + k).random(self.shape, dtype=np.float32)


def params(config: RunConfig) -> dict[str, Any]:
    """Number of files (quick: 10) and per-file shapes."""
    return {
        "files": 10 if config.quick else 100,
        "shape": [24, 64, 128],
        "chunks": [1, 32, 32],
        "seed": 0,
    }


def generate(p: dict[str, Any], directory: Path) -> None:
    """Write ``f000.nc``, ``f001.nc``, ... with netCDF4 (chunked, uncompressed)."""
    import netCDF4

    nt, ny, nx = p["shape"]
    for k in range(p["files"]):
        with netCDF4.Dataset(directory / f"f{k:03d}.nc", "w", format="NETCDF4") as ds:
            ds.createDimension("time", nt)
            ds.createDimension("y", ny)
            ds.createDimension("x", nx)
            time = ds.createVariable("time", "f8", ("time",))
            time.units = TIME_UNITS
            time.calendar = "standard"
            time[:] = np.arange(k * nt, (k + 1) * nt, dtype="f8")
            air = ds.createVariable(VARIABLE, "f4", ("time", "y", "x"), chunksizes=p["chunks"])
            air[:] = np.random.default_rng(p["seed"] + k).random(p["shape"], dtype=np.float32)


def load(p: dict[str, Any], directory: Path, config: RunConfig) -> NetCDFFiles:
    """List the cached files."""
    files = tuple((directory / f"f{k:03d}.nc").resolve() for k in range(p["files"]))
    return NetCDFFiles(files, tuple(p["shape"]), tuple(p["chunks"]), p["seed"])


@contextmanager
def scratch(data: NetCDFFiles) -> Iterator[NetCDFFiles]:
    """Give the implementations a scratch directory for what they write."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-B-") as tmp:
        yield replace(data, workdir=Path(tmp))


def check(phase: str, result: Any, data: NetCDFFiles) -> None:
    """Read the written kerchunk JSON back and compare sampled time steps and ``time``."""
    if phase != "write kerchunk JSON":
        return
    import fsspec
    import zarr

    fs = fsspec.filesystem(
        "reference",
        fo=str(result),
        remote_protocol="file",
        asynchronous=True,
        skip_instance_cache=True,
    )
    group = zarr.open_group(zarr.storage.FsspecStore(fs, read_only=True), mode="r", zarr_format=2)
    nt = data.shape[0]
    air = group[VARIABLE]
    expect(air.shape == (nt * len(data.files), *data.shape[1:]), f"air shape {air.shape}")
    for k in sorted({0, len(data.files) // 2, len(data.files) - 1}):
        got = air[k * nt : (k + 1) * nt]
        expect(np.array_equal(got, data.file_values(k)), f"air of file {k} differs")
    time = np.asarray(group["time"][...])
    expect(np.array_equal(time, np.arange(nt * len(data.files))), "time coordinate differs")


def virtualizarr_mfdataset(data: NetCDFFiles) -> dict[str, Any]:
    """VirtualiZarr ``open_virtual_mfdataset`` (HDFParser, nested along time) + ``to_kerchunk``.

    Serial (``parallel=False``, VirtualiZarr's default). ``time`` is a loadable variable
    by default, so it is read, concatenated and inlined in the kerchunk output.
    """
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_mfdataset
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    assert data.workdir is not None
    out = data.workdir / "virtualizarr.json"
    state: dict[str, Any] = {}

    def build() -> Any:
        state["vds"] = open_virtual_mfdataset(
            data.urls,
            registry=registry,
            parser=HDFParser(),
            combine="nested",
            concat_dim="time",
        )
        return state["vds"]

    def write() -> Path:
        state["vds"].vz.to_kerchunk(str(out), format="json")
        return out

    return {"build+combine": build, "write kerchunk JSON": write}


SCENARIO = register_scenario(
    Scenario(
        key="B",
        title="build + combine along time + write kerchunk JSON, many small netCDF4 files",
        baseline="virtualizarr",
        params=params,
        generate=generate,
        load=load,
        context=scratch,
        check=check,
    )
)

IMPLEMENTATIONS["B"]["virtualizarr"] = virtualizarr_mfdataset
