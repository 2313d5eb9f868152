"""The iterative Kademlia lookup as a state machine: who to ask next, and when to stop.

A lookup walks towards ``target``: it keeps the nodes it has heard of
sorted by XOR distance, asks up to ``alpha`` of them at a time, adds the
nodes each answer names, and stops by the *closest-set rule*: once the
``k`` closest nodes still in the running (not failed) have all answered, and
none of them is pending, nothing closer can turn up.  A node that answers
with itself or with nodes farther away than what we already have therefore
adds nothing that would be asked, so it cannot keep a lookup alive; a
per-lookup query cap bounds the rest (a hostile node inventing closer ids
that never answer costs one timeout each, up to the cap).

``rounds`` is the depth of the longest reply chain: the first nodes asked are
depth 0, nodes an answer at depth ``d`` names are depth ``d + 1``, and a reply
from depth ``d`` makes the lookup ``d + 1`` rounds deep (the number Kademlia's
``log2(N)``-ish bounds speak of, independent of ``alpha``).

Lookups may start from bare addresses (bootstrap routers, saved nodes whose
id we do not trust): those are asked first, do not take part in the
closest set (their distance is unknown) and seed it with their answers.

The lookup sends nothing itself (sans-IO): :class:`~core.dht.node.DhtNode`
asks :meth:`Lookup.next_queries` whom to query, sends, and reports back
with :meth:`Lookup.answered` / :meth:`Lookup.failed`.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from .types import ID_LENGTH, Addr, NodeInfo

__all__ = ["Candidate", "CandidateState", "Lookup"]

#: Default cap on the queries one lookup sends (a few hundred nodes' worth of
#: answers; honest lookups in a network of millions need a few dozen).
MAX_QUERIES = 120
#: Default cap on the candidates remembered; the farthest go first.
MAX_CANDIDATES = 256


class CandidateState(enum.IntEnum):
    FRESH = 0  # known, not asked yet
    IN_FLIGHT = 1  # asked, no answer yet
    ANSWERED = 2
    FAILED = 3  # timed out, answered with an error, or answered under another id


@dataclass(slots=True)
class Candidate:
    """One node a lookup knows of: where it stands and what it told us."""

    info: NodeInfo
    distance: int
    depth: int
    state: CandidateState = CandidateState.FRESH
    #: The write token it gave (get_peers / get), for a later announce / put.
    token: bytes | None = None
    #: Whether it took a slot of ``alpha`` while in flight (not after it stalled).
    counted: bool = False


class Lookup:
    """One iterative lookup's state (see the module docstring)."""

    def __init__(
        self,
        target: bytes,
        own_id: bytes,
        *,
        k: int = 8,
        alpha: int = 3,
        max_queries: int = MAX_QUERIES,
        max_candidates: int = MAX_CANDIDATES,
    ) -> None:
        self.target = target
        self._target_int = int.from_bytes(target, "big")
        self.own_id = own_id
        self.k = max(1, k)
        self.alpha = max(1, alpha)
        self.max_queries = max(1, max_queries)
        self.max_candidates = max(self.k, max_candidates)
        self._by_id: dict[bytes, Candidate] = {}
        #: (distance, id) of every candidate, closest first.
        self._order: list[tuple[int, bytes]] = []
        #: Addresses asked or known, so one address is never asked twice under two ids.
        self._addrs: set[Addr] = set()
        #: Bare addresses to ask first (no id known), and those of them in flight.
        self._seeds: list[Addr] = []
        self._seeds_in_flight: set[Addr] = set()
        self._in_flight = 0  # counted slots, candidates and seeds
        #: Queries sent.
        self.queries = 0
        #: Depth of the deepest reply chain.
        self.rounds = 0

    # -- feeding -----------------------------------------------------------

    def add_seeds(self, addrs: Iterable[Addr]) -> None:
        """Addresses to ask before anything else (their ids are unknown or untrusted)."""
        for addr in addrs:
            if addr not in self._addrs:
                self._addrs.add(addr)
                self._seeds.append(addr)

    def add(self, nodes: Iterable[NodeInfo], depth: int = 0) -> int:
        """Add nodes heard of at ``depth``; return how many were new.

        Our own id, ids of the wrong length and addresses already known are
        skipped.  Beyond ``max_candidates`` the farthest fresh candidates are
        forgotten (asked and answered ones stay: they are the result).
        """
        added = 0
        for node in nodes:
            node_id = node.id
            if (
                len(node_id) != ID_LENGTH
                or node_id == self.own_id
                or node_id in self._by_id
                or node.addr in self._addrs
            ):
                continue
            dist = int.from_bytes(node_id, "big") ^ self._target_int
            if len(self._order) >= self.max_candidates and dist >= self._order[-1][0]:
                continue
            cand = Candidate(node, dist, depth)
            self._by_id[node_id] = cand
            self._addrs.add(node.addr)
            bisect.insort(self._order, (dist, node_id))
            added += 1
            if len(self._order) > self.max_candidates:
                self._drop_farthest_fresh()
        return added

    def _drop_farthest_fresh(self) -> None:
        for index in range(len(self._order) - 1, -1, -1):
            cand = self._by_id[self._order[index][1]]
            if cand.state is CandidateState.FRESH:
                del self._order[index]
                del self._by_id[cand.info.id]
                self._addrs.discard(cand.info.addr)
                return

    # -- driving -----------------------------------------------------------

    def next_queries(self) -> list[NodeInfo | Addr]:
        """Whom to ask now (marked in flight): seeds first, then fresh nodes of the closest set.

        Returns bare :data:`Addr` for seeds and :class:`NodeInfo` for known
        nodes.  Empty when ``alpha`` queries are in flight, the cap is
        reached, or the closest-set rule says nothing is left to ask.
        """
        out: list[NodeInfo | Addr] = []
        while self._seeds and self._in_flight < self.alpha and self.queries < self.max_queries:
            addr = self._seeds.pop(0)
            self._seeds_in_flight.add(addr)
            self._in_flight += 1
            self.queries += 1
            out.append(addr)
        if self._in_flight >= self.alpha or self.queries >= self.max_queries:
            return out
        seen = 0
        for _, node_id in self._order:
            cand = self._by_id[node_id]
            state = cand.state
            if state is CandidateState.FAILED:
                continue
            seen += 1
            if state is CandidateState.FRESH:
                cand.state = CandidateState.IN_FLIGHT
                cand.counted = True
                self._in_flight += 1
                self.queries += 1
                out.append(cand.info)
                if self._in_flight >= self.alpha or self.queries >= self.max_queries:
                    break
            if seen >= self.k:
                break
        return out

    def _settle(self, cand: Candidate) -> None:
        if cand.counted:
            cand.counted = False
            self._in_flight -= 1

    def answered(
        self,
        asked: NodeInfo | Addr,
        nodes: Iterable[NodeInfo] = (),
        *,
        responder: bytes | None = None,
        token: bytes | None = None,
    ) -> Candidate | None:
        """``asked`` answered naming ``nodes``; return its candidate (None for a seed).

        ``responder`` is the id in the answer; a known node answering under
        another id is treated as failed (its nodes are not trusted either).
        A seed's answer adds the responder itself at depth 0 (it may be the
        closest node there is) and its nodes at depth 1.
        """
        if not isinstance(asked, NodeInfo):
            if asked not in self._seeds_in_flight:
                return None
            self._seeds_in_flight.discard(asked)
            self._in_flight -= 1
            self.rounds = max(self.rounds, 1)
            if responder is not None:
                self._addrs.discard(asked)
                self.add([NodeInfo(responder, asked)], 0)
                cand = self._by_id.get(responder)
                if cand is not None and cand.info.addr == asked:
                    cand.state = CandidateState.ANSWERED
                    cand.token = token
            self.add(nodes, 1)
            return None
        cand = self._by_id.get(asked.id)
        if cand is None or cand.state is not CandidateState.IN_FLIGHT:
            return None
        self._settle(cand)
        if responder is not None and responder != asked.id:
            cand.state = CandidateState.FAILED
            return cand
        cand.state = CandidateState.ANSWERED
        cand.token = token
        self.rounds = max(self.rounds, cand.depth + 1)
        self.add(nodes, cand.depth + 1)
        return cand

    def failed(self, asked: NodeInfo | Addr) -> None:
        """Our query to ``asked`` timed out or got an error."""
        if not isinstance(asked, NodeInfo):
            if asked in self._seeds_in_flight:
                self._seeds_in_flight.discard(asked)
                self._in_flight -= 1
            return
        cand = self._by_id.get(asked.id)
        if cand is None or cand.state is not CandidateState.IN_FLIGHT:
            return
        self._settle(cand)
        cand.state = CandidateState.FAILED

    def stalled(self, asked: NodeInfo | Addr) -> None:
        """``asked`` is slow: free its ``alpha`` slot but still accept its late answer.

        Keeps one unresponsive node from holding up a third of the lookup
        for a whole timeout (libtorrent's "short timeout").
        """
        if isinstance(asked, NodeInfo):
            cand = self._by_id.get(asked.id)
            if cand is not None and cand.state is CandidateState.IN_FLIGHT:
                self._settle(cand)

    # -- results -----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Queries sent and not yet settled (stalled ones included)."""
        stalled = sum(
            1 for c in self._by_id.values() if c.state is CandidateState.IN_FLIGHT and not c.counted
        )
        return self._in_flight + stalled

    @property
    def finished(self) -> bool:
        """No query pending and the closest-set rule (or the cap) says nothing is left to ask."""
        if self._seeds_in_flight or self._in_flight:
            return False
        if self._seeds and self.queries < self.max_queries:
            return False
        if self.queries >= self.max_queries:
            return not any(c.state is CandidateState.IN_FLIGHT for c in self._by_id.values())
        seen = 0
        for _, node_id in self._order:
            state = self._by_id[node_id].state
            if state is CandidateState.FAILED:
                continue
            if state is not CandidateState.ANSWERED:
                # Fresh (to ask) or in flight after a stall: not done yet.
                return False
            seen += 1
            if seen >= self.k:
                break
        return True

    def closest(self, count: int | None = None) -> list[Candidate]:
        """The ``count`` (default ``k``) closest candidates that answered, closest first."""
        want = self.k if count is None else count
        out: list[Candidate] = []
        for _, node_id in self._order:
            cand = self._by_id[node_id]
            if cand.state is CandidateState.ANSWERED:
                out.append(cand)
                if len(out) >= want:
                    break
        return out

    def candidate(self, node_id: bytes) -> Candidate | None:
        return self._by_id.get(node_id)
