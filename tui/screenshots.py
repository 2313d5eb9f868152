"""Write ``screenshots/*.svg`` with the app's own screenshot function.

``python -m tui.screenshots [DIR]`` runs the app headless on the
deterministic fake engine (fixed data, fixed clock, UTC) and saves one SVG
per view.  Run it again after a visual change; the README shows the files.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from core.config import ClientConfig

from .app import TorrentApp
from .fake_engine import FAKE_NOW, FakeEngine
from .settings import Settings, TuiSettings

SIZE = (130, 42)

Step = Callable[[Pilot[None]], Awaitable[None]]


async def _settle(pilot: Pilot[None]) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _keys(*keys: str) -> Step:
    async def run(pilot: Pilot[None]) -> None:
        await pilot.press(*keys)
        await _settle(pilot)

    return run


async def _add_dialog(pilot: Pilot[None]) -> None:
    await pilot.press("a")
    await pilot.pause()
    pilot.app.screen.query_one("#add-source", Input).value = (
        "magnet:?xt=urn:btih:" + "5e" * 20 + "&dn=indigo"
    )
    await pilot.press("enter")
    await _settle(pilot)
    await pilot.press("down", "down", "space", "down", "down", "space")
    await pilot.pause()


#: (file name, steps after start-up)
VIEWS: tuple[tuple[str, Step], ...] = (
    ("main-files", _keys("down", "down")),
    ("peers", _keys("down", "down", "2")),
    ("pieces", _keys("down", "down", "3")),
    ("trackers", _keys("down", "down", "4")),
    ("info", _keys("down", "down", "5")),
    ("add-torrent", _add_dialog),
    ("settings", _keys("comma")),
    ("help", _keys("question_mark")),
)


def _app() -> TorrentApp:
    engine = FakeEngine()
    engine.tick(3)
    settings = Settings(
        ClientConfig(download_dir=Path("~/Downloads")),
        TuiSettings(),
        Path("~/.config/pytorrent/config.toml"),
    )
    return TorrentApp(
        engine,
        settings=settings,
        clock=lambda: FAKE_NOW,
        refresh_hz=0,
        persist_settings=False,
    )


async def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, step in VIEWS:
        app = _app()
        async with app.run_test(size=SIZE) as pilot:
            await _settle(pilot)
            # A few refreshes so the sparklines have a history.
            for _ in range(12):
                assert isinstance(app.engine, FakeEngine)
                app.engine.tick()
                app.bridge.refresh()
                await pilot.pause()
            await step(pilot)
            path = directory / f"{name}.svg"
            app.save_screenshot(str(path.name), path=str(directory))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    os.environ["TZ"] = "UTC"
    time.tzset()
    directory = Path(args[0]) if args else Path("screenshots")
    for path in asyncio.run(write_all(directory)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
