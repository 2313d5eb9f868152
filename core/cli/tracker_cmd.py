"""``torrent announce`` and ``torrent scrape``: talk to one tracker by hand.

Thin shells over :func:`core.tracker.announce` / :func:`core.tracker.scrape`,
for checking that a tracker works and what it knows.  Output goes to stdout,
one fact per line, so it reads well and greps well::

    $ torrent announce debian.torrent http://tracker.example/announce
    interval 1800s (min 900s)
    seeders 12  leechers 3
    peers 2
    192.0.2.7:6881
    [2001:db8::5]:51413

Every failure (unreachable tracker, a ``failure reason``, bad arguments) is
one line on stderr and exit status 1, through :mod:`core.cli.main`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import secrets
import sys
from typing import TextIO

from ..config import generate_peer_id
from ..errors import TorrentError
from ..tracker import TrackerTransports, tracker_scheme
from ..tracker.types import AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeResult
from .inputs import load_torrent
from .usage import UsageError

EVENTS = {e.value or "none": e for e in AnnounceEvent}


def parse_info_hash(text: str) -> bytes:
    """40 hex digits or 32 base32 characters -> 20 bytes; :class:`UsageError` otherwise."""
    t = text.strip()
    try:
        if len(t) == 40:
            return bytes.fromhex(t)
        if len(t) == 32:
            return base64.b32decode(t.upper())
    except (ValueError, binascii.Error):
        pass
    raise UsageError(f"{text!r} is not an info-hash (40 hex digits or 32 base32 characters)")


def _torrent_target(text: str) -> tuple[bytes, int, str]:
    """``(info-hash, total size, name)`` from a .torrent path (or ``-``), or a bare info-hash."""
    t = text.strip()
    if len(t) in (32, 40) and not _exists(t):
        return parse_info_hash(t), 0, t.lower()
    mi = load_torrent(text)
    return mi.info_hash.wire, mi.info.total_size, mi.info.name


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).exists()


def _check_url(url: str) -> str:
    try:
        tracker_scheme(url)
    except TorrentError as exc:
        raise UsageError(str(exc)) from None
    return url.strip()


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:
        raise UsageError(f"--timeout must be positive, got {timeout:g}")


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_announce(resp: AnnounceResponse) -> list[str]:
    interval = f"interval {resp.interval:g}s"
    if resp.min_interval is not None:
        interval += f" (min {resp.min_interval:g}s)"
    lines = [interval]
    if resp.seeders is not None or resp.leechers is not None:
        seeders = "?" if resp.seeders is None else str(resp.seeders)
        leechers = "?" if resp.leechers is None else str(resp.leechers)
        lines.append(f"seeders {seeders}  leechers {leechers}")
    if resp.warning:
        lines.append(f"warning: {resp.warning}")
    lines.append(f"peers {len(resp.peers)}")
    lines.extend(_show(host, port) for host, port in resp.peers)
    return lines


def format_scrape(info_hashes: list[bytes], results: dict[bytes, ScrapeResult]) -> list[str]:
    lines = []
    for h in info_hashes:
        r = results.get(h)
        if r is None:
            lines.append(f"{h.hex()}  unknown to the tracker")
        else:
            lines.append(
                f"{h.hex()}  seeders {r.seeders}  leechers {r.leechers}  completed {r.completed}"
            )
    return lines


def run_announce(args: argparse.Namespace, out: TextIO | None = None) -> int:
    url = _check_url(args.tracker)
    _check_timeout(args.timeout)
    event = EVENTS[args.event]
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.numwant < 0:
        raise UsageError("--numwant must not be negative")
    info_hash, size, _name = _torrent_target(args.torrent)
    left = size if args.left is None else args.left
    req = AnnounceRequest(
        info_hash=info_hash,
        peer_id=generate_peer_id(),
        port=args.port,
        left=left,
        event=event,
        numwant=args.numwant,
        key=secrets.randbits(32),
    )

    async def go() -> AnnounceResponse:
        async with TrackerTransports() as transports:
            return await transports.announce(url, req, timeout=args.timeout)

    resp = asyncio.run(go())
    print("\n".join(format_announce(resp)), file=out or sys.stdout)
    return 0


def run_scrape(args: argparse.Namespace, out: TextIO | None = None) -> int:
    url = _check_url(args.tracker)
    _check_timeout(args.timeout)
    hashes = list(dict.fromkeys(parse_info_hash(h) for h in args.info_hash))

    async def go() -> dict[bytes, ScrapeResult]:
        async with TrackerTransports() as transports:
            return await transports.scrape(url, hashes, timeout=args.timeout)

    results = asyncio.run(go())
    print("\n".join(format_scrape(hashes, results)), file=out or sys.stdout)
    return 0
