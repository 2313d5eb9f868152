"""The `torrent` command: metainfo, create, bencode; exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import main
from core.formats.magnet import parse_magnet
from core.formats.metainfo import Metainfo


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.bin").write_bytes(os.urandom(300_000))
    (root / "empty").write_bytes(b"")
    (root / "sub" / "deep" / "b.txt").write_bytes(os.urandom(70_000))
    return root


def _create(payload: Path, out: Path, *extra: str) -> int:
    return main(["create", str(payload), "-o", str(out), "-q", *extra])


@pytest.mark.parametrize("version", ["--v1", "--v2", "--hybrid"])
def test_create_then_pprint(
    payload: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    out = tmp_path / "x.torrent"
    rc = _create(
        payload,
        out,
        version,
        "-a",
        "http://t1.example/ann,http://t1b.example/ann",
        "-a",
        "udp://t2.example:80",
        "-w",
        "http://ws.example/",
        "-c",
        "a comment",
        "--source",
        "SRC",
        "--private",
        "--piece-length",
        "32K",
    )
    assert rc == 0
    mi = Metainfo.load(out)
    assert mi.announce_list == (
        ("http://t1.example/ann", "http://t1b.example/ann"),
        ("udp://t2.example:80",),
    )
    assert mi.url_list == ("http://ws.example/",)
    assert mi.info.private and mi.info.source == "SRC" and mi.comment == "a comment"
    assert mi.info.piece_length == 32768
    capsys.readouterr()
    assert main(["metainfo", str(out), "pprint"]) == 0
    text = capsys.readouterr().out
    assert "Name:          data" in text
    assert f"Total size:    {370000 // 1024} KiB (370000 bytes)" in text
    assert "Private:       yes" in text
    assert "tier 1: http://t1.example/ann, http://t1b.example/ann" in text
    assert "tier 2: udp://t2.example:80" in text
    assert "b.txt  (68.4 KiB)" in text
    if mi.info_hash.v1:
        assert mi.info_hash.v1.hex() in text
    if mi.info_hash.v2:
        assert mi.info_hash.v2.hex() in text


def test_magnet_matches_metainfo(
    payload: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.torrent"
    assert _create(payload, out, "--hybrid", "-a", "http://t.example/a?x=1&y=2") == 0
    capsys.readouterr()
    assert main(["metainfo", str(out), "magnet"]) == 0
    uri = capsys.readouterr().out.strip()
    m = parse_magnet(uri)
    mi = Metainfo.load(out)
    assert m.info_hash == mi.info_hash
    assert m.display_name == "data"
    assert m.trackers == ("http://t.example/a?x=1&y=2",)


def test_bencode_json_and_spew(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "x.bencode"
    f.write_bytes(b"d3:cow3:moo1:pl2:\xff\xfei-3eee")
    assert main(["bencode", "json", str(f)]) == 0
    assert json.loads(capsys.readouterr().out) == {"cow": "moo", "p": ["fffe", -3]}
    assert main(["bencode", "spew", str(f)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dict (2 keys)"
    assert '  "cow": str[3] "moo"' in lines
    assert "    [0] bytes[2] 0xfffe" in lines
    assert "    [1] int -3" in lines


def _run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (("metainfo", "-", "pprint"), b"d4:infod4:name", b"byte"),
        (("metainfo", "-", "magnet"), b"d4:infodee", b"torrent: error:"),
        (("metainfo", "/nonexistent/x.torrent", "pprint"), b"", b"No such file"),
        (("bencode", "json", "-"), b"i03e", b"leading zero"),
        (("create", "/nonexistent/dir", "-o", "/tmp/never.torrent"), b"", b"No such file"),
    ],
)
def test_bad_input_exits_1_with_one_line(
    args: tuple[str, ...], stdin: bytes, needle: bytes
) -> None:
    proc = _run(*args, stdin=stdin)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert needle in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("metainfo",),
        ("metainfo", "x.torrent", "frobnicate"),
        ("create", "dir"),
        ("create", "dir", "-o", "x", "--piece-length", "lots"),
        ("bencode", "yaml", "x"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr


def test_create_rejects_bad_piece_length(payload: Path, tmp_path: Path) -> None:
    proc = _run("create", str(payload), "-o", str(tmp_path / "x"), "--piece-length", "1000")
    assert proc.returncode == 2
    assert b"power of two" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_create_shows_progress_on_stderr(payload: Path, tmp_path: Path) -> None:
    proc = _run("create", str(payload), "-o", str(tmp_path / "x.torrent"))
    assert proc.returncode == 0, proc.stderr
    assert b"hashing [" in proc.stderr and b"100.0%" in proc.stderr
    assert (tmp_path / "x.torrent").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("metainfo", "{junk}", "pprint"),
        ("metainfo", "{junk}", "magnet"),
        ("metainfo", "{junk}"),
        ("bencode", "json", "{junk}"),
        ("bencode", "spew", "{junk}"),
        ("announce", "{junk}", "http://127.0.0.1:9/announce", "--timeout", "1"),
    ],
)
def test_every_error_names_its_input(args: tuple[str, ...], tmp_path: Path) -> None:
    junk = tmp_path / "junk.torrent"
    junk.write_bytes(b"nonsense")
    proc = _run(*(a.replace("{junk}", str(junk)) for a in args))
    assert proc.returncode == 1
    line = proc.stderr.decode().strip()
    assert line.startswith(f"torrent: error: {junk}: not "), line
    assert "valid" in line
    assert "byte 0" in line and len(line.splitlines()) == 1


def test_stdin_is_named_stdin() -> None:
    proc = _run("metainfo", "-", stdin=b"d4:infodee")
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"torrent: error: stdin: not a valid torrent:")


@pytest.mark.parametrize("command", ["download", "cat", "metainfo-from-magnet"])
def test_bad_magnet_is_named(command: str, tmp_path: Path) -> None:
    bad = "magnet:?xt=urn:sha1:nothing"
    extra = {"cat": ["x"], "metainfo-from-magnet": ["-o", str(tmp_path / "o")]}.get(command, [])
    proc = _run(command, bad, *extra)
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith(f"torrent: error: {bad}: not a valid magnet link:")
    assert not (tmp_path / "o").exists()


def test_metainfo_action_defaults_to_pprint(payload: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.torrent"
    assert _create(payload, out) == 0
    plain, pprint = _run("metainfo", str(out)), _run("metainfo", str(out), "pprint")
    assert plain.returncode == 0 and plain.stdout == pprint.stdout
    assert plain.stdout.startswith(b"Name:          data\n")


def test_help_says_how_to_seed() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    assert b"torrent download X.torrent -o DIR --seed" in proc.stdout


def test_pprint_warns_of_every_renamed_path(tmp_path: Path) -> None:
    """A torrent with unsafe names loads; each change is one warning line on stderr."""
    from core.formats.bencoding import encode

    files = [
        {b"length": 100, b"path": [b"ok.txt"]},
        {b"length": 100, b"path": [b"..", b"x"]},
        {b"length": 100, b"path": [b"\xff.txt"]},
    ]
    info = {b"files": files, b"name": b"a/b", b"piece length": 16384, b"pieces": bytes(20)}
    path = tmp_path / "odd.torrent"
    path.write_bytes(encode({b"info": info}) + b"\n")
    proc = _run("metainfo", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"Name:          ab\n")
    assert proc.stderr.decode().splitlines() == [
        f"torrent: {path}: warning: renamed 'a/b' -> 'ab' (unsafe characters)",
        f"torrent: {path}: warning: renamed 'ab/../x' -> 'ab/_/x' ('..' is not a file name)",
        f"torrent: {path}: warning: renamed 'ab/\\\\xff.txt' -> 'ab/_.txt' (invalid UTF-8)",
        f"torrent: {path}: warning: 1 byte after the top-level dictionary ignored",
    ]
