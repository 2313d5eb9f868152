"""Choking: which interested peers we upload to (BEP 3 tit-for-tat).

Pure policy: the engine passes ``now`` and a snapshot of its peers, the choker
answers which peers to choke and unchoke, and when to be asked again
(:meth:`Choker.next_deadline`).

- Regular slots (default 4) go to interested peers ranked by what they give
  us: their download rate to us while we leech, our upload rate to them while
  we seed (the peers that can take data fastest spread it fastest). The ranking
  is redone every ``rechoke_interval`` (10 s) so rates have time to show.
- One optimistic slot, rotated every ``optimistic_interval`` (30 s), goes to a
  random choked interested peer, so newcomers (weighted ``new_peer_weight``,
  3x) get a chance to prove themselves and we discover better partners.
- Snubbed peers (they stopped sending us blocks although we are interested and
  unchoked) get no regular slot while we leech, only the optimistic one.
- Between re-evaluations, slots freed by peers that left or lost interest are
  refilled at once from the ranking, so a fresh torrent does not idle 10 s.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

SNUB_TIMEOUT = 60.0
"""Seconds without a block, while we wait for one, before a peer counts as snubbing us."""


@dataclass(frozen=True, slots=True)
class PeerView:
    """What the choker needs to know about one connected peer (rates in bytes/s)."""

    id: Hashable
    interested_in_us: bool
    download_rate: float = 0.0  # from the peer to us
    upload_rate: float = 0.0  # from us to the peer
    snubbed: bool = False
    connected_at: float = 0.0
    is_seed: bool = False


@dataclass(frozen=True, slots=True)
class ChokeDecision:
    """Messages to send now (``unchoke``, ``choke``) and the resulting state.

    ``unchoke`` and ``choke`` are transitions: peers not mentioned keep their
    current state. Newly connected peers start choked (BEP 3), so a peer that
    stays choked is never listed. Peers that disconnected are dropped silently.
    """

    unchoke: frozenset[Hashable]
    choke: frozenset[Hashable]
    unchoked: frozenset[Hashable]
    optimistic: Hashable | None


def is_snubbed(
    now: float,
    last_block_at: float,
    *,
    we_are_interested: bool,
    peer_chokes_us: bool,
    timeout: float = SNUB_TIMEOUT,
) -> bool:
    """Has this peer sent nothing for ``timeout`` seconds although it could have?

    ``last_block_at`` should be the later of the last block received and the
    moment the peer last unchoked us, so a fresh unchoke is not a snub.
    """
    return we_are_interested and not peer_chokes_us and now - last_block_at >= timeout


class Choker:
    """Tit-for-tat upload slot allocation with an optimistic unchoke."""

    def __init__(
        self,
        slots: int = 4,
        now: float = 0.0,
        *,
        rng: random.Random | None = None,
        rechoke_interval: float = 10.0,
        optimistic_interval: float = 30.0,
        new_peer_age: float = 60.0,
        new_peer_weight: int = 3,
    ) -> None:
        if slots < 0:
            raise ValueError(f"slots must not be negative, got {slots}")
        self._slots = slots
        self._rng = rng if rng is not None else random.Random()
        self._rechoke_interval = rechoke_interval
        self._optimistic_interval = optimistic_interval
        self._new_peer_age = new_peer_age
        self._new_peer_weight = new_peer_weight
        self._regular: list[Hashable] = []
        self._optimistic: Hashable | None = None
        self._unchoked: frozenset[Hashable] = frozenset()
        self._next_rechoke = now
        self._next_optimistic = now

    @property
    def slots(self) -> int:
        return self._slots

    def set_slots(self, slots: int) -> None:
        """Change the number of regular slots; the next :meth:`update` applies it.

        Fewer slots drop the lowest-ranked peers; more slots are filled from
        the ranking without waiting for the rechoke deadline.
        """
        if slots < 0:
            raise ValueError(f"slots must not be negative, got {slots}")
        self._slots = slots

    @property
    def unchoked(self) -> frozenset[Hashable]:
        return self._unchoked

    @property
    def optimistic(self) -> Hashable | None:
        return self._optimistic

    def next_deadline(self) -> float:
        """When :meth:`update` should next be called even if nothing else happens."""
        return min(self._next_rechoke, self._next_optimistic)

    def update(
        self, now: float, peers: Sequence[PeerView], *, seeding: bool = False
    ) -> ChokeDecision:
        """Re-evaluate slots for the connected ``peers``; call at deadlines and on changes.

        A full re-ranking happens only when the rechoke deadline has passed;
        earlier calls just drop peers that left or lost interest and fill the
        freed slots.
        """
        by_id = {p.id: p for p in peers}

        def eligible(p: PeerView) -> bool:
            return p.interested_in_us and not p.is_seed

        def regular_candidate(p: PeerView) -> bool:
            return eligible(p) and (seeding or not p.snubbed)

        def rank(p: PeerView) -> tuple[float, float, float]:
            primary, secondary = (
                (p.upload_rate, p.download_rate) if seeding else (p.download_rate, p.upload_rate)
            )
            return (-primary, -secondary, p.connected_at)

        if now >= self._next_rechoke:
            ranked = sorted((p for p in peers if regular_candidate(p)), key=rank)
            self._regular = [p.id for p in ranked[: self._slots]]
            self._next_rechoke = now + self._rechoke_interval
        else:
            kept = [pid for pid in self._regular if pid in by_id and regular_candidate(by_id[pid])][
                : self._slots
            ]
            if len(kept) < self._slots:
                taken = set(kept)
                if self._optimistic is not None:
                    taken.add(self._optimistic)
                spare = sorted(
                    (p for p in peers if regular_candidate(p) and p.id not in taken), key=rank
                )
                kept += [p.id for p in spare[: self._slots - len(kept)]]
            self._regular = kept

        regular = set(self._regular)
        opt = self._optimistic
        opt_view = by_id.get(opt) if opt is not None else None
        if (
            now >= self._next_optimistic
            or opt_view is None
            or not eligible(opt_view)
            or opt in regular
        ):
            self._optimistic = self._choose_optimistic(now, peers, regular)
            if self._optimistic is not None or now >= self._next_optimistic:
                self._next_optimistic = now + self._optimistic_interval

        new = set(regular)
        if self._optimistic is not None:
            new.add(self._optimistic)
        unchoked = frozenset(new)
        old = {pid for pid in self._unchoked if pid in by_id}
        self._unchoked = unchoked
        return ChokeDecision(
            unchoke=frozenset(unchoked - old),
            choke=frozenset(old - unchoked),
            unchoked=unchoked,
            optimistic=self._optimistic,
        )

    def _choose_optimistic(
        self, now: float, peers: Sequence[PeerView], regular: set[Hashable]
    ) -> Hashable | None:
        pool = [p for p in peers if p.interested_in_us and not p.is_seed and p.id not in regular]
        if len(pool) > 1:
            # Rotating means someone else gets the chance.
            pool = [p for p in pool if p.id != self._optimistic]
        if not pool:
            return None
        weights = [
            self._new_peer_weight if now - p.connected_at < self._new_peer_age else 1 for p in pool
        ]
        return self._rng.choices(pool, weights)[0].id
