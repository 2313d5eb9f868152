"""Layout at every terminal size: status pane cells, torrent columns, footer, focus order.

Issue 23: at 80x24 the name column was cut to 16 characters and the right
end of the screen was lost; the status pane clipped units (``limit 1.00``)
and its labels ran together in screenshots.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import Footer, Static, TabbedContent
from textual.widgets._footer import FooterKey

from tests.support.tui_app import make_app, settle, table
from tui.model import GlobalStatus
from tui.widgets.file_tree import FileTree
from tui.widgets.status_pane import StatusPane, visible_cells
from tui.widgets.torrent_table import (
    COLUMN_KEYS,
    COLUMN_WIDTHS,
    COMPACT_PROGRESS_WIDTH,
    MIN_NAME_WIDTH,
    fit_columns,
)

pytestmark = pytest.mark.timeout(60)

#: Everything at its longest: limits set, errors, four-digit sizes, many peers.
BUSY = GlobalStatus(
    down_rate=1023.9 * 1024 * 1024,
    up_rate=1023.9 * 1024,
    download_limit=1 << 20,
    upload_limit=1023 * 1024 * 1024 + 1,
    peers=9876,
    listen_port=65535,
    free_disk=1023 * (1 << 30) + (900 << 20),
    session_downloaded=1023 * (1 << 40),
    session_uploaded=999 * (1 << 30),
    errors=12,
    dht_nodes=9999,
    dht_good_nodes=9999,
    dht_state="bootstrapping",  # its longest text: "DHT 9999/9999…"
)


class PaneApp(App[None]):
    """The status pane alone, fed one status."""

    def __init__(self, status: GlobalStatus) -> None:
        super().__init__()
        self.status = status

    def compose(self) -> ComposeResult:
        yield StatusPane()

    def on_mount(self) -> None:
        self.query_one(StatusPane).update_status(self.status)


def _clipped(pane: StatusPane) -> list[str]:
    """Cells whose text is wider than the room they are given."""
    out = []
    for cell in pane.query(Static):
        if not cell.display:
            continue
        text = cell.render()
        plain = text.plain if isinstance(text, Text) else str(text)
        if len(plain) > cell.content_region.width:
            out.append(f"{cell.id}: {plain!r} in {cell.content_region.width}")
    return out


@pytest.mark.parametrize("width", [80, 100, 120, 200])
async def test_every_status_cell_fits_its_longest_value(width: int) -> None:
    app = PaneApp(BUSY)
    async with app.run_test(size=(width, 3)) as pilot:
        await pilot.pause()
        pane = app.query_one(StatusPane)
        assert _clipped(pane) == []
        shown = {c.id for c in pane.query(Static) if c.display}
        # What the pane is for never drops out.
        for must in ("status-down", "status-up-limit", "status-free", "status-errors"):
            assert must in shown
        assert "limit 1.00 MiB/s" in str(pane.query_one("#status-down-limit", Static).render())
        right = max(c.region.right for c in pane.query(Static) if c.display)
        assert right <= width


async def test_status_labels_are_separate_words_in_screenshots() -> None:
    """No text run in the SVG starts or ends with a space (renderers drop them: "98peers")."""
    app = PaneApp(BUSY)
    async with app.run_test(size=(200, 3)) as pilot:
        await pilot.pause()
        svg = app.export_screenshot()
    runs = re.findall(r"<text [^>]*>([^<]*)</text>", svg)
    words = [r for r in runs if "&#160;" in r or r.strip()]
    assert any("peers" in r for r in words)
    bad = [r for r in words if r.startswith("&#160;") or r.endswith("&#160;")]
    assert bad == []


def test_status_cells_drop_by_priority() -> None:
    assert {"spark", "port", "session", "peers", "ratio"} <= visible_cells(200)
    narrow = visible_cells(80, ["errors"])
    assert {"rate", "limit", "free", "errors", "peers", "ratio", "session"} <= narrow
    assert "spark" not in narrow and "port" not in narrow
    tiny = visible_cells(40, ["errors"])
    assert {"rate", "limit", "free", "errors"} <= tiny and "peers" not in tiny


def test_snapshot_status_pane_busy(snap_compare: Any) -> None:
    assert snap_compare(PaneApp(BUSY), terminal_size=(120, 3))


def test_snapshot_status_pane_busy_narrow(snap_compare: Any) -> None:
    assert snap_compare(PaneApp(BUSY), terminal_size=(80, 3))


def test_columns_drop_by_priority_and_the_name_keeps_its_room() -> None:
    wide, bar = fit_columns(200)
    assert wide == COLUMN_KEYS and bar
    narrow, bar = fit_columns(78)
    assert narrow[:2] == ("name", "progress") and not bar
    assert {"state", "down", "eta"} <= set(narrow)
    assert "added" not in narrow and "ratio" not in narrow
    # Never wider than the room, down to the name and the percentage alone.
    for width in range(20, 200):
        keys, bar = fit_columns(width)
        assert "name" in keys and "progress" in keys
        others = [COLUMN_WIDTHS[k] for k in keys if k not in ("name", "progress")]
        others.append(COLUMN_WIDTHS["progress"] if bar else COMPACT_PROGRESS_WIDTH)
        needed = MIN_NAME_WIDTH + sum(others) + 2 * len(keys)
        assert needed <= width or keys == ("name", "progress")


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 40), (200, 60)])
async def test_nothing_is_off_screen(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        t = table(app)
        name = t.columns[next(k for k in t.columns if k.value == "name")]
        assert name.width >= MIN_NAME_WIDTH
        # Every column on screen ends inside the table.
        total = sum(c.get_render_width(t) for c in t.columns.values())
        assert total <= t.size.width
        assert "eta" in t.shown_columns
        footer = app.screen.query_one(Footer)
        keys = list(footer.query(FooterKey))
        assert [k.description for k in keys if k.description != "palette"][-1] == "Quit"
        assert max(k.region.right for k in keys) <= size[0]
        pane = app.screen.query_one(StatusPane)
        assert pane.query_one("#status-free", Static).display
        assert _clipped(pane) == []


async def test_tab_from_the_list_goes_to_the_tab_content() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        tabs = app.screen.query_one("#detail-tabs", TabbedContent)
        await pilot.press("tab")
        focused = app.focused
        assert focused is not None and app.screen.query_one(FileTree) in focused.ancestors
        await pilot.press("right")  # opens or closes a folder: never switches tabs
        assert tabs.active == "tab-files"
        await pilot.press("shift+tab")
        assert app.focused is table(app)
        # A tab picked by key keeps the focus in the detail area.
        await pilot.press("tab", "5")
        await pilot.pause()
        assert tabs.active == "tab-info"
        assert app.focused is not None and app.focused.id == "info"
