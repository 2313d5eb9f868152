"""One uTP connection (BEP 29) as a sans-IO state machine.

Packets and ``now`` go in (:meth:`UtpConnection.receive`, :meth:`write`,
:meth:`poll`, :meth:`close`), datagrams come out (:meth:`outgoing`), and
:meth:`next_timeout` says when to call :meth:`poll` again; the socket layer
(``core/net/utp_socket.py``) owns the UDP socket, the demultiplexing by
connection id and the one timer for all connections.  Nothing here raises on
what a peer sends: a packet that makes no sense (an ack of data never sent,
a sequence number far outside the window, a huge SACK) is counted in
:attr:`UtpStats.invalid_packets` and dropped.

States::

    syn-sent  --STATE acking our SYN-->  connected  --close()/peer FIN-->  fin-sent  --> closed
    syn-recv  --any packet from the initiator-->  connected
    any       --RESET, timeout, abort()-->  closed

The SYN's ``seq_nr`` is the initiator's initial sequence number (the SYN
uses it up); the responder's STATE carries its own initial number unused, so
its first DATA has that number (libutp and libtorrent count the same way).
A responder sends no DATA until a packet from the initiator shows that the
STATE arrived: an initiator still in syn-sent would take the seq_nr of any
packet as the start of the stream (libutp does), so early data could be
skipped.  Writes in that state are buffered.  A half-open responder (no
packet after the STATE) gives up after ``connect_timeout``; SYN floods are
the socket layer's to bound.

``fin-sent`` means closing: our FIN waits behind the data still to send,
then is in flight; the connection closes once it is acknowledged and the
peer's FIN, if one was seen, has been reached in order.  A peer's FIN
closes our side too (a BitTorrent peer that half-closes is gone, as over
TCP): the data before it is delivered, our remaining data and FIN follow;
a vanished peer gets :data:`FIN_RETRIES_AFTER_PEER_FIN` timeouts, not
``max_retransmits``.  :attr:`~UtpConnection.closed_reason` is
``utp: closed`` (our close completed), ``utp: closed by peer`` (the peer's
FIN came first, whatever happened after), ``utp: reset by peer``,
``utp: timeout`` (retransmissions or ``idle_timeout``), ``utp: connect
timeout``, or ``utp: aborted`` (:meth:`~UtpConnection.abort`).  Received
data stays readable after the close.

Driving it: call :meth:`~UtpConnection.outgoing` after every batch of
:meth:`~UtpConnection.receive` (or :meth:`~UtpConnection.receive_datagram`)
calls and after :meth:`~UtpConnection.write`, :meth:`~UtpConnection.read` /
:meth:`~UtpConnection.read_into` (a reopened window is announced),
:meth:`~UtpConnection.poll`, :meth:`~UtpConnection.close` and
:meth:`~UtpConnection.abort`; datagrams are stamped with the ``now`` given
to ``outgoing`` (the send time), else that of the latest of those calls.
``outgoing(now, limit)`` hands the datagrams over in lists of at most
``limit``, each to be sent before the next is built.  RESETs are matched to
a connection by the socket layer (a peer answering for an unknown
connection may put either of our ids in it, as libutp does); packets for a
closed connection are ignored here.

The per-packet paths are written for CPython's costs (each measured with
``python -m bench.utp_sim --only cpu`` and ``bench.utp_loopback --paths``):
in-order DATA is taken by a short path that builds no ``Packet``, payloads
are copied into one reused :class:`.buffers.ReadBuffer` rather than kept as
objects, and a window's worth of new packets is cut and registered in one
pass (:meth:`.buffers.SendBuffer.send_many`).

Sending (what libutp and libtorrent do, in our words):

- **Lazy packetisation, no Nagle.**  :meth:`write` copies into the send
  buffer; :meth:`outgoing` cuts it into packets of up to ``mtu_payload``
  bytes as far as the window allows.  Everything written between two
  ``outgoing()`` calls therefore shares packets (BitTorrent's many small
  messages coalesce), and nothing waits for an ack to fill a packet.
- **Window:** bytes in flight never exceed ``min(cwnd, peer's wnd_size)``
  (:mod:`.ledbat` owns ``cwnd``).  When the peer's window is closed and
  nothing is in flight, a persist timer sends one packet anyway (a zero-window
  probe): its ack carries the reopened window, and a probe that times out
  while the peer keeps answering is neither a loss nor a step towards the
  retransmission limit.
- **Loss:** a packet is lost once three packets sent after it are
  acknowledged (by ack or SACK; see :class:`.buffers.SendBuffer`), or after
  three duplicate STATE acks (peers that do not SACK).  Each loss event
  halves ``cwnd`` once per window: only losses of packets sent after the last
  cut count.  The retransmission timer (RFC 6298, :mod:`.rtt`) marks
  everything in flight lost, resends the oldest, restarts ``cwnd`` at one
  packet and doubles the RTO; when the oldest packet has timed out more than
  ``max_retransmits`` times the connection closes with ``utp: timeout``.
  Karn's rule: only packets sent once give RTT samples.

Receiving: in-order payload goes to the read buffer; packets ahead of a gap
wait in the reorder buffer (bounded by the receive window and
:data:`.buffers.MAX_REORDER` packets) and are reported in a selective ACK
(the first 256 of them);
duplicates are dropped but acknowledged.  Every DATA/FIN is acknowledged,
but acks are coalesced until :meth:`outgoing` (one STATE per batch of
received datagrams, none at all when a DATA packet carries the ack).
Our advertised ``wnd_size`` is the room left in ``recv_buffer``; in-order
data beyond it is dropped (a peer ignoring our window, or a probe), so what
we hold never exceeds ``recv_buffer`` plus the one packet that fills a gap.
Nothing is accepted past the peer's FIN.

Not done: path-MTU probing (packets stay at ``mtu_payload``, 1,400 bytes of
payload fits any path with a 1,500-byte MTU, IPv6 included: 1,400 + 20 uTP
+ 8 UDP + 40 IPv6 = 1,468), pacing, and libutp's clock-drift penalty.

May import only the standard library and :mod:`core.errors` /
:mod:`core.types`; the socket layer drives it.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

from core.errors import LocalProtocolError

from .buffers import MAX_REORDER, SEQ_MASK, OutPacket, ReadBuffer, ReorderBuffer, SendBuffer
from .ledbat import TIMESTAMP_MASK, DelayHistory, Ledbat
from .packet import (
    HEADER,
    HEADER_SIZE,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    VERSION,
    Packet,
    decode,
    pack,
)
from .rtt import RttEstimator

__all__ = [
    "MAX_OUTSTANDING",
    "STATES",
    "UtpConnection",
    "UtpSettings",
    "UtpStats",
]

STATES = ("syn-sent", "syn-recv", "connected", "fin-sent", "closed")
#: Sequence numbers in flight at most (the receiver's reorder bound).
MAX_OUTSTANDING = MAX_REORDER
#: Duplicate STATE acks before the oldest packet is resent (no SACK needed).
DUP_ACKS = 3
#: The peer's one-way delay (a statistic) is sampled this often, seconds.
THEIR_DELAY_EVERY = 0.01
#: How many times our FIN is retried after the peer's FIN was reached.
FIN_RETRIES_AFTER_PEER_FIN = 2
_NO_LIMIT = 1 << 30
#: The first byte of a version-1 DATA packet, and the header's parser.
_DATA_V1 = ST_DATA << 4 | VERSION
_unpack_header = HEADER.unpack_from


@dataclass(frozen=True, slots=True)
class UtpSettings:
    """Per-connection knobs; the defaults are what libtorrent users expect."""

    send_buffer: int = 4 << 20
    recv_buffer: int = 4 << 20
    mtu_payload: int = 1400
    target_delay: float = 0.100
    connect_timeout: float = 6.0
    idle_timeout: float = 60.0
    keepalive: float = 29.0
    min_rto: float = 0.5
    max_rto: float = 60.0
    max_retransmits: int = 8


@dataclass(frozen=True, slots=True)
class UtpStats:
    """A snapshot of one connection; times in seconds, sizes in bytes."""

    state: str
    rtt: float
    rtt_var: float
    rto: float
    cwnd: int
    bytes_in_flight: int
    peer_window: int
    retransmits: int
    fast_retransmits: int
    timeouts: int
    dup_acks: int
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    payload_in: int
    payload_out: int
    duplicates_in: int
    invalid_packets: int
    our_delay: float
    their_delay: float
    mtu: int


class _Counters:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "dup_acks",
        "duplicates_in",
        "fast_retransmits",
        "invalid",
        "packets_in",
        "packets_out",
        "payload_in",
        "payload_out",
        "retransmits",
        "timeouts",
    )

    def __init__(self) -> None:
        self.packets_in = self.packets_out = 0
        self.bytes_in = self.bytes_out = 0
        self.payload_in = self.payload_out = 0
        self.retransmits = self.fast_retransmits = self.timeouts = 0
        self.dup_acks = self.duplicates_in = self.invalid = 0


def _gather(chunks: deque[bytes], off: int, size: int) -> tuple[bytes, int]:
    """``size`` bytes from ``chunks`` starting ``off`` into the first: (them, the new offset).

    For a packet that spans written chunks (many small messages); whole
    chunks it uses up are removed.
    """
    parts: list[bytes] = []
    need = size
    while need:
        head = chunks[0]
        avail = len(head) - off
        if avail > need:
            parts.append(head[off : off + need])
            return b"".join(parts), off + need
        parts.append(head[off:] if off else head)
        chunks.popleft()
        off = 0
        need -= avail
    return b"".join(parts), 0


def _micros(now: float) -> int:
    return int(now * 1_000_000) & TIMESTAMP_MASK


class UtpConnection:
    """One uTP connection; build it with :meth:`connect` or :meth:`accept`."""

    def __init__(
        self,
        *,
        recv_id: int,
        send_id: int,
        seq_nr: int,
        state: str,
        now: float,
        settings: UtpSettings,
    ) -> None:
        if settings.mtu_payload < 64 or settings.recv_buffer < settings.mtu_payload:
            raise LocalProtocolError("utp: mtu_payload >= 64 and recv_buffer >= mtu_payload")
        self._settings = settings
        self._recv_buffer = settings.recv_buffer
        self._recv_id = recv_id & 0xFFFF
        self._send_id = send_id & 0xFFFF
        self._state = state
        self._reason: str | None = None
        self._now = now
        self._mss = settings.mtu_payload
        self._counters = _Counters()
        # sending
        self._sbuf = SendBuffer(seq_nr)
        # written, not yet packetised: chunks as written, the head's first
        # _unsent_off bytes already sent
        self._unsent: deque[bytes] = deque()
        self._unsent_off = 0
        self._unsent_bytes = 0
        self._tx = 0
        self._fin_requested = False
        self._fin: OutPacket | None = None
        self._force_send = False
        self._loss_cut_tx = 0
        self._dup_acks = 0
        self._peer_wnd = settings.mtu_payload  # until the peer tells us
        self._rtt = RttEstimator(settings.min_rto, settings.max_rto)
        self._ledbat = Ledbat(
            mss=settings.mtu_payload,
            target=settings.target_delay,
            max_cwnd=settings.send_buffer,
        )
        # receiving
        self._ack_nr = 0
        self._reorder = ReorderBuffer()
        self._rbuf = ReadBuffer()
        self._eof_seq: int | None = None
        self._peer_fin_reached = False
        self._peer_closed_first = False
        self._ack_needed = False
        self._last_adv = settings.recv_buffer
        self._reply_ts = 0  # the last timestamp_us received, and when
        self._reply_at = 0.0
        self._their_delay = DelayHistory()
        self._their_sample_due = 0.0
        # timers
        self._connect_deadline: float | None = now + settings.connect_timeout
        self._rto_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._persist_interval = 0.0
        self._last_send = now
        self._last_recv = now
        self._out: list[bytes] = []
        self._syn_seq = 0  # responder: the initiator's SYN seq_nr

    # --- construction -------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        *,
        recv_id: int,
        now: float,
        settings: UtpSettings = UtpSettings(),
        seq_nr: int | None = None,
    ) -> UtpConnection:
        """The initiator: a SYN (``conn_id = recv_id``) is queued; ``send_id = recv_id + 1``."""
        seq = secrets.randbits(16) if seq_nr is None else seq_nr & SEQ_MASK
        conn = cls(
            recv_id=recv_id,
            send_id=recv_id + 1,
            seq_nr=seq,
            state="syn-sent",
            now=now,
            settings=settings,
        )
        syn = conn._sbuf.new_packet(ST_SYN, b"")
        conn._transmit(syn, conn._out)
        return conn

    @classmethod
    def accept(
        cls,
        syn: Packet,
        *,
        now: float,
        settings: UtpSettings = UtpSettings(),
        seq_nr: int | None = None,
    ) -> UtpConnection:
        """The responder to ``syn`` (``recv_id = syn.conn_id + 1``); queues its STATE answer."""
        if syn.type != ST_SYN:
            raise LocalProtocolError("utp: accept() needs a SYN packet")
        seq = secrets.randbits(16) if seq_nr is None else seq_nr & SEQ_MASK
        conn = cls(
            recv_id=syn.conn_id + 1,
            send_id=syn.conn_id,
            seq_nr=seq,
            state="syn-recv",
            now=now,
            settings=settings,
        )
        conn._syn_seq = syn.seq_nr
        conn._ack_nr = syn.seq_nr
        conn._peer_wnd = syn.wnd_size
        conn._note_timestamps(syn, now)
        conn._counters.packets_in += 1
        conn._counters.bytes_in += HEADER_SIZE + len(syn.payload)
        conn._send_state(conn._out)
        return conn

    # --- read-only views ------------------------------------------------------------

    @property
    def recv_id(self) -> int:
        return self._recv_id

    @property
    def send_id(self) -> int:
        return self._send_id

    @property
    def state(self) -> str:
        return self._state

    @property
    def connected(self) -> bool:
        """Handshake done and not closed (data can flow both ways)."""
        return self._state in ("connected", "fin-sent")

    @property
    def closed_reason(self) -> str | None:
        return self._reason

    @property
    def peer_closed(self) -> bool:
        """The peer's FIN was reached: everything it will ever send has been received."""
        return self._peer_fin_reached

    @property
    def readable(self) -> int:
        return len(self._rbuf)

    @property
    def writable(self) -> int:
        if self._fin_requested or self._state == "closed":
            return 0
        held = self._unsent_bytes + self._sbuf.payload_bytes
        return max(0, self._settings.send_buffer - held)

    def stats(self) -> UtpStats:
        c = self._counters
        rtt = self._rtt
        return UtpStats(
            state=self._state,
            rtt=rtt.srtt or 0.0,
            rtt_var=rtt.rttvar,
            rto=rtt.rto,
            cwnd=int(self._ledbat.cwnd),
            bytes_in_flight=self._sbuf.in_flight,
            peer_window=self._peer_wnd,
            retransmits=c.retransmits,
            fast_retransmits=c.fast_retransmits,
            timeouts=c.timeouts,
            dup_acks=c.dup_acks,
            packets_in=c.packets_in,
            packets_out=c.packets_out,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            payload_in=c.payload_in,
            payload_out=c.payload_out,
            duplicates_in=c.duplicates_in,
            invalid_packets=c.invalid,
            our_delay=self._ledbat.queuing_delay(),
            their_delay=self._their_delay.queuing_us() / 1e6,
            mtu=self._mss,
        )

    # --- the application side -------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Copy as much of ``data`` as the send buffer takes; the count (0 when full or closing)."""
        self._now = now
        room = self.writable
        if room <= 0:
            return 0
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        take = min(room, size)
        if take:
            if take == size and type(data) is bytes:
                chunk = data  # immutable: kept as it is
            else:
                with memoryview(data) as view, view.cast("B") as flat:
                    chunk = flat[:take].tobytes()
            self._unsent.append(chunk)
            self._unsent_bytes += take
        return take

    def read_into(self, buffer: memoryview) -> int:
        """Copy in-order payload into ``buffer`` (a flat byte view), as much as fits; the count.

        What :meth:`read` does without building a ``bytes`` first; what does
        not fit stays here and keeps our window that much closed.
        """
        count = self._rbuf.read_into(buffer)
        if count:
            self._note_read()
        return count

    def _note_read(self) -> None:
        if self._state != "closed" and self._last_adv < self._mss <= self._advertised_window():
            self._ack_needed = True  # a window update: the peer may be waiting on it

    def read(self) -> bytes:
        """All in-order payload received so far; reading re-opens our receive window."""
        if not self._rbuf:
            return b""
        data = self._rbuf.read()
        self._note_read()
        return data

    def close(self, now: float) -> None:
        """Send our FIN after everything written; closed once it is acknowledged."""
        self._now = now
        state = self._state
        if state == "syn-sent":
            self._close("utp: closed")
        elif state == "syn-recv":
            self._queue_reset()
            self._close("utp: closed")
        elif state == "connected":
            self._fin_requested = True
            self._state = "fin-sent"

    def abort(self, now: float) -> None:
        """RESET the peer and close at once."""
        self._now = now
        if self._state == "closed":
            return
        if self._state != "syn-sent":
            self._queue_reset()
        self._close("utp: aborted")

    # --- output and timers -----------------------------------------------------------

    def outgoing(self, now: float | None = None, limit: int = 0) -> list[bytes]:
        """The datagrams to send now, in order (drains them).

        ``now``, when given, is the send time: timestamps, RTT and timers
        start from it rather than from the last input (a batch of received
        packets can take a while to handle).  ``limit`` > 0 caps the count;
        while a call returns ``limit`` datagrams, call again and send each
        list before asking for the next: a window's worth (thousands of
        datagrams) built at once grows the heap, and on Linux every fresh
        page faults, which measured as much again as building them; sent in
        small lists the same few pages are reused.
        """
        if now is not None:
            self._now = now
        out = self._out
        self._out = []
        if self._state != "closed":
            sent_data = self._flush(out, limit if limit > 0 else _NO_LIMIT)
            if sent_data and not self._reorder.packets:
                self._ack_needed = False  # the data carried it (a SACK needs a STATE)
            if limit and len(out) >= limit:
                return out  # more to come: a STATE still owed goes last
        if self._ack_needed:
            self._send_state(out)
            self._ack_needed = False
        return out

    def next_timeout(self) -> float | None:
        """When :meth:`poll` must be called next (absolute, like ``now``); None once closed."""
        state = self._state
        if state == "closed":
            return None
        settings = self._settings
        when: float | None = None
        if state in ("syn-sent", "syn-recv"):
            when = self._connect_deadline
        else:
            when = self._last_recv + settings.idle_timeout
            if state == "connected":
                keepalive = self._last_send + settings.keepalive
                when = min(when, keepalive)
        for deadline in (self._rto_deadline, self._persist_deadline):
            if deadline is not None and (when is None or deadline < when):
                when = deadline
        return when

    def poll(self, now: float) -> None:
        """Fire whatever timers are due: retransmission, persist, keep-alive, timeouts."""
        self._now = now
        state = self._state
        if state == "closed":
            return
        settings = self._settings
        if state in ("syn-sent", "syn-recv"):
            deadline = self._connect_deadline
            if deadline is not None and now >= deadline:
                self._close("utp: connect timeout")
                return
        elif now >= self._last_recv + settings.idle_timeout:  # the form next_timeout() uses
            self._close("utp: timeout")
            return
        rto_deadline = self._rto_deadline
        if rto_deadline is not None and now >= rto_deadline:
            self._on_rto(now)
            if self._state == "closed":
                return
        persist = self._persist_deadline
        if persist is not None and now >= persist:
            self._persist_deadline = None
            self._force_send = True
        if self._state == "connected" and now >= self._last_send + settings.keepalive:
            self._send_keepalive(self._out)

    # --- receiving ----------------------------------------------------------------------

    def receive(self, packet: Packet, now: float) -> None:
        """One packet from the peer (already demultiplexed by connection id)."""
        self._now = now
        state = self._state
        if state == "closed":
            return
        kind, _, ts, ts_diff, wnd, seq, ack_nr, sack, payload = packet
        counters = self._counters
        counters.packets_in += 1
        counters.bytes_in += HEADER_SIZE + len(payload) + (len(sack) + 2 if sack else 0)
        if kind >= ST_RESET:
            if kind == ST_RESET:
                self._close("utp: reset by peer")
            else:
                self._on_syn(packet)
            return
        sbuf = self._sbuf
        if state == "syn-sent":
            if kind != ST_STATE or ack_nr != (sbuf.seq_nr - 1) & SEQ_MASK:
                counters.invalid += 1
                return
            self._state = "connected"
            self._connect_deadline = None
            self._ack_nr = (seq - 1) & SEQ_MASK
        if ack_nr == sbuf.acked:
            acked: list[OutPacket] = []  # the common case of a data packet: nothing new
        else:
            maybe = sbuf.ack_through(ack_nr)
            if maybe is None:
                counters.invalid += 1
                return
            acked = maybe
        if state == "syn-recv":
            self._state = "connected"
            self._connect_deadline = None
        self._last_recv = now
        self._peer_wnd = wnd
        if ts:
            # The echo in what we send next is computed when it is sent.
            self._reply_ts = ts
            self._reply_at = now
            if now >= self._their_sample_due:
                self._sample_their_delay(now)
        if acked or (kind == ST_STATE and sbuf.packets):
            # Our one-way delay drives LEDBAT: sampled from what acknowledges
            # our data, not from every packet of a download that happens to
            # arrive while a request of ours is in flight.
            self._ledbat.on_delay_sample(ts_diff, now)
        if acked or sack is not None or kind == ST_STATE:
            self._on_acks(packet, acked, now)
            if self._state == "closed":
                return
        if kind != ST_STATE:
            rbuf = self._rbuf
            size = len(payload)
            if (
                seq == (self._ack_nr + 1) & SEQ_MASK
                and kind == ST_DATA
                and self._eof_seq is None
                and not self._reorder.packets
                and rbuf.size + size <= self._recv_buffer
            ):
                # In order, nothing waiting behind it: straight to the reader.
                self._ack_needed = True
                self._ack_nr = seq
                if size:
                    rbuf.append(payload)
                    counters.payload_in += size
            else:
                self._on_data(packet)
        if self._fin is not None:
            self._maybe_finish()

    def receive_datagram(self, data: bytes | memoryview, now: float) -> None:
        """:meth:`receive` for a raw datagram already matched to this connection.

        :class:`~.packet.UtpPacketError` if it is malformed.  The shape of
        nearly every packet of a download (DATA without extensions, the next
        in order, acknowledging nothing new, room in the window, connected)
        is taken here without building a :class:`~.packet.Packet` or going
        through the general path; it does exactly what :meth:`receive` would.
        Anything else is decoded and handed to :meth:`receive`.
        """
        if data[0] == _DATA_V1 and not data[1] and len(data) >= HEADER_SIZE:
            _, _, _, ts, _, wnd, seq, ack_nr = _unpack_header(data)
            rbuf = self._rbuf
            size = len(data) - HEADER_SIZE
            if (
                seq == (self._ack_nr + 1) & SEQ_MASK
                and ack_nr == self._sbuf.acked
                and self._state == "connected"
                and self._eof_seq is None
                and not self._reorder.packets
                and rbuf.size + size <= self._recv_buffer
            ):
                self._now = now
                counters = self._counters
                counters.packets_in += 1
                counters.bytes_in += HEADER_SIZE + size
                self._last_recv = now
                self._peer_wnd = wnd
                if ts:
                    self._reply_ts = ts
                    self._reply_at = now
                    if now >= self._their_sample_due:
                        self._sample_their_delay(now)
                self._ack_needed = True
                self._ack_nr = seq
                if size:
                    rbuf.append(data[HEADER_SIZE:])
                    counters.payload_in += size
                return
        self.receive(decode(data), now)

    def _on_syn(self, packet: Packet) -> None:
        # A retransmitted SYN: our STATE answering it was lost.  Answer again
        # while we are still the fresh responder; anything else is ignored.
        if self._state == "syn-recv" and packet.seq_nr == self._syn_seq:
            self._last_recv = self._now
            self._ack_needed = True
        else:
            self._counters.invalid += 1

    def _note_timestamps(self, packet: Packet, now: float) -> None:
        """The SYN's timestamp (what :meth:`receive` does inline for every other packet)."""
        if packet.timestamp_us:
            self._reply_ts = packet.timestamp_us
            self._reply_at = now
            self._sample_their_delay(now)

    def _reply_micro(self) -> int:
        """``timestamp_diff_us`` for what we send: the last packet's delay, as measured."""
        if not self._reply_ts:
            return 0
        return (_micros(self._reply_at) - self._reply_ts) & TIMESTAMP_MASK

    def _sample_their_delay(self, now: float) -> None:
        # their one-way delay is only reported (stats): sampled, not per packet
        reply = self._reply_micro()
        if reply:
            self._their_delay.add(reply, now)
            self._their_sample_due = now + THEIR_DELAY_EVERY

    def _on_acks(self, packet: Packet, acked: list[OutPacket], now: float) -> None:
        sbuf = self._sbuf
        newly = acked
        if packet.sack is not None and sbuf.outstanding > 1:
            sacked = sbuf.selective_ack(packet.ack_nr, int.from_bytes(packet.sack, "little"))
            if sacked:
                newly = acked + sacked if acked else sacked
        if acked:
            self._dup_acks = 0
        elif (
            packet.type == ST_STATE
            and sbuf.flight
            and packet.ack_nr == sbuf.acked
            and packet.wnd_size >= self._mss
        ):
            self._dup_acks += 1
            self._counters.dup_acks += 1
            if self._dup_acks == DUP_ACKS:
                self._dup_ack_resend(now)
        if not newly:
            return
        rtt = self._rtt
        bytes_acked = 0
        newest = newly[0]
        for out in newly:
            bytes_acked += len(out.payload)
            if out.sent_at > newest.sent_at:
                newest = out
        # One RTT sample per ack, from the packet that triggered it (the newest
        # one acknowledged), and only if it was sent once (Karn).  It is also
        # the smallest RTT here: LEDBAT's cap on the one-way delay.
        min_rtt = now - newest.sent_at
        if newest.transmissions == 1:
            rtt.sample(min_rtt)
        if acked:
            oldest = sbuf.oldest()
            if oldest is not None:
                oldest.timeouts = 0
            self._rto_deadline = now + rtt.rto if sbuf.packets else None
        lost = sbuf.detect_losses()
        if lost:
            self._on_loss(lost, fast=True)
        self._ledbat.on_ack(bytes_acked, now, min_rtt)

    def _dup_ack_resend(self, now: float) -> None:
        oldest = self._sbuf.oldest()
        srtt = self._rtt.srtt or 0.0
        if oldest is None or now - oldest.sent_at < srtt:
            return
        if self._sbuf.mark_lost(oldest):
            self._on_loss([oldest], fast=True)

    def _on_loss(self, lost: list[OutPacket], *, fast: bool) -> None:
        if fast:
            self._counters.fast_retransmits += len(lost)
        cut = self._loss_cut_tx
        if any(out.tx > cut for out in lost):
            self._ledbat.on_loss()
            self._loss_cut_tx = self._tx

    def _on_data(self, packet: Packet) -> None:
        seq = packet.seq_nr
        self._ack_needed = True
        offset = (seq - self._ack_nr - 1) & SEQ_MASK
        if offset >= 0x8000:
            self._counters.duplicates_in += 1  # already delivered
            return
        if self._peer_fin_reached:
            self._counters.invalid += 1  # nothing comes after the peer's FIN
            return
        if packet.type == ST_FIN and self._eof_seq is None:
            self._eof_seq = seq
        eof = self._eof_seq
        if eof is not None and offset > (eof - self._ack_nr - 1) & SEQ_MASK:
            self._counters.invalid += 1  # past the peer's own FIN
            return
        payload = packet.payload
        recv_buffer = self._settings.recv_buffer
        if offset == 0:
            if payload and len(self._rbuf) + len(payload) > recv_buffer:
                return  # window overrun (or a probe): dropped, the ack tells the window
            self._deliver(seq, packet.type, payload)
            reorder = self._reorder
            while len(reorder):
                entry = reorder.pop((self._ack_nr + 1) & SEQ_MASK)
                if entry is None:
                    break
                self._deliver((self._ack_nr + 1) & SEQ_MASK, entry[0], entry[1])
            return
        if offset >= MAX_REORDER:
            self._counters.invalid += 1
            return
        reorder = self._reorder
        if seq in reorder:
            self._counters.duplicates_in += 1
            return
        if len(self._rbuf) + reorder.bytes + len(payload) > recv_buffer:
            return  # no room: the sender will retransmit
        reorder.put(seq, packet.type, bytes(payload))  # a copy: payload may be a view

    def _deliver(self, seq: int, kind: int, payload: bytes | memoryview) -> None:
        self._ack_nr = seq
        if payload:
            self._rbuf.append(payload)
            self._counters.payload_in += len(payload)
        if seq == self._eof_seq:
            self._peer_fin_reached = True
            self._reorder.clear()
            if not self._fin_requested:
                self._peer_closed_first = True
                self._fin_requested = True
                if self._state == "connected":
                    self._state = "fin-sent"

    def _maybe_finish(self) -> None:
        # The FIN is the last packet we ever send: nothing left unacknowledged
        # (a SACK alone does not count) means it and all before it arrived.
        if (
            self._fin is not None
            and not self._sbuf.packets
            and (self._eof_seq is None or self._peer_fin_reached)
        ):
            self._close("utp: closed", final_ack=True)

    # --- sending --------------------------------------------------------------------

    def _advertised_window(self) -> int:
        free = self._settings.recv_buffer - len(self._rbuf) - self._reorder.bytes
        return free if free > 0 else 0

    def _transmit(self, out: OutPacket, sink: list[bytes]) -> None:
        now = self._now
        wnd = self._advertised_window()
        self._last_adv = wnd
        datagram = pack(
            out.kind,
            self._recv_id if out.kind == ST_SYN else self._send_id,
            _micros(now),
            self._reply_micro(),
            wnd,
            out.seq,
            self._ack_nr if out.kind != ST_SYN else 0,
            None,
            out.payload,
        )
        sink.append(datagram)
        counters = self._counters
        counters.packets_out += 1
        counters.bytes_out += len(datagram)
        if out.transmissions:
            counters.retransmits += 1
        else:
            counters.payload_out += len(out.payload)
        self._tx += 1
        self._sbuf.sent(out, now, self._tx)
        self._last_send = now
        if self._rto_deadline is None:
            self._rto_deadline = now + self._rtt.rto

    def _send_state(self, sink: list[bytes], *, ack_nr: int | None = None) -> None:
        wnd = self._advertised_window()
        self._last_adv = wnd
        sack = self._reorder.sack(self._ack_nr) if ack_nr is None else None
        datagram = pack(
            ST_STATE,
            self._send_id,
            _micros(self._now),
            self._reply_micro(),
            wnd,
            self._sbuf.seq_nr,
            self._ack_nr if ack_nr is None else ack_nr,
            sack,
        )
        sink.append(datagram)
        self._counters.packets_out += 1
        self._counters.bytes_out += len(datagram)
        self._last_send = self._now

    def _send_keepalive(self, sink: list[bytes]) -> None:
        # ack_nr - 1, as libutp: an old ack keeps the peer's idle timer alive
        # without counting as a duplicate ack there.
        self._send_state(sink, ack_nr=(self._ack_nr - 1) & SEQ_MASK)

    def _queue_reset(self) -> None:
        datagram = pack(
            ST_RESET,
            self._send_id,
            _micros(self._now),
            self._reply_micro(),
            0,
            self._sbuf.seq_nr,
            self._ack_nr,
        )
        self._out.append(datagram)
        self._counters.packets_out += 1
        self._counters.bytes_out += len(datagram)

    def _can_send(self, size: int) -> bool:
        in_flight = self._sbuf.in_flight
        peer = self._peer_wnd
        cwnd = self._ledbat.cwnd
        if in_flight + size <= (cwnd if cwnd < peer else peer):
            return True
        # A window below one packet still lets one packet out when nothing is in flight.
        return in_flight == 0 and size <= peer

    def _flush(self, sink: list[bytes], limit: int) -> bool:
        """Send what the window allows: lost packets, new data, the FIN.  True if any DATA/FIN.

        Stops once ``sink`` holds ``limit`` datagrams, as if the window had
        room for no more (the next call carries on).
        """
        state = self._state
        sbuf = self._sbuf
        if state == "syn-sent":
            syn = sbuf.first_lost()  # the SYN, after a timeout
            if syn is not None:
                self._transmit(syn, sink)
            self._force_send = False
            return False
        if state == "syn-recv":
            return False
        sent = False
        blocked = False
        force = self._force_send
        while (out := sbuf.first_lost()) is not None:
            if len(sink) >= limit:
                self._force_send = force
                return sent
            if not force and not self._can_send(len(out.payload)):
                blocked = True
                break
            force = False
            self._transmit(out, sink)  # takes it off the lost list
            sent = True
        if not blocked and self._unsent_bytes:
            sent_new, blocked = self._send_new_data(sink, force, limit - len(sink))
            if sent_new:
                sent = True
                force = False
            if len(sink) >= limit:
                self._force_send = force
                return sent
        if (
            not blocked
            and self._fin_requested
            and self._fin is None
            and not sbuf.lost_count
            and sbuf.outstanding < MAX_OUTSTANDING
        ):
            self._fin = sbuf.new_packet(ST_FIN, b"")
            self._transmit(self._fin, sink)
            sent = True
        self._force_send = False
        if blocked:
            self._note_blocked()
        else:
            self._persist_deadline = None
        return sent

    def _send_new_data(self, sink: list[bytes], force: bool, most: int) -> tuple[bool, bool]:
        """Packetise unsent bytes as far as the window and ``most`` allow: (any sent, blocked).

        Two passes, each without a call per packet: cut the payloads the
        window admits, hand them to the send buffer in one go, then build
        the datagrams (every header field but ``seq_nr`` is the same).
        """
        sbuf = self._sbuf
        unsent = self._unsent
        left = self._unsent_bytes
        off = self._unsent_off
        mss = self._mss
        peer = self._peer_wnd
        cwnd = self._ledbat.cwnd
        limit = cwnd if cwnd < peer else peer
        room = MAX_OUTSTANDING - sbuf.outstanding
        in_flight = sbuf.in_flight
        payloads: list[bytes] = []
        blocked = False
        while left and most > 0:
            most -= 1
            size = left if left < mss else mss
            if room <= 0 or (
                not force and in_flight + size > limit and not (in_flight == 0 and size <= peer)
            ):
                blocked = True
                break
            force = False
            room -= 1
            head = unsent[0]
            stop = off + size
            if stop < len(head):
                payloads.append(head[off:stop])
                off = stop
            elif stop == len(head):
                payloads.append(head[off:] if off else head)
                unsent.popleft()
                off = 0
            else:
                payload, off = _gather(unsent, off, size)
                payloads.append(payload)
            in_flight += size
            left -= size
        self._unsent_bytes = left
        self._unsent_off = off
        count = len(payloads)
        if not count:
            return False, blocked
        now = self._now
        seq = sbuf.seq_nr
        sbuf.send_many(ST_DATA, payloads, now, self._tx + 1)
        self._tx += count
        header = HEADER.pack
        type_ver = ST_DATA << 4 | VERSION
        send_id = self._send_id
        ts = _micros(now)
        reply = self._reply_micro()
        wnd = self._advertised_window()
        self._last_adv = wnd
        ack = self._ack_nr
        append = sink.append
        sent_bytes = 0
        for payload in payloads:
            append(header(type_ver, 0, send_id, ts, reply, wnd, seq, ack) + payload)
            seq = (seq + 1) & SEQ_MASK
            sent_bytes += len(payload)
        counters = self._counters
        counters.packets_out += count
        counters.bytes_out += sent_bytes + count * HEADER_SIZE
        counters.payload_out += sent_bytes
        self._last_send = now
        if self._rto_deadline is None:
            self._rto_deadline = now + self._rtt.rto
        return True, blocked

    def _note_blocked(self) -> None:
        now = self._now
        sbuf = self._sbuf
        if sbuf.in_flight + self._mss > self._ledbat.cwnd:
            self._ledbat.note_cwnd_full(now)
        if sbuf.in_flight == 0 and not sbuf.flight and self._peer_wnd < self._mss:
            if self._persist_deadline is None:
                interval = max(self._persist_interval * 2, self._rtt.rto)
                self._persist_interval = min(interval, self._settings.max_rto)
                self._persist_deadline = now + self._persist_interval
        else:
            self._persist_interval = 0.0

    def _on_rto(self, now: float) -> None:
        sbuf = self._sbuf
        oldest = sbuf.oldest()
        if oldest is None:
            self._rto_deadline = None
            return
        rtt = self._rtt
        if self._state == "syn-sent":
            sbuf.mark_lost(oldest)
            rtt.back_off()
            self._rto_deadline = now + rtt.rto
            return
        # A closed window with a peer that keeps answering is flow control, not loss.
        persist = self._peer_wnd < self._mss and self._last_recv >= oldest.sent_at
        if not persist:
            oldest.timeouts += 1
            limit = self._settings.max_retransmits
            if self._peer_fin_reached:
                limit = min(limit, FIN_RETRIES_AFTER_PEER_FIN)
            if oldest.timeouts > limit:
                self._close("utp: timeout")
                return
            self._counters.timeouts += 1
            self._ledbat.on_timeout()
            self._loss_cut_tx = self._tx
        sbuf.mark_all_lost()
        rtt.back_off()
        self._dup_acks = 0
        self._force_send = True
        self._rto_deadline = now + rtt.rto

    # --- closing ----------------------------------------------------------------------

    def _close(self, reason: str, *, final_ack: bool = False) -> None:
        """Closed for ``reason``; with ``final_ack`` the ack owed to the peer still goes out."""
        if self._state == "closed":
            return
        if self._peer_closed_first:
            reason = "utp: closed by peer"
        self._state = "closed"
        self._reason = reason
        self._ack_needed = self._ack_needed and final_ack
        self._force_send = False
        self._sbuf.clear()
        self._reorder.clear()
        self._unsent.clear()
        self._unsent_off = 0
        self._unsent_bytes = 0
        self._rto_deadline = self._persist_deadline = self._connect_deadline = None
