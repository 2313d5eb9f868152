"""Run Debian's ``opentracker`` on 127.0.0.1 for tests (HTTP and UDP, free ports).

Debian builds opentracker in "private" mode: it answers only for info-hashes
listed in a whitelist file (``-w``), and rereads that file on SIGHUP.  The
harness therefore keeps a whitelist in its own directory and
:meth:`OpenTracker.allow` appends to it and waits until the tracker has
reloaded it (probing with a harmless ``stopped`` announce).

Running as root, opentracker chroots to ``-d`` and drops privileges to ``-u``.
We pass ``-d /`` so absolute paths stay valid either way, and make the
directory world-readable so the unprivileged tracker can reread the list.

When the binary is missing the tests skip with a clear message, except in CI
(``CI=true``), where ``.ci/run`` installs it and a skip would hide a broken
setup: there they fail.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from core.errors import TorrentError
from core.formats.bencoding import decode

OPENTRACKER = "opentracker"
_LIVE: set[OpenTracker] = set()


def _stop_all() -> None:
    for tracker in list(_LIVE):
        tracker.stop()


atexit.register(_stop_all)


def opentracker_binary() -> str:
    """The opentracker executable, or skip (fail in CI) when it is not installed."""
    path = shutil.which(OPENTRACKER) or (
        "/usr/bin/opentracker" if os.access("/usr/bin/opentracker", os.X_OK) else None
    )
    if path is not None:
        return path
    msg = "opentracker is not installed (apt-get install opentracker; .ci/run does it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{msg}: required in CI", pytrace=False)
    pytest.skip(msg)


def _free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (so both URLs share it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free TCP+UDP port on 127.0.0.1")


def _hex(info_hash: bytes | str) -> str:
    raw = bytes.fromhex(info_hash) if isinstance(info_hash, str) else info_hash
    if len(raw) != 20:
        raise ValueError(f"an info-hash is 20 bytes, got {len(raw)}")
    return raw.hex()


class OpenTracker:
    """One opentracker process; use as a context manager or via the ``opentracker`` fixture."""

    def __init__(self, *, start_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="opentracker-"))
        os.chmod(self._dir, 0o755)
        self.whitelist = self._dir / "whitelist.txt"
        self.log = self._dir / "opentracker.log"
        self._allowed: list[str] = []
        self._write_whitelist()

    # -- URLs ----------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/announce"

    @property
    def udp_url(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    @property
    def scrape_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scrape"

    # -- lifecycle -----------------------------------------------------------------

    def start(self, info_hashes: Iterable[bytes | str] = ()) -> OpenTracker:
        binary = opentracker_binary()
        self._allowed.extend(_hex(h) for h in info_hashes)
        self._write_whitelist()
        last_error = ""
        for _attempt in range(5):  # another process may grab the port between probe and bind
            self.port = _free_port()
            argv = [
                binary,
                "-i", "127.0.0.1",
                "-p", str(self.port),
                "-P", str(self.port),
                "-w", str(self.whitelist),
                "-d", "/",
                "-u", "nobody",
            ]  # fmt: skip
            with self.log.open("ab") as log:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            _LIVE.add(self)
            if self._wait_ready():
                return self
            last_error = self.log_tail()
            self.stop()
        raise RuntimeError(f"opentracker did not start: {last_error}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Terminate the tracker (SIGKILL after a second); idempotent."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> OpenTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- whitelist -----------------------------------------------------------------

    def _write_whitelist(self) -> None:
        tmp = self.whitelist.with_suffix(".tmp")
        tmp.write_text("".join(f"{h}\n" for h in self._allowed))
        os.chmod(tmp, 0o644)
        tmp.replace(self.whitelist)

    def allow(self, *info_hashes: bytes | str, timeout: float = 5.0) -> None:
        """Whitelist more info-hashes and wait until the running tracker accepts them.

        Blocking: from async tests call it with ``asyncio.to_thread``.
        """
        new = [_hex(h) for h in info_hashes]
        self._allowed.extend(new)
        self._write_whitelist()
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        for h in new:
            while not self._accepts(h):
                if time.monotonic() > deadline or not self.running:
                    raise RuntimeError(f"opentracker did not whitelist {h}: {self.log_tail()}")
                time.sleep(0.05)

    def _accepts(self, info_hash_hex: str) -> bool:
        """Whether an announce for the hash is answered without a failure reason.

        opentracker skips the whitelist for ``stopped`` announces, so the
        probe is a regular announce, followed by a ``stopped`` that takes the
        probe's peer out of the swarm again.
        """
        accepted = self._probe(info_hash_hex, "")
        if accepted:
            self._probe(info_hash_hex, "stopped")
        return accepted

    def _probe(self, info_hash_hex: str, event: str) -> bool:
        query = urllib.parse.urlencode(
            {
                "info_hash": bytes.fromhex(info_hash_hex),
                "peer_id": b"-PROBE-" + b"0" * 13,
                "port": "1",
                "uploaded": "0",
                "downloaded": "0",
                "left": "0",
                "event": event,
                "numwant": "0",
                "compact": "1",
            }
        )
        try:
            with urllib.request.urlopen(f"{self.http_url}?{query}", timeout=1.0) as resp:
                body = resp.read()
            answer = decode(body)
        except (OSError, TorrentError):
            return False
        return isinstance(answer, dict) and b"failure reason" not in answer


@pytest.fixture
def opentracker() -> Iterator[OpenTracker]:
    """A running opentracker with an empty whitelist; always stopped afterwards."""
    tracker = OpenTracker()
    try:
        tracker.start()
        yield tracker
    finally:
        tracker.close()
