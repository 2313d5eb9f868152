"""Peers announced to us (BEP 5 ``announce_peer``), per info-hash, bounded and expiring.

What other nodes announce is stored for ``ttl`` seconds (peers re-announce
every 15 to 30 minutes) and served back in ``get_peers`` ``values``.  Anyone
can announce (a token only proves the address), so the store is capped
twice and each cap has an eviction rule that favours live swarms over
floods:

- per info-hash at most ``max_peers_per_hash`` peers; a new peer in a full
  swarm replaces the one that announced least recently (peers that keep
  re-announcing stay, stale ones go first);
- at most ``max_hashes`` info-hashes; a new one evicts, among the
  :data:`EVICTION_WINDOW` least recently announced hashes, the one with the
  fewest peers.  A flood of fresh one-peer hashes thus evicts its own kind,
  while busy swarms (announced often, many peers) stay.  Looking only at a
  window keeps an insert O(1) whatever the cap.

It also answers BEP 51 ``sample_infohashes`` (a random sample of the stored
hashes) and keeps the BEP 33-style ``seed`` flag of each peer.

Sans-IO: ``now`` is passed in.
"""

from __future__ import annotations

import itertools
import random
from collections import OrderedDict

from .types import Addr

__all__ = ["EVICTION_WINDOW", "PeerStore"]

#: How many of the least recently announced hashes are looked at to pick the one to evict.
EVICTION_WINDOW = 16


class _Swarm:
    """One info-hash's peers: ``peer -> (announced at, seed)``, least recently announced first."""

    __slots__ = ("peers", "seeds")

    def __init__(self) -> None:
        self.peers: OrderedDict[Addr, tuple[float, bool]] = OrderedDict()
        self.seeds = 0


def _is_v6(peer: Addr) -> bool:
    return ":" in peer[0]


class PeerStore:
    """Announced peers per info-hash with expiry and caps (see the module docstring)."""

    __slots__ = ("_peer_count", "_swarms", "max_hashes", "max_peers_per_hash", "ttl")

    def __init__(
        self, *, max_peers_per_hash: int = 200, max_hashes: int = 2000, ttl: float = 1800.0
    ) -> None:
        self.max_peers_per_hash = max(1, max_peers_per_hash)
        self.max_hashes = max(1, max_hashes)
        self.ttl = ttl
        #: info-hash -> swarm, least recently announced first.
        self._swarms: OrderedDict[bytes, _Swarm] = OrderedDict()
        self._peer_count = 0

    def __len__(self) -> int:
        """Info-hashes stored."""
        return len(self._swarms)

    def __contains__(self, info_hash: object) -> bool:
        return info_hash in self._swarms

    @property
    def peer_count(self) -> int:
        """Peers stored over all info-hashes."""
        return self._peer_count

    def announce(self, info_hash: bytes, peer: Addr, now: float, *, seed: bool = False) -> None:
        """Store (or refresh) ``peer`` for ``info_hash``, evicting by the rules above when full."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            if len(self._swarms) >= self.max_hashes:
                self._evict_hash()
            swarm = _Swarm()
            self._swarms[info_hash] = swarm
        else:
            self._swarms.move_to_end(info_hash)
        old = swarm.peers.pop(peer, None)
        if old is not None:
            swarm.seeds -= old[1]
            self._peer_count -= 1
        elif len(swarm.peers) >= self.max_peers_per_hash:
            _, (_, was_seed) = swarm.peers.popitem(last=False)
            swarm.seeds -= was_seed
            self._peer_count -= 1
        swarm.peers[peer] = (now, seed)
        swarm.seeds += seed
        self._peer_count += 1

    def _evict_hash(self) -> None:
        window = itertools.islice(self._swarms.items(), EVICTION_WINDOW)
        # min() keeps the first of equals: the least recently announced.
        victim, swarm = min(window, key=lambda item: len(item[1].peers))
        del self._swarms[victim]
        self._peer_count -= len(swarm.peers)

    def peers(
        self,
        info_hash: bytes,
        now: float,
        *,
        limit: int,
        v6: bool | None = None,
        rng: random.Random | None = None,
        exclude_seeds: bool = False,
    ) -> list[Addr]:
        """Up to ``limit`` live peers for ``info_hash``: a random sample when there are more.

        ``v6`` picks one address family (a ``values`` reply carries the
        querier's family, BEP 32); None gives both.
        """
        swarm = self._swarms.get(info_hash)
        if swarm is None or limit <= 0:
            return []
        oldest = now - self.ttl
        found = [
            peer
            for peer, (when, is_seed) in swarm.peers.items()
            if when >= oldest
            and (v6 is None or _is_v6(peer) == v6)
            and not (exclude_seeds and is_seed)
        ]
        if len(found) <= limit:
            return found
        return (rng or random).sample(found, limit)

    def counts(self, info_hash: bytes) -> tuple[int, int]:
        """``(seeds, others)`` stored for ``info_hash`` (BEP 33-style scrape numbers)."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return (0, 0)
        return (swarm.seeds, len(swarm.peers) - swarm.seeds)

    def sample(self, count: int, rng: random.Random | None = None) -> list[bytes]:
        """Up to ``count`` stored info-hashes picked at random (BEP 51 ``samples``)."""
        if count <= 0 or not self._swarms:
            return []
        keys = list(self._swarms)
        if len(keys) <= count:
            return keys
        return (rng or random).sample(keys, count)

    def expire(self, now: float) -> int:
        """Forget peers older than ``ttl`` and swarms left empty; return how many peers went."""
        oldest = now - self.ttl
        removed = 0
        empty: list[bytes] = []
        for info_hash, swarm in self._swarms.items():
            peers = swarm.peers
            while peers:
                peer, (when, is_seed) = next(iter(peers.items()))
                if when >= oldest:
                    break
                del peers[peer]
                swarm.seeds -= is_seed
                removed += 1
            if not peers:
                empty.append(info_hash)
        for info_hash in empty:
            del self._swarms[info_hash]
        self._peer_count -= removed
        return removed
