"""A simulated DHT: hundreds of sans-IO ``DhtNode``s in one process, no sockets.

A virtual clock and one priority queue carry every datagram from one node's
``outgoing()`` to another's ``receive()`` after a latency (with jitter),
dropping a fraction of them (loss); nodes are polled at their
``next_wakeup()``.  Addresses are distinct fake IPs ``10.x.y.z``.  Used by
``tests/test_dht_sim.py`` and ``bench/dht_sim.py``.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core.dht.events import DhtEvent, LookupFinished
from core.dht.node import DhtNode
from core.dht.types import Addr, DhtSettings

PORT = 6881


def sim_addr(i: int) -> Addr:
    """The fake address of node ``i`` (1-based): ``10.x.y.z``, all distinct."""
    return (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", PORT)


@dataclass(slots=True)
class SimStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    to_nowhere: int = 0  # sent to a node that is gone (churn)


@dataclass(slots=True)
class SimNode:
    addr: Addr
    node: DhtNode
    events: list[DhtEvent] = field(default_factory=list)
    wake: float | None = None


class SimNetwork:
    """The simulated network; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int = 1,
        loss: float = 0.05,
        latency: float = 0.05,
        jitter: float = 0.02,
        settings: DhtSettings | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.loss = loss
        self.latency = latency
        self.jitter = jitter
        self.settings = settings or DhtSettings()
        self.now = 0.0
        self.nodes: dict[Addr, SimNode] = {}
        self.stats = SimStats()
        self._queue: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._next_index = 1
        #: Hook: called with (data, src, dst) for every datagram sent (benchmarks count them).
        self.on_send: Callable[[bytes, Addr, Addr], None] | None = None

    # -- membership ----------------------------------------------------------

    def add_node(self, *, settings: DhtSettings | None = None) -> SimNode:
        index = self._next_index
        self._next_index += 1
        addr = sim_addr(index)
        node = DhtNode(
            settings or self.settings,
            now=self.now,
            rng=random.Random(self.seed * 1_000_003 + index),
        )
        sim = SimNode(addr, node)
        self.nodes[addr] = sim
        self._schedule_wake(sim)
        return sim

    def remove(self, addr: Addr) -> None:
        """The node vanishes without notice (churn); datagrams to it are lost."""
        self.nodes.pop(addr, None)

    # -- the event loop ----------------------------------------------------

    def _push(self, when: float, kind: int, item: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, kind, item))

    def _schedule_wake(self, sim: SimNode) -> None:
        wake = sim.node.next_wakeup()
        if wake is None:
            sim.wake = None
            return
        wake = max(wake, self.now)
        if sim.wake is not None and sim.wake <= wake:
            return  # an earlier wake-up is already queued; it reschedules
        sim.wake = wake
        self._push(wake, 1, sim.addr)

    def flush(self, sim: SimNode) -> None:
        """Move ``sim``'s datagrams onto the wire and its events into ``sim.events``."""
        for data, dst in sim.node.outgoing():
            self.send(data, sim.addr, dst)
        sim.events.extend(sim.node.events())
        self._schedule_wake(sim)

    def send(self, data: bytes, src: Addr, dst: Addr) -> None:
        """Put one datagram on the wire (raw senders, e.g. a flooder, use this too)."""
        self.stats.sent += 1
        if self.on_send is not None:
            self.on_send(data, src, dst)
        if self.rng.random() < self.loss:
            self.stats.lost += 1
            return
        delay = max(0.001, self.latency + self.rng.uniform(-self.jitter, self.jitter))
        self._push(self.now + delay, 0, (data, src, dst))

    def step(self) -> bool:
        """Handle the next thing on the queue; False when nothing is left."""
        if not self._queue:
            return False
        when, _, kind, item = heapq.heappop(self._queue)
        self.now = max(self.now, when)
        if kind == 0:
            assert isinstance(item, tuple)
            data: bytes = item[0]
            src: Addr = item[1]
            dst: Addr = item[2]
            sim = self.nodes.get(dst)
            if sim is None:
                self.stats.to_nowhere += 1
                return True
            self.stats.delivered += 1
            sim.node.receive(data, src, self.now)
            self.flush(sim)
        else:
            assert isinstance(item, tuple)
            sim = self.nodes.get((item[0], item[1]))
            if sim is None or sim.wake is None or sim.wake > self.now:
                return True
            sim.wake = None
            sim.node.poll(self.now)
            self.flush(sim)
        return True

    def run_until(self, deadline: float) -> None:
        """Run every event up to virtual time ``deadline``."""
        while self._queue and self._queue[0][0] <= deadline:
            self.step()
        self.now = max(self.now, deadline)

    def run_until_event(
        self, sim: SimNode, match: Callable[[DhtEvent], bool], *, timeout: float = 120.0
    ) -> DhtEvent:
        """Run until ``sim`` has an event ``match`` accepts; return (and remove) it."""
        deadline = self.now + timeout
        while True:
            for i, event in enumerate(sim.events):
                if match(event):
                    return sim.events.pop(i)
            if not self._queue or self._queue[0][0] > deadline:
                raise TimeoutError(f"no matching event within {timeout} virtual seconds")
            self.step()

    def finished(self, sim: SimNode, op: int, *, timeout: float = 120.0) -> LookupFinished:
        """Run until operation ``op`` of ``sim`` ends; its ``LookupFinished``."""
        event = self.run_until_event(
            sim, lambda e: isinstance(e, LookupFinished) and e.op == op, timeout=timeout
        )
        assert isinstance(event, LookupFinished)
        return event

    # -- building a network ----------------------------------------------

    def build(self, count: int, *, seeds: int = 3, join_every: float = 0.05) -> list[SimNode]:
        """``count`` nodes: ``seeds`` that know each other, the rest joining one by one
        (bootstrapping from the seeds as routers) every ``join_every`` virtual seconds."""
        seed_nodes = [self.add_node() for _ in range(seeds)]
        seed_addrs = [s.addr for s in seed_nodes]
        for sim in seed_nodes:
            sim.node.bootstrap([a for a in seed_addrs if a != sim.addr], [], self.now)
            self.flush(sim)
        self.run_until(self.now + 1.0)
        out = list(seed_nodes)
        for _ in range(count - seeds):
            sim = self.add_node()
            sim.node.bootstrap([], seed_addrs, self.now)
            self.flush(sim)
            out.append(sim)
            self.run_until(self.now + join_every)
        self.run_until(self.now + 10.0)
        return out

    def start(self, sim: SimNode, call: Callable[[DhtNode, float], int]) -> int:
        """Start an operation on ``sim`` now (``call(node, now)``); its op number."""
        op = call(sim.node, self.now)
        self.flush(sim)
        return op

    def alive(self) -> list[SimNode]:
        return list(self.nodes.values())

    def pick(self, count: int, exclude: Iterable[Addr] = ()) -> list[SimNode]:
        skip = set(exclude)
        pool = [s for s in self.nodes.values() if s.addr not in skip]
        return self.rng.sample(pool, min(count, len(pool)))
