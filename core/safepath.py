"""Safe file paths from untrusted torrents.

A .torrent names the files we will create, so every path component is
checked before it reaches the file system.  Rejected (``MetainfoError``
naming the offending path): empty components, ``.`` and ``..``, NUL bytes,
``/`` or ``\\`` inside a component (which covers absolute paths and UNC
paths), and drive letters (``C:`` at the start of a component).

Windows-reserved device names (CON, PRN, AUX, NUL, COM1-9, LPT1-9, any case,
with or without an extension, ignoring trailing spaces before the dot) are
not rejected, since such files are legitimate elsewhere (Linux has ``aux.c``):
they are *mapped* by appending ``_`` to the part before the first dot, so
``CON`` becomes ``CON_`` and ``aux.c`` becomes ``aux_.c``.  The mapping is
applied on every platform so a torrent has the same layout everywhere.

Containment is checked twice: here, lexically, and again by
:func:`resolve_under` against the real file system (symlinks included) right
before a path is used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import MetainfoError

__all__ = ["WINDOWS_RESERVED", "check_unique", "resolve_under", "safe_component", "safe_path"]

WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
_DRIVE = re.compile(r"[A-Za-z]:")


def _show(where: Sequence[str]) -> str:
    return "/".join(where)


def safe_component(raw: str, where: Sequence[str] = ()) -> str:
    """Check one path component and return it (mapped if Windows-reserved).

    ``where`` is the whole path the component belongs to, for the message.
    """
    shown = _show(where) if where else raw
    if raw == "":
        raise MetainfoError(f"unsafe path {shown!r}: empty component")
    if raw in (".", ".."):
        raise MetainfoError(f"unsafe path {shown!r}: {raw!r} component")
    if "\x00" in raw:
        raise MetainfoError(f"unsafe path {shown!r}: NUL byte")
    if "/" in raw or "\\" in raw:
        raise MetainfoError(f"unsafe path {shown!r}: separator inside component {raw!r}")
    if _DRIVE.match(raw):
        raise MetainfoError(f"unsafe path {shown!r}: drive letter in {raw!r}")
    stem, dot, rest = raw.partition(".")
    if stem.rstrip(" ").upper() in WINDOWS_RESERVED:
        return f"{stem}_{dot}{rest}"
    return raw


def safe_path(components: Sequence[str]) -> tuple[str, ...]:
    """Check every component of a relative path; the result has at least one component."""
    if not components:
        raise MetainfoError("unsafe path '': no components")
    return tuple(safe_component(c, components) for c in components)


def check_unique(paths: Iterable[tuple[str, ...]]) -> None:
    """Reject two files with the same path, or a file that is a directory of another."""
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for path in paths:
        if path in files:
            raise MetainfoError(f"two files map to the same path {_show(path)!r}")
        if path in dirs:
            raise MetainfoError(f"file {_show(path)!r} is also a directory of another file")
        files.add(path)
        for i in range(1, len(path)):
            prefix = path[:i]
            if prefix in files:
                raise MetainfoError(f"file {_show(prefix)!r} is also a directory of another file")
            dirs.add(prefix)


def resolve_under(root: Path, components: Sequence[str]) -> Path:
    """Join checked components under ``root`` and prove the result stays inside it.

    The check uses resolved paths, so a symlink planted under ``root`` that
    points elsewhere is caught too.
    """
    base = Path(root).resolve()
    target = base.joinpath(*(safe_component(c, components) for c in components))
    resolved = target.resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise MetainfoError(f"path {_show(components)!r} escapes the download directory {base}")
    return target
