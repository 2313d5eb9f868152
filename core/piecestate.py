"""Per-piece state as the outside world sees it, and its run-length form.

A torrent with 100,000 pieces cannot send 100,000 objects to a UI a few times
a second, but consecutive pieces nearly always share a state (a finished
prefix, a wanted middle, an unwanted tail), so runs of equal states are tiny.
The shapes mirror anacrolix/torrent's ``PieceState``/``PieceStateRun`` so the
two engines' debug output can be compared side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .types import PiecePriority

#: One character per priority in the compact run form; NONE has no mark, as
#: a piece nobody wants is the unremarkable case.
_PRIORITY_MARK = {
    PiecePriority.NONE: "",
    PiecePriority.NORMAL: ".",
    PiecePriority.HIGH: "H",
    PiecePriority.READAHEAD: "R",
    PiecePriority.NEXT: "N",
    PiecePriority.NOW: "!",
}


@dataclass(frozen=True, slots=True)
class PieceState:
    """What is true of one piece right now.

    ``ok`` says whether ``complete`` is known: until the completion store has
    answered (or a check has run) a piece's completion is a guess, and the
    compact form marks it ``?``. ``hashing``, ``queued_for_hash`` and
    ``marking`` are separate flags because state changes across every
    ``await``: a piece can be queued for a hash while an earlier hash of the
    same piece is still running.
    """

    priority: PiecePriority = PiecePriority.NONE
    complete: bool = False
    ok: bool = True
    partial: bool = False
    hashing: bool = False
    queued_for_hash: bool = False
    marking: bool = False

    @property
    def checking(self) -> bool:
        """Hashing or waiting to be hashed: the one flag most UIs want."""
        return self.hashing or self.queued_for_hash

    def compact(self) -> str:
        """The state part of a run's compact form, e.g. ``".P"`` or ``"C"``."""
        out = _PRIORITY_MARK[self.priority]
        if self.hashing:
            out += "H"
        if self.queued_for_hash:
            out += "Q"
        if self.marking:
            out += "M"
        if self.partial:
            out += "P"
        if self.complete:
            out += "C"
        if not self.ok:
            out += "?"
        return out


@dataclass(frozen=True, slots=True)
class PieceStateRun:
    """``length`` consecutive pieces that all have ``state``."""

    length: int
    state: PieceState

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"a piece state run needs length >= 1, got {self.length}")

    def __str__(self) -> str:
        """Length then state marks, e.g. ``"12.P"``: 12 normal-priority partial pieces."""
        return f"{self.length}{self.state.compact()}"


def piece_state_runs(states: Iterable[PieceState]) -> list[PieceStateRun]:
    """Run-length encode per-piece states, in piece order."""
    runs: list[PieceStateRun] = []
    current: PieceState | None = None
    count = 0
    for state in states:
        if state == current:
            count += 1
            continue
        if current is not None:
            runs.append(PieceStateRun(count, current))
        current, count = state, 1
    if current is not None:
        runs.append(PieceStateRun(count, current))
    return runs


def expand_runs(runs: Iterable[PieceStateRun]) -> Iterator[PieceState]:
    """The inverse of :func:`piece_state_runs`: one state per piece."""
    for run in runs:
        for _ in range(run.length):
            yield run.state


def piece_state_runs_string(runs: Iterable[PieceStateRun]) -> str:
    """All runs in compact form separated by spaces, e.g. ``"3C 1.P 6."``."""
    return " ".join(str(run) for run in runs)
