"""The iterative lookup state machine (core/dht/lookup.py), driven without any network.

An "ideal network" here is a list of node ids where every node answers a
query with the ``k`` nodes it knows closest to the target; the lookup must
find the true ``k`` closest with the closest-set rule, few queries and few
rounds, and hostile answers (itself only, farther nodes, invented ids that
never answer, another id) must not keep it alive or poison it.
"""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from core.dht.lookup import CandidateState, Lookup
from core.dht.types import Addr, NodeInfo, distance


def _net(n: int, seed: int) -> list[NodeInfo]:
    rng = random.Random(seed)
    return [
        NodeInfo(rng.randbytes(20), (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 6881))
        for i in range(1, n + 1)
    ]


def _closest(nodes: list[NodeInfo], target: bytes, k: int) -> list[NodeInfo]:
    return sorted(nodes, key=lambda n: distance(n.id, target))[:k]


class _Ideal:
    """Each node knows a random sample of the network plus its own neighbourhood (like a table)."""

    def __init__(self, nodes: list[NodeInfo], seed: int, known: int = 40) -> None:
        rng = random.Random(seed)
        self.nodes = nodes
        self.known: dict[bytes, list[NodeInfo]] = {}
        for node in nodes:
            sample = rng.sample(nodes, min(known, len(nodes)))
            near = _closest(nodes, node.id, 8)
            self.known[node.id] = sample + near

    def answer(self, node: NodeInfo, target: bytes, k: int = 8) -> list[NodeInfo]:
        return _closest(self.known[node.id], target, k)


def _run(
    lookup: Lookup,
    answer: object,
    *,
    fail: set[bytes] | None = None,
    max_steps: int = 10_000,
) -> int:
    """Drive ``lookup`` to the end: answer (or fail) every query; return the steps taken."""
    fail = fail or set()
    answer_fn = answer  # callable(NodeInfo) -> list[NodeInfo] | None
    pending: list[NodeInfo | Addr] = []
    steps = 0
    while steps < max_steps:
        pending.extend(lookup.next_queries())
        if not pending:
            break
        asked = pending.pop(0)
        steps += 1
        assert isinstance(asked, NodeInfo)
        if asked.id in fail:
            lookup.failed(asked)
            continue
        nodes = answer_fn(asked)  # type: ignore[operator]
        lookup.answered(asked, nodes, responder=asked.id)
    assert lookup.finished
    return steps


def test_finds_the_true_closest_in_few_rounds() -> None:
    nodes = _net(1000, 1)
    net = _Ideal(nodes, 2)
    rng = random.Random(3)
    rounds = []
    for _ in range(20):
        target = rng.randbytes(20)
        own = rng.randbytes(20)
        start = rng.choice(nodes)
        lookup = Lookup(target, own, k=8, alpha=3)
        lookup.add(net.answer(start, own))
        _run(lookup, lambda n, t=target: net.answer(n, t))
        found = [c.info for c in lookup.closest()]
        assert found == _closest(nodes, target, 8)
        # closest-set termination: far fewer queries than nodes
        assert lookup.queries < 80
        rounds.append(lookup.rounds)
    assert max(rounds) <= math.ceil(math.log2(1000))
    assert sorted(rounds)[len(rounds) // 2] <= 6


def test_alpha_bounds_queries_in_flight() -> None:
    nodes = _net(50, 4)
    lookup = Lookup(b"\x00" * 20, b"\xff" * 20, k=8, alpha=3)
    lookup.add(nodes)
    first = lookup.next_queries()
    assert len(first) == 3
    assert lookup.next_queries() == []
    assert lookup.in_flight == 3
    assert isinstance(first[0], NodeInfo)
    lookup.failed(first[0])
    assert len(lookup.next_queries()) == 1


def test_own_id_and_bad_ids_are_never_candidates() -> None:
    own = b"\x01" * 20
    lookup = Lookup(b"\x00" * 20, own, k=8)
    added = lookup.add(
        [
            NodeInfo(own, ("10.0.0.1", 1)),
            NodeInfo(b"\x02" * 19, ("10.0.0.2", 1)),
            NodeInfo(b"\x03" * 20, ("10.0.0.3", 1)),
            NodeInfo(b"\x04" * 20, ("10.0.0.3", 1)),  # same address, another id
        ]
    )
    assert added == 1
    assert [q.id for q in lookup.next_queries() if isinstance(q, NodeInfo)] == [b"\x03" * 20]


def test_a_node_answering_with_itself_does_not_keep_the_lookup_alive() -> None:
    nodes = _net(200, 5)
    target = bytes(20)
    net = _Ideal(nodes, 6)
    liar = _closest(nodes, target, 1)[0]

    def answer(n: NodeInfo) -> list[NodeInfo]:
        return [n] if n.id == liar.id else net.answer(n, target)

    lookup = Lookup(target, b"\xff" * 20, k=8)
    lookup.add(nodes[:8])
    _run(lookup, answer)
    assert lookup.finished
    assert lookup.queries < 60


def test_only_farther_nodes_do_not_extend_the_lookup() -> None:
    nodes = _net(100, 7)
    target = bytes(20)
    best = _closest(nodes, target, 8)
    far = sorted(nodes, key=lambda n: distance(n.id, target))[-50:]
    lookup = Lookup(target, b"\xff" * 20, k=8, alpha=3)
    lookup.add(best)
    # Every node answers with far-away nodes: only the 8 given are ever asked.
    _run(lookup, lambda n: far)
    assert lookup.queries == 8
    assert [c.info for c in lookup.closest()] == best


def test_invented_closer_ids_that_never_answer_are_bounded_by_the_cap() -> None:
    rng = random.Random(8)
    target = bytes(20)
    honest = _net(20, 9)
    invented: list[NodeInfo] = []
    counter = [0]

    def answer(n: NodeInfo) -> list[NodeInfo]:
        # A hostile node names 8 ids sharing ever longer prefixes with the target.
        out = []
        for _ in range(8):
            counter[0] += 1
            i = counter[0]
            node_id = bytes(2) + rng.randbytes(18)
            out.append(NodeInfo(node_id, (f"192.0.2.{i % 250 + 1}", 1000 + i)))
        invented.extend(out)
        return out

    fakes = {n.id for n in invented}
    lookup = Lookup(target, b"\xff" * 20, k=8, alpha=3, max_queries=40)
    lookup.add(honest)
    pending: list[NodeInfo | Addr] = []
    while True:
        pending.extend(lookup.next_queries())
        if not pending:
            break
        asked = pending.pop(0)
        assert isinstance(asked, NodeInfo)
        fakes = {n.id for n in invented}
        if asked.id in fakes:
            lookup.failed(asked)  # invented nodes never answer
        else:
            lookup.answered(asked, answer(asked), responder=asked.id)
    assert lookup.finished
    assert lookup.queries <= 40


def test_failed_nodes_make_room_for_the_next_closest() -> None:
    nodes = _net(300, 10)
    target = bytes(20)
    net = _Ideal(nodes, 11)
    dead = {n.id for n in _closest(nodes, target, 3)}
    lookup = Lookup(target, b"\xff" * 20, k=8)
    lookup.add(nodes[:16])
    _run(lookup, lambda n: net.answer(n, target), fail=dead)
    alive = [n for n in nodes if n.id not in dead]
    assert [c.info for c in lookup.closest()] == _closest(alive, target, 8)


def test_answer_under_another_id_counts_as_failure() -> None:
    lookup = Lookup(bytes(20), b"\xff" * 20, k=2, alpha=1)
    a = NodeInfo(b"\x01" * 20, ("10.0.0.1", 1))
    lookup.add([a])
    assert lookup.next_queries() == [a]
    cand = lookup.answered(
        a, [NodeInfo(b"\x00" * 19 + b"\x01", ("10.0.0.9", 1))], responder=b"\x07" * 20
    )
    assert cand is not None and cand.state is CandidateState.FAILED
    assert lookup.finished  # its nodes were not taken
    assert lookup.closest() == []


def test_seeds_are_asked_first_and_seed_the_closest_set() -> None:
    lookup = Lookup(bytes(20), b"\xff" * 20, k=8, alpha=3)
    router: Addr = ("192.0.2.1", 6881)
    lookup.add_seeds([router, router])
    assert lookup.next_queries() == [router]
    assert not lookup.finished
    found = _net(10, 12)
    lookup.answered(router, found, responder=b"\x11" * 20, token=b"t")
    assert lookup.rounds == 1
    seed_node = lookup.candidate(b"\x11" * 20)
    assert seed_node is not None and seed_node.state is CandidateState.ANSWERED
    queries = lookup.next_queries()
    assert len(queries) == 3 and all(isinstance(q, NodeInfo) for q in queries)
    for q in queries:
        assert isinstance(q, NodeInfo)
        lookup.answered(q, [], responder=q.id)
    assert lookup.rounds == 2


def test_stalled_query_frees_its_slot_and_its_late_answer_counts() -> None:
    lookup = Lookup(bytes(20), b"\xff" * 20, k=8, alpha=1)
    nodes = _net(5, 13)
    lookup.add(nodes)
    (slow,) = lookup.next_queries()
    assert isinstance(slow, NodeInfo)
    lookup.stalled(slow)
    (other,) = lookup.next_queries()
    assert other != slow
    assert lookup.in_flight == 2
    lookup.answered(slow, [], responder=slow.id)
    assert lookup.candidate(slow.id) is not None
    assert lookup.candidate(slow.id).state is CandidateState.ANSWERED  # type: ignore[union-attr]


def test_candidates_are_bounded() -> None:
    lookup = Lookup(bytes(20), b"\xff" * 20, k=8, max_candidates=64)
    lookup.add(_net(1000, 14))
    lookup.add(_net(1000, 15))
    assert len(lookup.closest(1000)) == 0
    queries = lookup.next_queries()
    assert len(queries) == 3
    # the kept candidates are the closest ones of all 2000
    everyone = _net(1000, 14) + _net(1000, 15)
    best = _closest(everyone, bytes(20), 3)
    assert queries == best


def test_query_cap_ends_the_lookup() -> None:
    nodes = _net(500, 16)
    lookup = Lookup(bytes(20), b"\xff" * 20, k=8, alpha=3, max_queries=5)
    lookup.add(nodes)
    steps = _run(lookup, lambda n: [])
    assert steps == 5 and lookup.queries == 5


@settings(deadline=None)
@given(st.integers(0, 2**32))
def test_property_honest_network_gives_true_closest(seed: int) -> None:
    rng = random.Random(f"lookup-{seed}")  # a stream apart from the one making the ids
    n, alpha = rng.randint(8, 32), rng.randint(1, 4)
    nodes = _net(n, seed)
    target = rng.randbytes(20)
    # every node knows everyone: the first answers already hold the result
    lookup = Lookup(target, rng.randbytes(20), k=4, alpha=alpha)
    best = _closest(nodes, target, 4)
    lookup.add(rng.sample(nodes, 3))
    _run(lookup, lambda node: best)
    assert [c.info for c in lookup.closest()] == best
    assert lookup.rounds <= 3
