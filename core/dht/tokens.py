"""Announce tokens (BEP 5): proof that an ``announce_peer`` comes from where the ``get_peers`` went.

A node answering ``get_peers`` hands the querier a token; an
``announce_peer`` (or a BEP 44 ``put``) is only honoured when it carries a
token we issued to the *same IP address* recently.  That stops a third party
from announcing someone else's address, the reflection attack BEP 5 guards
against.

Tokens are ``sha1(secret + packed ip)`` truncated to :data:`TOKEN_LENGTH`
bytes, so nothing is stored per querier: we only keep the current secret and
the previous one.  Secrets rotate every ``rotation`` seconds and a token is
accepted under either, so a token lives between one and two rotation
periods (BEP 5 says "up to ten minutes" for a five-minute rotation).

Sans-IO: the caller passes ``now``; randomness comes from the ``rng`` given
(the node passes :class:`random.SystemRandom` unless a test or the
simulation wants determinism).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
from functools import lru_cache

__all__ = ["SECRET_LENGTH", "TOKEN_LENGTH", "TokenManager", "packed_ip"]

#: Bytes of each secret.
SECRET_LENGTH = 16
#: Bytes of a token on the wire: unguessable for one rotation period is all a
#: token must be, and short tokens keep ``get_peers`` replies small.
TOKEN_LENGTH = 8


@lru_cache(maxsize=4096)
def packed_ip(ip: str) -> bytes:
    """The 4- or 16-byte form of ``ip`` (IPv4-mapped IPv6 counts as IPv4); b"" if not an IP."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return b""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.packed
    return addr.packed


class TokenManager:
    """Issues and checks announce tokens; counts how many it issued (for the stats)."""

    __slots__ = ("_current", "_next_rotation", "_previous", "_rng", "issued", "rotation")

    def __init__(
        self, *, now: float, rotation: float = 300.0, rng: random.Random | None = None
    ) -> None:
        self._rng = rng if rng is not None else random.SystemRandom()
        self.rotation = max(1.0, rotation)
        self._current = self._rng.randbytes(SECRET_LENGTH)
        self._previous = self._current
        self._next_rotation = now + self.rotation
        #: Tokens handed out since start.
        self.issued = 0

    @property
    def next_rotation(self) -> float:
        """When :meth:`rotate_if_due` will next change the secret."""
        return self._next_rotation

    def rotate_if_due(self, now: float) -> bool:
        """Rotate the secret when its period is over; True if it rotated.

        After a long pause (a suspended laptop) both secrets are replaced, so
        tokens from before the pause stop working, as they would have.
        """
        if now < self._next_rotation:
            return False
        if now >= self._next_rotation + self.rotation:
            self._previous = self._rng.randbytes(SECRET_LENGTH)
        else:
            self._previous = self._current
        self._current = self._rng.randbytes(SECRET_LENGTH)
        self._next_rotation = now + self.rotation
        return True

    @staticmethod
    def _make(secret: bytes, ip: bytes) -> bytes:
        return hashlib.sha1(secret + ip).digest()[:TOKEN_LENGTH]

    def issue(self, ip: str) -> bytes:
        """The token for a querier at ``ip`` under the current secret."""
        self.issued += 1
        return self._make(self._current, packed_ip(ip))

    def check(self, token: bytes | None, ip: str) -> bool:
        """Whether ``token`` was issued to ``ip`` under the current or the previous secret."""
        if not isinstance(token, bytes) or len(token) != TOKEN_LENGTH:
            return False
        packed = packed_ip(ip)
        if not packed:
            return False
        return hmac.compare_digest(token, self._make(self._current, packed)) or hmac.compare_digest(
            token, self._make(self._previous, packed)
        )
