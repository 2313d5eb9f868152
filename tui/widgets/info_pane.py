"""The Info tab: facts about the selected torrent and its progress, with a copyable magnet link.

Progress is given twice: over the files the user wants (the figure the
torrent list shows) and over the whole torrent, so skipped files never hide
how much of the torrent is really on disk.

Input: a :class:`tui.model.TorrentInfoView` (or None while metadata is
unknown).  The text is selectable with the mouse (Textual's text selection);
``c`` copies the magnet link and ``i`` the info-hash to the clipboard
(Textual's ``copy_to_clipboard``, which uses OSC 52 so it works over SSH).
Dates are shown in UTC so the pane reads the same on every machine (and in
snapshot tests).
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.format import percent, size
from tui.model import TorrentInfoView

__all__ = ["InfoPane", "info_lines"]


def _date(timestamp: int | None) -> str:
    if timestamp is None or timestamp <= 0:
        return "-"
    try:
        when = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp} (invalid)"
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def info_lines(info: TorrentInfoView) -> list[tuple[str, str]]:
    """(label, value) pairs in display order; pure, so it is tested without Textual."""
    pieces = f"{info.num_pieces:,} pieces of {size(info.piece_length)}"
    return [
        ("Name", info.name),
        ("Info-hash v1", info.info_hash_v1 or "-"),
        ("Info-hash v2", info.info_hash_v2 or "-"),
        ("Size", f"{size(info.size)} ({info.size:,} bytes)"),
        # The list shows the first figure (the files wanted), the second is the whole torrent.
        (
            "Progress",
            f"{percent(info.wanted_progress)} of {size(info.wanted_size)} selected"
            f" ({info.wanted_files} of {info.files} files)",
        ),
        (
            "Whole torrent",
            f"{percent(info.progress)} ({size(info.bytes_done)} of {size(info.size)})",
        ),
        ("Pieces", pieces),
        ("Save path", info.save_path),
        ("Comment", info.comment or "-"),
        ("Created by", info.created_by or "-"),
        ("Created on", _date(info.creation_date)),
        ("Private", "yes (DHT and PEX off)" if info.private else "no"),
        ("Magnet", info.magnet),
    ]


class _InfoBody(Static):
    """The text; its ``[@click=...]`` links run these actions."""

    def action_copy_magnet(self) -> None:
        pane = self.parent
        if isinstance(pane, InfoPane):
            pane.action_copy_magnet()

    def action_copy_hash(self) -> None:
        pane = self.parent
        if isinstance(pane, InfoPane):
            pane.action_copy_hash()


class InfoPane(VerticalScroll, can_focus=True):
    """Static facts of one torrent; feed it with :meth:`update_data`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "copy_magnet", "Copy magnet"),
        Binding("i", "copy_hash", "Copy info-hash", show=False),
    ]

    DEFAULT_CSS = """
    InfoPane { height: 1fr; padding: 0 1; }
    InfoPane > _InfoBody { width: 100%; }
    """

    def __init__(
        self, *, id: str | None = None, classes: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes, name=name)
        self._info: TorrentInfoView | None = None
        self._body = _InfoBody("No torrent selected.", markup=True)

    def compose(self) -> ComposeResult:
        yield self._body

    @property
    def info(self) -> TorrentInfoView | None:
        return self._info

    def update_data(self, info: TorrentInfoView | None) -> bool:
        """Show ``info``; returns whether anything was repainted (equal values cost nothing)."""
        if info == self._info:
            return False
        self._info = info
        self._body.update(self._render_text(info))
        return True

    @staticmethod
    def _render_text(info: TorrentInfoView | None) -> str:
        if info is None:
            return "[dim]Waiting for metadata…[/]"
        lines = []
        for label, value in info_lines(info):
            text = f"[b]{label:<13}[/] {escape(value)}"
            if label == "Magnet":
                text += "  [@click=copy_magnet]copy (c)[/]"
            elif label == "Info-hash v1" and info.info_hash_v1:
                text += "  [@click=copy_hash]copy (i)[/]"
            lines.append(text)
        return "\n".join(lines)

    def action_copy_magnet(self) -> None:
        if self._info is not None:
            self.app.copy_to_clipboard(self._info.magnet)
            self.notify("Magnet link copied to the clipboard", timeout=3)

    def action_copy_hash(self) -> None:
        info = self._info
        if info is not None:
            digest = info.info_hash_v1 or info.info_hash_v2
            if digest:
                self.app.copy_to_clipboard(digest)
                self.notify("Info-hash copied to the clipboard", timeout=3)
