"""Round-trip time and retransmission timeout, RFC 6298.

``SRTT``/``RTTVAR`` are smoothed with the RFC's alpha = 1/8 and beta = 1/4,
and ``RTO = SRTT + max(G, 4 * RTTVAR)`` clamped to ``[min_rto, max_rto]``.
The caller applies Karn's rule: a packet that was sent more than once gives
no sample, since its ack cannot be matched to one transmission.  Each
timeout doubles the RTO (:meth:`back_off`) and it stays backed off until a
fresh sample arrives (RFC 6298 section 5.7), so a dead path is probed ever
more slowly instead of being flooded.

Why 1 s before the first sample (RFC 6298 2.1) and not libutp's 3 s for the
SYN: with ``connect_timeout`` at 6 s that leaves room for three SYNs (at 0,
1 and 3 s), which matters on lossy paths more than the rare spurious SYN
retransmission on a path slower than one second.
"""

from __future__ import annotations

__all__ = ["CLOCK_GRANULARITY", "INITIAL_RTO", "RttEstimator"]

#: G in RFC 6298: the timer granularity; our timers are event-loop timers.
CLOCK_GRANULARITY = 0.001
#: RTO before any sample.
INITIAL_RTO = 1.0


class RttEstimator:
    """Smoothed RTT, its variance and the RTO, in seconds."""

    __slots__ = ("_backed_off", "max_rto", "min_rto", "rto", "rttvar", "srtt")

    def __init__(self, min_rto: float = 0.5, max_rto: float = 60.0) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError(f"need 0 < min_rto <= max_rto, got {min_rto}, {max_rto}")
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = min(max(INITIAL_RTO, min_rto), max_rto)
        self._backed_off = False

    def sample(self, rtt: float) -> None:
        """One measured round trip (of a packet sent exactly once)."""
        rtt = max(rtt, 0.0)
        srtt = self.srtt
        if srtt is None:
            srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar += (abs(srtt - rtt) - self.rttvar) * 0.25
            srtt += (rtt - srtt) * 0.125
        self.srtt = srtt
        rto = srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)
        self.rto = min(max(rto, self.min_rto), self.max_rto)
        self._backed_off = False

    def back_off(self) -> None:
        """A retransmission timeout fired: double the RTO, up to ``max_rto``."""
        self.rto = min(self.rto * 2, self.max_rto)
        self._backed_off = True

    @property
    def backed_off(self) -> bool:
        """True between a timeout and the next valid sample."""
        return self._backed_off
