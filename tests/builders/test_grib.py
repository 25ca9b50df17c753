"""GRIB (editions 1 and 2) read through ManifestStore + xarray, compared with cfgrib.

Files are written with eccodes (from the samples built into eccodes) or are cfgrib's own test
files when the corpus cache holds them (``tests/corpus``; skipped otherwise).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from zarr_manifest import BuildError, InlineArray, ManifestArray, ManifestGroup, UnsupportedError

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("eccodes") is None or importlib.util.find_spec("cfgrib") is None,
        reason="GRIB needs eccodes and cfgrib (pip install eccodes cfgrib)",
    ),
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

CACHE = Path(
    os.environ.get("ZARR_MANIFEST_CORPUS", Path.home() / ".cache" / "zarr-manifest-corpus")
)


def _open(group: ManifestGroup) -> zarr.Group:
    from zarr_manifest import ManifestStore

    return zarr.open_group(ManifestStore(group), mode="r")


def _segment_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _leaves(group: ManifestGroup) -> dict[str, tuple[str, dict[str, Any]]]:
    """Leaf group path -> (variable name, the cfgrib ``filter_by_keys`` that opens it)."""
    out = {}
    for path, node in group.walk():
        if isinstance(node, ManifestArray) and "GRIB_paramId" in node.attributes:
            parent, _, name = path.rpartition("/")
            attrs = node.attributes
            fbk: dict[str, Any] = {"paramId": attrs["GRIB_paramId"]}
            for key in ("stepType", "typeOfLevel"):
                if f"GRIB_{key}" in attrs:
                    fbk[key] = attrs[f"GRIB_{key}"]
            for segment in parent.split("/"):
                key, eq, value = segment.partition("=")
                if eq:
                    fbk[key] = _segment_value(value)
            out[parent] = (name, fbk)
    return out


def assert_reads_like_cfgrib(path: Path, group: ManifestGroup) -> int:
    """Every variable (and its coordinates) through xarray equals cfgrib's; how many."""
    import cfgrib
    import xarray as xr

    from zarr_manifest import ManifestStore

    store = ManifestStore(group)
    leaves = _leaves(group)
    for leaf, (name, fbk) in leaves.items():
        ours = xr.open_dataset(store, engine="zarr", group=leaf, consolidated=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = xr.open_dataset(
                path, engine="cfgrib", backend_kwargs={"indexpath": "", "filter_by_keys": fbk}
            )
        assert ours[name].dims == ref[name].dims, leaf
        assert ours[name].dtype == ref[name].dtype, leaf
        array = group[f"{leaf}/{name}"]
        assert isinstance(array, ManifestArray)
        if ref[name].size <= 2**22:
            np.testing.assert_array_equal(ours[name].values, ref[name].values, err_msg=leaf)
        else:
            # sparse hypercubes (ncep-seasonal-monthly.grib: 475 MB, 1.4 M chunks, mostly
            # NaN): compare the fields of a few messages and a few empty positions
            present = np.argwhere(array.manifest.present)
            empty = np.argwhere(~array.manifest.present)
            for index in [*present[:: max(1, len(present) // 20)], *empty[:5]]:
                where = tuple(int(i) for i in index[: ref[name].ndim - 2])
                np.testing.assert_array_equal(
                    ours[name][where].values, ref[name][where].values, err_msg=f"{leaf} {where}"
                )
        assert set(ours[name].coords) == set(ref[name].coords), leaf
        for c in ref[name].coords:
            np.testing.assert_array_equal(ours[c].values, ref[c].values, err_msg=f"{leaf} {c}")
    # and no variable cfgrib sees is missing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = cfgrib.open_datasets(path, backend_kwargs={"indexpath": ""})
    seen = {(n, f.get("stepType"), f.get("typeOfLevel")) for n, f in leaves.values()}
    for ds in datasets:
        for v, da in ds.data_vars.items():
            key = (v, da.attrs.get("GRIB_stepType"), da.attrs.get("GRIB_typeOfLevel"))
            assert key in seen, f"{path.name}: {key} missing"
    return len(leaves)


def _write_grib(path: Path) -> None:
    import eccodes

    with open(path, "wb") as f:
        for i, (category, number, level) in enumerate([(0, 0, 500), (0, 0, 850), (2, 2, 500)]):
            h = eccodes.codes_grib_new_from_samples("GRIB2")
            eccodes.codes_set(h, "discipline", 0)
            eccodes.codes_set(h, "parameterCategory", category)  # 0/0 temperature, 2/2 u wind
            eccodes.codes_set(h, "parameterNumber", number)
            eccodes.codes_set(h, "typeOfFirstFixedSurface", 100)
            eccodes.codes_set(h, "level", level)
            n = eccodes.codes_get(h, "Ni") * eccodes.codes_get(h, "Nj")
            eccodes.codes_set_values(h, np.linspace(200, 300, n) + 10 * i)
            eccodes.codes_write(h, f)
            eccodes.codes_release(h)


def _write_sample(path: Path, sample: str, **keys: Any) -> bytes:
    """One message from an eccodes built-in sample, with varied values; its bytes."""
    import eccodes

    h = eccodes.codes_grib_new_from_samples(sample)
    try:
        for key, value in keys.items():
            eccodes.codes_set(h, key, value)
        n = eccodes.codes_get_size(h, "values")
        eccodes.codes_set_values(h, 250 + 40 * np.sin(np.arange(n) / 7.0))
        message = bytes(eccodes.codes_get_message(h))
    finally:
        eccodes.codes_release(h)
    path.write_bytes(message)
    return message


def test_variables_have_cfgribs_dims_dtype_and_values(tmp_path: Path) -> None:
    from zarr_manifest.builders.grib import build_grib

    path = tmp_path / "sample.grib2"
    _write_grib(path)
    group = build_grib(path)
    t = group["t/instant/isobaricInhPa/t"]
    assert isinstance(t, ManifestArray)  # referenced, one chunk per message
    assert t.dimension_names == ("isobaricInhPa", "latitude", "longitude")
    assert t.dtype == np.float32
    assert t.chunks == (1, *t.shape[1:])
    assert isinstance(group["t/instant/isobaricInhPa/latitude"], InlineArray)
    assert assert_reads_like_cfgrib(path, group) == 2
    messages = build_grib(path, tree=False)
    assert sorted(messages.groups) == ["message_0", "message_1", "message_2"]
    u = _open(messages)["message_2/u"][...]
    np.testing.assert_array_equal(u, _open(group)["u/instant/isobaricInhPa/u"][...])


@pytest.mark.parametrize(
    "sample",
    [
        "GRIB1",
        "GRIB2",
        "regular_ll_sfc_grib1",
        "regular_ll_pl_grib2",
        "reduced_gg_pl_32_grib1",
        "reduced_gg_ml_grib2",
        "polar_stereographic_sfc_grib1",
        "lambert_bf_grib2",
        "sh_ml_grib2",
        "ccsds_grib2",
    ],
)
def test_eccodes_samples_grib1_and_grib2(tmp_path: Path, sample: str) -> None:
    from zarr_manifest.builders.grib import build_grib

    path = tmp_path / f"{sample}.grib"
    _write_sample(path, sample)
    assert assert_reads_like_cfgrib(path, build_grib(path)) == 1


def test_missing_points_and_alternate_rows_read_like_cfgrib(tmp_path: Path) -> None:
    import eccodes

    from zarr_manifest.builders.grib import build_grib

    path = tmp_path / "missing.grib"
    h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
    eccodes.codes_set(h, "bitmapPresent", 1)
    eccodes.codes_set(h, "missingValue", 9999)
    n = eccodes.codes_get_size(h, "values")
    values = np.linspace(0, 100, n)
    values[::5] = 9999  # missing (in the bitmap)
    eccodes.codes_set_values(h, values)
    first = bytes(eccodes.codes_get_message(h))
    eccodes.codes_release(h)
    h = eccodes.codes_new_from_message(first)
    eccodes.codes_set(h, "missingValue", -1)  # now 9999 is a real value, not a missing one
    eccodes.codes_set(h, "level", 2)
    values = np.linspace(0, 100, n)
    values[3] = 9999
    eccodes.codes_set_values(h, values)
    eccodes.codes_set(h, "alternativeRowScanning", 1)
    second = bytes(eccodes.codes_get_message(h))
    eccodes.codes_release(h)
    path.write_bytes(first + second)
    group = build_grib(path)
    assert assert_reads_like_cfgrib(path, group) >= 1
    arrays = [a for _, a in group.walk() if isinstance(a, ManifestArray)]
    assert arrays


def test_padding_and_bytes_between_messages_are_skipped_like_eccodes(tmp_path: Path) -> None:
    from zarr_manifest.builders.grib import build_grib

    good = tmp_path / "good.grib2"
    _write_grib(good)
    padded = tmp_path / "padded.grib2"
    # zero padding after the last message (7 of cfgrib's 11 GRIB2 samples end so)
    padded.write_bytes(b"HEADER\r\r\n" + good.read_bytes() + b"\0" * 100)
    assert assert_reads_like_cfgrib(padded, build_grib(padded)) == 2


def test_bad_files_are_refused(tmp_path: Path) -> None:
    from zarr_manifest.builders.grib import build_grib

    bad = tmp_path / "bad.grib2"
    bad.write_bytes(b"nothing to see")
    with pytest.raises(BuildError, match=r"bad\.grib2: no GRIB message"):
        build_grib(bad)
    good = tmp_path / "good.grib2"
    _write_grib(good)
    truncated = tmp_path / "truncated.grib2"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(BuildError, match="truncated"):
        build_grib(truncated)
    no_end = tmp_path / "no_end.grib2"
    data = bytearray(good.read_bytes())
    first_length = int.from_bytes(data[8:16], "big")
    data[first_length - 4 : first_length] = b"6666"
    no_end.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="7777"):
        build_grib(no_end)
    edition3 = tmp_path / "edition3.grib"
    data = bytearray(good.read_bytes())
    data[7] = 3
    edition3.write_bytes(bytes(data))
    with pytest.raises(UnsupportedError, match="edition 3"):
        build_grib(edition3)


def test_multi_field_grib2_message_is_refused(tmp_path: Path) -> None:
    import eccodes

    from zarr_manifest.builders.grib import build_grib

    message = _write_sample(tmp_path / "one.grib2", "GRIB2")
    sections, pos = [], 16
    while message[pos : pos + 4] != b"7777":
        length = int.from_bytes(message[pos : pos + 4], "big")
        sections.append(message[pos : pos + length])
        pos += length
    # sections 1..7, then sections 4..7 again: a second field sharing the grid
    again = [s for s in sections if s[4] in (4, 5, 6, 7)]
    body = b"".join(sections + again)
    total = 16 + len(body) + 4
    multi = message[:8] + total.to_bytes(8, "big") + body + b"7777"
    path = tmp_path / "multi.grib2"
    path.write_bytes(multi)
    eccodes.codes_grib_multi_support_on()
    try:
        with open(path, "rb") as f:
            assert eccodes.codes_count_in_file(f) == 2  # eccodes sees two fields
    finally:
        eccodes.codes_grib_multi_support_off()
    with pytest.raises(UnsupportedError, match="several fields"):
        build_grib(path)


def test_group_drop_load_and_kerchunk_export(tmp_path: Path) -> None:
    import fsspec

    from zarr_manifest.builders.grib import build_grib
    from zarr_manifest.writers.kerchunk import to_kerchunk

    path = tmp_path / "sample.grib2"
    _write_grib(path)
    group = build_grib(path, group="u/instant/isobaricInhPa", load=["u"], drop=["valid_time"])
    assert isinstance(group["u"], InlineArray)  # loaded values keep no GRIB codec
    assert "valid_time" not in group
    virtual = build_grib(path, group="u/instant/isobaricInhPa")
    expected = _open(virtual)["u"][...]
    np.testing.assert_array_equal(_open(group)["u"][...], expected)
    with pytest.raises(BuildError, match="no group"):
        build_grib(path, group="nope")
    with pytest.raises(BuildError, match="nope"):
        build_grib(path, group="u/instant/isobaricInhPa", drop=["nope"])
    # exported, the GRIB codec becomes kerchunk's numcodecs "grib" filter again
    refs = to_kerchunk(virtual)
    assert '"id": "grib"' in refs["refs"]["u/.zarray"]
    fs = fsspec.filesystem("reference", fo=refs)
    z = zarr.open_group(fs.get_mapper(), mode="r", zarr_format=2)
    np.testing.assert_array_equal(z["u"][...], expected)


def test_filter_by_keys(tmp_path: Path) -> None:
    from zarr_manifest.builders.grib import build_grib

    path = tmp_path / "sample.grib2"
    _write_grib(path)
    group = build_grib(path, filter={"shortName": "u"})
    assert sorted(group.groups) == ["u"]
    with pytest.raises(BuildError, match="no GRIB messages"):
        build_grib(path, filter={"shortName": "nope"})


# the corpus run extracts packages under files/<package>/ (tests/corpus/corpus.py)
CFGRIB_SAMPLES = sorted((CACHE / "files").glob("**/cfgrib-*/tests/sample-data/*.grib"))


@pytest.mark.skipif(
    not CFGRIB_SAMPLES,
    reason=f"cfgrib's sample files are not in the corpus cache {CACHE} (tests/corpus)",
)
def test_cfgrib_sample_files_read_right_or_are_refused() -> None:
    from zarr_manifest.builders.grib import build_grib

    right, refused = [], []
    for path in CFGRIB_SAMPLES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import cfgrib

                cfgrib.open_datasets(path, backend_kwargs={"indexpath": ""})
        except Exception:
            continue  # cfgrib cannot read it either (regular_gg_wrong_increment.grib)
        try:
            group = build_grib(path)
        except BuildError:
            refused.append(path.name)
            continue
        assert_reads_like_cfgrib(path, group)
        right.append(path.name)
    # the one refusal: a message whose length field is corrupt (cfgrib skips it with a warning)
    assert refused == ["era5-levels-corrupted.grib"]
    assert len(right) == len(CFGRIB_SAMPLES) - 2  # 30 of cfgrib 0.9.15.1's 32


def test_remote_grib_over_http(clean_range_server: Any, serve_bytes: Any, tmp_path: Path) -> None:
    from zarr_manifest import open_virtual
    from zarr_manifest.builders.grib import build_grib

    path = tmp_path / "sample.grib2"
    _write_grib(path)
    url = clean_range_server.url_for(serve_bytes(b"\0" * 7 + path.read_bytes(), "s.grib2"))
    group = open_virtual(url, format="grib", client_options={"allow_http": True})
    local = build_grib(path)
    assert group["t/instant/isobaricInhPa/t"].manifest.path_table == (url,)
    np.testing.assert_array_equal(
        _open(group)["t/instant/isobaricInhPa/t"][...],
        _open(local)["t/instant/isobaricInhPa/t"][...],
    )


def _write_ensemble_diagonal(path: Path, members: int) -> None:
    """An ensemble forecast whose member n starts on its own date, with 3 steps of its own:
    cfgrib's hypercube (number, time, step) has ``members**2 * 3 * members`` cells of
    which ``3 * members`` hold a message (the layout of NCEP's seasonal files)."""
    import eccodes

    with path.open("wb") as f:
        for n in range(members):
            for k in range(3):
                h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
                try:
                    eccodes.codes_set(h, "productDefinitionTemplateNumber", 1)
                    eccodes.codes_set(h, "typeOfEnsembleForecast", 3)
                    eccodes.codes_set(h, "numberOfForecastsInEnsemble", members)
                    eccodes.codes_set(h, "perturbationNumber", n)
                    eccodes.codes_set(h, "dataDate", 20210801 + (n * 5) % members)
                    eccodes.codes_set(h, "forecastTime", 3 * n + k)
                    size = eccodes.codes_get_size(h, "values")
                    eccodes.codes_set_values(h, 250 + np.arange(size) / 10 + n + k / 4)
                    eccodes.codes_write(h, f)
                finally:
                    eccodes.codes_release(h)


def test_sparse_hypercube_reads_like_cfgrib_without_per_cell_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xarray as xr

    from zarr_manifest import ManifestStore
    from zarr_manifest.builders.grib import build_grib

    path = tmp_path / "ensemble.grib2"
    _write_ensemble_diagonal(path, 12)
    group = build_grib(path)
    t = group["t/instant/surface/t"]
    assert isinstance(t, ManifestArray)
    grid_cells = int(np.prod(t.manifest.shape_chunk_grid))
    assert (grid_cells, int(t.manifest.present.sum())) == (12 * 12 * 36, 36)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""})["t"]
        expected = ref.values
    reads: list[str] = []
    real_get = ManifestStore.get

    async def get(store: ManifestStore, key: str, *args: Any, **kwargs: Any) -> Any:
        if key.startswith("t/instant/surface/t/c/"):
            reads.append(key)
        return await real_get(store, key, *args, **kwargs)

    real_get_sync = ManifestStore.get_sync

    def get_sync(store: ManifestStore, key: str, *args: Any, **kwargs: Any) -> Any:
        if key.startswith("t/instant/surface/t/c/"):
            reads.append(key)
        return real_get_sync(store, key, *args, **kwargs)

    monkeypatch.setattr(ManifestStore, "get", get)
    monkeypatch.setattr(ManifestStore, "get_sync", get_sync)
    # zarr's default pipeline: the absent cells are shards zarr fills in one go
    store = ManifestStore(group)
    array = zarr.open_group(store, mode="r")["t/instant/surface/t"]
    assert isinstance(array, zarr.Array)
    values = array[...]
    assert values.shape == ref.shape and values.dtype == ref.dtype
    np.testing.assert_array_equal(values, expected)
    assert array.shards is not None and len(reads) * 16 <= grid_cells, len(reads)
    # the xarray engine reads the messages alone
    reads.clear()
    ds = xr.open_dataset(ManifestStore(group), engine="manifest", group="t/instant/surface")
    assert ds["t"].dims == ref.dims
    np.testing.assert_array_equal(ds["t"].values, expected)
    assert 36 <= len(reads) <= 2 * 36, len(reads)  # a shard index and a message per message
