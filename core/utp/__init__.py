"""uTP, the uTorrent transport protocol (BEP 29), sans-IO.

- :mod:`.packet`: the 20-byte header, the selective-ACK extension, strict
  decoding (:class:`~.packet.UtpPacketError`), encoding;
- :mod:`.connection`: one connection's state machine (handshake, sequence
  numbers with wrap-around, send and reorder buffers, acks and SACKs,
  retransmission, flow control, FIN/RESET, keep-alive and timeouts);
- :mod:`.ledbat`: LEDBAT congestion control (RFC 6817): base and current
  delay, the congestion window;
- :mod:`.rtt`: RTT and RTO estimation (RFC 6298) with back-off;
- :mod:`.buffers`: the packets in flight and the reorder buffer.

Nothing here touches a socket, the event loop or a clock: packets and
``now`` go in, datagrams come out, and each connection says when it wants
to be polled.  ``core/net/utp_socket.py`` drives it over the shared UDP
socket (``core/net/udp_mux.py``).  May import only the standard library,
``cryptography``, :mod:`core.errors` and :mod:`core.types`;
``tests/test_layering.py`` checks it.
"""
