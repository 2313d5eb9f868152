"""The main torrent list: a DataTable keyed by info-hash, diffed cell by cell.

Rebuilding a DataTable costs 0.4-1.5 s at a few thousand rows, so a refresh
never clears it.  Each row remembers the :class:`TorrentRow` it shows; a
refresh compares rows (cheap: frozen dataclasses), formats only the rows
that changed and calls ``update_cell`` only for cells whose text changed,
all inside one ``batch_update``.  Filter and search add or remove rows by
key; sorting reorders rows in place, keeping the cursor on the same torrent.

Cells are :class:`SortCell` values: rich ``Text`` (names are never parsed as
markup) carrying the raw value to sort by, so "1.5 GiB" sorts after
"900 MiB".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist

from core.events import TorrentRow
from core.stats import TorrentState
from core.types import InfoHash
from tui import format as fmt

#: (column key, header, width) in display order.
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("name", "Name", None),
    ("size", "Size", 8),
    ("progress", "Progress", 14),
    ("state", "State", 11),
    ("down", "Down", 10),
    ("up", "Up", 10),
    ("eta", "ETA", 6),
    ("peers", "Peers", 5),
    ("ratio", "Ratio", 5),
    ("added", "Added", 10),
)
#: Narrowest the name column gets: other columns drop out before it shrinks below this.
MIN_NAME_WIDTH = 28
COLUMN_KEYS = tuple(c[0] for c in COLUMNS)
COLUMN_TITLES = {c[0]: c[1] for c in COLUMNS}
COLUMN_WIDTHS = {c[0]: c[2] or 0 for c in COLUMNS}
#: What gives way, in order, when the table is too narrow for every column:
#: whole columns, or ``"bar"``, the progress bar (the percentage stays).
#: The name and the progress percentage always stay.
#: Added goes after Ratio because the list is sorted by it until the user says otherwise.
DROP_ORDER = ("ratio", "added", "bar", "peers", "size", "up", "eta", "down", "state")
#: Width of the progress column without its bar: its header's ("99.9%" is shorter).
COMPACT_PROGRESS_WIDTH = len(COLUMN_TITLES["progress"])

#: Filters offered by the state filter, in cycling order.
FILTERS = ("all", "downloading", "seeding", "paused", "error")

_FILTER_STATES: dict[str, frozenset[TorrentState]] = {
    "downloading": frozenset(
        {TorrentState.DOWNLOADING, TorrentState.FETCHING_METADATA, TorrentState.CHECKING}
    ),
    "seeding": frozenset({TorrentState.SEEDING}),
    "paused": frozenset({TorrentState.PAUSED}),
    "error": frozenset({TorrentState.ERROR}),
}

_STATE_STYLES = {
    TorrentState.DOWNLOADING: "bold $accent",
    TorrentState.SEEDING: "bold $success",
    TorrentState.PAUSED: "$text-muted",
    TorrentState.ERROR: "bold $error",
    TorrentState.CHECKING: "$warning",
    TorrentState.FETCHING_METADATA: "$warning",
}
_PROGRESS_BAR_WIDTH = 8


class SortCell(Text):
    """A table cell: its text plus the raw value that column sorts by."""

    def __init__(
        self, text: str, sort_key: Any, *, style: str = "", justify: Any = None, row_key: str = ""
    ) -> None:
        super().__init__(text, style=style, justify=justify, no_wrap=True, end="")
        self.sort_key = sort_key
        self.row_key = row_key


#: What each column sorts by, read from the raw row (never from formatted text).
SORT_VALUES: dict[str, Callable[[TorrentRow], Any]] = {
    "name": lambda r: r.name.lower(),
    "size": lambda r: r.size,
    "progress": lambda r: r.progress,
    "state": lambda r: r.state.value,
    "down": lambda r: r.down_rate,
    "up": lambda r: r.up_rate,
    "eta": lambda r: r.eta if r.eta is not None else float("inf"),
    "peers": lambda r: (r.peers, r.seeds),
    "ratio": lambda r: r.ratio,
    "added": lambda r: r.added_time,
}


def row_key(ih: InfoHash) -> str:
    return ih.hex() if ih.v1 is not None else (ih.v2 or b"").hex()


def matches(row: TorrentRow, state_filter: str, search: str) -> bool:
    """Whether ``row`` is shown under a state filter and a search text (case-insensitive)."""
    states = _FILTER_STATES.get(state_filter)
    if states is not None and row.state not in states:
        return False
    return not search or search.lower() in row.name.lower()


def fit_columns(width: int, cell_padding: int = 1) -> tuple[tuple[str, ...], bool]:
    """The columns that fit in ``width`` cells, in display order, and whether the progress bar does.

    Drops by :data:`DROP_ORDER` until the name gets at least
    :data:`MIN_NAME_WIDTH`; the name takes whatever is left.  Pure, for tests.
    """
    keep = set(COLUMN_KEYS)
    bar = True

    def needed() -> int:
        total = MIN_NAME_WIDTH + 2 * cell_padding
        for key in keep - {"name"}:
            w = COLUMN_WIDTHS[key]
            if key == "progress" and not bar:
                w = COMPACT_PROGRESS_WIDTH
            total += w + 2 * cell_padding
        return total

    for what in DROP_ORDER:
        if needed() <= width:
            break
        if what == "bar":
            bar = False
        else:
            keep.discard(what)
    return tuple(k for k in COLUMN_KEYS if k in keep), bar


def _cells(row: TorrentRow, styles: dict[TorrentState, str], bar: bool) -> dict[str, SortCell]:
    """Every cell of one row (the name cell knows its row key, for sorting)."""
    if bar:
        progress = fmt.bar(row.progress, _PROGRESS_BAR_WIDTH) + " " + fmt.percent(row.progress)
    else:
        progress = fmt.percent(row.progress)
    return {
        "name": SortCell(row.name, row.name.lower(), row_key=row_key(row.info_hash)),
        "size": SortCell(fmt.size(row.size), row.size, justify="right"),
        "progress": SortCell(progress, row.progress, justify=None if bar else "right"),
        "state": SortCell(fmt.state(row.state), row.state.value, style=styles[row.state]),
        "down": SortCell(fmt.rate(row.down_rate), row.down_rate, justify="right"),
        "up": SortCell(fmt.rate(row.up_rate), row.up_rate, justify="right"),
        "eta": SortCell(
            fmt.eta(row.eta), row.eta if row.eta is not None else float("inf"), justify="right"
        ),
        "peers": SortCell(f"{row.peers}/{row.seeds}", (row.peers, row.seeds), justify="right"),
        "ratio": SortCell(fmt.ratio(row.ratio), row.ratio, justify="right"),
        "added": SortCell(fmt.date(row.added_time)[:10], row.added_time),
    }


class TorrentTable(DataTable[Text]):
    """The torrent list (see the module docstring)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "Top", show=False),
        Binding("end", "scroll_bottom", "Bottom", show=False),
    ]

    class SelectionChanged(Message):
        """The highlighted torrent changed (``None``: the table is empty)."""

        def __init__(self, info_hash: InfoHash | None) -> None:
            super().__init__()
            self.info_hash = info_hash

    class SortChanged(Message):
        """The sort column or direction changed (by key or header click)."""

        def __init__(self, column: str, reverse: bool) -> None:
            super().__init__()
            self.column = column
            self.reverse = reverse

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._rows: dict[str, TorrentRow] = {}
        self._shown: dict[str, tuple[str, ...]] = {}  # key -> cell texts on screen
        self._styles: dict[TorrentState, str] = {}
        self.sort_column = "added"
        self.sort_reverse = False
        self.state_filter = "all"
        self.search = ""
        self._selected: str | None = None
        #: Rows whose data changed while scrolled out of view: formatted when shown.
        self._dirty: set[str] = set()
        #: The columns on screen (see :func:`fit_columns`) and whether progress has its bar.
        self.shown_columns: tuple[str, ...] = COLUMN_KEYS
        self.progress_bar = True

    def on_mount(self) -> None:
        for key, title, width in COLUMNS:
            self.add_column(title, key=key, width=width)
        self._styles = {s: self._resolve(style) for s, style in _STATE_STYLES.items()}
        self._update_headers()

    def on_resize(self) -> None:
        self._fit_columns()
        self._fit_name()

    def _fit_columns(self) -> None:
        """Show the columns that fit (see :func:`fit_columns`); rare, so it may rewrite cells."""
        available = self.size.width - self.styles.scrollbar_size_vertical
        keys, bar = fit_columns(available, self.cell_padding)
        if (keys, bar) == (self.shown_columns, self.progress_bar):
            return
        self.shown_columns, self.progress_bar = keys, bar
        with self.app.batch_update():
            for column_key in [k for k in self.columns if k.value != "name"]:
                self.remove_column(column_key)
            for column in keys[1:]:
                width = COLUMN_WIDTHS[column]
                if column == "progress" and not bar:
                    width = COMPACT_PROGRESS_WIDTH
                self.add_column(COLUMN_TITLES[column], key=column, width=width, default=Text(""))
            # Every row's new cells are written when it is next on screen.
            for row, texts in self._shown.items():
                self._shown[row] = (texts[0],) + ("\0",) * (len(keys) - 1)
            self._dirty.update(self._shown)
            self._flush_visible()
        self._update_headers()

    def _fit_name(self) -> None:
        """Give the name column whatever width the other columns leave (DataTable has no flex)."""
        others = [k for k in self.shown_columns if k != "name"]
        fixed = sum(COLUMN_WIDTHS[k] for k in others)
        if "progress" in others and not self.progress_bar:
            fixed += COMPACT_PROGRESS_WIDTH - COLUMN_WIDTHS["progress"]
        padding = 2 * self.cell_padding * len(self.shown_columns)
        scrollbar = self.styles.scrollbar_size_vertical
        width = max(MIN_NAME_WIDTH, self.size.width - fixed - padding - scrollbar)
        column = self.columns.get(ColumnKey("name"))
        if column is not None and (column.width != width or column.auto_width):
            column.width = width
            column.auto_width = False
            self._update_count += 1
            self._clear_caches()
            self._require_update_dimensions = True
            self.refresh()

    def _resolve(self, style: str) -> str:
        """Turn ``$variable`` colours into concrete ones for rich ``Text``."""
        variables = self.app.get_css_variables()
        parts = []
        for part in style.split():
            parts.append(variables.get(part[1:], "") if part.startswith("$") else part)
        return " ".join(p for p in parts if p)

    # ------------------------------------------------------------------ data

    @property
    def selected(self) -> InfoHash | None:
        key = self._selected
        return self._rows[key].info_hash if key is not None and key in self._rows else None

    @property
    def visible_keys(self) -> list[str]:
        """Row keys in display order."""
        return [str(r.key.value) for r in self.ordered_rows]

    def row_for(self, key: str) -> TorrentRow | None:
        return self._rows.get(key)

    def update_rows(self, rows: Iterable[TorrentRow]) -> int:
        """Show ``rows``; returns how many cells were rewritten.  Never rebuilds the table.

        Only rows on screen are formatted and written; a changed row out of
        view is marked dirty and formatted when it scrolls in (formatting,
        not the DataTable, is what costs at 1,000 busy rows).
        """
        fresh = {row_key(r.info_hash): r for r in rows}
        changed_cells = 0
        resort = False
        sort_value = SORT_VALUES[self.sort_column]
        with self.app.batch_update():
            for key in [k for k in self._shown if k not in fresh]:
                self._remove(key)
                resort = True
            visible = self._visible_keys()
            for key, row in fresh.items():
                old = self._rows.get(key)
                self._rows[key] = row
                wanted = matches(row, self.state_filter, self.search)
                if key not in self._shown:
                    if wanted:
                        self._add(key, row)
                        resort = True
                    continue
                if not wanted:
                    self._remove(key)
                    continue
                if old is row or old == row:
                    continue
                if old is None or sort_value(old) != sort_value(row):
                    resort = True
                if key in visible:
                    changed_cells += self._update(key, row)
                else:
                    self._dirty.add(key)
            for key in [k for k in self._rows if k not in fresh]:
                del self._rows[key]
                self._dirty.discard(key)
            if resort:
                self._sort()
                changed_cells += self._flush_visible()
        self._check_selection()
        return changed_cells

    def _visible_keys(self) -> set[str]:
        """Keys of the rows currently on screen (plus a small margin)."""
        if not self.row_count:
            return set()
        top = max(0, int(self.scroll_y) - 2)
        bottom = min(self.row_count, int(self.scroll_y) + self.size.height + 2)
        rows = self.ordered_rows
        return {str(rows[i].key.value) for i in range(top, bottom)}

    def _flush_visible(self) -> int:
        """Format the dirty rows that are now on screen."""
        if not self._dirty:
            return 0
        n = 0
        for key in self._visible_keys() & self._dirty:
            self._dirty.discard(key)
            row = self._rows.get(key)
            if row is not None and key in self._shown:
                n += self._update(key, row)
        return n

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._dirty:
            self._flush_visible()

    def _add(self, key: str, row: TorrentRow) -> None:
        cells = _cells(row, self._styles, self.progress_bar)
        columns = self.shown_columns
        self.add_row(*(cells[c] for c in columns), key=key)
        self._shown[key] = tuple(cells[c].plain for c in columns)

    def _remove(self, key: str) -> None:
        try:
            self.remove_row(key)
        except RowDoesNotExist:  # pragma: no cover
            pass
        self._shown.pop(key, None)
        self._dirty.discard(key)

    def _update(self, key: str, row: TorrentRow) -> int:
        cells = _cells(row, self._styles, self.progress_bar)
        before = self._shown[key]
        texts = []
        n = 0
        for i, col in enumerate(self.shown_columns):
            cell = cells[col]
            texts.append(cell.plain)
            if cell.plain != before[i]:
                try:
                    self.update_cell(key, col, cell)
                except CellDoesNotExist:  # pragma: no cover
                    continue
                n += 1
        self._shown[key] = tuple(texts)
        return n

    # ------------------------------------------------------------------ view

    def set_filter(self, state_filter: str | None = None, search: str | None = None) -> None:
        """Change the state filter and/or search text; adds and removes rows to match."""
        if state_filter is not None:
            self.state_filter = state_filter
        if search is not None:
            self.search = search
        with self.app.batch_update():
            for key, row in self._rows.items():
                visible = matches(row, self.state_filter, self.search)
                if visible and key not in self._shown:
                    self._add(key, row)
                elif not visible and key in self._shown:
                    self._remove(key)
            self._sort()
            self._flush_visible()
        self._check_selection()

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by ``column``; the same column again flips the order."""
        if column not in COLUMN_TITLES:
            raise ValueError(f"no column {column!r}")
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        with self.app.batch_update():
            self._sort()
            self._flush_visible()
        self._update_headers()
        self.post_message(self.SortChanged(column, reverse))

    def _update_headers(self) -> None:
        for key, column in self.columns.items():
            title = COLUMN_TITLES[str(key.value)]
            if key.value == self.sort_column:
                title += " ▼" if self.sort_reverse else " ▲"
            column.label = Text(title)
        self.refresh()

    def _sort(self) -> None:
        if not self.row_count:
            return
        keep = self._selected
        value = SORT_VALUES[self.sort_column]
        rows = self._rows
        # Sort by the raw rows (fresh even where cells are dirty), found
        # through the name cell's row key.
        self.sort("name", key=lambda cell: value(rows[cell.row_key]), reverse=self.sort_reverse)
        if keep is not None and keep in self._shown:
            index = self.get_row_index(keep)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._check_selection()

    def _check_selection(self) -> None:
        key: str | None = None
        if self.row_count:
            try:
                key = str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
            except CellDoesNotExist:
                key = None
        if key != self._selected:
            self._selected = key
            self.post_message(self.SelectionChanged(self.selected))
