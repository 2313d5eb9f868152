"""Piece map: grouping math (pure), group state rule, boundaries, shading, line-only repaints."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from textual.app import App, ComposeResult

from tui.model import PieceCell as C
from tui.model import PieceMap
from tui.widgets.piece_map import (
    AVAILABILITY_SHADES,
    PieceMapWidget,
    availability_level,
    cell_of_piece,
    cell_range,
    group_cells,
    group_state,
    map_grid,
)

# --- grouping math -----------------------------------------------------------------------


def test_100k_pieces_in_a_small_area_are_grouped_evenly() -> None:
    grid = map_grid(100_000, 80, 20)
    assert (grid.cells, grid.width, grid.rows) == (1600, 80, 20)
    assert grid.grouped and grid.max_group == 63  # 100000 / 1600 = 62.5
    sizes = [b - a for a, b in (cell_range(i, 100_000, 1600) for i in range(1600))]
    assert sum(sizes) == 100_000
    assert set(sizes) == {62, 63}
    # consecutive, no gaps, no overlap
    assert cell_range(0, 100_000, 1600)[0] == 0
    assert all(
        cell_range(i, 100_000, 1600)[1] == cell_range(i + 1, 100_000, 1600)[0] for i in range(1599)
    )


def test_few_pieces_get_one_cell_each_and_only_the_rows_they_need() -> None:
    grid = map_grid(250, 100, 30)
    assert (grid.cells, grid.rows, grid.grouped, grid.max_group) == (250, 3, False, 1)
    assert map_grid(0, 100, 30).rows == 0
    assert map_grid(10, 0, 0).cells == 0


@given(st.integers(1, 200_000), st.integers(1, 5_000))
def test_cell_of_piece_inverts_cell_range(pieces: int, capacity: int) -> None:
    cells = min(pieces, capacity)
    for piece in {0, pieces - 1, pieces // 2, pieces // 3}:
        cell = cell_of_piece(piece, pieces, cells)
        a, b = cell_range(cell, pieces, cells)
        assert a <= piece < b


def test_group_state_rule() -> None:
    g = lambda *s: group_state(bytes(s))  # noqa: E731
    assert g(C.HAVE, C.HAVE) is C.HAVE
    assert g(C.HAVE, C.CHECKING, C.PARTIAL) is C.CHECKING
    assert g(C.MISSING, C.PARTIAL) is C.PARTIAL
    assert g(C.HAVE, C.MISSING) is C.PARTIAL  # partly done
    assert g(C.HAVE, C.HIGH) is C.PARTIAL
    assert g(C.HAVE, C.SKIPPED) is C.HAVE  # all that is wanted is there
    assert g(C.MISSING, C.HIGH, C.SKIPPED) is C.HIGH
    assert g(C.MISSING, C.SKIPPED) is C.MISSING
    assert g(C.SKIPPED, C.SKIPPED) is C.SKIPPED


def test_availability_levels() -> None:
    assert [availability_level(a) for a in (0, 1, 2, 3, 4, 5, 255)] == [0, 1, 2, 3, 3, 4, 4]
    assert len(AVAILABILITY_SHADES) == 5 and list(AVAILABILITY_SHADES) == sorted(
        AVAILABILITY_SHADES
    )


def test_group_cells_marks_file_starts_and_takes_minimum_availability() -> None:
    n = 100_000
    states = bytearray([C.HAVE]) * n
    states[50_000] = C.MISSING
    avail = bytearray([9]) * n
    avail[99_999] = 0
    pm = PieceMap(bytes(states), bytes(avail), (0, 31_337, 31_338, 99_999))
    cells = group_cells(pm, 1000)
    assert len(cells) == 1000
    # pieces 31337 and 31338 fall in one cell (313); 99999 in the last; piece 0 is not marked
    assert [i for i, c in enumerate(cells) if c[2]] == [313, 999]
    assert cells[500][0] is C.PARTIAL and cells[499][0] is C.HAVE
    assert cells[999][1] == 0 and cells[998][1] == 4
    # one cell per piece when they fit
    small = PieceMap(bytes([C.MISSING, C.HIGH, C.SKIPPED]), bytes([0, 1, 7]), (0, 2))
    assert group_cells(small, 10) == [
        (C.MISSING, 0, False),
        (C.HIGH, 1, False),
        (C.SKIPPED, 4, True),
    ]


# --- the widget ------------------------------------------------------------------------------


def make_map(n: int = 300, have_upto: int = 120) -> PieceMap:
    cells = bytearray()
    for i in range(n):
        if i < have_upto:
            cells.append(C.HAVE)
        elif i < have_upto + 10:
            cells.append(C.PARTIAL)
        elif 200 <= i < 240:
            cells.append(C.SKIPPED)
        elif 240 <= i < 250:
            cells.append(C.HIGH)
        elif i in (130, 131):
            cells.append(C.CHECKING)
        else:
            cells.append(C.MISSING)
    return PieceMap(bytes(cells), bytes(i % 7 for i in range(n)), (0, 100, 200, 240))


class PiecesApp(App[None]):
    def __init__(self, pm: PieceMap | None = None) -> None:
        super().__init__()
        self.pm = make_map() if pm is None else pm

    def compose(self) -> ComposeResult:
        yield PieceMapWidget()

    def on_mount(self) -> None:
        self.query_one(PieceMapWidget).update_data(self.pm)


async def test_only_changed_rows_repaint() -> None:
    app = PiecesApp()
    async with app.run_test(size=(100, 8)) as pilot:
        await pilot.pause()
        w = app.query_one(PieceMapWidget)
        assert w.grid.rows == 3 and not w.grid.grouped
        w.render_line_calls = 0
        assert w.update_data(make_map()) == []  # equal data: nothing
        cells = bytearray(make_map().cells)
        cells[150] = C.HAVE  # row 1 (pieces 100-199)
        assert w.update_data(
            PieceMap(bytes(cells), make_map().availability, (0, 100, 200, 240))
        ) == [1]
        await pilot.pause()
        assert w.render_line_calls == 1  # just that line
        # The changed cell looks like a HAVE cell of equal availability (101 % 7 == 150 % 7).
        strip = w.render_line(2)
        styles = [seg.style for seg in strip for _ in seg.text]
        assert styles[50] == styles[1]
        assert styles[50] != styles[60]


async def test_resize_regroups_and_repaints_everything() -> None:
    app = PiecesApp(make_map(n=5000, have_upto=2500))
    async with app.run_test(size=(100, 11)) as pilot:
        await pilot.pause()
        w = app.query_one(PieceMapWidget)
        assert (w.grid.cells, w.grid.rows, w.grid.max_group) == (1000, 10, 5)
        await pilot.resize_terminal(50, 11)
        await pilot.pause()
        assert (w.grid.cells, w.grid.width, w.grid.max_group) == (500, 50, 10)
        w.render_line_calls = 0
        w.refresh()
        await pilot.pause()
        assert w.render_line_calls == 11  # legend + 10 map lines


async def test_hover_describes_the_cell() -> None:
    app = PiecesApp(make_map(n=5000, have_upto=2500))
    async with app.run_test(size=(100, 11)):
        w = app.query_one(PieceMapWidget)
        assert w.describe_cell(0, 1) == "pieces 0-4: have, 0 peers"
        assert w.describe_cell(0, 0) is None  # legend line
        assert w.describe_cell(99, 50) is None


def test_snapshot_piece_map(snap_compare: Any) -> None:
    assert snap_compare(PiecesApp(), terminal_size=(120, 6))


def test_snapshot_piece_map_grouped(snap_compare: Any) -> None:
    assert snap_compare(PiecesApp(make_map(n=20_000, have_upto=9000)), terminal_size=(120, 8))
