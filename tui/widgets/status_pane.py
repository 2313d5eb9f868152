"""The status pane: global rates with sparklines, limits, peers, port, disk, totals, errors.

It keeps the last :data:`HISTORY` rate samples itself (one per refresh) so
the sparklines need nothing from the engine beyond :class:`GlobalStatus`.
Labels are only rewritten when their text changes, which keeps redraws
over SSH to the cells that actually moved.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from tui import format as fmt
from tui.model import GlobalStatus

#: Samples kept for each sparkline (at 4 Hz: the last 15 seconds).
HISTORY = 60


class StatusPane(Vertical):
    """Two lines at the bottom of the main screen (see the module docstring).

    ``↓ rate  sparkline  limit  peers, port, free disk``
    ``↑ rate  sparkline  limit  session totals, ratio, errors``
    """

    DEFAULT_CSS = """
    StatusPane { height: 2; }
    StatusPane > Horizontal { height: 1; }
    StatusPane Static { width: auto; padding: 0 1 0 0; }
    StatusPane .rate { width: 14; }
    StatusPane .limit { width: 16; color: $text-muted; }
    StatusPane Sparkline { width: 20; margin: 0 1 0 0; }
    StatusPane .rest { width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.down_history: deque[float] = deque(maxlen=HISTORY)
        self.up_history: deque[float] = deque(maxlen=HISTORY)
        self._texts: dict[str, str] = {}
        self.status: GlobalStatus | None = None

    def compose(self) -> ComposeResult:
        for way in ("down", "up"):
            with Horizontal():
                yield Static("", id=f"status-{way}", classes="rate")
                yield Sparkline([], id=f"spark-{way}")
                yield Static("", id=f"status-{way}-limit", classes="limit")
                yield Static("", id=f"status-{way}-rest", classes="rest")

    def update_status(self, status: GlobalStatus) -> None:
        """Show ``status`` and append its rates to the sparklines."""
        self.status = status
        self.down_history.append(status.down_rate)
        self.up_history.append(status.up_rate)
        self.query_one("#spark-down", Sparkline).data = list(self.down_history)
        self.query_one("#spark-up", Sparkline).data = list(self.up_history)
        self._set("status-down", Text.assemble(("↓ ", "bold"), fmt.rate(status.down_rate)))
        self._set("status-up", Text.assemble(("↑ ", "bold"), fmt.rate(status.up_rate)))
        self._set("status-down-limit", Text(f"limit {fmt.limit(status.download_limit)}"))
        self._set("status-up-limit", Text(f"limit {fmt.limit(status.upload_limit)}"))
        top, bottom = self.describe(status)
        self._set("status-down-rest", top)
        self._set("status-up-rest", bottom)

    @staticmethod
    def describe(status: GlobalStatus) -> tuple[Text, Text]:
        """The text right of the limits: connections and disk; session totals and errors."""
        top = Text(no_wrap=True, overflow="ellipsis")
        top.append(str(status.peers), "bold")
        top.append(" peers   port ", "dim")
        top.append(str(status.listen_port) if status.listen_port else "-", "bold")
        top.append("   free ", "dim")
        top.append(fmt.size(status.free_disk) if status.free_disk is not None else "?", "bold")
        if status.dht_nodes:
            top.append("   DHT ", "dim")
            top.append(str(status.dht_nodes), "bold")
        bottom = Text(no_wrap=True, overflow="ellipsis")
        bottom.append("session ", "dim")
        bottom.append(
            f"↓{fmt.size(status.session_downloaded)} ↑{fmt.size(status.session_uploaded)}"
        )
        bottom.append("   ratio ", "dim")
        bottom.append(fmt.ratio(status.ratio), "bold")
        if status.errors:
            noun = "error" if status.errors == 1 else "errors"
            bottom.append(f"   {status.errors} {noun}", "bold red")
        return top, bottom

    def _set(self, widget_id: str, text: Text) -> None:
        plain = text.plain
        if self._texts.get(widget_id) != plain:
            self._texts[widget_id] = plain
            self.query_one(f"#{widget_id}", Static).update(text)
