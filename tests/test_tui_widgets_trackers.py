"""TrackerTable: status rules, relative times from a passed-in clock, keyed diffing."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult

from core.tracker.types import TrackerStatus
from tui.widgets.tracker_table import TrackerTable, relative_time, tracker_state

NOW = 1_700_000_000.0


def trackers() -> list[TrackerStatus]:
    return [
        TrackerStatus(
            "http://bad.example/announce",
            1,
            last_announce=NOW - 110,
            last_result="error",
            next_announce=NOW + 290,
            last_error="connection refused",
            failures=3,
        ),
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
        TrackerStatus("http://new.example/announce", 2),
        TrackerStatus(
            "https://busy.example/announce",
            2,
            last_announce=NOW - 1800,
            last_result="ok",
            next_announce=NOW - 1,
            warning="slow down",
        ),
    ]


class TrackersApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TrackerTable()

    def on_mount(self) -> None:
        self.query_one(TrackerTable).update_data(trackers(), NOW)


def test_status_rules() -> None:
    t = trackers()
    assert [tracker_state(x, NOW) for x in t] == ["error", "working", "not contacted", "updating"]
    # once the next announce time passes, a working tracker reads "updating"
    assert tracker_state(t[1], NOW + 29 * 60) == "updating"


def test_relative_times() -> None:
    assert relative_time(NOW - 12, NOW) == "12s ago"
    assert relative_time(NOW + 29 * 60, NOW) == "in 29m00s"
    assert relative_time(NOW + 7200, NOW) == "in 2h00m"
    assert relative_time(NOW + 0.5, NOW) == "now"
    assert relative_time(None, NOW) == "-"


async def test_rows_in_tier_order_and_cells_diffed() -> None:
    app = TrackersApp()
    async with app.run_test(size=(140, 8)):
        table = app.query_one(TrackerTable)
        assert table.row_keys[0] == "udp://tracker.example:6969/announce"
        assert table.row_keys[1] == "http://bad.example/announce"
        cell = table.get_cell("http://bad.example/announce", "status")
        assert str(cell) == "error (3x)"
        assert str(table.get_cell("http://bad.example/announce", "error")) == "connection refused"
        assert str(table.get_cell("https://busy.example/announce", "error")) == "slow down"
        assert table.update_data(trackers(), NOW) == 0
        # Ten seconds later only the relative times move (last/next of the 3 contacted trackers).
        assert table.update_data(trackers(), NOW + 10) == 6
        assert str(table.get_cell("udp://tracker.example:6969/announce", "last")) == "22s ago"
        table.update_data(trackers()[:2], NOW + 10)
        assert table.row_count == 2


def test_snapshot_tracker_table(snap_compare: Any) -> None:
    assert snap_compare(TrackersApp(), terminal_size=(140, 7))
