"""UDP tracker protocol (BEP 15) with the BEP 41 URL-data option, sans-IO.

Two layers:

* pure packet functions (``encode_*`` / ``parse_*``) that turn the BEP 15
  tables into bytes and back, raising :class:`TrackerError` on anything
  malformed;
* :class:`UdpTrackerSession`, the per-tracker-address state machine: the
  connection id and its one-minute lifetime, one transaction id per request,
  the ``base * 2**n`` retransmission schedule, and validation of every
  datagram the address sends us.  Time is passed in as ``now``; the session
  says when it wants to be woken (:meth:`UdpTrackerSession.next_timer`) and
  hands out datagrams to send and events, in the h11/aioquic style.  The
  asyncio driver is :mod:`core.tracker.udp`.

Validation policy (what a hostile or broken tracker gets):

* a datagram shorter than 8 bytes, or whose transaction id is not one we are
  waiting for, is ignored and counted (BEP 15: "check whether the
  transaction ID is equal to the one you chose"); a stale or spoofed packet
  must not kill a request that a genuine answer may still complete.  If the
  request then times out, the error names what was ignored, so the tracker
  status says "ignored 3 datagrams: unknown transaction id" rather than a
  bare time-out;
* a datagram with a matching transaction id that is too short for its action,
  or carries the wrong action, fails that request at once: the tracker did
  answer, and retrying would most likely earn the same garbage, so the
  announcer should back off now rather than after minutes of retries;
* an error action (3) fails the request with the tracker's message and
  forgets the connection id (a tracker that restarted rejects old ids).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.errors import TrackerError
from core.formats.compact import decode_peers4, decode_peers6
from core.tracker.types import AnnounceRequest, AnnounceResponse, ScrapeResult

__all__ = [
    "ACTION_ANNOUNCE",
    "ACTION_CONNECT",
    "ACTION_ERROR",
    "ACTION_SCRAPE",
    "ANNOUNCE_REQUEST_SIZE",
    "CONNECTION_TTL",
    "MAX_SCRAPE_HASHES",
    "OPTION_END",
    "OPTION_NOP",
    "OPTION_URL_DATA",
    "PROTOCOL_ID",
    "UdpAnnounced",
    "UdpEvent",
    "UdpFailed",
    "UdpScraped",
    "UdpTrackerSession",
    "encode_announce",
    "encode_connect",
    "encode_scrape",
    "encode_url_data",
    "parse_announce_response",
    "parse_connect_response",
    "parse_error_response",
    "parse_options",
    "parse_scrape_response",
    "response_header",
]

#: The magic ``protocol_id`` of a connect request.
PROTOCOL_ID = 0x41727101980

ACTION_CONNECT = 0
ACTION_ANNOUNCE = 1
ACTION_SCRAPE = 2
ACTION_ERROR = 3

_ACTION_NAMES = {0: "connect", 1: "announce", 2: "scrape", 3: "error"}

#: BEP 15: a client may use a connection id until one minute after receiving it.
CONNECTION_TTL = 60.0
#: BEP 15: "up to about 74 torrents can be scraped at once" (16 + 74 * 20 = 1496 bytes).
MAX_SCRAPE_HASHES = 74
#: Size of the fixed part of an announce request; BEP 41 options follow it.
ANNOUNCE_REQUEST_SIZE = 98

#: BEP 41 option types.  End and NOP are a single byte; the others carry a length byte.
OPTION_END = 0x0
OPTION_NOP = 0x1
OPTION_URL_DATA = 0x2

#: Longest error message we keep: it ends up in a status line, not a log dump.
MAX_ERROR_MESSAGE = 256

_CONNECT = struct.Struct(">QII")
_ANNOUNCE = struct.Struct(">QII20s20sQQQIIIiH")
_HEADER = struct.Struct(">II")
_CONNECT_RESPONSE = struct.Struct(">IIQ")
_ANNOUNCE_RESPONSE = struct.Struct(">IIIII")
_SCRAPE_ENTRY = struct.Struct(">III")

_I64_MAX = (1 << 63) - 1
_U32_MASK = 0xFFFFFFFF


# --------------------------------------------------------------------------- packets


def encode_connect(transaction_id: int) -> bytes:
    """A 16-byte connect request."""
    return _CONNECT.pack(PROTOCOL_ID, ACTION_CONNECT, transaction_id & _U32_MASK)


def encode_url_data(url_data: bytes) -> bytes:
    """BEP 41 URLData options carrying ``url_data`` (the URL's path and query).

    One option holds at most 255 bytes, so longer strings are split over
    consecutive options that the tracker concatenates.  No end-of-options byte
    is added: the end of the datagram ends the options as well, and every
    byte counts in a protocol designed to fit one packet.
    """
    out = bytearray()
    for start in range(0, len(url_data), 255):
        chunk = url_data[start : start + 255]
        out += bytes((OPTION_URL_DATA, len(chunk))) + chunk
    return bytes(out)


def parse_options(data: bytes) -> list[tuple[int, bytes]]:
    """Split BEP 41 options into ``(type, payload)`` pairs (NOPs skipped).

    Stops at an end-of-options byte or the end of ``data``.  Used by test
    trackers and to check our own encoding; an option whose length runs past
    the end raises :class:`TrackerError`.
    """
    options: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        kind = data[pos]
        pos += 1
        if kind == OPTION_END:
            break
        if kind == OPTION_NOP:
            continue
        if pos >= len(data):
            raise TrackerError(f"BEP 41 option {kind:#x} without a length byte")
        length = data[pos]
        pos += 1
        if pos + length > len(data):
            raise TrackerError(f"BEP 41 option {kind:#x} truncated: {length} bytes announced")
        options.append((kind, data[pos : pos + length]))
        pos += length
    return options


def _clamp64(value: int) -> int:
    return min(max(value, 0), _I64_MAX)


def encode_announce(
    connection_id: int, transaction_id: int, req: AnnounceRequest, *, url_data: bytes = b""
) -> bytes:
    """A 98-byte announce request (the IPv4 layout, also used over IPv6), plus BEP 41 options.

    The ``IP address`` field is always 0: BEP 15 says it is unusable over IPv6
    and most trackers ignore it over IPv4.  A negative ``numwant`` becomes -1
    (the tracker's default).  Byte counters are clamped to the signed 64-bit
    range the BEP specifies.  An impossible request (wrong hash length, port
    out of range) is a caller bug, reported as :class:`TrackerError` so the
    announcer records it like any other failure.
    """
    if len(req.info_hash) != 20:
        raise TrackerError(f"info_hash must be 20 bytes, got {len(req.info_hash)}")
    if len(req.peer_id) != 20:
        raise TrackerError(f"peer_id must be 20 bytes, got {len(req.peer_id)}")
    if not 0 <= req.port <= 0xFFFF:
        raise TrackerError(f"port out of range: {req.port}")
    numwant = req.numwant if req.numwant >= 0 else -1
    numwant = min(numwant, 0x7FFFFFFF)
    packet = _ANNOUNCE.pack(
        connection_id,
        ACTION_ANNOUNCE,
        transaction_id & _U32_MASK,
        req.info_hash,
        req.peer_id,
        _clamp64(req.downloaded),
        _clamp64(req.left),
        _clamp64(req.uploaded),
        req.event.udp_code,
        0,
        req.key & _U32_MASK,
        numwant,
        req.port,
    )
    return packet + encode_url_data(url_data)


def encode_scrape(connection_id: int, transaction_id: int, info_hashes: Sequence[bytes]) -> bytes:
    """A scrape request for 1 to :data:`MAX_SCRAPE_HASHES` info-hashes."""
    if not 1 <= len(info_hashes) <= MAX_SCRAPE_HASHES:
        raise TrackerError(
            f"a UDP scrape carries 1 to {MAX_SCRAPE_HASHES} info-hashes, got {len(info_hashes)}"
        )
    for h in info_hashes:
        if len(h) != 20:
            raise TrackerError(f"info_hash must be 20 bytes, got {len(h)}")
    head = _CONNECT.pack(connection_id, ACTION_SCRAPE, transaction_id & _U32_MASK)
    return head + b"".join(info_hashes)


def response_header(data: bytes) -> tuple[int, int] | None:
    """``(action, transaction_id)`` of a tracker datagram, or None if under 8 bytes."""
    if len(data) < _HEADER.size:
        return None
    action, tid = _HEADER.unpack_from(data)
    return action, tid


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise TrackerError(f"truncated {what} response: {len(data)} bytes, need at least {size}")


def parse_connect_response(data: bytes) -> int:
    """The connection id of a connect response (at least 16 bytes)."""
    _need(data, _CONNECT_RESPONSE.size, "connect")
    _action, _tid, connection_id = _CONNECT_RESPONSE.unpack_from(data)
    return int(connection_id)


def parse_announce_response(data: bytes, *, ipv6: bool = False) -> AnnounceResponse:
    """An announce response: 20-byte header, then 6-byte (IPv4) or 18-byte (IPv6) peers.

    BEP 15: the address family of the datagram decides the peer format, so the
    caller says which socket it arrived on.  A bare 8-byte header is a refusal
    (opentracker answers so for info-hashes off its whitelist).  A torn trailing peer entry is
    ignored (BEP 15: "do not expect packets to be exactly of a certain size");
    peers that cannot be dialled (port 0 and the like) are dropped.
    """
    if len(data) == _HEADER.size:
        # opentracker's way of refusing a torrent that is not on its whitelist
        raise TrackerError("tracker refused the announce (empty answer: torrent not registered?)")
    _need(data, _ANNOUNCE_RESPONSE.size, "announce")
    _action, _tid, interval, leechers, seeders = _ANNOUNCE_RESPONSE.unpack_from(data)
    body = data[_ANNOUNCE_RESPONSE.size :]
    peers = decode_peers6(body) if ipv6 else decode_peers4(body)
    return AnnounceResponse(
        interval=float(interval),
        peers=tuple(peers),
        seeders=seeders,
        leechers=leechers,
    )


def parse_scrape_response(data: bytes, info_hashes: Sequence[bytes]) -> dict[bytes, ScrapeResult]:
    """A scrape response: 12 bytes per requested info-hash, in request order.

    A tracker that answers fewer entries than asked gives results for the
    first ones only; the others are missing from the result (unknown, not zero).
    """
    _need(data, _HEADER.size, "scrape")
    results: dict[bytes, ScrapeResult] = {}
    count = min((len(data) - _HEADER.size) // _SCRAPE_ENTRY.size, len(info_hashes))
    for i in range(count):
        seeders, completed, leechers = _SCRAPE_ENTRY.unpack_from(
            data, _HEADER.size + i * _SCRAPE_ENTRY.size
        )
        results[info_hashes[i]] = ScrapeResult(
            seeders=seeders, completed=completed, leechers=leechers
        )
    return results


def parse_error_response(data: bytes) -> str:
    """The message of an error response, made safe for a status line.

    Decoded as UTF-8 with replacement, NULs and control characters replaced,
    cut to :data:`MAX_ERROR_MESSAGE` characters.
    """
    raw = data[_HEADER.size : _HEADER.size + 4 * MAX_ERROR_MESSAGE]
    text = raw.decode("utf-8", errors="replace").rstrip("\x00")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text[:MAX_ERROR_MESSAGE] or "(no message)"


# --------------------------------------------------------------------------- session


@dataclass(frozen=True, slots=True)
class UdpAnnounced:
    """Request ``op`` (from :meth:`UdpTrackerSession.start_announce`) got its answer."""

    op: int
    response: AnnounceResponse


@dataclass(frozen=True, slots=True)
class UdpScraped:
    """Request ``op`` (from :meth:`UdpTrackerSession.start_scrape`) got its answer."""

    op: int
    results: dict[bytes, ScrapeResult]


@dataclass(frozen=True, slots=True)
class UdpFailed:
    """Request ``op`` failed for good; ``error`` says why."""

    op: int
    error: TrackerError


UdpEvent = UdpAnnounced | UdpScraped | UdpFailed


@dataclass(slots=True)
class _Op:
    """One announce or scrape in flight."""

    op: int
    kind: Literal["announce", "scrape"]
    tid: int
    request: AnnounceRequest | None
    info_hashes: tuple[bytes, ...]
    url_data: bytes
    n: int = 0  # retransmission exponent: time-outs so far
    deadline: float | None = None  # None while waiting for a connection id


class UdpTrackerSession:
    """The client side of BEP 15 towards one tracker address.

    Many requests (announces for many torrents, scrapes) may be in flight at
    once; they share one connection id and at most one connect exchange.

    Retransmission follows BEP 15: a request unanswered after
    ``base_timeout * 2**n`` seconds is sent again and ``n`` grows (capped at
    ``max_exponent``).  ``n`` only grows on a time-out, so a connect answered
    at once leaves the following announce at ``n = 0``; a request whose
    connection id expired while it was being retried reconnects and keeps its
    ``n`` (the BEP's "announce times out" example, t = 2, 17, 47, 107 connect,
    227 connect).  After ``max_attempts`` time-outs of one request or of a
    connect, the request fails with "no answer after N attempts".

    Usage: call ``start_*``, then repeatedly send :meth:`datagrams_to_send`,
    feed received datagrams to :meth:`receive_datagram`, call
    :meth:`handle_timer` at :meth:`next_timer`, and collect :meth:`events`.
    """

    def __init__(
        self,
        *,
        ipv6: bool = False,
        base_timeout: float = 15.0,
        max_attempts: int = 9,
        max_exponent: int = 8,
        connection_ttl: float = CONNECTION_TTL,
        rng: random.Random | None = None,
    ) -> None:
        if base_timeout <= 0 or max_attempts < 1 or max_exponent < 0:
            raise ValueError("base_timeout > 0, max_attempts >= 1 and max_exponent >= 0 required")
        self.ipv6 = ipv6
        self.base_timeout = base_timeout
        self.max_attempts = max_attempts
        self.max_exponent = max_exponent
        self.connection_ttl = connection_ttl
        self._rng = rng if rng is not None else random.SystemRandom()
        self.connection_id: int | None = None
        self.connection_expires = 0.0
        #: Connect exchanges completed; lets tests and stats see id reuse.
        self.connects = 0
        #: Datagrams ignored since the session started (short, unknown transaction id).
        self.ignored_datagrams = 0
        self._ignored_recently = 0
        self._last_ignored: str | None = None
        self._next_op = 1
        self._ops: dict[int, _Op] = {}  # by transaction id
        self._connect_tid: int | None = None
        self._connect_n = 0
        self._connect_deadline = 0.0
        self._outgoing: list[bytes] = []
        self._events: list[UdpEvent] = []

    # -- public API

    @property
    def busy(self) -> bool:
        """True while a request is in flight or an event waits to be collected."""
        return bool(self._ops) or bool(self._events) or bool(self._outgoing)

    def connection_valid(self, now: float) -> bool:
        return self.connection_id is not None and now < self.connection_expires

    def timeout_for(self, n: int) -> float:
        """Seconds to wait after the transmission with exponent ``n``."""
        return self.base_timeout * float(1 << min(n, self.max_exponent))

    def start_announce(self, req: AnnounceRequest, now: float, *, url_data: bytes = b"") -> int:
        """Queue an announce; returns the handle its event will carry.

        Raises :class:`TrackerError` at once for an impossible request.
        """
        encode_announce(0, 0, req, url_data=url_data)  # validate before anything is queued
        return self._start(_Op(0, "announce", 0, req, (), url_data), now)

    def start_scrape(self, info_hashes: Sequence[bytes], now: float) -> int:
        """Queue a scrape of 1 to :data:`MAX_SCRAPE_HASHES` info-hashes."""
        hashes = tuple(info_hashes)
        encode_scrape(0, 0, hashes)  # validate
        return self._start(_Op(0, "scrape", 0, None, hashes, b""), now)

    def cancel(self, op: int) -> None:
        """Forget request ``op`` (its caller gave up); a late answer is then ignored."""
        for tid, item in list(self._ops.items()):
            if item.op == op:
                del self._ops[tid]
        self._events = [e for e in self._events if e.op != op]
        if self._connect_tid is not None and not any(
            o.deadline is None for o in self._ops.values()
        ):
            self._connect_tid = None  # nobody waits for the connection any more

    def fail_all(self, message: str) -> None:
        """Fail every request in flight (the driver could not send, or is closing)."""
        for item in self._ops.values():
            self._events.append(UdpFailed(item.op, TrackerError(message)))
        self._ops.clear()
        self._connect_tid = None
        self._outgoing.clear()

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def events(self) -> list[UdpEvent]:
        out, self._events = self._events, []
        return out

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or None if nothing is pending."""
        deadlines = [o.deadline for o in self._ops.values() if o.deadline is not None]
        if self._connect_tid is not None:
            deadlines.append(self._connect_deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Retransmit or give up on everything whose deadline has passed."""
        if self._connect_tid is not None and now >= self._connect_deadline:
            self._connect_n += 1
            if self._connect_n >= self.max_attempts:
                self._fail_waiting(self._no_answer("connect", self._connect_n))
            else:
                self._send_connect(now)
        for item in list(self._ops.values()):
            if item.deadline is None or now < item.deadline:
                continue
            item.n += 1
            if item.n >= self.max_attempts:
                self._finish(item, UdpFailed(item.op, self._no_answer(item.kind, item.n)))
            else:
                self._dispatch(item, now)

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Handle one datagram from the tracker's address.  Never raises."""
        header = response_header(data)
        if header is None:
            self._ignore(f"too short ({len(data)} bytes)")
            return
        action, tid = header
        if tid == self._connect_tid:
            self._on_connect_response(action, data, now)
            return
        item = self._ops.get(tid)
        if item is None:
            self._ignore("unknown transaction id")
            return
        self._ignored_recently = 0
        if action == ACTION_ERROR:
            self.connection_id = None  # a restarted tracker rejects old ids: reconnect next time
            message = parse_error_response(data)
            self._finish(item, UdpFailed(item.op, TrackerError(f"tracker error: {message}")))
            return
        expected = ACTION_ANNOUNCE if item.kind == "announce" else ACTION_SCRAPE
        try:
            if action != expected:
                raise TrackerError(
                    f"unexpected action {_ACTION_NAMES.get(action, action)} "
                    f"in answer to {item.kind}"
                )
            event: UdpEvent
            if item.kind == "announce":
                event = UdpAnnounced(item.op, parse_announce_response(data, ipv6=self.ipv6))
            else:
                event = UdpScraped(item.op, parse_scrape_response(data, item.info_hashes))
        except TrackerError as exc:
            event = UdpFailed(item.op, exc)
        self._finish(item, event)

    # -- internals

    def _new_tid(self) -> int:
        while True:
            tid = self._rng.getrandbits(32)
            if tid not in self._ops and tid != self._connect_tid:
                return tid

    def _start(self, item: _Op, now: float) -> int:
        item.op = self._next_op
        self._next_op += 1
        item.tid = self._new_tid()
        self._ops[item.tid] = item
        self._dispatch(item, now)
        return item.op

    def _dispatch(self, item: _Op, now: float) -> None:
        """Send ``item`` now if the connection id is fresh, else wait for a connect."""
        if self.connection_id is not None and self.connection_valid(now):
            if item.kind == "announce":
                assert item.request is not None
                packet = encode_announce(
                    self.connection_id, item.tid, item.request, url_data=item.url_data
                )
            else:
                packet = encode_scrape(self.connection_id, item.tid, item.info_hashes)
            self._outgoing.append(packet)
            item.deadline = now + self.timeout_for(item.n)
            return
        item.deadline = None
        if self._connect_tid is None:
            self._connect_tid = self._new_tid()
            self._connect_n = item.n
            self._send_connect(now)

    def _send_connect(self, now: float) -> None:
        assert self._connect_tid is not None
        self._outgoing.append(encode_connect(self._connect_tid))
        self._connect_deadline = now + self.timeout_for(self._connect_n)

    def _on_connect_response(self, action: int, data: bytes, now: float) -> None:
        self._ignored_recently = 0
        if action == ACTION_ERROR:
            message = parse_error_response(data)
            self._fail_waiting(TrackerError(f"tracker error: {message}"))
            return
        try:
            if action != ACTION_CONNECT:
                name = _ACTION_NAMES.get(action, action)
                raise TrackerError(f"unexpected action {name} in answer to connect")
            connection_id = parse_connect_response(data)
        except TrackerError as exc:
            self._fail_waiting(exc)
            return
        self.connection_id = connection_id
        self.connection_expires = now + self.connection_ttl
        self.connects += 1
        n = self._connect_n
        self._connect_tid = None
        for item in list(self._ops.values()):
            if item.deadline is None:
                item.n = max(item.n, n)
                self._dispatch(item, now)

    def _fail_waiting(self, error: TrackerError) -> None:
        """Fail every request that waits for the connect exchange."""
        self._connect_tid = None
        for item in list(self._ops.values()):
            if item.deadline is None:
                self._finish(item, UdpFailed(item.op, error))

    def _finish(self, item: _Op, event: UdpEvent) -> None:
        self._ops.pop(item.tid, None)
        self._events.append(event)

    def _ignore(self, reason: str) -> None:
        self.ignored_datagrams += 1
        self._ignored_recently += 1
        self._last_ignored = reason

    def _no_answer(self, what: str, attempts: int) -> TrackerError:
        message = f"no answer to {what} after {attempts} attempts"
        if self._ignored_recently:
            message += f" (ignored {self._ignored_recently} datagrams, last: {self._last_ignored})"
        return TrackerError(message)
