"""combine: concat / stack by dimension name and combine_by_coords over real files.

Inputs are netCDF4 files (through the HDF5 builder) and netCDF3 files written with the
netCDF4 library, plus hand-built groups; every combined result is read back through
``zarr.open_group(ManifestStore(group))`` and compared with the values written.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import zarr

from zarr_manifest import (
    CombineError,
    InlineArray,
    ManifestArray,
    ManifestGroup,
    ManifestStore,
    combine_by_coords,
    concat,
    open_virtual,
    stack,
)
from zarr_manifest.manifest import ChunkManifest

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

COORDS = ["time", "y", "x"]


def field(t: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The test field: every value names its coordinates (exact in float32)."""
    return (t[:, None, None] * 10000 + y[None, :, None] * 100 + x[None, None, :]).astype("f4")


def write_nc(
    path: Path,
    *,
    t: Sequence[float],
    y: Sequence[float] = (0, 1, 2),
    x: Sequence[float] = (0, 1, 2, 3),
    chunks: tuple[int, int, int] | None = None,
    zlib: bool = False,
    fmt: str = "NETCDF4",
    dtype: str = "f4",
    fill_value: float | None = None,
    mask_offset: int = 0,
) -> Path:
    """A file holding ``air(time, y, x) = field(t, y, x)`` plus coordinates and a
    time-less ``mask(y, x)``."""
    ta, ya, xa = (np.asarray(v, dtype="f8") for v in (t, y, x))
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.title = "combine test"
        ds.createDimension("time", None if fmt.startswith("NETCDF3") else len(ta))
        ds.createDimension("y", len(ya))
        ds.createDimension("x", len(xa))
        for name, values in (("time", ta), ("y", ya), ("x", xa)):
            ds.createVariable(name, "f8", (name,))[:] = values
        kw: dict[str, Any] = {}
        if fmt == "NETCDF4":
            kw = {"chunksizes": chunks or (1, len(ya), len(xa)), "zlib": zlib}
        air = ds.createVariable("air", dtype, ("time", "y", "x"), fill_value=fill_value, **kw)
        air.units = "K"
        air[:] = field(ta, ya, xa).astype(dtype)
        mask = ds.createVariable("mask", "i2", ("y", "x"))
        mask[:] = (ya[:, None] * 10 + xa[None, :]).astype("i2") + mask_offset
    return path


def read(group: ManifestGroup, name: str) -> np.ndarray:
    with zarr.config.set({"array.rectilinear_chunks": True}):
        return np.asarray(zarr.open_group(ManifestStore(group), mode="r")[name][...])


def monthly(tmp_path: Path, year: int, **kw: Any) -> tuple[list[Path], np.ndarray]:
    """One file per month of ``year`` with one step per day; returns paths and all days."""
    paths, start = [], 0
    for month in range(1, 13):
        n = calendar.monthrange(year, month)[1]
        days = np.arange(start, start + n)
        paths.append(write_nc(tmp_path / f"{year}-{month:02d}.nc", t=days, **kw))
        start += n
    return paths, np.arange(start, dtype="f8")


def open_all(paths: Sequence[Path], load: Sequence[str] = (*COORDS, "mask")) -> list[ManifestGroup]:
    return [open_virtual(p, load=load) for p in paths]


# ---- concat along time ------------------------------------------------------------------


@pytest.mark.parametrize(("year", "days"), [(2021, 365), (2024, 366)])
def test_monthly_files_one_chunk_per_step_stay_regular(
    tmp_path: Path, year: int, days: int
) -> None:
    paths, t = monthly(tmp_path, year)
    combined = concat(open_all(paths), "time")
    air = combined["air"]
    assert isinstance(air, ManifestArray)
    assert air.shape == (days, 3, 4)
    # chunks of one step divide every month: the grid stays regular
    assert air.metadata.to_dict()["chunk_grid"] == {
        "name": "regular",
        "configuration": {"chunk_shape": (1, 3, 4)},
    }
    assert len(air.manifest) == days
    assert len(air.manifest.path_table) == 12
    # the coordinate along the dimension is one array, the others are kept once
    time = combined["time"]
    assert isinstance(time, InlineArray)
    np.testing.assert_array_equal(time.data, t)
    np.testing.assert_array_equal(read(combined, "air"), field(t, np.arange(3.0), np.arange(4.0)))
    np.testing.assert_array_equal(read(combined, "x"), np.arange(4.0))
    np.testing.assert_array_equal(read(combined, "time"), t)
    assert combined["mask"] == open_all(paths[:1])[0]["mask"]
    assert combined.attributes["title"] == "combine test"
    assert combined["air"].attributes["units"] == "K"


@pytest.mark.parametrize(("year", "days"), [(2021, 365), (2024, 366)])
def test_monthly_files_chunked_by_four_give_rectilinear_grid(
    tmp_path: Path, year: int, days: int
) -> None:
    paths, t = monthly(tmp_path, year, chunks=(4, 3, 4))
    groups = open_all(paths)
    combined = concat(groups, "time")
    air = combined["air"]
    assert isinstance(air, ManifestArray)
    assert air.shape == (days, 3, 4)
    grid = air.metadata.chunk_grid
    assert type(grid).__name__ == "RectilinearChunkGridMetadata"
    lengths = [calendar.monthrange(year, m)[1] for m in range(1, 13)]
    # every month: full chunks of 4, then its (trimmed) partial chunk; the last month's
    # partial chunk stays padded at the end of the array
    expected: list[int] = []
    for n in lengths:
        expected += [4] * (n // 4) + ([n % 4] if n % 4 else [])
    edges = air.metadata.chunk_grid.chunk_shapes[0]
    flat = _expand(edges)
    assert flat[:-1] == expected[:-1]
    assert sum(flat[:-1]) + min(flat[-1], expected[-1]) == days
    assert air.manifest.shape_chunk_grid == (len(expected), 1, 1)
    # trimmed references: the partial chunks inside the sequence are shorter byte ranges
    item, row = 4, 3 * 4
    nbytes = air.manifest.lengths[:, 0, 0]
    np.testing.assert_array_equal(nbytes[:-1], np.asarray(expected[:-1]) * row * item)
    assert nbytes[-1] == 4 * row * item
    values = read(combined, "air")
    np.testing.assert_array_equal(values, field(t, np.arange(3.0), np.arange(4.0)))
    # and equal to the sources read with netCDF4, concatenated
    sources = []
    for p in paths:
        with netCDF4.Dataset(p) as ds:
            sources.append(ds["air"][:].data)
    np.testing.assert_array_equal(values, np.concatenate(sources))
    # partial selections across a trimmed month boundary
    with zarr.config.set({"array.rectilinear_chunks": True}):
        z = zarr.open_group(ManifestStore(combined), mode="r")["air"]
        np.testing.assert_array_equal(
            z[29:33, 1, 2], field(t[29:33], np.array([1.0]), np.array([2.0]))[:, 0, 0]
        )


def _expand(edges: Any) -> list[int]:
    """A rectilinear dimension's chunk lengths as a flat list (zarr may run-length encode)."""
    if isinstance(edges, int):
        return [edges]
    out: list[int] = []
    for e in edges:
        if isinstance(e, int):
            out.append(e)
        else:
            out += [int(e[0])] * int(e[1])
    return out


def test_inputs_filling_whole_chunks_stay_regular(tmp_path: Path) -> None:
    # four "months" of 28 days in chunks of 7: no input ends in a padded chunk (and a NaN
    # fill value, which must compare equal between inputs)
    paths = [
        write_nc(
            tmp_path / f"f{i}.nc",
            t=np.arange(28 * i, 28 * (i + 1)),
            chunks=(7, 3, 4),
            fill_value=np.nan,
        )
        for i in range(4)
    ]
    combined = concat(open_all(paths), "time")
    meta = combined["air"].metadata.to_dict()
    assert meta["fill_value"] == "NaN"
    assert meta["chunk_grid"] == {"name": "regular", "configuration": {"chunk_shape": (7, 3, 4)}}
    assert meta["shape"] == (112, 3, 4)
    np.testing.assert_array_equal(
        read(combined, "air"), field(np.arange(112.0), np.arange(3.0), np.arange(4.0))
    )


def test_compressed_padded_edge_chunk_inside_sequence_is_refused(tmp_path: Path) -> None:
    a = write_nc(tmp_path / "jan.nc", t=np.arange(31), chunks=(4, 3, 4), zlib=True)
    b = write_nc(tmp_path / "feb.nc", t=np.arange(31, 59), chunks=(4, 3, 4), zlib=True)
    with pytest.raises(CombineError) as info:
        concat(open_all([a, b]), "time")
    message = str(info.value)
    assert "'air'" in message
    assert "'jan.nc'" in message
    assert "padded" in message and "3 of 4" in message
    assert "encoded with" in message and "zlib" in message


def test_compressed_padded_edge_chunk_at_the_end_is_fine(tmp_path: Path) -> None:
    # the padded chunk of the last input stays the array's last chunk: nothing to trim
    a = write_nc(tmp_path / "a.nc", t=np.arange(28), chunks=(4, 3, 4), zlib=True)
    b = write_nc(tmp_path / "b.nc", t=np.arange(28, 59), chunks=(4, 3, 4), zlib=True)
    combined = concat(open_all([a, b]), "time")
    assert combined["air"].metadata.to_dict()["chunk_grid"]["name"] == "regular"
    np.testing.assert_array_equal(
        read(combined, "air"), field(np.arange(59.0), np.arange(3.0), np.arange(4.0))
    )


def test_padded_edge_chunk_off_the_outer_axis_is_refused(tmp_path: Path) -> None:
    # tiles along x with chunks of 3 columns: the first tile's last chunk is padded and
    # its kept columns are not one byte range
    a = write_nc(tmp_path / "west.nc", t=[0, 1], x=[0, 1, 2, 3], chunks=(1, 3, 3))
    b = write_nc(tmp_path / "east.nc", t=[0, 1], x=[4, 5, 6, 7], chunks=(1, 3, 3))
    with pytest.raises(CombineError) as info:
        concat(open_all([a, b]), "x")
    message = str(info.value)
    assert "'air'" in message and "'west.nc'" in message
    assert "not the outermost" in message


def test_concat_along_x_with_whole_chunks(tmp_path: Path) -> None:
    a = write_nc(tmp_path / "west.nc", t=[0, 1], x=[0, 1], chunks=(1, 3, 2))
    b = write_nc(tmp_path / "east.nc", t=[0, 1], x=[2, 3, 4], chunks=(1, 3, 3))
    combined = concat(open_all([a, b]), "x")
    assert combined["air"].shape == (2, 3, 5)
    np.testing.assert_array_equal(read(combined, "x"), np.arange(5.0))
    np.testing.assert_array_equal(
        read(combined, "air"), field(np.arange(2.0), np.arange(3.0), np.arange(5.0))
    )
    np.testing.assert_array_equal(
        read(combined, "mask"), np.arange(3)[:, None] * 10 + np.arange(5)[None, :]
    )


def test_netcdf3_files_concatenate(tmp_path: Path) -> None:
    for fmt in ("NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET"):
        paths, t, start = [], [], 0
        for n in (31, 28, 31):
            days = np.arange(start, start + n)
            paths.append(write_nc(tmp_path / f"{fmt}-{start}.nc", t=days, fmt=fmt))
            t.append(days)
            start += n
        combined = concat(open_all(paths, load=["y", "x", "mask"]), "time")
        tt = np.concatenate(t).astype("f8")
        # the record coordinate stays referenced: one array over the three files
        assert isinstance(combined["time"], ManifestArray)
        np.testing.assert_array_equal(read(combined, "time"), tt)
        np.testing.assert_array_equal(
            read(combined, "air"), field(tt, np.arange(3.0), np.arange(4.0))
        )


def test_netcdf3_fixed_size_variables_give_one_chunk_per_file(tmp_path: Path) -> None:
    # NETCDF3 with a fixed (not unlimited) time dimension: each variable is one contiguous
    # chunk, so the monthly lengths become the rectilinear edges
    paths, start = [], 0
    for n in (31, 28, 31):
        p = tmp_path / f"fixed-{start}.nc"
        with netCDF4.Dataset(p, "w", format="NETCDF3_CLASSIC") as ds:
            ds.createDimension("time", n)
            ds.createDimension("x", 2)
            ds.createVariable("time", "f8", ("time",))[:] = np.arange(start, start + n)
            ds.createVariable("x", "f8", ("x",))[:] = [0, 1]
            ds.createVariable("v", "i4", ("time", "x"))[:] = np.arange(
                start * 2, (start + n) * 2
            ).reshape(n, 2)
        paths.append(p)
        start += n
    combined = concat([open_virtual(p, load=["x"]) for p in paths], "time")
    v = combined["v"]
    assert isinstance(v, ManifestArray)
    assert v.metadata.to_dict()["chunk_grid"]["configuration"]["chunk_shapes"][0] == [31, 28, 31]
    np.testing.assert_array_equal(read(combined, "v"), np.arange(180).reshape(90, 2))
    np.testing.assert_array_equal(read(combined, "time"), np.arange(90.0))


# ---- the checks -----------------------------------------------------------------------


def _combine_error(paths: Sequence[Path], dim: str = "time", **kw: Any) -> str:
    with pytest.raises(CombineError) as info:
        concat(open_all(paths, **kw), dim)
    return str(info.value)


def test_variable_without_the_dimension_must_be_identical(tmp_path: Path) -> None:
    a = write_nc(tmp_path / "a.nc", t=[0, 1])
    b = write_nc(tmp_path / "b.nc", t=[2, 3])
    c = write_nc(tmp_path / "c.nc", t=[4, 5], mask_offset=1)
    message = _combine_error([a, b, c])
    assert "'mask'" in message and "'a.nc'" in message and "'c.nc'" in message
    assert "'b.nc'" not in message
    assert "same in every input" in message and "values" in message


def test_referenced_coordinates_of_different_files_compare_by_value(tmp_path: Path) -> None:
    a = write_nc(tmp_path / "a.nc", t=[0, 1])
    b = write_nc(tmp_path / "b.nc", t=[2, 3])
    groups = open_all([a, b], load=["time", "y", "mask"])
    combined = concat(groups, "time")
    assert combined["x"] == groups[0]["x"]  # read, equal, the first file's references kept
    # above the comparison bound they are compared by reference, and the error says so
    with pytest.raises(CombineError) as info:
        concat(groups, "time", compare_limit=8)
    message = str(info.value)
    assert "'x'" in message and "'a.nc'" in message and "'b.nc'" in message
    assert "chunk references" in message and "compare_limit=32" in message


@pytest.mark.parametrize(
    ("second", "words"),
    [
        ({"dtype": "f8"}, ["dtype", "float64", "float32"]),
        ({"zlib": True}, ["codecs"]),
        ({"chunks": (1, 1, 4)}, ["chunked differently", "axis 1"]),
        ({"fill_value": -1.0}, ["'_FillValue'", "absent", "-1.0"]),
        ({"y": (0, 1, 2, 3)}, ["shape", "(2, 4, 4)", "(2, 3, 4)"]),
    ],
    ids=["dtype", "codecs", "chunks", "fill-value", "shape"],
)
def test_mismatches_name_variable_and_both_files(
    tmp_path: Path, second: dict[str, Any], words: list[str]
) -> None:
    a = write_nc(tmp_path / "first.nc", t=[0, 1])
    b = write_nc(tmp_path / "second.nc", t=[2, 3], **second)
    # load nothing but the time coordinate, so the check of "air" is the one that fails
    groups = [open_virtual(p, load=["time"], drop=["x", "y", "mask"]) for p in (a, b)]
    with pytest.raises(CombineError) as info:
        concat(groups, "time")
    message = str(info.value)
    assert "'air'" in message, message
    assert "'first.nc'" in message and "'second.nc'" in message, message
    for w in words:
        assert w in message, message


def test_different_members_are_named(tmp_path: Path) -> None:
    a = write_nc(tmp_path / "a.nc", t=[0, 1])
    b = write_nc(tmp_path / "b.nc", t=[2, 3])
    groups = [open_virtual(a, load=COORDS), open_virtual(b, load=COORDS, drop=["mask"])]
    with pytest.raises(CombineError, match=r"'a\.nc' and 'b\.nc' have different arrays \(mask\)"):
        concat(groups, "time")


def test_labels_override_file_names(tmp_path: Path) -> None:
    a = write_nc(tmp_path / "a.nc", t=[0, 1])
    b = write_nc(tmp_path / "b.nc", t=[2, 3], dtype="f8")
    with pytest.raises(
        CombineError, match="dtype is 'float32' in DECEMBER but 'float64' in JANUARY"
    ):
        concat(open_all([a, b]), "time", labels=["DECEMBER", "JANUARY"])


# ---- combine_by_coords ------------------------------------------------------------------


def test_combine_by_coords_tiles_and_times_shuffled(tmp_path: Path) -> None:
    # 2 x 2 tiles in y/x times 3 time blocks = 12 files, given in a shuffled order
    ys, xs, ts = np.arange(6.0), np.arange(8.0), np.arange(9.0)
    paths = []
    for ti, tb in enumerate(np.split(ts, 3)):
        for yi, yb in enumerate(np.split(ys, 2)):
            for xi, xb in enumerate(np.split(xs, 2)):
                paths.append(
                    write_nc(tmp_path / f"t{ti}y{yi}x{xi}.nc", t=tb, y=yb, x=xb, chunks=(1, 3, 4))
                )
    random.Random(7).shuffle(paths)
    combined = combine_by_coords(open_all(paths))
    assert combined["air"].shape == (9, 6, 8)
    assert combined["mask"].shape == (6, 8)
    for name, values in (("time", ts), ("y", ys), ("x", xs)):
        node = combined[name]
        assert isinstance(node, InlineArray)
        np.testing.assert_array_equal(node.data, values)
    np.testing.assert_array_equal(read(combined, "air"), field(ts, ys, xs))
    np.testing.assert_array_equal(
        read(combined, "mask"), (ys[:, None] * 10 + xs[None, :]).astype("i2")
    )
    assert len(combined["air"].manifest.path_table) == 12
    # the same result whatever the input order
    assert combined == combine_by_coords(open_all(sorted(paths)))


def test_combine_by_coords_with_referenced_time(tmp_path: Path) -> None:
    # the concatenation coordinate may stay referenced: it is read to find the order
    a = write_nc(tmp_path / "a.nc", t=[3, 4, 5])
    b = write_nc(tmp_path / "b.nc", t=[0, 1, 2])
    combined = combine_by_coords(open_all([a, b], load=["y", "x", "mask"]))
    assert isinstance(combined["time"], ManifestArray)
    np.testing.assert_array_equal(read(combined, "time"), np.arange(6.0))
    np.testing.assert_array_equal(
        read(combined, "air"), field(np.arange(6.0), np.arange(3.0), np.arange(4.0))
    )


def test_combine_by_coords_gap_and_overlap(tmp_path: Path) -> None:
    a = write_nc(tmp_path / "a.nc", t=[0, 1, 2])
    gap = write_nc(tmp_path / "gap.nc", t=[4, 5, 6])
    over = write_nc(tmp_path / "over.nc", t=[2, 3, 4])
    with pytest.raises(CombineError) as info:
        combine_by_coords(open_all([gap, a]))
    message = str(info.value)
    assert "gap" in message and "'time'" in message
    assert "'a.nc'" in message and "'gap.nc'" in message
    with pytest.raises(CombineError) as info:
        combine_by_coords(open_all([over, a]))
    message = str(info.value)
    assert "overlaps" in message and "'time'" in message
    assert "'a.nc'" in message and "'over.nc'" in message


def test_combine_by_coords_incomplete_tiling_and_duplicates(tmp_path: Path) -> None:
    tiles = [
        write_nc(tmp_path / f"y{yi}x{xi}.nc", t=[0], y=[yi * 2, yi * 2 + 1], x=[xi * 2, xi * 2 + 1])
        for yi in range(2)
        for xi in range(2)
    ]
    with pytest.raises(CombineError, match="do not tile"):
        combine_by_coords(open_all(tiles[:3]))
    dup = write_nc(tmp_path / "dup.nc", t=[0], y=[0, 1], x=[0, 1])
    with pytest.raises(CombineError, match=r"'y0x0\.nc' and 'dup\.nc' start at the same"):
        combine_by_coords(open_all([*tiles, dup]))
    with pytest.raises(CombineError, match="no 1-D coordinate differs"):
        combine_by_coords(open_all([tiles[0], tiles[0]]))


def test_combine_by_coords_descending_coordinate(tmp_path: Path) -> None:
    # latitude stored north to south (as in many reanalyses), tiled in two bands
    north = write_nc(tmp_path / "north.nc", t=[0, 1], y=[50, 40, 30])
    south = write_nc(tmp_path / "south.nc", t=[0, 1], y=[20, 10, 0])
    for order in ([north, south], [south, north]):
        combined = combine_by_coords(open_all(order))
        y = np.array([50.0, 40, 30, 20, 10, 0])
        np.testing.assert_array_equal(read(combined, "y"), y)
        np.testing.assert_array_equal(
            read(combined, "air"), field(np.arange(2.0), y, np.arange(4.0))
        )
    gap = write_nc(tmp_path / "gap.nc", t=[0, 1], y=[10, 0, -10])
    with pytest.raises(CombineError, match="gap"):
        combine_by_coords(open_all([north, gap]))
    mixed = write_nc(tmp_path / "mixed.nc", t=[0, 1], y=[0, 10, 20])
    with pytest.raises(CombineError, match="'y'"):
        combine_by_coords(open_all([north, mixed]))


# ---- hand-built groups: inline arrays, stack, child groups ---------------------------------


def _manifest_array(path: str, n: int, dims: tuple[str, ...] = ("t", "x")) -> ManifestArray:
    meta = {
        "shape": [n, 2],
        "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 2]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "dimension_names": list(dims),
    }
    manifest = ChunkManifest.from_arrays(
        paths=np.full((n, 1), path, dtype=np.dtypes.StringDType()),
        offsets=np.arange(n, dtype="u8").reshape(n, 1) * 8,
        lengths=np.full((n, 1), 8, dtype="u8"),
    )
    return ManifestArray(meta, manifest)


def test_hand_built_groups_with_child_groups(tmp_path: Path) -> None:
    files = []
    for i, n in enumerate((3, 2)):
        data = np.arange(n * 2, dtype="<i4").reshape(n, 2) + 100 * i
        p = tmp_path / f"raw{i}.bin"
        p.write_bytes(data.tobytes())
        files.append((p, data))
    groups = [
        ManifestGroup(
            arrays={
                "t": InlineArray.from_numpy(np.arange(n) + 10 * i, dimension_names=["t"]),
                "label": InlineArray.from_numpy(np.array([1, 2]), dimension_names=["x"]),
            },
            groups={
                "sub": ManifestGroup(
                    arrays={"v": _manifest_array(p.as_uri(), len(d))}, attributes={"k": 1}
                )
            },
            attributes={"source": "hand"},
        )
        for i, ((p, d), n) in enumerate(zip(files, (3, 2), strict=True))
    ]
    combined = concat(groups, "t")
    np.testing.assert_array_equal(combined["t"].data, [0, 1, 2, 10, 11])
    assert combined["label"] == groups[0]["label"]
    assert combined["sub"].attributes == {"k": 1}
    assert combined.attributes == {"source": "hand"}
    np.testing.assert_array_equal(read(combined, "sub/v"), np.concatenate([d for _, d in files]))
    assert combined["sub/v"].manifest.path_table == tuple(p.as_uri() for p, _ in files)


def test_inline_and_referenced_mix_is_refused(tmp_path: Path) -> None:
    a = ManifestGroup(arrays={"v": _manifest_array("file:///data/a.bin", 2)})
    b = ManifestGroup(
        arrays={"v": InlineArray.from_numpy(np.zeros((2, 2), "i4"), dimension_names=["t", "x"])}
    )
    with pytest.raises(CombineError, match="inline in some inputs and referenced in others"):
        concat([a, b], "t")


def test_stack_adds_a_leading_dimension(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        data = np.arange(4, dtype="<i4").reshape(2, 2) + 10 * i
        p = tmp_path / f"member{i}.bin"
        p.write_bytes(data.tobytes())
        files.append((p, data))
    common = InlineArray.from_numpy(np.array([5.0, 6.0]), dimension_names=["x"])
    groups = [
        ManifestGroup(arrays={"v": _manifest_array(p.as_uri(), 2), "x": common}) for p, _ in files
    ]
    stacked = stack(groups, "member")
    v = stacked["v"]
    assert v.shape == (3, 2, 2)
    assert v.dimension_names == ("member", "t", "x")
    assert stacked["x"] == common
    np.testing.assert_array_equal(read(stacked, "v"), np.stack([d for _, d in files]))
    with pytest.raises(CombineError, match="already has dimension 't'"):
        stack(groups, "t")


def test_bad_inputs() -> None:
    with pytest.raises(CombineError, match="at least one"):
        concat([], "time")
    with pytest.raises(CombineError, match="not a ManifestGroup"):
        concat([ManifestGroup(), "nope"], "time")  # type: ignore[list-item]
    single = ManifestGroup(
        arrays={"t": InlineArray.from_numpy(np.arange(3), dimension_names=["t"])}
    )
    assert combine_by_coords([single]) is single


def _coord_group(name: str, coord: np.ndarray) -> ManifestGroup:
    return ManifestGroup(
        arrays={
            name: InlineArray.from_numpy(coord, dimension_names=[name]),
            "v": InlineArray.from_numpy(np.arange(coord.size) * 1.5, dimension_names=[name]),
        }
    )


def test_combine_by_coords_datetime_and_unsigned_coordinates() -> None:
    day = np.timedelta64(1, "D")
    jan4 = np.datetime64("2000-01-04")
    later = _coord_group("time", jan4 + np.arange(3) * day)
    earlier = _coord_group("time", np.datetime64("2000-01-01") + np.arange(3) * day)
    combined = combine_by_coords([later, earlier])
    np.testing.assert_array_equal(
        combined["time"].data, np.datetime64("2000-01-01") + np.arange(6) * day
    )
    np.testing.assert_array_equal(combined["v"].data, [0, 1.5, 3, 0, 1.5, 3])
    # a gap in datetimes is found with exact arithmetic (np.isclose rejects timedelta64)
    gap = _coord_group("time", jan4 + day + np.arange(3) * day)
    with pytest.raises(CombineError, match="gap"):
        combine_by_coords([gap, earlier], labels=["gap", "earlier"])
    # unsigned coordinates running downwards: np.diff would wrap around
    hi = _coord_group("level", np.array([30, 20, 10], dtype="u2"))
    lo = _coord_group("level", np.array([0], dtype="u2"))
    combined = combine_by_coords([lo, hi])
    np.testing.assert_array_equal(combined["level"].data, [30, 20, 10, 0])


def test_mixed_chunk_lengths_along_the_axis_and_short_inputs(tmp_path: Path) -> None:
    # chunks of 4 then of 7 along time, a padded edge off the axis (5 columns in chunks of
    # 2), and unlimited-dimension inputs shorter than one chunk
    def write(name: str, start: int, n: int, chunk: int, unlimited: bool = False) -> Path:
        path = tmp_path / name
        with netCDF4.Dataset(path, "w") as ds:
            ds.createDimension("time", None if unlimited else n)
            ds.createDimension("x", 5)
            ds.createVariable("time", "f8", ("time",))[:] = np.arange(start, start + n)
            v = ds.createVariable("v", "i4", ("time", "x"), chunksizes=(chunk, 2))
            v[:] = np.arange(start * 5, (start + n) * 5).reshape(n, 5)
        return path

    paths = [
        write("a.nc", 0, 10, 4),
        write("b.nc", 10, 14, 7),
        write("c.nc", 24, 3, 4, unlimited=True),
        write("d.nc", 27, 3, 4, unlimited=True),
    ]
    combined = concat([open_virtual(p, load=["time"]) for p in paths], "time")
    v = combined["v"]
    assert isinstance(v, ManifestArray)
    edges = _expand(v.metadata.chunk_grid.chunk_shapes[0])
    assert edges == [4, 4, 2, 7, 7, 3, 4]
    assert v.metadata.chunk_grid.chunk_shapes[1] == 2
    np.testing.assert_array_equal(read(combined, "v"), np.arange(150).reshape(30, 5))
    np.testing.assert_array_equal(read(combined, "time"), np.arange(30.0))


def test_labels_must_match_the_inputs() -> None:
    g = ManifestGroup(arrays={"t": InlineArray.from_numpy(np.arange(2), dimension_names=["t"])})
    with pytest.raises(CombineError, match="1 labels for 2 inputs"):
        concat([g, g], "t", labels=["only one"])


def test_inline_variables_are_checked_too() -> None:
    def group(data: np.ndarray, dims: list[str]) -> ManifestGroup:
        return ManifestGroup(arrays={"v": InlineArray.from_numpy(data, dimension_names=dims)})

    a = group(np.zeros((2, 3)), ["t", "x"])
    with pytest.raises(CombineError, match=r"'v': B has shape \(2, 4\), A has \(2, 3\)"):
        concat([a, group(np.zeros((2, 4)), ["t", "x"])], "t", labels=["A", "B"])
    with pytest.raises(CombineError, match=r"'v': B has dimensions \('x', 't'\)"):
        concat([a, group(np.zeros((3, 2)), ["x", "t"])], "t", labels=["A", "B"])
    with pytest.raises(CombineError, match=r"'v' decodes to float64 in A but int32 in B"):
        concat([a, group(np.zeros((2, 3), "i4"), ["t", "x"])], "t", labels=["A", "B"])
    with pytest.raises(CombineError, match=r"'v': B has shape \(3, 3\)"):
        stack([a, group(np.zeros((3, 3)), ["t", "x"])], "member", labels=["A", "B"])
    ok = concat([a, group(np.ones((1, 3)), ["t", "x"])], "t")
    np.testing.assert_array_equal(ok["v"].data, [[0, 0, 0], [0, 0, 0], [1, 1, 1]])
