"""``torrent-tui [TORRENT_FILE | MAGNET | URL ...]`` and ``torrent-tui --demo``.

Without ``--demo``: read the user's settings (a bad file gives the defaults
and a message), restore the previous session from the user data dir, add
the sources given on the command line, and run the app on the real engine.

``--demo`` hands over to :func:`tui.demo.run_demo_app` (an offline swarm
under a temporary directory that leaves the user's config alone).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torrent-tui",
        description="A terminal BitTorrent client.",
    )
    p.add_argument("sources", nargs="*", metavar="TORRENT", help=".torrent file, magnet or URL")
    p.add_argument(
        "--demo",
        action="store_true",
        help="run against a built-in offline swarm on 127.0.0.1 (nothing is saved)",
    )
    p.add_argument("--config", type=Path, help="settings file (default: the user config dir)")
    p.add_argument(
        "--session-dir", type=Path, help="where torrents are remembered (default: user data dir)"
    )
    p.add_argument("--log", type=Path, help="write a debug log to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log is not None:
        logging.basicConfig(filename=args.log, level=logging.DEBUG)
    if args.demo:
        try:
            demo = importlib.import_module("tui.demo")
        except ModuleNotFoundError:
            print("torrent-tui: the demo is not available in this build", file=sys.stderr)
            return 2
        result = demo.run_demo_app(list(args.sources))
        return int(result or 0)

    from .app import TorrentApp
    from .engine import RealEngine
    from .session import Session

    settings = load_settings(args.config)
    engine = RealEngine(settings.client, session=Session(args.session_dir))
    app = TorrentApp(engine, settings=settings, sources=args.sources)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
