"""uTP without sockets: goodput under loss on a simulated path, and CPU per packet.

Run on demand from the repository root::

    python -m bench.utp_sim [--mib 20] [--loss 0,0.01,0.02,0.05] [--packets 40000]
    python -m bench.utp_sim --only cpu --profile 25     # where the CPU goes (cProfile)

Two measurements:

1. **Goodput** of one ``UtpConnection`` pair through tests/support/utp_link.py:
   a 10 MB/s bottleneck (1 MiB drop-tail queue, 100 ms at that rate), 25 ms
   each way (50 ms RTT), 2 ms of jitter, and random loss in both directions
   at each ``--loss`` rate.  ``--mib`` MiB go one way; reported: goodput in
   MB/s of virtual time (payload delivered / time to deliver it), packets
   retransmitted (and as a share of the data packets), fast retransmits,
   retransmission timeouts, the final congestion window, and the CPU it took
   to simulate (the link included).
2. **CPU per packet** of the state machines alone: ``--packets`` full DATA
   packets go from one connection to the other with no loss and no link,
   delivered in batches of 32 as the socket layer reads them (one STATE ack
   per batch).  Timed in CPU time: ``write`` + ``outgoing`` + ``decode`` +
   ``receive`` + ``read`` on the data side and the same for the acks, per
   DATA packet, both ends together.  ``--profile N`` repeats it under
   cProfile and prints the ``N`` costliest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time

from core.utp.connection import UtpConnection, UtpSettings
from core.utp.packet import decode
from tests.support.utp_link import LinkConfig, UtpLink

MSS = UtpSettings().mtu_payload


def goodput(mib: int, loss: float, seed: int) -> None:
    data = random.Random(seed).randbytes(mib << 20)
    path = LinkConfig(delay=0.025, jitter=0.002, loss=loss, bandwidth=10e6, queue_limit=1 << 20)
    back = LinkConfig(delay=0.025, jitter=0.002, loss=loss)
    a = UtpConnection.connect(recv_id=seed, now=0.0)
    link = UtpLink(a, ab=path, ba=back, seed=seed)
    assert link.connect()
    started = link.now
    cpu = time.process_time()
    received = link.transfer(data, close=False, limit=3600)
    cpu = time.process_time() - cpu
    elapsed = link.now - started
    assert received == data, "transfer corrupted"
    stats = a.stats()
    packets = (len(data) + MSS - 1) // MSS
    print(
        f"loss {loss * 100:4.1f} %: {len(data) / elapsed / 1e6:6.2f} MB/s goodput "
        f"({elapsed:6.2f} s), retransmitted {stats.retransmits:6d} "
        f"({stats.retransmits / packets * 100:5.1f} % of {packets}), "
        f"fast {stats.fast_retransmits:5d}, timeouts {stats.timeouts:3d}, "
        f"cwnd {stats.cwnd / 1024:6.0f} KiB, queue drops {link.ab.stats.queue_drops:4d}, "
        f"CPU {cpu:5.2f} s"
    )


def cpu_per_packet(count: int, batch: int = 32) -> tuple[float, float, float]:
    """CPU per full DATA packet: (both ends, the sender's part, the receiver's part), in us."""
    settings = UtpSettings()
    a = UtpConnection.connect(recv_id=1, now=0.0, settings=settings)
    (syn,) = a.outgoing()
    b = UtpConnection.accept(decode(syn), now=0.0, settings=settings)
    for datagram in b.outgoing():
        a.receive(decode(datagram), 0.0)
    chunk = bytes(batch * MSS)
    now = 0.0
    sent = 0
    clock = time.process_time
    sender = receiver = 0.0
    started = clock()
    while sent < count:
        now += 0.001
        t0 = clock()
        a.write(chunk, now)
        datagrams = a.outgoing()
        t1 = clock()
        for datagram in datagrams:
            b.receive(decode(datagram), now + 0.0002)  # one-way delay: LEDBAT needs one
        b.read()
        acks = b.outgoing()
        t2 = clock()
        for datagram in acks:
            a.receive(decode(datagram), now + 0.0004)
        t3 = clock()
        sent += len(datagrams)
        sender += (t1 - t0) + (t3 - t2)
        receiver += t2 - t1
    elapsed = clock() - started
    return elapsed / sent * 1e6, sender / sent * 1e6, receiver / sent * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=20, help="MiB per goodput run")
    parser.add_argument("--loss", default="0,0.01,0.02,0.05", help="comma-separated loss rates")
    parser.add_argument("--packets", type=int, default=40_000, help="packets for the CPU run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["goodput", "cpu"])
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.only != "cpu":
        print(f"goodput, {args.mib} MiB over 10 MB/s, 50 ms RTT, 2 ms jitter (virtual time):")
        for loss in (float(x) for x in args.loss.split(",")):
            goodput(args.mib, loss, args.seed)
    if args.only != "goodput":
        runs = [cpu_per_packet(args.packets) for _ in range(3)]
        best = min(runs)
        print(
            "CPU per 1,400-byte DATA packet, acks included (best of 3): "
            f"{best[0]:.1f} us both ends "
            f"(sender {best[1]:.1f} us, receiver {best[2]:.1f} us; runs "
            f"{', '.join(f'{r[0]:.1f}' for r in runs)}), "
            f"{MSS / best[2]:.0f} MB/s of payload for a receiving core"
        )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            cpu_per_packet(args.packets)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
