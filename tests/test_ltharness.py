"""The libtorrent interop harness works: two real libtorrent peers on loopback.

No engine code here: this proves the harness itself (process control, the
JSON protocol, sealing to loopback, connection options) so that interop
failures later can be blamed on the engine, not on the harness.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import libtorrent as lt
import pytest

from tests.support.ltharness import (
    Encryption,
    LibtorrentPeer,
    LibtorrentPeerError,
    LibtorrentPeerFactory,
    LibtorrentPeerTimeout,
    Status,
    TorrentVersion,
    lt_create_torrent,
    lt_peer_factory,
    make_payload,
    sha256_tree,
)

_ROOT = str(Path(__file__).resolve().parents[1])

__all__ = ["lt_peer_factory"]  # the fixture is used by name below

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

MIB = 1 << 20
# 4 MiB in total, uneven sizes so files straddle piece boundaries.
MULTI_FILE = {"a.bin": 1_500_000, "sub/b.bin": 2_000_000, "sub/deeper/c.bin": 694_304}
PIECE = 256 * 1024


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _setup(
    tmp_path: Path, files: dict[str, int], version: TorrentVersion = "v1", seed: int = 1
) -> tuple[Path, Path, Path]:
    """Payload under seed/payload, its torrent, and an empty leech dir."""
    seed_dir = tmp_path / "seed"
    make_payload(seed_dir / "payload", files, seed=seed)
    torrent = tmp_path / "payload.torrent"
    torrent.write_bytes(lt_create_torrent(seed_dir / "payload", PIECE, version))
    leech_dir = tmp_path / "leech"
    leech_dir.mkdir()
    return torrent, seed_dir, leech_dir


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_seeder_to_leecher_multi_file(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory, version: TorrentVersion
) -> None:
    torrent, seed_dir, leech_dir = _setup(tmp_path, MULTI_FILE, version)
    seeder = lt_peer_factory("seeder")
    leecher = lt_peer_factory("leecher")
    assert seeder.port != leecher.port

    ih = seeder.add_torrent(torrent, seed_dir, seed=True)
    assert leecher.add_torrent(torrent, leech_dir) == ih
    assert len(ih) == (64 if version == "v2" else 40)
    assert seeder.status(ih)["is_seeding"]
    assert leecher.status(ih)["progress"] == 0.0

    leecher.connect(ih, "127.0.0.1", seeder.port)
    seen: list[Status] = []
    final = leecher.wait_seeding(ih, timeout=30, on_progress=seen.append)

    assert final["total_wanted"] == sum(MULTI_FILE.values())
    assert final["total_download"] >= sum(MULTI_FILE.values())
    assert final["errors"] == []
    progress = [s["progress_ppm"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 1_000_000
    assert seeder.status(ih)["total_upload"] >= sum(MULTI_FILE.values())
    # The leecher saw the seeder as a libtorrent peer on loopback.
    connects = leecher.events("peer_connect")
    assert any(e["peer"] == ["127.0.0.1", seeder.port] for e in connects)

    pids = [seeder.pid, leecher.pid]
    assert seeder.stop() == 0
    assert leecher.stop() == 0
    assert all(_pid_gone(pid) for pid in pids)
    # libtorrent may report "seeding" before its disk thread wrote the last
    # blocks; stopping the session flushes them.
    assert sha256_tree(leech_dir / "payload") == sha256_tree(seed_dir / "payload")
    assert not seeder.running and not leecher.running


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine cannot bind [::1]")
def test_seeder_to_leecher_over_ipv6(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    torrent, seed_dir, leech_dir = _setup(tmp_path, {"one.bin": MIB + 12345}, seed=2)
    seeder = lt_peer_factory("seeder6", ipv6=True)
    leecher = lt_peer_factory("leecher6", ipv6=True)
    assert seeder.port6 is not None and seeder.port6 > 0

    ih = seeder.add_torrent(torrent, seed_dir, seed=True)
    leecher.add_torrent(torrent, leech_dir)
    leecher.connect(ih, "::1", seeder.port6)
    leecher.wait_seeding(ih, timeout=30)

    assert sha256_tree(leech_dir / "payload") == sha256_tree(seed_dir / "payload")
    connects = leecher.events("peer_connect")
    assert any(e["peer"] == ["::1", seeder.port6] for e in connects)


@pytest.mark.parametrize(
    ("encryption", "utp", "present", "absent"),
    [
        ("plaintext", False, set(), {"rc4_encrypted", "plaintext_encrypted", "utp_socket"}),
        ("forced", False, {"rc4_encrypted"}, {"utp_socket", "plaintext_encrypted"}),
        ("plaintext", True, {"utp_socket"}, {"rc4_encrypted", "plaintext_encrypted"}),
    ],
)
def test_connection_options_and_rate_limit(
    tmp_path: Path,
    lt_peer_factory: LibtorrentPeerFactory,
    encryption: Encryption,
    utp: bool,
    present: set[str],
    absent: set[str],
) -> None:
    # A slow seeder keeps the link up long enough to inspect it (two seeds
    # would disconnect) and shows that the upload limit applies on loopback.
    size = MIB
    rate = 32 * 1024
    torrent, seed_dir, leech_dir = _setup(tmp_path, {"x.bin": size}, seed=3)
    seeder = lt_peer_factory("seeder", encryption=encryption, utp=utp, upload_rate=rate)
    leecher = lt_peer_factory("leecher", encryption=encryption, utp=utp)
    ih = seeder.add_torrent(torrent, seed_dir, seed=True)
    leecher.add_torrent(torrent, leech_dir)

    leecher.connect(ih, "127.0.0.1", seeder.port)
    live = leecher.wait_until(
        ih,
        lambda s: any("supports_extensions" in p["flags"] for p in s["peers"]),
        timeout=20,
        what="an established peer",
    )
    peer = live["peers"][0]
    flags = set(peer["flags"])
    assert present <= flags, flags
    assert not (absent & flags), flags
    assert (peer["ip"], peer["port"]) == ("127.0.0.1", seeder.port)
    assert "libtorrent" in peer["client"].lower()

    time.sleep(0.5)
    # Unlimited, the whole MiB crosses loopback in about 0.1 s.
    assert leecher.status(ih)["total_download"] < size // 2


def test_sealed_to_loopback(tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory) -> None:
    seed_dir = tmp_path / "seed"
    make_payload(seed_dir / "payload", {"f.bin": 40_000}, seed=4)
    torrent = tmp_path / "t.torrent"
    trackers = ["http://192.0.2.1:6969/announce", "http://127.0.0.1:9/announce"]
    torrent.write_bytes(lt_create_torrent(seed_dir / "payload", 16384, "v1", trackers))
    peer = lt_peer_factory("sealed")
    ih = peer.add_torrent(torrent, seed_dir, seed=True)

    assert peer.status(ih)["trackers"] == ["http://127.0.0.1:9/announce"]
    for host in ("192.0.2.1", "::ffff:192.0.2.1", "localhost", "2001:db8::1"):
        with pytest.raises(LibtorrentPeerError, match="non-loopback"):
            peer.connect(ih, host, 6881)
    with pytest.raises(LibtorrentPeerError, match="no torrent"):
        peer.status("00" * 20)
    # A refused command leaves the peer working.
    assert peer.status(ih)["is_seeding"]


def test_wait_times_out_with_status(tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory) -> None:
    torrent, _, leech_dir = _setup(tmp_path, {"f.bin": 100_000}, seed=5)
    peer = lt_peer_factory("lonely")
    ih = peer.add_torrent(torrent, leech_dir)
    started = time.monotonic()
    with pytest.raises(LibtorrentPeerTimeout, match=r"(?s)progress 50%.*progress=0\.000"):
        peer.wait_progress(ih, 0.5, timeout=0.5)
    assert time.monotonic() - started < 5


def test_dead_peer_reports_stderr_tail(lt_peer_factory: LibtorrentPeerFactory) -> None:
    peer = lt_peer_factory("doomed")
    os.kill(peer.pid, signal.SIGKILL)
    with pytest.raises(LibtorrentPeerError, match=r"exited with code -9") as info:
        peer.status("00" * 20, timeout=5)
    assert f"lt_peer: libtorrent {lt.__version__}" in str(info.value)
    assert peer.stop() == -signal.SIGKILL
    assert _pid_gone(peer.pid)


def test_stop_kills_a_peer_that_does_not_quit() -> None:
    with LibtorrentPeer("frozen") as peer:
        peer.start()
        pid = peer.pid
        os.kill(pid, signal.SIGSTOP)  # cannot read "quit" any more
        started = time.monotonic()
        assert peer.stop(grace=0.5) == -signal.SIGKILL
        assert time.monotonic() - started < 5
    assert _pid_gone(pid)


def test_context_manager_stops_on_error() -> None:
    pid = None
    with pytest.raises(ZeroDivisionError), LibtorrentPeer("ctx") as peer:
        peer.start()
        pid = peer.pid
        assert peer.running
        _ = 1 / 0
    assert pid is not None and _pid_gone(pid)


def test_make_payload_is_deterministic_per_file(tmp_path: Path) -> None:
    make_payload(tmp_path / "a", {"x": 3 * MIB + 7, "d/y": 0}, seed=9)
    make_payload(tmp_path / "b", {"x": 3 * MIB + 7, "z": 10}, seed=9)
    make_payload(tmp_path / "c", {"x": 3 * MIB + 7}, seed=10)
    a, b, c = (sha256_tree(tmp_path / n) for n in "abc")
    assert sorted(a) == ["d/y", "x"]
    assert (tmp_path / "a" / "x").stat().st_size == 3 * MIB + 7
    assert a["x"] == b["x"]  # other files do not change a file's bytes
    assert a["x"] != c["x"]  # the seed does
    assert a["d/y"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    ("version", "v1", "v2"), [("v1", True, False), ("v2", False, True), ("hybrid", True, True)]
)
def test_lt_create_torrent_versions(
    tmp_path: Path, version: TorrentVersion, v1: bool, v2: bool
) -> None:
    make_payload(tmp_path / "root", {"a": 70_000, "s/b": 5}, seed=1)
    data = lt_create_torrent(tmp_path / "root", 32768, version, ["http://127.0.0.1:1/a"])
    atp = lt.load_torrent_buffer(data)
    ti = atp.ti
    assert ti is not None
    assert ti.info_hashes().has_v1() is v1
    assert ti.info_hashes().has_v2() is v2
    assert ti.piece_length() == 32768
    assert ti.name() == "root"
    assert ti.total_size() >= 70_005  # v1/hybrid may add pad files
    assert atp.trackers == ["http://127.0.0.1:1/a"]


def test_lt_create_torrent_single_file(tmp_path: Path) -> None:
    make_payload(tmp_path, {"only.bin": 50_000}, seed=1)
    ti = lt.load_torrent_buffer(lt_create_torrent(tmp_path / "only.bin", 16384)).ti
    assert ti is not None
    assert ti.name() == "only.bin"
    assert ti.num_files() == 1
    assert ti.total_size() == 50_000
    assert ti.num_pieces() == 4


def _wait_pid_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` has exited (a zombie left for init counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return _pid_gone(pid)


@pytest.mark.parametrize("ending", ["atexit", "controller killed"])
def test_peer_never_outlives_its_controller(ending: str) -> None:
    # A controller that forgets stop() (atexit stops the peer) or dies by
    # SIGKILL (the peer sees end of stdin and quits).
    code = (
        f"import os, signal, sys; sys.path.insert(0, {_ROOT!r})\n"
        "from tests.support.ltharness import LibtorrentPeer\n"
        "p = LibtorrentPeer('orphan'); p.start(); print(p.pid, flush=True)\n"
        + ("os.kill(os.getpid(), signal.SIGKILL)\n" if ending != "atexit" else "")
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    pid = int(out.stdout.split()[0])
    assert _wait_pid_gone(pid), f"libtorrent peer {pid} survived: {out.stderr}"
