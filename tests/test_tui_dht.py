"""The DHT in the terminal UI: status cell, the ``** [DHT] **`` tracker row, peer sources, settings.

The widgets are fed :class:`GlobalStatus` / :class:`TrackerStatus` values
directly (pure and Pilot tests, snapshots at 80 and 200 columns); the app
runs on the fake engine's scripted DHT; the engine facade's mapping is
checked against real clients with a DHT on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from core.config import DEFAULT_BOOTSTRAP
from core.engine.client import Client
from core.events import DhtBootstrapped, PeerRow, PeerSource
from core.tracker.types import TrackerStatus
from tests.support.engine import loopback_config, make_torrent
from tests.support.tui_app import SIZE, make_app, refresh, settle
from tui.engine import RealEngine
from tui.fake_engine import FakeEngine, FakeScript
from tui.model import DHT_STATES, DHT_URL, GlobalStatus
from tui.screens.main import MainScreen
from tui.screens.settings import SettingsScreen, format_nodes, parse_nodes
from tui.widgets.peer_table import SOURCE_LEGEND, PeerTable
from tui.widgets.status_pane import (
    CELL_WIDTHS,
    DHT_FAILED_STYLE,
    StatusPane,
    dht_cell,
    dht_tooltip,
    visible_cells,
)
from tui.widgets.tracker_table import TrackerTable, is_source_row, tracker_state

pytestmark = pytest.mark.timeout(60)

NOW = 1_700_000_000.0


def status(state: str, good: int = 0, total: int = 0, *, errors: int = 0) -> GlobalStatus:
    return GlobalStatus(
        down_rate=4.71 * (1 << 20),
        up_rate=4.63 * (1 << 20),
        download_limit=1 << 20,
        upload_limit=None,
        peers=98,
        listen_port=51413,
        free_disk=412 << 30,
        session_downloaded=566 << 20,
        session_uploaded=340 << 20,
        errors=errors,
        dht_nodes=total,
        dht_good_nodes=good,
        dht_state=state,
    )


#: One status per thing the cell can say.
STATES = {
    "ok": status("ok", 143, 210),
    "joining": status("bootstrapping"),
    "joining-with-nodes": status("bootstrapping", 3, 12),
    "failed": status("failed", 0, 4),
    "off": status("off"),
}


def _styles(text: Text) -> dict[str, str]:
    """Each span's text and its style."""
    return {text.plain[s.start : s.end]: str(s.style) for s in text.spans}


# --------------------------------------------------------------------------- status cell


def test_dht_cell_says_each_state() -> None:
    assert dht_cell(STATES["ok"]).plain == "DHT 143/210"
    assert dht_cell(STATES["joining"]).plain == "DHT …"
    assert dht_cell(STATES["joining-with-nodes"]).plain == "DHT 3/12…"
    assert dht_cell(STATES["failed"]).plain == "DHT failed"
    assert dht_cell(STATES["off"]).plain == ""
    # Counts stand out once the DHT works, stay dim while it joins; failure is a warning.
    assert _styles(dht_cell(STATES["ok"])) == {"DHT": "dim", "143/210": "bold"}
    assert _styles(dht_cell(STATES["joining-with-nodes"])) == {"DHT": "dim", "3/12…": "dim"}
    assert set(_styles(dht_cell(STATES["failed"])).values()) == {DHT_FAILED_STYLE}
    # A plausible big table fits the width the layout reserves.
    big = dht_cell(status("bootstrapping", 9999, 9999))
    assert len(big.plain) <= CELL_WIDTHS["dht"]


def test_dht_tooltip_explains_the_cell() -> None:
    assert "143 good of 210 nodes" in dht_tooltip(STATES["ok"])
    assert "joining" in dht_tooltip(STATES["joining-with-nodes"])
    assert "no node answered" in dht_tooltip(STATES["failed"])
    assert dht_tooltip(STATES["off"]) == "DHT off"


def test_dht_cell_keeps_the_drop_rules() -> None:
    # The DHT sits on the upload line: at 80 columns it fits beside the ratio...
    assert "dht" in visible_cells(80, ["dht"])
    # ... and goes, after the sparklines and the port, when errors need the room.
    crowded = visible_cells(80, ["dht", "errors"])
    assert "dht" not in crowded and {"errors", "free", "session"} <= crowded
    # At 120 columns both lines keep their sparklines with the DHT shown.
    assert {"dht", "spark", "port"} <= visible_cells(120, ["dht", "errors"])
    assert {"dht", "spark"} <= visible_cells(200, ["dht", "errors"])
    # Off: not laid out at all.
    assert "dht" not in visible_cells(200, [])


class PaneApp(App[None]):
    """Status panes stacked, one per status."""

    def __init__(self, *statuses: GlobalStatus) -> None:
        super().__init__()
        self.statuses = statuses

    def compose(self) -> ComposeResult:
        with Vertical():
            for _ in self.statuses:
                yield StatusPane()

    def on_mount(self) -> None:
        for pane, st in zip(self.query(StatusPane), self.statuses, strict=True):
            pane.update_status(st)


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("name", list(STATES))
async def test_dht_cell_on_screen(width: int, name: str) -> None:
    st = STATES[name]
    for errors in (0, 3):
        app = PaneApp(replace(st, errors=errors))
        async with app.run_test(size=(width, 3)) as pilot:
            await pilot.pause()
            pane = app.query_one(StatusPane)
            cell = pane.query_one("#status-dht", Static)
            dropped = width == 80 and errors > 0
            assert cell.display == (name != "off" and not dropped), (name, width, errors)
            if cell.display:
                assert str(cell.render()) == dht_cell(st).plain
                assert cell.content_region.width >= len(dht_cell(st).plain)
                assert cell.tooltip == dht_tooltip(st)
            shown = [c for c in pane.query(Static) if c.display]
            assert max(c.region.right for c in shown) <= width


def test_snapshot_dht_states_80(snap_compare: Any) -> None:
    """Top to bottom: ok, joining, joining with nodes, failed, off."""
    assert snap_compare(PaneApp(*STATES.values()), terminal_size=(80, 10))


def test_snapshot_dht_states_200(snap_compare: Any) -> None:
    assert snap_compare(PaneApp(*STATES.values()), terminal_size=(200, 10))


# --------------------------------------------------------------------------- trackers tab


def dht_row(**changes: Any) -> TrackerStatus:
    values: dict[str, Any] = {
        "url": DHT_URL,
        "tier": -1,
        "last_announce": NOW - 45,
        "last_result": "ok",
        "next_announce": NOW + 14 * 60,
        "peers_received": 23,
    }
    values.update(changes)
    return TrackerStatus(**values)


def trackers() -> list[TrackerStatus]:
    return [
        TrackerStatus(
            "udp://tracker.example:6969/announce",
            0,
            last_announce=NOW - 12,
            last_result="ok",
            next_announce=NOW + 29 * 60,
            peers_received=50,
            seeders=12,
            leechers=3,
            completed=140,
        ),
        TrackerStatus("http://backup.example/announce", 1, last_result="error", failures=2),
    ]


class TrackersApp(App[None]):
    def __init__(self, rows: list[TrackerStatus]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        yield TrackerTable()

    def on_mount(self) -> None:
        self.query_one(TrackerTable).update_data(self.rows, NOW)


def test_dht_row_rules() -> None:
    assert is_source_row(dht_row()) and not any(is_source_row(t) for t in trackers())
    assert tracker_state(dht_row(), NOW) == "working"
    # A lookup in flight: no next time, the engine marks it updating.
    flight = dht_row(next_announce=None, extra={"updating": "1"})
    assert tracker_state(flight, NOW) == "updating"
    assert tracker_state(dht_row(last_result="", last_announce=None), NOW) == "not contacted"


async def test_dht_row_comes_first_with_a_blank_tier() -> None:
    # The engine lists the DHT last, and it may appear only after the trackers.
    app = TrackersApp(trackers())
    async with app.run_test(size=(140, 8)) as pilot:
        table = app.query_one(TrackerTable)
        assert DHT_URL not in table.row_keys
        table.update_data([*trackers(), dht_row()], NOW)
        await pilot.pause()
        assert table.row_keys[0] == DHT_URL
        assert str(table.get_cell(DHT_URL, "tier")) == ""
        assert str(table.get_cell(DHT_URL, "status")) == "working"
        assert str(table.get_cell(DHT_URL, "peers")) == "23"
        assert str(table.get_cell(DHT_URL, "next")) == "in 14m00s"
        assert str(table.get_cell(DHT_URL, "seeders")) == "-"  # the DHT has no scrape
        assert str(table.get_cell("udp://tracker.example:6969/announce", "tier")) == "0"
        # A failed lookup reads like a failed tracker, with its reason.
        failed = dht_row(last_result="error", last_error="no DHT node answered", failures=2)
        table.update_data([*trackers(), failed], NOW)
        assert str(table.get_cell(DHT_URL, "status")) == "error (2x)"
        assert str(table.get_cell(DHT_URL, "error")) == "no DHT node answered"
        # The user's own sort wins; the DHT row sorts like any other.
        table.sort_by("peers", reverse=True)
        assert table.row_keys[0] == "udp://tracker.example:6969/announce"


def test_snapshot_tracker_table_with_dht(snap_compare: Any) -> None:
    assert snap_compare(TrackersApp([*trackers(), dht_row()]), terminal_size=(140, 6))


def test_tui_and_engine_name_the_dht_row_alike() -> None:
    dht_torrent = pytest.importorskip("core.engine.dht_torrent")
    assert dht_torrent.DHT_URL == DHT_URL


# --------------------------------------------------------------------------- peers tab


def _peer(source: PeerSource) -> PeerRow:
    return PeerRow(
        address=("192.0.2.7", 6881),
        client="qBittorrent 4.6.2",
        source=source,
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


async def test_dht_peers_read_dht() -> None:
    class PeersApp(App[None]):
        def compose(self) -> ComposeResult:
            yield PeerTable()

    app = PeersApp()
    async with app.run_test(size=(140, 5)):
        table = app.query_one(PeerTable)
        table.update_data([_peer(PeerSource.DHT)])
        assert str(table.get_cell("192.0.2.7:6881", "source")) == "dht"
        assert "dht" in str(table.tooltip)
    # The legend names every source the engine has, as the column shows it.
    words = {line.split()[0] for line in SOURCE_LEGEND.splitlines()}
    assert words == {str(s) for s in PeerSource}


# --------------------------------------------------------------------------- settings


def test_bootstrap_nodes_field_round_trip() -> None:
    assert parse_nodes(format_nodes(DEFAULT_BOOTSTRAP)) == DEFAULT_BOOTSTRAP
    assert parse_nodes(" a.example:1,, [::1]:6881\t10.0.0.1:6881 ") == (
        "a.example:1",
        "[::1]:6881",
        "10.0.0.1:6881",
    )
    assert parse_nodes("  ") == ()


async def _open_settings(app: Any, pilot: Any) -> SettingsScreen:
    await settle(pilot)
    await pilot.press("comma")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, SettingsScreen)
    return screen


async def test_settings_edit_the_dht() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_settings(app, pilot)
        assert screen.query_one("#set-dht", Checkbox).value is True
        field = screen.query_one("#set-dht_bootstrap_nodes", Input)
        assert parse_nodes(field.value) == DEFAULT_BOOTSTRAP
        # Refused as the config file would refuse it, naming the setting.
        for bad in ("router.example", "[::1:6881", "host:70000", "::1:6881"):
            field.value = f"dht.example:6881, {bad}"
            await pilot.press("ctrl+s")
            await pilot.pause()
            error = str(screen.query_one("#settings-error", Label).render())
            assert "dht_bootstrap_nodes" in error, bad
            assert app.screen is screen
        field.value = "dht.example:6881, [2001:db8::1]:6881"
        screen.query_one("#set-dht", Checkbox).value = False
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)
        client = app.settings.client
        assert client.dht is False
        assert client.dht_bootstrap_nodes == ("dht.example:6881", "[2001:db8::1]:6881")
        # Neither can change under a running DHT: the user is told.
        (note,) = [n.message for n in app._notifications if "Settings saved" in n.message]
        assert "dht" in note and "dht_bootstrap_nodes" in note
        # Emptied: no bootstrap node (the saved table only).
        screen = await _open_settings(app, pilot)
        assert screen.query_one("#set-dht", Checkbox).value is False
        screen.query_one("#set-dht_bootstrap_nodes", Input).value = ""
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.settings.client.dht_bootstrap_nodes == ()


async def test_settings_buttons_stay_on_screen_at_80x24() -> None:
    """The form scrolls between a fixed head and fixed buttons (they used to fall off)."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_settings(app, pilot)
        box = screen.query_one("#settings-box")
        assert box.region.bottom <= 24 and box.region.right <= 80
        for button in screen.query(Button):
            r = button.region
            assert r.height > 0 and box.region.contains_region(r), button.id
        form = screen.query_one("#settings-form")
        assert form.max_scroll_y > 0  # more settings than rows: it scrolls
        # Tabbing to the last field brings it into view.
        theme = screen.query_one("#set-theme", Select)
        theme.focus()
        await pilot.pause()
        await pilot.pause()
        assert form.region.contains_region(theme.region)
        assert all(box.region.contains_region(b.region) for b in screen.query(Button))
        await pilot.press("ctrl+s")  # still saves
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)


# --------------------------------------------------------------------------- the app on the fake


def _cell_text(app: Any) -> str:
    return str(app.screen.query_one("#status-dht", Static).render())


async def test_status_pane_follows_the_fake_dht() -> None:
    engine = FakeEngine(FakeScript(dht="bootstrapping"))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert _cell_text(app) == "DHT …"
        engine.tick(2)
        await refresh(pilot)
        assert _cell_text(app) == "DHT 2/6…"
        # The end of a bootstrap is an edge: the pane updates without waiting for a tick.
        sub = engine.subscribe()
        engine.set_dht("ok")
        assert isinstance(sub.get_nowait(), DhtBootstrapped)
        await settle(pilot)
        now = engine.status()
        assert now.dht_good_nodes and now.dht_nodes
        assert _cell_text(app) == f"DHT {now.dht_good_nodes}/{now.dht_nodes}"
        engine.set_dht("failed")
        await refresh(pilot)
        assert _cell_text(app) == "DHT failed"
        engine.set_dht("off")
        await refresh(pilot)
        assert not app.screen.query_one("#status-dht", Static).display


def test_fake_dht_spares_private_torrents() -> None:
    engine = FakeEngine()
    engine.tick(3)
    private = public = 0
    for row in engine.torrents():
        details = engine.details(row.info_hash)
        assert details is not None and details.info is not None
        dht_rows = [t for t in details.trackers if t.url == DHT_URL]
        sources = {p.source for p in details.peers}
        if details.info.private:
            private += 1
            assert dht_rows == [] and not sources & {PeerSource.DHT, PeerSource.PEX}
        else:
            public += 1
            assert len(dht_rows) == 1 and dht_rows[0].tier == -1
            assert PeerSource.DHT in sources or not details.peers
    assert private and public
    engine.set_dht("off")
    for row in engine.torrents():
        details = engine.details(row.info_hash)
        assert details is not None and all(t.url != DHT_URL for t in details.trackers)
    with pytest.raises(ValueError, match="dht"):
        FakeScript(dht="sleepy")
    with pytest.raises(ValueError):
        engine.set_dht("sleepy")
    assert set(DHT_STATES) == {"off", "bootstrapping", "ok", "failed"}


# --------------------------------------------------------------------------- the real engine


async def test_real_engine_maps_the_dht(tmp_path: Path) -> None:
    """RealEngine.status() carries the snapshot's DHT figures; details() the DHT row."""
    off = RealEngine(loopback_config(tmp_path, "off"))
    router = Client(loopback_config(tmp_path, "router", dht=True, dht_bootstrap_nodes=()))
    alone = RealEngine(loopback_config(tmp_path, "alone", dht=True, dht_bootstrap_nodes=()))
    engine: RealEngine | None = None
    try:
        async with asyncio.timeout(30):
            await off.start()
            assert off.status().dht_state == "off"
            await router.start()
            assert router.dht is not None
            await alone.start()
            assert alone.client.dht is not None
            await alone.client.dht.wait_bootstrapped(5)
            assert alone.status().dht_state == "failed"  # nobody to ask
            nodes = (f"127.0.0.1:{router.dht.port}",)
            engine = RealEngine(
                loopback_config(tmp_path, "user", dht=True, dht_bootstrap_nodes=nodes)
            )
            await engine.start()
            assert engine.client.dht is not None
            assert await engine.client.dht.wait_bootstrapped(5)
            snap = engine.client.snapshot()
            st = engine.status()
            assert st.dht_state == snap.dht_state == "ok"
            assert (st.dht_nodes, st.dht_good_nodes) == (snap.dht_nodes, snap.dht_good_nodes)
            mi = make_torrent(tmp_path / "data", {"solo.bin": 40_000}, 16384)
            torrent_file = tmp_path / "solo.torrent"
            torrent_file.write_bytes(mi.to_bytes())
            ih = await engine.add(str(torrent_file))
            details = engine.details(ih)
            assert details is not None
            assert [t.url for t in details.trackers] == [DHT_URL]
    finally:
        for e in (off, alone, engine):
            if e is not None:
                await e.close()
        await router.close()
