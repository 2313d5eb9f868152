"""The main screen: filter bar, torrent table, detail tabs, status pane, footer.

Data flows down: the app hands each :class:`~tui.bridge.Refreshed` to
:meth:`MainScreen.apply_refresh`, which diffs it into the widgets (only the
visible detail tab is fed; a tab brought into view is fed at once from the
last refresh).  Requests flow up: widget messages (a file priority, a
stream request) are turned into app actions, which run engine calls in
workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, TabbedContent, TabPane, Tabs
from textual.widgets import Tab as TabWidget

from core.events import TorrentRow
from core.types import InfoHash, PiecePriority
from tui.bridge import Refreshed
from tui.model import GlobalStatus, TorrentDetails
from tui.widgets.file_tree import FileTree
from tui.widgets.info_pane import InfoPane
from tui.widgets.peer_table import PeerTable
from tui.widgets.piece_map import PieceMapWidget
from tui.widgets.status_pane import StatusPane
from tui.widgets.torrent_table import COLUMN_KEYS, FILTERS, TorrentTable
from tui.widgets.tracker_table import TrackerTable

if TYPE_CHECKING:
    from tui.engine import Engine


@runtime_checkable
class MainScreenHost(Protocol):
    """What the main screen asks of the app that shows it (``tui.app.TorrentApp``).

    A seam, so the screen never imports the app (which imports the screen):
    the engine for read-only previews, the wall clock, and three actions.
    """

    engine: Engine
    clock: Callable[[], float]

    def select(self, ih: InfoHash | None) -> None: ...

    def set_file_priorities(
        self, ih: InfoHash, indices: Iterable[int], prio: PiecePriority
    ) -> None: ...

    def stream_file(self, ih: InfoHash, index: int) -> None: ...


#: Detail tabs: (pane id, title, key that shows it).
DETAIL_TABS = (
    ("tab-files", "Files", "1"),
    ("tab-peers", "Peers", "2"),
    ("tab-pieces", "Pieces", "3"),
    ("tab-trackers", "Trackers", "4"),
    ("tab-info", "Info", "5"),
)

#: Narrowest terminal whose footer fits every key in the roomy style, with the palette hint.
WIDE_FOOTER = 120


class MainScreen(Screen[None]):
    """The one screen people live in (see the module docstring)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(key, f"show_tab('{pane}')", title, show=False)
            for pane, title, key in DETAIL_TABS
        ),
        Binding("escape", "clear_search", "Clear search", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="main")
        self.rows: tuple[TorrentRow, ...] = ()
        self.status: GlobalStatus | None = None
        self.details: TorrentDetails | None = None
        #: Seconds the last apply_refresh took (the bench reads it).
        self.last_apply_seconds = 0.0
        self.refreshes = 0

    @property
    def tapp(self) -> MainScreenHost:
        app = self.app
        assert isinstance(app, MainScreenHost)
        return app

    def compose(self) -> ComposeResult:
        with Horizontal(id="top-bar"):
            yield Tabs(
                *(TabWidget(name.capitalize(), id=f"filter-{name}") for name in FILTERS),
                id="filters",
            )
            yield Label("", id="sort-label")
        yield Input(placeholder="search names (esc clears)", id="search")
        yield TorrentTable(id="torrents")
        with Vertical(id="detail"), TabbedContent(id="detail-tabs", initial="tab-files"):
            with TabPane("Files", id="tab-files"):
                yield FileTree(id="files")
            with TabPane("Peers", id="tab-peers"):
                yield PeerTable(id="peers")
            with TabPane("Pieces", id="tab-pieces"):
                yield PieceMapWidget(id="pieces")
            with TabPane("Trackers", id="tab-trackers"):
                yield TrackerTable(id="trackers")
            with TabPane("Info", id="tab-info"):
                yield InfoPane(id="info")
        yield StatusPane(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#search", Input).display = False
        # Tab moves between the list and the content of the detail tab, as in
        # qBittorrent: a tab strip with focus would take the arrow keys (Right
        # switching tabs instead of opening a folder).  Strips are switched
        # with 1-5, f and the mouse instead.
        for strip in self.query(Tabs):
            strip.can_focus = False
        self.query_one(TorrentTable).focus()
        self._show_sort()

    def on_resize(self) -> None:
        """Narrow terminals get the compact footer without the palette hint (ctrl+p still works)."""
        footer = self.query_one(Footer)
        footer.compact = self.size.width < WIDE_FOOTER
        footer.show_command_palette = self.size.width >= WIDE_FOOTER

    # ------------------------------------------------------------------ data in

    def apply_refresh(self, msg: Refreshed) -> None:
        # A refresh queued before shutdown may arrive after the widgets are gone.
        if not self.is_mounted:
            return
        try:
            self._apply_refresh(msg)
        except NoMatches:
            return

    def _apply_refresh(self, msg: Refreshed) -> None:
        start = time.perf_counter()
        self.rows = msg.rows
        self.status = msg.status
        table = self.query_one(TorrentTable)
        table.update_rows(msg.rows)
        self.query_one(StatusPane).update_status(msg.status)
        selected = table.selected
        if msg.details is not None and msg.details.info_hash == selected:
            self.details = msg.details
        elif selected is None:
            self.details = None
        self._feed_active_tab()
        self.refreshes += 1
        self.last_apply_seconds = time.perf_counter() - start

    def _feed_active_tab(self) -> None:
        d = self.details
        active = self.query_one("#detail-tabs", TabbedContent).active
        if active == "tab-files":
            self.query_one(FileTree).update_data(d.files if d else ())
        elif active == "tab-peers":
            self.query_one(PeerTable).update_data(d.peers if d else ())
        elif active == "tab-pieces":
            self.query_one(PieceMapWidget).update_data(d.pieces if d else None)
        elif active == "tab-trackers":
            self.query_one(TrackerTable).update_data(d.trackers if d else (), self.tapp.clock())
        elif active == "tab-info":
            self.query_one(InfoPane).update_data(d.info if d else None)

    @on(TabbedContent.TabActivated, "#detail-tabs")
    def _tab_changed(self) -> None:
        self._feed_active_tab()

    @on(TorrentTable.SelectionChanged)
    def _selection_changed(self, event: TorrentTable.SelectionChanged) -> None:
        if self.details is not None and self.details.info_hash != event.info_hash:
            self.details = None
        self.tapp.select(event.info_hash)

    @property
    def selected(self) -> InfoHash | None:
        return self.query_one(TorrentTable).selected

    # ------------------------------------------------------------------ filter, search, sort

    @on(Tabs.TabActivated, "#filters")
    def _filter_changed(self, event: Tabs.TabActivated) -> None:
        tab_id = event.tab.id or "filter-all"
        self.query_one(TorrentTable).set_filter(state_filter=tab_id.removeprefix("filter-"))

    def cycle_filter(self) -> None:
        table = self.query_one(TorrentTable)
        nxt = FILTERS[(FILTERS.index(table.state_filter) + 1) % len(FILTERS)]
        self.set_filter(nxt)

    def set_filter(self, name: str) -> None:
        self.query_one("#filters", Tabs).active = f"filter-{name}"
        self.query_one(TorrentTable).set_filter(state_filter=name)

    def open_search(self) -> None:
        search = self.query_one("#search", Input)
        search.display = True
        search.focus()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.query_one(TorrentTable).set_filter(search=event.value)

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.query_one(TorrentTable).focus()

    def action_clear_search(self) -> None:
        search = self.query_one("#search", Input)
        if search.display:
            search.value = ""
            search.display = False
            self.query_one(TorrentTable).set_filter(search="")
            self.query_one(TorrentTable).focus()

    def sort_next(self, reverse: bool = False) -> None:
        table = self.query_one(TorrentTable)
        if reverse:
            table.sort_by(table.sort_column, not table.sort_reverse)
        else:
            # The next column on screen (the sort column may have dropped out).
            keys = COLUMN_KEYS
            start = keys.index(table.sort_column)
            for step in range(1, len(keys) + 1):
                key = keys[(start + step) % len(keys)]
                if key in table.shown_columns:
                    table.sort_by(key, False)
                    return

    @on(TorrentTable.SortChanged)
    def _sort_changed(self) -> None:
        self._show_sort()

    def _show_sort(self) -> None:
        table = self.query_one(TorrentTable)
        arrow = "▼" if table.sort_reverse else "▲"
        self.query_one("#sort-label", Label).update(f"sort: {table.sort_column} {arrow}")

    def action_show_tab(self, pane: str) -> None:
        tabs = self.query_one("#detail-tabs", TabbedContent)
        focused = self.focused
        in_detail = focused is not None and tabs in focused.ancestors
        tabs.active = pane
        if in_detail:
            # Focus was in the old tab's content: keep it in the detail area.
            self.focus_detail()

    def focus_detail(self) -> None:
        """Focus the active detail tab's content (if it takes focus; else leave focus alone)."""
        tabs = self.query_one("#detail-tabs", TabbedContent)
        active = tabs.active_pane
        if active is None:
            return
        for widget in active.query("*"):
            if widget.focusable:
                widget.focus()
                return

    # ------------------------------------------------------------------ widget requests

    @on(FileTree.PriorityPreviewRequested)
    def _preview(self, event: FileTree.PriorityPreviewRequested) -> None:
        ih = self.selected
        if ih is None:
            return
        pieces, nbytes = self.tapp.engine.preview_priorities(ih, event.indices, event.priority)
        self.query_one(FileTree).apply_preview(pieces, nbytes)

    @on(FileTree.PriorityRequested)
    def _set_priority(self, event: FileTree.PriorityRequested) -> None:
        ih = self.selected
        if ih is not None:
            self.tapp.set_file_priorities(ih, event.indices, event.priority)

    @on(FileTree.StreamRequested)
    def _stream(self, event: FileTree.StreamRequested) -> None:
        ih = self.selected
        if ih is not None:
            self.tapp.stream_file(ih, event.index)
