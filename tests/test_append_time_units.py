"""`append` of files whose time coordinate has each file's own units, as xarray writes daily
files by default ("days since <the file's first date>"): the new times are compared decoded
and re-encoded into the store's units, exactly or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import zarr_manifest as zm
from zarr_manifest.cli import main


def write_day(folder: Path, day: str, *, hours: tuple[int, ...] = (0,)) -> Path:
    """One file as xarray writes it by default: ``tas(time, x)``, a datetime64 time."""
    time = pd.DatetimeIndex([pd.Timestamp(day) + pd.Timedelta(hours=h) for h in hours])
    seed = int(time[0].value // 10**9 % 1000)
    tas = np.random.default_rng(seed).random((len(time), 3)).astype("f4")
    path = folder / f"tas_{day}.nc"
    xr.Dataset({"tas": (("time", "x"), tas)}, coords={"time": time, "x": np.arange(3.0)}).to_netcdf(
        path
    )
    return path


def store_dataset(store: Path) -> xr.Dataset:
    return xr.open_dataset(store, engine="manifest")


@pytest.fixture
def days(tmp_path: Path) -> list[Path]:
    return [write_day(tmp_path, f"2000-01-0{d}") for d in range(1, 5)]


def test_daily_files_have_their_own_units(days: list[Path]) -> None:
    # the premise: each file's time is 0 "days since" its own date
    with xr.open_dataset(days[3], decode_times=False) as ds:
        assert ds["time"].attrs["units"].startswith("days since 2000-01-04")
        assert ds["time"].values.tolist() == [0]


def test_append_a_daily_file_with_its_own_time_units(tmp_path: Path, days: list[Path]) -> None:
    store = tmp_path  # beside its sources, which it may then read
    zm.build([str(p) for p in days[:3]], concat_dim="time").to_store(store)
    zm.append(store, str(days[3]), dim="time")
    with store_dataset(store) as got, xr.open_mfdataset(days) as want:
        xr.testing.assert_identical(got.load(), want.load())
    with xr.open_dataset(store, engine="manifest", decode_times=False) as raw:
        # re-encoded into the store's units, not the new file's
        assert raw["time"].attrs["units"].startswith("days since 2000-01-01")
        assert raw["time"].values.tolist() == [0, 1, 2, 3]


def test_cli_append_a_daily_file_with_its_own_time_units(
    tmp_path: Path, days: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path  # beside its sources, which it may then read
    zm.build([str(p) for p in days[:3]], concat_dim="time").to_store(store)
    argv = ["append", str(store), str(days[3]), "--dim", "time", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    with store_dataset(store) as got, xr.open_mfdataset(days) as want:
        xr.testing.assert_identical(got.load(), want.load())


def test_append_refuses_overlapping_or_earlier_days(tmp_path: Path, days: list[Path]) -> None:
    store = tmp_path  # beside its sources, which it may then read
    zm.build([str(p) for p in days[1:3]], concat_dim="time").to_store(store)
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    for path, words in ((days[2], "overlaps"), (days[0], "does not follow")):
        with pytest.raises(zm.CombineError, match=words) as info:
            zm.append(store, str(path), dim="time")
        assert "2000-01-03" in str(info.value)  # the values are shown as dates
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_append_refuses_times_the_store_units_cannot_hold(tmp_path: Path, days: list[Path]) -> None:
    # noon, twice a day: not a whole number of the store's integer days
    noon = write_day(tmp_path, "2000-01-05", hours=(0, 12))
    store = tmp_path  # beside its sources, which it may then read
    zm.build([str(p) for p in days], concat_dim="time").to_store(store)
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    with pytest.raises(
        zm.CombineError, match=r"'time'.*cannot be encoded exactly.*days since 2000-01-01"
    ):
        zm.append(store, str(noon), dim="time")
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_append_several_daily_files_at_once(tmp_path: Path, days: list[Path]) -> None:
    store = tmp_path  # beside its sources, which it may then read
    zm.build(str(days[0])).to_store(store)
    zm.append(store, [str(p) for p in days[1:]], dim="time")
    with store_dataset(store) as got, xr.open_mfdataset(days) as want:
        xr.testing.assert_identical(got.load(), want.load())
