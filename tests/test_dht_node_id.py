"""BEP 42 node ids (core/dht/node_id.py): CRC32-C, the BEP's example table, IPv6, exemptions.

CRC32-C is checked against published check values (the CRC catalogue's
"123456789" and RFC 3720's iSCSI vectors), and against a bit-at-a-time
implementation written here; the node id rule against BEP 42's own table of
example ids, which were made by libtorrent.
"""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dht.node_id import crc32c, id_matches_ip, is_exempt, node_id_for_ip
from core.errors import DhtError

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))

# --------------------------------------------------------------------------- CRC32-C


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"", 0x00000000),
        (b"123456789", 0xE3069283),  # the catalogue's check value for CRC-32C
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4: 32 bytes of zeros
        (b"\xff" * 32, 0x62A8AB43),  # ... of ones
        (bytes(range(32)), 0x46DD794E),  # ... incrementing
        (bytes(range(31, -1, -1)), 0x113FDB5C),  # ... decrementing
    ],
)
def test_crc32c_check_values(data: bytes, crc: int) -> None:
    assert crc32c(data) == crc


def _crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


@settings(max_examples=max(100, EXAMPLES // 10))
@given(st.binary(max_size=64))
def test_crc32c_matches_a_bitwise_implementation(data: bytes) -> None:
    assert crc32c(data) == _crc32c_bitwise(data)


# --------------------------------------------------------------------------- BEP 42 examples

# BEP 42 "test vectors": IP, rand, and the example node id (its bold parts are
# the first 21 bits and the last byte; the rest was random).
BEP42 = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42)
def test_bep42_example_ids_match_their_ips(ip: str, rand: int, example: str) -> None:
    assert id_matches_ip(bytes.fromhex(example), ip)


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42)
def test_bep42_generated_ids_have_the_example_prefix(ip: str, rand: int, example: str) -> None:
    expected = bytes.fromhex(example)
    tail = bytes(range(16))
    node_id = node_id_for_ip(ip, rand, tail)
    assert len(node_id) == 20
    assert node_id[:2] == expected[:2]
    assert node_id[2] & 0xF8 == expected[2] & 0xF8  # 21 bits
    assert node_id[3:19] == tail
    assert node_id[19] == rand == expected[19]
    assert node_id[2] & 0x07 == (rand >> 3) & 0x07  # the free bits come from rand
    assert id_matches_ip(node_id, ip)


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42)
def test_bep42_examples_do_not_match_other_ips(ip: str, rand: int, example: str) -> None:
    node_id = bytes.fromhex(example)
    for other, *_ in BEP42:
        if other != ip:
            assert not id_matches_ip(node_id, other)
    # flipping any of the 21 checked bits breaks it; bits after them do not
    for bit in range(24):
        flipped = bytearray(node_id)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        assert id_matches_ip(bytes(flipped), ip) == (bit >= 21)


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42)
def test_bep42_only_the_low_three_bits_of_the_last_byte_count(
    ip: str, rand: int, example: str
) -> None:
    node_id = bytearray(bytes.fromhex(example))
    node_id[19] ^= 0xF8  # rand's free bits
    assert id_matches_ip(bytes(node_id), ip)
    node_id[19] ^= 0x01  # r itself
    assert not id_matches_ip(bytes(node_id), ip)


def test_bep42_the_ipv4_mask() -> None:
    # 0x030f3fff: only the low 2, 4 and 6 bits of the first three octets count
    node_id = bytes.fromhex(BEP42[0][2])
    assert id_matches_ip(node_id, "252.31.75.21")  # 124 ^ 0x80: masked off
    assert id_matches_ip(node_id, "124.223.75.21")  # 31 ^ 0xC0
    assert id_matches_ip(node_id, "124.31.11.21")  # 75 ^ 0x40
    assert not id_matches_ip(node_id, "124.31.75.20")  # the last octet counts whole


# --------------------------------------------------------------------------- IPv6


def _ipv6_prefix(ip: str, r: int) -> int:
    """BEP 42's IPv6 formula, straight from the text: crc32c((ip & mask) | (r << 61)) on 8 bytes."""
    high = int(ipaddress.IPv6Address(ip)) >> 64
    value = (high & 0x0103070F1F3F7FFF) | (r << 61)
    return _crc32c_bitwise(value.to_bytes(8, "big")) >> 11


@pytest.mark.parametrize(
    ("ip", "rand"),
    [("2001:db8::1", 0), ("2a01:4f8:c17:b8f::2", 7), ("2600:1f18:6f2:f100::1", 200)],
)
def test_bep42_ipv6_uses_the_masked_top_64_bits(ip: str, rand: int) -> None:
    node_id = node_id_for_ip(ip, rand, bytes(16))
    assert int.from_bytes(node_id[:3], "big") >> 3 == _ipv6_prefix(ip, rand & 7)
    assert id_matches_ip(node_id, ip)
    # the low 64 bits (the interface id) do not count; masked-off bits neither
    low_changed = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(ip)) ^ 0xFFFF_FFFF))
    assert id_matches_ip(node_id, low_changed)
    masked_off = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(ip)) ^ (0x80 << 120)))
    assert id_matches_ip(node_id, masked_off)


def test_ipv4_mapped_ipv6_counts_as_ipv4() -> None:
    node_id = bytes.fromhex(BEP42[0][2])
    assert id_matches_ip(node_id, "::ffff:124.31.75.21")
    assert node_id_for_ip("::ffff:124.31.75.21", 1, bytes(16)) == node_id_for_ip(
        "124.31.75.21", 1, bytes(16)
    )


@settings(max_examples=max(100, EXAMPLES // 10))
@given(
    st.ip_addresses().map(str),
    st.integers(0, 255),
    st.binary(min_size=16, max_size=16) | st.none(),
)
def test_generated_ids_always_match(ip: str, rand: int, tail: bytes | None) -> None:
    node_id = node_id_for_ip(ip, rand, tail)
    assert len(node_id) == 20 and node_id[19] == rand
    assert id_matches_ip(node_id, ip)


# --------------------------------------------------------------------------- exemptions


@pytest.mark.parametrize(
    ("ip", "exempt"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.1.1", True),
        ("169.254.3.4", True),
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd12:3456::1", True),
        ("::ffff:192.168.0.1", True),
        ("124.31.75.21", False),
        ("192.0.2.1", False),  # documentation range: not a local network
        ("100.64.0.1", False),
        ("2001:db8::1", False),
    ],
)
def test_exempt_addresses(ip: str, exempt: bool) -> None:
    assert is_exempt(ip) is exempt


def test_exempt_addresses_match_any_id() -> None:
    assert id_matches_ip(b"\x00" * 20, "127.0.0.1")
    assert id_matches_ip(b"\xff" * 20, "192.168.1.5")
    assert not id_matches_ip(b"\x00" * 20, "124.31.75.21")


def test_wrong_sizes_never_match() -> None:
    assert not id_matches_ip(b"\x00" * 19, "127.0.0.1")
    assert not id_matches_ip(bytes.fromhex(BEP42[0][2]) + b"\x00", BEP42[0][0])


@pytest.mark.parametrize(
    ("ip", "rand", "tail"),
    [
        ("not an ip", 1, None),
        ("1.2.3.4", 256, None),
        ("1.2.3.4", -1, None),
        ("1.2.3.4", True, None),
        ("1.2.3.4", 1, b"short"),
    ],
)
def test_bad_arguments_are_dht_errors(ip: str, rand: int, tail: bytes | None) -> None:
    with pytest.raises(DhtError):
        node_id_for_ip(ip, rand, tail)


def test_bad_ip_is_a_dht_error_everywhere() -> None:
    with pytest.raises(DhtError):
        id_matches_ip(b"\x00" * 20, "host.example")
    with pytest.raises(DhtError):
        is_exempt("")
