"""Helpers for the TUI app tests: a deterministic app on the fake engine.

Times are shown in local time, so the tests pin the time zone to UTC;
the refresh timer is off (``refresh_hz=0``) and refreshes happen when a test
asks, so what is on screen never depends on how fast the machine is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from textual.pilot import Pilot

from core.config import ClientConfig
from tui.app import TorrentApp
from tui.fake_engine import FAKE_NOW, FakeEngine, FakeScript
from tui.settings import Settings, TuiSettings
from tui.widgets.torrent_table import TorrentTable

os.environ["TZ"] = "UTC"
time.tzset()

#: The "now" every test app sees (ten minutes after the first fake torrent).
NOW = FAKE_NOW

SIZE = (120, 40)


def make_app(
    engine: FakeEngine | None = None,
    *,
    settings: Settings | None = None,
    script: FakeScript | None = None,
) -> TorrentApp:
    engine = engine if engine is not None else FakeEngine(script or FakeScript())
    if settings is None:
        settings = Settings(
            ClientConfig(download_dir=Path("/srv/downloads"), data_dir=Path("/srv/state")),
            TuiSettings(),
            Path("/srv/config/config.toml"),
        )
    return TorrentApp(
        engine, settings=settings, clock=lambda: NOW, refresh_hz=0, persist_settings=False
    )


async def settle(pilot: Pilot[None]) -> None:
    """Let workers (engine calls) finish and the screen catch up."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def refresh(pilot: Pilot[None]) -> None:
    """One bridge refresh, handled."""
    app = pilot.app
    assert isinstance(app, TorrentApp)
    app.bridge.refresh()
    await settle(pilot)


def table(app: TorrentApp) -> TorrentTable:
    return app.screen.query_one(TorrentTable)


def names(app: TorrentApp) -> list[str]:
    """The names of the visible torrent rows, top to bottom."""
    t = table(app)
    out = []
    for key in t.visible_keys:
        row = t.row_for(key)
        assert row is not None
        out.append(row.name)
    return out


def calls(engine: FakeEngine, name: str) -> list[tuple[object, ...]]:
    """The recorded calls of one engine method."""
    return [c for c in engine.calls if c[0] == name]
