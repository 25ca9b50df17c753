"""``storage_options``: the one dict of credentials and client settings every entry point
taking a URL accepts, and the one function turning a URL and that dict into an obstore store.

The vocabulary is obstore's: its store config keys (``aws_access_key_id``, ``region``,
``endpoint``, ``skip_signature``, ``azure_storage_account_name``, ``service_account_key``
...), plus ``client_options`` (obstore ``ClientConfig``), ``retry_config`` (obstore
``RetryConfig``) and ``credential_provider``, all in the same dict.  A key that is a URL
prefix (``"s3://other-bucket/"``) holds the options of the URLs under it instead; the
longest matching prefix wins, and its dict replaces the top-level options for those URLs.
Without options, obstore's own defaults apply (credentials from the environment).

The top-level options apply to every URL, as far as its kind of store takes them: local
files take none, and http(s) stores take only ``client_options`` and ``retry_config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import obstore.store

from zarr_manifest.format.paths import is_absolute_url, is_url_under, split_url

__all__ = [
    "StorageOptions",
    "anonymous",
    "has_prefix_options",
    "merge_storage_options",
    "object_store",
    "obstore_arguments",
    "options_for",
    "options_of_store",
    "same_bucket",
]

#: a dict in the vocabulary above (top-level options and URL-prefix overrides)
StorageOptions = Mapping[str, Any]

#: keys of obstore's ``from_url`` that are not store config keys
_CLIENT_KEYS = ("client_options", "retry_config")
_CLOUD_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl"})
_HTTP_SCHEMES = frozenset({"http", "https"})


def _is_prefix_key(key: str) -> bool:
    return is_absolute_url(key) and "://" in key


def merge_storage_options(
    storage_options: StorageOptions | None, legacy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``storage_options`` with the obstore keyword arguments an entry point took before it
    had that keyword (``config={...}`` is flattened); ``storage_options`` wins on conflict."""
    merged: dict[str, Any] = {}
    for source in (legacy or {}), (storage_options or {}):
        for key, value in source.items():
            if key == "config" and isinstance(value, Mapping):
                merged.update(value)
            else:
                merged[key] = value
    return merged


def options_for(url: str, storage_options: StorageOptions | None) -> dict[str, Any]:
    """The options that apply to ``url``: those of the longest URL-prefix key covering it,
    else the top-level ones (a prefix's dict replaces them, it does not add to them)."""
    if not storage_options:
        return {}
    best: tuple[int, Mapping[str, Any]] | None = None
    for key, value in storage_options.items():
        if not _is_prefix_key(key):
            continue
        if not isinstance(value, Mapping):
            raise TypeError(
                f"storage_options[{key!r}] must be a dict of options for the URLs under "
                f"that prefix, got {type(value).__name__}"
            )
        if is_absolute_url(url) and is_url_under(url, key) and (best is None or len(key) > best[0]):
            best = (len(key), value)
    chosen = best[1] if best is not None else storage_options
    return merge_storage_options({k: v for k, v in chosen.items() if not _is_prefix_key(k)}, None)


def has_prefix_options(url: str, storage_options: StorageOptions | None) -> bool:
    """Whether a URL-prefix key of ``storage_options`` covers ``url``."""
    return any(_is_prefix_key(key) and is_url_under(url, key) for key in (storage_options or {}))


def obstore_arguments(url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``obstore.store.from_url(url, ...)`` from flat ``options``
    (already chosen for ``url`` by `options_for`): split into ``config`` and the client
    keys, keeping what the URL's kind of store takes; ``allow_http`` for ``http://``."""
    scheme = split_url(url)[0] if is_absolute_url(url) else "file"
    kwargs: dict[str, Any] = {}
    if scheme in _CLOUD_SCHEMES or scheme in _HTTP_SCHEMES:
        for key in _CLIENT_KEYS:
            if options.get(key) is not None:
                kwargs[key] = dict(options[key])
    if scheme in _CLOUD_SCHEMES:
        config = {
            k: v for k, v in options.items() if k not in _CLIENT_KEYS and k != "credential_provider"
        }
        if config:
            kwargs["config"] = config
        if options.get("credential_provider") is not None:
            kwargs["credential_provider"] = options["credential_provider"]
    if scheme == "http":
        kwargs["client_options"] = {"allow_http": True, **kwargs.get("client_options", {})}
    return kwargs


def object_store(url: str, storage_options: StorageOptions | None = None) -> Any:
    """The obstore store rooted at ``url`` (a cloud or http(s) URL), configured with the
    options of ``storage_options`` that apply to it (`options_for`).

    Raises
    ------
    obstore.exceptions.BaseError
        A key the store does not know (``UnknownConfigurationKeyError``), or a bad value.
    """
    return obstore.store.from_url(url, **obstore_arguments(url, options_for(url, storage_options)))


def options_of_store(store: Any) -> dict[str, Any]:
    """The options an obstore store was made with (config, client and retry settings,
    credential provider), so that prefixes on its bucket can be read with them too."""
    options: dict[str, Any] = dict(getattr(store, "config", None) or {})
    for key in (*_CLIENT_KEYS, "credential_provider"):
        value = getattr(store, key, None)
        if value is not None:
            options[key] = value
    return options


def same_bucket(url: str, other: str) -> bool:
    """Whether two URLs name the same bucket, container or host (scheme and authority)."""
    if not (is_absolute_url(url) and is_absolute_url(other)):
        return False
    a, b = split_url(url), split_url(other)
    return (a[0], a[1].lower()) == (b[0], b[1].lower())


def anonymous() -> dict[str, Any]:
    """The options for unsigned (anonymous) requests, on each of the three clouds."""
    return {"skip_signature": True}
