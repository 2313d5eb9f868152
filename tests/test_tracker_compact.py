"""Compact (BEP 23, BEP 7) and dictionary (BEP 3) peer lists."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.formats.compact import (
    MAX_PEERS,
    PeerList,
    decode_peer_dicts,
    decode_peers4,
    decode_peers6,
    encode_peers,
    encode_peers4,
    encode_peers6,
    normalise_peer,
)

# 10.0.0.1:6881 and 192.168.1.2:51413, written out byte by byte (0x1AE1 = 6881, 0xC8D5 = 51413).
V4 = b"\x0a\x00\x00\x01\x1a\xe1" + b"\xc0\xa8\x01\x02\xc8\xd5"
# [2001:db8::1]:6881
V6 = bytes.fromhex("20010db8000000000000000000000001") + b"\x1a\xe1"


def test_decode_ipv4_golden() -> None:
    assert decode_peers4(V4) == [("10.0.0.1", 6881), ("192.168.1.2", 51413)]


def test_decode_ipv6_golden() -> None:
    assert decode_peers6(V6) == [("2001:db8::1", 6881)]


def test_torn_trailing_entry_is_ignored() -> None:
    assert decode_peers4(V4 + b"\x01\x02\x03") == decode_peers4(V4)
    assert decode_peers6(V6 + V6[:17]) == [("2001:db8::1", 6881)]
    assert decode_peers4(b"\x01\x02\x03") == []


def test_undialable_entries_dropped() -> None:
    port0 = b"\x0a\x00\x00\x02\x00\x00"
    unspecified = b"\x00\x00\x00\x00\x1a\xe1"
    multicast = b"\xe0\x00\x00\x01\x1a\xe1"
    assert decode_peers4(port0 + unspecified + multicast + V4[:6]) == [("10.0.0.1", 6881)]
    assert decode_peers6(bytes(16) + b"\x1a\xe1") == []


def test_ipv4_mapped_ipv6_becomes_ipv4() -> None:
    mapped = ipaddress.IPv6Address("::ffff:10.0.0.1").packed + b"\x1a\xe1"
    assert decode_peers6(mapped) == [("10.0.0.1", 6881)]


def test_duplicates_collapse_and_order_kept() -> None:
    first, second = V4[:6], V4[6:]
    assert decode_peers4(second + first + second + first) == [
        ("192.168.1.2", 51413),
        ("10.0.0.1", 6881),
    ]


def test_limit_caps_peers() -> None:
    data = b"".join(struct.pack("!IH", 0x0A000000 + i, 1000) for i in range(1, 5001))
    assert len(decode_peers4(data)) == MAX_PEERS
    assert decode_peers4(data, limit=3) == [
        ("10.0.0.1", 1000),
        ("10.0.0.2", 1000),
        ("10.0.0.3", 1000),
    ]


def test_peerlist_merges_families_under_one_cap() -> None:
    acc = PeerList(2)
    decode_peers4(V4[:6], into=acc)
    out = decode_peers6(V6 + V6, into=acc)
    assert out == [("10.0.0.1", 6881), ("2001:db8::1", 6881)]
    assert acc.full
    assert decode_peers4(V4[6:], into=acc) == out  # full: nothing more


def test_non_bytes_input_gives_nothing() -> None:
    assert decode_peers4(None) == []  # type: ignore[arg-type]
    assert decode_peers6(12) == []  # type: ignore[arg-type]
    assert decode_peer_dicts(b"abc") == []
    assert decode_peer_dicts({b"ip": b"10.0.0.1", b"port": 1}) == []


def test_dict_peers() -> None:
    entries = [
        {b"ip": b"10.1.2.3", b"port": 6881, b"peer id": b"A" * 20},
        {b"ip": b"::1", b"port": 6882},
        {b"ip": b"[2001:db8::5]", b"port": 6883},
        {b"ip": b"tracker.example.org", b"port": 6884},  # names are refused
        {b"ip": b"10.9.9.9", b"port": 0},
        {b"ip": b"10.9.9.9", b"port": 65536},
        {b"ip": b"10.9.9.9", b"port": b"80"},
        {b"ip": b"\xff\xfe\xfd\xfc\xfb", b"port": 1},
        {b"port": 5},
        [b"10.0.0.1", 80],
        b"garbage",
        {b"ip": b"\x0a\x00\x00\x07", b"port": 7},  # packed address in "ip"
    ]
    assert decode_peer_dicts(entries) == [
        ("10.1.2.3", 6881),
        ("::1", 6882),
        ("2001:db8::5", 6883),
        ("10.0.0.7", 7),
    ]


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("10.0.0.1", 1, ("10.0.0.1", 1)),
        ("[::1]", 2, ("::1", 2)),
        ("fe80::1%eth0", 3, ("fe80::1", 3)),
        ("2001:0DB8:0000::0001", 4, ("2001:db8::1", 4)),
        ("::ffff:1.2.3.4", 5, ("1.2.3.4", 5)),
        ("localhost", 6, None),
        ("10.0.0.1", 0, None),
        ("10.0.0.1", True, None),
        ("0.0.0.0", 7, None),
    ],
)
def test_normalise_peer(host: str, port: int, expected: tuple[str, int] | None) -> None:
    assert normalise_peer(host, port) == expected


def test_encode_golden_and_split() -> None:
    peers = [("10.0.0.1", 6881), ("2001:db8::1", 6881), ("192.168.1.2", 51413), ("bad", 1)]
    assert encode_peers4(peers) == V4
    assert encode_peers6(peers) == V6
    assert encode_peers(peers) == (V4, V6)


#: Structured strategies cost far more per example than raw bytes; they get a
#: tenth of the example budget (HYPOTHESIS_EXAMPLES, >= 5000 in CI).
STRUCTURED = settings(
    max_examples=max(100, int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000")) // 10)
)


def _dialable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None
    return not (addr.is_unspecified or addr.is_multicast or mapped)


ipv4 = st.ip_addresses(v=4).filter(_dialable)
ipv6 = st.ip_addresses(v=6).filter(_dialable)
ports = st.integers(1, 65535)


@STRUCTURED
@given(st.lists(st.tuples(st.one_of(ipv4, ipv6), ports), max_size=20))
def test_encode_decode_round_trip(peers: list[tuple[ipaddress._BaseAddress, int]]) -> None:
    as_text = [(str(a), p) for a, p in peers]
    v4, v6 = encode_peers(as_text)
    acc = PeerList()
    decode_peers4(v4, into=acc)
    decoded = decode_peers6(v6, into=acc)
    expected = list(
        dict.fromkeys([p for p in as_text if ":" not in p[0]] + [p for p in as_text if ":" in p[0]])
    )
    assert decoded == expected


@given(st.binary(max_size=400))
def test_decoders_never_raise(data: bytes) -> None:
    four = decode_peers4(data)
    six = decode_peers6(data)
    assert len(four) <= len(data) // 6
    assert len(six) <= len(data) // 18
    for host, port in four + six:
        assert 0 < port < 65536
        assert normalise_peer(host, port) == (host, port)


bencode_values = st.recursive(
    st.one_of(st.integers(-(2**70), 2**70), st.binary(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from([b"ip", b"port", b"peer id", b"x"]), inner, max_size=4),
    ),
    max_leaves=12,
)


@STRUCTURED
@given(bencode_values)
def test_dict_decoder_never_raises(entries: object) -> None:
    for host, port in decode_peer_dicts(entries):
        assert normalise_peer(host, port) == (host, port)
