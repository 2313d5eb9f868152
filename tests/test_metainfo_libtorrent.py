"""Cross-checks against libtorrent: it parses what we create, we parse what it creates.

libtorrent is an independent implementation of BEP 3/47/52, so equal
info-hashes here are the strongest golden values available offline.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from core.errors import MetainfoError
from core.formats.bencoding import decode, encode
from core.formats.create import Version, create_torrent
from core.formats.metainfo import Metainfo

lt = pytest.importorskip("libtorrent")

PL = 16384
FLAGS = {"v1": "v1_only", "v2": "v2_only", "hybrid": None}


def _layout(root: Path, kind: str) -> Path:
    """Write a payload; return the path to share (a file or a directory)."""
    if kind == "single":
        p = root / "one.bin"
        p.write_bytes(os.urandom(3 * PL + 4321))
        return p
    files = {
        "z.bin": os.urandom(2 * PL + 9),
        "a.txt": os.urandom(100),
        "empty": b"",
        "sub/deep/x": os.urandom(4 * PL + 1),
        "sub/e2": b"",
        "sub/deep/y": os.urandom(PL),
        "b/aligned": os.urandom(2 * PL),
    }
    base = root / "multi"
    for rel, data in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return base


def _lt_create(share: Path, version: Version, order: list[tuple[str, int]] | None = None) -> bytes:
    """Make a torrent with libtorrent; ``order`` fixes the v1 file order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = lt.file_storage()
        if order is None:
            lt.add_files(fs, str(share))
        else:
            for rel, size in order:
                fs.add_file(rel, size)
        flag = FLAGS[version]
        flags = 0 if flag is None else getattr(lt.create_torrent, flag)
        ct = lt.create_torrent(fs, PL, flags=flags)
        lt.set_piece_hashes(ct, str(share.parent))
        return bytes(lt.bencode(ct.generate()))


def _lt_hashes(data: bytes) -> tuple[bytes | None, bytes | None]:
    ih = lt.torrent_info(data).info_hashes()
    return (
        ih.v1.to_bytes() if ih.has_v1() else None,
        ih.v2.to_bytes() if ih.has_v2() else None,
    )


def _lt_files(data: bytes) -> list[tuple[str, int, bool]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ti = lt.torrent_info(data)
        fs = ti.files()
        out = []
        for i in range(fs.num_files()):
            pad = bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)
            out.append((fs.file_path(i).replace(os.sep, "/"), fs.file_size(i), pad))
        return out


def _our_files(m: Metainfo) -> list[tuple[str, int, bool]]:
    return [(m.info.display_path(f), f.length, f.is_padding) for f in m.info.files]


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_we_parse_libtorrent_torrents(tmp_path: Path, version: Version, kind: str) -> None:
    share = _layout(tmp_path, kind)
    data = _lt_create(share, version)
    m = Metainfo.from_bytes(data)
    assert (m.info_hash.v1, m.info_hash.v2) == _lt_hashes(data)
    ti = lt.torrent_info(data)
    assert m.info.num_pieces == ti.num_pieces()
    assert m.info.total_size == sum(os.path.getsize(p) for p in _all_files(share))
    real = [f for f in _lt_files(data) if not f[2]]
    assert [(p, n) for p, n, _ in real] == [
        (m.info.display_path(f), f.length) for f in m.info.payload_files()
    ]
    if m.info.is_v1:
        # v1 and hybrid: the whole file list, pad files included, is the same
        assert _our_files(m) == _lt_files(data)
        for i in range(m.info.num_pieces):
            assert m.info.piece_size(i) == ti.piece_size(i)
            assert m.info.piece_hash_v1(i) == ti.hash_for_piece(i)
    # the raw bytes survive our round trip, so libtorrent sees the same torrent
    assert m.to_bytes() == data


def _all_files(share: Path) -> list[Path]:
    if share.is_file():
        return [share]
    return [p for p in share.rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_libtorrent_loads_ours_with_same_hash(tmp_path: Path, version: Version, kind: str) -> None:
    share = _layout(tmp_path, kind)
    m = create_torrent(share, version=version, piece_length=PL)
    ours = m.to_bytes()
    assert _lt_hashes(ours) == (m.info_hash.v1, m.info_hash.v2)
    lt_files = _lt_files(ours)
    if m.info.is_v1:
        assert _our_files(m) == lt_files
    else:
        # libtorrent lists pure-v2 alignment as virtual pad files
        assert [f for f in lt_files if not f[2]] == _our_files(m)
    # same files, same order, same piece length: libtorrent's own torrent has
    # the very same info dict, hence the same info-hash(es)
    order = [(m.info.display_path(f), f.length) for f in m.info.payload_files()]
    theirs = _lt_create(share, version, order)
    assert _lt_hashes(theirs) == (m.info_hash.v1, m.info_hash.v2)
    assert Metainfo.from_bytes(theirs).info == m.info


@pytest.mark.parametrize("version", ["v2", "hybrid"])
def test_libtorrent_checks_our_v2_roots_and_layers(tmp_path: Path, version: Version) -> None:
    share = _layout(tmp_path, "multi")
    m = create_torrent(share, version=version, piece_length=PL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = lt.torrent_info(m.to_bytes()).files()
        roots = {
            fs.file_path(i).replace(os.sep, "/"): fs.root(i).to_bytes()
            for i in range(fs.num_files())
            if not fs.file_flags(i) & lt.file_storage.flag_pad_file
        }
    assert roots == {
        m.info.display_path(f): f.pieces_root or bytes(32) for f in m.info.payload_files()
    }
    # libtorrent validates piece layers against the roots: a tampered layer
    # is refused by libtorrent and by us alike
    top = decode(m.to_bytes())
    key = next(iter(top[b"piece layers"]))
    top[b"piece layers"][key] = bytes(32) + top[b"piece layers"][key][32:]
    bad = encode(top)
    with pytest.raises(RuntimeError):
        lt.torrent_info(bad)
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(bad)
