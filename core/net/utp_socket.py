"""uTP (BEP 29) connections on the shared UDP socket, each one a :class:`ByteStream`.

:class:`UtpSocket` is the uTP handler of a :class:`~core.net.udp_mux.UdpMux`:
it turns datagrams into packets, finds their connection and drives the
sans-IO :class:`~core.utp.connection.UtpConnection` state machines; each
connection is handed up as a :class:`UtpStream`, which looks to the peer
driver (or an MSE layer) exactly like a :class:`~core.net.tcp.TcpStream`.

Why it is shaped this way:

- **No coroutine per datagram, no task per connection, no call per
  datagram from the mux.**  The mux hands over each wake-up's uTP datagrams
  in one call (:meth:`UtpSocket._on_datagrams`), as views into its read
  buffer; that only feeds each datagram to its connection and marks the
  connection *touched*.  A run of packets for the connection of the packet
  before skips the lookup, and the connection takes the usual download
  packet (in-order DATA) without building a ``Packet``
  (:meth:`~core.utp.connection.UtpConnection.receive_datagram`).  One
  ``call_soon`` per loop turn then services every touched connection once:
  received bytes go to the consumer, the datagrams the connection wants to
  send (ACKs for the whole batch, data the consumer wrote meanwhile) go to
  ``mux.sendmany`` (GSO where the kernel has it) in lists of
  :data:`SEND_BATCH`, back-pressure and close are reported.  A batch of 64
  data packets therefore costs one delivery and typically one ACK rather
  than 64 of each.  Measured (``python -m bench.utp_loopback``, 256 MiB
  between two processes): from 84 MB/s at 6.7 / 5.8 CPU s/GiB (sender /
  receiver) before these paths to 330-460 MB/s at 2.3-3.1 / 2.1-2.6.
- **One timer for the socket.**  Connections say when they next need
  :meth:`~core.utp.connection.UtpConnection.poll` (retransmission, keepalive,
  timeouts).  Their deadlines sit in a heap and a single ``loop.call_at``
  waits for the earliest.  A deadline that moves *later* (every ACK re-arms
  the RTO) is not pushed again: the old entry fires early, ``poll`` finds
  nothing due, and the real deadline goes back in, so a busy connection
  costs one heap entry, not one per packet.
- **Demultiplexing by ``(address, connection id)``**, where the id is the one
  the receiver chose (BEP 29: a packet's ``connection_id`` is its
  receiver's ``recv_id``).  A SYN carries the initiator's ``recv_id``; the
  connection it creates here receives on that id + 1.
- **Bounded under attack.**  Incoming SYNs create connections only while
  fewer than ``max_half_open`` accepted connections are still unconfirmed
  and fewer than ``max_connections`` exist; the rest are counted as
  ``syn_dropped`` and answered with a RESET (so an honest peer falls back to
  TCP at once instead of waiting out its connect timeout).  RESETs (to
  refused SYNs and to packets for unknown connections) are rate-limited, so
  a flood cannot turn us into an amplifier.  Each stream's overflow queue
  (what the consumer wrote beyond the connection's send buffer) is bounded
  too.
- **Copy twice upward, never per packet object.**  The connection copies
  each payload from the mux's read buffer into its own reused read buffer;
  ``UtpConnection.read_into`` copies from there into the consumer's buffer
  through ``get_buffer``/``buffer_updated`` (the TCP path's shape), as much
  as the consumer's buffer takes, and no further while reading is paused:
  the connection keeps the rest and its advertised window closes, which is
  uTP's flow control.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..utp.connection import UtpConnection, UtpSettings, UtpStats
from ..utp.packet import (
    HEADER_SIZE,
    ST_RESET,
    ST_SYN,
    VERSION,
    Packet,
    UtpPacketError,
    decode,
    encode,
)
from .stream import Address, StreamConsumer, WriteData
from .udp_mux import UdpMux, normalise_address

__all__ = [
    "OVERFLOW_LIMIT",
    "RESET_BURST",
    "RESET_RATE",
    "UtpConnectTimeout",
    "UtpSocket",
    "UtpSocketStats",
    "UtpStream",
]

#: What a stream keeps of the consumer's writes beyond the connection's send
#: buffer.  A consumer that honours ``write_paused`` overshoots by at most a
#: turn's worth of blocks; one that does not is cut off at this bound.
OVERFLOW_LIMIT = 16 << 20
#: RESETs we send per second on average (answers to unknown packets and
#: refused SYNs), and how many may go at once.
RESET_RATE = 100.0
RESET_BURST = 100
#: Datagrams asked of a connection at a time, each list sent before the next
#: is built (see ``UtpConnection.outgoing``); a GSO send takes up to 64.
SEND_BATCH = 64
#: A timer entry this close to due is run now (asyncio may wake a little
#: early; polling a connection before its deadline is harmless).
_TIMER_SLACK = 0.001
_ID_MASK = 0xFFFF
#: First bytes of version-1 SYN and RESET packets (type << 4 | version).
_SYN_V1 = ST_SYN << 4 | VERSION
_RESET_V1 = ST_RESET << 4 | VERSION

log = logging.getLogger(__name__)


class UtpConnectTimeout(ConnectionError, TimeoutError):
    """:meth:`UtpSocket.connect` got no answer in time.

    Both a ``ConnectionError`` (the connect failed) and a ``TimeoutError``
    (so a dialer can tell "nobody there, try TCP" from a refusal).
    """


@dataclass(frozen=True, slots=True)
class UtpSocketStats:
    """One :class:`UtpSocket`'s counters since it opened.

    ``half_open`` counts incoming connections whose SYN we answered but
    whose initiator has not confirmed yet (the SYN-flood bound applies to
    them); ``connecting`` our outgoing ones still waiting for an answer.
    """

    connections: int
    half_open: int
    connecting: int
    accepted: int
    syn_dropped: int
    packets_in: int
    packets_out: int
    bad_packets: int
    unknown_packets: int
    resets_sent: int
    resets_suppressed: int
    send_failures: int
    #: Entries in the timer heap (live and stale): bounded by a few per connection.
    timers: int


class UtpSocket:
    """All uTP connections of one :class:`UdpMux`, incoming and outgoing."""

    def __init__(
        self,
        mux: UdpMux,
        *,
        settings: UtpSettings = UtpSettings(),  # noqa: B008 - frozen, shared on purpose
        on_accept: Callable[[UtpStream], None] | None = None,
        max_connections: int = 1000,
        max_half_open: int = 100,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._mux = mux
        self.settings = settings
        #: Called with each incoming stream once its initiator confirmed it
        #: (never for SYNs that stay half-open); None refuses incoming SYNs.
        self.on_accept = on_accept
        self.max_connections = max_connections
        self.max_half_open = max_half_open
        self._streams: dict[tuple[Address, int], UtpStream] = {}
        self._touched: dict[UtpStream, None] = {}  # an ordered set
        self._flush_handle: asyncio.Handle | None = None
        self._heap: list[tuple[float, int, UtpStream]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._seq = itertools.count()
        self._rng = random.Random()
        self._closed = False
        self._half_open = 0
        self._connecting = 0
        self._accepted = 0
        self._syn_dropped = 0
        self._packets_in = 0
        self._packets_out = 0
        self._bad_packets = 0
        self._unknown_packets = 0
        self._resets_sent = 0
        self._resets_suppressed = 0
        self._send_failures = 0
        self._reset_tokens = float(RESET_BURST)
        self._reset_refilled = self._loop.time()
        mux.set_utp_batch_handler(self._on_datagrams)

    # --- incoming datagrams --------------------------------------------------------

    def _on_datagrams(self, datagrams: list[memoryview], addrs: list[Address]) -> None:
        """The mux's uTP route, a wake-up at a time: decode, find the connection, feed it.

        The datagrams are views into the mux's read buffer: decoding does not
        copy them, and a connection copies the payload it keeps (into its
        read buffer, as the one copy between the kernel and the consumer).
        No I/O here: the connections' answers go out in :meth:`_flush`.  One
        clock reading serves the batch (it was read within a few hundred
        microseconds), and consecutive packets of one connection, the usual
        shape of a batch, find it without a second lookup.
        """
        now = self._loop.time()
        streams = self._streams
        touched = self._touched
        self._packets_in += len(datagrams)
        last_addr: Address | None = None
        last_id = -1
        stream: UtpStream | None = None
        try:
            for i, data in enumerate(datagrams):
                if len(data) < HEADER_SIZE:
                    self._bad_packets += 1
                    continue
                first = data[0]
                addr = addrs[i]
                conn_id = data[2] << 8 | data[3]
                if first == _SYN_V1 or conn_id != last_id or addr != last_addr:
                    # the slow path: a SYN, or another connection than the last
                    try:
                        packet = decode(data)
                    except UtpPacketError:
                        self._bad_packets += 1
                        continue
                    last_addr = None
                    if first == _SYN_V1:
                        self._on_syn(packet, addr, now)
                        continue
                    stream = streams.get((addr, conn_id))
                    if stream is None:
                        self._on_stray(packet, addr, now)
                        continue
                    stream.conn.receive(packet, now)
                    touched[stream] = None
                    if first != _RESET_V1:  # a reset connection leaves the table soon
                        last_addr = addr
                        last_id = conn_id
                    continue
                assert stream is not None
                try:
                    stream.conn.receive_datagram(data, now)
                except UtpPacketError:
                    self._bad_packets += 1
                    continue
                touched[stream] = None
                if first == _RESET_V1:
                    last_addr = None
        finally:
            if touched and self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self._flush)

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        """One datagram (what :meth:`_on_datagrams` does for each of a batch)."""
        self._on_datagrams([memoryview(data)], [addr])

    def _on_stray(self, packet: Packet, addr: Address, now: float) -> None:
        """A packet for no connection of ours: a RESET may still name one by its send id."""
        if packet.type == ST_RESET:
            stream = self._reset_target(packet.conn_id, addr)
            if stream is not None:
                stream.conn.receive(packet, now)
                self._touch(stream)
                return
        self._unknown_packets += 1
        if packet.type != ST_RESET:
            self._send_reset(packet, addr, now)

    def _reset_target(self, conn_id: int, addr: Address) -> UtpStream | None:
        """The connection a RESET means when it carries our *send* id (as libutp's do).

        A peer answering a packet it does not know echoes that packet's
        connection id, which is the id we send with; ours is one above it
        (we initiated) or one below (we accepted).
        """
        for recv_id in ((conn_id + 1) & _ID_MASK, (conn_id - 1) & _ID_MASK):
            stream = self._streams.get((addr, recv_id))
            if stream is not None and stream.conn.send_id == conn_id:
                return stream
        return None

    def _on_syn(self, packet: Packet, addr: Address, now: float) -> None:
        key = (addr, (packet.conn_id + 1) & _ID_MASK)
        stream = self._streams.get(key)
        if stream is not None:
            if stream.conn.send_id == packet.conn_id:
                # A retransmitted SYN: our answer was lost; the connection re-answers.
                stream.conn.receive(packet, now)
                self._touch(stream)
            else:
                # The id collides with one of our own outgoing connections.
                self._refuse_syn(packet, addr, now)
            return
        if (
            self._closed
            or self.on_accept is None
            or self._half_open >= self.max_half_open
            or len(self._streams) >= self.max_connections
        ):
            self._refuse_syn(packet, addr, now)
            return
        conn = UtpConnection.accept(packet, now=now, settings=self.settings)
        stream = UtpStream(self, conn, addr, key, self._touch, accepted=True)
        self._streams[key] = stream
        self._half_open += 1
        self._touch(stream)

    def _refuse_syn(self, packet: Packet, addr: Address, now: float) -> None:
        self._syn_dropped += 1
        self._send_reset(packet, addr, now)

    def _send_reset(self, packet: Packet, addr: Address, now: float) -> None:
        """Tell the sender of ``packet`` that no such connection exists here (rate-limited)."""
        tokens = min(
            float(RESET_BURST), self._reset_tokens + (now - self._reset_refilled) * RESET_RATE
        )
        self._reset_refilled = now
        if tokens < 1.0:
            self._reset_tokens = tokens
            self._resets_suppressed += 1
            return
        self._reset_tokens = tokens - 1.0
        reset = Packet(
            type=ST_RESET,
            conn_id=packet.conn_id,
            timestamp_us=int(now * 1e6) & 0xFFFFFFFF,
            timestamp_diff_us=0,
            wnd_size=0,
            seq_nr=self._rng.getrandbits(16),
            ack_nr=packet.seq_nr,
        )
        self._resets_sent += 1
        self._send(encode(reset), addr)

    def _send(self, datagram: bytes, addr: Address) -> None:
        if self._mux.sendto(datagram, addr):
            self._packets_out += 1
        else:
            self._send_failures += 1

    # --- servicing touched connections ---------------------------------------------

    def _touch(self, stream: UtpStream) -> None:
        """``stream`` has something to do: serve it at the end of this loop turn."""
        self._touched[stream] = None
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        touched = self._touched
        self._touched = {}
        now = self._loop.time()
        for stream in touched:
            try:
                self._service(stream, now)
            except Exception:
                # A consumer (or on_accept) that raises loses its stream, not
                # the other connections of this pass.
                log.exception("uTP stream %r failed; resetting it", stream)
                stream.abort()
        self._arm_timer()

    def _service(self, stream: UtpStream, now: float) -> None:
        """Everything one connection owes after input, output or a timer."""
        conn = stream.conn
        stream.push_overflow(now)
        if stream.accepted and not stream.announced and conn.connected:
            stream.announced = True
            self._half_open -= 1
            self._accepted += 1
            if self.on_accept is not None:
                self.on_accept(stream)
        stream.settle_connect()
        stream.deliver()
        stream.push_overflow(now)  # the consumer may have written while reading
        sent_at = self._loop.time()  # the consumer's callbacks above may have taken a while
        while True:
            out = conn.outgoing(sent_at, SEND_BATCH)
            if out:
                sent = self._mux.sendmany(out, stream.remote_address)
                self._packets_out += sent
                self._send_failures += len(out) - sent
            if len(out) < SEND_BATCH:
                break
        if conn.state == "closed":
            self._unregister(stream)
            stream.settle_connect()
            stream.finish_if_drained()
            return
        stream.check_writable()
        deadline = conn.next_timeout()
        if deadline is not None and (stream.deadline is None or deadline < stream.deadline):
            stream.deadline = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), stream))

    def _unregister(self, stream: UtpStream) -> None:
        if not stream.registered:
            return
        stream.registered = False
        stream.deadline = None
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
        if stream.accepted and not stream.announced:
            self._half_open -= 1
            stream.announced = True  # never announce a connection that died half-open
        if stream.outgoing_pending:
            stream.outgoing_pending = False
            self._connecting -= 1

    # --- the one timer -------------------------------------------------------------

    def _arm_timer(self) -> None:
        heap = self._heap
        if len(heap) > 4 * len(self._streams) + 64:
            # Too many stale entries (deadlines that kept moving earlier): rebuild.
            heap[:] = [e for e in heap if e[2].deadline == e[0]]
            heapq.heapify(heap)
        if not heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        at = heap[0][0]
        if self._timer is not None:
            if self._timer_at == at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap = self._heap
        touched = self._touched
        while heap and heap[0][0] <= now + _TIMER_SLACK:
            deadline, _, stream = heapq.heappop(heap)
            if stream.deadline != deadline:
                continue  # stale: superseded by an earlier deadline, or closed
            stream.deadline = None
            stream.conn.poll(max(now, deadline))
            touched[stream] = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    # --- outgoing connections ------------------------------------------------------

    async def connect(
        self, addr: Address, consumer: StreamConsumer, *, timeout: float = 6.0
    ) -> UtpStream:
        """Open a uTP connection to ``addr``; ``consumer.stream_opened`` is called before returning.

        Raises :class:`UtpConnectTimeout` (``"utp: connect timeout"``, also a
        ``TimeoutError``) when nothing answers within ``timeout`` seconds, and
        ``ConnectionError`` with the connection's reason when the peer
        refuses (``"utp: reset by peer"``) or the socket closes.
        """
        if self._closed:
            raise ConnectionError("utp: socket closed")
        if len(self._streams) >= self.max_connections:
            raise ConnectionError(f"utp: {len(self._streams)} connections, the limit")
        addr = normalise_address((addr[0], int(addr[1])))
        recv_id = self._new_recv_id(addr)
        now = self._loop.time()
        conn = UtpConnection.connect(recv_id=recv_id, now=now, settings=self.settings)
        stream = UtpStream(self, conn, addr, (addr, recv_id), self._touch, accepted=False)
        stream.consumer = consumer
        waiter: asyncio.Future[None] = self._loop.create_future()
        stream.connect_waiter = waiter
        stream.outgoing_pending = True
        self._connecting += 1
        self._streams[stream.key] = stream
        self._touch(stream)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            self._drop(stream)
            raise UtpConnectTimeout("utp: connect timeout") from None
        except BaseException:
            self._drop(stream)
            raise
        if stream.ended_reason is not None:  # closed between connecting and now
            self._drop(stream)
            raise ConnectionError(stream.ended_reason)
        stream.open()
        return stream

    def _drop(self, stream: UtpStream) -> None:
        """Abort ``stream`` and forget it now (a failed connect leaves nothing behind)."""
        stream.abort()
        self._touched.pop(stream, None)
        self._service(stream, self._loop.time())

    def _new_recv_id(self, addr: Address) -> int:
        """A random receive id no other connection to ``addr`` uses."""
        streams = self._streams
        for _ in range(64):
            recv_id = self._rng.getrandbits(16)
            if (addr, recv_id) not in streams:
                return recv_id
        raise ConnectionError(f"utp: no free connection id for {addr[0]}:{addr[1]}")

    def connect_settled(self, stream: UtpStream) -> None:
        """``stream``'s connect finished either way: it no longer counts as connecting."""
        if stream.outgoing_pending:
            stream.outgoing_pending = False
            self._connecting -= 1

    # --- state -----------------------------------------------------------------------

    def stats(self) -> UtpSocketStats:
        return UtpSocketStats(
            connections=len(self._streams),
            half_open=self._half_open,
            connecting=self._connecting,
            accepted=self._accepted,
            syn_dropped=self._syn_dropped,
            packets_in=self._packets_in,
            packets_out=self._packets_out,
            bad_packets=self._bad_packets,
            unknown_packets=self._unknown_packets,
            resets_sent=self._resets_sent,
            resets_suppressed=self._resets_suppressed,
            send_failures=self._send_failures,
            timers=len(self._heap),
        )

    async def aclose(self) -> None:
        """Reset every connection (their consumers hear ``"utp: socket closed"``) and detach.

        The mux stays open: it belongs to whoever opened it (the DHT may
        still use it).  Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._mux.set_utp_handler(None)
        now = self._loop.time()
        for stream in list(self._streams.values()):
            stream.conn.abort(now)
            for datagram in stream.conn.outgoing():
                self._send(datagram, stream.remote_address)
            self._unregister(stream)
            stream.socket_closed("utp: socket closed")
        self._touched.clear()
        self._heap.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<UtpSocket on {self._mux!r}: {len(self._streams)} connections>"


class UtpStream:
    """One uTP connection as a :class:`~core.net.stream.ByteStream`.

    Built by :class:`UtpSocket` only.  The methods under "the socket's side"
    (and the bookkeeping attributes) belong to the socket: they run inside
    its service pass; a consumer uses the ByteStream methods,
    :meth:`set_consumer` and :meth:`connection_stats`.
    """

    def __init__(
        self,
        owner: UtpSocket,
        conn: UtpConnection,
        addr: Address,
        key: tuple[Address, int],
        touch: Callable[[UtpStream], None],
        *,
        accepted: bool,
    ) -> None:
        self.owner = owner
        self.conn = conn
        self.remote_address: Address = addr
        self.key = key
        self.accepted = accepted
        self.write_paused = False
        self.consumer: StreamConsumer | None = None
        # --- the socket's bookkeeping
        #: In the socket's table (False once the connection closed).
        self.registered = True
        #: An accepted connection handed to ``on_accept`` (or dead before that).
        self.announced = False
        #: An outgoing connection counted in the socket's ``connecting``.
        self.outgoing_pending = False
        #: The deadline of this stream's live entry in the socket's timer heap.
        self.deadline: float | None = None
        self.connect_waiter: asyncio.Future[None] | None = None
        #: Why the stream ended, once it did (reported or not).
        self.ended_reason: str | None = None
        # --- private
        self._touch = touch
        self._loop = asyncio.get_running_loop()
        self._opened = False  # the consumer heard stream_opened
        self._ended = False  # stream_closed sent or abort()ed: no more upward callbacks
        self._closing = False  # close() called: FIN once the overflow is in the connection
        self._fin_queued = False
        self._reading_paused = False
        self._overflow: deque[memoryview] = deque()
        self._overflow_bytes = 0
        self._fail_reason: str | None = None
        self._low_water = max(1, owner.settings.send_buffer // 2)

    # --- ByteStream ------------------------------------------------------------------

    def write(self, data: WriteData) -> None:
        if self._ended or self._closing or not data:
            return
        self._write(data)
        self._touch(self)

    def writelines(self, parts: Iterable[WriteData]) -> None:
        if self._ended or self._closing:
            return
        for part in parts:
            if part:
                self._write(part)
        self._touch(self)

    def _write(self, data: WriteData) -> None:
        if self.conn.state in ("fin-sent", "closed"):
            return  # the peer closed (or we are gone): nothing more can be sent
        if not self._overflow:
            accepted = self.conn.write(data, self._loop.time())
            if accepted >= len(data):
                return
            data = memoryview(data)[accepted:]
        # The connection is full: keep a copy (the caller may reuse its buffer).
        chunk = memoryview(bytes(data))
        self._overflow.append(chunk)
        self._overflow_bytes += len(chunk)
        self.write_paused = True
        if self._overflow_bytes > OVERFLOW_LIMIT and self._fail_reason is None:
            self._fail_reason = "utp: send buffer overflow (writer ignored write_paused)"
            self._overflow.clear()
            self._overflow_bytes = 0
            self.conn.abort(self._loop.time())

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._touch(self)

    def close(self) -> None:
        """FIN after everything written so far; the consumer hears ``stream_closed`` when done."""
        if self._ended or self._closing:
            return
        self._closing = True
        self.push_overflow(self._loop.time())
        self._touch(self)

    def abort(self) -> None:
        """RESET now, dropping what is buffered; no callback follows."""
        if self._ended:
            return
        self._ended = True
        if self.ended_reason is None:
            self.ended_reason = "utp: aborted"
        self._overflow.clear()
        self._overflow_bytes = 0
        if self.conn.state != "closed":
            self.conn.abort(self._loop.time())
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()
        self._touch(self)

    def set_consumer(self, consumer: StreamConsumer) -> None:
        """Hand an accepted stream to ``consumer``: it hears ``stream_opened`` now.

        Received bytes wait in the connection until a consumer is set, and
        an end that came before is reported right after ``stream_opened``.
        """
        self.consumer = consumer
        self.open()

    def connection_stats(self) -> UtpStats:
        return self.conn.stats()

    @property
    def closed(self) -> bool:
        """The stream ended (reported, aborted, or waiting to report)."""
        return self.ended_reason is not None

    def __repr__(self) -> str:
        host, port = self.remote_address
        return f"<UtpStream {host}:{port} id={self.key[1]} {self.conn.state}>"

    # --- the socket's side -------------------------------------------------------------

    def open(self) -> None:
        """Tell the consumer the stream is usable, then catch up on what waited."""
        consumer = self.consumer
        if consumer is None or self._ended:
            return
        self._opened = True
        consumer.stream_opened(self)
        self._touch(self)

    def push_overflow(self, now: float) -> None:
        """Move what the connection had no room for into it; queue the FIN after it."""
        overflow = self._overflow
        conn = self.conn
        while overflow:
            head = overflow[0]
            accepted = conn.write(head, now)
            self._overflow_bytes -= accepted
            if accepted < len(head):
                overflow[0] = head[accepted:]
                return
            overflow.popleft()
        if self._closing and not self._fin_queued and not self._ended:
            self._fin_queued = True
            conn.close(now)

    def settle_connect(self) -> None:
        """Resolve a pending :meth:`UtpSocket.connect` once the connection knows."""
        waiter = self.connect_waiter
        if waiter is None or waiter.done():
            return
        conn = self.conn
        if conn.connected:
            self.owner.connect_settled(self)
            waiter.set_result(None)
        elif conn.state == "closed":
            self.owner.connect_settled(self)
            reason = conn.closed_reason or "utp: closed"
            if reason in ("utp: timeout", "utp: connect timeout"):
                waiter.set_exception(UtpConnectTimeout("utp: connect timeout"))
            else:
                waiter.set_exception(ConnectionError(reason))

    def deliver(self) -> None:
        """Copy received bytes into the consumer's buffer until none are left or it pauses."""
        consumer = self.consumer
        if consumer is None or not self._opened:
            return
        conn = self.conn
        while not (self._reading_paused or self._ended or self._closing):
            readable = conn.readable
            if not readable:
                return
            n = conn.read_into(consumer.get_buffer(readable))
            if n == 0:  # a consumer with no room: try again on the next event
                return
            consumer.buffer_updated(n)

    def check_writable(self) -> None:
        """``write_paused`` ends when the overflow is gone and the send buffer half empty."""
        if (
            self.write_paused
            and not self._overflow
            and self.conn.writable >= self._low_water
            and not self._ended
        ):
            self.write_paused = False
            if self.consumer is not None and self._opened:
                self.consumer.stream_writable()

    def finish_if_drained(self) -> None:
        """The connection closed: report it once the consumer has every received byte.

        While reading is paused the rest waits (as TCP reports EOF only after
        the data before it); ``resume_reading`` brings the stream back here.
        """
        if self.ended_reason is None:
            self.ended_reason = self._fail_reason or self.conn.closed_reason or "utp: closed"
        if self._ended or not self._opened:
            return  # aborted, or an accepted stream: reported once a consumer is set
        if self._reading_paused and self.conn.readable:
            return
        self._report_end()

    def socket_closed(self, reason: str) -> None:
        """The socket went away under the stream."""
        if self.ended_reason is None:
            self.ended_reason = reason
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            self.owner.connect_settled(self)
            waiter.set_exception(ConnectionError(reason))
        if not self._ended and self._opened:
            self._report_end()

    def _report_end(self) -> None:
        self._ended = True
        consumer = self.consumer
        if consumer is not None and self._opened:
            consumer.stream_closed(self.ended_reason or "utp: closed")
