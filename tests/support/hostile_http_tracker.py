"""A misbehaving HTTP tracker for tests, on 127.0.0.1 with an ephemeral port.

Its behaviour is chosen by the first path segment, so one server covers every
case and a test names the misbehaviour in the URL it announces to:

============================  ==================================================
``/good/announce``            compact ``peers`` + ``peers6``, counts, warning,
                              tracker id, intervals
``/dict/announce``            BEP 3 dictionary peers (one of them malformed)
``/passkey/announce``         good answer (and scrape), but only when the query
                              starts with ``passkey=`` + :data:`PASSKEY`
``/garbage/announce``         bytes that are not bencode
``/huge/announce``            a 50 MB body streamed without Content-Length
``/hang/announce``            headers, a few bytes, then nothing ever again
``/silent/announce``          accepts the request and never answers at all
``/error/announce``           HTTP 500
``/refused/announce``         HTTP 403 with a bencoded ``failure reason``
``/failure/announce``         HTTP 200 with a ``failure reason``
``/loop/announce``            redirects to itself forever
``/pingpong/announce``        redirects between two URLs forever
``/chain/announce``           N redirects (``?hops=`` in the path state) then good
``/redirect/announce``        one 302 to ``/good/announce`` with the same query
``/ftp/announce``             redirects to a ``file://`` URL
``/nolocation/announce``      a 301 without a Location header
``/gzip/announce``            the good answer gzip-encoded
``/bomb/announce``            ~100 KB of gzip that inflates to 100 MB of zeros
``/good/scrape``              BEP 48 scrape of whatever hashes were asked for
============================  ==================================================

Every request's raw path and raw query string is recorded in
:attr:`HostileHttpTracker.requests`, exactly as it arrived on the wire, so
tests can check the percent-encoding of binary values byte for byte.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import struct
import urllib.parse
import zlib
from dataclasses import dataclass

from aiohttp import web

from core.formats.bencoding import encode

GOOD_PEERS4: tuple[tuple[str, int], ...] = (("10.0.0.1", 6881), ("192.168.1.2", 51413))
GOOD_PEERS6: tuple[tuple[str, int], ...] = (("2001:db8::1", 6881), ("fe80::2", 1))
GOOD_INTERVAL = 900
GOOD_MIN_INTERVAL = 60
GOOD_SEEDERS = 7
GOOD_LEECHERS = 3
GOOD_WARNING = "this is only a test"
GOOD_TRACKER_ID = b"tid-\x00\xff"
FAILURE_TEXT = "info_hash not registered"
PASSKEY = "s3cr3t%2Fkey"
HUGE_SIZE = 50 << 20
BOMB_SIZE = 100 << 20


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    path: str  # raw path, as on the request line, without the query
    query: str  # raw query string, percent-escapes untouched


def _compact(peers: tuple[tuple[str, int], ...], family: int) -> bytes:
    out = b""
    for host, port in peers:
        addr = ipaddress.ip_address(host)
        assert addr.version == family
        out += addr.packed + struct.pack("!H", port)
    return out


def good_body() -> bytes:
    """The body of a good compact answer (built by hand, independent of the client)."""
    return encode(
        {
            b"interval": GOOD_INTERVAL,
            b"min interval": GOOD_MIN_INTERVAL,
            b"complete": GOOD_SEEDERS,
            b"incomplete": GOOD_LEECHERS,
            b"warning message": GOOD_WARNING.encode(),
            b"tracker id": GOOD_TRACKER_ID,
            b"peers": _compact(GOOD_PEERS4, 4),
            b"peers6": _compact(GOOD_PEERS6, 6),
        }
    )


def dict_body() -> bytes:
    return encode(
        {
            b"interval": GOOD_INTERVAL,
            b"peers": [
                {b"ip": b"10.1.2.3", b"port": 6881, b"peer id": b"A" * 20},
                {b"ip": b"::1", b"port": 6882, b"peer id": b"B" * 20},
                {b"ip": b"not an address", b"port": 1},
                {b"ip": b"10.9.9.9", b"port": 0},
                {b"port": 5},
            ],
        }
    )


def _bomb() -> bytes:
    """gzip of BOMB_SIZE zero bytes, built in 1 MiB steps to stay small in memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    zeros = bytes(1 << 20)
    parts = [comp.compress(zeros) for _ in range(BOMB_SIZE >> 20)]
    parts.append(comp.flush())
    return b"".join(parts)


class HostileHttpTracker:
    """``async with HostileHttpTracker() as t: t.url("/good/announce")``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._bomb: bytes | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> HostileHttpTracker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        self.requests.append(RecordedRequest(raw_path, raw_query))
        parts = raw_path.strip("/").split("/")
        kind, last = parts[0], parts[-1]
        handler = getattr(self, "_do_" + kind.replace("-", "_"), None)
        if handler is None:
            return web.Response(status=404, text="no such behaviour")
        response: web.StreamResponse = await handler(request, raw_query, parts, last)
        return response

    async def _wait_stop(self) -> None:
        await self._stopping.wait()

    # behaviours ---------------------------------------------------------------

    async def _do_good(
        self, request: web.Request, query: str, parts: list[str], last: str
    ) -> web.StreamResponse:
        if last == "scrape":
            return web.Response(body=self._scrape_body(query))
        return web.Response(body=good_body(), content_type="text/plain")

    async def _do_dict(self, *_: object) -> web.StreamResponse:
        return web.Response(body=dict_body())

    async def _do_passkey(
        self, request: web.Request, query: str, parts: list[str], last: str
    ) -> web.StreamResponse:
        if not query.startswith(f"passkey={PASSKEY}&"):
            return web.Response(body=encode({b"failure reason": b"bad passkey"}))
        if last == "scrape":
            return web.Response(body=self._scrape_body(query))
        return web.Response(body=good_body())

    async def _do_garbage(self, *_: object) -> web.StreamResponse:
        return web.Response(body=b"<html>\x1b[31mnot bencode\x1b[0m</html>")

    async def _do_huge(self, request: web.Request, *_: object) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        # Starts like a valid dict so only the size cap can stop the client.
        chunk = b"d5:peers" + str(HUGE_SIZE).encode() + b":" + bytes(64 << 10)
        sent = 0
        try:
            while sent < HUGE_SIZE and not self._stopping.is_set():
                await resp.write(chunk)
                sent += len(chunk)
                chunk = bytes(64 << 10)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    async def _do_hang(self, request: web.Request, *_: object) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b"d8:intervali")
        await self._wait_stop()
        return resp

    async def _do_silent(self, *_: object) -> web.StreamResponse:
        await self._wait_stop()
        return web.Response(status=503)

    async def _do_error(self, *_: object) -> web.StreamResponse:
        return web.Response(status=500, text="Internal Server Error: \x1b[2J oops")

    async def _do_refused(self, *_: object) -> web.StreamResponse:
        return web.Response(status=403, body=encode({b"failure reason": FAILURE_TEXT.encode()}))

    async def _do_failure(self, *_: object) -> web.StreamResponse:
        body = encode({b"failure reason": FAILURE_TEXT.encode(), b"interval": 1800})
        return web.Response(body=body)

    async def _do_loop(self, request: web.Request, query: str, *_: object) -> web.StreamResponse:
        return _redirect(f"/loop/announce?{query}")

    async def _do_pingpong(
        self, request: web.Request, query: str, parts: list[str], last: str
    ) -> web.StreamResponse:
        other = "ping" if last == "announce" else "announce"
        return _redirect(f"/pingpong/{other}?{query}")

    async def _do_chain(
        self, request: web.Request, query: str, parts: list[str], last: str
    ) -> web.StreamResponse:
        hops = int(parts[1]) if len(parts) > 2 else 0
        if hops <= 0:
            return web.Response(body=good_body())
        return _redirect(f"/chain/{hops - 1}/announce?{query}")

    async def _do_redirect(
        self, request: web.Request, query: str, *_: object
    ) -> web.StreamResponse:
        return _redirect(f"/good/announce?{query}")

    async def _do_ftp(self, *_: object) -> web.StreamResponse:
        return _redirect("file:///etc/passwd")

    async def _do_nolocation(self, *_: object) -> web.StreamResponse:
        return web.Response(status=301)

    async def _do_gzip(self, *_: object) -> web.StreamResponse:
        body = gzip.compress(good_body())
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def prepare_bomb(self) -> None:
        """Build the gzip bomb now (a test measuring memory must not count building it)."""
        if self._bomb is None:
            self._bomb = await asyncio.to_thread(_bomb)

    async def _do_bomb(self, *_: object) -> web.StreamResponse:
        await self.prepare_bomb()
        assert self._bomb is not None
        return web.Response(body=self._bomb, headers={"Content-Encoding": "gzip"})

    # scrape -------------------------------------------------------------------

    def _scrape_body(self, query: str) -> bytes:
        """Counts derived from each hash (seeders = first byte, ...), plus one unasked hash."""
        files: dict[bytes, dict[bytes, int]] = {}
        for name, value in raw_params(query):
            if name == "info_hash":
                info_hash = urllib.parse.unquote_to_bytes(value)
                files[info_hash] = scrape_counts(info_hash)
        files[b"\xee" * 20] = {b"complete": 1, b"downloaded": 1, b"incomplete": 1}
        files[b"short"] = {b"complete": 1}
        return encode({b"files": files})


def _redirect(location: str) -> web.Response:
    """A 302 whose Location is sent verbatim (web.HTTPFound re-quotes it, turning %2F into /)."""
    return web.Response(status=302, headers={"Location": location})


def raw_params(query: str) -> list[tuple[str, str]]:
    """Split a raw query into ``(name, raw value)`` pairs, escapes left as they are."""
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


def scrape_counts(info_hash: bytes) -> dict[bytes, int]:
    """What the fake tracker reports for ``info_hash``."""
    return {
        b"complete": info_hash[0],
        b"downloaded": info_hash[1] * 10,
        b"incomplete": info_hash[2],
    }
