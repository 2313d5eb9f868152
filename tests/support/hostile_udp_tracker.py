"""A scripted BEP 15 UDP tracker on loopback, honest or hostile on demand.

It parses requests with its own ``struct`` code (not ``core.tracker.udp_codec``)
so a test against it checks our client against an independent reading of
the BEP, and it records every request, including the BEP 41 options of
announces.

Modes (``mode=``):

``good``
    connect, announce (with ``peers``) and scrape as a real tracker would.
``wrong_tid``
    every answer carries a transaction id that is not the one we sent.
``truncated``
    the connect answer is cut to 12 bytes (the transaction id still matches).
``truncated_announce``
    a good connect, then an announce answer cut to 14 bytes.
``tiny``
    every answer is a 5-byte datagram.
``error``
    a good connect, then an error action with ``error_message`` to announces
    and scrapes.
``error_connect``
    an error action in answer to the connect.
``silent``
    never answers.

``drop_first=N`` drops the first N datagrams it receives whatever the mode
(to test retransmission).  Announces and scrapes with a connection id the
tracker never issued are dropped and counted in ``rejected``, as opentracker
does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import cast

MAGIC = 0x41727101980
MODES = (
    "good",
    "wrong_tid",
    "truncated",
    "truncated_announce",
    "tiny",
    "error",
    "error_connect",
    "silent",
)


@dataclass
class Received:
    """One request the tracker received (after ``drop_first``)."""

    action: int
    transaction_id: int
    connection_id: int
    raw: bytes
    #: Announce fields by BEP 15 name (info_hash, peer_id, downloaded, left,
    #: uploaded, event, ip, key, num_want, port); empty for other actions.
    fields: dict[str, object] = field(default_factory=dict)
    #: BEP 41 options of an announce as ``(type, payload)``, NOPs included as ``(1, b"")``.
    options: list[tuple[int, bytes]] = field(default_factory=list)
    #: The info-hashes of a scrape.
    info_hashes: list[bytes] = field(default_factory=list)


def _read_options(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        kind = data[pos]
        pos += 1
        if kind == 0:
            out.append((0, b""))
            break
        if kind == 1:
            out.append((1, b""))
            continue
        length = data[pos]
        out.append((kind, data[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    return out


class HostileUdpTracker(asyncio.DatagramProtocol):
    """Use as ``async with HostileUdpTracker(mode) as tracker: tracker.url``."""

    def __init__(
        self,
        mode: str = "good",
        *,
        host: str = "127.0.0.1",
        drop_first: int = 0,
        peers: list[tuple[str, int]] | None = None,
        interval: int = 1800,
        seeders: int = 7,
        leechers: int = 3,
        scrape_stats: dict[bytes, tuple[int, int, int]] | None = None,
        error_message: bytes = b"torrent not registered",
        path: str = "/announce",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.host = host
        self.drop_first = drop_first
        self.peers = peers if peers is not None else []
        self.interval = interval
        self.seeders = seeders
        self.leechers = leechers
        self.scrape_stats = scrape_stats or {}
        self.error_message = error_message
        self.path = path
        self.received: list[Received] = []
        self.dropped = 0
        self.rejected = 0
        self.issued: set[int] = set()
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._rng = random.Random(1234)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}{self.path}"

    def count(self, action: int) -> int:
        return sum(1 for r in self.received if r.action == action)

    async def __aenter__(self) -> HostileUdpTracker:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, 0), family=family
        )
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.dropped < self.drop_first:
            self.dropped += 1
            return
        if len(data) < 16:
            return
        connection_id, action, tid = struct.unpack_from(">QII", data)
        rec = Received(action, tid, connection_id, bytes(data))
        if action == 1 and len(data) >= 98:
            names = ("info_hash", "peer_id", "downloaded", "left", "uploaded")
            values = struct.unpack_from(">20s20sqqqIIIiH", data, 16)
            rec.fields = dict(
                zip((*names, "event", "ip", "key", "num_want", "port"), values, strict=True)
            )
            rec.options = _read_options(data[98:])
        elif action == 2:
            body = data[16:]
            rec.info_hashes = [body[i : i + 20] for i in range(0, len(body) - 19, 20)]
        self.received.append(rec)
        reply = self._answer(rec)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    # -- answers

    def _answer(self, rec: Received) -> bytes | None:
        mode = self.mode
        tid = rec.transaction_id
        if mode == "silent":
            return None
        if mode == "tiny":
            return b"\x00\x00\x00\x00\x00"
        if mode == "wrong_tid":
            tid = (tid + 1) & 0xFFFFFFFF
        if rec.action == 0:
            if rec.connection_id != MAGIC:
                return None
            if mode == "error_connect":
                return struct.pack(">II", 3, tid) + self.error_message
            cid = self._rng.getrandbits(64)
            self.issued.add(cid)
            reply = struct.pack(">IIQ", 0, tid, cid)
            return reply[:12] if mode == "truncated" else reply
        if rec.connection_id not in self.issued:
            self.rejected += 1
            return None
        if mode == "error":
            return struct.pack(">II", 3, tid) + self.error_message
        if rec.action == 1:
            reply = struct.pack(">IIIII", 1, tid, self.interval, self.leechers, self.seeders)
            reply += self._encoded_peers()
            return reply[:14] if mode == "truncated_announce" else reply
        if rec.action == 2:
            reply = struct.pack(">II", 2, tid)
            for h in rec.info_hashes:
                reply += struct.pack(">III", *self.scrape_stats.get(h, (0, 0, 0)))
            return reply
        return None

    def _encoded_peers(self) -> bytes:
        """6-byte entries on an IPv4 socket, 18-byte ones on IPv6 (BEP 15)."""
        want = 6 if ":" in self.host else 4
        out = b""
        for host, port in self.peers:
            addr = ipaddress.ip_address(host)
            if addr.version == want:
                out += addr.packed + struct.pack(">H", port)
        return out
