"""Pilot tests of the app on the scripted fake engine: every action and key binding."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Checkbox, Input, Label, SelectionList

from core.errors import TorrentError
from core.events import TorrentRemoved
from core.types import PiecePriority
from tests.support.tui_app import SIZE, calls, make_app, names, refresh, settle
from tui.fake_engine import FakeEngine
from tui.screens.add import AddTorrentScreen
from tui.screens.confirm import ConfirmRemoveScreen
from tui.screens.limits import SpeedLimitScreen
from tui.screens.main import MainScreen
from tui.screens.settings import SettingsScreen
from tui.widgets.status_pane import StatusPane

pytestmark = pytest.mark.timeout(60)


async def test_startup_starts_engine_and_fills_the_table() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert engine.started and app.engine_ready
        assert isinstance(app.screen, MainScreen)
        assert len(names(app)) == len(engine.torrents())
        # Sorted by date added: the first torrent is selected and followed by the bridge.
        assert app.bridge.selected == engine.torrents()[0].info_hash
        status = app.screen.query_one(StatusPane).status
        assert status is not None and status.listen_port == engine.script.listen_port
    assert engine.closed


async def test_pause_and_resume_key() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ih = app.selected
        await pilot.press("p")
        await settle(pilot)
        assert calls(engine, "pause") == [("pause", ih)]
        await refresh(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert calls(engine, "resume") == [("resume", ih)]


async def test_recheck_key() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert calls(engine, "recheck") == [("recheck", app.selected)]


async def test_remove_asks_first_and_can_delete_data() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ih = app.selected
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmRemoveScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert calls(engine, "remove") == []
        await pilot.press("delete")
        await settle(pilot)
        await pilot.press("d")
        assert app.screen.query_one("#delete-data", Checkbox).value
        await pilot.press("y")
        await settle(pilot)
        assert calls(engine, "remove") == [("remove", ih, True)]
        assert ih not in {r.info_hash for r in engine.torrents()}
        await settle(pilot)
        assert len(names(app)) == len(engine.torrents())


async def test_remove_by_mouse_keeps_data() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ih = app.selected
        await pilot.press("x")
        await settle(pilot)
        await pilot.click("#remove-ok")
        await settle(pilot)
        assert calls(engine, "remove") == [("remove", ih, False)]


async def test_add_magnet_fetches_metadata_then_picks_files() -> None:
    engine = FakeEngine()
    engine.metadata_gate = asyncio.Event()
    app = make_app(engine)
    magnet = "magnet:?xt=urn:btih:" + "ab" * 20
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, AddTorrentScreen)
        screen.query_one("#add-source", Input).value = magnet
        await pilot.press("enter")
        await pilot.pause()
        assert screen.query_one("#add-fetching").display
        assert "fetching metadata" in str(screen.query_one("#add-fetching-label", Label).render())
        engine.metadata_gate.set()
        await pilot.pause()
        await pilot.pause()
        picker = screen.query_one("#add-files", SelectionList)
        assert picker.display and len(picker.selected) == engine.script.files
        await pilot.press("space")  # the first file: unwanted
        await pilot.pause()
        assert len(picker.selected) == engine.script.files - 1
        await pilot.click("#add-ok")
        await settle(pilot)
        (add,) = calls(engine, "add")
        assert add[1] == magnet and add[2] == "/srv/downloads"
        assert add[3] == {0: PiecePriority.NONE}
        assert isinstance(app.screen, MainScreen)


async def test_add_cancel_discards_fetched_metadata() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#add-source", Input).value = "magnet:?xt=urn:btih:" + "cd" * 20
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert calls(engine, "add") == []
        assert len(calls(engine, "discard_metadata")) == 1


async def test_add_error_is_shown_in_the_dialog() -> None:
    engine = FakeEngine()
    engine.fail["fetch_metadata"] = TorrentError("cannot read broken.torrent: no such file")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("enter")  # empty source
        await pilot.pause()
        error = app.screen.query_one("#add-error", Label)
        assert "Enter a path" in str(error.render())
        app.screen.query_one("#add-source", Input).value = "broken.torrent"
        await pilot.click("#add-load")
        await settle(pilot)
        assert "no such file" in str(error.render())
        assert isinstance(app.screen, AddTorrentScreen)


async def test_add_without_picking_wants_everything() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = len(engine.torrents())
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#add-source", Input).value = "/tmp/new.torrent"
        await pilot.click("#add-ok")
        await settle(pilot)
        assert calls(engine, "add")[0][3] == {}
        await refresh(pilot)
        assert len(names(app)) == before + 1


async def test_global_limits_dialog_parses_and_validates() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, SpeedLimitScreen)
        app.screen.query_one("#limit-down", Input).value = "fast"
        await pilot.click("#limit-ok")
        await pilot.pause()
        assert "not a rate" in str(app.screen.query_one("#limit-error", Label).render())
        app.screen.query_one("#limit-down", Input).value = "500"
        app.screen.query_one("#limit-up", Input).value = "2 MiB"
        app.screen.query_one("#limit-up", Input).focus()
        await pilot.press("enter")  # submitting either field applies
        await settle(pilot)
        assert calls(engine, "set_limits") == [("set_limits", 500 * 1024, 2 << 20)]
        await refresh(pilot)
        status = app.screen.query_one(StatusPane).status
        assert status is not None and status.download_limit == 500 * 1024


async def test_torrent_limits_key() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("L")
        await pilot.pause()
        app.screen.query_one("#limit-up", Input).value = "64K"
        await pilot.press("enter")
        await settle(pilot)
        assert calls(engine, "set_torrent_limits") == [
            ("set_torrent_limits", app.selected, None, 64 * 1024)
        ]


async def test_sequential_and_first_last_toggles() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ih = app.selected
        await pilot.press("e")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        await pilot.press("E")
        await settle(pilot)
        assert calls(engine, "set_sequential") == [
            ("set_sequential", ih, True),
            ("set_sequential", ih, False),
        ]
        assert calls(engine, "set_first_last") == [("set_first_last", ih, True)]


async def test_file_priority_preview_then_apply() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ih = app.selected
        assert ih is not None
        app.screen.query_one("#files").focus()
        await pilot.press("down", "s")  # the first file under the first folder: skip
        await settle(pilot)
        preview = app.screen.query_one("#files").preview_text  # type: ignore[attr-defined]
        assert "pieces" in preview
        await pilot.press("enter")
        await settle(pilot)
        (call,) = calls(engine, "set_file_priorities")
        indices = call[2]
        assert isinstance(indices, tuple) and len(indices) == 1
        assert call[1] == ih and call[3] is PiecePriority.NONE
        index = indices[0]
        d = engine.details(ih)
        assert d is not None and d.files[index].priority is PiecePriority.NONE


async def test_stream_request_from_files_tab() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#files").focus()
        await pilot.press("down", "t")
        await settle(pilot)
        (call,) = calls(engine, "stream_file")
        assert call[1] == app.selected


async def test_settings_validate_apply_live() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("comma")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        screen.query_one("#set-listen_port", Input).value = "70000"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "listen_port" in str(screen.query_one("#settings-error", Label).render())
        screen.query_one("#set-listen_port", Input).value = "6881"
        screen.query_one("#set-refresh_rate", Input).value = "99"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "refresh_rate" in str(screen.query_one("#settings-error", Label).render())
        screen.query_one("#set-refresh_rate", Input).value = "2"
        screen.query_one("#set-download_rate_limit", Input).value = "1 MiB"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)
        assert app.settings.client.listen_port == 6881
        assert app.settings.tui.refresh_rate == 2.0
        assert calls(engine, "set_limits") == [("set_limits", 1 << 20, None)]


async def test_settings_cancel_changes_nothing() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = app.settings
        await pilot.press("f2")
        await pilot.pause()
        app.screen.query_one("#set-max_connections", Input).value = "1"
        await pilot.press("escape")
        await pilot.pause()
        assert app.settings is before


async def test_engine_failure_becomes_a_notification() -> None:
    engine = FakeEngine()
    engine.fail["pause"] = TorrentError("disk is on fire")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert any("disk is on fire" in m for m in messages)
        assert isinstance(app.screen, MainScreen)  # still alive


async def test_engine_events_storage_failure_and_removal() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        victim = engine.torrents()[1].info_hash
        engine.fail_storage(victim, "No space left on device")
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert any("No space left" in m for m in messages)
        # A removal announced on the bus shows at once (no timer in tests).
        gone = engine.torrents()[2]
        engine._torrents.pop(gone.info_hash)
        engine.emit(TorrentRemoved(gone.info_hash))
        await settle(pilot)
        assert gone.name not in names(app)


async def test_engine_start_failure_is_an_error_state() -> None:
    engine = FakeEngine()
    engine.fail["start"] = TorrentError("cannot listen on port 6881: address in use")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert not app.engine_ready
        assert app.engine_error is not None and "address in use" in app.engine_error
        assert any("address in use" in n.message for n in app._notifications)


async def test_quit_closes_engine() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert engine.closed


async def test_add_dialog_shows_names_made_safe() -> None:
    """A torrent whose names had to be sanitized: each file says what it was called."""
    from core.formats.bencoding import encode
    from core.formats.metainfo import Metainfo
    from tui.engine_views import files_of

    files = [
        {b"length": 100, b"path": [b"[Group] ok.mkv"]},
        {b"length": 100, b"path": [b"..", b"x"]},
    ]
    info = {b"files": files, b"name": b"a/b", b"piece length": 16384, b"pieces": bytes(20)}
    rows = files_of(Metainfo.from_bytes(encode({b"info": info})))
    assert [(r.path, r.renamed_from) for r in rows] == [
        ("[Group] ok.mkv", "a/b/[Group] ok.mkv"),
        ("_/x", "ab/../x"),
    ]
    engine = FakeEngine(metadata_files=rows)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#add-source", Input).value = "odd.torrent"
        await pilot.press("enter")
        await settle(pilot)
        note = str(screen.query_one("#add-renamed", Label).render())
        assert "2 names were made safe" in note
        picker = screen.query_one("#add-files", SelectionList)
        prompts = [str(picker.get_option_at_index(i).prompt) for i in range(2)]
        assert "[Group] ok.mkv" in prompts[0] and "was 'a/b/[Group] ok.mkv'" in prompts[0]
        assert prompts[1].startswith("_/x") and "was 'ab/../x'" in prompts[1]
