"""Tests for core.ratelimit with a scripted clock."""

from __future__ import annotations

import heapq
import random

import pytest

from core.ratelimit import MIN_BURST, TokenBucket

KiB = 1024
BLOCK = 16 * KiB


def simulate(
    bucket: TokenBucket,
    connections: int,
    start: float,
    end: float,
    *,
    sizes: tuple[int, ...] = (BLOCK,),
    seed: int = 0,
) -> list[int]:
    """Greedy senders: each sends as soon as its previous reservation allows.

    Returns the bytes each connection actually sent within ``[start, end)``.
    """
    rng = random.Random(seed)
    sent = [0] * connections
    ready = [(start + rng.random() * 0.01, i) for i in range(connections)]
    heapq.heapify(ready)
    while ready:
        now, i = heapq.heappop(ready)
        if now >= end:
            continue
        n = rng.choice(sizes)
        delay = bucket.consume(n, now)
        assert delay >= 0
        if now + delay < end:
            sent[i] += n
        heapq.heappush(ready, (now + delay, i))
    return sent


@pytest.mark.parametrize("rate", [50 * KiB, 1_000_000, 10 * 1024 * KiB])
def test_long_run_average_is_within_two_percent(rate: int) -> None:
    bucket = TokenBucket(rate, now=0.0)
    duration = 120.0
    sent = simulate(bucket, 8, 0.0, duration, sizes=(BLOCK, 1400, 4 * KiB))
    average = sum(sent) / duration
    assert abs(average - rate) / rate < 0.02


def test_connections_share_fairly() -> None:
    bucket = TokenBucket(200 * KiB, now=0.0)
    sent = simulate(bucket, 10, 0.0, 60.0)
    assert max(sent) / min(sent) < 1.1


def test_runtime_rate_change() -> None:
    bucket = TokenBucket(400 * KiB, now=0.0)
    first = sum(simulate(bucket, 4, 0.0, 50.0, seed=1))
    bucket.set_rate(100 * KiB, 50.0)
    second = sum(simulate(bucket, 4, 50.0, 150.0, seed=2))
    assert abs(first / 50.0 - 400 * KiB) / (400 * KiB) < 0.02
    assert abs(second / 100.0 - 100 * KiB) / (100 * KiB) < 0.02
    assert bucket.rate == 100 * KiB


def test_rate_change_keeps_debt_and_grants_no_extra_burst() -> None:
    bucket = TokenBucket(100 * KiB, burst=100 * KiB, now=0.0)
    assert bucket.consume(300 * KiB, 0.0) == pytest.approx(2.0)
    bucket.set_rate(200 * KiB, 0.0)
    # 200 KiB of debt at the new rate: one more second.
    assert bucket.consume(0, 0.0) == pytest.approx(1.0)
    assert bucket.available(1.0) == pytest.approx(0.0)
    assert bucket.burst == 100 * KiB  # the explicit burst survives the change


def test_unlimited_never_waits() -> None:
    bucket = TokenBucket(None)
    assert bucket.rate is None
    assert all(bucket.consume(10**9, float(t)) == 0.0 for t in range(100))
    assert bucket.available(0.0) == float("inf")
    bucket.set_rate(10 * KiB, 100.0)
    # Limited again: starts with a full burst, then waits.
    burst = bucket.burst
    assert bucket.consume(int(burst), 100.0) == 0.0
    assert bucket.consume(10 * KiB, 100.0) == pytest.approx(1.0)
    bucket.set_rate(None, 100.0)
    assert bucket.consume(10**9, 100.0) == 0.0


def test_burst_then_steady_rate() -> None:
    bucket = TokenBucket(10 * KiB, burst=32 * KiB, now=0.0)
    assert bucket.consume(32 * KiB, 0.0) == 0.0
    assert bucket.consume(10 * KiB, 0.0) == pytest.approx(1.0)
    # Idle time refills only up to the burst.
    assert bucket.available(1000.0) == pytest.approx(32 * KiB)


def test_default_burst_follows_rate() -> None:
    assert TokenBucket(1000).burst == MIN_BURST
    big = TokenBucket(10 * 1024 * KiB)
    assert big.burst == pytest.approx(5 * 1024 * KiB)
    big.set_rate(20 * 1024 * KiB, 0.0)
    assert big.burst == pytest.approx(10 * 1024 * KiB)


def test_refund_returns_unused_tokens() -> None:
    bucket = TokenBucket(10 * KiB, burst=16 * KiB, now=0.0)
    assert bucket.consume(16 * KiB, 0.0) == 0.0
    assert bucket.consume(16 * KiB, 0.0) == pytest.approx(1.6)
    bucket.refund(12 * KiB, 0.0)  # the read returned only 4 KiB
    assert bucket.consume(0, 0.0) == pytest.approx(0.4)
    bucket.refund(10**9, 0.0)
    assert bucket.available(0.0) == 16 * KiB  # never above the burst


def test_clock_going_backwards_grants_nothing() -> None:
    bucket = TokenBucket(10 * KiB, burst=10 * KiB, now=100.0)
    bucket.consume(10 * KiB, 100.0)
    assert bucket.available(50.0) == 0.0
    assert bucket.available(101.0) == pytest.approx(10 * KiB)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_invalid_configuration(bad: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(bad)
    with pytest.raises(ValueError):
        TokenBucket(1000, burst=bad)
    bucket = TokenBucket(1000)
    with pytest.raises(ValueError):
        bucket.set_rate(bad, 0.0)
    with pytest.raises(ValueError):
        bucket.consume(-1, 0.0)
    with pytest.raises(ValueError):
        bucket.refund(-1, 0.0)
