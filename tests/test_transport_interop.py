"""Interop over uTP and with forced RC4: our engine against libtorrent on 127.0.0.1.

The libtorrent peer (tests/support/lt_transport.py) is configured so that it
*cannot* fall back: uTP-only means its TCP is off both ways, forced RC4 means
it refuses plaintext and the MSE plaintext method alike. A transfer that
completes therefore proves the transport and the cipher, and each test also
asks libtorrent which transport and encryption its connection to us really
used (``peer_info`` flags) and samples our own peer table for the same, so
neither side's account is taken alone. Every downloaded file is compared by
SHA-256 against the original; payloads are multi-file with an empty file and
pieces spanning file boundaries.

The first tests prove the harness with libtorrent alone (they run without
our engine); the others put our engine on the other end.
Transfer rates are recorded (terminal summary) but never asserted. The 1 GiB
case is in bench/utp_throughput.py: tests stay at or under 32 MiB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from core.config import ClientConfig
from core.engine.client import Client
from core.engine.torrent import Torrent
from core.formats.metainfo import Metainfo
from tests.support.engine import loopback_config
from tests.support.interop_report import record
from tests.support.lt_transport import (
    Crypto,
    LibtorrentTransportFactory,
    LibtorrentTransportPeer,
    LtConnection,
    Transport,
    lt_transport_factory,
    transport_settings,
)
from tests.support.ltharness import (
    LibtorrentPeerTimeout,
    lt_create_torrent,
    make_payload,
    sha256_tree,
)

__all__ = ["lt_transport_factory"]  # the fixture is used by name below

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

KIB = 1 << 10
MIB = 1 << 20
NAME = "payload"
PIECE = 256 * KIB
Dialer = Literal["us", "lt"]
OurEncryption = Literal["prefer", "require", "disable"]

# -- payloads ---------------------------------------------------------------------------


def payload(big: int) -> dict[str, int]:
    """A multi-file payload under ``payload/``: odd sizes, a tiny and an empty file."""
    return {
        "docs/readme.txt": 1_000,
        "docs/empty.txt": 0,
        "media/season 1/e01.bin": big // 2 + 12_345,
        "media/season 1/deep/e02.bin": big // 4 + 77,
        "tail.bin": big // 4 + 3,
    }


def build(tmp: Path, files: dict[str, int]) -> tuple[Metainfo, Path, Path]:
    """Payload under ``tmp/seed/payload`` and libtorrent's torrent of it.

    Returns the parsed torrent, the .torrent path and the seed directory
    (the save path of both clients).
    """
    seed_dir = tmp / "seed"
    make_payload(seed_dir / NAME, files, seed=14)
    data = lt_create_torrent(seed_dir / NAME, PIECE)
    torrent_path = tmp / f"{NAME}.torrent"
    torrent_path.write_bytes(data)
    mi = Metainfo.from_bytes(data)
    crossing = [p for p in range(mi.info.num_pieces) if len(mi.info.files_in_piece(p)) > 1]
    assert crossing, "no piece spans a file boundary"
    return mi, torrent_path, seed_dir


def assert_same_tree(got_root: Path, want_root: Path, files: dict[str, int]) -> None:
    got = sha256_tree(got_root)
    assert sorted(got) == sorted(files), "missing or extra files"
    assert got == sha256_tree(want_root)


# -- libtorrent's account of its links ------------------------------------------------


def assert_links(
    peer: LibtorrentTransportPeer,
    info_hash: str,
    *,
    transport: Literal["utp", "tcp"],
    rc4: bool,
    moved: Callable[[LtConnection], int],
) -> list[LtConnection]:
    """Every connection libtorrent had used ``transport``, every established one
    RC4 iff ``rc4``, and at least one moved payload (``moved`` picks the direction).

    A link sampled only while connecting has no encryption flag yet, so the
    encryption is checked on links past the BitTorrent handshake (both ends
    support extensions) or that moved payload.
    """
    conns = peer.connections(info_hash)
    seen = [c.describe() for c in conns]
    assert conns, f"{peer.name}: no connection seen; drops {peer.disconnect_reasons()}"
    assert all(c.transport == transport for c in conns), seen
    established = [
        c for c in conns if c.total_download or c.total_upload or "supports_extensions" in c.flags
    ]
    assert all(c.rc4 == rc4 for c in established), seen
    assert all(c.connection_type == "bittorrent" for c in conns), seen
    assert any(moved(c) > 0 for c in established), seen
    return conns


def _down(c: LtConnection) -> int:
    return c.total_download


def _up(c: LtConnection) -> int:
    return c.total_upload


# -- libtorrent alone: the harness ----------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "crypto"),
    [("utp", "plaintext"), ("tcp", "rc4"), ("utp", "rc4")],
)
def test_harness_libtorrent_to_libtorrent(
    tmp_path: Path,
    lt_transport_factory: LibtorrentTransportFactory,
    transport: Literal["utp", "tcp"],
    crypto: Crypto,
) -> None:
    files = payload(8 * MIB)
    _, torrent, seed_dir = build(tmp_path, files)
    leech_dir = tmp_path / "leech"
    seeder = lt_transport_factory(
        "seeder", transport=transport, crypto=crypto, socket_buffer=4 * MIB
    )
    leecher = lt_transport_factory(
        "leecher", transport=transport, crypto=crypto, socket_buffer=4 * MIB
    )
    for peer in (seeder, leecher):
        # The profile is what the session runs with, not just what was asked.
        want = transport_settings(transport, crypto, 4 * MIB)
        assert {k: peer.settings()[k] for k in want} == want
    ih = seeder.add_torrent(torrent, seed_dir, seed=True)
    leecher.add_torrent(torrent, leech_dir)
    started = time.monotonic()
    leecher.connect(ih, "127.0.0.1", seeder.port)
    leecher.wait_seeding(ih, timeout=30)
    record(f"lt -> lt {transport}/{crypto}", sum(files.values()), time.monotonic() - started)

    ours = assert_links(leecher, ih, transport=transport, rc4=crypto == "rc4", moved=_down)
    theirs = assert_links(seeder, ih, transport=transport, rc4=crypto == "rc4", moved=_up)
    assert all(c.outgoing for c in ours) and not any(c.outgoing for c in theirs)
    assert {(c.ip, c.port) for c in ours} == {("127.0.0.1", seeder.port)}
    assert all(c.local_port == seeder.port for c in theirs)
    assert {e["socket_type"] for e in seeder.events("incoming_connection")} == {transport}
    assert leecher.stop() == 0  # flushes libtorrent's store buffer to the files
    assert_same_tree(leech_dir / NAME, seed_dir / NAME, files)


@pytest.mark.parametrize(
    ("seeder_profile", "leecher_profile", "seeder_reason"),
    [
        # forced RC4 refuses a plain handshake ...
        (("tcp", "rc4"), ("tcp", "plaintext"), "incoming regular connections disabled"),
        # ... and plaintext-only refuses MSE
        (("tcp", "plaintext"), ("tcp", "rc4"), "incoming encrypted connections disabled"),
        # a uTP-only peer closes TCP at once (no alert on its side)
        (("utp", "plaintext"), ("tcp", "plaintext"), None),
    ],
)
def test_harness_profiles_refuse(
    tmp_path: Path,
    lt_transport_factory: LibtorrentTransportFactory,
    seeder_profile: tuple[Transport, Crypto],
    leecher_profile: tuple[Transport, Crypto],
    seeder_reason: str | None,
) -> None:
    # Proof that the profiles bind: without it a passing interop test could
    # mean libtorrent quietly fell back to TCP or plaintext.
    _, torrent, seed_dir = build(tmp_path, payload(MIB))
    seeder = lt_transport_factory("seeder", transport=seeder_profile[0], crypto=seeder_profile[1])
    leecher = lt_transport_factory(
        "leecher", transport=leecher_profile[0], crypto=leecher_profile[1]
    )
    ih = seeder.add_torrent(torrent, seed_dir, seed=True)
    leecher.add_torrent(torrent, tmp_path / "leech")
    leecher.connect(ih, "127.0.0.1", seeder.port)
    leecher.wait_event("peer_disconnected", timeout=15)
    if seeder_reason is not None:
        seeder.wait_event("peer_disconnected", timeout=5)
        assert any(seeder_reason in r for r in seeder.disconnect_reasons()), (
            seeder.disconnect_reasons()
        )
    assert leecher.status(ih)["total_download"] == 0
    assert all(c.total_download == 0 for c in leecher.connections(ih))


def test_harness_apply_changes_a_running_profile(
    lt_transport_factory: LibtorrentTransportFactory,
) -> None:
    peer = lt_transport_factory("lt", transport="both", crypto="plaintext")
    got = peer.apply(transport="utp", crypto="rc4", socket_buffer=2 * MIB)
    assert got == peer.settings()
    assert {k: got[k] for k in transport_settings("utp", "rc4", 2 * MIB)} == transport_settings(
        "utp", "rc4", 2 * MIB
    )
    assert (peer.transport, peer.crypto, peer.socket_buffer) == ("utp", "rc4", 2 * MIB)
    with pytest.raises(ValueError, match="transport"):
        peer.apply(transport="quic")  # type: ignore[arg-type]


# -- our engine -----------------------------------------------------------------------


def our_config(
    tmp: Path,
    name: str,
    *,
    tcp: bool = True,
    utp: bool = True,
    encryption: OurEncryption | None = None,
) -> ClientConfig:
    overrides: dict[str, object] = {"tcp": tcp, "utp": utp}
    if encryption is not None:
        overrides["encryption"] = encryption
    return loopback_config(tmp, name, **overrides)


async def lt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness call off the event loop, so our client keeps running."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def start_lt(
    factory: LibtorrentTransportFactory, name: str, **kwargs: Any
) -> LibtorrentTransportPeer:
    peer = await lt(factory, name, **kwargs)
    assert isinstance(peer, LibtorrentTransportPeer)
    return peer


class PeerTable:
    """Samples our torrent's peer table while a transfer runs.

    Two seeds hang up on each other, so by the time a download completes the
    row may be gone; the sampler keeps every (address, transport, encrypted)
    our engine showed.
    """

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.seen: set[tuple[tuple[str, int], str, bool]] = set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.02)

    def sample(self) -> None:
        for row in self.torrent.peer_rows():
            self.seen.add((row.address, row.transport, row.encrypted))

    async def stop(self) -> set[tuple[str, bool]]:
        """Stop sampling; the (transport, encrypted) pairs seen."""
        self.sample()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return {(transport, enc) for _, transport, enc in self.seen}


async def we_download(
    tmp: Path,
    factory: LibtorrentTransportFactory,
    *,
    transport: Literal["utp", "tcp"],
    crypto: Crypto,
    ours: ClientConfig,
    dialer: Dialer,
    big: int,
    case: str,
) -> None:
    """We fetch a multi-file torrent from a libtorrent seeder with this profile."""
    files = payload(big)
    mi, torrent, seed_dir = build(tmp, files)
    seeder = await start_lt(factory, "seeder", transport=transport, crypto=crypto)
    ih = await lt(seeder.add_torrent, torrent, seed_dir, seed=True)
    async with Client(ours) as client:
        started = time.monotonic()
        t = await client.add_metainfo(mi)
        table = PeerTable(t)
        if dialer == "us":
            t.add_peers([("127.0.0.1", seeder.port)])
        else:
            await lt(seeder.connect, ih, "127.0.0.1", client.listen_port)
        try:
            async with asyncio.timeout(60):
                await t.wait_complete()
        except TimeoutError:
            pytest.fail(
                f"{case}: not complete after 60 s; libtorrent saw "
                f"{[c.describe() for c in await lt(seeder.connections, ih)]}, "
                f"dropped {await lt(seeder.disconnect_reasons)}"
            )
        record(case, sum(files.values()), time.monotonic() - started)
        shown = await table.stop()
        assert_same_tree(client.config.download_dir / NAME, seed_dir / NAME, files)
    rc4 = crypto == "rc4"
    await lt(assert_links, seeder, ih, transport=transport, rc4=rc4, moved=_up)
    assert shown == {(transport, rc4)}, f"our peer table showed {shown}"


async def libtorrent_downloads(
    tmp: Path,
    factory: LibtorrentTransportFactory,
    *,
    transport: Literal["utp", "tcp"],
    crypto: Crypto,
    ours: ClientConfig,
    dialer: Dialer,
    big: int,
    case: str,
) -> None:
    """A libtorrent leecher with this profile fetches a multi-file torrent we seed."""
    files = payload(big)
    mi, torrent, seed_dir = build(tmp, files)
    leech_dir = tmp / "lt-leech"
    leecher = await start_lt(factory, "leecher", transport=transport, crypto=crypto)
    ih = await lt(leecher.add_torrent, torrent, leech_dir)
    async with Client(ours) as client:
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        table = PeerTable(t)
        started = time.monotonic()
        if dialer == "us":
            t.add_peers([("127.0.0.1", leecher.port)])
        else:
            await lt(leecher.connect, ih, "127.0.0.1", client.listen_port)
        try:
            st = await lt(leecher.wait_seeding, ih, 60)
        except LibtorrentPeerTimeout as exc:
            pytest.fail(
                f"{case}: {exc}\nlibtorrent saw "
                f"{[c.describe() for c in await lt(leecher.connections, ih)]}, "
                f"dropped {await lt(leecher.disconnect_reasons)}; our peers {table.seen}"
            )
        record(case, sum(files.values()), time.monotonic() - started)
        assert st["total_failed_bytes"] == 0 and st["errors"] == []
        shown = await table.stop()
    rc4 = crypto == "rc4"
    await lt(assert_links, leecher, ih, transport=transport, rc4=rc4, moved=_down)
    assert shown == {(transport, rc4)}, f"our peer table showed {shown}"
    assert await lt(leecher.stop) == 0  # flush libtorrent's store buffer first
    assert_same_tree(leech_dir / NAME, seed_dir / NAME, files)


# -- uTP only -------------------------------------------------------------------------


@pytest.mark.parametrize("dialer", ["us", "lt"])
async def test_we_download_over_utp_only(
    tmp_path: Path, lt_transport_factory: LibtorrentTransportFactory, dialer: Dialer
) -> None:
    # 24 MiB: several times the 4 MiB windows, so flow and congestion control
    # run in their steady state, not just the first window.
    encryption: OurEncryption = "disable"
    await we_download(
        tmp_path,
        lt_transport_factory,
        transport="utp",
        crypto="plaintext",
        ours=our_config(tmp_path, "us", tcp=False, utp=True, encryption=encryption),
        dialer=dialer,
        big=24 * MIB,
        case=f"lt -> us utp ({dialer} dial)",
    )


@pytest.mark.parametrize("dialer", ["us", "lt"])
async def test_libtorrent_downloads_from_us_over_utp_only(
    tmp_path: Path, lt_transport_factory: LibtorrentTransportFactory, dialer: Dialer
) -> None:
    encryption: OurEncryption = "disable"
    await libtorrent_downloads(
        tmp_path,
        lt_transport_factory,
        transport="utp",
        crypto="plaintext",
        ours=our_config(tmp_path, "us", tcp=False, utp=True, encryption=encryption),
        dialer=dialer,
        big=16 * MIB,
        case=f"us -> lt utp ({dialer} dial)",
    )


# -- libtorrent forcing RC4 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "encryption", "dialer"),
    [
        ("tcp", "require", "us"),
        ("tcp", "prefer", "lt"),
        ("utp", "prefer", "us"),
        ("utp", "require", "lt"),
    ],
)
async def test_we_download_from_libtorrent_forcing_rc4(
    tmp_path: Path,
    lt_transport_factory: LibtorrentTransportFactory,
    transport: Literal["utp", "tcp"],
    encryption: OurEncryption,
    dialer: Dialer,
) -> None:
    await we_download(
        tmp_path,
        lt_transport_factory,
        transport=transport,
        crypto="rc4",
        ours=our_config(
            tmp_path, "us", tcp=transport == "tcp", utp=transport == "utp", encryption=encryption
        ),
        dialer=dialer,
        big=12 * MIB,
        case=f"lt -> us {transport}/rc4 ({encryption}, {dialer} dial)",
    )


@pytest.mark.parametrize(
    ("transport", "encryption", "dialer"),
    [
        ("tcp", "prefer", "us"),
        ("tcp", "require", "lt"),
        ("utp", "require", "us"),
        ("utp", "prefer", "lt"),
    ],
)
async def test_libtorrent_forcing_rc4_downloads_from_us(
    tmp_path: Path,
    lt_transport_factory: LibtorrentTransportFactory,
    transport: Literal["utp", "tcp"],
    encryption: OurEncryption,
    dialer: Dialer,
) -> None:
    await libtorrent_downloads(
        tmp_path,
        lt_transport_factory,
        transport=transport,
        crypto="rc4",
        ours=our_config(
            tmp_path, "us", tcp=transport == "tcp", utp=transport == "utp", encryption=encryption
        ),
        dialer=dialer,
        big=8 * MIB,
        case=f"us -> lt {transport}/rc4 ({encryption}, {dialer} dial)",
    )


async def test_our_require_refuses_plaintext_libtorrent(
    tmp_path: Path, lt_transport_factory: LibtorrentTransportFactory
) -> None:
    # "require" must mean it: a libtorrent that only speaks the plain
    # handshake gets nothing from us, whichever side dials.
    mi, torrent, seed_dir = build(tmp_path, payload(MIB))
    leecher = await start_lt(lt_transport_factory, "leecher", transport="tcp", crypto="plaintext")
    ih = await lt(leecher.add_torrent, torrent, tmp_path / "lt-leech")
    async with Client(our_config(tmp_path, "us", utp=False, encryption="require")) as client:
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        await lt(leecher.connect, ih, "127.0.0.1", client.listen_port)
        await wait_drops(leecher, 1)  # we refused its plain handshake
        t.add_peers([("127.0.0.1", leecher.port)])
        await wait_drops(leecher, 2)  # it refused our MSE handshake
        assert (await lt(leecher.status, ih))["total_download"] == 0
        assert t.stats().bytes_written_data == 0


async def wait_drops(peer: LibtorrentTransportPeer, count: int, timeout: float = 15.0) -> None:
    """Wait until ``peer`` has closed ``count`` connections in all."""
    deadline = time.monotonic() + timeout
    while len(peer.events("peer_disconnected")) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{peer.name}: {peer.disconnect_reasons()}, wanted {count} drops")
        await asyncio.sleep(0.05)


# -- a mixed swarm --------------------------------------------------------------------


async def test_mixed_swarm_utp_tcp_and_forced_rc4(
    tmp_path: Path, lt_transport_factory: LibtorrentTransportFactory
) -> None:
    # Three throttled seeders, one per profile; we dial all three with our
    # defaults (uTP first, TCP on timeout; MSE preferred). Each is slow
    # enough that the download needs all of them, so each must have sent
    # something over the link its profile allows.
    files = payload(6 * MIB)
    total = sum(files.values())
    mi, torrent, seed_dir = build(tmp_path, files)
    rate = 512 * KIB
    profiles: list[tuple[str, Transport, Crypto]] = [
        ("utp-plain", "utp", "plaintext"),
        ("tcp-plain", "tcp", "plaintext"),
        ("tcp-rc4", "tcp", "rc4"),
    ]
    seeders = [
        await start_lt(lt_transport_factory, name, transport=tr, crypto=cr, upload_rate=rate)
        for name, tr, cr in profiles
    ]
    ih = ""
    for s in seeders:
        ih = await lt(s.add_torrent, torrent, seed_dir, seed=True)
    async with Client(our_config(tmp_path, "us", encryption="prefer")) as client:
        started = time.monotonic()
        t = await client.add_metainfo(mi, peers=[("127.0.0.1", s.port) for s in seeders])
        table = PeerTable(t)
        async with asyncio.timeout(60):
            await t.wait_complete()
        record("3 lt (utp, tcp, tcp+rc4) -> us", total, time.monotonic() - started)
        shown = await table.stop()
        assert_same_tree(client.config.download_dir / NAME, seed_dir / NAME, files)
    for (_, tr, cr), s in zip(profiles, seeders, strict=True):
        want: Literal["utp", "tcp"] = "utp" if tr == "utp" else "tcp"
        await lt(assert_links, s, ih, transport=want, rc4=cr == "rc4", moved=_up)
    assert {("utp", False), ("tcp", True)} <= shown, shown
