"""Pure views for the engine facade: core objects in, :mod:`tui.model` values out.

Split from :mod:`tui.engine` along the line between reading and doing: these
functions only look at a :class:`core.engine.torrent.Torrent` (or a parsed
:class:`core.formats.metainfo.Metainfo`, or a source string) and build the rows,
piece map and info view the widgets show, or answer a question about them
(how much a priority change touches, what kind of source a string is). They
change nothing, await nothing and keep no state (the helpers need no event
loop to test); :class:`tui.engine.RealEngine` owns the client, the session
and every action. :class:`tui.fake_engine.FakeEngine` shares the pure
helpers, so both engines answer the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from core.engine.torrent import Torrent
from core.errors import MagnetError
from core.events import PeerRow, TorrentRow
from core.formats.magnet import Magnet, parse_magnet
from core.formats.metainfo import Metainfo
from core.piecestate import PieceState
from core.types import PiecePriority

from .model import FileRow, PieceCell, PieceMap, TorrentInfoView

# --- pure helpers shared by both engines -----------------------------------------


def priority_change(
    files: Sequence[FileRow],
    piece_length: int,
    total_size: int,
    indices: Sequence[int],
    prio: PiecePriority,
    piece_size: Callable[[int], int] | None = None,
) -> tuple[int, int]:
    """How many pieces, and how many bytes in them, change priority if ``indices`` get ``prio``.

    Pieces are ``piece_length`` long up to ``total_size`` unless ``piece_size``
    says otherwise: pass it when pieces may be short in the middle (pure v2,
    where each file ends its own piece) or padding files shift the end.

    A piece's priority is the highest of the files it overlaps, so a piece
    shared with a file that keeps a higher priority does not change (skipping
    one file keeps the boundary piece it shares with a wanted neighbour), and
    a piece shared with a skipped file changes when its neighbour is raised.
    """
    chosen = set(indices)
    touched: set[int] = set()
    for f in files:
        if f.index in chosen and f.size > 0 and f.priority != prio:
            touched.update(range(f.first_piece, f.last_piece + 1))
    if not touched:
        return 0, 0
    old: dict[int, int] = dict.fromkeys(touched, 0)
    new: dict[int, int] = dict.fromkeys(touched, 0)
    for f in files:
        if f.size <= 0 or f.last_piece < min(touched) or f.first_piece > max(touched):
            continue
        after = prio if f.index in chosen else f.priority
        for p in range(f.first_piece, f.last_piece + 1):
            if p in old:
                old[p] = max(old[p], int(f.priority))
                new[p] = max(new[p], int(after))
    changed = [p for p in touched if old[p] != new[p]]
    if piece_size is not None:
        nbytes = sum(piece_size(p) for p in changed)
    else:
        nbytes = sum(min(piece_length, total_size - p * piece_length) for p in changed)
    return len(changed), nbytes


def files_of(mi: Metainfo) -> tuple[FileRow, ...]:
    """The payload files of a parsed torrent, as the add dialog lists them (nothing done)."""
    info = mi.info
    single = len(info.payload_files()) == 1
    # Sanitized names (core.formats.safepath): each file says what the torrent called
    # it, the torrent's own name included, so nothing lands somewhere unexpected.
    originals = {r.safe: r.original for r in mi.renamed_paths}
    old_name = originals.get(info.name)
    rows = []
    for index, entry in enumerate(info.files):
        if entry.is_padding:
            continue
        pieces = info.file_pieces(index) if entry.length else range(0)
        first = pieces.start if pieces else 0
        path = "/".join(entry.path) if entry.path and not single else info.name
        shown = info.display_path(entry)
        original = originals.get(shown)
        if original is None and old_name is not None:
            original = "/".join((old_name, *entry.path))
        rows.append(
            FileRow(
                index=index,
                path=path,
                size=entry.length,
                bytes_done=0,
                priority=PiecePriority.NORMAL,
                first_piece=first,
                last_piece=max(first, pieces.stop - 1) if pieces else first,
                renamed_from=original,
            )
        )
    return tuple(rows)


def is_magnet(uri: str) -> bool:
    """``uri`` parses as a magnet link."""
    try:
        parse_magnet(uri)
    except MagnetError:
        return False
    return True


def piece_cell(state: PieceState) -> PieceCell:
    """How one engine piece state shows on the piece map."""
    if state.complete:
        return PieceCell.HAVE
    if state.checking:
        return PieceCell.CHECKING
    if state.partial:
        return PieceCell.PARTIAL
    if state.priority == PiecePriority.NONE:
        return PieceCell.SKIPPED
    if state.priority >= PiecePriority.HIGH:
        return PieceCell.HIGH
    return PieceCell.MISSING


def with_wanted(row: TorrentRow, done: int, size: int) -> TorrentRow:
    """``row`` with its size, bytes and progress counted over the wanted files only.

    As in qBittorrent, a torrent whose selected files are all done reads
    100% (and seeding), not the share of the whole torrent; the Info tab
    keeps the whole-torrent figure.  Nothing wanted counts as done, as in
    libtorrent.
    """
    progress = done / size if size else 1.0
    return replace(row, size=size, bytes_done=done, progress=progress)


def classify_source(source: str) -> str:
    """``"magnet"``, ``"url"`` or ``"file"``: how :meth:`Engine.add` reads a source."""
    s = source.strip()
    if s.lower().startswith("magnet:"):
        return "magnet"
    if s.lower().startswith(("http://", "https://")):
        return "url"
    return "file"


# --- views of a live torrent ------------------------------------------------------


def file_rows(t: Torrent) -> tuple[FileRow, ...]:
    """A torrent's files as the file tree lists them (paths relative to the torrent)."""
    prefix = t.name + "/"
    rows = []
    for f in t.files:
        pieces = t.info.file_pieces(f.index)
        path = f.path.removeprefix(prefix) if len(t.files) > 1 else f.path
        rows.append(
            FileRow(
                index=f.index,
                path=path,
                size=f.length,
                bytes_done=f.bytes_completed(),
                priority=f.priority,
                first_piece=pieces.start,
                last_piece=max(pieces.start, pieces.stop - 1),
            )
        )
    return tuple(rows)


def wanted_bytes(t: Torrent) -> tuple[int, int] | None:
    """``(done, size)`` of the files not skipped, or None when no file is skipped.

    None lets the caller keep the engine's whole-torrent figures, which are
    then the same, without walking every file's pieces on each refresh.
    """
    if getattr(t, "info", None) is None:
        return None
    wanted = [f for f in t.files if f.priority != PiecePriority.NONE]
    if len(wanted) == len(t.files):
        return None
    return sum(f.bytes_completed() for f in wanted), sum(f.length for f in wanted)


def peer_rows(t: Torrent) -> tuple[PeerRow, ...]:
    """A torrent's connected peers as the peer table lists them (the engine's own rows)."""
    return t.peer_rows()


def piece_map(t: Torrent) -> PieceMap:
    """Every piece's state and availability, for the piece map."""
    n = t.num_pieces
    cells = bytearray(n)
    avail = bytearray(n)
    picker = t.picker
    for i in range(n):
        cells[i] = piece_cell(t.piece_state(i))
        avail[i] = min(255, picker.availability(i))
    starts = tuple(t.info.file_pieces(f.index).start for f in t.files)
    return PieceMap(bytes(cells), bytes(avail), starts)


def info_view(t: Torrent, default_root: Path) -> TorrentInfoView:
    """The info tab of a torrent with metadata (``default_root``: where it saves if unset)."""
    mi = t.metainfo
    ih = t.info_hash
    root = t.layout.root if t.layout.root is not None else default_root
    try:
        magnet = Magnet(ih, display_name=t.name).uri()
    except MagnetError:
        magnet = ""
    done = t.bytes_completed()
    wanted = [f for f in t.files if f.priority != PiecePriority.NONE]
    wanted_done = done if len(wanted) == len(t.files) else sum(f.bytes_completed() for f in wanted)
    return TorrentInfoView(
        name=t.name,
        info_hash_v1=ih.v1.hex() if ih.v1 else None,
        info_hash_v2=ih.v2.hex() if ih.v2 else None,
        size=t.length,
        piece_length=t.info.piece_length,
        num_pieces=t.num_pieces,
        save_path=str(root),
        comment=mi.comment,
        created_by=mi.created_by,
        creation_date=mi.creation_date,
        private=t.info.private,
        magnet=magnet,
        bytes_done=done,
        wanted_size=sum(f.length for f in wanted),
        wanted_done=wanted_done,
        files=len(t.files),
        wanted_files=len(wanted),
    )
