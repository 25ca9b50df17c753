"""Scenario A: full read of one chunked, uncompressed HDF5 dataset.

float32 (64, 512, 512) in chunks of (4, 32, 32) — 4096 chunks of 16 KiB, 64 MiB in all —
written by h5py into one file. Each implementation reads the whole array into memory;
the result is compared with the data written.

Data handed to factories: :class:`ArrayFile`. A factory returns a zero-argument callable
that reads the whole array and returns it as a numpy array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import IMPLEMENTATIONS, RunConfig, Scenario, expect, register_scenario

DATASET = "data"
FILE_NAME = "a.h5"
FUSED_PIPELINE = {"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"}


@dataclass(frozen=True)
class ArrayFile:
    """One HDF5 file holding one chunked dataset, and the values it holds.

    Attributes
    ----------
    path
        Absolute path of the HDF5 file.
    dataset
        Name of the dataset in the file (at the root group).
    shape, chunks
        Array and chunk shape.
    dtype
        numpy dtype string.
    expected
        The array's values (for checking results).
    """

    path: Path
    dataset: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    expected: np.ndarray

    @property
    def url(self) -> str:
        """``file://`` URL of the HDF5 file."""
        return self.path.as_uri()

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        """Number of chunks along each dimension."""
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))


def params(config: RunConfig) -> dict[str, Any]:
    """Array and chunk shape (quick: 16 x 256 x 256, i.e. 256 chunks)."""
    shape = [16, 256, 256] if config.quick else [64, 512, 512]
    return {"shape": shape, "chunks": [4, 32, 32], "dtype": "float32", "seed": 0}


def generate(p: dict[str, Any], directory: Path) -> None:
    """Write the random array into ``a.h5`` with h5py (chunked, no filters)."""
    import h5py

    values = np.random.default_rng(p["seed"]).random(p["shape"], dtype=p["dtype"])
    with h5py.File(directory / FILE_NAME, "w") as f:
        f.create_dataset(DATASET, data=values, chunks=tuple(p["chunks"]))


def load(p: dict[str, Any], directory: Path, config: RunConfig) -> ArrayFile:
    """Describe the cached file; the expected values are regenerated from the seed."""
    expected = np.random.default_rng(p["seed"]).random(p["shape"], dtype=p["dtype"])
    return ArrayFile(
        path=(directory / FILE_NAME).resolve(),
        dataset=DATASET,
        shape=tuple(p["shape"]),
        chunks=tuple(p["chunks"]),
        dtype=p["dtype"],
        expected=expected,
    )


def check(phase: str, result: Any, data: ArrayFile) -> None:
    """The array read must equal the array written."""
    result = np.asarray(result)
    expect(result.shape == data.shape, f"{phase}: shape {result.shape} != {data.shape}")
    expect(np.array_equal(result, data.expected), f"{phase}: values differ from the file")


# --------------------------------------------------------------------------- shared helpers


#: shard shape of the sharded MemoryStore floor: what zarr-manifest's virtual shards of
#: 4 MiB make of scenario A's chunks (whole (4, 512, 512) slabs)
FLOOR_SHARDS = (4, 512, 512)


def memory_store(data: ArrayFile, shards: tuple[int, ...] | None = None) -> Any:
    """A zarr ``MemoryStore`` holding the same chunks, uncompressed, as zarr v3 array ``data``
    (in shards of ``shards``, if given)."""
    import zarr
    from zarr.storage import MemoryStore

    store = MemoryStore()
    if shards is not None:
        # the quick run's array is smaller than a full-size shard
        shards = tuple(min(s, n) for s, n in zip(shards, data.shape, strict=True))
    array = zarr.create_array(
        store,
        name=data.dataset,
        shape=data.shape,
        chunks=data.chunks,
        shards=shards,
        dtype=data.dtype,
        compressors=None,
        filters=None,
        fill_value=0,
    )
    array[...] = data.expected
    return store


def virtualizarr_store(url: str, registry_prefix: str, object_store: Any) -> Any:
    """VirtualiZarr's ``ManifestStore`` for the HDF5 file at ``url`` (HDFParser).

    ``object_store`` (an obstore store) is registered in an ``ObjectStoreRegistry`` under
    ``registry_prefix``; the ManifestStore reads chunk bytes through it.
    """
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({registry_prefix: object_store})
    return HDFParser()(url, registry=registry)


def zarr_reader(store: Any, path: str, config: dict[str, Any] | None = None) -> Callable[[], Any]:
    """A callable that opens array ``path`` of ``store`` and reads it whole.

    The open is inside the timed call (it is cheap: one metadata read), and so is
    ``zarr.config.set(config)`` since zarr picks the codec pipeline when opening.
    """
    import zarr

    def read() -> np.ndarray:
        with zarr.config.set(config or {}):
            return zarr.open_array(store, path=path, mode="r")[...]

    return read


# --------------------------------------------------------------------------- peers


def h5py_read(data: ArrayFile) -> Iterator[Callable[[], np.ndarray]]:
    """h5py reading the whole dataset (file opened once, outside the timing)."""
    import h5py

    with h5py.File(data.path, "r") as f:
        dataset = f[data.dataset]
        yield lambda: dataset[...]


def memory_default(data: ArrayFile) -> Callable[[], np.ndarray]:
    """zarr on a MemoryStore with the default (batched) codec pipeline."""
    return zarr_reader(memory_store(data), data.dataset)


def memory_fused(data: ArrayFile) -> Callable[[], np.ndarray]:
    """zarr on a MemoryStore with ``FusedCodecPipeline``."""
    return zarr_reader(memory_store(data), data.dataset, FUSED_PIPELINE)


def memory_sharded_fused(data: ArrayFile) -> Callable[[], np.ndarray]:
    """zarr on a MemoryStore holding the chunks in shards, with ``FusedCodecPipeline``: the
    floor for zarr-manifest's virtual shards."""
    return zarr_reader(memory_store(data, FLOOR_SHARDS), data.dataset, FUSED_PIPELINE)


def virtualizarr_zarr(data: ArrayFile) -> Callable[[], np.ndarray]:
    """VirtualiZarr ManifestStore (HDFParser, obstore LocalStore) read by ``zarr.open_array``."""
    from obstore.store import LocalStore

    store = virtualizarr_store(data.url, "file://", LocalStore())
    return zarr_reader(store, data.dataset)


def virtualizarr_xarray(data: ArrayFile) -> Callable[[], np.ndarray]:
    """VirtualiZarr ManifestStore read through ``xarray.open_zarr`` (no dask), as its docs do."""
    import xarray as xr
    from obstore.store import LocalStore

    store = virtualizarr_store(data.url, "file://", LocalStore())

    def read() -> np.ndarray:
        ds = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None)
        return ds[data.dataset].values

    return read


def kerchunk_fsspec(data: ArrayFile) -> Callable[[], np.ndarray]:
    """kerchunk ``SingleHdf5ToZarr`` refs, fsspec ``ReferenceFileSystem``, zarr (v2 metadata)."""
    import fsspec
    import zarr
    from kerchunk.hdf import SingleHdf5ToZarr

    refs = SingleHdf5ToZarr(str(data.path), inline_threshold=0).translate()
    fs = fsspec.filesystem(
        "reference", fo=refs, remote_protocol="file", asynchronous=True, skip_instance_cache=True
    )
    store = zarr.storage.FsspecStore(fs, read_only=True, path="")

    def read() -> np.ndarray:
        return zarr.open_array(store, path=data.dataset, mode="r", zarr_format=2)[...]

    return read


SCENARIO = register_scenario(
    Scenario(
        key="A",
        title="full read of a float32 array, 16 KiB uncompressed chunks, one local HDF5 file",
        baseline="h5py",
        params=params,
        generate=generate,
        load=load,
        default_phase="full read",
        check=check,
    )
)

IMPLEMENTATIONS["A"]["h5py"] = h5py_read
IMPLEMENTATIONS["A"]["zarr MemoryStore (default pipeline)"] = memory_default
IMPLEMENTATIONS["A"]["zarr MemoryStore (fused pipeline)"] = memory_fused
IMPLEMENTATIONS["A"]["zarr MemoryStore, sharded (fused pipeline)"] = memory_sharded_fused
IMPLEMENTATIONS["A"]["virtualizarr (zarr)"] = virtualizarr_zarr
IMPLEMENTATIONS["A"]["virtualizarr (xarray)"] = virtualizarr_xarray
IMPLEMENTATIONS["A"]["kerchunk+fsspec"] = kerchunk_fsspec
