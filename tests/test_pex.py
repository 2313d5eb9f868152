"""BEP 11 ut_pex: the codec (core.wire.pex) and per-connection state (core.engine.pex)."""

from __future__ import annotations

import ipaddress
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.engine.pex import (
    MAX_ACCEPT_PER_MESSAGE,
    MAX_PER_MESSAGE,
    PexState,
    local_extensions,
    peer_flags,
)
from core.errors import LocalProtocolError, RemoteProtocolError
from core.formats.bencoding import encode
from core.wire.extensions import UT_METADATA, UT_PEX
from core.wire.pex import (
    DECODE_LIMIT,
    PEX_HOLEPUNCH,
    PEX_PREFERS_ENCRYPTION,
    PEX_REACHABLE,
    PEX_SEED,
    PEX_UTP,
    PexMessage,
    decode_pex,
    encode_pex,
)

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))

Address = tuple[str, int]


def v4(i: int, port: int = 6881) -> Address:
    return (str(ipaddress.IPv4Address(0x0A000000 + i)), port)  # 10.0.0.0/8


def v6(i: int, port: int = 6881) -> Address:
    return (str(ipaddress.IPv6Address((0x20010DB8 << 96) + i)), port)  # 2001:db8::/32


# --- codec: golden bytes ------------------------------------------------------


def test_flag_values_are_those_of_bep11() -> None:
    assert (PEX_PREFERS_ENCRYPTION, PEX_SEED, PEX_UTP, PEX_HOLEPUNCH, PEX_REACHABLE) == (
        0x01,
        0x02,
        0x04,
        0x08,
        0x10,
    )


# Hand-built: keys in bencode order (".": 0x2e sorts before "6": 0x36), 6881 =
# 0x1ae1, 51413 = 0xc8d5, 80 = 0x0050.
GOLDEN = (
    b"d"
    b"5:added6:\x01\x02\x03\x04\x1a\xe1"
    b"7:added.f1:\x12"
    b"6:added618:\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\xc8\xd5"
    b"8:added6.f1:\x04"
    b"7:dropped6:\x0a\x00\x00\x01\x00\x50"
    b"8:dropped60:"
    b"e"
)
GOLDEN_MSG = PexMessage(
    {("1.2.3.4", 6881): PEX_SEED | PEX_REACHABLE, ("2001:db8::1", 51413): PEX_UTP},
    (("10.0.0.1", 80),),
)


def test_encode_byte_exact() -> None:
    assert encode_pex(GOLDEN_MSG) == GOLDEN


def test_decode_byte_exact() -> None:
    msg = decode_pex(GOLDEN)
    assert dict(msg.added) == dict(GOLDEN_MSG.added)
    assert msg.dropped == GOLDEN_MSG.dropped
    assert msg.skipped == 0


def test_empty_message_has_all_six_keys() -> None:
    assert encode_pex(PexMessage({})) == (
        b"d5:added0:7:added.f0:6:added60:8:added6.f0:7:dropped0:8:dropped60:e"
    )
    assert decode_pex(b"de") == PexMessage({}, ())


def test_missing_flags_default_to_zero_and_unknown_keys_are_ignored() -> None:
    payload = encode({b"added": b"\x7f\x00\x00\x01\x1a\xe1", b"x-extra": 5, b"e": b"\x01"})
    assert decode_pex(payload) == PexMessage({("127.0.0.1", 6881): 0})


def test_mismatched_flags_are_ignored_not_misattributed() -> None:
    two = b"\x01\x01\x01\x01\x00\x01" + b"\x02\x02\x02\x02\x00\x02"
    payload = encode({b"added": two, b"added.f": b"\x02"})  # one flag for two peers
    assert decode_pex(payload).added == {("1.1.1.1", 1): 0, ("2.2.2.2", 2): 0}


def test_undialable_entries_are_dropped_keeping_flag_alignment() -> None:
    peers = (
        b"\x00\x00\x00\x00\x1a\xe1"  # 0.0.0.0: unspecified
        + b"\x01\x02\x03\x04\x00\x00"  # port 0
        + b"\xe0\x00\x00\x01\x1a\xe1"  # 224.0.0.1: multicast
        + b"\x05\x06\x07\x08\x1a\xe1"  # the only good one, flags byte 4
    )
    payload = encode({b"added": peers, b"added.f": b"\x01\x02\x04\x10"})
    assert decode_pex(payload).added == {("5.6.7.8", 6881): PEX_REACHABLE}


def test_ipv4_mapped_ipv6_comes_out_as_ipv4() -> None:
    mapped = ipaddress.IPv6Address("::ffff:9.8.7.6").packed + struct.pack("!H", 443)
    msg = decode_pex(encode({b"added6": mapped, b"added6.f": b"\x02", b"dropped6": mapped}))
    assert msg.added == {("9.8.7.6", 443): PEX_SEED}
    assert msg.dropped == (("9.8.7.6", 443),)


def test_duplicates_collapse_first_flags_win() -> None:
    entry = b"\x01\x02\x03\x04\x1a\xe1"
    payload = encode({b"added": entry * 3, b"added.f": b"\x02\x04\x08", b"dropped": entry * 2})
    msg = decode_pex(payload)
    assert msg.added == {("1.2.3.4", 6881): PEX_SEED}
    assert msg.dropped == (("1.2.3.4", 6881),)


def test_oversized_lists_are_counted_not_parsed() -> None:
    count = DECODE_LIMIT + 300
    added = b"".join(struct.pack("!IH", 0x0B000000 + i, 1000) for i in range(count))
    dropped = b"".join(struct.pack("!IH", 0x0C000000 + i, 1000) for i in range(count))
    msg = decode_pex(encode({b"added": added, b"added.f": b"\x02" * count, b"dropped": dropped}))
    assert len(msg.added) == DECODE_LIMIT
    assert set(msg.added.values()) == {PEX_SEED}  # flags still aligned with the list
    assert len(msg.dropped) == DECODE_LIMIT
    assert msg.skipped == 600


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"d5:added",  # truncated
        b"le",  # not a dict
        b"i3e",
        encode({b"added": b"\x01\x02\x03\x04\x1a"}),  # 5 bytes
        encode({b"dropped": b"\x01" * 7}),
        encode({b"added6": b"\x01" * 17}),
        encode({b"dropped6": b"\x01" * 19}),
        encode({b"added": 5}),  # wrong type
        encode({b"added.f": [1, 2]}),
        encode({b"dropped6": {b"a": b"b"}}),
        b"d5:added6:\x01\x02\x03\x04\x1a\xe1e trailing",
        b"d1:a" + b"l" * 50 + b"e" * 50 + b"e",  # absurd nesting
    ],
)
def test_malformed_payloads_raise_remote_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_pex(payload)


@pytest.mark.parametrize(
    "msg",
    [
        PexMessage({("example.org", 6881): 0}),
        PexMessage({("1.2.3.4", 0): 0}),
        PexMessage({("1.2.3.4", 70000): 0}),
        PexMessage({("1.2.3.4", 1): 256}),
        PexMessage({}, (("not an ip", 1),)),
    ],
)
def test_encoding_what_ut_pex_cannot_express_is_our_bug(msg: PexMessage) -> None:
    with pytest.raises(LocalProtocolError):
        encode_pex(msg)


# --- codec: properties ---------------------------------------------------------


def _dialable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None
    return not (addr.is_unspecified or addr.is_multicast or mapped)


_ipv4 = st.ip_addresses(v=4).filter(_dialable)
_ipv6 = st.ip_addresses(v=6).filter(_dialable)
_address = st.tuples(st.one_of(_ipv4, _ipv6).map(str), st.integers(1, 65535))


# Round trips explore structure, not bytes: a tenth of the fuzz budget is plenty
# (the caps with many entries are covered by the PexState tests).
@settings(max_examples=max(100, EXAMPLES // 10), deadline=None)
@given(
    st.dictionaries(_address, st.integers(0, 255), max_size=8),
    st.lists(_address, max_size=8, unique=True),
)
def test_round_trip(added: dict[Address, int], dropped: list[Address]) -> None:
    msg = decode_pex(encode_pex(PexMessage(added, tuple(dropped))))
    assert dict(msg.added) == added
    assert set(msg.dropped) == set(dropped)
    assert msg.skipped == 0


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_raise_only_remote_errors(payload: bytes) -> None:
    try:
        decode_pex(payload)
    except RemoteProtocolError:
        pass


_field = st.one_of(
    st.binary(min_size=6, max_size=6),
    st.binary(min_size=12, max_size=12),
    st.binary(min_size=18, max_size=18),
    st.binary(max_size=20),
    st.integers(-(2**70), 2**70),
    st.just([b"\x01"]),
)
_keys = st.sampled_from(
    [b"added", b"added.f", b"dropped", b"added6", b"added6.f", b"dropped6", b"x"]
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(_keys, _field, max_size=4))
def test_fuzz_structured_dicts(fields: dict[bytes, object]) -> None:
    try:
        msg = decode_pex(encode(fields))
    except RemoteProtocolError:
        return
    for (host, port), flags in msg.added.items():
        assert 0 < port < 65536 and 0 <= flags <= 255
        ipaddress.ip_address(host)  # always an IP literal
    assert len(msg.added) <= 2 * DECODE_LIMIT


# --- PexState: sending ---------------------------------------------------------


def test_first_message_is_a_snapshot_without_the_remote_and_non_ip_hosts() -> None:
    remote = v4(1)
    pex = PexState(now=100.0, remote=remote, interval=60.0)
    current = {remote: PEX_REACHABLE, v4(2): PEX_SEED, v6(3): 0, ("localhost", 1): 0}
    assert pex.message_due(100.0)
    msg = pex.build(current, 100.0)
    assert msg is not None
    assert dict(msg.added) == {v4(2): PEX_SEED, v6(3): 0}
    assert msg.dropped == ()
    assert pex.advertised == {v4(2), v6(3)}
    assert not pex.message_due(159.9) and pex.next_deadline() == 160.0
    assert pex.build(current, 159.9) is None  # BEP 11: at most one a minute
    assert pex.stats.messages_sent == 1


def test_first_delay() -> None:
    pex = PexState(now=10.0, first_delay=5.0, interval=1.0)
    assert not pex.message_due(14.0) and pex.build({v4(1): 0}, 14.0) is None
    assert pex.next_deadline() == 15.0
    assert pex.build({v4(1): 0}, 15.0) is not None


def test_later_messages_carry_the_diff() -> None:
    pex = PexState(now=0.0, interval=1.0)
    assert pex.build({v4(1): 0, v4(2): 0, v6(1): 0}, 0.0) is not None
    msg = pex.build({v4(2): 0, v4(3): PEX_SEED, v6(2): 0}, 1.0)
    assert msg is not None
    assert dict(msg.added) == {v4(3): PEX_SEED, v6(2): 0}
    assert set(msg.dropped) == {v4(1), v6(1)}
    assert pex.advertised == {v4(2), v4(3), v6(2)}


def test_unchanged_swarm_sends_nothing_but_restarts_the_interval() -> None:
    pex = PexState(now=0.0, interval=2.0)
    current = {v4(1): 0}
    assert pex.build(current, 0.0) is not None
    assert pex.build(current, 2.0) is None
    assert pex.next_deadline() == 4.0
    assert pex.build({}, 3.0) is None  # not due: the drop waits
    msg = pex.build({}, 4.0)
    assert msg is not None and msg.dropped == (v4(1),) and not msg.added


def test_peer_that_came_and_went_between_messages_is_never_mentioned() -> None:
    pex = PexState(now=0.0, interval=1.0)
    assert pex.build({v4(1): 0}, 0.0) is not None
    # v4(2) connected at 0.3 and left at 0.7: the peer never heard of it.
    msg = pex.build({v4(1): 0}, 1.0)
    assert msg is None
    msg = pex.build({}, 2.0)
    assert msg is not None and msg.dropped == (v4(1),)


def test_caps_per_family_and_leftovers_go_next_time() -> None:
    pex = PexState(now=0.0, interval=1.0, rng=random.Random(7))
    everyone = {v4(i): 0 for i in range(120)} | {v6(i): 0 for i in range(70)}
    seen: list[Address] = []
    sizes = []
    for t in range(4):
        msg = pex.build(everyone, float(t))
        if msg is None:
            break
        fam4 = [a for a in msg.added if ":" not in a[0]]
        fam6 = [a for a in msg.added if ":" in a[0]]
        sizes.append((len(fam4), len(fam6)))
        seen += msg.added
    assert sizes == [(50, 50), (50, 20), (20, 0)]
    assert len(seen) == len(set(seen)) == len(everyone)
    # Everyone leaves: drops are capped the same way.
    drops = []
    for t in range(4, 9):
        msg = pex.build({}, float(t))
        if msg is None:
            break
        assert not msg.added
        drops.append(len(msg.dropped))
    assert drops == [100, 70, 20]
    assert pex.advertised == frozenset()


def test_the_cap_picks_differently_for_different_peers() -> None:
    everyone = {v4(i): 0 for i in range(200)}
    first = [
        frozenset(PexState(now=0.0, rng=random.Random(seed)).build(everyone, 0.0).added)  # type: ignore[union-attr]
        for seed in range(3)
    ]
    assert all(len(f) == MAX_PER_MESSAGE for f in first)
    assert len(set(first)) > 1


def test_build_message_is_the_encoded_build() -> None:
    a = PexState(now=0.0, remote=v4(9), rng=random.Random(1))
    b = PexState(now=0.0, remote=v4(9), rng=random.Random(1))
    current = {v4(i): i % 32 for i in range(80)} | {v6(1): PEX_UTP}
    payload = a.build_message(current, 0.0)
    msg = b.build(current, 0.0)
    assert payload is not None and msg is not None
    assert decode_pex(payload) == msg


# --- PexState: receiving -------------------------------------------------------


def _offer(n: int, base: int = 0) -> PexMessage:
    return PexMessage({v4(base + i, 7000): PEX_REACHABLE for i in range(n)})


def test_accept_caps_addresses_per_message() -> None:
    pex = PexState(now=0.0)
    got = pex.accept(_offer(80), 1.0)
    assert got == [v4(i, 7000) for i in range(MAX_ACCEPT_PER_MESSAGE)]
    assert pex.stats.addresses_accepted == 50 and pex.stats.addresses_refused == 30


def test_accept_rate_limits_messages_on_a_scripted_clock() -> None:
    pex = PexState(now=0.0, min_accept_interval=45.0)
    assert len(pex.accept(_offer(10), 0.0)) == 10
    assert pex.accept(_offer(10, 100), 10.0) == []  # flood: ignored whole
    assert pex.accept(_offer(10, 200), 44.9) == []
    assert pex.stats.messages_ignored == 2
    assert pex.stats.addresses_refused == 20
    got = pex.accept(_offer(10, 300), 45.0)  # an honest 60 s sender with jitter
    assert got == [v4(300 + i, 7000) for i in range(10)]
    assert pex.accept(_offer(1, 400), 60.0) == []  # the window restarts at 45
    assert pex.stats.messages_received == 5


def test_accept_respects_the_pool_room_and_skips_the_remote() -> None:
    remote = v4(0, 7000)
    pex = PexState(now=0.0, remote=remote, min_accept_interval=1.0)
    got = pex.accept(_offer(20), 0.0, room=5)
    assert got == [v4(i, 7000) for i in range(1, 6)]  # v4(0) is the sender itself
    assert pex.accept(_offer(20, 50), 1.0, room=0) == []
    assert pex.accept(_offer(20, 50), 2.0, room=-3) == []  # an over-full pool
    assert pex.stats.addresses_accepted == 5


def test_accept_counts_entries_the_decoder_skipped() -> None:
    pex = PexState(now=0.0)
    pex.accept(PexMessage({v4(1): 0}, skipped=1000), 0.0)
    assert pex.stats.addresses_refused == 1000


def test_hostile_peer_gets_at_most_one_message_per_interval_into_the_pool() -> None:
    """A peer sending a maximal message every second for ten minutes."""
    pex = PexState(now=0.0)
    pool: set[Address] = set()
    for t in range(600):
        offered = _offer(DECODE_LIMIT, base=t * DECODE_LIMIT)
        pool.update(pex.accept(offered, float(t)))
    # 0, 45, 90, ..., 585: fourteen messages honoured.
    assert len(pool) == 14 * MAX_ACCEPT_PER_MESSAGE


# --- private torrents, flags helper --------------------------------------------


def test_private_torrents_do_not_advertise_ut_pex() -> None:
    public = local_extensions(private=False)
    private = local_extensions(private=True)
    assert UT_PEX in public and UT_METADATA in public
    assert UT_PEX not in private and private[UT_METADATA] == public[UT_METADATA]
    assert len(set(public.values())) == len(public) and all(0 < i < 256 for i in public.values())


def test_peer_flags() -> None:
    assert peer_flags(outgoing=False, seed=False) == 0
    assert peer_flags(outgoing=True, seed=True) == PEX_REACHABLE | PEX_SEED
    assert (
        peer_flags(outgoing=False, seed=False, utp=True, prefers_encryption=True)
        == PEX_UTP | PEX_PREFERS_ENCRYPTION
    )
