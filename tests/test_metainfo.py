"""Unit tests for core.formats: metainfo, info, merkle and safepath."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from core.errors import MetainfoError
from core.formats import merkle
from core.formats.bencoding import decode, encode
from core.formats.create import Version, create_torrent
from core.formats.magnet import parse_magnet
from core.formats.metainfo import Metainfo, parse_info
from core.formats.safepath import resolve_duplicates, sanitize_component

PL = 16384


def _v1_single(data: bytes, name: bytes = b"file.bin", **extra: Any) -> dict[bytes, Any]:
    pieces = b"".join(hashlib.sha1(data[i : i + PL]).digest() for i in range(0, len(data), PL))
    info = {b"name": name, b"piece length": PL, b"pieces": pieces, b"length": len(data)}
    info.update({k.encode(): v for k, v in extra.items()})
    return info


def _v1_multi(files: list[tuple[list[bytes], bytes]], **extra: Any) -> dict[bytes, Any]:
    blob = b"".join(d for _, d in files)
    pieces = b"".join(hashlib.sha1(blob[i : i + PL]).digest() for i in range(0, len(blob), PL))
    info = {
        b"name": b"dir",
        b"piece length": PL,
        b"pieces": pieces,
        b"files": [{b"length": len(d), b"path": p} for p, d in files],
    }
    info.update({k.encode(): v for k, v in extra.items()})
    return info


def _torrent(info: dict[bytes, Any], **top: Any) -> bytes:
    return encode({b"info": info, **top})


# --------------------------------------------------------------------- v1


def test_v1_single_file_fields_and_hash() -> None:
    data = bytes(range(256)) * 200  # 51,200 bytes: 4 pieces, last one short
    raw = _torrent(
        _v1_single(data, private=1, source=b"SRC"),
        announce=b"http://t.example/announce",
        comment=b"hello",
        **{"created by": b"me", "creation date": 1234567890},
    )
    m = Metainfo.from_bytes(raw)
    info = m.info
    assert info.is_single_file and info.files[0].path == ()
    assert info.name == "file.bin"
    assert (info.is_v1, info.is_v2, info.is_hybrid) == (True, False, False)
    assert info.meta_version == 1
    assert info.private and info.source == "SRC"
    assert info.length == info.total_size == len(data)
    assert info.num_pieces == 4
    assert [info.piece_size(i) for i in range(4)] == [PL, PL, PL, len(data) - 3 * PL]
    assert info.piece_hash_v1(3) == hashlib.sha1(data[3 * PL :]).digest()
    assert info.file_pieces(0) == range(4)
    assert info.files_in_piece(2) == [0]
    # the info-hash is SHA-1 of the info bytes as they appear in the file
    start = raw.index(b"4:infod") + 6
    assert m.raw_info == raw[start:-1]
    assert m.info_hash.v1 == hashlib.sha1(m.raw_info).digest()
    assert m.info_hash.v2 is None and m.info_hash.wire == m.info_hash.v1
    assert m.announce_list == (("http://t.example/announce",),)
    assert m.trackers == ["http://t.example/announce"]
    assert (m.comment, m.created_by, m.creation_date) == ("hello", "me", 1234567890)
    assert m.to_bytes() == raw
    with pytest.raises(IndexError):
        info.piece_size(4)


def test_v1_multi_file_offsets_and_piece_mapping() -> None:
    files = [([b"a"], b"x" * 10000), ([b"empty"], b""), ([b"sub", b"b"], b"y" * 30000)]
    m = Metainfo.from_bytes(_torrent(_v1_multi(files)))
    info = m.info
    assert not info.is_single_file
    assert [f.path for f in info.files] == [("a",), ("empty",), ("sub", "b")]
    assert [f.offset for f in info.files] == [0, 10000, 10000]
    assert info.length == 40000 and info.num_pieces == 3
    assert info.files_in_piece(0) == [0, 2]  # the empty file overlaps nothing
    assert info.files_in_piece(2) == [2]
    assert info.file_pieces(0) == range(0, 1)
    assert info.file_pieces(1) == range(0, 0)
    assert info.file_pieces(2) == range(0, 3)
    assert info.display_path(info.files[2]) == "dir/sub/b"


def test_utf8_variants_preferred() -> None:
    info = _v1_multi([([b"latin1-\xe9"], b"z" * 100)])
    info[b"name.utf-8"] = "répertoire".encode()
    info[b"files"][0][b"path.utf-8"] = ["été".encode()]
    m = Metainfo.from_bytes(_torrent(info, **{"comment.utf-8": "ça".encode(), "comment": b"c"}))
    assert m.info.name == "répertoire"
    assert m.info.files[0].path == ("été",)
    assert m.comment == "ça"


def test_unsorted_keys_keep_their_raw_hash() -> None:
    data = b"q" * 20000
    canonical = _v1_single(data)
    # hand-written info dict with keys out of order
    pieces = canonical[b"pieces"]
    raw_info = (
        b"d6:lengthi20000e12:piece lengthi16384e4:name8:file.bin6:pieces"
        + str(len(pieces)).encode()
        + b":"
        + pieces
        + b"e"
    )
    raw = b"d4:info" + raw_info + b"e"
    m = Metainfo.from_bytes(raw)
    assert m.raw_info == raw_info
    assert m.info_hash.v1 == hashlib.sha1(raw_info).digest()
    assert m.info_hash.v1 != hashlib.sha1(encode(decode(raw_info))).digest()
    assert raw_info in m.to_bytes()
    assert Metainfo.from_bytes(m.to_bytes()).info_hash == m.info_hash


def test_optional_fields() -> None:
    raw = _torrent(
        _v1_single(b"d" * 100),
        announce=b"http://ignored/when/list",
        **{
            "announce-list": [[b"udp://a:1", b"udp://b:2"], [], [b"http://c/x", b"udp://a:1"]],
            "url-list": b"http://seed/",
            "nodes": [[b"router.example", 6881], [b"bad"], [b"x", 70000], [b"10.0.0.1", 1]],
        },
    )
    m = Metainfo.from_bytes(raw)
    assert m.announce_list == (("udp://a:1", "udp://b:2"), ("http://c/x", "udp://a:1"))
    assert m.trackers == ["udp://a:1", "udp://b:2", "http://c/x"]
    assert m.url_list == ("http://seed/",)
    assert m.nodes == (("router.example", 6881), ("10.0.0.1", 1))
    assert not m.info.private and m.comment is None and m.creation_date is None
    again = Metainfo.from_bytes(m.to_bytes())
    assert (again.announce_list, again.url_list, again.nodes) == (
        m.announce_list,
        m.url_list,
        m.nodes,
    )
    m2 = Metainfo.from_bytes(_torrent(_v1_single(b"d"), **{"url-list": [b"http://a/", b"b"]}))
    assert m2.url_list == ("http://a/", "b") and m2.announce_list == ()


def test_malformed_optional_fields_are_dropped() -> None:
    raw = _torrent(
        _v1_single(b"d" * 100),
        announce=5,
        comment=[1],
        **{"announce-list": b"nope", "url-list": 7, "creation date": b"x", "nodes": b"n"},
    )
    m = Metainfo.from_bytes(raw)
    assert (m.announce_list, m.url_list, m.nodes, m.comment, m.creation_date) == (
        (),
        (),
        (),
        None,
        None,
    )


def test_magnet_round_trip() -> None:
    raw = _torrent(
        _v1_single(b"m" * 100, name=b"my file"),
        **{"announce-list": [[b"udp://a:1"], [b"udp://b:2"]], "url-list": [b"http://s/"]},
    )
    m = Metainfo.from_bytes(raw)
    mag = parse_magnet(m.magnet())
    assert mag.info_hash == m.info_hash
    assert mag.display_name == "my file"
    assert mag.trackers == ("udp://a:1", "udp://b:2")
    assert mag.web_seeds == ("http://s/",)


def test_parse_info_alone_matches_metainfo() -> None:
    raw = _torrent(_v1_single(b"p" * 70000))
    m = Metainfo.from_bytes(raw)
    info, ih = parse_info(m.raw_info)
    assert info == m.info and ih == m.info_hash


# ------------------------------------------------------------- v2 / hybrid


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _payload() -> dict[str, bytes]:
    return {
        "a.txt": os.urandom(100),
        "big/x.bin": os.urandom(5 * PL + 123),
        "big/y.bin": os.urandom(2 * PL),
        "empty": b"",
        "z": os.urandom(PL + 1),
    }


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_create_round_trip(tmp_path: Path, version: Version) -> None:
    _write(tmp_path / "t", _payload())
    m = create_torrent(tmp_path / "t", version=version, piece_length=PL, creation_date=7)
    again = Metainfo.from_bytes(m.to_bytes())
    assert again == m
    assert again.to_bytes() == m.to_bytes()
    assert again.info.is_v1 == (version != "v2")
    assert again.info.is_v2 == (version != "v1")


def test_v2_layout_and_piece_hashes(tmp_path: Path) -> None:
    files = _payload()
    _write(tmp_path / "t", files)
    m = create_torrent(tmp_path / "t", version="v2", piece_length=PL)
    info = m.info
    assert info.pieces == b"" and info.meta_version == 2 and not info.is_v1
    assert m.info_hash.v1 is None
    assert m.info_hash.v2 == hashlib.sha256(m.raw_info).digest()
    assert m.info_hash.wire == m.info_hash.v2[:20] == m.info_hash.v2_truncated
    by_path = {"/".join(f.path): f for f in info.files}
    assert list(by_path) == ["a.txt", "big/x.bin", "big/y.bin", "empty", "z"]
    for f in info.files:
        assert f.offset % PL == 0  # every file starts on a piece boundary
    # pieces: a.txt 1, x.bin 6, y.bin 2, z 2 -> 11; a piece never spans two files
    assert info.num_pieces == 11
    sizes = [info.piece_size(i) for i in range(info.num_pieces)]
    assert sizes == [100, PL, PL, PL, PL, PL, 123, PL, PL, PL, 1]
    # piece layers only for files longer than one piece
    assert set(m.piece_layers) == {by_path[p].pieces_root for p in ("big/x.bin", "big/y.bin", "z")}
    for idx, f in enumerate(info.files):
        data = files["/".join(f.path)]
        for k, piece in enumerate(info.file_pieces(idx)):
            chunk = data[k * PL : (k + 1) * PL]
            assert m.verify_piece_v2(piece, chunk)
            assert not m.verify_piece_v2(piece, bytes([chunk[0] ^ 1]) + chunk[1:])


def test_hybrid_has_pad_files_and_matching_views(tmp_path: Path) -> None:
    files = _payload()
    _write(tmp_path / "t", files)
    m = create_torrent(tmp_path / "t", version="hybrid", piece_length=PL)
    info = m.info
    assert info.is_hybrid and m.info_hash.v1 and m.info_hash.v2
    pads = [f for f in info.files if f.is_padding]
    assert [f.path for f in pads] == [
        (".pad", str(PL - 100)),
        (".pad", str(PL - 123)),
        (".pad", str(PL - 1)),
    ]
    for f in info.payload_files():
        if f.length:
            assert f.offset % PL == 0
    blob = b"".join(
        files["/".join(f.path)] if not f.is_padding else bytes(f.length) for f in info.files
    )
    assert info.length == len(blob)
    for i in range(info.num_pieces):
        assert info.piece_hash_v1(i) == hashlib.sha1(blob[i * PL : (i + 1) * PL]).digest()
    with pytest.raises(MetainfoError, match="padding"):
        info.file_path(pads[0], Path("/tmp"))


def _tamper(raw: bytes, mutate: Any) -> bytes:
    top = decode(raw)
    mutate(top)
    return encode(top)


def test_piece_layer_validation(tmp_path: Path) -> None:
    _write(tmp_path / "t", {"x": os.urandom(3 * PL)})
    raw = create_torrent(tmp_path / "t", version="v2", piece_length=PL).to_bytes()
    root = next(iter(decode(raw)[b"piece layers"]))

    def flip(top: Any) -> None:
        layer = bytearray(top[b"piece layers"][root])
        layer[0] ^= 1
        top[b"piece layers"][root] = bytes(layer)

    with pytest.raises(MetainfoError, match="does not match"):
        Metainfo.from_bytes(_tamper(raw, flip))
    with pytest.raises(MetainfoError, match="expected"):
        Metainfo.from_bytes(
            _tamper(
                raw, lambda t: t[b"piece layers"].update({root: t[b"piece layers"][root][:-32]})
            )
        )
    # missing layers load (as in libtorrent); they are listed for the engine
    m = Metainfo.from_bytes(_tamper(raw, lambda t: t.pop(b"piece layers")))
    # (a one-file v2 tree is a single-file torrent named after its key, as in libtorrent)
    assert m.missing_piece_layers == ("x",)
    assert any("piece layers missing" in w for w in m.warnings)


def test_hybrid_views_must_agree(tmp_path: Path) -> None:
    _write(tmp_path / "t", {"a": b"1" * 100, "b": b"2" * 200})
    raw = create_torrent(tmp_path / "t", version="hybrid", piece_length=PL).to_bytes()

    def rename(top: Any) -> None:
        top[b"info"][b"files"][0][b"path"] = [b"other"]

    with pytest.raises(MetainfoError, match=r"inconsistent hybrid torrent: entry 0 .*'other'"):
        Metainfo.from_bytes(_tamper(raw, rename))

    def drop_pad(top: Any) -> None:
        files = top[b"info"][b"files"]
        top[b"info"][b"files"] = [f for f in files if b"attr" not in f]
        top[b"info"][b"pieces"] = top[b"info"][b"pieces"][:20]

    with pytest.raises(MetainfoError, match="inconsistent hybrid torrent"):
        Metainfo.from_bytes(_tamper(raw, drop_pad))


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    ("raw", "linux", "windows"),
    [
        (b"CON", "CON", "_CON"),
        (b"aux.c", "aux.c", "_aux.c"),
        (b"Lpt9.tar.gz", "Lpt9.tar.gz", "Lpt9.tar.gz"),
        (b"COM10", "COM10", "COM10"),
        (b"notes. ", "notes. ", "notes"),
        (b"a:b?", "a:b?", "a_b_"),
        (b"normal.txt", "normal.txt", "normal.txt"),
    ],
)
def test_windows_rules_apply_only_on_windows(raw: bytes, linux: str, windows: str) -> None:
    # as libtorrent: Windows-only restrictions are not imposed on Linux
    assert sanitize_component(raw, windows=False) == linux
    assert sanitize_component(raw, windows=True) == windows


def test_reserved_name_in_torrent_is_kept_on_linux() -> None:
    m = Metainfo.from_bytes(_torrent(_v1_multi([([b"sub", b"PRN.log"], b"1")])))
    assert m.info.files[0].path == ("sub", "PRN.log")
    assert m.renamed_paths == ()


def test_file_path_resolves_under_root(tmp_path: Path) -> None:
    files = [([b"d", b"f"], b"1" * 10), ([b"g"], b"2")]
    info = Metainfo.from_bytes(_torrent(_v1_multi(files))).info
    assert info.file_path(info.files[0], tmp_path) == tmp_path.resolve() / "dir" / "d" / "f"
    single = Metainfo.from_bytes(_torrent(_v1_single(b"x"))).info
    assert single.file_path(single.files[0], tmp_path) == tmp_path.resolve() / "file.bin"


def test_file_path_refuses_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "dir").symlink_to(outside)
    info = Metainfo.from_bytes(_torrent(_v1_multi([([b"f"], b"1")]))).info
    with pytest.raises(MetainfoError, match="escapes"):
        info.file_path(info.files[0], root)
    assert list(outside.iterdir()) == []


def test_resolve_duplicates() -> None:
    assert resolve_duplicates([("a",), ("b", "c"), ("b", "d")]) == {}
    assert resolve_duplicates([("a", "b"), ("a", "b")]) == {1: ("a", "b.1")}
    assert resolve_duplicates([("a",), ("a", "b")]) == {0: ("a.1",)}
    assert resolve_duplicates([("a", "b"), ("a",)]) == {1: ("a.1",)}
    assert resolve_duplicates([("x.tar.gz",), ("X.TAR.GZ",)]) == {1: ("X.TAR.1.GZ",)}
    # padding files never collide
    assert resolve_duplicates([(".pad", "5"), (".pad", "5")], skip=[True, True]) == {}


# ----------------------------------------------------------------- merkle


def _naive_root(leaves: list[bytes], width: int) -> bytes:
    layer = leaves + [merkle.ZERO_HASH] * (width - len(leaves))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_merkle_root_matches_naive_padding(n: int) -> None:
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(n)]
    assert merkle.merkle_root(leaves) == _naive_root(leaves, merkle.next_power_of_two(n))
    assert merkle.merkle_root(leaves, width=32) == _naive_root(leaves, 32)


def test_zero_root_and_piece_layer_padding() -> None:
    assert merkle.zero_root(0) == bytes(32)
    assert merkle.zero_root(1) == hashlib.sha256(bytes(64)).digest()
    assert merkle.merkle_root([], width=8) == _naive_root([], 8)
    # 4 pieces of 4 blocks, 3 present: the layer root pads with a zero *piece*
    # subtree, which equals padding the leaves with zero hashes
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(10)]
    root, layer = merkle.file_root_and_layer(leaves, 4 * merkle.BLOCK_SIZE)
    assert len(layer) == 3 * 32
    assert root == _naive_root(leaves, 16)
    assert merkle.root_from_piece_layer(layer, 4 * merkle.BLOCK_SIZE) == root
    small_root, small_layer = merkle.file_root_and_layer(leaves[:3], 4 * merkle.BLOCK_SIZE)
    assert small_layer == b"" and small_root == _naive_root(leaves[:3], 4)


def test_block_hashes_and_piece_hash() -> None:
    data = os.urandom(2 * merkle.BLOCK_SIZE + 5)
    hs = merkle.block_hashes(data)
    assert hs == [
        hashlib.sha256(data[: merkle.BLOCK_SIZE]).digest(),
        hashlib.sha256(data[merkle.BLOCK_SIZE : 2 * merkle.BLOCK_SIZE]).digest(),
        hashlib.sha256(data[2 * merkle.BLOCK_SIZE :]).digest(),
    ]
    pl = 4 * merkle.BLOCK_SIZE
    assert merkle.piece_hash(data, pl, file_length=len(data)) == _naive_root(hs, 4)
    assert merkle.piece_hash(data, pl, file_length=10 * pl) == _naive_root(hs, 4)
    one = data[:100]
    assert merkle.piece_hash(one, pl, file_length=100) == hashlib.sha256(one).digest()
    assert merkle.piece_hash(one, pl, file_length=10 * pl) == _naive_root(
        [hashlib.sha256(one).digest()], 4
    )
    with pytest.raises(ValueError):
        merkle.blocks_per_piece(3 * merkle.BLOCK_SIZE)
    with pytest.raises(ValueError):
        merkle.split_hashes(b"x" * 33)
