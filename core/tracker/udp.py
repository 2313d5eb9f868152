"""asyncio driver for UDP trackers (BEP 15/41) over asyncio-dgram.

One :class:`UdpTrackerClient` per engine ``Client``.  It owns at most one
unconnected UDP socket per address family, shared by every tracker: a
reader task per socket routes each datagram by its source address to that
tracker's :class:`~core.tracker.udp_codec.UdpTrackerSession`, which checks
the transaction id.  A thousand torrents on fifty trackers therefore cost two
sockets, and the connection id of a tracker is reused by all its torrents.

Each tracker address with requests in flight has one small task that sends
what its session wants sent, sleeps until the session's next timer or the
next datagram, and resolves the callers' futures.  All protocol decisions
(retransmission, validation, connection-id expiry) live in the sans-IO
session; this module only moves bytes and time.

asyncio-dgram's receive queue is unbounded, so the reader yields to the loop
every :data:`_YIELD_EVERY` datagrams: a flood of datagrams (spoofed, or from
a hostile tracker) costs a cheap dictionary lookup each and cannot starve
the rest of the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncio_dgram

from core.errors import TrackerError
from core.tracker.types import AnnounceRequest, AnnounceResponse, ScrapeResult
from core.tracker.udp_codec import (
    MAX_SCRAPE_HASHES,
    UdpAnnounced,
    UdpFailed,
    UdpScraped,
    UdpTrackerSession,
)

__all__ = ["UdpTrackerClient", "parse_udp_url"]

_YIELD_EVERY = 64
#: Idle sessions (no request, connection id expired) are pruned past this many.
_MAX_IDLE_SESSIONS = 256

_Key = tuple[int, str, int]  # (family, host, port)


def parse_udp_url(url: str) -> tuple[str, int, bytes]:
    """``udp://host:port[/path?query]`` -> ``(host, port, url_data)``.

    ``host`` has no brackets for IPv6; ``url_data`` is the path and query as
    sent in the BEP 41 URLData option (empty when the URL has neither).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TrackerError(f"invalid UDP tracker URL {url!r}: {exc}") from None
    if parts.scheme.lower() != "udp":
        raise TrackerError(f"not a UDP tracker URL: {url!r}")
    host = parts.hostname
    if not host:
        raise TrackerError(f"UDP tracker URL without a host: {url!r}")
    if port is None or port == 0:
        raise TrackerError(f"UDP tracker URL without a port: {url!r}")
    path = parts.path
    if parts.query:
        path += "?" + parts.query
    try:
        url_data = path.encode("utf-8")
    except UnicodeEncodeError:
        raise TrackerError(f"invalid UDP tracker URL {url!r}") from None
    return host, port, url_data


@dataclass(eq=False)
class _Tracker:
    """Driver-side state of one tracker address."""

    key: _Key
    addr: tuple[str, int]
    session: UdpTrackerSession
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: dict[int, asyncio.Future[object]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class UdpTrackerClient:
    """Announce to and scrape UDP trackers; one instance per engine client.

    ``base_timeout`` is BEP 15's 15 s (tests use a few hundredths).  After
    ``max_attempts`` unanswered transmissions of one request (or of its
    connect) the call raises :class:`TrackerError`.  The default of 4 gives up
    after 15 + 30 + 60 + 120 = 225 s instead of BEP 15's open-ended schedule:
    the announcer backs off and tries again anyway, and a tracker status stuck
    at "announcing" for two hours helps nobody.

    ``bind_v4`` / ``bind_v6`` are the local addresses of the two sockets
    (tests bind to loopback).
    """

    def __init__(
        self,
        *,
        base_timeout: float = 15.0,
        max_attempts: int = 4,
        connection_ttl: float = 60.0,
        bind_v4: str = "0.0.0.0",
        bind_v6: str = "::",
    ) -> None:
        if base_timeout <= 0 or max_attempts < 1:
            raise ValueError("base_timeout must be > 0 and max_attempts >= 1")
        self.base_timeout = base_timeout
        self.max_attempts = max_attempts
        self.connection_ttl = connection_ttl
        self._bind: dict[int, str] = {socket.AF_INET: bind_v4, socket.AF_INET6: bind_v6}
        self._sockets: dict[int, asyncio_dgram.DatagramServer] = {}
        self._readers: dict[int, asyncio.Task[None]] = {}
        self._socket_lock = asyncio.Lock()
        self._trackers: dict[_Key, _Tracker] = {}
        self._closed = False

    async def __aenter__(self) -> UdpTrackerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- public API

    async def announce(self, url: str, req: AnnounceRequest) -> AnnounceResponse:
        """Announce ``req`` to the UDP tracker at ``url``; raises :class:`TrackerError`."""
        host, port, url_data = parse_udp_url(url)
        tracker = await self._tracker_for(host, port)
        loop = asyncio.get_running_loop()
        op = tracker.session.start_announce(req, loop.time(), url_data=url_data)
        result = await self._wait(tracker, op, self._register(tracker, op))
        if not isinstance(result, AnnounceResponse):  # pragma: no cover - session invariant
            raise TrackerError("internal error: scrape result for an announce")
        return result

    async def scrape(self, url: str, info_hashes: Sequence[bytes]) -> dict[bytes, ScrapeResult]:
        """Scrape ``info_hashes`` (any number, 74 per packet) from the tracker at ``url``.

        Hashes the tracker gave no figures for are missing from the result.
        """
        host, port, _url_data = parse_udp_url(url)
        hashes = list(dict.fromkeys(bytes(h) for h in info_hashes))
        if not hashes:
            return {}
        tracker = await self._tracker_for(host, port)
        loop = asyncio.get_running_loop()
        waits = []
        ops: list[int] = []
        for i in range(0, len(hashes), MAX_SCRAPE_HASHES):
            op = tracker.session.start_scrape(hashes[i : i + MAX_SCRAPE_HASHES], loop.time())
            ops.append(op)
            waits.append(self._wait(tracker, op, self._register(tracker, op)))
        try:
            parts = await asyncio.gather(*waits, return_exceptions=True)
        except asyncio.CancelledError:
            for op in ops:
                tracker.session.cancel(op)
                tracker.waiters.pop(op, None)
            raise
        merged: dict[bytes, ScrapeResult] = {}
        for part in parts:
            if isinstance(part, BaseException):
                raise part
            if not isinstance(part, dict):  # pragma: no cover - session invariant
                raise TrackerError("internal error: announce result for a scrape")
            merged.update(part)
        return merged

    async def close(self) -> None:
        """Fail requests in flight, stop the tasks and close the sockets.  Idempotent."""
        self._closed = True
        tasks: list[asyncio.Task[None]] = []
        for tracker in self._trackers.values():
            tracker.session.fail_all("UDP tracker client closed")
            self._deliver(tracker)
            if tracker.task is not None:
                tracker.task.cancel()
                tasks.append(tracker.task)
        self._trackers.clear()
        for reader in self._readers.values():
            reader.cancel()
            tasks.append(reader)
        self._readers.clear()
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def connection_id(self, host: str, port: int) -> int | None:
        """The cached connection id for a tracker address (tests, diagnostics)."""
        for tracker in self._trackers.values():
            if tracker.addr == (host, port):
                return tracker.session.connection_id
        return None

    # -- internals

    async def _tracker_for(self, host: str, port: int) -> _Tracker:
        if self._closed:
            raise TrackerError("UDP tracker client closed")
        errors: list[str] = []
        for family, ip in await self._resolve(host, port):
            key = (family, ip, port)
            tracker = self._trackers.get(key)
            if tracker is not None:
                return tracker
            try:
                await self._socket(family)
            except OSError as exc:
                errors.append(f"{ip}: {exc.strerror or exc}")
                continue
            if self._closed:
                raise TrackerError("UDP tracker client closed")
            self._prune()
            tracker = _Tracker(
                key=key,
                addr=(ip, port),
                session=UdpTrackerSession(
                    ipv6=family == socket.AF_INET6,
                    base_timeout=self.base_timeout,
                    max_attempts=self.max_attempts,
                    connection_ttl=self.connection_ttl,
                ),
            )
            self._trackers[key] = tracker
            return tracker
        raise TrackerError(f"cannot open a UDP socket for {host}: {'; '.join(errors)}")

    async def _resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """``[(family, numeric address)]`` in the resolver's order of preference."""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            if literal.version == 6 and literal.ipv4_mapped is not None:
                return [(socket.AF_INET, str(literal.ipv4_mapped))]
            family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
            return [(family, str(literal))]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            raise TrackerError(f"cannot resolve {host}: {exc}") from None
        out: list[tuple[int, str]] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                entry = (int(family), str(sockaddr[0]))
                if entry not in out:
                    out.append(entry)
        if not out:
            raise TrackerError(f"cannot resolve {host}: no IPv4 or IPv6 address")
        return out

    async def _socket(self, family: int) -> asyncio_dgram.DatagramServer:
        async with self._socket_lock:
            sock = self._sockets.get(family)
            if sock is None:
                sock = await asyncio_dgram.bind((self._bind[family], 0))
                self._sockets[family] = sock
                self._readers[family] = asyncio.create_task(
                    self._read(family, sock), name=f"udp-tracker-reader-{family}"
                )
            return sock

    def _prune(self) -> None:
        if len(self._trackers) < _MAX_IDLE_SESSIONS:
            return
        now = asyncio.get_running_loop().time()
        for key, tracker in list(self._trackers.items()):
            if (
                not tracker.session.busy
                and tracker.task is None
                and not tracker.session.connection_valid(now)
            ):
                del self._trackers[key]

    def _register(self, tracker: _Tracker, op: int) -> asyncio.Future[object]:
        """Create the future for ``op`` before anything can answer it."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        tracker.waiters[op] = future
        return future

    async def _wait(self, tracker: _Tracker, op: int, future: asyncio.Future[object]) -> object:
        if tracker.task is None or tracker.task.done():
            tracker.task = asyncio.create_task(
                self._run(tracker), name=f"udp-tracker-{tracker.addr[0]}:{tracker.addr[1]}"
            )
        tracker.wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            tracker.session.cancel(op)
            raise
        finally:
            tracker.waiters.pop(op, None)

    def _deliver(self, tracker: _Tracker) -> None:
        for event in tracker.session.events():
            future = tracker.waiters.pop(event.op, None)
            if future is None or future.done():
                continue
            if isinstance(event, UdpFailed):
                future.set_exception(event.error)
            elif isinstance(event, UdpAnnounced):
                future.set_result(event.response)
            elif isinstance(event, UdpScraped):
                future.set_result(event.results)

    async def _run(self, tracker: _Tracker) -> None:
        """Drive one tracker's session while it has requests in flight."""
        loop = asyncio.get_running_loop()
        session = tracker.session
        family = tracker.key[0]
        try:
            while True:
                while out := session.datagrams_to_send():
                    sock = self._sockets.get(family)
                    try:
                        if sock is None:
                            raise OSError("socket closed")
                        for datagram in out:
                            await sock.send(datagram, tracker.addr)
                    except (OSError, asyncio_dgram.TransportClosed) as exc:
                        session.fail_all(f"cannot send to {tracker.addr[0]}: {exc}")
                self._deliver(tracker)
                deadline = session.next_timer()
                if deadline is None and not session.busy:
                    return
                tracker.wake.clear()
                if deadline is not None:
                    delay = max(0.0, deadline - loop.time())
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await tracker.wake.wait()
                    session.handle_timer(loop.time())
                else:
                    await tracker.wake.wait()
        finally:
            if tracker.task is asyncio.current_task():
                tracker.task = None

    async def _read(self, family: int, sock: asyncio_dgram.DatagramServer) -> None:
        """Route datagrams of one socket to their tracker's session."""
        loop = asyncio.get_running_loop()
        count = 0
        while True:
            try:
                data, addr = await sock.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError:
                continue  # an ICMP error surfaced by the socket; time-outs deal with it
            if not isinstance(addr, tuple) or len(addr) < 2:
                continue
            tracker = self._trackers.get((family, str(addr[0]), int(addr[1])))
            if tracker is not None:
                tracker.session.receive_datagram(bytes(data), loop.time())
                tracker.wake.set()
            count += 1
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
