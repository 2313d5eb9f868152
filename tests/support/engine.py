"""Helpers for engine tests: configs sealed to loopback, payloads, torrents."""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.config import ClientConfig
from core.formats.create import create_torrent
from core.formats.metainfo import Metainfo


def loopback_config(tmp: Path, name: str, **overrides: object) -> ClientConfig:
    """A client config that listens on 127.0.0.1 only and keeps its state under ``tmp``."""
    base = tmp / name
    values: dict[str, object] = {
        "listen_addresses": ("127.0.0.1",),
        "listen_port": 0,
        "data_dir": base / "state",
        "download_dir": base / "downloads",
        "dht": False,
        "utp": False,
        # plain BitTorrent handshakes: raw test peers and the interop matrix
        # speak plaintext; MSE and uTP have their own tests
        "encryption": "disable",
        "pex": False,
    }
    values.update(overrides)
    return ClientConfig(**values)  # type: ignore[arg-type]


def write_files(root: Path, files: dict[str, int], seed: int = 1) -> None:
    """Deterministic pseudo-random content, fast enough for tens of MiB."""
    import random

    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}:{rel}")
        with path.open("wb") as f:
            left = size
            while left:
                n = min(left, 1 << 20)
                f.write(rng.randbytes(n))
                left -= n


def make_torrent(
    root: Path, files: dict[str, int], piece_length: int, seed: int = 1, version: str = "v1"
) -> Metainfo:
    """Write ``files`` under ``root`` and hash them into a torrent.

    Every path in ``files`` must start with the torrent's name: ``"movie.mkv"``
    for a single-file torrent, ``"album/..."`` for a multi-file one.  The
    data is then where a client with download directory ``root`` expects it.
    """
    names = {rel.split("/")[0] for rel in files}
    if len(names) != 1:
        raise ValueError("all paths must share the torrent name as first component")
    write_files(root, files, seed)
    target = root / names.pop()
    return create_torrent(target, piece_length=piece_length, version=version)  # type: ignore[arg-type]


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
