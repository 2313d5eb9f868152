"""BEP 44 items: immutable values stored under their hash, mutable ones signed with ed25519.

An item's value is kept as its *raw bencoded bytes*: BEP 44 hashes and signs
the value exactly as it appeared on the wire, and decoding then re-encoding
bencode is not an identity (key order, for one), so nothing here ever
re-encodes a value.  :mod:`.krpc` hands the raw span of ``v`` over as it was
received.

Sizes follow the BEP: a value of at most 1,000 bytes, a salt of at most 64,
a 32-byte public key and a 64-byte signature over
``[4:salt<len>:<salt>]3:seqi<seq>e1:v<value>`` (the salt part only when the
salt is not empty).  Signing and verification use ``cryptography``'s
Ed25519, which takes the 32-byte *seed* as the private key (BEP 44's test
vectors print the 64-byte expanded form of libsodium/ref10 instead; its first
half is not the seed, so those vectors can only be checked by verification).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import BencodeError, DhtError
from ..formats import bencoding

__all__ = [
    "KEY_SIZE",
    "MAX_SALT",
    "MAX_SEQ",
    "MAX_VALUE",
    "SIGNATURE_SIZE",
    "Item",
    "ItemError",
    "public_key",
    "signature_payload",
]

#: Largest bencoded value a storing node must accept (BEP 44: "MAY reject" above it).
MAX_VALUE = 1000
#: Longest salt (BEP 44: "MUST NOT be longer than 64 bytes").
MAX_SALT = 64
#: ed25519 public key and signature sizes.
KEY_SIZE = 32
SIGNATURE_SIZE = 64
#: Sequence numbers are signed 64-bit on every implementation (BEP 44: "SHOULD not exceed
#: MAX_INT64"; negatives MAY be rejected, and we do, so the ordering is never ambiguous).
MAX_SEQ = (1 << 63) - 1
#: Seeds ``cryptography`` accepts as an Ed25519 private key.
SEED_SIZE = 32

# The BEP 44 error codes a storing node answers a bad ``put`` with (the same
# numbers as :mod:`.krpc`'s ``ERROR_*``; that module imports this one, not
# the other way round).
_PROTOCOL, _TOO_BIG, _BAD_SIGNATURE, _SALT_TOO_BIG = 203, 205, 206, 207


class ItemError(DhtError):
    """A refused item.  ``code`` is the KRPC error a storing node answers the ``put`` with."""

    def __init__(self, message: str, code: int = _PROTOCOL) -> None:
        super().__init__(message)
        self.code = code


def signature_payload(value: bytes, seq: int, salt: bytes = b"") -> bytes:
    """The bytes a mutable item's signature covers (BEP 44 "Signature Verification").

    Built by concatenation, not by encoding a dict, so a lenient or buggy
    bencode parser can never be talked into a different split of the fields.
    """
    prefix = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    return prefix + b"3:seqi%de1:v" % seq + value


def _seed_key(private_seed: bytes) -> Ed25519PrivateKey:
    if not isinstance(private_seed, bytes) or len(private_seed) != SEED_SIZE:
        raise ItemError(f"an ed25519 seed is {SEED_SIZE} bytes")
    return Ed25519PrivateKey.from_private_bytes(private_seed)


def public_key(private_seed: bytes) -> bytes:
    """The raw 32-byte ed25519 public key of a 32-byte seed (what BEP 44 calls ``k``)."""
    return _seed_key(private_seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_value(value: bytes) -> None:
    if not isinstance(value, bytes):
        raise ItemError("an item's value must be bencoded bytes")
    if len(value) > MAX_VALUE:
        raise ItemError(f"value of {len(value)} bytes is over the {MAX_VALUE}-byte limit", _TOO_BIG)
    try:
        end = bencoding.scan(value) if value else -1
    except BencodeError as exc:
        raise ItemError(f"value is not bencoded: {exc}") from None
    if end != len(value):
        raise ItemError("value must be exactly one bencoded value")


@dataclass(frozen=True, slots=True)
class Item:
    """A BEP 44 item: ``value`` is raw bencode; ``key``/``signature``/``seq`` make it mutable."""

    value: bytes
    key: bytes | None = None
    signature: bytes | None = None
    seq: int | None = None
    salt: bytes = b""

    @property
    def mutable(self) -> bool:
        return self.key is not None

    @property
    def target(self) -> bytes:
        """Where the item lives: SHA-1 of the value (immutable) or of key + salt (mutable)."""
        if self.key is not None:
            return hashlib.sha1(self.key + self.salt).digest()
        return hashlib.sha1(self.value).digest()

    @classmethod
    def immutable(cls, value: bytes) -> Item:
        """An immutable item; ``value`` must already be bencoded (``b"12:Hello World!"``)."""
        item = cls(value)
        item.verify()
        return item

    @classmethod
    def signed(cls, private_seed: bytes, value: bytes, seq: int, salt: bytes = b"") -> Item:
        """A mutable item signed with the ed25519 key of ``private_seed`` (32 bytes)."""
        key = _seed_key(private_seed)
        _check_value(value)
        _check_seq_salt(seq, salt)
        signature = key.sign(signature_payload(value, seq, salt))
        pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(value, pub, signature, seq, salt)

    def verify(self) -> None:
        """Raise :class:`ItemError` (a :class:`~core.errors.DhtError`) unless the item is
        well formed and, when mutable, correctly signed.

        The error's ``code`` is what a storing node answers: 205 value too
        big, 206 bad key, signature size or signature, 207 salt too big, 203
        anything else.
        """
        _check_value(self.value)
        if self.key is None:
            if self.signature is not None or self.seq is not None or self.salt:
                raise ItemError("an immutable item has no signature, seq or salt")
            return
        if not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE:
            raise ItemError(f"public key must be {KEY_SIZE} bytes", _BAD_SIGNATURE)
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise ItemError(f"signature must be {SIGNATURE_SIZE} bytes", _BAD_SIGNATURE)
        if self.seq is None:
            raise ItemError("a mutable item needs a sequence number")
        _check_seq_salt(self.seq, self.salt)
        try:
            Ed25519PublicKey.from_public_bytes(self.key).verify(
                self.signature, signature_payload(self.value, self.seq, self.salt)
            )
        except (InvalidSignature, ValueError):
            raise ItemError("invalid signature", _BAD_SIGNATURE) from None


def _check_seq_salt(seq: int, salt: bytes) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise ItemError(f"sequence number must be an integer in 0..{MAX_SEQ}")
    if not isinstance(salt, bytes):
        raise ItemError("salt must be bytes")
    if len(salt) > MAX_SALT:
        raise ItemError(
            f"salt of {len(salt)} bytes is over the {MAX_SALT}-byte limit", _SALT_TOO_BIG
        )
