"""Event bus: ordering, bounds, one Lagged per overflow, level coalescing, closing."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import tracemalloc

import pytest

from core.bus import EventBus, Subscription, SubscriptionClosed
from core.events import (
    ClientSnapshot,
    Edge,
    Event,
    Lagged,
    Level,
    PeerConnected,
    PeerDisconnected,
    PeerSnapshot,
    PeerSource,
    PieceSnapshot,
    PieceStateChanged,
    TorrentAdded,
    TorrentRemoved,
    TorrentRow,
    TorrentState,
    TorrentStateChanged,
)
from core.piecestate import PieceState, PieceStateRun
from core.types import InfoHash, PiecePriority

IH_A = InfoHash(v1=bytes(range(20)))
IH_B = InfoHash(v1=bytes(range(1, 21)))


def added(n: int) -> TorrentAdded:
    """Distinct edges whose payload records their publish position."""
    return TorrentAdded(IH_A, f"t{n}")


def snapshot(n: int) -> ClientSnapshot:
    return ClientSnapshot(
        torrents=(),
        down_rate=float(n),
        up_rate=0.0,
        bytes_downloaded=n,
        bytes_uploaded=0,
        peers=0,
        dht_nodes=0,
    )


def drain(sub: Subscription) -> list[Event]:
    out: list[Event] = []
    while (ev := sub.get_nowait()) is not None:
        out.append(ev)
    return out


def names(events: list[Event]) -> list[str]:
    return [ev.name for ev in events if isinstance(ev, TorrentAdded)]


# --- event types -------------------------------------------------------------------


def test_events_are_frozen_slotted_and_classified() -> None:
    ev = TorrentStateChanged(IH_A, TorrentState.CHECKING, TorrentState.DOWNLOADING)
    assert isinstance(ev, Edge) and not isinstance(ev, Level)
    assert not hasattr(ev, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.new = TorrentState.SEEDING  # type: ignore[misc]
    snap = snapshot(1)
    assert isinstance(snap, Level) and not isinstance(snap, Edge)
    assert not hasattr(snap, "__dict__")
    assert not isinstance(Lagged(1), Edge | Level)


def test_level_keys_separate_torrents_but_not_client_snapshots() -> None:
    assert snapshot(1).key == snapshot(2).key
    assert PeerSnapshot(IH_A, ()).key != PeerSnapshot(IH_B, ()).key
    assert PieceSnapshot(IH_A, 0, ()).key == PeerSnapshot(IH_A, ()).key  # types differ, see bus


def test_events_are_hashable_values() -> None:
    change = PieceStateChanged(IH_A, ((3, PieceState(PiecePriority.NORMAL, partial=True)),))
    same = PieceStateChanged(IH_A, ((3, PieceState(PiecePriority.NORMAL, partial=True)),))
    assert change == same and hash(change) == hash(same)
    row = TorrentRow(IH_A, "x", TorrentState.SEEDING, 1.0, 10, 10, 0.0, 5.0, 3, 1, None, 2.0, 0.0)
    assert hash(ClientSnapshot((row,), 0.0, 0.0, 0, 0, 0, 0)) is not None


# --- ordering ---------------------------------------------------------------------


def test_edges_arrive_in_publish_order() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    for i in range(50):
        bus.publish(added(i))
    assert names(drain(sub)) == [f"t{i}" for i in range(50)]


def test_level_is_delivered_at_its_newest_publish_position() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(added(0))
    bus.publish(snapshot(1))  # superseded below: must not appear before t1
    bus.publish(added(1))
    bus.publish(snapshot(2))
    bus.publish(added(2))
    got = drain(sub)
    assert got == [added(0), added(1), snapshot(2), added(2)]


def test_snapshot_never_follows_a_newer_edge() -> None:
    """A TorrentRemoved must not be followed by an older snapshot listing the torrent."""
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(snapshot(1))
    bus.publish(TorrentRemoved(IH_A))
    got = drain(sub)
    assert got == [snapshot(1), TorrentRemoved(IH_A)]


def test_levels_are_coalesced_per_type_and_key() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    for i in range(100):
        bus.publish(snapshot(i))
        bus.publish(PeerSnapshot(IH_A, ()))
        bus.publish(PeerSnapshot(IH_B, ()))
        bus.publish(PieceSnapshot(IH_A, i, ()))
    assert sub.pending() == 4
    got = drain(sub)
    assert got == [
        snapshot(99),
        PeerSnapshot(IH_A, ()),
        PeerSnapshot(IH_B, ()),
        PieceSnapshot(IH_A, 99, ()),
    ]


def test_level_order_follows_latest_update() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(PeerSnapshot(IH_A, ()))
    bus.publish(PeerSnapshot(IH_B, ()))
    bus.publish(PieceSnapshot(IH_A, 1, ()))
    bus.publish(PeerSnapshot(IH_A, ()))  # A's slot is now the newest
    got = drain(sub)
    assert got == [PeerSnapshot(IH_B, ()), PieceSnapshot(IH_A, 1, ()), PeerSnapshot(IH_A, ())]


# --- bounds and Lagged ------------------------------------------------------------


def test_overflow_delivers_queued_edges_then_exactly_one_lagged() -> None:
    bus = EventBus()
    sub = bus.subscribe(max_edges=10)
    for i in range(25):
        bus.publish(added(i))
    assert sub.pending() == 11  # ten edges and the marker
    got = drain(sub)
    assert names(got) == [f"t{i}" for i in range(10)]
    assert got[-1] == Lagged(dropped=15)
    assert sum(isinstance(ev, Lagged) for ev in got) == 1


def test_edges_flow_again_after_lagged_is_read() -> None:
    bus = EventBus()
    sub = bus.subscribe(max_edges=3)
    for i in range(6):
        bus.publish(added(i))
    # Reading part of the queue frees room, but edges stay dropped until
    # the marker itself is read: otherwise the gap would sit mid-stream.
    assert sub.get_nowait() == added(0)
    bus.publish(added(100))
    rest = drain(sub)
    assert names(rest) == ["t1", "t2"]
    assert rest[-1] == Lagged(dropped=4)
    bus.publish(added(7))
    assert drain(sub) == [added(7)]


def test_second_overflow_gives_second_lagged() -> None:
    bus = EventBus()
    sub = bus.subscribe(max_edges=2)
    for round_ in range(3):
        for i in range(5):
            bus.publish(added(i))
        got = drain(sub)
        assert got[-1] == Lagged(3), round_
        assert len(got) == 3


def test_levels_survive_overflow_and_keep_their_position() -> None:
    bus = EventBus()
    sub = bus.subscribe(max_edges=2)
    bus.publish(added(0))
    bus.publish(snapshot(5))
    bus.publish(added(1))
    bus.publish(added(2))  # dropped
    bus.publish(PeerSnapshot(IH_A, ()))
    got = drain(sub)
    assert got == [added(0), snapshot(5), added(1), Lagged(1), PeerSnapshot(IH_A, ())]


def test_max_edges_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_edges"):
        EventBus().subscribe(max_edges=0)


def test_slow_subscriber_never_blocks_publish_and_stays_bounded() -> None:
    bus = EventBus()
    slow = bus.subscribe(max_edges=64)
    events = [
        PeerConnected(IH_A, ("10.0.0.1", 6881 + i % 1000), "x", PeerSource.TRACKER)
        for i in range(100_000)
    ]
    start = time.perf_counter()
    for ev in events:
        bus.publish(ev)
        bus.publish(snapshot(1))
    elapsed = time.perf_counter() - start
    # 200,000 publishes take well under a second; the bound is generous for a
    # loaded machine yet still catches work that grows with the backlog.
    assert elapsed < 5.0
    # Memory: the same flood again, traced, must not grow the queue.
    tracemalloc.start()
    try:
        for ev in events:
            bus.publish(ev)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10  # 100,000 queued entries would be several MiB
    assert slow.pending() == 64 + 1 + 1
    got = drain(slow)
    edges = [ev for ev in got if isinstance(ev, PeerConnected)]
    assert edges == events[:64]
    assert Lagged(2 * 100_000 - 64) in got


# --- filtering and independence ----------------------------------------------------


def test_subscribers_are_independent() -> None:
    bus = EventBus()
    fast = bus.subscribe(max_edges=1000)
    slow = bus.subscribe(max_edges=5)
    for i in range(20):
        bus.publish(added(i))
        if i % 2 == 0:
            assert fast.get_nowait() == added(i // 2)
    assert names(drain(fast)) == [f"t{i}" for i in range(10, 20)]
    got = drain(slow)
    assert names(got) == [f"t{i}" for i in range(5)] and got[-1] == Lagged(15)


def test_kinds_filter() -> None:
    bus = EventBus()
    only_levels = bus.subscribe(kinds=[Level])
    only_peers = bus.subscribe(kinds=(PeerConnected, PeerDisconnected), max_edges=1)
    bus.publish(added(0))
    bus.publish(snapshot(1))
    bus.publish(PeerDisconnected(IH_A, ("::1", 1), "bye"))
    bus.publish(PeerDisconnected(IH_A, ("::1", 2), "bye"))
    assert drain(only_levels) == [snapshot(1)]
    # Filtered-out events do not count against the bound; Lagged is never filtered.
    assert drain(only_peers) == [PeerDisconnected(IH_A, ("::1", 1), "bye"), Lagged(1)]


def test_publish_rejects_non_events() -> None:
    bus = EventBus()
    bus.subscribe()
    with pytest.raises(TypeError):
        bus.publish(Lagged(3))


def test_publish_without_subscribers_or_loop_is_a_no_op() -> None:
    bus = EventBus()
    bus.publish(added(0))  # no running loop here, no subscribers
    sub = bus.subscribe()
    bus.publish(added(1))  # still no loop: nobody is waiting
    assert drain(sub) == [added(1)]


# --- async reading and closing ----------------------------------------------------


async def test_get_waits_for_publish() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    task = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not task.done()
    bus.publish(added(7))
    assert await asyncio.wait_for(task, 1) == added(7)


async def test_async_iteration_ends_when_bus_closes_after_draining() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    got: list[Event] = []

    async def reader() -> None:
        async for ev in sub:
            got.append(ev)

    task = asyncio.create_task(reader())
    bus.publish(added(0))
    await asyncio.sleep(0)
    bus.publish(added(1))
    bus.publish(added(2))
    bus.close()  # queued events are still delivered, then iteration stops
    await asyncio.wait_for(task, 1)
    assert names(got) == ["t0", "t1", "t2"]
    assert bus.subscriber_count == 0
    bus.publish(added(3))  # harmless after close
    with pytest.raises(SubscriptionClosed):
        bus.subscribe()


async def test_close_wakes_waiting_getter_and_discards_queue() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiter, 1)
    bus.publish(added(1))
    with pytest.raises(SubscriptionClosed):
        sub.get_nowait()
    assert bus.subscriber_count == 0
    sub.close()  # idempotent


async def test_context_managers_unsubscribe() -> None:
    bus = EventBus()
    with bus.subscribe() as sub:
        assert bus.subscriber_count == 1
        bus.publish(added(0))
    assert sub.closed and bus.subscriber_count == 0
    async with bus.subscribe() as sub2:
        bus.publish(added(1))
        assert await sub2.get() == added(1)
    assert sub2.closed and bus.subscriber_count == 0


async def test_cancelled_getter_does_not_disturb_others() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    first = asyncio.create_task(sub.get())
    second = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    bus.publish(added(1))
    assert await asyncio.wait_for(second, 1) == added(1)
    assert first.cancelled()


async def test_two_getters_each_get_one_event() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    tasks = [asyncio.create_task(sub.get()) for _ in range(2)]
    await asyncio.sleep(0)
    bus.publish(added(1))
    bus.publish(added(2))
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert sorted(names(list(results))) == ["t1", "t2"]


async def test_reader_sees_lagged_then_resumes() -> None:
    bus = EventBus()
    sub = bus.subscribe(max_edges=4)
    for i in range(10):
        bus.publish(added(i))
    got = [await sub.get() for _ in range(5)]
    assert got[-1] == Lagged(6)
    bus.publish(PieceSnapshot(IH_A, 3, (PieceStateRun(3, PieceState(PiecePriority.NORMAL)),)))
    assert isinstance(await sub.get(), PieceSnapshot)
    assert sub.get_nowait() is None
