"""Magnet over the DHT on 127.0.0.1: time to the first DHT peer and to metadata, ours vs libtorrent.

Run on demand from the repository root (about a minute)::

    python -m bench.dht [--rounds 3] [--nodes 4] [--mib 4] [--timeout 60]

A small DHT of ``--nodes`` libtorrent nodes, each in its own process
(tests/support/lt_dht.py, sealed to loopback, introduced to each other with
``add_dht_node``), is the swarm: one of them seeds, the others only store
announces. Every download starts from an info-hash-only magnet and is given
one storer as its only bootstrap node, so its peers can only come from a DHT
lookup. Each round times three downloaders, one after the other:

- ``ours``: our engine in its own process, built exactly as ``torrent download
  MAGNET --dht-bootstrap 127.0.0.1:PORT`` builds it (the command's own parser
  and ``build_config``, then ``Client.add_magnet``), reporting bus events with
  monotonic timestamps: the first ``DhtPeersFound`` with peers, and
  ``MetadataReceived`` (and ``DhtBootstrapped``, the ``bootstrap`` column).
  Clocked from process spawn, so interpreter start-up and our DHT bootstrap
  are in every figure (the ``up`` column says how much of it was start-up;
  the ``ours after start-up`` row subtracts it);
- ``torrent download``: the real command, spawn to exit 0 (complete, flushed);
  it prints no timestamps, so only the end is measured;
- ``libtorrent``: a fresh libtorrent process with an empty routing table,
  clocked from ``add_dht_node`` + ``add_magnet`` (its start-up is not
  counted): its first ``dht_reply_alert`` with peers, ``metadata_received``,
  ``torrent_finished``.

Each downloader gets a fresh torrent of the same shape, seeded and announced
by the same seeder through the same DHT: with one shared magnet the second
downloader of a round would also be handed the first one's announce (a
finished or departed peer), and the rounds would not be alike. Departed
downloaders do stay in the libtorrent nodes' routing tables, as departed
nodes do in the real DHT: a lookup that waits for them to time out shows it.
Monotonic time is system-wide on Linux, so the children's timestamps compare
with ours. Every payload is SHA-256 checked; every process is stopped by its
pid. Read medians, not single rounds: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.lt_dht import LibtorrentDhtNode, mesh, wait_announced
from tests.support.ltharness import (
    LibtorrentPeerError,
    lt_create_torrent,
    make_payload,
    sha256_tree,
)

REPO = Path(__file__).resolve().parents[1]
NAME = "payload"
LOCAL = "127.0.0.1"
ROWS = ("ours", "ours after start-up", "torrent download", "libtorrent")
COLUMNS = ("up", "bootstrap", "first_peer", "metadata", "complete")


@dataclass
class Run:
    """One download: seconds from its start to each milestone (None: not reached / not seen)."""

    row: str
    times: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None


# -- the runner: our engine in its own process, configured as `torrent download` is ---------


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


async def _runner(magnet: str, cli_args: Sequence[str], timeout: float) -> int:
    from core.cli.download_cmd import build_config
    from core.cli.main import build_parser
    from core.engine.client import Client
    from core.events import DhtBootstrapped, DhtPeersFound, MetadataReceived

    args = build_parser().parse_args(["download", magnet, *cli_args])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    config = build_config(args, out)
    client = Client(config)
    # Subscribed before start: the bootstrap may end while the client starts.
    sub = client.bus.subscribe(kinds=[DhtPeersFound, MetadataReceived, DhtBootstrapped])
    async with client:
        _emit("client_started")
        t = await client.add_magnet(magnet)
        wire = t.info_hash.wire

        async def watch() -> None:
            first_peer = False
            async for ev in sub:
                if isinstance(ev, DhtBootstrapped):
                    _emit("dht_bootstrapped", nodes=ev.nodes, ok=ev.ok)
                elif isinstance(ev, DhtPeersFound) and ev.info_hash.wire == wire:
                    if ev.peers > 0 and not first_peer:
                        first_peer = True
                        _emit("dht_peer", total=ev.total)
                elif isinstance(ev, MetadataReceived) and ev.info_hash.wire == wire:
                    _emit("metadata")

        watcher = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(timeout):
                await t.wait_complete()
            _emit("complete")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    _emit("closed")
    return 0


def runner_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dht _runner")
    ap.add_argument("magnet")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("cli_args", nargs=argparse.REMAINDER, help="torrent download options")
    args = ap.parse_args(argv)
    return asyncio.run(_runner(args.magnet, args.cli_args, args.timeout))


# -- the bench ---------------------------------------------------------------------------


def sealed_env(tmp: Path) -> dict[str, str]:
    """No user state or config reaches the children: everything under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTORRENT_STATE_DIR"}
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        env[var] = str(tmp / "xdg" / var.lower())
    return env


def torrent_command() -> list[str]:
    exe = Path(sys.executable).with_name("torrent")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "core.cli"]


@contextlib.contextmanager
def spawned(argv: Sequence[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A child in its own session, killed by its pid if it is still running at the end."""
    proc = subprocess.Popen(
        list(argv),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.env = sealed_env(tmp)
        self.nodes: list[LibtorrentDhtNode] = []
        self.counter = 0

    @property
    def seeder(self) -> LibtorrentDhtNode:
        return self.nodes[0]

    @property
    def storers(self) -> list[LibtorrentDhtNode]:
        return self.nodes[1:]

    @property
    def bootstrap(self) -> str:
        """What every downloader is given: one storer, never the seeder."""
        return f"{LOCAL}:{self.storers[0].dht_port}"

    def start_swarm(self) -> None:
        for i in range(self.args.nodes):
            node = LibtorrentDhtNode("seeder" if i == 0 else f"storer{i}")
            self.nodes.append(node)
            node.start()
        mesh(self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def new_torrent(self) -> tuple[str, Path]:
        """A fresh payload of the usual shape, seeded and announced; its info-hash and dir."""
        self.counter += 1
        seed_dir = self.tmp / f"seed{self.counter}"
        size = int(self.args.mib * (1 << 20))
        files = {"a.bin": size // 2 + 1_001, "sub/b.bin": size // 2 - 7, "sub/c.txt": 999}
        make_payload(seed_dir / NAME, files, seed=self.counter)
        torrent = self.tmp / f"t{self.counter}.torrent"
        torrent.write_bytes(lt_create_torrent(seed_dir / NAME, 64 * 1024, "v1"))
        ih = self.seeder.add_torrent(torrent, seed_dir, seed=True)
        wait_announced(self.seeder, ih, self.storers, timeout=self.args.timeout)
        return ih, seed_dir

    def check(self, got: Path, seed_dir: Path) -> str | None:
        if sha256_tree(got) != sha256_tree(seed_dir / NAME):
            return "payload differs from the seed"
        return None

    # -- the downloaders -------------------------------------------------------------------

    def run_ours(self) -> Run:
        ih, seed_dir = self.new_torrent()
        work = self.tmp / f"ours{self.counter}"
        argv = [sys.executable, "-m", "bench.dht", "_runner", "--timeout", str(self.args.timeout)]
        argv += [f"magnet:?xt=urn:btih:{ih}", *self._cli_options(work)]
        run = Run("ours")
        marks: dict[str, float] = {}
        t0 = time.monotonic()
        with spawned(argv, self.env) as proc:
            try:
                out, err = proc.communicate(timeout=self.args.timeout + 15)
            except subprocess.TimeoutExpired:
                run.error = "timed out"
                return run
        for line in out.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ev = json.loads(line)
                marks.setdefault(str(ev["event"]), float(ev["t"]))
        if proc.returncode != 0 or "complete" not in marks:
            run.error = f"exit {proc.returncode}: {err.strip().splitlines()[-1:]}"
        run.times = {
            "up": _since(t0, marks.get("client_started")),
            "bootstrap": _since(t0, marks.get("dht_bootstrapped")),
            "first_peer": _since(t0, marks.get("dht_peer")),
            "metadata": _since(t0, marks.get("metadata")),
            "complete": _since(t0, marks.get("complete")),
        }
        run.error = run.error or self.check(work / "out" / NAME, seed_dir)
        return run

    def run_cli(self) -> Run:
        ih, seed_dir = self.new_torrent()
        work = self.tmp / f"cli{self.counter}"
        argv = [*torrent_command(), "download", f"magnet:?xt=urn:btih:{ih}", "-q"]
        argv += self._cli_options(work)
        run = Run("torrent download")
        t0 = time.monotonic()
        with spawned(argv, self.env) as proc:
            try:
                _, err = proc.communicate(timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                run.error = "timed out"
                return run
        elapsed = time.monotonic() - t0
        if proc.returncode != 0:
            run.error = f"exit {proc.returncode}: {err.strip().splitlines()[-1:]}"
            return run
        run.times = {"complete": elapsed}
        run.error = self.check(work / "out" / NAME, seed_dir)
        return run

    def run_libtorrent(self) -> Run:
        ih, seed_dir = self.new_torrent()
        leech_dir = self.tmp / f"lt{self.counter}"
        leech_dir.mkdir()
        run = Run("libtorrent")
        node = LibtorrentDhtNode(f"leecher{self.counter}")
        try:
            node.start()
            t0 = time.monotonic()
            node.add_dht_node(LOCAL, self.storers[0].dht_port)
            node.add_magnet(f"magnet:?xt=urn:btih:{ih}", leech_dir)
            try:
                done = node.wait_event(
                    "torrent_finished",
                    timeout=self.args.timeout,
                    predicate=lambda e: e.get("info_hash") == ih,
                )
            except LibtorrentPeerError as exc:
                run.error = str(exc).splitlines()[0]
                return run

            def first(name: str, **match: Any) -> float | None:
                for e in node.events(name):
                    if e.get("info_hash") == ih and all(e.get(k) == v for k, v in match.items()):
                        return _since(t0, float(e["t"]))
                return None

            peers = [
                e["t"]
                for e in node.events("dht_reply")
                if e.get("info_hash") == ih and e.get("num_peers", 0) > 0
            ]
            boot = [e["t"] for e in node.events("dht_bootstrap")]
            run.times = {
                "bootstrap": _since(t0, min(boot)) if boot else None,
                "first_peer": _since(t0, min(peers)) if peers else None,
                "metadata": first("metadata_received"),
                "complete": _since(t0, float(done["t"])),
            }
        finally:
            node.stop()  # flushes its store buffer before the check
        run.error = self.check(leech_dir / NAME, seed_dir)
        return run

    def _cli_options(self, work: Path) -> list[str]:
        return [
            "-o",
            str(work / "out"),
            "--state-dir",
            str(work / "state"),
            "--listen",
            LOCAL,
            "--dht-bootstrap",
            self.bootstrap,
            "--connect-timeout",
            str(self.args.timeout),
        ]


def _after_startup(run: Run) -> Run:
    """Our figures from the moment the Client runs: the clock libtorrent's row uses."""
    up = run.times.get("up")
    times = {
        k: None if v is None or up is None else v - up for k, v in run.times.items() if k != "up"
    }
    return Run("ours after start-up", times, run.error)


def _since(t0: float, t: float | None) -> float | None:
    return None if t is None else t - t0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(runs: list[Run], args: argparse.Namespace, lt_version: str) -> None:
    label = {"libtorrent": f"libtorrent {lt_version}"}
    runs = runs + [_after_startup(r) for r in runs if r.row == "ours"]
    print(
        f"\nmagnet via the DHT on 127.0.0.1: {args.nodes} libtorrent DHT nodes (1 seeder), "
        f"{args.mib:g} MiB payload, {args.rounds} rounds; seconds from start, "
        "median [each round]"
    )
    head = f"{'client':<22}" + "".join(f"{c:>26}" for c in COLUMNS)
    print(head)
    print("-" * len(head))
    for row in ROWS:
        mine = [r for r in runs if r.row == row]
        cells = []
        for col in COLUMNS:
            values = [r.times.get(col) for r in mine if r.error is None]
            got = [v for v in values if v is not None]
            if not got:
                cells.append("-")
                continue
            each = " ".join(_fmt(v) for v in values)
            cells.append(f"{statistics.median(got):.2f} [{each}]")
        print(f"{label.get(row, row):<22}" + "".join(f"{c:>26}" for c in cells))
    for r in runs:
        if r.error and r.row != "ours after start-up":
            print(f"  {r.row}: failed: {r.error}")
    print(
        "\nours: from process spawn (up = spawn to Client running: interpreter and imports);"
        "\nours after start-up: the same, from Client running (libtorrent's clock);"
        "\ntorrent download: spawn to exit 0 (complete, files flushed, DHT state saved);"
        "\nlibtorrent: from add_dht_node + add_magnet in an already running process"
        "\n(it posts no bootstrap alert when it is given nodes rather than routers)."
        "\nbootstrap: our DhtBootstrapped event; a magnet's lookups wait for it."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_runner"]:
        return runner_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench.dht", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=4, help="libtorrent DHT nodes (>= 2)")
    ap.add_argument("--mib", type=float, default=4.0, help="payload size in MiB")
    ap.add_argument("--timeout", type=float, default=60.0, help="per download, seconds")
    args = ap.parse_args(argv)
    if args.nodes < 2:
        ap.error("--nodes must be at least 2 (a seeder and a node that stores its announce)")
    import libtorrent

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-dht-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.start_swarm()
            for rnd in range(args.rounds):
                order = [bench.run_ours, bench.run_cli, bench.run_libtorrent]
                if rnd % 2:
                    order.reverse()  # neither side always goes first
                for fn in order:
                    run = fn()
                    runs.append(run)
                    times = " ".join(f"{k}={_fmt(v)}" for k, v in run.times.items())
                    status = f" FAILED: {run.error}" if run.error else ""
                    print(f"round {rnd + 1} {run.row:<17} {times}{status}", flush=True)
        finally:
            bench.stop()
    report(runs, args, libtorrent.__version__)
    return 0 if all(r.error is None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
