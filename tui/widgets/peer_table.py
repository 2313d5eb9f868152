"""The Peers tab: one row per connected peer, keyed by address and diffed cell by cell.

Input: :class:`core.events.PeerRow` values through :meth:`PeerTable.update_data`.
Nothing here talks to the engine.  The flags column uses qBittorrent's letter
code, explained by :data:`FLAG_LEGEND` (also the table's tooltip): the
choke/interest state, then how the connection is made: ``I`` incoming,
``E`` encrypted (MSE/PE with RC4), ``P`` uTP (no ``P``: TCP).  qBittorrent
spells uTP ``P`` because ``U`` already means uploading.

The columns are ordered for narrow terminals: address, flags, progress and
both rates come first, so an 80-column terminal shows what matters most
and the rest (client, source, queues) is a horizontal scroll away.

The Fail column says how many failed pieces a peer sent data for and ``P``
while it is on parole (see :data:`FAIL_LEGEND`): the user sees a suspect
before it is banned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text

from core.events import Address, PeerRow, PeerSource
from tui.format import percent, rate

from .keyed_table import Column, KeyedTable, Row

__all__ = [
    "FAIL_LEGEND",
    "FLAG_LEGEND",
    "SOURCE_LEGEND",
    "PeerTable",
    "fail_cell",
    "format_address",
    "peer_flags",
]

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
    "E encrypted (MSE/PE, RC4)\n"
    "P uTP transport (no P: TCP)"
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


#: What the Source column's words mean (one per :class:`PeerSource`).
SOURCE_LEGEND = (
    "tracker  from a tracker's announce reply\n"
    "dht      found by a DHT lookup (get_peers)\n"
    "pex      told by another peer (peer exchange)\n"
    "incoming it connected to us\n"
    "magnet   named in the magnet link (x.pe)\n"
    "direct   added by hand or by a program (torrent --peer)"
)


#: What the Fail column shows.
FAIL_LEGEND = (
    "N failed pieces it sent data for (alone or with others)\n"
    "P on parole: suspected of bad data, it only gets whole pieces of its own"
)


def fail_cell(p: PeerRow) -> str:
    """The Fail column: ``""`` for a clean peer, else the count and ``P`` on parole (``"2 P"``)."""
    if not p.hash_failures and not p.on_parole:
        return ""
    return f"{p.hash_failures} P" if p.on_parole else str(p.hash_failures)


#: What the Queue column shows.
QUEUE_LEGEND = (
    "its requests we have queued, not yet served;\n"
    "with the age of the oldest once it is 2 s or more (a stuck upload shows here)"
)
#: The oldest queued request's age is shown from this many seconds on.
QUEUE_AGE_SHOWN = 2.0


def queue_cell(p: PeerRow) -> str:
    """The Queue column: ``""``, ``"12"``, or ``"12 45s"`` when the oldest has waited."""
    if not p.requests_queued:
        return ""
    wait = p.oldest_request_wait
    if wait is None or wait < QUEUE_AGE_SHOWN:
        return str(p.requests_queued)
    return f"{p.requests_queued} {wait:.0f}s"


def format_address(address: Address) -> str:
    """``host:port``, with brackets around an IPv6 host: the key of a peer's row."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer_row(p: PeerRow) -> Row:
    key = format_address(p.address)
    reqs = str(p.requests_outstanding) if p.requests_outstanding else ""
    flags = peer_flags(p)
    cells: tuple[str | Text, ...] = (
        key,
        flags,
        Text(percent(p.progress), justify="right"),
        Text(rate(p.down_rate), justify="right"),
        Text(rate(p.up_rate), justify="right"),
        p.client or "?",
        str(p.source),
        Text(reqs, justify="right"),
        Text(queue_cell(p), justify="right"),
        Text(fail_cell(p), justify="right"),
    )
    raw = (
        (0 if ":" not in p.address[0] else 1, p.address),
        flags,
        p.progress,
        p.down_rate,
        p.up_rate,
        p.client.casefold(),
        str(p.source),
        p.requests_outstanding,
        (p.requests_queued, p.oldest_request_wait or 0.0),
        (p.hash_failures, p.on_parole),
    )
    return cells, raw


class PeerTable(KeyedTable):
    """Connected peers of the selected torrent; click a header to sort by it."""

    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("address", "Address"),
        Column("flags", "Flags", 11),
        Column("progress", "Progress", 8),
        Column("down", "Down", 11),
        Column("up", "Up", 11),
        Column("client", "Client"),
        Column("source", "Source", 8),
        Column("requests", "Reqs", 4),
        Column("queue", "Queue", 7),
        Column("fail", "Fail", 4),
    )

    def __init__(
        self, *, id: str | None = None, classes: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes, name=name)
        self.tooltip = (
            "Flags:\n"
            + FLAG_LEGEND
            + "\n\nSource:\n"
            + SOURCE_LEGEND
            + "\n\nQueue:\n"
            + QUEUE_LEGEND
            + "\n\nFail:\n"
            + FAIL_LEGEND
        )

    def update_data(self, peers: Sequence[PeerRow]) -> int:
        """Show ``peers``: add new addresses, drop gone ones, rewrite only changed cells.

        Returns the number of cells written, which lets tests and the
        benchmark check that an idle swarm costs nothing.
        """
        return self.sync({format_address(p.address): _peer_row(p) for p in peers})
