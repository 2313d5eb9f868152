"""Run Debian's ``aria2c`` as a BitTorrent peer on 127.0.0.1 for interop tests.

aria2c cannot be told a peer's address: it finds peers through trackers
(and DHT/LPD/PEX, all turned off here), so tests pair it with
:mod:`tests.support.opentracker`.  It does accept incoming connections on
``--listen-port``, so we can also dial it.

Two roles: :meth:`Aria2.download` fetches a torrent and exits when it is
complete (``--seed-time=0``); :meth:`Aria2.seed` checks existing data
(``--check-integrity``) and seeds until stopped.  Every process is started in
its own session and stopped by its pid (SIGTERM, then SIGKILL), by the test,
and by an atexit backstop.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

_LIVE: set[Aria2] = set()


def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop()


atexit.register(_stop_all)


def aria2c_binary() -> str:
    """The aria2c executable, or skip (fail in CI) when it is not installed."""
    found = shutil.which("aria2c")
    if found:
        return found
    msg = "aria2c is not installed (apt-get install aria2; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Aria2:
    """One aria2c process; use as a context manager so it is always stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "aria2.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self, torrent: Path, directory: Path, extra: list[str]) -> None:
        self.port = free_port()
        argv = [
            aria2c_binary(),
            f"--dir={directory}",
            f"--listen-port={self.port}",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--bt-require-crypto=false",
            "--disable-ipv6=true",
            "--file-allocation=none",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--no-conf=true",
            f"--log={self.log}",
            "--log-level=info",
            "--bt-tracker-connect-timeout=5",
            "--bt-tracker-timeout=5",
            *extra,
            str(torrent),
        ]
        self._proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _LIVE.add(self)

    def download(self, torrent: Path, directory: Path) -> None:
        """Fetch ``torrent`` into ``directory``; the process exits once complete."""
        self._start(torrent, directory, ["--seed-time=0"])

    def seed(self, torrent: Path, directory: Path) -> None:
        """Check the data already in ``directory``, then seed it until stopped."""
        self._start(
            torrent,
            directory,
            ["--check-integrity=true", "--seed-ratio=0.0", "--bt-seed-unverified=false"],
        )

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until aria2c accepts connections (after its integrity check, when seeding)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_if_dead()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"aria2c not listening on {self.port}:\n{self.log_tail()}")

    def wait_seeding(self, timeout: float = 60.0) -> None:
        """Until aria2c's log says the integrity check passed and it is seeding."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_if_dead()
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "Verification finished successfully" in text:
                self.wait_listening(timeout=max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.1)
        raise TimeoutError(f"aria2c did not start seeding:\n{self.log_tail()}")

    def wait_exit(self, timeout: float) -> int:
        """Wait for a download to finish; returns aria2c's exit code (0: complete)."""
        assert self._proc is not None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"aria2c did not finish within {timeout:.0f}s:\n{self.log_tail()}"
            ) from None

    def _raise_if_dead(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"aria2c exited with {self._proc.returncode}:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        """Stop the process by its pid (SIGTERM, SIGKILL after 3 s); idempotent."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Aria2:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
