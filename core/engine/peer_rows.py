"""One row per connected peer of a torrent: what a peer table (or a script) shows.

The values come from several owners (the connection's protocol state, the
picker's outstanding requests, the choker's snub rule, the blame ledger), so
they are gathered here, in one pass, into immutable :class:`PeerRow` values
that a UI or a library user can keep without holding engine objects.

Seam (issue 12): it reads the torrent through :class:`PeerRowsHost`
(``Torrent`` satisfies it) and never imports ``torrent.py``; calls go one
way, the torrent asks for rows and nothing here changes state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ..events import PeerRow
from .choker import is_snubbed

if TYPE_CHECKING:
    from .peer import Peer
    from .picker import Picker

__all__ = ["PeerRowsHost", "peer_rows"]


class PeerRowsHost(Protocol):
    """What the rows are gathered from: the torrent's peers and its picker."""

    @property
    def has_info(self) -> bool: ...
    @property
    def num_pieces(self) -> int: ...
    @property
    def peers(self) -> Iterable[Peer]: ...
    @property
    def picker(self) -> Picker: ...


def peer_rows(t: PeerRowsHost, now: float | None = None) -> tuple[PeerRow, ...]:
    """The torrent's connected peers, in connection order (``now``: ``time.monotonic()``)."""
    if now is None:
        now = time.monotonic()
    n = max(1, t.num_pieces) if t.has_info else 1
    rows = []
    for p in t.peers:
        conn = p.proto.conn if p.proto is not None else None
        has = p.has.count() / n if p.has is not None else 0.0
        oldest = conn.oldest_request_at if conn is not None else None
        rows.append(
            PeerRow(
                address=p.address,
                client=p.client,
                source=p.source,
                transport=p.link.transport,
                encrypted=p.link.encrypted,
                progress=1.0 if p.is_seed else has,
                down_rate=p.down_rate.rate(now),
                up_rate=p.up_rate.rate(now),
                am_choking=conn.am_choking if conn else True,
                am_interested=conn.am_interested if conn else False,
                peer_choking=conn.peer_choking if conn else True,
                peer_interested=conn.peer_interested if conn else False,
                requests_outstanding=t.picker.outstanding_count(p) if t.has_info else 0,
                incoming=p.incoming,
                snubbed=conn is not None
                and is_snubbed(
                    now,
                    p.last_block_at,
                    we_are_interested=conn.am_interested,
                    peer_chokes_us=conn.peer_choking,
                ),
                hash_failures=p.hash_failures,
                on_parole=p.on_parole,
                requests_queued=len(conn.their_requests) if conn is not None else 0,
                oldest_request_wait=None if oldest is None else max(0.0, now - oldest),
            )
        )
    return tuple(rows)
