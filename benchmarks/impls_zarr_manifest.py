"""zarr-manifest's implementations of every scenario, registered beside the peers'."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from harness import IMPLEMENTATIONS, Phase
from scenarios import a_full_read

FUSED = a_full_read.FUSED_PIPELINE
#: ManifestStore's ``virtual_shard_bytes`` for explicit "virtual shards" entries
SHARD_BYTES = 4 << 20
#: the store's default: virtual shards when zarr's pipeline reads them in bulk
AUTO = "auto"
#: the store's default ``merged_chunk_bytes`` (off)
MERGED_DEFAULT = None


def _group_a(data: Any) -> Any:
    import zarr_manifest as zm

    return zm.open_virtual(str(data.path))


@contextmanager
def _store_dir_a(data: Any) -> Iterator[Path]:
    """Scenario A's file written as a manifest store (untimed), removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="zm-bench-a-"))
    try:
        _group_a(data).to_store(workdir / "a.manifest")
        yield workdir / "a.manifest"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def read_a_path(
    config: dict[str, Any] | None,
    shard_bytes: int | str | None = AUTO,
    merged_bytes: int | str | None = MERGED_DEFAULT,
) -> Callable[[Any], Iterator[Callable[[], np.ndarray]]]:
    """Scenario A as a user runs it: ``zarr.open_array(ManifestStore(path))[...]`` on a
    manifest store on disk, under zarr config ``config`` (None: zarr's default)."""

    def factory(data: Any) -> Iterator[Callable[[], np.ndarray]]:
        import zarr

        import zarr_manifest as zm

        allowed = [str(data.path.parent)]
        with _store_dir_a(data) as path:

            def read() -> np.ndarray:
                # the store is made in the timed call, as a user's script does
                with zarr.config.set(config or {}):
                    store = zm.ManifestStore(
                        path,
                        allowed_prefixes=allowed,
                        virtual_shard_bytes=shard_bytes,
                        merged_chunk_bytes=merged_bytes,
                    )
                    return zarr.open_array(store, path=data.dataset, mode="r")[...]

            yield read

    return factory


def read_a_xarray(data: Any) -> Iterator[Callable[[], np.ndarray]]:
    """Scenario A through ``xr.open_dataset(path, engine="manifest").load()`` (defaults)."""
    import xarray as xr

    allowed = [str(data.path.parent)]
    with _store_dir_a(data) as path:

        def read() -> np.ndarray:
            ds = xr.open_dataset(path, engine="manifest", allowed_prefixes=allowed).load()
            return ds[data.dataset].values

        yield read


def read_r(
    concurrency: int | None, config: dict[str, Any] | None = None
) -> Callable[[Any], Callable[[], np.ndarray]]:
    """Scenario R: the same, with the file served over HTTP (built over HTTP too), the
    store with its defaults, under zarr config ``config`` and ``async.concurrency``."""

    def factory(data: Any) -> Callable[[], np.ndarray]:
        import zarr_manifest as zm

        group = zm.open_virtual(data.url, client_options={"allow_http": True})
        settings = dict(config or {})
        if concurrency is not None:
            settings["async.concurrency"] = concurrency

        def read() -> np.ndarray:
            import zarr

            with zarr.config.set(settings):
                store = zm.ManifestStore(group)
                return zarr.open_array(store, path=data.local.dataset, mode="r")[...]

        return read

    return factory


def build_b(data: Any) -> dict[str, Any]:
    """Scenario B: build + combine along time (serial, like the peer), write kerchunk JSON."""
    import zarr_manifest as zm
    from zarr_manifest.writers.kerchunk import to_kerchunk

    assert data.workdir is not None
    out = data.workdir / "zarr-manifest.json"
    state: dict[str, Any] = {}

    def build() -> Any:
        state["group"] = zm.build([str(p) for p in data.files], concat_dim="time", load=["time"])
        return state["group"]

    def write() -> Path:
        to_kerchunk(state["group"], str(out), format="json", overwrite=True)
        return out

    return {"build+combine": build, "write kerchunk JSON": write}


def many_refs(data: Any, unsharded_opt_in: bool = True) -> dict[str, Any]:
    """Scenario C: 1M references written as a manifest store, opened, read (with
    ``unsharded_opt_in``, also read under the fused pipeline without virtual shards)."""
    import zarr

    import zarr_manifest as zm

    assert data.workdir is not None
    out = data.workdir / "c.manifest"
    meta = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=data.shape,
        chunks=(1, 1),
        dtype=data.dtype,
        compressors=None,
        fill_value=0,
        dimension_names=["y", "x"],
    ).metadata

    def write() -> Path:
        if out.exists():
            shutil.rmtree(out)
        manifest = zm.ChunkManifest.from_arrays(
            paths=data.urls.reshape(data.shape),
            offsets=data.offsets.reshape(data.shape),
            lengths=data.lengths.reshape(data.shape),
        )
        zm.ManifestGroup(arrays={"data": zm.ManifestArray(meta, manifest)}).to_store(out)
        return out

    def open_array(
        shard_bytes: int | str | None = AUTO, merged_bytes: int | str | None = MERGED_DEFAULT
    ) -> Any:
        store = zm.ManifestStore(
            out,
            allowed_prefixes=[str(data.directory)],
            virtual_shard_bytes=shard_bytes,
            merged_chunk_bytes=merged_bytes,
        )
        return zarr.open_array(store, path="data", mode="r")

    phases: dict[str, Any] = {
        "write": Phase(write, repeats=1, warmup=False, per=data.count)
        if data.count >= 100_000
        else Phase(write, per=data.count),
        "open+first": lambda: open_array()[0, 0],
    }
    if data.full_read:

        def full(
            config: dict[str, Any],
            shard_bytes: int | str | None = AUTO,
            merged_bytes: int | str | None = MERGED_DEFAULT,
        ) -> Any:
            with zarr.config.set(config):
                return open_array(shard_bytes, merged_bytes)[...]

        # the default path first, then the opt-ins
        phases["full read"] = Phase(lambda: full({}), repeats=1, warmup=False, peak_rss=True)
        phases["full read (opt-in: merged_chunk_bytes='auto')"] = Phase(
            lambda: full({}, AUTO, AUTO), repeats=1, warmup=False, peak_rss=True
        )
        phases["full read (opt-in: fused pipeline)"] = Phase(
            lambda: full(FUSED), repeats=1, warmup=False, peak_rss=True
        )
        if unsharded_opt_in:
            phases["full read (opt-in: fused, virtual_shard_bytes=None)"] = Phase(
                lambda: full(FUSED, None), repeats=1, warmup=False, peak_rss=True
            )
    return phases


def random_reader(
    shard_bytes: int | str | None,
    config: dict[str, Any] | None = None,
    merged_bytes: int | str | None = MERGED_DEFAULT,
) -> Callable[[Any], Callable[[Any], np.ndarray]]:
    """Random single-chunk reads through ManifestStore, opened under zarr config ``config``
    (None: zarr's default)."""

    def factory(data: Any) -> Callable[[Any], np.ndarray]:
        import zarr

        import zarr_manifest as zm

        store = zm.ManifestStore(
            _group_a(data), virtual_shard_bytes=shard_bytes, merged_chunk_bytes=merged_bytes
        )
        with zarr.config.set(config or {}):
            array = zarr.open_array(store, path=data.dataset, mode="r")

        def read(sel: Any) -> np.ndarray:
            with zarr.config.set(config or {}):
                return array[sel]

        return read

    return factory


# Names: "default" is what a user gets without options; "(opt-in: ...)" names the knob.
IMPLEMENTATIONS["A"]["zarr-manifest: zarr.open(ManifestStore(path)), default"] = read_a_path(None)
IMPLEMENTATIONS["A"]["zarr-manifest (opt-in: merged_chunk_bytes='auto')"] = read_a_path(
    None, AUTO, AUTO
)
IMPLEMENTATIONS["A"]["zarr-manifest: xarray engine=manifest .load(), default"] = read_a_xarray
IMPLEMENTATIONS["A"]["zarr-manifest (opt-in: fused pipeline; auto virtual shards)"] = read_a_path(
    FUSED
)
IMPLEMENTATIONS["A"]["zarr-manifest (opt-in: fused pipeline, virtual_shard_bytes=None)"] = (
    read_a_path(FUSED, None)
)
IMPLEMENTATIONS["R"]["zarr-manifest, default"] = read_r(None)
IMPLEMENTATIONS["R"]["zarr-manifest (opt-in: fused pipeline)"] = read_r(None, FUSED)
IMPLEMENTATIONS["R"]["zarr-manifest (opt-in: concurrency 64)"] = read_r(64)
IMPLEMENTATIONS["B"]["zarr-manifest"] = build_b
IMPLEMENTATIONS["C"]["zarr-manifest"] = many_refs
IMPLEMENTATIONS["C100k"]["zarr-manifest"] = many_refs
IMPLEMENTATIONS["C1M"]["zarr-manifest"] = functools.partial(many_refs, unsharded_opt_in=False)
IMPLEMENTATIONS["random"]["zarr-manifest, default"] = random_reader(AUTO)
IMPLEMENTATIONS["random"]["zarr-manifest (opt-in: merged_chunk_bytes='auto')"] = random_reader(
    AUTO, None, AUTO
)
IMPLEMENTATIONS["random"]["zarr-manifest (opt-in: fused pipeline; auto virtual shards)"] = (
    random_reader(AUTO, FUSED)
)
IMPLEMENTATIONS["random"]["zarr-manifest (opt-in: fused, virtual_shard_bytes=None)"] = (
    random_reader(None, FUSED)
)


def from_arrays(data: Any) -> dict[str, Any]:
    """Scenario F: `ChunkManifest.from_arrays` on the grid-shaped columns."""
    import zarr_manifest as zm
    from scenarios import f_from_arrays

    def build(paths: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> Any:
        return zm.ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)

    return f_from_arrays.phases(data, build)


IMPLEMENTATIONS["F"]["zarr-manifest"] = from_arrays


def build_at_scale(data: Any) -> tuple[str, Callable[[Any], Any]]:
    """Scenario B10k: `zarr_manifest.build` on the executor, combined along time."""
    import zarr_manifest as zm

    paths = [str(p) for p in data.files]

    def build(executor: Any) -> Any:
        return zm.build(paths, concat_dim="time", load=["time"], executor=executor)

    return "zarr_manifest.builders.hdf5", build


IMPLEMENTATIONS["B10k"]["zarr-manifest"] = build_at_scale
