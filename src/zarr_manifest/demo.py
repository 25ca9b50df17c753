"""The main job on generated sample data: legacy files → manifests → manifest store → zarr.

Run with ``./dev.sh demo`` (or ``python -m zarr_manifest.demo [OUTDIR]``).  It writes a few
netCDF4 files, builds one virtual dataset from them (concatenated along time) without
copying any data, writes it as a manifest store, reads it back through
``zarr.open_group(ManifestStore(...))`` (also shown as virtual shards) and
``xarray.open_zarr``, and checks every value against what netCDF4 and xarray read from the
files.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np


def make_sample_files(directory: Path, n_files: int = 3) -> list[Path]:
    """Daily-step netCDF4 files of a (time, lat, lon) temperature field, chunked and zlib'd."""
    import netCDF4

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    paths = []
    for i in range(n_files):
        path = directory / f"air_{i:02d}.nc"
        with netCDF4.Dataset(path, "w") as ds:
            ds.title = "zarr-manifest demo"
            ds.createDimension("time", None)
            ds.createDimension("lat", 32)
            ds.createDimension("lon", 64)
            t = ds.createVariable("time", "f8", ("time",))
            t.units = "days since 2000-01-01"
            lat = ds.createVariable("lat", "f4", ("lat",))
            lat.units = "degrees_north"
            lon = ds.createVariable("lon", "f4", ("lon",))
            lon.units = "degrees_east"
            air = ds.createVariable(
                "air",
                "f4",
                ("time", "lat", "lon"),
                chunksizes=(1, 16, 32),
                zlib=True,
                fill_value=np.float32(-9999.0),
            )
            air.units = "K"
            air.long_name = "air temperature"
            t[:] = np.arange(8) + 8 * i
            lat[:] = np.linspace(-77.5, 77.5, 32, dtype=np.float32)
            lon[:] = np.linspace(0, 357.5, 64, dtype=np.float32)
            air[:] = (280 + 10 * rng.standard_normal((8, 32, 64))).astype(np.float32)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    import netCDF4
    import xarray as xr
    import zarr

    import zarr_manifest as zm

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "demo-output").resolve()
    shutil.rmtree(out, ignore_errors=True)
    files = make_sample_files(out / "data")
    print(f"wrote {len(files)} netCDF4 files to {out / 'data'}")

    t0 = time.perf_counter()
    dataset = zm.build(str(out / "data" / "air_*.nc"), concat_dim="time")
    built = time.perf_counter() - t0
    print(f"built one virtual dataset from {len(files)} files in {built * 1000:.1f} ms:")
    for name, array in sorted(dataset.arrays.items()):
        kind = "virtual" if isinstance(array, zm.ManifestArray) else "inline"
        refs = f" references={len(array.manifest)}" if isinstance(array, zm.ManifestArray) else ""
        print(f"  {name:5s} {kind:8s} shape={array.shape} dtype={array.dtype}{refs}")

    store_dir = out / "air.manifest"
    dataset.to_store(store_dir)
    size = sum(p.stat().st_size for p in store_dir.rglob("*") if p.is_file())
    print(f"wrote manifest store {store_dir} ({size} bytes of metadata and manifests)")

    # The store refers to the sample files outside its root, so allow their directory.
    store = zm.ManifestStore(store_dir, allowed_prefixes=[str(out / "data")])
    group = zarr.open_group(store, mode="r")
    expected = {}
    for name in ("air", "time"):
        parts = []
        for path in files:
            with netCDF4.Dataset(path) as nc:
                nc.set_auto_maskandscale(False)
                parts.append(nc.variables[name][...])
        expected[name] = np.concatenate(parts)
    with netCDF4.Dataset(files[0]) as nc:
        nc.set_auto_maskandscale(False)
        expected["lat"] = nc.variables["lat"][...]
        expected["lon"] = nc.variables["lon"][...]
    for name, want in expected.items():
        member = group[name]
        assert isinstance(member, zarr.Array)
        got = member[...]
        if not np.array_equal(got, want):
            print(f"MISMATCH in {name}")
            return 1
    print("zarr.open_group(ManifestStore(...)): every variable equals netCDF4's values")

    # The same store shown as virtual shards: zarr's fused pipeline reads whole shards.
    sharded = zm.ManifestStore(
        store_dir, allowed_prefixes=[str(out / "data")], virtual_shard_bytes=1 << 20
    )
    fused = {"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"}
    with zarr.config.set(fused):
        air = zarr.open_array(sharded, path="air", mode="r")
        if not np.array_equal(air[...], expected["air"]):
            print("MISMATCH in air (virtual shards)")
            return 1
    assert air.shards is not None
    shards = int(np.prod([-(-n // s) for n, s in zip(air.shape, air.shards, strict=True)]))
    print(
        f"virtual shards: air's {air.nchunks} chunks of {air.chunks} read as {shards} "
        f"shard(s) of {air.shards}; the values are the same"
    )

    ds = xr.open_zarr(store, consolidated=False)
    ref = xr.concat([xr.open_dataset(p, engine="netcdf4") for p in files], dim="time")
    xr.testing.assert_allclose(ds.load(), ref.load())
    print(f"xarray.open_zarr(ManifestStore(...)) equals the files concatenated by xarray:\n{ds}")
    print("demo OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
