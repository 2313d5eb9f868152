"""Rate limits for the DHT: queries we answer (per source IP and overall) and queries we send.

A DHT node is an open UDP service: anyone can make it work, and a reply is
usually bigger than the query (a reflection amplifier).  So every query we
answer spends a token from its source IP's bucket *and* from a bucket for
everyone; a source that asks too fast is ignored until its bucket refills.
The per-IP map is an LRU of bounded size: a flood from many addresses can
only push out old entries (whose owners then start with a full bucket),
never grow memory, and the overall bucket still caps the work.

Queries we send have their own bucket, so a burst of lookups is spread out
instead of being dropped by our socket or by the remote nodes' limits.

Sans-IO: every call takes ``now``.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["QueryLimiter", "TokenBucket"]


class TokenBucket:
    """A classic token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = max(0.0, rate)
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend ``amount`` tokens if there are that many; False (nothing spent) if not."""
        self._refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def wait_time(self, now: float, amount: float = 1.0) -> float:
        """Seconds until ``amount`` tokens are there (0 when they already are; inf at rate 0)."""
        self._refill(now)
        missing = amount - self.tokens
        if missing <= 0:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return missing / self.rate


class QueryLimiter:
    """Whether to answer a query from ``ip`` now: its own bucket and the overall one must allow it.

    ``per_ip`` queries per second per source (burst ``2 * per_ip``), ``total``
    per second overall (burst ``2 * total``); at most ``max_ips`` sources are
    tracked, least recently heard first out.
    """

    __slots__ = ("_ips", "burst_per_ip", "max_ips", "per_ip", "total")

    def __init__(self, *, per_ip: float, total: float, now: float, max_ips: int = 4096) -> None:
        self.per_ip = per_ip
        self.burst_per_ip = max(1.0, 2.0 * per_ip)
        self.max_ips = max(1, max_ips)
        self.total = TokenBucket(total, max(1.0, 2.0 * total), now)
        self._ips: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, ip: str, now: float) -> bool:
        """Spend one query from ``ip``'s bucket and the overall one; False if either is empty.

        A refused query still counts as heard (the source moves to the
        LRU's fresh end) so a flooding source cannot be aged out by its own
        flood.  The overall bucket is only spent when the source's allows
        it, so one noisy source cannot starve everyone else.
        """
        bucket = self._ips.get(ip)
        if bucket is None:
            bucket = TokenBucket(self.per_ip, self.burst_per_ip, now)
            self._ips[ip] = bucket
            if len(self._ips) > self.max_ips:
                self._ips.popitem(last=False)
        else:
            self._ips.move_to_end(ip)
        if not bucket.take(now):
            return False
        return self.total.take(now)

    def tracked(self) -> int:
        """How many source IPs have a bucket (bounded by ``max_ips``)."""
        return len(self._ips)
