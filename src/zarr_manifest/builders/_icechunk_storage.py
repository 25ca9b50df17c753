"""``storage_options`` (obstore's vocabulary) -> the icechunk ``Storage`` of a remote repository.

Icechunk opens repositories through its own clients, not obstore, so a repository URL
(``s3://bucket/repo``, ``gs://``, ``az://``, ``http(s)://``) and the one dict every other
entry point takes are translated here into icechunk's storage constructors.  A key that
would be dropped in translation is refused (`UnsupportedError`) rather than ignored: a
credential that silently does not apply reads another account's data, or fails later with
an unrelated message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from zarr_manifest.errors import UnsupportedError
from zarr_manifest.format.paths import split_url
from zarr_manifest.format.storage_options import StorageOptions, options_for

__all__ = ["icechunk_storage"]

# obstore's S3 config keys (with and without the aws_ prefix) -> s3_storage's arguments
_S3_KEYS = {
    "access_key_id": "access_key_id",
    "secret_access_key": "secret_access_key",
    "session_token": "session_token",
    "token": "session_token",
    "region": "region",
    "default_region": "region",
    "endpoint": "endpoint_url",
    "endpoint_url": "endpoint_url",
}
_TRUE = {True, "true", "True", "1"}


def _flag(value: Any) -> bool:
    return value in _TRUE


def _unprefixed(options: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in options.items()}


def _s3(bucket: str, prefix: str, options: dict[str, Any]) -> Any:
    import icechunk

    opts = _unprefixed(options, "aws_")
    client = dict(opts.pop("client_options", None) or {})
    kwargs: dict[str, Any] = {}
    for key in list(opts):
        if key in _S3_KEYS:
            kwargs[_S3_KEYS[key]] = opts.pop(key)
    if _flag(opts.pop("skip_signature", False)):
        kwargs["anonymous"] = True
    hosted = opts.pop("virtual_hosted_style_request", None)
    if hosted is not None:
        kwargs["force_path_style"] = not _flag(hosted)
    elif "endpoint_url" in kwargs:
        kwargs["force_path_style"] = True  # emulators and most S3-compatible servers
    if _flag(opts.pop("request_payer", False)):
        kwargs["requester_pays"] = True
    if _flag(client.pop("allow_http", False)):
        kwargs["allow_http"] = True
    _refuse_rest("s3", opts, client)
    if not kwargs.keys() & {"access_key_id", "anonymous"}:
        kwargs["from_env"] = True  # obstore's default: credentials from the environment
    return icechunk.s3_storage(bucket=bucket, prefix=prefix or None, **kwargs)


def _gcs(bucket: str, prefix: str, options: dict[str, Any]) -> Any:
    import icechunk

    opts = _unprefixed(options, "google_")
    credentials = (
        ("service_account_key", "service_account_key"),
        ("service_account", "service_account_file"),
        ("service_account_path", "service_account_file"),
        ("application_credentials", "application_credentials"),
    )
    kwargs, config = _object_store_arguments("gs", opts, credentials, {"base_url": "google_"})
    return icechunk.gcs_storage(bucket=bucket, prefix=prefix or None, config=config, **kwargs)


def _azure(container: str, prefix: str, options: dict[str, Any]) -> Any:
    import icechunk

    opts = _unprefixed(_unprefixed(options, "azure_storage_"), "azure_")
    account = opts.pop("account_name", None)
    if account is None:
        raise UnsupportedError(
            "an Icechunk repository on Azure needs storage_options['account_name']"
        )
    credentials = (
        ("account_key", "access_key"),
        ("access_key", "access_key"),
        ("sas_token", "sas_token"),
        ("token", "bearer_token"),
        ("bearer_token", "bearer_token"),
    )
    kwargs, config = _object_store_arguments(
        "az", opts, credentials, {"endpoint": "azure_storage_"}
    )
    return icechunk.azure_storage(
        account=account, container=container, prefix=prefix, config=config or None, **kwargs
    )


def _object_store_arguments(
    scheme: str,
    opts: dict[str, Any],
    credentials: tuple[tuple[str, str], ...],
    long_names: dict[str, str],
) -> tuple[dict[str, Any], dict[str, str]]:
    """icechunk's arguments for a storage built on the object_store crate (GCS, Azure):
    ``credentials`` (our key, its argument) taken out of ``opts``, the other keys passed on
    as object_store config (those in ``long_names`` given that prefix, the spelling
    icechunk's config parser wants)."""
    client = dict(opts.pop("client_options", None) or {})
    kwargs = {theirs: opts.pop(ours) for ours, theirs in credentials if ours in opts}
    if _flag(opts.pop("skip_signature", False)):
        kwargs["anonymous"] = True
    config = {long_names.get(k, "") + k: str(v) for k, v in opts.items()}
    if _flag(client.pop("allow_http", False)):
        config["allow_http"] = "true"
    _refuse_rest(scheme, {}, client)
    if not kwargs:
        kwargs["from_env"] = True  # obstore's default: credentials from the environment
    return kwargs, config


def _refuse_rest(scheme: str, options: Mapping[str, Any], client: Mapping[str, Any]) -> None:
    left = sorted(options) + [f"client_options.{k}" for k in sorted(client)]
    if left:
        raise UnsupportedError(
            f"storage_options {left} have no equivalent in icechunk's {scheme} storage, "
            "which opens Icechunk repositories; open the repository with icechunk and pass "
            "it (with repository_url=...)"
        )


_STORAGES: dict[str, Callable[[str, str, dict[str, Any]], Any]] = {
    "s3": _s3,
    "s3a": _s3,
    "gs": _gcs,
    "gcs": _gcs,
    "az": _azure,
    "azure": _azure,
}


def icechunk_storage(url: str, storage_options: StorageOptions | None = None) -> Any:
    """The icechunk ``Storage`` of the repository at ``url`` with the options that apply to
    it (`options_for`); obstore's config keys are translated to icechunk's arguments.

    Raises
    ------
    UnsupportedError
        A scheme icechunk cannot open, or an option with no icechunk equivalent.
    """
    import icechunk

    scheme, authority, path = split_url(url)
    options = options_for(url, storage_options)
    options.pop("retry_config", None)  # icechunk retries on its own terms
    if options.pop("credential_provider", None) is not None:
        raise UnsupportedError(
            "an obstore credential_provider cannot open an Icechunk repository; open it "
            "with icechunk and pass it (with repository_url=...)"
        )
    if scheme in ("http", "https"):
        client = dict(options.pop("client_options", None) or {})
        client.pop("allow_http", None)
        _refuse_rest(scheme, options, client)
        return icechunk.http_storage(url.rstrip("/"))
    make = _STORAGES.get(scheme)
    if make is None:
        raise UnsupportedError(f"{url}: icechunk cannot open a repository at a {scheme}:// URL")
    return make(authority, path.strip("/"), options)
