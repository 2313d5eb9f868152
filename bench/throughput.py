"""End-to-end throughput on 127.0.0.1: our engine vs libtorrent vs aria2c.

Run on demand (it takes a while and wants the machine to itself)::

    python -m bench.throughput [--mib 1024] [--piece-kib 1024] [--only ours,lt,aria2,seed]

One single-file torrent of ``--mib`` MiB of random bytes is seeded by
libtorrent in its own process (tests/support/lt_peer.py, sealed to loopback).
Then, one after the other, each downloads it into a fresh directory:

- ``ours``: our engine in its own process (bench/engine_runner.py), so its
  CPU time and peak RSS are its own;
- ``libtorrent``: a second libtorrent process (the reference);
- ``aria2c``: the Debian ``aria2`` package, if installed (the row is skipped
  and says so otherwise).  aria2c cannot be handed a peer on the command
  line, so the torrent announces to a tiny HTTP tracker on 127.0.0.1 run by
  this script, which answers with the seeder's address only.

Finally ``seed``: our engine seeds the original payload to a fresh libtorrent
leecher.

Rates are MB/s (10^6 bytes) of payload.  ``wire MB/s`` is the yardstick to
compare: first to last payload byte as counted by the libtorrent on the other
end (polled every 20 ms), the same for every row; it leaves out process
start-up and aria2c's one-second timers (it connects, and declares itself
done, on a 1 s tick, which costs it ~3 s of a 1 GiB run).  ``MB/s`` is end to
end: from process spawn (ours, aria2c) or ``add_torrent`` (libtorrent, whose
process is already up) until every piece is verified; ours also reports spawn
to exit, which adds the final fsync.  CPU is user+system seconds of the
downloading process per GiB (for ours split into the event-loop thread,
with and without start-up, and the hashing/writing threads); RSS is its peak
resident set (VmHWM or ru_maxrss).  Every process only ever talks to
127.0.0.1.

Before each row a payload-sized scratch file is written and deleted (see
``Bench.prewarm``): on the VM this was written on, freed memory goes back to
the host within seconds and the next writer pays ~2.5 s/GiB of system CPU to
fault page cache in again.  Expect noise anyway on a shared 2-core machine:
run ``--repeat 3`` and read the range.

``--profile DIR`` attaches ``py-spy record`` to our downloader and seeder
and prints the functions where most samples landed (``BENCH_PYSPY_NATIVE=1``
adds native frames).  ``BENCH_PROFILE=FILE`` makes the runner use cProfile
instead; ``BENCH_WRAP="strace -c -f -o FILE"`` runs it under another tool.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core.formats.bencoding import encode
from core.formats.create import create_torrent
from tests.support.ltharness import LibtorrentPeer

REPO = Path(__file__).resolve().parent.parent
#: BENCH_WRAP="strace -c -f -o FILE" (say) runs our engine under another tool.
RUNNER = [
    *shlex.split(os.environ.get("BENCH_WRAP", "")),
    sys.executable,
    "-m",
    "bench.engine_runner",
]
GIB = 1 << 30
TIMEOUT = 600.0


@dataclass
class Row:
    name: str
    seconds: float | None = None
    wire_seconds: float | None = None
    nbytes: int = 0
    cpu: float | None = None
    rss: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mbps(self) -> float | None:
        return self.nbytes / self.seconds / 1e6 if self.seconds else None

    @property
    def wire_mbps(self) -> float | None:
        return self.nbytes / self.wire_seconds / 1e6 if self.wire_seconds else None

    def cpu_per_gib(self) -> float | None:
        return self.cpu * GIB / self.nbytes if self.cpu is not None and self.nbytes else None


# -- measuring other processes ----------------------------------------------------


def proc_usage(pid: int) -> tuple[float, int]:
    """(user+system CPU seconds, VmHWM bytes) of a live process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_child(proc: subprocess.Popen[Any], timeout: float) -> resource.struct_rusage:
    """Reap ``proc`` with wait4 so we get its own rusage (CPU, ru_maxrss)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.01)


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """Sample ``pid`` with py-spy (collapsed stacks) while the block runs."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if out is None or not Path(exe).exists():
        yield
        return
    spy = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "-o", str(out)]
        + (["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(timeout=15)  # exits by itself once the target is gone
        if spy.poll() is None:
            spy.terminate()
            spy.wait()


def _frame_name(frame: str) -> str:
    """``func (path/file.py:12)`` -> ``func (file.py)``."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit('/', 1)[-1].split(':')[0]})"


def summarise_profile(path: Path, top: int = 15) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    if not path.exists():
        return f"(no profile at {path})"
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = workers = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        workers += n * frames[0].startswith("Thread._bootstrap")
        own[frames[-1]] += n
        for fn in set(frames):
            incl[fn] += n
    if not total:
        return "(no samples)"
    lines = [
        f"{total} samples, {100 * (total - workers) / total:.0f}% event loop thread, "
        f"{100 * workers / total:.0f}% worker threads",
        "   self%  incl%  function",
    ]
    for fn, n in own.most_common(top):
        lines.append(f"  {100 * n / total:6.1f} {100 * incl[fn] / total:6.1f}  {fn}")
    lines.append("  inclusive:")
    for fn, n in incl.most_common(top + 12)[12:]:
        lines.append(f"  {'':6} {100 * n / total:6.1f}  {fn}")
    return "\n".join(lines)


class UploadWatch:
    """Time the seeder's payload upload, first byte to last, by polling its status.

    This is the transfer rate on the wire, the same yardstick for every
    downloader: it leaves out process start-up and aria2c's one-second
    housekeeping ticks (it connects and declares completion on a timer).
    """

    def __init__(self, peer: LibtorrentPeer, info_hash: str, size: int, key: str) -> None:
        self.peer, self.info_hash, self.size, self.key = peer, info_hash, size, key
        self.base = int(peer.status(info_hash)[key])
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        prev_t, prev_n = time.monotonic(), 0
        while not self._stop.is_set():
            t = time.monotonic()
            n = int(self.peer.status(self.info_hash)[self.key]) - self.base
            if n and self.first is None:
                # Bytes appeared since the previous poll: the first one left about
                # midway, the error is at most one poll interval.
                self.first = (prev_t + t) / 2
            if n >= self.size:
                self.last = (prev_t + t) / 2 if prev_n < self.size else self.last
                return
            prev_t, prev_n = t, n
            self._stop.wait(0.02)

    def seconds(self) -> float | None:
        self._thread.join(timeout=3)  # the last poll may still be on its way
        self._stop.set()
        self._thread.join(timeout=5)
        if self.first is None or self.last is None:
            return None
        return self.last - self.first


# -- a tracker for aria2c ------------------------------------------------------------


class Tracker:
    """HTTP tracker on 127.0.0.1 that answers every announce with ``peers``."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        tracker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                compact = b"".join(
                    socket.inet_aton(h) + p.to_bytes(2, "big") for h, p in tracker.peers
                )
                body: dict[str, Any] = {"interval": 1800, "complete": 1, "incomplete": 0}
                if query.get("compact", ["1"])[0] == "0":
                    body["peers"] = [{"ip": h, "port": p} for h, p in tracker.peers]
                else:
                    body["peers"] = compact
                data = encode(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/announce"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the rows ----------------------------------------------------------------------


def read_events(proc: subprocess.Popen[str]) -> Iterator[dict[str, Any]]:
    assert proc.stdout is not None
    for line in proc.stdout:
        with contextlib.suppress(ValueError):
            yield json.loads(line)


def check_download(path: Path, payload: Path) -> str:
    """'' if ``path`` holds exactly the payload, else what is wrong."""
    if not path.exists():
        return "missing"
    if path.stat().st_size != payload.stat().st_size:
        return f"size {path.stat().st_size}"
    with path.open("rb") as a, payload.open("rb") as b:
        while True:
            x, y = a.read(1 << 22), b.read(1 << 22)
            if x != y:
                return "content differs"
            if not x:
                return ""


def run_ours(ctx: Bench, seeder_port: int) -> Row:
    row = Row("ours", nbytes=ctx.size)
    out = ctx.fresh("ours")
    argv = [*RUNNER, "download", str(ctx.torrent), str(out), "--state", str(out / ".state")]
    argv += ["--peer", f"127.0.0.1:{seeder_port}", "--config", ctx.config]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ctx.prewarm()
    watch = ctx.watch()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    events: dict[str, dict[str, Any]] = {}
    with py_spy(proc.pid, ctx.profile_path("download")):
        for ev in read_events(proc):
            events[ev["event"]] = ev
        ru = wait_child(proc, TIMEOUT)
    t_exit = time.monotonic()
    if proc.returncode or "complete" not in events:
        row.note = f"failed (exit {proc.returncode})"
        return row
    row.seconds = events["complete"]["t"] - t0
    row.wire_seconds = watch.seconds()
    row.cpu = ru.ru_utime + ru.ru_stime
    row.rss = ru.ru_maxrss * 1024
    done = events["complete"]
    row.extra = {
        "to_exit_s": t_exit - t0,
        "loop_cpu_s_per_gib": done["loop_cpu"] * GIB / ctx.size,
        # Without interpreter start-up, imports and the empty-directory check:
        "transfer_loop_cpu_s_per_gib": (done["loop_cpu"] - events["added"]["loop_cpu"])
        * GIB
        / ctx.size,
        "transfer_cpu_s_per_gib": (done["cpu"] - events["added"]["cpu"]) * GIB / ctx.size,
        "threads_cpu_s_per_gib": (done["cpu"] - done["loop_cpu"]) * GIB / ctx.size,
        "sys_cpu_s_per_gib": done["sys"] * GIB / ctx.size,
        "minflt": done["minflt"],
        "vcsw": done["vcsw"],
        "ivcsw": done["ivcsw"],
        **events["closed"].get("stats", {}),
    }
    row.note = check_download(out / ctx.payload.name, ctx.payload) or (
        f"spawn->exit {ctx.size / (t_exit - t0) / 1e6:.0f} MB/s;"
        f" CPU s/GiB loop {row.extra['loop_cpu_s_per_gib']:.2f}"
        f" ({row.extra['transfer_loop_cpu_s_per_gib']:.2f} after start-up),"
        f" threads {row.extra['threads_cpu_s_per_gib']:.2f};"
        f" system {row.extra['sys_cpu_s_per_gib']:.2f}"
    )
    shutil.rmtree(out, ignore_errors=True)
    return row


def run_libtorrent(ctx: Bench, seeder_port: int) -> Row:
    row = Row("libtorrent", nbytes=ctx.size)
    out = ctx.fresh("lt")
    with LibtorrentPeer("lt-leecher", timeout=30) as lt:
        lt.start()
        cpu0, _ = proc_usage(lt.pid)
        ctx.prewarm()
        watch = ctx.watch()
        t0 = time.monotonic()
        ih = lt.add_torrent(ctx.torrent, out)
        lt.connect(ih, "127.0.0.1", seeder_port)
        lt.wait_event("torrent_finished", timeout=TIMEOUT)
        row.seconds = time.monotonic() - t0
        row.wire_seconds = watch.seconds()
        cpu1, hwm = proc_usage(lt.pid)
        row.cpu, row.rss = cpu1 - cpu0, hwm
    row.note = check_download(out / ctx.payload.name, ctx.payload)
    shutil.rmtree(out, ignore_errors=True)
    return row


def run_aria2(ctx: Bench, seeder_port: int) -> Row:
    row = Row("aria2c", nbytes=ctx.size)
    exe = shutil.which("aria2c")
    if exe is None:
        row.note = "skipped: aria2c not installed (Debian package aria2)"
        return row
    out = ctx.fresh("aria2")
    ctx.tracker.peers = [("127.0.0.1", seeder_port)]
    argv = [
        exe,
        "--no-conf",
        f"--dir={out}",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--interface=127.0.0.1",
        "--bt-external-ip=127.0.0.1",
        f"--listen-port={free_port()}",
        "--seed-time=0",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--download-result=hide",
        str(ctx.torrent),
    ]
    ctx.prewarm()
    watch = ctx.watch()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    ru = wait_child(proc, TIMEOUT)
    row.seconds = time.monotonic() - t0
    row.wire_seconds = watch.seconds()
    row.cpu = ru.ru_utime + ru.ru_stime
    row.rss = ru.ru_maxrss * 1024
    row.extra = {
        "sys_cpu_s_per_gib": ru.ru_stime * GIB / ctx.size,
        "minflt": ru.ru_minflt,
        "vcsw": ru.ru_nvcsw,
        "ivcsw": ru.ru_nivcsw,
    }
    problem = check_download(out / ctx.payload.name, ctx.payload)
    if proc.returncode or problem:
        row.note = f"failed (exit {proc.returncode}, {problem}): {output.strip()[-300:]}"
        row.seconds = None
    shutil.rmtree(out, ignore_errors=True)
    if not row.note:
        row.note = f"CPU s/GiB system {row.extra['sys_cpu_s_per_gib']:.2f}"
    return row


def run_seed(ctx: Bench) -> Row:
    """Our engine seeds the original payload to a fresh libtorrent leecher."""
    row = Row("ours seeding -> libtorrent", nbytes=ctx.size)
    state = ctx.fresh("seed-state")
    argv = [*RUNNER, "seed", str(ctx.torrent), str(ctx.data), "--state", str(state)]
    argv += ["--config", ctx.config]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    assert proc.stdin is not None
    events = read_events(proc)
    try:
        ready = next(events)
        out = ctx.fresh("seed-leecher")
        with (
            py_spy(proc.pid, ctx.profile_path("seed")),
            LibtorrentPeer("lt-leecher", timeout=30) as lt,
        ):
            lt.start()
            ctx.prewarm()
            t0 = time.monotonic()
            ih = lt.add_torrent(ctx.torrent, out)
            watch = UploadWatch(lt, ih, ctx.size, "total_download")
            lt.connect(ih, "127.0.0.1", int(ready["port"]))
            lt.wait_event("torrent_finished", timeout=TIMEOUT)
            row.seconds = time.monotonic() - t0
            row.wire_seconds = watch.seconds()
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            closed = next(events)
            wait_child(proc, 30)
        row.cpu = closed["cpu"] - ready["cpu"]
        row.rss = closed["rss"]
        row.extra = closed.get("stats", {})
        row.note = check_download(out / ctx.payload.name, ctx.payload)
        shutil.rmtree(out, ignore_errors=True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return row


# -- orchestration ---------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.root = root
        self.size = args.mib << 20
        self.config = args.config
        self.profile_dir: Path | None = Path(args.profile).resolve() if args.profile else None
        self.data = root / "data"
        self.payload = self.data / "payload.bin"
        self.tracker = Tracker()
        self.torrent = root / "payload.torrent"
        self.seeder: LibtorrentPeer | None = None
        self.seeder_ih = ""
        self._prepare(args.piece_kib << 10)

    def _prepare(self, piece_length: int) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        rng = random.Random(42)
        with self.payload.open("wb") as f:
            left = self.size
            while left:
                n = min(left, 4 << 20)
                f.write(rng.randbytes(n))
                left -= n
        mi = create_torrent(self.payload, piece_length=piece_length, trackers=[self.tracker.url])
        self.torrent.write_bytes(mi.to_bytes())

    def watch(self) -> UploadWatch:
        assert self.seeder is not None
        return UploadWatch(self.seeder, self.seeder_ih, self.size, "total_upload")

    def prewarm(self) -> None:
        """Write and delete a payload-sized scratch file right before a row.

        On this kind of VM, memory the guest frees is handed back to the host
        within seconds, and touching it again costs about 2.5 s of system
        CPU per GiB (measured: pwrite into fresh page cache runs at 400 MiB/s,
        into just-freed pages at 5 GiB/s).  Whichever downloader ran right
        after another one's output was deleted got cheap pages and the first
        paid for everyone.  Freeing a payload's worth of page cache just
        before each row gives every row the same start, closer to a machine
        whose RAM is simply there.
        """
        path = self.root / "prewarm.bin"
        block = bytes(4 << 20)
        with path.open("wb") as f:
            for _ in range(0, self.size, len(block)):
                f.write(block)
        path.unlink()

    def fresh(self, name: str) -> Path:
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def profile_path(self, role: str) -> Path | None:
        if self.profile_dir is None:
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        return self.profile_dir / f"{role}.txt"


def fmt_table(rows: list[Row]) -> str:
    head = (
        f"{'row':<28} {'wire MB/s':>9} {'MB/s':>6} {'seconds':>8} {'CPU s/GiB':>10}"
        f" {'peak RSS MB':>12}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        wire = f"{r.wire_mbps:9.0f}" if r.wire_mbps else f"{'-':>9}"
        mbps = f"{r.mbps:6.0f}" if r.mbps else f"{'-':>6}"
        secs = f"{r.seconds:8.2f}" if r.seconds else f"{'-':>8}"
        cpu = r.cpu_per_gib()
        cpu_s = f"{cpu:10.2f}" if cpu is not None else f"{'-':>10}"
        rss = f"{r.rss / 1e6:12.0f}" if r.rss else f"{'-':>12}"
        lines.append(f"{r.name:<28} {wire} {mbps} {secs} {cpu_s} {rss}  {r.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--mib", type=int, default=1024, help="payload size in MiB")
    ap.add_argument("--piece-kib", type=int, default=1024, help="piece length in KiB")
    ap.add_argument("--only", default="ours,lt,aria2,seed", help="rows to run, comma-separated")
    ap.add_argument("--repeat", type=int, default=1, help="run each row this many times")
    ap.add_argument("--config", default="{}", help="JSON ClientConfig overrides for our engine")
    ap.add_argument("--profile", metavar="DIR", help="py-spy our processes, stacks into DIR")
    ap.add_argument("--workdir", help="keep payload and downloads here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-tp-"))
    rows: list[Row] = []
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    ctx = Bench(args, root)
    try:
        with LibtorrentPeer("lt-seeder", timeout=60) as seeder:
            port = seeder.start()
            ih = seeder.add_torrent(ctx.torrent, ctx.data)
            seeder.wait_seeding(ih, timeout=TIMEOUT)
            ctx.seeder, ctx.seeder_ih = seeder, ih
            ctx.tracker.peers = [("127.0.0.1", port)]
            for _ in range(args.repeat):
                if "ours" in only:
                    rows.append(run_ours(ctx, port))
                if "lt" in only:
                    rows.append(run_libtorrent(ctx, port))
                if "aria2" in only:
                    rows.append(run_aria2(ctx, port))
                print(fmt_table(rows), file=sys.stderr)
        if "seed" in only:
            ctx.tracker.peers = []
            for _ in range(args.repeat):
                rows.append(run_seed(ctx))
    finally:
        ctx.tracker.close()
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.mib} MiB, {args.piece_kib} KiB pieces, loopback; load {os.getloadavg()}")
    print(fmt_table(rows))
    if ctx.profile_dir is not None:
        for role in ("download", "seed"):
            path = ctx.profile_dir / f"{role}.txt"
            if path.exists():
                print(f"\npy-spy, our {role} process:\n{summarise_profile(path)}")
    if args.json:
        print(json.dumps([{**r.__dict__, "mbps": r.mbps} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
