"""Run Debian's ``aria2c`` as a BitTorrent peer on 127.0.0.1 for interop tests.

aria2c cannot be told a peer's address: it finds peers through trackers
(and DHT/LPD/PEX, all turned off here), so tests pair it with
:mod:`tests.support.opentracker`.  It does accept incoming connections on
``--listen-port``, so we can also dial it.

Two roles: :meth:`Aria2.download` fetches a torrent and exits when it is
complete (``--seed-time=0``); :meth:`Aria2.seed` checks existing data
(``--check-integrity``) and seeds until stopped.  Every process is started in
its own session and stopped by its pid by the test and an atexit backstop
(:mod:`tests.support.process`).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.support.process import ManagedProcess, find_binary, free_port

__all__ = ["Aria2", "aria2c_binary"]


def aria2c_binary() -> str:
    """The aria2c executable, or skip (fail in CI) when it is not installed."""
    return find_binary("aria2c", "aria2")


class Aria2(ManagedProcess):
    """One aria2c process; use as a context manager so it is always stopped."""

    name = "aria2c"
    stop_grace = 3.0

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir / "aria2.log")
        self.workdir = workdir
        self.port = 0

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
        self.spawn(argv, cwd=self.workdir)

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
            self.raise_if_dead()
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
            self.raise_if_dead()
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "Verification finished successfully" in text:
                self.wait_listening(timeout=max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.1)
        raise TimeoutError(f"aria2c did not start seeding:\n{self.log_tail()}")
