"""The DHT node without sockets: lookups in a simulated network, and KRPC messages per second.

Run on demand from the repository root::

    python -m bench.dht_sim [--nodes 500] [--lookups 50] [--loss 0.05] [--messages 40000]
    python -m bench.dht_sim --only messages --profile 25   # where the CPU goes (cProfile)

Two measurements:

1. **Lookups** in the simulated network of tests/support/dht_sim.py
   (``--nodes`` sans-IO ``DhtNode``s, a virtual clock, ``--loss`` datagram
   loss, 50 ms +- 20 ms latency; each node joins by bootstrapping from three
   seeds).  A few nodes announce an info-hash; ``--lookups`` others run
   ``get_peers`` for it.  Reported: median and worst rounds (depth of the
   reply chain) next to Kademlia's ``log2(N) / 3``-ish figure for alpha = 3,
   queries and messages (queries + their answers that arrived) per lookup,
   and how many lookups found every announcer.
2. **CPU per KRPC message** decoded and answered: one node with a table
   filled from answered pings and a peer store of 1,000 info-hashes gets
   ``--messages`` datagrams (half ``ping``, half ``get_peers``, a third of
   those for hashes it stores, so they answer ``values``) from a few thousand
   source addresses, and ``receive()`` + ``outgoing()`` are timed in CPU time
   (``process_time``: other processes on a shared machine skew it less).  The
   goal is 20,000 messages a second on one core.  ``--profile N`` runs the
   same loop a second time under cProfile and prints the ``N`` costliest
   functions (the timed figure above is taken without the profiler).
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import random
import statistics
import time
from dataclasses import replace

from core.dht import krpc
from core.dht.events import PeersFound
from core.dht.node import DhtNode
from core.dht.types import Addr, DhtSettings
from tests.support.dht_sim import SimNetwork

INFO_HASH = bytes.fromhex("be7c" * 10)
GOAL = 20_000


def lookups(nodes: int, count: int, loss: float, seed: int, announcers: int) -> None:
    started = time.process_time()
    net = SimNetwork(seed=seed, loss=loss, latency=0.05, jitter=0.02)
    built = net.build(nodes)
    build_cpu = time.process_time() - started
    build_messages = net.stats.sent
    peers: set[Addr] = set()
    for sim in net.pick(announcers):
        op = net.start(sim, lambda node, now: node.get_peers(INFO_HASH, now, announce_port=6881))
        net.finished(sim, op)
        peers.add((sim.addr[0], 6881))
    rounds: list[int] = []
    queries: list[int] = []
    messages: list[int] = []
    complete = 0
    for sim in net.pick(count, exclude={a for a in net.nodes if (a[0], 6881) in peers}):
        seen = [0]

        def count_asker(
            data: bytes, src: Addr, dst: Addr, me: Addr = sim.addr, seen: list[int] = seen
        ) -> None:
            seen[0] += src == me or dst == me

        net.on_send = count_asker
        op = net.start(sim, lambda node, now: node.get_peers(INFO_HASH, now))
        done = net.finished(sim, op)
        net.on_send = None
        found = {p for e in sim.events if isinstance(e, PeersFound) and e.op == op for p in e.peers}
        complete += found == peers
        rounds.append(done.rounds)
        queries.append(done.queries)
        # every datagram to or from the asker while the lookup ran (its queries,
        # their answers, and the odd upkeep ping)
        messages.append(seen[0])
    log_n = math.log2(nodes)
    sizes = [len(s.node.good_nodes()) for s in built]
    print(f"simulated DHT: {nodes} nodes, loss {loss:.0%}, seed {seed}")
    print(
        f"  build: {build_messages:,} datagrams, {build_cpu:.1f} s CPU, "
        f"good nodes per table: median {statistics.median(sizes):.0f}"
    )
    print(f"  get_peers x {len(rounds)} ({announcers} announcers):")
    print(
        f"    rounds   median {statistics.median(rounds):.1f}  worst {max(rounds)}"
        f"   (log2 N = {log_n:.1f}, log2 N / 3 = {log_n / 3:.1f})"
    )
    print(
        f"    queries  median {statistics.median(queries):.0f}  worst {max(queries)}"
        f"   messages median {statistics.median(messages):.0f}"
    )
    print(f"    found every announcer: {complete}/{len(rounds)}")


def _filled_node(rng: random.Random, depth: int = 20) -> DhtNode:
    """A node whose table looks like one in the real DHT: ``k`` answering nodes in each of
    ``depth`` buckets (ids sharing 0, 1, ... bits with ours), about 160 in all."""
    settings = replace(DhtSettings(), query_rate_per_ip=1e9, query_rate_total=1e9)
    node = DhtNode(settings, now=0.0, rng=random.Random(rng.random()))
    own = int.from_bytes(node.node_id, "big")
    ids: dict[Addr, bytes] = {}
    for d in range(depth):
        for _ in range(settings.k):
            free = 159 - d
            value = ((own >> free) ^ 1) << free | rng.getrandbits(free)
            i = len(ids) + 1
            addr = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 6881)
            ids[addr] = value.to_bytes(20, "big")
            node.add_node(addr, 0.0)
    for data, dst in node.outgoing():
        query = krpc.decode(data)
        node.receive(krpc.encode(krpc.Response(query.tid, ids[dst])), dst, 0.001)
    node.outgoing()
    return node


def messages_per_second(count: int, seed: int, profile: int = 0) -> None:
    rng = random.Random(seed)
    node = _filled_node(rng)
    stored = [rng.randbytes(20) for _ in range(1000)]
    for h in stored:
        src = (f"172.16.{rng.randrange(256)}.{rng.randrange(1, 255)}", 6881)
        node.receive(
            krpc.encode(krpc.Query(b"tk", rng.randbytes(20), krpc.GET_PEERS, info_hash=h)),
            src,
            0.01,
        )
        ((data, _),) = node.outgoing()
        token = krpc.decode(data)
        assert isinstance(token, krpc.Response) and token.token is not None
        for _ in range(rng.randrange(1, 30)):
            node.receive(
                krpc.encode(
                    krpc.Query(
                        b"ta", rng.randbytes(20), krpc.ANNOUNCE_PEER, info_hash=h,
                        token=token.token, port=rng.randrange(1024, 65535),
                    )
                ),
                src,
                0.01,
            )  # fmt: skip
        node.outgoing()
    node.events()
    senders = [
        ((f"192.168.{i >> 8 & 255}.{i & 255}", 6881), rng.randbytes(20)) for i in range(4000)
    ]
    datagrams: list[tuple[bytes, Addr]] = []
    for i in range(count):
        addr, sender = senders[i % len(senders)]
        tid = i.to_bytes(4, "big")
        if i % 2 == 0:
            query = krpc.Query(tid, sender, krpc.PING)
        elif i % 6 == 1:
            query = krpc.Query(tid, sender, krpc.GET_PEERS, info_hash=rng.choice(stored))
        else:
            query = krpc.Query(tid, sender, krpc.GET_PEERS, info_hash=rng.randbytes(20))
        datagrams.append((krpc.encode(query), addr))
    before = node.stats(1.0)
    now = 1.0
    out = 0
    cpu = time.process_time()
    wall = time.perf_counter()
    for data, addr in datagrams:
        now += 0.00001
        node.receive(data, addr, now)
        out += len(node.outgoing())
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    after = node.stats(now)
    answered = after.queries_in - before.queries_in
    per = cpu / count * 1e6
    print(
        f"KRPC: {count:,} datagrams (ping / get_peers mix) into one node "
        f"({after.nodes_total} nodes in its table, {after.hashes_stored} info-hashes stored)"
    )
    verdict = "met" if count / cpu >= GOAL else "NOT met"
    print(
        f"  {per:.1f} us CPU per message decoded and answered -> {count / cpu:,.0f} messages/s "
        f"(wall {count / wall:,.0f}/s; goal {GOAL:,}/s: {verdict})"
    )
    print(f"  answered {answered:,} queries, sent {out:,} datagrams, dropped {after.dropped}")
    if profile:
        # The same datagrams again (new tids are not needed: queries carry no state).
        profiler = cProfile.Profile()
        profiler.enable()
        for data, addr in datagrams:
            now += 0.00001
            node.receive(data, addr, now)
            node.outgoing()
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(profile)
        stats.sort_stats("cumulative").print_stats(profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=50)
    parser.add_argument("--announcers", type=int, default=5)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("lookups", "messages"))
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile the message loop once more with cProfile; print the N costliest functions",
    )
    args = parser.parse_args()
    if args.only != "messages":
        lookups(args.nodes, args.lookups, args.loss, args.seed, args.announcers)
    if args.only != "lookups":
        messages_per_second(args.messages, args.seed, args.profile)


if __name__ == "__main__":
    main()
