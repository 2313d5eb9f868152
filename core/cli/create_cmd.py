"""``torrent create ROOT -o OUT ...``: hash files into a new .torrent."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from ..formats.create import create_torrent
from . import fmt
from .usage import UsageError


class ProgressLine:
    """A progress bar with rate and ETA on stderr, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        elapsed = max(now - self.start, 1e-6)
        speed = done / elapsed
        eta = (total - done) / speed if speed > 0 else None
        frac = done / total if total else 1.0
        line = (
            f"\rhashing [{fmt.bar(frac)}] {frac * 100:5.1f}% "
            f"{fmt.size(done)}/{fmt.size(total)} {fmt.rate(speed)} ETA {fmt.duration(eta)}  "
        )
        print(line, end="", file=self.stream, flush=True)

    def finish(self) -> None:
        print(file=self.stream)


def _tiers(announce: list[str]) -> list[list[str]]:
    """Each ``-a`` is a tier; commas inside one ``-a`` list backups within that tier."""
    return [[u.strip() for u in arg.split(",") if u.strip()] for arg in announce]


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.exists():
        raise FileNotFoundError(2, os.strerror(2), str(root))
    if args.piece_length is not None:
        pl = args.piece_length
        if pl < 16384 or pl & (pl - 1):
            raise UsageError(f"--piece-length must be a power of two >= 16 KiB, got {pl}")
    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    progress = None if args.quiet else ProgressLine()
    mi = create_torrent(
        root,
        version=args.version,
        piece_length=args.piece_length,
        trackers=_tiers(args.announce),
        web_seeds=args.webseed,
        private=args.private,
        comment=args.comment,
        source=args.source,
        threads=args.threads,
        progress=progress,
    )
    if progress is not None:
        progress.finish()
    out = Path(args.output)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(mi.to_bytes())
    tmp.replace(out)
    print(
        f"{out}: {mi.info_hash.hex()}  {mi.info.name}  {fmt.size(mi.info.total_size)}",
        file=sys.stderr,
    )
    return 0
