"""The Peers tab: one row per connected peer, keyed by address and diffed cell by cell.

Input: :class:`core.events.PeerRow` values through :meth:`PeerTable.update_data`.
Nothing here talks to the engine.  The flags column uses a compact letter
code in the spirit of libtorrent / qBittorrent, explained by :data:`FLAG_LEGEND`
(also the table's tooltip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text

from core.events import Address, PeerRow, PeerSource
from tui.format import percent, rate

from .keyed_table import Column, KeyedTable, Row

__all__ = ["FLAG_LEGEND", "PeerTable", "format_address", "peer_flags"]

#: What each flag letter means, in the order :func:`peer_flags` writes them.
FLAG_LEGEND = (
    "D downloading (we are interested, it unchokes us)\n"
    "d we are interested but it chokes us\n"
    "U uploading (it is interested, we unchoke it)\n"
    "u it is interested but we choke it\n"
    "K it unchokes us but we are not interested\n"
    "? we unchoke it but it is not interested\n"
    "S snubbed (sent nothing for a while)\n"
    "I incoming connection\n"
    "E encrypted\n"
    "P uTP transport"
)


def peer_flags(p: PeerRow) -> str:
    """The letter code of a peer's state, e.g. ``"D U I E"`` (see :data:`FLAG_LEGEND`)."""
    flags: list[str] = []
    if p.am_interested:
        flags.append("d" if p.peer_choking else "D")
    elif not p.peer_choking:
        flags.append("K")
    if p.peer_interested:
        flags.append("u" if p.am_choking else "U")
    elif not p.am_choking:
        flags.append("?")
    if p.snubbed:
        flags.append("S")
    if p.incoming or p.source is PeerSource.INCOMING:
        flags.append("I")
    if p.encrypted:
        flags.append("E")
    if p.transport == "utp":
        flags.append("P")
    return " ".join(flags)


def format_address(address: Address) -> str:
    """``host:port``, with brackets around an IPv6 host: the key of a peer's row."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer_row(p: PeerRow) -> Row:
    key = format_address(p.address)
    reqs = str(p.requests_outstanding) if p.requests_outstanding else ""
    cells: tuple[str | Text, ...] = (
        key,
        p.client or "?",
        peer_flags(p),
        str(p.source),
        Text(percent(p.progress), justify="right"),
        Text(rate(p.down_rate), justify="right"),
        Text(rate(p.up_rate), justify="right"),
        Text(reqs, justify="right"),
    )
    raw = (
        (0 if ":" not in p.address[0] else 1, p.address),
        p.client.casefold(),
        peer_flags(p),
        str(p.source),
        p.progress,
        p.down_rate,
        p.up_rate,
        p.requests_outstanding,
    )
    return cells, raw


class PeerTable(KeyedTable):
    """Connected peers of the selected torrent; click a header to sort by it."""

    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("address", "Address"),
        Column("client", "Client"),
        Column("flags", "Flags", 11),
        Column("source", "Source", 8),
        Column("progress", "Progress", 8),
        Column("down", "Down", 11),
        Column("up", "Up", 11),
        Column("requests", "Reqs", 4),
    )

    def __init__(
        self, *, id: str | None = None, classes: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes, name=name)
        self.tooltip = "Flags:\n" + FLAG_LEGEND

    def update_data(self, peers: Sequence[PeerRow]) -> int:
        """Show ``peers``: add new addresses, drop gone ones, rewrite only changed cells.

        Returns the number of cells written, which lets tests and the
        benchmark check that an idle swarm costs nothing.
        """
        return self.sync({format_address(p.address): _peer_row(p) for p in peers})
