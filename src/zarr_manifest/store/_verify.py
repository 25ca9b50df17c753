"""Checking source files against the fingerprints recorded when their manifest was made.

`ManifestStore` asks a `SourceVerifier` before it reads from a source whose fingerprint
is recorded; the verifier looks at the live file (``os.stat`` for local files, one HEAD
request through the source's obstore store for remote ones) and raises
`StaleReferenceError` when the file changed.
"""

from __future__ import annotations

import os
import threading
from typing import Literal, get_args

import obstore

from zarr_manifest.errors import StaleReferenceError
from zarr_manifest.fingerprint import Fingerprint
from zarr_manifest.store.sources import Source

__all__ = ["VERIFY_MODES", "SourceVerifier", "VerifyMode", "live_fingerprint", "stale_reason"]

VerifyMode = Literal["never", "once", "always"]
VERIFY_MODES: tuple[str, ...] = get_args(VerifyMode)


def live_fingerprint(source: Source) -> Fingerprint | None:
    """The fingerprint of a source as it is now; None when it does not exist.

    Local files are ``stat``-ed (size and mtime); remote objects get one HEAD request
    through the source's own obstore store (its credentials and endpoint), or for http(s)
    through the client that re-checks redirects.
    """
    if source.local_path is not None:
        try:
            return Fingerprint.from_stat(os.stat(source.local_path))
        except FileNotFoundError:
            return None
    if source.http is not None:
        # Not obstore: it would follow a redirect to anywhere (see store._http).
        meta = source.http.head()
        return None if meta is None else Fingerprint.from_object_meta(meta)
    try:
        return Fingerprint.from_object_meta(obstore.head(source.store, source.path))
    except FileNotFoundError:
        return None


def stale_reason(recorded: Fingerprint, live: Fingerprint | None) -> str | None:
    """Why a source with fingerprint ``recorded`` is stale now; None if it is not."""
    if live is None:
        return "it no longer exists"
    return recorded.mismatch(live)


class SourceVerifier:
    """Compares sources with their recorded fingerprints, per ``mode``.

    Parameters
    ----------
    mode
        ``"never"``: no checks.  ``"once"``: each source is looked at once (its live
        fingerprint is cached, so a stale source keeps failing without new requests).
        ``"always"``: looked at before every chunk read, catching changes made while the
        store is in use, at one ``stat`` / HEAD request per chunk read.

    Raises
    ------
    ValueError
        An unknown mode.
    """

    def __init__(self, mode: VerifyMode = "once"):
        if mode not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {mode!r}")
        self.mode = mode
        self._live: dict[str, Fingerprint | None] = {}
        # one lock per source: concurrent first reads of a file wait for one HEAD request
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def check(self, source: Source, recorded: Fingerprint, key: str | None = None) -> None:
        """Raise `StaleReferenceError` if ``source`` no longer matches ``recorded``.

        Raises
        ------
        StaleReferenceError
            The file changed or is gone; the message names the file, the chunk key, and
            the recorded and live values.
        """
        if self.mode == "never":
            return
        if self.mode == "always":
            live = live_fingerprint(source)
        else:
            with self._lock:
                lock = self._locks.setdefault(source.url, threading.Lock())
            with lock:
                if source.url in self._live:
                    live = self._live[source.url]
                else:
                    live = self._live[source.url] = live_fingerprint(source)
        reason = stale_reason(recorded, live)
        if reason is None and recorded.etag is not None and source.local_path is None:
            # Reads from now on carry If-Match: an object replaced after this check (or a
            # server whose HEAD and GET disagree) fails instead of serving other bytes.
            source.pin_etag(recorded.etag)
        if reason is not None:
            where = f" (reading chunk {key!r})" if key is not None else ""
            raise StaleReferenceError(
                f"source {source.url} changed since the manifest was made{where}: {reason}; "
                "its byte ranges may no longer hold the chunks, rebuild the manifest",
                key=key,
                url=source.url,
            )
