"""Reading command inputs, naming the input in every error.

A path or ``-`` for stdin is read with a size cap; a .torrent, a bencoded
blob or a magnet link that does not parse raises :class:`TorrentError`
whose message starts with the input's name (``junk.torrent: not a valid
torrent: unexpected byte b'n' at byte 0``), so a user who passed several
inputs knows which one is wrong.  Every command reads its inputs here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import BencodeError, MagnetError, MetainfoError, TorrentError
from ..formats.bencoding import decode
from ..formats.magnet import Magnet, parse_magnet
from ..formats.metainfo import Metainfo

__all__ = [
    "MAX_INPUT_BYTES",
    "input_name",
    "load_bencode",
    "load_magnet",
    "load_torrent",
    "read_input",
]

#: .torrent files and bencoded blobs bigger than this are refused before reading.
MAX_INPUT_BYTES = 64 << 20
#: A magnet link named in an error is cut to this many characters.
MAGNET_SHOWN = 72


def input_name(name: str) -> str:
    """How an input is named in messages: ``stdin`` for ``-``, else as given."""
    return "stdin" if name == "-" else name


def read_input(name: str) -> bytes:
    if name == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        path = Path(name)
        if path.is_dir():
            raise TorrentError(f"{name}: is a directory, not a file")
        with path.open("rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise TorrentError(f"{input_name(name)}: larger than {MAX_INPUT_BYTES >> 20} MiB")
    return data


def load_torrent(name: str) -> Metainfo:
    """Read and parse a .torrent (a path or ``-``), naming it in any error."""
    try:
        return Metainfo.from_bytes(read_input(name))
    except (MetainfoError, BencodeError) as exc:
        raise TorrentError(f"{input_name(name)}: not a valid torrent: {exc}") from None


def load_bencode(name: str) -> Any:
    """Read and decode any bencoded input, naming it in any error."""
    try:
        return decode(read_input(name))
    except BencodeError as exc:
        raise TorrentError(f"{input_name(name)}: not valid bencode: {exc}") from None


def load_magnet(text: str) -> Magnet:
    """Parse a magnet link argument, naming it (cut if long) in any error."""
    try:
        return parse_magnet(text)
    except MagnetError as exc:
        shown = text if len(text) <= MAGNET_SHOWN else text[: MAGNET_SHOWN - 3] + "..."
        raise TorrentError(f"{shown}: not a valid magnet link: {exc}") from None
