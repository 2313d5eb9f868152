"""The uTP connection state machine (core/utp/connection.py), sans-IO on a virtual clock.

Handshake, transfers through the simulated link of tests/support/utp_link.py
(loss, delay, jitter, reordering, duplication, a bottleneck), sequence
wrap-around, SACK-driven fast retransmit, RTO back-off, LEDBAT reacting to
delay, zero-window probing, FIN/RESET in every state, keep-alive and idle
timeout, and hostile packets that must never raise.
"""

from __future__ import annotations

import itertools
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.utp.buffers import MAX_REORDER, MAX_SACK_BYTES, ReadBuffer, SendBuffer
from core.utp.connection import UtpConnection, UtpSettings
from core.utp.ledbat import DelayHistory, Ledbat, wrapping_less
from core.utp.packet import (
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    Packet,
    UtpPacketError,
    decode,
    encode,
)
from core.utp.rtt import RttEstimator
from tests.support.utp_link import LinkConfig, UtpLink

MSS = 1400


#: The slower property tests run a fraction of the examples (as in test_dht_krpc).
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def handshake(
    *,
    settings_a: UtpSettings | None = None,
    settings_b: UtpSettings | None = None,
    seq_a: int | None = 100,
    seq_b: int | None = 5000,
    now: float = 0.0,
) -> tuple[UtpConnection, UtpConnection]:
    """A connected initiator ``a`` and its responder ``b`` (still syn-recv), no link."""
    a = UtpConnection.connect(
        recv_id=1000, now=now, settings=settings_a or UtpSettings(), seq_nr=seq_a
    )
    (syn,) = a.outgoing()
    b = UtpConnection.accept(
        decode(syn), now=now, settings=settings_b or UtpSettings(), seq_nr=seq_b
    )
    (synack,) = b.outgoing()
    a.receive(decode(synack), now)
    return a, b


def exchange(a: UtpConnection, b: UtpConnection, now: float, rounds: int = 50) -> None:
    """Deliver everything both sides send, instantly and losslessly, until they are quiet."""
    for _ in range(rounds):
        out_a = a.outgoing()
        out_b = b.outgoing()
        if not out_a and not out_b:
            return
        for datagram in out_a:
            b.receive(decode(datagram), now)
        for datagram in out_b:
            a.receive(decode(datagram), now)
    raise AssertionError("the connections never went quiet")


def peer_closed(conn: UtpConnection) -> bool:
    return conn.peer_closed  # a call, so mypy does not narrow the property across receive()


def decoded(datagrams: list[bytes]) -> list[Packet]:
    return [decode(d) for d in datagrams]


def lossy(loss: float, *, bandwidth: float | None = 10e6) -> LinkConfig:
    return LinkConfig(
        delay=0.02,
        jitter=0.004,
        loss=loss,
        reorder=0.01,
        reorder_delay=0.003,
        duplicate=0.01,
        bandwidth=bandwidth,
    )


# --- handshake -----------------------------------------------------------------------


def test_handshake_ids_sequence_numbers_and_states() -> None:
    a = UtpConnection.connect(recv_id=0xFFFF, now=1.0, seq_nr=77)
    assert a.state == "syn-sent"
    assert (a.recv_id, a.send_id) == (0xFFFF, 0)  # send_id = recv_id + 1, wrapped
    assert a.stats().state == "syn-sent"
    (syn,) = decoded(a.outgoing())
    assert syn.type == ST_SYN
    assert syn.conn_id == 0xFFFF  # the SYN carries the initiator's receive id
    assert syn.seq_nr == 77
    assert syn.timestamp_us == 1_000_000
    assert syn.wnd_size == UtpSettings().recv_buffer

    b = UtpConnection.accept(syn, now=1.01, seq_nr=9)
    assert (b.recv_id, b.send_id) == (0, 0xFFFF)
    assert b.state == "syn-recv"
    (synack,) = decoded(b.outgoing())
    assert synack.type == ST_STATE
    assert synack.conn_id == 0xFFFF  # b's send_id
    assert synack.ack_nr == 77
    assert synack.seq_nr == 9  # the seq_nr b's first DATA will carry
    assert synack.timestamp_diff_us == 10_000  # b saw the SYN 10 ms after it was stamped

    a.receive(synack, 1.02)
    assert a.state == "connected" and a.connected
    assert a.stats().rtt == pytest.approx(0.02)

    a.write(b"hello", 1.02)
    (data,) = decoded(a.outgoing())
    assert (data.type, data.conn_id, data.seq_nr, data.ack_nr) == (ST_DATA, 0, 78, 8)
    b.receive(data, 1.03)
    assert b.state == "connected"  # the initiator's first packet confirms the handshake
    assert b.read() == b"hello"
    (ack,) = decoded(b.outgoing())
    assert (ack.type, ack.ack_nr, ack.seq_nr) == (ST_STATE, 78, 9)


def test_responder_writes_wait_for_the_initiators_first_packet() -> None:
    a, b = handshake()
    assert b.write(b"early", 0.0) == 5
    assert b.outgoing() == []  # nothing but the SYN-ACK until the initiator is known to have it
    a.write(b"x", 0.0)
    exchange(a, b, 0.0)
    assert a.read() == b"early"
    assert b.read() == b"x"


def test_lost_synack_is_answered_again_on_the_retransmitted_syn() -> None:
    a = UtpConnection.connect(recv_id=5, now=0.0, seq_nr=1)
    (syn,) = a.outgoing()
    b = UtpConnection.accept(decode(syn), now=0.0)
    b.outgoing()  # lost
    timeout = a.next_timeout()
    assert timeout == pytest.approx(1.0)
    a.poll(1.0)
    (again,) = decoded(a.outgoing())
    assert again.type == ST_SYN and again.seq_nr == 1
    b.receive(again, 1.0)
    (synack,) = decoded(b.outgoing())
    a.receive(synack, 1.0)
    assert a.connected


def test_connect_retries_the_syn_with_back_off_then_times_out() -> None:
    a = UtpConnection.connect(recv_id=5, now=0.0)
    a.outgoing()
    sent_at = []
    now = 0.0
    while a.state != "closed":
        when = a.next_timeout()
        assert when is not None
        now = when
        a.poll(now)
        if a.outgoing():
            sent_at.append(now)
    assert sent_at == [pytest.approx(1.0), pytest.approx(3.0)]  # 1 s, then 2 s
    assert now == pytest.approx(6.0)
    assert a.closed_reason == "utp: connect timeout"
    assert a.next_timeout() is None


def test_half_open_responder_gives_up_after_connect_timeout() -> None:
    _, b = handshake()
    b.poll(5.9)
    assert b.state == "syn-recv"
    b.poll(6.0)
    assert b.state == "closed"
    assert b.closed_reason == "utp: connect timeout"


# --- writes, acks ---------------------------------------------------------------------


def test_small_writes_coalesce_until_outgoing_is_drained() -> None:
    a, _ = handshake()
    a.write(b"ab", 0.0)
    a.write(bytearray(b"cd"), 0.0)
    a.write(memoryview(b"ef"), 0.0)
    (one,) = decoded(a.outgoing())
    assert one.payload == b"abcdef"
    a.write(b"g", 0.0)
    (two,) = decoded(a.outgoing())  # not held back for the first one's ack (no Nagle)
    assert two.payload == b"g" and two.seq_nr == one.seq_nr + 1


def test_large_write_is_cut_into_full_packets() -> None:
    a, _ = handshake()
    a.write(payload(5000), 0.0)
    sizes = [len(p.payload) for p in decoded(a.outgoing())]
    assert sizes == [MSS, MSS]  # the initial window: two packets
    assert a.stats().bytes_in_flight == 2 * MSS


def test_write_is_bounded_by_the_send_buffer() -> None:
    a, b = handshake(settings_a=UtpSettings(send_buffer=10_000))
    assert a.writable == 10_000
    assert a.write(payload(6000), 0.0) == 6000
    assert a.write(payload(6000), 0.0) == 4000
    assert a.write(b"more", 0.0) == 0
    assert a.writable == 0
    exchange(a, b, 0.0)
    assert a.writable == 10_000
    assert len(b.read()) == 10_000


def test_one_ack_per_received_batch_and_duplicates_are_acked() -> None:
    a, b = handshake()
    a.write(payload(3 * MSS), 0.0)
    first = a.outgoing()
    b_out: list[Packet] = []
    for datagram in first:
        b.receive(decode(datagram), 0.01)
    b_out = decoded(b.outgoing())
    assert [p.type for p in b_out] == [ST_STATE]  # two DATA, one STATE
    assert b_out[0].ack_nr == decode(first[-1]).seq_nr
    b.receive(decode(first[0]), 0.02)  # a duplicate
    (dup_ack,) = decoded(b.outgoing())
    assert dup_ack.ack_nr == b_out[0].ack_nr
    assert b.stats().duplicates_in == 1
    assert len(b.read()) == 2 * MSS


def test_out_of_order_packets_are_buffered_and_sacked() -> None:
    a, b = handshake(settings_a=UtpSettings(), seq_a=100)
    a._ledbat.cwnd = 100 * MSS  # room for a burst
    a.write(payload(6 * MSS), 0.0)
    data = decoded(a.outgoing())
    assert [p.seq_nr for p in data] == [101, 102, 103, 104, 105, 106]
    for packet in (data[0], data[2], data[4], data[5]):
        b.receive(packet, 0.01)
    (ack,) = decoded(b.outgoing())
    assert ack.ack_nr == 101
    # bit i = ack_nr + 2 + i: 103 -> bit 0, 105 -> bit 2, 106 -> bit 3
    assert ack.sack == bytes([0b1101, 0, 0, 0])
    assert b.readable == MSS
    b.receive(data[1], 0.02)
    b.receive(data[3], 0.02)
    (ack,) = decoded(b.outgoing())
    assert ack.ack_nr == 106 and ack.sack is None
    assert b.read() == b"".join(p.payload for p in data)


# --- transfers through the simulated link -------------------------------------------------


@pytest.mark.parametrize(
    ("size", "loss", "seed"),
    [
        (1 << 20, 0.0, 1),
        (10 << 20, 0.0, 2),
        (2 << 20, 0.01, 3),
        (1 << 20, 0.05, 4),
        (1 << 20, 0.10, 5),
    ],
)
def test_transfer_through_a_lossy_reordering_duplicating_link(
    size: int, loss: float, seed: int
) -> None:
    data = payload(size, seed)
    a = UtpConnection.connect(recv_id=seed, now=0.0)
    link = UtpLink(a, ab=lossy(loss), ba=lossy(loss, bandwidth=None), seed=seed)
    received = link.transfer(data)
    assert received == data
    # both ends close cleanly afterwards
    assert link.run(lambda lk: lk.b is not None and lk.b.state == "closed", limit=120)
    assert link.run(lambda lk: lk.a.state == "closed", limit=120)
    assert link.a.closed_reason == "utp: closed"
    assert link.b is not None and link.b.closed_reason == "utp: closed by peer"
    stats = a.stats()
    if loss:
        assert stats.retransmits > 0
    assert stats.payload_out == size


def test_transfer_from_the_responder_and_both_ways_at_once() -> None:
    data = payload(1 << 20, 7)
    a = UtpConnection.connect(recv_id=7, now=0.0)
    link = UtpLink(a, ab=lossy(0.02), ba=lossy(0.02), seed=7)
    assert link.transfer(data, sender="b", close=False) == data

    up, down = payload(300_000, 8), payload(400_000, 9)
    got_a, got_b = bytearray(), bytearray()
    sent = {"a": 0, "b": 0}

    def app(lk: UtpLink) -> None:
        assert lk.b is not None
        for side, conn, blob in (("a", lk.a, up), ("b", lk.b, down)):
            sent[side] += conn.write(blob[sent[side] :], lk.now)
        got_b.extend(lk.b.read())
        got_a.extend(lk.a.read())

    assert link.b is not None
    link.b.read()
    assert link.run(lambda lk: len(got_a) == len(down) and len(got_b) == len(up), on_step=app)
    assert bytes(got_a) == down and bytes(got_b) == up


@pytest.mark.parametrize(("seq_a", "seq_b"), [(65530, 65533), (65535, 0), (0, 65535)])
def test_sequence_numbers_wrap(seq_a: int, seq_b: int) -> None:
    data = payload(400_000, seq_a)
    a = UtpConnection.connect(recv_id=3, now=0.0, seq_nr=seq_a)
    link = UtpLink(a, ab=lossy(0.05), ba=lossy(0.05), seed=seq_a, responder_seq=seq_b)
    link.record = True
    assert link.transfer(data, close=False) == data
    # and the other way, so the responder's numbers wrap too
    back = payload(300_000, seq_b)
    assert link.transfer(back, sender="b", close=False) == back
    for side, first in (("a", seq_a), ("b", seq_b)):
        seqs = {decode(d).seq_nr for d in link.sent[side] if decode(d).type == ST_DATA}
        if first >= 65530:
            assert {65535, 0, 1} <= seqs | {first}  # numbered past 65535 back to 0


# --- loss recovery ----------------------------------------------------------------------


def test_sack_holes_are_fast_retransmitted_before_the_rto() -> None:
    a = UtpConnection.connect(recv_id=11, now=0.0)
    link = UtpLink(a, ab=LinkConfig(delay=0.02), ba=LinkConfig(delay=0.02), seed=11)
    assert link.connect()
    dropped: list[int] = []

    def drop_one(side: str, datagram: bytes) -> bytes | None:
        packet = decode(datagram)
        if (
            side == "a"
            and packet.type == ST_DATA
            and not dropped
            and a.stats().payload_out > 20 * MSS
        ):
            dropped.append(packet.seq_nr)
            return None
        return datagram

    link.tamper = drop_one
    link.record = True
    data = payload(200_000, 11)
    assert link.transfer(data, close=False) == data
    assert dropped
    resent = [
        i
        for i, d in enumerate(link.sent["a"])
        if decode(d).seq_nr == dropped[0] and decode(d).type == ST_DATA
    ]
    assert len(resent) == 2
    stats = a.stats()
    assert stats.timeouts == 0  # recovered without waiting for the RTO
    assert stats.fast_retransmits == 1
    assert link.b is not None
    assert any(decode(d).sack for d in link.sent["b"])  # the receiver told which ones it had


def test_three_duplicate_acks_resend_the_oldest_without_sack() -> None:
    a, b = handshake()
    a._ledbat.cwnd = 50 * MSS
    a.write(payload(6 * MSS), 0.0)
    data = decoded(a.outgoing())
    b.receive(data[0], 0.01)
    (ack,) = decoded(b.outgoing())
    a.receive(ack, 0.05)
    # three plain duplicate acks (a peer that does not SACK)
    for t in (0.06, 0.07, 0.08):
        a.receive(Packet(ST_STATE, a.recv_id, 1, 1, 1 << 20, ack.seq_nr, ack.ack_nr), t)
    (resent,) = decoded(a.outgoing())
    assert resent.seq_nr == data[1].seq_nr and resent.payload == data[1].payload
    assert a.stats().fast_retransmits == 1


def test_rto_backs_off_and_the_connection_times_out_when_everything_is_lost() -> None:
    settings = UtpSettings(min_rto=0.5, max_rto=8.0, max_retransmits=5, idle_timeout=1000)
    a = UtpConnection.connect(recv_id=13, now=0.0, settings=settings)
    link = UtpLink(a, ab=LinkConfig(delay=0.02), ba=LinkConfig(delay=0.02), seed=13)
    data = payload(100_000, 13)
    link.transfer(data, close=False)
    cwnd_before = a.stats().cwnd
    link.ab.blackhole = True
    link.record = True
    link.sent["a"].clear()
    a.write(payload(50_000, 14), link.now)
    start = link.now
    resend_times: list[float] = []

    def watch(side: str, datagram: bytes) -> bytes | None:
        if side == "a" and decode(datagram).type == ST_DATA:
            resend_times.append(link.now)
        return datagram

    link.tamper = watch
    assert link.run(lambda lk: lk.a.state == "closed", limit=200)
    assert a.closed_reason == "utp: timeout"
    firsts = sorted(set(resend_times))
    gaps = [round(t2 - t1, 3) for t1, t2 in itertools.pairwise(firsts[1:])]
    # after the first burst: one retransmission per RTO, each twice as far apart, up to max_rto
    assert gaps == [1.0, 2.0, 4.0, 8.0]
    assert firsts[1] - start == pytest.approx(0.5, abs=0.06)
    assert a.stats().timeouts == 5
    assert cwnd_before > MSS


def test_karn_retransmitted_packets_give_no_rtt_sample() -> None:
    a, b = handshake()
    a.write(b"x" * 10, 0.0)
    (data,) = a.outgoing()
    rtt_before = a.stats().rtt
    a.poll(a.next_timeout() or 0.0)  # RTO: resent
    (again,) = a.outgoing()
    assert decode(again).seq_nr == decode(data).seq_nr
    b.receive(decode(again), 5.0)
    (ack,) = b.outgoing()
    a.receive(decode(ack), 5.0)
    assert a.stats().rtt == rtt_before  # not 5 s


# --- LEDBAT, RTT --------------------------------------------------------------------------


def test_ledbat_grows_below_target_and_shrinks_above() -> None:
    led = Ledbat(mss=MSS, target=0.1, slow_start=False)
    led.cwnd = 100_000.0
    now = 0.0
    led.on_delay_sample(50_000, now)  # base: 50 ms one-way (clock offset included)
    for _ in range(50):
        now += 0.01
        led.note_cwnd_full(now)
        led.on_delay_sample(50_000 + 10_000, now)  # 10 ms of queue
        led.on_ack(MSS, now)
    grown = led.cwnd
    assert grown > 100_000
    for _ in range(50):
        now += 0.01
        led.note_cwnd_full(now)
        led.on_delay_sample(50_000 + 250_000, now)  # 250 ms of queue
        led.on_ack(MSS, now)
    assert led.cwnd < grown - 2000
    assert led.queuing_delay() == pytest.approx(0.25)
    # never below two packets
    for _ in range(5000):
        led.on_ack(MSS, now)
    assert led.cwnd == 2 * MSS


def test_ledbat_does_not_grow_when_not_window_limited_and_halves_on_loss() -> None:
    led = Ledbat(mss=MSS, slow_start=False)
    led.cwnd = 50_000.0
    led.on_delay_sample(1000, 0.0)
    for i in range(100):
        led.on_ack(MSS, 10.0 + i)  # the application never filled the window
    assert led.cwnd == 50_000
    led.on_loss()
    assert led.cwnd == 25_000
    led.cwnd = 3000.0
    led.on_loss()
    assert led.cwnd == 2 * MSS
    led.on_timeout()
    assert led.cwnd == MSS and led.slow_start


def test_ledbat_slow_start_doubles_until_delay_builds() -> None:
    led = Ledbat(mss=MSS)
    led.on_delay_sample(7_000, 0.0)
    led.note_cwnd_full(0.0)
    start = led.cwnd
    led.on_ack(int(start), 0.0)  # a whole window acked at no queuing
    assert led.cwnd >= 2 * start
    led.on_delay_sample(7_000 + 60_000, 0.1)
    led.on_delay_sample(7_000 + 60_000, 0.1)
    led.on_delay_sample(7_000 + 60_000, 0.1)
    led.on_ack(MSS, 0.1)
    assert not led.slow_start


def test_delay_history_wraps_and_forgets_old_minima() -> None:
    hist = DelayHistory(buckets=3, bucket_seconds=60.0)
    near_wrap = 0xFFFFFF00
    hist.add(near_wrap, 0.0)
    hist.add(near_wrap + 0x500, 1.0)  # wrapped past 2**32: 0x400
    hist.add(near_wrap + 0x500, 2.0)
    hist.add(near_wrap + 0x500, 3.0)
    assert hist.base == near_wrap
    assert hist.queuing_us() == 0x500
    assert wrapping_less(near_wrap, 0x400)
    # the low sample ages out after three buckets
    for minute in range(1, 5):
        hist.add(near_wrap + 0x500, 60.0 * minute + 5)
    assert hist.base == 0x400
    assert hist.queuing_us() == 0


def test_connection_cwnd_shrinks_when_the_path_delay_rises() -> None:
    a = UtpConnection.connect(recv_id=21, now=0.0)
    link = UtpLink(
        a,
        ab=LinkConfig(delay=0.02, bandwidth=2e6, queue_limit=4 << 20),
        ba=LinkConfig(delay=0.02),
        seed=21,
    )
    chunk = bytes(65536)
    samples: list[tuple[float, int, float]] = []

    def app(lk: UtpLink) -> None:
        lk.a.write(chunk, lk.now)  # always more to send
        if lk.b is not None:
            lk.b.read()
        stats = lk.a.stats()
        samples.append((lk.now, stats.cwnd, stats.our_delay))

    link.run(lambda lk: lk.now > 6.0, on_step=app)
    # a 2 MB/s bottleneck with a 2 s deep queue: LEDBAT keeps the queue under 100 ms
    late = [s for s in samples if s[0] > 3.0]
    assert 0.02 < min(s[2] for s in late) <= max(s[2] for s in late) < 0.1
    before = samples[-1][1]
    # the one-way delay jumps by 300 ms (a competing queue, or a new route)
    link.ab.config.delay = 0.32
    link.run(lambda lk: lk.now > 10.0, on_step=app)
    _, cwnd, delay = samples[-1]
    assert delay > 0.25
    assert cwnd < before - 50_000
    trend = [s[1] for s in samples if s[0] > 7.0]
    assert trend == sorted(trend, reverse=True)  # shrinking all along


def test_rtt_estimator_follows_rfc_6298() -> None:
    rtt = RttEstimator(min_rto=0.2, max_rto=10.0)
    assert rtt.rto == 1.0
    rtt.sample(0.1)
    assert (rtt.srtt, rtt.rttvar) == (0.1, 0.05)
    assert rtt.rto == pytest.approx(0.3)
    rtt.sample(0.3)
    assert rtt.rttvar == pytest.approx(0.0875)
    assert rtt.srtt == pytest.approx(0.125)
    rtt.back_off()
    assert rtt.backed_off
    assert rtt.rto == pytest.approx(2 * (0.125 + 4 * 0.0875))
    for _ in range(10):
        rtt.back_off()
    assert rtt.rto == 10.0
    rtt.sample(0.001)
    assert rtt.rto >= 0.2 and not rtt.backed_off


# --- flow control ---------------------------------------------------------------------------


def test_zero_window_is_probed_and_the_transfer_resumes() -> None:
    settings_b = UtpSettings(recv_buffer=20_000)
    a = UtpConnection.connect(recv_id=31, now=0.0)
    link = UtpLink(
        a, ab=LinkConfig(delay=0.02), ba=LinkConfig(delay=0.02), seed=31, settings_b=settings_b
    )
    assert link.connect()
    data = payload(100_000, 31)
    sent = 0
    reading = False
    got = bytearray()
    max_held = 0

    def app(lk: UtpLink) -> None:
        nonlocal sent, max_held
        sent += lk.a.write(data[sent:], lk.now)
        assert lk.b is not None
        max_held = max(max_held, lk.b.readable)
        if reading:
            got.extend(lk.b.read())

    link.run(lambda lk: lk.now > 1.0, on_step=app)
    assert link.b is not None
    assert link.b.readable <= 20_000
    before = a.stats().packets_out
    link.run(lambda lk: lk.now > 120.0, on_step=app)  # the reader sleeps for two minutes
    probes = a.stats().packets_out - before
    assert 3 <= probes <= 40  # probed, with back-off, and not flooded
    assert a.state == "connected" and link.b.state == "connected"  # no timeout meanwhile
    assert a.stats().peer_window < MSS
    reading = True
    got.extend(link.b.read())
    assert link.run(lambda lk: len(got) == len(data), on_step=app, limit=60)
    assert bytes(got) == data
    assert max_held <= 20_000


def test_bytes_in_flight_never_exceed_the_peers_window() -> None:
    settings_b = UtpSettings(recv_buffer=30_000)
    a = UtpConnection.connect(recv_id=32, now=0.0)
    link = UtpLink(a, ab=lossy(0.02), ba=lossy(0.0), seed=32, settings_b=settings_b)
    data = payload(500_000, 32)
    worst = 0

    def check(lk: UtpLink) -> None:
        nonlocal worst
        worst = max(worst, lk.a.stats().bytes_in_flight)

    original = link.step

    def step(on_step=None):  # type: ignore[no-untyped-def]
        def both(lk: UtpLink) -> None:
            if on_step is not None:
                on_step(lk)
            check(lk)

        return original(both)

    link.step = step  # type: ignore[method-assign]
    assert link.transfer(data) == data
    assert 0 < worst <= 30_000


# --- FIN and RESET in every state ------------------------------------------------------------


def reset_for(conn: UtpConnection) -> Packet:
    return Packet(ST_RESET, conn.recv_id, 1, 0, 0, 0, 0)


@pytest.mark.parametrize("state", ["syn-sent", "syn-recv", "connected", "fin-sent"])
def test_reset_from_the_peer_closes_in_every_state(state: str) -> None:
    if state == "syn-sent":
        conn = UtpConnection.connect(recv_id=40, now=0.0)
        conn.outgoing()
    else:
        a, b = handshake()
        conn = b if state == "syn-recv" else a
        if state == "fin-sent":
            a.write(b"pending", 0.0)
            a.close(0.0)
        assert conn.state == state
    conn.receive(reset_for(conn), 0.5)
    assert conn.state == "closed"
    assert conn.closed_reason == "utp: reset by peer"
    assert conn.outgoing() == []
    assert conn.next_timeout() is None
    conn.receive(reset_for(conn), 0.6)  # closed: ignored
    assert conn.closed_reason == "utp: reset by peer"


def test_fin_in_syn_sent_is_ignored() -> None:
    conn = UtpConnection.connect(recv_id=41, now=0.0, seq_nr=10)
    conn.outgoing()
    conn.receive(Packet(ST_FIN, 41, 1, 0, 1000, 500, 10), 0.1)
    assert conn.state == "syn-sent"
    assert conn.stats().invalid_packets == 1


def test_fin_as_the_initiators_first_packet() -> None:
    a, b = handshake()
    a.close(0.0)
    assert a.state == "fin-sent"
    exchange(a, b, 0.1)
    assert a.state == "closed" and a.closed_reason == "utp: closed"
    assert b.state == "closed" and b.closed_reason == "utp: closed by peer"


def test_fin_received_before_the_last_data_still_delivers_everything() -> None:
    a, b = handshake()
    a.write(b"x" * 10, 0.0)
    exchange(a, b, 0.0)
    b.read()
    a._ledbat.cwnd = 10 * MSS
    a.write(payload(3 * MSS), 0.0)
    a.close(0.0)
    packets = decoded(a.outgoing())
    assert [p.type for p in packets] == [ST_DATA, ST_DATA, ST_DATA, ST_FIN]
    b.receive(packets[3], 0.01)  # the FIN first
    assert b.stats().state == "connected"
    assert not peer_closed(b)  # seen, not reached: data before it is missing
    b.receive(packets[1], 0.01)
    b.receive(packets[2], 0.01)
    assert b.readable == 0
    b.receive(packets[0], 0.02)
    assert b.peer_closed
    assert b.read() == b"".join(p.payload for p in packets[:3])
    # data claimed past the peer's FIN is refused
    b.receive(Packet(ST_DATA, b.recv_id, 1, 0, 1 << 20, packets[3].seq_nr + 1, 0, None, b"z"), 0.03)
    assert b.readable == 0
    exchange(a, b, 0.05)
    assert a.state == "closed" and b.state == "closed"
    assert b.closed_reason == "utp: closed by peer"


def test_simultaneous_close_in_fin_sent() -> None:
    a, b = handshake()
    a.write(b"hi", 0.0)
    exchange(a, b, 0.0)
    a.write(b"from a", 0.1)
    b.write(b"from b", 0.1)
    a.close(0.1)
    b.close(0.1)
    assert a.state == b.state == "fin-sent"
    assert a.write(b"late", 0.1) == 0  # nothing more after close()
    exchange(a, b, 0.2)
    assert a.state == b.state == "closed"
    assert a.closed_reason == b.closed_reason == "utp: closed"
    assert b.read() == b"hifrom a"
    assert a.read() == b"from b"


def test_close_and_abort_in_every_state() -> None:
    syn_sent = UtpConnection.connect(recv_id=42, now=0.0)
    syn_sent.outgoing()
    syn_sent.close(0.1)
    assert syn_sent.state == "closed" and syn_sent.outgoing() == []

    _, b = handshake()
    b.close(0.1)
    assert b.state == "closed"
    assert [p.type for p in decoded(b.outgoing())] == [ST_RESET]

    a, b = handshake()
    a.write(b"bye", 0.0)
    a.abort(0.1)
    (reset,) = decoded(a.outgoing())
    assert reset.type == ST_RESET and reset.conn_id == a.send_id
    assert a.closed_reason == "utp: aborted"
    b.receive(reset, 0.1)
    assert b.closed_reason == "utp: reset by peer"
    a.close(0.2)
    a.abort(0.2)
    assert a.outgoing() == []


def test_closing_side_gives_up_on_a_peer_that_vanished() -> None:
    a, b = handshake(settings_a=UtpSettings(max_retransmits=3))
    a.write(b"hi", 0.0)
    exchange(a, b, 0.0)
    a.close(0.0)
    a.outgoing()  # the FIN, never answered
    now = 0.0
    while a.state != "closed":
        now = a.next_timeout() or now + 1
        a.poll(now)
        a.outgoing()
    assert a.closed_reason == "utp: timeout"


# --- keep-alive and idle timeout ------------------------------------------------------------


def test_keepalives_keep_an_idle_connection_open() -> None:
    a = UtpConnection.connect(recv_id=51, now=0.0)
    link = UtpLink(a, ab=LinkConfig(delay=0.02), ba=LinkConfig(delay=0.02), seed=51)
    link.transfer(b"hello", close=False)
    link.record = True
    link.advance(200.0)
    assert a.state == "connected"
    assert link.b is not None and link.b.state == "connected"
    keepalives = [decode(d) for d in link.sent["a"]]
    assert 5 <= len(keepalives) <= 8  # one per 29 s
    assert all(p.type == ST_STATE for p in keepalives)


def test_idle_timeout_when_the_peer_goes_silent() -> None:
    a = UtpConnection.connect(recv_id=52, now=0.0)
    link = UtpLink(a, ab=LinkConfig(delay=0.02), ba=LinkConfig(delay=0.02), seed=52)
    link.transfer(b"hello", close=False)
    last = link.now
    link.ab.blackhole = link.ba.blackhole = True
    assert link.run(lambda lk: lk.a.state == "closed", limit=100)
    assert a.closed_reason == "utp: timeout"
    assert link.now - last == pytest.approx(60.0, abs=0.1)


# --- hostile packets -------------------------------------------------------------------------


def test_ack_of_unsent_data_is_ignored() -> None:
    a, _ = handshake()
    a.write(b"x" * 100, 0.0)
    (data,) = decoded(a.outgoing())
    forged = Packet(ST_STATE, a.recv_id, 1, 1, 1 << 20, 5000, (data.seq_nr + 10) & 0xFFFF)
    a.receive(forged, 0.01)
    assert a.stats().invalid_packets == 1
    assert a.stats().bytes_in_flight == 100  # still waiting for the real ack


def test_huge_sack_and_far_away_sequence_numbers_are_harmless() -> None:
    a, b = handshake()
    a.write(b"x" * 100, 0.0)
    exchange(a, b, 0.0)
    assert b.read() == b"x" * 100
    a.write(payload(2 * MSS), 0.0)
    data = decoded(a.outgoing())
    assert len(data) == 2
    acked = data[0].seq_nr - 1
    huge = Packet(ST_STATE, a.recv_id, 1, 1, 1 << 20, 5001, acked, sack=b"\xff" * 252)
    a.receive(huge, 0.01)
    # the SACK can only cover what was sent past the ack point: the second packet
    assert a.stats().bytes_in_flight == MSS
    assert a.stats().invalid_packets == 0
    for offset in (30000, 5000, MAX_REORDER + 1):
        seq = (data[0].seq_nr + offset) & 0xFFFF
        b.receive(Packet(ST_DATA, b.recv_id, 1, 1, 1 << 20, seq, acked, None, b"evil"), 0.01)
    assert b.readable == 0
    assert b.stats().invalid_packets == 3
    b.receive(data[1], 0.02)
    b.receive(data[0], 0.02)
    assert b.read() == bytes(data[0].payload) + bytes(data[1].payload)


def test_max_sack_is_bounded() -> None:
    a, b = handshake()
    a.write(b"x", 0.0)
    exchange(a, b, 0.0)
    a._ledbat.cwnd = 1000 * MSS
    a.write(payload(600 * 100), 0.0)
    a._mss = 100  # small packets: many of them
    data = decoded(a.outgoing())
    assert len(data) > 300
    for packet in data[1:]:
        b.receive(packet, 0.01)
    (ack,) = decoded(b.outgoing())
    assert ack.sack is not None and len(ack.sack) == MAX_SACK_BYTES


def test_reorder_buffer_is_bounded_by_the_receive_window() -> None:
    a, b = handshake(settings_b=UtpSettings(recv_buffer=10 * MSS))
    a.write(b"x", 0.0)
    exchange(a, b, 0.0)
    assert b.read() == b"x"
    first = a.stats().packets_out  # a's next seq_nr is its SYN seq + packets sent
    next_seq = (100 + first) & 0xFFFF
    # 40 packets past a one-packet gap: far more than the 10-packet window
    for i in range(1, 41):
        seq = (next_seq + i) & 0xFFFF
        b.receive(Packet(ST_DATA, b.recv_id, 1, 1, 1 << 20, seq, 100, None, bytes(MSS)), 0.1)
    (ack,) = decoded(b.outgoing())
    assert ack.wnd_size == 0
    assert ack.sack is not None
    held = int.from_bytes(ack.sack, "little")
    assert held == (1 << 10) - 1  # the first ten past the gap, nothing more
    # the gap fills: everything held becomes readable, within the window
    b.receive(Packet(ST_DATA, b.recv_id, 1, 1, 1 << 20, next_seq, 100, None, bytes(MSS)), 0.2)
    assert b.readable == 11 * MSS  # at most one packet over: the one that filled the gap


hostile_packets = st.builds(
    Packet,
    type=st.integers(0, 4),
    conn_id=st.integers(0, 0xFFFF),
    timestamp_us=st.integers(0, 0xFFFFFFFF),
    timestamp_diff_us=st.integers(0, 0xFFFFFFFF),
    wnd_size=st.integers(0, 0xFFFFFFFF),
    seq_nr=st.integers(0, 0xFFFF),
    ack_nr=st.integers(0, 0xFFFF),
    sack=st.none() | st.integers(1, 8).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    payload=st.binary(max_size=32),
)


@given(
    st.lists(hostile_packets, max_size=6),
    st.lists(st.sampled_from(["a", "b"]), min_size=6, max_size=6),
    st.floats(0.0, 100.0),
)
def test_hostile_packets_never_raise(packets: list[Packet], sides: list[str], dt: float) -> None:
    a, b = handshake()
    a.write(b"hello" * 400, 0.0)
    for datagram in a.outgoing():
        b.receive(decode(datagram), 0.01)
    now = 0.02
    for packet, side in zip(packets, sides, strict=False):
        conn = a if side == "a" else b
        near = packet.seq_nr % 8
        # half the time aim close to the real numbers, where the interesting cases are
        if near < 4:
            packet = Packet(
                packet.type,
                conn.recv_id,
                packet.timestamp_us,
                packet.timestamp_diff_us,
                packet.wnd_size,
                (conn._ack_nr + near) & 0xFFFF,
                (conn._sbuf.seq_nr - near) & 0xFFFF,
                packet.sack,
                packet.payload,
            )
        conn.receive(packet, now)
        now += dt / 6
        for c in (a, b):
            c.poll(now)
            for datagram in c.outgoing():
                decode(datagram)  # whatever we send is well-formed
            c.read()
            c.stats()
            c.next_timeout()
    encode(Packet(ST_STATE, 0, 0, 0, 0, 0, 0))


# --- the bulk paths: outgoing(now, limit), read_into, receive_datagram ------------------


def test_outgoing_in_limited_lists_is_the_same_as_all_at_once() -> None:
    """``limit`` only cuts the list: the same datagrams, in the same order, ack last."""
    results = []
    for limit in (0, 64, 7, 1):
        a, b = handshake()
        a.write(payload(3000), 0.0)
        exchange(a, b, 0.0)  # b confirmed
        b._ledbat.cwnd = float(1 << 20)  # room for many packets at once
        a.write(payload(5), 0.1)
        b.receive(decode(a.outgoing()[0]), 0.1)  # an ack is owed too
        b.write(payload(30 * MSS, seed=1), 0.1)
        out: list[bytes] = []
        while True:
            chunk = b.outgoing(now=0.2, limit=limit)
            assert not limit or len(chunk) <= limit
            out += chunk
            if not limit or len(chunk) < limit:
                break
        results.append(out)
    assert all(r == results[0] for r in results)
    assert len(results[0]) == 30  # the ack rode on the data


def test_outgoing_stamps_the_send_time() -> None:
    a, b = handshake()
    a.write(b"x" * 10, 0.0)
    (data,) = decoded(a.outgoing(now=2.5))
    assert data.timestamp_us == 2_500_000
    b.receive(data, 2.6)
    (ack,) = decoded(b.outgoing(now=2.75))
    assert ack.timestamp_us == 2_750_000
    assert ack.timestamp_diff_us == 100_000  # received at 2.6, sent at 2.5


def test_read_into_takes_what_fits_and_keeps_the_rest() -> None:
    a, b = handshake()
    data = payload(10 * MSS + 123, seed=3)
    a.write(data, 0.0)
    exchange(a, b, 0.0)
    assert b.readable == len(data)
    small = memoryview(bytearray(1000))
    assert b.read_into(small) == 1000
    assert bytes(small) == data[:1000]
    assert b.readable == len(data) - 1000
    big = memoryview(bytearray(len(data)))
    assert b.read_into(big) == len(data) - 1000
    assert bytes(big[: len(data) - 1000]) == data[1000:]
    assert b.read_into(big) == 0 and b.readable == 0 and b.read() == b""


def test_a_full_receive_window_reopens_through_read_into() -> None:
    settings = UtpSettings(recv_buffer=4 * MSS)
    a, b = handshake(settings_b=settings)
    a.write(payload(20 * MSS, seed=4), 0.0)
    exchange(a, b, 0.0)
    assert b.readable == 4 * MSS  # the rest waits for the window
    sink = memoryview(bytearray(MSS))
    assert b.read_into(sink) == MSS
    (update,) = decoded(b.outgoing())  # a window update goes out at once
    assert update.type == ST_STATE and update.wnd_size >= MSS


PAYLOAD_20 = payload(20 * MSS - 17, seed=5)


def _copies(syn: bytes) -> tuple[UtpConnection, UtpConnection]:
    settings = UtpSettings(recv_buffer=64 * MSS)
    one = UtpConnection.accept(decode(syn), now=0.0, settings=settings, seq_nr=9000)
    two = UtpConnection.accept(decode(syn), now=0.0, settings=settings, seq_nr=9000)
    return one, two


@settings(max_examples=max(100, EXAMPLES // 5))  # two connections an example
@given(
    order=st.permutations(range(20)),
    drop=st.sets(st.integers(0, 19), max_size=4),
    dup=st.sets(st.integers(0, 19), max_size=4),
    window=st.integers(6, 20),
)
def test_receive_datagram_does_exactly_what_receive_does(
    order: list[int], drop: set[int], dup: set[int], window: int
) -> None:
    """Raw datagrams through the fast path and decoded packets through receive(): same state.

    Same bytes delivered, same acks (SACKs included) byte for byte, same
    statistics, whatever the order, losses and duplicates.
    """
    a = UtpConnection.connect(recv_id=77, now=0.0, seq_nr=65530)  # wraps on the way
    (syn,) = a.outgoing()
    one, two = _copies(syn)
    (synack,) = one.outgoing()
    assert two.outgoing() == [synack]
    a.receive(decode(synack), 0.0)
    a._ledbat.cwnd = float(1 << 20)  # all 20 packets at once
    a.write(PAYLOAD_20, 0.0)
    datagrams = a.outgoing(now=0.0)
    assert len(datagrams) == 20
    # Each its own timestamp and window, so forgetting either shows.
    for i, datagram in enumerate(datagrams):
        fields = bytearray(datagram)
        struct.pack_into(">I", fields, 4, 10_000 + 37 * i)  # timestamp_us
        struct.pack_into(">I", fields, 12, (1 << 20) - 100 * i)  # wnd_size
        datagrams[i] = bytes(fields)
    now = 0.01
    sequence = [i for i in order[:window] if i not in drop] + sorted(dup)
    for i in sequence:
        now += 0.001
        one.receive(decode(datagrams[i]), now)
        two.receive_datagram(memoryview(datagrams[i]), now)
        if i % 5 == 0:  # acks now and then, as batches end
            assert one.outgoing(now=now) == two.outgoing(now=now)
            assert one.read() == two.read()
    assert one.outgoing(now=now) == two.outgoing(now=now)
    assert one.read() == two.read()
    assert one.stats() == two.stats()


def test_receive_datagram_refuses_what_decode_refuses() -> None:
    _, b = handshake()
    for bad in (b"\x01" + bytes(5), b"\x05" + bytes(30), b"\x51" + bytes(30)):
        with pytest.raises(UtpPacketError):
            b.receive_datagram(bad, 0.0)


@settings(max_examples=max(100, EXAMPLES // 10))  # a millisecond an example
@given(st.lists(st.one_of(st.integers(0, 3000), st.just(-1), st.just(-2)), max_size=25))
def test_read_buffer_is_a_byte_queue(ops: list[int]) -> None:
    """Appends (n >= 0 bytes), partial reads (-1) and full reads (-2) against a bytearray model."""
    buf = ReadBuffer()
    model = bytearray()
    source = payload(4000, seed=6)
    for k, op in enumerate(ops):
        if op >= 0:
            data = source[k % 997 : k % 997 + op]
            buf.append(memoryview(data) if op % 2 else data)
            model += data
        elif op == -1:
            view = memoryview(bytearray(700))
            n = buf.read_into(view)
            assert bytes(view[:n]) == model[:n] and n == min(700, len(model))
            del model[:n]
        else:
            assert buf.read() == model
            model.clear()
        assert len(buf) == buf.size == len(model)
    assert buf.read() == model


def test_send_many_is_new_packet_then_sent() -> None:
    one, two = SendBuffer(65534), SendBuffer(65534)
    payloads = [bytes([i]) * (100 + i) for i in range(5)]
    two.send_many(ST_DATA, payloads, 1.5, 10)
    for i, data in enumerate(payloads):
        one.sent(one.new_packet(ST_DATA, data), 1.5, 10 + i)
    for buf in (one, two):
        assert buf.seq_nr == 3 and buf.in_flight == buf.payload_bytes == sum(map(len, payloads))
        assert list(buf.flight) == list(buf.packets) == [65534, 65535, 0, 1, 2]
    for seq in one.packets:
        p, q = one.packets[seq], two.packets[seq]
        assert (p.payload, p.sent_at, p.tx, p.transmissions) == (
            q.payload,
            q.sent_at,
            q.tx,
            q.transmissions,
        )
    acked = two.ack_through(0)
    assert acked is not None and [p.seq for p in acked] == [65534, 65535, 0]
    assert two.in_flight == two.payload_bytes == len(payloads[3]) + len(payloads[4])
