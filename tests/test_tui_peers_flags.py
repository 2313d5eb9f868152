"""The Peers tab shows how each connection is carried; the Settings screen sets the policy.

The engine fills ``PeerRow.transport`` ("tcp"/"utp") and ``PeerRow.encrypted``
(see tests/test_transport_engine.py); here the Flags column turns them into
qBittorrent's letters (``P`` uTP, ``E`` encrypted, ``I`` incoming), the
columns that matter stay on an 80-column screen, and the Settings screen
edits ``encryption``, ``utp`` and ``tcp`` with the config's own validation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Checkbox, Label, Select

from core.config import ClientConfig
from core.events import PeerRow, PeerSource
from tests.support.tui_app import make_app, settle
from tui.engine import RealEngine
from tui.fake_engine import FakeEngine
from tui.screens.settings import ENCRYPTION_CHOICES, SettingsScreen
from tui.widgets.peer_table import FLAG_LEGEND, PeerTable, peer_flags

pytestmark = pytest.mark.timeout(60)


def _row(**kw: Any) -> PeerRow:
    base: dict[str, Any] = dict(
        address=("10.0.0.2", 6881),
        client="libtorrent 2.0.10",
        source=PeerSource.TRACKER,
        transport="tcp",
        encrypted=False,
        progress=0.5,
        down_rate=0.0,
        up_rate=0.0,
        am_choking=True,
        am_interested=False,
        peer_choking=True,
        peer_interested=False,
        requests_outstanding=0,
    )
    base.update(kw)
    return PeerRow(**base)


def test_transport_and_encryption_letters() -> None:
    assert peer_flags(_row()) == ""  # plain TCP, outgoing: nothing to say
    assert peer_flags(_row(transport="utp")) == "P"
    assert peer_flags(_row(encrypted=True)) == "E"
    assert peer_flags(_row(transport="utp", encrypted=True, incoming=True)) == "I E P"
    downloading = _row(am_interested=True, peer_choking=False, transport="utp", encrypted=True)
    assert peer_flags(downloading) == "D E P"
    # The legend says what no P means, and that U is not uTP.
    assert "P uTP transport (no P: TCP)" in FLAG_LEGEND
    assert "U uploading" in FLAG_LEGEND
    assert "E encrypted" in FLAG_LEGEND


async def test_peers_tab_at_80_columns_keeps_flags_and_rates_on_screen() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.query_one(PeerTable)
        assert table.row_count > 0
        widths = {str(k.value): c.get_render_width(table) for k, c in table.columns.items()}
        keys = list(widths)
        assert keys[:5] == ["address", "flags", "progress", "down", "up"]
        right_of_up = sum(widths[k] for k in keys[: keys.index("up") + 1])
        assert right_of_up <= table.size.width
        # The fake engine's peers include uTP and encrypted ones, shown as such.
        flags = [str(table.get_cell(key, "flags")) for key in table.row_keys]
        assert any("P" in f.split() for f in flags) and any("E" in f.split() for f in flags)


def test_snapshot_peers_tab_80x24(snap_compare: Any) -> None:
    async def peers_tab(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=peers_tab)


async def test_settings_screen_edits_the_connection_policy() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("comma")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        select = screen.query_one("#set-encryption", Select)
        assert select.value == "prefer"
        assert [v for v, _ in ENCRYPTION_CHOICES] == ["prefer", "require", "disable"]
        select.value = "require"
        screen.query_one("#set-utp", Checkbox).value = False
        client, _ = screen.validate()
        assert (client.encryption, client.utp, client.tcp) == ("require", False, True)
        # Both transports off is the config's error, shown under the form.
        screen.query_one("#set-tcp", Checkbox).value = False
        screen.action_save()
        await pilot.pause()
        error = str(screen.query_one("#settings-error", Label).render())
        assert "tcp and utp are both off" in error
        assert isinstance(app.screen, SettingsScreen)  # not dismissed


async def test_engines_take_the_policy_live(tmp_path: Path) -> None:
    fake = FakeEngine()
    await fake.set_connection_policy(encryption="disable", utp=False, tcp=True)
    assert ("set_connection_policy", "disable", False, True) in fake.calls
    real = RealEngine(ClientConfig(data_dir=tmp_path, download_dir=tmp_path, dht=False))
    await real.set_connection_policy(encryption="require", utp=True, tcp=False)
    cfg = real.client.config
    assert (cfg.encryption, cfg.utp, cfg.tcp) == ("require", True, False)
    assert dataclasses.replace(cfg) == cfg  # still a valid config
