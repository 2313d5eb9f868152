"""Naming files inside a torrent on the command line (``--file``, ``torrent cat``).

A file may be named by its path inside the torrent with or without the
torrent's name in front (``album/cd1/01.flac`` or ``cd1/01.flac``); a
single-file torrent's only file is also named by the torrent's name.  A name
that matches nothing is a usage error that lists the closest real paths, so
a typo costs one retry rather than a guessing game.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..formats.info import Info
from .usage import UsageError

#: How many suggestions an unknown path error lists.
SUGGESTIONS = 5


def file_names(info: Info) -> dict[str, int]:
    """Every accepted spelling of every payload file -> its index in ``info.files``."""
    names: dict[str, int] = {}
    for i, entry in enumerate(info.files):
        if entry.is_padding:
            continue
        inner = "/".join(entry.path)
        if inner:
            names.setdefault(inner, i)
        names.setdefault("/".join((info.name, *entry.path)), i)
    return names


def _normalise(path: str) -> str:
    return "/".join(part for part in path.replace("\\", "/").split("/") if part not in ("", "."))


def match_files(info: Info, paths: Iterable[str], *, what: str = "--file") -> list[int]:
    """Indices (into ``info.files``) of the named files, in the order given, without repeats."""
    names = file_names(info)
    out: list[int] = []
    for raw in paths:
        index = names.get(_normalise(raw))
        if index is None:
            raise UsageError(unknown_path_message(info, raw, what))
        if index not in out:
            out.append(index)
    return out


def unknown_path_message(info: Info, path: str, what: str) -> str:
    """``no file 'x' in torrent 'name'`` plus the closest real paths, each file once.

    Both spellings of a file (with and without the torrent's name) are
    matched, but each file is suggested once, by its path inside the torrent.
    """
    names = file_names(info)
    shown = {i: "/".join(e.path) or info.name for i, e in enumerate(info.files)}
    wanted = _normalise(path)
    close = difflib.get_close_matches(wanted, list(names), n=SUGGESTIONS * 2, cutoff=0.4)
    if not close:
        leaf = wanted.split("/")[-1]
        close = sorted(name for name in names if leaf and leaf in name)
    picks = list(dict.fromkeys(shown[names[name]] for name in close))[:SUGGESTIONS]
    hint = f"; did you mean: {', '.join(picks)}" if picks else ""
    return f"{what} {path!r}: no such file in torrent {info.name!r}{hint}"
