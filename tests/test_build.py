"""build(): many files into one virtual dataset, serially and on executors (threads,
processes, a real dask.distributed cluster), with progress and per-file failure reports."""

from __future__ import annotations

import importlib
import multiprocessing
import os
import random
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import zarr

from zarr_manifest import (
    BuildError,
    CombineError,
    ManifestArray,
    ManifestGroup,
    ManifestStore,
    build,
    concat,
    open_virtual,
)
from zarr_manifest.build import expand_inputs

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

LOAD = ["time", "y", "x"]
MONTHS = (31, 28, 31, 30)


def field(t: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (t[:, None, None] * 10000 + y[None, :, None] * 100 + x[None, None, :]).astype("f4")


def write_nc(
    path: Path,
    t: Sequence[float],
    y: Sequence[float] = (0, 1, 2),
    x: Sequence[float] = (0, 1, 2, 3),
    fmt: str = "NETCDF4",
) -> Path:
    ta, ya, xa = (np.asarray(v, dtype="f8") for v in (t, y, x))
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.createDimension("time", len(ta))
        ds.createDimension("y", len(ya))
        ds.createDimension("x", len(xa))
        for name, values in (("time", ta), ("y", ya), ("x", xa)):
            ds.createVariable(name, "f8", (name,))[:] = values
        kw: dict[str, Any] = {}
        if fmt == "NETCDF4":
            kw = {"chunksizes": (min(4, len(ta)), len(ya), len(xa))}
        ds.createVariable("air", "f4", ("time", "y", "x"), **kw)[:] = field(ta, ya, xa)
        ds.createVariable("extra", "i4", ("time",))[:] = np.arange(len(ta))
    return path


@pytest.fixture
def months(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    """Four monthly netCDF4 files of daily steps, chunked by 4 steps (uneven)."""
    paths, start = [], 0
    folder = tmp_path / "months"
    folder.mkdir()
    for i, n in enumerate(MONTHS):
        paths.append(write_nc(folder / f"m{i + 1:02d}.nc", np.arange(start, start + n)))
        start += n
    return paths, np.arange(start, dtype="f8")


def read(group: ManifestGroup, name: str) -> np.ndarray:
    with zarr.config.set({"array.rectilinear_chunks": True}):
        return np.asarray(zarr.open_group(ManifestStore(group), mode="r")[name][...])


def check_months(group: ManifestGroup, t: np.ndarray) -> None:
    np.testing.assert_array_equal(read(group, "air"), field(t, np.arange(3.0), np.arange(4.0)))
    np.testing.assert_array_equal(read(group, "time"), t)
    np.testing.assert_array_equal(
        read(group, "extra"), np.concatenate([np.arange(n) for n in MONTHS])
    )


def test_glob_nested(months: tuple[list[Path], np.ndarray]) -> None:
    paths, t = months
    pattern = str(paths[0].parent / "m*.nc")
    assert expand_inputs(pattern) == [str(p) for p in paths]
    group = build(pattern, concat_dim="time", load=LOAD)
    check_months(group, t)
    # the same as parsing and concatenating by hand, in sorted order
    assert group == concat([open_virtual(p, load=LOAD) for p in paths], "time")
    air = group["air"]
    assert isinstance(air, ManifestArray)
    assert air.manifest.path_table == tuple(p.as_uri() for p in paths)
    # a PathLike pattern and a list of Paths give the same
    assert build(paths[0].parent / "m*.nc", concat_dim="time", load=LOAD) == group
    assert build(paths, concat_dim="time", load=LOAD) == group


def test_nested_keeps_the_order_given(months: tuple[list[Path], np.ndarray]) -> None:
    paths, _ = months
    reordered = [paths[1], paths[0], paths[2], paths[3]]
    group = build(reordered, concat_dim="time", load=LOAD)
    first = np.arange(31, 59, dtype="f8")
    np.testing.assert_array_equal(read(group, "time")[:28], first)


def test_by_coords_shuffled(tmp_path: Path) -> None:
    ts, ys, xs = np.arange(6.0), np.arange(4.0), np.arange(6.0)
    paths = []
    for ti, tb in enumerate(np.split(ts, 2)):
        for yi, yb in enumerate(np.split(ys, 2)):
            for xi, xb in enumerate(np.split(xs, 3)):
                paths.append(write_nc(tmp_path / f"t{ti}y{yi}x{xi}.nc", tb, yb, xb))
    random.Random(3).shuffle(paths)
    # "extra" has only the time dimension: referenced from each tile, its references
    # differ between the tiles of a time block, its values do not (compared by value)
    with pytest.raises(CombineError, match=r"'extra'.*compare_limit"):
        build(paths, combine="by_coords", load=LOAD, compare_limit=0)
    assert build(paths, combine="by_coords", load=LOAD)["extra"].shape == (6,)
    group = build(paths, combine="by_coords", load=[*LOAD, "extra"])
    assert group["air"].shape == (6, 4, 6)
    np.testing.assert_array_equal(read(group, "air"), field(ts, ys, xs))
    np.testing.assert_array_equal(read(group, "x"), xs)
    # the order of the list does not matter
    np.testing.assert_array_equal(read(group, "extra"), [0, 1, 2, 0, 1, 2])
    assert build(sorted(paths), combine="by_coords", load=[*LOAD, "extra"]) == group


def test_netcdf3_inputs_and_drop(tmp_path: Path) -> None:
    paths = [
        write_nc(tmp_path / "a.nc", [0, 1, 2], fmt="NETCDF3_CLASSIC"),
        write_nc(tmp_path / "b.nc", [3, 4], fmt="NETCDF3_CLASSIC"),
    ]
    group = build(str(tmp_path / "*.nc"), concat_dim="time", load=["x", "y"], drop=["extra"])
    assert sorted(group.arrays) == ["air", "time", "x", "y"]
    np.testing.assert_array_equal(read(group, "time"), np.arange(5.0))
    np.testing.assert_array_equal(
        read(group, "air"), field(np.arange(5.0), np.arange(3.0), np.arange(4.0))
    )
    # one input: its group as parsed
    assert build(paths[0], load=["x", "y"]) == open_virtual(paths[0], load=["x", "y"])


def test_thread_pool(months: tuple[list[Path], np.ndarray]) -> None:
    paths, t = months
    serial = build(paths, concat_dim="time", load=LOAD)
    with ThreadPoolExecutor(3) as pool:
        group = build(paths, concat_dim="time", load=LOAD, executor=pool)
    assert group == serial
    check_months(group, t)


def test_process_pool(months: tuple[list[Path], np.ndarray]) -> None:
    paths, t = months
    serial = build(paths, concat_dim="time", load=LOAD)
    # spawn: this process runs zarr's event-loop thread, which fork does not carry over
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        pids = set(pool.map(_pid, range(2)))
        group = build(paths, concat_dim="time", load=LOAD, executor=pool)
    assert os.getpid() not in pids
    assert group == serial
    check_months(group, t)


def _pid(_: int) -> int:
    return os.getpid()


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        # the scheduler's HTTP routes default to port 8787 and move elsewhere when another
        # cluster holds it; that is no concern here
        warnings.filterwarnings("ignore", "Port 8787 is already in use", UserWarning)
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_dask_distributed_cluster(months: tuple[list[Path], np.ndarray], dask_client: Any) -> None:
    paths, t = months
    serial = build(paths, concat_dim="time", load=LOAD)
    workers = dask_client.run(os.getpid)
    assert len(workers) == 2 and os.getpid() not in workers.values()
    calls: list[tuple[int, int, str]] = []
    group = build(
        paths,
        concat_dim="time",
        load=LOAD,
        executor=dask_client.get_executor(),
        progress=lambda done, total, url: calls.append((done, total, url)),
    )
    assert group == serial
    check_months(group, t)
    assert [c[0] for c in calls] == [1, 2, 3, 4]
    assert sorted(c[2] for c in calls) == sorted(str(p) for p in paths)


def test_dask_cluster_reports_corrupt_file(tmp_path: Path, dask_client: Any) -> None:
    good = write_nc(tmp_path / "good.nc", [0, 1])
    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"CDF\x01" + b"\xff" * 20)
    with pytest.raises(BuildError, match=r"broken\.nc"):
        build([good, bad], concat_dim="time", load=LOAD, executor=dask_client.get_executor())


def _corrupt(tmp_path: Path) -> list[Path]:
    good = [write_nc(tmp_path / f"ok{i}.nc", [2 * i, 2 * i + 1]) for i in range(3)]
    # an HDF5 signature followed by garbage, between good files
    bad = tmp_path / "ok1b.nc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    return [good[0], good[1], bad, good[2]]


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_corrupt_file_among_good_ones(tmp_path: Path, kind: str) -> None:
    paths = _corrupt(tmp_path)
    calls: list[tuple[int, int, str]] = []
    pool = ThreadPoolExecutor(2) if kind == "threads" else None
    try:
        with pytest.raises(BuildError) as info:
            build(
                paths,
                concat_dim="time",
                load=LOAD,
                executor=pool,
                progress=lambda *a: calls.append(a),
            )
    finally:
        if pool is not None:
            pool.shutdown()
    message = str(info.value)
    assert "1 of 4 files failed" in message
    assert "ok1b.nc" in message
    # the cause is named: the parse error's type and text
    line = next(ln for ln in message.splitlines() if "ok1b.nc" in ln)
    assert "Error:" in line and len(line.split("Error:", 1)[1].strip()) > 5, line
    for good in (paths[0], paths[1], paths[3]):
        assert good.name not in message
    assert info.value.__cause__ is not None
    # every file was reported, the broken one included
    assert len(calls) == 4 and sorted(c[2] for c in calls) == sorted(map(str, paths))


def test_every_failing_file_is_listed_in_input_order(tmp_path: Path) -> None:
    good = write_nc(tmp_path / "good.nc", [0, 1])
    missing = tmp_path / "missing.nc"
    text = tmp_path / "notes.nc"
    text.write_text("this is not a data file\n")
    with pytest.raises(BuildError) as info:
        build([text, good, missing], concat_dim="time")
    message = str(info.value)
    assert "2 of 3 files failed" in message
    assert message.index("notes.nc") < message.index("missing.nc")
    assert "good.nc" not in message


def test_progress_callback_once_per_file(months: tuple[list[Path], np.ndarray]) -> None:
    paths, _ = months
    calls: list[tuple[int, int, str]] = []
    build(paths, concat_dim="time", load=LOAD, progress=lambda *a: calls.append(a))
    assert calls == [(i + 1, 4, str(p)) for i, p in enumerate(paths)]


def test_progress_bar_does_not_change_the_result(
    months: tuple[list[Path], np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    paths, _ = months
    with_bar = build(paths, concat_dim="time", load=LOAD, progress=True)
    out, err = capsys.readouterr()
    # the bar goes to stderr; stdout is left to the caller
    assert out == ""
    assert "parsing" in err and "m04.nc" in err
    assert with_bar == build(paths, concat_dim="time", load=LOAD)


def test_usage_errors(months: tuple[list[Path], np.ndarray], tmp_path: Path) -> None:
    paths, _ = months
    with pytest.raises(BuildError, match="needs concat_dim"):
        build(paths)
    with pytest.raises(BuildError, match="combine must be"):
        build(paths, concat_dim="time", combine="outer")  # type: ignore[arg-type]
    with pytest.raises(BuildError, match="no input matches"):
        build(str(tmp_path / "nothing-*.nc"), concat_dim="time")
    with pytest.raises(BuildError, match="at least one input"):
        build([], concat_dim="time")
    # combining problems are CombineErrors naming the variable and files
    with pytest.raises(CombineError, match=r"'x'.*'m01\.nc' and 'm02\.nc'"):
        build(paths, concat_dim="time", load=["time", "y"], compare_limit=0)
    with pytest.raises(CombineError, match="compat must be"):
        build(paths, concat_dim="time", compat="no_conflicts")  # type: ignore[arg-type]


def test_same_file_names_in_different_folders_are_told_apart(tmp_path: Path) -> None:
    paths = []
    for year, t in ((2020, [0, 1]), (2021, [2, 3])):
        (tmp_path / str(year)).mkdir()
        paths.append(write_nc(tmp_path / str(year) / "air.nc", t))
    # "x" referenced from each file, not compared by value: the error says which two files
    with pytest.raises(CombineError) as info:
        build(paths, concat_dim="time", load=["time", "y"], compare_limit=0)
    message = str(info.value)
    assert repr(str(paths[0])) in message and repr(str(paths[1])) in message
    group = build(str(tmp_path / "*" / "air.nc"), concat_dim="time", load=LOAD)
    np.testing.assert_array_equal(read(group, "time"), [0, 1, 2, 3])


# ---- executors get batches of files ---------------------------------------------------------


def _many_files(tmp_path: Path, count: int) -> tuple[list[Path], np.ndarray]:
    folder = tmp_path / "many"
    folder.mkdir()
    paths = [write_nc(folder / f"f{i:03d}.nc", [3 * i, 3 * i + 1, 3 * i + 2]) for i in range(count)]
    return paths, np.arange(3.0 * count)


def test_batches_cover_the_inputs_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    build_module = importlib.import_module("zarr_manifest.build")
    urls = [f"f{i}" for i in range(1000)]
    batches = build_module._batches(urls, 2)
    # the default: 8 tasks per worker, each of at most MAX_BATCH files
    assert [i for b in batches for i in b] == list(range(1000))
    assert [len(b) for b in batches] == [63] * 15 + [55]  # 16 tasks
    # many files: tasks of at most MAX_BATCH files
    assert max(len(b) for b in build_module._batches(urls * 10, 2)) == build_module.MAX_BATCH
    assert len(build_module._batches(urls[:100], 2)) == 15  # 14 of 7 files, one of 2
    assert len(build_module._batches(urls[:10], 4)) == 10  # fewer files than tasks
    monkeypatch.setattr(build_module, "TASKS_PER_WORKER", 1)
    assert [list(b) for b in build_module._batches(urls[:7], 3)] == [[0, 1, 2], [3, 4, 5], [6]]


def test_workers_of_executors() -> None:
    build_module = importlib.import_module("zarr_manifest.build")
    with ThreadPoolExecutor(3) as pool:
        assert build_module._workers(pool) == 3
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as processes:
        assert build_module._workers(processes) == 2


@pytest.mark.parametrize("kind", ["processes", "dask"])
def test_batched_build_on_executors_equals_serial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, request: pytest.FixtureRequest
) -> None:
    build_module = importlib.import_module("zarr_manifest.build")

    paths, t = _many_files(tmp_path, 7)
    bad = paths[0].parent / "f003b.nc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    serial = build(paths, concat_dim="time", load=LOAD)
    # 4 tasks of 2 files (the default, 16 tasks for 2 workers, would be one file a task)
    monkeypatch.setattr(build_module, "TASKS_PER_WORKER", 2)
    calls: list[str] = []
    if kind == "dask":
        executor: Any = request.getfixturevalue("dask_client").get_executor()
        assert build_module._workers(executor) == 2  # the cluster's threads
        pool = None
    else:
        pool = executor = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    try:
        group = build(
            paths,
            concat_dim="time",
            load=LOAD,
            executor=executor,
            progress=lambda *a: calls.append(a[2]),
        )
        with pytest.raises(BuildError) as info:
            build([*paths[:3], bad, *paths[3:]], concat_dim="time", load=LOAD, executor=executor)
    finally:
        if pool is not None:
            pool.shutdown()
    assert group == serial
    assert sorted(calls) == sorted(map(str, paths))
    np.testing.assert_array_equal(read(group, "time"), t)
    air = field(t, np.arange(3.0), np.arange(4.0))
    np.testing.assert_array_equal(read(group, "air"), air)
    # the broken file, in the middle of a batch, is named alone; its good neighbours parsed
    assert "1 of 8 files failed" in str(info.value) and "f003b.nc" in str(info.value)
    assert info.value.__cause__ is not None
