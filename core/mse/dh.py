"""The Diffie-Hellman exchange of MSE: a fixed 768-bit group, generator 2, 160-bit secrets.

The prime is the one the MSE spec fixes (RFC 2409's 768-bit MODP group,
"Oakley group 1"), so there is nothing to negotiate: each side sends
``Y = 2^X mod P`` as 96 big-endian bytes and both compute
``S = Y_other^X_own mod P``.  Private keys are 160 random bits, as the spec
recommends and libtorrent and Vuze do: the group gives about 80 bits of
strength anyway, and a short exponent keeps ``pow`` near 0.4 ms.

Public keys received are checked to lie in ``[2, P-2]``: 0, 1 and ``P-1``
(and anything ``>= P``) would force a predictable shared secret.
"""

from __future__ import annotations

import secrets

__all__ = [
    "GENERATOR",
    "KEY_BYTES",
    "PRIME",
    "PRIVATE_KEY_BITS",
    "new_private_key",
    "public_key",
    "shared_secret",
]

PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    16,
)
GENERATOR = 2
#: Bytes of a public key or shared secret on the wire (768 bits).
KEY_BYTES = 96
PRIVATE_KEY_BITS = 160


def new_private_key() -> int:
    """A fresh random exponent of :data:`PRIVATE_KEY_BITS` bits (never 0 or 1)."""
    while True:
        x = secrets.randbits(PRIVATE_KEY_BITS)
        if x >= 2:
            return x


def public_key(private_key: int) -> bytes:
    """``2^X mod P`` as the 96 big-endian bytes sent on the wire."""
    return pow(GENERATOR, private_key, PRIME).to_bytes(KEY_BYTES, "big")


def shared_secret(private_key: int, their_public: bytes | bytearray | memoryview) -> bytes:
    """``S = Y^X mod P``, 96 big-endian bytes (left-padded with zeros, as the spec hashes it).

    Raises ``ValueError`` for a key of the wrong size or outside ``[2, P-2]``.
    """
    if len(their_public) != KEY_BYTES:
        raise ValueError(f"DH public key of {len(their_public)} bytes, expected {KEY_BYTES}")
    y = int.from_bytes(their_public, "big")
    if not 2 <= y <= PRIME - 2:
        raise ValueError("DH public key outside [2, P-2]")
    return pow(y, private_key, PRIME).to_bytes(KEY_BYTES, "big")
