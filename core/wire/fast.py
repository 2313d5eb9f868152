"""BEP 6 allowed-fast set generation.

The set is a pure function of the receiving peer's address, the info-hash and
the piece count, so two peers offering ``k`` pieces to the same host offer the
same ``k`` pieces, and a host cannot collect more sets by using several
addresses of one /24 (only the top three octets count).
"""

from __future__ import annotations

import hashlib
import ipaddress

__all__ = ["DEFAULT_ALLOWED_FAST", "allowed_fast_set"]

#: BEP 6: "We currently set k to 10".
DEFAULT_ALLOWED_FAST = 10


def allowed_fast_set(ip: str, info_hash: bytes, num_pieces: int, k: int) -> list[int]:
    """The first ``k`` allowed-fast piece indices for the peer at ``ip``, in BEP 6 order.

    BEP 6 has no provision for IPv6: an IPv4-mapped IPv6 address is treated
    as its IPv4 address, and a native IPv6 peer gets an empty set (we simply
    offer it no allowed-fast pieces).  ``k`` is capped at ``num_pieces``, where
    the algorithm as written would loop forever.
    """
    if len(info_hash) != 20:
        raise ValueError("info-hash must be 20 bytes")
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is None:
            return []
        addr = addr.ipv4_mapped
    k = min(k, num_pieces)
    if k <= 0:
        return []
    x = (int(addr) & 0xFFFFFF00).to_bytes(4, "big") + info_hash
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < k:
        x = hashlib.sha1(x).digest()
        for j in range(0, 20, 4):
            if len(chosen) >= k:
                break
            index = int.from_bytes(x[j : j + 4], "big") % num_pieces
            if index not in seen:
                seen.add(index)
                chosen.append(index)
    return chosen
