"""The settings screen: edit, validate and return a new configuration.

Validation is the engine's own: the edited values go through
:func:`dataclasses.replace` on :class:`ClientConfig` (whose
``__post_init__`` checks everything) and :class:`TuiSettings`, so the
screen can never accept what the engine would refuse on the next start.
The first problem is shown under the form and nothing is returned until it
is fixed.  The app applies what it can live (limits, theme, refresh rate,
the connection settings: encryption and transports for new connections)
and saves the file.

The form scrolls between a fixed title and fixed buttons, so on a small
terminal (80x24) Save and Cancel stay on screen however many settings
there are.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select

from core.config import ClientConfig
from core.errors import ConfigError
from tui import format as fmt
from tui.settings import THEMES, Settings, TuiSettings

#: Bootstrap nodes are typed on one line, separated by commas and/or spaces.
_NODE_SEPARATORS = re.compile(r"[,\s]+")


#: The Encryption choices: (``ClientConfig.encryption`` value, what the user reads).
ENCRYPTION_CHOICES = (
    ("prefer", "prefer: encrypt when the peer can, else plain"),
    ("require", "require: encrypted peers only"),
    ("disable", "disable: plain only"),
)


def parse_nodes(text: str) -> tuple[str, ...]:
    """``"a:1, b:2"`` -> ``("a:1", "b:2")``; empty means none.

    Only splits: whether each is a usable ``host:port`` is
    :class:`ClientConfig`'s to say (``dht_bootstrap_nodes``), so the form
    and the config file refuse the same things.
    """
    return tuple(part for part in _NODE_SEPARATORS.split(text) if part)


def format_nodes(nodes: tuple[str, ...]) -> str:
    """The field's text for ``nodes``: read back by :func:`parse_nodes` to the same tuple."""
    return ", ".join(nodes)


class SettingsScreen(ModalScreen[tuple[ClientConfig, TuiSettings] | None]):
    """The form (see the module docstring)."""

    DEFAULT_CSS = """
    #set-transports {
        height: 1;
    }
    #set-transports Checkbox {
        width: auto;
        margin-right: 2;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, settings: Settings) -> None:
        super().__init__(id="settings-dialog")
        self.settings = settings

    def compose(self) -> ComposeResult:
        c = self.settings.client
        t = self.settings.tui
        with Vertical(classes="dialog", id="settings-box"):
            with Vertical(id="settings-head"):
                yield Label("Settings", classes="dialog-title")
                yield Label(str(self.settings.path), id="settings-path", classes="dim")
            with VerticalScroll(id="settings-form"), Grid(id="settings-grid"):
                yield Label("Download directory")
                yield Input(str(c.download_dir), id="set-download_dir", compact=True)
                yield Label("Listen port (0 = any)")
                yield Input(str(c.listen_port), id="set-listen_port", type="integer", compact=True)
                yield Label("Max connections")
                yield Input(
                    str(c.max_connections), id="set-max_connections", type="integer", compact=True
                )
                yield Label("Max connections per torrent")
                yield Input(
                    str(c.max_connections_per_torrent),
                    id="set-max_connections_per_torrent",
                    type="integer",
                    compact=True,
                )
                yield Label("Download limit (empty = unlimited)")
                yield Input(
                    fmt.rate_input(c.download_rate_limit),
                    id="set-download_rate_limit",
                    compact=True,
                )
                yield Label("Upload limit (empty = unlimited)")
                yield Input(
                    fmt.rate_input(c.upload_rate_limit), id="set-upload_rate_limit", compact=True
                )
                yield Label("Seed after downloading")
                # A checkbox with an empty label renders as a clipped "▐X…".
                yield Checkbox("keep uploading once complete", c.seed, id="set-seed", compact=True)
                yield Label("Encryption (MSE/PE)")
                yield Select(
                    [(label, value) for value, label in ENCRYPTION_CHOICES],
                    value=c.encryption,
                    allow_blank=False,
                    id="set-encryption",
                    compact=True,
                )
                yield Label("Transports")
                with Horizontal(id="set-transports"):
                    yield Checkbox("uTP", c.utp, id="set-utp", compact=True)
                    yield Checkbox("TCP", c.tcp, id="set-tcp", compact=True)
                yield Label("DHT")
                yield Checkbox("find peers without trackers", c.dht, id="set-dht", compact=True)
                yield Label("DHT bootstrap nodes")
                yield Input(
                    format_nodes(c.dht_bootstrap_nodes),
                    placeholder="host:port, ... (none: only nodes saved last time)",
                    id="set-dht_bootstrap_nodes",
                    compact=True,
                )
                yield Label("Refresh rate (per second)")
                yield Input(
                    f"{t.refresh_rate:g}", id="set-refresh_rate", type="number", compact=True
                )
                yield Label("Theme")
                yield Select(
                    [(name, name) for name in THEMES],
                    value=t.theme,
                    allow_blank=False,
                    id="set-theme",
                    compact=True,
                )
            with Vertical(id="settings-foot"):
                yield Label("", id="settings-error", classes="error")
                with Horizontal(classes="buttons"):
                    yield Button("Save (ctrl+s)", variant="primary", id="settings-save")
                    yield Button("Cancel", id="settings-cancel")

    def on_mount(self) -> None:
        self.query_one("#set-download_dir", Input).focus()

    def _value(self, name: str) -> str:
        return self.query_one(f"#set-{name}", Input).value.strip()

    def validate(self) -> tuple[ClientConfig, TuiSettings]:
        """The edited settings; raises :class:`ConfigError` naming the first bad field."""
        changes: dict[str, Any] = {"download_dir": self._value("download_dir")}
        for name in ("listen_port", "max_connections", "max_connections_per_torrent"):
            text = self._value(name)
            try:
                changes[name] = int(text)
            except ValueError:
                raise ConfigError(f"{name}: {text!r} is not a whole number") from None
        for name in ("download_rate_limit", "upload_rate_limit"):
            try:
                changes[name] = fmt.parse_rate(self._value(name))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        changes["seed"] = self.query_one("#set-seed", Checkbox).value
        changes["encryption"] = str(self.query_one("#set-encryption", Select).value)
        changes["utp"] = self.query_one("#set-utp", Checkbox).value
        changes["tcp"] = self.query_one("#set-tcp", Checkbox).value
        changes["dht"] = self.query_one("#set-dht", Checkbox).value
        changes["dht_bootstrap_nodes"] = parse_nodes(self._value("dht_bootstrap_nodes"))
        client = replace(self.settings.client, **changes)
        text = self._value("refresh_rate")
        try:
            rate = float(text)
        except ValueError:
            raise ConfigError(f"refresh_rate: {text!r} is not a number") from None
        theme = self.query_one("#set-theme", Select).value
        tui = TuiSettings(refresh_rate=rate, theme=str(theme))
        return client, tui

    @on(Button.Pressed, "#settings-save")
    def action_save(self) -> None:
        try:
            result = self.validate()
        except ConfigError as exc:
            self.query_one("#settings-error", Label).update(f"✗ {exc}")
            return
        self.dismiss(result)

    @on(Button.Pressed, "#settings-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
