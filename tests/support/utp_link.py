"""A simulated network path between two sans-IO ``UtpConnection``s, on a virtual clock.

No sockets and no sleeping: datagrams from ``outgoing()`` are scheduled on
an event heap with the path's delay, jitter, loss, reordering, duplication
and a bottleneck (a bandwidth cap with a drop-tail queue), and the clock
jumps from one event (an arrival or a connection's ``next_timeout()``) to
the next.  Everything random comes from one seeded ``random.Random``, so a
run is reproducible.

The initiator (side ``"a"``) is built by the caller; the responder (side
``"b"``) is created by :meth:`UtpConnection.accept` when the first SYN
arrives, as a socket would.  ``on_step`` (the "application") runs after
every batch of events; typical ones are :func:`feeder` and the reader in
:meth:`UtpLink.transfer`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from core.utp.connection import UtpConnection, UtpSettings
from core.utp.packet import ST_SYN, UtpPacketError, decode

__all__ = ["Direction", "LinkConfig", "UtpLink"]


@dataclass
class LinkConfig:
    """One direction of the path."""

    delay: float = 0.025  # one-way propagation, seconds
    jitter: float = 0.0  # extra delay, uniform in [0, jitter)
    loss: float = 0.0  # probability a datagram is dropped
    reorder: float = 0.0  # probability a datagram is held back by ``reorder_delay``
    reorder_delay: float = 0.005
    duplicate: float = 0.0  # probability a datagram arrives twice
    bandwidth: float | None = None  # bytes per second at the bottleneck
    queue_limit: int = 1 << 20  # bytes the bottleneck queue holds (drop-tail)


@dataclass
class DirectionStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    queue_drops: int = 0
    duplicated: int = 0
    bytes_sent: int = 0


@dataclass
class Direction:
    """One way through the path: loss, the bottleneck queue, delay."""

    config: LinkConfig
    rng: random.Random
    busy_until: float = 0.0
    stats: DirectionStats = field(default_factory=DirectionStats)
    #: set to drop everything (a broken path), independent of ``loss``
    blackhole: bool = False
    #: arrival time of the last datagram that kept its place (jitter keeps FIFO order)
    last_arrival: float = 0.0

    def arrivals(self, size: int, now: float) -> list[float]:
        """When a datagram of ``size`` bytes sent at ``now`` arrives (0, 1 or 2 times)."""
        cfg = self.config
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += size
        rng = self.rng
        if self.blackhole or (cfg.loss and rng.random() < cfg.loss):
            stats.lost += 1
            return []
        start = now if now > self.busy_until else self.busy_until
        if cfg.bandwidth:
            if (start - now) * cfg.bandwidth > cfg.queue_limit:
                stats.queue_drops += 1
                return []
            self.busy_until = start + size / cfg.bandwidth
            start = self.busy_until
        copies = 1
        if cfg.duplicate and rng.random() < cfg.duplicate:
            copies = 2
            stats.duplicated += 1
        times = []
        for _ in range(copies):
            when = start + cfg.delay
            if cfg.jitter:
                # a path's delay varies, but a queue does not overtake itself
                when = max(when + rng.random() * cfg.jitter, self.last_arrival)
            if cfg.reorder and rng.random() < cfg.reorder:
                when += cfg.reorder_delay  # this one falls behind the next few
            else:
                self.last_arrival = when
            times.append(when)
        return times


class UtpLink:
    """Two connections joined by two :class:`Direction`s and a virtual clock."""

    def __init__(
        self,
        a: UtpConnection,
        *,
        ab: LinkConfig | None = None,
        ba: LinkConfig | None = None,
        seed: int = 1,
        start: float = 0.0,
        settings_b: UtpSettings | None = None,
        responder_seq: int | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.a: UtpConnection = a
        self.b: UtpConnection | None = None
        self.settings_b = settings_b or UtpSettings()
        self.responder_seq = responder_seq
        self.ab = Direction(ab or LinkConfig(), self.rng)
        self.ba = Direction(ba or LinkConfig(), self.rng)
        self._heap: list[tuple[float, int, str, bytes]] = []
        self._order = 0
        self.events = 0
        self.decode_errors = 0
        #: every datagram sent, per side, when ``record`` is on (tests that inspect packets)
        self.record = False
        self.sent: dict[str, list[bytes]] = {"a": [], "b": []}
        #: hook to drop or alter datagrams: (side, datagram) -> datagram or None
        self.tamper: Callable[[str, bytes], bytes | None] | None = None
        self.pump()

    def conns(self) -> list[UtpConnection]:
        return [self.a] if self.b is None else [self.a, self.b]

    def inject(self, side: str, datagram: bytes, delay: float = 0.0) -> None:
        """Deliver ``datagram`` to ``side`` after ``delay`` (hostile packets, replays)."""
        self._push(self.now + delay, side, datagram)

    def _push(self, when: float, side: str, datagram: bytes) -> None:
        self._order += 1
        heapq.heappush(self._heap, (when, self._order, side, datagram))

    def pump(self) -> None:
        """Move every connection's outgoing datagrams onto the path."""
        now = self.now
        for side, conn, direction in (("a", self.a, self.ab), ("b", self.b, self.ba)):
            if conn is None:
                continue
            target = "b" if side == "a" else "a"
            for datagram in conn.outgoing():
                if self.record:
                    self.sent[side].append(datagram)
                if self.tamper is not None:
                    changed = self.tamper(side, datagram)
                    if changed is None:
                        continue
                    datagram = changed
                for when in direction.arrivals(len(datagram), now):
                    self._push(when, target, datagram)

    def _deliver(self, side: str, datagram: bytes) -> None:
        (self.ab if side == "b" else self.ba).stats.delivered += 1
        try:
            packet = decode(datagram)
        except UtpPacketError:
            self.decode_errors += 1
            return
        if side == "b":
            if self.b is None:
                if packet.type != ST_SYN:
                    return
                self.b = UtpConnection.accept(
                    packet, now=self.now, settings=self.settings_b, seq_nr=self.responder_seq
                )
                return
            self.b.receive(packet, self.now)
        else:
            self.a.receive(packet, self.now)

    def next_event(self) -> float | None:
        when = self._heap[0][0] if self._heap else None
        for conn in self.conns():
            timeout = conn.next_timeout()
            if timeout is not None and (when is None or timeout < when):
                when = timeout
        return when

    def step(self, on_step: Callable[[UtpLink], None] | None = None) -> bool:
        """Advance to the next event and run it; False when nothing is left to happen."""
        when = self.next_event()
        if when is None:
            return False
        if when > self.now:
            self.now = when
        now = self.now
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, side, datagram = heapq.heappop(heap)
            self._deliver(side, datagram)
            self.events += 1
        for conn in self.conns():
            timeout = conn.next_timeout()
            if timeout is not None and timeout <= now:
                conn.poll(now)
        if on_step is not None:
            on_step(self)
        self.pump()
        return True

    def run(
        self,
        until: Callable[[UtpLink], bool],
        *,
        on_step: Callable[[UtpLink], None] | None = None,
        limit: float = 600.0,
    ) -> bool:
        """Step until ``until(self)`` holds (True) or virtual ``limit`` seconds pass (False)."""
        deadline = self.now + limit
        if on_step is not None:  # the application acts now, not at the next event
            on_step(self)
            self.pump()
        while not until(self):
            if not self.step(on_step) or self.now > deadline:
                return until(self)
        return True

    def advance(self, seconds: float, on_step: Callable[[UtpLink], None] | None = None) -> None:
        """Run every event in the next ``seconds`` of virtual time."""
        end = self.now + seconds
        while True:
            when = self.next_event()
            if when is None or when > end:
                break
            self.step(on_step)
        self.now = max(self.now, end)

    def connect(self, limit: float = 30.0) -> bool:
        """Run until both sides are connected (the responder needs a packet from the initiator)."""
        return self.run(lambda link: link.a.connected, limit=limit)

    def transfer(
        self,
        data: bytes,
        *,
        sender: str = "a",
        chunk: int = 16384,
        limit: float = 600.0,
        close: bool = True,
    ) -> bytes:
        """Write ``data`` on ``sender`` as fast as it is taken, read it all on the other side."""
        received = bytearray()
        offset = 0

        def app(link: UtpLink) -> None:
            nonlocal offset
            src = link.a if sender == "a" else link.b
            dst = link.b if sender == "a" else link.a
            if src is not None and src.connected:
                while offset < len(data):
                    taken = src.write(data[offset : offset + chunk], link.now)
                    if not taken:
                        break
                    offset += taken
                if close and offset == len(data) and src.state == "connected":
                    src.close(link.now)
            if dst is not None and dst.readable:
                received.extend(dst.read())

        if sender == "b":
            # the initiator speaks first (as in BitTorrent): the responder is
            # connected only once a packet from the initiator arrives
            self.connect()
            self.a.write(b"hello", self.now)
            self.pump()
        self.run(lambda link: len(received) >= len(data), on_step=app, limit=limit)
        return bytes(received)
