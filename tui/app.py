"""``TorrentApp``: the Textual application around an :class:`~tui.engine.Engine`.

The engine runs in the app's own asyncio loop.  It is started in a worker
after the first frame (so the UI paints at once), and every engine call an
action makes runs in a worker too: handlers only post work and return, so
the UI never freezes.  Errors from the engine become notifications, never
crashes.

Keys, footer, help screen and command palette all come from
:data:`tui.actions.ACTIONS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.worker import Worker

from core.config import ClientConfig
from core.errors import TorrentError
from core.events import StorageFailed, TorrentStateChanged
from core.stats import TorrentState
from core.types import InfoHash, PiecePriority

from .actions import ACTION_BY_NAME, ACTIONS
from .bridge import Bridge, EngineEvent, Refreshed
from .engine import Engine
from .screens.add import AddRequest, AddTorrentScreen
from .screens.confirm import ConfirmRemoveScreen
from .screens.help import HelpScreen
from .screens.limits import SpeedLimitScreen
from .screens.main import DETAIL_TABS, MainScreen
from .screens.settings import SettingsScreen
from .settings import Settings, TuiSettings, save_settings
from .widgets.torrent_table import COLUMN_TITLES, FILTERS

log = logging.getLogger(__name__)


class TorrentCommands(Provider):
    """The command palette: every action, filter, sort column and detail tab."""

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app = self.app
        assert isinstance(app, TorrentApp)
        out: list[tuple[str, str, Callable[[], Any]]] = []
        for a in ACTIONS:
            out.append((a.label, a.description, partial(app.run_action, a.name)))
        for name in FILTERS:
            out.append((f"Filter: {name}", f"Show {name} torrents", partial(app.set_filter, name)))
        for key, title in COLUMN_TITLES.items():
            out.append(
                (f"Sort by {title}", f"Sort the torrent list by {title}", partial(app.sort_by, key))
            )
        for pane, title, key in DETAIL_TABS:
            out.append((f"Show {title} tab", f"Detail tab {key}", partial(app.show_tab, pane)))
        return out

    async def discover(self) -> Hits:
        for label, help_text, callback in self._commands():
            yield DiscoveryHit(label, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, help_text, callback in self._commands():
            score = matcher.match(f"{label} {help_text}")
            if score > 0:
                yield Hit(score, matcher.highlight(label), callback, help=help_text)


class TorrentApp(App[None]):
    """The terminal client."""

    TITLE = "torrent-tui"
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere
    COMMANDS = App.COMMANDS | {TorrentCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(a.keys, a.name, a.label, show=a.footer, tooltip=a.description) for a in ACTIONS
    ]

    def __init__(
        self,
        engine: Engine,
        *,
        settings: Settings | None = None,
        sources: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        refresh_hz: float | None = None,
        persist_settings: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.settings = settings or Settings(ClientConfig(), TuiSettings(), Path("config.toml"))
        self.sources = tuple(sources)
        self.clock = clock
        self.persist_settings = persist_settings
        hz = self.settings.tui.refresh_rate if refresh_hz is None else refresh_hz
        self.bridge = Bridge(self, engine, refresh_hz=hz)
        self.engine_ready = False
        self.engine_error: str | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        self.theme = self.settings.tui.theme
        self.push_screen(MainScreen())
        if self.settings.problem:
            self.notify(self.settings.problem, title="Settings", severity="warning", timeout=20)
        self.run_worker(self._start_engine(), name="engine-start", exit_on_error=False)

    async def _start_engine(self) -> None:
        try:
            await self.engine.start()
        except (TorrentError, OSError) as exc:
            self.engine_error = str(exc)
            self.notify(
                f"The engine could not start: {exc}",
                title="Engine",
                severity="error",
                timeout=30,
            )
            return
        self.engine_ready = True
        self.bridge.start()
        for problem in getattr(self.engine, "problems", ()):
            self.notify(problem, title="Session", severity="warning", timeout=15)
        for source in self.sources:
            await self._add(AddRequest(source, None, {}))

    async def shutdown(self) -> None:
        """Stop the bridge and the engine (idempotent); the app then exits."""
        if self._closed:
            return
        self._closed = True
        await self.bridge.stop()
        try:
            await self.engine.close()
        except Exception:  # pragma: no cover - closing must not hang the exit
            log.exception("engine close failed")

    async def action_quit(self) -> None:
        await self.shutdown()
        self.exit()

    async def on_unmount(self) -> None:
        await self.shutdown()

    # ------------------------------------------------------------------ messages

    def _main(self) -> MainScreen:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        raise LookupError("no main screen")

    def on_refreshed(self, msg: Refreshed) -> None:
        try:
            main = self._main()
        except LookupError:
            return
        main.apply_refresh(msg)

    def on_engine_event(self, msg: EngineEvent) -> None:
        ev = msg.event
        if isinstance(ev, TorrentStateChanged) and ev.new is TorrentState.ERROR:
            self.notify(
                ev.error or "unknown error",
                title=self._torrent_name(ev.info_hash),
                severity="error",
            )
        elif isinstance(ev, StorageFailed):
            self.notify(
                ev.error, title=f"Disk: {self._torrent_name(ev.info_hash)}", severity="error"
            )

    def _torrent_name(self, ih: InfoHash) -> str:
        try:
            rows = self._main().rows
        except LookupError:
            rows = ()
        return next((r.name for r in rows if r.info_hash == ih), ih.hex()[:12])

    def select(self, ih: InfoHash | None) -> None:
        self.bridge.select(ih)

    # ------------------------------------------------------------------ engine calls

    def run_engine(self, what: str, call: Callable[[], Awaitable[object]]) -> Worker[None]:
        """Run an engine call in a worker; errors become a notification; refresh after."""

        async def job() -> None:
            try:
                await call()
            except (TorrentError, OSError, ValueError) as exc:
                self.notify(str(exc), title=f"{what} failed", severity="error", timeout=10)
            except Exception as exc:  # an engine bug: report it, keep the UI alive
                log.exception("%s failed", what)
                self.notify(
                    f"{type(exc).__name__}: {exc}", title=f"{what} failed", severity="error"
                )
            if self.engine_ready:
                self.bridge.refresh()

        return self.run_worker(job(), group="engine", exit_on_error=False)

    @property
    def selected(self) -> InfoHash | None:
        try:
            return self._main().selected
        except LookupError:
            return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Torrent actions only on the main screen, and only with a torrent selected."""
        spec = ACTION_BY_NAME.get(action)
        if spec is None or action in ("quit", "help", "command_palette"):
            return True
        if not isinstance(self.screen, MainScreen):
            return False
        if spec.torrent and self.selected is None:
            return None  # shown disabled
        return True

    def set_file_priorities(
        self, ih: InfoHash, indices: Iterable[int], prio: PiecePriority
    ) -> None:
        idx = tuple(indices)
        self.run_engine("Priority", lambda: self.engine.set_file_priorities(ih, idx, prio))

    def stream_file(self, ih: InfoHash, index: int) -> None:
        self.run_engine("Stream", lambda: self.engine.stream_file(ih, index))
        self.notify("Streaming: sequential, first and last pieces first", timeout=4)

    # ------------------------------------------------------------------ actions

    def action_add(self) -> None:
        download_dir = str(self.settings.client.download_dir)

        def done(result: AddRequest | None) -> None:
            if result is not None:
                self.run_engine("Add", partial(self._add, result))

        self.push_screen(AddTorrentScreen(self.engine, download_dir), done)

    async def _add(self, req: AddRequest) -> None:
        try:
            await self.engine.add(
                req.source, download_dir=req.download_dir, file_priorities=req.priorities or None
            )
        except (TorrentError, OSError) as exc:
            self.notify(str(exc), title="Add failed", severity="error", timeout=10)

    def action_pause_resume(self) -> None:
        ih = self.selected
        row = self._row(ih)
        if ih is None or row is None:
            return
        if row.state in (TorrentState.PAUSED, TorrentState.ERROR):
            self.run_engine("Resume", lambda: self.engine.resume(ih))
        else:
            self.run_engine("Pause", lambda: self.engine.pause(ih))

    def _row(self, ih: InfoHash | None) -> Any:
        if ih is None:
            return None
        try:
            return next((r for r in self._main().rows if r.info_hash == ih), None)
        except LookupError:
            return None

    def action_recheck(self) -> None:
        ih = self.selected
        if ih is not None:
            self.run_engine("Recheck", lambda: self.engine.recheck(ih))

    def action_remove(self) -> None:
        ih = self.selected
        row = self._row(ih)
        if ih is None or row is None:
            return

        def done(result: bool | None) -> None:
            if result is not None:
                self.run_engine("Remove", lambda: self.engine.remove(ih, result))

        self.push_screen(ConfirmRemoveScreen(row.name), done)

    def action_toggle_sequential(self) -> None:
        ih = self.selected
        if ih is None:
            return
        on = not self._details_flag(ih, "sequential")
        self.run_engine("Sequential", lambda: self.engine.set_sequential(ih, on))
        self.notify(f"Sequential download {'on' if on else 'off'}", timeout=3)

    def action_toggle_first_last(self) -> None:
        ih = self.selected
        if ih is None:
            return
        on = not self._details_flag(ih, "first_last")
        self.run_engine("First/last", lambda: self.engine.set_first_last(ih, on))
        self.notify(f"First and last pieces first {'on' if on else 'off'}", timeout=3)

    def _details_flag(self, ih: InfoHash, name: str) -> bool:
        d = self.engine.details(ih)
        return bool(getattr(d, name, False)) if d is not None else False

    def action_limits(self) -> None:
        """Global limits: the same two settings the Settings screen edits, saved the same way."""
        client = self.settings.client
        current = (client.download_rate_limit, client.upload_rate_limit)

        def done(result: tuple[int | None, int | None] | None) -> None:
            if result is None:
                return
            down, up = result
            new = replace(self.settings.client, download_rate_limit=down, upload_rate_limit=up)
            self.apply_settings(new, self.settings.tui, "Speed limits saved")

        self.push_screen(SpeedLimitScreen("Global speed limits", *current), done)

    def action_torrent_limits(self) -> None:
        ih = self.selected
        row = self._row(ih)
        if ih is None or row is None:
            return
        d = self.engine.details(ih)
        current = (d.download_limit, d.upload_limit) if d else (None, None)

        def done(result: tuple[int | None, int | None] | None) -> None:
            if result is not None:
                down, up = result
                self.run_engine("Limits", lambda: self.engine.set_torrent_limits(ih, down, up))

        self.push_screen(SpeedLimitScreen(f"Limits for {row.name}", *current), done)

    def action_cycle_filter(self) -> None:
        self._main().cycle_filter()

    def set_filter(self, name: str) -> None:
        self._main().set_filter(name)

    def action_search(self) -> None:
        self._main().open_search()

    def action_sort_next(self) -> None:
        self._main().sort_next()

    def action_sort_reverse(self) -> None:
        self._main().sort_next(reverse=True)

    def sort_by(self, column: str) -> None:
        self._main().query_one("#torrents").sort_by(column, False)  # type: ignore[attr-defined]

    def show_tab(self, pane: str) -> None:
        self._main().action_show_tab(pane)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_settings(self) -> None:
        self.push_screen(SettingsScreen(self.settings), self._settings_done)

    def _settings_done(self, result: tuple[ClientConfig, TuiSettings] | None) -> None:
        if result is not None:
            self.apply_settings(*result, "Settings saved")

    def apply_settings(self, client: ClientConfig, tui: TuiSettings, message: str) -> None:
        """Make ``client``/``tui`` the settings: apply what can be applied live, save the file.

        The one way settings change, whether from the Settings screen or the
        ``l`` limits dialog, so the file, the screen and the engine never
        disagree about a value.
        """
        old = self.settings
        self.settings = replace(old, client=client, tui=tui, problem=None)
        # Live: limits, connection policy, refresh rate, theme.  The rest
        # applies on the next start.
        policy = (client.encryption, client.utp, client.tcp)
        if policy != (old.client.encryption, old.client.utp, old.client.tcp):
            encryption, utp, tcp = policy
            self.run_engine(
                "Connections",
                lambda: self.engine.set_connection_policy(encryption=encryption, utp=utp, tcp=tcp),
            )
        if (client.download_rate_limit, client.upload_rate_limit) != (
            old.client.download_rate_limit,
            old.client.upload_rate_limit,
        ):
            down, up = client.download_rate_limit, client.upload_rate_limit
            self.run_engine("Limits", lambda: self.engine.set_limits(down, up))
        if tui.refresh_rate != old.tui.refresh_rate and self.bridge.refresh_hz > 0:
            self.bridge.set_rate(tui.refresh_rate)
        if tui.theme != old.tui.theme:
            self.theme = tui.theme
        restart = [
            name
            for name in (
                "listen_port",
                "download_dir",
                "max_connections",
                "max_connections_per_torrent",
                "dht",
                "dht_bootstrap_nodes",
            )
            if getattr(client, name) != getattr(old.client, name)
        ]
        if self.persist_settings:
            self.run_engine("Save settings", partial(self._save_settings, client, tui))
        if restart:
            message += f"; {', '.join(restart)} apply after a restart"
        self.notify(message, timeout=5)

    async def _save_settings(self, client: ClientConfig, tui: TuiSettings) -> None:
        await asyncio.to_thread(save_settings, client, tui, self.settings.path)
