"""KRPC messages (core/dht/krpc.py): BEP 5/32/42/43/44/51 golden vectors, strictness, fuzzing.

The golden datagrams are the BEPs' own bencoded examples, copied as they are
printed (BEP 5's ``nodes`` placeholder ``"def456..."`` is not real compact
node info, so it appears as a datagram the decoder must refuse, and the
reply is checked again with real 26-byte entries written out by hand).
"""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dht import krpc
from core.dht.items import MAX_VALUE
from core.dht.krpc import (
    ANNOUNCE_PEER,
    ERROR_BAD_SIGNATURE,
    ERROR_KEYS,
    ERROR_PROTOCOL,
    ERROR_SALT_TOO_BIG,
    ERROR_TOO_BIG,
    FIND_NODE,
    GET,
    GET_PEERS,
    MAX_DATAGRAM,
    MAX_TID,
    PING,
    PUT,
    SAMPLE_INFOHASHES,
    ErrorReply,
    KrpcError,
    Message,
    Query,
    Response,
    compact_addr,
    decode,
    decode_nodes,
    encode,
    encode_nodes,
)
from core.dht.types import NodeInfo
from core.errors import BencodeError, LocalProtocolError, RemoteProtocolError
from core.formats import bencoding
from core.formats.compact import decode_peers4

# Property tests: generating whole messages or bencode trees costs a few
# milliseconds an example, so those run a tenth of HYPOTHESIS_EXAMPLES and the
# byte-level fuzzers a fifth, which keeps the file well under a minute in CI.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))
MESSAGES = settings(max_examples=max(100, EXAMPLES // 10))
FUZZ = settings(max_examples=max(200, EXAMPLES // 5))

A = b"abcdefghij0123456789"
M = b"mnopqrstuvwxyz123456"
Z = b"0123456789abcdefghij"
# 1.2.3.4:6881 and 5.6.7.8:51413 as compact node info, written out byte by byte.
NODE_1 = M + b"\x01\x02\x03\x04\x1a\xe1"
NODE_2 = Z + b"\x05\x06\x07\x08\xc8\xd5"
NODES = (NodeInfo(M, ("1.2.3.4", 6881)), NodeInfo(Z, ("5.6.7.8", 51413)))
# [2001:db8::1]:6881
NODE6_1 = A + bytes.fromhex("20010db8000000000000000000000001") + b"\x1a\xe1"


# --------------------------------------------------------------------------- BEP 5 golden vectors

BEP5 = [
    pytest.param(
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        Query(tid=b"aa", sender=A, method=PING),
        id="ping query",
    ),
    pytest.param(
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        Response(tid=b"aa", sender=M),
        id="ping response",
    ),
    pytest.param(
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        Query(tid=b"aa", sender=A, method=FIND_NODE, target=M),
        id="find_node query",
    ),
    pytest.param(
        b"d1:rd2:id20:0123456789abcdefghij5:nodes52:" + NODE_1 + NODE_2 + b"e1:t2:aa1:y1:re",
        Response(tid=b"aa", sender=Z, nodes=NODES),
        id="find_node response",
    ),
    pytest.param(
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        Query(tid=b"aa", sender=A, method=GET_PEERS, info_hash=M),
        id="get_peers query",
    ),
    pytest.param(
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        # "axje.u" is 97.120.106.101 port 0x2e75, "idhtnm" 105.100.104.116 port 0x6e6d
        Response(
            tid=b"aa",
            sender=A,
            token=b"aoeusnth",
            values=(("97.120.106.101", 0x2E75), ("105.100.104.116", 0x6E6D)),
        ),
        id="get_peers response with values",
    ),
    pytest.param(
        b"d1:rd2:id20:abcdefghij01234567895:nodes52:"
        + NODE_1
        + NODE_2
        + b"5:token8:aoeusnthe1:t2:aa1:y1:re",
        Response(tid=b"aa", sender=A, token=b"aoeusnth", nodes=NODES),
        id="get_peers response with nodes",
    ),
    pytest.param(
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti6881e"
        b"5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        Query(tid=b"aa", sender=A, method=ANNOUNCE_PEER, info_hash=M, port=6881, token=b"aoeusnth"),
        id="announce_peer query",
    ),
    pytest.param(
        # the same with the "implied_port": 1 the BEP's dict form shows
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
        b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        Query(
            tid=b"aa",
            sender=A,
            method=ANNOUNCE_PEER,
            info_hash=M,
            port=6881,
            token=b"aoeusnth",
            implied_port=True,
        ),
        id="announce_peer query with implied_port",
    ),
    pytest.param(
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        ErrorReply(tid=b"aa", code=201, message="A Generic Error Ocurred"),
        id="error",
    ),
]


@pytest.mark.parametrize(("raw", "msg"), BEP5)
def test_bep5_examples_encode_byte_exact(raw: bytes, msg: Message) -> None:
    assert encode(msg) == raw


@pytest.mark.parametrize(("raw", "msg"), BEP5)
def test_bep5_examples_decode(raw: bytes, msg: Message) -> None:
    assert decode(raw) == msg


def test_bep5_nodes_placeholder_is_refused() -> None:
    # BEP 5 prints "nodes": "def456..." (9 bytes) as a stand-in for compact node info.
    raw = b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re"
    with pytest.raises(KrpcError) as err:
        decode(raw)
    assert err.value.key == "bad-nodes"
    assert err.value.reason == "nodes length 9 is not a multiple of 26"
    assert err.value.tid == b"aa" and not err.value.is_query
    assert isinstance(err.value, RemoteProtocolError)


# --------------------------------------------------------------------------- BEP 32, 42, 43


def test_bep32_want_and_nodes6() -> None:
    q = Query(tid=b"aa", sender=A, method=FIND_NODE, target=M, want=frozenset({"n6", "n4"}))
    raw = (
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wantl2:n42:n6ee"
        b"1:q9:find_node1:t2:aa1:y1:qe"
    )
    assert encode(q) == raw
    assert decode(raw) == q
    r = Response(tid=b"aa", sender=Z, nodes=NODES[:1], nodes6=(NodeInfo(A, ("2001:db8::1", 6881)),))
    raw_r = (
        b"d1:rd2:id20:0123456789abcdefghij5:nodes26:"
        + NODE_1
        + b"6:nodes638:"
        + NODE6_1
        + b"e1:t2:aa1:y1:re"
    )
    assert encode(r) == raw_r
    assert decode(raw_r) == r


def test_bep32_unknown_want_strings_are_ignored() -> None:
    raw = (
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wantl2:n62:n8ee"
        b"1:q9:find_node1:t2:aa1:y1:qe"
    )
    msg = decode(raw)
    assert isinstance(msg, Query) and msg.want == frozenset({"n6"})


def test_bep32_hybrid_values_list() -> None:
    v6 = bytes.fromhex("20010db8000000000000000000000002") + b"\x00\x50"
    raw = (
        b"d1:rd2:id20:abcdefghij01234567895:token1:x6:valuesl6:axje.u18:" + v6 + b"ee1:t2:aa1:y1:re"
    )
    msg = decode(raw)
    assert isinstance(msg, Response)
    assert msg.values == (("97.120.106.101", 0x2E75), ("2001:db8::2", 80))
    assert decode(encode(msg)) == msg


def test_bep42_ip_field() -> None:
    raw = b"d2:ip6:\x7c\x1f\x4b\x15\x1a\xe11:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re"
    msg = decode(raw)
    assert msg == Response(tid=b"aa", sender=M, ip=("124.31.75.21", 6881))
    assert encode(msg) == raw
    v6 = bytes.fromhex("20010db8000000000000000000000001") + b"\x1a\xe1"
    msg6 = decode(b"d2:ip18:" + v6 + b"1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re")
    assert isinstance(msg6, Response) and msg6.ip == ("2001:db8::1", 6881)
    mapped = ipaddress.IPv6Address("::ffff:1.2.3.4").packed + b"\x00\x00"
    msg_m = decode(b"d2:ip18:" + mapped + b"1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re")
    assert isinstance(msg_m, Response) and msg_m.ip == (
        "1.2.3.4",
        0,
    )  # port 0 kept: only the IP matters


def test_bep43_read_only_flag_and_version() -> None:
    q = Query(tid=b"xy", sender=A, method=PING, read_only=True, version=b"LT\x01\x02")
    raw = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping2:roi1e1:t2:xy1:v4:LT\x01\x021:y1:qe"
    assert encode(q) == raw
    assert decode(raw) == q


def test_announce_with_implied_port_may_omit_or_zero_the_port() -> None:
    base = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
    tail = b"5:token2:tke1:q13:announce_peer1:t2:aa1:y1:qe"
    for port in (b"", b"4:porti0e", b"4:porti70000e"):
        msg = decode(base + port + tail)
        assert isinstance(msg, Query) and msg.implied_port and msg.port is None
    assert decode(encode(msg)) == msg


def test_announce_seed_flag() -> None:
    q = Query(tid=b"aa", sender=A, method=ANNOUNCE_PEER, info_hash=M, port=1, token=b"t", seed=True)
    raw = encode(q)
    assert b"4:seedi1e" in raw
    assert decode(raw) == q


# --------------------------------------------------------------------------- BEP 51


def test_bep51_sample_infohashes() -> None:
    q = Query(tid=b"aa", sender=A, method=SAMPLE_INFOHASHES, target=M)
    raw_q = (
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e"
        b"1:q17:sample_infohashes1:t2:aa1:y1:qe"
    )
    assert encode(q) == raw_q
    assert decode(raw_q) == q
    r = Response(tid=b"aa", sender=Z, nodes=NODES[:1], samples=(A, M), interval=21600, num=2)
    raw_r = (
        b"d1:rd2:id20:0123456789abcdefghij8:intervali21600e5:nodes26:"
        + NODE_1
        + b"3:numi2e7:samples40:"
        + A
        + M
        + b"e1:t2:aa1:y1:re"
    )
    assert encode(r) == raw_r
    assert decode(raw_r) == r


def test_bep51_empty_samples_are_still_sent() -> None:
    # "Nodes supporting this extension should always include the samples field"
    raw = encode(Response(tid=b"aa", sender=Z, interval=60, num=0))
    assert b"7:samples0:" in raw
    assert b"samples" not in encode(Response(tid=b"aa", sender=Z))


# --------------------------------------------------------------------------- BEP 44

HELLO = b"12:Hello World!"
KEY = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
SIG = bytes.fromhex(
    "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
    "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"
)


def test_bep44_get_query() -> None:
    q = Query(tid=b"aa", sender=A, method=GET, target=M, seq=4)
    raw = (
        b"d1:ad2:id20:abcdefghij01234567893:seqi4e6:target20:mnopqrstuvwxyz123456e"
        b"1:q3:get1:t2:aa1:y1:qe"
    )
    assert encode(q) == raw
    assert decode(raw) == q


def test_bep44_immutable_put_embeds_the_raw_value() -> None:
    q = Query(tid=b"aa", sender=A, method=PUT, token=b"tok", value=HELLO)
    raw = b"d1:ad2:id20:abcdefghij01234567895:token3:tok1:v12:Hello World!e1:q3:put1:t2:aa1:y1:qe"
    assert encode(q) == raw
    assert decode(raw) == q


def test_bep44_mutable_put() -> None:
    q = Query(
        tid=b"aa",
        sender=A,
        method=PUT,
        token=b"tok",
        value=HELLO,
        key=KEY,
        signature=SIG,
        seq=1,
        salt=b"foobar",
        cas=0,
    )
    raw = (
        b"d1:ad3:casi0e2:id20:abcdefghij01234567891:k32:"
        + KEY
        + b"4:salt6:foobar3:seqi1e3:sig64:"
        + SIG
        + b"5:token3:tok1:v12:Hello World!e1:q3:put1:t2:aa1:y1:qe"
    )
    assert encode(q) == raw
    assert decode(raw) == q


def test_bep44_value_is_kept_verbatim_even_unsorted() -> None:
    # A dict value with unsorted keys: re-encoding would sort it and break the hash.
    odd = b"d1:b1:x1:a1:ye"
    raw = b"d1:rd2:id20:mnopqrstuvwxyz1234565:token1:t1:v" + odd + b"e1:t2:aa1:y1:re"
    msg = decode(raw)
    assert isinstance(msg, Response) and msg.value == odd
    assert encode(msg) == raw


def test_bep44_get_response_with_mutable_item_and_seq_alone() -> None:
    r = Response(tid=b"aa", sender=M, token=b"t", value=HELLO, key=KEY, signature=SIG, seq=1)
    assert decode(encode(r)) == r
    up_to_date = Response(tid=b"aa", sender=M, token=b"t", seq=7)  # k, v, sig omitted
    assert decode(encode(up_to_date)) == up_to_date


def test_bep44_largest_put_fits_a_datagram() -> None:
    value = b"996:" + b"x" * 996
    assert len(value) == MAX_VALUE
    q = Query(
        tid=b"\xff" * 8,
        sender=A,
        method=PUT,
        token=b"t" * 20,
        value=value,
        key=KEY,
        signature=SIG,
        seq=(1 << 63) - 1,
        salt=b"s" * 64,
        cas=(1 << 63) - 1,
        read_only=True,
        version=b"PY\x01\x00",
    )
    raw = encode(q)
    assert len(raw) <= MAX_DATAGRAM and MAX_DATAGRAM >= 1500
    assert decode(raw) == q


@pytest.mark.parametrize(
    ("args", "key", "code"),
    [
        (b"1:v1001:" + b"x" * 1001, "value-too-big", ERROR_TOO_BIG),
        (b"3:sig63:" + b"s" * 63, "bad-signature", ERROR_BAD_SIGNATURE),
        (b"4:salt65:" + b"s" * 65, "salt-too-big", ERROR_SALT_TOO_BIG),
        (b"1:k31:" + b"k" * 31, "bad-item", ERROR_PROTOCOL),
        (b"3:seqi-1e", "bad-item", ERROR_PROTOCOL),
        (b"3:casi9223372036854775808e", "bad-item", ERROR_PROTOCOL),
    ],
)
def test_bep44_bad_fields_carry_their_error_code(args: bytes, key: str, code: int) -> None:
    value = b"" if args.startswith(b"1:v") else b"1:v1:x"
    raw = (
        b"d1:ad2:id20:abcdefghij0123456789"
        + args
        + b"5:token1:t"
        + value
        + b"e1:q3:put1:t2:aa1:y1:qe"
    )
    with pytest.raises(KrpcError) as err:
        decode(raw)
    assert (err.value.key, err.value.code, err.value.tid, err.value.is_query) == (
        key,
        code,
        b"aa",
        True,
    )


def test_bep44_mutable_put_needs_key_sig_and_seq_together() -> None:
    raw = (
        b"d1:ad2:id20:abcdefghij01234567891:k32:"
        + KEY
        + b"3:seqi1e5:token1:t1:v1:xe1:q3:put1:t2:aa1:y1:qe"
    )
    with pytest.raises(KrpcError, match="bad-item"):
        decode(raw)
    no_v = Response(tid=b"aa", sender=M, key=KEY, signature=SIG, seq=1)
    with pytest.raises(KrpcError, match="bad-item"):
        decode(encode(no_v))


# --------------------------------------------------------------------------- strictness

PING_A = b"d2:id20:abcdefghij0123456789e"


def _q(body: bytes, method: bytes = b"4:ping", extra: bytes = b"") -> bytes:
    return b"d1:ad" + body + b"e1:q" + method + extra + b"1:t2:aa1:y1:qe"


def _r(body: bytes, top: bytes = b"") -> bytes:
    return b"d" + top + b"1:rd2:id20:mnopqrstuvwxyz123456" + body + b"e1:t2:aa1:y1:re"


BAD = [
    (b"x" * (MAX_DATAGRAM + 1), "oversized"),
    (b"", "malformed"),
    (b"le", "malformed"),
    (b"d1:t2:aa1:y1:q", "malformed"),  # truncated
    (b"d1:t2:aa1:y1:qee", "malformed"),  # trailing byte
    (b"d1:t2:aa1:t2:bbe", "malformed"),  # duplicate key
    (b"d1:ti01e1:y1:qe", "malformed"),  # leading zero
    (b"d1:ti-0e1:y1:qe", "malformed"),
    (b"di1e1:xe", "malformed"),  # key is not a string
    (b"d1:t" + b"l" * 70 + b"e" * 70 + b"e", "malformed"),  # too deep
    (b"d1:y1:qe", "missing"),
    (b"d1:ti1e1:y1:qe", "bad-tid"),
    (b"d1:t0:1:y1:qe", "bad-tid"),
    (b"d1:t33:" + b"t" * 33 + b"1:y1:re", "bad-tid"),
    (b"d1:t2:aae", "missing"),
    (b"d1:t2:aa1:y1:xe", "bad-y"),
    (b"d1:t2:aa1:yi1ee", "bad-type"),
    (b"d1:t2:aa1:y1:qe", "missing"),  # no method
    (b"d1:q0:1:t2:aa1:y1:qe", "bad-method"),
    (b"d1:q2:\xff\xfe1:t2:aa1:y1:qe", "bad-method"),
    (b"d1:q65:" + b"m" * 65 + b"1:t2:aa1:y1:qe", "bad-method"),
    (b"d1:qi1e1:t2:aa1:y1:qe", "bad-type"),
    (b"d1:q4:ping1:t2:aa1:y1:qe", "missing"),  # no "a"
    (b"d1:ali1ee1:q4:ping1:t2:aa1:y1:qe", "bad-type"),
    (_q(b""), "missing"),  # no id
    (_q(b"2:id19:abcdefghij012345678"), "bad-id"),
    (_q(b"2:idi5e"), "bad-type"),
    (_q(PING_A[1:-1], b"9:find_node"), "missing"),  # no target
    (_q(PING_A[1:-1] + b"6:target3:abc", b"9:find_node"), "bad-hash"),
    (_q(PING_A[1:-1], b"9:get_peers"), "missing"),
    (_q(PING_A[1:-1] + b"9:info_hash21:" + b"h" * 21, b"9:get_peers"), "bad-hash"),
    (_q(PING_A[1:-1] + b"4:want2:n4", b"9:find_node"), "bad-type"),
    (_q(PING_A[1:-1] + b"4:wantli4ee", b"9:find_node"), "bad-type"),
    (
        _q(PING_A[1:-1] + b"9:info_hash20:" + M + b"4:porti0e5:token1:t", b"13:announce_peer"),
        "bad-port",
    ),
    (
        _q(PING_A[1:-1] + b"9:info_hash20:" + M + b"4:porti65536e5:token1:t", b"13:announce_peer"),
        "bad-port",
    ),
    (
        _q(PING_A[1:-1] + b"9:info_hash20:" + M + b"4:port2:805:token1:t", b"13:announce_peer"),
        "bad-type",
    ),
    (_q(PING_A[1:-1] + b"9:info_hash20:" + M + b"5:token1:t", b"13:announce_peer"), "missing"),
    (_q(PING_A[1:-1] + b"9:info_hash20:" + M + b"4:porti1e", b"13:announce_peer"), "missing"),
    (_q(PING_A[1:-1] + b"5:token1:t", b"3:put"), "missing"),  # no v
    (_q(PING_A[1:-1] + b"1:v1:x", b"3:put"), "missing"),  # no token
    (_q(PING_A[1:-1] + b"5:tokeni1e"), "bad-type"),
    (_q(PING_A[1:-1], extra=b"2:ro1:x"), "bad-type"),
    (_q(PING_A[1:-1], extra=b"1:vi1e"), "bad-type"),
    (b"d1:t2:aa1:y1:re", "missing"),  # no "r"
    (b"d1:r0:1:t2:aa1:y1:re", "bad-type"),
    (b"d1:rde1:t2:aa1:y1:re", "missing"),
    (_r(b"5:nodes25:" + b"n" * 25), "bad-nodes"),
    (_r(b"6:nodes626:" + NODE_1), "bad-nodes"),
    (_r(b"5:nodesi1e"), "bad-type"),
    (_r(b"6:valuesl5:12345e"), "bad-values"),
    (_r(b"6:valuesl17:" + b"v" * 17 + b"e"), "bad-values"),
    (_r(b"6:values6:axje.u"), "bad-type"),
    (_r(b"6:valuesli1ee"), "bad-type"),
    (_r(b"7:samples21:" + b"s" * 21), "bad-samples"),
    (_r(b"8:intervali-1e"), "bad-number"),
    (_r(b"3:numi9223372036854775808e"), "bad-number"),
    (_r(b"", b"2:ip5:12345"), "bad-ip"),
    (_r(b"", b"2:ipi1e"), "bad-type"),
    (b"d1:t2:aa1:y1:ee", "missing"),
    (b"d1:e3:abc1:t2:aa1:y1:ee", "bad-type"),
    (b"d1:ele1:t2:aa1:y1:ee", "bad-error"),
    (b"d1:el3:abce1:t2:aa1:y1:ee", "bad-error"),
    (b"d1:eli201ei5ee1:t2:aa1:y1:ee", "bad-error"),
]


@pytest.mark.parametrize(("raw", "key"), BAD)
def test_bad_datagrams_get_their_key(raw: bytes, key: str) -> None:
    with pytest.raises(KrpcError) as err:
        decode(raw)
    assert err.value.key == key, err.value
    assert key in ERROR_KEYS
    assert str(err.value).startswith(f"{key}: ")


def test_error_context_says_whether_to_answer() -> None:
    # A query whose tid could be read is answered with 203.
    with pytest.raises(KrpcError) as err:
        decode(_q(PING_A[1:-1] + b"6:target3:abc", b"9:find_node"))
    assert (err.value.tid, err.value.is_query, err.value.code) == (b"aa", True, 203)
    # ... a response or a datagram without a readable tid is not.
    with pytest.raises(KrpcError) as err:
        decode(_r(b"5:nodes1:x"))
    assert (err.value.tid, err.value.is_query) == (b"aa", False)
    with pytest.raises(KrpcError) as err:
        decode(b"d1:t33:" + b"t" * 33 + b"1:y1:qe")
    assert (err.value.tid, err.value.is_query) == (None, True)
    with pytest.raises(KrpcError) as err:
        decode(b"d1:t2:aa1:y1:q")
    assert err.value.tid is None


def test_unknown_keys_and_methods_pass() -> None:
    raw = _q(PING_A[1:-1] + b"5:extrai1e6:target20:" + M, b"4:vote", extra=b"5:zzzzzli1ee")
    msg = decode(raw)
    assert msg == Query(tid=b"aa", sender=A, method="vote", target=M)
    r = decode(_r(b"1:xd1:yi1ee", b"1:a3:abc"))
    assert r == Response(tid=b"aa", sender=M)


def test_error_with_the_code_alone() -> None:
    assert decode(b"d1:eli202ee1:t2:aa1:y1:ee") == ErrorReply(b"aa", 202, "")
    msg = decode(b"d1:eli203e2:\xff!e1:t2:aa1:y1:ee")
    assert isinstance(msg, ErrorReply) and msg.message == "\ufffd!"


def test_undialable_peers_and_nodes_are_dropped() -> None:
    port0 = b"\x01\x02\x03\x04\x00\x00"
    multicast = b"\xe0\x00\x00\x01\x1a\xe1"
    unspecified = b"\x00\x00\x00\x00\x1a\xe1"
    mapped = ipaddress.IPv6Address("::ffff:9.9.9.9").packed + b"\x00\x50"
    values = b"".join(
        b"%d:%s" % (len(v), v) for v in (port0, b"axje.u", multicast, b"axje.u", mapped)
    )
    msg = decode(_r(b"6:valuesl" + values + b"e"))
    assert isinstance(msg, Response)
    assert msg.values == (("97.120.106.101", 0x2E75), ("9.9.9.9", 80))  # deduplicated, mapped -> v4
    nodes = M + port0 + M + multicast + M + unspecified + NODE_1
    msg = decode(_r(b"5:nodes104:" + nodes))
    assert isinstance(msg, Response) and msg.nodes == NODES[:1]
    nodes6 = A + mapped + NODE6_1
    msg = decode(_r(b"6:nodes676:" + nodes6))
    assert isinstance(msg, Response) and msg.nodes6 == (NodeInfo(A, ("2001:db8::1", 6881)),)


def test_decode_takes_any_bytes_like() -> None:
    raw = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
    assert decode(bytearray(raw)) == decode(memoryview(raw)) == decode(raw)
    with pytest.raises(KrpcError, match="malformed"):
        decode("d1:t2:aae")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- compact helpers


def test_compact_nodes_round_trip_and_family_filter() -> None:
    v6 = NodeInfo(A, ("2001:db8::1", 6881))
    assert encode_nodes([*NODES, v6], v6=False) == NODE_1 + NODE_2
    assert encode_nodes([*NODES, v6], v6=True) == NODE6_1
    assert decode_nodes(NODE_1 + NODE_2, v6=False) == NODES
    assert decode_nodes(NODE6_1, v6=True) == (v6,)
    assert decode_nodes(b"", v6=False) == ()
    with pytest.raises(KrpcError) as err:
        decode_nodes(NODE_1[:-1], v6=False)
    assert err.value.key == "bad-nodes"
    with pytest.raises(KrpcError, match="not a multiple of 38"):
        decode_nodes(NODE_1, v6=True)
    with pytest.raises(LocalProtocolError):
        encode_nodes([NodeInfo(b"short", ("1.2.3.4", 1))], v6=False)


def test_compact_addr() -> None:
    assert compact_addr(("124.31.75.21", 6881)) == b"\x7c\x1f\x4b\x15\x1a\xe1"
    assert (
        compact_addr(("[2001:db8::1]", 80))
        == bytes.fromhex("20010db8000000000000000000000001") + b"\x00\x50"
    )
    assert compact_addr(("::ffff:1.2.3.4", 1)) == b"\x01\x02\x03\x04\x00\x01"
    for bad in (("example.org", 1), ("1.2.3.4", 65536), ("1.2.3.4", -1)):
        with pytest.raises(LocalProtocolError):
            compact_addr(bad)


@FUZZ
@given(st.binary(min_size=6, max_size=6))
def test_fast_ipv4_peer_agrees_with_the_compact_codec(raw: bytes) -> None:
    expected = decode_peers4(raw)
    assert krpc._peer4(raw) == (expected[0] if expected else None)


# 6-byte compact entries weighted towards the ones decoders must drop or keep
# with care: 0.0.0.0, multicast 224-239 and its edges, port 0.
compact4 = st.builds(
    lambda first, rest, port: bytes([first]) + rest + port.to_bytes(2, "big"),
    st.sampled_from([0, 1, 127, 223, 224, 239, 240, 255]) | st.integers(0, 255),
    st.just(b"\0\0\0") | st.binary(min_size=3, max_size=3),
    st.sampled_from([0, 1, 6881, 65535]) | st.integers(0, 65535),
)


@FUZZ
@given(st.lists(st.tuples(st.binary(min_size=20, max_size=20), compact4), max_size=10))
def test_fast_nodes_agree_with_the_compact_codec(entries: list[tuple[bytes, bytes]]) -> None:
    # decode_nodes writes the IPv4 entry decoding out inline: hold it to the codec.
    expected = tuple(
        NodeInfo(node_id, peers[0]) for node_id, raw in entries if (peers := decode_peers4(raw))
    )
    assert decode_nodes(b"".join(i + raw for i, raw in entries), v6=False) == expected


@FUZZ
@given(compact4)
def test_fast_ip_field_agrees_with_ipaddress(raw: bytes) -> None:
    expected = (str(ipaddress.IPv4Address(raw[:4])), int.from_bytes(raw[4:], "big"))
    msg = decode(_r(b"", b"2:ip6:" + raw))
    assert isinstance(msg, Response) and msg.ip == expected


def _packed_by_ipaddress(host: str) -> bytes | None:
    """What compact_addr packed before its IPv4 fast path: ipaddress alone."""
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.packed
    return addr.packed


octets = st.sampled_from(["0", "00", "01", "9", "10", "099", "199", "249", "255", "256", "1000"])
hosts = (
    st.lists(octets | st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join)
    | st.text(alphabet="0123456789.:[]%abf\u0661\uff11 \n", max_size=20)
    | st.integers(0, 0xFFFFFFFF).map(lambda i: str(ipaddress.IPv4Address(i)))
)


@FUZZ
@given(hosts, st.integers(0, 0xFFFF))
def test_fast_ipv4_packing_agrees_with_ipaddress(host: str, port: int) -> None:
    # Leading zeros, octets over 255, Unicode digits, too few or many parts
    # must all take the path (or the error) ipaddress would.
    expected = _packed_by_ipaddress(host)
    try:
        got: bytes | None = compact_addr((host, port))
    except LocalProtocolError:
        got = None
    assert got == (None if expected is None else expected + port.to_bytes(2, "big"))


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    "msg",
    [
        Query(tid=b"", sender=A, method=PING),
        Query(tid=b"t" * (MAX_TID + 1), sender=A, method=PING),
        Query(tid=b"aa", sender=A[:19], method=PING),
        Query(tid=b"aa", sender=A, method=""),
        Query(tid=b"aa", sender=A, method="pïng"),
        Query(tid=b"aa", sender=A, method=FIND_NODE, target=b"x"),
        Query(tid=b"aa", sender=A, method=ANNOUNCE_PEER, info_hash=M, port=0, token=b"t"),
        Query(tid=b"aa", sender=A, method=PUT, token=b"t", value=b"not bencode"),
        Query(tid=b"aa", sender=A, method=PUT, token=b"t", value=b"1:x1:y"),
        Query(tid=b"aa", sender=A, method=PUT, token=b"t", value=b"1:x", salt=b"s" * 65),
        Query(tid=b"aa", sender=A, method=PUT, token=b"t", value=b"1:x", seq=-1),
        Response(tid=b"aa", sender=M, samples=(b"short",)),
        Response(tid=b"aa", sender=M, interval=-1),
        Response(tid=b"aa", sender=M, ip=("not an ip", 1)),
        Response(tid=b"aa", sender=M, signature=b"s"),
        ErrorReply(tid=b"", code=201, message="x"),
    ],
)
def test_encode_refuses_what_decode_would(msg: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode(msg)


# --------------------------------------------------------------------------- properties


ids = st.binary(min_size=20, max_size=20)
tids = st.binary(min_size=1, max_size=MAX_TID)
ports = st.integers(1, 0xFFFF)
# Dialable addresses drawn as integers (cheaper than filtering): IPv4 below
# the multicast block, IPv6 from 2000::/3 up to (not into) ff00::/8.
ipv4 = st.integers(1, 0xDFFFFFFF).map(lambda i: str(ipaddress.IPv4Address(i)))
ipv6 = st.integers(0x2000 << 112, (0xFF00 << 112) - 1).map(lambda i: str(ipaddress.IPv6Address(i)))
addr4 = st.tuples(ipv4, ports)
addr6 = st.tuples(ipv6, ports)
nodes4 = st.lists(st.builds(NodeInfo, ids, addr4), max_size=4).map(tuple)
nodes6 = st.lists(st.builds(NodeInfo, ids, addr6), max_size=3).map(tuple)
values = st.lists(addr4 | addr6, max_size=6, unique=True).map(tuple)
versions = st.none() | st.binary(max_size=8)
seqs = st.integers(0, (1 << 63) - 1)
bvalues = st.recursive(
    st.binary(max_size=30) | st.integers(-(10**12), 10**12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.binary(max_size=6), inner, max_size=3)
    ),
    max_leaves=4,
).map(bencoding.encode)


@st.composite
def queries(draw: st.DrawFn) -> Query:
    method = draw(
        st.sampled_from(
            [PING, FIND_NODE, GET_PEERS, ANNOUNCE_PEER, SAMPLE_INFOHASHES, GET, PUT, "vote"]
        )
    )
    kw: dict[str, object] = {
        "tid": draw(tids),
        "sender": draw(ids),
        "method": method,
        "read_only": draw(st.booleans()),
        "version": draw(versions),
    }
    if method in (FIND_NODE, GET, SAMPLE_INFOHASHES):
        kw["target"] = draw(ids)
    if method in (FIND_NODE, GET_PEERS):
        kw["want"] = draw(st.frozensets(st.sampled_from(["n4", "n6"])))
    if method in (GET_PEERS, ANNOUNCE_PEER):
        kw["info_hash"] = draw(ids)
    if method == ANNOUNCE_PEER:
        kw["token"] = draw(st.binary(max_size=20))
        kw["implied_port"] = draw(st.booleans())
        kw["port"] = draw(ports | st.none()) if kw["implied_port"] else draw(ports)
        kw["seed"] = draw(st.booleans())
    if method == GET:
        kw["seq"] = draw(st.none() | seqs)
    if method == PUT:
        kw["token"] = draw(st.binary(max_size=20))
        kw["value"] = draw(bvalues)
        if draw(st.booleans()):
            kw["key"] = draw(st.binary(min_size=32, max_size=32))
            kw["signature"] = draw(st.binary(min_size=64, max_size=64))
            kw["seq"] = draw(seqs)
            kw["salt"] = draw(st.none() | st.binary(max_size=64))
            kw["cas"] = draw(st.none() | seqs)
    if method == "vote":
        kw["target"] = draw(st.none() | ids)
        kw["info_hash"] = draw(st.none() | ids)
    return Query(**kw)  # type: ignore[arg-type]


@st.composite
def responses(draw: st.DrawFn) -> Response:
    kw: dict[str, object] = {
        "tid": draw(tids),
        "sender": draw(ids),
        "nodes": draw(nodes4),
        "nodes6": draw(nodes6),
        "values": draw(values),
        "token": draw(st.none() | st.binary(max_size=20)),
        "ip": draw(st.none() | addr4 | addr6 | st.tuples(ipv4, st.just(0))),
        "version": draw(versions),
    }
    if draw(st.booleans()):
        kw["samples"] = tuple(draw(st.lists(ids, max_size=10)))
        kw["interval"] = draw(st.none() | st.integers(0, 1 << 40))
        kw["num"] = draw(st.none() | st.integers(0, 1 << 40))
    item = draw(st.sampled_from(["none", "immutable", "mutable", "seq"]))
    if item in ("immutable", "mutable"):
        kw["value"] = draw(bvalues)
    if item in ("mutable", "seq"):
        kw["seq"] = draw(seqs)
    if item == "mutable":
        kw["key"] = draw(st.binary(min_size=32, max_size=32))
        kw["signature"] = draw(st.binary(min_size=64, max_size=64))
    return Response(**kw)  # type: ignore[arg-type]


errors = st.builds(
    ErrorReply,
    tids,
    st.integers(-(1 << 63) + 1, (1 << 63) - 1),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)


def _canonical(raw: bytes) -> bool:
    return bencoding.first_unsorted_key(raw) is None


@MESSAGES
@given(queries())
def test_query_round_trip(q: Query) -> None:
    raw = encode(q)
    assert _canonical(raw)
    assert decode(raw) == q


@MESSAGES
@given(responses())
def test_response_round_trip(r: Response) -> None:
    raw = encode(r)
    assert _canonical(raw)
    assert decode(raw) == r


@given(errors)
def test_error_round_trip(e: ErrorReply) -> None:
    raw = encode(e)
    assert _canonical(raw)
    assert decode(raw) == e


def _total(data: bytes) -> None:
    """decode gives a message (which re-encodes to itself) or a KrpcError with a known key."""
    try:
        msg = decode(data)
    except KrpcError as exc:
        assert exc.key in ERROR_KEYS, exc
        assert exc.tid is None or 0 < len(exc.tid) <= MAX_TID
        return
    assert isinstance(msg, Query | Response | ErrorReply)
    assert decode(encode(msg)) == msg


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _total(data)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_behind_a_dict_opener(data: bytes) -> None:
    _total(b"d" + data)


SEEDS = [raw for raw, *_ in (p.values for p in BEP5)] + [
    encode(
        Query(
            tid=b"aa",
            sender=A,
            method=PUT,
            token=b"t",
            value=HELLO,
            key=KEY,
            signature=SIG,
            seq=1,
            salt=b"s",
        )
    ),
    encode(
        Response(
            tid=b"aa",
            sender=Z,
            nodes=NODES,
            nodes6=(NodeInfo(A, ("2001:db8::1", 1)),),
            samples=(A,),
            interval=1,
            num=1,
            ip=("1.2.3.4", 5),
        )
    ),
]


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "delete", "insert", "truncate"]),
            st.integers(0, 400),
            st.binary(min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_mutated_messages(seed: bytes, edits: list[tuple[str, int, bytes]]) -> None:
    data = bytearray(seed)
    for op, where, chunk in edits:
        i = where % (len(data) + 1)
        if op == "flip" and data:
            data[i % len(data)] ^= chunk[0] or 1
        elif op == "delete":
            del data[i : i + len(chunk)]
        elif op == "insert":
            data[i:i] = chunk
        else:
            del data[i:]
    _total(bytes(data))


@MESSAGES
@given(queries() | responses() | errors, st.integers(0, 10_000))
def test_fuzz_truncated_valid_messages(msg: Message, cut: int) -> None:
    raw = encode(msg)
    _total(raw[: cut % len(raw)])


# --------------------------------------------------------------------------- the private decoder

bencode_trees = st.recursive(
    st.binary(max_size=8) | st.integers(-(10**40), 10**40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=4), inner, max_size=4)
    ),
    max_leaves=8,
)


def _agree(data: bytes) -> None:
    try:
        expected = bencoding.decode(data, max_depth=krpc.MAX_DEPTH)
    except BencodeError:
        expected = None
    try:
        got, _ = krpc._envelope(data)
    except KrpcError as exc:
        assert exc.key == "malformed"
        got = None
    if not isinstance(expected, dict):
        expected = None
    assert got == expected


@MESSAGES
@given(st.dictionaries(st.binary(max_size=4), bencode_trees, max_size=5).map(bencoding.encode))
def test_decoder_agrees_with_the_formats_decoder_on_valid_bencode(data: bytes) -> None:
    _agree(data)


@MESSAGES
@given(
    st.dictionaries(st.binary(max_size=4), bencode_trees, max_size=5).map(bencoding.encode),
    st.integers(0, 500),
    # mostly bencode's own syntax, so the damage lands on the rules (leading
    # zeros, "-0", lengths, terminators) rather than in string payloads
    st.text("0123456789-idle:", min_size=1, max_size=2).map(str.encode) | st.binary(min_size=1),
)
def test_decoder_agrees_with_the_formats_decoder_on_damaged_bencode(
    data: bytes, where: int, chunk: bytes
) -> None:
    i = where % (len(data) + 1)
    _agree(data[:i] + chunk + data[i + 1 :])
    _agree(data[:i] + chunk + data[i:])


def _sloppy_string(parts: tuple[bytes, int, int]) -> bytes:
    payload, off, zero = parts
    return b"0" * (zero == 0) + str(len(payload) + off).encode() + b":" + payload


# Bencode that is mostly right and sometimes wrong in exactly the ways the
# rules forbid: leading zeros and "-0" in integers, leading zeros and wrong
# lengths on strings, duplicate keys (keys come from a tiny alphabet).
sloppy_ints = st.from_regex(rb"\Ai-?[0-9]{1,3}e\Z", fullmatch=True)
OFFSETS = st.sampled_from([0] * 14 + [-1, 1])
sloppy_strings = st.tuples(st.binary(max_size=3), OFFSETS, st.integers(0, 19)).map(_sloppy_string)
sloppy_keys = st.tuples(
    st.sampled_from([b"", b"a", b"b", b"c", b"d"]), OFFSETS, st.integers(0, 19)
).map(_sloppy_string)
sloppy = st.recursive(
    sloppy_ints | sloppy_strings,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda xs: b"l" + b"".join(xs) + b"e")
        | st.lists(st.tuples(sloppy_keys, inner), max_size=3).map(
            lambda kv: b"d" + b"".join(k + v for k, v in kv) + b"e"
        )
    ),
    max_leaves=6,
)


@FUZZ
@given(
    st.lists(st.tuples(sloppy_keys, sloppy), max_size=4).map(
        lambda kv: b"d" + b"".join(k + v for k, v in kv) + b"e"
    )
)
def test_decoder_agrees_with_the_formats_decoder_on_sloppy_bencode(data: bytes) -> None:
    _agree(data)


# Strings whose lengths take one, two and three digits, right or off by one,
# with and without a leading zero: the reader takes one- and two-digit
# lengths without its regex, so each width must follow the same rules.
sized_strings = st.tuples(
    st.sampled_from([0, 1, 8, 9, 10, 11, 20, 26, 98, 99, 100, 101]).flatmap(
        lambda n: st.binary(min_size=n, max_size=n)
    ),
    OFFSETS,
    st.integers(0, 19),
).map(_sloppy_string)
sized_lists = st.lists(sized_strings, max_size=3).map(lambda xs: b"l" + b"".join(xs) + b"e")


@FUZZ
@given(
    st.lists(
        st.tuples(sloppy_keys | sized_strings, sized_strings | sized_lists | sloppy), max_size=4
    ).map(lambda kv: b"d" + b"".join(k + v for k, v in kv) + b"e"),
    st.integers(0, 1000),
)
def test_decoder_agrees_on_strings_of_every_length_width(data: bytes, cut: int) -> None:
    _agree(data)
    _agree(data[: cut % (len(data) + 1)])  # and cut short anywhere


@pytest.mark.parametrize(
    "data",
    [
        b"d1:xi" + b"9" * 33 + b"ee",
        b"d1:xi" + b"9" * 34 + b"ee",
        b"d1:xi-" + b"9" * 32 + b"ee",
        b"d1:xi-" + b"9" * 33 + b"ee",
        b"d1:x" + b"l" * 63 + b"e" * 63 + b"e",
        b"d1:x" + b"l" * 64 + b"e" * 64 + b"e",
        b"d01:xi1ee",
        b"d1:x01:ae",
        b"d1:xi+1ee",
        b"d1:xi 1ee",
        b"d1:xi1_0ee",
        b"d1:xi01ee",
        b"d1:xi-0ee",
        b"d1:xi-01ee",
        b"d1:xie",
        b"d1:x00:e",
        b"d1:x1:ae",
        b"d1:x2:ae",
        b"d1:x-1:ae",
    ],
)
def test_decoder_agrees_at_the_limits(data: bytes) -> None:
    _agree(data)


def test_every_documented_error_key_is_produced() -> None:
    # every key the module documents is one decode can produce (no dead counters)
    produced = {key for _, key in BAD} | {
        "value-too-big",
        "bad-signature",
        "salt-too-big",
        "bad-item",
    }
    assert produced == ERROR_KEYS
