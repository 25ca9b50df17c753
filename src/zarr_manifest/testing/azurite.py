"""A real local Azure Blob Storage for tests: Azurite's blob service on 127.0.0.1.

`AzuriteServer` runs the ``azurite-blob`` program of the npm package ``azurite`` (installed
by ``./dev.sh test`` into ``.tools/``) in memory on a port the system picks, works as a
context manager and stops its whole process group; `AzuriteServer.obstore_config` is what
obstore needs to read and write it (Azurite's well-known development account, passed
explicitly: nothing is read from the environment).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import os
import re
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from zarr_manifest.testing._emulator_process import EmulatorProcess, EmulatorStartError
from zarr_manifest.testing._uploads import files_to_upload

if TYPE_CHECKING:
    from obstore.store import AzureStore

__all__ = ["ACCOUNT_KEY", "ACCOUNT_NAME", "AzuriteServer", "find_azurite"]

#: Azurite's development account (public, the same in every Azurite: not a secret)
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

#: the program to run: this variable, else the project's ``.tools/`` (dev.sh), else PATH
AZURITE_ENV = "ZARR_MANIFEST_AZURITE"

_PROGRAM = "azurite-blob"
_START_TIMEOUT = 30.0  # node's start-up on a busy 2-core machine takes a few seconds
_LISTENING = re.compile(r"successfully listens on https?://[^:/\s]+:(\d+)")
_API_VERSION = "2021-08-06"


def find_azurite() -> str | None:
    """The path of ``azurite-blob``, or None when it is not installed.

    Looked for in ``$ZARR_MANIFEST_AZURITE``, then in the project's ``.tools/`` (where
    ``./dev.sh test`` installs it), then on ``PATH``.
    """
    explicit = os.environ.get(AZURITE_ENV)
    if explicit:
        return explicit
    # src/zarr_manifest/testing/azurite.py -> the checkout's root (editable installs)
    root = Path(__file__).resolve().parents[3]
    local = root / ".tools" / "node_modules" / ".bin" / _PROGRAM
    if local.is_file():
        return str(local)
    return shutil.which(_PROGRAM)


class AzuriteServer:
    """Azurite's blob service (in memory) on a free loopback port, in a child process group.

    Parameters
    ----------
    program
        The ``azurite-blob`` executable (default: `find_azurite`).
    host
        Address to bind.
    start_timeout
        Seconds to wait for Azurite to listen (node's start-up takes a few seconds on a
        busy machine).
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
        self.account_name = ACCOUNT_NAME
        self.account_key = ACCOUNT_KEY
        self._process: EmulatorProcess | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._port: int | None = None

    def start(self) -> Self:
        """Start Azurite and wait until it listens; returns ``self``.  Idempotent.

        Raises
        ------
        EmulatorStartError
            ``azurite-blob`` is not installed, exits, or does not listen within
            ``start_timeout`` seconds (the process group is stopped then).
        """
        if self._process is not None:
            return self
        program = self.program or find_azurite()
        if program is None:
            raise EmulatorStartError(
                f"{_PROGRAM} not found (neither ${AZURITE_ENV}, the project's .tools/ nor "
                "PATH); ./dev.sh test installs it (npm package azurite)"
            )
        # Azurite writes nothing with --inMemoryPersistence, but give it a directory of its own
        self._workdir = tempfile.TemporaryDirectory(prefix="azurite-")
        process = EmulatorProcess(
            [
                program,
                "--blobHost",
                self.host,
                "--blobPort",
                "0",  # the system picks; Azurite prints which
                "--inMemoryPersistence",
                "--extentMemoryLimit",
                "256",
                "--disableTelemetry",
                "--skipApiVersionCheck",  # obstore may speak a newer API than Azurite knows
            ],
            name="Azurite",
            cwd=self._workdir.name,
        )

        def listening_port(line: str) -> str | None:
            m = _LISTENING.search(line)
            return m.group(1) if m else None

        try:
            self._port = int(process.wait_for_line(listening_port, self.start_timeout))
        except BaseException:
            process.stop()
            self._cleanup()
            raise
        self._process = process
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Azurite (its whole process group) and free the port.  Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            process.stop(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

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
        """Whether Azurite is serving."""
        return self._process is not None

    @property
    def process_group(self) -> int:
        """The id of Azurite's process group (all of it is stopped by `stop`)."""
        if self._process is None:
            raise RuntimeError("AzuriteServer is not running; call start() first")
        return self._process.pgid

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None or self._process is None:
            raise RuntimeError("AzuriteServer is not running; call start() first")
        return self._port

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint, e.g. ``http://127.0.0.1:41234/devstoreaccount1``."""
        return f"http://{self.host}:{self.port}/{self.account_name}"

    # ---- clients --------------------------------------------------------------------

    def obstore_config(self) -> dict[str, Any]:
        """Keyword arguments for obstore's `AzureStore` / ``from_url("az://container/...")``.

        The endpoint is given explicitly (not ``use_emulator``, whose port obstore can only
        take from the ``AZURITE_BLOB_STORAGE_URL`` environment variable).
        """
        return {
            "account_name": self.account_name,
            "account_key": self.account_key,
            "endpoint": self.endpoint,
            "client_options": {"allow_http": True},
        }

    def azure_store(self, container: str, prefix: str | None = None) -> AzureStore:
        """An obstore `AzureStore` on ``container`` of this server."""
        from obstore.store import AzureStore

        return AzureStore(container, prefix=prefix, **self.obstore_config())

    # ---- data -----------------------------------------------------------------------

    def create_container(self, container: str) -> str:
        """Create ``container`` (no error if it exists already); returns its name.

        obstore cannot create containers, so this speaks the Blob REST API itself
        ("Create Container", signed with the account's shared key).
        """
        path = f"/{self.account_name}/{urllib.parse.quote(container)}"
        query = {"restype": "container"}
        headers = {
            "x-ms-date": email.utils.formatdate(usegmt=True),
            "x-ms-version": _API_VERSION,
            "Content-Length": "0",
        }
        headers["Authorization"] = self._shared_key("PUT", path, query, headers)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("PUT", f"{path}?{urllib.parse.urlencode(query)}", b"", headers)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status not in (201, 409):  # 409: ContainerAlreadyExists
            raise RuntimeError(
                f"Azurite: creating container {container!r} failed: {response.status} "
                f"{body.decode(errors='replace')}"
            )
        return container

    def _shared_key(
        self, verb: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> str:
        """The ``Authorization`` header of a request with no body (Shared Key scheme)."""
        ms_headers = sorted(
            (k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-ms-")
        )
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in ms_headers)
        canonical_resource = f"/{self.account_name}{path}" + "".join(
            f"\n{k.lower()}:{v}" for k, v in sorted(query.items())
        )
        # verb, then 11 standard headers all empty (a zero Content-Length is signed empty)
        string_to_sign = verb + "\n" * 12 + canonical_headers + canonical_resource
        digest = hmac.new(
            base64.b64decode(self.account_key), string_to_sign.encode(), hashlib.sha256
        ).digest()
        return f"SharedKey {self.account_name}:{base64.b64encode(digest).decode()}"

    def upload_dir(
        self, local_dir: str | os.PathLike[str], container: str, prefix: str = ""
    ) -> list[str]:
        """Upload every file under ``local_dir`` to ``container`` (created if needed).

        Returns
        -------
        list of str
            The blob names written, ``prefix/relative/path``, sorted.
        """
        import obstore

        files = files_to_upload(local_dir, prefix)
        self.create_container(container)
        store = self.azure_store(container)
        for name, path in files:
            obstore.put(store, name, path.read_bytes())
        return [name for name, _ in files]
