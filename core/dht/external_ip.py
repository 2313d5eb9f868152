"""Learning our external IP address by vote (BEP 42), to derive a node id that matches it.

Every response carries ``ip``: the address the responder saw our query come
from (BEP 42); peers say the same in the BEP 10 handshake's ``yourip``.  Any
single one of them may lie or sit behind the same NAT as we do, so we count
votes:

- one vote per distinct *voter IP* (a node's latest vote replaces its earlier
  one): a single host cannot stuff the ballot by sending many responses or
  using many ports;
- votes expire after ``vote_ttl`` so a changed address (a new DHCP lease, a
  roaming laptop) can win once the old votes age out;
- a decision needs at least ``min_votes`` (10) votes cast and a leader holding
  more than two thirds of them.  Ten is about what a bootstrap yields within
  seconds, enough that a handful of hostile or confused nodes cannot decide
  for us; the two-thirds margin (the leader has twice as many votes as all
  others together) keeps us from flapping between two addresses when a few
  voters see us through a different NAT path.

The voter table is an LRU of bounded size, so memory does not grow with the
number of voters.  Sans-IO: ``now`` comes from the caller.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict

__all__ = ["MIN_VOTES", "ExternalIpVoter", "canonical_ip"]

#: Votes needed before any decision (see the module docstring for why ten).
MIN_VOTES = 10


def canonical_ip(text: str) -> str | None:
    """``text`` as a canonical IP string (IPv4-mapped IPv6 as IPv4), or None if it is not an IP."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    if addr.is_unspecified or addr.is_multicast:
        return None
    return str(addr)


class ExternalIpVoter:
    """Counts votes for our external IP and says when they settle on a (new) address."""

    __slots__ = ("_votes", "decided", "max_voters", "min_votes", "vote_ttl")

    def __init__(
        self, *, min_votes: int = MIN_VOTES, max_voters: int = 100, vote_ttl: float = 3600.0
    ) -> None:
        self.min_votes = max(1, min_votes)
        self.max_voters = max(self.min_votes, max_voters)
        self.vote_ttl = vote_ttl
        #: voter IP -> (voted IP, when), least recently voting first.
        self._votes: OrderedDict[str, tuple[str, float]] = OrderedDict()
        #: The address the votes last settled on.
        self.decided: str | None = None

    def vote(self, ip: str, voter: str, now: float) -> str | None:
        """Record ``voter``'s claim that we are ``ip``; return the address if the decision changed.

        Invalid addresses on either side are ignored.
        """
        claimed = canonical_ip(ip)
        who = canonical_ip(voter)
        if claimed is None or who is None:
            return None
        self._votes[who] = (claimed, now)
        self._votes.move_to_end(who)
        while len(self._votes) > self.max_voters:
            self._votes.popitem(last=False)
        self._expire(now)
        leader = self.leader()
        if leader is not None and leader != self.decided:
            self.decided = leader
            return leader
        return None

    def _expire(self, now: float) -> None:
        while self._votes:
            voter, (_, when) = next(iter(self._votes.items()))
            if now - when <= self.vote_ttl:
                break
            del self._votes[voter]

    def leader(self) -> str | None:
        """The address that wins under the rule above, or None while nothing does."""
        total = len(self._votes)
        if total < self.min_votes:
            return None
        counts = Counter(ip for ip, _ in self._votes.values())
        best, count = counts.most_common(1)[0]
        if 3 * count > 2 * total:
            return best
        return None

    def votes(self) -> int:
        """Votes currently counted."""
        return len(self._votes)
