"""LEDBAT congestion control (RFC 6817, as uTP uses it per BEP 29).

The sender measures one-way delay from the ``timestamp_diff_us`` its peer
echoes (the peer's receive time minus our send timestamp: clock offset plus
propagation plus queuing).  The clock offset and the propagation delay are
removed by subtracting the *base delay*, the smallest sample seen lately;
what is left is queuing delay.  The window then moves in proportion to how
far that is from the target (100 ms)::

    off_target = (target - queuing) / target                  (<= 1)
    cwnd += gain * off_target * bytes_acked / cwnd           per ack

so a full window acked at zero queuing grows ``cwnd`` by ``gain`` bytes (one
RTT), and a queue above target shrinks it.

Choices, and why:

- **Base delay: per-minute minima over the last 3 minutes** (the minute
  being filled and the two before it), BEP 29's "lowest delay in the last
  two minutes" rounded up to whole buckets.  RFC 6817 suggests 10 minutes so
  that a long-standing queue is not mistaken for propagation delay; the cost
  is clock drift: two crystals 100 ppm apart drift 6 ms a minute, so a
  10-minute base can be 60 ms stale, most of the 100 ms target, and the
  connection throttles itself for nothing.  Three minutes bound that to
  about 18 ms and still outlive any queue LEDBAT itself keeps.  The queuing
  estimate is also clamped to the smallest RTT of the packets just acked
  (a one-way delay cannot exceed a round trip), as libutp does.
- **Current delay: the minimum of the last 3 samples** (RFC 6817's
  CURRENT_FILTER, libutp's and libtorrent's 3): one delayed ack or a
  jittery packet does not move the window.
- **Gain: 3,000 bytes per RTT** at zero queuing delay, libutp's
  ``MAX_CWND_INCREASE_BYTES_PER_RTT`` (about two full packets).
- **Decrease** is proportional to the excess delay but never faster than
  halving per window acked (RFC 6817: no faster than TCP).
- **Loss halves** the window once per round trip (the caller decides what
  "once per RTT" means; see the connection), not below ``min_cwnd`` = 2
  packets.  A **timeout** restarts from one packet in slow start, as TCP.
- **Slow start** (optional, on by default): the window grows by the bytes
  acked until the queuing delay passes half the target (then it halves:
  that delay was caused by the window of one RTT before, half the current
  one, and LEDBAT's linear decrease would take minutes to drain the
  overshoot), a loss, or ``ssthresh``.  Without it a 10 MB/s, 50 ms path
  needs ~8 s of +3,000 B/RTT steps to fill; libutp and libtorrent both
  slow-start for that reason.  Above :data:`LIMITED_SLOW_START` packets it
  is RFC 3742's *limited* slow start: at most half that many more per RTT.
  Doubling a multi-megabyte window overshoots by megabytes in the one RTT
  the delay signal lags (measured in the sans-IO bench: a 1 MiB drop-tail
  queue overflowed, 331 drops and a timeout, goodput 8.4 -> 3.2 MB/s once
  4,096 packets could be in flight); growing by 70 KB an RTT still fills
  a 4 MiB window in a few dozen RTTs (a fraction of a second on a LAN).
- **No growth while not window-limited**: if the sender has not been held
  back by ``cwnd`` in the last second (the application writes less), the
  window would grow without ever being tested; libutp stops growth the same
  way.

Timestamps are microseconds modulo 2**32; every comparison is wrap-aware.
"""

from __future__ import annotations

from collections import deque

__all__ = [
    "BASE_BUCKETS",
    "BUCKET_SECONDS",
    "CURRENT_SAMPLES",
    "GAIN",
    "LIMITED_SLOW_START",
    "TIMESTAMP_MASK",
    "DelayHistory",
    "Ledbat",
    "wrapping_less",
]

TIMESTAMP_MASK = 0xFFFFFFFF
_HALF = 0x80000000
#: One-minute buckets of minima kept for the base delay.
BASE_BUCKETS = 3
BUCKET_SECONDS = 60.0
#: Samples the current delay is the minimum of.
CURRENT_SAMPLES = 3
#: cwnd growth per RTT at zero queuing delay, bytes.
GAIN = 3000.0
#: Slow start ends when the queuing delay passes this fraction of the target.
SLOW_START_EXIT = 0.5
#: Slow start doubles the window up to this many packets, then grows by at
#: most half of it per RTT (RFC 3742's max_ssthresh).
LIMITED_SLOW_START = 100
#: Growth needs the window to have been the limit this recently (seconds).
CWND_LIMITED_WITHIN = 1.0


def wrapping_less(a: int, b: int) -> bool:
    """``a < b`` for 32-bit timestamps that wrap."""
    return 0 < (b - a) & TIMESTAMP_MASK < _HALF


class DelayHistory:
    """Base delay (wrap-aware minimum of per-bucket minima) and the current delay filter."""

    __slots__ = ("_base", "_bucket_seconds", "_bucket_start", "_buckets", "_recent")

    def __init__(
        self,
        *,
        buckets: int = BASE_BUCKETS,
        bucket_seconds: float = BUCKET_SECONDS,
        current: int = CURRENT_SAMPLES,
    ) -> None:
        self._buckets: deque[int] = deque(maxlen=buckets)
        self._bucket_seconds = bucket_seconds
        self._bucket_start = 0.0
        self._base: int | None = None
        self._recent: deque[int] = deque(maxlen=current)

    def add(self, sample: int, now: float) -> None:
        """Record one raw delay sample (microseconds mod 2**32, any clock offset)."""
        sample &= TIMESTAMP_MASK
        base = self._base
        buckets = self._buckets
        if base is None:
            buckets.append(sample)
            self._base = sample
            self._bucket_start = now
        elif now - self._bucket_start >= self._bucket_seconds:
            # A new minute: the oldest bucket falls out, the base is recomputed
            # from what is left, so a faraway low sample is eventually forgotten.
            buckets.append(sample)
            self._bucket_start = now
            low = buckets[0]
            for value in buckets:
                if wrapping_less(value, low):
                    low = value
            self._base = low
        else:
            # wrapping_less(sample, x) inlined: one call per ack on the hot path
            if 0 < (buckets[-1] - sample) & TIMESTAMP_MASK < _HALF:
                buckets[-1] = sample
            if 0 < (base - sample) & TIMESTAMP_MASK < _HALF:
                self._base = sample
        self._recent.append(sample)

    @property
    def base(self) -> int | None:
        """The base delay (raw units), None before the first sample."""
        return self._base

    def queuing_us(self) -> int:
        """Current delay above the base, microseconds (0 without samples)."""
        base = self._base
        if base is None:
            return 0
        low = _HALF
        for sample in self._recent:
            delay = (sample - base) & TIMESTAMP_MASK
            if delay < low:
                low = delay
        return low if low < _HALF else 0

    @property
    def has_samples(self) -> bool:
        return self._base is not None


class Ledbat:
    """The congestion window, in bytes, driven by delay samples, acks, losses, timeouts."""

    __slots__ = (
        "_last_cwnd_full",
        "cwnd",
        "gain",
        "history",
        "max_cwnd",
        "min_cwnd",
        "mss",
        "slow_start",
        "ssthresh",
        "target_us",
    )

    def __init__(
        self,
        *,
        mss: int,
        target: float = 0.100,
        max_cwnd: int = 4 << 20,
        gain: float = GAIN,
        slow_start: bool = True,
    ) -> None:
        self.mss = mss
        self.target_us = max(1.0, target * 1e6)
        self.gain = gain
        self.min_cwnd = 2 * mss
        self.max_cwnd = max(max_cwnd, self.min_cwnd)
        self.cwnd = float(self.min_cwnd)
        self.ssthresh = float(self.max_cwnd)
        self.slow_start = slow_start
        self.history = DelayHistory()
        self._last_cwnd_full = -1e18

    def on_delay_sample(self, sample_us: int, now: float) -> None:
        """The peer's ``timestamp_diff_us`` (0 means "no sample yet" and is skipped)."""
        if sample_us:
            self.history.add(sample_us, now)

    def note_cwnd_full(self, now: float) -> None:
        """The sender had data but the window stopped it: growth is being tested."""
        self._last_cwnd_full = now

    def queuing_delay(self) -> float:
        """Current queuing delay estimate, seconds."""
        return self.history.queuing_us() / 1e6

    def on_ack(self, bytes_acked: int, now: float, min_rtt: float | None = None) -> None:
        """``bytes_acked`` newly acknowledged; ``min_rtt`` the smallest RTT among them."""
        if bytes_acked <= 0 or not self.history.has_samples:
            return
        delay = float(self.history.queuing_us())
        if min_rtt is not None and delay > min_rtt * 1e6:
            delay = min_rtt * 1e6
        target = self.target_us
        cwnd = self.cwnd
        limited = now - self._last_cwnd_full <= CWND_LIMITED_WITHIN
        acked = min(float(bytes_acked), cwnd)
        window_factor = acked / max(cwnd, float(bytes_acked))
        off_target = (target - delay) / target
        change = self.gain * off_target * window_factor
        if change < 0:
            change = max(change, -0.5 * acked)
        elif not limited:
            change = 0.0
        if self.slow_start:
            if delay > target * SLOW_START_EXIT:
                # The delay seen now was caused by the window of one RTT ago,
                # half of this one: go back to it instead of draining the
                # overshoot at LEDBAT's slow linear rate.
                self.slow_start = False
                cwnd *= 0.5
                self.ssthresh = cwnd
            elif limited:
                ceiling = self.mss * LIMITED_SLOW_START
                grow = acked if cwnd <= ceiling else acked * 0.5 * ceiling / cwnd
                cwnd = max(cwnd + grow, cwnd + change)
                if cwnd >= self.ssthresh:
                    self.slow_start = False
        else:
            cwnd += change
        self.cwnd = min(max(cwnd, float(self.min_cwnd)), float(self.max_cwnd))

    def on_loss(self) -> None:
        """A packet was lost: halve (once per RTT; the caller rate-limits)."""
        self.cwnd = max(self.cwnd * 0.5, float(self.min_cwnd))
        self.ssthresh = self.cwnd
        self.slow_start = False

    def on_timeout(self) -> None:
        """The retransmission timer fired: one packet, slow start up to half the old window."""
        self.ssthresh = max(self.cwnd * 0.5, float(self.min_cwnd))
        self.cwnd = float(self.mss)
        self.slow_start = True
