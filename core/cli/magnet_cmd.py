"""``torrent metainfo-from-magnet MAGNET -o FILE [--peer HOST:PORT]... [--timeout S]``.

Fetches a magnet link's info dict from the swarm (its ``x.pe`` peers, its
trackers, the DHT, ``--peer``) and saves it as a .torrent file, like anacrolix's
``magnet-metainfo``.  The file has the magnet's trackers as its announce
list and its web seeds as ``url-list``; the info dict is written exactly as
received, so the file has the magnet's info-hash.

No payload is stored: the client runs on memory storage with every file set
to ``NONE`` as soon as the info is known, and stops right after.  The file
is written to a temporary name and renamed, so a failed or interrupted run
leaves no half-written .torrent behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from ..config import ClientConfig
from ..engine.client import Client
from ..errors import TorrentError
from ..formats.magnet import Magnet
from ..formats.metainfo import Metainfo
from ..types import PiecePriority
from . import fmt
from .download_cmd import dht_options, is_magnet, no_dht_reason, parse_peer
from .inputs import load_magnet
from .usage import UsageError

Address = tuple[str, int]


__all__ = ["fetch_metainfo", "is_magnet", "run"]


def run(args: argparse.Namespace) -> int:
    magnet = load_magnet(args.magnet)
    peers = [parse_peer(p) for p in args.peer]
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    values: dict[str, object] = {"default_storage": "memory", "listen_port": args.port}
    if args.listen:
        values["listen_addresses"] = tuple(args.listen)
    values.update(dht_options(args))
    config = ClientConfig(**values)  # type: ignore[arg-type]
    no_dht = no_dht_reason(config, False)
    if not (magnet.peers or magnet.trackers or peers) and no_dht:
        raise UsageError(
            "nowhere to fetch the metadata from: the magnet has no x.pe peers or trackers "
            f"and {no_dht}; give --peer HOST:PORT"
        )
    mi = asyncio.run(fetch_metainfo(config, magnet, peers, args.timeout))
    data = mi.to_bytes()
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_atomically(Path(args.output), data)
    info = mi.info
    print(
        f"{info.name}: {len(info.payload_files())} files, {fmt.size(info.total_size)}, "
        f"{info.num_pieces} pieces; info-hash {mi.info_hash.hex()}"
        + ("" if args.output == "-" else f"; saved to {args.output}"),
        file=sys.stderr,
    )
    return 0


async def fetch_metainfo(
    config: ClientConfig, magnet: Magnet, peers: list[Address], timeout: float
) -> Metainfo:
    """Run a client until the magnet's info dict arrives (TorrentError after ``timeout``)."""
    async with Client(config) as client:
        t = await client.add_magnet(magnet, peers=peers)
        try:
            async with asyncio.timeout(timeout):
                await t.wait_info()
        except TimeoutError:
            why = [f"tracker {s.url}: {s.last_error}" for s in t.trackers() if s.last_error]
            raise TorrentError(
                f"no metadata within {timeout:g}s from {len(t.peers)} connected peers"
                + (f" ({'; '.join(why)})" if why else "")
            ) from None
        for f in t.files:
            f.set_priority(PiecePriority.NONE)  # the metadata was all we came for
        return t.metainfo


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
