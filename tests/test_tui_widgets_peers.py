"""PeerTable: flag letters, addresses, keyed diffing (only changed cells written), sorting."""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.app import App, ComposeResult

from core.events import PeerRow, PeerSource
from tui.widgets.peer_table import (
    FAIL_LEGEND,
    FLAG_LEGEND,
    QUEUE_LEGEND,
    PeerTable,
    fail_cell,
    format_address,
    peer_flags,
    queue_cell,
)


def peer(host: str, port: int = 6881, **kw: Any) -> PeerRow:
    base: dict[str, Any] = dict(
        address=(host, port),
        client="qBittorrent 4.6.2",
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


PEERS = (
    peer(
        "10.0.0.2",
        client="qBittorrent 4.6.2",
        encrypted=True,
        progress=1.0,
        down_rate=523_000,
        am_interested=True,
        peer_choking=False,
        requests_outstanding=12,
    ),
    peer(
        "2001:db8::7",
        51413,
        client="Transmission 4.0.5",
        source=PeerSource.PEX,
        transport="utp",
        progress=0.42,
        up_rate=81_000,
        am_choking=False,
        peer_interested=True,
        incoming=True,
    ),
    peer(
        "10.0.0.9",
        40000,
        client="",
        source=PeerSource.DHT,
        progress=0.0,
        am_interested=True,
        snubbed=True,
        hash_failures=2,
        on_parole=True,
    ),
    peer(
        "10.0.0.10",
        50000,
        client="libtorrent 2.0.9",
        source=PeerSource.INCOMING,
        progress=0.9,
        down_rate=1200,
        up_rate=64_000,
        am_choking=False,
        peer_choking=False,
        hash_failures=1,
    ),
)


class PeersApp(App[None]):
    def compose(self) -> ComposeResult:
        yield PeerTable()

    def on_mount(self) -> None:
        self.query_one(PeerTable).update_data(PEERS)


def test_flags_follow_the_letter_code() -> None:
    assert peer_flags(PEERS[0]) == "D E"
    assert peer_flags(PEERS[1]) == "U I P"
    assert peer_flags(PEERS[2]) == "d S"
    # unchoked both ways, nobody interested; source INCOMING counts as incoming
    assert peer_flags(PEERS[3]) == "K ? I"
    assert peer_flags(peer("1.2.3.4")) == ""
    assert peer_flags(peer("1.2.3.4", peer_interested=True)) == "u"
    for letter in "DdUuK?SIEP":
        assert f"\n{letter} " in "\n" + FLAG_LEGEND


def test_fail_column_counts_failed_pieces_and_flags_parole() -> None:
    assert [fail_cell(p) for p in PEERS] == ["", "", "2 P", "1"]
    assert fail_cell(peer("1.2.3.4", hash_failures=12, on_parole=True)) == "12 P"
    assert "P on parole" in FAIL_LEGEND


async def test_a_suspect_gets_its_fail_cell_updated_and_sorts_by_failures() -> None:
    app = PeersApp()
    async with app.run_test(size=(110, 10)) as pilot:
        table = app.query_one(PeerTable)
        assert "Fail:" in str(table.tooltip)
        # Its parole ends (good pieces): only the Fail cell changes.
        cleared = dataclasses.replace(PEERS[2], on_parole=False)
        assert table.update_data((PEERS[0], PEERS[1], cleared, PEERS[3])) == 1
        await pilot.pause()
        assert str(table.get_cell("10.0.0.9:40000", "fail")) == "2"
        table.sort_by("fail", reverse=True)
        assert table.row_keys[:2] == ("10.0.0.9:40000", "10.0.0.10:50000")


def test_addresses_bracket_ipv6() -> None:
    assert format_address(("10.0.0.2", 6881)) == "10.0.0.2:6881"
    assert format_address(("2001:db8::7", 51413)) == "[2001:db8::7]:51413"


async def test_a_row_update_writes_only_its_changed_cells() -> None:
    app = PeersApp()
    async with app.run_test(size=(110, 10)) as pilot:
        table = app.query_one(PeerTable)
        calls: list[tuple[str, str]] = []
        original = table.update_cell

        def spy(row: Any, col: Any, value: Any, **kw: Any) -> None:
            calls.append((str(row), str(col)))
            original(row, col, value, **kw)

        table.update_cell = spy  # type: ignore[method-assign]
        assert table.update_data(PEERS) == 0  # same data: nothing written
        changed = list(PEERS)
        changed[1] = dataclasses.replace(PEERS[1], up_rate=200_000, requests_outstanding=3)
        assert table.update_data(changed) == 2
        await pilot.pause()
        assert sorted(calls) == [("[2001:db8::7]:51413", "requests"), ("[2001:db8::7]:51413", "up")]
        assert str(table.get_cell("[2001:db8::7]:51413", "up")) == "195 KiB/s"
        assert str(table.get_cell("10.0.0.2:6881", "down")) == "511 KiB/s"
        assert table.row_count == 4


async def test_a_removed_peer_disappears_and_a_new_one_appears() -> None:
    app = PeersApp()
    async with app.run_test(size=(110, 10)) as pilot:
        table = app.query_one(PeerTable)
        newcomer = peer("192.168.1.5", 7000, client="Deluge 2.1")
        table.update_data((PEERS[0], PEERS[3], newcomer))
        await pilot.pause()
        assert table.row_keys == ("10.0.0.2:6881", "10.0.0.10:50000", "192.168.1.5:7000")
        assert str(table.get_cell("192.168.1.5:7000", "client")) == "Deluge 2.1"
        table.update_data(())
        assert table.row_count == 0


async def test_header_click_sorts_by_raw_value_and_keeps_sorting() -> None:
    app = PeersApp()
    async with app.run_test(size=(110, 10)) as pilot:
        table = app.query_one(PeerTable)
        table.sort_by("down", reverse=True)
        assert table.row_keys[:2] == ("10.0.0.2:6881", "10.0.0.10:50000")  # 511 KiB/s > 1.2 KiB/s
        # A rate change re-sorts.
        faster = dataclasses.replace(PEERS[3], down_rate=9_000_000)
        table.update_data((PEERS[0], PEERS[1], PEERS[2], faster))
        assert table.row_keys[0] == "10.0.0.10:50000"
        # Clicking the Progress header sorts ascending, clicking again reverses.
        table.sort_by(None)
        widths = {str(k.value): c.get_render_width(table) for k, c in table.columns.items()}
        keys = list(widths)
        x = sum(widths[k] for k in keys[: keys.index("progress")]) + 2
        await pilot.click(PeerTable, offset=(x, 0))
        await pilot.pause()
        assert table.row_keys[0] == "10.0.0.9:40000"  # 0 %
        assert table.row_keys[-1] == "10.0.0.2:6881"  # 100 %


def test_snapshot_peer_table(snap_compare: Any) -> None:
    assert snap_compare(PeersApp(), terminal_size=(120, 8))


def test_queue_column_shows_queued_requests_and_the_oldest_wait() -> None:
    assert queue_cell(peer("1.2.3.4")) == ""
    assert queue_cell(peer("1.2.3.4", requests_queued=12, oldest_request_wait=0.4)) == "12"
    assert queue_cell(peer("1.2.3.4", requests_queued=12, oldest_request_wait=45.3)) == "12 45s"
    assert "stuck upload" in QUEUE_LEGEND
