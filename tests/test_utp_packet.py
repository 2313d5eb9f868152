"""uTP packets (core/utp/packet.py): golden vectors, strict decoding, round trips, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import LocalProtocolError, RemoteProtocolError
from core.utp.packet import (
    HEADER_SIZE,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    Packet,
    UtpPacketError,
    decode,
    encode,
    looks_like_utp,
)

# Hand-built: type/version, extension, conn_id, timestamp, timestamp_diff, wnd_size, seq, ack.
SYN_BYTES = bytes.fromhex("41 00 1234 01020304 00000000 00100000 0001 0000")
SYN = Packet(ST_SYN, 0x1234, 0x01020304, 0, 0x100000, 1, 0)

DATA_BYTES = bytes.fromhex("01 00 1235 a0b0c0d0 00000f00 0000ffff fffe 7777") + b"hello"
DATA = Packet(ST_DATA, 0x1235, 0xA0B0C0D0, 0xF00, 0xFFFF, 0xFFFE, 0x7777, payload=b"hello")

STATE_BYTES = bytes.fromhex("21 00 0001 ffffffff 00000001 00000000 0000 ffff")
STATE = Packet(ST_STATE, 1, 0xFFFFFFFF, 1, 0, 0, 0xFFFF)

# STATE with a selective ACK: extension 1, then next=0, len=4, the bitmask.
SACK_BYTES = bytes.fromhex("21 01 0001 00000010 00000020 00004000 0010 0020 00 04 05000080")
SACK = Packet(ST_STATE, 1, 0x10, 0x20, 0x4000, 0x10, 0x20, sack=bytes.fromhex("05000080"))

# DATA with an 8-byte SACK and a payload
DATA_SACK_BYTES = (
    bytes.fromhex("01 01 beef 00000001 00000002 00000003 0004 0005 00 08 ff00ff00 00000001")
    + b"xyz"
)
DATA_SACK = Packet(
    ST_DATA, 0xBEEF, 1, 2, 3, 4, 5, sack=bytes.fromhex("ff00ff0000000001"), payload=b"xyz"
)

FIN_BYTES = bytes.fromhex("11 00 0102 00000000 00000000 00000000 8000 7fff")
FIN = Packet(ST_FIN, 0x0102, 0, 0, 0, 0x8000, 0x7FFF)

RESET_BYTES = bytes.fromhex("31 00 ffff 12345678 9abcdef0 00000000 1111 2222")
RESET = Packet(ST_RESET, 0xFFFF, 0x12345678, 0x9ABCDEF0, 0, 0x1111, 0x2222)

GOLDEN = [
    (SYN_BYTES, SYN),
    (DATA_BYTES, DATA),
    (STATE_BYTES, STATE),
    (SACK_BYTES, SACK),
    (DATA_SACK_BYTES, DATA_SACK),
    (FIN_BYTES, FIN),
    (RESET_BYTES, RESET),
]


@pytest.mark.parametrize(("raw", "packet"), GOLDEN)
def test_golden_vectors_decode_and_encode(raw: bytes, packet: Packet) -> None:
    assert decode(raw) == packet
    assert decode(memoryview(raw)) == packet
    assert encode(packet) == raw


def test_header_size_is_twenty_bytes() -> None:
    assert HEADER_SIZE == 20
    assert len(encode(STATE)) == 20
    assert len(encode(SACK)) == 26


def test_unknown_extension_is_skipped() -> None:
    # extension 2 (libutp's extension bits, 8 bytes), then a SACK, then the payload
    raw = (
        bytes.fromhex("01 02 0007 00000001 00000000 00000400 0009 0003")
        + bytes.fromhex("01 08 0102030405060708")
        + bytes.fromhex("00 04 01000000")
        + b"data"
    )
    packet = decode(raw)
    assert packet.type == ST_DATA
    assert packet.sack == bytes.fromhex("01000000")
    assert packet.payload == b"data"
    # an unknown extension last in the chain, with a zero length
    raw = bytes.fromhex("21 09 0007 00000001 00000000 00000400 0009 0003 00 00") + b"p"
    assert decode(raw).payload == b"p"
    assert decode(raw).sack is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "shorter than the 20-byte header"),
        (SYN_BYTES[:19], "shorter than the 20-byte header"),
        (bytes([0x42]) + SYN_BYTES[1:], "unsupported version 2"),
        (bytes([0x40]) + SYN_BYTES[1:], "unsupported version 0"),
        (bytes([0x51]) + SYN_BYTES[1:], "unknown packet type 5"),
        (bytes([0xF1]) + SYN_BYTES[1:], "unknown packet type 15"),
        # extension announced, no extension header
        (bytes.fromhex("21 01 0001 00000000 00000000 00000000 0000 0000"), "past the end"),
        # extension header present, its data cut short
        (
            bytes.fromhex("21 01 0001 00000000 00000000 00000000 0000 0000 00 04 0000"),
            "past the end",
        ),
        # a chain that goes on past the end
        (
            bytes.fromhex("21 01 0001 00000000 00000000 00000000 0000 0000 02 04 00000000"),
            "past the end",
        ),
        (
            bytes.fromhex("21 02 0001 00000000 00000000 00000000 0000 0000 00 ff") + bytes(10),
            "past the end",
        ),
        # two SACKs
        (
            bytes.fromhex(
                "21 01 0001 00000000 00000000 00000000 0000 0000 01 04 00000000 00 04 00000000"
            ),
            "two selective-ACK",
        ),
    ],
)
def test_malformed_packets_raise_utp_packet_error(raw: bytes, message: str) -> None:
    with pytest.raises(UtpPacketError, match=message) as info:
        decode(raw)
    assert isinstance(info.value, RemoteProtocolError)
    assert str(info.value).startswith("utp: ")


@pytest.mark.parametrize("length", [1, 3, 7, 17])
def test_selective_acks_of_any_length_decode(length: int) -> None:
    """libtorrent 2.x sends SACK bitmasks of any length (BEP 29 asks for multiples of 4)."""
    bitmask = bytes(range(1, length + 1))
    raw = bytes.fromhex("21 01 0001 00000000 00000000 00000000 0000 0000 00") + bytes([length])
    packet = decode(raw + bitmask + b"tail")
    assert packet.sack == bitmask and packet.payload == b"tail"


def test_an_empty_selective_ack_is_no_selective_ack() -> None:
    raw = bytes.fromhex("21 01 0001 00000000 00000000 00000000 0000 0000 00 00")
    assert decode(raw).sack is None


def test_looks_like_utp_accepts_exactly_types_0_to_4_version_1() -> None:
    accepted = {b for b in range(256) if looks_like_utp(b)}
    assert accepted == {0x01, 0x11, 0x21, 0x31, 0x41}
    assert not looks_like_utp(ord("d"))  # KRPC


@pytest.mark.parametrize(
    "packet",
    [
        Packet(5, 0, 0, 0, 0, 0, 0),
        Packet(ST_DATA, 0x10000, 0, 0, 0, 0, 0),
        Packet(ST_DATA, 0, 0, 0, 0, 0x10000, 0),
        Packet(ST_DATA, 0, 1 << 32, 0, 0, 0, 0),
        Packet(ST_STATE, 0, 0, 0, 0, 0, 0, sack=b"\x01\x02\x03"),
        Packet(ST_STATE, 0, 0, 0, 0, 0, 0, sack=b""),
    ],
)
def test_encode_refuses_impossible_fields(packet: Packet) -> None:
    with pytest.raises(LocalProtocolError):
        encode(packet)


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
packets = st.builds(
    Packet,
    type=st.integers(0, 4),
    conn_id=u16,
    timestamp_us=u32,
    timestamp_diff_us=u32,
    wnd_size=u32,
    seq_nr=u16,
    ack_nr=u16,
    sack=st.none()
    | st.integers(1, 63).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    payload=st.binary(max_size=64),
)


@given(packets)
def test_encode_decode_round_trip(packet: Packet) -> None:
    raw = encode(packet)
    assert decode(raw) == packet
    assert looks_like_utp(raw[0])


@given(st.binary(max_size=96))
def test_decode_fuzz_gives_a_packet_or_a_typed_error(raw: bytes) -> None:
    try:
        packet = decode(raw)
    except UtpPacketError:
        return
    # a valid packet re-encodes to something that decodes the same (unknown extensions dropped)
    assert decode(encode(packet)) == packet


@given(
    st.sampled_from([g[0] for g in GOLDEN]), st.integers(0, 40), st.binary(min_size=1, max_size=3)
)
def test_decode_fuzz_of_mutated_golden_vectors(raw: bytes, at: int, junk: bytes) -> None:
    mutated = raw[:at] + junk + raw[at + len(junk) :]
    try:
        decode(mutated)
    except UtpPacketError:
        pass


def test_decoding_a_view_gives_a_payload_view_and_bytes_give_bytes() -> None:
    raw = encode(DATA)
    view = memoryview(bytearray(raw))
    from_view = decode(view)
    assert isinstance(from_view.payload, memoryview)
    assert bytes(from_view.payload) == b"hello"
    view[-1] = ord("!")  # a view: the caller copies what it keeps
    assert bytes(from_view.payload) == b"hell!"
    from_bytes = decode(raw)
    assert isinstance(from_bytes.payload, bytes) and from_bytes == DATA
