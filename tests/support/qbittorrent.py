"""Run Debian's ``qbittorrent-nox`` on 127.0.0.1 for interop tests, through its Web API.

Each instance gets a throw-away profile (``--profile``) whose config turns
off everything that would reach beyond the machine or slow a test: DHT, LSD,
PeX, UPnP/NAT-PMP, peer country lookups; the Web UI listens on 127.0.0.1
only and skips authentication for localhost.  Torrents are added, peers are
given and progress is read through Web API v2 (``/api/v2/...``) with the
standard library's ``urllib``.  The process is stopped by its pid (SIGTERM,
then SIGKILL) by the test, and by an atexit backstop
(:mod:`tests.support.process`).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.support.process import ManagedProcess, find_binary, free_port


def qbittorrent_binary() -> str:
    """The qbittorrent-nox executable, or skip (fail in CI) when it is not installed."""
    return find_binary("qbittorrent-nox", "qbittorrent-nox")


def _config(peer_port: int, web_port: int, save_path: Path) -> str:
    return f"""\
[LegalNotice]
Accepted=true

[BitTorrent]
Session\\DHTEnabled=false
Session\\LSDEnabled=false
Session\\PeXEnabled=false
Session\\Port={peer_port}
Session\\Interface=lo
Session\\InterfaceName=lo
Session\\InterfaceAddress=127.0.0.1
Session\\DefaultSavePath={save_path}
Session\\TempPathEnabled=false
Session\\QueueingSystemEnabled=false
Session\\AddTorrentPaused=false
Session\\Encryption=0
Session\\AnonymousModeEnabled=false
Session\\MultiConnectionsPerIp=true
Session\\GlobalMaxRatio=-1

[Network]
PortForwardingEnabled=false

[Preferences]
Connection\\UPnP=false
Connection\\ResolvePeerCountries=false
General\\Locale=en
WebUI\\Address=127.0.0.1
WebUI\\Port={web_port}
WebUI\\LocalHostAuth=false
WebUI\\CSRFProtection=false
WebUI\\ClickjackingProtection=false
WebUI\\HostHeaderValidation=false
WebUI\\UseUPnP=false
"""


class QBittorrentError(RuntimeError):
    """The Web API refused a call, or the process died."""


class QBittorrent(ManagedProcess):
    """One qbittorrent-nox process; use as a context manager so it is always stopped."""

    name = "qbittorrent-nox"
    error = QBittorrentError

    def __init__(self, workdir: Path) -> None:
        self.profile = workdir / "profile"
        qbt_log = self.profile / "qBittorrent" / "data" / "logs" / "qbittorrent.log"
        super().__init__(workdir / "qbittorrent.log", qbt_log)
        self.workdir = workdir
        self.save_path = workdir / "downloads"
        self.port = 0
        self.web_port = 0

    def start(self, timeout: float = 30.0) -> QBittorrent:
        self.port, self.web_port = free_port(), free_port()
        conf_dir = self.profile / "qBittorrent" / "config"
        conf_dir.mkdir(parents=True, exist_ok=True)
        self.save_path.mkdir(parents=True, exist_ok=True)
        (conf_dir / "qBittorrent.conf").write_text(
            _config(self.port, self.web_port, self.save_path)
        )
        argv = [qbittorrent_binary(), f"--profile={self.profile}", f"--webui-port={self.web_port}"]
        with self.log.open("ab") as log:
            self.spawn(argv, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, output=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_if_dead()
            try:
                self.version = self._call("GET", "app/version").decode()
                return self
            except (OSError, QBittorrentError):
                time.sleep(0.1)
        raise TimeoutError(f"qbittorrent-nox Web API did not come up:\n{self.log_tail()}")

    # -- Web API ----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes]] | None = None,
        timeout: float = 10.0,
    ) -> bytes:
        url = f"http://127.0.0.1:{self.web_port}/api/v2/{path}"
        headers = {"Referer": f"http://127.0.0.1:{self.web_port}"}
        data: bytes | None = None
        if files:
            boundary = uuid.uuid4().hex
            parts = []
            for name, value in (fields or {}).items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                    f"{value}\r\n".encode()
                )
            for name, (filename, content) in files.items():
                head = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                    f'filename="{filename}"\r\nContent-Type: application/x-bittorrent\r\n\r\n'
                )
                parts.append(head.encode() + content + b"\r\n")
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif fields is not None:
            data = urllib.parse.urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError as exc:
            raise QBittorrentError(
                f"{method} {path}: HTTP {exc.code} {exc.read()[:200]!r}"
            ) from None

    def add_torrent(self, torrent: Path, save_path: Path, *, check: bool = True) -> None:
        """Add a .torrent saving to ``save_path``; ``check=False`` trusts the data there."""
        body = self._call(
            "POST",
            "torrents/add",
            fields={
                "savepath": str(save_path),
                "skip_checking": "false" if check else "true",
                "paused": "false",
                "autoTMM": "false",
                "contentLayout": "Original",
            },
            files={"torrents": (torrent.name, torrent.read_bytes())},
        )
        if body.strip() not in (b"Ok.", b""):
            raise QBittorrentError(f"torrents/add: {body[:200]!r}")

    def info(self, info_hash: str) -> dict[str, Any] | None:
        body = self._call("GET", f"torrents/info?hashes={info_hash}")
        rows = json.loads(body)
        return rows[0] if rows else None

    def add_peer(self, info_hash: str, host: str, port: int) -> None:
        """Have qBittorrent dial ``host:port`` for this torrent (on its next connection round)."""
        fields = {"hashes": info_hash, "peers": f"{host}:{port}"}
        self._call("POST", "torrents/addPeers", fields=fields)

    def wait_state(
        self, info_hash: str, states: set[str], timeout: float, what: str
    ) -> dict[str, Any]:
        """Poll until the torrent's state is one of ``states``; fail fast on an error state."""
        deadline = time.monotonic() + timeout
        row: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            self.raise_if_dead()
            row = self.info(info_hash)
            if row is not None:
                if row["state"] in states:
                    return row
                if row["state"] in ("error", "missingFiles"):
                    raise QBittorrentError(f"torrent {row['state']}: {row}")
            time.sleep(0.1)
        raise TimeoutError(f"qbittorrent-nox: no {what} within {timeout:.0f}s: {row}")

    def wait_complete(self, info_hash: str, timeout: float) -> dict[str, Any]:
        """Until the torrent is complete and serving: not while it still checks its files
        (libtorrent refuses peers of a torrent being checked)."""
        return self.wait_state(
            info_hash, {"uploading", "stalledUP", "forcedUP"}, timeout, "completed download"
        )
