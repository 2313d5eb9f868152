"""HTTP(S) tracker client: announce (BEP 3, 7, 23) and scrape (BEP 48).

Two halves along the I/O seam:

* a pure half that builds request URLs and parses response bodies
  (:func:`announce_url`, :func:`scrape_url`, :func:`scrape_request_url`,
  :func:`parse_announce`, :func:`parse_scrape`); it is where every protocol
  decision lives and is tested byte for byte without sockets;
* a thin aiohttp half (:func:`http_announce`, :func:`http_scrape`) that fetches
  a URL with a hard time limit, a redirect limit and a size cap, and turns
  every transport failure into :class:`~core.errors.TrackerError`.

Why the URL is built by hand: ``info_hash`` and ``peer_id`` are raw bytes that
must be percent-encoded byte by byte.  Handing aiohttp a ``params`` mapping
would make yarl encode *text* and, given an already-encoded string, re-encode
its ``%``.  So the query is encoded here, appended to whatever query the
announce URL already carries (private trackers put a ``passkey`` there), and
passed as ``yarl.URL(..., encoded=True)`` so nothing touches it again.
Redirects are followed here too, not by aiohttp, because aiohttp re-quotes a
redirect target (``%2F`` in a binary hash comes out as ``/``).

Hostile trackers are expected: bodies are read with a streaming cap that
counts *decompressed* bytes (aiohttp inflates gzip incrementally, so a gzip
bomb stops at the cap), the whole exchange runs under one deadline, text the
tracker sends back (``failure reason``, ``warning message``) is cleaned of
control characters and shortened before anyone displays it, and intervals are
clamped to sane bounds.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import yarl

from ..errors import BencodeError, TrackerError
from ..formats.bencoding import decode
from ..formats.compact import MAX_PEERS, PeerList, decode_peer_dicts, decode_peers4, decode_peers6
from .types import AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeResult

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MAX_INTERVAL",
    "MAX_REDIRECTS",
    "MAX_RESPONSE_SIZE",
    "MIN_INTERVAL",
    "announce_query",
    "announce_url",
    "http_announce",
    "http_scrape",
    "parse_announce",
    "parse_scrape",
    "scrape_request_url",
    "scrape_url",
]

#: Seconds the whole exchange (connect, redirects, body) may take.
DEFAULT_TIMEOUT = 30.0
#: Largest (decompressed) body accepted.  A 200-peer compact answer is ~1.3 KB;
#: a full scrape of a busy tracker is the only legitimate big answer.
MAX_RESPONSE_SIZE = 2 << 20
#: Redirects followed before giving up.
MAX_REDIRECTS = 5
#: Re-announce interval used when a tracker omits ``interval`` (BEP 3 makes it
#: mandatory, but some trackers leave it out on otherwise good answers; 30
#: minutes is what most trackers send).
DEFAULT_INTERVAL = 1800.0
#: Bounds intervals are clamped to.  The floor is low on purpose so tests can
#: run a fast schedule; the announcer adds its own floor for real trackers.
MIN_INTERVAL = 1.0
MAX_INTERVAL = 86400.0
#: Longest tracker-supplied message kept (failure reasons, warnings).
MAX_MESSAGE_CHARS = 512
#: Longest ``tracker id`` we agree to echo back in every later announce.
MAX_TRACKER_ID = 256

# Characters of an announce URL left alone when it is normalised: the RFC 3986
# reserved set plus "%" so existing escapes (a passkey) survive untouched.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~-._"


# --------------------------------------------------------------------------- URLs


def _quote(data: bytes) -> str:
    """Percent-encode every byte except RFC 3986 unreserved characters."""
    return urllib.parse.quote_from_bytes(data, safe="")


def _base_url(url: str) -> str:
    """Validate an http(s) announce URL and return it ready to append a query to.

    The fragment is dropped (never sent over HTTP) and stray characters that
    are not allowed in a URL (spaces, non-ASCII, CR/LF) are percent-encoded,
    so the result is safe to hand to yarl as already encoded.
    """
    if not isinstance(url, str):
        raise TrackerError(f"tracker URL must be a string, got {type(url).__name__}")
    text = urllib.parse.quote(url.strip().partition("#")[0], safe=_URL_SAFE)
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise TrackerError(f"invalid tracker URL {url!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise TrackerError(f"not an HTTP(S) tracker URL: {url!r}")
    if not host:
        raise TrackerError(f"tracker URL has no host: {url!r}")
    return text


def _with_query(base: str, query: str) -> str:
    if "?" not in base:
        return f"{base}?{query}"
    if base.endswith(("?", "&")):
        return base + query
    return f"{base}&{query}"


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 20:
        raise TrackerError(f"{what} must be 20 bytes, got {value!r}")
    return value


def _check_count(value: object, what: str, upper: int = 1 << 63) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < upper:
        raise TrackerError(f"{what} out of range: {value!r}")
    return value


def announce_query(req: AnnounceRequest) -> str:
    """The query string of an announce, already percent-encoded.

    Order: info_hash, peer_id, port, uploaded, downloaded, left, compact,
    event (omitted for a regular re-announce), numwant, key (8 hex digits, as
    most clients send it), trackerid (only when the tracker gave us one).
    """
    info_hash = _check_hash(req.info_hash, "info_hash")
    peer_id = _check_hash(req.peer_id, "peer_id")
    parts = [
        f"info_hash={_quote(info_hash)}",
        f"peer_id={_quote(peer_id)}",
        f"port={_check_count(req.port, 'port', 65536)}",
        f"uploaded={_check_count(req.uploaded, 'uploaded')}",
        f"downloaded={_check_count(req.downloaded, 'downloaded')}",
        f"left={_check_count(req.left, 'left')}",
        f"compact={1 if req.compact else 0}",
    ]
    if req.event is not AnnounceEvent.NONE:
        parts.append(f"event={req.event.value}")
    parts.append(f"numwant={_check_count(req.numwant, 'numwant', 1 << 31)}")
    parts.append(f"key={_check_count(req.key, 'key', 1 << 32):08X}")
    if req.tracker_id:
        parts.append(f"trackerid={_quote(bytes(req.tracker_id))}")
    return "&".join(parts)


def announce_url(url: str, req: AnnounceRequest) -> str:
    """The full, percent-encoded URL of an announce to tracker ``url``.

    A query the announce URL already has (``?passkey=...``) is kept and ours
    is appended after it.
    """
    return _with_query(_base_url(url), announce_query(req))


def scrape_url(url: str) -> str:
    """Derive the scrape URL from an announce URL (BEP 48 convention).

    The last path segment must start with ``announce``; that word becomes
    ``scrape`` (``/announce`` -> ``/scrape``, ``/x/announce.php`` ->
    ``/x/scrape.php``) and any query is kept.  Other URLs do not support
    scrape and raise :class:`TrackerError`.
    """
    base = _base_url(url)
    parts = urllib.parse.urlsplit(base)
    head, slash, last = parts.path.rpartition("/")
    if not slash or not last.startswith("announce"):
        raise TrackerError(f"tracker does not support scrape (no /announce in the path): {url!r}")
    path = f"{head}/scrape{last[len('announce') :]}"
    return urllib.parse.urlunsplit(parts._replace(path=path))


def scrape_request_url(url: str, info_hashes: Sequence[bytes]) -> str:
    """The full scrape URL for ``info_hashes`` (one ``info_hash`` parameter each)."""
    if not info_hashes:
        raise TrackerError("scrape needs at least one info-hash")
    query = "&".join(f"info_hash={_quote(_check_hash(h, 'info_hash'))}" for h in info_hashes)
    return _with_query(scrape_url(url), query)


# ---------------------------------------------------------------------- responses


def _clean_text(raw: object) -> str:
    """Tracker text made safe to log and display: no control characters, bounded length."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace")
    elif isinstance(raw, int | str):
        text = str(raw)
    else:
        text = repr(raw)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _decode_dict(body: bytes, what: str) -> dict[bytes, Any]:
    try:
        # The size cap was enforced while reading; here only the bytes we hold matter.
        value = decode(body, max_size=max(len(body), 1))
    except BencodeError as exc:
        preview = _clean_text(bytes(body[:60]))
        raise TrackerError(f"malformed {what} response ({exc}): {preview!r}") from None
    if not isinstance(value, dict):
        raise TrackerError(f"malformed {what} response: expected a dictionary")
    return value


def _raise_failure(response: Mapping[bytes, Any]) -> None:
    if b"failure reason" in response:
        reason = _clean_text(response[b"failure reason"]) or "(no reason given)"
        raise TrackerError(f"tracker failure: {reason}")


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return float(min(max(value, MIN_INTERVAL), MAX_INTERVAL))


def parse_announce(body: bytes, *, max_peers: int = MAX_PEERS) -> AnnounceResponse:
    """Parse an announce response body.

    ``failure reason`` raises :class:`TrackerError` with the tracker's text.
    Otherwise the answer is read leniently: a missing or non-integer
    ``interval`` becomes :data:`DEFAULT_INTERVAL`, intervals are clamped to
    [:data:`MIN_INTERVAL`, :data:`MAX_INTERVAL`], ``peers`` may be compact
    (BEP 23) or a list of dicts (BEP 3), ``peers6`` adds IPv6 peers (BEP 7),
    malformed peers are skipped and at most ``max_peers`` kept.
    """
    response = _decode_dict(body, "announce")
    _raise_failure(response)
    interval = _seconds(response.get(b"interval"))
    peers = PeerList(max_peers)
    for key in (b"peers", b"peers6"):
        value = response.get(key)
        if isinstance(value, bytes):
            decoder = decode_peers4 if key == b"peers" else decode_peers6
            decoder(value, into=peers)
        elif isinstance(value, list):
            decode_peer_dicts(value, into=peers)
    warning = response.get(b"warning message")
    tracker_id = response.get(b"tracker id")
    if not isinstance(tracker_id, bytes) or not 0 < len(tracker_id) <= MAX_TRACKER_ID:
        tracker_id = None
    return AnnounceResponse(
        interval=DEFAULT_INTERVAL if interval is None else interval,
        min_interval=_seconds(response.get(b"min interval")),
        peers=tuple(peers.to_list()),
        seeders=_count(response.get(b"complete")),
        leechers=_count(response.get(b"incomplete")),
        warning=None if warning is None else _clean_text(warning),
        tracker_id=tracker_id,
    )


def parse_scrape(
    body: bytes, info_hashes: Sequence[bytes] | None = None
) -> dict[bytes, ScrapeResult]:
    """Parse a BEP 48 scrape response into ``{info_hash: ScrapeResult}``.

    Entries whose key is not a 20-byte hash or whose value is not a dict are
    skipped; missing or invalid counts read as 0.  With ``info_hashes``, only
    those hashes are kept (some trackers answer with their whole table).
    """
    response = _decode_dict(body, "scrape")
    _raise_failure(response)
    files = response.get(b"files")
    if not isinstance(files, dict):
        raise TrackerError("malformed scrape response: no 'files' dictionary")
    wanted = None if info_hashes is None else set(info_hashes)
    results: dict[bytes, ScrapeResult] = {}
    for info_hash, stats in files.items():
        if len(info_hash) != 20 or not isinstance(stats, dict):
            continue
        if wanted is not None and info_hash not in wanted:
            continue
        results[info_hash] = ScrapeResult(
            seeders=_count(stats.get(b"complete")) or 0,
            completed=_count(stats.get(b"downloaded")) or 0,
            leechers=_count(stats.get(b"incomplete")) or 0,
        )
    return results


# --------------------------------------------------------------------------- I/O


async def _read_capped(resp: aiohttp.ClientResponse, max_size: int) -> bytes:
    """Read the (decompressed) body, failing as soon as it exceeds ``max_size``.

    Content-Length is not trusted: it may lie, be absent (chunked), or count
    compressed bytes.
    """
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 << 10):
        body += chunk
        if len(body) > max_size:
            raise TrackerError(f"tracker response larger than {max_size} bytes")
    return bytes(body)


def _failure_of(body: bytes) -> str | None:
    """The ``failure reason`` in an error page, if it is a bencoded tracker answer."""
    try:
        _raise_failure(_decode_dict(body, "error"))
    except TrackerError as exc:
        text = str(exc)
        prefix = "tracker failure: "
        return text[len(prefix) :] if text.startswith(prefix) else None
    return None


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _next_hop(current: yarl.URL, location: str | None, seen: set[str]) -> yarl.URL:
    """Resolve a redirect target, refusing non-HTTP schemes and loops."""
    if not location:
        raise TrackerError("tracker redirect without a Location header")
    # Keep the target's escapes exactly (binary info_hash), only escape what is illegal.
    target = current.join(
        yarl.URL(urllib.parse.quote(location.strip(), safe=_URL_SAFE), encoded=True)
    )
    if target.scheme not in ("http", "https") or not target.host:
        raise TrackerError(f"tracker redirected to a non-HTTP URL: {_clean_text(location)}")
    text = str(target)
    if text in seen:
        raise TrackerError(f"tracker redirect loop (through {_clean_text(text)})")
    seen.add(text)
    return target


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_redirects: int,
    max_size: int,
) -> tuple[int, str, bytes]:
    """GET ``url`` (already encoded); return ``(status, reason, capped body)``.

    Redirects are followed here rather than by aiohttp, whose redirect
    handling re-quotes the target URL (turning ``%2F`` in a binary
    ``info_hash`` into ``/``) and cannot tell a loop from a long chain.
    """
    current = yarl.URL(url, encoded=True)
    seen = {str(current)}
    for hop in range(max_redirects + 1):
        async with session.get(current, allow_redirects=False) as resp:
            if resp.status in _REDIRECTS and max_redirects > 0:
                if hop == max_redirects:
                    raise TrackerError(f"tracker redirected more than {max_redirects} times")
                current = _next_hop(current, resp.headers.get("Location"), seen)
                continue
            if resp.status != 200:
                # Read a little: some trackers explain refusals in a bencoded body.
                body = await _read_capped(resp, 64 << 10)
                return resp.status, resp.reason or "", body
            return resp.status, resp.reason or "", await _read_capped(resp, max_size)
    raise AssertionError("unreachable")  # pragma: no cover


async def _request(
    session: aiohttp.ClientSession | None,
    url: str,
    what: str,
    *,
    timeout: float,
    max_redirects: int,
    max_size: int,
) -> bytes:
    """Fetch a tracker URL and return the body of a 200 answer; every failure is a TrackerError."""
    own = session is None
    try:
        if session is None:
            session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(timeout):
                status, reason, body = await _fetch(
                    session, url, max_redirects=max_redirects, max_size=max_size
                )
        finally:
            if own:
                await session.close()
    except TrackerError:
        raise
    except TimeoutError:
        raise TrackerError(f"tracker {what} timed out after {timeout:g} s") from None
    except aiohttp.ClientResponseError as exc:
        raise TrackerError(
            f"tracker {what} failed: HTTP {exc.status} {_clean_text(exc.message)}"
        ) from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise TrackerError(
            f"tracker {what} failed: {_clean_text(str(exc)) or type(exc).__name__}"
        ) from None
    except Exception as exc:  # a hostile server must never crash the announcer
        raise TrackerError(
            f"tracker {what} failed unexpectedly: {type(exc).__name__}: {_clean_text(str(exc))}"
        ) from None
    if status != 200:
        detail = f"HTTP {status} {_clean_text(reason)}".rstrip()
        failure = _failure_of(body)
        if failure is not None:
            raise TrackerError(f"tracker failure: {failure} ({detail})")
        raise TrackerError(f"tracker {what} failed: {detail}")
    return body


async def http_announce(
    session: aiohttp.ClientSession | None,
    url: str,
    req: AnnounceRequest,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_redirects: int = MAX_REDIRECTS,
    max_size: int = MAX_RESPONSE_SIZE,
) -> AnnounceResponse:
    """Announce ``req`` to the HTTP(S) tracker at ``url``.

    ``session`` is the client's shared aiohttp session (None opens a private
    one for this call).  Raises :class:`TrackerError` for every failure:
    bad URL, unreachable tracker, timeout, too many redirects, HTTP error,
    oversized or malformed body, or a ``failure reason``.
    """
    target = announce_url(url, req)
    body = await _request(
        session,
        target,
        "announce",
        timeout=timeout,
        max_redirects=max_redirects,
        max_size=max_size,
    )
    return parse_announce(body)


async def http_scrape(
    session: aiohttp.ClientSession | None,
    url: str,
    info_hashes: Sequence[bytes],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_redirects: int = MAX_REDIRECTS,
    max_size: int = MAX_RESPONSE_SIZE,
) -> dict[bytes, ScrapeResult]:
    """Scrape ``info_hashes`` from the tracker whose announce URL is ``url`` (BEP 48).

    Only the requested hashes are returned; a hash the tracker does not know
    is simply absent.  Raises :class:`TrackerError` like :func:`http_announce`,
    and also when the URL has no scrape counterpart.
    """
    target = scrape_request_url(url, info_hashes)
    body = await _request(
        session,
        target,
        "scrape",
        timeout=timeout,
        max_redirects=max_redirects,
        max_size=max_size,
    )
    return parse_scrape(body, info_hashes)
