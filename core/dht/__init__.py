"""The mainline DHT (BEP 5, 32, 42, 43, 44, 51), sans-IO.

- :mod:`.types`: addresses, node info, settings, stats;
- :mod:`.krpc`: KRPC messages, strict decoding into typed values, encoding;
- :mod:`.node_id`: BEP 42 node ids derived from an IP address (CRC32-C);
- :mod:`.items`: BEP 44 immutable and mutable items (ed25519 signatures);
- :mod:`.routing`: the Kademlia routing table (k-buckets, replacements);
- :mod:`.node`: a DHT node: answers queries, runs iterative lookups,
  keeps tokens, the peer store and the item store, rate limits;
- :mod:`.events`: what a node reports to its driver.

Nothing here touches a socket, the event loop or a clock: datagrams and
``now`` go in, datagrams and events come out.  The engine's
``core/engine/dht_service.py`` drives it over ``core/net/udp_mux.py``.  May
import only the standard library, ``cryptography``, :mod:`core.formats`,
:mod:`core.errors` and :mod:`core.types`; ``tests/test_layering.py`` checks it.
"""
