"""Micro-benchmark: MB/s of parsing 16 KiB PIECE messages fed to PeerConnection in 64 KiB chunks.

Run on demand: ``python -m bench.wire [--mib 64] [--rounds 5]``.  Two feeding
paths are measured: ``receive_data`` (bytes handed in, one extra copy) and
``get_buffer``/``buffer_updated`` (what an ``asyncio.BufferedProtocol`` does:
the socket writes straight into the connection's buffer).  Only parsing is
timed; building the stream and registering the requests is not.
"""

from __future__ import annotations

import argparse
import time

from core.wire import HaveAll, Lengths, PeerConnection, Piece, Request, Unchoke
from core.wire.messages import encode

BLOCK = 1 << 14
CHUNK = 64 << 10


def _ready_pair(lengths: Lengths) -> tuple[PeerConnection, PeerConnection]:
    info_hash = b"\x42" * 20
    a = PeerConnection(b"-BENCH-aaaaaaaaaaaaa", info_hash, lengths)
    b = PeerConnection(b"-BENCH-bbbbbbbbbbbbb", None)
    b.receive_data(a.initiate())
    b.next_event()
    a.receive_data(b.accept(lengths))
    list(b.events())
    a.receive_data(b.send(HaveAll()) + b.send(Unchoke()))
    list(a.events())
    return a, b


def _stream(lengths: Lengths) -> bytes:
    payload = bytes(range(256)) * (BLOCK // 256)
    blocks = lengths.total_length // BLOCK
    per_piece = lengths.piece_length // BLOCK
    return b"".join(
        encode(Piece(i // per_piece, (i % per_piece) * BLOCK, payload)) for i in range(blocks)
    )


def _requested(lengths: Lengths) -> PeerConnection:
    a, _ = _ready_pair(lengths)
    per_piece = lengths.piece_length // BLOCK
    for i in range(lengths.total_length // BLOCK):
        a.send(Request(i // per_piece, (i % per_piece) * BLOCK, BLOCK))
    return a


def run_receive_data(lengths: Lengths, stream: bytes) -> tuple[float, int]:
    conn = _requested(lengths)
    view = memoryview(stream)
    pieces = 0
    t0 = time.perf_counter()
    for pos in range(0, len(stream), CHUNK):
        conn.receive_data(view[pos : pos + CHUNK])
        for ev in conn.events():
            pieces += isinstance(ev, Piece)
    return time.perf_counter() - t0, pieces


def run_get_buffer(lengths: Lengths, stream: bytes) -> tuple[float, int]:
    conn = _requested(lengths)
    view = memoryview(stream)
    pieces = 0
    t0 = time.perf_counter()
    pos = 0
    while pos < len(stream):
        buf = conn.get_buffer(CHUNK)
        n = min(CHUNK, len(buf), len(stream) - pos)
        buf[:n] = view[pos : pos + n]  # stands in for sock.recv_into(buf)
        del buf
        conn.buffer_updated(n)
        pos += n
        for ev in conn.events():
            pieces += isinstance(ev, Piece)
    return time.perf_counter() - t0, pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64, help="stream size in MiB")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lengths = Lengths(piece_length=1 << 20, total_length=args.mib << 20)
    stream = _stream(lengths)
    expected = lengths.total_length // BLOCK
    for name, fn in (("receive_data", run_receive_data), ("get_buffer", run_get_buffer)):
        best = float("inf")
        for _ in range(args.rounds):
            elapsed, pieces = fn(lengths, stream)
            assert pieces == expected, (pieces, expected)
            best = min(best, elapsed)
        mbps = len(stream) / best / 1e6
        print(f"{name:>12}: {mbps:8.0f} MB/s  ({expected} PIECE messages, best of {args.rounds})")


if __name__ == "__main__":
    main()
