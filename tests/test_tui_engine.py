"""The TUI's engine facade, settings, session and formatting, without Textual screens.

RealEngine runs against a real :class:`core.Client` on 127.0.0.1 with a
seeding client, so adding, priorities, pausing and session restore are
checked end to end on the engine the app uses.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from core.config import ClientConfig
from core.engine.client import Client
from core.errors import TorrentError
from core.stats import TorrentState
from core.types import PiecePriority
from tests.support.engine import loopback_config, make_torrent
from tui import format as fmt
from tui.engine import RealEngine, classify_source, files_of, priority_change
from tui.model import FileRow
from tui.session import Session, SessionEntry
from tui.settings import TuiSettings, dump_settings, load_settings, parse_settings

pytestmark = pytest.mark.timeout(60)

N = PiecePriority.NORMAL
S = PiecePriority.NONE
H = PiecePriority.HIGH


def _files(*spec: tuple[int, int, PiecePriority]) -> tuple[FileRow, ...]:
    """Files laid end to end with piece length 10: (size, index, priority)."""
    out = []
    offset = 0
    for size, index, prio in spec:
        out.append(
            FileRow(index, f"f{index}", size, 0, prio, offset // 10, (offset + size - 1) // 10)
        )
        offset += size
    return tuple(out)


def test_priority_change_keeps_boundary_pieces_of_wanted_neighbours() -> None:
    # f0: bytes 0-24 (pieces 0-2), f1: 25-54 (pieces 2-5), f2: 55-59 (piece 5).
    files = _files((25, 0, N), (30, 1, N), (5, 2, N))
    # Skipping f1 frees only pieces 3 and 4: 2 and 5 are shared with wanted files.
    assert priority_change(files, 10, 60, [1], S) == (2, 20)
    # Skipping f1 and f2 frees 3, 4 and 5 (the last piece is 10 bytes).
    assert priority_change(files, 10, 60, [1, 2], S) == (3, 30)
    # Raising f1 to high changes every piece it touches, boundaries included.
    assert priority_change(files, 10, 60, [1], H) == (4, 40)
    # No change, nothing touched.
    assert priority_change(files, 10, 60, [0], N) == (0, 0)


def test_priority_change_raising_next_to_a_skipped_file() -> None:
    files = _files((25, 0, S), (35, 1, S))
    assert priority_change(files, 10, 60, [1], N) == (4, 40)  # pieces 2-5, 2 shared with f0
    assert priority_change(files, 10, 58, [1], N) == (4, 38)  # a short last piece


def test_classify_source() -> None:
    assert classify_source("magnet:?xt=urn:btih:" + "a" * 40) == "magnet"
    assert classify_source(" https://example.org/x.torrent") == "url"
    assert classify_source("~/x.torrent") == "file"


def test_format_helpers() -> None:
    assert fmt.size(0) == "0 B"
    assert fmt.size(1536) == "1.50 KiB"
    assert fmt.size(5 << 30) == "5.00 GiB"
    assert fmt.rate(0.4) == "-"
    assert fmt.rate(2 << 20) == "2.00 MiB/s"
    assert fmt.eta(None) == "-" and fmt.eta(42) == "42s" and fmt.eta(3725) == "1h02m"
    assert fmt.percent(0.9999) == "99.9%" and fmt.percent(1.0) == "100%"
    assert len(fmt.bar(0.5, 8)) == 8 and fmt.bar(1.0, 4) == "████"
    assert fmt.limit(None) == "∞"
    assert fmt.parse_rate("") is None and fmt.parse_rate("0") is None
    assert fmt.parse_rate("500") == 500 * 1024
    assert fmt.parse_rate("1.5 MiB/s") == 3 << 19
    assert fmt.parse_rate("64k") == 64 * 1024
    for bad in ("fast", "-3", "5 parsecs", "nan"):
        with pytest.raises(ValueError):
            fmt.parse_rate(bad)


def test_settings_round_trip_and_bad_files(tmp_path: Path) -> None:
    client = ClientConfig(listen_port=6881, download_rate_limit=1 << 20)
    tui = TuiSettings(refresh_rate=2, theme="nord")
    assert parse_settings(dump_settings(client, tui)) == (client, tui)
    path = tmp_path / "config.toml"
    assert load_settings(path).problem is None  # missing: defaults, no complaint
    for text, needle in (
        ("listen_port = 99999\n", "listen_port"),
        ("not toml at all [", "not valid TOML"),
        ("[tui]\ntheme = 'hot-pink'\n", "theme"),
        ("[tui]\nrefresh_rate = 0\n", "refresh_rate"),
        ("[tui]\nwhatever = 1\n", "whatever"),
        ("bogus_setting = 1\n", "bogus_setting"),
    ):
        path.write_text(text)
        settings = load_settings(path)
        assert settings.problem is not None and needle in settings.problem, text
        assert settings.client == ClientConfig(data_dir=settings.client.data_dir)
        assert settings.tui == TuiSettings()
    path.write_bytes(b"\xff\xfe")
    assert "cannot read" in (load_settings(path).problem or "")


def test_session_round_trip_and_damage(tmp_path: Path) -> None:
    session = Session(tmp_path)
    entry = SessionEntry("ab" * 20, torrent_file="x.torrent", priorities={3: 0}, paused=True)
    session.save([entry])
    assert Session(tmp_path).load() == [entry]
    data = json.loads(session.path.read_text())
    data["torrents"].append({"key": "short"})
    data["torrents"].append({"key": "cd" * 20, "torrent_file": "../escape.torrent"})
    session.path.write_text(json.dumps(data))
    again = Session(tmp_path)
    assert again.load() == [entry]
    assert len(again.problems) == 2
    session.path.write_text("{broken")
    broken = Session(tmp_path)
    assert broken.load() == [] and "damaged" in broken.problems[0]
    assert (tmp_path / "session.json.bad").exists() and not session.path.exists()


async def _seeder(tmp_path: Path) -> tuple[Client, Path, int]:
    content = tmp_path / "seed-data"
    mi = make_torrent(
        content, {"album/a.bin": 70_000, "album/b.bin": 50_000, "album/c.bin": 30_000}, 16384
    )
    torrent_file = tmp_path / "album.torrent"
    torrent_file.write_bytes(mi.to_bytes())
    seeder = Client(loopback_config(tmp_path, "seeder"))
    await seeder.start()
    await seeder.add_metainfo(mi, download_dir=content, verify=True)
    return seeder, torrent_file, seeder.listen_port


async def test_real_engine_add_pick_pause_and_restore(tmp_path: Path) -> None:
    seeder, torrent_file, port = await _seeder(tmp_path)
    session_dir = tmp_path / "session"
    config = loopback_config(tmp_path, "leecher")
    engine = RealEngine(config, session=Session(session_dir))
    try:
        async with asyncio.timeout(30):
            await engine.start()
            files = await engine.fetch_metadata(str(torrent_file))
            assert [f.path for f in files] == ["a.bin", "b.bin", "c.bin"]
            skipped = files[1].index
            ih = await engine.add(
                str(torrent_file),
                file_priorities={skipped: PiecePriority.NONE},
                peers=[("127.0.0.1", port)],
            )
            details = engine.details(ih)
            assert details is not None and details.info is not None
            assert details.files[1].priority is PiecePriority.NONE
            assert (
                details.pieces is not None and details.pieces.num_pieces == details.info.num_pieces
            )
            # Raising b back would change its pieces but not the ones shared with a and c.
            pieces, nbytes = engine.preview_priorities(ih, [skipped], PiecePriority.NORMAL)
            b = files[1]
            assert pieces == b.last_piece - b.first_piece + 1 - 2 and nbytes > 0
            t = engine.client.torrent(ih)
            assert t is not None
            await t.wait_complete()
            rows = {r.info_hash: r for r in engine.torrents()}
            assert rows[ih].state is TorrentState.SEEDING
            # Progress and size count the wanted files (100%, as qBittorrent);
            # the Info tab keeps the whole torrent's figure too.
            assert rows[ih].progress == 1.0
            assert rows[ih].size == files[0].size + files[2].size == rows[ih].bytes_done
            done_details = engine.details(ih)
            assert done_details is not None and done_details.info is not None
            info = done_details.info
            assert info.wanted_progress == 1.0
            assert info.wanted_files == 2 and info.files == 3
            assert 0 < info.progress < 1 and info.size == sum(f.size for f in files)
            await engine.set_sequential(ih, True)
            await engine.pause(ih)
            status = engine.status()
            assert status.listen_port == engine.client.listen_port
            await engine.set_limits(1 << 20, None)
            assert engine.status().download_limit == 1 << 20
            await engine.set_torrent_limits(ih, 64 * 1024, None)
    finally:
        await engine.close()
    saved = Session(session_dir).load()
    assert len(saved) == 1 and saved[0].paused and saved[0].sequential
    assert saved[0].priorities == {skipped: int(PiecePriority.NONE)}
    # A new engine (a restart) restores the torrent, its priorities and its state.
    engine2 = RealEngine(loopback_config(tmp_path, "leecher"), session=Session(session_dir))
    try:
        async with asyncio.timeout(30):
            await engine2.start()
            assert engine2.problems == []
            (row,) = engine2.torrents()
            assert row.info_hash == ih and row.state is TorrentState.PAUSED
            d2 = engine2.details(ih)
            assert d2 is not None and d2.sequential
            # Per-torrent limits are session state: restored with the torrent.
            assert (d2.download_limit, d2.upload_limit) == (64 * 1024, None)
            assert d2.files[1].priority is PiecePriority.NONE
            await engine2.remove(ih, delete_data=True)
            assert engine2.torrents() == ()
            assert not (config.download_dir / "album" / "a.bin").exists()
    finally:
        await engine2.close()
        await seeder.close()
    assert Session(session_dir).load() == []


async def test_real_engine_bad_sources(tmp_path: Path) -> None:
    engine = RealEngine(loopback_config(tmp_path, "c"), session=None)
    try:
        await engine.start()
        with pytest.raises(TorrentError, match="cannot read"):
            await engine.add(str(tmp_path / "missing.torrent"))
        junk = tmp_path / "junk.torrent"
        junk.write_bytes(b"d4:infoi3ee")
        with pytest.raises(TorrentError, match="not a valid torrent"):
            await engine.fetch_metadata(str(junk))
        with pytest.raises(TorrentError, match="magnet"):
            await engine.add("magnet:?xt=urn:btih:nothex")
    finally:
        await engine.close()


def test_files_of_single_file_torrent(tmp_path: Path) -> None:
    mi = make_torrent(tmp_path, {"movie.mkv": 40_000}, 16384)
    (row,) = files_of(mi)
    assert row.path == "movie.mkv" and row.size == 40_000
    assert (row.first_piece, row.last_piece) == (0, 2)
