"""A fast liar next to a slow honest seeder: banned within a few failed pieces, nobody else.

Issue 23: with a slow honest seeder and a fast peer that sends corrupt data,
nearly every piece holds blocks of both, so a rule that only bans a peer for
pieces it sent alone lets the liar poison the download for a minute.  These
tests run real clients on 127.0.0.1 in the demo's mix first (our download
limit 1 MiB/s, the honest seeder uploading at 192 KiB/s, a liar that damages
one byte of every block of three pieces in four), then variants, and check
what the issue asks: the liar is banned after at most 3 failed pieces it
contributed to, we receive at most 1.3 times the torrent's size, and no
honest peer is banned, not even one that shared failed pieces with the liar.
Each test prints what it measured (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.engine.client import Client
from core.events import PeerConnected, PeerDisconnected, PieceHashFailed
from core.formats.metainfo import Metainfo
from core.storage import FileStorage, Layout
from tests.support.engine import loopback_config, make_torrent, tree_digest
from tests.support.ltharness import LibtorrentPeer, LibtorrentPeerFactory, lt_peer_factory

__all__ = ["lt_peer_factory"]  # the fixture is used by name below

pytestmark = pytest.mark.timeout(60)

KIB = 1 << 10
MIB = 1 << 20
BLOCK = 16 * KIB
LOCAL = "127.0.0.1"
#: The demo's numbers: our download limit and the slow (honest) seeder's upload limit.
DOWNLOAD_LIMIT = 1 * MIB
HONEST_UPLOAD = 192 * KIB
PIECE = 128 * KIB
SIZE = 3 * MIB
NAME = "payload.bin"
MAX_LIAR_FAILURES = 3
MAX_RECEIVED_RATIO = 1.3

#: Which blocks the liar damages: (piece, block index) -> bool.
Corruption = Callable[[int, int], bool]


def demo_mix(piece: int, block: int) -> bool:
    """As the demo's bad peer: every block of three pieces in four."""
    return piece % 4 != 3


def every_block(piece: int, block: int) -> bool:
    return True


def one_block_in_eight(piece: int, block: int) -> bool:
    return (piece * 7 + block) % 8 == 0


class LyingStorage(FileStorage):
    """Serves the real file, with one byte flipped in the blocks ``bad`` names.

    The seeder's own start-up check does not read through ``read_block``, so
    it believes it has every piece and announces them all.
    """

    def __init__(self, layout: Layout, bad: Corruption) -> None:
        super().__init__(layout)
        self.bad = bad

    def read_block(self, piece: int, begin: int, length: int) -> bytes:
        data = super().read_block(piece, begin, length)
        damaged = bytearray(data)
        for at in range(0, len(damaged), BLOCK):
            if self.bad(piece, (begin + at) // BLOCK):
                damaged[at] ^= 0xFF
        return bytes(damaged)


@dataclass
class Outcome:
    failures: list[PieceHashFailed]
    liar_failures: int
    received: int
    seconds: float
    banned: dict[str, str]

    @property
    def ratio(self) -> float:
        return self.received / SIZE


async def _seed(tmp: Path, name: str, mi: Metainfo, src: Path, **config: object) -> Client:
    client = Client(loopback_config(tmp, name, download_dir=src, **config))
    await client.start()
    return client


async def _download(
    tmp: Path, mi: Metainfo, src: Path, peers: list[tuple[str, int]], liar: tuple[str, int]
) -> Outcome:
    """Download from ``peers`` at the demo's limit; check the result and the bans."""
    leecher = Client(loopback_config(tmp, "leecher", download_rate_limit=DOWNLOAD_LIMIT))
    await leecher.start()
    try:
        sub = leecher.bus.subscribe(kinds=[PieceHashFailed])
        seen = leecher.bus.subscribe(kinds=[PeerConnected, PeerDisconnected])
        start = time.monotonic()
        t = await leecher.add_metainfo(mi, peers=peers)
        try:
            async with asyncio.timeout(45):
                await t.wait_complete()
        except TimeoutError:
            log = []
            while (ev := seen.get_nowait()) is not None:
                log.append(repr(ev))
            raise AssertionError(
                f"no completion in 45 s; peers now {[r.address for r in t.peer_rows()]};\n"
                + "\n".join(log)
            ) from None
        seconds = time.monotonic() - start
        assert tree_digest(leecher.config.download_dir) == tree_digest(src)
        failures = []
        while (event := sub.get_nowait()) is not None:
            assert isinstance(event, PieceHashFailed)
            failures.append(event)
        stats = t.stats()
        outcome = Outcome(
            failures=failures,
            liar_failures=sum(liar in e.peers for e in failures),
            received=stats.bytes_read_data,
            seconds=seconds,
            banned=leecher.banned,
        )
        print(
            f"\nliar banned after {outcome.liar_failures} failed pieces it sent data for "
            f"({len(failures)} failed in all); received {outcome.received / MIB:.2f} MiB "
            f"= {outcome.ratio:.2f}x the torrent in {seconds:.1f} s; bans: {outcome.banned}"
        )
        # Banned, unless the download was over before its parole gave it a
        # second chance to lie (one failed piece is no proof, as in libtorrent).
        assert leecher.is_banned(*liar) or outcome.liar_failures == 1
        return outcome
    finally:
        await leecher.close()


def _check(outcome: Outcome, liar: tuple[str, int]) -> None:
    assert outcome.liar_failures <= MAX_LIAR_FAILURES
    assert outcome.ratio <= MAX_RECEIVED_RATIO
    # Only the liar is banned; the reason names the evidence.
    assert set(outcome.banned) <= {f"{liar[0]}:{liar[1]}"}
    for reason in outcome.banned.values():
        assert "failed pieces" in reason or "differed from the good data" in reason
    # Every failed piece had the liar among its senders.
    assert all(liar in e.peers for e in outcome.failures)


@pytest.mark.parametrize(
    "bad",
    [demo_mix, every_block, one_block_in_eight],
    ids=["demo-mix", "every-block", "one-block-in-eight"],
)
async def test_fast_liar_next_to_slow_honest_seeder(tmp_path: Path, bad: Corruption) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, {NAME: SIZE}, PIECE)
    honest = await _seed(tmp_path, "honest", mi, src, upload_rate_limit=HONEST_UPLOAD)
    liar = await _seed(tmp_path, "liar", mi, src)
    try:
        await honest.add_metainfo(mi)
        await liar.add_metainfo(mi, storage=LyingStorage(Layout.from_info(mi.info, src), bad))
        honest_addr, liar_addr = (LOCAL, honest.listen_port), (LOCAL, liar.listen_port)
        outcome = await _download(tmp_path, mi, src, [honest_addr, liar_addr], liar_addr)
        _check(outcome, liar_addr)
        # The honest seeder shared pieces with the liar (the liar is the fast one).
        assert any(honest_addr in e.peers for e in outcome.failures) or all(
            e.peers == (liar_addr,) for e in outcome.failures
        )
    finally:
        await asyncio.gather(honest.close(), liar.close())


@pytest.mark.interop
async def test_fast_liar_next_to_slow_libtorrent_seeder(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, {NAME: SIZE}, PIECE)
    torrent_file = tmp_path / f"{NAME}.torrent"
    torrent_file.write_bytes(mi.to_bytes())
    seeder = await asyncio.to_thread(lt_peer_factory, "honest", upload_rate=HONEST_UPLOAD)
    assert isinstance(seeder, LibtorrentPeer)
    await asyncio.to_thread(seeder.add_torrent, torrent_file, src, True)
    liar = await _seed(tmp_path, "liar", mi, src)
    try:
        await liar.add_metainfo(mi, storage=LyingStorage(Layout.from_info(mi.info, src), demo_mix))
        liar_addr = (LOCAL, liar.listen_port)
        outcome = await _download(tmp_path, mi, src, [(LOCAL, seeder.port), liar_addr], liar_addr)
        _check(outcome, liar_addr)
    finally:
        await liar.close()
        await asyncio.to_thread(seeder.stop)
