"""BEP 15 / BEP 41 packets and the sans-IO UDP tracker session.

Golden packets are written out from the BEP 15 tables (offsets and sizes) by
hand, as hex or field-by-field concatenation, never with the codec's own
structs.  The session runs on a scripted clock: no sockets, no sleeps.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import TrackerError
from core.tracker.types import AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeResult
from core.tracker.udp_codec import (
    MAX_SCRAPE_HASHES,
    UdpAnnounced,
    UdpFailed,
    UdpScraped,
    UdpTrackerSession,
    encode_announce,
    encode_connect,
    encode_scrape,
    encode_url_data,
    parse_announce_response,
    parse_connect_response,
    parse_error_response,
    parse_options,
    parse_scrape_response,
)

INFO_HASH = bytes(range(20))
PEER_ID = b"-PY0001-" + b"abcdefghijkl"


def be(value: int, size: int, *, signed: bool = False) -> bytes:
    return value.to_bytes(size, "big", signed=signed)


def request(**kw: object) -> AnnounceRequest:
    base: dict[str, object] = {"info_hash": INFO_HASH, "peer_id": PEER_ID, "port": 6881}
    base.update(kw)
    return AnnounceRequest(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- packets


def test_connect_request_is_the_bep15_layout() -> None:
    # offset 0: protocol_id 0x41727101980, 8: action 0, 12: transaction_id
    assert encode_connect(0xDEADBEEF) == bytes.fromhex("000004172710198000000000deadbeef")


def test_connect_response() -> None:
    packet = bytes.fromhex("00000000deadbeef0102030405060708")
    assert parse_connect_response(packet) == 0x0102030405060708
    # BEP 15: "check whether the packet is at least 16 bytes"
    with pytest.raises(TrackerError, match="truncated connect response: 15 bytes"):
        parse_connect_response(packet[:15])


def test_announce_request_is_the_bep15_layout() -> None:
    req = request(
        downloaded=1000,
        left=2**40,
        uploaded=5,
        event=AnnounceEvent.STARTED,
        key=0xCAFEBABE,
        numwant=50,
        port=51413,
    )
    packet = encode_announce(0x1122334455667788, 0x01020304, req)
    expected = (
        be(0x1122334455667788, 8)  # 0  connection_id
        + be(1, 4)  # 8  action: announce
        + be(0x01020304, 4)  # 12 transaction_id
        + INFO_HASH  # 16 info_hash
        + PEER_ID  # 36 peer_id
        + be(1000, 8)  # 56 downloaded
        + be(2**40, 8)  # 64 left
        + be(5, 8)  # 72 uploaded
        + be(2, 4)  # 80 event: 2 = started
        + be(0, 4)  # 84 IP address: default
        + be(0xCAFEBABE, 4)  # 88 key
        + be(50, 4)  # 92 num_want
        + be(51413, 2)  # 96 port
    )
    assert len(expected) == 98
    assert packet == expected


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (AnnounceEvent.NONE, 0),
        (AnnounceEvent.COMPLETED, 1),
        (AnnounceEvent.STARTED, 2),
        (AnnounceEvent.STOPPED, 3),
    ],
)
def test_announce_event_codes(event: AnnounceEvent, code: int) -> None:
    assert encode_announce(1, 2, request(event=event))[80:84] == be(code, 4)


def test_announce_defaults_and_clamping() -> None:
    packet = encode_announce(1, 2, request(numwant=-5, downloaded=-1, left=2**70, key=-1))
    assert packet[92:96] == be(-1, 4, signed=True)  # num_want default -1
    assert packet[56:64] == be(0, 8)  # negative counter clamped to 0
    assert packet[64:72] == be(2**63 - 1, 8)  # int64 maximum
    assert packet[88:92] == b"\xff\xff\xff\xff"  # key is 32 bits on the wire


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"info_hash": b"x" * 19}, "info_hash must be 20 bytes"),
        ({"peer_id": b"x" * 21}, "peer_id must be 20 bytes"),
        ({"port": 70000}, "port out of range"),
    ],
)
def test_impossible_announce_is_a_tracker_error(kw: dict[str, object], message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        encode_announce(1, 2, request(**kw))


def test_bep41_url_data_option_bytes() -> None:
    # BEP 41: type 0x2, one length byte, then the path and query of the URL.
    path = b"/announce?passkey=abc"
    packet = encode_announce(1, 2, request(), url_data=path)
    assert packet[98:] == b"\x02" + bytes([len(path)]) + path
    assert parse_options(packet[98:]) == [(2, path)]
    # no options at all when the URL has no path
    assert len(encode_announce(1, 2, request())) == 98


def test_bep41_long_url_data_is_split_in_255_byte_options() -> None:
    path = b"/" + b"a" * 299 + b"?x=1"  # 304 bytes
    options = encode_url_data(path)
    assert options == b"\x02\xff" + path[:255] + b"\x02" + bytes([49]) + path[255:]
    assert b"".join(data for kind, data in parse_options(options) if kind == 2) == path
    exactly = b"/" * 255
    assert encode_url_data(exactly) == b"\x02\xff" + exactly  # no empty trailing option


def test_bep41_nop_and_end_of_options() -> None:
    # NOP (0x1) and EndOfOptions (0x0) have no length byte; nothing after End is read.
    data = b"\x01\x01\x02\x03abc\x01\x02\x01d\x00\x02\x05junk!"
    assert parse_options(data) == [(2, b"abc"), (2, b"d")]
    with pytest.raises(TrackerError, match="truncated"):
        parse_options(b"\x02\x09abc")
    with pytest.raises(TrackerError, match="without a length"):
        parse_options(b"\x02")


def test_announce_response_ipv4_peers() -> None:
    packet = (
        be(1, 4)  # action: announce
        + be(77, 4)  # transaction_id
        + be(1800, 4)  # interval
        + be(4, 4)  # leechers
        + be(9, 4)  # seeders
        + bytes([10, 0, 0, 1]) + be(6881, 2)
        + bytes([192, 168, 1, 200]) + be(51413, 2)
    )  # fmt: skip
    response = parse_announce_response(packet)
    assert response == AnnounceResponse(
        interval=1800.0,
        peers=(("10.0.0.1", 6881), ("192.168.1.200", 51413)),
        seeders=9,
        leechers=4,
    )
    # a torn trailing entry is ignored; a header under 20 bytes is an error
    assert parse_announce_response(packet + b"\x01\x02\x03").peers == response.peers
    with pytest.raises(TrackerError, match="truncated announce response: 19 bytes"):
        parse_announce_response(packet[:19])
    # opentracker refuses an info-hash off its whitelist with a bare header
    with pytest.raises(TrackerError, match="tracker refused the announce"):
        parse_announce_response(packet[:8])


def test_announce_response_ipv6_peers_are_18_bytes() -> None:
    header = be(1, 4) + be(5, 4) + be(900, 4) + be(0, 4) + be(1, 4)
    peer1 = bytes.fromhex("20010db8000000000000000000000001") + be(6881, 2)
    peer2 = bytes.fromhex("fe800000000000000000000000000abc") + be(443, 2)
    response = parse_announce_response(header + peer1 + peer2, ipv6=True)
    assert response.peers == (("2001:db8::1", 6881), ("fe80::abc", 443))
    # the same 36 bytes read as IPv4 are bogus 6-byte peers: the socket's family decides
    assert parse_announce_response(header + peer1 + peer2).peers == (
        ("0.0.0.1", 6881),
        ("0.0.10.188", 443),
    )


def test_scrape_request_and_response() -> None:
    hashes = [bytes([i]) * 20 for i in (1, 2, 3)]
    packet = encode_scrape(0xABCDEF, 9, hashes)
    assert packet == be(0xABCDEF, 8) + be(2, 4) + be(9, 4) + b"".join(hashes)
    answer = be(2, 4) + be(9, 4)
    answer += be(5, 4) + be(50, 4) + be(1, 4)  # seeders, completed, leechers
    answer += be(0, 4) + be(2, 4) + be(7, 4)
    results = parse_scrape_response(answer, hashes)
    assert results == {
        hashes[0]: ScrapeResult(seeders=5, completed=50, leechers=1),
        hashes[1]: ScrapeResult(seeders=0, completed=2, leechers=7),
    }  # the third hash got no figures: missing, not zero
    with pytest.raises(TrackerError, match="truncated scrape"):
        parse_scrape_response(answer[:7], hashes)


def test_scrape_size_limits() -> None:
    assert len(encode_scrape(1, 1, [b"h" * 20] * MAX_SCRAPE_HASHES)) == 16 + 20 * 74
    with pytest.raises(TrackerError, match="1 to 74"):
        encode_scrape(1, 1, [b"h" * 20] * 75)
    with pytest.raises(TrackerError, match="1 to 74"):
        encode_scrape(1, 1, [])
    with pytest.raises(TrackerError, match="20 bytes"):
        encode_scrape(1, 1, [b"short"])


def test_error_message_is_sanitised() -> None:
    assert parse_error_response(be(3, 4) + be(1, 4) + b"unregistered torrent\x00") == (
        "unregistered torrent"
    )
    assert parse_error_response(be(3, 4) + be(1, 4)) == "(no message)"
    nasty = parse_error_response(be(3, 4) + be(1, 4) + b"a\x1b[31mb\xffc" + b"z" * 5000)
    assert "\x1b" not in nasty and "\ufffd" in nasty and len(nasty) == 256


# --------------------------------------------------------------------------- session


def header_of(packet: bytes) -> tuple[int, int, int]:
    """(connection_id or protocol_id, action, transaction_id) of a request."""
    cid, action, tid = struct.unpack_from(">QII", packet)
    return int(cid), int(action), int(tid)


def connect_reply(tid: int, cid: int) -> bytes:
    return be(0, 4) + be(tid, 4) + be(cid, 8)


def announce_reply(tid: int, *, interval: int = 600, peers: bytes = b"") -> bytes:
    return be(1, 4) + be(tid, 4) + be(interval, 4) + be(2, 4) + be(3, 4) + peers


def session(**kw: object) -> UdpTrackerSession:
    kw.setdefault("rng", random.Random(7))
    return UdpTrackerSession(**kw)  # type: ignore[arg-type]


def one(s: UdpTrackerSession) -> bytes:
    out = s.datagrams_to_send()
    assert len(out) == 1, out
    return out[0]


def test_connect_then_announce() -> None:
    s = session()
    op = s.start_announce(request(), 0.0, url_data=b"/announce")
    connect = one(s)
    magic, action, ctid = header_of(connect)
    assert (magic, action, len(connect)) == (0x41727101980, 0, 16)
    assert s.next_timer() == 15.0
    s.receive_datagram(connect_reply(ctid, 0x55), 1.0)
    announce = one(s)
    cid, action, atid = header_of(announce)
    assert (cid, action) == (0x55, 1)
    assert announce[98:] == b"\x02\x09/announce"
    assert s.next_timer() == 16.0
    s.receive_datagram(announce_reply(atid, peers=bytes([1, 2, 3, 4, 0, 80])), 2.0)
    assert s.events() == [
        UdpAnnounced(op, AnnounceResponse(600.0, peers=(("1.2.3.4", 80),), seeders=3, leechers=2))
    ]
    assert not s.busy and s.next_timer() is None


def test_connection_id_reused_for_a_minute_then_renewed() -> None:
    s = session()
    s.start_announce(request(), 0.0)
    ctid = header_of(one(s))[2]
    s.receive_datagram(connect_reply(ctid, 0x77), 1.0)
    s.receive_datagram(announce_reply(header_of(one(s))[2]), 1.5)
    # 59 s after the connect answer: the id is still good, no connect
    s.start_announce(request(event=AnnounceEvent.COMPLETED), 60.9)
    packet = one(s)
    assert header_of(packet)[:2] == (0x77, 1)
    s.receive_datagram(announce_reply(header_of(packet)[2]), 61.0)
    s.start_scrape([INFO_HASH], 60.95)
    assert header_of(one(s))[:2] == (0x77, 2)
    # 60 s after it: expired, reconnect first
    s.start_announce(request(), 61.0)
    magic, action, ctid2 = header_of(one(s))
    assert (magic, action) == (0x41727101980, 0) and ctid2 != ctid
    s.receive_datagram(connect_reply(ctid2, 0x88), 61.5)
    assert header_of(one(s))[:2] == (0x88, 1)
    assert s.connects == 2


def test_concurrent_requests_share_one_connect() -> None:
    s = session()
    ops = [s.start_announce(request(info_hash=bytes([i]) * 20), 0.0) for i in range(5)]
    ops.append(s.start_scrape([INFO_HASH], 0.1))
    connects = s.datagrams_to_send()
    assert len(connects) == 1
    s.receive_datagram(connect_reply(header_of(connects[0])[2], 9), 0.5)
    requests = s.datagrams_to_send()
    assert [header_of(p)[1] for p in requests] == [1, 1, 1, 1, 1, 2]
    assert len({header_of(p)[2] for p in requests}) == 6  # distinct transaction ids
    for p in reversed(requests):  # answers in any order find their request
        _, action, tid = header_of(p)
        if action == 1:
            s.receive_datagram(announce_reply(tid), 0.6)
        else:
            s.receive_datagram(be(2, 4) + be(tid, 4) + be(1, 4) + be(2, 4) + be(3, 4), 0.6)
    events = s.events()
    assert sorted(e.op for e in events) == sorted(ops)
    assert sum(isinstance(e, UdpScraped) for e in events) == 1


def run_clock(s: UdpTrackerSession, until: float) -> list[tuple[float, int]]:
    """Fire timers up to ``until``; return (time, action) of every packet sent."""
    sent: list[tuple[float, int]] = []
    while (t := s.next_timer()) is not None and t <= until:
        s.handle_timer(t)
        sent += [(t, header_of(p)[1]) for p in s.datagrams_to_send()]
    return sent


def test_bep15_example_connect_times_out() -> None:
    # BEP 15: connect at t = 0, 15, 45, 105, ... (15 * 2^n)
    s = session(max_attempts=9)
    s.start_announce(request(), 0.0)
    assert header_of(one(s))[1] == 0
    assert run_clock(s, 1000) == [
        (15.0, 0),
        (45.0, 0),
        (105.0, 0),
        (225.0, 0),
        (465.0, 0),
        (945.0, 0),
    ]


def test_bep15_example_announce_times_out() -> None:
    # BEP 15: connect, answer, announce at 2, 17, 47, connect at 107 (id expired), 227
    s = session(max_attempts=9)
    s.start_announce(request(), 0.0)
    s.receive_datagram(connect_reply(header_of(one(s))[2], 0x99), 2.0)
    assert header_of(one(s))[:2] == (0x99, 1)  # announce at t = 2
    assert run_clock(s, 300) == [(17.0, 1), (47.0, 1), (107.0, 0), (227.0, 0)]


def test_retransmission_keeps_the_transaction_id_and_late_answers_count() -> None:
    s = session(base_timeout=0.05, max_attempts=5)
    op = s.start_announce(request(), 0.0)
    first = one(s)
    s.handle_timer(0.05)
    again = one(s)
    assert again == first
    assert s.next_timer() == pytest.approx(0.15)  # 0.05 + 0.05 * 2
    s.receive_datagram(connect_reply(header_of(first)[2], 1), 0.1)
    announce = one(s)
    s.handle_timer(0.1 + 0.2)  # n stays at 1 after the connect: next wait is 0.1
    assert one(s) == announce
    s.receive_datagram(announce_reply(header_of(announce)[2]), 0.35)
    assert isinstance(s.events()[0], UdpAnnounced) and s.events() == []
    assert op == 1


def test_gives_up_after_max_attempts() -> None:
    s = session(base_timeout=0.05, max_attempts=3)
    op = s.start_announce(request(), 0.0)
    assert header_of(one(s))[1] == 0
    assert run_clock(s, 10.0) == [(0.05, 0), (pytest.approx(0.15), 0)]
    (event,) = s.events()
    assert isinstance(event, UdpFailed) and event.op == op
    assert str(event.error) == "no answer to connect after 3 attempts"
    assert not s.busy


def test_wrong_transaction_id_is_ignored_and_counted() -> None:
    s = session(base_timeout=1.0, max_attempts=2)
    op = s.start_announce(request(), 0.0)
    ctid = header_of(one(s))[2]
    s.receive_datagram(connect_reply(ctid ^ 1, 5), 0.1)
    s.receive_datagram(b"\x00\x01", 0.2)
    assert s.ignored_datagrams == 2 and not s.connection_valid(0.2) and s.events() == []
    s.receive_datagram(connect_reply(ctid, 5), 0.3)  # the genuine answer still counts
    assert s.connection_id == 5
    atid = header_of(one(s))[2]
    s.receive_datagram(announce_reply(atid ^ 0xFFFF), 0.4)
    run_clock(s, 100)
    (event,) = s.events()
    assert isinstance(event, UdpFailed) and event.op == op
    assert str(event.error) == (
        "no answer to announce after 2 attempts (ignored 1 datagrams, last: unknown transaction id)"
    )


def test_truncated_connect_answer_fails_at_once() -> None:
    s = session()
    s.start_announce(request(), 0.0)
    ctid = header_of(one(s))[2]
    s.receive_datagram(connect_reply(ctid, 5)[:12], 0.1)
    (event,) = s.events()
    assert isinstance(event, UdpFailed)
    assert str(event.error) == "truncated connect response: 12 bytes, need at least 16"
    assert s.next_timer() is None and not s.busy


def test_truncated_announce_answer_fails_at_once() -> None:
    s = session()
    s.start_announce(request(), 0.0)
    s.receive_datagram(connect_reply(header_of(one(s))[2], 5), 0.1)
    s.receive_datagram(announce_reply(header_of(one(s))[2])[:14], 0.2)
    (event,) = s.events()
    assert isinstance(event, UdpFailed)
    assert "truncated announce response: 14 bytes" in str(event.error)


def test_error_action_on_connect_and_on_announce() -> None:
    s = session()
    a = s.start_announce(request(), 0.0)
    b = s.start_announce(request(port=1), 0.0)
    ctid = header_of(one(s))[2]
    s.receive_datagram(be(3, 4) + be(ctid, 4) + b"go away", 0.1)
    assert [(e.op, str(e.error)) for e in s.events() if isinstance(e, UdpFailed)] == [
        (a, "tracker error: go away"),
        (b, "tracker error: go away"),
    ]
    s = session()
    s.start_announce(request(), 0.0)
    s.receive_datagram(connect_reply(header_of(one(s))[2], 5), 0.1)
    atid = header_of(one(s))[2]
    s.receive_datagram(be(3, 4) + be(atid, 4) + b"unregistered torrent", 0.2)
    (event,) = s.events()
    assert (
        isinstance(event, UdpFailed) and str(event.error) == "tracker error: unregistered torrent"
    )
    assert s.connection_id is None  # next request reconnects


def test_unexpected_action_fails_the_request() -> None:
    s = session()
    s.start_announce(request(), 0.0)
    s.receive_datagram(connect_reply(header_of(one(s))[2], 5), 0.1)
    atid = header_of(one(s))[2]
    s.receive_datagram(be(2, 4) + be(atid, 4), 0.2)
    (event,) = s.events()
    assert isinstance(event, UdpFailed)
    assert str(event.error) == "unexpected action scrape in answer to announce"


def test_ipv6_session_reads_18_byte_peers() -> None:
    s = session(ipv6=True)
    s.start_announce(request(), 0.0)
    s.receive_datagram(connect_reply(header_of(one(s))[2], 5), 0.1)
    atid = header_of(one(s))[2]
    peer = bytes.fromhex("00000000000000000000000000000001") + be(7000, 2)
    s.receive_datagram(announce_reply(atid, peers=peer), 0.2)
    (event,) = s.events()
    assert isinstance(event, UdpAnnounced) and event.response.peers == (("::1", 7000),)


def test_cancelled_request_ignores_its_late_answer() -> None:
    s = session()
    op = s.start_announce(request(), 0.0)
    ctid = header_of(one(s))[2]
    s.cancel(op)
    assert not s.busy and s.next_timer() is None
    s.receive_datagram(connect_reply(ctid, 5), 0.1)
    assert s.ignored_datagrams == 1 and s.events() == [] and s.connection_id is None


def test_invalid_requests_raise_before_queueing() -> None:
    s = session()
    with pytest.raises(TrackerError):
        s.start_announce(request(port=-1), 0.0)
    with pytest.raises(TrackerError):
        s.start_scrape([], 0.0)
    assert not s.busy


@given(st.lists(st.binary(max_size=200), max_size=8))
def test_hostile_datagrams_never_raise(datagrams: list[bytes]) -> None:
    s = session()
    s.start_announce(request(), 0.0)
    s.start_scrape([INFO_HASH], 0.0)
    ctid = header_of(s.datagrams_to_send()[0])[2]
    for i, data in enumerate(datagrams):
        if i == 0 and len(data) >= 8:
            data = data[:4] + be(ctid, 4) + data[8:]  # let some reach the parsers
        s.receive_datagram(data, 0.1 * i)
        s.datagrams_to_send()
    run_clock(s, 10_000)
    assert all(isinstance(e, UdpAnnounced | UdpScraped | UdpFailed) for e in s.events())
    assert not s.busy
