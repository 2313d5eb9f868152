"""The Trackers tab: one row per tracker URL, keyed by URL and diffed cell by cell.

Input: :class:`core.tracker.types.TrackerStatus` values and the wall-clock
``now`` they are relative to (passed in, never read here, so snapshots are
deterministic).

Status is derived from the fields the engine keeps:

* ``updating`` - an announce (or DHT lookup) is under way (the engine marks
  it ``extra["updating"]``) or due (``next_announce <= now``);
* ``error`` - the last announce failed (``last_result == "error"``);
* ``working`` - the last announce succeeded;
* ``not contacted`` - never announced yet.

Peer sources that are not trackers come as rows too, as in qBittorrent:
the engine reports the DHT as ``TrackerStatus(url="** [DHT] **", tier=-1)``
(its last lookup, the peers it found, its next announce).  Any row with a
negative tier is such a source row: it is listed first and its Tier cell is
blank, since tiers (BEP 12) mean nothing outside a torrent's announce list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text

from core.tracker.types import TrackerStatus
from tui.format import eta

from .keyed_table import Column, KeyedTable, Row

__all__ = ["TrackerTable", "is_source_row", "relative_time", "tracker_state"]


def is_source_row(t: TrackerStatus) -> bool:
    """True for a peer source that is not a tracker (the DHT row): the engine gives it tier -1."""
    return t.tier < 0


_STATE_STYLES = {
    "working": "green",
    "updating": "yellow",
    "error": "bold red",
    "not contacted": "dim",
}


def tracker_state(t: TrackerStatus, now: float) -> str:
    """``working``, ``updating``, ``error`` or ``not contacted`` (see the module docstring)."""
    if t.extra.get("updating") or (t.next_announce is not None and t.next_announce <= now):
        return "updating"
    if t.last_result == "error":
        return "error"
    if t.last_result == "ok":
        return "working"
    return "not contacted"


def relative_time(when: float | None, now: float) -> str:
    """``"12s ago"`` for the past, ``"in 29m00s"`` for the future, a dash when unknown."""
    if when is None:
        return "-"
    delta = when - now
    if delta < 0:
        return f"{eta(-delta)} ago"
    return f"in {eta(delta)}" if delta >= 1 else "now"


def _count(value: int | None) -> Text:
    return Text("-" if value is None else str(value), justify="right")


def _tracker_row(t: TrackerStatus, now: float) -> Row:
    state = tracker_state(t, now)
    if t.failures > 1 and state == "error":
        state_text = Text(f"error ({t.failures}x)", _STATE_STYLES["error"])
    else:
        state_text = Text(state, _STATE_STYLES[state])
    message = t.last_error or t.warning or ""
    source = is_source_row(t)
    cells: tuple[str | Text, ...] = (
        t.url,
        Text("" if source else str(t.tier), justify="right"),
        state_text,
        relative_time(t.last_announce, now),
        relative_time(t.next_announce, now),
        _count(t.seeders),
        _count(t.leechers),
        _count(t.completed),
        Text(str(t.peers_received), justify="right"),
        Text(message, "red" if t.last_error else "yellow"),
    )
    raw = (
        t.url,
        t.tier,
        state,
        t.last_announce,
        t.next_announce,
        t.seeders,
        t.leechers,
        t.completed,
        t.peers_received,
        message,
    )
    return cells, raw


class TrackerTable(KeyedTable):
    """Trackers of the selected torrent in tier order; click a header to sort by it."""

    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("url", "URL"),
        Column("tier", "Tier", 4),
        Column("status", "Status", 13),
        Column("last", "Last", 12),
        Column("next", "Next", 12),
        Column("seeders", "Seeds", 6),
        Column("leechers", "Leech", 6),
        Column("completed", "Done", 6),
        Column("peers", "Peers", 5),
        Column("error", "Message"),
    )

    def __init__(
        self, *, id: str | None = None, classes: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes, name=name)
        # Sorted by tier until the user clicks another header: new rows are
        # appended, so a DHT row that appears after the trackers (the DHT
        # started later) would otherwise sit at the bottom.
        self.sort_by("tier")

    def update_data(self, trackers: Sequence[TrackerStatus], now: float) -> int:
        """Show ``trackers`` as of ``now``; returns the number of cells written."""
        # Source rows (the DHT) first, then trackers by tier; sorted() is
        # stable, so trackers keep the engine's order within a tier.
        ordered = sorted(trackers, key=lambda t: (not is_source_row(t), t.tier))
        return self.sync({t.url: _tracker_row(t, now) for t in ordered})
