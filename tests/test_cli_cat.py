"""``torrent cat`` and ``torrent download --file``: the real commands, end to end.

The commands run as subprocesses (``python -m core.cli``) against a
libtorrent seeder in its own process on 127.0.0.1; their output is compared
byte for byte with the seeded files.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.cli.download_cmd import select_files
from core.cli.file_select import file_names, match_files
from core.cli.main import main
from core.cli.usage import UsageError
from core.formats.create import create_torrent
from core.formats.metainfo import Metainfo
from tests.support.ltharness import (
    LibtorrentPeer,
    LibtorrentPeerFactory,
    lt_peer_factory,
    make_payload,
)

__all__ = ["lt_peer_factory"]

ROOT = str(Path(__file__).resolve().parents[1])
KIB = 1 << 10
NAME = "show"
FILES = {
    "s01/e01.mkv": 400_003,
    "s01/e02.mkv": 300_001,
    "notes.txt": 1234,
}


def build(tmp: Path) -> tuple[Metainfo, Path, Path]:
    seed_dir = tmp / "seed"
    make_payload(seed_dir / NAME, FILES, seed=3)
    mi = create_torrent(seed_dir / NAME, piece_length=32 * KIB)
    path = tmp / "show.torrent"
    path.write_bytes(mi.to_bytes())
    return mi, path, seed_dir


async def lt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def seeder(
    tmp: Path, factory: LibtorrentPeerFactory
) -> tuple[Metainfo, Path, Path, LibtorrentPeer]:
    mi, path, seed_dir = build(tmp)
    peer = await lt(factory, "seeder")
    await lt(peer.add_torrent, path, seed_dir, seed=True)
    return mi, path, seed_dir, peer


def cli(*args: str, timeout: float = 40) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


# -- path matching ---------------------------------------------------------------


def test_paths_with_or_without_the_torrent_name(tmp_path: Path) -> None:
    mi, _, _ = build(tmp_path)
    info = mi.info
    names = file_names(info)
    e02 = names["s01/e02.mkv"]
    assert names["show/s01/e02.mkv"] == e02
    assert match_files(info, ["s01/e02.mkv", "show/s01/e02.mkv", "./s01//e02.mkv"]) == [e02]
    with pytest.raises(UsageError) as err:
        match_files(info, ["s01/e03.mkv"])
    assert "did you mean" in str(err.value) and "s01/e02.mkv" in str(err.value)
    # Each file is suggested once, by its path inside the torrent.
    assert "show/s01/e02.mkv" not in str(err.value)
    assert str(err.value).count("s01/e02.mkv") == 1
    with pytest.raises(UsageError, match="no such file"):
        match_files(info, ["zzz"])
    assert select_files([mi], []) is None
    assert select_files([mi], ["notes.txt", "show/notes.txt"]) == {
        mi.info_hash.wire: [names["notes.txt"]]
    }


def test_single_file_torrent_is_named_by_its_name(tmp_path: Path) -> None:
    make_payload(tmp_path, {"movie.mkv": 1000}, seed=1)
    mi = create_torrent(tmp_path / "movie.mkv", piece_length=16 * KIB)
    assert match_files(mi.info, ["movie.mkv"]) == [0]


def test_cat_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, path, _ = build(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["cat", "--no-dht", str(path), "s01/e9.mkv", "--peer", "127.0.0.1:1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "s01/e01.mkv" in err
    assert main(["cat", "--no-dht", "magnet:?xt=urn:btih:" + "a" * 40, "x"]) == 1
    assert "no peers to read from" in capsys.readouterr().err  # a magnet with nowhere to ask
    with pytest.raises(SystemExit):
        main(["download", "--no-dht", str(path), "--file", "nope.bin", "--peer", "127.0.0.1:1"])
    assert "--file 'nope.bin'" in capsys.readouterr().err


# -- end to end --------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.timeout(90)
async def test_cat_streams_a_file_and_ranges(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    _, path, seed_dir, peer = await seeder(tmp_path, lt_peer_factory)
    want = (seed_dir / NAME / "s01/e01.mkv").read_bytes()
    addr = f"127.0.0.1:{peer.port}"
    out = await lt(cli, "cat", "--no-dht", str(path), "s01/e01.mkv", "--peer", addr)
    assert out.returncode == 0, out.stderr
    assert out.stdout == want
    # A range crossing piece boundaries, named with the torrent's name.
    out = await lt(
        cli, "cat", "--no-dht", str(path), "show/s01/e01.mkv",
        "--offset", "32760", "--length", "70000", "--peer", addr,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == want[32760 : 32760 + 70000]
    # Past the end: nothing, successfully; a length running past the end stops there.
    out = await lt(
        cli,
        "cat",
        "--no-dht",
        str(path),
        "notes.txt",
        "--offset",
        "1200",
        "--length",
        "999",
        "--peer",
        addr,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == (seed_dir / NAME / "notes.txt").read_bytes()[1200:]


@pytest.mark.interop
@pytest.mark.timeout(60)
async def test_cat_into_a_pipe_that_closes_early(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    _, path, seed_dir, peer = await seeder(tmp_path, lt_peer_factory)
    cmd = (
        f"{sys.executable} -m core.cli cat {path} s01/e02.mkv --peer 127.0.0.1:{peer.port}"
        " | head -c 1000"
    )
    out = await lt(
        subprocess.run, cmd, shell=True, cwd=ROOT, capture_output=True, timeout=40, check=False
    )
    assert out.stdout == (seed_dir / NAME / "s01/e02.mkv").read_bytes()[:1000]
    assert b"Traceback" not in out.stderr


def test_cat_without_peers_fails_clearly(tmp_path: Path) -> None:
    _, path, _ = build(tmp_path)
    out = cli("cat", "--no-dht", str(path), "notes.txt", timeout=30)
    assert out.returncode == 1
    assert b"no peers to read from" in out.stderr
    assert out.stdout == b""


@pytest.mark.interop
@pytest.mark.timeout(90)
async def test_download_only_the_named_files(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    _, path, seed_dir, peer = await seeder(tmp_path, lt_peer_factory)
    dest = tmp_path / "out"
    out = await lt(
        cli, "download", "--no-dht", str(path), "-o", str(dest),
        "--state-dir", str(tmp_path / "state"),
        "--file", "s01/e02.mkv", "--file", "show/notes.txt", "-q", "--sequential",
        "--peer", f"127.0.0.1:{peer.port}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for rel in ("s01/e02.mkv", "notes.txt"):
        assert (dest / NAME / rel).read_bytes() == (seed_dir / NAME / rel).read_bytes()
    # e01.mkv is never completed (at most the pieces it shares with e02 are there).
    e01 = dest / NAME / "s01/e01.mkv"
    if e01.exists():
        assert e01.read_bytes() != (seed_dir / NAME / "s01/e01.mkv").read_bytes()
