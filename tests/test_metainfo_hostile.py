"""Hostile .torrent files: a typed error, or names made safe; never a write outside.

Malformed or inconsistent torrents are refused with a typed error.  Hostile
*names* are sanitized instead (as libtorrent does): those torrents load, and
the guarantee is asserted on the file system: every file they name is
created, and nothing appears outside the torrent's directory.

The property tests run ``HYPOTHESIS_EXAMPLES`` examples each (default
5,000) so CI can raise the count without touching the code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import BencodeError, MetainfoError
from core.formats.bencoding import encode
from core.formats.metainfo import Metainfo
from core.formats.safepath import sanitize_component
from core.storage.file import FileStorage
from core.storage.layout import Layout

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: The structured generator costs more per example than raw bytes; it runs
#: a fifth of the examples so the file stays fast at the default count.
STRUCTURED = settings(PROPERTY, max_examples=max(100, EXAMPLES // 5))
PL = 16384
TYPED = (BencodeError, MetainfoError)


def _sha1s(n: int) -> bytes:
    return b"".join(hashlib.sha1(bytes([i % 256])).digest() for i in range(n))


def _v1_multi(paths: list[list[bytes]], length: int = 100) -> dict[bytes, Any]:
    total = length * len(paths)
    return {
        b"name": b"t",
        b"piece length": PL,
        b"pieces": _sha1s(-(-total // PL)),
        b"files": [{b"length": length, b"path": p} for p in paths],
    }


def _v1_single(length: int = 40000, **extra: Any) -> dict[bytes, Any]:
    info = {
        b"name": b"f",
        b"piece length": PL,
        b"pieces": _sha1s(-(-length // PL)),
        b"length": length,
    }
    info.update({k.encode(): v for k, v in extra.items()})
    return info


def _v2_tree(tree: Any) -> dict[bytes, Any]:
    return {b"name": b"t", b"piece length": PL, b"meta version": 2, b"file tree": tree}


def _leaf(length: int = 100, root: bytes = bytes(range(32))) -> dict[bytes, Any]:
    return {b"": {b"length": length, b"pieces root": root}}


VALID = encode(
    {
        b"announce": b"http://t/a",
        b"comment": b"c",
        b"info": _v1_multi([[b"a"], [b"d", b"b"]]),
    }
)


def _reject(
    tmp_path: Path,
    raw: bytes,
    error: type[Exception] | tuple[type[Exception], ...] = TYPED,
    match: str | None = None,
) -> None:
    """Parse ``raw`` from a file; it must fail typed and leave the download dir empty."""
    src = tmp_path / "in.torrent"
    src.write_bytes(raw)
    dl = tmp_path / "dl"
    dl.mkdir()
    with pytest.raises(error, match=match):
        Metainfo.load(src)
    with pytest.raises(error, match=match):
        Metainfo.from_bytes(raw)
    assert list(dl.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl", "in.torrent"]


# ----------------------------------------------------------------- bencode


def test_valid_sample_parses() -> None:
    assert len(Metainfo.from_bytes(VALID).info.files) == 2


def test_every_truncation_fails(tmp_path: Path) -> None:
    for n in range(len(VALID)):
        with pytest.raises(TYPED):
            Metainfo.from_bytes(VALID[:n])
    _reject(tmp_path, VALID[:-1], BencodeError)


@pytest.mark.parametrize(
    "raw",
    [
        b"d4:info99999999999999999:xe",
        b"d4:info" + b"9" * 40 + b":e",
        b"d4:infod4:name4294967296:ee",
        b"l" * 100_000,
        b"d1:a" * 5000,
        b"",
        b"i-0e",
        b"d4:info i1ee",
    ],
)
def test_malformed_bencode(tmp_path: Path, raw: bytes) -> None:
    _reject(tmp_path, raw, BencodeError)


def test_deep_file_tree_hits_the_nesting_limit(tmp_path: Path) -> None:
    # written by hand: our encoder refuses to produce such nesting
    tree = b"d1:d" * 400 + encode(_leaf()) + b"e" * 400
    raw = b"d4:infod9:file tree" + tree + b"12:meta versioni2e4:name1:t12:piece lengthi16384eee"
    _reject(tmp_path, raw, BencodeError, "nesting")


def test_deep_but_allowed_file_tree_parses() -> None:
    tree: Any = _leaf()
    for _ in range(100):
        tree = {b"d": tree}
    m = Metainfo.from_bytes(encode({b"info": _v2_tree(tree)}))
    assert len(m.info.files[0].path) == 100


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize(
    ("top", "match"),
    [
        ([1, 2], "dict"),
        ({b"announce": b"x"}, "info"),
        ({b"info": b"string"}, "not a dict"),
        ({b"info": {b"piece length": PL, b"pieces": b"", b"length": 1}}, "name"),
        ({b"info": _v1_single(**{"meta version": 3})}, "meta version"),
        ({b"info": {**_v1_single(), b"files": []}}, "both"),
        ({b"info": {k: v for k, v in _v1_single().items() if k != b"pieces"}}, "pieces"),
        ({b"info": {**_v1_single(), b"pieces": 5}}, "pieces"),
        ({b"info": {**_v1_multi([[b"a"]]), b"files": b"x"}}, "files"),
        ({b"info": {**_v1_multi([[b"a"]]), b"files": [5]}}, "dict"),
        ({b"info": {**_v1_multi([[b"a"]]), b"files": [{b"length": 1}]}}, "path"),
        ({b"info": {**_v1_multi([[b"a"]]), b"files": [{b"length": 1, b"path": []}]}}, "path"),
        ({b"info": {**_v1_multi([[b"a"]]), b"files": [{b"length": 1, b"path": [1]}]}}, "path"),
        ({b"info": _v1_single(0, pieces=b"")}, "no data"),
        ({b"info": _v2_tree({})}, "file tree"),
        ({b"info": _v2_tree(b"x")}, "file tree"),
        ({b"info": _v2_tree({b"a": {b"": {b"length": 5}}})}, "pieces root"),
        ({b"info": _v2_tree({b"a": {b"": {b"length": 5, b"pieces root": b"x"}}})}, "pieces root"),
        ({b"info": _v2_tree({b"a": {**_leaf(), b"b": _leaf()}})}, "both a file and a directory"),
        ({b"info": _v2_tree({b"a": {b"": 5}})}, "not a dict"),
        ({b"info": _v2_tree({b"a": 5})}, "dict"),
        ({b"info": _v2_tree({b"": _leaf()})}, "empty name"),
        ({b"info": _v2_tree({b"a": _leaf(2 * PL)}), b"piece layers": {b"x": b""}}, "piece layer"),
        ({b"info": _v2_tree({b"a": _leaf(100, bytes(32))})}, "all zeros"),
        ({b"info": _v2_tree({b"a": {b"": {b"length": 5, b"attr": b"p"}}})}, "padding"),
        ({b"info": _v2_tree({b"a": _leaf(1 << 60)})}, "above"),
        ({b"info": {**_v1_single(), b"piece length": PL * (1 << 40)}}, "piece length"),
    ],
)
def test_invalid_structure(tmp_path: Path, top: Any, match: str) -> None:
    _reject(tmp_path, encode(top), MetainfoError, match)


@pytest.mark.parametrize("length", [-1, -(1 << 40)])
def test_negative_sizes(tmp_path: Path, length: int) -> None:
    info = _v1_multi([[b"a"], [b"b"]])
    info[b"files"][1][b"length"] = length
    _reject(tmp_path, encode({b"info": info}), MetainfoError, "below 0")


def test_negative_v2_size(tmp_path: Path) -> None:
    tree = {b"a": {b"": {b"length": -5, b"pieces root": bytes(32)}}}
    _reject(tmp_path, encode({b"info": _v2_tree(tree)}), MetainfoError, "below 0")


@pytest.mark.parametrize(
    ("pieces", "match"),
    [
        (_sha1s(3)[:-1], "multiple of 20"),
        (_sha1s(2), "need 3 pieces"),
        (_sha1s(4), "need 3 pieces"),
        (b"", "need 3 pieces"),
    ],
)
def test_pieces_inconsistent(tmp_path: Path, pieces: bytes, match: str) -> None:
    _reject(tmp_path, encode({b"info": _v1_single(40000, pieces=pieces)}), MetainfoError, match)


@pytest.mark.parametrize("pl", [0, -16384, 1, 8192, 16383, 16385, 3 * 16384, 1 << 33, b"16384"])
def test_piece_length_not_power_of_two(tmp_path: Path, pl: Any) -> None:
    info = _v1_single(**{"piece length": pl})
    _reject(tmp_path, encode({b"info": info}), MetainfoError, "piece length")


# -------------------------------------------------------------------- paths

UNSAFE_COMPONENTS = [
    b"..",
    b".",
    b"",
    b"/etc",
    b"a/../../b",
    b"a\\..\\b",
    b"\\\\server\\share",
    b"C:",
    b"c:\\windows",
    b"z:file",
    b"nul\x00byte",
    "..".encode("utf-16-le"),
]


def _land(tmp_path: Path, raw: bytes) -> Metainfo:
    """Load ``raw`` and create every file it names under ``tmp_path/jail/dl``.

    The assertions are on the file system: nothing may appear anywhere
    under ``tmp_path`` except inside the torrent's own directory (or its
    single file), whatever the torrent says.
    """
    m = Metainfo.from_bytes(raw)
    jail = tmp_path / "jail"
    dl = jail / "dl"
    dl.mkdir(parents=True)
    storage = FileStorage(Layout.from_info(m.info, dl))
    try:
        storage.ensure_files()
        for p in range(m.info.num_pieces):
            storage.write_block(p, 0, b"\x01" * m.info.piece_size(p))
    finally:
        storage.close()
    top = dl / m.info.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jail"]
    assert list(jail.iterdir()) == [dl]
    assert list(dl.iterdir()) == [top]
    for path in top.rglob("*") if top.is_dir() else [top]:
        real = Path(os.path.realpath(path))
        assert real.is_relative_to(top.resolve()) or real == top.resolve()
        assert len(path.name.encode()) <= 255
    for f in m.info.payload_files():
        assert os.path.lexists(m.info.file_path(f, dl))
    return m


@pytest.mark.parametrize("bad", UNSAFE_COMPONENTS)
def test_unsafe_v1_path_is_sanitized(tmp_path: Path, bad: bytes) -> None:
    m = _land(tmp_path, encode({b"info": _v1_multi([[b"ok"], [b"dir", bad, b"f"]])}))
    path = m.info.files[1].path
    assert path[0] == "dir" and path[-1] == "f"
    if bad in (b"C:", b"z:file"):
        assert m.renamed_paths == ()  # a legitimate name on Linux (as in libtorrent)
    else:
        assert [r.safe for r in m.renamed_paths] == ["t/" + "/".join(path)]


@pytest.mark.parametrize("bad", UNSAFE_COMPONENTS)
def test_unsafe_name_is_sanitized(tmp_path: Path, bad: bytes) -> None:
    raw = encode({b"info": _v1_single(name=bad)})
    if sanitize_component(bad, force=False) == "" or bad == b"":
        # a single file needs a name; libtorrent refuses these too
        _reject(tmp_path, raw, MetainfoError, "name")
        return
    m = _land(tmp_path, raw)
    assert m.info.name not in ("", ".", "..") and "/" not in m.info.name


@pytest.mark.parametrize("bad", [c for c in UNSAFE_COMPONENTS if c != b""])
def test_unsafe_v2_tree_key_is_sanitized(tmp_path: Path, bad: bytes) -> None:
    tree = {b"ok": _leaf(), b"dir": {bad: {b"f": _leaf()}}}
    m = _land(tmp_path, encode({b"info": _v2_tree(tree)}))
    assert {f.path[0] for f in m.info.files} == {"ok", "dir"}


def test_unsafe_path_utf8_wins_over_safe_path(tmp_path: Path) -> None:
    info = _v1_multi([[b"safe"]])
    info[b"files"][0][b"path.utf-8"] = [b"..", b"x"]
    m = _land(tmp_path, encode({b"info": info}))
    assert m.info.files[0].path == ("_", "x")
    assert m.renamed_paths[0].original == "t/../x"


def test_absolute_path_as_empty_first_component(tmp_path: Path) -> None:
    # a creator that split "/etc/passwd" on "/" yields ["", "etc", "passwd"]
    m = _land(tmp_path, encode({b"info": _v1_multi([[b"", b"etc", b"passwd"]])}))
    assert m.info.files[0].path == ("_", "etc", "passwd")


@pytest.mark.parametrize(
    ("paths", "want"),
    [
        ([[b"a"], [b"a"]], [("a",), ("a.1",)]),
        ([[b"d", b"f"], [b"d", b"f"]], [("d", "f"), ("d", "f.1")]),
        ([[b"d"], [b"d", b"f"]], [("d.1",), ("d", "f")]),
        ([[b"d", b"f"], [b"d"]], [("d", "f"), ("d.1",)]),
        ([[b".."], [b"."]], [("_",), ("_.1",)]),
    ],
)
def test_colliding_paths_are_renamed(
    tmp_path: Path, paths: list[list[bytes]], want: list[tuple[str, ...]]
) -> None:
    m = _land(tmp_path, encode({b"info": _v1_multi(paths)}))
    assert [f.path for f in m.info.files] == want


def test_hybrid_with_v1_traversal_is_inconsistent(tmp_path: Path) -> None:
    info = _v2_tree({b"a": _leaf(100)})
    info[b"pieces"] = _sha1s(1)
    info[b"files"] = [{b"length": 100, b"path": [b"..", b"a"]}]
    _reject(tmp_path, encode({b"info": info}), MetainfoError, "inconsistent hybrid")


def test_symlink_cannot_point_outside(tmp_path: Path) -> None:
    info = _v1_multi([[b"a"]])
    info[b"files"] += [
        {b"attr": b"l", b"path": [b"up"], b"symlink path": [b"..", b"..", b"etc", b"passwd"]},
        {b"attr": b"l", b"path": [b"abs"], b"symlink path": [b"/etc", b"passwd"]},
        {b"attr": b"l", b"path": [b"ok"], b"symlink path": [b"..", b"a"]},
    ]
    m = _land(tmp_path, encode({b"info": info}))
    top = tmp_path / "jail" / "dl" / "t"
    assert not (top / "up").is_symlink() and (top / "up").stat().st_size == 0
    assert not (top / "abs").is_symlink()
    assert os.readlink(top / "ok") == "a"
    assert len(m.warnings) == 2


# --------------------------------------------------------------- properties


def _check_parsed(m: Metainfo, root: Path) -> None:
    """Whatever parses must be internally consistent and stay under ``root``."""
    info = m.info
    assert info.num_pieces >= 1
    for f in info.payload_files():
        for part in f.path:
            assert part not in ("", ".", "..") and "/" not in part and "\\" not in part
        try:
            p = info.file_path(f, root)
        except MetainfoError:
            continue
        assert p.resolve().is_relative_to(root.resolve())


@PROPERTY
@given(st.binary(max_size=300))
def test_random_bytes_only_typed_errors(data: bytes) -> None:
    try:
        Metainfo.from_bytes(data)
    except TYPED:
        pass


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID)), st.integers(0, 3), st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_torrent_only_typed_errors(
    tmp_path: Path, edits: list[tuple[int, int, bytes]]
) -> None:
    data = bytearray(VALID)
    for pos, kind, chunk in edits:
        pos = min(pos, len(data))
        if kind == 0:
            data[pos : pos + len(chunk)] = chunk  # overwrite
        elif kind == 1:
            data[pos:pos] = chunk  # insert
        elif kind == 2:
            del data[pos : pos + len(chunk)]  # delete
        else:
            del data[pos:]  # truncate
    try:
        m = Metainfo.from_bytes(bytes(data))
    except TYPED:
        return
    _check_parsed(m, tmp_path)


_PART = st.sampled_from(
    [b"a", b"b", b"..", b".", b"", b"/", b"x/y", b"\\", b"C:", b"con", b"nul.txt", b"\x00", b"\xff"]
)
_PATH = st.lists(_PART, min_size=0, max_size=3)


@STRUCTURED
@given(
    name=_PART,
    paths=st.lists(_PATH, min_size=1, max_size=3),
    length=st.integers(-2, 3 * PL),
    pieces_delta=st.integers(-1, 1),
)
def test_structured_hostile_info_only_typed_errors(
    tmp_path: Path, name: bytes, paths: list[list[bytes]], length: int, pieces_delta: int
) -> None:
    total = max(length, 0) * len(paths)
    info = {
        b"name": name,
        b"piece length": PL,
        b"pieces": _sha1s(max(0, -(-total // PL) + pieces_delta)),
        b"files": [{b"length": length, b"path": p} for p in paths],
    }
    raw = encode({b"info": info})
    try:
        Metainfo.from_bytes(raw)
    except TYPED:
        return
    with tempfile.TemporaryDirectory() as d:
        _check_parsed(_land(Path(d), raw), Path(d) / "jail" / "dl")
