"""A DataTable whose rows are keyed and diffed, shared by the peer and tracker tables.

Rebuilding a DataTable on every snapshot costs far more than the change
itself (and loses the cursor and scroll position), so :meth:`KeyedTable.sync`
removes vanished rows, adds new ones and calls ``update_cell`` only for cells
whose text changed.  Every cell also has a raw sort value, so a header click
sorts rates and sizes as numbers rather than as their formatted text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.widgets import DataTable

__all__ = ["Column", "KeyedTable", "Row"]

#: One row: the rendered cells and the raw values used for sorting, column by column.
Row = tuple[tuple[str | Text, ...], tuple[Any, ...]]


class Column:
    """A column: its key, header label and fixed width (None: fit the content)."""

    __slots__ = ("key", "label", "width")

    def __init__(self, key: str, label: str, width: int | None = None) -> None:
        self.key, self.label, self.width = key, label, width


class KeyedTable(DataTable[str | Text]):
    """Rows keyed by a string; see the module docstring."""

    COLUMNS: ClassVar[Sequence[Column]] = ()

    def __init__(
        self, *, id: str | None = None, classes: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes, name=name, cursor_type="row", zebra_stripes=True)
        self._row_cells: dict[str, tuple[str | Text, ...]] = {}
        self._row_raw: dict[str, tuple[Any, ...]] = {}
        self._sort_column: str | None = None
        self._sort_reverse = False
        for col in self.COLUMNS:
            self.add_column(col.label, key=col.key, width=col.width)

    @property
    def row_keys(self) -> tuple[str, ...]:
        """Row keys in display order."""
        return tuple(str(row.key.value) for row in self.ordered_rows)

    def sync(self, rows: Mapping[str, Row]) -> int:
        """Make the table show ``rows``; returns how many cells were written (for tests/bench)."""
        written = 0
        keys = [c.key for c in self.COLUMNS]
        auto = {c.key for c in self.COLUMNS if c.width is None}
        resort = False
        for key in [k for k in self._row_cells if k not in rows]:
            self.remove_row(key)
            del self._row_cells[key], self._row_raw[key]
        for key, (cells, raw) in rows.items():
            old = self._row_cells.get(key)
            if old is None:
                self.add_row(*cells, key=key)
                written += len(cells)
                resort = True
            else:
                for col, new, was in zip(keys, cells, old, strict=True):
                    if new != was:
                        self.update_cell(key, col, new, update_width=col in auto)
                        written += 1
                        resort = resort or col == self._sort_column
            self._row_cells[key] = cells
            self._row_raw[key] = raw
        if resort and self._sort_column is not None:
            self._apply_sort()
        return written

    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        """Sort by ``column``'s raw values (None: keep insertion order from now on)."""
        self._sort_column, self._sort_reverse = column, reverse
        if column is not None:
            self._apply_sort()

    def _apply_sort(self) -> None:
        column = self._sort_column
        if column is None or not self.COLUMNS:
            return
        index = [c.key for c in self.COLUMNS].index(column)
        first = self.COLUMNS[0].key
        raw = self._row_raw

        def sort_key(first_cell: Any) -> tuple[bool, Any]:
            # The first column shows the row key itself, so it finds the raw row.
            value = raw[str(first_cell.plain if isinstance(first_cell, Text) else first_cell)]
            v = value[index]
            return (v is None, v if v is not None else 0)

        self.sort(first, key=sort_key, reverse=self._sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """Click a header to sort by it; click it again to reverse."""
        event.stop()
        column = str(event.column_key.value)
        reverse = not self._sort_reverse if column == self._sort_column else False
        self.sort_by(column, reverse)
