"""TUI refresh cost: 1,000 torrents, 200 peers on the selected one, refreshed at 4 Hz.

``python -m bench.tui [--seconds 15] [--tab peers]``

Runs the real app (headless driver, 160x50) on the scripted fake engine and
reports:

* **time to first painted frame**: from before the app object is built to
  the first frame written to the terminal that contains the torrent table's
  data (goal <= 1 s);
* **time per refresh**: for each 4 Hz refresh, the engine getters plus
  handling the ``Refreshed`` message (diffing 1,000 rows into the
  DataTable, the status pane, the visible detail tab); median and 95th
  percentile (goal: median <= 16 ms);

The headless driver does not write frames to a terminal, so the cost of the
terminal output itself (small: Textual sends only changed regions) is not
part of these figures.

The fake engine ticks before each refresh, so every downloading row's
progress, rate and ETA change every time, as in a busy session.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from textual.screen import Screen

from core.config import ClientConfig
from tui.app import TorrentApp
from tui.bridge import Refreshed
from tui.fake_engine import BASE_TIME, FakeEngine, FakeScript
from tui.screens.main import MainScreen
from tui.settings import Settings, TuiSettings

TABS = {"files": "1", "peers": "2", "pieces": "3", "trackers": "4", "info": "5"}


class BenchApp(TorrentApp):
    """The app, instrumented: times each refresh message and the first painted frame."""

    def __init__(self, *args: Any, t0: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.t0 = t0
        self.first_frame: float | None = None
        self.refresh_times: list[float] = []

    def on_refreshed(self, msg: Refreshed) -> None:
        start = time.perf_counter()
        super().on_refreshed(msg)
        self.refresh_times.append(time.perf_counter() - start + self.bridge.last_read_seconds)

    def _display(self, screen: Screen[Any], renderable: Any) -> None:
        super()._display(screen, renderable)
        end = time.perf_counter()
        if self.first_frame is None and isinstance(screen, MainScreen) and screen.refreshes:
            self.first_frame = end - self.t0


async def run(seconds: float, tab: str, hz: float) -> BenchApp:
    t0 = time.perf_counter()
    engine = FakeEngine(FakeScript(torrents=1000, peers=200))
    settings = Settings(ClientConfig(), TuiSettings(), ClientConfig().data_dir / "bench.toml")
    app = BenchApp(
        engine,
        settings=settings,
        clock=lambda: BASE_TIME,
        refresh_hz=0,
        persist_settings=False,
        t0=t0,
    )
    async with app.run_test(size=(160, 50)) as pilot:
        while app.first_frame is None:
            await asyncio.sleep(0.005)
        await pilot.press(TABS[tab])
        await pilot.pause()
        app.refresh_times.clear()
        period = 1.0 / hz
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            engine.tick()
            app.bridge.refresh()
            await asyncio.sleep(period)
    return app


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    median = statistics.median(values)
    return f"median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (n={len(values)})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--tab", choices=sorted(TABS), default="peers")
    p.add_argument("--hz", type=float, default=4.0)
    args = p.parse_args(argv)
    app = asyncio.run(run(args.seconds, args.tab, args.hz))
    first = app.first_frame
    print("1,000 torrents, 200 peers on the selected torrent, detail tab:", args.tab)
    print(f"first painted frame: {first * 1000:.0f} ms" if first else "first frame: n/a")
    print(f"refresh (getters + diff into widgets): {_ms(app.refresh_times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
