"""Entry point of the ``torrent`` command.

Each subcommand lives in its own module and is imported only when used, so
``torrent --help`` stays instant.  Exit codes: 0 success, 2 usage error
(argparse), 1 bad input or failure, reported as one line on stderr and never
a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..errors import TorrentError
from .usage import UsageError

Handler = Callable[[argparse.Namespace], int]

#: Shown under ``torrent --help``: the everyday tasks, seeding included (there
#: is no separate ``seed`` command: seeding is downloading what you already have).
EXAMPLES = """\
examples:
  torrent download debian.torrent -o ~/Downloads        download, then exit
  torrent download 'magnet:?xt=urn:btih:...' -o DIR     a magnet link (quote the &s)
  torrent download X.torrent -o DIR --seed              seed data you already have in DIR
                                                        (checked, then uploaded until Ctrl-C)
  torrent create ./photos -o photos.torrent -a URL      make a .torrent
  torrent metainfo X.torrent                            what is inside a .torrent
  torrent cat movie.torrent movie.mkv | mpv -           stream one file while it downloads
  torrent dht get-peers INFOHASH                        ask the DHT who has a torrent

'torrent COMMAND --help' lists a command's options.
"""


def _add_metainfo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "metainfo",
        help="inspect a .torrent file",
        description="Inspect a .torrent file (ACTION defaults to pprint).",
    )
    p.add_argument("file", help="path to a .torrent file ('-' for stdin)")
    actions = p.add_subparsers(dest="action", required=False, metavar="ACTION")
    actions.add_parser("magnet", help="print the magnet link (info-hash, name, trackers)")
    actions.add_parser("pprint", help="print name, sizes, hashes, trackers and the file tree")
    p.set_defaults(handler="core.cli.metainfo_cmd:run", action="pprint")


def _add_create(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "create",
        help="create a .torrent from a file or directory",
        description="Create a .torrent from a file or directory.",
    )
    p.add_argument("root", help="file or directory to describe")
    p.add_argument("-o", "--output", required=True, help="where to write the .torrent")
    p.add_argument(
        "-a",
        "--announce",
        action="append",
        default=[],
        metavar="TRACKER",
        help="tracker URL; repeat for more; separate URLs of one tier with commas",
    )
    p.add_argument(
        "-w", "--webseed", action="append", default=[], metavar="URL", help="web seed (BEP 19)"
    )
    p.add_argument(
        "--piece-length",
        type=_parse_size,
        default=None,
        metavar="N",
        help="piece length in bytes (suffixes K, M allowed); default: automatic",
    )
    p.add_argument("--private", action="store_true", help="set the private flag (BEP 27)")
    version = p.add_mutually_exclusive_group()
    version.add_argument("--v1", dest="version", action="store_const", const="v1", help="(default)")
    version.add_argument("--v2", dest="version", action="store_const", const="v2")
    version.add_argument("--hybrid", dest="version", action="store_const", const="hybrid")
    p.add_argument("-c", "--comment", default=None)
    p.add_argument("--source", default=None, help="source tag (private trackers)")
    p.add_argument("--threads", type=int, default=2, help="hashing threads (default 2)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler="core.cli.create_cmd:run", version="v1")


def _add_bencode(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bencode",
        help="decode any bencoded file",
        description="Decode any bencoded file.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    j = actions.add_parser("json", help="print as JSON (bytes that are not UTF-8 as hex)")
    j.add_argument("file", help="path ('-' for stdin)")
    s = actions.add_parser("spew", help="print the structure with types and lengths")
    s.add_argument("file", help="path ('-' for stdin)")
    p.set_defaults(handler="core.cli.bencode_cmd:run")


def _add_swarm_options(p: argparse.ArgumentParser, *, state_dir_help: str | None) -> None:
    """Options of every command that joins a swarm: peers to dial and where to listen."""
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a peer to connect to (IPv6 as [ADDR]:PORT); repeat for more",
    )
    p.add_argument(
        "--port", type=int, default=0, metavar="N", help="listen port (default: any free port)"
    )
    p.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="ADDR",
        help="address to listen on; repeat for more (default: all IPv4 and IPv6)",
    )
    if state_dir_help is not None:
        p.add_argument("--state-dir", default=None, metavar="DIR", help=state_dir_help)
    p.add_argument("--no-dht", action="store_true", help="do not look for peers in the DHT")
    _add_dht_bootstrap(p)


def _add_transport_options(p: argparse.ArgumentParser) -> None:
    """How peer connections are made: encryption policy and transports."""
    p.add_argument(
        "--encryption",
        choices=("prefer", "require", "disable"),
        default=None,
        help="protocol encryption (MSE/PE): prefer (default: try it, fall back to plain), "
        "require (encrypted peers only), disable (plain only)",
    )
    p.add_argument(
        "--no-utp", action="store_true", help="do not use uTP (peer connections over TCP only)"
    )
    p.add_argument(
        "--no-tcp", action="store_true", help="do not use TCP (peer connections over uTP only)"
    )


def _add_dht_bootstrap(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dht-bootstrap",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a DHT node to join the DHT through; repeat for more "
        "(replaces the default public routers)",
    )


def _add_download(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "download",
        help="download (and optionally seed) torrents",
        description=(
            "Download torrents from the given peers, showing progress on stderr. "
            "Exits when every torrent is complete unless --seed; Ctrl-C stops "
            "cleanly and a later run resumes where this one stopped."
        ),
    )
    p.add_argument("torrent", nargs="+", help="path to a .torrent file, or a magnet link")
    p.add_argument(
        "-o", "--output", default=".", metavar="DIR", help="download directory (default: .)"
    )
    _add_swarm_options(
        p,
        state_dir_help="where piece completion is kept "
        "(default: $PYTORRENT_STATE_DIR or the user data dir)",
    )
    p.add_argument("--seed", action="store_true", help="keep seeding after completion")
    p.add_argument("--no-upload", action="store_true", help="never upload piece data")
    p.add_argument(
        "--download-rate",
        type=_parse_size,
        default=None,
        metavar="R",
        help="download limit in bytes/s (suffixes K, M, G; 0: unlimited)",
    )
    p.add_argument(
        "--upload-rate",
        type=_parse_size,
        default=None,
        metavar="R",
        help="upload limit in bytes/s (suffixes K, M, G; 0: unlimited)",
    )
    p.add_argument("--verify", action="store_true", help="rehash existing data before starting")
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="fail when no peer is connected for this long while incomplete (0: wait forever)",
    )
    p.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PATH",
        help="fetch only this file (its path in the torrent, with or without the torrent's "
        "name); repeat for more",
    )
    _add_transport_options(p)
    p.add_argument(
        "--sequential", action="store_true", help="fetch pieces in order (streaming a whole file)"
    )
    p.add_argument(
        "--first-last",
        action="store_true",
        help="fetch each file's first and last pieces before the rest (media indexes)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(handler="core.cli.download_cmd:run")


def _add_cat(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cat",
        help="stream one file of a torrent to stdout while it downloads",
        description=(
            "Write one file's bytes to stdout, fetching only what is read "
            "(e.g. torrent cat x.torrent movie.mkv | mpv -)."
        ),
    )
    p.add_argument("torrent", metavar="TORRENT", help="path to a .torrent file, or a magnet link")
    p.add_argument("path", metavar="PATH", help="the file's path in the torrent")
    p.add_argument(
        "--offset", type=_parse_size, default=0, metavar="N", help="start at byte N of the file"
    )
    p.add_argument(
        "--length", type=_parse_size, default=None, metavar="N", help="write at most N bytes"
    )
    _add_swarm_options(p, state_dir_help="where piece completion is kept (default: with the data)")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="DIR",
        help="keep the fetched data here (default: a temporary directory, removed at exit)",
    )
    p.add_argument(
        "--readahead",
        type=_parse_size,
        default=None,
        metavar="N",
        help="bytes to fetch ahead of the reading (default: grows while reading on)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="fail when no peer is connected for this long (0: wait forever)",
    )
    p.set_defaults(handler="core.cli.cat_cmd:run")


def _add_tracker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "announce",
        help="announce a torrent to one tracker and print the peers",
        description=(
            "Announce to TRACKER_URL (http, https or udp) and print the interval, "
            "the swarm's size and the peers it returned."
        ),
    )
    a.add_argument("torrent", metavar="TORRENT", help=".torrent file ('-' for stdin) or info-hash")
    a.add_argument("tracker", metavar="TRACKER_URL")
    a.add_argument(
        "--event",
        choices=["none", "started", "completed", "stopped"],
        default="none",
        help="announce event (default: none, a regular announce)",
    )
    a.add_argument(
        "--port", type=int, default=6881, metavar="N", help="port to announce (default 6881)"
    )
    a.add_argument(
        "--left",
        type=int,
        default=None,
        metavar="BYTES",
        help="bytes left to download (default: the whole torrent; 0 for a bare info-hash)",
    )
    a.add_argument("--numwant", type=int, default=50, metavar="N", help="peers wanted (default 50)")
    a.add_argument("--timeout", type=float, default=30.0, metavar="S", help="give up after S s")
    a.set_defaults(handler="core.cli.tracker_cmd:run_announce")

    s = sub.add_parser(
        "scrape",
        help="print a tracker's seeders/leechers/completed for info-hashes",
        description="Ask the tracker with announce URL TRACKER_URL for each INFOHASH's figures.",
    )
    s.add_argument("tracker", metavar="TRACKER_URL")
    s.add_argument(
        "info_hash", nargs="+", metavar="INFOHASH", help="40 hex digits or 32 base32 characters"
    )
    s.add_argument("--timeout", type=float, default=30.0, metavar="S", help="give up after S s")
    s.set_defaults(handler="core.cli.tracker_cmd:run_scrape")


def _add_dht(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "dht",
        help="ask the DHT: ping, get-peers, announce, sample, put, get",
        description=(
            "Talk to the mainline DHT by hand: results on stdout, one per line; "
            "summaries on stderr; exit 1 when the DHT did not deliver."
        ),
    )
    actions = d.add_subparsers(dest="dht_command", required=True, metavar="ACTION")

    def action(
        name: str, summary: str, *, lookup: bool, own_port: bool = True
    ) -> argparse.ArgumentParser:
        description = summary[0].upper() + summary[1:] + "."
        p = actions.add_parser(name, help=summary, description=description)
        p.set_defaults(handler=f"core.cli.dht_cmd:run_{name.replace('-', '_')}")
        port_flags = ["--dht-port", "--port"] if own_port else ["--dht-port"]
        p.add_argument(
            *port_flags,
            dest="dht_port",
            type=int,
            default=0,
            metavar="N",
            help="local UDP port (default: any free port)",
        )
        p.add_argument(
            "--listen",
            action="append",
            default=[],
            metavar="ADDR",
            help="address to bind; repeat for more (default: all IPv4, and IPv6 when an "
            "address given is IPv6)",
        )
        p.add_argument(
            "--timeout",
            type=float,
            default=None,
            metavar="S",
            help=f"give up after S seconds (default {60 if lookup else 5})",
        )
        if lookup:
            _add_dht_bootstrap(p)
            p.add_argument(
                "--state-dir",
                default=None,
                metavar="DIR",
                help="where the routing table (dht.dat) is kept "
                "(default: $PYTORRENT_STATE_DIR or the user data dir)",
            )
        return p

    p = action("ping", "ping one DHT node and print its id and round-trip time", lookup=False)
    p.add_argument("address", metavar="HOST:PORT", help="the node (IPv6 as [ADDR]:PORT)")

    p = action("get-peers", "print the peers the DHT knows for a torrent", lookup=True)
    p.add_argument("info_hash", metavar="INFOHASH", help="40 hex digits or 32 base32 characters")

    p = action("announce", "announce a peer for a torrent to the DHT", lookup=True, own_port=False)
    p.add_argument("info_hash", metavar="INFOHASH", help="40 hex digits or 32 base32 characters")
    p.add_argument(
        "--port", type=int, default=None, metavar="N", help="the port peers should connect to"
    )
    p.add_argument(
        "--implied-port",
        action="store_true",
        help="peers connect to the UDP port this command sends from",
    )

    p = action("sample", "list info-hashes one DHT node holds (BEP 51)", lookup=False)
    p.add_argument("address", metavar="HOST:PORT", help="the node (IPv6 as [ADDR]:PORT)")
    p.add_argument("--target", default=None, metavar="HEX", help="a 40-hex-digit id to sample near")

    p = action("put", "store a value in the DHT (BEP 44) and print its target", lookup=True)
    p.add_argument("value", nargs="?", metavar="VALUE", help="stored as a bencoded string")
    p.add_argument(
        "--key", default=None, metavar="SEEDFILE", help="make a mutable item signed with this seed"
    )
    p.add_argument("--seq", type=int, default=None, metavar="N", help="the mutable item's version")
    p.add_argument("--salt", default=None, metavar="S", help="a mutable item's salt")
    p.add_argument(
        "--key-gen",
        default=None,
        metavar="SEEDFILE",
        help="create a new ed25519 seed file (mode 0600) and print its public key",
    )

    p = action("get", "fetch a value from the DHT (BEP 44)", lookup=True)
    p.add_argument("target", nargs="?", metavar="TARGET", help="40 hex digits")
    p.add_argument(
        "--key", default=None, metavar="PUBHEX", help="a mutable item's public key (64 hex digits)"
    )
    p.add_argument("--salt", default=None, metavar="S", help="a mutable item's salt")


def _parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = 1
    if t and t[-1] in units:
        mult = units[t[-1]]
        t = t[:-1]
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative size: {text!r}")
    return value


def _add_magnet_metainfo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "metainfo-from-magnet",
        help="fetch a magnet link's metadata from the swarm and save it as a .torrent",
        description=(
            "Fetch the info dict of a magnet link from its x.pe peers, its trackers "
            "and --peer, and save a .torrent with the magnet's trackers."
        ),
    )
    p.add_argument("magnet", metavar="MAGNET", help="a magnet:?xt=urn:btih:... link")
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="where to save (- for stdout)"
    )
    _add_swarm_options(p, state_dir_help=None)
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="give up after S seconds (60)"
    )
    p.set_defaults(handler="core.cli.magnet_cmd:run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torrent",
        description="A BitTorrent client and toolbox.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_metainfo(sub)
    _add_create(sub)
    _add_bencode(sub)
    _add_download(sub)
    _add_cat(sub)
    _add_magnet_metainfo(sub)
    _add_tracker(sub)
    _add_dht(sub)
    return parser


def _resolve(spec: str) -> Handler:
    import importlib

    module_name, func = spec.split(":")
    handler: Handler = getattr(importlib.import_module(module_name), func)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _resolve(args.handler)(args)
    except UsageError as exc:
        parser.exit(2, f"torrent: error: {exc}\n")
    except TorrentError as exc:
        print(f"torrent: error: {exc}", file=sys.stderr)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"torrent: error: {exc.strerror or exc}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print("torrent: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # pragma: no cover - e.g. `torrent ... | head`
        return 0
    return 1
