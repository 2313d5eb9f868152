"""The status pane: global rates with sparklines, limits, session totals, peers, port, disk, errors.

Two lines, one per direction, in aligned columns::

    ↓ 4.71 MiB/s  ▂▄▆█▅▃  limit 1.00 MiB/s  session 566 MiB  98 peers  port 51413  free 412 GiB
    ↑ 4.63 MiB/s  ▁▂▃▂▁▂  limit ∞           session 340 MiB  ratio 0.60  DHT 143/210  1 error

Every cell is one widget as wide as the longest text it can show (worked out
from the formatters in :mod:`tui.format`, so a format change cannot clip a
unit again), with a gap after it.  Inside a cell, label and value are
separate spans joined by a bare space: no styled span starts or ends with a
space, because SVG renderers that drop such spaces run the words together
in screenshots.

The DHT cell (see :func:`dht_cell`) shows good/total routing-table nodes
once the DHT works, ``DHT …`` dimmed while it joins, ``DHT failed`` when no
node answered, and nothing when the DHT is off.  It sits on the upload line,
which has fewer cells, so both lines keep their sparklines at 120 columns.

On a narrow terminal the least useful cells drop out first (sparklines,
port, DHT, session totals, peers, ratio); rates, limits, free space and
errors always stay.  The pane keeps the last :data:`HISTORY` rate samples
itself (one per refresh) so the sparklines need nothing from the engine
beyond :class:`GlobalStatus`.  A cell is only rewritten when its text
changes, which keeps redraws over SSH to the cells that actually moved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from tui import format as fmt
from tui.model import GlobalStatus

#: Samples kept for each sparkline (at 4 Hz: the last 15 seconds).
HISTORY = 60
#: Columns between two cells.
GAP = 2
SPARKLINE_WIDTH = 20

_BIGGEST = (1 << 60) - 1  # beyond every unit the formatter has


def _widest_size() -> int:
    """The longest :func:`fmt.size` text: just under each unit's rollover, e.g. ``1024 KiB``."""
    probes = [1023.9 * 1024**k for k in range(1, 6)] + [_BIGGEST]
    return max(len(fmt.size(p)) for p in probes)


_SIZE = _widest_size()
_RATE = _SIZE + len("/s")

#: Width of each cell: its longest text.  Counts (peers, errors) are sized
#: for a plausible maximum and grow past it rather than clip.
CELL_WIDTHS: dict[str, int] = {
    "rate": len("↓ ") + _RATE,
    "limit": len("limit ") + max(_RATE, len(fmt.limit(None))),
    "session": len("session ") + _SIZE,
    "peers": len("9999 peers"),
    "port": len("port 65535"),
    "free": len("free ") + _SIZE,
    # Good/total nodes, with the "…" of a bootstrap under way.
    "dht": len("DHT 9999/9999…"),
    "ratio": len("ratio 99.99"),
    "errors": len("99 errors"),
}

#: The cells right of the shared columns, per line.
TOP_CELLS = ("peers", "port", "free")
BOTTOM_CELLS = ("ratio", "dht", "errors")
#: Shared columns (one cell on each line), left to right.
SHARED = ("rate", "spark", "limit", "session")
#: What goes first when the pane is too narrow, in order.  Rates, limits,
#: free space and errors are never dropped: they are what the pane is for.
DROP_ORDER = ("spark", "port", "dht", "session", "peers", "ratio")


@dataclass(frozen=True, slots=True)
class _Need:
    """Room a cell takes: its width plus the gap after it."""

    name: str
    width: int


def visible_cells(width: int, shown: Iterable[str] = ()) -> frozenset[str]:
    """Which cells fit in ``width`` columns, dropping by :data:`DROP_ORDER`.

    ``shown`` names the optional cells that have something to show now (DHT
    only with a DHT, errors only with errors); the rest are always laid out
    so cells do not jump about as values come and go.  Pure, for tests.
    """
    present = set(shown)
    widths = {name: w + GAP for name, w in CELL_WIDTHS.items()}
    widths["spark"] = SPARKLINE_WIDTH + GAP
    optional = {"dht", "errors"}
    top = [n for n in (*SHARED, *TOP_CELLS) if n not in optional or n in present]
    bottom = [n for n in (*SHARED, *BOTTOM_CELLS) if n not in optional or n in present]
    keep = set(top) | set(bottom)

    def overflows(line: list[str]) -> bool:
        # The last cell needs no gap after it.
        return sum(widths[n] for n in line if n in keep) - GAP > width

    for name in DROP_ORDER:
        if not (overflows(top) or overflows(bottom)):
            break
        keep.discard(name)
    return frozenset(keep)


def _cell(*parts: tuple[str, str]) -> Text:
    """Spans joined by bare spaces (see the module docstring for why)."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for i, (part, style) in enumerate(parts):
        if i:
            text.append(" ")
        text.append(part, style)
    return text


#: Style of ``DHT failed``: a warning, not an error (downloads with trackers go on).
DHT_FAILED_STYLE = "bold yellow"


def dht_cell(status: GlobalStatus) -> Text:
    """The DHT cell: ``DHT 143/210`` (good/total nodes), by state.

    Dim while bootstrapping (``DHT …`` before any node is known,
    ``DHT 3/12…`` once some are), a warning ``DHT failed`` when no node
    answered, empty when the DHT is off.  Figures are dimmed until the DHT
    works, so a table still filling up never reads as a working one.
    """
    state = status.dht_state
    if state == "off":
        return Text(end="")
    if state == "failed":
        return _cell(("DHT", DHT_FAILED_STYLE), ("failed", DHT_FAILED_STYLE))
    counts = f"{status.dht_good_nodes}/{status.dht_nodes}"
    if state == "bootstrapping":
        return _cell(("DHT", "dim"), (f"{counts}…" if status.dht_nodes else "…", "dim"))
    return _cell(("DHT", "dim"), (counts, "bold"))


def dht_tooltip(status: GlobalStatus) -> str:
    """What the DHT cell means, in words (its tooltip)."""
    nodes = f"{status.dht_good_nodes} good of {status.dht_nodes} nodes in the routing table"
    return {
        "off": "DHT off",
        "bootstrapping": f"DHT joining the network: {nodes} so far",
        "failed": (
            "DHT failed: no node answered. Check the bootstrap nodes in Settings "
            "and that UDP is not blocked; it keeps retrying."
        ),
    }.get(status.dht_state, f"DHT working: {nodes}")


class StatusPane(Vertical):
    """Two lines at the bottom of the main screen (see the module docstring)."""

    DEFAULT_CSS = f"""
    StatusPane {{ height: 2; }}
    StatusPane > Horizontal {{ height: 1; }}
    StatusPane Static {{ width: auto; margin: 0 {GAP} 0 0; }}
    StatusPane .rate {{ min-width: {CELL_WIDTHS["rate"]}; }}
    StatusPane .limit {{ min-width: {CELL_WIDTHS["limit"]}; color: $text-muted; }}
    StatusPane .session {{ min-width: {CELL_WIDTHS["session"]}; }}
    StatusPane Sparkline {{ width: {SPARKLINE_WIDTH}; margin: 0 {GAP} 0 0; }}
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.down_history: deque[float] = deque(maxlen=HISTORY)
        self.up_history: deque[float] = deque(maxlen=HISTORY)
        self._texts: dict[str, str] = {}
        self._visible: frozenset[str] | None = None
        self.status: GlobalStatus | None = None

    def compose(self) -> ComposeResult:
        for way, tail in (("down", TOP_CELLS), ("up", BOTTOM_CELLS)):
            with Horizontal():
                yield Static("", id=f"status-{way}", classes="rate")
                yield Sparkline([], id=f"spark-{way}", classes="spark")
                yield Static("", id=f"status-{way}-limit", classes="limit")
                yield Static("", id=f"status-{way}-session", classes="session")
                for name in tail:
                    width = CELL_WIDTHS[name]
                    cell = Static("", id=f"status-{name}", classes=name)
                    cell.styles.min_width = width
                    yield cell

    def on_resize(self) -> None:
        self._layout()

    def update_status(self, status: GlobalStatus) -> None:
        """Show ``status`` and append its rates to the sparklines."""
        self.status = status
        self.down_history.append(status.down_rate)
        self.up_history.append(status.up_rate)
        self.query_one("#spark-down", Sparkline).data = list(self.down_history)
        self.query_one("#spark-up", Sparkline).data = list(self.up_history)
        for widget_id, text in self.cells(status).items():
            self._set(widget_id, text)
        tip = dht_tooltip(status)
        dht = self.query_one("#status-dht", Static)
        if dht.tooltip != tip:
            dht.tooltip = tip
        self._layout()

    @staticmethod
    def cells(status: GlobalStatus) -> dict[str, Text]:
        """Every cell's text, by widget id (empty: nothing to show)."""

        def limit(value: int | None) -> Text:
            # A limit in force stands out; "∞" stays quiet.
            return _cell(("limit", "dim"), (fmt.limit(value), "dim" if value is None else "bold"))

        errors = Text(end="")
        if status.errors:
            noun = "error" if status.errors == 1 else "errors"
            errors = Text(f"{status.errors} {noun}", "bold red", end="")
        port = str(status.listen_port) if status.listen_port else "-"
        free = fmt.size(status.free_disk) if status.free_disk is not None else "?"
        return {
            "status-down": _cell(("↓", "bold"), (fmt.rate(status.down_rate), "bold")),
            "status-up": _cell(("↑", "bold"), (fmt.rate(status.up_rate), "bold")),
            "status-down-limit": limit(status.download_limit),
            "status-up-limit": limit(status.upload_limit),
            "status-down-session": _cell(
                ("session", "dim"), (fmt.size(status.session_downloaded), "bold")
            ),
            "status-up-session": _cell(
                ("session", "dim"), (fmt.size(status.session_uploaded), "bold")
            ),
            "status-peers": _cell((str(status.peers), "bold"), ("peers", "dim")),
            "status-port": _cell(("port", "dim"), (port, "bold")),
            "status-free": _cell(("free", "dim"), (free, "bold")),
            "status-dht": dht_cell(status),
            "status-ratio": _cell(("ratio", "dim"), (fmt.ratio(status.ratio), "bold")),
            "status-errors": errors,
        }

    def _layout(self) -> None:
        """Show the cells that fit the pane's width (see :func:`visible_cells`)."""
        status = self.status
        shown = []
        if status is not None and status.dht_state != "off":
            shown.append("dht")
        if status is not None and status.errors:
            shown.append("errors")
        visible = visible_cells(self.size.width, shown)
        if visible == self._visible:
            return
        self._visible = visible
        for name in ("spark", "limit", "session", *TOP_CELLS, *BOTTOM_CELLS):
            for widget in self.query(f".{name}").results(Widget):
                widget.display = name in visible

    def _set(self, widget_id: str, text: Text) -> None:
        plain = text.plain
        if self._texts.get(widget_id) != plain:
            self._texts[widget_id] = plain
            self.query_one(f"#{widget_id}", Static).update(text)
