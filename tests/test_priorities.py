"""The priority model, live: files, pieces and readers decide what is requested.

A piece's priority is the maximum of its own, its files' and the readers'
windows.  Changes take effect in the next request round: the tests record
every request the picker hands out (by wrapping ``Picker.pick``) while a
rate-limited seeder keeps the download slow enough to change course mid-way.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from core.engine.client import Client
from core.engine.torrent import Torrent
from core.types import PiecePriority
from tests.support.engine import loopback_config, make_torrent

KIB = 1 << 10
PL = 32 * KIB
FILES = {
    "t/a.bin": PL * 10 + 100,  # pieces 0..10 (10 shared with b)
    "t/b.bin": PL * 20,  # pieces 10..30 (30 shared with c)
    "t/c.bin": PL * 5 - 100,  # pieces 30..34
}
B_ONLY = set(range(11, 30))


class Picks:
    """Every request round's pieces, in order, from the moment of wrapping."""

    def __init__(self, t: Torrent) -> None:
        self.rounds: list[list[int]] = []
        real = t.picker.pick

        def pick(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            if out:
                self.rounds.append([r.piece for r in out])
            return out

        t.picker.pick = pick  # type: ignore[method-assign]

    def mark(self) -> int:
        return len(self.rounds)

    def since(self, mark: int) -> list[list[int]]:
        return self.rounds[mark:]

    def pieces(self, mark: int = 0) -> set[int]:
        return {p for r in self.rounds[mark:] for p in r}


async def pair(
    tmp: Path, stack: AsyncExitStack, *, rate: int | None = 384 * KIB
) -> tuple[Torrent, Torrent]:
    src = tmp / "src"
    mi = make_torrent(src, FILES, PL)
    seeder = await stack.enter_async_context(
        Client(loopback_config(tmp, "seed", upload_rate_limit=rate))
    )
    leecher = await stack.enter_async_context(Client(loopback_config(tmp, "leech")))
    st = await seeder.add_metainfo(mi, download_dir=src)
    t = await leecher.add_metainfo(mi)
    return st, t


def file_named(t: Torrent, name: str) -> Any:
    return next(f for f in t.files if f.path.endswith(name))


async def until(cond: Any, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


@pytest.mark.timeout(40)
async def test_none_file_is_only_fetched_through_shared_pieces(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        st, t = await pair(tmp_path, stack, rate=None)
        file_named(t, "b.bin").set_priority(PiecePriority.NONE)
        picks = Picks(t)
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        async with asyncio.timeout(20):
            await t.wait_complete()
        requested = picks.pieces()
        assert not requested & B_ONLY
        assert {10, 30} <= requested  # shared with wanted files: fetched
        assert requested == set(range(0, 11)) | set(range(30, 35))


@pytest.mark.timeout(40)
async def test_raising_a_file_mid_download_fetches_it_next_round(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        st, t = await pair(tmp_path, stack)
        b = file_named(t, "b.bin")
        b.set_priority(PiecePriority.NONE)
        picks = Picks(t)
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        await until(lambda: t.picker.num_have >= 3)
        assert not picks.pieces() & B_ONLY
        mark = picks.mark()
        b.set_priority(PiecePriority.HIGH)
        await until(lambda: picks.mark() > mark)
        # The very next round asks for b.bin only: HIGH outranks everything left.
        assert set(picks.since(mark)[0]) <= B_ONLY | {10, 30}
        # Nothing wanted any more: we lose interest.  Raising b.bin again makes
        # us interested and its missing pieces are the next requests.
        b.set_priority(PiecePriority.NONE)
        file_named(t, "c.bin").set_priority(PiecePriority.NONE)
        await until(lambda: t.picker.is_complete())
        missing_b = {p for p in B_ONLY if not t.picker.have(p)}
        assert missing_b  # it was HIGH only for a moment
        peer = next(iter(t.peers))
        assert peer.proto is not None
        await until(lambda: not peer.proto.conn.am_interested)
        mark = picks.mark()
        b.set_priority(PiecePriority.NORMAL)
        assert peer.proto.conn.am_interested
        await until(lambda: picks.mark() > mark)
        assert set(picks.since(mark)[0]) <= B_ONLY | {10, 30}
        async with asyncio.timeout(20):
            await t.wait_complete()


@pytest.mark.timeout(40)
async def test_lowering_a_file_stops_new_requests_for_it(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        st, t = await pair(tmp_path, stack)
        picks = Picks(t)
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        await until(lambda: t.picker.num_have >= 3)
        b = file_named(t, "b.bin")
        had_b = {p for p in B_ONLY if t.picker.have(p)}
        b.set_priority(PiecePriority.NONE)
        mark = picks.mark()
        async with asyncio.timeout(20):
            await t.wait_complete()
        assert not picks.pieces(mark) & B_ONLY
        assert picks.pieces(mark)  # the rest went on
        # b.bin pieces already had or in flight may complete; nothing else of it does.
        in_flight_then = picks.pieces() & B_ONLY
        got = {p for p in B_ONLY if t.picker.have(p)}
        assert had_b <= got <= in_flight_then
        assert len(got) < len(B_ONLY)


@pytest.mark.timeout(40)
async def test_piece_priorities_and_ranges_take_effect_live(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        st, t = await pair(tmp_path, stack)
        for f in t.files:
            f.set_priority(PiecePriority.NONE)
        assert t.picker.is_complete()  # nothing wanted
        picks = Picks(t)
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        t.piece(20).set_priority(PiecePriority.HIGH)
        assert t.piece(20).priority == PiecePriority.HIGH
        t.download_pieces(18, 22)
        # download_pieces raises to at least NORMAL, never lowers: 20 stays HIGH.
        assert t.piece(20).priority == PiecePriority.HIGH
        assert t.piece(19).priority == PiecePriority.NORMAL
        t.cancel_pieces(21, 22)
        async with asyncio.timeout(20):
            await t.wait_complete()
        assert picks.pieces() == {18, 19, 20}
        assert picks.rounds[0][0] == 20  # HIGH first
        assert [t.picker.have(p) for p in range(17, 22)] == [False, True, True, True, False]


@pytest.mark.timeout(20)
async def test_priority_is_the_max_of_piece_file_and_readers(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        _, t = await pair(tmp_path, stack)  # never connected
        prio = t.picker.priority
        a = file_named(t, "a.bin")
        b = file_named(t, "b.bin")
        for f in t.files:
            f.set_priority(PiecePriority.NONE)
        assert prio(10) == PiecePriority.NONE
        a.set_priority(PiecePriority.NORMAL)
        b.set_priority(PiecePriority.HIGH)
        assert prio(10) == PiecePriority.HIGH  # shared piece: the higher file wins
        assert prio(5) == PiecePriority.NORMAL
        t.piece(5).set_priority(PiecePriority.NEXT)
        assert prio(5) == PiecePriority.NEXT
        r = t.new_reader(readahead=1)
        r.seek(5 * PL)
        assert prio(5) == PiecePriority.NOW
        r.seek(0)
        assert prio(5) == PiecePriority.NEXT and prio(0) == PiecePriority.NOW
        r.close()
        assert prio(0) == PiecePriority.NORMAL
        t.piece(5).set_priority(PiecePriority.NONE)
        assert prio(5) == PiecePriority.NORMAL
        b.set_priority(PiecePriority.NONE)
        assert prio(10) == PiecePriority.NORMAL and prio(20) == PiecePriority.NONE
