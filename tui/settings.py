"""``torrent-tui``'s settings file: the engine's :class:`ClientConfig` plus a ``[tui]`` table.

One TOML file at the platformdirs user config dir holds both.  The engine's
settings are the top-level keys, read and validated by
:mod:`core.config` exactly as the CLI reads them; the UI's own settings
(refresh rate, theme) live in a ``[tui]`` table that the engine never sees.

A bad file never stops the app: :func:`load_settings` returns the defaults
together with a message saying what is wrong and where, which the app shows.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.config import (
    ClientConfig,
    config_from_dict,
    default_config_path,
    dump_config,
)
from core.errors import ConfigError

#: Themes offered by the settings screen (all built into Textual).
THEMES = (
    "textual-dark",
    "textual-light",
    "nord",
    "gruvbox",
    "dracula",
    "tokyo-night",
    "monokai",
    "solarized-light",
    "catppuccin-mocha",
)


@dataclass(frozen=True, slots=True)
class TuiSettings:
    """The UI's own settings (the ``[tui]`` table)."""

    #: Table and status refreshes per second; the issue asks for 2-4, more
    #: only costs CPU and bandwidth over SSH.
    refresh_rate: float = 4.0
    theme: str = "textual-dark"

    def __post_init__(self) -> None:
        rate = self.refresh_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ConfigError(f"tui.refresh_rate: expected a number, got {rate!r}")
        object.__setattr__(self, "refresh_rate", float(rate))
        if not (math.isfinite(rate) and 0.5 <= rate <= 10):
            raise ConfigError(f"tui.refresh_rate: must be 0.5-10 per second, got {rate}")
        if not isinstance(self.theme, str) or self.theme not in THEMES:
            raise ConfigError(
                f"tui.theme: unknown theme {self.theme!r}; choose one of {', '.join(THEMES)}"
            )


def tui_from_dict(data: object) -> TuiSettings:
    if not isinstance(data, dict):
        raise ConfigError("[tui] must be a table")
    known = {f.name for f in fields(TuiSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"tui: unknown setting(s): {', '.join(unknown)}")
    return TuiSettings(**data)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the settings file holds, plus what went wrong reading it."""

    client: ClientConfig
    tui: TuiSettings
    path: Path
    #: Why the defaults are in use (file unreadable or invalid), for the UI to show.
    problem: str | None = None


def parse_settings(text: str) -> tuple[ClientConfig, TuiSettings]:
    """Parse settings TOML; raises :class:`ConfigError` naming the bad setting."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    tui = tui_from_dict(data.pop("tui", {}))
    return config_from_dict(data), tui


def load_settings(path: Path | None = None) -> Settings:
    """Read the settings file; a missing one means defaults, a bad one defaults plus a problem."""
    path = path if path is not None else default_config_path()
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return Settings(ClientConfig(), TuiSettings(), path)
    except (OSError, UnicodeDecodeError) as exc:
        return Settings(
            ClientConfig(), TuiSettings(), path, f"cannot read {path}: {exc}; using defaults"
        )
    try:
        client, tui = parse_settings(text)
    except ConfigError as exc:
        return Settings(ClientConfig(), TuiSettings(), path, f"{path}: {exc}; using defaults")
    return Settings(client, tui, path)


def dump_settings(client: ClientConfig, tui: TuiSettings) -> str:
    """TOML text that :func:`parse_settings` reads back to equal settings."""
    text = dump_config(client, only_changed=True)
    lines = [text.rstrip("\n"), "", "[tui]"]
    lines.append(f"refresh_rate = {tui.refresh_rate!r}")
    lines.append(f'theme = "{tui.theme}"')
    return "\n".join(lines) + "\n"


def save_settings(client: ClientConfig, tui: TuiSettings, path: Path) -> None:
    """Write the settings file atomically; raises :class:`ConfigError` if it cannot."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(dump_settings(client, tui), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc}") from exc
