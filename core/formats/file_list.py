"""The file list of an info dict: v1 ``files``/``length``, the v2 ``file tree``, hybrids.

Split from :mod:`.info` along a real seam: turning the raw, untrusted file
entries into a checked list of paths and lengths is its own job, with its
own rules (libtorrent's): every name is sanitized (:mod:`.safepath`) and
de-duplicated rather than refused, BEP 47 attributes are read (padding
without a path, symlinks resolved to a file or directory of the torrent),
and a hybrid's two views must agree.  :func:`.info.parse_info_dict` turns
the result into :class:`~.info.FileEntry` values with offsets.  What was
changed is reported, never silent (:class:`RenamedPath`, warnings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MetainfoError
from . import merkle
from .safepath import sanitize_component, show_raw

__all__ = [
    "MAX_TOTAL_LENGTH",
    "RawFile",
    "RenamedPath",
    "attr_field",
    "int_field",
    "merge_hybrid",
    "renames",
    "resolve_symlinks",
    "v1_files",
    "v2_files",
]

MAX_TOTAL_LENGTH = 1 << 50


@dataclass(frozen=True, slots=True)
class RenamedPath:
    """A path changed to make it safe: shown to the user, never silent.

    ``original`` is the torrent's path with undecodable bytes as ``\\xNN``;
    ``safe`` is where the file is stored; both start with the torrent's
    name (a changed name gets its own entry), as ``Info.display_path``.
    """

    original: str
    safe: str
    reason: str


def int_field(d: Mapping[bytes, Any], key: bytes, where: str, *, minimum: int = 0) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MetainfoError(f"{where}: {key.decode()!r} missing or not an integer")
    if value < minimum:
        raise MetainfoError(f"{where}: {key.decode()!r} is {value}, below {minimum}")
    if value > MAX_TOTAL_LENGTH:
        raise MetainfoError(f"{where}: {key.decode()!r} is {value}, above {MAX_TOTAL_LENGTH}")
    return value


def attr_field(d: Mapping[bytes, Any]) -> str:
    value = d.get(b"attr", b"")
    if not isinstance(value, bytes):
        raise MetainfoError("'attr' is not a string")
    return value.decode("ascii", "replace")


@dataclass(slots=True)
class RawFile:
    """One file while parsing: raw and sanitized path, before offsets are known."""

    raw: tuple[bytes, ...]
    path: tuple[str, ...]
    length: int
    attr: str
    root: bytes | None = None
    symlink: tuple[str, ...] | None = None

    @property
    def is_padding(self) -> bool:
        return "p" in self.attr


def _sanitize(parts: Sequence[bytes]) -> tuple[str, ...]:
    return tuple(sanitize_component(p) for p in parts)


def _symlink_target(raw: object, where: str) -> tuple[str, ...]:
    """BEP 47 ``symlink path``: ``.`` and ``..`` dropped, the rest sanitized."""
    if not isinstance(raw, list):
        return ()
    if not all(isinstance(c, bytes) for c in raw):
        raise MetainfoError(f"{where}: 'symlink path' holds a non-string component")
    return tuple(sanitize_component(c) for c in raw if c not in (b".", b".."))


def _v1_entry(item: Mapping[bytes, Any], where: str) -> RawFile:
    attr = attr_field(item)
    symlink: tuple[str, ...] | None = None
    if "l" in attr:
        # A symlink takes no room in the piece space, whatever 'length' says.
        length = 0
        symlink = _symlink_target(item.get(b"symlink path"), where)
        if not symlink:
            attr = attr.replace("l", "")
            symlink = None
    else:
        length = int_field(item, b"length", where)
    utf8 = item.get(b"path.utf-8")
    raw = utf8 if isinstance(utf8, list) else item.get(b"path")
    if isinstance(raw, list) and raw:
        if not all(isinstance(c, bytes) for c in raw):
            raise MetainfoError(f"{where}: 'path' holds a non-string component")
        parts: tuple[bytes, ...] = tuple(raw)
        path = _sanitize(parts)
    elif "p" in attr:
        # BEP 47 padding needs no name: it is never written.
        path = (".pad", str(length))
        parts = tuple(c.encode() for c in path)
    else:
        raise MetainfoError(f"{where}: 'path' must be a non-empty list")
    if "p" not in attr and any("_____padding_file_" in c for c in path):
        attr += "p"  # BitComet's padding files, recognised by name as libtorrent does
    return RawFile(parts, path, length, attr, None, symlink)


def v1_files(info: Mapping[bytes, Any]) -> tuple[list[RawFile], bool]:
    """The v1 file list (``length`` or ``files``), paths relative to the torrent dir."""
    if b"files" in info:
        if b"length" in info:
            raise MetainfoError("info has both 'length' and 'files'")
        raw = info[b"files"]
        if not isinstance(raw, list) or not raw:
            raise MetainfoError("'files' must be a non-empty list")
        out: list[RawFile] = []
        for n, item in enumerate(raw):
            if not isinstance(item, dict):
                raise MetainfoError(f"files[{n}] is not a dict")
            out.append(_v1_entry(item, f"files[{n}]"))
        return out, False
    length = int_field(info, b"length", "info")
    return [RawFile((), (), length, attr_field(info))], True


def _v2_leaf(leaf: Any, raw: tuple[bytes, ...], where: str) -> RawFile:
    if not isinstance(leaf, dict):
        raise MetainfoError(f"file tree entry {where!r} is not a dict")
    attr = attr_field(leaf)
    if "p" in attr:
        raise MetainfoError(f"file tree entry {where!r}: a v2 file cannot be padding (attr 'p')")
    symlink: tuple[str, ...] | None = None
    if "l" in attr:
        length = 0
        symlink = _symlink_target(leaf.get(b"symlink path"), where)
        if not symlink:
            attr = attr.replace("l", "")
            symlink = None
    else:
        length = int_field(leaf, b"length", where)
    root = None
    if length:
        value = leaf.get(b"pieces root")
        if not isinstance(value, bytes) or len(value) != merkle.HASH_SIZE:
            raise MetainfoError(f"{where!r}: 'pieces root' missing or not 32 bytes")
        if value == bytes(merkle.HASH_SIZE):
            raise MetainfoError(f"{where!r}: 'pieces root' is all zeros")
        root = value
    return RawFile(raw, _sanitize(raw), length, attr, root, symlink)


def _walk_tree(node: dict[bytes, Any], prefix: tuple[bytes, ...], out: list[RawFile]) -> None:
    """Collect the files of a v2 file tree, in tree order.

    A node is a file when its only key is ``""``; any other dict is a
    directory (an empty one holds no files and is skipped, as libtorrent
    does).  Empty names elsewhere are refused: in a v2 tree the empty key
    means "this is a file", so a file named "" cannot be told apart.
    """
    for key, child in node.items():
        raw = (*prefix, key)
        where = show_raw(raw)
        if not isinstance(child, dict):
            raise MetainfoError(f"file tree entry {where!r} is not a dict")
        if key == b"":
            shown = show_raw(prefix)
            raise MetainfoError(
                f"file tree: empty name under {shown!r}: both a file and a directory"
            )
        if len(child) == 1 and b"" in child:
            out.append(_v2_leaf(child[b""], raw, where))
        else:
            _walk_tree(child, raw, out)


def v2_files(info: Mapping[bytes, Any]) -> tuple[list[RawFile], bool]:
    tree = info.get(b"file tree")
    if not isinstance(tree, dict) or not tree:
        raise MetainfoError("v2 info: 'file tree' missing or not a non-empty dict")
    out: list[RawFile] = []
    _walk_tree(tree, (), out)
    if not out:
        raise MetainfoError("v2 info: the 'file tree' holds no files")
    # One file at the top and no v1 'files' list: a single-file torrent,
    # stored under its file-tree key (libtorrent names the torrent after it).
    single = b"files" not in info and len(tree) == 1 and len(out[0].raw) == 1
    return out, single


def _v2_as_v1(v2: list[RawFile], piece_length: int) -> list[RawFile]:
    """The v1 file list a hybrid torrent must have: each file padded to a piece boundary."""
    out: list[RawFile] = []
    total = 0
    for f in v2:
        out.append(f)
        total += f.length
        if total % piece_length:
            pad = piece_length - total % piece_length
            out.append(RawFile((b".pad", str(pad).encode()), (".pad", str(pad)), pad, "p"))
            total += pad
    return out


def _describe(f: RawFile, offset: int) -> str:
    kind = "padding" if f.is_padding else "file"
    return f"{kind} {'/'.join(f.path) or '(single file)'!r} ({f.length} bytes at offset {offset})"


def merge_hybrid(v1: list[RawFile], v2: list[RawFile], piece_length: int) -> list[RawFile]:
    """Check that the v1 and v2 views describe the same files; attach pieces roots.

    The rule is libtorrent's ``files_compatible``: the v1 list must be the
    v2 file tree with every file padded to a piece boundary (the padding
    after the last file may be left out); at every position the non-empty
    files must agree on path, size and offset.
    """
    want = _v2_as_v1(v2, piece_length)
    if len(v1) == len(want) - 1 and want[-1].is_padding:
        want = want[:-1]
    off1 = off2 = 0
    for i, (a, b) in enumerate(zip(v1, want, strict=False)):
        rel_a = not a.is_padding and a.length > 0
        rel_b = not b.is_padding and b.length > 0
        if rel_a != rel_b or (rel_a and (a.path, a.length, off1) != (b.path, b.length, off2)):
            raise MetainfoError(
                f"inconsistent hybrid torrent: entry {i} is {_describe(a, off1)} in the v1 "
                f"'files' but {_describe(b, off2)} in the v2 'file tree'"
            )
        off1 += a.length
        off2 += b.length
    if len(v1) != len(want):
        raise MetainfoError(
            f"inconsistent hybrid torrent: the v1 'files' has {len(v1)} entries, the v2 "
            f"'file tree' with its alignment padding {len(want)}"
        )
    if sum(f.length for f in v1) != sum(f.length for f in want):
        raise MetainfoError("inconsistent hybrid torrent: the v1 and v2 total sizes differ")
    out = []
    for a, b in zip(v1, want, strict=True):
        out.append(RawFile(a.raw, a.path, a.length, a.attr, b.root, a.symlink))
    return out


def resolve_symlinks(files: list[RawFile]) -> list[str]:
    """Keep a symlink only if its target is a file or directory of this torrent.

    Targets are relative to the torrent's directory (BEP 47), or, as
    libtorrent also accepts for old torrents, to the link's own directory.
    A target that is another symlink is followed.  Anything else (outside
    the torrent, missing, a loop, a chain through a bad link) turns the
    entry into an ordinary empty file; the returned warnings say which.
    Components are sanitized and ``..`` is dropped, so even a kept target
    can only name a place inside the torrent's directory.
    """
    links = {f.path: f.symlink for f in files if f.symlink is not None}
    if not links:
        return []
    real = [f.path for f in files if not f.is_padding]
    exists = set(real) | {p[:k] for p in real for k in range(1, len(p))}

    def ok(target: tuple[str, ...]) -> bool:
        seen: set[tuple[str, ...]] = set()
        while target in links:
            if target in seen:
                return False
            seen.add(target)
            nxt = links[target]
            assert nxt is not None
            target = nxt
        return target in exists

    warnings = []
    chosen: dict[tuple[str, ...], tuple[str, ...] | None] = {}
    for path, target in links.items():
        assert target is not None
        rel = (*path[:-1], *target)
        chosen[path] = target if ok(target) else rel if ok(rel) else None
    for f in files:
        if f.symlink is None:
            continue
        new = chosen[f.path]
        if new is None:
            warnings.append(
                f"symlink {'/'.join(f.path)!r} points to {'/'.join(f.symlink)!r}, which is "
                f"not in the torrent: it will be an empty file"
            )
            f.attr = f.attr.replace("l", "")
        f.symlink = new
    return warnings


def _why(raw: bytes) -> str:
    """A short reason for the change made to one component ("" if none)."""
    if show_raw([raw]) == sanitize_component(raw):
        return ""
    if len(raw) > 240:
        return "name too long"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8"
    if raw in (b"", b".", b".."):
        return f"{show_raw([raw])!r} is not a file name"
    return "unsafe characters"


def renames(
    name_raw: bytes,
    name: str,
    named_by_hash: bool,
    files: list[RawFile],
    deduped: dict[int, tuple[str, ...]],
) -> tuple[RenamedPath, ...]:
    out: list[RenamedPath] = []
    if show_raw([name_raw]) != name:
        why = "unusable name: named after the info-hash" if named_by_hash else _why(name_raw)
        out.append(RenamedPath(show_raw([name_raw]), name, why or "unsafe characters"))
    for i, f in enumerate(files):
        if f.is_padding or not f.raw:
            continue
        original = "/".join((name, show_raw(f.raw)))
        safe = "/".join((name, *deduped.get(i, f.path)))
        if i in deduped:
            out.append(RenamedPath(original, safe, "same path as another file or directory"))
        elif original != safe:
            why = next((w for w in map(_why, f.raw) if w), "unsafe characters")
            out.append(RenamedPath(original, safe, why))
    return tuple(out)
