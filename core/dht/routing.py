"""The Kademlia routing table of BEP 5: k-buckets, replacement caches, node states.

Sans-IO: the table never sends anything and never reads a clock.  The node
(:mod:`.node`) tells it what happened (``heard_from`` a query or a response,
``failed`` a timeout) with ``now``, and asks it what to do (``stale_nodes``
to ping, ``refresh_targets`` to look up, ``closest`` to query).

Layout.  Buckets are kept by how many leading bits their ids share with our
own id: bucket ``i`` holds the ids sharing exactly ``i`` bits, and the last
bucket holds everything sharing at least as many bits as its index.  That is
BEP 5's classic table (a list of id-space ranges where only the range holding
our own id splits) written the way it is cheapest to search: a node's bucket
is one XOR and one ``bit_length`` away, and the table holds at most
``160 * k`` nodes whatever arrives.

Trust.  A node earns a place by answering one of our queries ("confirmed",
libtorrent's word).  A node that only sent us queries may sit in free room
but never pushes anyone out or splits a bucket, since its source address may
be forged.  Each bucket keeps a bounded cache of replacements, newest first,
answered ones preferred; a replacement takes a slot when a member turns bad.
Known ids and known addresses are not handed over to a newcomer while their
holder still answers (see :meth:`RoutingTable.heard_from`), which keeps a
spoofer from evicting honest nodes and churn from filling the table with
aliases of one host.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from core.errors import DhtError

from .types import ID_LENGTH, BucketStats, NodeInfo, NodeState

#: Bits in an id; the table has at most this many buckets.
ID_BITS = ID_LENGTH * 8

#: A questionable node is offered for a ping at most once per
#: ``stale_after / PING_INTERVAL_DIVISOR`` seconds (60 s with BEP 5's 15
#: minutes): often enough that two failed pings replace it within minutes,
#: rarely enough that a flood of newcomers does not turn into a ping flood.
PING_INTERVAL_DIVISOR = 15


@dataclass(slots=True)
class NodeEntry:
    """What the table knows about one node (a member or a replacement); mutable bookkeeping."""

    info: NodeInfo
    #: When it last answered a query of ours; None: it never did (unconfirmed).
    last_response: float | None
    #: Its last query or response.
    last_seen: float
    #: Our queries to it that failed in a row since its last answer.
    failures: int = 0
    #: When we last asked the caller to ping it.
    last_ping: float | None = None


@dataclass(slots=True)
class _Bucket:
    """One k-bucket: its members, its replacement cache (newest first), and when it last changed."""

    last_changed: float
    nodes: list[NodeEntry] = field(default_factory=list)
    replacements: list[NodeEntry] = field(default_factory=list)


def _check_id(node_id: bytes, what: str) -> None:
    if len(node_id) != ID_LENGTH:
        raise DhtError(f"{what} must be {ID_LENGTH} bytes, not {len(node_id)}")


class RoutingTable:
    """BEP 5 routing table around ``own_id``; every method takes the time it should judge by.

    ``k`` nodes per bucket; a node silent for ``stale_after`` seconds (or one
    that never answered us) is questionable, one that failed ``max_failures``
    queries in a row is bad; each bucket caches up to ``replacements`` spare
    nodes.  ``rng`` draws the refresh targets (pass a seeded one in tests).
    """

    def __init__(
        self,
        own_id: bytes,
        *,
        now: float,
        k: int = 8,
        stale_after: float = 900.0,
        max_failures: int = 2,
        replacements: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        _check_id(own_id, "own id")
        if k < 1:
            raise DhtError(f"bucket size k must be at least 1, not {k}")
        if max_failures < 1:
            raise DhtError(f"max_failures must be at least 1, not {max_failures}")
        if replacements < 0:
            raise DhtError(f"replacements must not be negative, not {replacements}")
        if stale_after <= 0:
            raise DhtError(f"stale_after must be positive, not {stale_after}")
        self._own_id = own_id
        self._own_int = int.from_bytes(own_id, "big")
        self._k = k
        self._stale_after = stale_after
        self._ping_interval = stale_after / PING_INTERVAL_DIVISOR
        self._max_failures = max_failures
        self._max_replacements = replacements
        self._rng = rng if rng is not None else random.Random()
        self._buckets: list[_Bucket] = [_Bucket(last_changed=now)]
        # Members and replacements by id, and the id holding each address
        # (members and replacements together: no address appears twice).
        self._members: dict[bytes, NodeEntry] = {}
        self._spares: dict[bytes, NodeEntry] = {}
        self._by_addr: dict[tuple[str, int], bytes] = {}

    # ------------------------------------------------------------------ queries

    @property
    def own_id(self) -> bytes:
        return self._own_id

    def __len__(self) -> int:
        return len(self._members)

    def get(self, node_id: bytes) -> NodeEntry | None:
        """The member entry for ``node_id`` (replacements are not members), or None."""
        return self._members.get(node_id)

    def state(self, node_id: bytes, now: float) -> NodeState | None:
        """BEP 5's judgement of a member at ``now``; None when it is not in the table."""
        entry = self._members.get(node_id)
        return None if entry is None else self._state(entry, now)

    def nodes(self) -> list[NodeInfo]:
        """Every member, bad ones included (they stay until someone replaces them)."""
        return [entry.info for bucket in self._buckets for entry in bucket.nodes]

    def good_nodes(self, now: float) -> list[NodeInfo]:
        return [
            entry.info
            for bucket in self._buckets
            for entry in bucket.nodes
            if self._state(entry, now) is NodeState.GOOD
        ]

    def counts(self, now: float) -> tuple[int, int]:
        """(good, questionable) members; bad ones count as neither."""
        good = questionable = 0
        for entry in self._members.values():
            state = self._state(entry, now)
            if state is NodeState.GOOD:
                good += 1
            elif state is NodeState.QUESTIONABLE:
                questionable += 1
        return good, questionable

    def bucket_stats(self, now: float) -> tuple[BucketStats, ...]:
        stats = []
        for depth, bucket in enumerate(self._buckets):
            states = [self._state(entry, now) for entry in bucket.nodes]
            stats.append(
                BucketStats(
                    depth=depth,
                    good=states.count(NodeState.GOOD),
                    questionable=states.count(NodeState.QUESTIONABLE),
                    replacements=len(bucket.replacements),
                )
            )
        return tuple(stats)

    def closest(
        self, target: bytes, count: int = 8, *, now: float, good_only: bool = False
    ) -> list[NodeInfo]:
        """The ``count`` members nearest ``target`` by XOR, nearest first; never bad ones.

        Exact, like a full sort, without looking at the whole table: the
        buckets order themselves by distance.  Let ``j`` be the bucket
        ``target`` falls in.  Every member of bucket ``j`` shares more
        leading bits with ``target`` than any other member does, so it is
        nearer; members of the deeper buckets all differ from ``target``
        first at bit ``j`` (they agree with our id there, ``target`` does
        not), so together they come next; then bucket ``j - 1``, ``j - 2``
        ... 0, each wholly farther than the one before.  Groups are taken in
        that order until ``count`` members are found, and only their
        members are judged and sorted: a ``find_node`` answer looks at about
        ``k`` nodes instead of the ``160 * k`` a table may hold.
        """
        _check_id(target, "target")
        if count <= 0:
            return []
        target_int = int.from_bytes(target, "big")
        buckets = self._buckets
        last = len(buckets) - 1
        home = min(ID_BITS - (self._own_int ^ target_int).bit_length(), last)
        found: list[NodeInfo] = []
        self._take(buckets[home].nodes, target_int, now, good_only, found)
        if len(found) < count and home < last:
            deeper = [e for b in buckets[home + 1 :] for e in b.nodes]
            self._take(deeper, target_int, now, good_only, found)
        index = home - 1
        while len(found) < count and index >= 0:
            self._take(buckets[index].nodes, target_int, now, good_only, found)
            index -= 1
        del found[count:]
        return found

    def _take(
        self,
        entries: list[NodeEntry],
        target_int: int,
        now: float,
        good_only: bool,
        into: list[NodeInfo],
    ) -> None:
        """Append the eligible ``entries`` to ``into``, nearest ``target_int`` first.

        The state rules of :meth:`_state` written inline (this runs for every
        ``find_node`` and ``get_peers`` we answer): bad is ``max_failures``
        failures; good is an answer, no failure since, and a word within
        ``stale_after``.
        """
        if good_only:
            stale = self._stale_after
            chosen = [
                e
                for e in entries
                if e.failures == 0 and e.last_response is not None and now - e.last_seen < stale
            ]
        else:
            limit = self._max_failures
            chosen = [e for e in entries if e.failures < limit]
        if len(chosen) > 1:
            chosen.sort(key=lambda e: int.from_bytes(e.info.id, "big") ^ target_int)
        into.extend(e.info for e in chosen)

    # ------------------------------------------------------------------ events

    def heard_from(self, node: NodeInfo, now: float, *, response: bool) -> list[NodeInfo]:
        """``node`` sent us a query (``response=False``) or answered ours (``response=True``).

        A member is refreshed (an answer also clears its failures).  A new
        node takes free room in its bucket; when the bucket is full, an
        answering node replaces a bad member, or splits the bucket when it is
        the one holding our own id; otherwise the node waits in the bucket's
        replacement cache and the bucket's questionable members not pinged
        lately are returned for the caller to ping (and marked pinged): if
        they fail, the newcomer gets their place.

        Identity rules: our own id is never added; a known id from another
        address is ignored unless the known entry is bad; an address already
        held under another id is handed over only once that holder has failed
        a query.  Among replacements, whose claims nobody has checked, an
        answer beats a mere query and a newer claim beats an older one of the
        same kind.
        """
        node_id = node.id
        _check_id(node_id, "node id")
        if node_id == self._own_id:
            return []
        member = self._members.get(node_id)
        if member is not None and member.info.addr == node.addr:
            member.last_seen = now
            if response:
                member.last_response = now
                member.failures = 0
                self._buckets[self._index(node_id)].last_changed = now
            return []
        spare = self._spares.get(node_id)
        if spare is not None and spare.info.addr == node.addr:
            self._drop_spare(spare)
            spare.last_seen = now
            if response:
                spare.last_response = now
                spare.failures = 0
            return self._insert(spare, now, confirmed=spare.last_response is not None)
        # The id is known elsewhere, or the address is held under another id.
        same_id = member if member is not None else spare
        holder_id = self._by_addr.get(node.addr)
        holder = None
        if holder_id is not None:
            holder = self._members.get(holder_id) or self._spares.get(holder_id)
        if same_id is not None and not self._may_take_id(same_id, now, response=response):
            return []
        if holder is not None and not self._may_take_addr(holder, response=response):
            return []
        freed: set[int] = set()
        for old in (same_id, holder):
            if old is None:
                continue
            if old.info.id in self._members:
                freed.add(self._index(old.info.id))
                self._drop_member(old)
            else:
                self._drop_spare(old)
        entry = NodeEntry(
            info=node,
            last_response=now if response else None,
            last_seen=now,
        )
        pings = self._insert(entry, now, confirmed=response)
        for index in freed:
            self._fill(self._buckets[index], now)
        return pings

    def failed(self, node_id: bytes, now: float) -> None:
        """Our query to ``node_id`` timed out or got an error.

        After ``max_failures`` in a row a member is bad, and the freshest
        replacement (one that has answered us, if any has) takes its place; a
        bad member with nobody to replace it stays until a newcomer does, so
        a node that comes back can still answer its way to good.  A
        replacement that fails is forgotten.
        """
        member = self._members.get(node_id)
        if member is not None:
            member.failures += 1
            if member.failures >= self._max_failures:
                bucket = self._buckets[self._index(node_id)]
                promoted = self._pop_replacement(bucket)
                if promoted is not None:
                    self._drop_member(member)
                    self._add_member(bucket, promoted)
                    bucket.last_changed = now
            return
        spare = self._spares.get(node_id)
        if spare is not None:
            self._drop_spare(spare)

    def remove(self, node_id: bytes) -> None:
        """Forget ``node_id`` (member or replacement); a replacement fills the freed slot."""
        member = self._members.get(node_id)
        if member is not None:
            bucket = self._buckets[self._index(node_id)]
            self._drop_member(member)
            # A removal is no sign of life in the bucket: its refresh clock stays.
            self._fill(bucket, bucket.last_changed)
            return
        spare = self._spares.get(node_id)
        if spare is not None:
            self._drop_spare(spare)

    # ------------------------------------------------------------------ upkeep

    def stale_nodes(self, now: float, limit: int = 8) -> list[NodeInfo]:
        """Up to ``limit`` questionable members to ping, longest silent first; marks them pinged.

        Bad members are left alone (they wait for a replacement); a member
        pinged less than ``stale_after / PING_INTERVAL_DIVISOR`` ago is not
        offered again yet.
        """
        if limit <= 0:
            return []
        due = [
            entry
            for entry in self._members.values()
            if self._state(entry, now) is NodeState.QUESTIONABLE and self._ping_due(entry, now)
        ]
        due.sort(key=lambda entry: entry.last_seen)
        chosen = due[:limit]
        for entry in chosen:
            entry.last_ping = now
        return [entry.info for entry in chosen]

    def refresh_targets(self, now: float) -> list[bytes]:
        """A random id inside each bucket unchanged for ``stale_after``; marks those refreshed.

        BEP 5: a lookup of such an id repopulates the bucket.  Buckets change
        when a member answers us, when a node joins, or when one is replaced.
        """
        targets = []
        for index, bucket in enumerate(self._buckets):
            if now - bucket.last_changed >= self._stale_after:
                targets.append(self._random_id_in(index))
                bucket.last_changed = now
        return targets

    def set_own_id(self, own_id: bytes, now: float) -> None:
        """Rebuild the buckets around a new id (BEP 42 after an IP change), keeping what fits.

        Members are placed again best first (good, then questionable, then
        bad), each allowed to split the new own bucket as it was already
        trusted; what no longer fits joins the replacement caches, then the
        old replacements, newest first.  A node holding the new id is dropped.
        """
        _check_id(own_id, "own id")
        members = [e for e in self._members.values() if e.info.id != own_id]
        spares = [e for e in self._spares.values() if e.info.id != own_id]
        rank = {NodeState.GOOD: 0, NodeState.QUESTIONABLE: 1, NodeState.BAD: 2}
        members.sort(key=lambda e: (rank[self._state(e, now)], -e.last_seen))
        spares.sort(key=lambda e: (e.last_response is None, -e.last_seen))
        self._own_id = own_id
        self._own_int = int.from_bytes(own_id, "big")
        self._buckets = [_Bucket(last_changed=now)]
        self._members.clear()
        self._spares.clear()
        self._by_addr.clear()
        for entry in members:
            trusted = self._state(entry, now) is not NodeState.BAD
            self._insert(entry, now, confirmed=trusted, offer_pings=False)
        for entry in spares:
            bucket = self._buckets[self._index(entry.info.id)]
            if len(bucket.nodes) < self._k:
                self._add_member(bucket, entry)
            elif len(bucket.replacements) < self._max_replacements:
                # Sorted newest (and answered) first: append keeps that order.
                bucket.replacements.append(entry)
                self._spares[entry.info.id] = entry
                self._by_addr[entry.info.addr] = entry.info.id

    # ------------------------------------------------------------------ internals

    def _state(self, entry: NodeEntry, now: float) -> NodeState:
        # BEP 5: good if it answered us within stale_after, or answered us
        # once and has been heard from (query or answer) within stale_after.
        # A failure since its last answer makes it questionable at once.
        if entry.failures >= self._max_failures:
            return NodeState.BAD
        if (
            entry.last_response is not None
            and entry.failures == 0
            and now - entry.last_seen < self._stale_after
        ):
            return NodeState.GOOD
        return NodeState.QUESTIONABLE

    def _ping_due(self, entry: NodeEntry, now: float) -> bool:
        return entry.last_ping is None or now - entry.last_ping >= self._ping_interval

    def _index(self, node_id: bytes) -> int:
        shared = ID_BITS - (self._own_int ^ int.from_bytes(node_id, "big")).bit_length()
        return min(shared, len(self._buckets) - 1)

    def _random_id_in(self, index: int) -> bytes:
        if index < len(self._buckets) - 1:
            # Shares exactly `index` leading bits with us: our prefix, our next bit flipped.
            free_bits = ID_BITS - index - 1
            prefix = (self._own_int >> free_bits) ^ 1
        else:
            # The own bucket: our first `index` bits, anything after.
            free_bits = ID_BITS - index
            prefix = self._own_int >> free_bits
        value = (prefix << free_bits) | self._rng.getrandbits(free_bits)
        return value.to_bytes(ID_LENGTH, "big")

    def _may_take_id(self, old: NodeEntry, now: float, *, response: bool) -> bool:
        """May a claim of ``old``'s id from another address replace it?"""
        if old.info.id in self._members:
            return self._state(old, now) is NodeState.BAD
        return response or old.last_response is None

    def _may_take_addr(self, old: NodeEntry, *, response: bool) -> bool:
        """May a new id at ``old``'s address replace it?"""
        if old.info.id in self._members:
            return old.failures > 0
        return response or old.last_response is None

    def _insert(
        self, entry: NodeEntry, now: float, *, confirmed: bool, offer_pings: bool = True
    ) -> list[NodeInfo]:
        """Place a node not in the table: free room, a bad slot, a split, or the replacement cache.

        Returns (and marks pinged) the full bucket's questionable members due
        a ping when the node had to wait, if ``offer_pings``.
        """
        while True:
            index = self._index(entry.info.id)
            bucket = self._buckets[index]
            if len(bucket.nodes) < self._k:
                self._add_member(bucket, entry)
                bucket.last_changed = now
                return []
            if not confirmed:
                break
            bad = [e for e in bucket.nodes if self._state(e, now) is NodeState.BAD]
            if bad:
                worst = max(bad, key=lambda e: (e.failures, -e.last_seen))
                self._drop_member(worst)
                self._add_member(bucket, entry)
                bucket.last_changed = now
                return []
            if index == len(self._buckets) - 1 and len(self._buckets) < ID_BITS:
                self._split(now)
                continue
            break
        self._park(bucket, entry)
        if not offer_pings:
            return []
        # Questionable (neither bad nor good, see _state) and due a ping, inline:
        # every query from a stranger near a full bucket comes through here.
        limit = self._max_failures
        stale = self._stale_after
        interval = self._ping_interval
        pings = [
            e
            for e in bucket.nodes
            if e.failures < limit
            and (e.failures or e.last_response is None or not now - e.last_seen < stale)
            and (e.last_ping is None or now - e.last_ping >= interval)
        ]
        if not pings:
            return []
        pings.sort(key=lambda e: e.last_seen)
        for e in pings:
            e.last_ping = now
        return [e.info for e in pings]

    def _split(self, now: float) -> None:
        """Split the own bucket: members sharing one more bit with us move to a new last bucket."""
        old = self._buckets[-1]
        depth = len(self._buckets) - 1
        near = _Bucket(last_changed=now)
        self._buckets.append(near)

        def moves(entry: NodeEntry) -> bool:
            return self._index(entry.info.id) > depth

        near.nodes = [e for e in old.nodes if moves(e)]
        old.nodes = [e for e in old.nodes if not moves(e)]
        near.replacements = [e for e in old.replacements if moves(e)]
        old.replacements = [e for e in old.replacements if not moves(e)]
        self._fill(old, now)
        self._fill(near, now)

    def _fill(self, bucket: _Bucket, now: float) -> None:
        """Move replacements into free room (freshest answered ones first)."""
        while len(bucket.nodes) < self._k:
            promoted = self._pop_replacement(bucket)
            if promoted is None:
                return
            self._add_member(bucket, promoted)
            bucket.last_changed = now

    def _pop_replacement(self, bucket: _Bucket) -> NodeEntry | None:
        """Take the newest replacement that has answered us, else the newest one."""
        if not bucket.replacements:
            return None
        chosen = next(
            (e for e in bucket.replacements if e.last_response is not None),
            bucket.replacements[0],
        )
        self._drop_spare(chosen)
        return chosen

    def _park(self, bucket: _Bucket, entry: NodeEntry) -> None:
        """Put ``entry`` first in the cache; evict the oldest unconfirmed entry, else the oldest."""
        if self._max_replacements == 0:
            return
        cache = bucket.replacements
        if len(cache) >= self._max_replacements:
            victim = self._eviction_victim(cache)
            if victim is None or (entry.last_response is None and victim.last_response is not None):
                return  # an unanswered newcomer does not push out nodes that answered
            self._drop_spare(victim, bucket)
        cache.insert(0, entry)
        self._spares[entry.info.id] = entry
        self._by_addr[entry.info.addr] = entry.info.id

    @staticmethod
    def _eviction_victim(cache: list[NodeEntry]) -> NodeEntry | None:
        for entry in reversed(cache):
            if entry.last_response is None:
                return entry
        return cache[-1] if cache else None

    def _add_member(self, bucket: _Bucket, entry: NodeEntry) -> None:
        bucket.nodes.append(entry)
        self._members[entry.info.id] = entry
        self._by_addr[entry.info.addr] = entry.info.id

    def _drop_member(self, entry: NodeEntry) -> None:
        bucket = self._buckets[self._index(entry.info.id)]
        _remove(bucket.nodes, entry)
        del self._members[entry.info.id]
        del self._by_addr[entry.info.addr]

    def _drop_spare(self, entry: NodeEntry, bucket: _Bucket | None = None) -> None:
        if bucket is None:
            bucket = self._buckets[self._index(entry.info.id)]
        _remove(bucket.replacements, entry)
        del self._spares[entry.info.id]
        del self._by_addr[entry.info.addr]


def _remove(entries: list[NodeEntry], entry: NodeEntry) -> None:
    """Remove ``entry`` itself from ``entries``, looking from the end.

    By identity: ``list.remove`` would compare field by field with every
    entry before it, and evictions take the oldest, last one.
    """
    for i in range(len(entries) - 1, -1, -1):
        if entries[i] is entry:
            del entries[i]
            return
    raise ValueError("entry not in the list")
