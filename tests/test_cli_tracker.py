"""``torrent announce``, ``torrent scrape``, and ``torrent download`` finding peers by tracker.

Against a real opentracker on 127.0.0.1 (skipped when not installed, failing
in CI; see tests/support/opentracker.py).  announce/scrape run ``main()`` in
process; the download runs the real command in a subprocess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import pytest

from core.cli.main import main
from core.engine.client import Client
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.tracker import announce, scrape
from core.tracker.types import AnnounceEvent, AnnounceRequest
from tests.support.download import download_process, finish
from tests.support.engine import loopback_config, make_torrent, tree_digest
from tests.support.opentracker import OpenTracker, opentracker

__all__ = ["opentracker"]  # fixture used by name

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]

IH = bytes.fromhex("00112233445566778899aabbccddeeff00112233")
OTHER = bytes.fromhex("ffeeddccbbaa99887766554433221100ffeeddcc")
FILES = {"t/a.bin": 400_000, "t/b.bin": 33_333}
PIECE = 32768


def _url(tracker: OpenTracker, proto: str) -> str:
    return tracker.http_url if proto == "http" else tracker.udp_url


def _register(url: str, peer: int, port: int, *, left: int, info_hash: bytes = IH) -> None:
    req = AnnounceRequest(
        info_hash=info_hash,
        peer_id=b"-TS0001-" + f"{peer:012d}".encode(),
        port=port,
        left=left,
        event=AnnounceEvent.STARTED,
    )
    asyncio.run(announce(url, req, timeout=5))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("proto", ["http", "udp"])
def test_announce_prints_peers_and_interval(
    opentracker: OpenTracker, proto: str, capsys: pytest.CaptureFixture[str]
) -> None:
    opentracker.allow(IH)
    url = _url(opentracker, proto)
    _register(url, 1, 45001, left=0)
    argv = ["announce", IH.hex(), url, "--port", "45002", "--event", "started", "--left", "9"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("interval ")
    assert int(out[0].split()[1].rstrip("s")) > 0
    if proto == "http":  # BEP 15 has no min interval
        assert out[0].endswith("s)") and "(min " in out[0]
    assert out[1] == "seeders 1  leechers 1"
    peers = out[out.index(next(line for line in out if line.startswith("peers "))) + 1 :]
    assert int(out[2].split()[1]) == len(peers)
    assert "127.0.0.1:45001" in peers


def test_announce_a_torrent_file_reports_its_size_as_left(
    tmp_path: Path, opentracker: OpenTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    mi = make_torrent(tmp_path / "src", FILES, PIECE)
    tf = tmp_path / "t.torrent"
    tf.write_bytes(mi.to_bytes())
    opentracker.allow(mi.info_hash.wire)
    assert main(["announce", str(tf), opentracker.udp_url, "--event", "started"]) == 0
    assert "seeders 0  leechers 1" in capsys.readouterr().out  # left > 0: a leecher
    assert main(["scrape", opentracker.http_url, mi.info_hash.hex()]) == 0
    line = capsys.readouterr().out.strip()
    assert line == f"{mi.info_hash.hex()}  seeders 0  leechers 1  completed 0"


@pytest.mark.parametrize("proto", ["http", "udp"])
def test_scrape_prints_seeders_leechers_completed(
    opentracker: OpenTracker, proto: str, capsys: pytest.CaptureFixture[str]
) -> None:
    opentracker.allow(IH)
    url = _url(opentracker, proto)
    _register(url, 1, 46001, left=0)
    _register(url, 2, 46002, left=0)
    _register(url, 3, 46003, left=100)
    assert main(["scrape", url, IH.hex(), OTHER.hex()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{IH.hex()}  seeders 2  leechers 1  completed 0"
    assert lines[1] in (
        f"{OTHER.hex()}  unknown to the tracker",
        f"{OTHER.hex()}  seeders 0  leechers 0  completed 0",
    )
    assert len(lines) == 2
    # base32 works too and names the same torrent
    import base64

    assert main(["scrape", url, base64.b32encode(IH).decode()]) == 0
    assert capsys.readouterr().out.splitlines() == lines[:1]


def test_tracker_failures_are_one_line(
    opentracker: OpenTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused (not on the whitelist), over both protocols.
    for url in (opentracker.http_url, opentracker.udp_url):
        assert main(["announce", OTHER.hex(), url, "--timeout", "3"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("torrent: error: ")
        assert "not authorized" in err or "refused" in err
    # Unreachable.
    dead = f"http://127.0.0.1:{_closed_port()}/announce"
    assert main(["scrape", dead, IH.hex()]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("torrent: error: tracker scrape failed")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scrape", "ftp://x/announce", IH.hex()], "unsupported tracker URL"),
        (["scrape", "http://x/announce", "1234"], "is not an info-hash"),
        (["announce", IH.hex(), "http://x/announce", "--port", "70000"], "--port"),
        (["announce", IH.hex(), "http://x/announce", "--timeout", "0"], "--timeout"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------- torrent download


@pytest.mark.parametrize("proto", ["http", "udp"])
async def test_download_finds_seeder_through_the_torrents_tracker(
    tmp_path: Path, opentracker: OpenTracker, proto: str
) -> None:
    url = _url(opentracker, proto)
    src = tmp_path / "src"
    mi = dataclasses.replace(make_torrent(src, FILES, PIECE), announce_list=((url,),))
    tf = tmp_path / "x.torrent"
    tf.write_bytes(mi.to_bytes())
    assert Metainfo.from_bytes(tf.read_bytes()).announce_list == ((url,),)
    await asyncio.to_thread(opentracker.allow, mi.info_hash.wire)
    async with Client(loopback_config(tmp_path, "seeder")) as seeder:
        st = await seeder.add_metainfo(mi, download_dir=src)
        assert st.state is TorrentState.SEEDING
        async with asyncio.timeout(10):
            while not any(s.last_result == "ok" for s in st.trackers()):
                await asyncio.sleep(0.02)
        out = tmp_path / "out"
        args = [str(tf), "-o", str(out), "--listen", "127.0.0.1"]
        args += ["--state-dir", str(tmp_path / "state"), "-q", "--connect-timeout", "15"]
        async with download_process(*args) as proc:  # no --peer
            code, err = await finish(proc, 25)
        assert code == 0, err
        assert tree_digest(out) == tree_digest(src)
        assert st.stats().bytes_written_data >= sum(FILES.values())
    figures = await scrape(opentracker.http_url, [mi.info_hash.wire], timeout=5)
    assert figures[mi.info_hash.wire].completed == 1  # the download told the tracker


def test_download_with_only_a_dead_tracker_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/announce"
    mi = dataclasses.replace(make_torrent(tmp_path / "src", FILES, PIECE), announce_list=((dead,),))
    tf = tmp_path / "x.torrent"
    tf.write_bytes(mi.to_bytes())
    argv = [
        "download",
        "--no-dht",
        str(tf),
        "-o",
        str(tmp_path / "out"),
        "-q",
        "--listen",
        "127.0.0.1",
    ]
    argv += ["--state-dir", str(tmp_path / "s"), "--connect-timeout", "1"]
    assert main(argv) == 1  # not refused at once: the tracker might have answered
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("torrent: error: no peer reachable for 1s")
    assert f"tracker {dead}: tracker announce failed" in err
