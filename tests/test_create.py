"""Tests for core.formats.create: layout, hashes, options, progress, symlinks."""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from pathlib import Path

import pytest

from core.errors import MetainfoError
from core.formats import merkle
from core.formats.create import Version, auto_piece_length, create_torrent, scan_files
from core.formats.metainfo import Metainfo

PL = 16384


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "b/deep/er/x.bin": os.urandom(3 * PL + 7),
        "a.txt": os.urandom(1000),
        "b/empty": b"",
        "b.txt": os.urandom(PL),
        "c/y": os.urandom(PL * 2 - 1),
        "c/zero": b"",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def _sha1_pieces(blob: bytes, pl: int) -> bytes:
    return b"".join(hashlib.sha1(blob[i : i + pl]).digest() for i in range(0, len(blob), pl))


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1, 16384),
        (2000 * 16384, 16384),
        (2000 * 16384 + 1, 32768),
        (1 << 30, 1 << 20),
        (1 << 50, 16 << 20),
    ],
)
def test_auto_piece_length(total: int, expected: int) -> None:
    assert auto_piece_length(total) == expected


def test_auto_piece_length_gives_1000_to_2000_pieces() -> None:
    for total in (100 << 20, 3 << 30, 7_777_777_777):
        n = -(-total // auto_piece_length(total))
        assert 1000 <= n <= 2000


def test_v1_multi_file_sorted_with_empty_files(tmp_path: Path) -> None:
    files = _tree(tmp_path / "pay")
    m = create_torrent(tmp_path / "pay", piece_length=PL, creation_date=5)
    info = m.info
    assert info.name == "pay" and info.meta_version == 1 and not info.is_v2
    order = sorted(files, key=lambda p: tuple(p.split("/")))
    assert ["/".join(f.path) for f in info.files] == order
    assert not any(f.is_padding for f in info.files)
    blob = b"".join(files[p] for p in order)
    assert info.pieces == _sha1_pieces(blob, PL)
    assert info.length == len(blob) == info.total_size
    assert m.creation_date == 5 and m.created_by


def test_v1_single_file(tmp_path: Path) -> None:
    data = os.urandom(PL * 3 + 11)
    (tmp_path / "one.iso").write_bytes(data)
    m = create_torrent(tmp_path / "one.iso", piece_length=PL)
    assert m.info.is_single_file and m.info.name == "one.iso"
    assert m.info.files[0].path == () and m.info.files[0].length == len(data)
    assert m.info.pieces == _sha1_pieces(data, PL)
    assert abs((m.creation_date or 0) - time.time()) < 60


def test_v2_pieces_roots(tmp_path: Path) -> None:
    files = _tree(tmp_path / "pay")
    m = create_torrent(tmp_path / "pay", version="v2", piece_length=PL)
    for f in m.info.files:
        data = files["/".join(f.path)]
        if not data:
            assert f.pieces_root is None
            continue
        root, layer = merkle.file_root_and_layer(merkle.block_hashes(data), PL)
        assert f.pieces_root == root
        assert m.piece_layers.get(root, b"") == layer


def test_hybrid_pads_after_every_unaligned_file(tmp_path: Path) -> None:
    files = _tree(tmp_path / "pay")
    m = create_torrent(tmp_path / "pay", version="hybrid", piece_length=PL)
    blob = b""
    for f in m.info.files:
        if f.is_padding:
            assert len(blob) % PL and f.length == PL - len(blob) % PL
            blob += bytes(f.length)
        else:
            assert f.length == 0 or len(blob) % PL == 0
            blob += files["/".join(f.path)]
    assert len(blob) % PL == 0  # the last file is padded too (as libtorrent does)
    assert m.info.pieces == _sha1_pieces(blob, PL)


def test_hybrid_single_file_has_no_padding(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(PL + 5))
    m = create_torrent(tmp_path / "f", version="hybrid", piece_length=PL)
    assert len(m.info.files) == 1 and m.info.is_single_file and m.info.is_hybrid


@pytest.mark.parametrize("version", ["v1", "hybrid"])
def test_threads_and_progress(tmp_path: Path, version: Version) -> None:
    _tree(tmp_path / "pay")
    seen: list[tuple[int, int]] = []
    one = create_torrent(
        tmp_path / "pay", version=version, piece_length=PL, threads=1, creation_date=0
    )
    three = create_torrent(
        tmp_path / "pay",
        version=version,
        piece_length=PL,
        threads=3,
        creation_date=0,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert one == three
    total = one.info.total_size
    assert seen and seen[-1] == (total, total)
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(seen))


def test_options_are_written(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    m = create_torrent(
        tmp_path / "f",
        trackers=[["udp://a:1", "udp://b:2"], "http://c/announce", []],
        web_seeds=["http://seed/f"],
        private=True,
        comment="a comment",
        source="SRC",
        created_by="tester",
        creation_date=42,
    )
    again = Metainfo.from_bytes(m.to_bytes())
    assert again.announce_list == (("udp://a:1", "udp://b:2"), ("http://c/announce",))
    assert again.url_list == ("http://seed/f",)
    assert again.info.private and again.info.source == "SRC"
    assert (again.comment, again.created_by, again.creation_date) == ("a comment", "tester", 42)
    plain = create_torrent(tmp_path / "f", creation_date=42)
    # private and source live inside info, so they change the info-hash
    assert plain.info_hash != m.info_hash


def test_symlinks_are_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s" * 100)
    pay = tmp_path / "pay"
    pay.mkdir()
    (pay / "real").write_bytes(b"r" * 100)
    (pay / "link-file").symlink_to(outside / "secret")
    (pay / "link-dir").symlink_to(outside)
    found, single = scan_files(pay)
    assert not single and [f.rel for f in found] == [("real",)]
    m = create_torrent(pay)
    assert [f.path for f in m.info.files] == [("real",)]


def test_executable_attr(tmp_path: Path) -> None:
    pay = tmp_path / "pay"
    pay.mkdir()
    (pay / "run.sh").write_bytes(b"#!/bin/sh\n")
    (pay / "run.sh").chmod(0o755)
    (pay / "data").write_bytes(b"d")
    versions: tuple[Version, ...] = ("v1", "hybrid")
    for version in versions:
        m = create_torrent(pay, version=version)
        attrs = {f.path: f.attr for f in m.info.payload_files()}
        assert attrs == {("data",): "", ("run.sh",): "x"}


def test_nothing_to_share(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "empty").write_bytes(b"")
    with pytest.raises(MetainfoError, match="no data"):
        create_torrent(tmp_path / "e")


@pytest.mark.parametrize("bad", [1000, 8192, 3 * 16384])
def test_bad_piece_length(tmp_path: Path, bad: int) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(MetainfoError, match="piece length"):
        create_torrent(tmp_path / "f", piece_length=bad)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        create_torrent(tmp_path / "nope")
