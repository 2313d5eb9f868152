"""Peer exchange (BEP 11) bookkeeping for one connection, sans-IO.

:class:`PexState` lives next to a peer connection and answers two questions:

* *What do we tell this peer, and when?*  Every ``interval`` (60 s by
  default; BEP 11 asks for no more than one message a minute) the engine
  passes the torrent's currently connected peers; we send the difference
  from what this peer has already heard from us: the first message is a
  snapshot, later ones list newly connected and disconnected peers.  At most
  50 added and 50 dropped per address family go in one message; whatever
  did not fit is sent next time, because "what the peer has heard" only
  records what was really sent.  A peer's own address is never sent to it.
* *How much of what this peer tells us do we believe?*  :meth:`PexState.accept`
  honours at most one message per ``min_accept_interval`` (45 s by default:
  an honest sender's 60 s timer with slack for jitter) and at most 50 new
  addresses from it, and never more than the ``room`` left in the torrent's
  peer pool, so a hostile peer cannot flood the pool or make us dial the
  world.  What it refuses is counted in :class:`PexStats`.  ``dropped``
  lists are read but not acted on: a peer that left someone else may well
  still be reachable by us, and believing drops would let a peer prune our
  pool.

Engine integration (see also :func:`local_extensions`)::

    pex = PexState(now=now, remote=peer.address)
    # timer: at pex.next_deadline()
    payload = pex.build_message({addr: peer_flags(...) for each connected peer}, now)
    if payload is not None:
        conn.send(ExtendedMessage(UT_PEX, payload))
    # on ExtendedMessage(UT_PEX, payload): RemoteProtocolError -> drop the peer
    addrs = pex.accept(decode_pex(payload), now, room=max_pool - len(pool))
    torrent.add_peers(addrs, PeerSource.PEX)

Private torrents (BEP 27) must not use PEX at all: the engine advertises
``ut_pex`` only when :func:`local_extensions` says so, never builds a
PexState for them, and treats an incoming ut_pex message on a private
torrent as a protocol violation (we never advertised an id for it, so the
connection already raises for it).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from ..wire.extensions import UT_METADATA, UT_PEX
from ..wire.pex import (
    PEX_PREFERS_ENCRYPTION,
    PEX_REACHABLE,
    PEX_SEED,
    PEX_UTP,
    PexMessage,
    compact_address,
    encode_pex,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_MIN_ACCEPT_INTERVAL",
    "MAX_ACCEPT_PER_MESSAGE",
    "MAX_PER_MESSAGE",
    "PexState",
    "PexStats",
    "local_extensions",
    "peer_flags",
]

Address = tuple[str, int]

#: Seconds between two messages to the same peer (BEP 11: at most one a minute).
DEFAULT_INTERVAL = 60.0
#: Seconds that must pass before another message from the same peer is honoured.
DEFAULT_MIN_ACCEPT_INTERVAL = 45.0
#: Added (and, separately, dropped) entries per address family in one message.
MAX_PER_MESSAGE = 50
#: New addresses honoured from one incoming message.
MAX_ACCEPT_PER_MESSAGE = 50

#: Our extension ids.  Any 1..255 works (they are ours to choose per
#: connection); these match libtorrent's, which makes captures easy to read.
_EXTENSION_IDS = {UT_PEX: 1, UT_METADATA: 2}


def local_extensions(*, private: bool) -> dict[str, int]:
    """The ``m`` dict of our extension handshake: no ``ut_pex`` for private torrents (BEP 27)."""
    return {
        name: ext_id for name, ext_id in _EXTENSION_IDS.items() if not (private and name == UT_PEX)
    }


def peer_flags(
    *, outgoing: bool, seed: bool, utp: bool = False, prefers_encryption: bool = False
) -> int:
    """The ut_pex flags byte for one of our connected peers.

    ``outgoing`` means we dialled it, which proves it accepts connections
    (the "reachable" flag); an incoming peer may be behind a NAT.
    """
    flags = PEX_REACHABLE if outgoing else 0
    if seed:
        flags |= PEX_SEED
    if utp:
        flags |= PEX_UTP
    if prefers_encryption:
        flags |= PEX_PREFERS_ENCRYPTION
    return flags


@dataclass(slots=True)
class PexStats:
    """Counters for one connection's PEX traffic (debugging, the peer table)."""

    messages_sent: int = 0
    messages_received: int = 0
    messages_ignored: int = 0  # arrived before min_accept_interval had passed
    addresses_accepted: int = 0
    addresses_refused: int = 0  # over the per-message cap, over the pool's room, or not decoded


class PexState:
    """Send-side diff and receive-side rate limit of ut_pex for one connection.

    ``now`` is the connection time; the first message is due ``first_delay``
    seconds later (default: at once, so a fresh peer learns the swarm
    quickly).  ``remote`` is the peer's own address, never sent back to it.
    ``rng`` chooses which entries go first when more than
    :data:`MAX_PER_MESSAGE` are pending, so that different peers hear about
    different parts of a large swarm; tests pass a seeded one.
    """

    def __init__(
        self,
        *,
        now: float,
        remote: Address | None = None,
        interval: float = DEFAULT_INTERVAL,
        first_delay: float = 0.0,
        max_per_message: int = MAX_PER_MESSAGE,
        min_accept_interval: float = DEFAULT_MIN_ACCEPT_INTERVAL,
        max_accept: int = MAX_ACCEPT_PER_MESSAGE,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0 or max_per_message <= 0 or max_accept < 0:
            raise ValueError("PEX interval and caps must be positive")
        self.remote = remote
        self.interval = interval
        self.max_per_message = max_per_message
        self.min_accept_interval = min_accept_interval
        self.max_accept = max_accept
        self.stats = PexStats()
        self._rng = rng if rng is not None else random.Random()
        self._next_send = now + first_delay
        self._advertised: dict[Address, None] = {}  # what this peer has heard from us
        self._last_accepted: float | None = None

    # --- sending ----------------------------------------------------------

    def message_due(self, now: float) -> bool:
        return now >= self._next_send

    def next_deadline(self) -> float:
        """When :meth:`build_message` should next be called."""
        return self._next_send

    @property
    def advertised(self) -> frozenset[Address]:
        """Addresses this peer currently believes we are connected to."""
        return frozenset(self._advertised)

    def build(self, current_peers: Mapping[Address, int], now: float) -> PexMessage | None:
        """The typed message due now, or None (not due yet, or nothing changed).

        ``current_peers`` maps every connected peer of the torrent to its
        flags (see :func:`peer_flags`).  Addresses that are not IP literals
        cannot be expressed in ut_pex and are left out.  Calling this when
        the message is due restarts the interval even if nothing changed.
        """
        if not self.message_due(now):
            return None
        self._next_send = now + self.interval
        families: dict[int, tuple[list[Address], list[Address]]] = {6: ([], []), 18: ([], [])}
        for addr in current_peers:
            if addr == self.remote or addr in self._advertised:
                continue
            packed = compact_address(*addr)
            if packed is not None:
                families[len(packed)][0].append(addr)
        for addr in self._advertised:
            if addr not in current_peers:
                packed = compact_address(*addr)
                assert packed is not None  # only IP literals are ever advertised
                families[len(packed)][1].append(addr)
        added: dict[Address, int] = {}
        dropped: list[Address] = []
        for new, gone in families.values():
            for addr in self._pick(new):
                added[addr] = current_peers[addr]
            dropped += self._pick(gone)
        if not added and not dropped:
            return None
        for addr in added:
            self._advertised[addr] = None
        for addr in dropped:
            del self._advertised[addr]
        self.stats.messages_sent += 1
        return PexMessage(added, tuple(dropped))

    def build_message(self, current_peers: Mapping[Address, int], now: float) -> bytes | None:
        """Like :meth:`build`, encoded: the payload of an ``ExtendedMessage(UT_PEX, ...)``."""
        msg = self.build(current_peers, now)
        return None if msg is None else encode_pex(msg)

    def _pick(self, items: list[Address]) -> list[Address]:
        if len(items) <= self.max_per_message:
            return items
        return self._rng.sample(items, self.max_per_message)

    # --- receiving --------------------------------------------------------

    def accept(self, msg: PexMessage, now: float, *, room: int | None = None) -> list[Address]:
        """The addresses of an incoming message worth adding to the pool (source PEX).

        A message arriving sooner than ``min_accept_interval`` after the last
        honoured one is ignored whole.  Otherwise at most ``max_accept`` of
        its added addresses are returned, and at most ``room`` (how many more
        addresses the torrent's pool may hold; None for no global cap).  The
        peer's own address is skipped.
        """
        self.stats.messages_received += 1
        if self._last_accepted is not None and now - self._last_accepted < self.min_accept_interval:
            self.stats.messages_ignored += 1
            self.stats.addresses_refused += len(msg.added) + msg.skipped
            return []
        self._last_accepted = now
        limit = self.max_accept if room is None else max(0, min(self.max_accept, room))
        out: list[Address] = []
        offered = msg.skipped
        for addr in msg.added:
            if addr == self.remote:
                continue
            offered += 1
            if len(out) < limit:
                out.append(addr)
        self.stats.addresses_accepted += len(out)
        self.stats.addresses_refused += offered - len(out)
        return out
