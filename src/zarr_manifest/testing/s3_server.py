"""A real local S3 server for tests and benchmarks: moto's S3 on 127.0.0.1.

`S3Server` binds a random free port, runs in a daemon thread, works as a context manager
and stops within a bounded time; `S3Server.obstore_config` is what obstore needs to read it.
(Also importable from `zarr_manifest.testing.servers`, next to the HTTP range server.)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from zarr_manifest.testing._uploads import files_to_upload

if TYPE_CHECKING:
    from obstore.store import RetryConfig, S3Store

_log = logging.getLogger(__name__)

_START_TIMEOUT = 10.0

# --------------------------------------------------------------------------------------
# S3Server
# --------------------------------------------------------------------------------------


class S3Server:
    """moto's S3 (``moto.server.ThreadedMotoServer``) on a random free loopback port.

    moto keeps its state per process, so two servers in one process see the same buckets;
    `reset` empties them.

    Parameters
    ----------
    region
        The AWS region clients should claim.
    access_key_id, secret_access_key
        Credentials clients send (moto accepts any).
    host
        Address to bind.
    quiet
        Silence werkzeug's per-request log lines (by raising the process-wide
        ``werkzeug`` logger to WARNING).
    """

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        access_key_id: str = "testing",
        secret_access_key: str = "testing",
        host: str = "127.0.0.1",
        quiet: bool = True,
    ) -> None:
        self.region = region
        self.quiet = quiet
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.host = host
        self._server: Any = None
        self._port: int | None = None

    def start(self) -> Self:
        """Start moto in a daemon thread; returns ``self``.  Idempotent."""
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer

        if self.quiet:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        # ThreadedMotoServer.start() waits forever if the werkzeug server fails to bind;
        # run it in a helper thread so a failure surfaces as a timeout instead of a hang.
        starter = threading.Thread(target=server.start, daemon=True)
        starter.start()
        starter.join(_START_TIMEOUT)
        if starter.is_alive() or server._server is None:
            raise RuntimeError(f"moto server did not start within {_START_TIMEOUT} s")
        self._port = server.get_host_and_port()[1]
        self._server = server
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, None) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop moto and free the port, within about ``timeout`` seconds.  Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        # ThreadedMotoServer.stop() joins its thread without a timeout; bound it.
        stopper = threading.Thread(target=server.stop, daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            _log.warning("moto server on port %s did not stop within %s s", self._port, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None or self._server is None:
            raise RuntimeError("S3Server is not running; call start() first")
        return self._port

    @property
    def endpoint(self) -> str:
        """The endpoint URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    url = endpoint

    # ---- clients --------------------------------------------------------------------

    def obstore_config(self) -> dict[str, Any]:
        """Keyword arguments for obstore's `S3Store` / `S3Store.from_url` / `from_url`.

        ``S3Store("bucket", **srv.obstore_config())`` and
        ``obstore.store.from_url("s3://bucket/prefix", **srv.obstore_config())`` both work.
        """
        return {
            "endpoint": self.endpoint,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "region": self.region,
            "virtual_hosted_style_request": False,
            "client_options": {"allow_http": True},
        }

    def s3_store(
        self,
        bucket: str,
        prefix: str | None = None,
        *,
        retry_config: RetryConfig | None = None,
    ) -> S3Store:
        """An obstore `S3Store` on ``bucket`` of this server."""
        from obstore.store import S3Store

        return S3Store(bucket, prefix=prefix, retry_config=retry_config, **self.obstore_config())

    def fsspec_options(self) -> dict[str, Any]:
        """``storage_options`` for fsspec's s3fs (``fsspec.filesystem("s3", **opts)``).

        s3fs itself need not be installed to build these, only to use them.
        """
        return {
            "key": self.access_key_id,
            "secret": self.secret_access_key,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": self.region},
        }

    def boto3_client(self) -> Any:
        """A boto3 S3 client on this server (boto3 comes with moto)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    # ---- data -----------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> str:
        """Create ``bucket`` (no error if it exists already); returns its name."""
        client = self.boto3_client()
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(**kwargs)
        return bucket

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` in ``bucket``."""
        self.boto3_client().put_object(Bucket=bucket, Key=key, Body=data)

    def upload_dir(
        self, local_dir: str | os.PathLike[str], bucket: str, prefix: str = ""
    ) -> list[str]:
        """Upload every file under ``local_dir`` to ``bucket`` (created if needed).

        Returns
        -------
        list of str
            The keys written, ``prefix/relative/path``, sorted.
        """
        files = files_to_upload(local_dir, prefix)
        self.create_bucket(bucket)
        client = self.boto3_client()
        for key, path in files:
            client.upload_file(str(path), bucket, key)
        return [key for key, _ in files]

    def reset(self) -> None:
        """Empty moto's state (all buckets), e.g. between tests."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
