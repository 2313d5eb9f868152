"""Reading command inputs: a path or ``-`` for stdin, with a size cap."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import TorrentError

#: .torrent files and bencoded blobs bigger than this are refused before reading.
MAX_INPUT_BYTES = 64 << 20


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
        raise TorrentError(f"{name}: larger than {MAX_INPUT_BYTES >> 20} MiB")
    return data
