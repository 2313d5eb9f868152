"""``torrent cat TORRENT PATH [--offset N] [--length N]``: stream one file to stdout.

Only what is read is fetched: every file starts at priority NONE and a
:class:`~core.engine.reader.Reader` on the named file drives the download (the
piece under it first, then a readahead that grows while reading goes on
contiguously), so ``torrent cat x.torrent movie.mkv | mpv -`` starts playing
after the first pieces, not after the whole file.

Data goes to a temporary directory that is removed at exit, unless ``-o DIR``
keeps it (a later run then reads verified pieces from disk instead of the
network).  Output is written from a worker thread, so a slow consumer (a
paused player) never stalls the engine; it only stops the reading, and with
it the readahead.  A consumer that goes away (``| head``) ends the command
quietly with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from ..config import ClientConfig
from ..engine.client import Client
from ..engine.reader import Reader
from ..engine.torrent import Torrent
from ..errors import TorrentError
from ..formats.metainfo import Metainfo
from ..stats import TorrentState
from ..types import PiecePriority
from .download_cmd import (
    REDIAL_INTERVAL,
    STATE_DIR_ENV,
    dht_options,
    is_magnet,
    no_dht_reason,
    parse_peer,
)
from .file_select import match_files
from .inputs import load_magnet, load_torrent
from .usage import UsageError

#: Bytes handed to the output per write.
WRITE_SIZE = 1 << 20
#: How often the command checks for lost peers while a read waits.
POLL_INTERVAL = 0.25

Address = tuple[str, int]


def run(args: argparse.Namespace) -> int:
    if args.offset < 0:
        raise UsageError("--offset must not be negative")
    if args.length is not None and args.length < 0:
        raise UsageError("--length must not be negative")
    peers = [parse_peer(p) for p in args.peer]
    dht = dht_options(args)
    if is_magnet(args.torrent):
        mi, extra = _from_magnet(args, peers)
        peers += extra
    else:
        mi = load_torrent(args.torrent)
    (index,) = match_files(mi.info, [args.path], what="path")
    with tempfile.TemporaryDirectory(prefix="torrent-cat-") as tmp:
        out_dir = Path(args.output) if args.output else Path(tmp) / "data"
        state = args.state_dir or os.environ.get(STATE_DIR_ENV) or Path(tmp) / "state"
        values: dict[str, object] = {
            "data_dir": Path(state),
            "download_dir": out_dir,
            "listen_port": args.port,
            "seed": False,
        }
        if args.listen:
            values["listen_addresses"] = tuple(args.listen)
        values.update(dht)
        config = ClientConfig(**values)  # type: ignore[arg-type]
        cat = Cat(
            config,
            mi,
            index,
            peers,
            offset=args.offset,
            length=args.length,
            readahead=args.readahead,
            connect_timeout=args.connect_timeout,
        )
        return asyncio.run(cat.run(sys.stdout.buffer))


def _from_magnet(args: argparse.Namespace, peers: list[Address]) -> tuple[Metainfo, list[Address]]:
    """A magnet: fetch its info dict first (core.cli.magnet_cmd), then cat as from a file.

    The metadata comes from a short session of its own; the file is then
    read in the usual way, from the magnet's ``x.pe`` peers, its trackers
    (the fetched metainfo carries them), the DHT and ``--peer``.
    """
    from .magnet_cmd import fetch_metainfo

    magnet = load_magnet(args.torrent)
    values: dict[str, object] = {"default_storage": "memory", "listen_port": args.port}
    if args.listen:
        values["listen_addresses"] = tuple(args.listen)
    values.update(dht_options(args))
    config = ClientConfig(**values)  # type: ignore[arg-type]
    no_dht = no_dht_reason(config, False)
    if not (magnet.peers or magnet.trackers or peers) and no_dht:
        raise TorrentError(
            "no peers to read from: the magnet has no x.pe peers or trackers and "
            f"{no_dht}; give --peer HOST:PORT"
        )
    timeout = args.connect_timeout or 60.0
    mi = asyncio.run(fetch_metainfo(config, magnet, peers, timeout))
    return mi, list(magnet.peer_addresses)


class Cat:
    """One run of ``torrent cat``."""

    def __init__(
        self,
        config: ClientConfig,
        metainfo: Metainfo,
        file_index: int,
        peers: list[Address],
        *,
        offset: int = 0,
        length: int | None = None,
        readahead: int | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.metainfo = metainfo
        self.file_index = file_index
        self.peers = peers
        self.offset = offset
        self.length = length
        self.readahead = readahead
        self.connect_timeout = connect_timeout

    async def run(self, out: BinaryIO) -> int:
        async with Client(self.config) as client:
            t = await client.add_metainfo(self.metainfo)
            for f in t.files:
                f.set_priority(PiecePriority.NONE)
            t.add_peers(self.peers)
            no_dht = no_dht_reason(self.config, self.metainfo.info.private)
            if not self.peers and not t.trackers() and no_dht:
                raise TorrentError(
                    "no peers to read from: give --peer HOST:PORT "
                    f"(the torrent has no trackers and {no_dht})"
                )
            f = next(f for f in t.files if f.index == self.file_index)
            end = f.length if self.length is None else min(f.length, self.offset + self.length)
            try:
                await self._copy(t, f.new_reader(readahead=self.readahead), end, out)
            except BrokenPipeError:
                _silence_stdout(out)
        return 0

    async def _copy(self, t: Torrent, reader: Reader, end: int, out: BinaryIO) -> None:
        async with reader:
            pos = reader.seek(self.offset)
            last_peer = time.monotonic()
            last_offer = time.monotonic()
            while pos < end:
                read = asyncio.ensure_future(reader.read(min(WRITE_SIZE, end - pos)))
                try:
                    while not read.done():
                        await asyncio.wait({read}, timeout=POLL_INTERVAL)
                        now = time.monotonic()
                        if t.peers or t.state is TorrentState.CHECKING:
                            last_peer = now
                        elif now - last_offer >= REDIAL_INTERVAL:
                            last_offer = now
                            t.add_peers(self.peers)
                        if self.connect_timeout and now - last_peer >= self.connect_timeout:
                            raise TorrentError(
                                f"no peer reachable for {self.connect_timeout:g}s "
                                f"({pos} of {end - self.offset} bytes written)"
                            )
                finally:
                    if not read.done():
                        read.cancel()
                data = read.result()
                if not data:
                    break
                await asyncio.to_thread(_write, out, data)
                pos += len(data)


def _write(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()


def _silence_stdout(out: BinaryIO) -> None:
    """The reader went away: make the interpreter's final flush quiet too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
