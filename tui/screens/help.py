"""The ``?`` help screen: every key, generated from :data:`tui.actions.ACTIONS`."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from tui.actions import ACTIONS, key_label

#: Keys that belong to widgets rather than app actions.
WIDGET_KEYS: tuple[tuple[str, str, str], ...] = (
    ("View", "1-5", "Show the Files, Peers, Pieces, Trackers or Info tab"),
    ("View", "Tab / Shift+Tab", "Move focus between the list and the detail tabs"),
    ("View", "ctrl+p", "Command palette: every action by name"),
    ("Files tab", "Space", "Cycle skip / normal / high for the file or folder"),
    ("Files tab", "s / n / h", "Skip, normal, high priority"),
    ("Files tab", "Enter / Esc", "Apply or cancel the previewed priority change"),
    ("Files tab", "t", "Stream the file: sequential, first and last pieces first"),
    ("Files tab", "Left / Right", "Collapse / expand a folder"),
    ("Mouse", "click", "Select rows, sort by a column header, switch tabs, press buttons"),
    ("Mouse", "wheel", "Scroll lists; click a file's priority to change it"),
)


def help_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
    table.add_column("group", style="bold", no_wrap=True)
    table.add_column("keys", style="bold $accent", no_wrap=True)
    table.add_column("what")
    for a in ACTIONS:
        table.add_row(a.group, key_label(a.keys), a.description)
    for group, keys, what in WIDGET_KEYS:
        table.add_row(group, keys, what)
    return table


class HelpScreen(ModalScreen[None]):
    """All keys and mouse gestures; any of Esc, q, ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "close", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help-box"):
            yield Label("torrent-tui — keys and mouse", classes="dialog-title")
            yield Static(_render_table(), id="help-table")
            yield Label(Text("Esc closes this help.", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)


def _render_table() -> Table:
    table = help_table()
    # rich cannot resolve Textual's $variables: use a plain accent colour.
    table.columns[1].style = "bold cyan"
    return table
