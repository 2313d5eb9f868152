"""Stats counters, RateMeter, and piece state runs with their compact string form."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.piecestate import (
    PieceState,
    PieceStateRun,
    expand_runs,
    piece_state_runs,
    piece_state_runs_string,
)
from core.stats import ClientStats, ConnStats, RateMeter, TorrentState, TorrentStats
from core.types import PiecePriority

#: These properties check arithmetic invariants, not parsers of hostile input,
#: so a few hundred examples find what 5000 would, in a fraction of the time.
INVARIANT = settings(max_examples=300)

# --- ConnStats and friends ------------------------------------------------------------


def numbered(cls: type[ConnStats], base: int) -> ConnStats:
    """An instance whose every field holds a distinct value, so sums can't hide swaps."""
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{name: base + i for i, name in enumerate(names)})


def test_conn_stats_add_sums_each_field() -> None:
    a, b = numbered(ConnStats, 1), numbered(ConnStats, 100)
    total = a + b
    for i, f in enumerate(dataclasses.fields(ConnStats)):
        assert getattr(total, f.name) == (1 + i) + (100 + i), f.name
    assert a == numbered(ConnStats, 1)  # operands untouched


def test_copy_is_independent() -> None:
    a = numbered(ConnStats, 5)
    snap = a.copy()
    a.bytes_read += 10
    assert snap.bytes_read == a.bytes_read - 10
    t = numbered(TorrentStats, 1)
    t_snap = t.copy()
    assert type(t_snap) is TorrentStats and t_snap == t
    t.active_peers += 1
    assert t_snap != t


def test_accumulate_folds_counters_in_place() -> None:
    total = ConnStats()
    for base in (1, 10, 100):
        total.accumulate(numbered(ConnStats, base))
    assert total == numbered(ConnStats, 1) + numbered(ConnStats, 10) + numbered(ConnStats, 100)


def test_torrent_and_client_stats_extend_conn_stats() -> None:
    t = numbered(TorrentStats, 1)
    c = numbered(ClientStats, 1)
    assert isinstance(t, ConnStats) and isinstance(c, ConnStats)
    # Adding drops the torrent-only fields: summing "pieces_complete" over
    # torrents would not mean anything.
    total = t + c
    assert type(total) is ConnStats
    assert total == t.conn_stats() + c.conn_stats()
    assert t.conn_stats() == numbered(ConnStats, 1)
    assert not hasattr(t, "__dict__")


def test_add_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        _ = ConnStats() + 1  # type: ignore[operator]


def test_torrent_state_is_a_string_enum() -> None:
    assert TorrentState("seeding") is TorrentState.SEEDING
    assert f"{TorrentState.FETCHING_METADATA}" == "fetching_metadata"


# --- RateMeter ------------------------------------------------------------------------


def test_steady_flow_reads_its_rate() -> None:
    m = RateMeter(window=5.0, resolution=0.25)
    t = 100.0
    for _ in range(200):  # 10 s of 1000 B every 50 ms = 20 kB/s
        m.add(1000, t)
        t += 0.05
    assert m.rate(t) == pytest.approx(20_000, rel=0.02)
    assert m.total == 200_000


def test_rate_is_correct_soon_after_start() -> None:
    """No exponential warm-up: after one second of 10 kB/s the meter says ~10 kB/s."""
    m = RateMeter(window=5.0, resolution=0.25)
    for i in range(10):
        m.add(1000, 50.0 + i * 0.1)
    assert m.rate(51.0) == pytest.approx(10_000, rel=0.05)


def test_rate_falls_to_zero_after_window() -> None:
    m = RateMeter(window=2.0, resolution=0.5)
    for i in range(20):
        m.add(500, i * 0.1)
    assert m.rate(2.0) > 0
    assert m.rate(4.5) == 0.0
    assert m.total == 10_000  # lifetime total is kept


def test_burst_at_first_instant_is_finite() -> None:
    m = RateMeter(window=5.0, resolution=0.25)
    m.add(16384, 7.0)
    assert m.rate(7.0) == pytest.approx(16384 / 0.25)
    assert RateMeter().rate(3.0) == 0.0


def test_single_bucket_window_at_bucket_boundary() -> None:
    m = RateMeter(window=1.0, resolution=1.0)
    m.add(100, 0.5)
    m.add(300, 3.0)  # exactly on a bucket boundary: no division by zero
    assert m.rate(3.0) == pytest.approx(300.0)


def test_clock_going_backwards_is_clamped() -> None:
    m = RateMeter(window=5.0, resolution=0.25)
    m.add(1000, 10.0)
    m.add(1000, 9.0)  # counted as at 10.0
    assert m.rate(5.0) == m.rate(10.0) >= 0


def test_bounded_memory() -> None:
    m = RateMeter(window=1.0, resolution=0.1)
    for i in range(10_000):
        m.add(1, i * 0.01)
    assert len(m._buckets) <= 10


def test_rate_meter_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RateMeter(window=0.1, resolution=0.5)
    with pytest.raises(ValueError):
        RateMeter(resolution=0)
    with pytest.raises(ValueError):
        RateMeter().add(-1, 0.0)


@INVARIANT
@given(
    st.lists(
        st.tuples(st.integers(0, 1 << 20), st.integers(0, 4000)),
        max_size=20,
    ),
    st.integers(0, 8000),
)
def test_rate_never_negative_nor_above_sum(samples: list[tuple[int, int]], at_ms: int) -> None:
    m = RateMeter(window=5.0, resolution=0.25)
    for n, ms in sorted(samples, key=lambda s: s[1]):
        m.add(n, ms / 1000)
    rate = m.rate(at_ms / 1000)
    total = sum(n for n, _ in samples)
    assert 0.0 <= rate <= total / 0.25 + 1e-6
    assert m.total == total


# --- piece state runs --------------------------------------------------------------


def test_compact_form_marks() -> None:
    assert str(PieceStateRun(3, PieceState(complete=True))) == "3C"
    assert str(PieceStateRun(1, PieceState(PiecePriority.NORMAL, partial=True))) == "1.P"
    assert str(PieceStateRun(2, PieceState(PiecePriority.NOW, hashing=True))) == "2!H"
    assert str(PieceStateRun(4, PieceState(PiecePriority.NEXT, queued_for_hash=True))) == "4NQ"
    assert str(PieceStateRun(5, PieceState(PiecePriority.READAHEAD, marking=True))) == "5RM"
    assert str(PieceStateRun(6, PieceState(PiecePriority.HIGH, ok=False))) == "6H?"
    assert str(PieceStateRun(7, PieceState())) == "7"


def test_runs_string_joins_with_spaces() -> None:
    states = (
        [PieceState(complete=True)] * 3
        + [PieceState(PiecePriority.NORMAL, partial=True)]
        + [PieceState(PiecePriority.NORMAL)] * 6
    )
    runs = piece_state_runs(states)
    assert [r.length for r in runs] == [3, 1, 6]
    assert piece_state_runs_string(runs) == "3C 1.P 6."
    assert piece_state_runs_string([]) == ""


def test_checking_covers_hashing_and_queued() -> None:
    assert PieceState(hashing=True).checking
    assert PieceState(queued_for_hash=True).checking
    assert not PieceState(partial=True).checking


def test_run_length_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PieceStateRun(0, PieceState())


#: A small pool with every flag and priority represented; drawing indexes
#: into it keeps generation cheap and makes equal neighbours (runs) common.
_POOL = [
    PieceState(),
    PieceState(complete=True),
    PieceState(PiecePriority.NORMAL, partial=True),
    PieceState(PiecePriority.NOW, hashing=True, queued_for_hash=True),
    PieceState(PiecePriority.READAHEAD, marking=True, ok=False),
    PieceState(PiecePriority.HIGH),
    PieceState(PiecePriority.NEXT, complete=True, ok=False),
]


@INVARIANT
@given(st.lists(st.integers(0, len(_POOL) - 1), max_size=40))
def test_runs_round_trip_and_are_maximal(picks: list[int]) -> None:
    states = [_POOL[i] for i in picks]
    runs = piece_state_runs(states)
    assert list(expand_runs(runs)) == states
    assert all(a.state != b.state for a, b in itertools.pairwise(runs))
    text = piece_state_runs_string(runs)
    assert sum(int("".join(c for c in part if c.isdigit())) for part in text.split()) == len(states)
