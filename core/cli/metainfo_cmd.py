"""``torrent metainfo FILE magnet|pprint``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterable

from ..formats.metainfo import FileEntry, Metainfo
from . import fmt
from .inputs import input_name, load_torrent


def _tree_lines(files: Iterable[FileEntry], name: str, single: bool) -> list[str]:
    """Render payload files as an indented tree with sizes; directories get totals."""
    entries = [f for f in files if not f.is_padding]
    if single:
        size = entries[0].length if entries else 0
        return [f"  {name}  ({fmt.size(size)})"]
    totals: dict[tuple[str, ...], int] = {}
    for f in entries:
        for depth in range(len(f.path)):
            key = f.path[:depth]
            totals[key] = totals.get(key, 0) + f.length
    lines = [f"  {name}/  ({fmt.size(totals.get((), 0))})"]
    shown: set[tuple[str, ...]] = set()
    for f in sorted(entries, key=lambda e: e.path):
        for depth in range(1, len(f.path)):
            key = f.path[:depth]
            if key not in shown:
                shown.add(key)
                lines.append(f"{'  ' * (depth + 1)}{key[-1]}/  ({fmt.size(totals[key])})")
        lines.append(f"{'  ' * len(f.path)}  {f.path[-1]}  ({fmt.size(f.length)})")
    return lines


def pprint_lines(mi: Metainfo) -> list[str]:
    info = mi.info
    version = "hybrid (v1+v2)" if info.is_hybrid else ("v2" if info.is_v2 else "v1")
    lines = [
        f"Name:          {info.name}",
        f"Total size:    {fmt.size(info.total_size)} ({info.total_size} bytes)",
        f"Piece length:  {fmt.size(info.piece_length)} ({info.piece_length} bytes)",
        f"Pieces:        {info.num_pieces}",
        f"Version:       {version}",
    ]
    if mi.info_hash.v1 is not None:
        lines.append(f"Info-hash v1:  {mi.info_hash.v1.hex()}")
    if mi.info_hash.v2 is not None:
        lines.append(f"Info-hash v2:  {mi.info_hash.v2.hex()}")
    lines.append(f"Private:       {'yes' if info.private else 'no'}")
    if info.source:
        lines.append(f"Source:        {info.source}")
    if mi.comment:
        lines.append(f"Comment:       {mi.comment}")
    if mi.created_by:
        lines.append(f"Created by:    {mi.created_by}")
    if mi.creation_date is not None:
        try:
            when = dt.datetime.fromtimestamp(mi.creation_date, dt.UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            when = str(mi.creation_date)
        lines.append(f"Created:       {when}")
    lines.append("Trackers:" if mi.announce_list else "Trackers:      none")
    for tier, urls in enumerate(mi.announce_list, 1):
        lines.append(f"  tier {tier}: {', '.join(urls)}")
    lines.append("Web seeds:" if mi.url_list else "Web seeds:     none")
    lines.extend(f"  {url}" for url in mi.url_list)
    if mi.nodes:
        lines.append("DHT nodes:")
        lines.extend(f"  {host}:{port}" for host, port in mi.nodes)
    payload = info.payload_files()
    lines.append(f"Files ({len(payload)}):")
    lines.extend(_tree_lines(payload, info.name, info.is_single_file))
    return lines


def warning_lines(mi: Metainfo) -> list[str]:
    """What loading changed or ignored: one line per renamed path, then the rest.

    The torrent still loads (as in libtorrent); these say where its files
    will really be written, so nobody is surprised by ``_`` in a name.
    """
    lines = [
        f"warning: renamed {r.original!r} -> {r.safe!r} ({r.reason})" for r in mi.renamed_paths
    ]
    lines += [f"warning: {w}" for w in mi.warnings]
    return lines


def run(args: argparse.Namespace) -> int:
    mi = load_torrent(args.file)
    if args.action == "magnet":
        sys.stdout.write(mi.magnet() + "\n")
    else:
        sys.stdout.write("\n".join(pprint_lines(mi)) + "\n")
    # On stderr, so `pprint > file` and `magnet | xargs` stay clean.
    for line in warning_lines(mi):
        print(f"torrent: {input_name(args.file)}: {line}", file=sys.stderr)
    return 0
