"""Drive a real libtorrent peer (tests/support/lt_peer.py) from a test.

Interop tests need a reference peer that is not our engine. The peer runs in
its own process so its threads and GIL never stall the test's event loop and
so a hung peer can be killed; this module is the test-side controller:
start it, send commands as JSON lines, wait on its answers with a timeout,
and make sure it is gone afterwards, whatever the test did.

Also here: deterministic payloads, torrents built by libtorrent (an
independent reference for our own metainfo code) and a SHA-256 tree to
compare downloads.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import libtorrent as lt
import pytest

Encryption = Literal["plaintext", "disabled", "enabled", "forced"]
TorrentVersion = Literal["v1", "v2", "hybrid"]
Status = dict[str, Any]
ProgressCallback = Callable[[Status], None]

LT_PEER_SCRIPT = Path(__file__).with_name("lt_peer.py")
DEFAULT_TIMEOUT = 10.0
_STDERR_TAIL = 40


class LibtorrentPeerError(RuntimeError):
    """The peer refused a command, reported a torrent error, or died."""


class LibtorrentPeerTimeout(LibtorrentPeerError, TimeoutError):
    """The peer did not answer or reach the wanted state in time."""


_LIVE: set[LibtorrentPeer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_live() -> None:
    """atexit backstop: no libtorrent process outlives the test run."""
    with _LIVE_LOCK:
        peers = list(_LIVE)
    for peer in peers:
        peer.stop(grace=0.5)


atexit.register(_stop_all_live)


class LibtorrentPeer:
    """A libtorrent session in a child process, sealed to loopback.

    Use as a context manager (``with LibtorrentPeer() as p: port = p.start()``)
    or through the ``lt_peer_factory`` fixture. Every call takes a timeout;
    if the child dies, calls raise LibtorrentPeerError carrying its stderr tail.
    """

    def __init__(self, name: str = "lt", *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.name = name
        self.timeout = timeout
        self._port: int | None = None
        self.port6: int | None = None  # set by start(ipv6=True)
        self._proc: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._responses: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._next_id = 0
        self._eof = False
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------

    def start(
        self,
        ipv6: bool = False,
        utp: bool = False,
        encryption: Encryption = "plaintext",
        upload_rate: int | None = None,
        download_rate: int | None = None,
        settings: Mapping[str, Any] | None = None,
        timeout: float = 20.0,
    ) -> int:
        """Start the child and return its IPv4 TCP port (``port6`` for [::1]).

        ``settings`` are extra libtorrent settings_pack keys, applied last.
        Rates are bytes per second; None means unlimited.
        """
        if self._proc is not None:
            raise LibtorrentPeerError(f"{self.name}: already started")
        argv = [sys.executable, "-u", str(LT_PEER_SCRIPT), "--encryption", encryption]
        if ipv6:
            argv.append("--ipv6")
        if utp:
            argv.append("--utp")
        if upload_rate:
            argv += ["--upload-rate", str(int(upload_rate))]
        if download_rate:
            argv += ["--download-rate", str(int(download_rate))]
        if settings:
            argv += ["--settings", json.dumps(dict(settings))]
        ev = self._launch(argv, timeout)
        self._port = int(ev["port"])
        self.port6 = int(ev["port6"]) if ev.get("port6") is not None else None
        return self._port

    def _launch(
        self, argv: list[str], timeout: float, cwd: str | Path | None = None
    ) -> dict[str, Any]:
        """Spawn the child with ``argv``, read its streams, wait for its ``listening`` event.

        Shared by every libtorrent child (the plain peer and the DHT and
        transport variants in ``lt_dht`` / ``lt_transport``): its own
        session, registered for the atexit backstop, stopped again if it
        never says it listens.
        """
        self._proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,  # Ctrl-C in the test goes to pytest only
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        proc = self._proc
        assert proc.stdout is not None and proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            return self.wait_event("listening", timeout=timeout)
        except BaseException:
            self.stop(grace=0)
            raise

    def stop(self, grace: float = 3.0) -> int | None:
        """Ask the child to quit, SIGKILL it after ``grace`` seconds, reap it.

        Idempotent; returns the exit code (negative for a signal), or None if
        the peer was never started.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                self._send({"id": -1, "cmd": "quit"})
                assert proc.stdin is not None
                proc.stdin.close()
            except (OSError, ValueError, LibtorrentPeerError):
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=2)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return proc.returncode

    def __enter__(self) -> LibtorrentPeer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP (and uTP) listen port on 127.0.0.1."""
        if self._port is None:
            raise LibtorrentPeerError(f"{self.name}: not started")
        return self._port

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LibtorrentPeerError(f"{self.name}: not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stderr_tail(self) -> str:
        with self._cond:
            return "\n".join(self._stderr)

    # -- commands ------------------------------------------------------------------

    def add_torrent(
        self,
        torrent_path: str | os.PathLike[str],
        save_path: str | os.PathLike[str],
        seed: bool = False,
        timeout: float | None = None,
    ) -> str:
        """Add a .torrent; ``seed`` skips the hash check (data must be there).

        Returns the hex info-hash: v1 when the torrent has one, else full v2.
        """
        result = self.request(
            "add",
            timeout=timeout,
            torrent=str(Path(torrent_path).resolve()),
            save_path=str(Path(save_path).resolve()),
            seed_mode=seed,
        )
        return str(result["info_hash"])

    def add_magnet(
        self, uri: str, save_path: str | os.PathLike[str], timeout: float | None = None
    ) -> str:
        result = self.request(
            "add_magnet", timeout=timeout, uri=uri, save_path=str(Path(save_path).resolve())
        )
        return str(result["info_hash"])

    def connect(self, info_hash: str, host: str, port: int, timeout: float | None = None) -> None:
        """Have the peer dial ``host:port`` for this torrent (loopback only)."""
        self.request("connect", timeout=timeout, info_hash=info_hash, host=host, port=port)

    def remove(
        self, info_hash: str, delete_files: bool = False, timeout: float | None = None
    ) -> None:
        self.request("remove", timeout=timeout, info_hash=info_hash, delete_files=delete_files)

    def status(self, info_hash: str, timeout: float | None = None) -> Status:
        """Progress, state, rates, totals, peers (ip, port, client, flags), errors."""
        result = self.request("status", timeout=timeout, info_hash=info_hash)
        assert isinstance(result, dict)
        return result

    def session_errors(self, timeout: float | None = None) -> list[str]:
        result = self.request("events", timeout=timeout)
        return [str(e) for e in result["session_errors"]]

    # -- waiting -------------------------------------------------------------------

    def wait_until(
        self,
        info_hash: str,
        predicate: Callable[[Status], bool],
        timeout: float,
        what: str,
        on_progress: ProgressCallback | None = None,
        poll: float = 0.1,
    ) -> Status:
        """Poll status until ``predicate`` holds; fail fast on a torrent error."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(info_hash, timeout=max(1.0, min(self.timeout, timeout)))
            if on_progress is not None:
                on_progress(st)
            if predicate(st):
                return st
            if st["error"]:
                raise LibtorrentPeerError(
                    f"{self.name}: torrent error while waiting for {what}: {st['error']}"
                    f"\n{_summarise(st)}"
                )
            if time.monotonic() >= deadline:
                raise LibtorrentPeerTimeout(
                    f"{self.name}: no {what} within {timeout:.1f}s\n{_summarise(st)}"
                )
            time.sleep(poll)

    def wait_seeding(
        self, info_hash: str, timeout: float = 30.0, on_progress: ProgressCallback | None = None
    ) -> Status:
        """Wait until the torrent is complete and seeding; returns the final status."""
        return self.wait_until(
            info_hash, lambda s: bool(s["is_seeding"]), timeout, "seeding", on_progress
        )

    def wait_progress(
        self,
        info_hash: str,
        fraction: float,
        timeout: float = 30.0,
        on_progress: ProgressCallback | None = None,
    ) -> Status:
        """Wait until at least ``fraction`` (0..1) of the wanted data is verified."""
        return self.wait_until(
            info_hash,
            lambda s: s["progress_ppm"] >= round(fraction * 1_000_000),
            timeout,
            f"progress {fraction:.0%}",
            on_progress,
        )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Events printed by the peer so far (optionally only those named)."""
        with self._cond:
            return [e for e in self._events if name is None or e["event"] == name]

    def wait_event(
        self,
        name: str,
        timeout: float | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Wait for an event ``name`` (already seen ones count) and return it."""

        def find() -> dict[str, Any] | None:
            for e in self._events:
                if e["event"] == name and (predicate is None or predicate(e)):
                    return e
            return None

        limit = self.timeout if timeout is None else timeout
        with self._cond:
            self._cond.wait_for(lambda: find() is not None or self._eof, timeout=limit)
            found = find()
        if found is not None:
            return found
        self._raise_if_dead(f"event {name!r}")
        raise LibtorrentPeerTimeout(f"{self.name}: no event {name!r} within {limit:.1f}s")

    # -- plumbing ------------------------------------------------------------------

    def request(self, cmd: str, timeout: float | None = None, **args: Any) -> Any:
        """Send one command and wait for its answer; raise on refusal or death."""
        if self._proc is None:
            raise LibtorrentPeerError(f"{self.name}: not started")
        with self._cond:
            self._next_id += 1
            req_id = self._next_id
        self._send({"id": req_id, "cmd": cmd, **args})
        limit = self.timeout if timeout is None else timeout
        with self._cond:
            self._cond.wait_for(lambda: req_id in self._responses or self._eof, timeout=limit)
            reply = self._responses.pop(req_id, None)
        if reply is None:
            self._raise_if_dead(f"reply to {cmd!r}")
            raise LibtorrentPeerTimeout(f"{self.name}: no reply to {cmd!r} within {limit:.1f}s")
        if not reply.get("ok"):
            raise LibtorrentPeerError(f"{self.name}: {cmd} failed: {reply.get('error')}")
        return reply.get("result")

    def _send(self, obj: dict[str, Any]) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        line = json.dumps(obj) + "\n"
        try:
            with self._write_lock:
                proc.stdin.write(line)
                proc.stdin.flush()
        except (ValueError, OSError) as exc:
            self._raise_if_dead(f"sending {obj.get('cmd')!r}")
            raise LibtorrentPeerError(
                f"{self.name}: cannot write to the peer: {exc!r}; stderr tail:\n"
                f"{self.stderr_tail()}"
            ) from exc

    def _raise_if_dead(self, waiting_for: str) -> None:
        proc = self._proc
        if proc is None:
            return
        with self._cond:
            eof = self._eof
        if not eof and proc.poll() is None:
            return
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        for t in self._threads[1:]:
            t.join(timeout=1)  # let the stderr reader catch the last lines
        raise LibtorrentPeerError(
            f"{self.name}: libtorrent peer (pid {proc.pid}) exited with code {code} "
            f"while waiting for {waiting_for}; stderr tail:\n{self.stderr_tail()}"
        )

    def _read_stdout(self, stream: Iterable[str]) -> None:
        try:
            for line in stream:
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = None
                with self._cond:
                    if not isinstance(msg, dict):
                        self._stderr.append(f"[stdout] {line.rstrip()}")
                    elif "event" in msg:
                        self._events.append(msg)
                    elif isinstance(msg.get("id"), int):
                        self._responses[msg["id"]] = msg
                    else:
                        self._stderr.append(f"[stdout] {line.rstrip()}")
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _read_stderr(self, stream: Iterable[str]) -> None:
        try:
            for line in stream:
                with self._cond:
                    self._stderr.append(line.rstrip())
        except (OSError, ValueError):
            pass


def _summarise(st: Status) -> str:
    peers = ", ".join(
        f"{p['ip']}:{p['port']} {p['client']!r} {'/'.join(p['flags'])}" for p in st["peers"]
    )
    return (
        f"state={st['state']} progress={st['progress']:.3f} peers={st['num_peers']} "
        f"down={st['total_download']} up={st['total_upload']} errors={st['errors'][-5:]} "
        f"peer list=[{peers}]"
    )


class LibtorrentPeerFactory:
    """Starts named peers on demand and stops every one of them at close()."""

    def __init__(self) -> None:
        self.peers: list[LibtorrentPeer] = []

    def __call__(
        self,
        name: str = "lt",
        *,
        ipv6: bool = False,
        utp: bool = False,
        encryption: Encryption = "plaintext",
        upload_rate: int | None = None,
        download_rate: int | None = None,
        settings: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> LibtorrentPeer:
        peer = LibtorrentPeer(name, timeout=timeout)
        self.peers.append(peer)
        peer.start(
            ipv6=ipv6,
            utp=utp,
            encryption=encryption,
            upload_rate=upload_rate,
            download_rate=download_rate,
            settings=settings,
        )
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.stop()


@pytest.fixture
def lt_peer_factory() -> Iterator[LibtorrentPeerFactory]:
    """``peer = lt_peer_factory("seeder", ipv6=True)``: started, always stopped."""
    factory = LibtorrentPeerFactory()
    try:
        yield factory
    finally:
        factory.close()


# -- payloads and reference torrents --------------------------------------------------

_CHUNK = 1 << 20


def make_payload(root: str | os.PathLike[str], files: Mapping[str, int], seed: int) -> None:
    """Write ``{relpath: size}`` under ``root`` with deterministic pseudo-random bytes.

    Each file's content depends only on (seed, relpath, size), not on which
    other files are listed, so payloads can be grown without changing bytes.
    """
    base = Path(root)
    for rel, size in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}:{rel}")
        with path.open("wb") as f:
            left = size
            while left > 0:
                n = min(left, _CHUNK)
                f.write(rng.randbytes(n))
                left -= n


def lt_create_torrent(
    root: str | os.PathLike[str],
    piece_length: int,
    version: TorrentVersion = "v1",
    trackers: Iterable[str] = (),
) -> bytes:
    """Build a .torrent for a file or directory with libtorrent, in-process.

    A reference independent of our metainfo code. A directory gives a
    multi-file torrent named after it; its parent is the save path.
    """
    path = Path(root).resolve()
    flags = {
        "v1": lt.create_torrent.v1_only,
        "v2": lt.create_torrent.v2_only,
        "hybrid": 0,
    }[version]
    ct = lt.create_torrent(lt.list_files(str(path)), piece_length, flags)
    for tier, url in enumerate(trackers):
        ct.add_tracker(url, tier)
    lt.set_piece_hashes(ct, str(path.parent))
    return bytes(lt.bencode(ct.generate()))


def sha256_tree(root: str | os.PathLike[str]) -> dict[str, str]:
    """``{posix relpath: sha256 hex}`` for every regular file under ``root``."""
    base = Path(root)
    out: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.is_symlink():
            h = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            out[path.relative_to(base).as_posix()] = h.hexdigest()
    return out
