"""``storage_options``: one dict, passed once per call, from an S3 glob to values (issue 15).

Against the project's moto server with no AWS credentials in the environment, so anything
that lists, reads or writes without the options fails (obstore then asks the cloud metadata
endpoint for credentials, and moto refuses unsigned requests).
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest
import xarray as xr
import zarr

import zarr_manifest as zm
from zarr_manifest.format.storage_options import (
    merge_storage_options,
    obstore_arguments,
    options_for,
)
from zarr_manifest.store import ManifestStore, SourceRegistry
from zarr_manifest.testing.s3_server import S3Server

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
)


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials from the environment, and no metadata endpoint to wait for."""
    for name in _AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")


def _write_day(path: Path, day: int) -> None:
    """A netCDF-4 file of one day, as xarray writes it with its defaults."""
    xr.Dataset(
        {"air": (("time", "x"), np.arange(4, dtype="f4")[None, :] + 10 * day)},
        coords={"time": [float(day)], "x": np.arange(4.0)},
    ).to_netcdf(path)


@pytest.fixture
def s3_days(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> tuple[str, np.ndarray]:
    """Three daily files under ``s3://bucket/data/``; their ``air`` values, concatenated."""
    folder = tmp_path / "days"
    folder.mkdir()
    for day in range(3):
        _write_day(folder / f"d{day}.nc", day)
    s3_server.upload_dir(folder, s3_bucket, "data")
    expected = np.arange(4, dtype="f4")[None, :] + 10 * np.arange(3)[:, None]
    return s3_bucket, expected


def test_glob_to_values_with_one_dict(
    s3_server: S3Server, s3_days: tuple[str, np.ndarray], no_aws_env: None
) -> None:
    """build (glob listing included), to_store, from_store, ManifestStore, xarray: the
    same dict, once per call; allowed prefixes on the store's bucket inherit it."""
    bucket, expected = s3_days
    options = s3_server.obstore_config()
    group = zm.build(f"s3://{bucket}/data/*.nc", concat_dim="time", storage_options=options)
    store_url = f"s3://{bucket}/stores/days.manifest"
    group.to_store(store_url, storage_options=options)
    assert zm.ManifestGroup.from_store(store_url, storage_options=options) == group
    store = ManifestStore(
        store_url, allowed_prefixes=[f"s3://{bucket}/data/"], storage_options=options
    )
    values = zarr.open_group(store, mode="r")["air"][...]
    np.testing.assert_array_equal(values, expected)
    ds = xr.open_dataset(
        store_url,
        engine="manifest",
        allowed_prefixes=[f"s3://{bucket}/data/"],
        storage_options=options,
    )
    np.testing.assert_array_equal(ds["air"].values, expected)


def test_open_virtual_and_the_xarray_functions_take_it(
    s3_server: S3Server, s3_days: tuple[str, np.ndarray], no_aws_env: None
) -> None:
    bucket, expected = s3_days
    options = s3_server.obstore_config()
    one = zm.open_virtual(f"s3://{bucket}/data/d1.nc", storage_options=options)
    np.testing.assert_array_equal(
        zarr.open_group(ManifestStore(one, storage_options=options), mode="r")["air"][...],
        expected[1:2],
    )
    ds = zm.open_virtual_mfdataset(
        f"s3://{bucket}/data/*.nc",
        combine="nested",
        concat_dim="time",
        storage_options=options,
    )
    assert ds.sizes["time"] == 3
    np.testing.assert_array_equal(ds["time"].values, [0.0, 1.0, 2.0])


def test_append_takes_it(
    s3_server: S3Server, s3_days: tuple[str, np.ndarray], no_aws_env: None, tmp_path: Path
) -> None:
    bucket, expected = s3_days
    options = s3_server.obstore_config()
    store_url = f"s3://{bucket}/stores/append.manifest"
    zm.build(
        [f"s3://{bucket}/data/d0.nc", f"s3://{bucket}/data/d1.nc"],
        concat_dim="time",
        storage_options=options,
    ).to_store(store_url, storage_options=options)
    zm.append(store_url, f"s3://{bucket}/data/d2.nc", dim="time", storage_options=options)
    store = ManifestStore(
        store_url, allowed_prefixes=[f"s3://{bucket}/data/"], storage_options=options
    )
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)


def test_without_options_the_environment_credentials_are_used(
    s3_server: S3Server,
    s3_days: tuple[str, np.ndarray],
    no_aws_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default (no storage_options): obstore's, credentials and endpoint from the
    environment, as before."""
    bucket, expected = s3_days
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("AWS_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false")
    group = zm.build(f"s3://{bucket}/data/*.nc", concat_dim="time")
    store_url = f"s3://{bucket}/stores/env.manifest"
    group.to_store(store_url)
    store = ManifestStore(store_url, allowed_prefixes=[f"s3://{bucket}/data/"])
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)


def test_without_options_or_environment_the_glob_fails(
    s3_days: tuple[str, np.ndarray], no_aws_env: None
) -> None:
    """The control for the tests above: the options are what makes them work."""
    bucket, _ = s3_days
    with pytest.raises((OSError, obstore.exceptions.BaseError, zm.BuildError)):
        zm.build(f"s3://{bucket}/data/*.nc", concat_dim="time")


def test_a_prefix_key_gives_other_options_to_the_sources_under_it(
    s3_server: S3Server, s3_days: tuple[str, np.ndarray], no_aws_env: None
) -> None:
    """The store's bucket with wrong credentials at the top level fails; the same dict
    with the right ones under the data prefix reads (the longest prefix wins)."""
    bucket, expected = s3_days
    good = s3_server.obstore_config()
    group = zm.build(f"s3://{bucket}/data/*.nc", concat_dim="time", storage_options=good)
    bad = {**good, "endpoint": "http://127.0.0.1:9", "retry_config": {"max_retries": 0}}
    in_memory = ManifestStore(group, storage_options=bad)
    with pytest.raises(Exception):  # noqa: B017 -- the connection error is obstore's
        zarr.open_group(in_memory, mode="r")["air"][...]
    mixed = {**bad, f"s3://{bucket}/data/": good}
    store = ManifestStore(group, storage_options=mixed)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)


def test_source_registry_from_urls_splits_the_dict_itself(
    s3_server: S3Server, s3_days: tuple[str, np.ndarray], no_aws_env: None
) -> None:
    """client_options and config keys in one dict (obstore used to refuse client_options
    as a config key)."""
    bucket, expected = s3_days
    options = s3_server.obstore_config()
    group = zm.build(f"s3://{bucket}/data/*.nc", concat_dim="time", storage_options=options)
    registry = SourceRegistry.from_urls([f"s3://{bucket}/data/"], storage_options=options)
    store = ManifestStore(group, registry=registry)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)
    legacy = SourceRegistry.from_urls(
        [f"s3://{bucket}/data/"],
        config={k: v for k, v in options.items() if k != "client_options"},
        client_options=options["client_options"],
    )
    store = ManifestStore(group, registry=legacy)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)


def test_the_old_keyword_form_still_works(
    s3_server: S3Server, s3_days: tuple[str, np.ndarray], no_aws_env: None
) -> None:
    bucket, expected = s3_days
    options = s3_server.obstore_config()
    group = zm.build(f"s3://{bucket}/data/*.nc", concat_dim="time", **options)
    store_url = f"s3://{bucket}/stores/old.manifest"
    group.to_store(store_url, storage_options=options)
    store = ManifestStore(store_url, allowed_prefixes=[f"s3://{bucket}/data/"], **options)
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)


# ---- the dict's rules --------------------------------------------------------------------


def test_options_for_picks_the_longest_prefix() -> None:
    options = {
        "region": "eu-west-1",
        "s3://a/": {"region": "us-east-1"},
        "s3://a/deep/": {"region": "ap-south-1", "skip_signature": True},
    }
    assert options_for("s3://b/x.nc", options) == {"region": "eu-west-1"}
    assert options_for("s3://a/x.nc", options) == {"region": "us-east-1"}
    assert options_for("s3://a/deep/x.nc", options) == {
        "region": "ap-south-1",
        "skip_signature": True,
    }
    # segment-wise: "s3://a/deeper/" is not under "s3://a/deep/"
    assert options_for("s3://a/deeper/x.nc", options) == {"region": "us-east-1"}
    assert options_for("s3://b/x.nc", None) == {}


def test_obstore_arguments_keep_what_each_store_takes() -> None:
    options = {
        "region": "eu-west-1",
        "client_options": {"timeout": "5s"},
        "retry_config": {"max_retries": 1},
    }
    assert obstore_arguments("s3://b/", options) == {
        "config": {"region": "eu-west-1"},
        "client_options": {"timeout": "5s"},
        "retry_config": {"max_retries": 1},
    }
    assert obstore_arguments("https://host/x/", options) == {
        "client_options": {"timeout": "5s"},
        "retry_config": {"max_retries": 1},
    }
    assert obstore_arguments("http://host/x/", {}) == {"client_options": {"allow_http": True}}
    assert obstore_arguments("file:///data/", options) == {}


def test_a_prefix_key_must_hold_a_dict() -> None:
    with pytest.raises(TypeError, match="s3://a/"):
        options_for("s3://a/x", {"s3://a/": "secret"})


def test_legacy_config_is_flattened() -> None:
    merged = merge_storage_options({"region": "b"}, {"config": {"region": "a", "bucket": "x"}})
    assert merged == {"region": "b", "bucket": "x"}


# ---- every entry point taking a URL takes storage_options --------------------------------

#: parameter names that mean "a URL, a path or a store"
_URL_PARAMETERS = frozenset(
    {"url", "urls", "urls_or_glob", "paths", "store", "src", "dest", "root"}
)


def _entry_points() -> list[tuple[str, Any]]:
    found = []
    for name in zm.__all__:
        obj = getattr(zm, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            continue
        if inspect.isclass(obj):
            found.append((f"{name}.__init__", obj.__init__))
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = member.__func__ if isinstance(member, classmethod) else member
                if callable(func):
                    found.append((f"{name}.{attr}", func))
        elif callable(obj):
            found.append((name, obj))
    from zarr_manifest.xarray.accessor import ManifestAccessor
    from zarr_manifest.xarray.backend import ManifestBackendEntrypoint

    found.append(("ManifestAccessor.to_store", ManifestAccessor.to_store))
    found.append(("engine='manifest'", ManifestBackendEntrypoint.open_dataset))
    found.append(("engine='manifest' (tree)", ManifestBackendEntrypoint.open_groups_as_dict))
    return found


def _takes_a_url(func: Any) -> bool:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return False
    hints: dict[str, Any] = {}
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    for name, parameter in signature.parameters.items():
        if name in ("self", "cls"):
            continue
        hint = str(hints.get(name, parameter.annotation))
        if name in _URL_PARAMETERS or "PathLike" in hint or name == "filename_or_obj":
            return True
    return False


#: callables with a path-like parameter that open nothing through obstore, and why
_NOT_OPENING = {
    "ChunkManifest.from_arrays": "its paths are references to record; nothing is opened",
    "ChunkManifest.from_zarr_json": "a local file only",
    "ChunkManifest.to_zarr_json": "a local file only",
    "ManifestGroup.to_kerchunk": "written through fsspec, which has its own options",
    "ManifestGroup.to_icechunk": "takes an Icechunk session store, configured by icechunk",
    "SourceRegistry.resolve": "looks a URL up in the registry; its stores are made already",
}


def test_every_entry_point_taking_a_url_takes_storage_options() -> None:
    checked = [
        (name, f) for name, f in _entry_points() if _takes_a_url(f) and name not in _NOT_OPENING
    ]
    names = {name for name, _ in checked}
    # the list this test derives must hold the documented entry points
    assert {
        "open_virtual",
        "build",
        "append",
        "ManifestGroup.to_store",
        "ManifestGroup.from_store",
        "ManifestStore.__init__",
        "SourceRegistry.from_urls",
        "open_virtual_dataset",
        "open_virtual_mfdataset",
        "ManifestAccessor.to_store",
        "engine='manifest'",
        "engine='manifest' (tree)",
        "clean",
    } <= names, sorted(names)
    missing = []
    for name, func in checked:
        if "storage_options" not in inspect.signature(func).parameters:
            missing.append(name)
    assert not missing, f"entry points taking a URL without storage_options: {missing}"


def test_an_entry_point_without_it_is_caught() -> None:
    """The walk above can fail: a function taking a path and no storage_options is found."""

    def write_somewhere(dest: str, *, overwrite: bool = False) -> None:
        del dest, overwrite

    assert _takes_a_url(write_somewhere)
    assert "storage_options" not in inspect.signature(write_somewhere).parameters


# ---- the command line ----------------------------------------------------------------------


def _cli_options(s3: S3Server) -> list[str]:
    return [
        f"--storage-option=endpoint={s3.endpoint}",
        f"--storage-option=access_key_id={s3.access_key_id}",
        f"--storage-option=secret_access_key={s3.secret_access_key}",
        f"--storage-option=region={s3.region}",
        "--storage-option=virtual_hosted_style_request=false",
        "--storage-option=client_options.allow_http=true",
    ]


def test_the_command_line_from_glob_to_values(
    s3_server: S3Server,
    s3_days: tuple[str, np.ndarray],
    no_aws_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from zarr_manifest.cli import main

    bucket, expected = s3_days
    store_url = f"s3://{bucket}/stores/cli.manifest"
    flags = _cli_options(s3_server)
    pattern = f"s3://{bucket}/data/*.nc"
    argv = ["build", pattern, "-o", store_url, "--concat-dim", "time", "--no-progress"]
    assert main([*argv, *flags]) == 0
    assert main(["info", store_url, *flags]) == 0
    assert f"s3://{bucket}/data/d2.nc" in capsys.readouterr().out
    assert main(["validate", store_url, "--allow", f"s3://{bucket}/data/", *flags]) == 0
    assert (
        main(["validate", store_url, "--check-sources", "--allow", f"s3://{bucket}/data/", *flags])
        == 0
    )
    store = ManifestStore(
        store_url,
        allowed_prefixes=[f"s3://{bucket}/data/"],
        storage_options=s3_server.obstore_config(),
    )
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)
    # without the options the same command cannot list the bucket
    assert main(["info", store_url]) != 0


def test_storage_option_parsing() -> None:
    from zarr_manifest.cli import _parser, storage_options_from_args

    args = _parser().parse_args(
        [
            "info",
            "x",
            "--anon",
            "--storage-option=region=eu-west-1",
            "--storage-option=secret_access_key=0123",
            "--storage-option=client_options.timeout=30s",
            '--storage-option=s3://other/={"region": "us-east-1"}',
        ]
    )
    assert storage_options_from_args(args) == {
        "skip_signature": True,
        "region": "eu-west-1",
        "secret_access_key": "0123",
        "client_options": {"timeout": "30s"},
        "s3://other/": {"region": "us-east-1"},
    }
    assert storage_options_from_args(_parser().parse_args(["info", "x"])) == {}


def test_a_malformed_storage_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from zarr_manifest.cli import EXIT_USAGE, main

    assert main(["info", "x", "--storage-option", "region"]) == EXIT_USAGE
    assert "KEY=VALUE" in capsys.readouterr().err


def test_allowed_prefixes_on_the_bucket_of_a_store_object_inherit_its_options(
    s3_server: S3Server, s3_days: tuple[str, np.ndarray], no_aws_env: None
) -> None:
    """A root given as an obstore store: prefixes on its bucket are read with the options
    the store was made with (and another bucket's are not)."""
    bucket, expected = s3_days
    options = s3_server.obstore_config()
    store_url = f"s3://{bucket}/stores/object.manifest"
    zm.build(f"s3://{bucket}/data/*.nc", concat_dim="time", storage_options=options).to_store(
        store_url, storage_options=options
    )
    root = s3_server.s3_store(bucket, "stores/object.manifest")
    store = ManifestStore(root, allowed_prefixes=[f"s3://{bucket}/data/"])
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["air"][...], expected)
