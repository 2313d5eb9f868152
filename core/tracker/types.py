"""Shared types of the tracker clients (HTTP, UDP) and the announce scheduler.

One request/response shape for both protocols, so the scheduler
(:mod:`core.tracker.announcer`) and the torrent never care which one a URL
uses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AnnounceEvent(enum.Enum):
    """The ``event`` of an announce (BEP 3); NONE is a regular re-announce."""

    NONE = ""
    STARTED = "started"
    COMPLETED = "completed"
    STOPPED = "stopped"

    @property
    def udp_code(self) -> int:
        """The BEP 15 numeric code."""
        return {"": 0, "completed": 1, "started": 2, "stopped": 3}[self.value]


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """What we tell a tracker.  ``info_hash`` and ``peer_id`` are 20 raw bytes."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: AnnounceEvent = AnnounceEvent.NONE
    numwant: int = 50
    key: int = 0  # random per client session, lets the tracker recognise us across IP changes
    compact: bool = True
    tracker_id: bytes | None = None  # echoed back when a tracker sent one


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    """What a tracker answered.  Peers are ``(host, port)``; IPv6 hosts without brackets."""

    interval: float
    min_interval: float | None = None
    peers: tuple[tuple[str, int], ...] = ()
    seeders: int | None = None  # "complete"
    leechers: int | None = None  # "incomplete"
    warning: str | None = None
    tracker_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """BEP 48 / BEP 15 scrape figures for one info-hash."""

    seeders: int
    completed: int
    leechers: int


@dataclass(slots=True)
class TrackerStatus:
    """Per-tracker status as shown to users (torrent stats, the TUI's tracker tab).

    Times are wall-clock seconds since the epoch (``time.time()``), or None.
    """

    url: str
    tier: int
    last_announce: float | None = None
    last_result: str = ""  # "ok", "error", "" (never announced)
    next_announce: float | None = None
    peers_received: int = 0
    seeders: int | None = None
    leechers: int | None = None
    completed: int | None = None
    last_error: str | None = None
    warning: str | None = None
    failures: int = 0  # consecutive failures, drives the back-off
    extra: dict[str, str] = field(default_factory=dict)
