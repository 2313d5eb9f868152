"""Snapshot tests of the whole app on the deterministic fake engine (120x40, plus 80x24 and 200x60).

Update with ``pytest tests/test_tui_snapshots.py --snapshot-update`` after a
deliberate visual change, and look at the SVGs before committing them.
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from core.errors import TorrentError
from tests.support.tui_app import SIZE, make_app, settle
from tui.fake_engine import FakeEngine


def _app(engine: FakeEngine | None = None) -> Any:
    return make_app(engine)


def test_main_screen(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, run_before=settle)


def test_main_screen_80x24(snap_compare: Any) -> None:
    """Compact layout: fewer columns, the name keeps its room, footer and status fit."""
    assert snap_compare(_app(), terminal_size=(80, 24), run_before=settle)


def test_main_screen_200x60(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=(200, 60), run_before=settle)


def test_peers_tab(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, press=["2"], run_before=settle)


def test_pieces_tab(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, press=["3"], run_before=settle)


def test_trackers_tab(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, press=["4"], run_before=settle)


def test_info_tab(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, press=["5"], run_before=settle)


def test_filtered_and_sorted(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, press=["f", "o", "O"], run_before=settle)


async def _add_with_files(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("a")
    await pilot.pause()
    pilot.app.screen.query_one("#add-source", Input).value = "magnet:?xt=urn:btih:" + "ab" * 20
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("space", "down", "down", "space", "down")
    await pilot.pause()


def test_add_dialog_with_file_picking(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, run_before=_add_with_files)


def test_settings_screen(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, press=["comma"], run_before=settle)


def test_help_screen(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, press=["question_mark"], run_before=settle)


def test_remove_confirmation(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, press=["x", "d"], run_before=settle)


async def _storage_error(pilot: Pilot[None]) -> None:
    await settle(pilot)
    engine = pilot.app.engine  # type: ignore[attr-defined]
    assert isinstance(engine, FakeEngine)
    await pilot.press("down")
    await settle(pilot)
    victim = engine.torrents()[1].info_hash
    engine.fail_storage(victim, "cannot write piece 41: No space left on device")
    await settle(pilot)
    await pilot.press("5")
    await pilot.pause()


def test_error_state(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, run_before=_storage_error)


def test_engine_failed_to_start(snap_compare: Any) -> None:
    engine = FakeEngine()
    engine.fail["start"] = TorrentError("cannot listen on port 6881: [Errno 98] address in use")
    assert snap_compare(_app(engine), terminal_size=SIZE, run_before=settle)
