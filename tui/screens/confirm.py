"""Confirm removing a torrent, optionally with its downloaded data."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label


class ConfirmRemoveScreen(ModalScreen[bool | None]):
    """Returns ``delete_data`` (True/False) on confirm, ``None`` on cancel.

    "Remove" is not the focused default: deleting data is the one action
    that cannot be undone, so a stray Enter must not do it.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("y", "confirm", "Remove", show=False),
        Binding("d", "toggle_delete", "Also delete data", show=False),
    ]

    def __init__(self, name: str) -> None:
        super().__init__(id="confirm-remove")
        self.torrent_name = name

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-box"):
            yield Label("Remove torrent", classes="dialog-title")
            yield Label(f"Remove [b]{_escape(self.torrent_name)}[/b] from the list?")
            yield Checkbox("Also delete the downloaded data (d)", id="delete-data")
            with Horizontal(classes="buttons"):
                yield Button("Remove (y)", variant="error", id="remove-ok")
                yield Button("Cancel", id="remove-cancel")

    def on_mount(self) -> None:
        self.query_one("#remove-cancel", Button).focus()

    def action_toggle_delete(self) -> None:
        box = self.query_one("#delete-data", Checkbox)
        box.value = not box.value

    @on(Button.Pressed, "#remove-ok")
    def action_confirm(self) -> None:
        self.dismiss(self.query_one("#delete-data", Checkbox).value)

    @on(Button.Pressed, "#remove-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
