"""Safe file paths from untrusted torrents: sanitize, never refuse.

A .torrent names the files we will create.  Refusing a torrent over an odd
name makes it unusable here while every libtorrent client (qBittorrent,
Deluge, ...) opens it, so every name is *made* safe instead, the way
libtorrent's ``sanitize_append_path_element`` does, and the caller records
what was changed so the user can see it.  Matching libtorrent byte for byte
matters beyond politeness: a download that lands at the same paths can be
seeded or resumed by another client.

Per path component (:func:`sanitize_component`), decoded as UTF-8 by
libtorrent's own rules (an invalid sequence counts as one bad character):

* ``/`` and ``\\``, NUL, and invisible or bidi-override characters (ZWSP,
  LRM/RLM, LRE..RLO, word joiners, BOM, U+061C) are dropped: they could
  climb out of the directory or spoof a name (``gpj.exe`` shown as
  ``exe.jpg``);
* invalid UTF-8, C0 and C1 control characters and DEL become ``_``;
* a component that ends up empty, ``.`` or ``..`` becomes ``_`` (or, for
  the torrent's ``name``, is dropped: the caller then names the torrent
  after its info-hash, as libtorrent does);
* past 240 bytes the component is cut on a character boundary and its
  extension (a dot in the last 10 bytes) kept, so it fits the usual
  255-byte limit; a result still over 255 bytes (libtorrent lets
  replacement characters run past the cut) is shortened again here.

Windows rules (reserved device names such as ``CON`` get a ``_`` prefix,
``?<>"|*:`` and backspace become ``_``, trailing dots and spaces are
stripped) apply only when running on Windows, as in libtorrent: on Linux
``aux.c`` and ``notes.`` are legitimate names, and another client on the
same machine stores them unchanged.

Duplicates (:func:`resolve_duplicates`): two files with the same path, or a
file where a directory of another file is, are told apart with libtorrent's
``name.1.ext`` scheme, compared case-insensitively (ASCII) so the layout
also works on case-insensitive file systems.

Containment is proven again by :func:`resolve_under` against the real file
system (symlinks included) right before a path is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import MetainfoError

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_DUPLICATE_FILENAMES",
    "ON_WINDOWS",
    "WINDOWS_RESERVED",
    "check_component",
    "resolve_duplicates",
    "resolve_under",
    "sanitize_component",
    "show_raw",
]

#: Most file systems (ext4, btrfs, xfs, NTFS in UTF-16 units) cap a name at 255.
MAX_COMPONENT_BYTES = 255
#: libtorrent's ``load_torrent_limits::max_duplicate_filenames``: more name
#: collisions than this in one torrent is taken as hostile and refused.
MAX_DUPLICATE_FILENAMES = 500
#: Whether the Windows naming rules apply by default.
ON_WINDOWS = os.name == "nt"

#: libtorrent's list (``clock$``, ``com0`` and ``lpt0`` included).
WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "clock$", "nul"]
    + [f"com{i}" for i in range(10)]
    + [f"lpt{i}" for i in range(10)]
)
_WINDOWS_INVALID = frozenset('?<>"|\b*:')
# libtorrent starts looking for the extension once this many bytes are kept.
_CUT_AT = 240


def _seq_len(b: int) -> int:
    if b < 0x80:
        return 1
    if b >> 5 == 0b110:
        return 2
    if b >> 4 == 0b1110:
        return 3
    if b >> 3 == 0b11110:
        return 4
    if b >> 2 == 0b111110:
        return 5  # invalid, but skipped as a whole like libtorrent does
    return 0


def _codepoint(raw: bytes, i: int) -> tuple[int, int]:
    """``(code point or -1, bytes consumed)`` at ``raw[i]``, by libtorrent's rules."""
    n = _seq_len(raw[i])
    if n == 1:
        return raw[i], 1
    if n == 0:
        return -1, 1
    left = len(raw) - i
    if n > left:
        return -1, left
    if n > 4:
        return -1, n
    cp = raw[i] & (0x1F, 0x0F, 0x07)[n - 2]
    for k in range(1, n):
        b = raw[i + k]
        if not 0x80 <= b <= 0xBF:
            return -1, n
        cp = (cp << 6) | (b & 0x3F)
    if cp < (0x80, 0x800, 0x10000)[n - 2] or cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        return -1, n
    return cp, n


def _filtered(cp: int) -> bool:
    """Characters dropped outright: separators, NUL, invisible/bidi formatting."""
    return (
        cp in (0x2F, 0x5C, 0x00, 0x061C, 0xFEFF)
        or 0x200B <= cp <= 0x200F
        or 0x202A <= cp <= 0x202E
        or 0x2060 <= cp <= 0x2064
        or 0x2066 <= cp <= 0x2069
    )


def _valid(cp: int, windows: bool) -> bool:
    if cp < 32 or cp == 0x7F or 0x80 <= cp <= 0x9F:
        return False
    return not (windows and cp < 128 and chr(cp) in _WINDOWS_INVALID)


# Everything the slow path would drop or replace, for the fast path's test.
_SUSPECT = re.compile(
    r"[\x00-\x1f\x7f-\x9f/\\\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def _shorten(name: str, limit: int = MAX_COMPONENT_BYTES) -> str:
    """Cut ``name`` to ``limit`` UTF-8 bytes on a character boundary, keeping
    an extension of up to 10 bytes."""
    raw = name.encode()
    if len(raw) <= limit:
        return name
    dot = name.rfind(".")
    ext = name[dot:] if dot > 0 and len(name[dot:].encode()) <= 10 else ""
    stem = raw[: limit - len(ext.encode())].decode("utf-8", "ignore")
    return stem + ext


def sanitize_component(raw: bytes, *, force: bool = True, windows: bool = ON_WINDOWS) -> str:
    """Make one raw path component safe (see the module docstring).

    With ``force`` (every component but the torrent's ``name``) the result
    is never empty, so a file keeps its place in the tree; without it an
    unusable component comes back as ``""`` for the caller to drop.
    """
    if raw == b"." and not force:
        return ""
    if raw == b"":
        return "_"
    if not windows and len(raw) < _CUT_AT and raw not in (b".", b".."):
        # Fast path, the common case: valid UTF-8 (Python's strict decoder
        # refuses overlongs and surrogates, as libtorrent does) with nothing
        # to drop or replace comes back unchanged.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if not _SUSPECT.search(text):
                return text
    out: list[str] = []
    added = 0
    dots = 0
    found_ext = False
    i = 0
    while i < len(raw):
        cp, n = _codepoint(raw, i)
        if cp >= 0 and _filtered(cp):
            i += n
            continue
        if cp < 0 or not _valid(cp, windows):
            out.append("_")
            added += 1
            i += n
            continue
        out.append(chr(cp))
        added += n
        if cp == 0x2E:
            dots += 1
        if added >= _CUT_AT and not found_ext:
            # libtorrent: keep an extension found in the last 10 bytes
            dot = -1
            for j in range(len(raw) - 1, max(len(raw) - 10, i), -1):
                if raw[j] == 0x2E:
                    dot = j
                    break
            if dot == -1:
                break
            found_ext = True
            i = dot
            continue
        i += n
    if added == dots and added <= 2:
        return "_" if force else ""
    name = "".join(out)
    if windows:
        name = name.rstrip(" .")
        if not name:
            return "_" if force else ""
        stem = name[: name.rfind(".")] if "." in name else name
        if stem.lower() in WINDOWS_RESERVED:
            name = "_" + name
    return _shorten(name)


def show_raw(parts: Iterable[bytes | str]) -> str:
    """A raw path for humans: ``/``-joined, undecodable bytes as ``\\xNN``."""
    return "/".join(
        p.decode("utf-8", "backslashreplace") if isinstance(p, bytes) else p for p in parts
    )


def check_component(part: str, where: Sequence[str] = ()) -> None:
    """Refuse a component that is not already safe (a lexical last line of defence)."""
    if part in ("", ".", "..") or "/" in part or "\\" in part or "\x00" in part:
        shown = "/".join(where) if where else part
        raise MetainfoError(f"unsafe path {shown!r}: bad component {part!r}")


def _fold(path: tuple[str, ...]) -> bytes:
    # libtorrent compares with ASCII-only lowercasing (bytes.lower() is that);
    # components never hold "/", so joining on it keeps paths distinct
    return "/".join(path).encode("utf-8", "surrogatepass").lower()


def _split_ext(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot < 0:
        return name, ""
    return name[:dot], name[dot:]


def resolve_duplicates(
    paths: Sequence[tuple[str, ...]],
    *,
    skip: Sequence[bool] = (),
    limit: int = MAX_DUPLICATE_FILENAMES,
) -> dict[int, tuple[str, ...]]:
    """New paths for files that collide with an earlier file or any directory.

    Returns ``{index: new path}`` for the renamed files only.  Directories
    are registered first, so a file where another file's directory is gets
    renamed rather than the directory (as libtorrent does).  Names are
    ``stem.N.ext`` with the smallest ``N`` that is free; unlike libtorrent,
    the renamed names themselves are taken into account, so the result is
    always collision-free.  ``skip[i]`` excludes file ``i`` (padding files,
    never written).  More than ``limit`` collisions raise ``MetainfoError``.
    """
    taken: set[bytes] = set()
    keys: list[bytes | None] = []
    for i, path in enumerate(paths):
        if i < len(skip) and skip[i]:
            keys.append(None)
            continue
        folded = _fold(path)
        keys.append(folded)
        cut = folded.rfind(b"/")
        while cut > 0 and folded[:cut] not in taken:
            taken.add(folded[:cut])
            cut = folded.rfind(b"/", 0, cut)
    renamed: dict[int, tuple[str, ...]] = {}
    collisions = 0
    for i, path in enumerate(paths):
        key = keys[i]
        if key is None:
            continue
        if key not in taken:
            taken.add(key)
            continue
        stem, ext = _split_ext(path[-1])
        n = 0
        while True:
            n += 1
            leaf = _shorten(f"{stem}.{n}{ext}")
            new = (*path[:-1], leaf)
            if _fold(new) not in taken:
                break
            collisions += 1
            if collisions > limit:
                raise MetainfoError(
                    f"more than {limit} files collide with another file's path "
                    f"(last: {'/'.join(path)!r}): refused as hostile"
                )
        taken.add(_fold(new))
        renamed[i] = new
    return renamed


def resolve_under(root: Path, components: Sequence[str]) -> Path:
    """Join checked components under ``root`` and prove the result stays inside it.

    The check uses resolved paths, so a symlink planted under ``root`` that
    points elsewhere is caught too.
    """
    base = Path(root).resolve()
    for c in components:
        check_component(c, components)
    target = base.joinpath(*components)
    resolved = target.resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise MetainfoError(f"path {'/'.join(components)!r} escapes the download directory {base}")
    return target
