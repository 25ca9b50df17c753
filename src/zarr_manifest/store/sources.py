"""Where chunk bytes may come from: URL prefixes mapped to obstore stores, default-deny.

A `SourceRegistry` holds a list of allowed URL prefixes, each with the obstore store that
reads under it.  `SourceRegistry.resolve` turns the canonical URL of a chunk reference
into a `Source` -- the store, the path inside it, and for local files the real filesystem
path the fetch module reads with ``os.pread``.  A URL under no registered prefix is
refused with `SourceNotAllowedError`, so a manifest cannot make a reader fetch arbitrary
files or hosts.

Prefixes match segment-wise on canonical URLs (see `zarr_manifest.format.paths`):
``"s3://b/data"`` allows ``"s3://b/data"`` and ``"s3://b/data/x.nc"`` but not
``"s3://b/database/x.nc"``; the longest matching prefix wins.  For ``file://`` prefixes
the match is made on real paths (``os.path.realpath`` of both the prefix and the
reference), so a symlink inside an allowed directory that points outside it is refused,
and one pointing into another allowed directory is read from there.  These rules live in
`zarr_manifest.format.allowed_prefixes`, which the kerchunk builder uses too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from obstore.store import HTTPStore, LocalStore, from_url

from zarr_manifest.errors import SourceNotAllowedError
from zarr_manifest.format.allowed_prefixes import (
    AllowedPrefix,
    AllowedPrefixes,
    canonical_prefix,
    is_under_real_path,
)
from zarr_manifest.format.paths import decode_path_segments, url_to_local_path
from zarr_manifest.format.storage_options import (
    StorageOptions,
    merge_storage_options,
    obstore_arguments,
    options_for,
)
from zarr_manifest.store._http import HttpClient, HttpObject

__all__ = ["Source", "SourceRegistry"]

_HTTP_SCHEMES = frozenset({"http", "https"})

# resolve() results are cached per URL: a manifest references few files with many chunks,
# and for file:// URLs each resolve costs a realpath (one lstat per path component).
_RESOLVE_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """One object that chunk bytes are read from, as `SourceRegistry.resolve` returns it.

    Attributes
    ----------
    url
        The canonical URL of the object (for messages and as identity).
    store
        The obstore store that reads it.
    path
        The object's path inside ``store`` (percent-decoded, as obstore expects).
    local_path
        For ``file://`` sources: the object's real filesystem path (symlinks resolved and
        checked to lie under the allowed prefix), which the fetch module reads with
        ``os.pread`` instead of going through obstore.  ``None`` for every other scheme.
    http
        For http(s) sources served by an ``HTTPStore``: how the fetch module reads them
        without following redirects blindly (see `zarr_manifest.store._http`); else None.
    hard_links
        For local sources: whether a file with more than one hard link may be read (see
        `SourceRegistry`'s ``hard_links``).
    expected_etag
        The ETag this source was verified to have (set by the store's verifier through
        `pin_etag`); remote reads then carry ``If-Match`` with it.

    Two sources are equal when they name the same object through the same store object,
    so requests for them can be merged into one fetch.
    """

    url: str
    store: Any
    path: str
    local_path: str | None = None
    http: HttpObject | None = None
    expected_etag: str | None = None
    hard_links: bool = True

    def pin_etag(self, etag: str) -> None:
        """Send ``If-Match: etag`` with every later read of this source.

        The one mutable part of a source: a store's verifier pins the ETag it checked, so
        bytes served after the object was replaced fail instead of mixing two versions.
        Sources are per store (each store resolves through its own registry copy).
        """
        object.__setattr__(self, "expected_etag", etag)

    def _identity(self) -> tuple[str, str, str | None, int]:
        return (self.url, self.path, self.local_path, id(self.store))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Source):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash((self.url, id(self.store)))

    def __repr__(self) -> str:
        local = f", local_path={self.local_path!r}" if self.local_path is not None else ""
        return f"Source(url={self.url!r}, store={self.store!r}, path={self.path!r}{local})"


@dataclass(frozen=True, slots=True)
class _Entry:
    """How objects under an allowed prefix are read: the store, and for http(s) its client."""

    store: Any
    # http(s): client_options / retry_config for the per-query stores of presigned URLs.
    http_options: Mapping[str, Any] | None = None
    # http(s) served by an HTTPStore: the client reading it, and the store's base URL.
    http_client: HttpClient | None = None
    http_base: str | None = None


class SourceRegistry:
    """URL prefixes that chunk bytes may be read from, each with its obstore store.

    Parameters
    ----------
    stores
        Initial ``{prefix: store}`` mapping (a store of ``None`` is built from the prefix
        URL, as `register` does).
    hard_links
        Whether local files with more than one hard link (``st_nlink > 1``) may be read.
        ``True`` (the default): yes -- a hard link is the file itself, and whoever could
        create it inside an allowed directory could as well have copied the bytes there.
        ``False`` (strict): no, because another name of the file may lie outside the
        allowed prefixes (use it when untrusted users can create links inside them, on a
        filesystem they share with files they may not read).  A list of local prefixes:
        strict, except for files under those (e.g. a deduplicated archive).

    Notes
    -----
    Default-deny: an empty registry allows nothing.  The registry pickles when its stores
    do (``LocalStore``, ``HTTPStore``, ``S3Store`` ... do; ``MemoryStore`` does not), so
    it can travel to dask workers with the store that holds it.  It is safe to use from
    several threads; `register` after `resolve` is allowed (the resolve cache is cleared).
    """

    def __init__(
        self,
        stores: Mapping[str, Any] | None = None,
        *,
        hard_links: bool | Iterable[str] = True,
    ) -> None:
        if isinstance(hard_links, bool):
            self._hard_links: bool | tuple[str, ...] = hard_links
        else:
            self._hard_links = tuple(
                os.path.realpath(url_to_local_path(canonical_prefix(p))) for p in hard_links
            )
        self._allowed: AllowedPrefixes[_Entry] = AllowedPrefixes()
        self._lock = threading.Lock()
        self._cache: dict[str, Source] = {}
        if stores:
            for prefix, store in stores.items():
                self.register(prefix, store)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_urls(
        cls,
        urls: Iterable[str],
        *,
        storage_options: StorageOptions | None = None,
        config: Mapping[str, Any] | None = None,
        client_options: Mapping[str, Any] | None = None,
        retry_config: Mapping[str, Any] | None = None,
        credential_provider: Any = None,
    ) -> SourceRegistry:
        """Allow each of ``urls``, with stores built by ``obstore.store.from_url``.

        Parameters
        ----------
        urls
            Prefixes to allow (``"s3://bucket/data/"``, ``"https://host/files"``,
            ``"file:///data"``, or a local directory path).
        storage_options
            Credentials and client settings in obstore's vocabulary: store config keys
            (``S3Config`` / ``GCSConfig`` / ``AzureConfig``: credentials, ``region``,
            ``endpoint``, ``skip_signature=True`` for anonymous access ...),
            ``client_options`` and ``retry_config`` in one dict, with URL-prefix keys
            (``{"s3://other-bucket/": {...}}``) for prefixes that need others (see
            `zarr_manifest.format.storage_options`).  Each store takes what its kind
            takes: config keys go to cloud stores only, none to local files.  Default:
            obstore's (credentials from the environment).
        config, client_options, retry_config, credential_provider
            The same options given apart (the form taken before ``storage_options``);
            merged into it.
        """
        legacy = {
            "config": config,
            "client_options": client_options,
            "retry_config": retry_config,
            "credential_provider": credential_provider,
        }
        options = merge_storage_options(
            storage_options, {k: v for k, v in legacy.items() if v is not None}
        )
        registry = cls()
        for url in urls:
            canon = canonical_prefix(url)
            registry.register(canon, storage_options=options_for(canon, options))
        return registry

    def register(
        self,
        prefix: str,
        store: Any = None,
        *,
        storage_options: StorageOptions | None = None,
        **obstore_kwargs: Any,
    ) -> None:
        """Allow reading under ``prefix``.

        Parameters
        ----------
        prefix
            The URL prefix (or a local directory path, made a ``file://`` URL).  Matching
            is segment-wise; a prefix that names a single object allows that object.
        store
            The obstore store to read with, rooted at ``prefix`` taken as a directory
            (``LocalStore("/data")`` for ``"file:///data/"``).  ``None`` builds one with
            ``obstore.store.from_url`` (``LocalStore`` at the real path for ``file://``),
            rooted at the prefix's directory.
        storage_options
            When ``store`` is ``None``: the options of the store built, in obstore's
            vocabulary (store config keys such as ``region`` / ``skip_signature``,
            ``client_options``, ``retry_config``, ``credential_provider``; URL-prefix keys
            choose by ``prefix``).  For ``http://``, ``allow_http`` is set.
        **obstore_kwargs
            Options too (``config={...}`` or the keys themselves); merged into
            ``storage_options``.

        Notes
        -----
        Registering a prefix again replaces its store.
        """
        options = merge_storage_options(storage_options, obstore_kwargs)
        if store is not None and options:
            raise TypeError("pass either a store or storage options, not both")
        # A prefix naming one object is served by a store rooted at its directory, unless
        # a store is given for it.
        rule = AllowedPrefix.parse(prefix, as_directory=store is not None)
        scheme = rule.scheme
        kwargs = obstore_arguments(rule.root_url, options_for(rule.root_url, options))
        http_options: dict[str, Any] | None = None
        if scheme in _HTTP_SCHEMES:
            if store is None:
                kwargs.setdefault("client_options", {})
                http_options = {
                    k: kwargs[k] for k in ("client_options", "retry_config") if k in kwargs
                }
            elif isinstance(store, HTTPStore):
                http_options = {
                    "client_options": store.client_options,
                    "retry_config": store.retry_config,
                }
        if store is None:
            store = self._build_store(scheme, rule.root_url, rule.real_root, kwargs)
        http_client = http_base = None
        if scheme in _HTTP_SCHEMES and isinstance(store, HTTPStore):
            # obstore follows redirects on its own: http(s) bytes are read by a client
            # that does not, and re-checks every redirect against this registry.
            opts = http_options or {}
            http_client = HttpClient(opts.get("client_options"), opts.get("retry_config"))
            http_base = store.url.rstrip("/")
        entry = _Entry(
            store=store, http_options=http_options, http_client=http_client, http_base=http_base
        )
        with self._lock:
            self._allowed = self._allowed.with_prefix(rule, entry)
            self._cache = {}

    @staticmethod
    def _build_store(
        scheme: str, root_url: str, real_root: str | None, kwargs: dict[str, Any]
    ) -> Any:
        if scheme == "file":
            assert real_root is not None
            return LocalStore(real_root)  # local files take no storage options
        if scheme in _HTTP_SCHEMES:
            # HTTPStore joins paths with "/" itself: a trailing slash would double it.
            base = root_url if root_url.count("/") <= 3 else root_url.rstrip("/")
            store = from_url(base, **kwargs)
            if not isinstance(store, HTTPStore):
                # from_url maps some https hosts (amazonaws.com, blob.core.windows.net) to
                # cloud stores, whose paths are keys: keep the trailing-slash form there.
                store = from_url(root_url, **kwargs)
            return store
        return from_url(root_url, **kwargs)

    def copy(self) -> SourceRegistry:
        """A new registry allowing the same prefixes with the same store objects.

        Registering on the copy leaves this one unchanged.
        """
        new = SourceRegistry()
        new._hard_links = self._hard_links
        new._allowed = self._allowed
        return new

    # -- lookup -----------------------------------------------------------------------

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The allowed prefixes (canonical URLs), in registration order."""
        return self._allowed.prefixes

    def resolve(self, url: str, *, key: str | None = None) -> Source:
        """The `Source` to read ``url`` from, if it lies under an allowed prefix.

        Parameters
        ----------
        url
            An absolute URL (canonicalized here; manifests' paths already are).
        key
            The store key being read, only to name it in errors.

        Raises
        ------
        SourceNotAllowedError
            If ``url`` is under no registered prefix (for ``file://``: if its real path,
            symlinks resolved, is under no registered real path), or is not a valid
            absolute URL.  The message names ``key`` and ``url``.
        """
        cached = self._cache.get(url)
        if cached is not None:
            return cached
        source = self._resolve_uncached(url, key)
        cache = self._cache
        if len(cache) >= _RESOLVE_CACHE_SIZE:
            cache.clear()
        cache[url] = source
        return source

    def _resolve_uncached(self, url: str, key: str | None) -> Source:
        allowed = self._allowed.resolve(url, key=key)
        entry = allowed.value
        if allowed.real_path is not None:
            real = allowed.real_path
            links = self._hard_links
            if not isinstance(links, bool):
                links = any(is_under_real_path(real, p) for p in links)
            return Source(
                url=allowed.url,
                store=entry.store,
                path=allowed.relative,
                local_path=real,
                hard_links=links,
            )
        rule, query = allowed.prefix, allowed.query
        path = decode_path_segments(allowed.relative)
        store = entry.store
        if query:
            # A presigned URL: the query must go with every request, so it gets a store of
            # its own, rooted where the registered store is.
            root = f"{rule.scheme}://{rule.authority}" + "".join(
                "/" + s for s in rule.segments[: rule.root_len]
            )
            options = entry.http_options
            if options is None:
                options = {"client_options": {"allow_http": True}} if rule.scheme == "http" else {}
            # HTTPStore, not from_url: that would map e.g. amazonaws.com hosts to an
            # S3Store, which drops the query.
            store = HTTPStore.from_url(f"{root}?{query}", **options)
        http = None
        if entry.http_client is not None:
            target = f"{entry.http_base}/" + allowed.relative + (f"?{query}" if query else "")
            http = HttpObject(target, entry.http_client, self.resolve)
        return Source(url=allowed.url, store=store, path=path, local_path=None, http=http)

    # -- protocol ---------------------------------------------------------------------

    def __contains__(self, url: object) -> bool:
        if not isinstance(url, str):
            return False
        try:
            self.resolve(url)
        except SourceNotAllowedError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._allowed)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SourceRegistry):
            return NotImplemented
        mine = sorted(self._allowed, key=lambda e: e[0].prefix)
        theirs = sorted(other._allowed, key=lambda e: e[0].prefix)
        return (
            self._hard_links == other._hard_links
            and len(mine) == len(theirs)
            and all(
                a.prefix == b.prefix
                and a.root_len == b.root_len
                and (x.store is y.store or _stores_equal(x.store, y.store))
                for (a, x), (b, y) in zip(mine, theirs, strict=True)
            )
        )

    __hash__ = None  # type: ignore[assignment]  # mutable (register)

    def __repr__(self) -> str:
        inner = ", ".join(f"{rule.prefix!r}: {e.store!r}" for rule, e in self._allowed)
        return f"SourceRegistry({{{inner}}})"

    def __getstate__(self) -> dict[str, Any]:
        return {"entries": list(self._allowed), "hard_links": self._hard_links}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._allowed = AllowedPrefixes(state["entries"])
        self._hard_links = state.get("hard_links", True)
        self._lock = threading.Lock()
        self._cache = {}


def _stores_equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False
