"""The peer wire state machine, sans-IO in the style of h11.

A :class:`PeerConnection` is fed bytes (``receive_data`` or, from an
``asyncio.BufferedProtocol``, ``get_buffer`` / ``buffer_updated`` so the
socket writes straight into our buffer) and hands back typed events from
``next_event()`` until :data:`NEED_DATA`.  ``send(msg)`` returns the bytes to
write.  Time is never read: the caller passes ``now`` and asks
``next_deadline()`` when to call ``handle_timeout(now)``.

The connection enforces the protocol in both directions.  The peer's faults
raise :class:`~core.errors.RemoteProtocolError` (the driver drops the peer
and records ``str(exc)``); the connection then stays failed.  Our own misuse
raises :class:`~core.errors.LocalProtocolError` and changes nothing.

Some peer messages need an automatic answer (BEP 6 rejects).  Those bytes
accumulate in an outbox the driver drains with ``data_to_send()`` after
handling events.

Lifecycle::

    initiator: conn = PeerConnection(our_id, info_hash, lengths); write(conn.initiate())
    receiver:  conn = PeerConnection(our_id, None); ... next_event() -> RemoteInfoHash
               write(conn.accept(lengths))            # or close if we do not serve it
    both:      next_event() -> HandshakeReceived, then messages

Why this module is long (~710 lines): it is one state machine over one
receive buffer, and its message handlers are a dispatch table over that
buffer; what could live apart does (sending in ``sending.py``, framing in
``buffer.py``, codecs in ``messages.py``, extensions in ``extensions.py``).
"""

from __future__ import annotations

import enum
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, KeysView

from bitarray import bitarray

from ..errors import LocalProtocolError, RemoteProtocolError
from .buffer import DEFAULT_BUFFER_SIZE, ReceiveBuffer
from .events import (
    NEED_DATA,
    Event,
    ExtendedMessage,
    HandshakeReceived,
    PeerTimeout,
    RemoteInfoHash,
    RequestsDropped,
    Sentinel,
)
from .extensions import ExtensionHandshake, decode_extension_handshake
from .lengths import PieceSizes, block_error
from .messages import (
    HANDSHAKE_HEADER_LENGTH,
    PARSERS,
    PROTOCOL_HEADER,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Have,
    HaveAll,
    HaveNone,
    KeepAlive,
    MsgId,
    Piece,
    Reject,
    Request,
    Reserved,
    Suggest,
    decode_handshake,
    encode,
    encode_handshake,
    payload_bounds,
)
from .sending import Block, Outgoing, OutgoingMixin

__all__ = [
    "NEED_DATA",
    "Event",
    "ExtendedMessage",
    "HandshakeReceived",
    "PeerConnection",
    "PeerTimeout",
    "RemoteInfoHash",
    "RequestsDropped",
    "Sentinel",
]

#: Send a keep-alive after this much silence on our side.  Peers commonly drop
#: a connection after 120 s without a message, so stay well inside that.
DEFAULT_KEEPALIVE_INTERVAL = 90.0
#: Drop a peer that sent nothing at all (not even a keep-alive) for this long.
DEFAULT_IDLE_TIMEOUT = 240.0
#: Both handshakes must complete within this time.
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: Requests we queue from one peer (advertise it as ``reqq``).  libtorrent's default.
DEFAULT_MAX_QUEUE = 250
#: Requests we refuse without sending anything in between (beyond our queue,
#: or racing our choke), as a multiple of ``max_queue``, before a peer counts
#: as flooding.  Real clients overshoot ``reqq``: aria2 keeps ~500 requests in
#: flight whatever we advertise, and every request in flight when we choke
#: still arrives.  Those are refused (BEP 6 reject) or dropped, never fatal; a
#: peer that keeps asking while we send it nothing is only wasting our time.
FLOOD_FACTOR = 8
#: Have/AllowedFast indices remembered before the piece count is known.
MAX_PENDING_INDICES = 1 << 16

_U32 = struct.Struct(">I")
_II = struct.Struct(">II")
_III = struct.Struct(">III")
_KEEPALIVE_BYTES = encode(KeepAlive())
_KEEPALIVE = KeepAlive()
_CHOKE = Choke()

_Handler = Callable[[int, int], "Event | None"]


class _State(enum.Enum):
    HEADER = enum.auto()  # waiting for the remote's 48-byte handshake header
    ACCEPT = enum.auto()  # receiver: RemoteInfoHash returned, waiting for accept()
    PEER_ID = enum.auto()  # waiting for the remote's 20-byte peer id
    OPEN = enum.auto()
    ERROR = enum.auto()


class PeerConnection(ReceiveBuffer, OutgoingMixin):
    """One peer connection's protocol state.  See the module docstring for the flow.

    ``info_hash`` is None for an incoming connection (the remote names it);
    ``lengths`` is None until the metadata is known (magnet links), then
    given with ``set_lengths``.  ``fast``/``extended``/``dht`` are the
    reserved bits we advertise; a feature is used only if both sides set it.
    ``max_queue`` bounds the peer's queued requests (advertise it as
    ``reqq``).  ``now`` starts the handshake timer.
    """

    def __init__(
        self,
        our_peer_id: bytes,
        info_hash: bytes | None,
        lengths: PieceSizes | None = None,
        *,
        fast: bool = True,
        extended: bool = True,
        dht: bool = False,
        max_queue: int = DEFAULT_MAX_QUEUE,
        now: float = 0.0,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
    ) -> None:
        if len(our_peer_id) != 20 or (info_hash is not None and len(info_hash) != 20):
            raise ValueError("peer id and info-hash must be 20 bytes")
        self.our_peer_id = our_peer_id
        self.info_hash = info_hash
        self.initiator = info_hash is not None
        self.reserved = Reserved.make(dht=dht, fast=fast, extended=extended)
        self.max_queue = max_queue
        self.keepalive_interval = keepalive_interval
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self._lengths = lengths
        self._now = self._created = self._last_recv = self._last_sent = now

        super().__init__(buffer_size)

        self._state = _State.HEADER
        self._handshake_sent = False
        self._error: str | None = None
        self._events: deque[Event] = deque()
        self._outbox = bytearray()

        self.peer_id: bytes | None = None
        self.remote_reserved: Reserved | None = None
        self.fast_enabled = False
        self.extended_enabled = False

        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False

        self._remote_have: bitarray | None = None
        self._remote_have_seen = False  # bitfield / have all / have none / have received
        self._pending_bitfield: bitarray | None = None
        self._pending_have_all = False
        self._pending_haves: set[int] = set()
        self._our_have: bitarray | None = None
        self._our_have_sent = False

        self._our_requests: dict[Block, None] = {}
        self._cancelled: OrderedDict[Block, None] = OrderedDict()
        # The peer's queued requests -> when each arrived (oldest first), so a
        # seeder that stops serving someone can say for how long.
        self._their_requests: dict[Block, float] = {}
        self._last_piece_sent: float | None = None
        self._refused_requests = 0

        self.allowed_fast_in: set[int] = set()  # the peer lets us request these while choked
        self.allowed_fast_out: set[int] = set()  # we let the peer request these while choked

        self._local_ext: dict[int, str] = {}  # ids we advertised -> extension name
        self.remote_extensions: dict[str, int] = {}  # name -> id the peer wants
        self.remote_ext_handshake: ExtensionHandshake | None = None

        self._lo = [1] * 256
        self._hi = [0] * 256
        self._handlers: list[_Handler | None] = [None] * 256
        self._senders: dict[type, Callable[[Outgoing], bytes]] = {}

    # --- handshake --------------------------------------------------------

    def initiate(self, now: float | None = None) -> bytes:
        """Initiator: our handshake, to be written first."""
        if not self.initiator or self._handshake_sent:
            raise LocalProtocolError("initiate() is for a fresh outgoing connection")
        assert self.info_hash is not None
        return self._handshake_bytes(self.info_hash, now)

    def accept(self, lengths: PieceSizes | None = None, now: float | None = None) -> bytes:
        """Receiver: serve the torrent named in :class:`RemoteInfoHash`; returns our handshake."""
        if self._state is not _State.ACCEPT:
            raise LocalProtocolError("accept() only after RemoteInfoHash")
        assert self.info_hash is not None
        if lengths is not None:
            self._lengths = lengths
        self._state = _State.PEER_ID
        return self._handshake_bytes(self.info_hash, now)

    def _handshake_bytes(self, info_hash: bytes, now: float | None) -> bytes:
        self._handshake_sent = True
        self._last_sent = self._now if now is None else now
        return encode_handshake(info_hash, self.our_peer_id, self.reserved)

    def _handshake_event(self) -> Event | Sentinel:
        start = self._start
        avail = self._end - start
        if self._state is _State.HEADER:
            if self.initiator and not self._handshake_sent:
                raise LocalProtocolError("call initiate() before reading")
            have = min(avail, len(PROTOCOL_HEADER))
            if self._mv[start : start + have] != PROTOCOL_HEADER[:have]:
                raise RemoteProtocolError("not a BitTorrent handshake")
            if avail < HANDSHAKE_HEADER_LENGTH:
                return NEED_DATA
            reserved, info_hash, _ = decode_handshake(self._mv[start : start + 48])
            self._start = start = start + 48
            avail -= 48
            self.remote_reserved = reserved
            if not self.initiator:
                self.info_hash = info_hash
                self._state = _State.ACCEPT
                return RemoteInfoHash(info_hash, reserved)
            if info_hash != self.info_hash:
                raise RemoteProtocolError("peer answered with another info-hash")
            self._state = _State.PEER_ID
        if self._state is _State.ACCEPT:
            raise LocalProtocolError("accept() the info-hash (or close) before reading on")
        if avail < 20:
            return NEED_DATA
        peer_id = bytes(self._mv[start : start + 20])
        self._start = start + 20
        if peer_id == self.our_peer_id:
            raise RemoteProtocolError("connected to ourselves")
        remote = self.remote_reserved
        assert remote is not None and self.info_hash is not None
        self.peer_id = peer_id
        self.fast_enabled = remote.fast and self.reserved.fast
        self.extended_enabled = remote.extended and self.reserved.extended
        self._state = _State.OPEN
        self._setup_tables()
        if self._lengths is not None:
            self._init_have_sets(self._lengths.num_pieces)
        return HandshakeReceived(
            self.info_hash, peer_id, remote, self.fast_enabled, self.extended_enabled
        )

    def _setup_tables(self) -> None:
        allowed = [MsgId.CHOKE, MsgId.UNCHOKE, MsgId.INTERESTED, MsgId.NOT_INTERESTED]
        allowed += [MsgId.HAVE, MsgId.BITFIELD, MsgId.REQUEST, MsgId.PIECE, MsgId.CANCEL]
        allowed.append(MsgId.PORT)
        if self.fast_enabled:
            allowed += [MsgId.SUGGEST, MsgId.HAVE_ALL, MsgId.HAVE_NONE, MsgId.REJECT]
            allowed.append(MsgId.ALLOWED_FAST)
        if self.extended_enabled:
            allowed.append(MsgId.EXTENDED)
        for msg_id in allowed:
            bounds = payload_bounds(msg_id)
            assert bounds is not None
            self._lo[msg_id], self._hi[msg_id] = bounds[0] + 1, bounds[1] + 1
            self._handlers[msg_id] = getattr(self, f"_on_{msg_id.name.lower()}")
        if self._lengths is not None:
            self._lo[MsgId.BITFIELD] = self._hi[MsgId.BITFIELD] = (
                1 + (self._lengths.num_pieces + 7) // 8
            )
        self._senders = self._build_senders()

    def _init_have_sets(self, num_pieces: int) -> None:
        self._remote_have = bitarray(num_pieces, endian="big")
        self._remote_have.setall(0)
        self._our_have = self._remote_have.copy()

    def set_lengths(self, lengths: PieceSizes) -> None:
        """Give the piece geometry once known (magnet links); validates what arrived before.

        Raises RemoteProtocolError if the peer's earlier bitfield or haves do
        not fit the torrent.
        """
        if self._lengths is not None:
            if self._lengths != lengths:
                raise LocalProtocolError("lengths already set to different values")
            return
        self._lengths = lengths
        if self._state is not _State.OPEN:
            return
        n = lengths.num_pieces
        self._lo[MsgId.BITFIELD] = self._hi[MsgId.BITFIELD] = 1 + (n + 7) // 8
        self._init_have_sets(n)
        try:
            if self._pending_bitfield is not None:
                self._apply_bitfield(self._pending_bitfield)
            if self._pending_have_all:
                self._mark_all(True)
            for index in self._pending_haves:
                self._check_remote_index(index, "have")
                self._set_remote_have(index)
            for index in self.allowed_fast_in:
                self._check_remote_index(index, "allowed fast")
        except RemoteProtocolError as exc:
            self._fail(str(exc))
            raise
        self._pending_bitfield = None
        self._pending_haves.clear()

    # --- receiving --------------------------------------------------------

    def _touch(self, now: float | None) -> None:
        if now is not None:
            self._now = now
        self._last_recv = self._now

    def next_event(self) -> Event | Sentinel:
        """The next event, or NEED_DATA.  Raises RemoteProtocolError on a protocol violation."""
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        if self._events:
            return self._events.popleft()
        try:
            if self._state is not _State.OPEN:
                return self._handshake_event()
            buf = self._buf
            while True:
                start = self._start
                avail = self._end - start
                if avail < 4:
                    return NEED_DATA
                (length,) = _U32.unpack_from(buf, start)
                if length == 0:
                    self._start = start + 4
                    return _KEEPALIVE
                if avail < 5:
                    return NEED_DATA
                msg_id = buf[start + 4]
                if not self._lo[msg_id] <= length <= self._hi[msg_id]:
                    raise self._bad_frame(msg_id, length)
                if avail < 4 + length:
                    return NEED_DATA
                self._start = start + 4 + length
                handler = self._handlers[msg_id]
                assert handler is not None
                event = handler(start + 5, length - 1)
                if event is not None:
                    return event
        except RemoteProtocolError as exc:
            self._fail(str(exc))
            raise

    def events(self) -> Iterator[Event]:
        """Every event available now (stops at NEED_DATA)."""
        while True:
            event = self.next_event()
            if event is NEED_DATA:
                return
            assert not isinstance(event, Sentinel)
            yield event

    def data_to_send(self) -> bytes:
        """Automatic replies (BEP 6 rejects) produced while reading; drain after events."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def _fail(self, reason: str) -> None:
        self._state = _State.ERROR
        self._error = reason

    def _bad_frame(self, msg_id: int, length: int) -> RemoteProtocolError:
        if self._hi[msg_id] == 0:
            try:
                name = MsgId(msg_id).name
            except ValueError:
                return RemoteProtocolError(f"unknown message id {msg_id}")
            return RemoteProtocolError(f"{name} received but not negotiated")
        return RemoteProtocolError(
            f"{MsgId(msg_id).name} of length {length}, allowed "
            f"{self._lo[msg_id]}..{self._hi[msg_id]}"
        )

    # --- incoming message handlers: (payload offset, payload length) -> event

    def _on_choke(self, pos: int, n: int) -> Event | None:
        self.peer_choking = True
        if not self.fast_enabled and self._our_requests:
            dropped = tuple(Request(*key) for key in self._our_requests)
            for key in self._our_requests:
                self._remember_cancelled(key)
            self._our_requests.clear()
            self._events.append(RequestsDropped(dropped))
        return _CHOKE

    def _on_unchoke(self, pos: int, n: int) -> Event | None:
        self.peer_choking = False
        return PARSERS[MsgId.UNCHOKE](self._buf, pos, n)

    def _on_interested(self, pos: int, n: int) -> Event | None:
        self.peer_interested = True
        return PARSERS[MsgId.INTERESTED](self._buf, pos, n)

    def _on_not_interested(self, pos: int, n: int) -> Event | None:
        self.peer_interested = False
        return PARSERS[MsgId.NOT_INTERESTED](self._buf, pos, n)

    def _on_have(self, pos: int, n: int) -> Event | None:
        (index,) = _U32.unpack_from(self._buf, pos)
        self._remote_have_seen = True
        if self._remote_have is None:
            if len(self._pending_haves) >= MAX_PENDING_INDICES:
                raise RemoteProtocolError("too many have messages before metadata")
            self._pending_haves.add(index)
        else:
            self._check_remote_index(index, "have")
            self._set_remote_have(index)
        return Have(index)

    # A bitfield, have all or have none normally comes once, first.  A later
    # one *replaces* the peer's have-set rather than failing the connection:
    # aria2 sends a bitfield mid-connection (after have none and haves), and
    # libtorrent accepts it the same way.  The event carries the new set.

    def _on_bitfield(self, pos: int, n: int) -> Event | None:
        replacing = self._claim_have_message()
        bits = bitarray(endian="big")
        bits.frombytes(bytes(self._mv[pos : pos + n]))
        if self._remote_have is None:
            self._forget_pending_haves()
            self._pending_bitfield = bits
            return Bitfield(bits.copy())
        if replacing:
            self._check_bitfield(bits)
            self._mark_all(False)
        self._apply_bitfield(bits)
        return Bitfield(self._remote_have.copy())

    def _on_have_all(self, pos: int, n: int) -> Event | None:
        self._claim_have_message()
        if self._remote_have is None:
            self._forget_pending_haves()
            self._pending_have_all = True
        else:
            self._mark_all(True)
        return HaveAll()

    def _on_have_none(self, pos: int, n: int) -> Event | None:
        if self._claim_have_message():
            if self._remote_have is None:
                self._forget_pending_haves()
            else:
                self._mark_all(False)
        return HaveNone()

    def _on_request(self, pos: int, n: int) -> Event | None:
        key: Block = _III.unpack_from(self._buf, pos)
        index = key[0]
        lengths = self._lengths
        if lengths is not None:
            problem = block_error(lengths, *key)
            if problem is not None:
                raise RemoteProtocolError(f"bad request: {problem}")
        if key in self._their_requests:
            return None  # a duplicate: it is already queued
        if self._our_have is None or not self._our_have[index]:
            self._refuse(key, "request for a piece we do not have")
            return None
        if self.am_choking and index not in self.allowed_fast_out:
            # BEP 3: requests that race our choke are discarded (BEP 6: rejected).
            self._overflow(key, "request flood while choked")
            return None
        if len(self._their_requests) >= self.max_queue:
            # More than the reqq we advertised: refuse this one, keep the rest
            # (as libtorrent does); the peer asks again once its queue drains.
            self._overflow(key, f"request flood: more than {self.max_queue} queued requests")
            return None
        self._their_requests[key] = self._now
        return Request(*key)

    def _overflow(self, key: Block, flood: str) -> None:
        """Refuse a request we will not queue; a peer that never stops is flooding."""
        self._refused_requests += 1
        if self._refused_requests > FLOOD_FACTOR * self.max_queue:
            raise RemoteProtocolError(flood)
        if self.fast_enabled:
            self._outbox += encode(Reject(*key))

    def _refuse(self, key: Block, reason: str) -> None:
        if not self.fast_enabled:
            raise RemoteProtocolError(reason)
        self._refused_requests += 1
        if self._refused_requests > self.max_queue:
            raise RemoteProtocolError(f"too many refused requests ({reason})")
        self._outbox += encode(Reject(*key))

    def _on_piece(self, pos: int, n: int) -> Event | None:
        index, begin = _II.unpack_from(self._buf, pos)
        key = (index, begin, n - 8)
        if key in self._our_requests:
            del self._our_requests[key]
            late = False
        elif key in self._cancelled:
            del self._cancelled[key]
            late = True
        else:
            raise RemoteProtocolError(f"unrequested piece {index}:{begin}+{n - 8}")
        return Piece(index, begin, bytes(self._mv[pos + 8 : pos + n]), late)

    def _on_cancel(self, pos: int, n: int) -> Event | None:
        key: Block = _III.unpack_from(self._buf, pos)
        if key not in self._their_requests:
            return None  # already served or never queued: nothing to do
        del self._their_requests[key]
        if self.fast_enabled:
            # BEP 6: every request gets exactly one answer, a cancelled one too.
            self._outbox += encode(Reject(*key))
        return Cancel(*key)

    def _on_port(self, pos: int, n: int) -> Event | None:
        return PARSERS[MsgId.PORT](self._buf, pos, n)

    def _on_suggest(self, pos: int, n: int) -> Event | None:
        (index,) = _U32.unpack_from(self._buf, pos)
        if self._lengths is not None:
            self._check_remote_index(index, "suggest")
        return Suggest(index)

    def _on_reject(self, pos: int, n: int) -> Event | None:
        key: Block = _III.unpack_from(self._buf, pos)
        if key in self._our_requests:
            del self._our_requests[key]
        elif key in self._cancelled:
            del self._cancelled[key]
        else:
            raise RemoteProtocolError(f"reject for a request never sent {key}")
        return Reject(*key)

    def _on_allowed_fast(self, pos: int, n: int) -> Event | None:
        (index,) = _U32.unpack_from(self._buf, pos)
        if self._lengths is not None:
            self._check_remote_index(index, "allowed fast")
        elif len(self.allowed_fast_in) >= MAX_PENDING_INDICES:
            raise RemoteProtocolError("too many allowed fast messages")
        self.allowed_fast_in.add(index)
        return AllowedFast(index)

    def _on_extended(self, pos: int, n: int) -> Event | None:
        ext_id = self._buf[pos]
        payload = bytes(self._mv[pos + 1 : pos + n])
        if ext_id == 0:
            hs = decode_extension_handshake(payload)
            for name, remote_id in hs.m.items():  # BEP 10: m is additive, 0 disables
                if remote_id:
                    self.remote_extensions[name] = remote_id
                else:
                    self.remote_extensions.pop(name, None)
            self.remote_ext_handshake = hs
            return hs
        local_name = self._local_ext.get(ext_id)
        if local_name is None:
            raise RemoteProtocolError(f"extended message id {ext_id} was never advertised")
        return ExtendedMessage(local_name, payload, ext_id)

    # --- have-set helpers ---------------------------------------------------

    def _claim_have_message(self) -> bool:
        """Note a whole-have-set message; True when it replaces an earlier have-set."""
        replacing = self._remote_have_seen
        self._remote_have_seen = True
        return replacing

    def _forget_pending_haves(self) -> None:
        """Before the metadata: a new whole have-set supersedes what was kept so far."""
        self._pending_bitfield = None
        self._pending_have_all = False
        self._pending_haves.clear()

    def _check_remote_index(self, index: int, what: str) -> None:
        assert self._lengths is not None
        if index >= self._lengths.num_pieces:
            raise RemoteProtocolError(
                f"{what} for piece {index} of a {self._lengths.num_pieces}-piece torrent"
            )

    def _set_remote_have(self, index: int) -> None:
        assert self._remote_have is not None
        self._remote_have[index] = 1

    def _mark_all(self, value: bool) -> None:
        assert self._remote_have is not None
        self._remote_have.setall(value)

    def _check_bitfield(self, bits: bitarray) -> None:
        assert self._lengths is not None
        n = self._lengths.num_pieces
        if len(bits) != (n + 7) // 8 * 8:
            raise RemoteProtocolError(f"bitfield of {len(bits) // 8} bytes for {n} pieces")
        if bits[n:].any():
            raise RemoteProtocolError("bitfield has spare bits set")

    def _apply_bitfield(self, bits: bitarray) -> None:
        assert self._lengths is not None and self._remote_have is not None
        self._check_bitfield(bits)
        del bits[self._lengths.num_pieces :]
        self._remote_have |= bits

    def _require_open(self, what: str) -> None:
        if self._state is not _State.OPEN:
            raise LocalProtocolError(f"cannot send {what} before the handshake")

    # --- timers -------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When to call ``handle_timeout`` next (None once failed)."""
        if self._state is _State.ERROR:
            return None
        if self._state is not _State.OPEN:
            return self._created + self.handshake_timeout
        return min(self._last_sent + self.keepalive_interval, self._last_recv + self.idle_timeout)

    def handle_timeout(self, now: float) -> bytes:
        """Returns a keep-alive to write when due; raises PeerTimeout when the peer is late."""
        self._now = now
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        if self._state is not _State.OPEN:
            if now >= self._created + self.handshake_timeout:
                self._fail("handshake timed out")
                raise PeerTimeout("handshake timed out")
            return b""
        if now >= self._last_recv + self.idle_timeout:
            reason = f"no message for {now - self._last_recv:.0f} s"
            self._fail(reason)
            raise PeerTimeout(reason)
        if now >= self._last_sent + self.keepalive_interval:
            self._last_sent = now
            return _KEEPALIVE_BYTES
        return b""

    # --- read-only state ------------------------------------------------------

    @property
    def lengths(self) -> PieceSizes | None:
        return self._lengths

    @property
    def remote_have(self) -> bitarray | None:
        """The peer's pieces (live; do not mutate), None until the piece count is known."""
        return self._remote_have

    @property
    def our_have(self) -> bitarray | None:
        """What we have told this peer we have."""
        return self._our_have

    @property
    def our_requests(self) -> KeysView[Block]:
        """Our outstanding requests to the peer, oldest first."""
        return self._our_requests.keys()

    def may_request(self, index: int, begin: int, length: int) -> bool:
        """Whether ``send(Request(...))`` of this block is allowed now.

        Not while the same request is outstanding, nor (with the fast
        extension) while our cancel of it awaits its answer: the block or
        a reject for the first request is still coming, and that answer
        settles it.  The engine skips such a block rather than failing.
        """
        key = (index, begin, length)
        return key not in self._our_requests and not (self.fast_enabled and key in self._cancelled)

    @property
    def their_requests(self) -> KeysView[Block]:
        """The peer's queued requests we still owe a PIECE (or REJECT), oldest first."""
        return self._their_requests.keys()

    @property
    def oldest_request_at(self) -> float | None:
        """When the oldest request we still owe arrived (the ``now`` of its bytes), if any."""
        return next(iter(self._their_requests.values()), None)

    @property
    def last_piece_sent_at(self) -> float | None:
        """When we last sent the peer a block (None: never)."""
        return self._last_piece_sent

    @property
    def remote_reqq(self) -> int | None:
        """How many requests the peer says it queues (BEP 10 ``reqq``), if it said."""
        hs = self.remote_ext_handshake
        return None if hs is None else hs.reqq

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    @property
    def error(self) -> str | None:
        return self._error
