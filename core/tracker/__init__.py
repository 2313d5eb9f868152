"""Trackers: one entry point for HTTP(S) and UDP, dispatched by URL scheme.

:func:`announce` and :func:`scrape` hide which protocol a URL uses, so the
announce driver (:mod:`core.tracker.driver`) and the CLI never care.  Every
failure is a :class:`~core.errors.TrackerError`, including a URL with a
scheme we do not speak and a tracker that takes longer than ``timeout``.

:class:`TrackerTransports` holds what a client shares between all its
torrents' announces: one aiohttp session (connection pooling, DNS cache) and
one :class:`UdpTrackerClient` (one socket per family, connection ids reused),
each created on first use so a client without trackers opens neither.

May import ``core.formats``, ``core.events`` (the announce driver publishes
tracker events), ``core.errors`` and ``core.types``; never the engine
(``tests/test_layering.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp

from ..errors import TrackerError
from .announcer import Announcer
from .http import http_announce, http_scrape
from .types import AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeResult, TrackerStatus
from .udp import UdpTrackerClient

#: Longest an announce may take before it counts as failed.  Long enough for
#: a UDP tracker's first two transmissions (BEP 15: 15 s, then 30 s); the
#: announcer then tries the tier's next tracker.
ANNOUNCE_TIMEOUT = 45.0
#: Scrapes are informational: give up sooner.
SCRAPE_TIMEOUT = 20.0

SCHEMES = ("http", "https", "udp")

T = TypeVar("T")


def tracker_scheme(url: str) -> str:
    """``"http"``, ``"https"`` or ``"udp"`` for a tracker URL; :class:`TrackerError` otherwise."""
    if not isinstance(url, str):
        raise TrackerError(f"tracker URL must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise TrackerError(f"invalid tracker URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        what = f"scheme {scheme!r}" if scheme else "no scheme"
        raise TrackerError(f"unsupported tracker URL {url!r}: {what} (http, https, udp)")
    if not parts.netloc:
        raise TrackerError(f"tracker URL has no host: {url!r}")
    return scheme


async def announce(
    url: str,
    req: AnnounceRequest,
    *,
    session: aiohttp.ClientSession | None = None,
    udp: UdpTrackerClient | None = None,
    timeout: float = ANNOUNCE_TIMEOUT,
) -> AnnounceResponse:
    """Announce ``req`` to ``url`` over HTTP(S) or UDP.

    ``session`` / ``udp`` are the shared transports; without them a private
    one is opened for this call and closed after it.
    """
    scheme = tracker_scheme(url)
    if scheme != "udp":
        return await http_announce(session, url, req, timeout=timeout)
    if udp is not None:
        return await _udp_call(udp.announce(url, req), timeout)
    async with UdpTrackerClient() as own:
        return await _udp_call(own.announce(url, req), timeout)


async def scrape(
    url: str,
    info_hashes: Sequence[bytes],
    *,
    session: aiohttp.ClientSession | None = None,
    udp: UdpTrackerClient | None = None,
    timeout: float = SCRAPE_TIMEOUT,
) -> dict[bytes, ScrapeResult]:
    """Scrape ``info_hashes`` from the tracker whose announce URL is ``url``.

    Hashes the tracker gave no figures for are absent from the result.
    """
    scheme = tracker_scheme(url)
    if scheme != "udp":
        return await http_scrape(session, url, info_hashes, timeout=timeout)
    if udp is not None:
        return await _udp_call(udp.scrape(url, info_hashes), timeout)
    async with UdpTrackerClient() as own:
        return await _udp_call(own.scrape(url, info_hashes), timeout)


async def _udp_call(call: Awaitable[T], timeout: float) -> T:
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError:
        raise TrackerError(f"UDP tracker did not answer within {timeout:g} s") from None


class TrackerTransports:
    """A client's shared tracker transports, opened lazily, closed by :meth:`aclose`.

    ``bind_v4`` / ``bind_v6`` are the local addresses of the UDP sockets
    (the client passes its listen addresses); ``user_agent`` goes into every
    HTTP request.
    """

    def __init__(
        self,
        *,
        user_agent: str = "",
        bind_v4: str = "0.0.0.0",
        bind_v6: str = "::",
        udp_base_timeout: float = 15.0,
    ) -> None:
        self.user_agent = user_agent
        self._bind_v4 = bind_v4
        self._bind_v6 = bind_v6
        self._udp_base_timeout = udp_base_timeout
        self._session: aiohttp.ClientSession | None = None
        self._udp: UdpTrackerClient | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> TrackerTransports:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def session(self) -> aiohttp.ClientSession:
        """The shared aiohttp session (created on first use, inside the running loop)."""
        if self._closed:
            raise TrackerError("tracker transports are closed")
        if self._session is None or self._session.closed:
            headers = {"User-Agent": self.user_agent} if self.user_agent else None
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    def udp(self) -> UdpTrackerClient:
        """The shared UDP tracker client (sockets open on first request)."""
        if self._closed:
            raise TrackerError("tracker transports are closed")
        if self._udp is None:
            self._udp = UdpTrackerClient(
                base_timeout=self._udp_base_timeout,
                bind_v4=self._bind_v4,
                bind_v6=self._bind_v6,
            )
        return self._udp

    async def announce(
        self, url: str, req: AnnounceRequest, *, timeout: float = ANNOUNCE_TIMEOUT
    ) -> AnnounceResponse:
        """:func:`announce` over the shared transport for ``url``'s scheme."""
        if tracker_scheme(url) == "udp":
            return await announce(url, req, udp=self.udp(), timeout=timeout)
        return await announce(url, req, session=self.session(), timeout=timeout)

    async def scrape(
        self, url: str, info_hashes: Sequence[bytes], *, timeout: float = SCRAPE_TIMEOUT
    ) -> dict[bytes, ScrapeResult]:
        """:func:`scrape` over the shared transport for ``url``'s scheme."""
        if tracker_scheme(url) == "udp":
            return await scrape(url, info_hashes, udp=self.udp(), timeout=timeout)
        return await scrape(url, info_hashes, session=self.session(), timeout=timeout)

    async def aclose(self) -> None:
        """Close the session and the UDP client; later use raises.  Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        udp, self._udp = self._udp, None
        if session is not None:
            await session.close()
        if udp is not None:
            await udp.close()


__all__ = [
    "ANNOUNCE_TIMEOUT",
    "SCRAPE_TIMEOUT",
    "AnnounceEvent",
    "AnnounceRequest",
    "AnnounceResponse",
    "Announcer",
    "ScrapeResult",
    "TrackerStatus",
    "TrackerTransports",
    "UdpTrackerClient",
    "announce",
    "scrape",
    "tracker_scheme",
]
