"""``torrent download TORRENT... [-o DIR] [--peer HOST:PORT]...``: fetch, maybe seed.

A thin shell over :class:`~core.engine.client.Client`.  Everything the engine can
fail at reaches the user as one line and a non-zero exit: a torrent in the
error state (full or read-only disk), no reachable peer, a bad file.

Stopping is always clean: SIGINT and SIGTERM only set an event; the session
then closes the client, which flushes the files and detaches the completion
store, so the next run trusts every verified piece without rehashing it.  A
SIGKILL loses at most the completion records not yet committed; the pieces
themselves are on disk and the next start rehashes them instead of
downloading them again.

Peers come from the torrents' trackers (announced to automatically), the
DHT (unless ``--no-dht``; never for private torrents) and ``--peer``.  A
torrent with none of these is an error at once, and "nobody to download
from" is an error after ``--connect-timeout`` rather than an endless wait;
the message then includes what the trackers said.  Addresses from
``--peer`` are offered again while they are not connected, because the
engine forgets an address once its connection ends.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..bus import Subscription
from ..config import ClientConfig, default_data_dir
from ..engine.client import Client
from ..engine.torrent import Torrent
from ..errors import TorrentError
from ..events import PeerConnected, PeerDisconnected
from ..formats.magnet import Magnet
from ..formats.metainfo import Metainfo
from ..stats import TorrentState
from ..types import PiecePriority
from . import fmt
from .file_select import match_files
from .inputs import load_magnet, load_torrent
from .usage import UsageError

#: Overrides the default state directory (piece-completion database).
STATE_DIR_ENV = "PYTORRENT_STATE_DIR"
#: Progress redraws per second on a terminal ...
TTY_INTERVAL = 0.25
#: ... and seconds between progress lines when stderr is a file or pipe.
PLAIN_INTERVAL = 5.0
#: How often the session looks at the torrents (also bounds signal latency).
POLL_INTERVAL = 0.1
#: Offer ``--peer`` addresses again this often while they are not connected.
REDIAL_INTERVAL = 3.0
#: Exit statuses for the signals we stop on (128 + signal number, as shells do).
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM

Address = tuple[str, int]


def parse_peer(text: str, *, what: str = "--peer") -> Address:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> ``(host, port)``; raises :class:`UsageError`.

    ``what`` names the argument in the message (``--peer``, ``--dht-bootstrap``).
    """
    t = text.strip()
    name = f"{what} {text!r}"
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise UsageError(f"{name}: expected [IPV6]:PORT")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"{name}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = t.rpartition(":")
        if not sep or not host:
            raise UsageError(f"{name}: expected HOST:PORT")
        if ":" in host:
            raise UsageError(f"{name}: write IPv6 addresses as [ADDR]:PORT")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"{name}: port must be 1-65535")
    return host, int(port_text)


def _rate(value: int | None) -> int | None:
    """``--*-rate``: 0 or absent means unlimited (the config's ``None``)."""
    return value or None


def dht_options(args: argparse.Namespace) -> dict[str, object]:
    """``--no-dht`` and ``--dht-bootstrap`` as :class:`ClientConfig` values (only those given).

    ``--dht-bootstrap`` replaces the default routers rather than adding to
    them, so a test or a private swarm never reaches the public DHT.
    """
    nodes = [text.strip() for text in getattr(args, "dht_bootstrap", None) or []]
    for text in nodes:
        parse_peer(text, what="--dht-bootstrap")
    if getattr(args, "no_dht", False):
        if nodes:
            raise UsageError("--dht-bootstrap has no use with --no-dht")
        return {"dht": False}
    return {"dht_bootstrap_nodes": tuple(nodes)} if nodes else {}


def transport_options(args: argparse.Namespace) -> dict[str, object]:
    """``--encryption``, ``--no-utp`` and ``--no-tcp`` as :class:`ClientConfig` values (given ones).

    Raises :class:`UsageError` when both transports are turned off.
    """
    values: dict[str, object] = {}
    if getattr(args, "encryption", None):
        values["encryption"] = args.encryption
    if getattr(args, "no_utp", False):
        values["utp"] = False
    if getattr(args, "no_tcp", False):
        if not values.get("utp", True):
            raise UsageError("--no-utp and --no-tcp together leave no way to reach a peer")
        values["tcp"] = False
    return values


def no_dht_reason(config: ClientConfig, private: bool) -> str | None:
    """Why the DHT will not find peers for a torrent, or None when it will look."""
    if not config.dht:
        return "--no-dht turns the DHT off"
    if private:
        return "it is private, which rules out the DHT"
    return None


def is_magnet(text: str) -> bool:
    """Does a command argument look like a magnet link rather than a path?"""
    return text.strip().lower().startswith("magnet:")


def build_config(args: argparse.Namespace, out: Path) -> ClientConfig:
    state = args.state_dir or os.environ.get(STATE_DIR_ENV) or default_data_dir()
    values: dict[str, object] = {
        "data_dir": Path(state),
        "download_dir": out,
        "listen_port": args.port,
        "seed": args.seed,
        "no_upload": args.no_upload,
        "download_rate_limit": _rate(args.download_rate),
        "upload_rate_limit": _rate(args.upload_rate),
        "sequential_download": getattr(args, "sequential", False),
        "first_last_pieces_first": getattr(args, "first_last", False),
    }
    if args.listen:
        values["listen_addresses"] = tuple(args.listen)
    values.update(dht_options(args))
    values.update(transport_options(args))
    return ClientConfig(**values)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    peers = [parse_peer(p) for p in args.peer]
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.connect_timeout < 0:
        raise UsageError("--connect-timeout must not be negative")
    dht_options(args)  # its usage errors before any input is read
    transport_options(args)
    metainfos: dict[bytes, Metainfo] = {}
    magnets: list[Magnet] = []
    for path in args.torrent:
        if is_magnet(path):
            magnets.append(load_magnet(path))  # --file applies to .torrent files only
            continue
        mi = load_torrent(path)
        metainfos.setdefault(mi.info_hash.wire, mi)
    selected = select_files(list(metainfos.values()), getattr(args, "file", []))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    config = build_config(args, out)
    session = Session(
        config,
        list(metainfos.values()),
        peers,
        seed=args.seed,
        verify=args.verify,
        connect_timeout=args.connect_timeout,
        progress=None if args.quiet else Progress(sys.stderr),
        files=selected,
        magnets=magnets,
    )
    return asyncio.run(session.run())


def select_files(metainfos: list[Metainfo], paths: list[str]) -> dict[bytes, list[int]] | None:
    """``--file``: per torrent (by wire info-hash), the files to fetch; None: everything.

    Each path must name a file in some torrent given; a torrent none of the
    paths names is fetched whole (``--file`` narrows the torrents it names).
    """
    if not paths:
        return None
    out: dict[bytes, list[int]] = {}
    for path in paths:
        errors = []
        for mi in metainfos:
            try:
                (index,) = match_files(mi.info, [path])
            except UsageError as exc:
                errors.append(str(exc))
                continue
            chosen = out.setdefault(mi.info_hash.wire, [])
            if index not in chosen:
                chosen.append(index)
            break
        else:
            raise UsageError(errors[0] if len(errors) == 1 else f"--file {path!r}: in no torrent")
    return out


# --------------------------------------------------------------------- progress


class Progress:
    """The live status line: redrawn in place on a terminal, a line now and then otherwise."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = TTY_INTERVAL if self.tty else PLAIN_INTERVAL
        self.last = float("-inf")
        self.width = 0

    def due(self, now: float) -> bool:
        return now - self.last >= self.interval

    def show(self, line: str, now: float) -> None:
        self.last = now
        if self.tty:
            pad = " " * max(0, self.width - len(line))
            self.width = len(line)
            print(f"\r{line}{pad}", end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def end(self) -> None:
        """Leave the cursor on a fresh line so whatever follows is not drawn over."""
        if self.tty and self.width:
            print(file=self.stream, flush=True)
        self.width = 0


def status_line(torrents: list[Torrent], client: Client, *, seeding: bool = True) -> str:
    """Percent, bytes, rates, ETA and peers over all torrents."""
    done = sum(t.bytes_completed() for t in torrents)
    total = sum(t.length for t in torrents)
    down = up = 0.0
    peers = 0
    for t in torrents:
        d, u = t.rates()
        down += d
        up += u
        peers += len(t.peers)
    remaining = sum(t.picker.wanted_remaining_bytes() for t in torrents)
    frac = done / total if total else float(all(t.has_info for t in torrents))
    if all(t.state is TorrentState.SEEDING for t in torrents):
        uploaded = client.stats().bytes_written_data
        what = "seeding" if seeding else "complete"
        tail = f"up {fmt.rate(up)}  uploaded {fmt.size(uploaded)}"
    else:
        what = "checking" if any(t.state is TorrentState.CHECKING for t in torrents) else ""
        if any(t.state is TorrentState.FETCHING_METADATA for t in torrents):
            what = "fetching metadata"
        eta = remaining / down if down > 0 else None
        tail = f"down {fmt.rate(down)}  up {fmt.rate(up)}  ETA {fmt.duration(eta)}"
        what = what or "downloading"
    name = torrents[0].name if len(torrents) == 1 else f"{len(torrents)} torrents"
    return (
        f"{name}: {what} [{fmt.bar(frac, 20)}] {frac * 100:5.1f}% "
        f"{fmt.size(done)}/{fmt.size(total)}  {tail}  peers {peers}"
    )


# --------------------------------------------------------------------- session


@dataclass
class _PeerWatch:
    """What we know about reachability: when a peer was last connected, why dials failed."""

    connected_since_start: bool = False
    last_connected: float = field(default_factory=time.monotonic)
    reasons: dict[Address, str] = field(default_factory=dict)


class Session:
    """One run of ``torrent download``: add the torrents, watch them, stop cleanly."""

    def __init__(
        self,
        config: ClientConfig,
        metainfos: list[Metainfo],
        peers: list[Address],
        *,
        seed: bool = False,
        verify: bool = False,
        connect_timeout: float = 30.0,
        progress: Progress | None = None,
        stream: TextIO | None = None,
        files: dict[bytes, list[int]] | None = None,
        magnets: list[Magnet] | None = None,
    ) -> None:
        self.config = config
        self.metainfos = metainfos
        self.peers = peers
        self.seed = seed
        self.verify = verify
        self.connect_timeout = connect_timeout
        self.progress = progress
        self.stream = stream or sys.stderr
        self.files = files
        self.magnets = magnets or []
        self.stop = asyncio.Event()
        self.signal: int | None = None
        self.watch = _PeerWatch()

    def _on_signal(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
        self.stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        handled = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
                handled.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            async with Client(self.config) as client:
                return await self._run(client)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            if self.progress is not None:
                self.progress.end()

    async def _run(self, client: Client) -> int:
        sub = client.bus.subscribe(kinds=(PeerConnected, PeerDisconnected))
        started = time.monotonic()
        torrents: list[Torrent] = []
        for mi in self.metainfos:
            t = await client.add_metainfo(mi, verify=self.verify, peers=self.peers)
            chosen = None if self.files is None else self.files.get(mi.info_hash.wire)
            if chosen is not None:
                # Before any peer connects: dials are tasks that have not run yet.
                for f in t.files:
                    wanted = f.index in chosen
                    f.set_priority(PiecePriority.NORMAL if wanted else PiecePriority.NONE)
            torrents.append(t)
            if self.stop.is_set():
                break
        for magnet in self.magnets:
            t = await client.add_magnet(magnet, peers=self.peers)
            if t not in torrents:
                torrents.append(t)
        before = client.stats().bytes_read_useful_data
        last_offer = time.monotonic()
        self.watch.last_connected = time.monotonic()
        has_trackers = any(t.trackers() for t in torrents) or any(m.peers for m in self.magnets)
        # A magnet's privacy is unknown until its metadata arrives: the DHT may look.
        no_dht = [no_dht_reason(self.config, mi.info.private) for mi in self.metainfos]
        if self.magnets:
            no_dht.append(no_dht_reason(self.config, False))
        nothing_to_do = (
            not self.peers
            and not has_trackers
            and all(no_dht)
            and not self.seed
            and not self.stop.is_set()
        )
        if nothing_to_do and not self._complete(torrents):
            raise TorrentError(
                "no peers to download from: give --peer HOST:PORT "
                f"(the torrent has no trackers and {no_dht[0]})"
            )
        while not self.stop.is_set():
            now = time.monotonic()
            self._drain(sub, now)
            for t in torrents:
                if t.state is TorrentState.ERROR:
                    raise TorrentError(f"{t.name}: {_plain_error(t.error)}")
            complete = self._complete(torrents)
            if complete and not self.seed:
                break
            if not complete:
                self._check_reachable(torrents, now)
                if now - last_offer >= REDIAL_INTERVAL:
                    last_offer = now
                    for t in torrents:
                        t.add_peers(self.peers)
            if self.progress is not None and self.progress.due(now):
                self.progress.show(status_line(torrents, client, seeding=self.seed), now)
            try:
                async with asyncio.timeout(POLL_INTERVAL):
                    await self.stop.wait()
            except TimeoutError:
                pass
        if self.progress is not None:
            if self.progress.tty or self.signal is None:
                self.progress.show(
                    status_line(torrents, client, seeding=self.seed), time.monotonic()
                )
            self.progress.end()
        got = client.stats().bytes_read_useful_data - before
        elapsed = time.monotonic() - started
        if self.signal is not None:
            done = sum(t.picker.num_have for t in torrents)
            pieces = sum(t.num_pieces for t in torrents)
            word = "interrupted" if self.signal == signal.SIGINT else "terminated"
            print(
                f"torrent: {word}: {done}/{pieces} pieces verified and saved, "
                f"{got} bytes downloaded this run",
                file=self.stream,
            )
            return EXIT_SIGINT if self.signal == signal.SIGINT else EXIT_SIGTERM
        for t in torrents:
            print(
                f"{t.name}: complete, {fmt.size(t.length)} in {self.config.download_dir / t.name}; "
                f"{got} bytes downloaded in {elapsed:.1f}s",
                file=self.stream,
            )
        return 0

    @staticmethod
    def _complete(torrents: list[Torrent]) -> bool:
        return all(t.state is TorrentState.SEEDING for t in torrents)

    def _drain(self, sub: Subscription, now: float) -> None:
        while (event := sub.get_nowait()) is not None:
            if isinstance(event, PeerConnected):
                self.watch.connected_since_start = True
                self.watch.reasons.pop(event.address, None)
            elif isinstance(event, PeerDisconnected):
                self.watch.reasons[event.address] = event.reason

    def _check_reachable(self, torrents: list[Torrent], now: float) -> None:
        """Fail when no peer has been connected for ``connect_timeout`` seconds."""
        if any(t.peers for t in torrents) or any(
            t.state is TorrentState.CHECKING for t in torrents
        ):
            self.watch.last_connected = now
            return
        if not self.connect_timeout or now - self.watch.last_connected < self.connect_timeout:
            return
        reasons = [
            f"{_show(addr)}: {reason}" for addr, reason in sorted(self.watch.reasons.items())
        ]
        for t in torrents:
            for status in t.trackers():
                if status.last_result == "error" and status.last_error:
                    reasons.append(f"tracker {status.url}: {status.last_error}")
                elif status.last_result == "ok":
                    reasons.append(f"tracker {status.url}: {status.peers_received} peers")
        why = "; ".join(reasons)
        lost = "all peers lost and none" if self.watch.connected_since_start else "no peer"
        raise TorrentError(
            f"{lost} reachable for {self.connect_timeout:g}s" + (f" ({why})" if why else "")
        )


def _plain_error(error: str | None) -> str:
    """``"[Errno 28] write failed: ..."`` -> ``"write failed: ..."`` (users read the text)."""
    return re.sub(r"^\[Errno -?\d+\] ", "", error or "unknown error")


def _show(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
