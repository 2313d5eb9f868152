"""uTP and MSE/PE in the engine: two Clients on 127.0.0.1 under every transport policy.

Each download is checked byte for byte (SHA-256 of every file) and the
peer table must say how the connection is carried (``PeerRow.transport``,
``PeerRow.encrypted``) on both ends.  The policies are the user's
(``ClientConfig.tcp`` / ``utp`` / ``encryption`` / ``allowed_crypto``):
uTP alone, TCP with encryption required, "prefer" meeting "disable" (falls
back to plain), "require" meeting "disable" (fails with an ``mse:`` drop
reason, both ways), uTP preferred with TCP after the uTP connect timeout,
and a policy changed on a running client.  The pure parts (the policy
table, the config's validation, the command line's flags) are checked
without sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from core.cli.download_cmd import transport_options
from core.cli.main import build_parser
from core.cli.usage import UsageError
from core.config import ALLOWED_CRYPTO, ENCRYPTION_POLICIES, ClientConfig, config_from_dict
from core.config import dump_config as dump
from core.engine.client import Client
from core.engine.torrent import Torrent
from core.errors import ConfigError
from core.events import PeerDisconnected, PeerRow
from core.formats.metainfo import Metainfo
from core.mse.handshake import CRYPTO_PLAINTEXT, CRYPTO_RC4, MseResponder, SkeyIndex
from core.net import dialer
from core.net.dialer import (
    HINT_NO_UTP,
    HINT_PLAIN,
    Dialer,
    DialError,
    Link,
    TransportPolicy,
    crypto_bits,
)
from core.net.stream import ByteStream
from core.net.udp_mux import UdpMux
from core.net.utp_socket import UtpSocket
from core.stats import TorrentState
from tests.support.engine import loopback_config, make_torrent, tree_digest

LOCAL = "127.0.0.1"
#: A multi-file torrent whose files share pieces (and an empty one).
FILES = {"album/a.bin": 700_001, "album/sub/b.bin": 65_536 * 3 + 17, "album/empty": 0}
PIECE = 65_536
#: Seeder upload limit: the download lasts long enough to see the peer row.
SLOW = 1 << 20


@dataclasses.dataclass
class Pair:
    """A seeder with the whole torrent and a leecher that knows nothing yet."""

    seeder: Client
    leecher: Client
    mi: Metainfo
    src: Path
    torrent: Torrent

    @property
    def seeder_address(self) -> tuple[str, int]:
        return (LOCAL, self.seeder.listen_port)

    def start(self) -> None:
        self.torrent.add_peers([self.seeder_address])

    async def download(self, timeout: float = 15.0) -> tuple[PeerRow, PeerRow]:
        """Download everything; the leecher's row for the seeder and the seeder's for it."""
        self.start()
        rows = await _rows_while_connected(self.torrent, self.seeder.torrent(self.mi.info_hash))
        async with asyncio.timeout(timeout):
            await self.torrent.wait_complete()
        assert self.torrent.state is TorrentState.SEEDING
        assert tree_digest(self.leecher.config.download_dir) == tree_digest(self.src)
        return rows


@asynccontextmanager
async def pair(tmp: Path, seeder: dict[str, Any], leecher: dict[str, Any]) -> AsyncIterator[Pair]:
    src = tmp / "src"
    mi = make_torrent(src, FILES, PIECE)
    async with (
        Client(loopback_config(tmp, "seed", upload_rate_limit=SLOW, **seeder)) as s,
        Client(loopback_config(tmp, "leech", **leecher)) as leech,
    ):
        st = await s.add_metainfo(mi, download_dir=src)
        assert st.state is TorrentState.SEEDING
        t = await leech.add_metainfo(mi)
        yield Pair(s, leech, mi, src, t)


async def _rows_while_connected(leech: Torrent, seed: Torrent | None) -> tuple[PeerRow, PeerRow]:
    """Both ends' rows once both have one (the connection closes when both are complete)."""
    assert seed is not None
    async with asyncio.timeout(10):
        while True:
            mine, theirs = leech.peer_rows(), seed.peer_rows()
            if mine and theirs:
                return mine[0], theirs[0]
            await asyncio.sleep(0.01)


async def _disconnect_reason(client: Client, torrent: Torrent, address: tuple[str, int]) -> str:
    sub = client.bus.subscribe(kinds=[PeerDisconnected])
    torrent.add_peers([address])
    async with asyncio.timeout(10):
        while True:
            ev = await sub.get()
            if isinstance(ev, PeerDisconnected) and ev.address == address:
                return ev.reason


# --------------------------------------------------------------------------- downloads


@pytest.mark.timeout(30)
async def test_download_over_utp_only(tmp_path: Path) -> None:
    """tcp=False on both ends: no TCP listener, the UDP port is the listen port, uTP carries it."""
    only_utp = {"utp": True, "tcp": False, "encryption": "disable"}
    async with pair(tmp_path, only_utp, only_utp) as p:
        mine, theirs = await p.download()
        assert (mine.transport, mine.encrypted, mine.incoming) == ("utp", False, False)
        assert (theirs.transport, theirs.encrypted, theirs.incoming) == ("utp", False, True)


@pytest.mark.timeout(30)
async def test_utp_with_rc4_required(tmp_path: Path) -> None:
    """MSE over uTP: the encryption layer sits on either transport."""
    policy = {"utp": True, "tcp": False, "encryption": "require", "allowed_crypto": "rc4"}
    async with pair(tmp_path, policy, policy) as p:
        mine, theirs = await p.download()
        assert (mine.transport, mine.encrypted) == ("utp", True)
        assert (theirs.transport, theirs.encrypted) == ("utp", True)


@pytest.mark.timeout(30)
async def test_tcp_with_encryption_required_on_both(tmp_path: Path) -> None:
    policy = {"encryption": "require", "allowed_crypto": "rc4"}
    async with pair(tmp_path, policy, policy) as p:
        mine, theirs = await p.download()
        assert (mine.transport, mine.encrypted) == ("tcp", True)
        assert (theirs.transport, theirs.encrypted) == ("tcp", True)


@pytest.mark.timeout(30)
async def test_required_mse_in_plaintext_mode_is_not_encrypted(tmp_path: Path) -> None:
    """allowed_crypto "plaintext": MSE hides the handshake only, so no ``E``."""
    policy = {"encryption": "require", "allowed_crypto": "plaintext"}
    async with pair(tmp_path, policy, policy) as p:
        mine, theirs = await p.download()
        assert (mine.transport, mine.encrypted) == ("tcp", False)
        assert theirs.encrypted is False


@pytest.mark.timeout(30)
async def test_prefer_against_disable_falls_back_to_plain(tmp_path: Path) -> None:
    """The MSE attempt is refused by a plain-only seeder; the retry in plain BitTorrent works."""
    async with pair(tmp_path, {"encryption": "disable"}, {"encryption": "prefer"}) as p:
        mine, theirs = await p.download()
        assert (mine.transport, mine.encrypted) == ("tcp", False)
        assert theirs.encrypted is False


@pytest.mark.timeout(30)
async def test_prefer_against_require_encrypts(tmp_path: Path) -> None:
    async with pair(tmp_path, {"encryption": "require"}, {"encryption": "prefer"}) as p:
        mine, _ = await p.download()
        assert mine.encrypted  # both allow RC4 and plaintext: the responder picks RC4


@pytest.mark.timeout(30)
async def test_require_against_disable_fails_with_an_mse_reason(tmp_path: Path) -> None:
    # We require, they only speak plain: our MSE handshake is dropped by them.
    async with pair(tmp_path, {"encryption": "disable"}, {"encryption": "require"}) as p:
        reason = await _disconnect_reason(p.leecher, p.torrent, p.seeder_address)
        assert reason.startswith("dial failed: mse: "), reason
        assert p.torrent.peer_rows() == ()
    # We only speak plain, they require: they refuse our plain handshake.
    async with pair(tmp_path / "2", {"encryption": "require"}, {"encryption": "disable"}) as p:
        reason = await _disconnect_reason(p.leecher, p.torrent, p.seeder_address)
        assert not reason.startswith("dial failed"), reason  # it connected, then was dropped
        assert p.torrent.peer_rows() == ()


@pytest.mark.timeout(30)
async def test_utp_is_preferred_when_both_speak_it(tmp_path: Path) -> None:
    both = {"utp": True, "tcp": True, "encryption": "disable"}
    async with pair(tmp_path, both, both) as p:
        mine, theirs = await p.download()
        assert mine.transport == "utp" and theirs.transport == "utp"


@pytest.mark.timeout(30)
async def test_utp_falls_back_to_tcp_when_the_peer_has_no_utp(tmp_path: Path) -> None:
    async with pair(
        tmp_path,
        {"utp": False, "encryption": "disable"},
        {"utp": True, "tcp": True, "utp_connect_timeout": 0.5, "encryption": "prefer"},
    ) as p:
        mine, theirs = await p.download()
        assert mine.transport == "tcp" and theirs.transport == "tcp"
        assert not mine.encrypted  # prefer met disable on TCP too
        # Both fallbacks are remembered: the next dial goes straight to plain TCP.
        assert p.leecher.dialer.hints(p.seeder_address) == {HINT_NO_UTP, HINT_PLAIN}


@pytest.mark.timeout(30)
async def test_utp_only_peer_cannot_reach_a_tcp_only_one(tmp_path: Path) -> None:
    async with pair(
        tmp_path,
        {"utp": False, "encryption": "disable"},
        {"utp": True, "tcp": False, "utp_connect_timeout": 0.3},
    ) as p:
        reason = await _disconnect_reason(p.leecher, p.torrent, p.seeder_address)
        assert reason == "dial failed: utp: connect timeout", reason


@pytest.mark.timeout(30)
async def test_policy_changes_apply_to_the_next_connection(tmp_path: Path) -> None:
    """Client.set_connection_policy (the TUI's live settings): no restart needed."""
    async with pair(tmp_path, {"encryption": "require"}, {"encryption": "disable"}) as p:
        reason = await _disconnect_reason(p.leecher, p.torrent, p.seeder_address)
        assert not reason.startswith("dial failed"), reason
        p.leecher.set_connection_policy(encryption="prefer")
        assert p.leecher.config.encryption == "prefer"
        mine, _ = await p.download()
        assert mine.encrypted
        with pytest.raises(ConfigError, match="both off"):
            p.leecher.set_connection_policy(tcp=False, utp=False)
        assert p.leecher.config.tcp  # unchanged after a refused change


# --------------------------------------------------------------------------- the dialer alone


class Collect:
    """A consumer that keeps what it reads and how the stream ended."""

    def __init__(self) -> None:
        self.stream: ByteStream | None = None
        self.data = bytearray()
        self.closed: str | None = None
        self._buf = bytearray(7)  # small on purpose: replays come in several pieces

    def stream_opened(self, stream: ByteStream) -> None:
        self.stream = stream

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self._buf[:nbytes]

    def stream_writable(self) -> None:
        pass

    def stream_closed(self, reason: str) -> None:
        self.closed = reason


@pytest.mark.timeout(30)
async def test_bytes_and_an_end_right_after_the_mse_handshake_reach_the_consumer() -> None:
    """A responder that talks and hangs up in the segment ending the handshake.

    The bytes arrive before the dialer hands the stream over (it learns of
    the handshake in the same read) and are held meanwhile; the consumer
    must still get them, in order, then the end (which comes after the
    hand-over, straight from the re-pointed stream).
    """
    info_hash = bytes(range(20))
    early = b"early bytes from the responder" * 3

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        responder = MseResponder(SkeyIndex([info_hash]), allowed=CRYPTO_RC4)
        while data := await reader.read(4096):
            result = responder.receive(data)
            out = responder.data_to_send()
            if result is not None:
                assert result.encryptor is not None
                writer.write(out + result.encryptor.process(early))
                writer.close()
                return
            writer.write(out)

    server = await asyncio.start_server(serve, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    consumer = Collect()
    seen: list[Link] = []

    def make(link: Link) -> Collect:
        seen.append(link)
        return consumer

    try:
        policy = TransportPolicy(utp=False, encryption="require", allowed_crypto="rc4")
        link = await Dialer().dial((LOCAL, port), info_hash, policy, make)
        assert link == Link("tcp", True) and seen == [link]
        async with asyncio.timeout(5):
            while consumer.closed is None:
                await asyncio.sleep(0.01)
        assert bytes(consumer.data) == early
        assert consumer.stream is not None
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(30)
async def test_the_dialer_remembers_a_peer_without_utp() -> None:
    """After uTP timed out and TCP worked, the next dial of that address skips uTP."""
    server = await asyncio.start_server(lambda r, w: None, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    mux = await UdpMux.open(LOCAL, 0)  # a uTP socket, but nobody answers uTP at ``port``
    utp = UtpSocket(mux)
    asked: list[str] = []

    def utp_for(ip: str) -> UtpSocket:
        asked.append(ip)
        return utp

    d = Dialer(utp_for)
    policy = TransportPolicy(encryption="disable", utp_timeout=0.2)
    consumers: list[Collect] = []

    def make(link: Link) -> Collect:
        consumers.append(Collect())
        return consumers[-1]

    try:
        assert await d.dial((LOCAL, port), bytes(20), policy, make) == Link("tcp", False)
        assert asked == [LOCAL] and d.hints((LOCAL, port)) == {HINT_NO_UTP}
        assert await d.dial((LOCAL, port), bytes(20), policy, make) == Link("tcp", False)
        assert asked == [LOCAL]  # uTP not tried again
        # With TCP off the hint cannot apply: uTP is tried (and fails, so it is forgotten).
        with pytest.raises(DialError, match=r"^utp: connect timeout$"):
            await d.dial((LOCAL, port), bytes(20), dataclasses.replace(policy, tcp=False), make)
        assert asked == [LOCAL, LOCAL] and d.hints((LOCAL, port)) == frozenset()
    finally:
        for c in consumers:
            if c.stream is not None:
                c.stream.abort()
        await utp.aclose()
        await mux.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(30)
async def test_a_refused_connection_is_aborted() -> None:
    """The consumer factory says no (the torrent went away): the dial fails, nothing leaks."""
    accepted = asyncio.Event()
    ended = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # until we hang up
        ended.set()

    server = await asyncio.start_server(serve, LOCAL, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        policy = TransportPolicy(utp=False, encryption="disable")
        with pytest.raises(DialError, match="refused by the caller"):
            await Dialer().dial((LOCAL, port), bytes(20), policy, lambda link: None)
        async with asyncio.timeout(5):
            await ended.wait()
        assert accepted.is_set()
    finally:
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- the pure parts


def test_policy_table() -> None:
    assert TransportPolicy(encryption="require").handshakes() == (True,)
    assert TransportPolicy(encryption="prefer").handshakes() == (True, False)
    assert TransportPolicy(encryption="disable").handshakes() == (False,)
    assert crypto_bits("rc4") == CRYPTO_RC4
    assert crypto_bits("plaintext") == CRYPTO_PLAINTEXT
    assert crypto_bits("both") == CRYPTO_RC4 | CRYPTO_PLAINTEXT
    with pytest.raises(ValueError, match="allowed_crypto"):
        TransportPolicy(allowed_crypto="des")
    with pytest.raises(ValueError, match="encryption"):
        TransportPolicy(encryption="maybe")
    # The config and the network layer spell the choices alike.
    assert set(ENCRYPTION_POLICIES) == set(dialer.ENCRYPTION_POLICIES)
    assert set(ALLOWED_CRYPTO) == set(dialer.ALLOWED_CRYPTO)
    assert Link() == dialer.PLAIN_TCP == Link("tcp", False)


def test_dial_error_lists_every_attempt() -> None:
    err = DialError(["utp: connect timeout", "tcp: Connection refused"])
    assert err.reason == "utp: connect timeout; tcp: Connection refused"
    assert DialError([]).reason == "no transport enabled"


async def test_a_client_with_no_transport_for_the_address_fails_fast(tmp_path: Path) -> None:
    """uTP only, but no uTP socket (no UDP at all): the dial fails at once, saying why."""
    cfg = loopback_config(tmp_path, "c", utp=True, tcp=False)
    client = Client(cfg)  # not started: no sockets at all
    try:
        with pytest.raises(DialError, match="no uTP socket"):
            await client.dial((LOCAL, 1), bytes(20), lambda link: None)
    finally:
        await client.close()


def test_config_defaults_and_validation() -> None:
    cfg = ClientConfig()
    assert (cfg.encryption, cfg.allowed_crypto, cfg.utp_connect_timeout) == ("prefer", "both", 3.0)
    assert cfg.utp and cfg.tcp
    bad: tuple[tuple[str, object, str], ...] = (
        ("encryption", "maybe", "encryption: must be one of prefer, require, disable"),
        ("allowed_crypto", "des", "allowed_crypto: must be one of"),
        ("utp_connect_timeout", 0, "utp_connect_timeout: must be a positive number"),
        ("encryption", 1, "encryption: expected a string"),
    )
    for name, value, needle in bad:
        with pytest.raises(ConfigError, match=needle):
            config_from_dict({name: value})


def test_config_round_trips_through_toml() -> None:
    cfg = ClientConfig(
        encryption="require", allowed_crypto="rc4", utp=False, utp_connect_timeout=1.5
    )
    assert config_from_dict(tomllib.loads(dump(cfg))) == cfg
    assert "encryption" not in dump(ClientConfig(), only_changed=True)


def _download_args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["download", "x.torrent", *extra])


def test_cli_transport_flags() -> None:
    assert transport_options(_download_args()) == {}
    assert transport_options(_download_args("--encryption", "require")) == {"encryption": "require"}
    assert transport_options(_download_args("--no-utp")) == {"utp": False}
    assert transport_options(_download_args("--no-tcp")) == {"tcp": False}
    with pytest.raises(UsageError, match="no way to reach a peer"):
        transport_options(_download_args("--no-utp", "--no-tcp"))
    with pytest.raises(SystemExit):
        _download_args("--encryption", "sometimes")
