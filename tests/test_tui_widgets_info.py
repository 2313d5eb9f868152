"""InfoPane: the facts it lists, UTC dates, no repaint for equal data, clipboard keys."""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.app import App, ComposeResult

from tui.model import TorrentInfoView
from tui.widgets.info_pane import InfoPane, info_lines

MAGNET = (
    "magnet:?xt=urn:btih:" + "ab" * 20 + "&dn=debian-12.iso&tr=udp%3A%2F%2Ftracker.example%3A6969"
)
INFO = TorrentInfoView(
    name="debian-12.iso",
    info_hash_v1="ab" * 20,
    info_hash_v2=None,
    size=(628 << 20) + 12345,
    piece_length=256 << 10,
    num_pieces=2513,
    save_path="/home/user/Downloads",
    comment="Debian CD from cdimage.debian.org [official]",
    created_by="mktorrent 1.1",
    creation_date=1_700_000_000,
    private=False,
    magnet=MAGNET,
    # Two of three files wanted and done; the skipped one not started.
    bytes_done=(500 << 20) + 4096,
    wanted_size=(500 << 20) + 4096,
    wanted_done=(500 << 20) + 4096,
    files=3,
    wanted_files=2,
)


class InfoApp(App[None]):
    def __init__(self, info: TorrentInfoView | None = INFO) -> None:
        super().__init__()
        self.info = info
        self.copied: list[str] = []

    def compose(self) -> ComposeResult:
        yield InfoPane()

    def on_mount(self) -> None:
        pane = self.query_one(InfoPane)
        pane.update_data(self.info)
        pane.focus()

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)
        super().copy_to_clipboard(text)


def test_info_lines() -> None:
    lines = dict(info_lines(INFO))
    assert lines["Name"] == "debian-12.iso"
    assert lines["Info-hash v1"] == "ab" * 20 and lines["Info-hash v2"] == "-"
    assert lines["Size"] == "628 MiB (658,518,073 bytes)"
    assert lines["Pieces"] == "2,513 pieces of 256 KiB"
    # The wanted files are done (what the list shows); the whole torrent is not.
    assert lines["Progress"] == "100% of 500 MiB selected (2 of 3 files)"
    assert lines["Whole torrent"] == "79.6% (500 MiB of 628 MiB)"
    assert lines["Created on"] == "2023-11-14 22:13:20 UTC"
    assert lines["Private"] == "no"
    assert lines["Magnet"] == MAGNET
    private = dict(info_lines(dataclasses.replace(INFO, private=True, creation_date=None)))
    assert private["Private"].startswith("yes") and private["Created on"] == "-"
    huge = dict(info_lines(dataclasses.replace(INFO, creation_date=10**18)))
    assert "invalid" in huge["Created on"]


async def test_keys_copy_magnet_and_hash() -> None:
    app = InfoApp()
    async with app.run_test(size=(100, 16)) as pilot:
        await pilot.press("c", "i")
        await pilot.pause()
        assert app.copied == [MAGNET, "ab" * 20]


async def test_equal_data_does_not_repaint() -> None:
    app = InfoApp()
    async with app.run_test(size=(100, 16)):
        pane = app.query_one(InfoPane)
        assert pane.update_data(INFO) is False
        assert pane.update_data(dataclasses.replace(INFO, save_path="/mnt")) is True
        assert pane.update_data(None) is True
        assert pane.info is None


async def test_nothing_to_copy_without_metadata() -> None:
    app = InfoApp(info=None)
    async with app.run_test(size=(100, 16)) as pilot:
        await pilot.press("c", "i")
        assert app.copied == []


def test_snapshot_info_pane(snap_compare: Any) -> None:
    assert snap_compare(InfoApp(), terminal_size=(100, 16))
