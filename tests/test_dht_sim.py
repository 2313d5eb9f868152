"""A 500-node simulated DHT (tests/support/dht_sim.py): lookups converge, survive churn, and a
flooder is rate limited.  One process, a virtual clock, 5 % loss, 50 ms +- 20 ms latency."""

from __future__ import annotations

import math
import statistics

import pytest

from core.dht import krpc
from core.dht.events import Bootstrapped, LookupFinished, PeersFound, QueryFinished
from core.dht.types import Addr
from tests.support.dht_sim import SimNetwork, SimNode

N = 500
INFO_HASH = bytes.fromhex("5eed" * 10)
ANNOUNCERS = 5
LOOKUPS = 10


class Swarm:
    def __init__(self) -> None:
        self.net = SimNetwork(seed=20240, loss=0.05, latency=0.05, jitter=0.02)
        self.nodes = self.net.build(N)
        self.announcers = self.net.pick(ANNOUNCERS)
        self.peers: set[Addr] = set()
        for sim in self.announcers:
            op = self.net.start(
                sim, lambda node, now: node.get_peers(INFO_HASH, now, announce_port=51413)
            )
            done = self.net.finished(sim, op)
            assert done.kind == "announce"
            self.peers.add((sim.addr[0], 51413))

    def lookup(self, sim: SimNode) -> tuple[LookupFinished, set[Addr]]:
        op = self.net.start(sim, lambda node, now: node.get_peers(INFO_HASH, now))
        done = self.net.finished(sim, op)
        found = {
            peer for e in sim.events if isinstance(e, PeersFound) and e.op == op for peer in e.peers
        }
        return done, found


@pytest.fixture(scope="module")
def swarm() -> Swarm:
    return Swarm()


def test_everyone_bootstraps(swarm: Swarm) -> None:
    reports = [e for s in swarm.nodes for e in s.events if isinstance(e, Bootstrapped)]
    assert len(reports) == N
    assert sum(r.ok for r in reports) >= N * 0.98  # a seed may lose its few first packets
    sizes = [len(s.node.good_nodes()) for s in swarm.nodes]
    assert statistics.median(sizes) >= 8
    dropped: dict[str, int] = {}
    for s in swarm.nodes:
        for key, count in s.node.stats(swarm.net.now).dropped.items():
            dropped[key] = dropped.get(key, 0) + count
    assert "internal-error" not in dropped


def test_get_peers_converges_in_log_n_rounds(swarm: Swarm) -> None:
    exclude = {s.addr for s in swarm.announcers}
    rounds, queries = [], []
    for sim in swarm.net.pick(LOOKUPS, exclude=exclude):
        done, found = swarm.lookup(sim)
        assert done.error is None
        assert found == swarm.peers  # every announcer found
        rounds.append(done.rounds)
        queries.append(done.queries)
    log_n = math.log2(N)
    # Kademlia: O(log N) rounds; with alpha = 3 and k = 8 a lookup needs about
    # log2(N) / 3 hops in a converged network.  Our tables are young (seconds
    # old), so allow half of log2(N) for the median and log2(N) for the worst.
    assert statistics.median(rounds) <= math.ceil(log_n / 2)
    assert max(rounds) <= math.ceil(log_n)
    assert statistics.median(queries) <= 8 * math.ceil(log_n)


def test_a_flooding_node_is_rate_limited(swarm: Swarm) -> None:
    net = swarm.net
    victim = swarm.net.pick(1)[0]
    flooder: Addr = ("10.250.250.250", 6881)
    answers = []
    net.on_send = lambda data, src, dst: answers.append(data) if dst == flooder else None
    before = victim.node.stats(net.now)
    start = net.now
    for i in range(3000):
        ping = krpc.Query(i.to_bytes(4, "big"), b"F" * 20, krpc.PING)
        net.send(krpc.encode(ping), flooder, victim.addr)
    net.run_until(net.now + 1.0)
    net.on_send = None
    after = victim.node.stats(net.now)
    settings = net.settings
    limit = 2 * settings.query_rate_per_ip + settings.query_rate_per_ip * (net.now - start)
    assert len(answers) <= limit
    refused = after.rate_limited_in - before.rate_limited_in
    assert refused >= 3000 * (1 - net.loss) * 0.9 - limit
    assert after.dropped.get("rate-limited", 0) - before.dropped.get("rate-limited", 0) == refused
    # an honest node still gets its answer
    asker = swarm.net.pick(1, exclude={victim.addr})[0]
    op = net.start(asker, lambda node, now: node.ping(victim.addr, now))
    done = net.run_until_event(asker, lambda e: isinstance(e, QueryFinished) and e.op == op)
    assert isinstance(done, QueryFinished)
    if done.error is not None:  # 5 % loss each way: one retry
        op = net.start(asker, lambda node, now: node.ping(victim.addr, now))
        done = net.run_until_event(asker, lambda e: isinstance(e, QueryFinished) and e.op == op)
        assert isinstance(done, QueryFinished)
    assert done.error is None


def test_lookups_survive_30_percent_churn(swarm: Swarm) -> None:
    net = swarm.net
    getters = net.pick(LOOKUPS, exclude={s.addr for s in swarm.announcers})
    keep = {s.addr for s in getters}
    for sim in net.pick(int(N * 0.3), exclude=keep):
        net.remove(sim.addr)
    assert len(net.nodes) == N - int(N * 0.3)
    complete = 0
    for sim in getters:
        done, found = swarm.lookup(sim)
        assert done.error is None
        assert found, "no announced peer found after churn"
        assert found <= swarm.peers
        complete += found == swarm.peers
    # each peer is stored on ~8 nodes; losing all of them to 30 % churn is rare
    assert complete >= LOOKUPS * 0.8
