"""What every third-party peer a test runs has in common: find it, start it, always stop it.

The aria2c, qBittorrent-nox and Transmission harnesses differ in how they
are driven (command line, Web API, RPC) but not in their lifecycle, which
lives here once: the executable is found or the test is skipped (failed
under ``CI``, where ``.ci/run`` installs it); the process runs in its own
session; it is stopped by its pid (SIGTERM, then SIGKILL) by the test, as a
context manager, and by an atexit backstop; a death is reported with the
tail of its log.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pytest

_LIVE: set[ManagedProcess] = set()


def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop()


atexit.register(_stop_all)


def find_binary(name: str, package: str) -> str:
    """The executable ``name``, or skip (fail in CI) when Debian's ``package`` is missing."""
    found = shutil.which(name)
    if found:
        return found
    msg = f"{name} is not installed (apt-get install {package}; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedProcess:
    """One child process with a log file; subclasses say how to start and drive it.

    ``log_files`` are read, in order, for :meth:`log_tail`.
    """

    #: How long :meth:`stop` waits after SIGTERM before SIGKILL.
    stop_grace = 5.0
    name = "process"
    #: Raised by :meth:`raise_if_dead` (a subclass may name its own).
    error: type[Exception] = RuntimeError

    def __init__(self, log: Path, *extra_logs: Path) -> None:
        self.log = log
        self.log_files = (log, *extra_logs)
        self._proc: subprocess.Popen[bytes] | None = None

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        output: IO[bytes] | int = subprocess.DEVNULL,
    ) -> None:
        """Start ``argv`` in its own session; registered for the atexit backstop."""
        self._proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else subprocess.DEVNULL,
            start_new_session=True,
        )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def raise_if_dead(self) -> None:
        """Raise, with the log's tail, if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise self.error(f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit by itself (aria2c after a download); its exit code."""
        assert self._proc is not None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self.name} did not finish within {timeout:.0f}s:\n{self.log_tail()}"
            ) from None

    def stop(self) -> None:
        """Stop the process by its pid (SIGTERM, then SIGKILL); idempotent."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)

    def log_tail(self, lines: int = 30) -> str:
        out: list[str] = []
        for path in self.log_files:
            try:
                out += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                pass
        return "\n".join(out)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
