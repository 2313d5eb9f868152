"""BEP 10 extension handshake and BEP 9 ut_metadata codecs."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import RemoteProtocolError
from core.formats.bencoding import decode, encode
from core.wire.extensions import (
    ExtensionHandshake,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_extension_handshake,
    decode_metadata_message,
    encode_extension_handshake,
    encode_metadata_message,
)

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))


def test_bep10_example_payload() -> None:
    # The encoded handshake given in BEP 10.  The BEP prints "6:µT_PEX", but
    # "µ" is two bytes in UTF-8, so the honest length prefix is 7.
    payload = b"d1:md11:LT_metadatai1e7:\xc2\xb5T_PEXi2ee1:pi6881e1:v13:\xc2\xb5Torrent 1.2e"
    hs = decode_extension_handshake(payload)
    assert hs.m == {"LT_metadata": 1, "\u00b5T_PEX": 2}
    assert hs.p == 6881
    assert hs.v == "\u00b5Torrent 1.2"
    assert hs.reqq is None and hs.yourip is None and hs.metadata_size is None


def test_round_trip_all_fields() -> None:
    hs = ExtensionHandshake(
        m={"ut_metadata": 3, "ut_pex": 1},
        v="pytorrent 0.1",
        p=51413,
        reqq=500,
        yourip=ipaddress.ip_address("2001:db8::7"),
        ipv4=ipaddress.IPv4Address("192.0.2.4"),
        ipv6=ipaddress.IPv6Address("2001:db8::1"),
        metadata_size=31235,
    )
    payload = encode_extension_handshake(hs)
    assert decode_extension_handshake(payload) == hs
    raw = decode(payload)
    assert raw[b"yourip"] == bytes.fromhex("20010db8000000000000000000000007")
    assert raw[b"ipv4"] == bytes([192, 0, 2, 4])
    assert raw[b"m"] == {b"ut_metadata": 3, b"ut_pex": 1}


def test_malformed_optional_fields_are_ignored() -> None:
    payload = encode(
        {
            b"m": {b"ut_metadata": 2},
            b"p": 70000,
            b"reqq": -3,
            b"yourip": b"abc",
            b"ipv4": b"\x01\x02\x03",
            b"metadata_size": 0,
            b"v": 5,
            b"x_unknown": [1, 2],
        }
    )
    hs = decode_extension_handshake(payload)
    assert hs == ExtensionHandshake(m={"ut_metadata": 2})


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"le",
        b"d1:mi1ee",
        b"d1:md11:ut_metadatai256eee",
        b"d1:md11:ut_metadata3:abcee",
        b"d1:md11:ut_metadatai-1eee",
        b"d1:m",
        b"d1:mdee" + b"x",
    ],
)
def test_bad_handshakes_raise_remote_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_extension_handshake(payload)


def test_metadata_messages_byte_exact() -> None:
    assert encode_metadata_message(MetadataRequest(0)) == b"d8:msg_typei0e5:piecei0ee"
    assert encode_metadata_message(MetadataReject(4)) == b"d8:msg_typei2e5:piecei4ee"
    data = encode_metadata_message(MetadataData(1, 34256, b"xxxx"))
    assert data == b"d8:msg_typei1e5:piecei1e10:total_sizei34256eexxxx"
    for msg in (MetadataRequest(0), MetadataReject(4), MetadataData(1, 34256, b"xxxx")):
        assert decode_metadata_message(encode_metadata_message(msg)) == msg


@pytest.mark.parametrize(
    "payload",
    [
        b"d8:msg_typei0e5:piecei0eeX",  # trailing bytes after a request
        b"d8:msg_typei3e5:piecei0ee",  # unknown type
        b"d8:msg_typei0e5:piecei-1ee",
        b"d8:msg_typei1e5:piecei0ee",  # data without total_size
        b"d8:msg_typei1e5:piecei0e10:total_sizei0ee",
        b"d8:msg_typei1e5:piecei0e10:total_sizei9ee" + bytes(16385),
        b"i5e",
        b"d8:msg_type",
    ],
)
def test_bad_metadata_messages(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_metadata_message(payload)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=200))
def test_random_payloads_raise_only_remote_errors(payload: bytes) -> None:
    for decoder in (decode_extension_handshake, decode_metadata_message):
        try:
            decoder(payload)
        except RemoteProtocolError:
            pass
