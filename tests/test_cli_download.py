"""``torrent download``: arguments, progress output, exits and errors.

End-to-end cases run the real command (``python -m core.cli download``) in a
subprocess against a seeder Client in the test process; cases that fail
before any peer traffic run ``main()`` in-process.  Crash/restart is in
test_restart.py, full and read-only disks in test_disk_errors.py.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pty
import signal
import socket
import sys
from pathlib import Path

import pytest

from core.cli import fmt
from core.cli.download_cmd import (
    EXIT_SIGTERM,
    PLAIN_INTERVAL,
    STATE_DIR_ENV,
    Progress,
    build_config,
    parse_peer,
)
from core.cli.main import build_parser, main
from core.cli.usage import UsageError
from core.engine.client import Client
from tests.support.download import (
    cli_args,
    download_process,
    finish,
    seeding,
)
from tests.support.engine import loopback_config, tree_digest

FILES = {"r/a.bin": 700_000, "r/sub/b.bin": 50_000, "r/empty": 0}
PIECE = 32768


# --------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:6881", ("127.0.0.1", 6881)),
        (" 10.0.0.1:1 ", ("10.0.0.1", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:6881", ("::1", 6881)),
        ("[2001:db8::7]:80", ("2001:db8::7", 80)),
    ],
)
def test_parse_peer(text: str, expected: tuple[str, int]) -> None:
    assert parse_peer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        ":6881",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:http",
        "::1:6881",
        "[::1]6881",
        "[::1]",
        "[not-v6]:80",
        "[127.0.0.1]:80",
        "",
    ],
)
def test_parse_peer_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="--peer"):
        parse_peer(text)


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["download", "x.torrent", *argv])


def test_rates_sizes_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STATE_DIR_ENV, raising=False)
    args = _args(
        "--download-rate",
        "500K",
        "--upload-rate",
        "2M",
        "--port",
        "7000",
        "--listen",
        "127.0.0.1",
        "--listen",
        "::1",
        "--state-dir",
        str(tmp_path / "s"),
        "--seed",
        "--no-upload",
    )
    cfg = build_config(args, tmp_path / "out")
    assert cfg.download_rate_limit == 500 * 1024
    assert cfg.upload_rate_limit == 2 * 1024 * 1024
    assert cfg.listen_port == 7000
    assert cfg.listen_addresses == ("127.0.0.1", "::1")
    assert cfg.data_dir == tmp_path / "s"
    assert cfg.download_dir == tmp_path / "out"
    assert cfg.seed and cfg.no_upload
    # 0 means unlimited; without --seed the engine stops uploading when complete.
    cfg = build_config(_args("--download-rate", "0", "--state-dir", "s"), tmp_path)
    assert cfg.download_rate_limit is None and cfg.upload_rate_limit is None
    assert not cfg.seed and not cfg.no_upload
    # The environment overrides the platform default, the flag overrides both.
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "env"))
    assert build_config(_args(), tmp_path).data_dir == tmp_path / "env"
    assert build_config(_args("--state-dir", "f"), tmp_path).data_dir == Path("f")


def test_defaults() -> None:
    args = _args()
    assert args.output == "." and args.peer == [] and args.port == 0
    assert args.connect_timeout == 30.0 and not args.seed and not args.verify


@pytest.mark.parametrize(
    "argv",
    [
        ["--download-rate", "fast"],
        ["--upload-rate", "-1K"],
        ["--port", "http"],
    ],
)
def test_bad_option_values_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["download", "x.torrent", *argv])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--peer", "nonsense"],
        ["--port", "70000"],
        ["--connect-timeout", "-1"],
    ],
)
def test_bad_values_checked_by_the_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["download", "x.torrent", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("torrent: error: ") and err.count("\n") == 1


def test_help_lists_download(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["download", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--peer", "--seed", "--state-dir", "--connect-timeout", "--verify"):
        assert option in out


# --------------------------------------------------------------------- progress


def test_progress_on_a_terminal_redraws_in_place() -> None:
    buf = io.StringIO()
    p = Progress(buf, tty=True)
    assert p.due(0.0)
    p.show("a long first line", 0.0)
    assert not p.due(0.1)
    assert p.due(0.3)
    p.show("short", 0.3)
    p.end()
    out = buf.getvalue()
    # Each draw returns to column 0 and blanks what the longer line left behind.
    assert out == "\ra long first line" + "\rshort" + " " * 12 + "\n"


def test_progress_to_a_pipe_prints_lines_now_and_then() -> None:
    buf = io.StringIO()
    p = Progress(buf, tty=False)
    p.show("one", 100.0)
    assert not p.due(100.0 + PLAIN_INTERVAL / 2)
    assert p.due(100.0 + PLAIN_INTERVAL)
    p.show("two", 100.0 + PLAIN_INTERVAL)
    p.end()
    assert buf.getvalue() == "one\ntwo\n"


# --------------------------------------------------------------------- failures in-process


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_torrent_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.torrent"
    bad.write_bytes(b"d4:infod4:name1:xee")
    assert main(["download", "--no-dht", str(bad), "--state-dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"torrent: error: {bad}: not a valid torrent: ")
    bad.write_bytes(b"\xff garbage")
    assert main(["download", "--no-dht", str(bad), "--state-dir", str(tmp_path / "s")]) == 1
    assert capsys.readouterr().err.startswith(f"torrent: error: {bad}: not a valid torrent")
    missing = tmp_path / "missing.torrent"
    assert main(["download", "--no-dht", str(missing), "--state-dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err == f"torrent: error: No such file or directory: {missing}\n"
    # Nothing was started: no state, no output directory.
    assert not (tmp_path / "s").exists()


def _torrent_file(tmp_path: Path) -> Path:
    from tests.support.engine import make_torrent

    mi = make_torrent(tmp_path / "src", FILES, PIECE)
    path = tmp_path / "x.torrent"
    path.write_bytes(mi.to_bytes())
    return path


@pytest.mark.timeout(20)
def test_unreachable_peer_fails_after_connect_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tf = _torrent_file(tmp_path)
    port = _closed_port()
    argv = ["download", "--no-dht", str(tf), "-o", str(tmp_path / "out"), "-q"]
    argv += ["--peer", f"127.0.0.1:{port}", "--listen", "127.0.0.1"]
    # TCP only: a uTP attempt would first wait out its own 3 s connect timeout
    argv += ["--state-dir", str(tmp_path / "s"), "--connect-timeout", "1", "--no-utp"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("torrent: error: no peer reachable for 1s")
    assert f"127.0.0.1:{port}: dial failed" in err


@pytest.mark.timeout(20)
def test_no_peer_given_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = _torrent_file(tmp_path)
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
    assert main([*argv, "--state-dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("torrent: error: no peers to download from: give --peer")
    assert err.count("\n") == 1


@pytest.mark.timeout(20)
def test_complete_data_needs_no_peer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = _torrent_file(tmp_path)
    before = tree_digest(tmp_path / "src")
    argv = ["download", "--no-dht", str(tf), "-o", str(tmp_path / "src"), "--listen", "127.0.0.1"]
    assert main([*argv, "--state-dir", str(tmp_path / "s")]) == 0
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"r: complete, {fmt.size(sum(FILES.values()))} in ")
    assert "; 0 bytes downloaded in " in last
    assert tree_digest(tmp_path / "src") == before
    assert (tmp_path / "s" / "completion.sqlite").exists()


@pytest.mark.timeout(20)
def test_verify_rehashes_what_the_store_trusts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tf = _torrent_file(tmp_path)
    argv = [
        "download",
        "--no-dht",
        str(tf),
        "-o",
        str(tmp_path / "src"),
        "--listen",
        "127.0.0.1",
        "-q",
    ]
    argv += ["--state-dir", str(tmp_path / "s")]
    assert main(argv) == 0
    # Corrupt one byte behind the store's back, keeping size and mtime.
    victim = tmp_path / "src" / "r" / "a.bin"
    st = victim.stat()
    with victim.open("r+b") as f:
        f.seek(100_000)
        byte = f.read(1)
        f.seek(100_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    assert main(argv) == 0  # the store is trusted: no rehash, "complete"
    assert main([*argv, "--verify"]) == 1  # the rehash finds the bad piece
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("torrent: error: no peers to download from")
    assert main(argv) == 1  # and the store now knows it is missing


# --------------------------------------------------------------------- against a seeder


@pytest.mark.timeout(30)
async def test_download_from_seeder(tmp_path: Path) -> None:
    async with seeding(tmp_path, FILES, PIECE) as seeder:
        out = tmp_path / "out"
        async with download_process(*cli_args(seeder, out, tmp_path / "state")) as proc:
            rc, err = await finish(proc, 20)
        uploaded = seeder.uploaded()
    assert rc == 0, err
    assert tree_digest(out) == tree_digest(seeder.src)
    lines = err.splitlines()
    assert "\r" not in err  # stderr is a pipe: whole lines, no redraws
    assert lines[0].startswith("r: downloading [")
    assert lines[-2].startswith("r: complete [####################] 100.0%")
    size = fmt.size(sum(FILES.values()))
    assert lines[-1].startswith(f"r: complete, {size} in {out / 'r'}; {uploaded} bytes downloaded")
    assert uploaded == sum(FILES.values())


@pytest.mark.timeout(30)
async def test_ipv6_peer(tmp_path: Path) -> None:
    async with seeding(tmp_path, FILES, PIECE, listen_addresses=("::1",)) as seeder:
        out = tmp_path / "out"
        args = [str(seeder.torrent_file), "-o", str(out), "-q", "--listen", "::1"]
        args += ["--peer", f"[::1]:{seeder.client.listen_port}"]
        args += ["--state-dir", str(tmp_path / "state")]
        async with download_process(*args) as proc:
            rc, err = await finish(proc, 20)
    assert rc == 0, err
    assert tree_digest(out) == tree_digest(seeder.src)


@pytest.mark.timeout(30)
async def test_progress_on_a_terminal(tmp_path: Path) -> None:
    """With stderr on a pty the line is redrawn in place and ends with a newline."""
    async with seeding(tmp_path, FILES, PIECE, upload_rate_limit=512 << 10) as seeder:
        master, slave = pty.openpty()
        try:
            args = cli_args(seeder, tmp_path / "out", tmp_path / "state")
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "core.cli",
                "download",
                "--no-dht",
                *args,
                stderr=slave,
                stdout=asyncio.subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parents[1],
            )
            os.close(slave)
            slave = -1
            chunks: list[bytes] = []
            try:
                async with asyncio.timeout(20):
                    while True:
                        try:
                            data = await asyncio.to_thread(os.read, master, 4096)
                        except OSError:  # EIO: the child closed the pty
                            break
                        if not data:
                            break
                        chunks.append(data)
                    rc = await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert rc == 0, text
    lines = text.replace("\r\n", "\n").split("\n")  # the pty turns \n into \r\n
    assert lines[-1] == ""
    assert lines[-2].startswith("r: complete, ")
    draws = lines[-3].split("\r")
    assert draws[0] == "" and len(draws) >= 4, draws  # ~1.4 s at 4 redraws a second
    assert all(d.startswith("r: ") for d in draws[1:])
    assert "100.0%" in draws[-1]


@pytest.mark.timeout(30)
async def test_seed_keeps_serving_until_sigterm(tmp_path: Path) -> None:
    src = tmp_path / "seedsrc"
    tf = _torrent_file(tmp_path)
    (tmp_path / "src").rename(src)
    port = _closed_port()
    args = [str(tf), "-o", str(src), "--seed", "--port", str(port), "--listen", "127.0.0.1"]
    args += ["--state-dir", str(tmp_path / "state"), "-q"]
    async with download_process(*args) as proc:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            from core.formats.metainfo import Metainfo

            mi = Metainfo.load(tf)
            t = await leech.add_metainfo(mi)
            async with asyncio.timeout(15):
                while not t.peers:  # the seeder process may still be starting
                    t.add_peers([("127.0.0.1", port)])
                    await asyncio.sleep(0.2)
                await t.wait_complete()
            assert tree_digest(leech.config.download_dir) == tree_digest(src)
        await asyncio.sleep(0.3)
        assert proc.returncode is None, "--seed must keep running after completion"
        proc.send_signal(signal.SIGTERM)
        rc, err = await finish(proc, 10)
    assert rc == EXIT_SIGTERM, err
    assert err.splitlines()[-1].startswith("torrent: terminated: ")


@pytest.mark.timeout(30)
async def test_no_upload_sends_nothing(tmp_path: Path) -> None:
    tf = _torrent_file(tmp_path)
    port = _closed_port()
    args = [str(tf), "-o", str(tmp_path / "src"), "--seed", "--no-upload", "-q"]
    args += ["--port", str(port), "--listen", "127.0.0.1", "--state-dir", str(tmp_path / "s")]
    async with download_process(*args) as proc:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            from core.formats.metainfo import Metainfo

            t = await leech.add_metainfo(Metainfo.load(tf))
            async with asyncio.timeout(10):
                while not t.peers:
                    t.add_peers([("127.0.0.1", port)])
                    await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)
            assert t.stats().bytes_read_data == 0
            assert t.peers, "the --no-upload seeder dropped us instead of just not uploading"
        proc.send_signal(signal.SIGINT)
        rc, err = await finish(proc, 10)
    assert rc == 130, err
