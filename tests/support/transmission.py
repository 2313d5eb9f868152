"""Run Debian's ``transmission-daemon`` on 127.0.0.1 for interop tests, through its RPC.

Transmission 3.00 will not *dial* a peer on 127.0.0.0/8 and cannot be given a
peer address, but it does *accept* connections there.  So the tests dial it,
in both directions: when it downloads, it fetches from our incoming
connection; when it seeds, we fetch from it.  Each daemon gets its own
config directory (DHT, LPD, uTP, port mapping and blocklists off, peers and
RPC on 127.0.0.1 only, no RPC authentication) and is stopped by its pid
(SIGTERM, then SIGKILL) by the test, and by an atexit backstop.  RPC is JSON
over HTTP with the ``X-Transmission-Session-Id`` handshake (a 409 answer
carries the id to use).
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

_LIVE: set[Transmission] = set()


def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop()


atexit.register(_stop_all)


def transmission_binary() -> str:
    """The transmission-daemon executable, or skip (fail in CI) when it is not installed."""
    found = shutil.which("transmission-daemon")
    if found:
        return found
    msg = "transmission-daemon is not installed (apt-get install transmission-daemon)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TransmissionError(RuntimeError):
    """The RPC refused a call, or the daemon died."""


class Transmission:
    """One transmission-daemon process; use as a context manager so it is always stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.download_dir = workdir / "downloads"
        self.log = workdir / "transmission.log"
        self.port = 0
        self.rpc_port = 0
        self._session_id = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    def start(self, timeout: float = 20.0) -> Transmission:
        self.port, self.rpc_port = _free_port(), _free_port()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            transmission_binary(),
            "--foreground",
            f"--config-dir={self.config_dir}",
            f"--port={self.rpc_port}",
            "--rpc-bind-address=127.0.0.1",
            "--allowed=127.0.0.1",
            "--no-auth",
            f"--peerport={self.port}",
            "--bind-address-ipv4=127.0.0.1",
            "--no-dht",
            "--no-lpd",
            "--no-utp",
            "--no-portmap",
            "--no-blocklist",
            "--encryption-tolerated",
            "--no-global-seedratio",
            f"--download-dir={self.download_dir}",
            "--no-incomplete-dir",
            "--no-watch-dir",
            f"--logfile={self.log}",
            "--log-info",
        ]
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_if_dead()
            try:
                args = self.rpc("session-get", {"fields": ["version"]})
                self.version = str(args.get("version", "")).split(" ")[0]
                return self
            except (OSError, TransmissionError):
                time.sleep(0.1)
        raise TimeoutError(f"transmission-daemon RPC did not come up:\n{self.log_tail()}")

    # -- RPC --------------------------------------------------------------------------

    def rpc(self, method: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"method": method, "arguments": arguments or {}}).encode()
        url = f"http://127.0.0.1:{self.rpc_port}/transmission/rpc"
        for _attempt in range(2):
            req = urllib.request.Request(
                url,
                data=body,
                headers={"X-Transmission-Session-Id": self._session_id},
                method="POST",
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    answer = json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code == 409:  # the session id handshake
                    self._session_id = exc.headers.get("X-Transmission-Session-Id", "")
                    continue
                raise TransmissionError(f"{method}: HTTP {exc.code}") from None
            if answer.get("result") != "success":
                raise TransmissionError(f"{method}: {answer.get('result')}")
            result: dict[str, Any] = answer.get("arguments", {})
            return result
        raise TransmissionError(f"{method}: no session id")

    def add_torrent(self, torrent: Path, download_dir: Path) -> int:
        """Add a .torrent saving to ``download_dir`` (data already there is verified)."""
        args = self.rpc(
            "torrent-add",
            {
                "metainfo": base64.b64encode(torrent.read_bytes()).decode(),
                "download-dir": str(download_dir),
                "paused": False,
            },
        )
        added = args.get("torrent-added") or args.get("torrent-duplicate")
        if not added:
            raise TransmissionError(f"torrent-add: {args}")
        return int(added["id"])

    def info(self, torrent_id: int) -> dict[str, Any]:
        fields = ["percentDone", "status", "error", "errorString", "leftUntilDone", "peers"]
        (row,) = self.rpc("torrent-get", {"ids": [torrent_id], "fields": fields})["torrents"]
        assert isinstance(row, dict)
        return row

    def wait(self, torrent_id: int, done: bool, timeout: float, what: str) -> dict[str, Any]:
        """Poll until the torrent is complete (``done``) or at least not checking."""
        deadline = time.monotonic() + timeout
        row: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._raise_if_dead()
            row = self.info(torrent_id)
            if row["error"]:
                raise TransmissionError(f"torrent error: {row['errorString']}")
            checking = row["status"] in (1, 2)  # check queued, checking
            if not checking and (row["leftUntilDone"] == 0 if done else True):
                return row
            time.sleep(0.1)
        raise TimeoutError(f"transmission: no {what} within {timeout:.0f}s: {row}")

    # -- lifecycle --------------------------------------------------------------------

    def _raise_if_dead(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise TransmissionError(
                f"transmission-daemon exited with {self._proc.returncode}:\n{self.log_tail()}"
            )

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        """Stop the process by its pid (SIGTERM, SIGKILL after 5 s); idempotent."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Transmission:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
