"""A cloud emulator run as a child process: started in its own process group, stopped with it.

The Azure and GCS emulators (`zarr_manifest.testing.azurite`,
`zarr_manifest.testing.gcs_server`) are programs, not Python libraries.  `EmulatorProcess`
starts one in a new session, so that stopping it kills the whole group -- the program and
anything it started (``npx``/``node`` wrappers, shells) -- and no orphan outlives a test run.
It keeps the program's output, to put in the error when the program exits or never becomes
ready.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

_OUTPUT_LINES = 200


class EmulatorStartError(RuntimeError):
    """An emulator could not be found, exited early or did not become ready in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (for programs that cannot bind 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EmulatorProcess:
    """A program running in its own process group, with its output kept.

    Parameters
    ----------
    argv
        The program and its arguments.
    name
        What to call it in errors, e.g. ``"Azurite"``.
    cwd
        Its working directory.
    env
        Its environment (default: this process's).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self._lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES)
        self._new_line = threading.Condition()
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills all of it
            )
        except OSError as e:
            raise EmulatorStartError(f"{name}: cannot run {self.argv[0]!r}: {e}") from e
        self.pgid = self._proc.pid  # a session leader's group id is its pid
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            with self._new_line:
                self._lines.append(raw.decode(errors="replace").rstrip())
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    @property
    def output(self) -> str:
        """The program's last lines of output (stdout and stderr)."""
        with self._new_line:
            return "\n".join(self._lines)

    @property
    def pid(self) -> int:
        """The program's process id."""
        return self._proc.pid

    def wait_for_line(self, match: Callable[[str], str | None], timeout: float) -> str:
        """Wait for an output line ``match`` accepts; returns what ``match`` returned.

        Raises
        ------
        EmulatorStartError
            The program exited, or no such line came within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_line:
            while True:
                lines = list(self._lines)
                for line in lines[seen:]:
                    found = match(line)
                    if found is not None:
                        return found
                seen = len(lines)
                if self._proc.poll() is not None and not self._reader.is_alive():
                    what = f"exited with code {self._proc.returncode}"
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    what = f"not ready within {timeout} s"
                    break
                self._new_line.wait(min(left, 0.2))
        # outside the lock: stopping waits for the output reader, which takes it
        raise self._failure(what)

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready()`` until it is true.

        Raises
        ------
        EmulatorStartError
            The program exited, or ``ready()`` stayed false for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not ready():
            if self._proc.poll() is not None:
                raise self._failure(f"exited with code {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise self._failure(f"not ready within {timeout} s")
            time.sleep(0.05)

    def _failure(self, what: str) -> EmulatorStartError:
        self.stop()
        return EmulatorStartError(
            f"{self.name} ({' '.join(self.argv)}) {what}; its output:\n{self.output}"
        )

    def running(self) -> bool:
        """Whether any process of the group is still alive."""
        return group_alive(self.pgid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``timeout`` s.  Idempotent."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            self._proc.wait(timeout)
        # children that ignored SIGTERM and outlived the leader
        deadline = time.monotonic() + timeout
        while group_alive(self.pgid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
                break
            time.sleep(0.05)
        self._reader.join(timeout)


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live member."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
