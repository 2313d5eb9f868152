"""Issue 24: open every torrent libtorrent opens, refuse every one it refuses.

Unsafe names are sanitized (never refused), and the result is compared with
what the installed libtorrent produces for the very same bytes wherever that
is practical.  Torrents are built here; no corpus is downloaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.engine.client import Client
from core.errors import MetainfoError
from core.formats.bencoding import encode
from core.formats.create import create_torrent
from core.formats.metainfo import Metainfo, RenamedPath
from core.formats.safepath import MAX_DUPLICATE_FILENAMES, sanitize_component
from core.stats import TorrentState
from core.storage.file import FileStorage
from core.storage.layout import Layout
from tests.support.engine import loopback_config
from tests.support.ltharness import LibtorrentPeerFactory, lt_peer_factory

lt = pytest.importorskip("libtorrent")

__all__ = ["lt_peer_factory"]  # the fixture is used by name below

pytestmark = pytest.mark.timeout(60)

PL = 16384
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))
PROPERTY = settings(
    max_examples=max(100, EXAMPLES // 5),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _sha1s(data: bytes) -> bytes:
    return b"".join(hashlib.sha1(data[i : i + PL]).digest() for i in range(0, len(data), PL))


def _multi(paths: list[Any], name: bytes = b"t", length: int = 100, **extra: Any) -> bytes:
    files = [p if isinstance(p, dict) else {b"length": length, b"path": p} for p in paths]
    total = sum(f.get(b"length", 0) for f in files if b"l" not in f.get(b"attr", b""))
    info = {b"name": name, b"piece length": PL, b"pieces": _sha1s(bytes(total)), b"files": files}
    info.update({k.encode(): v for k, v in extra.items()})
    return encode({b"info": info})


def _root(seed: int) -> bytes:
    return hashlib.sha256(bytes([seed])).digest()


def _v2(tree: Any, name: bytes = b"t", **top: Any) -> bytes:
    info = {b"file tree": tree, b"meta version": 2, b"name": name, b"piece length": PL}
    return encode({b"info": info, **{k.encode(): v for k, v in top.items()}})


def _leaf(length: int = 100, seed: int = 1) -> dict[bytes, Any]:
    return {b"": {b"length": length, b"pieces root": _root(seed)}}


def _ours(data: bytes) -> list[str]:
    m = Metainfo.from_bytes(data)
    return [m.info.display_path(f) for f in m.info.payload_files()]


def _theirs(data: bytes) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = lt.torrent_info(data).files()
        return [
            fs.file_path(i).replace(os.sep, "/")
            for i in range(fs.num_files())
            if not fs.file_flags(i) & lt.file_storage.flag_pad_file
        ]


def _lt_refuses(data: bytes) -> bool:
    try:
        lt.torrent_info(data)
    except RuntimeError:
        return True
    return False


# ------------------------------------------------------ sanitized, like libtorrent

BAD = [
    b"",
    b".",
    b"..",
    b"...",
    b"a/b",
    b"a\\b",
    b"/etc",
    b"\\\\server\\share",
    b"\xff\xfe",
    b"caf\xe9",  # Latin-1
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # surrogate
    b"x\x00y",
    b"x\x01y",
    b"\xe2\x80\x8b",  # zero-width space alone
    "gpj\u202eexe.txt".encode(),  # right-to-left override
    b"e" * 300 + b".mkv",
    "\u00e9".encode() * 200 + b".flac",
    b"e" * 300,
]


@pytest.mark.parametrize("bad", BAD)
def test_v1_path_component_matches_libtorrent(bad: bytes) -> None:
    data = _multi([[b"ok"], [b"dir", bad, b"f"], [bad]])
    assert _ours(data) == _theirs(data)
    for path in _ours(data):
        assert all(0 < len(c.encode()) <= 255 for c in path.split("/"))


@pytest.mark.parametrize("bad", BAD)
def test_path_utf8_is_sanitized_like_path(bad: bytes) -> None:
    data = _multi([{b"length": 5, b"path": [b"plain"], b"path.utf-8": [b"d", bad]}])
    assert _ours(data) == _theirs(data)
    assert Metainfo.from_bytes(data).info.files[0].path[1] == sanitize_component(bad)


@pytest.mark.parametrize("bad", [b for b in BAD if b])
def test_v2_file_tree_key_matches_libtorrent(bad: bytes) -> None:
    data = _v2({b"ok": _leaf(), b"dir": {bad: {b"f": _leaf(seed=2)}}})
    assert _ours(data) == _theirs(data)


@pytest.mark.parametrize("bad", BAD)
def test_name_matches_libtorrent(bad: bytes) -> None:
    data = _multi([[b"a"]], name=bad)
    assert _ours(data) == _theirs(data)
    m = Metainfo.from_bytes(data)
    if bad in (b".", b".."):
        # named after the info-hash, as libtorrent does
        assert m.info.name == m.info_hash.v1.hex()  # type: ignore[union-attr]
    assert m.info.name not in ("", ".", "..")


def test_empty_v2_key_is_refused_like_libtorrent() -> None:
    data = _v2({b"ok": _leaf(), b"": _leaf(seed=2)})
    assert _lt_refuses(data)
    with pytest.raises(MetainfoError, match="empty name"):
        Metainfo.from_bytes(data)


def test_long_name_keeps_extension_on_a_utf8_boundary() -> None:
    data = _multi([["\u00e9".encode() * 200 + b".flac"], [b"x" * 400]])
    m = Metainfo.from_bytes(data)
    first, second = (f.path[0] for f in m.info.files)
    assert first.endswith(".flac") and len(first.encode()) <= 255
    assert set(first[: -len(".flac")]) == {"\u00e9"}
    assert len(second.encode()) <= 255
    assert [r.reason for r in m.renamed_paths] == ["name too long", "name too long"]


def test_invalid_bytes_past_the_limit_still_fit() -> None:
    # libtorrent itself would keep 300 '_' here, too long for Linux; we shorten
    m = Metainfo.from_bytes(_multi([[b"\xff" * 300]]))
    assert m.info.files[0].path == ("_" * 255,)


# --------------------------------------------------------------------- duplicates


def test_duplicates_get_numbered_like_libtorrent() -> None:
    data = _multi([[b"a.txt"], [b"a.txt"], [b"A.TXT"], [b"d"], [b"d", b"f"], [b"x.tar.gz"]])
    assert _ours(data) == _theirs(data)
    assert _ours(data) == ["t/a.txt", "t/a.1.txt", "t/A.2.TXT", "t/d.1", "t/d/f", "t/x.tar.gz"]
    m = Metainfo.from_bytes(data)
    assert RenamedPath("t/a.txt", "t/a.1.txt", "same path as another file or directory") in (
        m.renamed_paths
    )


def test_renamed_names_never_collide_again() -> None:
    # libtorrent leaves "a.1" twice here; we do not
    paths = _ours(_multi([[b"a"], [b"a"], [b"a.1"]]))
    assert paths == ["t/a", "t/a.1", "t/a.1.1"]
    assert len({p.lower() for p in paths}) == len(paths)


def test_too_many_duplicates_are_refused() -> None:
    data = _multi([[b"same"]] * 40)
    with pytest.raises(MetainfoError, match=f"more than {MAX_DUPLICATE_FILENAMES} files collide"):
        Metainfo.from_bytes(data)


def test_sanitizing_then_colliding_is_renamed() -> None:
    data = _multi([[b"a/b"], [b"ab"], [b".."], [b"_"]])
    assert _ours(data) == _theirs(data) == ["t/ab", "t/ab.1", "t/_", "t/_.1"]


# ----------------------------------------------------------------------- BEP 47


def test_pad_file_without_path_loads() -> None:
    data = _multi([[b"a"], {b"length": PL - 100, b"attr": b"p"}, [b"b"]])
    m = Metainfo.from_bytes(data)
    assert [f.is_padding for f in m.info.files] == [False, True, False]
    assert m.info.files[2].offset == PL
    assert _ours(data) == _theirs(data)


def test_bitcomet_padding_recognised_by_name() -> None:
    m = Metainfo.from_bytes(_multi([[b"a"], [b"_____padding_file_0_"], [b"b"]]))
    assert [f.is_padding for f in m.info.files] == [False, True, False]


def _symlinks(tmp_path: Path) -> tuple[Metainfo, Path]:
    files = [
        [b"a"],
        [b"sub", b"b"],
        {b"attr": b"l", b"path": [b"to_a"], b"symlink path": [b"a"]},
        {b"attr": b"l", b"path": [b"sub", b"to_sub_b"], b"symlink path": [b"sub", b"b"]},
        {b"attr": b"l", b"path": [b"sub", b"rel"], b"symlink path": [b"b"]},  # link-relative
        {b"attr": b"l", b"path": [b"to_dir"], b"symlink path": [b"sub"]},
        {b"attr": b"l", b"path": [b"esc"], b"symlink path": [b"..", b"..", b"outside"]},
        {b"attr": b"l", b"path": [b"loop1"], b"symlink path": [b"loop2"]},
        {b"attr": b"l", b"path": [b"loop2"], b"symlink path": [b"loop1"]},
        {b"attr": b"l", b"path": [b"nolink"]},  # no 'symlink path': an empty file
    ]
    m = Metainfo.from_bytes(_multi(files))
    dl = tmp_path / "dl"
    dl.mkdir()
    s = FileStorage(Layout.from_info(m.info, dl))
    try:
        s.write_block(0, 0, bytes(m.info.piece_size(0)))
        s.ensure_files()
    finally:
        s.close()
    return m, dl / "t"


def test_symlinks_are_created_inside_the_torrent(tmp_path: Path) -> None:
    m, top = _symlinks(tmp_path)
    links = {"/".join(f.path): f.symlink_target for f in m.info.files if f.is_symlink}
    assert links == {
        "to_a": ("a",),
        "sub/to_sub_b": ("sub", "b"),
        "sub/rel": ("sub", "b"),
        "to_dir": ("sub",),
    }
    assert os.readlink(top / "to_a") == "a"
    assert os.readlink(top / "sub" / "to_sub_b") == "b"
    assert os.readlink(top / "to_dir") == "sub"
    assert (top / "to_dir" / "b").exists()
    for name in ("esc", "loop1", "loop2", "nolink"):
        assert not (top / name).is_symlink() and (top / name).stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl"]
    for p in top.rglob("*"):
        assert Path(os.path.realpath(p)).is_relative_to(top.resolve())
    assert sum("empty file" in w for w in m.warnings) == 3


def test_symlink_targets_agree_with_libtorrent(tmp_path: Path) -> None:
    data = _multi(
        [
            [b"a"],
            {b"attr": b"l", b"path": [b"ok"], b"symlink path": [b"..", b"a"]},
            {b"attr": b"l", b"path": [b"bad"], b"symlink path": [b"/etc", b"passwd"]},
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = lt.torrent_info(data).files()
        assert fs.symlink(1) == "t/a"  # kept
        assert fs.symlink(2) == "t/bad"  # libtorrent's mark of an invalid link
    m = Metainfo.from_bytes(data)
    assert m.info.files[1].symlink_target == ("a",)
    assert not m.info.files[2].is_symlink


def test_executable_and_hidden_attributes(tmp_path: Path) -> None:
    m = Metainfo.from_bytes(
        _multi([{b"length": 10, b"path": [b"run.sh"], b"attr": b"x"}, [b"h"]], length=5)
    )
    hidden = Metainfo.from_bytes(_multi([{b"length": 10, b"path": [b"h"], b"attr": b"h"}]))
    assert hidden.info.files[0].is_hidden  # reported; Linux has no hidden attribute
    s = FileStorage(Layout.from_info(m.info, tmp_path))
    try:
        s.ensure_files()
    finally:
        s.close()
    mode = (tmp_path / "t" / "run.sh").stat().st_mode
    assert mode & stat.S_IXUSR and mode & stat.S_IRUSR
    assert not (tmp_path / "t" / "h").stat().st_mode & stat.S_IXUSR


def test_v2_symlink_needs_no_length_or_root() -> None:
    tree = {b"a": _leaf(), b"l": {b"": {b"attr": b"l", b"symlink path": [b"a"]}}}
    data = _v2(tree)
    m = Metainfo.from_bytes(data)
    assert m.info.files[1].symlink_target == ("a",)
    assert _ours(data) == _theirs(data)


def test_v2_padding_attribute_is_refused_like_libtorrent() -> None:
    data = _v2({b"a": _leaf(), b"p": {b"": {b"attr": b"p", b"length": 5}}})
    assert _lt_refuses(data)
    with pytest.raises(MetainfoError, match="cannot be padding"):
        Metainfo.from_bytes(data)


# -------------------------------------------------------- what surrounds the info


def test_trailing_bytes_are_ignored_with_a_warning() -> None:
    data = _multi([[b"a"]])
    m = Metainfo.from_bytes(data + b"\r\n<html>junk")
    assert not _lt_refuses(data + b"\r\n<html>junk")
    assert m.info_hash == Metainfo.from_bytes(data).info_hash
    assert m.warnings == ("12 bytes after the top-level dictionary ignored",)


def test_renamed_paths_list_every_change() -> None:
    m = Metainfo.from_bytes(_multi([[b"ok"], [b"..", b"x"], [b"\xff.txt"]], name=b"a/b"))
    assert m.renamed_paths == (
        RenamedPath("a/b", "ab", "unsafe characters"),
        RenamedPath("ab/../x", "ab/_/x", "'..' is not a file name"),
        RenamedPath("ab/\\xff.txt", "ab/_.txt", "invalid UTF-8"),
    )
    assert Metainfo.from_bytes(_multi([[b"ok"]])).renamed_paths == ()


def _v2_payload(tmp_path: Path, version: str) -> bytes:
    root = tmp_path / "p"
    root.mkdir()
    (root / "big").write_bytes(os.urandom(3 * PL + 5))
    (root / "big2").write_bytes(os.urandom(2 * PL + 5))
    (root / "small").write_bytes(b"x" * 10)
    return create_torrent(root, version=version, piece_length=PL).to_bytes()  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["v2", "hybrid"])
@pytest.mark.parametrize("keep", [0, 1])
def test_missing_or_incomplete_piece_layers_load(tmp_path: Path, version: str, keep: int) -> None:
    from core.formats.bencoding import decode

    top = decode(_v2_payload(tmp_path, version))
    layers = top.pop(b"piece layers")
    if keep:
        top[b"piece layers"] = dict(list(layers.items())[:keep])
    data = encode(top)
    assert not _lt_refuses(data)
    m = Metainfo.from_bytes(data)
    assert len(m.missing_piece_layers) == 2 - keep
    assert len(m.piece_layers) == keep
    assert any("piece layers missing" in w for w in m.warnings)


async def test_pure_v2_without_layers_stops_at_download_with_a_message(tmp_path: Path) -> None:
    from core.formats.bencoding import decode

    top = decode(_v2_payload(tmp_path, "v2"))
    del top[b"piece layers"]
    m = Metainfo.from_bytes(encode(top))
    async with Client(loopback_config(tmp_path, "us")) as client:
        t = await client.add_metainfo(m)
        async with asyncio.timeout(10):
            while t.state is not TorrentState.ERROR:
                await asyncio.sleep(0.01)
        assert t.error is not None and "piece layers" in t.error and "BEP 52" in t.error


# ---------------------------------------------------------------------- refused


def _hybrid(v1_files: list[Any], tree: Any, total: int) -> bytes:
    info = {
        b"file tree": tree,
        b"files": v1_files,
        b"meta version": 2,
        b"name": b"t",
        b"piece length": PL,
        b"pieces": _sha1s(bytes(total)),
    }
    return encode({b"info": info})


def _pad(n: int) -> dict[bytes, Any]:
    return {b"attr": b"p", b"length": n, b"path": [b".pad", str(n).encode()]}


GOOD_TREE = {b"a": _leaf(100, 1), b"b": _leaf(200, 2)}
GOOD_V1 = [{b"length": 100, b"path": [b"a"]}, _pad(PL - 100), {b"length": 200, b"path": [b"b"]}]


def test_consistent_hybrid_loads_with_or_without_tail_padding() -> None:
    for v1 in (GOOD_V1, [*GOOD_V1, _pad(PL - 200)]):
        data = _hybrid(v1, GOOD_TREE, sum(f[b"length"] for f in v1))
        assert not _lt_refuses(data)
        m = Metainfo.from_bytes(data)
        assert [f.pieces_root for f in m.info.payload_files()] == [_root(1), _root(2)]


@pytest.mark.parametrize(
    ("v1", "match"),
    [
        # size differs
        (
            [GOOD_V1[0], GOOD_V1[1], {b"length": 201, b"path": [b"b"]}],
            r"entry 2 is file 'b' \(201 bytes at offset 16384\) in the v1 'files' but file 'b' "
            r"\(200 bytes",
        ),
        # order differs
        (
            [{b"length": 200, b"path": [b"b"]}, _pad(PL - 200), {b"length": 100, b"path": [b"a"]}],
            r"entry 0 is file 'b'",
        ),
        # padding missing: b is no longer piece-aligned
        ([GOOD_V1[0], GOOD_V1[2]], r"entry 1 is file 'b' \(200 bytes at offset 100\)"),
        # padding of the wrong size
        (
            [GOOD_V1[0], _pad(PL - 99), GOOD_V1[2]],
            r"entry 2 is file 'b' \(200 bytes at offset 16385\)",
        ),
        # an extra file
        ([*GOOD_V1, _pad(PL - 200), {b"length": 1, b"path": [b"c"]}], r"4 entries|5 entries"),
    ],
)
def test_inconsistent_hybrid_is_refused(v1: list[Any], match: str) -> None:
    data = _hybrid(v1, GOOD_TREE, sum(f[b"length"] for f in v1))
    assert _lt_refuses(data)
    with pytest.raises(MetainfoError, match="inconsistent hybrid torrent: " + match):
        Metainfo.from_bytes(data)


def _unsorted_v2() -> tuple[bytes, int]:
    leaf = encode(_leaf(5))
    tree = b"d1:b" + leaf + b"1:a" + leaf + b"e"
    raw = b"d4:infod9:file tree" + tree + b"12:meta versioni2e4:name1:t12:piece lengthi16384eee"
    return raw, raw.index(b"1:a")


def test_unsorted_v2_file_tree_is_refused_with_the_offset() -> None:
    raw, offset = _unsorted_v2()
    assert _lt_refuses(raw)
    with pytest.raises(MetainfoError, match=f"key b'a' out of sorted order at byte {offset}"):
        Metainfo.from_bytes(raw)


def test_unsorted_v1_keeps_loading_with_its_raw_hash() -> None:
    info = b"d4:name1:n6:lengthi5e12:piece lengthi16384e6:pieces20:" + bytes(20) + b"e"
    raw = b"d4:info" + info + b"e"
    assert not _lt_refuses(raw)
    m = Metainfo.from_bytes(raw)
    assert m.info_hash.v1 == hashlib.sha1(info).digest()


@pytest.mark.parametrize(
    ("leaf", "match"),
    [
        ({b"length": 100, b"pieces root": bytes(32)}, "all zeros"),
        ({b"length": 100}, "missing"),
    ],
)
def test_bad_pieces_root_is_refused(leaf: dict[bytes, Any], match: str) -> None:
    data = _v2({b"a": {b"": leaf}, b"b": _leaf()})
    assert _lt_refuses(data)
    with pytest.raises(MetainfoError, match=match):
        Metainfo.from_bytes(data)


def test_empty_file_needs_no_pieces_root() -> None:
    data = _v2({b"a": {b"": {b"length": 0}}, b"b": _leaf()})
    assert _ours(data) == _theirs(data)


# --------------------------------------------------------------------- property

_COMPONENT = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b".", b"..", b"/", b"\\", b"a/../b", b"\x00", b"\xff"]),
    st.text(max_size=80).map(str.encode),
)


@PROPERTY
@given(st.lists(st.lists(_COMPONENT, min_size=1, max_size=4), min_size=1, max_size=4))
def test_sanitized_paths_stay_inside_and_are_valid_linux_names(
    tmp_path: Path, paths: list[list[bytes]]
) -> None:
    data = _multi(paths, length=1)
    m = Metainfo.from_bytes(data)
    root = tmp_path.resolve()
    seen = set()
    for f in m.info.payload_files():
        for c in (m.info.name, *f.path):
            raw = c.encode()
            assert 0 < len(raw) <= 255 and b"/" not in raw and b"\x00" not in raw
            assert c not in (".", "..")
        p = m.info.file_path(f, root)
        assert p.resolve().is_relative_to(root)
        seen.add(m.info.display_path(f).lower())
    assert len(seen) == len(m.info.payload_files())


@PROPERTY
@given(st.binary(min_size=1, max_size=270))
def test_component_matches_libtorrent(raw: bytes) -> None:
    theirs = _theirs(_multi([[b"d", raw]]))[0].split("/")[-1]
    if len(theirs.encode()) <= 255:
        assert sanitize_component(raw) == theirs


# --------------------------------------------------- download from libtorrent


@pytest.mark.interop
async def test_download_sanitized_torrent_from_libtorrent(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    raw_paths = [
        [b"..", b"..", b"escape.bin"],
        [b"a/b", b"c.bin"],
        [b"caf\xe9.txt"],
        [b"dup.bin"],
        [b"DUP.bin"],
        [b"", b"empty-dir.bin"],
    ]
    sizes = [40_000, 12_345, 777, 20_000, 30_001, 5]
    blobs = [os.urandom(n) for n in sizes]
    info = {
        b"name": b"../t",
        b"piece length": PL,
        b"pieces": _sha1s(b"".join(blobs)),
        b"files": [{b"length": n, b"path": p} for p, n in zip(raw_paths, sizes, strict=True)],
    }
    data = encode({b"info": info})
    m = Metainfo.from_bytes(data)
    names = _theirs(data)  # libtorrent applies the very same names
    assert [m.info.display_path(f) for f in m.info.files] == names
    assert len(m.renamed_paths) == 1 + len(raw_paths) - 1  # the name, every path but dup.bin

    seed_dir = tmp_path / "seed"
    for rel, blob in zip(names, blobs, strict=True):
        (seed_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed_dir / rel).write_bytes(blob)
    torrent_path = tmp_path / "x.torrent"
    torrent_path.write_bytes(data)
    seeder = await asyncio.to_thread(lt_peer_factory, "seeder")
    ih = await asyncio.to_thread(seeder.add_torrent, torrent_path, seed_dir, True)
    assert ih == m.info_hash.hex()

    cfg = loopback_config(tmp_path / "jail", "us")
    async with Client(cfg) as client:
        t = await client.add_metainfo(m, peers=[("127.0.0.1", seeder.port)])
        async with asyncio.timeout(45):
            await t.wait_complete()
        download = Path(client.config.download_dir)
    got = {str(p.relative_to(download)): p.read_bytes() for p in download.rglob("*") if p.is_file()}
    assert got == dict(zip(names, blobs, strict=True))
    assert [p.name for p in download.iterdir()] == [m.info.name]
    # nothing outside the torrent's directory: beside it, only the client's
    # own state directory exists, and nothing new appeared in tmp_path
    us = tmp_path / "jail" / "us"
    assert sorted(p.name for p in us.iterdir()) == ["downloads", "state"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jail", "seed", "x.torrent"]
    assert sorted(p.name for p in (tmp_path / "jail").iterdir()) == ["us"]
