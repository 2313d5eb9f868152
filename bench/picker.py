"""Picker timing on a large torrent, run on demand: ``python -m bench.picker``.

Steady state: 100,000 pieces of 256 KiB, 40 peers (seeds and partial peers),
each round one peer asks for 250 requests while blocks from earlier rounds
arrive, complete pieces are "hashed", and HAVE messages trickle in. Reports
the mean and worst time of ``pick`` alone and of the whole round, in CPU
time (``process_time``) so other processes on a shared machine skew it less.

``--v2-file-pieces K`` gives the picker pure v2 geometry instead: files of K
pieces whose last piece is short (the per-piece-size path).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from bitarray import bitarray
from bitarray.util import ones, urandom

from core.engine.picker import Picker


def run(
    num_pieces: int, rounds: int, peers: int, depth: int, seed: int, v2_file_pieces: int = 0
) -> None:
    rng = random.Random(seed)
    piece_length = 256 * 1024
    t0 = time.process_time()
    sizes = None
    if v2_file_pieces:
        # Pure v2: every file's last piece is short (here a bit over half a piece).
        k = v2_file_pieces
        sizes = [piece_length if (p + 1) % k else 150_001 for p in range(num_pieces)]
    picker = Picker(
        num_pieces,
        piece_length,
        num_pieces * piece_length,
        rng=random.Random(seed),
        piece_sizes=sizes,
    )
    bitfields: list[bitarray] = []
    for i in range(peers):
        if i % 4 == 0:
            bits = ones(num_pieces)
            picker.peer_have_all()
        elif i % 4 == 1:
            bits = urandom(num_pieces)  # about half
            picker.peer_bitfield(bits)
        elif i % 4 == 2:
            bits = urandom(num_pieces) | urandom(num_pieces)  # about three quarters
            picker.peer_bitfield(bits)
        else:
            bits = urandom(num_pieces) & urandom(num_pieces) & urandom(num_pieces)
            bits &= urandom(num_pieces) & urandom(num_pieces)  # about 3 %
            picker.peer_bitfield(bits)
        bitfields.append(bits)
    setup = time.process_time() - t0
    print(f"setup ({num_pieces} pieces, {peers} peers): {setup * 1e3:.1f} ms")

    in_flight: deque[tuple[int, list[tuple[int, int]]]] = deque()
    pick_times: list[float] = []
    round_times: list[float] = []
    total_requests = 0
    for r in range(rounds):
        start = time.process_time()
        peer = r % peers
        bits = bitfields[peer]
        # A few HAVE messages per round from partial peers.
        for _ in range(4):
            q = rng.randrange(peers)
            p = rng.randrange(num_pieces)
            if not bitfields[q][p]:
                bitfields[q][p] = 1
                picker.peer_has(p)
        t = time.process_time()
        reqs = picker.pick(peer, bits, depth)
        pick_times.append(time.process_time() - t)
        total_requests += len(reqs)
        in_flight.append((peer, [(req.piece, req.begin) for req in reqs]))
        # Blocks from a round some time ago arrive now.
        if len(in_flight) > peers:
            src, blocks = in_flight.popleft()
            for piece, begin in blocks:
                outcome = picker.on_block_received(src, piece, begin)
                if outcome.piece_complete:
                    picker.on_piece_hashed(piece, True)
        round_times.append(time.process_time() - start)

    def report(name: str, xs: list[float]) -> None:
        xs = sorted(xs)
        mean = sum(xs) / len(xs)
        p99 = xs[int(len(xs) * 0.99)]
        print(
            f"{name}: mean {mean * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us, max {xs[-1] * 1e6:.0f} us"
        )

    print(f"{rounds} rounds, {total_requests} requests, {picker.num_have} pieces verified")
    report(f"pick({depth})", pick_times)
    report("round (pick + receive + hash)", round_times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pieces", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5000)
    ap.add_argument("--peers", type=int, default=40)
    ap.add_argument("--depth", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--v2-file-pieces", type=int, default=0)
    args = ap.parse_args()
    run(args.pieces, args.rounds, args.peers, args.depth, args.seed, args.v2_file_pieces)


if __name__ == "__main__":
    main()
