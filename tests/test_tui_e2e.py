"""End to end: the app, on the real engine, against the demo swarm, driven like a user.

Pilot presses the keys: ``a`` opens the add dialog, the .torrent path is
typed and submitted (the dialog lists its files), one file is unchecked,
"Add" is clicked.  The download then runs over TCP on 127.0.0.1 from the
demo's seeders (the bad peer among them) until the torrent table shows it
seeding.  On disk, the skipped file holds no data except the boundary piece
it shares with a wanted neighbour, and every other file matches the source
byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, SelectionList

from core.events import PieceHashFailed
from core.stats import TorrentState
from core.types import PiecePriority
from tui.app import TorrentApp
from tui.demo import DemoEngine
from tui.screens.add import AddTorrentScreen
from tui.screens.main import MainScreen
from tui.settings import Settings, TuiSettings
from tui.widgets.file_tree import FileTree

MOVIE = "Open Movie Project"


async def _until(pilot: Pilot[None], cond: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await pilot.pause(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(30)
async def test_add_skip_one_file_and_complete(tmp_path: Path) -> None:
    # Unlimited download: the test is about correctness, not the demo's pacing.
    engine = DemoEngine(tmp_path, add_torrents=False, download_rate_limit=None)
    settings = Settings(engine.config, TuiSettings(refresh_rate=10), tmp_path / "config.toml")
    app = TorrentApp(engine, settings=settings, persist_settings=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.engine_ready or app.engine_error is not None, 15, "start")
        assert app.engine_error is None
        demo = engine.demo
        assert demo is not None
        movie = demo.torrent(MOVIE)
        (skip,) = movie.skip
        info = movie.metainfo.info
        failures = engine.client.bus.subscribe(kinds=[PieceHashFailed])

        # The add dialog: type the path, submit to list the files.
        await pilot.press("a")
        await _until(pilot, lambda: isinstance(app.screen, AddTorrentScreen), 5, "the dialog")
        dialog = app.screen
        assert isinstance(dialog, AddTorrentScreen)
        dialog.query_one("#add-source", Input).value = str(movie.torrent_file)
        dialog.query_one("#add-source", Input).focus()
        await pilot.press("enter")
        picker = dialog.query_one("#add-files", SelectionList)
        await _until(pilot, lambda: picker.option_count == len(info.files), 5, "the file list")
        assert set(picker.selected) == set(range(len(info.files)))  # all wanted by default

        # Uncheck the "Making Of" with the keyboard, then click "Add".
        picker.focus()
        await pilot.pause()
        while picker.get_option_at_index(picker.highlighted or 0).value != skip:
            await pilot.press("down")
        await pilot.press("space")
        await pilot.pause()
        assert set(picker.selected) == set(range(len(info.files))) - {skip}
        await pilot.click("#add-ok")
        await _until(pilot, lambda: isinstance(app.screen, MainScreen), 5, "the dialog closing")

        # The torrent table shows it, then shows it seeding.
        main = app.screen
        assert isinstance(main, MainScreen)

        def row_state() -> TorrentState | None:
            rows = [r for r in main.rows if r.info_hash == movie.info_hash]
            return rows[0].state if rows else None

        await _until(pilot, lambda: row_state() is not None, 5, "the torrent row")
        await _until(pilot, lambda: row_state() is TorrentState.SEEDING, 20, "completion")
        # Only the demo's liar may be banned: honest seeders that shared its
        # pieces are not (trust and parole, core/engine/blame.py).
        bad_ip, bad_port = demo.bad_peer
        assert set(engine.client.banned) <= {f"{bad_ip}:{bad_port}"}, engine.client.banned

        # The Files tab (the new torrent is the selected one) shows the skip.
        tree = main.query_one(FileTree)
        await _until(pilot, lambda: len(tree.files) == len(info.files), 5, "the Files tab")
        shown = {f.index: f for f in tree.files}
        assert shown[skip].priority == PiecePriority.NONE
        for i, f in shown.items():
            if i != skip:
                assert f.bytes_done == f.size, f.path

        # On disk: the others verify; the skipped file has only shared boundary pieces.
        download = engine.config.download_dir
        for i, entry in enumerate(info.files):
            rel = Path(info.name, *entry.path)
            if i != skip:
                assert _sha256(download / rel) == _sha256(demo.content_dir / rel), rel
        entry = info.files[skip]
        pieces = info.file_pieces(skip)
        shared = {
            p
            for p in (pieces.start, pieces.stop - 1)
            if any(j != skip and p in info.file_pieces(j) for j in range(len(info.files)))
        }
        assert shared, "the demo's skipped file shares a boundary piece with a wanted file"
        t = engine.client.torrent(movie.info_hash)
        assert t is not None
        have = t.have_bitfield()
        assert {p for p in pieces if have[p]} == shared
        target = download / info.name / Path(*entry.path)
        source = (demo.content_dir / info.name / Path(*entry.path)).read_bytes()
        data = target.read_bytes() if target.exists() else b""
        pl = info.piece_length
        for p in pieces:
            lo = max(p * pl, entry.offset) - entry.offset
            hi = min((p + 1) * pl, entry.offset + entry.length) - entry.offset
            part = data[lo:hi]
            if p in shared:
                assert part == source[lo:hi], f"boundary piece {p} is wrong"
            else:
                assert part.count(0) == len(part), f"piece {p} of the skipped file was written"
        # Bytes fetched: the wanted files and the shared pieces, nothing more, once
        # the pieces that failed their hash check (the bad peer's) are taken out,
        # and the partial pieces started over to keep it apart while on parole.
        wasted = t.stats().bytes_discarded
        while (event := failures.get_nowait()) is not None:
            assert isinstance(event, PieceHashFailed)
            wasted += info.piece_size(event.piece)
        got = t.stats().bytes_read_useful_data - wasted
        wanted = info.length - entry.length
        assert wanted <= got <= sum(info.piece_size(p) for p in have.search(1))

        await pilot.press("q")
    assert not any(c._servers and c._servers[0].is_serving() for c in demo.seeders.values())
