"""The Pieces tab: a map of every piece (or group of pieces) on Textual's Line API.

Layout: line 0 is a legend; the map fills the lines below, one character cell
per piece while the pieces fit, otherwise one cell per *group* of adjacent
pieces.  Groups are spread evenly over the available cells (cell ``i`` covers
pieces ``[i*n//cells, (i+1)*n//cells)``), so group sizes differ by at most one
and the whole area is used.

A group's state follows one rule, chosen so the map shows where things
*happen* and what is still *wanted*:

1. all pieces alike -> that state;
2. any CHECKING -> CHECKING; else any PARTIAL -> PARTIAL;
3. verified pieces mixed with wanted missing ones (MISSING or HIGH) -> PARTIAL
   (the group is partly done);
4. HAVE mixed only with SKIPPED -> HAVE (everything wanted is there);
5. otherwise HIGH before MISSING before SKIPPED.

A group's availability is its *minimum* (the rarest piece decides how safe
the group is).  Brightness grows with availability: 0 peers is dim, 5 or more
is full colour.  The cell holding the first piece of a file (other than the
first file) shows a thin bar on its left edge.

Only changed lines repaint: the widget keeps each line's cells, compares
them on :meth:`PieceMap.update_data` and calls ``refresh(Region)`` for the
lines that differ; a resize recomputes the grouping and repaints everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.color import Color
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from tui.model import PieceCell, PieceMap

__all__ = [
    "AVAILABILITY_SHADES",
    "MapGrid",
    "PieceMapWidget",
    "availability_level",
    "cell_of_piece",
    "cell_range",
    "group_cells",
    "group_state",
    "map_grid",
]

#: Brightness (blend factor over the background) per availability level 0..4.
AVAILABILITY_SHADES = (0.35, 0.55, 0.7, 0.85, 1.0)

_BOUNDARY = "▏"
_STATE_NAMES = {
    PieceCell.MISSING: "missing",
    PieceCell.PARTIAL: "partial",
    PieceCell.CHECKING: "checking",
    PieceCell.HAVE: "have",
    PieceCell.HIGH: "high",
    PieceCell.SKIPPED: "skipped",
}
_LEGEND_ORDER = (
    PieceCell.HAVE,
    PieceCell.PARTIAL,
    PieceCell.MISSING,
    PieceCell.HIGH,
    PieceCell.CHECKING,
    PieceCell.SKIPPED,
)


# --- pure grouping math ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapGrid:
    """How ``pieces`` pieces are laid out: ``cells`` cells, ``width`` per line, ``rows`` lines."""

    pieces: int
    cells: int
    width: int
    rows: int

    @property
    def grouped(self) -> bool:
        return self.cells < self.pieces

    @property
    def max_group(self) -> int:
        """The largest number of pieces in one cell (groups differ by at most one)."""
        return 0 if self.cells == 0 else -(-self.pieces // self.cells)


def map_grid(pieces: int, width: int, height: int) -> MapGrid:
    """The layout of ``pieces`` in a ``width`` x ``height`` area (legend line excluded)."""
    width, height, pieces = max(0, width), max(0, height), max(0, pieces)
    cells = min(pieces, width * height)
    rows = 0 if width == 0 else -(-cells // width)
    return MapGrid(pieces, cells, width, rows)


def cell_range(cell: int, pieces: int, cells: int) -> tuple[int, int]:
    """Pieces ``[start, stop)`` shown by ``cell``."""
    return cell * pieces // cells, (cell + 1) * pieces // cells


def cell_of_piece(piece: int, pieces: int, cells: int) -> int:
    """The cell whose range holds ``piece`` (inverse of :func:`cell_range`)."""
    return ((piece + 1) * cells - 1) // pieces


def group_state(states: bytes) -> PieceCell:
    """The state one cell shows for the pieces it stands for (rule in the module docstring)."""
    present = set(states)
    if not present:
        return PieceCell.MISSING
    if len(present) == 1:
        return PieceCell(present.pop())
    if PieceCell.CHECKING in present:
        return PieceCell.CHECKING
    if PieceCell.PARTIAL in present:
        return PieceCell.PARTIAL
    if PieceCell.HAVE in present:
        wanted = PieceCell.MISSING in present or PieceCell.HIGH in present
        return PieceCell.PARTIAL if wanted else PieceCell.HAVE
    if PieceCell.HIGH in present:
        return PieceCell.HIGH
    return PieceCell.MISSING if PieceCell.MISSING in present else PieceCell.SKIPPED


def availability_level(copies: int) -> int:
    """0, 1, 2, 3-4, 5+ peers -> shading level 0..4."""
    if copies <= 2:
        return max(0, copies)
    return 3 if copies <= 4 else 4


#: One drawn cell: (state, availability level, starts a file).
Cell = tuple[PieceCell, int, bool]


def group_cells(pm: PieceMap, cells: int) -> list[Cell]:
    """What each of ``cells`` cells shows for piece map ``pm``."""
    n = pm.num_pieces
    if n == 0 or cells <= 0:
        return []
    cells = min(cells, n)
    states, avail = pm.cells, pm.availability
    if len(avail) < n:
        avail = avail + bytes(n - len(avail))
    starts = {cell_of_piece(s, n, cells) for s in pm.file_starts if 0 < s < n}
    out: list[Cell] = []
    if cells == n:
        for i in range(n):
            out.append((PieceCell(states[i]), availability_level(avail[i]), i in starts))
        return out
    for i in range(cells):
        a, b = i * n // cells, (i + 1) * n // cells
        out.append((group_state(states[a:b]), availability_level(min(avail[a:b])), i in starts))
    return out


# --- the widget -------------------------------------------------------------------


class PieceMapWidget(Widget):
    """Piece map of the selected torrent; feed it with :meth:`update_data`."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "piece-map--missing",
        "piece-map--partial",
        "piece-map--checking",
        "piece-map--have",
        "piece-map--high",
        "piece-map--skipped",
        "piece-map--boundary",
        "piece-map--legend",
    }

    DEFAULT_CSS = """
    PieceMapWidget {
        height: 1fr;
        background: $surface;
        & > .piece-map--missing { background: #7a7a7a; }
        & > .piece-map--partial { background: #e0b400; }
        & > .piece-map--checking { background: #3c8dde; }
        & > .piece-map--have { background: #3fb950; }
        & > .piece-map--high { background: #d2539b; }
        & > .piece-map--skipped { background: #3a3a3a; }
        & > .piece-map--boundary { color: #ffffff; }
        & > .piece-map--legend { color: $text-muted; }
    }
    """

    def __init__(
        self, *, id: str | None = None, classes: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes, name=name)
        self._map: PieceMap | None = None
        self._grid = map_grid(0, 0, 0)
        self._lines: list[tuple[Cell, ...]] = []
        self._strip_cache: dict[int, Strip] = {}
        self._styles_table: dict[tuple[PieceCell, int, bool], Style] | None = None
        self.render_line_calls = 0  # for tests: how many lines were painted

    # --- data ---------------------------------------------------------------------

    @property
    def grid(self) -> MapGrid:
        return self._grid

    def update_data(self, pm: PieceMap | None) -> list[int]:
        """Show ``pm``; returns the map lines (0-based, legend excluded) that were repainted."""
        old = self._map
        self._map = pm
        if (
            old is not None
            and pm is not None
            and old.cells == pm.cells
            and old.availability == pm.availability
            and old.file_starts == pm.file_starts
        ):
            return []
        return self._relayout(force=old is None or pm is None or old.num_pieces != pm.num_pieces)

    def _relayout(self, force: bool) -> list[int]:
        width, height = self.size.width, max(0, self.size.height - 1)
        pm = self._map
        grid = map_grid(pm.num_pieces if pm is not None else 0, width, height)
        cells = group_cells(pm, grid.cells) if pm is not None else []
        lines = [tuple(cells[r * width : (r + 1) * width]) for r in range(grid.rows)]
        if force or grid != self._grid:
            self._grid, self._lines = grid, lines
            self._strip_cache.clear()
            self.refresh()
            return list(range(len(lines)))
        changed = [
            r
            for r in range(max(len(lines), len(self._lines)))
            if r >= len(lines) or r >= len(self._lines) or lines[r] != self._lines[r]
        ]
        self._lines = lines
        for r in changed:
            self._strip_cache.pop(r, None)
            self.refresh(Region(0, r + 1, width, 1))
        return changed

    def on_resize(self, event: events.Resize) -> None:
        self._relayout(force=True)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles_table = None
        if hasattr(self, "_strip_cache"):
            self._strip_cache.clear()

    # --- painting -----------------------------------------------------------------

    def _cell_style(self, state: PieceCell, level: int, boundary: bool) -> Style:
        table = self._styles_table
        if table is None:
            table = self._styles_table = {}
        key = (state, level, boundary)
        style = table.get(key)
        if style is None:
            base = self.background_colors[1]
            colour = self.get_component_styles(f"piece-map--{_STATE_NAMES[state]}").background
            shaded = base.blend(colour, AVAILABILITY_SHADES[level])
            fg: Color | None = None
            if boundary:
                fg = self.get_component_styles("piece-map--boundary").color
            style = Style(bgcolor=shaded.rich_color, color=None if fg is None else fg.rich_color)
            table[key] = style
        return style

    def _legend(self) -> Text:
        """Scale first (it changes with the data), then the colour key, most useful first."""
        text = Text(no_wrap=True, overflow="ellipsis")
        legend_style = self.get_component_rich_style("piece-map--legend")
        grid = self._grid
        if self._map is not None:
            scale = f"1 cell ≈ {grid.max_group} pieces" if grid.grouped else "1 cell = 1 piece"
            text.append(f"{grid.pieces:,} pieces, {scale} ", legend_style)
        for state in _LEGEND_ORDER:
            text.append(" ", legend_style)
            text.append(" ", self._cell_style(state, 4, False))
            text.append(f" {_STATE_NAMES[state]}", legend_style)
        text.append("  ", legend_style)
        text.append(_BOUNDARY, self._cell_style(PieceCell.MISSING, 4, True))
        text.append(" file  ", legend_style)
        for level in range(len(AVAILABILITY_SHADES)):
            text.append(" ", self._cell_style(PieceCell.HAVE, level, False))
        text.append(" 0..5+ peers", legend_style)
        return text

    def render_line(self, y: int) -> Strip:
        self.render_line_calls += 1
        width = self.size.width
        if y == 0:
            segments = list(self._legend().render(self.app.console))
            return Strip(segments).adjust_cell_length(width, self.rich_style)
        row = y - 1
        if row >= len(self._lines):
            return Strip.blank(width, self.rich_style)
        strip = self._strip_cache.get(row)
        if strip is None:
            strip = self._strip_cache[row] = self._render_row(self._lines[row], width)
        return strip

    def _render_row(self, cells: Sequence[Cell], width: int) -> Strip:
        segments: list[Segment] = []
        run_text: list[str] = []
        run_style: Style | None = None
        for state, level, boundary in cells:
            style = self._cell_style(state, level, boundary)
            char = _BOUNDARY if boundary else " "
            if style is not run_style and run_text:
                segments.append(Segment("".join(run_text), run_style))
                run_text = []
            run_style = style
            run_text.append(char)
        if run_text:
            segments.append(Segment("".join(run_text), run_style))
        return Strip(segments).adjust_cell_length(width, self.rich_style)

    # --- hover ----------------------------------------------------------------------

    def describe_cell(self, x: int, y: int) -> str | None:
        """What the cell under (x, y) stands for, e.g. ``"pieces 26-38: partial, 2 peers"``."""
        pm, grid = self._map, self._grid
        row = y - 1
        if pm is None or row < 0 or x < 0 or x >= grid.width:
            return None
        cell = row * grid.width + x
        if cell >= grid.cells:
            return None
        a, b = cell_range(cell, grid.pieces, grid.cells)
        state = group_state(pm.cells[a:b])
        copies = min(pm.availability[a:b]) if len(pm.availability) >= b else 0
        what = f"piece {a}" if b - a == 1 else f"pieces {a}-{b - 1}"
        return f"{what}: {_STATE_NAMES[state]}, {copies} peer{'s' if copies != 1 else ''}"

    def on_mouse_move(self, event: events.MouseMove) -> None:
        self.tooltip = self.describe_cell(event.x, event.y)
