"""Message Stream Encryption / Protocol Encryption (MSE/PE), sans-IO.

MSE is the obfuscation layer Azureus designed in 2006 and every mainstream
client speaks (libtorrent, uTorrent, Transmission, qBittorrent): a
Diffie-Hellman exchange over a fixed 768-bit group, then RC4 (or, by
agreement, plaintext) under the BitTorrent wire protocol.  It is not
security, it hides the protocol from traffic shapers that throttle plain
BitTorrent, and many peers refuse connections without it.

The package is sans-IO in the house style: bytes in, bytes and a result out,
no sockets, no clock (timeouts belong to :mod:`core.net.mse_stream`, the
stream layer that drives it).  Modules:

- :mod:`.dh`: the group and the key exchange (stdlib ``pow``);
- :mod:`.rc4`: RC4 from ``cryptography``'s decrepit ciphers, with the
  1,024-byte keystream discard MSE prescribes;
- :mod:`.handshake`: the initiator and responder state machines, the
  crypto-method policy and the SKEY (info-hash) lookup for incoming
  connections.
"""

from __future__ import annotations

from .handshake import (
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    MseError,
    MseInitiator,
    MseResponder,
    MseResult,
    SkeyIndex,
    is_plain_bittorrent,
)
from .rc4 import Rc4

__all__ = [
    "CRYPTO_PLAINTEXT",
    "CRYPTO_RC4",
    "MseError",
    "MseInitiator",
    "MseResponder",
    "MseResult",
    "Rc4",
    "SkeyIndex",
    "is_plain_bittorrent",
]
