"""Global limits have one home, the settings file; per-torrent limits live in the session.

Issue 23: a limit set with ``l`` was not written to the settings, so the
Settings screen showed the old value and a restart lost it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input

from core.config import ClientConfig
from tests.support.tui_app import SIZE, calls, settle
from tui.app import TorrentApp
from tui.fake_engine import FakeEngine
from tui.screens.limits import SpeedLimitScreen
from tui.screens.settings import SettingsScreen
from tui.settings import Settings, TuiSettings, load_settings, save_settings

pytestmark = pytest.mark.timeout(60)


def _saving_app(engine: FakeEngine, path: Path) -> TorrentApp:
    """An app that writes its settings file, as the real one does."""
    client = ClientConfig(download_dir=path.parent / "downloads", listen_port=6881)
    save_settings(client, TuiSettings(), path)
    settings = load_settings(path)
    return TorrentApp(engine, settings=settings, refresh_hz=0, persist_settings=True)


async def test_global_limit_from_l_is_the_setting_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    engine = FakeEngine()
    app = _saving_app(engine, path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, SpeedLimitScreen)
        app.screen.query_one("#limit-down", Input).value = "500"
        app.screen.query_one("#limit-up", Input).value = "2 MiB"
        await pilot.press("enter")
        await settle(pilot)
        assert calls(engine, "set_limits") == [("set_limits", 500 * 1024, 2 << 20)]
        # The Settings screen shows the same value...
        await pilot.press("comma")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        assert app.screen.query_one("#set-download_rate_limit", Input).value == "500 KiB"
        assert app.screen.query_one("#set-upload_rate_limit", Input).value == "2 MiB"
        await pilot.press("escape")
        await pilot.pause()
        # ...and the limits dialog opens on it again.
        await pilot.press("l")
        await pilot.pause()
        assert app.screen.query_one("#limit-down", Input).value == "500 KiB"
        await pilot.press("escape")
    # A restart reads it back from disk, with the other settings untouched.
    again = load_settings(path)
    assert again.problem is None
    assert again.client.download_rate_limit == 500 * 1024
    assert again.client.upload_rate_limit == 2 << 20
    assert again.client.listen_port == 6881


async def test_clearing_a_limit_with_l_saves_unlimited(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_settings(ClientConfig(download_rate_limit=1 << 20), TuiSettings(), path)
    engine = FakeEngine()
    app = TorrentApp(engine, settings=load_settings(path), refresh_hz=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()
        assert app.screen.query_one("#limit-down", Input).value == "1 MiB"
        app.screen.query_one("#limit-down", Input).value = ""
        await pilot.press("enter")
        await settle(pilot)
    assert load_settings(path).client.download_rate_limit is None


async def test_seed_checkbox_has_a_visible_label() -> None:
    settings = Settings(ClientConfig(seed=True), TuiSettings(), Path("/nonexistent/config.toml"))
    app = TorrentApp(FakeEngine(), settings=settings, refresh_hz=0, persist_settings=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("comma")
        await pilot.pause()
        box = app.screen.query_one("#set-seed", Checkbox)
        label = str(box.label)
        assert label.strip()
        # The whole label is on screen, not cut to "▐X…".
        line = app.screen.get_widget_at(box.region.x + 1, box.region.y)[0]
        assert line is box
        assert box.content_region.width >= len(label) + 3
