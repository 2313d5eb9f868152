"""Bencode: strict validation with offsets, raw spans, prefixes, round-trips."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import BencodeError, TorrentError
from core.formats.bencoding import (
    decode,
    decode_prefix,
    decode_with_spans,
    dict_spans,
    encode,
    scan,
)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"i0e", 0),
        (b"i-42e", -42),
        (b"i9223372036854775808e", 2**63),
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"le", []),
        (b"l4:spami42ee", [b"spam", 42]),
        (b"de", {}),
        (b"d3:cow3:moo4:spam4:eggse", {b"cow": b"moo", b"spam": b"eggs"}),
        (b"d4:spaml1:a1:bee", {b"spam": [b"a", b"b"]}),
    ],
)
def test_bep3_examples_decode(data: bytes, value: object) -> None:
    assert decode(data) == value
    assert encode(value) == data


def test_strings_stay_bytes_even_when_utf8() -> None:
    value = decode("d4:name6:caf\u00e9!e".encode())
    assert value == {b"name": "caf\u00e9!".encode()}
    assert all(isinstance(k, bytes) for k in value)


def test_dict_order_is_kept_on_decode_and_sorted_on_encode() -> None:
    value = decode(b"d1:bi1e1:ai2ee")
    assert list(value) == [b"b", b"a"]
    assert encode(value) == b"d1:ai2e1:bi1ee"


def test_encode_accepts_str_and_sorts_by_raw_bytes() -> None:
    assert encode({"b": "x", b"a": [1, b"y"]}) == b"d1:ali1e1:ye1:b1:xe"


@pytest.mark.parametrize(
    ("data", "offset", "fragment"),
    [
        (b"", 0, "unexpected end"),
        (b"i03e", 0, "leading zero"),
        (b"i-0e", 0, "negative zero"),
        (b"ie", 0, "invalid integer"),
        (b"i1x2e", 0, "invalid integer"),
        (b"i12", 0, "unterminated"),
        (b"03:abc", 0, "leading zero"),
        (b"5:ab", 0, "past the end"),
        (b"99999999999999999999:a", 0, "past the end"),
        (b"d1:ai1e1:ai2ee", 7, "duplicate"),
        (b"di1ei2ee", 1, "not a string"),
        (b"d1:ae", 4, "without a value"),
        (b"l4:spam", 7, "unexpected end"),
        (b"x", 0, "unexpected byte"),
        (b"i1ei2e", 3, "trailing data"),
        (b"-1:", 0, "unexpected byte"),
    ],
)
def test_malformed_input_reports_offset(data: bytes, offset: int, fragment: str) -> None:
    with pytest.raises(BencodeError) as info:
        decode(data)
    assert info.value.offset == offset
    assert fragment in str(info.value)
    assert isinstance(info.value, TorrentError)


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    data = b"l" * 100_000 + b"e" * 100_000
    with pytest.raises(BencodeError, match="nesting deeper"):
        decode(data)
    assert decode(b"l" * 200 + b"e" * 200) is not None


def test_size_limit() -> None:
    with pytest.raises(BencodeError, match="exceeds"):
        decode(b"4:spam", max_size=5)


def test_non_bytes_input_is_a_typed_error() -> None:
    with pytest.raises(BencodeError):
        decode("i1e")  # type: ignore[arg-type]


def test_unsorted_info_keeps_the_hash_of_its_raw_bytes() -> None:
    raw_info = b"d4:name1:x12:piece lengthi16384e6:lengthi1e6:pieces20:" + b"\x00" * 20 + b"e"
    torrent = b"d8:announce3:url4:info" + raw_info + b"e"
    spans = dict_spans(torrent)
    start, end = spans[b"info"]
    assert torrent[start:end] == raw_info
    # Re-encoding would sort the keys and change the hash; the span does not.
    assert encode(decode(raw_info)) != raw_info
    assert hashlib.sha1(torrent[start:end]).digest() == hashlib.sha1(raw_info).digest()


def test_decode_prefix_returns_end_offset_for_trailing_payload() -> None:
    msg = b"d8:msg_typei1e5:piecei0e10:total_sizei8ee" + b"RAWBYTES"
    value, end = decode_prefix(msg)
    assert value == {b"msg_type": 1, b"piece": 0, b"total_size": 8}
    assert msg[end:] == b"RAWBYTES"


def test_scan_from_offset() -> None:
    data = b"xxi5e4:spam"
    assert scan(data, 2) == 5
    assert scan(data, 5) == len(data)


@pytest.mark.parametrize("value", [True, 1.5, None, {1: 2}, object()])
def test_unencodable_values(value: object) -> None:
    with pytest.raises(BencodeError):
        encode(value)


bencodable = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def _canonical(value: object) -> object:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


@given(bencodable)
def test_roundtrip(value: object) -> None:
    data = encode(value)
    assert _canonical(decode(data)) == _canonical(value)
    assert encode(decode(data)) == data
    assert scan(data) == len(data)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_bencode_error(data: bytes) -> None:
    try:
        decode(data)
    except BencodeError:
        pass


@given(bencodable, st.data())
def test_mutated_valid_data_raises_only_bencode_error(value: object, data: st.DataObject) -> None:
    raw = bytearray(encode(value))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    try:
        decode(bytes(raw[:cut]))
    except BencodeError:
        pass


def test_decode_with_spans_matches_decode_and_dict_spans() -> None:
    data = b"d8:announce3:url4:infod4:name1:x6:lengthi1ee7:commenti5ee"
    value, spans = decode_with_spans(data)
    assert value == decode(data)
    assert spans == dict_spans(data)
    with pytest.raises(BencodeError, match="trailing"):
        decode_with_spans(data + b"x")
    with pytest.raises(BencodeError, match="expected a dict"):
        decode_with_spans(b"i1e")


@given(st.binary(max_size=200))
def test_decode_with_spans_raises_only_bencode_error(data: bytes) -> None:
    try:
        decode_with_spans(b"d" + data)
    except BencodeError:
        pass
