"""Progress counts the wanted files, as in qBittorrent; the Info tab also gives the whole.

Issue 23: a torrent with skipped files showed "seeding" at 81.3%.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from core.stats import TorrentState
from core.types import InfoHash, PiecePriority
from tests.support.tui_app import SIZE, make_app, refresh, settle, table
from tui.app import TorrentApp
from tui.fake_engine import FakeEngine
from tui.widgets.info_pane import InfoPane, info_lines

pytestmark = pytest.mark.timeout(60)


async def _skip_unfinished(pilot: Pilot[None]) -> InfoHash:
    """Skip every unfinished file of the selected (downloading) torrent, as a user would."""
    app = pilot.app
    assert isinstance(app, TorrentApp) and isinstance(app.engine, FakeEngine)
    await settle(pilot)
    await pilot.press("down", "down")  # cobalt-album-0003: downloading, 74.0%
    await refresh(pilot)
    ih = app.selected
    assert ih is not None
    details = app.engine.details(ih)
    assert details is not None
    unfinished = [f.index for f in details.files if f.bytes_done < f.size]
    assert unfinished and len(unfinished) < len(details.files)
    app.set_file_priorities(ih, unfinished, PiecePriority.NONE)
    await refresh(pilot)
    return ih


async def test_selected_files_done_reads_100_percent_and_seeding() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        ih = await _skip_unfinished(pilot)
        t = table(app)
        row = next(r for k in t.visible_keys if (r := t.row_for(k)) and r.info_hash == ih)
        assert row.state is TorrentState.SEEDING and row.progress == 1.0
        cells = [str(c) for c in t.get_row(t.visible_keys[t.cursor_row])]
        assert any(c.endswith("100%") for c in cells) and "seeding" in cells
        # The whole torrent is not done, and the Info tab says so.
        await pilot.press("5")
        await pilot.pause()
        info = app.screen.query_one(InfoPane).info
        assert info is not None and info.wanted_progress == 1.0 and info.progress < 1.0
        lines = dict(info_lines(info))
        assert lines["Progress"].startswith("100% of")
        assert lines["Whole torrent"] == "74.0% (418 MiB of 565 MiB)"


async def test_wanting_a_file_again_resumes_downloading() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        ih = await _skip_unfinished(pilot)
        details = app.engine.details(ih)
        assert details is not None
        app.set_file_priorities(ih, [f.index for f in details.files], PiecePriority.NORMAL)
        await refresh(pilot)
        row = next(r for r in app.engine.torrents() if r.info_hash == ih)
        assert row.state is TorrentState.DOWNLOADING and row.progress < 1.0


def test_snapshot_info_tab_with_skipped_files(snap_compare: Any) -> None:
    async def run(pilot: Pilot[None]) -> None:
        await _skip_unfinished(pilot)
        await pilot.press("5")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run)
