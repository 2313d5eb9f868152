"""Run Debian's ``transmission-daemon`` on 127.0.0.1 for interop tests, through its RPC.

Transmission 3.00 will not *dial* a peer on 127.0.0.0/8 and cannot be given a
peer address, but it does *accept* connections there.  So the tests dial it,
in both directions: when it downloads, it fetches from our incoming
connection; when it seeds, we fetch from it.  Each daemon gets its own
config directory (DHT, LPD, uTP, port mapping and blocklists off, peers and
RPC on 127.0.0.1 only, no RPC authentication) and is stopped by its pid
(SIGTERM, then SIGKILL) by the test, and by an atexit backstop
(:mod:`tests.support.process`).  RPC is JSON
over HTTP with the ``X-Transmission-Session-Id`` handshake (a 409 answer
carries the id to use).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.process import ManagedProcess, find_binary, free_port


def transmission_binary() -> str:
    """The transmission-daemon executable, or skip (fail in CI) when it is not installed."""
    return find_binary("transmission-daemon", "transmission-daemon")


class TransmissionError(RuntimeError):
    """The RPC refused a call, or the daemon died."""


class Transmission(ManagedProcess):
    """One transmission-daemon process; use as a context manager so it is always stopped."""

    name = "transmission-daemon"
    error = TransmissionError

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir / "transmission.log")
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.download_dir = workdir / "downloads"
        self.port = 0
        self.rpc_port = 0
        self._session_id = ""
        self.version = ""

    def start(self, timeout: float = 20.0) -> Transmission:
        self.port, self.rpc_port = free_port(), free_port()
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
        self.spawn(argv)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_if_dead()
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
            self.raise_if_dead()
            row = self.info(torrent_id)
            if row["error"]:
                raise TransmissionError(f"torrent error: {row['errorString']}")
            checking = row["status"] in (1, 2)  # check queued, checking
            if not checking and (row["leftUntilDone"] == 0 if done else True):
                return row
            time.sleep(0.1)
        raise TimeoutError(f"transmission: no {what} within {timeout:.0f}s: {row}")
