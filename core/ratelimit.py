"""Token buckets for the global upload and download rate limits.

Pure arithmetic, time passed in as ``now`` (seconds, monotonic): the asyncio
side asks :meth:`TokenBucket.consume` before sending or reading ``n`` bytes and
sleeps for the returned delay.

``consume`` is a reservation: it always takes the tokens, letting the balance
go negative, and returns how long the caller must wait until that debt is
paid. Later callers queue behind the debt, so concurrent connections are
served first come, first served and none can starve the others; because every
reserved byte is paid for exactly once, the long-run rate is the configured
one. Connections should consume in small pieces (a block, a socket read) so one
large reservation does not make everyone wait behind it.
"""

from __future__ import annotations

DEFAULT_BURST_SECONDS = 0.5
"""Default burst as a duration of traffic at the configured rate."""

MIN_BURST = 64 * 1024
"""Smallest default burst: a few 16 KiB blocks with their message headers."""


def default_burst(rate: float) -> float:
    return max(rate * DEFAULT_BURST_SECONDS, float(MIN_BURST))


class TokenBucket:
    """A rate limit in bytes per second; ``rate=None`` means unlimited.

    Tokens accrue at ``rate`` per second up to ``burst``; the bucket starts full.
    """

    def __init__(
        self, rate: float | None = None, *, burst: float | None = None, now: float = 0.0
    ) -> None:
        self._rate: float | None = None
        self._burst = 0.0
        self._burst_explicit: float | None = None
        self._tokens = 0.0
        self._last = now
        self.set_rate(rate, now, burst=burst)

    @property
    def rate(self) -> float | None:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def set_rate(self, rate: float | None, now: float, *, burst: float | None = None) -> None:
        """Change the limit at runtime (``None``: unlimited).

        Tokens earned so far at the old rate are kept (up to the new burst) and
        any debt carries over, so a change never lets a burst through. Delays
        already handed out are not recomputed. Without an explicit ``burst``, a
        burst given earlier is kept, else it follows the rate.
        """
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be positive or None, got {rate}")
        if burst is not None:
            if not burst > 0:
                raise ValueError(f"burst must be positive, got {burst}")
            self._burst_explicit = burst
        was_unlimited = self._rate is None
        self._refill(now)
        self._rate = rate
        if rate is None:
            return
        self._burst = (
            self._burst_explicit if self._burst_explicit is not None else default_burst(rate)
        )
        if was_unlimited:
            self._tokens = self._burst
        else:
            self._tokens = min(self._tokens, self._burst)

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._last = now
            if self._rate is not None:
                self._tokens = min(self._burst, self._tokens + elapsed * self._rate)

    def available(self, now: float) -> float:
        """Tokens (bytes) that could be consumed right now without waiting; negative in debt."""
        if self._rate is None:
            return float("inf")
        self._refill(now)
        return self._tokens

    def consume(self, n: int, now: float) -> float:
        """Reserve ``n`` bytes; return the seconds to wait before using them (0 if none)."""
        if n < 0:
            raise ValueError(f"cannot consume a negative amount ({n})")
        if self._rate is None:
            return 0.0
        self._refill(now)
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate

    def refund(self, n: int, now: float) -> None:
        """Give back ``n`` reserved bytes that were not used (a short read)."""
        if n < 0:
            raise ValueError(f"cannot refund a negative amount ({n})")
        if self._rate is None:
            return
        self._refill(now)
        self._tokens = min(self._burst, self._tokens + n)
