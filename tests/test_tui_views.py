"""Pilot tests on the fake engine: filter, search, sort, tabs, mouse, help, palette, bridge."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Input, Label, TabbedContent
from textual.widgets.data_table import ColumnKey

from core.events import Lagged
from core.stats import TorrentState
from tests.support.tui_app import SIZE, calls, make_app, names, refresh, settle, table
from tui import format as fmt
from tui.actions import ACTIONS
from tui.bridge import Refreshed
from tui.fake_engine import FakeEngine, FakeScript
from tui.screens.help import HelpScreen
from tui.screens.main import MainScreen
from tui.widgets.torrent_table import TorrentTable

pytestmark = pytest.mark.timeout(60)


async def test_refresh_updates_only_changed_cells() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        t = table(app)
        assert t.update_rows(engine.torrents()) == 0  # nothing changed, nothing written
        engine.tick()
        downloading = sum(1 for r in engine.torrents() if r.state is TorrentState.DOWNLOADING)
        changed = t.update_rows(engine.torrents())
        assert 0 < changed <= downloading * 6  # progress, down, eta, size-free columns only


async def test_filter_key_and_tab_click() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        everything = len(names(app))
        await pilot.press("f")  # downloading (checking and metadata count as downloading)
        await pilot.pause()
        states = {table(app).row_for(k).state for k in table(app).visible_keys}  # type: ignore[union-attr]
        assert states <= {TorrentState.DOWNLOADING, TorrentState.CHECKING}
        assert 0 < len(names(app)) < everything
        await pilot.click("#filter-error")
        await pilot.pause()
        assert len(names(app)) == 1
        assert table(app).row_for(table(app).visible_keys[0]).state is TorrentState.ERROR  # type: ignore[union-attr]
        await pilot.click("#filter-all")
        await pilot.pause()
        assert len(names(app)) == everything


async def test_incremental_search() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        everything = len(names(app))
        await pilot.press("slash")
        await pilot.pause()
        await pilot.press("c", "o", "b")
        await pilot.pause()
        assert names(app) == ["cobalt-album-0003"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(names(app)) == everything
        assert not app.screen.query_one("#search", Input).display


async def test_sort_keys_and_header_click() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        selected = app.selected
        await pilot.press("o")  # added -> name (wraps around)
        await pilot.pause()
        assert table(app).sort_column == "name"
        assert names(app) == sorted(names(app))
        assert app.selected == selected  # the cursor follows its torrent
        await pilot.press("O")
        await pilot.pause()
        assert names(app) == sorted(names(app), reverse=True)
        # Click the "Size" header: sort by size, biggest last.
        t = table(app)
        name_width = t.columns[ColumnKey("name")].get_render_width(t)
        await pilot.click(TorrentTable, offset=(name_width + 3, 0))
        await pilot.pause()
        assert t.sort_column == "size"
        sizes = [t.row_for(k).size for k in t.visible_keys]  # type: ignore[union-attr]
        assert sizes == sorted(sizes)
        t.sort_by("down", reverse=True)
        await pilot.pause()
        rates = [t.row_for(k).down_rate for k in t.visible_keys]  # type: ignore[union-attr]
        assert rates == sorted(rates, reverse=True)
        assert "down" in str(app.screen.query_one("#sort-label", Label).render())


async def test_detail_tab_keys_and_selection_follow() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tabs = app.screen.query_one("#detail-tabs", TabbedContent)
        for key, pane in (("2", "tab-peers"), ("3", "tab-pieces"), ("4", "tab-trackers")):
            await pilot.press(key)
            await pilot.pause()
            assert tabs.active == pane
        await pilot.press("5")
        await pilot.pause()
        assert tabs.active == "tab-info"
        await pilot.press("down")
        await settle(pilot)
        second = engine.torrents()[1].info_hash
        assert app.bridge.selected == second
        main = app.screen
        assert isinstance(main, MainScreen)
        assert main.details is not None and main.details.info_hash == second
        await pilot.press("1")
        await pilot.pause()
        assert tabs.active == "tab-files"


async def test_mouse_click_selects_a_row() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click(TorrentTable, offset=(5, 3))  # header is line 0
        await settle(pilot)
        assert app.selected == engine.torrents()[2].info_hash


async def test_help_screen_lists_every_action() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.query_one("#help-table").render()
        assert str(text)  # the table renders
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


async def test_command_palette_runs_actions() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Recheck")
        await asyncio.sleep(0.3)
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        assert calls(engine, "recheck") == [("recheck", app.selected)]


async def test_every_action_is_bound_and_in_the_palette() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        bound = {b.action for group in app._bindings.key_to_bindings.values() for b in group}
        for action in ACTIONS:
            assert action.name in bound
        from tui.app import TorrentCommands

        provider = TorrentCommands(app.screen)
        labels = [label for label, _, _ in provider._commands()]
        for action in ACTIONS:
            assert action.label in labels, action


def test_refreshed_replaces_older_snapshot_but_edges_queue() -> None:
    engine = FakeEngine()
    status = engine.status()
    a = Refreshed(engine.torrents(), status, None, 1)
    b = Refreshed(engine.torrents(), status, None, 2)
    assert b.can_replace(a)
    from core.events import TorrentAdded
    from tui.bridge import EngineEvent

    edge = EngineEvent(TorrentAdded(engine.torrents()[0].info_hash, "x"))
    assert not edge.can_replace(a) and not b.can_replace(edge)


async def test_bridge_lagged_marker_triggers_a_full_refresh() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        seq = app.bridge.seq
        app.bridge._dispatch(Lagged(dropped=5))
        await settle(pilot)
        assert app.bridge.seq == seq + 1


async def test_bridge_timer_refreshes_at_the_configured_rate() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        seq = app.bridge.seq
        app.bridge.set_rate(20)
        await asyncio.sleep(0.3)
        await pilot.pause()
        app.bridge.set_rate(0)
        assert app.bridge.seq >= seq + 2
        main = app.screen
        assert isinstance(main, MainScreen) and main.refreshes >= 3


async def test_rows_out_of_view_are_updated_when_scrolled_in() -> None:
    engine = FakeEngine(FakeScript(torrents=80, peers=2))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        t = table(app)
        last_key = t.visible_keys[-1]
        before = t.get_cell(last_key, "progress").plain
        for _ in range(40):
            engine.tick()
        await refresh(pilot)
        row = t.row_for(last_key)
        assert row is not None
        if row.state is TorrentState.DOWNLOADING:
            assert last_key in t._dirty  # formatted only once it is shown
        t.scroll_end(animate=False)
        await pilot.pause()
        await pilot.pause()
        assert last_key not in t._dirty
        expected = row.progress
        assert t.get_cell(last_key, "progress").plain.endswith(fmt.percent(expected))
        assert (
            before != t.get_cell(last_key, "progress").plain
            or row.state is not TorrentState.DOWNLOADING
        )
