"""BEP 44 items (core/dht/items.py): the BEP's test vectors, signing, and every refusal.

BEP 44 prints its private key in the 64-byte expanded form (scalar and
prefix, as ref10/libsodium keep it); ``cryptography`` signs from the 32-byte
seed, which that form does not contain.  So the BEP's signatures are checked
by verifying them (which also proves the signed buffer is built byte for
byte as the BEP says), and signing is checked against RFC 8032's seed and
public key and by round trips.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dht.items import (
    MAX_SALT,
    MAX_VALUE,
    Item,
    ItemError,
    public_key,
    signature_payload,
)
from core.errors import DhtError

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))

HELLO = b"12:Hello World!"
BEP44_KEY = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
BEP44_SIG = bytes.fromhex(
    "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
    "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"
)
BEP44_SIG_SALT = bytes.fromhex(
    "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d"
    "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"
)
# RFC 8032 section 7.1, TEST 1
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


# --------------------------------------------------------------------------- BEP 44 vectors


def test_bep44_signed_buffers() -> None:
    assert signature_payload(HELLO, 1) == b"3:seqi1e1:v12:Hello World!"
    assert signature_payload(HELLO, 1, b"foobar") == b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
    # "if salt is specified and an empty string, it is as if it was not specified"
    assert signature_payload(HELLO, 4, b"") == b"3:seqi4e1:v12:Hello World!"


def test_bep44_test_1_mutable() -> None:
    item = Item(HELLO, BEP44_KEY, BEP44_SIG, 1)
    assert item.mutable
    assert item.target.hex() == "4a533d47ec9c7d95b1ad75f576cffc641853b750"
    item.verify()


def test_bep44_test_2_mutable_with_salt() -> None:
    item = Item(HELLO, BEP44_KEY, BEP44_SIG_SALT, 1, b"foobar")
    assert item.target.hex() == "411eba73b6f087ca51a3795d9c8c938d365e32c1"
    item.verify()


def test_bep44_test_3_immutable() -> None:
    item = Item.immutable(HELLO)
    assert not item.mutable
    assert item.target.hex() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"
    item.verify()


@pytest.mark.parametrize(
    "item",
    [
        Item(HELLO, BEP44_KEY, BEP44_SIG, 2),  # another seq
        Item(b"12:Hello World?", BEP44_KEY, BEP44_SIG, 1),  # another value
        Item(HELLO, BEP44_KEY, BEP44_SIG, 1, b"foobar"),  # the salt is signed too
        Item(HELLO, BEP44_KEY, BEP44_SIG_SALT, 1),  # ... and cannot be dropped
        Item(HELLO, BEP44_KEY, bytes([BEP44_SIG[0] ^ 1]) + BEP44_SIG[1:], 1),
        Item(HELLO, RFC8032_PUBLIC, BEP44_SIG, 1),  # someone else's key
        Item(HELLO, b"\x00" * 32, BEP44_SIG, 1),  # not a point on the curve
    ],
)
def test_tampered_items_fail_with_206(item: Item) -> None:
    with pytest.raises(ItemError) as err:
        item.verify()
    assert err.value.code == 206
    assert isinstance(err.value, DhtError)


# --------------------------------------------------------------------------- signing


def test_public_key_of_the_rfc8032_seed() -> None:
    assert public_key(RFC8032_SEED) == RFC8032_PUBLIC


def test_signed_item() -> None:
    item = Item.signed(RFC8032_SEED, HELLO, 7, b"salt")
    assert item.key == RFC8032_PUBLIC
    assert item.seq == 7 and item.salt == b"salt" and item.value == HELLO
    assert item.signature is not None and len(item.signature) == 64
    assert item.target == hashlib.sha1(RFC8032_PUBLIC + b"salt").digest()
    item.verify()
    # Ed25519 is deterministic: the same input signs the same
    assert Item.signed(RFC8032_SEED, HELLO, 7, b"salt") == item
    assert Item.signed(RFC8032_SEED, HELLO, 8, b"salt").signature != item.signature


def test_signed_refuses_bad_input() -> None:
    with pytest.raises(ItemError):
        Item.signed(b"short", HELLO, 1)
    with pytest.raises(ItemError) as err:
        Item.signed(RFC8032_SEED, HELLO, 1, b"s" * (MAX_SALT + 1))
    assert err.value.code == 207
    with pytest.raises(ItemError) as err:
        Item.signed(RFC8032_SEED, b"997:" + b"x" * 997, 1)
    assert err.value.code == 205
    with pytest.raises(ItemError):
        Item.signed(RFC8032_SEED, b"not bencode", 1)
    with pytest.raises(ItemError):
        Item.signed(RFC8032_SEED, HELLO, -1)


@settings(max_examples=max(100, EXAMPLES // 10))
@given(
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=200).map(lambda b: b"%d:%s" % (len(b), b)),
    st.integers(0, (1 << 63) - 1),
    st.binary(max_size=MAX_SALT),
    st.integers(0, 10_000),
)
def test_signed_items_verify_and_any_change_breaks_them(
    seed: bytes, value: bytes, seq: int, salt: bytes, where: int
) -> None:
    item = Item.signed(seed, value, seq, salt)
    item.verify()
    assert item.key == public_key(seed)
    sig = bytearray(item.signature or b"")
    sig[where % 64] ^= 1 << (where % 8)
    with pytest.raises(ItemError):
        Item(value, item.key, bytes(sig), seq, salt).verify()
    with pytest.raises(ItemError):
        Item(value, item.key, item.signature, seq ^ 1, salt).verify()
    with pytest.raises(ItemError):
        Item(value, item.key, item.signature, seq, salt + b"!").verify()


# --------------------------------------------------------------------------- sizes and shapes


def test_the_largest_value_is_accepted() -> None:
    value = b"996:" + b"x" * 996
    assert len(value) == MAX_VALUE
    Item.immutable(value)
    Item.signed(RFC8032_SEED, value, 1, b"s" * MAX_SALT).verify()


@pytest.mark.parametrize(
    ("item", "code"),
    [
        (Item(b"997:" + b"x" * 997), 205),
        (Item(HELLO, BEP44_KEY, BEP44_SIG, 1, b"s" * (MAX_SALT + 1)), 207),
        (Item(HELLO, BEP44_KEY[:31], BEP44_SIG, 1), 206),
        (Item(HELLO, BEP44_KEY, BEP44_SIG[:63], 1), 206),
        (Item(HELLO, BEP44_KEY, None, 1), 206),
        (Item(HELLO, BEP44_KEY, BEP44_SIG, None), 203),
        (Item(HELLO, BEP44_KEY, BEP44_SIG, -1), 203),
        (Item(HELLO, BEP44_KEY, BEP44_SIG, 1 << 63), 203),
        (Item(HELLO, None, BEP44_SIG, 1), 203),  # a signature without a key
        (Item(HELLO, None, None, None, b"salt"), 203),
        (Item(b""), 203),
        (Item(b"Hello"), 203),
        (Item(b"1:x1:y"), 203),  # two values
        (Item(b"d1:xe"), 203),  # a dict key without a value
    ],
)
def test_refused_items_and_their_codes(item: Item, code: int) -> None:
    with pytest.raises(ItemError) as err:
        item.verify()
    assert err.value.code == code


def test_immutable_checks_its_value() -> None:
    with pytest.raises(DhtError):
        Item.immutable(b"not bencode")
    assert Item.immutable(b"li1ei2ee").target == hashlib.sha1(b"li1ei2ee").digest()
