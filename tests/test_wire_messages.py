"""Byte-exact encodings of every peer wire message (BEP 3, 5, 6, 10) and stateless decoding."""

from __future__ import annotations

import pytest
from bitarray import bitarray

from core.errors import RemoteProtocolError
from core.wire.lengths import BLOCK_SIZE, Lengths
from core.wire.messages import (
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Piece,
    Port,
    Reject,
    Request,
    Reserved,
    Suggest,
    Unchoke,
    decode_handshake,
    decode_message,
    encode,
    encode_handshake,
    encode_piece_header,
)

# Expected frames written out by hand from the BEP layouts:
# <4-byte big-endian length><id><payload>.
GOLDEN: list[tuple[Message, str]] = [
    (KeepAlive(), "00000000"),
    (Choke(), "00000001 00"),
    (Unchoke(), "00000001 01"),
    (Interested(), "00000001 02"),
    (NotInterested(), "00000001 03"),
    (Have(0x01020304), "00000005 04 01020304"),
    (Request(1, 0x4000, 0x4000), "0000000d 06 00000001 00004000 00004000"),
    (Piece(1, 0x4000, b"abc"), "0000000c 07 00000001 00004000 616263"),
    (Cancel(2, 0, 0x4000), "0000000d 08 00000002 00000000 00004000"),
    (Port(6881), "00000003 09 1ae1"),
    (Suggest(7), "00000005 0d 00000007"),
    (HaveAll(), "00000001 0e"),
    (HaveNone(), "00000001 0f"),
    (Reject(3, 0x8000, 0x1234), "0000000d 10 00000003 00008000 00001234"),
    (AllowedFast(42), "00000005 11 0000002a"),
    (Extended(3, b"d1:ai1ee"), "0000000a 14 03 64313a6169316565"),
]


@pytest.mark.parametrize(("msg", "hexstr"), GOLDEN, ids=lambda v: type(v).__name__)
def test_encode_is_byte_exact(msg: Message, hexstr: str) -> None:
    assert encode(msg) == bytes.fromhex(hexstr.replace(" ", ""))


@pytest.mark.parametrize(("msg", "hexstr"), GOLDEN, ids=lambda v: type(v).__name__)
def test_decode_inverts_encode(msg: Message, hexstr: str) -> None:
    assert decode_message(bytes.fromhex(hexstr.replace(" ", ""))) == msg


def test_bitfield_is_big_endian_and_zero_padded() -> None:
    bits = bitarray("1010000011", endian="big")
    frame = encode(Bitfield(bits))
    assert frame == bytes.fromhex("00000003 05 a0c0".replace(" ", ""))
    decoded = decode_message(frame)
    assert isinstance(decoded, Bitfield)
    assert decoded.bits == bitarray("1010000011000000")


def test_piece_header_matches_full_encoding() -> None:
    data = bytes(range(256)) * 64
    assert encode_piece_header(5, 16384, len(data)) + data == encode(Piece(5, 16384, data))


def test_handshake_layout_and_reserved_bits() -> None:
    reserved = Reserved.make(dht=True, fast=True, extended=True)
    assert reserved.raw == bytes.fromhex("0000000000100005")
    assert (reserved.dht, reserved.fast, reserved.extended) == (True, True, True)
    assert not any((Reserved().dht, Reserved().fast, Reserved().extended))
    info_hash, peer_id = b"\xaa" * 20, b"-PY0001-abcdefghijkl"
    hs = encode_handshake(info_hash, peer_id, reserved)
    assert len(hs) == 68
    assert hs[:20] == b"\x13BitTorrent protocol"
    assert hs[20:28] == reserved.raw and hs[28:48] == info_hash and hs[48:] == peer_id
    assert decode_handshake(hs) == (reserved, info_hash, peer_id)
    assert decode_handshake(hs[:48]) == (reserved, info_hash, None)


def test_bad_handshake() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_handshake(b"\x13BitTorrent protocoX" + bytes(48))
    with pytest.raises(RemoteProtocolError):
        decode_handshake(b"\x13BitTorrent protocol")


@pytest.mark.parametrize(
    "frame",
    [
        "000000",  # truncated prefix
        "00000002 00 00",  # choke with a payload
        "00000004 04 000000",  # short have
        "00000001 63",  # unknown id 99
        "0000000d 06 00000001 00004000 000040",  # length disagrees with bytes
        "00000009 07 00000000 00000000",  # empty block
        "00000001 14",  # extended without its id byte
    ],
)
def test_decode_rejects_malformed_frames(frame: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(bytes.fromhex(frame.replace(" ", "")))


def test_oversized_piece_frame_rejected() -> None:
    frame = encode(Piece(0, 0, bytes(BLOCK_SIZE + 1)))
    with pytest.raises(RemoteProtocolError):
        decode_message(frame)
    assert isinstance(decode_message(encode(Piece(0, 0, bytes(BLOCK_SIZE)))), Piece)


def test_encode_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        encode(Have(1 << 32))
    with pytest.raises(ValueError):
        encode(Port(70000))
    with pytest.raises(ValueError):
        encode(Extended(256, b""))


def test_lengths_short_last_piece_and_block() -> None:
    lengths = Lengths(piece_length=3 * BLOCK_SIZE, total_length=7 * BLOCK_SIZE + 100)
    assert lengths.num_pieces == 3
    assert [lengths.piece_size(i) for i in range(3)] == [3 * BLOCK_SIZE] * 2 + [BLOCK_SIZE + 100]
    assert lengths.num_blocks(2) == 2
    assert lengths.block_length(2, BLOCK_SIZE) == 100
    assert lengths.block_length(0, 2 * BLOCK_SIZE) == BLOCK_SIZE
    assert lengths.block_error(2, BLOCK_SIZE, 100) is None
    assert lengths.block_error(2, BLOCK_SIZE, 101) is not None
    assert lengths.block_error(3, 0, 1) is not None
    assert lengths.block_error(0, 0, BLOCK_SIZE + 1) is not None
    assert lengths.block_error(0, 0, 0) is not None
    with pytest.raises(IndexError):
        lengths.piece_size(3)
    with pytest.raises(ValueError):
        Lengths(0, 10)
