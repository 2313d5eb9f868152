"""A tiny HTTP tracker for the offline demo swarm, on 127.0.0.1 only.

``core`` has a tracker *client* but no server, and the demo wants the
Trackers tab to show real announces (peers found, seeders and leechers
counted, the next announce ticking down).  This is the smallest server that
does that honestly: BEP 3 announces answered with BEP 23 compact peers, and
BEP 48 scrapes.  It keeps everything in memory and trusts its callers; it
is for the demo's own clients, never for the open internet, which is why it
refuses to bind anything but a loopback address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from aiohttp import web

from core.formats.bencoding import encode
from core.formats.compact import encode_peers4

__all__ = ["DemoTracker"]

#: Seconds between announces we ask for.  Short, so the demo's Trackers tab
#: shows a next-announce countdown that visibly moves.
ANNOUNCE_INTERVAL = 60


@dataclass(slots=True)
class _Swarm:
    """The peers of one info-hash: peer id -> (host, port, bytes left)."""

    peers: dict[bytes, tuple[str, int, int]] = field(default_factory=dict)
    completed: int = 0


class DemoTracker:
    """``/announce`` and ``/scrape`` over aiohttp.web; start with :meth:`start`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the demo tracker only listens on loopback, not {host}")
        self.host = host
        self.port = 0
        self.swarms: dict[bytes, _Swarm] = {}
        self.announces = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The announce URL (valid once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/announce"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/announce", self._announce)
        app.router.add_get("/scrape", self._scrape)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # Bind the socket ourselves: port 0 picks a free port, and we need
        # to know which one to put it in the torrents' announce URLs.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, 0))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        self._runner = runner
        await web.SockSite(runner, sock).start()

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- handlers ------------------------------------------------------------

    @staticmethod
    def _query(request: web.Request) -> dict[str, bytes]:
        # latin-1 maps each percent-decoded byte to one character, so the
        # raw 20-byte info-hash and peer id survive the round trip.
        raw = parse_qs(request.rel_url.raw_query_string, keep_blank_values=True, encoding="latin-1")
        return {k: v[0].encode("latin-1") for k, v in raw.items()}

    @staticmethod
    def _failure(reason: str) -> web.Response:
        return web.Response(body=encode({b"failure reason": reason}))

    async def _announce(self, request: web.Request) -> web.Response:
        q = self._query(request)
        info_hash, peer_id = q.get("info_hash", b""), q.get("peer_id", b"")
        if len(info_hash) != 20 or len(peer_id) != 20:
            return self._failure("info_hash and peer_id must be 20 bytes")
        try:
            port = int(q.get("port", b""))
            left = int(q.get("left", b"0"))
        except ValueError:
            return self._failure("port and left must be integers")
        host = request.remote or self.host
        self.announces += 1
        swarm = self.swarms.setdefault(info_hash, _Swarm())
        event = q.get("event", b"").decode("latin-1")
        if event == "stopped":
            swarm.peers.pop(peer_id, None)
        else:
            swarm.peers[peer_id] = (host, port, left)
            if event == "completed":
                swarm.completed += 1
        others = [(h, p) for pid, (h, p, _) in swarm.peers.items() if pid != peer_id]
        seeders = sum(1 for _, _, lft in swarm.peers.values() if lft == 0)
        body = {
            b"interval": ANNOUNCE_INTERVAL,
            b"min interval": ANNOUNCE_INTERVAL // 2,
            b"complete": seeders,
            b"incomplete": len(swarm.peers) - seeders,
            b"peers": encode_peers4(others),
        }
        return web.Response(body=encode(body))

    async def _scrape(self, request: web.Request) -> web.Response:
        raw = parse_qs(request.rel_url.raw_query_string, encoding="latin-1")
        wanted = [h.encode("latin-1") for h in raw.get("info_hash", [])] or list(self.swarms)
        files = {}
        for info_hash in wanted:
            swarm = self.swarms.get(info_hash)
            if swarm is None:
                continue
            seeders = sum(1 for _, _, left in swarm.peers.values() if left == 0)
            files[info_hash] = {
                b"complete": seeders,
                b"incomplete": len(swarm.peers) - seeders,
                b"downloaded": swarm.completed,
            }
        return web.Response(body=encode({b"files": files}))
