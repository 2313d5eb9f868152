"""The two per-connection packet stores: what we sent, what arrived early.

:class:`SendBuffer` holds every packet sent and not yet acknowledged, keyed
by its 16-bit ``seq_nr``, with what the connection needs to retransmit it:
when it was last sent, how often, whether it is marked lost
(``need_resend``) and a transmission order number (``tx``, one counter per
connection) that loss detection compares against.  It keeps the two byte
counts flow and congestion control need: ``in_flight`` (sent, neither
acknowledged nor marked lost) and ``payload_bytes`` (everything held, for
the send-buffer limit).  Packets enter only when first sent, so the
cumulative ack pointer and ``seq_nr`` bound what can ever be acknowledged:
an ack or a SACK bit outside that range is ignored, whatever a peer sends.

:class:`ReorderBuffer` holds DATA/FIN packets that arrived ahead of a gap,
until the gap fills; it builds the selective-ACK bitmask (extension 1) that
tells the sender which ones it has.  The connection bounds it by the
receive window (bytes) and by :data:`MAX_REORDER` packets; the bitmask is
capped at :data:`MAX_SACK_BYTES`.

:class:`ReadBuffer` holds the in-order payload until the reader takes it.

All sequence arithmetic is modulo 2**16 (serial numbers, RFC 1982).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = [
    "DUP_THRESHOLD",
    "MAX_REORDER",
    "MAX_SACK_BYTES",
    "SEQ_MASK",
    "OutPacket",
    "ReadBuffer",
    "ReorderBuffer",
    "SendBuffer",
    "seq_less",
]

SEQ_MASK = 0xFFFF
#: The farthest ahead of the next expected packet we buffer, and (as the
#: connection's MAX_OUTSTANDING) the most sequence numbers we have in flight.
#: libutp's 1,024 capped a sender at 1.4 MB in flight: ~55 MB/s at a 26 ms
#: RTT.  A 4 MiB window holds ~3,000 full packets (libtorrent's senders fill
#: it), so a loss early in it must not make us drop the rest.
MAX_REORDER = 4096
#: Later-sent packets acknowledged before an earlier one counts as lost (TCP's 3 dup ACKs).
DUP_THRESHOLD = 3
#: Selective-ACK bitmask cap: 32 bytes, 256 packets past ack_nr + 1.
MAX_SACK_BYTES = 32


def seq_less(a: int, b: int) -> bool:
    """``a < b`` for 16-bit sequence numbers that wrap."""
    return 0 < (b - a) & SEQ_MASK < 0x8000


class OutPacket:
    """One packet we sent (DATA, FIN or SYN) and its retransmission state."""

    __slots__ = (
        "kind",
        "need_resend",
        "payload",
        "sent_at",
        "seq",
        "timeouts",
        "transmissions",
        "tx",
    )

    def __init__(
        self, kind: int, seq: int, payload: bytes, sent_at: float = 0.0, tx: int = 0
    ) -> None:
        self.kind = kind
        self.seq = seq
        self.payload = payload
        self.sent_at = sent_at
        #: times sent (a packet built already sent, ``tx`` given, counts once)
        self.transmissions = 1 if tx else 0
        self.need_resend = False
        self.tx = tx
        #: retransmission timeouts that fired while this was the oldest packet
        self.timeouts = 0


class SendBuffer:
    """Packets sent and not yet acknowledged; ``seq_nr`` is the next to assign.

    Loss detection is by transmission order (the duplicate-ACK threshold of
    TCP, counted on what SACKs and acks prove delivered, as RACK does with
    time): a packet in flight is lost once :data:`DUP_THRESHOLD` packets
    *sent after it* have been acknowledged.  ``flight`` keeps the packets in
    flight in the order they were last sent, so finding them costs only the
    packets found; a retransmission moves a packet to the back, so it is
    never declared lost again on the evidence that condemned it once.
    """

    __slots__ = (
        "_delivered",
        "_lost",
        "acked",
        "flight",
        "in_flight",
        "packets",
        "payload_bytes",
        "seq_nr",
    )

    def __init__(self, first_seq: int) -> None:
        self.seq_nr = first_seq & SEQ_MASK
        #: the last sequence number the peer acknowledged cumulatively
        self.acked = (first_seq - 1) & SEQ_MASK
        #: every packet held, by seq_nr
        self.packets: dict[int, OutPacket] = {}
        #: the packets in flight (sent, not acknowledged, not marked lost), oldest send first
        self.flight: OrderedDict[int, OutPacket] = OrderedDict()
        self.in_flight = 0
        self.payload_bytes = 0
        #: packets marked lost, in the order they were found lost (about seq order)
        self._lost: OrderedDict[int, OutPacket] = OrderedDict()
        #: the DUP_THRESHOLD highest ``tx`` of acknowledged packets, ascending
        self._delivered: list[int] = []

    @property
    def outstanding(self) -> int:
        """Sequence numbers between the ack pointer and ``seq_nr`` (SACKed ones included)."""
        return (self.seq_nr - 1 - self.acked) & SEQ_MASK

    @property
    def lost_count(self) -> int:
        return len(self._lost)

    def oldest(self) -> OutPacket | None:
        """The first unacknowledged packet (never SACKed: SACK starts at ack + 2)."""
        return self.packets.get((self.acked + 1) & SEQ_MASK)

    def new_packet(self, kind: int, payload: bytes) -> OutPacket:
        """Assign the next sequence number; the caller sends it at once (:meth:`sent`)."""
        packet = OutPacket(kind, self.seq_nr, payload)
        self.packets[self.seq_nr] = packet
        self.seq_nr = (self.seq_nr + 1) & SEQ_MASK
        self.payload_bytes += len(packet.payload)
        return packet

    def send_many(self, kind: int, payloads: list[bytes], now: float, first_tx: int) -> None:
        """New packets for ``payloads``, numbered from ``seq_nr``, sent now as ``first_tx``, ...

        :meth:`new_packet` then :meth:`sent` for each, in one call: the bulk
        sending path.
        """
        packets = self.packets
        flight = self.flight
        seq = self.seq_nr
        tx = first_tx
        total = 0
        for payload in payloads:
            packet = OutPacket(kind, seq, payload, now, tx)
            packets[seq] = packet
            flight[seq] = packet
            total += len(payload)
            seq = (seq + 1) & SEQ_MASK
            tx += 1
        self.seq_nr = seq
        self.in_flight += total
        self.payload_bytes += total

    def sent(self, packet: OutPacket, now: float, tx: int) -> None:
        """``packet`` went out (first time or again) as transmission number ``tx``."""
        seq = packet.seq
        flight = self.flight
        if seq in flight:
            flight.move_to_end(seq)
        else:
            flight[seq] = packet
            self.in_flight += len(packet.payload)
            if packet.need_resend:
                packet.need_resend = False
                self._lost.pop(seq, None)
        packet.transmissions += 1
        packet.sent_at = now
        packet.tx = tx

    def mark_lost(self, packet: OutPacket) -> bool:
        """Count ``packet`` out of flight until it is sent again; False if it was not in flight."""
        if self.flight.pop(packet.seq, None) is None:
            return False
        packet.need_resend = True
        self.in_flight -= len(packet.payload)
        self._lost[packet.seq] = packet
        return True

    def mark_all_lost(self) -> None:
        """A retransmission timeout: everything in flight must be sent again."""
        for packet in list(self.flight.values()):
            self.mark_lost(packet)

    def first_lost(self) -> OutPacket | None:
        """The packet to retransmit next (the earliest found lost), None if none is."""
        lost = self._lost
        return next(iter(lost.values())) if lost else None

    def _take(self, seq: int) -> OutPacket | None:
        """Remove ``seq`` (acknowledged) from every count; the packet, or None if not held."""
        packet = self.packets.pop(seq, None)
        if packet is None:
            return None
        size = len(packet.payload)
        if self.flight.pop(seq, None) is not None:
            self.in_flight -= size
        else:
            self._lost.pop(seq, None)
        self.payload_bytes -= size
        return packet

    def _note_delivered(self, acked: list[OutPacket]) -> None:
        top = sorted([packet.tx for packet in acked] + self._delivered)
        self._delivered = top[-DUP_THRESHOLD:]

    def ack_through(self, ack_nr: int) -> list[OutPacket] | None:
        """Cumulative ack up to ``ack_nr``: the packets it newly covers (SACKed ones skipped).

        None when ``ack_nr`` acknowledges something never sent (a hostile or
        confused peer); an old ack acknowledges nothing.
        """
        last_sent = (self.seq_nr - 1) & SEQ_MASK
        if seq_less(last_sent, ack_nr):
            return None
        count = (ack_nr - self.acked) & SEQ_MASK
        if count == 0 or count > self.outstanding:
            return []
        acked: list[OutPacket] = []
        # _take() inlined: this runs for every packet acknowledged
        packets_pop = self.packets.pop
        flight_pop = self.flight.pop
        lost = self._lost
        in_flight = 0
        total = 0
        seq = self.acked
        for _ in range(count):
            seq = (seq + 1) & SEQ_MASK
            packet = packets_pop(seq, None)
            if packet is None:
                continue  # SACKed before
            size = len(packet.payload)
            total += size
            if flight_pop(seq, None) is not None:
                in_flight += size
            elif lost:
                lost.pop(seq, None)
            acked.append(packet)
        self.in_flight -= in_flight
        self.payload_bytes -= total
        self.acked = ack_nr & SEQ_MASK
        if acked:
            self._note_delivered(acked)
        return acked

    def selective_ack(self, ack_nr: int, mask: int) -> list[OutPacket]:
        """SACK bits of a packet acking ``ack_nr`` (bit ``i`` = ``ack_nr + 2 + i``): newly acked."""
        acked: list[OutPacket] = []
        outstanding = self.outstanding
        pointer = self.acked
        take = self._take
        seq = (ack_nr + 2) & SEQ_MASK
        while mask:
            if mask & 1:
                offset = (seq - pointer - 1) & SEQ_MASK
                if 0 < offset < outstanding:  # never the oldest: only a cumulative ack takes it
                    packet = take(seq)
                    if packet is not None:
                        acked.append(packet)
                elif offset < 0x8000:
                    break  # past what we sent: the rest is too
            mask >>= 1
            seq = (seq + 1) & SEQ_MASK
        if acked:
            self._note_delivered(acked)
        return acked

    def detect_losses(self) -> list[OutPacket]:
        """Packets in flight with DUP_THRESHOLD later-sent packets acknowledged: marked lost."""
        delivered = self._delivered
        if len(delivered) < DUP_THRESHOLD:
            return []
        threshold = delivered[0]
        lost: list[OutPacket] = []
        flight = self.flight
        while flight:
            packet = next(iter(flight.values()))
            if packet.tx >= threshold:
                break
            self.mark_lost(packet)
            lost.append(packet)
        return lost

    def clear(self) -> None:
        self.packets.clear()
        self.flight.clear()
        self._lost.clear()
        self.in_flight = 0
        self.payload_bytes = 0


class ReorderBuffer:
    """DATA/FIN packets received ahead of the next expected one, keyed by seq_nr."""

    __slots__ = ("bytes", "packets")

    def __init__(self) -> None:
        self.packets: dict[int, tuple[int, bytes]] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.packets)

    def __contains__(self, seq: int) -> bool:
        return seq in self.packets

    def put(self, seq: int, kind: int, payload: bytes) -> None:
        self.packets[seq] = (kind, payload)
        self.bytes += len(payload)

    def pop(self, seq: int) -> tuple[int, bytes] | None:
        entry = self.packets.pop(seq, None)
        if entry is not None:
            self.bytes -= len(entry[1])
        return entry

    def sack(self, ack_nr: int) -> bytes | None:
        """The selective-ACK bitmask for the packets held (None when empty)."""
        if not self.packets:
            return None
        limit = MAX_SACK_BYTES * 8
        base = (ack_nr + 2) & SEQ_MASK
        mask = 0
        for seq in self.packets:
            bit = (seq - base) & SEQ_MASK
            if bit < limit:
                mask |= 1 << bit
        if not mask:
            return None
        length = ((mask.bit_length() + 31) // 32) * 4
        return mask.to_bytes(length, "little")

    def clear(self) -> None:
        self.packets.clear()
        self.bytes = 0


class ReadBuffer:
    """In-order payload waiting for the reader, copied into one bytearray that is reused.

    Why not a list of the packets' payloads: every payload would be an
    object of its own (1,400 bytes from ``malloc``), and a batch of them
    freed at once lets the heap shrink and grow again, page faults
    included; measured, that cost as much as the rest of the receive path.
    Here a payload is one ``memcpy`` into room that stays allocated: the
    buffer grows (doubling) to what the reader leaves waiting, which the
    receive window bounds, and is rewound whenever it is emptied.
    """

    __slots__ = ("_end", "_start", "_view", "size")

    #: The first allocation; a connection that never receives has none.
    INITIAL = 64 << 10

    def __init__(self) -> None:
        # Written through a memoryview: assigning a memoryview to a slice of
        # a bytearray itself copies it into a temporary bytearray first
        # (CPython), which measured slower than the rest of append().
        self._view = memoryview(bytearray())
        self._start = 0
        self._end = 0
        #: bytes held (``len()`` without a call, for the per-packet path)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes | memoryview) -> None:
        size = len(data)
        end = self._end
        if end + size > len(self._view):
            self._make_room(size)
            end = self._end
        self._view[end : end + size] = data
        self._end = end + size
        self.size += size

    def _make_room(self, size: int) -> None:
        view = self._view
        held = self._end - self._start
        need = held + size
        if need * 2 <= len(view):
            view[:held] = bytes(view[self._start : self._end])  # compact (ranges may overlap)
        else:
            grown = memoryview(bytearray(max(need, 2 * len(view), self.INITIAL)))
            grown[:held] = view[self._start : self._end]
            self._view = grown
        self._start = 0
        self._end = held

    def read_into(self, view: memoryview | bytearray) -> int:
        """Move as much as fits into ``view`` (flat bytes); the count."""
        start = self._start
        count = min(len(view), self._end - start)
        if count:
            if isinstance(view, bytearray):
                view = memoryview(view)  # see __init__: a view copies once
            view[:count] = self._view[start : start + count]
            start += count
            if start == self._end:
                start = self._end = 0
            self._start = start
            self.size -= count
        return count

    def read(self) -> bytes:
        """Everything held, as bytes."""
        data = self._view[self._start : self._end].tobytes()
        self._start = self._end = self.size = 0
        return data
