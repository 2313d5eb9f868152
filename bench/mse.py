"""Micro-benchmark of MSE/PE: RC4 throughput and the cost of one handshake, no sockets.

Run on demand: ``python -m bench.mse [--mib 256] [--rounds 5] [--handshakes 200]``.

- RC4: MB/s of :meth:`Rc4.process_into` on 16 KiB blocks of one buffer (what
  the receive path does: decrypt in place in the peer driver's buffer), next
  to ``process`` (new bytes, the single-write path) and ``process_join`` over
  a 16 KiB block plus its 13-byte header (the corked ``writelines`` path).
  Best of ``--rounds``.
- Handshake: milliseconds of CPU for a whole initiator<->responder exchange
  in memory (both sides: two DH key pairs, two shared secrets, SHA-1s, the
  RC4 setups with their 1,024-byte discards, random pads), and of the DH
  part alone; medians over ``--handshakes`` runs.  One side costs about half.
"""

from __future__ import annotations

import argparse
import statistics
import time

from core.mse import dh
from core.mse.handshake import (
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    MseInitiator,
    MseResponder,
    SkeyIndex,
)
from core.mse.rc4 import Rc4

BLOCK = 16 << 10
KEY = bytes(range(20))
INFO_HASH = bytes(range(100, 120))
BT_HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + INFO_HASH + b"-BENCH-aaaaaaaaaaaaa"


def rc4_process_into(mib: int) -> float:
    buf = bytearray(BLOCK * 64)  # 1 MiB, walked block by block
    view = memoryview(buf)
    blocks = [view[i : i + BLOCK] for i in range(0, len(buf), BLOCK)]
    c = Rc4(KEY)
    t0 = time.perf_counter()
    for _ in range(mib):
        for block in blocks:
            c.process_into(block)
    return time.perf_counter() - t0


def rc4_process(mib: int) -> float:
    data = bytes(BLOCK)
    c = Rc4(KEY)
    t0 = time.perf_counter()
    for _ in range(mib * 64):
        c.process(data)
    return time.perf_counter() - t0


def rc4_process_join(mib: int) -> float:
    parts: list[bytes | memoryview] = [bytes(13), memoryview(bytes(BLOCK))]
    c = Rc4(KEY)
    t0 = time.perf_counter()
    for _ in range(mib * 64):
        c.process_join(parts)
    return time.perf_counter() - t0


def handshake_once(provide: int) -> float:
    t0 = time.perf_counter()
    a = MseInitiator(INFO_HASH, provide=provide, initial_payload=BT_HANDSHAKE)
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=CRYPTO_PLAINTEXT | CRYPTO_RC4)
    done_a = done_b = None
    while done_a is None or done_b is None:
        out = a.data_to_send()
        if out:
            done_b = b.receive(out) or done_b
        out = b.data_to_send()
        if out:
            done_a = a.receive(out) or done_a
    return time.perf_counter() - t0


def dh_once() -> float:
    t0 = time.perf_counter()
    xa, xb = dh.new_private_key(), dh.new_private_key()
    ya, yb = dh.public_key(xa), dh.public_key(xb)
    dh.shared_secret(xa, yb)
    dh.shared_secret(xb, ya)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per RC4 round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--handshakes", type=int, default=200)
    args = parser.parse_args()

    print(f"RC4 (best of {args.rounds} x {args.mib} MiB, 16 KiB blocks)")
    for name, fn in (
        ("process_into (in place, receive path)", rc4_process_into),
        ("process (new bytes, write path)", rc4_process),
        ("process_join (header + block, writelines)", rc4_process_join),
    ):
        best = min(fn(args.mib) for _ in range(args.rounds))
        print(f"  {name:<44} {args.mib * (1 << 20) / best / 1e6:8.0f} MB/s")

    print(f"Handshake (median of {args.handshakes}, both sides in one process)")
    for name, provide in (("RC4 selected", CRYPTO_RC4), ("plaintext selected", CRYPTO_PLAINTEXT)):
        ms = statistics.median(handshake_once(provide) for _ in range(args.handshakes)) * 1e3
        print(f"  {name:<44} {ms:8.2f} ms")
    ms = statistics.median(dh_once() for _ in range(args.handshakes)) * 1e3
    print(f"  {'of which DH (2 key pairs, 2 secrets)':<44} {ms:8.2f} ms")


if __name__ == "__main__":
    main()
