"""Peer connections on the event loop: the byte-stream seam and what runs over it.

``stream`` defines the seam (``ByteStream`` down, ``StreamConsumer`` up);
``tcp`` implements it over asyncio TCP; ``peer_io`` drives the sans-IO wire
protocol (``core.wire``) over any such stream.  Stacked bottom up: socket,
TCP or uTP, optionally MSE, the peer driver, the engine.  ``udp_mux`` is the
shared UDP socket (one per address family, on the TCP port's number): KRPC
(``d...``) and uTP datagrams routed by first byte to synchronous handlers,
read with ``add_reader`` and batched ``recvfrom_into`` (on Linux, with the
GSO/GRO/``recvmmsg`` offloads of ``udp_offload``).

May import ``core.wire``, ``core.formats``, ``core.ratelimit``, ``core.errors``
and ``core.types``; never the engine (``tests/test_layering.py``).
"""
