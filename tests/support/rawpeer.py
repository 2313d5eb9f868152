"""A scripted raw-socket BitTorrent peer for hostile-peer tests.

:class:`RawPeer` is one TCP connection on asyncio streams that speaks just
enough of the wire protocol (the encoders and decoders of
``core.wire.messages``, no connection state machine) to say exactly what a
test wants, including what the real state machine would refuse to send:
unrequested blocks, corrupted data, impossible lengths, garbage.

:class:`RawListener` accepts connections (our client dials it, as it would a
seeder from a tracker) and runs a script coroutine for each one.
:class:`RawSeeder` is such a script: an honest seeder whose ``block`` and
``on_request`` hooks subclasses override to lie.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
from collections.abc import Awaitable, Callable

from bitarray import bitarray

from core.wire.messages import (
    HANDSHAKE_LENGTH,
    Bitfield,
    Choke,
    HaveAll,
    Message,
    Piece,
    Reject,
    Request,
    Reserved,
    Unchoke,
    decode_handshake,
    decode_message,
    encode,
    encode_handshake,
)

_U32 = struct.Struct(">I")
#: Frames longer than this are not read into memory by the raw peer itself.
MAX_FRAME = 2 << 20


def make_peer_id(tag: bytes = b"RAW") -> bytes:
    """A 20-byte peer id in the BEP 20 style, distinct per tag."""
    return (b"-RP0001-" + hashlib.sha1(tag).digest())[:20]


class RawPeer:
    """One TCP connection; every method writes or reads exactly what it says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        sockname = writer.get_extra_info("sockname")
        self.local_address: tuple[str, int] = (str(sockname[0]), int(sockname[1]))
        self.remote_peer_id: bytes | None = None
        self.received: list[Message] = []
        self.bytes_received = 0

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawPeer:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    # --- writing -------------------------------------------------------------

    async def send_raw(self, data: bytes) -> bool:
        """Write bytes; False once the other side has dropped us."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def send(self, *msgs: Message) -> bool:
        return await self.send_raw(b"".join(encode(m) for m in msgs))

    async def send_handshake(
        self,
        info_hash: bytes,
        peer_id: bytes | None = None,
        reserved: Reserved | None = None,
    ) -> bool:
        reserved = reserved or Reserved.make(fast=True)
        return await self.send_raw(encode_handshake(info_hash, peer_id or make_peer_id(), reserved))

    # --- reading -------------------------------------------------------------

    async def read_handshake(self) -> tuple[Reserved, bytes, bytes]:
        """The remote's full 68-byte handshake: (reserved, info-hash, peer id)."""
        data = await self.reader.readexactly(HANDSHAKE_LENGTH)
        self.bytes_received += len(data)
        reserved, info_hash, peer_id = decode_handshake(data)
        assert peer_id is not None
        self.remote_peer_id = peer_id
        return reserved, info_hash, peer_id

    async def read_message(self) -> Message | None:
        """The next message, or None at EOF / reset."""
        try:
            head = await self.reader.readexactly(4)
            (length,) = _U32.unpack(head)
            if length > MAX_FRAME:
                raise AssertionError(f"the client sent a {length}-byte frame")
            body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return None
        self.bytes_received += 4 + length
        msg = decode_message(head + body)
        self.received.append(msg)
        return msg

    async def read_until(self, kind: type, timeout: float = 5.0) -> Message | None:
        """Read until a message of ``kind`` arrives (None if the connection ends first)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.read_message()
                if msg is None or isinstance(msg, kind):
                    return msg

    async def wait_dropped(self, timeout: float) -> bool:
        """Discard input until the remote closes or resets; False if still open at ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        data = await self.reader.read(1 << 16)
                    except (ConnectionError, OSError):
                        return True
                    if not data:
                        return True
                    self.bytes_received += len(data)
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


Script = Callable[[RawPeer], Awaitable[None]]


class RawListener:
    """Listens on 127.0.0.1 and runs ``script`` for every accepted connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.port = 0
        self.connections = 0
        self.errors: list[BaseException] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._peers: list[RawPeer] = []

    async def __aenter__(self) -> RawListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in self._peers:
            await peer.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = RawPeer(reader, writer)
        self._peers.append(peer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.script(peer)
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client dropped us: that is what most scripts provoke
        except BaseException as exc:  # a broken script must fail the test, not vanish
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            await peer.close()


class RawSeeder:
    """An answering seeder: handshake, HaveAll (or a full bitfield), unchoke, serve.

    ``payload`` is the torrent's whole content (a single-file torrent).  The
    hooks ``block`` and ``on_request`` are where subclasses lie.  Every
    request seen is kept in ``requests``.
    """

    def __init__(
        self,
        info_hash: bytes,
        payload: bytes,
        piece_length: int,
        *,
        fast: bool = True,
        peer_id: bytes | None = None,
    ) -> None:
        self.info_hash = info_hash
        self.payload = payload
        self.piece_length = piece_length
        self.num_pieces = -(-len(payload) // piece_length)
        self.fast = fast
        self.peer_id = peer_id or make_peer_id(b"seeder" + info_hash)
        self.requests: list[Request] = []
        self.served: list[Request] = []

    async def __call__(self, peer: RawPeer) -> None:
        _, info_hash, _ = await peer.read_handshake()
        assert info_hash == self.info_hash, "the client dialled with the wrong info-hash"
        await peer.send_handshake(self.info_hash, self.peer_id, Reserved.make(fast=self.fast))
        if self.fast:
            await peer.send(HaveAll(), Unchoke())
        else:
            bits = Bitfield(_full_bitfield(self.num_pieces))
            await peer.send(bits, Unchoke())
        while True:
            msg = await peer.read_message()
            if msg is None:
                return
            if isinstance(msg, Request):
                self.requests.append(msg)
                await self.on_request(peer, msg)

    def block(self, req: Request) -> bytes:
        start = req.index * self.piece_length + req.begin
        return self.payload[start : start + req.length]

    async def on_request(self, peer: RawPeer, req: Request) -> None:
        self.served.append(req)
        await peer.send(Piece(req.index, req.begin, self.block(req)))


class CorruptingSeeder(RawSeeder):
    """Serves every block of the pieces in ``bad_pieces`` (all pieces if None) flipped."""

    def __init__(self, *args: object, bad_pieces: set[int] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.bad_pieces = bad_pieces

    def block(self, req: Request) -> bytes:
        data = super().block(req)
        if self.bad_pieces is None or req.index in self.bad_pieces:
            return bytes(b ^ 0xFF for b in data)
        return data


class OneBadBlockSeeder(RawSeeder):
    """Serves exactly one corrupted block, then chokes and rejects everything else.

    The rest of that piece must then come from another peer, so the failed
    piece has several contributors and the engine must compare block hashes
    to find the liar.  ``bad`` is the request it answered.  With
    ``hang_up`` it disconnects instead of staying, choked and silent.
    """

    def __init__(self, *args: object, hang_up: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hang_up = hang_up
        self.bad: Request | None = None
        self.answered = asyncio.Event()

    async def on_request(self, peer: RawPeer, req: Request) -> None:
        if self.bad is None:
            self.bad = req
            corrupt = bytes(b ^ 0x5A for b in super().block(req))
            await peer.send(Piece(req.index, req.begin, corrupt), Choke())
            self.answered.set()
            if self.hang_up:
                await peer.close()
        else:
            await peer.send(Reject(req.index, req.begin, req.length))


def _full_bitfield(n: int) -> bitarray:
    bits = bitarray(n, endian="big")
    bits.setall(1)
    return bits
