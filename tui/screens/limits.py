"""Set download/upload speed limits (global or for one torrent)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from tui import format as fmt


class SpeedLimitScreen(ModalScreen[tuple[int | None, int | None] | None]):
    """Returns ``(download, upload)`` in bytes/s (None: unlimited), or None on cancel.

    Rates are typed as "500", "500 KiB", "2 MiB", "1.5M"; a bare number
    means KiB/s; empty or 0 means unlimited.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, download: int | None, upload: int | None) -> None:
        super().__init__(id="limits-dialog")
        self.title_text = title
        self.download = download
        self.upload = upload

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="limits-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label("Download (KiB/s, or with a unit; empty = unlimited)")
            yield Input(fmt.rate_input(self.download), placeholder="unlimited", id="limit-down")
            yield Label("Upload")
            yield Input(fmt.rate_input(self.upload), placeholder="unlimited", id="limit-up")
            yield Label("", id="limit-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply", variant="primary", id="limit-ok")
                yield Button("Cancel", id="limit-cancel")

    def on_mount(self) -> None:
        self.query_one("#limit-down", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#limit-ok")
    def apply(self) -> None:
        try:
            down = fmt.parse_rate(self.query_one("#limit-down", Input).value)
            up = fmt.parse_rate(self.query_one("#limit-up", Input).value)
        except ValueError as exc:
            self.query_one("#limit-error", Label).update(str(exc))
            return
        self.dismiss((down, up))

    @on(Button.Pressed, "#limit-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
