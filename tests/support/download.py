"""Helpers for ``torrent download`` tests: a seeder in the test process, the CLI in a subprocess.

The seeder is one of our own Clients so tests can read its upload counters
(what the downloader really fetched) and throttle it at runtime.  The CLI
runs through ``python -m core.cli`` exactly as a user would start it, so
signals, exit codes and stderr are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.engine.client import Client
from core.engine.torrent import Torrent
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from tests.support.engine import loopback_config, make_torrent

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Seeder:
    client: Client
    torrent: Torrent
    metainfo: Metainfo
    src: Path
    torrent_file: Path

    @property
    def peer(self) -> str:
        return f"127.0.0.1:{self.client.listen_port}"

    def uploaded(self) -> int:
        return self.torrent.stats().bytes_written_data


@contextlib.asynccontextmanager
async def seeding(
    tmp: Path, files: dict[str, int], piece_length: int, **overrides: object
) -> AsyncIterator[Seeder]:
    """A complete copy of ``files`` served by a Client on 127.0.0.1, and its .torrent file."""
    src = tmp / "src"
    mi = make_torrent(src, files, piece_length)
    torrent_file = tmp / "x.torrent"
    torrent_file.write_bytes(mi.to_bytes())
    async with Client(loopback_config(tmp, "seeder", **overrides)) as client:
        t = await client.add_metainfo(mi, download_dir=src)
        assert t.state is TorrentState.SEEDING
        yield Seeder(client, t, mi, src, torrent_file)


def cli_args(seeder: Seeder, out: Path, state: Path, *extra: str) -> list[str]:
    return [
        str(seeder.torrent_file),
        "-o",
        str(out),
        "--peer",
        seeder.peer,
        "--listen",
        "127.0.0.1",
        "--state-dir",
        str(state),
        "--no-dht",  # sealed to loopback: never the public DHT routers
        *extra,
    ]


@contextlib.asynccontextmanager
async def download_process(
    *args: str, preexec_fn: Callable[[], None] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m core.cli download ARGS``; killed on the way out if still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.cli",
        "download",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        preexec_fn=preexec_fn,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def finish(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int, str]:
    """Wait for the process; its exit status and stderr text."""
    async with asyncio.timeout(timeout):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode("utf-8", "replace")


async def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(step)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A tiny tmpfs at ``path`` (root only); skips the test where mounting is not allowed."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)
